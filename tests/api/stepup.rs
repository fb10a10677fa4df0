//! Payment step-up: transaction-bound approval with the user's own passkey.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::helpers::{
    Db, TestApp, assert_problem, claims_of, on_both, spawn_app, spawn_app_configured,
};

on_both!(
    a_payment_is_approved_with_a_token_bound_to_that_transaction,
    another_users_passkey_cannot_approve,
    a_changed_transaction_or_a_replayed_finish_is_refused,
    step_up_needs_a_bearer_token_and_a_valid_transaction,
    a_device_bound_policy_refuses_synced_passkeys,
);

/// The canonical form written out by hand, independently of the server.
const COFFEE_CANONICAL: &str = r#"{"amount":"12.50","currency":"EUR","payee":"Coffee Shop"}"#;

fn coffee() -> Value {
    json!({ "amount": "12.50", "currency": "EUR", "payee": "Coffee Shop" })
}

async fn stepup_start(app: &TestApp, bearer: &str, transaction: Value) -> reqwest::Response {
    app.post_bearer("/v1/stepup/start", bearer, &json!({ "transaction": transaction })).await
}

async fn stepup_finish(app: &TestApp, bearer: &str, body: Value) -> reqwest::Response {
    app.post_bearer("/v1/stepup/finish", bearer, &body).await
}

async fn a_payment_is_approved_with_a_token_bound_to_that_transaction(db: Db) {
    let app = spawn_app(db).await;
    let mut phone = app.authenticator();
    let tokens = app.register(&mut phone, "alice").await;
    let bearer = tokens["access_token"].as_str().unwrap();

    let started: Value = stepup_start(&app, bearer, coffee()).await.json().await.unwrap();
    let challenge =
        URL_SAFE_NO_PAD.decode(started["publicKey"]["challenge"].as_str().unwrap()).unwrap();
    let assertion = phone.login(&started["publicKey"]);
    let response = stepup_finish(
        &app,
        bearer,
        json!({"ceremony_id": started["ceremony_id"], "credential": assertion}),
    )
    .await;

    assert_eq!(response.status(), StatusCode::OK);
    let approved: Value = response.json().await.unwrap();
    let digest = Sha256::digest(COFFEE_CANONICAL.as_bytes());
    assert_eq!(challenge.len(), 48);
    assert_eq!(&challenge[16..], &digest[..], "the challenge commits to the transaction");
    let claims = claims_of(approved["authorization_token"].as_str().unwrap());
    assert_eq!(claims["txn"], URL_SAFE_NO_PAD.encode(digest));
    assert_eq!(approved["txn"], claims["txn"]);
    assert_eq!(claims["scope"], "payment:authorize");
    assert_eq!(claims["aud"], "payments:authorize", "not the access tokens' audience");
    assert_eq!(claims["sub"], tokens["user_id"]);
    assert_eq!(claims["device_id"], tokens["device_id"]);
    assert!(claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap() <= 120);
    assert_eq!(approved["expires_in"], 120);
    // Each kind of token says what it is, so neither passes for the other.
    let typ = |jwt: &str| jsonwebtoken::decode_header(jwt).unwrap().typ;
    assert_eq!(
        typ(approved["authorization_token"].as_str().unwrap()).as_deref(),
        Some("payment-authz+jwt")
    );
    assert_eq!(typ(bearer).as_deref(), Some("JWT"));
    let as_bearer = app.me(approved["authorization_token"].as_str().unwrap()).await;
    assert_problem(as_bearer, 401, "unauthorized").await;
    assert!(claims["jti"].is_string());
}

async fn another_users_passkey_cannot_approve(db: Db) {
    let app = spawn_app(db).await;
    let (mut alice_phone, mut bob_phone) = (app.authenticator(), app.authenticator());
    let alice = app.register(&mut alice_phone, "alice").await;
    app.register(&mut bob_phone, "bob").await;
    let bearer = alice["access_token"].as_str().unwrap();
    let started: Value = stepup_start(&app, bearer, coffee()).await.json().await.unwrap();
    // Only alice's passkey is offered...
    let offered: Vec<&str> = started["publicKey"]["allowCredentials"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(offered, alice_phone.credential_ids());
    // ...and bob's, answering anyway, is refused.
    let mut options = started["publicKey"].clone();
    options["allowCredentials"] = json!([]);
    let assertion = bob_phone.login(&options);
    let before = app.fingerprint().await;

    let response = stepup_finish(
        &app,
        bearer,
        json!({"ceremony_id": started["ceremony_id"], "credential": assertion}),
    )
    .await;

    assert_problem(response, 401, "invalid_credentials").await;
    assert_eq!(app.fingerprint().await.ignoring_ceremonies(), before.ignoring_ceremonies());
}

async fn a_changed_transaction_or_a_replayed_finish_is_refused(db: Db) {
    let app = spawn_app(db).await;
    let mut phone = app.authenticator();
    let tokens = app.register(&mut phone, "alice").await;
    let bearer = tokens["access_token"].as_str().unwrap();

    // The client claims another amount at finish.
    let started: Value = stepup_start(&app, bearer, coffee()).await.json().await.unwrap();
    let assertion = phone.login(&started["publicKey"]);
    let mut bigger = coffee();
    bigger["amount"] = json!("1250.00");
    let changed = stepup_finish(&app, bearer,
        json!({"ceremony_id": started["ceremony_id"], "credential": assertion, "transaction": bigger})).await;
    assert_problem(changed, 401, "invalid_credentials").await;

    // A signature over another transaction's challenge does not fit.
    let first: Value = stepup_start(&app, bearer, coffee()).await.json().await.unwrap();
    let second: Value = stepup_start(&app, bearer, bigger).await.json().await.unwrap();
    let for_first = phone.login(&first["publicKey"]);
    let swapped = stepup_finish(
        &app,
        bearer,
        json!({"ceremony_id": second["ceremony_id"], "credential": for_first}),
    )
    .await;
    assert_problem(swapped, 401, "invalid_credentials").await;

    // The same transaction stated at finish is fine; finishing twice is not.
    let started: Value = stepup_start(&app, bearer, coffee()).await.json().await.unwrap();
    let assertion = phone.login(&started["publicKey"]);
    let body = json!({"ceremony_id": started["ceremony_id"], "credential": assertion, "transaction": coffee()});
    assert_eq!(stepup_finish(&app, bearer, body.clone()).await.status(), StatusCode::OK);
    assert_problem(stepup_finish(&app, bearer, body).await, 404, "ceremony_not_found").await;

    // A login ceremony cannot finish a step-up.
    let (login_id, options) = app.started_login(Some("alice")).await;
    let assertion = phone.login(&options);
    let response =
        stepup_finish(&app, bearer, json!({"ceremony_id": login_id, "credential": assertion}))
            .await;
    assert_problem(response, 404, "ceremony_not_found").await;
}

async fn step_up_needs_a_bearer_token_and_a_valid_transaction(db: Db) {
    let app = spawn_app(db).await;
    let mut phone = app.authenticator();
    let alice = app.register(&mut phone, "alice").await;
    let bob = app.register(&mut app.authenticator(), "bob").await;
    let bearer = alice["access_token"].as_str().unwrap();
    let before = app.fingerprint().await;

    let anonymous = app.post("/v1/stepup/start", &json!({ "transaction": coffee() })).await;
    assert_problem(anonymous, 401, "unauthorized").await;
    for (field, value) in
        [("amount", json!("-5")), ("currency", json!("euro")), ("payee", json!(""))]
    {
        let mut transaction = coffee();
        transaction[field] = value;
        let problem =
            assert_problem(stepup_start(&app, bearer, transaction).await, 422, "validation_failed")
                .await;
        assert!(problem["detail"].as_str().unwrap().contains(field), "{problem}");
    }
    let mut extra = coffee();
    extra["fee"] = json!("1.00");
    assert_problem(stepup_start(&app, bearer, extra).await, 422, "validation_failed").await;
    assert_eq!(app.fingerprint().await, before);

    // Bob cannot finish alice's ceremony, even with her assertion.
    let started: Value = stepup_start(&app, bearer, coffee()).await.json().await.unwrap();
    let assertion = phone.login(&started["publicKey"]);
    let body = json!({"ceremony_id": started["ceremony_id"], "credential": assertion});
    let response = stepup_finish(&app, bob["access_token"].as_str().unwrap(), body.clone()).await;
    assert_problem(response, 404, "ceremony_not_found").await;
    // ...and his attempt did not use it up: alice still can.
    assert_eq!(stepup_finish(&app, bearer, body).await.status(), StatusCode::OK);
}

async fn a_device_bound_policy_refuses_synced_passkeys(db: Db) {
    let app = spawn_app_configured(db, &[("PASSGATE__STEPUP__REQUIRE_DEVICE_BOUND", "true")]).await;
    let mut synced = app.authenticator();
    synced.set_synced(true);
    let carol = app.register(&mut synced, "carol").await;
    let mut bound = app.authenticator();
    let dave = app.register(&mut bound, "dave").await;

    let refused = stepup_start(&app, carol["access_token"].as_str().unwrap(), coffee()).await;
    let allowed = stepup_start(&app, dave["access_token"].as_str().unwrap(), coffee()).await;

    let problem = assert_problem(refused, 403, "forbidden").await;
    assert!(problem["detail"].as_str().unwrap().contains("device-bound"));
    assert_eq!(allowed.status(), StatusCode::OK);
}
