//! No secret reaches a log: the captured logs of real flows (in JSON, with
//! every span field) are searched for every secret those flows used.

use serde_json::{Value, json};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::fallback::{PASSWORD, totp_at};
use crate::helpers::{Db, captured_logs, spawn_app_configured};
use crate::smtp;

const KEK: &str = "bG9nLXNjYW4ta2V5LTMyLWJ5dGVzLWxvbmctLS0tLS0=";

#[tokio::test]
async fn no_token_credential_or_key_reaches_the_logs() {
    let app =
        spawn_app_configured(Db::Sqlite, &[("PASSGATE__TOKENS__KEY_ENCRYPTION_KEY", KEK)]).await;
    let mut phone = app.authenticator();
    let mut secrets: Vec<String> = vec![KEK.to_owned()];

    // Register, sign in both ways, refresh, approve a payment, log out.
    let (ceremony_id, options) = app.started_registration("logscan").await;
    let credential = phone.register(&options);
    secrets.push(credential["response"]["attestationObject"].as_str().unwrap().to_owned());
    let registered: Value =
        app.register_finish(&ceremony_id, &credential).await.json().await.unwrap();
    let (ceremony_id, options) = app.started_login(None).await;
    let assertion = phone.login(&options);
    secrets.push(assertion["response"]["signature"].as_str().unwrap().to_owned());
    let login = app.login_finish(&ceremony_id, &assertion).await;
    let request_id = login.headers()["x-request-id"].to_str().unwrap().to_owned();
    let signed_in: Value = login.json().await.unwrap();
    let refreshed: Value =
        app.refresh(signed_in["refresh_token"].as_str().unwrap()).await.json().await.unwrap();
    let bearer = refreshed["access_token"].as_str().unwrap();
    let started: Value = app
        .post_bearer(
            "/v1/stepup/start",
            bearer,
            &json!({"transaction": {"amount": "9.99", "currency": "EUR", "payee": "Shop"}}),
        )
        .await
        .json()
        .await
        .unwrap();
    let approval = phone.login(&started["publicKey"]);
    let approved: Value = app
        .post_bearer(
            "/v1/stepup/finish",
            bearer,
            &json!({"ceremony_id": started["ceremony_id"], "credential": approval}),
        )
        .await
        .json()
        .await
        .unwrap();
    // Refusals log too: a reused refresh token, a forged bearer.
    app.refresh(signed_in["refresh_token"].as_str().unwrap()).await;
    app.me("eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.").await;
    app.logout(refreshed["refresh_token"].as_str().unwrap()).await;
    for tokens in [&registered, &signed_in, &refreshed] {
        secrets.push(tokens["access_token"].as_str().unwrap().to_owned());
        secrets.push(tokens["refresh_token"].as_str().unwrap().to_owned());
    }
    secrets.push(approved["authorization_token"].as_str().unwrap().to_owned());

    // The fallback: a password, TOTP, recovery codes, a mailed code, the
    // mfa_token, and the refusals of wrong ones.
    let account = app.fallback_account("logscan-fb").await;
    secrets.push(PASSWORD.to_owned());
    secrets.push(URL_SAFE_NO_PAD.encode(&account.secret));
    secrets.push(base32(&account.secret));
    assert_eq!(crate::fallback::base32_decode(&base32(&account.secret)), account.secret);
    secrets.extend(account.recovery_codes.iter().cloned());
    let address = "logscan-fb@example.test";
    let set =
        app.post_bearer("/v1/me/email", &account.access_token, &json!({"email": address})).await;
    assert_eq!(set.status(), 202);
    let mut codes = vec![smtp::last_code_to(address)];
    app.post_bearer("/v1/me/email/verify", &account.access_token, &json!({"code": codes[0]})).await;
    app.password_login("logscan-fb", "a wrong password for the log scan").await;
    secrets.push("a wrong password for the log scan".to_owned());
    let mfa = app.mfa_token("logscan-fb", PASSWORD).await;
    secrets.push(mfa.clone());
    let totp = totp_at(&account.secret, app.now_secs());
    codes.push(totp.clone());
    let wrong = format!("{:06}", (totp.parse::<u32>().unwrap() + 1) % 1_000_000);
    app.totp_login(&mfa, &wrong).await;
    codes.push(wrong);
    app.totp_login(&mfa, &totp).await;
    let mfa = app.mfa_token("logscan-fb", PASSWORD).await;
    secrets.push(mfa.clone());
    app.totp_login(&mfa, &account.recovery_codes[0]).await;
    let mfa = app.mfa_token("logscan-fb", PASSWORD).await;
    secrets.push(mfa.clone());
    app.post("/v1/login/mfa/email/send", &json!({"mfa_token": mfa})).await;
    let mailed = smtp::last_code_to(address);
    codes.push(mailed.clone());
    let signed_in: Value = app
        .post("/v1/login/mfa/email/verify", &json!({"mfa_token": mfa, "code": mailed}))
        .await
        .json()
        .await
        .unwrap();
    secrets.push(signed_in["access_token"].as_str().unwrap().to_owned());
    secrets.push(signed_in["refresh_token"].as_str().unwrap().to_owned());

    let logs = captured_logs();
    assert!(logs.contains(&request_id), "the capture works: this test's request is in it");
    assert!(logs.contains("payment_approved"), "audit events are captured");
    for secret in &secrets {
        // Any long-enough piece would do for a leak; the JWT signature part
        // and the middle of opaque values are what matter.
        let probe = &secret[secret.len().saturating_sub(40)..];
        assert!(!logs.contains(probe), "a secret reached the logs: …{probe}");
    }
    assert!(logs.contains("code_mailed") && logs.contains("totp_enrolled"));
    // Six digits occur by chance in timestamps and ids; a code in a log
    // would sit in a field, quoted or after '='.
    for code in &codes {
        for form in [format!("\"{code}\""), format!("={code}"), format!(" {code} ")] {
            assert!(!logs.contains(&form), "a one-time code reached the logs: {form}");
        }
    }
}

fn base32(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::new();
    for chunk in bytes.chunks(5) {
        let mut buffer = [0u8; 5];
        buffer[..chunk.len()].copy_from_slice(chunk);
        let value = buffer.iter().fold(0u64, |v, b| (v << 8) | u64::from(*b));
        for i in 0..(chunk.len() * 8).div_ceil(5) {
            out.push(ALPHABET[((value >> (35 - 5 * i)) & 31) as usize] as char);
        }
    }
    out
}
