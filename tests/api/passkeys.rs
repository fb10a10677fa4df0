//! Registration and sign-in ceremonies over real HTTP.

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{ANDROID_ORIGIN, Db, assert_problem, claims_of, on_both, spawn_app};

on_both!(
    a_user_registers_and_signs_in_with_and_without_a_username,
    a_finished_ceremony_cannot_be_finished_again,
    two_simultaneous_finishes_of_one_ceremony_let_exactly_one_through,
    an_expired_ceremony_is_refused_and_changes_nothing,
    a_username_is_taken_only_when_its_registration_finishes,
    an_unknown_username_gets_an_answer_shaped_like_a_known_one,
    a_wrong_origin_is_refused_at_registration_and_sign_in,
    a_passkey_without_user_verification_is_refused,
    a_sign_counter_that_goes_backwards_is_refused_as_a_possible_clone,
    a_synced_passkey_with_a_zero_counter_signs_in_repeatedly,
    another_users_passkey_cannot_answer_a_username_first_sign_in,
    a_forged_signature_or_rp_id_is_refused,
    an_android_app_origin_signs_in_when_configured,
);

async fn a_user_registers_and_signs_in_with_and_without_a_username(db: Db) {
    // Arrange
    let app = spawn_app(db).await;
    let mut phone = app.authenticator();

    // Act: register, then both kinds of sign-in.
    let registered = app.register(&mut phone, "alice").await;
    let username_first = app.login(&mut phone, Some("alice")).await;
    let discoverable = app.login(&mut phone, None).await;

    // Assert
    let user_id = registered["user_id"].as_str().unwrap();
    assert!(registered["device_id"].is_string());
    assert_eq!(registered["token_type"], "Bearer");
    assert_eq!(registered["expires_in"], 300);
    for response in [username_first, discoverable] {
        assert_eq!(response.status(), StatusCode::OK);
        let tokens: Value = response.json().await.unwrap();
        assert_eq!(tokens["user_id"], user_id);
        let claims = claims_of(tokens["access_token"].as_str().unwrap());
        assert_eq!(claims["sub"], user_id);
        assert_eq!(claims["aud"], "payments");
        assert_eq!(claims["amr"], serde_json::json!(["hwk", "user"]));
        assert_eq!(claims["device_id"], registered["device_id"]);
        assert_eq!(claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(), 300);
        assert!(claims["jti"].is_string() && claims["sid"].is_string());
        let me: Value =
            app.me(tokens["access_token"].as_str().unwrap()).await.json().await.unwrap();
        assert_eq!(me["username"], "alice");
        assert_eq!(me["factors"], serde_json::json!(["passkey"]));
    }
}

async fn a_finished_ceremony_cannot_be_finished_again(db: Db) {
    let app = spawn_app(db).await;
    let mut phone = app.authenticator();
    app.register(&mut phone, "alice").await;
    let (ceremony_id, options) = app.started_login(Some("alice")).await;
    let assertion = phone.login(&options);
    assert_eq!(app.login_finish(&ceremony_id, &assertion).await.status(), StatusCode::OK);
    let before = app.fingerprint().await;

    let replay = app.login_finish(&ceremony_id, &assertion).await;

    assert_problem(replay, 404, "ceremony_not_found").await;
    assert_eq!(app.fingerprint().await, before);
}

async fn two_simultaneous_finishes_of_one_ceremony_let_exactly_one_through(db: Db) {
    let app = spawn_app(db).await;
    let mut phone = app.authenticator();
    app.register(&mut phone, "alice").await;
    let (ceremony_id, options) = app.started_login(Some("alice")).await;
    let assertion = phone.login(&options);

    let (a, b) = tokio::join!(
        app.login_finish(&ceremony_id, &assertion),
        app.login_finish(&ceremony_id, &assertion)
    );

    let mut statuses = [a.status().as_u16(), b.status().as_u16()];
    statuses.sort();
    assert_eq!(statuses, [200, 404]);
}

async fn an_expired_ceremony_is_refused_and_changes_nothing(db: Db) {
    let app = spawn_app(db).await;
    let mut phone = app.authenticator();
    let (ceremony_id, options) = app.started_registration("alice").await;
    let credential = phone.register(&options);
    app.clock.advance(std::time::Duration::from_secs(301));
    let before = app.fingerprint().await;

    let response = app.register_finish(&ceremony_id, &credential).await;

    assert_problem(response, 404, "ceremony_not_found").await;
    assert_eq!(app.fingerprint().await, before);
    assert_eq!(app.register_start("alice").await.status(), StatusCode::OK, "name still free");
}

async fn a_username_is_taken_only_when_its_registration_finishes(db: Db) {
    let app = spawn_app(db).await;
    let (mut first, mut second) = (app.authenticator(), app.authenticator());
    // Both start: a started registration reserves nothing.
    let (id_1, options_1) = app.started_registration("alice").await;
    let (id_2, options_2) = app.started_registration("Alice").await;
    let credential_1 = first.register(&options_1);
    let credential_2 = second.register(&options_2);

    let won = app.register_finish(&id_1, &credential_1).await;
    let before = app.fingerprint().await;
    let lost = app.register_finish(&id_2, &credential_2).await;

    assert_eq!(won.status(), StatusCode::CREATED);
    assert_problem(lost, 409, "username_taken").await;
    assert_eq!(app.fingerprint().await.ignoring_ceremonies(), before.ignoring_ceremonies());
    // A start for a taken name stores no ceremony either.
    let before = app.fingerprint().await;
    assert_problem(app.register_start("ALICE").await, 409, "username_taken").await;
    assert_eq!(app.fingerprint().await, before);
}

async fn an_unknown_username_gets_an_answer_shaped_like_a_known_one(db: Db) {
    let app = spawn_app(db).await;
    let mut phone = app.authenticator();
    app.register(&mut phone, "alice").await;

    let (_, known) = app.started_login(Some("alice")).await;
    let (unknown_id, unknown) = app.started_login(Some("mallory")).await;
    let (_, unknown_again) = app.started_login(Some("mallory")).await;

    let keys = |v: &Value| {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    assert_eq!(keys(&known), keys(&unknown));
    assert_eq!(keys(&known["allowCredentials"][0]), keys(&unknown["allowCredentials"][0]));
    assert_eq!(unknown["allowCredentials"], unknown_again["allowCredentials"], "stable ids");
    assert_ne!(unknown["challenge"], unknown_again["challenge"]);
    assert_ne!(known["allowCredentials"][0]["id"], unknown["allowCredentials"][0]["id"]);
    // Answering a made-up id with a real passkey still fails as a login.
    let mut forged = unknown.clone();
    forged["allowCredentials"] = known["allowCredentials"].clone();
    let assertion = phone.login(&forged);
    assert_problem(app.login_finish(&unknown_id, &assertion).await, 401, "invalid_credentials")
        .await;
}

async fn a_wrong_origin_is_refused_at_registration_and_sign_in(db: Db) {
    let app = spawn_app(db).await;
    let mut phone = app.authenticator();
    phone.set_origin("https://evil.example");
    let (ceremony_id, options) = app.started_registration("alice").await;
    let credential = phone.register(&options);
    let before = app.fingerprint().await;
    let body = assert_problem(
        app.register_finish(&ceremony_id, &credential).await,
        400,
        "webauthn_failed",
    )
    .await;
    assert!(body["detail"].as_str().unwrap().contains("refused"));
    // The ceremony was used up; nothing else changed.
    let after = app.fingerprint().await;
    assert_eq!(after.ignoring_ceremonies(), before.ignoring_ceremonies());

    phone.set_origin(&app.origin);
    app.register(&mut phone, "alice").await;
    phone.set_origin(&format!("http://localhost:{}", app.port + 1));
    let before = app.fingerprint().await;
    let (ceremony_id, options) = app.started_login(Some("alice")).await;
    let response = app.login_finish(&ceremony_id, &phone.login(&options)).await;
    assert_problem(response, 401, "invalid_credentials").await;
    assert_eq!(app.fingerprint().await.ignoring_ceremonies(), before.ignoring_ceremonies());
    // The refused answer used the ceremony up: a good answer to the same
    // challenge comes too late.
    phone.set_origin(&app.origin);
    let late = app.login_finish(&ceremony_id, &phone.login(&options)).await;
    assert_problem(late, 404, "ceremony_not_found").await;
}

async fn a_passkey_without_user_verification_is_refused(db: Db) {
    let app = spawn_app(db).await;
    let mut phone = app.authenticator();
    phone.set_user_verified(false);
    let (ceremony_id, options) = app.started_registration("alice").await;
    let credential = phone.register(&options);
    assert_problem(app.register_finish(&ceremony_id, &credential).await, 400, "webauthn_failed")
        .await;

    phone.set_user_verified(true);
    app.register(&mut phone, "alice").await;
    phone.set_user_verified(false);
    let before = app.fingerprint().await;
    assert_problem(app.login(&mut phone, None).await, 401, "invalid_credentials").await;
    assert_eq!(app.fingerprint().await.ignoring_ceremonies(), before.ignoring_ceremonies());
}

async fn a_sign_counter_that_goes_backwards_is_refused_as_a_possible_clone(db: Db) {
    let app = spawn_app(db).await;
    let mut phone = app.authenticator();
    app.register(&mut phone, "alice").await;
    for _ in 0..3 {
        assert_eq!(app.login(&mut phone, Some("alice")).await.status(), StatusCode::OK);
    }
    // A clone made after the first sign-in reports counter 2 next.
    let credential_id = phone.credential_ids()[0].clone();
    phone.set_counter(&credential_id, 1);
    let before = app.fingerprint().await;

    let username_first = app.login(&mut phone, Some("alice")).await;
    phone.set_counter(&credential_id, 1);
    let discoverable = app.login(&mut phone, None).await;

    assert_problem(username_first, 401, "invalid_credentials").await;
    assert_problem(discoverable, 401, "invalid_credentials").await;
    assert_eq!(app.fingerprint().await.ignoring_ceremonies(), before.ignoring_ceremonies());
}

async fn a_synced_passkey_with_a_zero_counter_signs_in_repeatedly(db: Db) {
    let app = spawn_app(db).await;
    let mut phone = app.authenticator();
    phone.set_synced(true);
    app.register(&mut phone, "alice").await;
    for username in [Some("alice"), None, Some("alice")] {
        assert_eq!(app.login(&mut phone, username).await.status(), StatusCode::OK);
    }
}

async fn another_users_passkey_cannot_answer_a_username_first_sign_in(db: Db) {
    let app = spawn_app(db).await;
    let (mut alice_phone, mut bob_phone) = (app.authenticator(), app.authenticator());
    app.register(&mut alice_phone, "alice").await;
    app.register(&mut bob_phone, "bob").await;
    let (ceremony_id, mut options) = app.started_login(Some("alice")).await;
    // Bob's authenticator answers alice's challenge with his own passkey.
    options["allowCredentials"] = serde_json::json!([]);
    let assertion = bob_phone.login(&options);
    let before = app.fingerprint().await;

    let response = app.login_finish(&ceremony_id, &assertion).await;

    assert_problem(response, 401, "invalid_credentials").await;
    assert_eq!(app.fingerprint().await.ignoring_ceremonies(), before.ignoring_ceremonies());
}

async fn a_forged_signature_or_rp_id_is_refused(db: Db) {
    let app = spawn_app(db).await;
    let mut phone = app.authenticator();
    app.register(&mut phone, "alice").await;
    let before = app.fingerprint().await;

    let (id_1, options) = app.started_login(Some("alice")).await;
    let bad_signature = phone.login_with(&options, |c| c.corrupt_signature = true);
    let (id_2, options) = app.started_login(None).await;
    let bad_rp = phone.login_with(&options, |c| c.set_rp_id("evil.example"));

    assert_problem(app.login_finish(&id_1, &bad_signature).await, 401, "invalid_credentials").await;
    assert_problem(app.login_finish(&id_2, &bad_rp).await, 401, "invalid_credentials").await;
    let after = app.fingerprint().await;
    assert_eq!(after.ignoring_ceremonies(), before.ignoring_ceremonies());
}

async fn an_android_app_origin_signs_in_when_configured(db: Db) {
    let app = spawn_app(db).await;
    let mut phone = app.authenticator();
    phone.set_origin(ANDROID_ORIGIN);
    app.register(&mut phone, "alice").await;
    assert_eq!(app.login(&mut phone, None).await.status(), StatusCode::OK);

    phone.set_origin("android:apk-key-hash:U29tZU90aGVyQXBwc0NlcnRpZmljYXRlSGFzaA");
    assert_problem(app.login(&mut phone, None).await, 401, "invalid_credentials").await;
}
