//! Access tokens, refresh rotation, logout, and the nodes sharing one
//! database.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, jwk::JwkSet};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{
    Db, TestApp, assert_problem, claims_of, on_both, spawn_app, spawn_app_configured, spawn_app_on,
};

on_both!(
    an_access_token_verifies_against_the_published_jwks,
    a_refresh_rotates_and_a_reused_token_ends_the_session,
    logout_ends_only_that_session,
    forged_expired_and_missing_tokens_are_unauthorized,
    a_session_past_its_lifetime_cannot_refresh,
    housekeeping_deletes_an_ended_session_once_it_was_kept_its_time,
    two_nodes_on_one_database_finish_each_others_ceremonies_and_refreshes,
);

async fn signed_in(app: &TestApp, username: &str) -> Value {
    let mut phone = app.authenticator();
    app.register(&mut phone, username).await
}

async fn jwks(app: &TestApp) -> JwkSet {
    let response = app.get("/.well-known/jwks.json", None).await;
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.expect("a JWK set")
}

async fn an_access_token_verifies_against_the_published_jwks(db: Db) {
    let app = spawn_app(db).await;
    let tokens = signed_in(&app, "alice").await;
    let token = tokens["access_token"].as_str().unwrap();

    let header = jsonwebtoken::decode_header(token).unwrap();
    let set = jwks(&app).await;
    let jwk = set.find(header.kid.as_deref().unwrap()).expect("kid is published");
    let mut validation = Validation::new(Algorithm::ES256);
    validation.set_audience(&["payments"]);
    validation.set_issuer(&["http://localhost:8080"]);
    let claims =
        jsonwebtoken::decode::<Value>(token, &DecodingKey::from_jwk(jwk).unwrap(), &validation)
            .expect("signature, audience and issuer verify")
            .claims;

    assert_eq!(header.alg, Algorithm::ES256);
    assert_eq!(claims["sub"], tokens["user_id"]);
    assert!(set.keys.iter().all(|k| k.common.key_id.is_some()));
}

async fn a_refresh_rotates_and_a_reused_token_ends_the_session(db: Db) {
    let app = spawn_app(db).await;
    let first = signed_in(&app, "alice").await;
    let old_refresh = first["refresh_token"].as_str().unwrap();

    let rotated: Value = app.refresh(old_refresh).await.json().await.unwrap();
    let new_refresh = rotated["refresh_token"].as_str().unwrap();
    assert_ne!(new_refresh, old_refresh);
    assert_eq!(
        claims_of(rotated["access_token"].as_str().unwrap())["sid"],
        claims_of(first["access_token"].as_str().unwrap())["sid"]
    );
    assert_eq!(app.me(rotated["access_token"].as_str().unwrap()).await.status(), StatusCode::OK);

    // The retired token comes back: theft is assumed and the session ends.
    assert_problem(app.refresh(old_refresh).await, 401, "invalid_credentials").await;
    assert_problem(app.refresh(new_refresh).await, 401, "invalid_credentials").await;
    assert_problem(app.me(rotated["access_token"].as_str().unwrap()).await, 401, "unauthorized")
        .await;
}

async fn logout_ends_only_that_session(db: Db) {
    let app = spawn_app(db).await;
    let mut phone = app.authenticator();
    let laptop_session = app.register(&mut phone, "alice").await;
    let phone_session: Value = app.login(&mut phone, None).await.json().await.unwrap();

    let response = app.logout(laptop_session["refresh_token"].as_str().unwrap()).await;

    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_problem(
        app.refresh(laptop_session["refresh_token"].as_str().unwrap()).await,
        401,
        "invalid_credentials",
    )
    .await;
    assert_problem(
        app.me(laptop_session["access_token"].as_str().unwrap()).await,
        401,
        "unauthorized",
    )
    .await;
    let rotated = app.refresh(phone_session["refresh_token"].as_str().unwrap()).await;
    assert_eq!(rotated.status(), StatusCode::OK, "the other session goes on");
    let rotated: Value = rotated.json().await.unwrap();
    // A refresh token already rotated away still ends its session at
    // logout (a background refresh may have raced the user's sign-out).
    let stale = app.logout(phone_session["refresh_token"].as_str().unwrap()).await;
    assert_eq!(stale.status(), StatusCode::NO_CONTENT);
    assert_problem(
        app.refresh(rotated["refresh_token"].as_str().unwrap()).await,
        401,
        "invalid_credentials",
    )
    .await;
    // Logging out again is harmless.
    let again = app.logout(laptop_session["refresh_token"].as_str().unwrap()).await;
    assert_eq!(again.status(), StatusCode::NO_CONTENT);
}

async fn forged_expired_and_missing_tokens_are_unauthorized(db: Db) {
    let app = spawn_app(db).await;
    let tokens = signed_in(&app, "alice").await;
    let token = tokens["access_token"].as_str().unwrap().to_owned();
    let parts: Vec<&str> = token.split('.').collect();
    let before = app.fingerprint().await;

    // No token at all.
    let missing = app.get("/v1/me", None).await;
    assert_eq!(missing.headers()["www-authenticate"], "Bearer");
    assert_problem(missing, 401, "unauthorized").await;
    // A changed claim under the original signature.
    let mut claims = claims_of(&token);
    claims["sub"] = json!(uuid::Uuid::new_v4().to_string());
    let tampered =
        format!("{}.{}.{}", parts[0], URL_SAFE_NO_PAD.encode(claims.to_string()), parts[2]);
    // alg "none" with no signature.
    let none_header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#);
    let unsigned = format!("{none_header}.{}.", parts[1]);
    // HS256 keyed with the public JWK text: the classic key-confusion forgery.
    let set = jwks(&app).await;
    let public = serde_json::to_string(&set.keys[0]).unwrap();
    let mut hs_header = Header::new(Algorithm::HS256);
    hs_header.kid = set.keys[0].common.key_id.clone();
    let confused = jsonwebtoken::encode(
        &hs_header,
        &claims_of(&token),
        &EncodingKey::from_secret(public.as_bytes()),
    )
    .unwrap();
    for forged in [tampered.as_str(), unsigned.as_str(), confused.as_str(), "garbage", ""] {
        assert_problem(app.me(forged).await, 401, "unauthorized").await;
    }

    // The genuine token, once its five minutes are up.
    assert_eq!(app.me(&token).await.status(), StatusCode::OK);
    // RFC 7235: the scheme name is case-insensitive.
    let lowercase = app
        .client
        .get(format!("{}/v1/me", app.address))
        .header("authorization", format!("bearer {token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(lowercase.status(), StatusCode::OK);
    app.clock.advance(Duration::from_secs(301));
    assert_problem(app.me(&token).await, 401, "unauthorized").await;
    assert_eq!(app.fingerprint().await, before);
}

async fn housekeeping_deletes_an_ended_session_once_it_was_kept_its_time(db: Db) {
    let kept = [("PASSGATE__HOUSEKEEPING__ENDED_SESSIONS_KEPT_SECONDS", "600")];
    let app = spawn_app_configured(db, &kept).await;
    let ended = signed_in(&app, "alice").await;
    let rotated: Value =
        app.refresh(ended["refresh_token"].as_str().unwrap()).await.json().await.unwrap();
    let logout = app.logout(rotated["refresh_token"].as_str().unwrap()).await;
    assert_eq!(logout.status(), StatusCode::NO_CONTENT);
    let live = signed_in(&app, "bob").await;
    let observer = app.observer(Duration::from_secs(5)).await;
    let sessions = "select count(*) from session where user_id = $1";
    let tokens = "select count(*) from refresh_token r join session s \
                  on s.session_id = r.session_id where s.user_id = $1";
    let alice = ended["user_id"].as_str().unwrap();

    app.clock.advance(Duration::from_secs(599));
    app.core.housekeeping.round(Duration::from_secs(10)).await;
    assert_eq!(observer.count(sessions, alice).await, 1, "kept for its time");
    assert_eq!(observer.count(tokens, alice).await, 2);

    app.clock.advance(Duration::from_secs(2));
    app.core.housekeeping.round(Duration::from_secs(10)).await;
    assert_eq!(observer.count(sessions, alice).await, 0, "deleted after it");
    let all_tokens = "select count(*) from refresh_token where token_hash <> $1";
    assert_eq!(observer.count(all_tokens, "").await, 1, "its refresh tokens went with it");
    assert_eq!(observer.count(sessions, live["user_id"].as_str().unwrap()).await, 1);
}

async fn a_session_past_its_lifetime_cannot_refresh(db: Db) {
    let app = spawn_app(db).await;
    let tokens = signed_in(&app, "alice").await;
    app.clock.advance(Duration::from_secs(30 * 24 * 3600 + 1));
    let before = app.fingerprint().await;
    assert_problem(
        app.refresh(tokens["refresh_token"].as_str().unwrap()).await,
        401,
        "invalid_credentials",
    )
    .await;
    assert_eq!(app.fingerprint().await, before);
}

async fn two_nodes_on_one_database_finish_each_others_ceremonies_and_refreshes(db: Db) {
    let node_a = spawn_app(db).await;
    let node_b = spawn_app_on(&node_a).await;
    // Behind one load balancer both nodes serve node A's public origin.
    let mut phone = node_a.authenticator();

    let (ceremony_id, options) = node_a.started_registration("alice").await;
    let credential = phone.register(&options);
    let registered = node_b.register_finish(&ceremony_id, &credential).await;
    assert_eq!(registered.status(), StatusCode::CREATED);
    let tokens: Value = registered.json().await.unwrap();

    let (ceremony_id, options) = node_b.started_login(None).await;
    let assertion = phone.login(&options);
    let response = node_a.login_finish(&ceremony_id, &assertion).await;
    assert_eq!(response.status(), StatusCode::OK);

    let rotated: Value =
        node_a.refresh(tokens["refresh_token"].as_str().unwrap()).await.json().await.unwrap();
    let again = node_b.refresh(rotated["refresh_token"].as_str().unwrap()).await;
    assert_eq!(again.status(), StatusCode::OK);
    assert_eq!(node_b.me(rotated["access_token"].as_str().unwrap()).await.status(), StatusCode::OK);
    assert_eq!(jwks(&node_a).await.keys.len(), jwks(&node_b).await.keys.len());
}
