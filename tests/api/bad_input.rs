//! Every malformed or hostile request gets a clear problem+json answer and
//! leaves the database as it was.

use serde_json::json;

use crate::helpers::{Db, TestApp, assert_problem, on_both, spawn_app};

on_both!(
    malformed_json_is_a_bad_request_that_changes_nothing,
    a_ceremony_id_of_any_shape_that_was_not_issued_is_not_found,
    a_body_over_64_kib_is_refused_with_413,
    a_body_that_is_not_json_is_refused_with_415,
    invalid_fields_fail_validation_naming_the_field,
    bad_base64_in_a_credential_fails_validation_and_keeps_the_ceremony,
    an_unknown_ceremony_id_is_not_found,
    a_registration_ceremony_cannot_finish_a_login,
    unknown_paths_and_methods_answer_with_problems,
);

/// Registers one user so that refusals have state to leave alone.
async fn app_with_alice(db: Db) -> TestApp {
    let app = spawn_app(db).await;
    let mut phone = app.authenticator();
    app.register(&mut phone, "alice").await;
    app
}

async fn malformed_json_is_a_bad_request_that_changes_nothing(db: Db) {
    let app = app_with_alice(db).await;
    let before = app.fingerprint().await;
    // Broken syntax is 400 whatever the fields before it would have held:
    // a wrong-typed or missing field read first must not make it a 422.
    let bodies: [&[u8]; 5] = [
        b"{\"username\": ",
        b"{\"username\": 42, ",
        b"{\"ceremony_id\": [1, 2], \"credential\": {",
        b"{\"refresh_token\": null}}",
        b"",
    ];
    for path in ["/v1/register/start", "/v1/login/start", "/v1/login/finish", "/v1/token/refresh"] {
        for bytes in bodies {
            let response = app.post_raw(path, "application/json", bytes.to_vec()).await;
            let body = assert_problem(response, 400, "bad_request").await;
            assert!(body["detail"].as_str().unwrap().contains("malformed JSON"), "{body}");
        }
    }
    assert_eq!(app.fingerprint().await, before);
}

/// A client cannot tell a ceremony id the server never issued, of any
/// shape, from an expired or used one: 404 alike, at every finish.
async fn a_ceremony_id_of_any_shape_that_was_not_issued_is_not_found(db: Db) {
    let app = app_with_alice(db).await;
    let mut phone = app.authenticator();
    let tokens = app.register(&mut phone, "shape-bob").await;
    let bearer = tokens["access_token"].as_str().unwrap();
    let (_, registration) = app.started_registration("shape-carol").await;
    let created = app.authenticator().register(&registration);
    let (_, login) = app.started_login(Some("shape-bob")).await;
    let asserted = phone.login(&login);
    let before = app.fingerprint().await;
    let long = "A".repeat(5000);
    for id in
        ["", "nope", "!!!!!!!!", "AAAAAAAAAAAAAAAAAAAAAA", &"A".repeat(30), &"B".repeat(114), &long]
    {
        let finishes = [
            app.register_finish(id, &created).await,
            app.login_finish(id, &asserted).await,
            app.post("/v1/enrol/finish", &json!({"ceremony_id": id, "credential": created})).await,
            app.post_bearer(
                "/v1/me/devices/finish",
                bearer,
                &json!({"ceremony_id": id, "credential": created}),
            )
            .await,
            app.post_bearer(
                "/v1/stepup/finish",
                bearer,
                &json!({"ceremony_id": id, "credential": asserted}),
            )
            .await,
        ];
        for response in finishes {
            assert_problem(response, 404, "ceremony_not_found").await;
        }
    }
    assert_eq!(app.fingerprint().await, before);
}

async fn a_body_over_64_kib_is_refused_with_413(db: Db) {
    let app = app_with_alice(db).await;
    let before = app.fingerprint().await;
    let huge = json!({ "username": "bob", "display_name": "x".repeat(70 * 1024) });
    assert_problem(app.post("/v1/register/start", &huge).await, 413, "payload_too_large").await;
    assert_eq!(app.fingerprint().await, before);
}

async fn a_body_that_is_not_json_is_refused_with_415(db: Db) {
    let app = app_with_alice(db).await;
    let response = app.post_raw("/v1/login/start", "text/plain", b"{}".to_vec()).await;
    assert_problem(response, 415, "bad_request").await;
}

async fn invalid_fields_fail_validation_naming_the_field(db: Db) {
    let app = app_with_alice(db).await;
    let before = app.fingerprint().await;
    let cases = [
        ("/v1/register/start", json!({ "username": "a" }), "username"),
        ("/v1/register/start", json!({ "username": "bob", "email": "not-an-email" }), "email"),
        (
            "/v1/register/start",
            json!({ "username": "bob", "display_name": "a\u{0}b" }),
            "display_name",
        ),
        ("/v1/register/start", json!({ "display_name": "Bob" }), "username"),
        ("/v1/login/start", json!({ "username": 42 }), "invalid type"),
        ("/v1/login/finish", json!({ "ceremony_id": 42, "credential": {} }), "invalid type"),
        ("/v1/token/refresh", json!({ "refresh_token": "short" }), "refresh_token"),
        // serde reads a struct from an array of its fields too; found by
        // schemathesis, `[null]` started a discoverable sign-in.
        ("/v1/login/start", json!([null]), "JSON object"),
        ("/v1/register/start", json!(["bob"]), "JSON object"),
        ("/v1/login/start", json!("alice"), "JSON object"),
    ];
    for (path, body, mentions) in cases {
        let problem = assert_problem(app.post(path, &body).await, 422, "validation_failed").await;
        let detail = problem["detail"].as_str().unwrap();
        assert!(detail.contains(mentions), "{path} {body}: {detail}");
    }
    assert_eq!(app.fingerprint().await, before);
}

async fn bad_base64_in_a_credential_fails_validation_and_keeps_the_ceremony(db: Db) {
    let app = app_with_alice(db).await;
    let mut phone = app.authenticator();
    let (ceremony_id, options) = app.started_registration("bob").await;
    let mut credential = phone.register(&options);
    let good = credential.clone();
    credential["response"]["attestationObject"] = json!("***not base64***");
    let before = app.fingerprint().await;

    let refused = app.register_finish(&ceremony_id, &credential).await;

    assert_problem(refused, 422, "validation_failed").await;
    assert_eq!(app.fingerprint().await, before);
    // The refusal happened before the ceremony was touched.
    assert_eq!(app.register_finish(&ceremony_id, &good).await.status(), 201);
}

async fn an_unknown_ceremony_id_is_not_found(db: Db) {
    let app = app_with_alice(db).await;
    let mut phone = app.authenticator();
    let (_, registration) = app.started_registration("carol").await;
    let credential = phone.register(&registration);
    let before = app.fingerprint().await;
    let response = app.register_finish("AAAAAAAAAAAAAAAAAAAAAA", &credential).await;
    assert_problem(response, 404, "ceremony_not_found").await;
    assert_eq!(app.fingerprint().await, before);
}

async fn a_registration_ceremony_cannot_finish_a_login(db: Db) {
    let app = app_with_alice(db).await;
    let mut phone = app.authenticator();
    app.register(&mut phone, "bob").await;
    let (registration_id, _) = app.started_registration("carol").await;
    let (_, login_options) = app.started_login(Some("bob")).await;
    let assertion = phone.login(&login_options);
    let before = app.fingerprint().await;

    let response = app.login_finish(&registration_id, &assertion).await;

    assert_problem(response, 404, "ceremony_not_found").await;
    assert_eq!(app.fingerprint().await, before);
}

async fn unknown_paths_and_methods_answer_with_problems(db: Db) {
    let app = app_with_alice(db).await;
    assert_problem(app.get("/v1/nothing-here", None).await, 404, "not_found").await;
    assert_problem(app.get("/v1/login/start", None).await, 405, "method_not_allowed").await;
    let response = app.post("/healthz", &json!({})).await;
    assert_problem(response, 405, "method_not_allowed").await;
}
