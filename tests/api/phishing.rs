//! The attacks of the security issue, as tests: a phished password and
//! code must not change what guards the account, an admin's phished
//! password must not act, the owner hears of every change, and a lockout
//! holds against slow and parallel guessing.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::admin::admin;
use crate::fallback::{Account, PASSWORD, db_tag, totp_at, verified_email};
use crate::helpers::{Db, TestApp, assert_problem, on_both, spawn_app, spawn_app_configured};
use crate::smtp;

on_both!(
    a_phished_password_and_code_cannot_change_what_guards_the_account,
    a_passkey_bound_from_a_password_sign_in_waits_before_it_approves_payments,
    an_enrolment_session_cannot_change_the_password_without_the_current_one,
    admin_actions_need_the_admins_fresh_passkey_sign_in,
    the_owner_is_mailed_of_every_change,
    an_address_change_keeps_the_old_address_until_the_new_one_is_confirmed,
    failures_count_however_far_apart_until_a_sign_in,
    a_burst_of_guesses_at_once_cannot_run_past_the_threshold,
    many_failures_lock_the_fallback_until_a_passkey_sign_in_or_an_admin_unlock,
    an_idle_session_ends_and_a_password_change_ends_the_others,
    an_attempt_cut_short_by_the_deadline_is_not_counted,
);

/// A fallback account with a verified address; its passkey session is
/// the registration's.
async fn account_with_address(app: &TestApp, name: &str) -> (Account, String) {
    let account = app.fallback_account(name).await;
    let address = format!("{name}-{}@example.test", db_tag(app));
    verified_email(app, &account.access_token, &address).await;
    (account, address)
}

/// Signs in with password and TOTP, as a real-time phishing page relaying
/// both would; returns the session's tokens.
async fn phished_session(app: &TestApp, name: &str, account: &Account) -> Value {
    let mfa = app.mfa_token(name, PASSWORD).await;
    let code = totp_at(&account.secret, app.now_secs());
    let response = app.totp_login(&mfa, &code).await;
    assert_eq!(response.status(), StatusCode::OK);
    // A code is good once: the next sign-in uses the next step.
    app.clock.advance(Duration::from_secs(30));
    response.json().await.unwrap()
}

async fn a_phished_password_and_code_cannot_change_what_guards_the_account(db: Db) {
    let app = spawn_app(db).await;
    let (account, address) = account_with_address(&app, "ph-victim").await;
    let owner_device = app.devices(&account.access_token).await[0]["device_id"].clone();
    let stolen = phished_session(&app, "ph-victim", &account).await;
    let bearer = stolen["access_token"].as_str().unwrap();
    let before = app.fingerprint().await;
    let attempts = [
        app.post_bearer("/v1/me/devices/start", bearer, &json!({})).await,
        app.delete_bearer(&format!("/v1/me/devices/{}", owner_device.as_str().unwrap()), bearer)
            .await,
        app.post_bearer("/v1/me/email", bearer, &json!({"email": "thief@example.test"})).await,
        app.delete_bearer("/v1/me/totp", bearer).await,
        app.post_bearer("/v1/me/recovery-codes", bearer, &json!({})).await,
        app.put_bearer("/v1/me/password", bearer, &json!({"password": "the thief's own one"}))
            .await,
    ];
    for response in attempts {
        let body = assert_problem(response, 403, "passkey_required").await;
        assert!(body["detail"].as_str().unwrap().contains("passkey"), "{body}");
    }
    assert_eq!(app.fingerprint().await, before, "nothing changed");
    assert!(smtp::mails_to("thief@example.test").is_empty());
    // The owner's own passkey sign-in may do all of it.
    let mut passkey = account.passkey;
    let fresh: Value = app.login(&mut passkey, None).await.json().await.unwrap();
    let owner = fresh["access_token"].as_str().unwrap();
    let codes = app.post_bearer("/v1/me/recovery-codes", owner, &json!({})).await;
    assert_eq!(codes.status(), StatusCode::OK);

    // What the phisher can still do: change the password with the current
    // one. The owner is told, loses their sessions, and takes the account
    // back with the passkey, which needs no old password.
    let halfway = app.mfa_token("ph-victim", PASSWORD).await;
    let theirs = json!({"password": "the thief's own one", "current_password": PASSWORD});
    assert_eq!(app.put_bearer("/v1/me/password", bearer, &theirs).await.status(), 204);
    // A sign-in halfway through with the old password goes no further.
    let code = totp_at(&account.secret, app.now_secs());
    assert_problem(app.totp_login(&halfway, &code).await, 401, "invalid_credentials").await;
    smtp::wait_for_mail(&address, "Your password was changed").await;
    assert_problem(app.me(owner).await, 401, "unauthorized").await;
    let back: Value = app.login(&mut passkey, None).await.json().await.unwrap();
    let owner = back["access_token"].as_str().unwrap();
    let mine = json!({"password": "the owner's new one"});
    assert_eq!(app.put_bearer("/v1/me/password", owner, &mine).await.status(), 204);
    assert_problem(app.me(bearer).await, 401, "unauthorized").await;
}

async fn a_passkey_bound_from_a_password_sign_in_waits_before_it_approves_payments(db: Db) {
    let app = spawn_app(db).await;
    let (mut account, address) = account_with_address(&app, "ph-first").await;
    // The owner removes the only passkey (a fresh passkey session may, as
    // a password and TOTP remain): an account with no passkey.
    let device = app.devices(&account.access_token).await[0]["device_id"].clone();
    let path = format!("/v1/me/devices/{}", device.as_str().unwrap());
    let unbound = app.delete_bearer(&path, &account.access_token).await;
    assert_eq!(unbound.status(), StatusCode::NO_CONTENT);
    smtp::wait_for_mail(&address, "was removed from your account").await;

    // Someone with the password and a code binds a passkey: allowed (the
    // account has none), but it may not pay yet, and the owner is told.
    let session = phished_session(&app, "ph-first", &account).await;
    let bearer = session["access_token"].as_str().unwrap();
    let mut new_key = app.authenticator();
    let bound = app.bind_device(bearer, &mut new_key, "Someone's key").await;
    let from = bound["payments_from"].as_str().expect("a delayed passkey says from when");
    let mail = smtp::wait_for_mail(&address, "Someone's key").await;
    assert!(mail.contains("approve payments only from"), "{mail}");
    let coffee = json!({"amount": "3.50", "currency": "EUR", "payee": "Cafe"});
    let refused =
        app.post_bearer("/v1/stepup/start", bearer, &json!({"transaction": coffee})).await;
    let body = assert_problem(refused, 403, "forbidden").await;
    assert!(body["detail"].as_str().unwrap().contains("after a password sign-in"), "{body}");
    // A second passkey from the same password session: the account now
    // has one, so only a passkey sign-in may add more.
    let more = app.post_bearer("/v1/me/devices/start", bearer, &json!({})).await;
    assert_problem(more, 403, "passkey_required").await;

    // Signing in with that passkey during the delay is no passkey sign-in
    // for sensitive changes: it cannot bind another passkey (which would
    // pay at once), nor change the password without the current one.
    let probation: Value = app.login(&mut new_key, None).await.json().await.unwrap();
    let bearer = probation["access_token"].as_str().unwrap();
    assert_eq!(crate::helpers::claims_of(bearer)["amr"], json!(["hwk", "user", "new"]));
    let more = app.post_bearer("/v1/me/devices/start", bearer, &json!({})).await;
    assert_problem(more, 403, "passkey_required").await;
    let takeover = json!({"password": "the thief's own one"});
    let refused = app.put_bearer("/v1/me/password", bearer, &takeover).await;
    assert_problem(refused, 403, "passkey_required").await;

    // After the delay (default 24 h) it approves payments.
    app.clock.advance(Duration::from_secs(24 * 3600 + 1));
    let signed_in: Value = app.login(&mut new_key, None).await.json().await.unwrap();
    let bearer = signed_in["access_token"].as_str().unwrap();
    let started =
        app.post_bearer("/v1/stepup/start", bearer, &json!({"transaction": coffee})).await;
    assert_eq!(started.status(), StatusCode::OK);
    assert_eq!(crate::helpers::claims_of(bearer)["amr"], json!(["hwk", "user"]));
    assert!(from.ends_with('Z'));
    // The owner's old passkey is gone for good.
    assert_eq!(app.login(&mut account.passkey, None).await.status(), StatusCode::UNAUTHORIZED);
}

async fn an_enrolment_session_cannot_change_the_password_without_the_current_one(db: Db) {
    let app = spawn_app(db).await;
    let (_, admin_bearer) = admin(&app, "ph-admin-enrol").await;
    let account = app.fallback_account("ph-enrolled").await;
    let user = app.store.find_user_by_username("ph-enrolled").await.unwrap().unwrap();
    let path = format!("/v1/admin/users/{}/reset-devices", user.user_id);
    let reset = app.post_bearer(&path, &admin_bearer, &json!({"reason": "lost phone"})).await;
    assert_eq!(reset.headers()["cache-control"], "no-store", "it carries the code");
    let reset: Value = reset.json().await.unwrap();
    let code = reset["enrolment_code"].as_str().unwrap();
    let started: Value = app
        .post("/v1/enrol/start", &json!({"username": "ph-enrolled", "code": code}))
        .await
        .json()
        .await
        .unwrap();
    let mut phone = app.authenticator();
    let credential = phone.register(&started["publicKey"]);
    let enrolled = app
        .post(
            "/v1/enrol/finish",
            &json!({"ceremony_id": started["ceremony_id"], "credential": credential}),
        )
        .await;
    assert_eq!(enrolled.status(), StatusCode::CREATED);
    let enrolled: Value = enrolled.json().await.unwrap();
    let bearer = enrolled["access_token"].as_str().unwrap();
    assert_eq!(crate::helpers::claims_of(bearer)["amr"], json!(["hwk", "user", "enrol"]));
    let taken = json!({"password": "taken over!"});
    let refused = app.put_bearer("/v1/me/password", bearer, &taken).await;
    assert_problem(refused, 403, "passkey_required").await;
    let with_current = json!({"password": "a new one, knowingly", "current_password": PASSWORD});
    let changed = app.put_bearer("/v1/me/password", bearer, &with_current).await;
    assert_eq!(changed.status(), StatusCode::NO_CONTENT);
    drop(account);
}

async fn admin_actions_need_the_admins_fresh_passkey_sign_in(db: Db) {
    let app = spawn_app_configured(db, &[("PASSGATE__TOKENS__ACCESS_TTL_SECONDS", "900")]).await;
    // An admin who also has a password and TOTP.
    let admin_account = app.fallback_account("ph-admin").await;
    let admin_user = app.store.find_user_by_username("ph-admin").await.unwrap().unwrap();
    app.core
        .admin
        .set_roles(None, &admin_user.user_id.to_string(), &["admin".to_owned()], None)
        .await
        .unwrap();
    let mut victim_key = app.authenticator();
    let victim = app.register(&mut victim_key, "ph-target").await;
    let id = victim["user_id"].as_str().unwrap();
    let device = victim["device_id"].as_str().unwrap();
    let actions = |bearer: String| {
        let app = &app;
        async move {
            vec![
                app.post_bearer(
                    &format!("/v1/admin/users/{id}/reset-devices"),
                    &bearer,
                    &json!({"reason": "x"}),
                )
                .await,
                app.post_bearer(&format!("/v1/admin/users/{id}/lock"), &bearer, &json!({})).await,
                app.post_bearer(&format!("/v1/admin/users/{id}/unlock"), &bearer, &json!({})).await,
                app.put_bearer(
                    &format!("/v1/admin/users/{id}/roles"),
                    &bearer,
                    &json!({"roles": ["admin"]}),
                )
                .await,
                app.delete_bearer(&format!("/v1/admin/users/{id}/devices/{device}"), &bearer).await,
            ]
        }
    };
    // A password + code admin session: it may read, not act.
    let phished = phished_session(&app, "ph-admin", &admin_account).await;
    let bearer = phished["access_token"].as_str().unwrap().to_owned();
    let mut admin_key = admin_account.passkey;
    let stale: Value = app.login(&mut admin_key, None).await.json().await.unwrap();
    let before = app.fingerprint().await;
    let read = app.get(&format!("/v1/admin/users/{id}"), Some(&bearer)).await;
    assert_eq!(read.status(), StatusCode::OK);
    for response in actions(bearer).await {
        assert_problem(response, 403, "passkey_required").await;
    }
    // A passkey sign-in that is no longer fresh: the same.
    app.clock.advance(Duration::from_secs(301));
    for response in actions(stale["access_token"].as_str().unwrap().to_owned()).await {
        assert_problem(response, 403, "passkey_required").await;
    }
    assert_eq!(app.fingerprint().await, before);
    // A fresh passkey sign-in acts; the code is shown once (no verified
    // address), and the audit trail says it was handed over.
    let fresh: Value = app.login(&mut admin_key, None).await.json().await.unwrap();
    let bearer = fresh["access_token"].as_str().unwrap();
    let reset = app
        .post_bearer(
            &format!("/v1/admin/users/{id}/reset-devices"),
            bearer,
            &json!({"reason": "lost"}),
        )
        .await;
    assert_eq!(reset.status(), StatusCode::OK);
    assert_eq!(reset.headers()["cache-control"], "no-store");
    let reset: Value = reset.json().await.unwrap();
    assert!(reset["enrolment_code"].is_string());
    let audit: Value = app
        .get(&format!("/v1/admin/audit?user_id={id}&event=enrolment_code_issued"), Some(bearer))
        .await
        .json()
        .await
        .unwrap();
    let event = &audit["events"][0];
    assert_eq!(event["actor_id"], admin_user.user_id.to_string());
    assert!(event["reason"].as_str().unwrap().contains("shown once to the admin"), "{event}");
}

async fn the_owner_is_mailed_of_every_change(db: Db) {
    let app = spawn_app(db).await;
    let (_, admin_bearer) = admin(&app, "ph-admin-mail").await;
    let mut passkey = app.authenticator();
    let tokens = app.register(&mut passkey, "ph-told").await;
    let bearer = tokens["access_token"].as_str().unwrap();
    let id = tokens["user_id"].as_str().unwrap();
    let address = format!("ph-told-{}@example.test", db_tag(&app));
    verified_email(&app, bearer, &address).await;
    let expect = async |what: &str| {
        let mail = smtp::wait_for_mail(&address, what).await;
        // When, from where, and what to do if it was not them.
        assert!(mail.contains("When: ") && mail.contains("From: 127.0.0.1"), "{mail}");
        assert!(mail.contains("If it was not you") && mail.contains("/security.html"), "{mail}");
        assert!(!mail.contains(PASSWORD), "no secret in a notice");
    };
    let set = app.put_bearer("/v1/me/password", bearer, &json!({"password": PASSWORD})).await;
    assert_eq!(set.status(), StatusCode::NO_CONTENT);
    expect("A password was set").await;
    let body = json!({"password": "another passphrase", "current_password": PASSWORD});
    assert_eq!(app.put_bearer("/v1/me/password", bearer, &body).await.status(), 204);
    expect("Your password was changed").await;
    let mut laptop = app.authenticator();
    let bound = app.bind_device(bearer, &mut laptop, "Laptop").await;
    expect("A new passkey, \"Laptop\", was added").await;
    let path = format!("/v1/me/devices/{}", bound["device_id"].as_str().unwrap());
    assert_eq!(app.delete_bearer(&path, bearer).await.status(), 204);
    expect("The passkey \"Laptop\" was removed").await;
    let started: Value =
        app.post_bearer("/v1/me/totp/start", bearer, &json!({})).await.json().await.unwrap();
    let secret = crate::fallback::base32_decode(started["secret"].as_str().unwrap());
    let code = totp_at(&secret, app.now_secs());
    assert_eq!(
        app.post_bearer("/v1/me/totp/finish", bearer, &json!({"code": code})).await.status(),
        200
    );
    expect("An authenticator app (TOTP) was set up").await;
    assert_eq!(app.post_bearer("/v1/me/recovery-codes", bearer, &json!({})).await.status(), 200);
    expect("A new set of recovery codes was made").await;
    assert_eq!(app.delete_bearer("/v1/me/totp", bearer).await.status(), 204);
    expect("The authenticator app (TOTP) and its recovery codes were removed").await;
    let roles = app
        .put_bearer(
            &format!("/v1/admin/users/{id}/roles"),
            &admin_bearer,
            &json!({"roles": ["admin"]}),
        )
        .await;
    assert_eq!(roles.status(), StatusCode::OK);
    expect("The roles of your account are now: admin.").await;
    let lock_path = format!("/v1/admin/users/{id}/lock");
    let lock = app.post_bearer(&lock_path, &admin_bearer, &json!({"reason": "check"})).await;
    assert_eq!(lock.status(), StatusCode::OK);
    expect("An administrator locked your account").await;
}

async fn an_address_change_keeps_the_old_address_until_the_new_one_is_confirmed(db: Db) {
    let app = spawn_app(db).await;
    let (account, old) = account_with_address(&app, "ph-move").await;
    let new = format!("ph-move-new-{}@example.test", db_tag(&app));
    let bearer = account.access_token.as_str();
    let set = app.post_bearer("/v1/me/email", bearer, &json!({"email": new})).await;
    assert_eq!(set.status(), StatusCode::ACCEPTED);
    let told = smtp::wait_for_mail(&old, "A change of your email address was requested").await;
    assert!(told.contains(&new), "{told}");
    let me: Value = app.me(bearer).await.json().await.unwrap();
    assert_eq!(
        (me["email"].as_str(), me["email_verified"].as_bool()),
        (Some(old.as_str()), Some(true))
    );
    // The old address still signs in as a second factor.
    let mfa = app.mfa_token("ph-move", PASSWORD).await;
    let sent = app.post("/v1/login/mfa/email/send", &json!({"mfa_token": mfa})).await;
    assert_eq!(sent.status(), StatusCode::ACCEPTED);
    let code = smtp::last_code_to(&old);
    let signed_in =
        app.post("/v1/login/mfa/email/verify", &json!({"mfa_token": mfa, "code": code})).await;
    assert_eq!(signed_in.status(), StatusCode::OK);
    // Confirmed: the new address takes over, and the old one is told.
    let code = smtp::last_code_to(&new);
    let verified = app.post_bearer("/v1/me/email/verify", bearer, &json!({"code": code})).await;
    assert_eq!(verified.status(), StatusCode::NO_CONTENT);
    let me: Value = app.me(bearer).await.json().await.unwrap();
    assert_eq!(
        (me["email"].as_str(), me["email_verified"].as_bool()),
        (Some(new.as_str()), Some(true))
    );
    smtp::wait_for_mail(&old, "Your email address was changed").await;
}

fn lockout(threshold: &'static str, permanent: &'static str) -> Vec<(&'static str, &'static str)> {
    vec![
        ("PASSGATE__LIMITS__LOCKOUT_THRESHOLD", threshold),
        ("PASSGATE__LIMITS__LOCKOUT_PERMANENT_THRESHOLD", permanent),
        ("PASSGATE__LIMITS__LOCKOUT_BASE_SECONDS", "60"),
        ("PASSGATE__LIMITS__FAILURE_WINDOW_SECONDS", "3600"),
        ("PASSGATE__LIMITS__ACCOUNT_REQUESTS_PER_MINUTE", "1000"),
        ("PASSGATE__LIMITS__IP_REQUESTS_PER_MINUTE", "1000"),
    ]
}

async fn wrong(app: &TestApp, name: &str) -> reqwest::Response {
    app.password_login(name, "a wrong guess").await
}

async fn failures_count_however_far_apart_until_a_sign_in(db: Db) {
    let app = spawn_app_configured(db, &lockout("3", "50")).await;
    app.fallback_account("ph-slow").await;
    for _ in 0..2 {
        assert_problem(wrong(&app, "ph-slow").await, 401, "invalid_credentials").await;
        // Days apart: a slow guesser is still counted.
        app.clock.advance(Duration::from_secs(2 * 24 * 3600));
    }
    assert_problem(wrong(&app, "ph-slow").await, 401, "invalid_credentials").await;
    let locked = app.password_login("ph-slow", PASSWORD).await;
    assert_eq!(locked.headers()["retry-after"], "60", "a quiet spell: the base length");
    assert_problem(locked, 403, "account_locked").await;
    // Past the lock, another failure at once doubles it...
    app.clock.advance(Duration::from_secs(61));
    assert_problem(wrong(&app, "ph-slow").await, 401, "invalid_credentials").await;
    let doubled = app.password_login("ph-slow", PASSWORD).await;
    assert_eq!(doubled.headers()["retry-after"], "120");
    // ...but after a quiet spell the lock is short again, the count not.
    app.clock.advance(Duration::from_secs(2 * 3600));
    assert_problem(wrong(&app, "ph-slow").await, 401, "invalid_credentials").await;
    let again = app.password_login("ph-slow", PASSWORD).await;
    assert_eq!(again.headers()["retry-after"], "60");
    assert_problem(again, 403, "account_locked").await;

    // A name that is no account keeps its count as long, housekeeping
    // or not: a count forgotten sooner would tell the two apart.
    for _ in 0..2 {
        assert_problem(wrong(&app, "ph-nobody").await, 401, "invalid_credentials").await;
    }
    app.clock.advance(Duration::from_secs(2 * 24 * 3600));
    let round = app.core.housekeeping.round(Duration::from_secs(10)).await;
    assert_eq!(round, passgate::service::housekeeping::Round::Done);
    assert_problem(wrong(&app, "ph-nobody").await, 401, "invalid_credentials").await;
    assert_problem(app.password_login("ph-nobody", PASSWORD).await, 403, "account_locked").await;
}

/// An attempt the server gave up on before it was checked (here the
/// request's deadline, while a slow hash ran) is handed back: nothing was
/// learnt from it, and it must not count towards a lock for good.
async fn an_attempt_cut_short_by_the_deadline_is_not_counted(db: Db) {
    let app = spawn_app_configured(
        db,
        &[
            // A hash of several seconds, and a deadline of one.
            ("PASSGATE__PASSWORD__MEMORY_KIB", "131072"),
            ("PASSGATE__PASSWORD__ITERATIONS", "24"),
            ("PASSGATE__SERVER__REQUEST_TIMEOUT_SECONDS", "1"),
        ],
    )
    .await;
    let cut = app.password_login("ph-cut-short", "a guess that was never checked").await;
    assert_problem(cut, 503, "unavailable").await;
    let observer = app.observer(Duration::from_secs(5)).await;
    let counted =
        "select cast(coalesce(sum(failures), 0) as bigint) from login_failure where subject = $1";
    for _ in 0..50 {
        if observer.count(counted, "name:ph-cut-short").await == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the attempt stayed counted");
}

async fn a_burst_of_guesses_at_once_cannot_run_past_the_threshold(db: Db) {
    let app = spawn_app_configured(db, &lockout("3", "50")).await;
    app.fallback_account("ph-burst").await;
    let guesses = (0..20).map(|_| wrong(&app, "ph-burst"));
    let answers = futures_util::future::join_all(guesses).await;
    let statuses: Vec<u16> = answers.iter().map(|r| r.status().as_u16()).collect();
    let checked = statuses.iter().filter(|s| **s == 401).count();
    let refused = statuses.iter().filter(|s| **s == 403).count();
    assert_eq!((checked, refused), (3, 17), "{statuses:?}");
    let user = app.store.find_user_by_username("ph-burst").await.unwrap().unwrap();
    let observer = app.observer(Duration::from_secs(5)).await;
    let failures = observer
        .count(
            "select failures from login_failure where subject = $1",
            &format!("user:{}", user.user_id),
        )
        .await;
    assert_eq!(failures, 3);
}

async fn many_failures_lock_the_fallback_until_a_passkey_sign_in_or_an_admin_unlock(db: Db) {
    let app = spawn_app_configured(db, &lockout("2", "4")).await;
    let mut account = app.fallback_account("ph-stuck").await;
    let lock_for_good = async || {
        for _ in 0..4 {
            assert_problem(wrong(&app, "ph-stuck").await, 401, "invalid_credentials").await;
            app.clock.advance(Duration::from_secs(3601));
        }
        // However long one waits: locked, with no time to retry after.
        app.clock.advance(Duration::from_secs(7 * 24 * 3600));
        let locked = app.password_login("ph-stuck", PASSWORD).await;
        assert!(locked.headers().get("retry-after").is_none());
        let body = assert_problem(locked, 403, "account_locked").await;
        assert!(body["detail"].as_str().unwrap().contains("passkey"), "{body}");
    };
    lock_for_good().await;
    // The owner's passkey sign-in opens it.
    assert_eq!(app.login(&mut account.passkey, None).await.status(), StatusCode::OK);
    app.mfa_token("ph-stuck", PASSWORD).await;
    lock_for_good().await;
    // So does an admin's unlock.
    let user = app.store.find_user_by_username("ph-stuck").await.unwrap().unwrap();
    // (Made now: an admin's sign-in is fresh for five minutes only.)
    let (_, fresh_admin) = admin(&app, "ph-admin-unlock").await;
    let path = format!("/v1/admin/users/{}/unlock", user.user_id);
    assert_eq!(app.post_bearer(&path, &fresh_admin, &json!({})).await.status(), StatusCode::OK);
    app.mfa_token("ph-stuck", PASSWORD).await;
}

async fn an_idle_session_ends_and_a_password_change_ends_the_others(db: Db) {
    let app = spawn_app_configured(db, &[("PASSGATE__TOKENS__IDLE_TIMEOUT_SECONDS", "1800")]).await;
    let mut passkey = app.authenticator();
    let first = app.register(&mut passkey, "ph-idle").await;
    // Refreshed within the idle time, a session goes on...
    app.clock.advance(Duration::from_secs(1700));
    let refreshed = app.refresh(first["refresh_token"].as_str().unwrap()).await;
    assert_eq!(refreshed.status(), StatusCode::OK);
    let refreshed: Value = refreshed.json().await.unwrap();
    app.clock.advance(Duration::from_secs(1700));
    let again = app.refresh(refreshed["refresh_token"].as_str().unwrap()).await;
    assert_eq!(again.status(), StatusCode::OK);
    let again: Value = again.json().await.unwrap();
    // ...left alone longer, it ends, and is no longer listed.
    app.clock.advance(Duration::from_secs(1801));
    assert_problem(
        app.refresh(again["refresh_token"].as_str().unwrap()).await,
        401,
        "invalid_credentials",
    )
    .await;
    let other: Value = app.login(&mut passkey, None).await.json().await.unwrap();
    let sessions: Vec<Value> =
        app.get("/v1/me/sessions", other["access_token"].as_str()).await.json().await.unwrap();
    assert_eq!(sessions.len(), 1, "{sessions:?}");

    // A password change ends every other session, not this one.
    let third: Value = app.login(&mut passkey, None).await.json().await.unwrap();
    let bearer = other["access_token"].as_str().unwrap();
    let set = app.put_bearer("/v1/me/password", bearer, &json!({"password": PASSWORD})).await;
    assert_eq!(set.status(), StatusCode::NO_CONTENT);
    let body = json!({"password": "changed passphrase", "current_password": PASSWORD});
    assert_eq!(app.put_bearer("/v1/me/password", bearer, &body).await.status(), 204);
    assert_problem(
        app.refresh(third["refresh_token"].as_str().unwrap()).await,
        401,
        "invalid_credentials",
    )
    .await;
    assert_eq!(
        app.refresh(other["refresh_token"].as_str().unwrap()).await.status(),
        StatusCode::OK
    );
}
