//! The demo page in real headless Chromium with its virtual WebAuthn
//! authenticator (tests/browser/passkey.mjs, driven over the DevTools
//! protocol by playwright-core), against the real server.

use std::path::Path;
use std::process::Command;

use crate::helpers::{Db, spawn_app};

/// Installs the browser test's one npm package when it is missing.
pub(crate) fn ensure_node_modules(dir: &Path) {
    if dir.join("node_modules/playwright-core").is_dir() {
        return;
    }
    let status = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(dir)
        .status()
        .expect("npm must be installed for the browser test (see README)");
    assert!(status.success(), "npm ci in {} failed", dir.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_registers_signs_out_and_signs_in_both_ways_in_chromium() {
    let app = spawn_app(Db::Sqlite).await;
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    ensure_node_modules(&dir);

    // The server runs on this runtime while node waits on another thread.
    let base_url = app.origin.clone();
    let output = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg("passkey.mjs")
            .current_dir(&dir)
            .env("BASE_URL", base_url)
            .output()
            .expect("node must be installed for the browser test (see README)")
    })
    .await
    .expect("browser test thread");

    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "browser test failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains(" 0 failed"), "{stdout}");
}
