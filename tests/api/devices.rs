//! Bound devices and sessions the signed-in user manages (/v1/me/devices,
//! /v1/me/sessions).

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::authenticator::SoftAuthenticator;
use crate::helpers::{Db, TestApp, assert_problem, on_both, spawn_app, spawn_app_configured};

on_both!(
    devices_are_listed_bound_renamed_and_unbound,
    the_last_way_to_sign_in_cannot_be_unbound,
    two_unbinds_at_once_leave_the_last_passkey,
    binding_a_device_needs_a_recent_sign_in,
    sessions_are_listed_and_ended_one_by_one,
    devices_name_what_the_webauthn_signal_api_needs,
);

impl TestApp {
    pub async fn patch_bearer(&self, path: &str, bearer: &str, body: &Value) -> reqwest::Response {
        self.client
            .patch(format!("{}{path}", self.address))
            .bearer_auth(bearer)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// Binds another passkey from `authenticator`; returns the new device.
    pub async fn bind_device(
        &self,
        bearer: &str,
        authenticator: &mut SoftAuthenticator,
        name: &str,
    ) -> Value {
        let started: Value = self
            .post_bearer("/v1/me/devices/start", bearer, &json!({}))
            .await
            .json()
            .await
            .unwrap();
        let credential = authenticator.register(&started["publicKey"]);
        let body = json!({"ceremony_id": started["ceremony_id"], "credential": credential, "device_name": name});
        let response = self.post_bearer("/v1/me/devices/finish", bearer, &body).await;
        assert_eq!(response.status(), StatusCode::CREATED);
        response.json().await.unwrap()
    }

    pub async fn devices(&self, bearer: &str) -> Vec<Value> {
        let response = self.get("/v1/me/devices", Some(bearer)).await;
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.unwrap()
    }
}

async fn devices_are_listed_bound_renamed_and_unbound(db: Db) {
    let app = spawn_app(db).await;
    let mut phone = app.authenticator();
    let tokens = app.register(&mut phone, "dev-alice").await;
    let bearer = tokens["access_token"].as_str().unwrap();
    let devices = app.devices(bearer).await;
    assert_eq!(devices.len(), 1);
    let first = &devices[0];
    assert_eq!(first["device_id"], tokens["device_id"]);
    assert_eq!(first["name"], "Passkey");
    assert_eq!(first["kind"], "passkey");
    assert_eq!(
        (first["backup_eligible"].as_bool(), first["backup_state"].as_bool()),
        (Some(false), Some(false))
    );
    assert_eq!(first["aaguid"], "01020304-0506-0708-0102-030405060708");
    assert_eq!(first["authenticator"], "Chromium virtual authenticator");
    assert!(first["created_at"].as_str().unwrap().ends_with('Z'));
    assert!(first["last_used_at"].is_null());

    // A second, synced passkey (a password manager).
    let mut laptop = app.authenticator();
    laptop.set_synced(true);
    let bound = app.bind_device(bearer, &mut laptop, "Laptop").await;
    assert_eq!(bound["name"], "Laptop");
    assert_eq!(
        (bound["backup_eligible"].as_bool(), bound["backup_state"].as_bool()),
        (Some(true), Some(true))
    );
    assert_eq!(app.login(&mut laptop, Some("dev-alice")).await.status(), StatusCode::OK);
    let devices = app.devices(bearer).await;
    assert_eq!(devices.len(), 2);
    assert!(devices[1]["last_used_at"].is_string(), "used to sign in just now");

    let laptop_id = bound["device_id"].as_str().unwrap();
    let renamed = app
        .patch_bearer(
            &format!("/v1/me/devices/{laptop_id}"),
            bearer,
            &json!({"name": "Work laptop"}),
        )
        .await;
    assert_eq!(renamed.status(), StatusCode::OK);
    assert_eq!(app.devices(bearer).await[1]["name"], "Work laptop");
    assert_problem(
        app.patch_bearer(&format!("/v1/me/devices/{laptop_id}"), bearer, &json!({"name": ""}))
            .await,
        422,
        "validation_failed",
    )
    .await;
    let nobody = uuid::Uuid::new_v4();
    assert_problem(
        app.patch_bearer(&format!("/v1/me/devices/{nobody}"), bearer, &json!({"name": "x"})).await,
        404,
        "not_found",
    )
    .await;

    // Unbinding the phone ends the sessions it began (this bearer's too).
    let phone_id = tokens["device_id"].as_str().unwrap();
    let laptop_session: Value = app.login(&mut laptop, None).await.json().await.unwrap();
    let laptop_bearer = laptop_session["access_token"].as_str().unwrap();
    let unbound = app.delete_bearer(&format!("/v1/me/devices/{phone_id}"), laptop_bearer).await;
    assert_eq!(unbound.status(), StatusCode::NO_CONTENT);
    assert_problem(app.me(bearer).await, 401, "unauthorized").await;
    assert_problem(
        app.refresh(tokens["refresh_token"].as_str().unwrap()).await,
        401,
        "invalid_credentials",
    )
    .await;
    assert_problem(app.login(&mut phone, None).await, 401, "invalid_credentials").await;
    assert_eq!(app.devices(laptop_bearer).await.len(), 1);
    // Another user's device is not found, not unbound.
    let mut other = app.authenticator();
    let other_tokens = app.register(&mut other, "dev-bob").await;
    let other_id = other_tokens["device_id"].as_str().unwrap();
    assert_problem(
        app.delete_bearer(&format!("/v1/me/devices/{other_id}"), laptop_bearer).await,
        404,
        "not_found",
    )
    .await;
}

/// The self-service page tells the browser which passkeys the server
/// still accepts (WebAuthn Signal API): that needs each passkey's
/// credential id, the user handle it holds and its RP id.
async fn devices_name_what_the_webauthn_signal_api_needs(db: Db) {
    use base64::Engine;
    let b64url = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let app = spawn_app(db).await;
    let mut phone = app.authenticator();
    let tokens = app.register(&mut phone, "dev-signal").await;
    let bearer = tokens["access_token"].as_str().unwrap();
    let mut laptop = app.authenticator();
    let bound = app.bind_device(bearer, &mut laptop, "Laptop").await;

    let user_id = uuid::Uuid::parse_str(tokens["user_id"].as_str().unwrap()).unwrap();
    let devices = app.devices(bearer).await;
    let listed: Vec<(&str, &str, &str)> = devices
        .iter()
        .map(|d| {
            let text = |key: &str| d[key].as_str().unwrap_or_else(|| panic!("{key} in {d}"));
            (text("credential_id"), text("user_handle"), text("rp_id"))
        })
        .collect();
    let handle = b64url(user_id.as_bytes());
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0], (phone.credential_ids()[0].as_str(), handle.as_str(), "localhost"));
    assert_eq!(listed[1], (laptop.credential_ids()[0].as_str(), handle.as_str(), "localhost"));
    // The bind answers with the same fields.
    assert_eq!(bound["credential_id"], laptop.credential_ids()[0]);
    assert_eq!(bound["user_handle"], handle);

    // And /openapi.json publishes them as always present.
    let spec: Value = app.get("/openapi.json", None).await.json().await.unwrap();
    let required = &spec["components"]["schemas"]["Device"]["required"];
    for field in ["credential_id", "user_handle", "rp_id"] {
        assert!(required.as_array().unwrap().contains(&json!(field)), "{field} in {required}");
    }
}

async fn the_last_way_to_sign_in_cannot_be_unbound(db: Db) {
    let app = spawn_app(db).await;
    let mut phone = app.authenticator();
    let tokens = app.register(&mut phone, "dev-last").await;
    let bearer = tokens["access_token"].as_str().unwrap();
    let device = tokens["device_id"].as_str().unwrap();
    let before = app.fingerprint().await;
    let refused = app.delete_bearer(&format!("/v1/me/devices/{device}"), bearer).await;
    let body = assert_problem(refused, 403, "forbidden").await;
    assert!(body["detail"].as_str().unwrap().contains("last way to sign in"));
    assert_eq!(before, app.fingerprint().await);
    // With a password and TOTP, the passkey is no longer the only way in.
    let account = app.fallback_account("dev-last-fb").await;
    let devices = app.devices(&account.access_token).await;
    let path = format!("/v1/me/devices/{}", devices[0]["device_id"].as_str().unwrap());
    assert_eq!(
        app.delete_bearer(&path, &account.access_token).await.status(),
        StatusCode::NO_CONTENT
    );
}

/// Both requests see two passkeys when they start; the store counts again
/// under the user's lock, so one of them must be refused.
async fn two_unbinds_at_once_leave_the_last_passkey(db: Db) {
    let app = spawn_app(db).await;
    // A few users, so the two requests meet in more than one order.
    for round in 0..3 {
        let mut phone = app.authenticator();
        let tokens = app.register(&mut phone, &format!("dev-race-{round}")).await;
        let bearer = tokens["access_token"].as_str().unwrap();
        let user_id = tokens["user_id"].as_str().unwrap();
        let mut laptop = app.authenticator();
        app.bind_device(bearer, &mut laptop, "Laptop").await;
        let paths: Vec<String> = app
            .devices(bearer)
            .await
            .iter()
            .map(|d| format!("/v1/me/devices/{}", d["device_id"].as_str().unwrap()))
            .collect();
        assert_eq!(paths.len(), 2);
        let (a, b) = tokio::join!(
            app.delete_bearer(&paths[0], bearer),
            app.delete_bearer(&paths[1], bearer)
        );
        let mut statuses = [a.status().as_u16(), b.status().as_u16()];
        statuses.sort();
        // The loser is refused as the last way in (403), or, when the
        // winner unbound the device that began the bearer's session,
        // as signed out (401).
        assert!(statuses == [204, 403] || statuses == [204, 401], "round {round}: {statuses:?}");
        // Read from the store: the bearer's own session may have ended
        // with the device that began it.
        let left = app.store.user_credentials(user_id).await.unwrap();
        assert_eq!(left.len(), 1, "one passkey stays");
    }
}

async fn binding_a_device_needs_a_recent_sign_in(db: Db) {
    let app = spawn_app_configured(db, &[("PASSGATE__TOKENS__ACCESS_TTL_SECONDS", "900")]).await;
    let mut phone = app.authenticator();
    let tokens = app.register(&mut phone, "dev-fresh").await;
    let bearer = tokens["access_token"].as_str().unwrap();
    app.clock.advance(Duration::from_secs(301));
    assert_problem(
        app.post_bearer("/v1/me/devices/start", bearer, &json!({})).await,
        403,
        "passkey_required",
    )
    .await;
    // Another user cannot finish this user's ceremony.
    let fresh: Value = app.login(&mut phone, None).await.json().await.unwrap();
    let bearer = fresh["access_token"].as_str().unwrap();
    let started: Value =
        app.post_bearer("/v1/me/devices/start", bearer, &json!({})).await.json().await.unwrap();
    let mut intruder = app.authenticator();
    let intruder_tokens = app.register(&mut intruder, "dev-intruder").await;
    let credential = intruder.register(&started["publicKey"]);
    let body = json!({"ceremony_id": started["ceremony_id"], "credential": credential});
    let stolen = app
        .post_bearer(
            "/v1/me/devices/finish",
            intruder_tokens["access_token"].as_str().unwrap(),
            &body,
        )
        .await;
    assert_problem(stolen, 404, "ceremony_not_found").await;
    assert_eq!(app.devices(bearer).await.len(), 1);
    // The same passkey twice is refused (excludeCredentials).
    let again: Value =
        app.post_bearer("/v1/me/devices/start", bearer, &json!({})).await.json().await.unwrap();
    let excluded = again["publicKey"]["excludeCredentials"].as_array().unwrap();
    assert_eq!(excluded.len(), 1);
}

async fn sessions_are_listed_and_ended_one_by_one(db: Db) {
    let app = spawn_app(db).await;
    let mut phone = app.authenticator();
    let registered = app.register(&mut phone, "dev-sessions").await;
    let second: Value = app.login(&mut phone, None).await.json().await.unwrap();
    let bearer = second["access_token"].as_str().unwrap();
    let response = app
        .client
        .get(format!("{}/v1/me/sessions", app.address))
        .bearer_auth(bearer)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let sessions: Vec<Value> = response.json().await.unwrap();
    assert_eq!(sessions.len(), 2);
    let current: Vec<_> = sessions.iter().filter(|s| s["current"] == true).collect();
    assert_eq!(current.len(), 1);
    assert_eq!(current[0]["amr"], json!(["hwk", "user"]));
    assert_eq!(current[0]["client_ip"], "127.0.0.1");
    assert_eq!(current[0]["device_id"], registered["device_id"]);
    let other = sessions.iter().find(|s| s["current"] == false).unwrap();
    let path = format!("/v1/me/sessions/{}", other["session_id"].as_str().unwrap());
    assert_eq!(app.delete_bearer(&path, bearer).await.status(), StatusCode::NO_CONTENT);
    assert_problem(app.delete_bearer(&path, bearer).await, 404, "not_found").await;
    assert_problem(
        app.refresh(registered["refresh_token"].as_str().unwrap()).await,
        401,
        "invalid_credentials",
    )
    .await;
    assert_eq!(
        app.refresh(second["refresh_token"].as_str().unwrap()).await.status(),
        StatusCode::OK
    );
    assert_problem(app.delete_bearer("/v1/me/sessions/not-a-uuid", bearer).await, 404, "not_found")
        .await;
}
