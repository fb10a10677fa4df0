//! Health, readiness, request ids and the API description.

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{Db, assert_problem, on_both, spawn_app};

on_both!(
    health_and_readiness_answer_with_a_request_id,
    a_client_supplied_request_id_is_not_trusted_by_default,
    openapi_describes_every_contract_endpoint_and_each_one_exists,
    the_demo_page_is_served_at_the_root,
);

async fn health_and_readiness_answer_with_a_request_id(db: Db) {
    let app = spawn_app(db).await;
    for path in ["/healthz", "/readyz"] {
        let response = app.get(path, None).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let id = response.headers()["x-request-id"].to_str().unwrap();
        assert_eq!(uuid::Uuid::parse_str(id).unwrap().get_version_num(), 7);
    }
}

async fn a_client_supplied_request_id_is_not_trusted_by_default(db: Db) {
    let app = spawn_app(db).await;
    let response = app
        .client
        .get(format!("{}/nowhere", app.address))
        .header("x-request-id", "forged-id")
        .send()
        .await
        .unwrap();
    assert_ne!(response.headers()["x-request-id"], "forged-id");
    assert_problem(response, 404, "not_found").await;
}

/// The endpoints of the API contract sections this server implements.
const CONTRACT: &[(&str, &str)] = &[
    ("post", "/v1/register/start"),
    ("post", "/v1/register/finish"),
    ("post", "/v1/login/start"),
    ("post", "/v1/login/finish"),
    ("post", "/v1/token/refresh"),
    ("post", "/v1/logout"),
    ("get", "/v1/me"),
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/openapi.json"),
    ("get", "/.well-known/jwks.json"),
];

async fn openapi_describes_every_contract_endpoint_and_each_one_exists(db: Db) {
    let app = spawn_app(db).await;
    let spec: Value = app.get("/openapi.json", None).await.json().await.unwrap();
    assert!(spec["openapi"].as_str().unwrap().starts_with("3.1"));
    for (method, path) in CONTRACT {
        assert!(spec["paths"][path][method].is_object(), "{method} {path} missing from openapi");
    }
    // And nothing described is missing from the app: every path answers
    // its method with something other than "no such endpoint".
    for (path, item) in spec["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            let url = format!("{}{path}", app.address);
            let request = match method.as_str() {
                "get" => app.client.get(url),
                "post" => app.client.post(url).json(&serde_json::json!({})),
                other => panic!("unexpected method {other}"),
            };
            let response = request.send().await.unwrap();
            let status = response.status();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            assert!(
                body["code"] != "not_found" && status != StatusCode::METHOD_NOT_ALLOWED,
                "{method} {path}: {status} {body}"
            );
        }
    }
}

async fn the_demo_page_is_served_at_the_root(db: Db) {
    let app = spawn_app(db).await;
    let response = app.get("/", None).await;
    assert_eq!(response.status(), StatusCode::OK);
    let html = response.text().await.unwrap();
    assert!(html.contains("/app.js"));
    assert_eq!(app.get("/app.js", None).await.status(), StatusCode::OK);
}
