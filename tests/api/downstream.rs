//! The payment service's side of step-up: `passgate_verifier::Verifier`
//! against a live passgate (its real JWKS, real authorization tokens from a
//! real passkey ceremony), and the `payment_api` example over HTTP.

// Declared once for the whole test binary (clippy refuses a file loaded
// as two modules); browser_pay.rs uses it from here.
#[path = "../../examples/payment_api.rs"]
pub(crate) mod payment_api;

use std::net::TcpListener;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use p256::pkcs8::EncodePrivateKey;
use passgate::clock::ManualClock;
use passgate_verifier::{self as verifier, Transaction, Verifier, VerifyError};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::authenticator::SoftAuthenticator;
use crate::helpers::{Db, TestApp, claims_of, on_both, spawn_app, spawn_app_configured};

/// passgate's default `tokens.issuer`, which the test nodes keep.
const ISSUER: &str = "http://localhost:8080";
/// passgate's default `stepup.audience` and `tokens.audience`.
const AUTHORIZE_AUDIENCE: &str = "payments:authorize";
const ACCESS_AUDIENCE: &str = "payments";

on_both!(a_real_authorization_is_accepted_once_then_refused_as_a_replay);

fn coffee() -> Value {
    json!({ "amount": "12.50", "currency": "EUR", "payee": "Coffee Shop" })
}

fn transaction(value: &Value) -> Transaction {
    serde_json::from_value(value.clone()).expect("a valid transaction")
}

fn verifier_for(app: &TestApp) -> Verifier {
    Verifier::new(&format!("{}/.well-known/jwks.json", app.address), ISSUER, AUTHORIZE_AUDIENCE)
        .expect("a loopback JWKS URL is allowed")
}

/// A registered user: their passkey and token set.
async fn alice(app: &TestApp) -> (SoftAuthenticator, Value) {
    let mut phone = app.authenticator();
    let tokens = app.register(&mut phone, "alice").await;
    (phone, tokens)
}

/// A full step-up with the bearer's passkey; returns the finish body.
async fn approve(
    app: &TestApp,
    phone: &mut SoftAuthenticator,
    tokens: &Value,
    transaction: &Value,
) -> Value {
    let bearer = tokens["access_token"].as_str().unwrap();
    let started =
        app.post_bearer("/v1/stepup/start", bearer, &json!({ "transaction": transaction })).await;
    assert_eq!(started.status(), StatusCode::OK, "step-up start");
    let started: Value = started.json().await.unwrap();
    let assertion = phone.login(&started["publicKey"]);
    let finished = app
        .post_bearer(
            "/v1/stepup/finish",
            bearer,
            &json!({ "ceremony_id": started["ceremony_id"], "credential": assertion }),
        )
        .await;
    assert_eq!(finished.status(), StatusCode::OK, "step-up finish");
    finished.json().await.unwrap()
}

async fn a_real_authorization_is_accepted_once_then_refused_as_a_replay(db: Db) {
    let app = spawn_app(db).await;
    let (mut phone, tokens) = alice(&app).await;
    let approved = approve(&app, &mut phone, &tokens, &coffee()).await;
    let token = approved["authorization_token"].as_str().unwrap();
    let verifier = verifier_for(&app);

    let authorization = verifier.verify_payment(token, &transaction(&coffee())).await.unwrap();

    assert_eq!(authorization.sub, tokens["user_id"].as_str().unwrap());
    assert_eq!(authorization.txn, transaction(&coffee()).txn());
    assert_eq!(authorization.txn, approved["txn"].as_str().unwrap());
    assert_eq!(authorization.device_id.as_deref(), tokens["device_id"].as_str());
    let access = claims_of(tokens["access_token"].as_str().unwrap());
    assert_eq!(authorization.sid.as_deref(), access["sid"].as_str());
    assert_eq!(authorization.amr, ["hwk", "user"]);
    assert!(authorization.exp - authorization.iat <= 120);
    assert_eq!(
        verifier.verify_payment(token, &transaction(&coffee())).await,
        Err(VerifyError::Replayed)
    );
}

#[tokio::test]
async fn an_eddsa_signed_authorization_verifies_too() {
    let app = spawn_app_configured(Db::Sqlite, &[("PASSGATE__TOKENS__ALGORITHM", "EdDSA")]).await;
    let (mut phone, tokens) = alice(&app).await;
    let approved = approve(&app, &mut phone, &tokens, &coffee()).await;
    let token = approved["authorization_token"].as_str().unwrap();
    assert_eq!(jsonwebtoken::decode_header(token).unwrap().alg, Algorithm::EdDSA);
    let verifier = verifier_for(&app);

    let authorization = verifier.verify_payment(token, &transaction(&coffee())).await.unwrap();

    assert_eq!(authorization.sub, tokens["user_id"].as_str().unwrap());
    assert_eq!(
        verifier.verify_payment(token, &transaction(&coffee())).await,
        Err(VerifyError::Replayed)
    );
}

#[tokio::test]
async fn a_token_for_another_transaction_is_refused_and_not_spent() {
    let app = spawn_app(Db::Sqlite).await;
    let (mut phone, tokens) = alice(&app).await;
    let approved = approve(&app, &mut phone, &tokens, &coffee()).await;
    let token = approved["authorization_token"].as_str().unwrap();
    let verifier = verifier_for(&app);

    for (field, value) in [
        ("amount", json!("12.51")),
        ("amount", json!("12.5")),
        ("amount", json!("1250.00")),
        ("currency", json!("USD")),
        ("payee", json!("Coffee Shop Ltd")),
        ("reference", json!("order 42")),
    ] {
        let mut other = coffee();
        other[field] = value.clone();
        assert_eq!(
            verifier.verify_payment(token, &transaction(&other)).await,
            Err(VerifyError::TransactionMismatch),
            "{field} = {value}"
        );
    }
    // The refusals did not spend it: the approved payment still goes through.
    assert!(verifier.verify_payment(token, &transaction(&coffee())).await.is_ok());
}

#[tokio::test]
async fn access_and_authorization_tokens_are_not_interchangeable() {
    let app = spawn_app(Db::Sqlite).await;
    let (mut phone, tokens) = alice(&app).await;
    let access_token = tokens["access_token"].as_str().unwrap();
    let approved = approve(&app, &mut phone, &tokens, &coffee()).await;
    let authorization_token = approved["authorization_token"].as_str().unwrap();
    // Same issuer and keys; type, audience and scope tell them apart.
    let (access, authorization) = (claims_of(access_token), claims_of(authorization_token));
    let typ = |jwt: &str| jsonwebtoken::decode_header(jwt).unwrap().typ.unwrap();
    assert_eq!(
        (typ(access_token).as_str(), access["aud"].as_str()),
        ("JWT", Some(ACCESS_AUDIENCE))
    );
    assert_eq!(
        (typ(authorization_token).as_str(), authorization["aud"].as_str()),
        ("payment-authz+jwt", Some(AUTHORIZE_AUDIENCE))
    );
    assert_eq!(authorization["scope"], "payment:authorize");
    assert!(access.get("scope").is_none_or(|scope| scope != "payment:authorize"));
    let verifier = verifier_for(&app);

    let access_as_payment = verifier.verify_payment(access_token, &transaction(&coffee())).await;
    let payment_as_access = verifier.verify_access(authorization_token, ACCESS_AUDIENCE).await;

    assert_eq!(access_as_payment, Err(VerifyError::WrongType(verifier::AUTHORIZATION_TYP)));
    assert_eq!(payment_as_access, Err(VerifyError::WrongType(verifier::ACCESS_TYP)));
    let checked = verifier.verify_access(access_token, ACCESS_AUDIENCE).await.unwrap();
    assert_eq!(checked.sub, tokens["user_id"].as_str().unwrap());
    // And at passgate itself, an authorization token is no bearer token.
    assert_eq!(app.me(authorization_token).await.status(), StatusCode::UNAUTHORIZED);
    let start = app
        .post_bearer("/v1/stepup/start", authorization_token, &json!({ "transaction": coffee() }))
        .await;
    assert_eq!(start.status(), StatusCode::UNAUTHORIZED);
    // Neither refusal spent the authorization.
    assert!(verifier.verify_payment(authorization_token, &transaction(&coffee())).await.is_ok());
}

#[tokio::test]
async fn an_authorization_past_its_lifetime_is_refused() {
    let app = spawn_app(Db::Sqlite).await;
    let (mut phone, tokens) = alice(&app).await;
    let approved = approve(&app, &mut phone, &tokens, &coffee()).await;
    let token = approved["authorization_token"].as_str().unwrap();
    // The payment service's clock, 2 minutes and the 5 s leeway later.
    let later = ManualClock::default();
    later.advance(Duration::from_secs(125));
    let verifier = verifier_for(&app).with_clock(later);

    let result = verifier.verify_payment(token, &transaction(&coffee())).await;

    assert_eq!(result, Err(VerifyError::Expired));
}

fn sign(claims: &Value, kid: &str, key: &EncodingKey) -> String {
    sign_as(Algorithm::ES256, claims, kid, key)
}

/// Signed as a payment authorization is (its `typ`).
fn sign_as(algorithm: Algorithm, claims: &Value, kid: &str, key: &EncodingKey) -> String {
    sign_typed(algorithm, verifier::AUTHORIZATION_TYP, claims, kid, key)
}

fn sign_typed(
    algorithm: Algorithm,
    typ: &str,
    claims: &Value,
    kid: &str,
    key: &EncodingKey,
) -> String {
    let mut header = Header::new(algorithm);
    header.kid = Some(kid.to_owned());
    header.typ = Some(typ.to_owned());
    jsonwebtoken::encode(&header, claims, key).unwrap()
}

/// A P-256 key passgate never saw.
fn stranger_key() -> EncodingKey {
    let secret = p256::SecretKey::random(&mut rand::rngs::OsRng);
    EncodingKey::from_ec_der(secret.to_pkcs8_der().unwrap().as_bytes())
}

#[tokio::test]
async fn forged_and_altered_tokens_are_refused() {
    let app = spawn_app(Db::Sqlite).await;
    let (mut phone, tokens) = alice(&app).await;
    let approved = approve(&app, &mut phone, &tokens, &coffee()).await;
    let token = approved["authorization_token"].as_str().unwrap().to_owned();
    let parts: Vec<&str> = token.split('.').collect();
    let kid = jsonwebtoken::decode_header(&token).unwrap().kid.unwrap();
    let claims = claims_of(&token);
    let coffee_txn = transaction(&coffee());
    let verifier = verifier_for(&app);

    // alg "none", no signature, over the genuine claims.
    let none_header = URL_SAFE_NO_PAD.encode(json!({ "alg": "none", "kid": kid }).to_string());
    let unsigned = format!("{none_header}.{}.", parts[1]);
    // HS256 keyed with the published JWK text: the key-confusion forgery.
    let jwks: Value = app.get("/.well-known/jwks.json", None).await.json().await.unwrap();
    let jwk = jwks["keys"].as_array().unwrap().iter().find(|k| k["kid"] == kid.as_str()).unwrap();
    let mut hs_header = Header::new(Algorithm::HS256);
    hs_header.kid = Some(kid.clone());
    let confused = jsonwebtoken::encode(
        &hs_header,
        &claims,
        &EncodingKey::from_secret(jwk.to_string().as_bytes()),
    )
    .unwrap();
    // A key of the attacker's own, under a made-up kid and under passgate's.
    let stranger = stranger_key();
    let made_up_kid = sign(&claims, "made-up-kid", &stranger);
    let borrowed_kid = sign(&claims, &kid, &stranger);
    // Well-signed by the stranger, for the wrong audience or long expired:
    // the unknown key refuses them before their claims are even read (the
    // next test reaches those checks with passgate's own key).
    let mut wrong_aud = claims.clone();
    wrong_aud["aud"] = json!("wallet");
    let stranger_wrong_aud = sign(&wrong_aud, "made-up-kid", &stranger);
    let mut expired = claims.clone();
    expired["exp"] = json!(claims["iat"].as_i64().unwrap() - 3600);
    let stranger_expired = sign(&expired, "made-up-kid", &stranger);
    // The genuine signature over claims with a bigger amount's txn.
    let mut bigger = claims.clone();
    bigger["txn"] = json!(
        transaction(&json!({"amount": "1250.00", "currency": "EUR",
        "payee": "Coffee Shop"}))
        .txn()
    );
    let tampered =
        format!("{}.{}.{}", parts[0], URL_SAFE_NO_PAD.encode(bigger.to_string()), parts[2]);
    // One bit of the signature flipped.
    let mut signature = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
    signature[10] ^= 1;
    let bad_signature = format!("{}.{}.{}", parts[0], parts[1], URL_SAFE_NO_PAD.encode(&signature));

    let cases = [
        ("alg none", unsigned.as_str(), VerifyError::UnsupportedAlgorithm("none".into())),
        (
            "HS256 with the JWK",
            confused.as_str(),
            VerifyError::UnsupportedAlgorithm("HS256".into()),
        ),
        ("unknown kid", made_up_kid.as_str(), VerifyError::UnknownKey),
        ("stranger's key, real kid", borrowed_kid.as_str(), VerifyError::BadSignature),
        ("wrong aud, unknown key", stranger_wrong_aud.as_str(), VerifyError::UnknownKey),
        ("expired, unknown key", stranger_expired.as_str(), VerifyError::UnknownKey),
        ("tampered payload", tampered.as_str(), VerifyError::BadSignature),
        ("flipped signature bit", bad_signature.as_str(), VerifyError::BadSignature),
        ("not a JWT", "garbage", VerifyError::Malformed),
    ];
    for (what, forged, expected) in cases {
        assert_eq!(verifier.verify_payment(forged, &coffee_txn).await, Err(expected), "{what}");
    }
    // None of that spent the genuine token.
    assert!(verifier.verify_payment(&token, &coffee_txn).await.is_ok());
}

/// What only passgate itself could sign: claims checks behind a valid
/// signature, with its own key read from its database.
#[tokio::test]
async fn well_signed_tokens_with_a_bad_claim_are_refused_for_that_claim() {
    let app = spawn_app(Db::Sqlite).await;
    let (mut phone, tokens) = alice(&app).await;
    let approved = approve(&app, &mut phone, &tokens, &coffee()).await;
    let claims = claims_of(approved["authorization_token"].as_str().unwrap());
    let rows = app.store.signing_keys().await.unwrap();
    let row = rows.iter().find(|r| r.retired_at.is_none()).unwrap();
    // Test nodes have no tokens.key_encryption_key, so keys are unsealed.
    let der = STANDARD.decode(&row.private_key).expect("an unsealed signing key");
    let (algorithm, passgate_key) = match row.algorithm.as_str() {
        "EdDSA" => (Algorithm::EdDSA, EncodingKey::from_ed_der(&der)),
        _ => (Algorithm::ES256, EncodingKey::from_ec_der(&der)),
    };
    let sign = |claims: &Value| sign_as(algorithm, claims, &row.kid, &passgate_key);
    let now = claims["iat"].as_i64().unwrap();
    let coffee_txn = transaction(&coffee());
    let verifier = verifier_for(&app);

    let cases = [
        ("aud", json!("wallet"), VerifyError::WrongAudience),
        ("iss", json!("https://evil.example"), VerifyError::WrongIssuer),
        ("exp", json!(now - 60), VerifyError::Expired),
        ("nbf", json!(now + 60), VerifyError::NotYetValid),
        ("exp", json!(now + 3600), VerifyError::LifetimeTooLong),
        ("scope", json!("payment:authorize admin"), VerifyError::InsufficientScope),
        ("txn", json!(URL_SAFE_NO_PAD.encode([0u8; 32])), VerifyError::TransactionMismatch),
    ];
    for (claim, value, expected) in cases {
        let mut forged = claims.clone();
        forged[claim] = value.clone();
        forged["jti"] = json!(uuid::Uuid::new_v4().to_string());
        let token = sign(&forged);
        assert_eq!(
            verifier.verify_payment(&token, &coffee_txn).await,
            Err(expected),
            "{claim} = {value}"
        );
    }
    // Typed as an access token, the genuine claims are refused too.
    let mut retyped = claims.clone();
    retyped["jti"] = json!(uuid::Uuid::new_v4().to_string());
    let retyped = sign_typed(algorithm, "JWT", &retyped, &row.kid, &passgate_key);
    assert_eq!(
        verifier.verify_payment(&retyped, &coffee_txn).await,
        Err(VerifyError::WrongType(verifier::AUTHORIZATION_TYP))
    );
    // The control: the same signing path with nothing changed is accepted.
    assert!(verifier.verify_payment(&sign(&claims), &coffee_txn).await.is_ok());
}

/// The payment_api example on a loopback port, trusting `app`.
pub(crate) fn start_payment_api(app: &TestApp) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    let options = payment_api::Options {
        passgate_url: app.address.clone(),
        allowed_origin: app.origin.clone(),
        workers: 1,
        ..payment_api::Options::default()
    };
    tokio::spawn(payment_api::serve(listener, &options).expect("payment API starts"));
    address
}

async fn pay(api: &str, transaction: &Value, token: &str) -> (StatusCode, Value) {
    let response = reqwest::Client::new()
        .post(format!("{api}/payments"))
        .json(&json!({ "transaction": transaction, "authorization_token": token }))
        .send()
        .await
        .unwrap();
    let status = response.status();
    if !status.is_success() {
        assert_eq!(response.headers()["content-type"], "application/problem+json");
    }
    (status, response.json().await.unwrap())
}

#[tokio::test]
async fn the_payment_api_accepts_an_approved_payment_once() {
    let app = spawn_app(Db::Sqlite).await;
    let (mut phone, tokens) = alice(&app).await;
    let approved = approve(&app, &mut phone, &tokens, &coffee()).await;
    let token = approved["authorization_token"].as_str().unwrap();
    let api = start_payment_api(&app);

    let (status, accepted) = pay(&api, &coffee(), token).await;
    assert_eq!(status, StatusCode::OK, "{accepted}");
    assert_eq!(accepted["accepted"], true);
    assert_eq!(accepted["sub"], tokens["user_id"]);
    assert_eq!(accepted["txn"], approved["txn"]);
    assert!(accepted["payment_id"].is_string());

    let (status, replayed) = pay(&api, &coffee(), token).await;
    assert_eq!((status, replayed["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("replayed")));
    assert_eq!(replayed["status"], 401);
    assert!(replayed["type"].is_string() && replayed["title"].is_string());
    assert!(!replayed.to_string().contains(token), "a refusal never echoes the token");

    // Each refusal has its own code.
    let second = approve(&app, &mut phone, &tokens, &coffee()).await;
    let second = second["authorization_token"].as_str().unwrap();
    let mut dearer = coffee();
    dearer["amount"] = json!("99.00");
    let (status, body) = pay(&api, &dearer, second).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("transaction_mismatch"))
    );
    let access = tokens["access_token"].as_str().unwrap();
    let (status, body) = pay(&api, &coffee(), access).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_token")),
        "an access token is no authorization"
    );
    let (status, body) = pay(&api, &coffee(), "garbage").await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("invalid_token")));
    let mut invalid = coffee();
    invalid["amount"] = json!("-1");
    let (status, body) = pay(&api, &invalid, second).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("validation_failed"))
    );
    // The refusals did not spend the second token.
    assert_eq!(pay(&api, &coffee(), second).await.0, StatusCode::OK);
}

#[tokio::test]
async fn the_payment_api_allows_only_the_pay_page_origin() {
    let app = spawn_app(Db::Sqlite).await;
    let api = start_payment_api(&app);
    let client = reqwest::Client::new();
    let preflight = |origin: &str| {
        client
            .request(reqwest::Method::OPTIONS, format!("{api}/payments"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type")
            .send()
    };

    let allowed = preflight(&app.origin).await.unwrap();
    assert_eq!(allowed.status(), StatusCode::NO_CONTENT);
    assert_eq!(allowed.headers()["access-control-allow-origin"], app.origin.as_str());
    assert_eq!(allowed.headers()["access-control-allow-methods"], "POST");
    assert_eq!(allowed.headers()["access-control-allow-headers"], "content-type");

    let refused = preflight("http://evil.example").await.unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    assert!(refused.headers().get("access-control-allow-origin").is_none());

    // The actual POST's answer carries the header too, refusals included.
    let response = client
        .post(format!("{api}/payments"))
        .header("origin", &app.origin)
        .json(&json!({ "transaction": coffee(), "authorization_token": "x.y.z" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(response.headers()["access-control-allow-origin"], app.origin.as_str());
    assert_eq!(response.headers()["vary"], "Origin");
}

/// Equal audiences would leave `aud` unable to tell the two kinds of token
/// apart: allowed (the contract's own value), but said at start.
#[tokio::test]
async fn a_node_whose_two_audiences_are_equal_warns_at_start() {
    const WARNING: &str = "stepup.audience equals tokens.audience";
    let before = crate::helpers::captured_logs().matches(WARNING).count();

    let _equal =
        spawn_app_configured(Db::Sqlite, &[("PASSGATE__STEPUP__AUDIENCE", "payments")]).await;

    let after = crate::helpers::captured_logs().matches(WARNING).count();
    assert_eq!(after, before + 1);
}
