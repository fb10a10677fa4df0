//! No secret reaches a log: the captured logs of real flows (in JSON, with
//! every span field) are searched for every secret those flows used.

use serde_json::{Value, json};

use crate::helpers::{Db, captured_logs, spawn_app_configured};

const KEK: &str = "bG9nLXNjYW4ta2V5LTMyLWJ5dGVzLWxvbmctLS0tLS0=";

#[tokio::test]
async fn no_token_credential_or_key_reaches_the_logs() {
    let app =
        spawn_app_configured(Db::Sqlite, &[("PASSGATE__TOKENS__KEY_ENCRYPTION_KEY", KEK)]).await;
    let mut phone = app.authenticator();
    let mut secrets: Vec<String> = vec![KEK.to_owned()];

    // Register, sign in both ways, refresh, approve a payment, log out.
    let (ceremony_id, options) = app.started_registration("logscan").await;
    let credential = phone.register(&options);
    secrets.push(credential["response"]["attestationObject"].as_str().unwrap().to_owned());
    let registered: Value =
        app.register_finish(&ceremony_id, &credential).await.json().await.unwrap();
    let (ceremony_id, options) = app.started_login(None).await;
    let assertion = phone.login(&options);
    secrets.push(assertion["response"]["signature"].as_str().unwrap().to_owned());
    let login = app.login_finish(&ceremony_id, &assertion).await;
    let request_id = login.headers()["x-request-id"].to_str().unwrap().to_owned();
    let signed_in: Value = login.json().await.unwrap();
    let refreshed: Value =
        app.refresh(signed_in["refresh_token"].as_str().unwrap()).await.json().await.unwrap();
    let bearer = refreshed["access_token"].as_str().unwrap();
    let started: Value = app
        .post_bearer(
            "/v1/stepup/start",
            bearer,
            &json!({"transaction": {"amount": "9.99", "currency": "EUR", "payee": "Shop"}}),
        )
        .await
        .json()
        .await
        .unwrap();
    let approval = phone.login(&started["publicKey"]);
    let approved: Value = app
        .post_bearer(
            "/v1/stepup/finish",
            bearer,
            &json!({"ceremony_id": started["ceremony_id"], "credential": approval}),
        )
        .await
        .json()
        .await
        .unwrap();
    // Refusals log too: a reused refresh token, a forged bearer.
    app.refresh(signed_in["refresh_token"].as_str().unwrap()).await;
    app.me("eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.").await;
    app.logout(refreshed["refresh_token"].as_str().unwrap()).await;
    for tokens in [&registered, &signed_in, &refreshed] {
        secrets.push(tokens["access_token"].as_str().unwrap().to_owned());
        secrets.push(tokens["refresh_token"].as_str().unwrap().to_owned());
    }
    secrets.push(approved["authorization_token"].as_str().unwrap().to_owned());

    let logs = captured_logs();
    assert!(logs.contains(&request_id), "the capture works: this test's request is in it");
    assert!(logs.contains("payment_approved"), "audit events are captured");
    for secret in &secrets {
        // Any long-enough piece would do for a leak; the JWT signature part
        // and the middle of opaque values are what matter.
        let probe = &secret[secret.len().saturating_sub(40)..];
        assert!(!logs.contains(probe), "a secret reached the logs: …{probe}");
    }
}
