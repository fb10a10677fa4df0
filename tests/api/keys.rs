//! Signing keys: rotation by the CLI while the server runs, EdDSA, and
//! private keys sealed at rest.

use std::process::Output;
use std::time::Duration;

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use passgate::clock::Clock;
use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{Db, TestApp, on_both, spawn_app, spawn_app_configured};

on_both!(
    a_cli_rotation_keeps_earlier_tokens_valid_and_later_ones_use_the_new_key,
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

async fn a_cli_rotation_keeps_earlier_tokens_valid_and_later_ones_use_the_new_key(db: Db) {
    let app = spawn_app(db).await;
    let mut phone = app.authenticator();
    let before: Value = app.register(&mut phone, "alice").await;
    let old_token = before["access_token"].as_str().unwrap().to_owned();

    let rotated = cli(&app, &["keys", "rotate"], &[]);
    assert!(rotated.status.success(), "{}", String::from_utf8_lossy(&rotated.stderr));
    let listing = String::from_utf8_lossy(&rotated.stdout).to_string();

    let published = jwks(&app).await;
    assert_eq!(published.keys.len(), 2, "current and previous: {listing}");
    assert_eq!(
        app.me(&old_token).await.status(),
        StatusCode::OK,
        "a token from before still works"
    );
    let after: Value = app.login(&mut phone, None).await.json().await.unwrap();
    let new_token = after["access_token"].as_str().unwrap();
    assert_ne!(kid_of(new_token), kid_of(&old_token));
    assert!(listing.contains(&kid_of(new_token)), "{listing}");

    // A second rotation retires the first key, which stays published while
    // its tokens could live, then drops out.
    assert!(cli(&app, &["keys", "rotate"], &[]).status.success());
    assert_eq!(jwks(&app).await.keys.len(), 3);
    app.clock.advance(Duration::from_secs(20 * 60));
    let later = jwks(&app).await;
    assert_eq!(later.keys.len(), 2);
    assert!(later.find(&kid_of(&old_token)).is_none());
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
