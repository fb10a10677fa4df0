//! CORS for the origins in `server.cors_origins` (a wallet front end on
//! its own origin): preflights from them are answered, their calls may
//! read the answers and the headers a page needs, and every other origin
//! gets no CORS header, with the request id, security headers and
//! problem+json errors as usual. (Off by default: security_headers.rs.)

use reqwest::{Method, Response, StatusCode};
use serde_json::json;

use crate::helpers::{Db, TestApp, assert_problem, on_both, spawn_app_configured};

const WALLET: &str = "https://wallet.example";
const OTHER: &str = "https://evil.example";

on_both!(
    a_preflight_from_a_listed_origin_is_answered_and_its_calls_read_the_answers,
    other_origins_get_no_cors_headers_and_a_refused_preflight_is_a_problem,
);

/// The request deadline's 503 is made outside the handlers, from an
/// error: the page of a listed origin can still read it (and its request
/// id), another origin still gets no CORS header. A body that never
/// arrives holds the request until the deadline.
#[tokio::test]
async fn the_deadlines_503_is_readable_by_a_listed_origin_only() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_app_configured(
        Db::Sqlite,
        &[
            ("PASSGATE__SERVER__CORS_ORIGINS", WALLET),
            ("PASSGATE__SERVER__REQUEST_TIMEOUT_SECONDS", "1"),
        ],
    )
    .await;
    for (origin, granted) in [(WALLET, true), (OTHER, false)] {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", app.port)).await.unwrap();
        let head = format!(
            "POST /v1/login/start HTTP/1.1\r\nHost: 127.0.0.1\r\nOrigin: {origin}\r\n\
             Content-Type: application/json\r\nContent-Length: 100\r\nConnection: close\r\n\r\n{{"
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        let read = stream.read_to_end(&mut answer);
        tokio::time::timeout(std::time::Duration::from_secs(10), read).await.unwrap().unwrap();
        let answer = String::from_utf8_lossy(&answer).to_ascii_lowercase();
        assert!(answer.starts_with("http/1.1 503"), "{answer}");
        assert!(answer.contains("x-request-id:"), "{answer}");
        let allow = format!("access-control-allow-origin: {origin}");
        assert_eq!(answer.contains(&allow), granted, "{answer}");
        assert_eq!(answer.contains("access-control-expose-headers:"), granted, "{answer}");
    }
}

async fn wallet_app(db: Db) -> TestApp {
    spawn_app_configured(db, &[("PASSGATE__SERVER__CORS_ORIGINS", "https://wallet.example")]).await
}

async fn preflight(
    app: &TestApp,
    path: &str,
    origin: &str,
    method: &str,
    headers: &str,
) -> Response {
    let mut request = app
        .client
        .request(Method::OPTIONS, format!("{}{path}", app.address))
        .header("origin", origin)
        .header("access-control-request-method", method);
    if !headers.is_empty() {
        request = request.header("access-control-request-headers", headers);
    }
    request.send().await.unwrap()
}

fn header<'r>(response: &'r Response, name: &str) -> Option<&'r str> {
    response.headers().get(name).map(|v| v.to_str().unwrap())
}

/// The header's comma-separated members, lower-cased.
fn members(response: &Response, name: &str) -> Vec<String> {
    header(response, name)
        .unwrap_or_default()
        .split(',')
        .map(|m| m.trim().to_ascii_lowercase())
        .filter(|m| !m.is_empty())
        .collect()
}

fn assert_no_cors(response: &Response, what: &str) {
    for (name, _) in response.headers() {
        assert!(!name.as_str().starts_with("access-control-"), "{what}: {name}");
    }
}

/// What every answer carries, whatever CORS decided.
fn assert_request_id_and_security_headers(response: &Response, what: &str) {
    let id = header(response, "x-request-id").unwrap_or_else(|| panic!("{what}: no request id"));
    assert!(uuid::Uuid::parse_str(id).is_ok(), "{what}: {id}");
    assert_eq!(header(response, "x-content-type-options"), Some("nosniff"), "{what}");
    assert_eq!(header(response, "x-frame-options"), Some("DENY"), "{what}");
}

/// The page's own calls: the preflight of an authenticated JSON call, then
/// the call, its success and its problem+json failure, readable with the
/// request id and Retry-After exposed to the page's script.
async fn a_preflight_from_a_listed_origin_is_answered_and_its_calls_read_the_answers(db: Db) {
    let app = wallet_app(db).await;
    let answer =
        preflight(&app, "/v1/me/devices/x", WALLET, "PATCH", "authorization, content-type").await;
    assert_eq!(answer.status(), StatusCode::OK);
    assert_eq!(header(&answer, "access-control-allow-origin"), Some(WALLET));
    for method in ["get", "post", "put", "patch", "delete"] {
        assert!(
            members(&answer, "access-control-allow-methods").contains(&method.to_owned()),
            "{method}"
        );
    }
    let allowed = members(&answer, "access-control-allow-headers");
    for name in ["authorization", "content-type", "x-request-id", "idempotency-key"] {
        assert!(allowed.contains(&name.to_owned()), "{name} in {allowed:?}");
    }
    assert_eq!(header(&answer, "access-control-max-age"), Some("3600"));
    // Tokens ride in Authorization; no cookie is ever sent along.
    assert_eq!(header(&answer, "access-control-allow-credentials"), None);
    assert!(
        members(&answer, "vary").contains(&"origin".to_owned()),
        "a cache keeps answers per origin"
    );
    assert_request_id_and_security_headers(&answer, "the preflight");

    let started = app
        .client
        .post(format!("{}/v1/register/start", app.address))
        .header("origin", WALLET)
        .json(&json!({ "username": "alice" }))
        .send()
        .await
        .unwrap();
    assert_eq!(started.status(), StatusCode::OK);
    assert_eq!(header(&started, "access-control-allow-origin"), Some(WALLET));
    let exposed = members(&started, "access-control-expose-headers");
    for name in ["x-request-id", "retry-after"] {
        assert!(exposed.contains(&name.to_owned()), "{name} in {exposed:?}");
    }
    assert_eq!(header(&started, "cache-control"), Some("no-store"));

    let refused = app
        .client
        .get(format!("{}/v1/me", app.address))
        .header("origin", WALLET)
        .bearer_auth("not-a-token")
        .send()
        .await
        .unwrap();
    assert_eq!(header(&refused, "access-control-allow-origin"), Some(WALLET));
    assert!(
        members(&refused, "access-control-expose-headers").contains(&"x-request-id".to_owned())
    );
    assert_problem(refused, 401, "unauthorized").await;

    // The page may import the browser client as a module script, which
    // the browser fetches in CORS mode.
    let module = app
        .client
        .get(format!("{}/webauthn.js", app.address))
        .header("origin", WALLET)
        .send()
        .await
        .unwrap();
    assert_eq!(module.status(), StatusCode::OK);
    assert_eq!(header(&module, "access-control-allow-origin"), Some(WALLET));
    assert!(header(&module, "content-type").unwrap().contains("javascript"));

    // The preflights are counted under their route, like any request.
    let metrics = app.get("/metrics", None).await.text().await.unwrap();
    let counted = metrics.lines().any(|line| {
        line.starts_with("passgate_http_requests_total")
            && line.contains(r#"route="/v1/me/devices/{device_id}""#)
            && line.contains(r#"method="OPTIONS""#)
            && line.contains(r#"status="200""#)
    });
    assert!(counted, "{metrics}");
}

/// An origin not listed learns nothing: its preflight is refused as a
/// problem (which the browser treats as a failed preflight), its simple
/// calls are answered without a grant (so its script cannot read them),
/// and a listed origin asking for more than the API takes is refused too.
async fn other_origins_get_no_cors_headers_and_a_refused_preflight_is_a_problem(db: Db) {
    let app = wallet_app(db).await;
    let answer = preflight(&app, "/v1/login/start", OTHER, "POST", "content-type").await;
    assert_no_cors(&answer, "another origin's preflight");
    assert_request_id_and_security_headers(&answer, "another origin's preflight");
    let problem = assert_problem(answer, 400, "bad_request").await;
    assert!(problem["detail"].as_str().unwrap().contains("server.cors_origins"), "{problem}");

    // An origin differing only in scheme or port is another origin.
    for near in ["http://wallet.example", "https://wallet.example:8443"] {
        let answer = preflight(&app, "/v1/login/start", near, "POST", "content-type").await;
        assert_no_cors(&answer, near);
        assert_problem(answer, 400, "bad_request").await;
    }

    let call = app
        .client
        .post(format!("{}/v1/login/start", app.address))
        .header("origin", OTHER)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(call.status(), StatusCode::OK, "the server answers; the browser withholds it");
    assert_no_cors(&call, "another origin's call");
    assert_request_id_and_security_headers(&call, "another origin's call");

    let header_refused = preflight(&app, "/v1/me", WALLET, "GET", "authorization, x-secret").await;
    assert_no_cors(&header_refused, "a header the API does not take");
    assert_problem(header_refused, 400, "bad_request").await;
    let method_refused = preflight(&app, "/v1/me", WALLET, "TRACE", "").await;
    assert_no_cors(&method_refused, "a method the API does not take");
    assert_problem(method_refused, 400, "bad_request").await;

    // A call without Origin (a server, curl) is not a CORS request at all.
    let plain = app.get("/healthz", None).await;
    assert_eq!(plain.status(), StatusCode::OK);
    assert_no_cors(&plain, "a call without Origin");
}
