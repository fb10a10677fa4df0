//! Security headers: the Content-Security-Policy of the pages, `nosniff`,
//! no referrer and no framing on every response, `no-store` on every API
//! answer, HSTS only for an https-only site, and no CORS.

use reqwest::{Response, StatusCode};
use serde_json::json;

use crate::helpers::{
    ANDROID_ORIGIN, Db, assert_problem, on_both, spawn_app, spawn_app_configured,
};

on_both!(
    pages_carry_a_strict_content_security_policy,
    every_answer_carries_the_common_headers,
    api_answers_are_not_stored_and_public_documents_stay_cacheable,
    hsts_is_sent_only_when_every_web_origin_is_https,
);

/// nosniff, no referrer, no framing, and no CORS grant.
fn assert_common_headers(response: &Response, what: &str) {
    let headers = response.headers();
    assert_eq!(headers["x-content-type-options"], "nosniff", "{what}");
    assert_eq!(headers["referrer-policy"], "no-referrer", "{what}");
    assert_eq!(headers["x-frame-options"], "DENY", "{what}");
    let policy = headers["content-security-policy"].to_str().unwrap();
    assert!(policy.contains("frame-ancestors 'none'"), "{what}: {policy}");
    for (name, _) in headers {
        assert!(!name.as_str().starts_with("access-control-"), "{what}: {name}");
    }
}

fn cache_control(response: &Response) -> Option<&str> {
    response.headers().get("cache-control").map(|v| v.to_str().unwrap())
}

async fn pages_carry_a_strict_content_security_policy(db: Db) {
    let app = spawn_app(db).await;
    for page in ["/", "/index.html", "/fallback.html", "/security.html", "/admin.html", "/pay.html"]
    {
        let response = app.get(page, None).await;
        assert_eq!(response.status(), StatusCode::OK, "{page}");
        assert_common_headers(&response, page);
        let policy = response.headers()["content-security-policy"].to_str().unwrap().to_owned();
        for directive in [
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self'",
            "object-src 'none'",
            "base-uri 'none'",
            "frame-ancestors 'none'",
            "form-action 'self'",
        ] {
            assert!(policy.split("; ").any(|d| d == directive), "{page}: {directive} in {policy}");
        }
        assert!(!policy.contains("unsafe-inline") && !policy.contains("unsafe-eval"), "{policy}");
        // What the policy forbids, the page does not hold.
        let html = response.text().await.unwrap();
        for inline in ["<style", "style=", "<script>", "javascript:", " onclick=", " onload="] {
            assert!(!html.contains(inline), "{page} holds {inline}");
        }
        for tag in html.split("<script").skip(1) {
            assert!(tag.trim_start().starts_with("type=\"module\" src=\"/"), "{page}: {tag}");
        }
    }
    let style = app.get("/style.css", None).await;
    assert_common_headers(&style, "/style.css");
    // Only the pay page may send to another origin (the payment API).
    let index = app.get("/", None).await;
    assert!(!index.headers()["content-security-policy"].to_str().unwrap().contains("connect-src"));
}

async fn every_answer_carries_the_common_headers(db: Db) {
    let app = spawn_app(db).await;
    let api = app.login_start(None).await;
    assert_eq!(api.status(), StatusCode::OK);
    assert_common_headers(&api, "login/start");
    let problem = app.post("/v1/login/finish", &json!({})).await;
    assert_common_headers(&problem, "a problem");
    assert_problem(problem, 422, "validation_failed").await;
    for missing in ["/no-such-page.html", "/v1/no-such-endpoint"] {
        let response = app.get(missing, None).await;
        assert_common_headers(&response, missing);
        assert_problem(response, 404, "not_found").await;
    }
    let preflight = app
        .client
        .request(reqwest::Method::OPTIONS, format!("{}/v1/login/start", app.address))
        .header("origin", "https://evil.example")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert_common_headers(&preflight, "a CORS preflight");
    for path in ["/healthz", "/.well-known/jwks.json", "/openapi.json"] {
        assert_common_headers(&app.get(path, None).await, path);
    }
}

async fn api_answers_are_not_stored_and_public_documents_stay_cacheable(db: Db) {
    let app = spawn_app(db).await;
    let start = app.login_start(Some("alice")).await;
    assert_eq!(start.status(), StatusCode::OK);
    assert_eq!(cache_control(&start), Some("no-store"), "login/start");

    let mut phone = app.authenticator();
    let (ceremony_id, options) = app.started_registration("alice").await;
    let finish = app.register_finish(&ceremony_id, &phone.register(&options)).await;
    assert_eq!(finish.status(), StatusCode::CREATED);
    assert_eq!(cache_control(&finish), Some("no-store"), "register/finish");
    let tokens: serde_json::Value = finish.json().await.unwrap();

    let me = app.me(tokens["access_token"].as_str().unwrap()).await;
    assert_eq!(me.status(), StatusCode::OK);
    assert_eq!(cache_control(&me), Some("no-store"), "me");
    let unauthorized = app.me("not-a-token").await;
    assert_eq!(cache_control(&unauthorized), Some("no-store"), "a 401");
    assert_problem(unauthorized, 401, "unauthorized").await;
    let problem = app.post("/v1/login/finish", &json!({})).await;
    assert_eq!(cache_control(&problem), Some("no-store"), "a 422");

    let jwks = app.get("/.well-known/jwks.json", None).await;
    assert_eq!(cache_control(&jwks), Some("public, max-age=300"));
    // As before: no Cache-Control, so caches may keep it by heuristics.
    let openapi = app.get("/openapi.json", None).await;
    assert_eq!(cache_control(&openapi), None);
}

async fn hsts_is_sent_only_when_every_web_origin_is_https(db: Db) {
    let http = spawn_app(db).await;
    for path in ["/", "/v1/me", "/healthz"] {
        let response = http.get(path, None).await;
        assert!(response.headers().get("strict-transport-security").is_none(), "{path}");
    }
    let origins = format!("https://localhost:8443,{ANDROID_ORIGIN}");
    let https = spawn_app_configured(db, &[("PASSGATE__WEBAUTHN__ORIGINS", &origins)]).await;
    for path in ["/", "/v1/me", "/healthz", "/no-such-page.html"] {
        let response = https.get(path, None).await;
        assert_eq!(
            response.headers()["strict-transport-security"],
            "max-age=63072000; includeSubDomains",
            "{path}"
        );
    }
}
