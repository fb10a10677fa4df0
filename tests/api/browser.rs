//! The pages in real headless Chromium with its virtual WebAuthn
//! authenticator (scripts in tests/browser/, driven over the DevTools
//! protocol by playwright-core), against the real server.

use std::path::Path;
use std::process::Command;

use crate::downstream::start_payment_api;
use crate::helpers::{Db, spawn_app};

/// Installs the browser tests' npm packages (playwright-core, axe-core) when one is missing.
fn ensure_node_modules(dir: &Path) {
    if dir.join("node_modules/playwright-core").is_dir()
        && dir.join("node_modules/axe-core").is_dir()
    {
        return;
    }
    let status = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(dir)
        .status()
        .expect("npm must be installed for the browser test (see README)");
    assert!(status.success(), "npm ci in {} failed", dir.display());
}

/// Runs one script of tests/browser/ and asserts that every step passed.
async fn run_browser_script(script: &'static str, env: Vec<(&'static str, String)>) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    ensure_node_modules(&dir);
    // The servers run on this runtime while node waits on another thread.
    let output = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg(script)
            .current_dir(&dir)
            .envs(env)
            .output()
            .expect("node must be installed for the browser test (see README)")
    })
    .await
    .expect("browser test thread");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    // Shown with --nocapture: the steps, and what they measured (axe's minor findings, say).
    println!("{stdout}");
    assert!(output.status.success(), "{script} failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains(" 0 failed"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_registers_signs_out_and_signs_in_both_ways_in_chromium() {
    let app = spawn_app(Db::Sqlite).await;
    run_browser_script("passkey.mjs", vec![("BASE_URL", app.origin.clone())]).await;
}

/// A user registered on `/` approves payments on `/pay.html`, and the
/// payment_api example, running beside passgate, verifies and accepts each
/// one across origins (CORS).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pay_page_approves_a_payment_that_the_payment_api_accepts() {
    let app = spawn_app(Db::Sqlite).await;
    let payment_api = format!("{}/payments", start_payment_api(&app));
    let env = vec![("BASE_URL", app.origin.clone()), ("PAYMENT_API", payment_api)];
    run_browser_script("pay.mjs", env).await;
}

/// A user registered with a passkey on `/` sets a password and an
/// authenticator app on `/security.html`, then signs in on
/// `/fallback.html` with the password and a TOTP code, and again with a
/// recovery code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fallback_pages_set_up_totp_and_sign_in_with_password_and_code() {
    let app = spawn_app(Db::Sqlite).await;
    run_browser_script("fallback.mjs", vec![("BASE_URL", app.origin.clone())]).await;
}

/// An admin (made with `passgate admin grant`) signs in on `/admin.html`,
/// resets the devices of a user who lost their phone, locks and unlocks the
/// account, reads and exports the audit trail; the user binds a new passkey
/// on `/enrol.html` with the enrolment code the admin page showed, which
/// then works no more; and the admin unbinds that new device. The old
/// passkey no longer signs in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_page_resets_a_users_devices_and_the_user_enrols_a_new_one() {
    let app = spawn_app(Db::Sqlite).await;
    let mut phone = app.authenticator();
    app.register(&mut phone, "lost-phone-user").await;
    let env = vec![
        ("BASE_URL", app.origin.clone()),
        ("PASSGATE_BIN", env!("CARGO_BIN_EXE_passgate").to_owned()),
        ("DATABASE_URL", app.db.url.clone()),
    ];
    run_browser_script("admin.mjs", env).await;

    // The old passkey signs in no more: discoverable, it is refused...
    let response = app.login(&mut phone, None).await;
    assert_ne!(response.status(), reqwest::StatusCode::OK, "the old passkey still signs in");
    assert_eq!(response.status(), reqwest::StatusCode::UNAUTHORIZED);
    // ...and username-first, the server no longer offers it. (The soft
    // authenticator holds none of the ids offered, so it cannot answer.)
    let (_, options) = app.started_login(Some("lost-phone-user")).await;
    let offered = options["allowCredentials"].to_string();
    for id in phone.credential_ids() {
        assert!(!offered.contains(&id), "login offers the old passkey {id}: {offered}");
    }
}

/// A user registered with a passkey manages passkeys and sessions on
/// `/security.html`: the passkey is listed with its authenticator's name,
/// renamed, refused removal as the last way in, a second one added and
/// removed (with the WebAuthn Signal API told), a session from another tab
/// ended; then a password sign-in on `/fallback.html` prompts to add a
/// passkey, which the page adds, and the page says that such a session may
/// not remove it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_security_page_manages_passkeys_and_sessions_and_prompts_after_a_password_sign_in() {
    let app = spawn_app(Db::Sqlite).await;
    run_browser_script("selfservice.mjs", vec![("BASE_URL", app.origin.clone())]).await;
}

/// The pages in English and Simplified Chinese: the two catalogues agree
/// and cover every problem code of /openapi.json; a zh-CN browser gets
/// Chinese pages, switches to English by keyboard, and sees a server error
/// as a sentence of each language with the field marked aria-invalid; a
/// keyboard-only registration; axe-core finds no serious or critical
/// violation on any page in either language, signed out or signed in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pages_speak_english_and_chinese_and_pass_axe_in_both() {
    let app = spawn_app(Db::Sqlite).await;
    let mut env = vec![("BASE_URL", app.origin.clone())];
    if let Ok(dir) = std::env::var("SCREENSHOT_DIR") {
        env.push(("SCREENSHOT_DIR", dir));
    }
    run_browser_script("i18n.mjs", env).await;
}

/// A user registered with a passkey trusts this browser on
/// `/security.html`: it is listed as this browser, with an HttpOnly
/// `__Host-` cookie no script reads, still after a reload, and removing it
/// clears the cookie (issue 20 item 5).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_security_page_trusts_this_browser_lists_it_and_removes_it() {
    let app = spawn_app(Db::Sqlite).await;
    run_browser_script("trusted.mjs", vec![("BASE_URL", app.origin.clone())]).await;
}
