//! Native apps and sister sites: association files from configuration,
//! and the origins they imply.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{Db, assert_problem, on_both, spawn_app, spawn_app_configured};

on_both!(
    association_files_are_not_found_until_configured,
    configured_apps_get_association_files_and_their_origins_sign_in,
);

/// A made-up signing certificate digest: bytes 0x10, 0x11, ... 0x2F.
fn fingerprint() -> String {
    (0x10..0x30).map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":")
}

async fn association_files_are_not_found_until_configured(db: Db) {
    let app = spawn_app(db).await;
    for path in [
        "/.well-known/assetlinks.json",
        "/.well-known/apple-app-site-association",
        "/.well-known/webauthn",
    ] {
        assert_problem(app.get(path, None).await, 404, "not_found").await;
    }
}

async fn configured_apps_get_association_files_and_their_origins_sign_in(db: Db) {
    let android = format!("com.wallet.app={}", fingerprint());
    let app = spawn_app_configured(
        db,
        &[
            ("PASSGATE__APPS__ANDROID", &android),
            ("PASSGATE__APPS__IOS", "ABCDE12345.com.wallet.app"),
            ("PASSGATE__WEBAUTHN__RELATED_ORIGINS", "https://pay.partner.example"),
        ],
    )
    .await;

    let links: Value = app.get("/.well-known/assetlinks.json", None).await.json().await.unwrap();
    assert_eq!(links[0]["target"]["package_name"], "com.wallet.app");
    assert_eq!(links[0]["target"]["sha256_cert_fingerprints"], json!([fingerprint()]));
    assert!(
        links[0]["relation"]
            .as_array()
            .unwrap()
            .contains(&json!("delegate_permission/common.get_login_creds"))
    );
    let apple: Value =
        app.get("/.well-known/apple-app-site-association", None).await.json().await.unwrap();
    assert_eq!(apple, json!({"webcredentials": {"apps": ["ABCDE12345.com.wallet.app"]}}));
    let related: Value = app.get("/.well-known/webauthn", None).await.json().await.unwrap();
    assert_eq!(related["origins"], json!(["https://pay.partner.example"]));

    // The Android app's origin is the base64url of its certificate digest,
    // allowed without being listed in webauthn.origins.
    let mut phone = app.authenticator();
    phone.set_origin("android:apk-key-hash:EBESExQVFhcYGRobHB0eHyAhIiMkJSYnKCkqKywtLi8");
    app.register(&mut phone, "alice").await;
    assert_eq!(app.login(&mut phone, None).await.status(), StatusCode::OK);
    // The sister site signs in with the same passkey.
    phone.set_origin("https://pay.partner.example");
    assert_eq!(app.login(&mut phone, Some("alice")).await.status(), StatusCode::OK);
    // Another app, signed with another certificate, does not.
    phone.set_origin("android:apk-key-hash:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8");
    assert_problem(app.login(&mut phone, None).await, 401, "invalid_credentials").await;
}
