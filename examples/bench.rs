//! A rerunnable load benchmark for passgate's passkey ceremonies.
//!
//! It starts the release server (`target/release/passgate`) as a child
//! process on a loopback port, optionally pinned to one core with taskset,
//! registers users with the test suite's software authenticator, then runs
//! username-first sign-ins (start + finish, JWT included) at several
//! concurrency levels, then fallback sign-ins (password + TOTP, at the
//! default OWASP argon2id cost), and passkey sign-ins again while a flood
//! of password attempts keeps the hashing pool saturated. It reports
//! throughput, latency percentiles, and the
//! server's CPU time per operation read from /proc (plus PostgreSQL's own
//! CPU when that is the store), so results are per server core.
//!
//!   cargo build --release && cargo run --release --example bench -- \
//!       [--db sqlite|postgres] [--users 256] [--logins 4000] \
//!       [--concurrency 1,8,32] [--server-cpu 0] [--client-cpu 1]
//!
//! Nothing is mocked: real HTTP on loopback, real SQLite file or a fresh
//! PostgreSQL database on 127.0.0.1:5432, real signatures.

#[path = "../tests/api/authenticator.rs"]
mod authenticator;
#[path = "../tests/api/otp.rs"]
mod otp;

mod common;

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use authenticator::SoftAuthenticator;
use common::{PASSWORD, Server, cpu_seconds, now_secs, percentile, postgres_cpu_seconds, run};
use serde_json::{Value, json};
use tokio::sync::Mutex;

struct Options {
    db: String,
    users: usize,
    logins: usize,
    concurrency: Vec<usize>,
    server_cpu: Option<String>,
    client_cpu: Option<String>,
    /// Skip the password phases (setup, logins, flood).
    passwords: bool,
    /// Skip the payment step-up phase (to profile sign-ins alone).
    stepups: bool,
    /// Users written straight into the database before the run, so the
    /// sign-ins run against a large table (0: none).
    seed_users: usize,
    /// The server binary (to compare builds).
    server: String,
    /// A command the server runs under (a profiler, say).
    wrapper: Vec<String>,
    /// The server's `sslmode` to PostgreSQL: `prefer` (sqlx's default:
    /// TLS when the server offers it) or `disable`.
    pg_sslmode: String,
}

fn options() -> Options {
    let mut o = Options {
        db: "sqlite".into(),
        users: 256,
        logins: 4000,
        concurrency: vec![1, 8, 32],
        server_cpu: Some("0".into()),
        client_cpu: Some("1".into()),
        passwords: true,
        stepups: true,
        seed_users: 0,
        server: concat!(env!("CARGO_MANIFEST_DIR"), "/target/release/passgate").into(),
        wrapper: Vec::new(),
        pg_sslmode: "prefer".into(),
    };
    for (flag, value) in common::flags() {
        let value = &value;
        match flag.as_str() {
            "--db" => o.db = value.clone(),
            "--users" => o.users = value.parse().expect("--users N"),
            "--logins" => o.logins = value.parse().expect("--logins N"),
            "--concurrency" => {
                o.concurrency =
                    value.split(',').map(|c| c.parse().expect("--concurrency 1,8,32")).collect()
            }
            "--server-cpu" => o.server_cpu = (value != "none").then(|| value.clone()),
            "--client-cpu" => o.client_cpu = (value != "none").then(|| value.clone()),
            "--passwords" => o.passwords = value != "no",
            "--stepups" => o.stepups = value != "no",
            "--server" => o.server = value.clone(),
            "--seed-users" => o.seed_users = value.parse().expect("--seed-users N"),
            "--wrapper" => o.wrapper = value.split_whitespace().map(str::to_owned).collect(),
            "--pg-sslmode" => o.pg_sslmode = value.clone(),
            other => panic!("unknown flag {other}"),
        }
    }
    o
}

fn start_server(url: &str, port: u16, o: &Options) -> Server {
    let binary = o.server.as_str();
    assert!(std::path::Path::new(binary).exists(), "build the server first: cargo build --release");
    let mut argv: Vec<&str> = Vec::new();
    if let Some(cpu) = &o.server_cpu {
        argv.extend(["taskset", "-c", cpu]);
    }
    argv.extend(o.wrapper.iter().map(String::as_str));
    argv.push(binary);
    // The benchmark is one client IP and floods on purpose.
    let unlimited = "100000000";
    let env = [
        ("PASSGATE__LIMITS__IP_REQUESTS_PER_MINUTE", unlimited),
        ("PASSGATE__LIMITS__ACCOUNT_REQUESTS_PER_MINUTE", unlimited),
    ];
    common::start_server(&argv, port, url, &env)
}

/// Writes `count` users, each with one passkey row of a realistic size,
/// in the database's own SQL (a recursive CTE on SQLite, generate_series
/// on PostgreSQL), after the server has made the schema. The rows are
/// never signed in with; they are there so that every lookup the sign-ins
/// make has a large table under it.
async fn seed(url: &str, count: usize) {
    // The size of a stored webauthn-rs passkey, so pages hold as many
    // rows as in real use.
    let filler = "x".repeat(700);
    let (numbers, hex8, hex12) = if url.starts_with("sqlite:") {
        (
            "with recursive n(i) as (select 1 union all select i + 1 from n where i < $1)",
            "printf('%08x', i)",
            "printf('%012x', i)",
        )
    } else {
        (
            "with n(i) as (select generate_series(1, $1::bigint))",
            "lpad(to_hex(i), 8, '0')",
            "lpad(to_hex(i), 12, '0')",
        )
    };
    let users = format!(
        "{numbers} insert into app_user (user_id, username, display_name, roles, created_at) \
         select {hex8} || '-0000-7000-8000-' || {hex12}, 'seed-user-' || i, 'Seed user ' || i, '', 0 \
         from n"
    );
    let credentials = format!(
        "{numbers} insert into credential (credential_id, device_id, user_id, name, passkey, \
         sign_count, backup_eligible, backup_state, aaguid, transports, created_at) \
         select 'seed-credential-' || {hex12}, {hex8} || '-0000-7000-9000-' || {hex12}, \
         {hex8} || '-0000-7000-8000-' || {hex12}, 'Passkey', $2, 0, true, true, \
         '00000000-0000-0000-0000-000000000000', '[\"internal\"]', 0 from n"
    );
    let count = count as i64;
    // One sequence of statements for either engine's pool type.
    macro_rules! run {
        ($pool:expr, $finish:expr) => {{
            let pool = $pool.await.expect("open the bench database");
            sqlx::query(sqlx::AssertSqlSafe(users))
                .bind(count)
                .execute(&pool)
                .await
                .expect("seed users");
            sqlx::query(sqlx::AssertSqlSafe(credentials))
                .bind(count)
                .bind(&filler)
                .execute(&pool)
                .await
                .expect("seed credentials");
            for sql in $finish {
                sqlx::query(sql).execute(&pool).await.expect(sql);
            }
        }};
    }
    if url.starts_with("sqlite:") {
        // The write-ahead log folded into the database file, as it would
        // be long after the users signed up. No ANALYZE: passgate never
        // runs it, and with the bundled SQLite's STAT4 statistics every
        // statement is planned again each time it runs (BENCHMARKS.md).
        run!(sqlx::SqlitePool::connect(url), ["pragma wal_checkpoint(truncate)"])
    } else {
        run!(sqlx::PgPool::connect(url), ["vacuum analyze", "checkpoint"])
    }
}

async fn post(client: &reqwest::Client, url: String, bearer: Option<&str>, body: Value) -> Value {
    let mut request = client.post(url).json(&body);
    if let Some(token) = bearer {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("request");
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    assert!(status.is_success(), "{status}: {body}");
    body
}

/// What every phase shares: the users, the HTTP client, the server.
struct Bench {
    users: Vec<Arc<Mutex<User>>>,
    client: reqwest::Client,
    base: String,
    pid: u32,
    db: String,
}

impl Bench {
    /// Runs `total` operations with `in_flight` workers, measuring wall
    /// time, latencies and the server's (and PostgreSQL's) CPU, and prints
    /// one table row.
    async fn phase<F, Fut>(&self, what: &str, in_flight: usize, total: usize, op: F)
    where
        F: Fn(reqwest::Client, String, Arc<Mutex<User>>) -> Fut + Clone + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send,
    {
        let (cpu0, pg0) = (cpu_seconds(self.pid), postgres_cpu_seconds());
        let started = Instant::now();
        let (client, base) = (self.client.clone(), self.base.clone());
        let mut latencies =
            run(&self.users, total, in_flight, move |user| op(client.clone(), base.clone(), user))
                .await;
        let secs = started.elapsed().as_secs_f64();
        latencies.sort();
        let cpu = cpu_seconds(self.pid) - cpu0;
        report(
            what,
            in_flight,
            total,
            secs,
            &latencies,
            cpu,
            postgres_cpu_seconds() - pg0,
            &self.db,
        );
    }
}

struct User {
    name: String,
    authenticator: SoftAuthenticator,
    /// From registration; step-ups run on it.
    access_token: String,
    /// The TOTP secret, once the user has a password and TOTP.
    totp_secret: Vec<u8>,
}

#[tokio::main]
async fn main() {
    let o = options();
    if let Some(cpu) = &o.client_cpu {
        // Keep the load generator off the server's core: every thread of
        // it (`-a`), since the runtime's workers are already running here.
        let _ = Command::new("taskset")
            .args(["-a", "-p", "-c", cpu, &std::process::id().to_string()])
            .output();
    }
    let scratch = tempfile::tempdir().expect("scratch dir");
    let url = common::database_url(&o.db, scratch.path(), "bench", &o.pg_sslmode).await;
    let port = common::free_port();
    let started = Instant::now();
    let server = start_server(&url, port, &o);
    let client = reqwest::Client::builder().pool_max_idle_per_host(64).build().unwrap();
    let patience = if o.wrapper.is_empty() { 20 } else { 300 };
    common::wait_until_ready(&client, &server.base, Duration::from_secs(patience)).await;
    let ready_ms = started.elapsed().as_secs_f64() * 1000.0;
    let pid = server.child.id();
    if o.seed_users > 0 {
        let started = Instant::now();
        seed(&url, o.seed_users).await;
        println!("seeded {} users in {:.1} s", o.seed_users, started.elapsed().as_secs_f64());
    }

    let users: Vec<Arc<Mutex<User>>> = (0..o.users)
        .map(|i| {
            Arc::new(Mutex::new(User {
                name: format!("bench-user-{i}"),
                authenticator: SoftAuthenticator::new(&server.origin),
                access_token: String::new(),
                totp_secret: Vec::new(),
            }))
        })
        .collect();
    let bench =
        Bench { users, client: client.clone(), base: server.base.clone(), pid, db: o.db.clone() };

    println!(
        "passgate benchmark: store {}, server cpu {:?}, client cpu {:?}",
        o.db, o.server_cpu, o.client_cpu
    );
    println!("start to ready: {ready_ms:.0} ms");
    println!();
    println!(
        "| operation | in flight | ops | ops/s | p50 ms | p95 ms | p99 ms | server CPU ms/op | +PostgreSQL CPU ms/op |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");

    bench
        .phase("registration", 8, o.users, |client, base, user| async move {
            let mut user = user.lock().await;
            let body = json!({"username": user.name});
            let started = post(&client, format!("{base}/v1/register/start"), None, body).await;
            let credential = user.authenticator.register(&started["publicKey"]);
            let body = json!({"ceremony_id": started["ceremony_id"], "credential": credential});
            let tokens = post(&client, format!("{base}/v1/register/finish"), None, body).await;
            user.access_token = tokens["access_token"].as_str().unwrap_or_default().to_owned();
        })
        .await;
    if o.passwords {
        // A password and TOTP for everyone, while the registration tokens are
        // fresh (setting a first password needs a recent passkey sign-in).
        bench
            .phase("password + TOTP setup", 8, o.users, |client, base, user| async move {
                let mut user = user.lock().await;
                let bearer = Some(user.access_token.clone());
                let body = json!({"password": PASSWORD});
                let url = format!("{base}/v1/me/password");
                let response =
                    client.put(url).bearer_auth(&user.access_token).json(&body).send().await;
                assert_eq!(response.expect("request").status().as_u16(), 204);
                let started =
                    post(&client, format!("{base}/v1/me/totp/start"), bearer.as_deref(), json!({}))
                        .await;
                user.totp_secret =
                    otp::base32_decode(started["secret"].as_str().unwrap_or_default());
                let code = otp::totp_at(&user.totp_secret, now_secs());
                let url = format!("{base}/v1/me/totp/finish");
                post(&client, url, bearer.as_deref(), json!({"code": code})).await;
            })
            .await;
    }
    let passkey_login = |client: reqwest::Client, base: String, user: Arc<Mutex<User>>| async move {
        let mut user = user.lock().await;
        let body = json!({"username": user.name});
        let started = post(&client, format!("{base}/v1/login/start"), None, body).await;
        let assertion = user.authenticator.login(&started["publicKey"]);
        let body = json!({"ceremony_id": started["ceremony_id"], "credential": assertion});
        let tokens = post(&client, format!("{base}/v1/login/finish"), None, body).await;
        assert!(tokens["access_token"].is_string());
    };
    for &in_flight in &o.concurrency {
        bench.phase("passkey login", in_flight, o.logins, passkey_login).await;
    }
    if o.passwords {
        // Each TOTP step is accepted once per user, so every user signs in once,
        // with the code of the next step (the server allows one step of skew).
        bench
            .phase("password + TOTP login", 8, o.users, |client, base, user| async move {
                let user = user.lock().await;
                let body = json!({"username": user.name, "password": PASSWORD});
                let challenge =
                    post(&client, format!("{base}/v1/login/password"), None, body).await;
                let code = otp::totp_at(&user.totp_secret, now_secs() + 30);
                let body = json!({"mfa_token": challenge["mfa_token"], "code": code});
                let tokens = post(&client, format!("{base}/v1/login/mfa/totp"), None, body).await;
                assert!(tokens["access_token"].is_string());
            })
            .await;
        // Passkey sign-ins while 32 clients keep sending wrong passwords: the
        // hashing pool is saturated the whole time. Each attempt names an
        // account of its own that does not exist (hashed all the same, so
        // that it cannot be told from a real one), so that no name reaches
        // the lockout threshold, which may be at most 100.
        let flooding = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let flood: Vec<_> = (0..32)
            .map(|n| {
                let (client, base, flooding) =
                    (client.clone(), server.base.clone(), flooding.clone());
                tokio::spawn(async move {
                    let mut attempts = 0u64;
                    while flooding.load(std::sync::atomic::Ordering::Relaxed) {
                        let username = format!("bench-flood-{n}-{attempts}");
                        let body = json!({"username": username, "password": "wrong guess"});
                        let url = format!("{base}/v1/login/password");
                        if let Ok(response) = client.post(url).json(&body).send().await {
                            let _ = response.bytes().await;
                        }
                        attempts += 1;
                    }
                    attempts
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let flood_started = Instant::now();
        bench.phase("passkey login, password flood", 8, o.logins, passkey_login).await;
        flooding.store(false, std::sync::atomic::Ordering::Relaxed);
        let mut attempts = 0;
        for task in flood {
            attempts += task.await.unwrap_or(0);
        }
        println!(
            "| (the flood: wrong passwords) | 32 | {attempts} | {:.0} | | | | | |",
            attempts as f64 / flood_started.elapsed().as_secs_f64()
        );
    }
    // Start + finish with the user's bearer token, authorization token signed.
    if o.stepups {
        bench
            .phase("payment step-up", 8, o.logins, |client, base, user| async move {
                let mut user = user.lock().await;
                let bearer = Some(user.access_token.clone());
                let transaction =
                    json!({"amount": "12.50", "currency": "EUR", "payee": "Coffee Shop"});
                let body = json!({"transaction": transaction});
                let started =
                    post(&client, format!("{base}/v1/stepup/start"), bearer.as_deref(), body).await;
                let assertion = user.authenticator.login(&started["publicKey"]);
                let body = json!({"ceremony_id": started["ceremony_id"], "credential": assertion});
                let approved =
                    post(&client, format!("{base}/v1/stepup/finish"), bearer.as_deref(), body)
                        .await;
                assert!(approved["authorization_token"].is_string());
            })
            .await;
    }

    let rss_kib = common::status_line(pid, "VmRSS:");
    println!();
    println!("server {rss_kib} after the run");
    drop(server);
    if o.db == "postgres" {
        common::drop_database(&url).await;
    }
}

#[allow(clippy::too_many_arguments)]
fn report(
    what: &str,
    in_flight: usize,
    ops: usize,
    secs: f64,
    sorted: &[Duration],
    cpu: f64,
    pg: f64,
    db: &str,
) {
    let pg = if db == "postgres" {
        format!("{:.3}", (cpu + pg) / ops as f64 * 1000.0)
    } else {
        "-".into()
    };
    println!(
        "| {what} | {in_flight} | {ops} | {:.0} | {:.2} | {:.2} | {:.2} | {:.3} | {pg} |",
        ops as f64 / secs,
        percentile(sorted, 0.50),
        percentile(sorted, 0.95),
        percentile(sorted, 0.99),
        cpu / ops as f64 * 1000.0,
    );
}
