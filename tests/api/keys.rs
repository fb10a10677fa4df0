//! Signing keys: rotation by the CLI while the server runs (published
//! before they sign), revocation, EdDSA, and private keys sealed at rest.

use std::process::Output;
use std::time::Duration;

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use passgate::clock::Clock;
use reqwest::StatusCode;
use serde_json::Value;

use passgate::service::keys::{JWKS_MAX_AGE, KeyState};

use crate::helpers::{
    Db, TestApp, assert_problem, on_both, spawn_app, spawn_app_configured, spawn_app_on,
};

on_both!(
    a_cli_rotation_publishes_the_new_key_before_any_token_carries_it,
    a_revoked_key_leaves_the_jwks_and_its_tokens_are_refused_at_once,
    eddsa_keys_sign_tokens_that_verify_against_the_jwks,
    the_rotation_schedule_makes_a_new_key_only_when_the_newest_is_old_enough,
    sealed_private_keys_never_sit_in_the_database_in_the_clear,
);

/// A 32-byte key-encryption key, base64.
const KEK: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

/// Runs the real binary against the app's database.
fn cli(app: &TestApp, args: &[&str], env: &[(&str, &str)]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_passgate"))
        .args(args)
        .env("PASSGATE__DATABASE__URL", &app.db.url)
        .envs(env.iter().copied())
        .output()
        .expect("run passgate")
}

async fn jwks(app: &TestApp) -> JwkSet {
    app.get("/.well-known/jwks.json", None).await.json().await.unwrap()
}

fn kid_of(jwt: &str) -> String {
    jsonwebtoken::decode_header(jwt).unwrap().kid.unwrap()
}

async fn a_cli_rotation_publishes_the_new_key_before_any_token_carries_it(db: Db) {
    let app = spawn_app(db).await;
    let other_node = spawn_app_on(&app).await;
    let mut phone = app.authenticator();
    let before: Value = app.register(&mut phone, "alice").await;
    let old_token = before["access_token"].as_str().unwrap().to_owned();
    let old_kid = kid_of(&old_token);

    let rotated = cli(&app, &["keys", "rotate"], &[]);
    assert!(rotated.status.success(), "{}", String::from_utf8_lossy(&rotated.stderr));
    let listing = String::from_utf8_lossy(&rotated.stdout).to_string();

    // Published at once, on every node...
    let response = app.get("/.well-known/jwks.json", None).await;
    let cache_control = response.headers()["cache-control"].to_str().unwrap().to_owned();
    assert_eq!(cache_control, format!("public, max-age={}", JWKS_MAX_AGE.as_secs()));
    let published: JwkSet = response.json().await.unwrap();
    assert_eq!(published.keys.len(), 2, "signing and next: {listing}");
    let new_kid = published
        .keys
        .iter()
        .filter_map(|key| key.common.key_id.clone())
        .find(|kid| *kid != old_kid)
        .expect("the new key is published");
    assert!(jwks(&other_node).await.find(&new_kid).is_some());
    assert!(listing.contains(&format!("{new_kid}  ES256")), "{listing}");
    assert!(listing.contains("next") && listing.contains("signing"), "{listing}");
    // ...but no token carries it while a cached key set may lack it.
    for node in [&app, &other_node] {
        let signed_in: Value = node.login(&mut phone, None).await.json().await.unwrap();
        assert_eq!(kid_of(signed_in["access_token"].as_str().unwrap()), old_kid);
    }

    assert_eq!(app.me(&old_token).await.status(), StatusCode::OK, "earlier tokens still work");

    // Once the cache lifetime has passed (the CLI ran on the real clock, a
    // little after the nodes' clocks started), both nodes switch together.
    for node in [&app, &other_node] {
        node.clock.advance(JWKS_MAX_AGE + Duration::from_secs(60));
        let signed_in: Value = node.login(&mut phone, None).await.json().await.unwrap();
        assert_eq!(kid_of(signed_in["access_token"].as_str().unwrap()), new_kid);
    }

    // A second rotation retires the first key, which stays published while
    // its tokens could live, then drops out.
    app.core.keys.rotate(app.clock.now_ms()).await.unwrap();
    assert_eq!(jwks(&app).await.keys.len(), 3);
    app.clock.advance(Duration::from_secs(20 * 60));
    let later = jwks(&app).await;
    assert_eq!(later.keys.len(), 2);
    assert!(later.find(&old_kid).is_none());
}

async fn a_revoked_key_leaves_the_jwks_and_its_tokens_are_refused_at_once(db: Db) {
    let app = spawn_app(db).await;
    let mut phone = app.authenticator();
    let tokens: Value = app.register(&mut phone, "alice").await;
    let token = tokens["access_token"].as_str().unwrap().to_owned();
    let first = kid_of(&token);

    let revoked = cli(&app, &["keys", "revoke", &first], &[]);

    let listing = String::from_utf8_lossy(&revoked.stdout).to_string();
    assert!(revoked.status.success(), "{}", String::from_utf8_lossy(&revoked.stderr));
    assert_problem(app.me(&token).await, 401, "unauthorized").await;
    let published = jwks(&app).await;
    assert!(published.find(&first).is_none(), "withdrawn from the JWKS");
    assert_eq!(published.keys.len(), 1, "a new key made to sign at once");
    let replacement = published.keys[0].common.key_id.clone().unwrap();
    assert!(listing.contains(&format!("{first}  ES256")) && listing.contains("revoked"));
    assert!(listing.contains(&format!("{replacement} signs from now on")), "{listing}");
    let signed_in: Value = app.login(&mut phone, None).await.json().await.unwrap();
    let fresh = signed_in["access_token"].as_str().unwrap();
    assert_eq!(kid_of(fresh), replacement, "no waiting: the old key is compromised");
    assert_eq!(app.me(fresh).await.status(), StatusCode::OK);
    let audited = app
        .observer(Duration::from_secs(5))
        .await
        .count("select count(*) from audit_event where event = $1", "signing_key_revoked")
        .await;
    assert_eq!(audited, 1);

    // With a next key published, revoking the signing key makes that one
    // sign at once; revoking a key that does not sign changes nothing.
    let next = app.core.keys.rotate(app.clock.now_ms()).await.unwrap();
    assert_eq!(app.core.revoke_signing_key(&replacement).await.unwrap(), Some(next.clone()));
    let signed_in: Value = app.login(&mut phone, None).await.json().await.unwrap();
    assert_eq!(kid_of(signed_in["access_token"].as_str().unwrap()), next);
    let third = app.core.keys.rotate(app.clock.now_ms()).await.unwrap();
    assert_eq!(app.core.revoke_signing_key(&third).await.unwrap(), None);
    assert!(jwks(&app).await.find(&third).is_none());
    let states: Vec<(String, KeyState)> = app
        .core
        .keys
        .list(app.clock.now_ms())
        .await
        .unwrap()
        .into_iter()
        .map(|key| (key.kid, key.state))
        .collect();
    assert!(states.contains(&(next, KeyState::Signing)), "{states:?}");
    assert!(states.contains(&(first, KeyState::Revoked)), "{states:?}");
    assert!(app.core.revoke_signing_key(&third).await.is_err(), "revoked once");
}

async fn the_rotation_schedule_makes_a_new_key_only_when_the_newest_is_old_enough(db: Db) {
    let app = spawn_app_configured(db, &[("PASSGATE__TOKENS__KEY_ROTATION_DAYS", "7")]).await;
    let week = app.core.settings.tokens.key_rotation.expect("a schedule is set");
    assert_eq!(week, Duration::from_secs(7 * 86_400));

    // What the housekeeping timer does each minute, at two moments.
    let early = app.core.keys.rotate_if_older(week, app.clock.now_ms()).await.unwrap();
    app.clock.advance(week + Duration::from_secs(1));
    let due = app.core.keys.rotate_if_older(week, app.clock.now_ms()).await.unwrap();
    let again = app.core.keys.rotate_if_older(week, app.clock.now_ms()).await.unwrap();

    assert_eq!((early, due, again), (false, true, false));
    assert_eq!(jwks(&app).await.keys.len(), 2);
    // The scheduled key, too, signs only once it has been published for
    // the cache lifetime.
    let mut phone = app.authenticator();
    let tokens = app.register(&mut phone, "alice").await;
    let first = kid_of(tokens["access_token"].as_str().unwrap());
    app.clock.advance(JWKS_MAX_AGE);
    let signed_in: Value = app.login(&mut phone, None).await.json().await.unwrap();
    let second = kid_of(signed_in["access_token"].as_str().unwrap());
    assert_ne!(first, second);
    assert!(jwks(&app).await.find(&first).is_some(), "the previous key stays published");
}

async fn eddsa_keys_sign_tokens_that_verify_against_the_jwks(db: Db) {
    let app = spawn_app_configured(db, &[("PASSGATE__TOKENS__ALGORITHM", "EdDSA")]).await;
    let tokens = app.register(&mut app.authenticator(), "alice").await;
    let token = tokens["access_token"].as_str().unwrap();

    let header = jsonwebtoken::decode_header(token).unwrap();
    let set = jwks(&app).await;
    let jwk = set.find(header.kid.as_deref().unwrap()).unwrap();
    let mut validation = Validation::new(Algorithm::EdDSA);
    validation.set_audience(&["payments"]);
    let verified =
        jsonwebtoken::decode::<Value>(token, &DecodingKey::from_jwk(jwk).unwrap(), &validation);

    assert_eq!(header.alg, Algorithm::EdDSA);
    assert!(verified.is_ok(), "{verified:?}");
    assert_eq!(app.me(token).await.status(), StatusCode::OK);
}

async fn sealed_private_keys_never_sit_in_the_database_in_the_clear(db: Db) {
    let app = spawn_app_configured(db, &[("PASSGATE__TOKENS__KEY_ENCRYPTION_KEY", KEK)]).await;
    app.register(&mut app.authenticator(), "alice").await;

    let with_key = cli(&app, &["keys", "list"], &[("PASSGATE__TOKENS__KEY_ENCRYPTION_KEY", KEK)]);
    let without_key = cli(&app, &["keys", "list"], &[]);
    let other_key = "ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA=";
    let wrong_key =
        cli(&app, &["keys", "list"], &[("PASSGATE__TOKENS__KEY_ENCRYPTION_KEY", other_key)]);

    let listing = String::from_utf8_lossy(&with_key.stdout);
    assert!(
        with_key.status.success() && listing.contains("sealed") && !listing.contains("unsealed"),
        "{listing}"
    );
    for refused in [without_key, wrong_key] {
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(!refused.status.success());
        assert!(stderr.contains("tokens.key_encryption_key"), "{stderr}");
        assert!(!stderr.contains(KEK) && !stderr.contains(other_key));
    }
}
