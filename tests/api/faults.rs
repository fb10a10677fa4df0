//! A mail server that accepts connections and then says nothing: the
//! code endpoints answer 503 within `smtp.timeout_seconds`, notices of
//! changes do not hold up the change they report, and nothing else slows.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::fallback::{PASSWORD, db_tag, verified_email};
use crate::helpers::{Db, assert_problem, on_both, spawn_app, spawn_app_with};

on_both!(a_hanging_mail_server_costs_only_the_code_endpoints_their_timeout);

/// Accepts connections and holds them open without a word, for the life
/// of the test process.
fn hanging_smtp_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            held.push(stream);
        }
    });
    port
}

async fn a_hanging_mail_server_costs_only_the_code_endpoints_their_timeout(db: Db) {
    // Set up on a node whose mail works: an account with a verified address.
    let app = spawn_app(db).await;
    let account = app.fallback_account("fault-mail").await;
    let address = format!("fault-mail-{}@example.test", db_tag(&app));
    verified_email(&app, &account.access_token, &address).await;
    // A second node on the same database, whose mail server hangs.
    let port = hanging_smtp_port().to_string();
    let env = [("PASSGATE__SMTP__PORT", port.as_str()), ("PASSGATE__SMTP__TIMEOUT_SECONDS", "1")];
    let node = spawn_app_with(app.db_share(), &[&app.origin], &env).await;
    let mut passkey = account.passkey;

    // A mailed sign-in code: 503 after the timeout, not later.
    let mfa = node.mfa_token("fault-mail", PASSWORD).await;
    let send = json!({"mfa_token": mfa});
    let sent = node.post("/v1/login/mfa/email/send", &send);
    let sign_in = async {
        // Meanwhile a passkey sign-in on the same node is not held up.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let started = Instant::now();
        let response = node.login(&mut passkey, None).await;
        (response, started.elapsed())
    };
    let started = Instant::now();
    let (sent, (signed_in, sign_in_took)) = tokio::join!(sent, sign_in);
    let send_took = started.elapsed();
    assert_problem(sent, 503, "unavailable").await;
    assert!(send_took < Duration::from_millis(2500), "the send answered after {send_took:?}");
    assert_eq!(signed_in.status(), StatusCode::OK);
    assert!(sign_in_took < Duration::from_millis(900), "a sign-in took {sign_in_took:?}");

    // A change whose notice cannot go out is made at once; the failed
    // notice is counted once its send gives up.
    let bearer: Value = signed_in.json().await.unwrap();
    let bearer = bearer["access_token"].as_str().unwrap();
    let started = Instant::now();
    let body = json!({"password": "a new passphrase here", "current_password": PASSWORD});
    let changed = node.put_bearer("/v1/me/password", bearer, &body).await;
    assert_eq!(changed.status(), StatusCode::NO_CONTENT);
    let change_took = started.elapsed();
    assert!(change_took < Duration::from_millis(900), "the change took {change_took:?}");
    let counted = "passgate_mail_failures_total{kind=\"notice\"} 1";
    for _ in 0..60 {
        if node.get("/metrics", None).await.text().await.unwrap().contains(counted) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the failed notice was not counted");
}
