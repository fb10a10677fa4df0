//! Anomaly aggregation (issue 20 item 4): failed audit events counted per
//! minute by network, account, device and kind; the admin view; and the
//! signed webhook, sent to a receiver on loopback that answers 500 before
//! it answers 200.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hmac::{Hmac, Mac};
use passgate::clock::Clock;
use passgate::store::{AlertRow, DeliveryRow, FailureCount, KeyTotal};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use crate::admin::admin;
use crate::fallback::PASSWORD;
use crate::helpers::{
    ANDROID_ORIGIN, Db, TestApp, assert_problem, on_both, spawn_app_configured, spawn_app_with,
};

on_both!(
    a_flood_from_one_network_raises_one_signed_alert_retried_until_delivered,
    two_nodes_on_one_database_send_one_alert,
    accounts_rate_limits_and_old_counts,
    admins_only_see_the_anomalies_and_bad_windows_are_refused,
    the_failure_store_ranks_keys_raises_each_alert_once_and_purges,
);

const SECRET: &str = "whsec-test-0123456789abcdef";

/// One request the receiver took.
#[derive(Clone, Debug)]
struct Received {
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

/// A webhook receiver on a loopback port: answers the scripted statuses in
/// turn, then 200, and keeps every request.
struct Receiver {
    url: String,
    received: Arc<Mutex<Vec<Received>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    async fn start(script: &[u16]) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url =
            format!("http://127.0.0.1:{}/hooks/passgate", listener.local_addr().unwrap().port());
        let received = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new(Mutex::new(script.iter().copied().collect::<VecDeque<u16>>()));
        let keep = received.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                let mut stream = BufReader::new(stream);
                let mut headers = HashMap::new();
                let mut line = String::new();
                stream.read_line(&mut line).await.unwrap();
                loop {
                    line.clear();
                    stream.read_line(&mut line).await.unwrap();
                    let Some((name, value)) = line.trim_end().split_once(':') else { break };
                    headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_owned());
                }
                let length: usize =
                    headers.get("content-length").and_then(|l| l.parse().ok()).unwrap_or(0);
                let mut body = vec![0u8; length];
                stream.read_exact(&mut body).await.unwrap();
                keep.lock().unwrap().push(Received { headers, body });
                let status = script.lock().unwrap().pop_front().unwrap_or(200);
                let answer = format!(
                    "HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                );
                let mut stream = stream.into_inner();
                stream.write_all(answer.as_bytes()).await.unwrap();
                let _ = stream.shutdown().await;
            }
        });
        Receiver { url, received, task }
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A receiver's check of `Passgate-Signature`, written from the README's
/// description, not from the server's code: HMAC-SHA256 over
/// "<t>.<body>", and a `t` no more than five minutes from now.
fn signature_verifies(secret: &str, header: &str, body: &[u8], now: i64) -> bool {
    let parts: HashMap<&str, &str> =
        header.split(',').filter_map(|part| part.trim().split_once('=')).collect();
    let (Some(t), Some(v1)) = (parts.get("t"), parts.get("v1")) else { return false };
    let Ok(t) = t.parse::<i64>() else { return false };
    if (now - t).abs() > 300 {
        return false;
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    let sent: Option<Vec<u8>> = (0..v1.len())
        .step_by(2)
        .map(|i| v1.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
        .collect();
    sent.is_some_and(|sent| mac.verify_slice(&sent).is_ok())
}

/// Settings for a node that alerts at 10 failures a minute per network,
/// sends to `receiver`, retries quickly, and trusts the test as its proxy
/// (so X-Forwarded-For sets the client's address).
fn alerting(receiver: &Receiver) -> Vec<(&'static str, String)> {
    vec![
        ("PASSGATE__SERVER__TRUSTED_PROXIES", "127.0.0.1/32".to_owned()),
        ("PASSGATE__ANOMALY__NETWORK_FAILURES_PER_MINUTE", "10".to_owned()),
        ("PASSGATE__ANOMALY__ACCOUNT_FAILURES_PER_MINUTE", "0".to_owned()),
        ("PASSGATE__ANOMALY__KIND_FAILURES_PER_MINUTE", "0".to_owned()),
        ("PASSGATE__ANOMALY__WEBHOOK_URL", receiver.url.clone()),
        ("PASSGATE__ANOMALY__WEBHOOK_SECRET", SECRET.to_owned()),
        ("PASSGATE__ANOMALY__WEBHOOK_ATTEMPTS", "4".to_owned()),
        ("PASSGATE__ANOMALY__WEBHOOK_BACKOFF_MILLISECONDS", "5".to_owned()),
        // The tests flush themselves; the timer stays out of their way.
        ("PASSGATE__ANOMALY__FLUSH_INTERVAL_SECONDS", "60".to_owned()),
    ]
}

fn pairs<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// `n` wrong passwords for unknown names (no lockout in the way), each
/// from `ip` as the client.
async fn failed_sign_ins(app: &TestApp, n: usize, ip: &str) {
    for _ in 0..n {
        let name = format!("nobody-{}", uuid::Uuid::new_v4().simple());
        let response = app
            .client
            .post(format!("{}/v1/login/password", app.address))
            .header("x-forwarded-for", ip)
            .json(&json!({ "username": name, "password": "wrong password" }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "from {ip}");
    }
}

async fn flush(app: &TestApp) {
    app.core.anomalies.flush_now().await.expect("the counts are written");
    app.core.anomalies.deliveries_settled().await;
}

async fn scrape(app: &TestApp) -> String {
    let response = app.get("/metrics", None).await;
    assert_eq!(response.status(), StatusCode::OK);
    response.text().await.unwrap()
}

/// The value of the series written exactly as `name_and_labels`.
fn series(text: &str, name_and_labels: &str) -> i64 {
    text.lines()
        .find_map(|line| line.strip_prefix(name_and_labels)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0)
}

async fn a_flood_from_one_network_raises_one_signed_alert_retried_until_delivered(db: Db) {
    let receiver = Receiver::start(&[500, 503]).await;
    let app = spawn_app_configured(db, &pairs(&alerting(&receiver))).await;
    let (_, admin_bearer) = admin(&app, "anomaly-admin").await;

    // Below the threshold: 9 from one /24 (two addresses), 5 from another.
    failed_sign_ins(&app, 6, "203.0.113.7").await;
    failed_sign_ins(&app, 3, "203.0.113.99").await;
    failed_sign_ins(&app, 5, "198.51.100.1").await;
    // IPv6 clients count by their /48.
    failed_sign_ins(&app, 2, "2001:db8:1:2::5").await;
    failed_sign_ins(&app, 1, "2001:db8:1:ffff::9").await;
    flush(&app).await;
    assert!(receiver.received().is_empty(), "nothing fires below the threshold");
    let log: Value =
        app.get("/v1/admin/anomalies/deliveries", Some(&admin_bearer)).await.json().await.unwrap();
    assert_eq!(log["deliveries"], json!([]));
    assert_eq!(log["webhook"], json!(true));

    // The tenth failure of 203.0.113.0/24 in this minute crosses it.
    failed_sign_ins(&app, 1, "203.0.113.200").await;
    flush(&app).await;
    let received = receiver.received();
    assert_eq!(received.len(), 3, "500, 503, then 200: three attempts");
    let now = app.clock.now_secs();
    let alert_id = received[0].headers["passgate-delivery"].clone();
    for (n, request) in received.iter().enumerate() {
        assert_eq!(request.headers["passgate-delivery"], alert_id, "one id for every attempt");
        assert_eq!(request.headers["passgate-attempt"], (n + 1).to_string());
        assert_eq!(request.headers["content-type"], "application/json");
        let signature = &request.headers["passgate-signature"];
        assert!(signature_verifies(SECRET, signature, &request.body, now), "{signature}");
        assert!(!signature_verifies("another-secret-0123456789", signature, &request.body, now));
        assert!(!signature_verifies(SECRET, signature, &request.body, now + 301), "too old");
        let text = String::from_utf8(request.body.clone()).unwrap();
        assert!(!text.contains(SECRET), "the secret is never sent");
        let tampered = text.replace("\"count\":10", "\"count\":1");
        assert_ne!(tampered, text);
        assert!(!signature_verifies(SECRET, signature, tampered.as_bytes(), now));
    }
    let body: Value = serde_json::from_slice(&received[2].body).unwrap();
    assert_eq!(body["alert"], json!(alert_id));
    assert_eq!(body["rule"], "failures_per_minute");
    assert_eq!(body["dimension"], "network");
    assert_eq!(body["key"], "203.0.113.0/24");
    assert_eq!(body["kind"], "login");
    assert_eq!(body["count"], 10);
    assert_eq!(body["threshold"], 10);
    let minute = app.clock.now_ms().div_euclid(60_000);
    assert_eq!(body["window_start"], json!(passgate::clock::rfc3339(minute * 60_000)));

    // The flood goes on in the same minute: no second alert.
    failed_sign_ins(&app, 5, "203.0.113.7").await;
    flush(&app).await;
    assert_eq!(receiver.received().len(), 3, "one crossing, one alert");

    // Every attempt is in the delivery log, newest first.
    let log: Value =
        app.get("/v1/admin/anomalies/deliveries", Some(&admin_bearer)).await.json().await.unwrap();
    let attempts: Vec<(i64, Value, Value)> = log["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["attempt"].as_i64().unwrap(), d["status_code"].clone(), d["alert_id"].clone()))
        .collect();
    assert_eq!(
        attempts,
        vec![
            (3, json!(200), json!(alert_id)),
            (2, json!(503), json!(alert_id)),
            (1, json!(500), json!(alert_id)),
        ]
    );
    assert_eq!(log["deliveries"][0]["key"], "203.0.113.0/24");
    assert!(!log.to_string().contains(SECRET) && !log.to_string().contains("/hooks/"));

    // The admin view lists the flooding network first, per minute.
    let view = app.get("/v1/admin/anomalies?minutes=15", Some(&admin_bearer)).await;
    assert_eq!(view.status(), StatusCode::OK);
    let view: Value = view.json().await.unwrap();
    assert_eq!(view["minutes"], 15);
    assert_eq!(view["thresholds"]["network"], 10);
    assert_eq!(view["networks"][0]["key"], "203.0.113.0/24");
    assert_eq!(view["networks"][0]["total"], 15);
    assert_eq!(
        view["networks"][0]["series"],
        json!([{"minute": passgate::clock::rfc3339(minute * 60_000), "count": 15}])
    );
    assert_eq!(view["networks"][1]["key"], "198.51.100.0/24");
    assert_eq!(view["networks"][1]["total"], 5);
    assert_eq!(view["networks"][2]["key"], "2001:db8:1::/48");
    assert_eq!(view["networks"][2]["total"], 3);
    assert_eq!(view["networks"].as_array().unwrap().len(), 3);
    assert_eq!(view["kinds"][0]["key"], "login");
    assert_eq!(view["kinds"][0]["total"], 23);
    assert_eq!(view["accounts"], json!([]), "unknown names are no account");

    // The metrics: counts by kind, the worst network, the alert and the
    // webhook's attempts; never a network or address as a label.
    let text = scrape(&app).await;
    assert_eq!(series(&text, r#"passgate_failures_total{kind="login"}"#), 23);
    assert_eq!(series(&text, r#"passgate_failure_rate_worst{dimension="network"}"#), 15);
    assert_eq!(series(&text, r#"passgate_anomaly_alerts_total{dimension="network"}"#), 1);
    assert_eq!(series(&text, r#"passgate_anomaly_webhook_attempts_total{outcome="refused"}"#), 2);
    assert_eq!(series(&text, r#"passgate_anomaly_webhook_attempts_total{outcome="delivered"}"#), 1);
    assert_eq!(series(&text, "passgate_anomaly_webhook_undelivered_total"), 0);
    assert!(!text.contains("203.0.113") && !text.contains("2001:db8"), "no address in a label");
}

async fn two_nodes_on_one_database_send_one_alert(db: Db) {
    let receiver = Receiver::start(&[]).await;
    let env = alerting(&receiver);
    let first = spawn_app_configured(db, &pairs(&env)).await;
    let second =
        spawn_app_with(first.db.share(), &[ANDROID_ORIGIN, &first.origin], &pairs(&env)).await;
    // One minute on both nodes' clocks (the second was made later).
    let behind = second.clock.now_ms() - first.clock.now_ms();
    first.clock.advance(Duration::from_millis(behind.max(0) as u64));

    // Neither node alone reaches 10; together they do.
    failed_sign_ins(&first, 6, "203.0.113.7").await;
    failed_sign_ins(&second, 6, "203.0.113.8").await;
    flush(&first).await;
    assert!(receiver.received().is_empty(), "6 of 10 on the first node's write");
    flush(&second).await;
    assert_eq!(receiver.received().len(), 1, "the second write made 12");
    let body: Value = serde_json::from_slice(&receiver.received()[0].body).unwrap();
    assert_eq!((body["key"].as_str(), body["count"].as_i64()), (Some("203.0.113.0/24"), Some(12)));

    // Both over the threshold for another network, written at once: one
    // of them inserts the alert, the other finds it.
    failed_sign_ins(&first, 10, "198.51.100.1").await;
    failed_sign_ins(&second, 10, "198.51.100.2").await;
    let (a, b) = tokio::join!(first.core.anomalies.flush_now(), second.core.anomalies.flush_now());
    a.unwrap();
    b.unwrap();
    first.core.anomalies.deliveries_settled().await;
    second.core.anomalies.deliveries_settled().await;
    // And the first node, writing more of the same, sends nothing either.
    failed_sign_ins(&first, 2, "203.0.113.7").await;
    flush(&first).await;
    let keys: Vec<Value> = receiver
        .received()
        .iter()
        .map(|r| serde_json::from_slice::<Value>(&r.body).unwrap()["key"].clone())
        .collect();
    assert_eq!(keys, vec![json!("203.0.113.0/24"), json!("198.51.100.0/24")]);
    let alerts = first
        .observer(Duration::from_secs(5))
        .await
        .count("select count(*) from anomaly_alert where dimension = $1", "network")
        .await;
    assert_eq!(alerts, 2);
}

async fn accounts_rate_limits_and_old_counts(db: Db) {
    let app = spawn_app_configured(
        db,
        &[
            ("PASSGATE__LIMITS__IP_REQUESTS_PER_MINUTE", "3"),
            ("PASSGATE__ANOMALY__FLUSH_INTERVAL_SECONDS", "60"),
        ],
    )
    .await;
    let mut passkey = app.authenticator();
    let tokens = app.register(&mut passkey, "velocity").await;
    let user_id = tokens["user_id"].as_str().unwrap();
    let bearer = tokens["access_token"].as_str().unwrap();
    let set = app
        .client
        .put(format!("{}/v1/me/password", app.address))
        .bearer_auth(bearer)
        .json(&json!({"password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(set.status(), StatusCode::NO_CONTENT);
    // Two wrong passwords for the account, then the IP's limit of 3 a
    // minute refuses the next two: rate-limited requests count too, under
    // the network (they have no account yet).
    for _ in 0..2 {
        let wrong = app
            .post(
                "/v1/login/password",
                &json!({"username": "velocity", "password": "not it at all"}),
            )
            .await;
        assert_problem(wrong, 401, "invalid_credentials").await;
    }
    let _ = app
        .post("/v1/login/password", &json!({"username": "nobody-x", "password": "nope nope"}))
        .await;
    for _ in 0..2 {
        let limited = app
            .post(
                "/v1/login/password",
                &json!({"username": "velocity", "password": "still not it"}),
            )
            .await;
        assert_problem(limited, 429, "rate_limited").await;
    }
    let minute = app.clock.now_ms().div_euclid(60_000);
    // Nothing is written before the flush: counting is in memory.
    assert_eq!(app.store.failures_since("account", user_id, minute).await.unwrap(), 0);
    flush(&app).await;
    // The signals the risk rules read (lane A's velocity).
    assert_eq!(app.store.failures_since("account", user_id, minute - 14).await.unwrap(), 2);
    assert_eq!(app.store.failures_since("network", "127.0.0.0/24", minute - 14).await.unwrap(), 5);
    assert_eq!(app.store.failures_since("kind", "rate_limited", minute).await.unwrap(), 2);
    let text = scrape(&app).await;
    assert_eq!(series(&text, r#"passgate_failures_total{kind="rate_limited"}"#), 2);
    assert_eq!(series(&text, r#"passgate_anomaly_alerts_total{dimension="network"}"#), 0);

    // Housekeeping deletes counts past anomaly.failures_kept_hours (48).
    app.clock.advance(Duration::from_secs(47 * 3600));
    app.core.housekeeping.round(Duration::from_secs(10)).await;
    assert_eq!(app.store.failures_since("account", user_id, 0).await.unwrap(), 2);
    app.clock.advance(Duration::from_secs(2 * 3600));
    app.core.housekeeping.round(Duration::from_secs(10)).await;
    assert_eq!(app.store.failures_since("account", user_id, 0).await.unwrap(), 0);
    assert_eq!(app.store.failures_since("network", "127.0.0.0/24", 0).await.unwrap(), 0);
}

async fn admins_only_see_the_anomalies_and_bad_windows_are_refused(db: Db) {
    let app = spawn_app_configured(db, &[]).await;
    let (_, admin_bearer) = admin(&app, "anomaly-root").await;
    let mut phone = app.authenticator();
    let user = app.register(&mut phone, "curious").await;
    let user_bearer = user["access_token"].as_str().unwrap();
    for path in ["/v1/admin/anomalies", "/v1/admin/anomalies/deliveries"] {
        assert_problem(app.get(path, None).await, 401, "unauthorized").await;
        assert_problem(app.get(path, Some(user_bearer)).await, 403, "forbidden").await;
        assert_eq!(app.get(path, Some(&admin_bearer)).await.status(), StatusCode::OK);
    }
    for bad in ["minutes=0", "minutes=1441", "minutes=-5"] {
        let response = app.get(&format!("/v1/admin/anomalies?{bad}"), Some(&admin_bearer)).await;
        assert_problem(response, 422, "validation_failed").await;
    }
    let response = app.get("/v1/admin/anomalies/deliveries?limit=501", Some(&admin_bearer)).await;
    assert_problem(response, 422, "validation_failed").await;
    let view: Value =
        app.get("/v1/admin/anomalies", Some(&admin_bearer)).await.json().await.unwrap();
    assert_eq!(view["minutes"], 15, "the default window");
    // Without a webhook the log says so, and stays empty.
    let log: Value =
        app.get("/v1/admin/anomalies/deliveries", Some(&admin_bearer)).await.json().await.unwrap();
    assert_eq!(log, json!({"webhook": false, "deliveries": []}));
}

/// The store's side, one query at a time, on both engines.
async fn the_failure_store_ranks_keys_raises_each_alert_once_and_purges(db: Db) {
    let app =
        spawn_app_configured(db, &[("PASSGATE__ANOMALY__FLUSH_INTERVAL_SECONDS", "60")]).await;
    let store = &app.store;
    let count = |minute: i64, dimension: &str, key: &str, kind: &str, count: i64| FailureCount {
        minute,
        dimension: dimension.to_owned(),
        key: key.to_owned(),
        kind: kind.to_owned(),
        count,
    };
    let total =
        |key: &str, minute: i64, total: i64| KeyTotal { key: key.to_owned(), minute, total };
    store
        .add_failures(&[
            count(100, "network", "a", "login", 3),
            count(100, "network", "b", "login", 5),
            count(101, "network", "a", "totp", 4),
            count(101, "account", "u", "login", 2),
        ])
        .await
        .unwrap();
    // A second write of the same row adds to it.
    store.add_failures(&[count(101, "network", "a", "login", 1)]).await.unwrap();

    assert_eq!(
        store.top_failures("network", 100, 10).await.unwrap(),
        vec![total("a", 101, 8), total("b", 100, 5)]
    );
    assert_eq!(store.top_failures("network", 100, 1).await.unwrap(), vec![total("a", 101, 8)]);
    assert_eq!(store.top_failures("network", 101, 10).await.unwrap(), vec![total("a", 101, 5)]);
    assert_eq!(
        store.failure_series("network", "a", 0).await.unwrap(),
        vec![total("a", 100, 3), total("a", 101, 5)]
    );
    assert_eq!(
        store.keys_at_or_over("network", 100, 5).await.unwrap(),
        vec![total("b", 100, 5), total("a", 101, 5)]
    );
    assert_eq!(store.keys_at_or_over("network", 101, 6).await.unwrap(), vec![]);
    assert_eq!(store.top_kind("network", "a", 101).await.unwrap().as_deref(), Some("totp"));
    assert_eq!(store.top_kind("network", "z", 101).await.unwrap(), None);
    let mut worst = store.worst_minutes(100).await.unwrap();
    worst.sort();
    assert_eq!(worst, vec![("account".to_owned(), 2), ("network".to_owned(), 5)]);
    assert_eq!(store.failures_since("account", "u", 101).await.unwrap(), 2);
    assert_eq!(store.failures_since("network", "a", 0).await.unwrap(), 8);

    let alert = |id: &str, minute: i64, created_at: i64| AlertRow {
        alert_id: id.to_owned(),
        rule: "failures_per_minute".to_owned(),
        dimension: "network".to_owned(),
        key: "a".to_owned(),
        window_start: minute,
        kind: Some("login".to_owned()),
        count: 5,
        threshold: 5,
        created_at,
    };
    assert!(store.insert_alert(&alert("x1", 101, 1000), 90).await.unwrap());
    assert!(!store.insert_alert(&alert("x2", 101, 1000), 101).await.unwrap(), "same minute");
    assert!(!store.insert_alert(&alert("x3", 105, 1000), 91).await.unwrap(), "still quiet");
    assert!(store.insert_alert(&alert("x4", 120, 5000), 106).await.unwrap(), "quiet is over");
    let delivery =
        |id: &str, attempt: i32, status_code: Option<i32>, error: Option<&str>, at| DeliveryRow {
            delivery_id: id.to_owned(),
            alert_id: "x1".to_owned(),
            attempt,
            status_code,
            error: error.map(str::to_owned),
            at,
        };
    store.record_delivery(&delivery("d1", 1, Some(500), None, 2000)).await.unwrap();
    store.record_delivery(&delivery("d2", 2, None, Some("timeout"), 3000)).await.unwrap();
    let log = store.deliveries(10).await.unwrap();
    let read: Vec<_> = log.iter().map(|d| (d.delivery.clone(), d.key.as_str(), d.count)).collect();
    assert_eq!(
        read,
        vec![
            (delivery("d2", 2, None, Some("timeout"), 3000), "a", 5),
            (delivery("d1", 1, Some(500), None, 2000), "a", 5),
        ]
    );
    assert_eq!(store.deliveries(1).await.unwrap().len(), 1);

    // Counts before minute 101 go; alerts made before 1001 go with their
    // deliveries.
    assert_eq!(store.purge_failures(101).await.unwrap(), 2);
    assert_eq!(store.top_failures("network", 0, 10).await.unwrap(), vec![total("a", 101, 5)]);
    assert_eq!(store.purge_alerts(1001).await.unwrap(), 1);
    assert!(store.deliveries(10).await.unwrap().is_empty());
    assert!(!store.insert_alert(&alert("x5", 120, 6000), 120).await.unwrap(), "x4 stays");
}
