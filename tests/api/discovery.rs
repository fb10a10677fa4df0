//! `/.well-known/openid-configuration`, and what an integrator builds on
//! it: JWT middleware finding the keys from the issuer alone, and the Node
//! payment-service snippet of docs/INTEGRATION.md (docs/examples/verify.mjs)
//! run with node against real tokens.

use std::io::Write;
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::Arc;

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use passgate::clock::ManualClock;
use passgate::startup::Application;
use passgate::store;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{
    ANDROID_ORIGIN, Db, TestApp, TestDb, assert_problem, on_both, spawn_app_configured,
    test_settings,
};

on_both!(
    discovery_from_the_issuer_finds_the_keys_that_verify_real_tokens,
    the_node_snippet_accepts_a_real_authorization_once_and_only_for_its_transaction,
);

/// The public documents answer what their OpenAPI schemas say, so a
/// client generated from /openapi.json reads them (and schemathesis's
/// response check holds): health, the key set of either algorithm, the
/// association files, discovery and the OpenAPI document itself.
#[tokio::test]
async fn the_public_documents_match_their_openapi_schemas() {
    let android = format!(
        "com.wallet.app={}",
        (0x10..0x30).map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":")
    );
    let app = spawn_app_configured(
        Db::Sqlite,
        &[
            ("PASSGATE__APPS__ANDROID", &android),
            ("PASSGATE__APPS__IOS", "ABCDE12345.com.wallet.app"),
            ("PASSGATE__WEBAUTHN__RELATED_ORIGINS", "https://pay.partner.example"),
        ],
    )
    .await;
    let eddsa = spawn_app_configured(Db::Sqlite, &[("PASSGATE__TOKENS__ALGORITHM", "EdDSA")]).await;
    let spec: Value = app.get("/openapi.json", None).await.json().await.unwrap();
    for (node, path) in [
        (&app, "/healthz"),
        (&app, "/readyz"),
        (&app, "/.well-known/jwks.json"),
        (&eddsa, "/.well-known/jwks.json"),
        (&app, "/.well-known/openid-configuration"),
        (&app, "/.well-known/assetlinks.json"),
        (&app, "/.well-known/apple-app-site-association"),
        (&app, "/.well-known/webauthn"),
        (&app, "/openapi.json"),
    ] {
        let schema = &spec["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]
            ["schema"];
        assert!(schema.is_object(), "{path} has no JSON schema");
        let answer = node.get(path, None).await;
        assert_eq!(answer.status(), StatusCode::OK, "{path}");
        let body: Value = answer.json().await.unwrap();
        assert_eq!(violations(&spec, schema, &body, ""), [""; 0], "{path}: {body}");
    }
    // The check itself refuses what breaks a schema.
    let jwks = &spec["paths"]["/.well-known/jwks.json"]["get"]["responses"]["200"]["content"]["application/json"]
        ["schema"];
    let bad = json!({ "keys": [{ "kty": "RSA", "kid": 1 }] });
    assert!(
        violations(&spec, jwks, &bad, "").len() >= 3,
        "{:?}",
        violations(&spec, jwks, &bad, "")
    );
}

/// Where `value` breaks `schema` (type, enum, required members, and the
/// same inside properties and items, following `$ref`s), as JSON pointers.
fn violations(spec: &Value, schema: &Value, value: &Value, at: &str) -> Vec<String> {
    if let Some(reference) = schema["$ref"].as_str() {
        let target = spec.pointer(&reference[1..]).expect("a $ref into the document");
        return violations(spec, target, value, at);
    }
    let mut found = Vec::new();
    let type_matches = |name: &str| match name {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        "boolean" => value.is_boolean(),
        "null" => value.is_null(),
        _ => false,
    };
    let types: Vec<&str> = match &schema["type"] {
        Value::String(one) => vec![one.as_str()],
        Value::Array(many) => many.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    };
    if !types.is_empty() && !types.iter().any(|t| type_matches(t)) {
        found.push(format!("{at}: not {types:?}"));
        return found;
    }
    if let Some(allowed) = schema["enum"].as_array().filter(|a| !a.contains(value)) {
        found.push(format!("{at}: {value} not in {allowed:?}"));
    }
    for name in schema["required"].as_array().into_iter().flatten().filter_map(Value::as_str) {
        if value.get(name).is_none() {
            found.push(format!("{at}/{name}: missing"));
        }
    }
    for (name, member) in schema["properties"].as_object().into_iter().flatten() {
        if let Some(inner) = value.get(name) {
            found.extend(violations(spec, member, inner, &format!("{at}/{name}")));
        }
    }
    for (index, item) in value.as_array().into_iter().flatten().enumerate() {
        if schema["items"].is_object() {
            found.extend(violations(spec, &schema["items"], item, &format!("{at}/{index}")));
        }
    }
    found
}

/// A node whose `tokens.issuer` is its own address, as a deployment's is
/// its public URL, so that the document's URLs resolve.
async fn app_at_its_issuer(db: Db) -> TestApp {
    let db = TestDb::create(db).await;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let address = format!("http://127.0.0.1:{port}");
    let settings =
        test_settings(&db.url, port, &[ANDROID_ORIGIN], &[("PASSGATE__TOKENS__ISSUER", &address)]);
    let store = store::connect(&settings.database).await.unwrap();
    let clock = ManualClock::default();
    let app = Application::build_with(settings, listener, store.clone(), Arc::new(clock.clone()))
        .await
        .unwrap();
    let core = app.core();
    let admin_port = app.admin_port();
    tokio::spawn(app.run_until_stopped());
    TestApp {
        address,
        port,
        admin_port,
        client: reqwest::Client::new(),
        store,
        core,
        clock,
        db,
        origin: format!("http://localhost:{port}"),
    }
}

async fn discovery(app: &TestApp) -> reqwest::Response {
    app.get("/.well-known/openid-configuration", None).await
}

/// What a resource server's JWT middleware does with nothing but the
/// issuer: read the document, check its issuer, fetch `jwks_uri`, and
/// verify a token with the key its `kid` names, in an advertised algorithm.
async fn discovery_from_the_issuer_finds_the_keys_that_verify_real_tokens(db: Db) {
    let app = app_at_its_issuer(db).await;
    let answer = discovery(&app).await;
    assert_eq!(answer.status(), StatusCode::OK);
    let jwks_cache =
        app.get("/.well-known/jwks.json", None).await.headers()["cache-control"].clone();
    assert_eq!(answer.headers()["cache-control"], jwks_cache, "cached like the key set");
    let document: Value = answer.json().await.unwrap();
    assert_eq!(document["issuer"], app.address.as_str());
    assert_eq!(document["token_endpoint"], format!("{}/v1/token/refresh", app.address));
    assert_eq!(document["subject_types_supported"], json!(["public"]));
    assert_eq!(document["response_types_supported"], json!([]));
    assert!(document.get("authorization_endpoint").is_none(), "passgate has none");
    assert_eq!(document["id_token_signing_alg_values_supported"], json!(["ES256"]));

    let jwks_uri = document["jwks_uri"].as_str().unwrap();
    assert!(jwks_uri.starts_with(&app.address), "absolute: {jwks_uri}");
    let jwks: Value = app.client.get(jwks_uri).send().await.unwrap().json().await.unwrap();
    let served: Value = app.get("/.well-known/jwks.json", None).await.json().await.unwrap();
    assert_eq!(jwks, served);

    let mut phone = app.authenticator();
    let tokens = app.register(&mut phone, "alice").await;
    let token = tokens["access_token"].as_str().unwrap();
    let header = jsonwebtoken::decode_header(token).unwrap();
    let kid = header.kid.unwrap();
    let jwk = jwks["keys"].as_array().unwrap().iter().find(|k| k["kid"] == kid.as_str()).unwrap();
    let algorithm: Algorithm = jwk["alg"].as_str().unwrap().parse().unwrap();
    assert_eq!(algorithm, header.alg);
    let advertised = document["id_token_signing_alg_values_supported"].as_array().unwrap();
    assert!(advertised.contains(&json!(jwk["alg"])));
    let key = DecodingKey::from_jwk(&serde_json::from_value(jwk.clone()).unwrap()).unwrap();
    let mut validation = Validation::new(algorithm);
    validation.set_issuer(&[document["issuer"].as_str().unwrap()]);
    validation.set_audience(&["payments"]);
    let claims = jsonwebtoken::decode::<Value>(token, &key, &validation).unwrap().claims;
    assert_eq!(claims["sub"], tokens["user_id"]);
    for claim in claims.as_object().unwrap().keys() {
        let listed = document["claims_supported"].as_array().unwrap();
        assert!(listed.contains(&json!(claim)), "{claim} is not in claims_supported");
    }

    // An EdDSA node advertises what it signs with.
    let eddsa = spawn_app_configured(db, &[("PASSGATE__TOKENS__ALGORITHM", "EdDSA")]).await;
    let document: Value = discovery(&eddsa).await.json().await.unwrap();
    assert_eq!(document["id_token_signing_alg_values_supported"], json!(["EdDSA"]));
    assert_eq!(document["issuer"], "http://localhost:8080", "exactly tokens.issuer");
    assert_eq!(document["jwks_uri"], "http://localhost:8080/.well-known/jwks.json");

    // An issuer that is not a URL has no document to offer.
    let bare = spawn_app_configured(db, &[("PASSGATE__TOKENS__ISSUER", "passgate")]).await;
    assert_problem(discovery(&bare).await, 404, "not_found").await;
}

/// docs/examples/verify.mjs with node, as a payment service would run it:
/// discovery from the issuer, then a real authorization token from a
/// step-up, refused for a changed amount (without being spent), accepted
/// for its own transaction, then refused as a replay.
async fn the_node_snippet_accepts_a_real_authorization_once_and_only_for_its_transaction(db: Db) {
    let app = app_at_its_issuer(db).await;
    let mut phone = app.authenticator();
    let tokens = app.register(&mut phone, "alice").await;
    let bearer = tokens["access_token"].as_str().unwrap();
    let transaction = json!({
        "amount": "12.50", "currency": "EUR", "payee": "Café \"Zoë\"", "reference": "inv/42",
    });
    let started =
        app.post_bearer("/v1/stepup/start", bearer, &json!({ "transaction": transaction })).await;
    assert_eq!(started.status(), StatusCode::OK);
    let started: Value = started.json().await.unwrap();
    let assertion = phone.login(&started["publicKey"]);
    let body = json!({ "ceremony_id": started["ceremony_id"], "credential": assertion });
    let finished = app.post_bearer("/v1/stepup/finish", bearer, &body).await;
    assert_eq!(finished.status(), StatusCode::OK);
    let finished: Value = finished.json().await.unwrap();
    let token = finished["authorization_token"].as_str().unwrap();

    let mut dearer = transaction.clone();
    dearer["amount"] = json!("125.00");
    let checks = json!([
        { "token": token, "transaction": dearer },
        { "token": token, "transaction": transaction },
        { "token": token, "transaction": transaction },
        { "token": bearer, "transaction": transaction },
    ]);
    let results = run_snippet(&app.address, "payments:authorize", &checks).await;

    assert_eq!(results[0], json!({ "ok": false, "error": "txn: approved another transaction" }));
    assert_eq!(results[1]["ok"], true, "{results}");
    assert_eq!(results[1]["sub"], tokens["user_id"]);
    assert_eq!(results[1]["jti"], crate::helpers::claims_of(token)["jti"]);
    assert_eq!(results[2], json!({ "ok": false, "error": "replayed jti" }));
    assert_eq!(results[3]["ok"], false, "an access token is no authorization: {results}");
}

/// Runs the snippet with node on a blocking thread (it calls back into
/// this test's server), the checks on stdin; returns its printed results.
async fn run_snippet(issuer: &str, audience: &str, checks: &Value) -> Value {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/examples/verify.mjs");
    let (issuer, audience, input) = (issuer.to_owned(), audience.to_owned(), checks.to_string());
    let output = tokio::task::spawn_blocking(move || {
        let mut child = Command::new("node")
            .args([script, &issuer, &audience])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("node is installed (.ci/run installs it)");
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "node failed: {stderr}");
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("{e}: {stderr}"))
}
