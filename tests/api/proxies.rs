//! The client address behind proxies (`server.trusted_proxies`): which
//! X-Forwarded-For entry is believed, and how the per-IP rate limit counts
//! IPv6 clients. The tests run from 127.0.0.1, so a node that trusts
//! 127.0.0.1/32 sees the test as its proxy, and one that does not sees it
//! as a client.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{Db, TestApp, assert_problem, on_both, spawn_app_configured};

on_both!(
    a_forged_forwarded_for_from_an_untrusted_peer_changes_neither_ip_nor_limit,
    a_trusted_proxys_appended_address_is_the_client,
    past_several_trusted_hops_the_first_untrusted_entry_is_the_client,
    ipv6_clients_share_a_rate_limit_per_64,
);

/// Registers `username` with this X-Forwarded-For on the finish (where
/// the session begins); returns the client_ip the session list shows.
async fn recorded_ip(app: &TestApp, username: &str, forwarded_for: &str) -> String {
    let mut phone = app.authenticator();
    let (ceremony_id, options) = app.started_registration(username).await;
    let credential = phone.register(&options);
    let response = app
        .client
        .post(format!("{}/v1/register/finish", app.address))
        .header("x-forwarded-for", forwarded_for)
        .json(&json!({ "ceremony_id": ceremony_id, "credential": credential }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let tokens: Value = response.json().await.unwrap();
    let sessions = app.get("/v1/me/sessions", tokens["access_token"].as_str()).await;
    assert_eq!(sessions.status(), StatusCode::OK);
    let sessions: Value = sessions.json().await.unwrap();
    sessions[0]["client_ip"].as_str().expect("a client_ip").to_owned()
}

/// A password sign-in of an unknown name (401 until the IP limit, 429
/// after), claiming to come from `forwarded_for`.
async fn password_from(app: &TestApp, username: &str, forwarded_for: &str) -> reqwest::Response {
    app.client
        .post(format!("{}/v1/login/password", app.address))
        .header("x-forwarded-for", forwarded_for)
        .json(&json!({ "username": username, "password": "some password" }))
        .send()
        .await
        .unwrap()
}

const IP_LIMIT: (&str, &str) = ("PASSGATE__LIMITS__IP_REQUESTS_PER_MINUTE", "3");
const LOOPBACK_PROXY: (&str, &str) = ("PASSGATE__SERVER__TRUSTED_PROXIES", "127.0.0.1/32");

async fn a_forged_forwarded_for_from_an_untrusted_peer_changes_neither_ip_nor_limit(db: Db) {
    let app = spawn_app_configured(db, &[IP_LIMIT]).await;
    assert_eq!(recorded_ip(&app, "alice", "203.0.113.9").await, "127.0.0.1");
    // A new made-up address on every request is still one client.
    for n in 0..3 {
        let response =
            password_from(&app, &format!("forger-{n}"), &format!("198.51.100.{n}")).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "request {n}");
    }
    let limited = password_from(&app, "forger-3", "198.51.100.3").await;
    assert_problem(limited, 429, "rate_limited").await;
}

async fn a_trusted_proxys_appended_address_is_the_client(db: Db) {
    let app = spawn_app_configured(db, &[LOOPBACK_PROXY]).await;
    assert_eq!(recorded_ip(&app, "alice", "203.0.113.9").await, "203.0.113.9");
    // What the client wrote before the proxy's entry is not believed.
    assert_eq!(recorded_ip(&app, "bob", "198.51.100.1, 203.0.113.9").await, "203.0.113.9");
    assert_eq!(recorded_ip(&app, "carol", "2001:db8::7").await, "2001:db8::7");
}

async fn past_several_trusted_hops_the_first_untrusted_entry_is_the_client(db: Db) {
    let proxies = ("PASSGATE__SERVER__TRUSTED_PROXIES", "127.0.0.1/32,10.0.0.0/8");
    let app = spawn_app_configured(db, &[proxies]).await;
    let chain = "198.51.100.1, 203.0.113.9, 10.1.2.3, 10.4.5.6";
    assert_eq!(recorded_ip(&app, "alice", chain).await, "203.0.113.9");
    // Nothing left of an entry no proxy of ours would write is believed:
    // the client is the last proxy reached.
    let garbled = "203.0.113.9, not-an-address, 10.1.2.3";
    assert_eq!(recorded_ip(&app, "bob", garbled).await, "10.1.2.3");
    // Only proxies are skipped: all of them, and the leftmost one remains.
    assert_eq!(recorded_ip(&app, "carol", "10.7.7.7, 10.1.2.3").await, "10.7.7.7");
}

async fn ipv6_clients_share_a_rate_limit_per_64(db: Db) {
    let app = spawn_app_configured(db, &[IP_LIMIT, LOOPBACK_PROXY]).await;
    let (first, second) = ("2001:db8:1:2::1", "2001:db8:1:2:ffff:ffff:ffff:2");
    for (n, address) in [first, second, first].into_iter().enumerate() {
        let response = password_from(&app, &format!("v6-{n}"), address).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{address}");
    }
    assert_problem(password_from(&app, "v6-3", second).await, 429, "rate_limited").await;
    assert_problem(password_from(&app, "v6-4", first).await, 429, "rate_limited").await;
    // The next /64, and IPv4 clients, count on their own.
    let next = password_from(&app, "v6-5", "2001:db8:1:3::1").await;
    assert_eq!(next.status(), StatusCode::UNAUTHORIZED);
    let v4 = password_from(&app, "v4-1", "203.0.113.1").await;
    assert_eq!(v4.status(), StatusCode::UNAUTHORIZED);
}
