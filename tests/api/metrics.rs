//! Operators' metrics and listener (issue 18, item 5): `server.admin_bind`
//! moves /metrics and /v1/admin to a listener of their own; each counted
//! event, caused over HTTP, moves its series; the latency buckets reach the
//! request deadline; and the Grafana dashboard and Prometheus alert rules
//! in deploy/ name only series the server exposes.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::time::Duration;

use passgate::clock::Clock;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::admin::admin;
use crate::fallback::{PASSWORD, db_tag, verified_email};
use crate::helpers::{
    Db, TestApp, assert_problem, captured_logs, on_both, spawn_app_configured, spawn_app_with,
};
use crate::otp::totp_at;

on_both!(
    fallback_sign_ins_refresh_reuse_and_key_age_move_their_series,
    failed_mail_is_counted_by_kind,
);

/// The value of the series written exactly as `name_and_labels`, 0 when
/// it is not there.
fn series(text: &str, name_and_labels: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(name_and_labels)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0.0)
}

impl TestApp {
    /// `path` on the operators' listener.
    fn admin_url(&self, path: &str) -> String {
        let port = self.admin_port.expect("server.admin_bind is set");
        format!("http://127.0.0.1:{port}{path}")
    }

    /// The metrics text from the listener that serves it.
    async fn scrape(&self) -> String {
        let url = match self.admin_port {
            Some(_) => self.admin_url("/metrics"),
            None => format!("{}/metrics", self.address),
        };
        let response = self.client.get(url).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        response.text().await.unwrap()
    }
}

#[tokio::test]
async fn without_admin_bind_one_listener_serves_everything() {
    let app = spawn_app_configured(Db::Sqlite, &[]).await;
    assert_eq!(app.admin_port, None);
    let (_, bearer) = admin(&app, "one-listener").await;
    assert_eq!(app.get("/v1/admin/users", Some(&bearer)).await.status(), StatusCode::OK);
    assert!(app.scrape().await.contains("passgate_http_requests_total"));
    assert_eq!(app.get("/healthz", None).await.status(), StatusCode::OK);
}

/// The listener split depends on routes, not on the engine: SQLite only.
#[tokio::test]
async fn admin_bind_serves_metrics_and_admin_routes_on_their_own_listener_only() {
    let app =
        spawn_app_configured(Db::Sqlite, &[("PASSGATE__SERVER__ADMIN_BIND", "127.0.0.1:0")]).await;
    let admin_port = app.admin_port.expect("an operators' listener");
    assert_ne!(admin_port, app.port);
    // Signed in on the users' listener, as an operator would.
    let (_, bearer) = admin(&app, "two-listeners").await;

    // The users' listener: the normal 404, also for a disguised path.
    for path in ["/metrics", "/v1/admin/users", "/v1/%61dmin/users", "/v1/admin/audit"] {
        let refused = app.get(path, Some(&bearer)).await;
        assert!(refused.headers().contains_key("x-request-id"), "{path}");
        assert_eq!(refused.status(), StatusCode::NOT_FOUND, "{path}");
        assert_problem(refused, 404, "not_found").await;
    }
    let refused = app.client.post(format!("{}/metrics", app.address)).send().await.unwrap();
    assert_problem(refused, 404, "not_found").await;
    assert_eq!(app.get("/healthz", None).await.status(), StatusCode::OK);
    assert_eq!(app.get("/v1/me", Some(&bearer)).await.status(), StatusCode::OK);

    // The operators' listener: the same Core (the account made on the
    // other listener is there), the same middleware, nothing else.
    let get = |path: &str| app.client.get(app.admin_url(path)).bearer_auth(&bearer).send();
    let users = get("/v1/admin/users?q=two-listeners").await.unwrap();
    assert_eq!(users.status(), StatusCode::OK);
    assert!(users.headers().contains_key("x-request-id"));
    assert_eq!(users.headers()["x-content-type-options"], "nosniff");
    let users: Value = users.json().await.unwrap();
    assert!(users.to_string().contains("two-listeners"), "{users}");
    assert_problem(
        app.client.get(app.admin_url("/v1/admin/users")).send().await.unwrap(),
        401,
        "unauthorized",
    )
    .await;
    for path in ["/healthz", "/v1/me", "/", "/index.html", "/admin", "/openapi.json"] {
        assert_problem(get(path).await.unwrap(), 404, "not_found").await;
    }
    let metrics = get("/metrics").await.unwrap();
    assert_eq!(metrics.status(), StatusCode::OK);
    assert!(metrics.headers().contains_key("x-request-id"));

    // An admin action there is traced under its request id.
    let tokens = app.register(&mut app.authenticator(), "two-listeners-user").await;
    let path = format!("/v1/admin/users/{}/lock", tokens["user_id"].as_str().unwrap());
    let locked = app
        .client
        .post(app.admin_url(&path))
        .bearer_auth(&bearer)
        .json(&json!({"reason": "metrics test"}))
        .send()
        .await
        .unwrap();
    assert!(locked.status().is_success(), "{}", locked.status());
    let request_id = locked.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert!(captured_logs().contains(&request_id), "the operators' request is in the logs");

    // Both listeners' requests are counted in the one registry.
    let text = app.scrape().await;
    let on_users = r#"passgate_http_requests_total{method="GET",route="/metrics",status="404"}"#;
    assert_eq!(series(&text, on_users), 1.0, "{text}");
    let on_operators =
        r#"passgate_http_requests_total{method="GET",route="/v1/admin/users",status="200"}"#;
    assert_eq!(series(&text, on_operators), 1.0);
    assert_eq!(
        series(
            &text,
            r#"passgate_http_requests_total{method="GET",route="/healthz",status="200"}"#
        ),
        1.0
    );
}

async fn fallback_sign_ins_refresh_reuse_and_key_age_move_their_series(db: Db) {
    let app = spawn_app_configured(
        db,
        &[
            ("PASSGATE__SERVER__REQUEST_TIMEOUT_SECONDS", "45"),
            ("PASSGATE__TOKENS__KEY_ROTATION_DAYS", "90"),
        ],
    )
    .await;
    let before = app.scrape().await;
    for method in ["totp", "recovery_code", "email_otp"] {
        let line = format!(
            r#"passgate_fallback_logins_total{{method="{method}",outcome="success",reason=""}} 0"#
        );
        assert!(before.contains(&line), "{method} starts at 0");
    }
    assert!(before.contains("passgate_refresh_token_reuse_total 0"));

    // Password and TOTP, a wrong TOTP code, a recovery code, a mailed code.
    let account = app.fallback_account("metrics-fb").await;
    let mfa = app.mfa_token("metrics-fb", PASSWORD).await;
    let code = totp_at(&account.secret, app.now_secs());
    assert_eq!(app.totp_login(&mfa, &code).await.status(), StatusCode::OK);
    let mfa = app.mfa_token("metrics-fb", PASSWORD).await;
    let wrong = format!("{:06}", (code.parse::<u32>().unwrap() + 1) % 1_000_000);
    assert_problem(app.totp_login(&mfa, &wrong).await, 401, "invalid_code").await;
    let recovered = app.totp_login(&mfa, &account.recovery_codes[0]).await;
    assert_eq!(recovered.status(), StatusCode::OK);
    let address = format!("metrics-fb-{}@example.test", db_tag(&app));
    verified_email(&app, &account.access_token, &address).await;
    let mfa = app.mfa_token("metrics-fb", PASSWORD).await;
    let sent = app.post("/v1/login/mfa/email/send", &json!({"mfa_token": mfa})).await;
    assert_eq!(sent.status(), StatusCode::ACCEPTED);
    let code = crate::smtp::last_code_to(&address);
    let body = json!({"mfa_token": mfa, "code": code});
    let verified: Value = app.post("/v1/login/mfa/email/verify", &body).await.json().await.unwrap();

    // A refresh token presented again after its rotation.
    let old = verified["refresh_token"].as_str().unwrap();
    assert_eq!(app.refresh(old).await.status(), StatusCode::OK);
    assert_problem(app.refresh(old).await, 401, "invalid_credentials").await;

    let text = app.scrape().await;
    let fallback = |method: &str, outcome: &str, reason: &str| {
        let name = format!(
            r#"passgate_fallback_logins_total{{method="{method}",outcome="{outcome}",reason="{reason}"}}"#
        );
        series(&text, &name)
    };
    assert_eq!(fallback("totp", "success", ""), 1.0);
    assert_eq!(fallback("totp", "failure", "invalid_code"), 1.0);
    assert_eq!(fallback("recovery_code", "success", ""), 1.0);
    assert_eq!(fallback("email_otp", "success", ""), 1.0);
    assert_eq!(series(&text, "passgate_refresh_token_reuse_total"), 1.0);
    assert!(!text.contains("metrics-fb"), "no user names in labels");

    // Key age: with the test clock, as it moves and after a rotation.
    let age = series(&text, "passgate_signing_key_age_seconds");
    app.clock.advance(Duration::from_secs(86_400));
    let later = app.scrape().await;
    assert_eq!(series(&later, "passgate_signing_key_age_seconds") - age, 86_400.0);
    assert_eq!(series(&later, "passgate_signing_key_rotation_seconds"), 90.0 * 86_400.0);
    app.core.keys.rotate(app.clock.now_ms()).await.unwrap();
    // The new key signs once it has been published for the JWKS max-age.
    let wait = passgate::service::keys::JWKS_MAX_AGE;
    app.clock.advance(wait);
    let rotated = app.scrape().await;
    assert_eq!(series(&rotated, "passgate_signing_key_age_seconds"), wait.as_secs_f64());

    // The latency histogram's largest finite bucket is the deadline.
    assert_eq!(series(&text, "passgate_request_timeout_seconds"), 45.0);
    assert_eq!(largest_finite_bucket(&text), 45.0);

    // The process's own series.
    assert!(series(&text, "process_resident_memory_bytes") > 1e6);
    assert!(series(&text, "process_open_fds") > 3.0);
    let started = series(&text, "process_start_time_seconds");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    assert!(started > 1e9 && started <= now.as_secs_f64(), "{started}");
    assert!(text.contains("\nprocess_cpu_seconds_total "));
}

/// The largest `le` of the request-duration histogram below +Inf.
fn largest_finite_bucket(text: &str) -> f64 {
    text.lines()
        .filter(|line| line.starts_with("passgate_http_request_duration_seconds_bucket{"))
        .filter_map(|line| line.split("le=\"").nth(1)?.split('"').next()?.parse::<f64>().ok())
        .filter(|le| le.is_finite())
        .fold(0.0, f64::max)
}

#[tokio::test]
async fn the_default_deadline_tops_the_latency_buckets() {
    let app = spawn_app_configured(Db::Sqlite, &[]).await;
    app.get("/healthz", None).await;
    let text = app.scrape().await;
    let deadline = series(&text, "passgate_request_timeout_seconds");
    assert_eq!(deadline, 30.0);
    assert!(largest_finite_bucket(&text) >= deadline);
    assert_eq!(series(&text, "passgate_signing_key_rotation_seconds"), 0.0, "rotation off");
}

/// An SMTP server that turns every client away at the greeting (RFC 5321
/// §3.1: 554), for the life of the test process.
fn refusing_smtp_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let _ = stream.write_all(b"554 5.3.2 no mail accepted here\r\n");
                let mut reader = BufReader::new(stream.try_clone()?);
                let mut line = String::new();
                while reader.read_line(&mut line)? > 0 {
                    let reply: &[u8] = if line.to_ascii_uppercase().starts_with("QUIT") {
                        b"221 bye\r\n"
                    } else {
                        b"503 5.5.1 no service\r\n"
                    };
                    stream.write_all(reply)?;
                    line.clear();
                }
                Ok::<(), std::io::Error>(())
            });
        }
    });
    port
}

async fn failed_mail_is_counted_by_kind(db: Db) {
    // An account with a verified address, made while mail works.
    let app = spawn_app_configured(db, &[]).await;
    let account = app.fallback_account("metrics-mail").await;
    let address = format!("metrics-mail-{}@example.test", db_tag(&app));
    verified_email(&app, &account.access_token, &address).await;
    // A node on the same database whose mail server refuses everything.
    let port = refusing_smtp_port().to_string();
    let node =
        spawn_app_with(app.db_share(), &[&app.origin], &[("PASSGATE__SMTP__PORT", &port)]).await;
    let failures = |text: &str, kind: &str| {
        series(text, &format!(r#"passgate_mail_failures_total{{kind="{kind}"}}"#))
    };
    let before = node.scrape().await;
    for kind in ["code", "notice", "enrolment"] {
        assert!(before.contains(&format!("passgate_mail_failures_total{{kind=\"{kind}\"}} 0")));
    }

    // A mailed sign-in code: 503, and counted.
    let mfa = node.mfa_token("metrics-mail", PASSWORD).await;
    let sent = node.post("/v1/login/mfa/email/send", &json!({"mfa_token": mfa})).await;
    assert_problem(sent, 503, "unavailable").await;
    assert_eq!(failures(&node.scrape().await, "code"), 1.0);

    // A notice of a change, sent in the background.
    let mut passkey = account.passkey;
    let signed_in: Value = node.login(&mut passkey, None).await.json().await.unwrap();
    let bearer = signed_in["access_token"].as_str().unwrap();
    let body = json!({"password": "another long passphrase", "current_password": PASSWORD});
    let changed = node.put_bearer("/v1/me/password", bearer, &body).await;
    assert_eq!(changed.status(), StatusCode::NO_CONTENT);
    let mut counted = 0.0;
    for _ in 0..50 {
        counted = failures(&node.scrape().await, "notice");
        if counted > 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(counted, 1.0, "the failed notice is counted once");

    // An admin's device reset: the code is shown to the admin instead.
    let (_, admin_bearer) = admin(&node, "metrics-mail-admin").await;
    let id = account_id(&node, &admin_bearer, "metrics-mail").await;
    let path = format!("/v1/admin/users/{id}/reset-devices");
    let reset = node.post_bearer(&path, &admin_bearer, &json!({"reason": "lost"})).await;
    assert_eq!(reset.status(), StatusCode::OK);
    let reset: Value = reset.json().await.unwrap();
    assert!(reset["enrolment_code"].is_string() && reset["enrolment_code_sent_to"].is_null());
    assert_eq!(failures(&node.scrape().await, "enrolment"), 1.0);
    // The node whose mail works counted nothing.
    let good = app.scrape().await;
    assert!(["code", "notice", "enrolment"].iter().all(|kind| failures(&good, kind) == 0.0));
}

async fn account_id(app: &TestApp, bearer: &str, username: &str) -> String {
    let found = app.get(&format!("/v1/admin/users?q={username}"), Some(bearer)).await;
    let found: Value = found.json().await.unwrap();
    let users = found["users"].as_array().expect("a user list");
    let user = users.iter().find(|u| u["username"] == username).expect("the account");
    user["user_id"].as_str().unwrap().to_owned()
}

/// Metric names in PromQL text: the identifiers that name our series.
fn metric_names(promql: &str, into: &mut BTreeSet<String>) {
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    for word in promql.split(|c: char| !is_name(c)) {
        if word.starts_with("passgate_") || word.starts_with("process_") {
            into.insert(word.to_owned());
        }
    }
}

fn exprs(value: &Value, into: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("expr", Value::String(expr)) => into.push(expr.clone()),
                    _ => exprs(value, into),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| exprs(item, into)),
        _ => {}
    }
}

/// The dashboard and the alert rules cannot drift from the code: every
/// series they name is on /metrics once the server has seen some traffic.
#[tokio::test]
async fn the_dashboard_and_the_alert_rules_name_only_exposed_series() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let dashboard = std::fs::read_to_string(root.join("deploy/grafana/passgate.json")).unwrap();
    let dashboard: Value = serde_json::from_str(&dashboard).expect("the dashboard is JSON");
    let panels = dashboard["panels"].as_array().expect("panels");
    let mut dashboard_exprs = Vec::new();
    for panel in panels.iter().filter(|p| p["type"] != "row") {
        let mut found = Vec::new();
        exprs(&panel["targets"], &mut found);
        assert!(!found.is_empty(), "panel {} has a query", panel["title"]);
        dashboard_exprs.extend(found);
    }
    let mut dashboard_names = BTreeSet::new();
    dashboard_exprs.iter().for_each(|expr| metric_names(expr, &mut dashboard_names));
    assert!(dashboard_names.len() >= 15, "{dashboard_names:?}");
    // The rules file is read whole: its annotations name series too.
    let rules = std::fs::read_to_string(root.join("deploy/prometheus/alerts.yml")).unwrap();
    let mut rule_names = BTreeSet::new();
    metric_names(&rules, &mut rule_names);
    assert!(rule_names.len() >= 6, "{rule_names:?}");

    let app = spawn_app_configured(Db::Sqlite, &[]).await;
    let mut passkey = app.authenticator();
    app.register(&mut passkey, "drift").await;
    assert_eq!(app.login(&mut passkey, None).await.status(), StatusCode::OK);
    app.get("/healthz", None).await;
    let text = app.scrape().await;
    let exposed: BTreeSet<&str> = text
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.split(['{', ' ']).next())
        .collect();
    for (file, names) in [("grafana/passgate.json", dashboard_names), ("alerts.yml", rule_names)] {
        let missing: Vec<_> = names.iter().filter(|n| !exposed.contains(n.as_str())).collect();
        assert!(missing.is_empty(), "named in {file} but not on /metrics: {missing:?}");
    }
}
