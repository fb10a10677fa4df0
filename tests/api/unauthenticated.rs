//! What anyone may call without an account costs bounded resources and
//! tells nothing: a sign-in's start writes nothing (its state is sealed in
//! the handle), registrations are counted per client address, and made-up
//! credentials for a name that is no account look like a real account's.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{Db, assert_problem, on_both, spawn_app, spawn_app_configured, spawn_app_on};

on_both!(
    a_sign_in_start_writes_nothing_to_the_database,
    a_sign_in_handle_finishes_once_on_any_node_and_nothing_else_finishes,
    registrations_are_counted_per_client_address,
    made_up_credentials_copy_a_real_accounts_shape,
);

async fn a_sign_in_start_writes_nothing_to_the_database(db: Db) {
    let app = spawn_app(db).await;
    let mut passkey = app.authenticator();
    app.register(&mut passkey, "un-known").await;
    let before = app.fingerprint().await;
    for name in [Some("un-known"), Some("un-nobody"), None] {
        for _ in 0..20 {
            assert_eq!(app.login_start(name).await.status(), StatusCode::OK);
        }
    }
    assert_eq!(app.fingerprint().await, before, "not even a ceremony row");
}

async fn a_sign_in_handle_finishes_once_on_any_node_and_nothing_else_finishes(db: Db) {
    let app = spawn_app(db).await;
    let other = spawn_app_on(&app).await;
    let mut passkey = app.authenticator();
    app.register(&mut passkey, "un-once").await;
    // Started on one node, finished on the other (no state of their own).
    let (handle, options) = app.started_login(Some("un-once")).await;
    let credential = passkey.login(&options);
    assert_eq!(other.login_finish(&handle, &credential).await.status(), StatusCode::OK);
    // The same handle again, on either node: used.
    let again = passkey.login(&options);
    assert_problem(app.login_finish(&handle, &again).await, 404, "ceremony_not_found").await;
    assert_problem(other.login_finish(&handle, &again).await, 404, "ceremony_not_found").await;
    // A handle altered in one place, or never issued: not found alike.
    let (handle, options) = app.started_login(None).await;
    let credential = passkey.login(&options);
    let mut forged = handle.clone().into_bytes();
    let last = forged.len() - 2;
    forged[last] = if forged[last] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).unwrap();
    assert_problem(app.login_finish(&forged, &credential).await, 404, "ceremony_not_found").await;
    let made_up = "A".repeat(114);
    assert_problem(app.login_finish(&made_up, &credential).await, 404, "ceremony_not_found").await;
    // The untouched one still works: a forgery used nothing up.
    assert_eq!(app.login_finish(&handle, &credential).await.status(), StatusCode::OK);
    // Past its lifetime (sealed in the handle), it is not found either.
    let (handle, options) = app.started_login(Some("un-once")).await;
    app.clock.advance(Duration::from_secs(301));
    let late = passkey.login(&options);
    assert_problem(app.login_finish(&handle, &late).await, 404, "ceremony_not_found").await;
    // A refused answer uses the handle up, as any finish does.
    let (handle, options) = app.started_login(Some("un-once")).await;
    // (Without user verification: refused.)
    let wrong = passkey.login_with(&options, |c| *c.flags_mut() &= !0x04);
    assert_problem(app.login_finish(&handle, &wrong).await, 401, "invalid_credentials").await;
    let right = passkey.login(&options);
    assert_problem(app.login_finish(&handle, &right).await, 404, "ceremony_not_found").await;
}

async fn registrations_are_counted_per_client_address(db: Db) {
    let app = spawn_app_configured(db, &[("PASSGATE__LIMITS__IP_REQUESTS_PER_MINUTE", "3")]).await;
    let mut passkey = app.authenticator();
    // A start and a finish count one each: one registration, then a start.
    app.register(&mut passkey, "un-first").await;
    assert_eq!(app.register_start("un-second").await.status(), StatusCode::OK);
    let before = app.fingerprint().await;
    let refused = app.register_start("un-third").await;
    let retry_after: u64 = refused.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry_after));
    assert_problem(refused, 429, "rate_limited").await;
    assert_eq!(app.fingerprint().await, before, "no ceremony stored");
    // The window passes; registration opens again.
    app.clock.advance(Duration::from_secs(61));
    assert_eq!(app.register_start("un-third").await.status(), StatusCode::OK);
}

async fn made_up_credentials_copy_a_real_accounts_shape(db: Db) {
    let app = spawn_app(db).await;
    // The one real account: two passkeys, one a security key over USB.
    let mut phone = app.authenticator();
    let tokens = app.register(&mut phone, "un-real").await;
    let bearer = tokens["access_token"].as_str().unwrap();
    let mut key = app.authenticator();
    key.set_transports(&["usb"]);
    app.bind_device(bearer, &mut key, "Key").await;
    let shape = |options: &Value| -> Vec<(usize, Value)> {
        options["allowCredentials"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| (c["id"].as_str().unwrap().len(), c["transports"].clone()))
            .collect()
    };
    let (real_id, real) = app.started_login(Some("un-real")).await;
    let (ghost_id, ghost) = app.started_login(Some("un-ghost")).await;
    assert_eq!(ghost_id.len(), real_id.len(), "the handle's length tells nothing either");
    assert_eq!(shape(&ghost), shape(&real), "count, id lengths and transports alike");
    assert_ne!(ghost["allowCredentials"], real["allowCredentials"], "but not its ids");
    let (_, again) = app.started_login(Some("un-ghost")).await;
    assert_eq!(again["allowCredentials"], ghost["allowCredentials"], "the same each time");
}
