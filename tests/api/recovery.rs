//! Recovery for a passkey account (issue 18 item 2): passkey recovery
//! codes, made only by a fresh passkey sign-in, each starting one
//! enrolment of a new passkey when every bound one is lost; the passkey so
//! bound waits before it approves payments, and the owner is mailed.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::fallback::{PASSWORD, db_tag, totp_at, verified_email};
use crate::helpers::{Db, TestApp, assert_problem, on_both, spawn_app};
use crate::smtp;

on_both!(
    recovery_codes_bind_a_new_passkey_once_each_and_the_owner_hears_of_it,
    a_phished_password_and_code_cannot_make_passkey_recovery_codes,
    a_new_set_voids_the_old_one_and_neither_kind_of_code_passes_for_the_other,
    a_mailed_recovery_binds_a_passkey_only_after_its_delay,
    a_passkey_sign_in_or_the_cancel_link_voids_a_mailed_recovery,
    a_mailed_recovery_answers_alike_for_every_name_and_never_replaces_a_live_code,
);

/// Ten codes from a fresh passkey sign-in of `access_token`'s account.
async fn make_codes(app: &TestApp, access_token: &str) -> Vec<String> {
    let made = app.post_bearer("/v1/me/passkey-recovery-codes", access_token, &json!({})).await;
    assert_eq!(made.status(), StatusCode::OK);
    let made: Value = made.json().await.unwrap();
    let codes: Vec<String> = made["recovery_codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(codes.len(), 10);
    codes
}

/// Binds a new passkey with `code`; the finish's answer.
async fn enrol(
    app: &TestApp,
    username: &str,
    code: &str,
) -> (Value, crate::authenticator::SoftAuthenticator) {
    let started = app.post("/v1/enrol/start", &json!({"username": username, "code": code})).await;
    assert_eq!(started.status(), StatusCode::OK, "enrol/start with a live code");
    let started: Value = started.json().await.unwrap();
    let mut phone = app.authenticator();
    let credential = phone.register(&started["publicKey"]);
    let body = json!({"ceremony_id": started["ceremony_id"], "credential": credential, "device_name": "Spare phone"});
    let finished = app.post("/v1/enrol/finish", &body).await;
    assert_eq!(finished.status(), StatusCode::CREATED);
    (finished.json().await.unwrap(), phone)
}

async fn recovery_codes_bind_a_new_passkey_once_each_and_the_owner_hears_of_it(db: Db) {
    let app = spawn_app(db).await;
    let name = "rc-owner";
    let mut lost = app.authenticator();
    let tokens = app.register(&mut lost, name).await;
    let bearer = tokens["access_token"].as_str().unwrap();
    let address = format!("{name}-{}@example.test", db_tag(&app));
    verified_email(&app, bearer, &address).await;
    let codes = make_codes(&app, bearer).await;
    assert!(codes.iter().all(|c| c.len() == 11 && c.as_bytes()[5] == b'-'), "{codes:?}");
    smtp::wait_for_mail(&address, "passkey recovery codes were made").await;
    let me: Value = app.me(bearer).await.json().await.unwrap();
    assert!(me["factors"].as_array().unwrap().contains(&json!("passkey_recovery_code")), "{me}");
    // The codes themselves are in no mail, log or audit line.
    let mails = smtp::mails_to(&address).join("\n");
    for code in &codes {
        assert!(!mails.contains(code.as_str()), "a code reached a mail");
    }

    // The phone is lost; a wrong code binds nothing and changes nothing.
    let before = app.fingerprint().await.ignoring_ceremonies();
    let wrong =
        app.post("/v1/enrol/start", &json!({"username": name, "code": "aaaaa-aaaaa"})).await;
    assert_problem(wrong, 401, "invalid_code").await;
    assert_eq!(app.fingerprint().await.ignoring_ceremonies(), before);

    // A code typed without its dash, in capitals, still works: it binds a
    // passkey that signs in at once.
    let typed = codes[0].replace('-', "").to_uppercase();
    let (enrolled, mut phone) = enrol(&app, name, &typed).await;
    assert_eq!(enrolled["user_id"], tokens["user_id"]);
    assert_eq!(app.login(&mut phone, None).await.status(), StatusCode::OK);
    // ... but approves payments only after the delay, as one bound after a
    // password sign-in; the owner is mailed at once.
    let devices = app.devices(enrolled["access_token"].as_str().unwrap()).await;
    let spare = devices.iter().find(|d| d["name"] == "Spare phone").unwrap();
    assert!(spare["payments_from"].is_string(), "{spare}");
    let notice =
        smtp::wait_for_mail(&address, "recovery codes was used to add a new passkey").await;
    assert!(notice.contains("Spare phone"), "{notice}");
    // The session the code opened is not a passkey sign-in: it cannot make
    // new codes (that needs the new passkey's own sign-in).
    let by_code = enrolled["access_token"].as_str().unwrap();
    let again = app.post_bearer("/v1/me/passkey-recovery-codes", by_code, &json!({})).await;
    assert_problem(again, 403, "passkey_required").await;

    // The code is spent; the next one still works, once.
    let spent = app.post("/v1/enrol/start", &json!({"username": name, "code": codes[0]})).await;
    assert_problem(spent, 401, "invalid_code").await;
    enrol(&app, name, &codes[1]).await;
    let me: Value = app.me(by_code).await.json().await.unwrap();
    assert!(me["factors"].as_array().unwrap().contains(&json!("passkey_recovery_code")));
    let observer = app.observer(Duration::from_secs(5)).await;
    let sql = "select count(*) from passkey_recovery_code where user_id = $1 and used_at is null";
    let left = observer.count(sql, tokens["user_id"].as_str().unwrap()).await;
    assert_eq!(left, 8);
    // The audit trail names the way in, not the code.
    let audit = crate::admin::all_audit_text(&app).await;
    assert!(audit.contains("passkey_recovery_codes_made"), "{audit}");
    assert!(audit.contains("with a passkey recovery code"), "{audit}");
    for code in &codes {
        assert!(!audit.contains(code.as_str()) && !audit.contains(&code.replace('-', "")));
    }
    assert!(!crate::helpers::captured_logs().contains(codes[2].as_str()));
}

async fn a_phished_password_and_code_cannot_make_passkey_recovery_codes(db: Db) {
    let app = spawn_app(db).await;
    let account = app.fallback_account("rc-phished").await;
    let mfa = app.mfa_token("rc-phished", PASSWORD).await;
    let code = totp_at(&account.secret, app.now_secs());
    let stolen: Value = app.totp_login(&mfa, &code).await.json().await.unwrap();
    app.clock.advance(Duration::from_secs(30));
    let before = app.fingerprint().await;
    let bearer = stolen["access_token"].as_str().unwrap();
    let made = app.post_bearer("/v1/me/passkey-recovery-codes", bearer, &json!({})).await;
    assert_problem(made, 403, "passkey_required").await;
    assert_eq!(app.fingerprint().await, before, "nothing made");
    // Nor may a passkey sign-in that is no longer fresh, however new its
    // token: a refresh does not make a sign-in fresh.
    let mut passkey = app.authenticator();
    let tokens = app.register(&mut passkey, "rc-stale").await;
    app.clock.advance(Duration::from_secs(400));
    let refreshed = app.refresh(tokens["refresh_token"].as_str().unwrap()).await;
    let refreshed: Value = refreshed.json().await.unwrap();
    let bearer = refreshed["access_token"].as_str().unwrap();
    let stale = app.post_bearer("/v1/me/passkey-recovery-codes", bearer, &json!({})).await;
    assert_problem(stale, 403, "passkey_required").await;
    assert_problem(
        app.post("/v1/me/passkey-recovery-codes", &json!({})).await,
        401,
        "unauthorized",
    )
    .await;
}

async fn a_new_set_voids_the_old_one_and_neither_kind_of_code_passes_for_the_other(db: Db) {
    let app = spawn_app(db).await;
    let account = app.fallback_account("rc-renew").await;
    let old = make_codes(&app, &account.access_token).await;
    let new = make_codes(&app, &account.access_token).await;
    let void = app.post("/v1/enrol/start", &json!({"username": "rc-renew", "code": old[0]})).await;
    assert_problem(void, 401, "invalid_code").await;
    // A TOTP recovery code cannot start an enrolment, and a passkey
    // recovery code is no second factor after a password.
    let totp_codes =
        app.post_bearer("/v1/me/recovery-codes", &account.access_token, &json!({})).await;
    let totp_codes: Value = totp_codes.json().await.unwrap();
    let totp_code = totp_codes["recovery_codes"][0].as_str().unwrap();
    let crossed =
        app.post("/v1/enrol/start", &json!({"username": "rc-renew", "code": totp_code})).await;
    assert_problem(crossed, 401, "invalid_code").await;
    let mfa = app.mfa_token("rc-renew", PASSWORD).await;
    assert_problem(app.totp_login(&mfa, &new[0]).await, 401, "invalid_code").await;
    // The new set still works.
    enrol(&app, "rc-renew", &new[0]).await;
}

/// The code and the cancel token of the newest recovery mail to `address`.
async fn recovery_mail(address: &str) -> (String, String) {
    let mail = smtp::wait_for_mail(address, "Account recovery requested").await;
    let code = mail
        .split_whitespace()
        .find(|w| w.len() == 11 && w.as_bytes()[5] == b'-' && !w.contains('/'))
        .unwrap_or_else(|| panic!("no code in {mail}"))
        .to_owned();
    let (_, after) = mail.split_once("#cancel=").unwrap_or_else(|| panic!("no link in {mail}"));
    let token: String =
        after.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_').collect();
    assert_eq!(token.len(), 43, "{mail}");
    (code, token)
}

/// A passkey account with a verified address; its registration's tokens.
async fn account_with_address(
    app: &TestApp,
    name: &str,
) -> (Value, String, crate::authenticator::SoftAuthenticator) {
    let mut passkey = app.authenticator();
    let tokens = app.register(&mut passkey, name).await;
    let address = format!("{name}-{}@example.test", db_tag(app));
    verified_email(app, tokens["access_token"].as_str().unwrap(), &address).await;
    (tokens, address, passkey)
}

async fn request_recovery(app: &TestApp, name: &str) -> Value {
    let requested = app.post("/v1/recovery/start", &json!({"username": name})).await;
    assert_eq!(requested.status(), StatusCode::ACCEPTED);
    requested.json().await.unwrap()
}

async fn a_mailed_recovery_binds_a_passkey_only_after_its_delay(db: Db) {
    let app = spawn_app(db).await;
    let name = "mr-slow";
    let (tokens, address, _lost) = account_with_address(&app, name).await;
    let answer = request_recovery(&app, name).await;
    assert_eq!(answer, json!({"delay_seconds": 86400}));
    let (code, _) = recovery_mail(&address).await;
    // Too early: the code does not work yet, and counts no try.
    app.clock.advance(Duration::from_secs(86400 - 60));
    for _ in 0..6 {
        let early = app.post("/v1/enrol/start", &json!({"username": name, "code": code})).await;
        assert_problem(early, 401, "invalid_code").await;
    }
    app.clock.advance(Duration::from_secs(61));
    let (enrolled, mut phone) = enrol(&app, name, &code).await;
    assert_eq!(enrolled["user_id"], tokens["user_id"]);
    assert_eq!(app.login(&mut phone, None).await.status(), StatusCode::OK);
    // Its passkey waits before it approves payments, and the owner hears of it.
    let devices = app.devices(enrolled["access_token"].as_str().unwrap()).await;
    let spare = devices.iter().find(|d| d["name"] == "Spare phone").unwrap();
    assert!(spare["payments_from"].is_string(), "{spare}");
    let notice = smtp::wait_for_mail(&address, "account recovery by email was used").await;
    assert!(notice.contains("Spare phone"), "{notice}");
    let again = app.post("/v1/enrol/start", &json!({"username": name, "code": code})).await;
    assert_problem(again, 401, "invalid_code").await;
    let audit = crate::admin::all_audit_text(&app).await;
    assert!(audit.contains("account_recovery_requested"), "{audit}");
    assert!(audit.contains("with a mailed account recovery code"), "{audit}");
    assert!(!audit.contains(code.as_str()) && !audit.contains(&code.replace('-', "")));
    assert!(!crate::helpers::captured_logs().contains(code.as_str()));
}

async fn a_passkey_sign_in_or_the_cancel_link_voids_a_mailed_recovery(db: Db) {
    let app = spawn_app(db).await;
    let name = "mr-owner";
    let (_, address, mut passkey) = account_with_address(&app, name).await;
    request_recovery(&app, name).await;
    let (code, _) = recovery_mail(&address).await;
    // The owner still has their passkey and signs in meanwhile.
    app.clock.advance(Duration::from_secs(60));
    assert_eq!(app.login(&mut passkey, None).await.status(), StatusCode::OK);
    app.clock.advance(Duration::from_secs(86400));
    let void = app.post("/v1/enrol/start", &json!({"username": name, "code": code})).await;
    assert_problem(void, 401, "invalid_code").await;
    let audit = crate::admin::all_audit_text(&app).await;
    assert!(audit.contains("a passkey signed in after the request"), "{audit}");

    // The next request is cancelled with the link from its mail. The
    // notice of the first one's end goes out in the background: waited for
    // first, so that the newest recovery mail below is the new request's.
    smtp::wait_for_mail(&address, "one of your passkeys signed in after the request").await;
    let requests = || {
        smtp::mails_to(&address).iter().filter(|m| m.contains("Account recovery requested")).count()
    };
    let before = requests();
    request_recovery(&app, name).await;
    for _ in 0..100 {
        if requests() > before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(requests(), before + 1, "the second request's mail");
    let (code, token) = recovery_mail(&address).await;
    let cancelled = app.post("/v1/recovery/cancel", &json!({"token": token})).await;
    assert_eq!(cancelled.status(), StatusCode::NO_CONTENT);
    smtp::wait_for_mail(&address, "cancelled with the link from its mail").await;
    let twice = app.post("/v1/recovery/cancel", &json!({"token": token})).await;
    assert_problem(twice, 401, "invalid_code").await;
    app.clock.advance(Duration::from_secs(86400 + 1));
    let dead = app.post("/v1/enrol/start", &json!({"username": name, "code": code})).await;
    assert_problem(dead, 401, "invalid_code").await;
    let malformed = app.post("/v1/recovery/cancel", &json!({"token": "not a token"})).await;
    assert_problem(malformed, 422, "validation_failed").await;
}

async fn a_mailed_recovery_answers_alike_for_every_name_and_never_replaces_a_live_code(db: Db) {
    let app = spawn_app(db).await;
    let observer = app.observer(Duration::from_secs(5)).await;
    let codes = "select count(*) from enrolment_code where user_id = $1";
    // No such account, and an account with no verified address: the same
    // answer, and nothing stored.
    let nobody = request_recovery(&app, "mr-nobody").await;
    let mut bare = app.authenticator();
    let tokens = app.register(&mut bare, "mr-bare").await;
    let unverified = request_recovery(&app, "mr-bare").await;
    assert_eq!(nobody, unverified);
    assert_eq!(observer.count(codes, tokens["user_id"].as_str().unwrap()).await, 0);

    // An admin's enrolment code is never replaced by a request, and a
    // second request does not replace the first.
    let (tokens, address, _) = account_with_address(&app, "mr-twice").await;
    request_recovery(&app, "mr-twice").await;
    let (first, _) = recovery_mail(&address).await;
    request_recovery(&app, "mr-twice").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mails = smtp::mails_to(&address);
    assert_eq!(mails.iter().filter(|m| m.contains("Account recovery requested")).count(), 1);
    assert_eq!(observer.count(codes, tokens["user_id"].as_str().unwrap()).await, 1);
    app.clock.advance(Duration::from_secs(86400 + 1));
    enrol(&app, "mr-twice", &first).await;
    // An admin's reset during a pending request replaces it with a code
    // that works at once, without the request's delay or cancel link.
    let (tokens, address, _) = account_with_address(&app, "mr-reset").await;
    request_recovery(&app, "mr-reset").await;
    let (_, token) = recovery_mail(&address).await;
    let (_, admin_bearer) = crate::admin::admin(&app, "mr-admin").await;
    let path = format!("/v1/admin/users/{}/reset-devices", tokens["user_id"].as_str().unwrap());
    let reset = app.post_bearer(&path, &admin_bearer, &json!({"reason": "lost phone"})).await;
    assert_eq!(reset.status(), StatusCode::OK);
    let mail = smtp::wait_for_mail(&address, "Bind a new device").await;
    let admin_code = mail
        .split_whitespace()
        .find(|w| w.len() == 11 && w.as_bytes()[5] == b'-')
        .unwrap()
        .to_owned();
    let stale = app.post("/v1/recovery/cancel", &json!({"token": token})).await;
    assert_problem(stale, 401, "invalid_code").await;
    enrol(&app, "mr-reset", &admin_code).await;
    let audit = crate::admin::all_audit_text(&app).await;
    assert!(audit.contains("an enrolment code is already pending"), "{audit}");
    assert!(audit.contains("no verified address") && audit.contains("unknown user"), "{audit}");
}
