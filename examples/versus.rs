//! passgate beside the webauthn-rs actix tutorial server ("the demo"),
//! measured in the same run on the same machine (issue 21). The machines
//! this project runs on differ by 2x from one session to the next, so the
//! targets are ratios: passgate's figure over the demo's, with both
//! measured the same way, interleaved, round after round.
//!
//! Each round starts the demo, then passgate (a fresh SQLite file, or a
//! fresh PostgreSQL database), each pinned to one core with taskset while
//! the load generator runs on the other. On each server it registers
//! `--users` users with the test suite's software authenticator (start +
//! finish), then signs them in (start + finish) `--logins` times at each
//! level of `--concurrency`. It reads the server's CPU time from /proc
//! before and after each phase (and, on PostgreSQL, the CPU of every
//! PostgreSQL process, which passgate's figure then includes), and the
//! latency of each operation. The store's part of passgate's CPU (its
//! SQLite connection threads, or PostgreSQL) is also read apart, so that
//! a ratio can leave it out: the demo has no store. On PostgreSQL it
//! also reads how many bytes of write-ahead log each operation wrote, a
//! figure that does not move with the machine's speed.
//!
//! The demo keeps everything in memory, in one mutex, and holds each
//! ceremony's state in a server-side session named by a cookie; passgate
//! writes every sign-in to its database (the used ceremony, the counter,
//! the session, the refresh token, the audit row) and signs a JWT.
//!
//! Build both and run with `bench/versus` (it describes the recipe), or:
//!
//!   cargo run --release --example versus -- --demo PATH --demo-dir DIR \
//!       [--db sqlite|postgres] [--users 256] [--logins 4000] [--rounds 3] \
//!       [--concurrency 1,8,32] [--server-cpu 0] [--client-cpu 1] [--demo-log warn]

#[path = "../tests/api/authenticator.rs"]
mod authenticator;

mod common;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use authenticator::SoftAuthenticator;
use common::{
    Server, context_switches, cpu_split, percentile, postgres_cpu_seconds, postgres_log_bytes, run,
    threads_cpu_seconds,
};
use serde_json::{Value, json};
use tokio::sync::Mutex;

/// The name sqlx-sqlite gives its connection threads, as the kernel keeps
/// it (15 bytes).
const SQLITE_THREADS: &str = "sqlx-sqlite-wor";

/// Registrations and sign-ins before the measured phases (see `measure`).
const WARM_UP: usize = 16;

/// The demo's address and origin are fixed in its source.
const DEMO_PORT: u16 = 8080;
const DEMO_ORIGIN: &str = "http://localhost:8080";

struct Options {
    demo: String,
    demo_dir: String,
    passgate: String,
    db: String,
    users: usize,
    logins: usize,
    rounds: usize,
    concurrency: Vec<usize>,
    server_cpu: Option<String>,
    client_cpu: Option<String>,
    /// RUST_LOG for the demo: `warn` by default, as passgate runs here
    /// (`log.level = warn`); `info` is the demo's own default, which logs
    /// every request.
    demo_log: String,
    /// Count each server's instructions under callgrind (see `Callgrind`).
    instructions: bool,
}

fn options() -> Options {
    let mut o = Options {
        demo: String::new(),
        demo_dir: String::new(),
        passgate: concat!(env!("CARGO_MANIFEST_DIR"), "/target/release/passgate").into(),
        db: "sqlite".into(),
        users: 256,
        logins: 4000,
        rounds: 3,
        concurrency: vec![1, 8, 32],
        server_cpu: Some("0".into()),
        client_cpu: Some("1".into()),
        demo_log: "warn".into(),
        instructions: false,
    };
    for (flag, value) in common::flags() {
        match flag.as_str() {
            "--demo" => o.demo = value,
            "--demo-dir" => o.demo_dir = value,
            "--passgate" => o.passgate = value,
            "--db" => o.db = value,
            "--users" => o.users = value.parse().expect("--users N"),
            "--logins" => o.logins = value.parse().expect("--logins N"),
            "--rounds" => o.rounds = value.parse().expect("--rounds N"),
            "--concurrency" => {
                o.concurrency =
                    value.split(',').map(|c| c.parse().expect("--concurrency 1,8,32")).collect()
            }
            "--server-cpu" => o.server_cpu = (value != "none").then_some(value),
            "--client-cpu" => o.client_cpu = (value != "none").then_some(value),
            "--demo-log" => o.demo_log = value,
            "--instructions" => o.instructions = value == "yes",
            other => panic!("unknown flag {other}"),
        }
    }
    assert!(!o.demo.is_empty() && !o.demo_dir.is_empty(), "--demo PATH and --demo-dir DIR");
    o
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Side {
    Demo,
    Passgate,
}

impl Side {
    fn name(self) -> &'static str {
        match self {
            Side::Demo => "demo",
            Side::Passgate => "passgate",
        }
    }
}

struct User {
    name: String,
    authenticator: SoftAuthenticator,
    /// The demo's session cookie (`webauthnrs=...`), as last set.
    cookie: Option<String>,
}

/// One phase's figures.
#[derive(Clone, Copy, Debug)]
struct Figures {
    /// Server CPU (plus PostgreSQL's, for passgate on PostgreSQL) per
    /// operation, in ms.
    cpu_ms: f64,
    /// The part of the server's own CPU that the kernel ran for it
    /// (system calls: the network, the database file, thread hand-overs).
    system_ms: f64,
    /// The part of `cpu_ms` that the store spent: sqlx-sqlite's connection
    /// threads (SQLite itself, its log writes), or PostgreSQL's processes.
    /// The rest is the work the demo also does, in the same role (HTTP,
    /// JSON, WebAuthn), plus passgate's own (its JWT, risk rules, rows).
    store_ms: f64,
    /// PostgreSQL's write-ahead log written per operation, in bytes (0 on
    /// SQLite and for the demo).
    log_bytes: f64,
    /// The server's context switches per operation.
    switches: f64,
    p50_ms: f64,
    p99_ms: f64,
    ops_per_s: f64,
    /// User-space instructions per operation, all the server's threads
    /// (`--instructions yes`; else 0).
    instructions: f64,
}

/// `--instructions yes`: each server runs under valgrind's callgrind, and
/// a phase's instructions are counted between `callgrind_control --zero`
/// and `--dump`. A count is the same from one run to the next and from
/// one machine to another (for the same binaries and CPU features), where
/// CPU time moves by a third; it leaves out the kernel's work (system
/// calls, context switches, the page cache), which the CPU time shows.
/// valgrind runs the program about fifty times slower: use fewer sign-ins.
struct Callgrind {
    dir: tempfile::TempDir,
}

impl Callgrind {
    fn new() -> Callgrind {
        Callgrind { dir: tempfile::tempdir().expect("callgrind scratch dir") }
    }

    /// The wrapper's argv, before the program's.
    fn wrapper(&self) -> Vec<String> {
        let out = self.dir.path().join("cg.%p");
        ["valgrind", "--tool=callgrind", "--quiet"]
            .into_iter()
            .map(str::to_owned)
            .chain([format!("--callgrind-out-file={}", out.display())])
            .collect()
    }

    fn control(pid: u32, what: &str) {
        let done = Command::new("callgrind_control")
            .args([what, &pid.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("callgrind_control (valgrind)");
        assert!(done.success(), "callgrind_control {what} {pid} failed");
    }

    /// Instructions since the last call (or the start), from a new dump.
    fn count(&self, pid: u32) -> u64 {
        Callgrind::control(pid, "--dump");
        let prefix = format!("cg.{pid}.");
        let newest = std::fs::read_dir(self.dir.path())
            .expect("callgrind dumps")
            .filter_map(|entry| {
                let name = entry.ok()?.file_name().into_string().ok()?;
                let n: u32 = name.strip_prefix(&prefix)?.parse().ok()?;
                Some((n, name))
            })
            .max()
            .expect("a callgrind dump")
            .1;
        let text = std::fs::read_to_string(self.dir.path().join(newest)).expect("dump");
        let summary = text.lines().find_map(|line| line.strip_prefix("summary: "));
        let count = summary.and_then(|n| n.trim().parse().ok()).expect("a summary line");
        Callgrind::control(pid, "--zero");
        count
    }
}

/// A POST that must succeed; keeps the demo's session cookie.
async fn post(
    client: &reqwest::Client,
    url: String,
    user: &mut User,
    body: Option<Value>,
) -> Value {
    let mut request = client.post(url);
    if let Some(cookie) = &user.cookie {
        request = request.header("cookie", cookie);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("request");
    if let Some(set) = response.headers().get("set-cookie").and_then(|v| v.to_str().ok()) {
        user.cookie = set.split(';').next().map(str::to_owned);
    }
    let status = response.status();
    let bytes = response.bytes().await.unwrap_or_default();
    assert!(status.is_success(), "{status}: {}", String::from_utf8_lossy(&bytes));
    serde_json::from_slice(&bytes).unwrap_or(Value::Null)
}

async fn register(side: Side, client: reqwest::Client, base: String, user: Arc<Mutex<User>>) {
    let mut user = user.lock().await;
    match side {
        Side::Demo => {
            let url = format!("{base}/register_start/{}", user.name);
            let started = post(&client, url, &mut user, None).await;
            let credential = user.authenticator.register(&started["publicKey"]);
            post(&client, format!("{base}/register_finish"), &mut user, Some(credential)).await;
        }
        Side::Passgate => {
            let body = json!({"username": user.name});
            let started =
                post(&client, format!("{base}/v1/register/start"), &mut user, Some(body)).await;
            let credential = user.authenticator.register(&started["publicKey"]);
            let body = json!({"ceremony_id": started["ceremony_id"], "credential": credential});
            let tokens =
                post(&client, format!("{base}/v1/register/finish"), &mut user, Some(body)).await;
            assert!(tokens["access_token"].is_string());
        }
    }
}

async fn sign_in(side: Side, client: reqwest::Client, base: String, user: Arc<Mutex<User>>) {
    let mut user = user.lock().await;
    match side {
        Side::Demo => {
            let url = format!("{base}/login_start/{}", user.name);
            let started = post(&client, url, &mut user, None).await;
            let assertion = user.authenticator.login(&started["publicKey"]);
            post(&client, format!("{base}/login_finish"), &mut user, Some(assertion)).await;
        }
        Side::Passgate => {
            let body = json!({"username": user.name});
            let started =
                post(&client, format!("{base}/v1/login/start"), &mut user, Some(body)).await;
            let assertion = user.authenticator.login(&started["publicKey"]);
            let body = json!({"ceremony_id": started["ceremony_id"], "credential": assertion});
            let tokens =
                post(&client, format!("{base}/v1/login/finish"), &mut user, Some(body)).await;
            assert!(tokens["access_token"].is_string());
        }
    }
}

/// Runs one phase against the server `pid` and measures it.
async fn phase<F, Fut>(
    users: &[Arc<Mutex<User>>],
    pid: u32,
    with_postgres: bool,
    total: usize,
    in_flight: usize,
    callgrind: Option<&Callgrind>,
    op: F,
) -> Figures
where
    F: Fn(Arc<Mutex<User>>) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let pg = || if with_postgres { postgres_cpu_seconds() } else { 0.0 };
    if callgrind.is_some() {
        Callgrind::control(pid, "--zero");
    }
    let sqlite_threads = || threads_cpu_seconds(pid, SQLITE_THREADS);
    let (cpu0, pg0, switches0) = (cpu_split(pid), pg(), context_switches(pid));
    let sqlite0 = sqlite_threads();
    let log0 = if with_postgres { postgres_log_bytes().await } else { 0 };
    let started = Instant::now();
    let mut latencies = run(users, total, in_flight, op).await;
    let secs = started.elapsed().as_secs_f64();
    let cpu1 = cpu_split(pid);
    let system = cpu1.1 - cpu0.1;
    let postgres = pg() - pg0;
    let cpu = cpu1.0 - cpu0.0 + system + postgres;
    let store = postgres + (sqlite_threads() - sqlite0);
    let log = if with_postgres { postgres_log_bytes().await - log0 } else { 0 };
    let switches = context_switches(pid).saturating_sub(switches0);
    let instructions = callgrind.map_or(0, |callgrind| callgrind.count(pid));
    latencies.sort();
    Figures {
        cpu_ms: cpu / total as f64 * 1000.0,
        system_ms: system / total as f64 * 1000.0,
        store_ms: store / total as f64 * 1000.0,
        log_bytes: log as f64 / total as f64,
        switches: switches as f64 / total as f64,
        p50_ms: percentile(&latencies, 0.50),
        p99_ms: percentile(&latencies, 0.99),
        ops_per_s: total as f64 / secs,
        instructions: instructions as f64 / total as f64,
    }
}

fn start_demo(o: &Options, callgrind: Option<&Callgrind>) -> Server {
    assert!(
        std::net::TcpListener::bind(("0.0.0.0", DEMO_PORT)).is_ok(),
        "port {DEMO_PORT} is taken: the demo listens there"
    );
    let wrapper = callgrind.map(Callgrind::wrapper).unwrap_or_default();
    let mut argv: Vec<&str> = Vec::new();
    if let Some(cpu) = &o.server_cpu {
        argv.extend(["taskset", "-c", cpu]);
    }
    argv.extend(wrapper.iter().map(String::as_str));
    argv.push(&o.demo);
    let mut command = Command::new(argv[0]);
    command
        .args(&argv[1..])
        .current_dir(&o.demo_dir)
        .env("RUST_LOG", &o.demo_log)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: prctl(2) only, between fork and exec; it allocates nothing.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut command, || {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    let child = command.spawn().expect("start the demo");
    Server { child, base: format!("http://127.0.0.1:{DEMO_PORT}"), origin: DEMO_ORIGIN.into() }
}

async fn wait_for_demo(client: &reqwest::Client, base: &str) {
    let started = Instant::now();
    while !client.get(format!("{base}/")).send().await.is_ok_and(|r| r.status().is_success()) {
        assert!(started.elapsed() < Duration::from_secs(60), "the demo did not start");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn start_passgate(o: &Options, url: &str, port: u16, callgrind: Option<&Callgrind>) -> Server {
    assert!(
        std::path::Path::new(&o.passgate).exists(),
        "build passgate first: cargo build --release"
    );
    let wrapper = callgrind.map(Callgrind::wrapper).unwrap_or_default();
    let mut argv: Vec<&str> = Vec::new();
    if let Some(cpu) = &o.server_cpu {
        argv.extend(["taskset", "-c", cpu]);
    }
    argv.extend(wrapper.iter().map(String::as_str));
    argv.push(&o.passgate);
    // One client address that signs in thousands of times a minute.
    let unlimited = "100000000";
    let env = [
        ("PASSGATE__LIMITS__IP_REQUESTS_PER_MINUTE", unlimited),
        ("PASSGATE__LIMITS__ACCOUNT_REQUESTS_PER_MINUTE", unlimited),
    ];
    common::start_server(&argv, port, url, &env)
}

/// One side's phases: registration at 8 in flight, then sign-ins at each
/// concurrency. Keys: ("registration", 8), ("sign-in", n).
async fn measure(
    side: Side,
    o: &Options,
    round: usize,
) -> BTreeMap<(&'static str, usize), Figures> {
    let client = reqwest::Client::builder().pool_max_idle_per_host(64).build().expect("client");
    let scratch = tempfile::tempdir().expect("scratch dir");
    let mut database = None;
    let callgrind = o.instructions.then(Callgrind::new);
    let callgrind = callgrind.as_ref();
    let server = match side {
        Side::Demo => {
            let server = start_demo(o, callgrind);
            wait_for_demo(&client, &server.base).await;
            server
        }
        Side::Passgate => {
            let url = common::database_url(&o.db, scratch.path(), "versus", "prefer").await;
            let server = start_passgate(o, &url, common::free_port(), callgrind);
            common::wait_until_ready(&client, &server.base, Duration::from_secs(60)).await;
            database = Some(url);
            server
        }
    };
    let pid = server.child.id();
    let with_postgres = side == Side::Passgate && o.db == "postgres";
    let users_named = |prefix: &str, count: usize| -> Vec<Arc<Mutex<User>>> {
        (0..count)
            .map(|i| {
                Arc::new(Mutex::new(User {
                    name: format!("{prefix}-{round}-{i}"),
                    authenticator: SoftAuthenticator::new(&server.origin),
                    cookie: None,
                }))
            })
            .collect()
    };
    // Unmeasured: what a server does once, at its first registration or
    // sign-in, stays out of the figures. aws-lc seeds its random numbers
    // from CPU jitter at the first one (the first token's signature): a
    // few milliseconds, and under callgrind 1.6 million instructions per
    // registration of a 256-user phase.
    let warm = users_named("warm-up", WARM_UP);
    let (c, b) = (client.clone(), server.base.clone());
    run(&warm, WARM_UP, 8, move |user| register(side, c.clone(), b.clone(), user)).await;
    let (c, b) = (client.clone(), server.base.clone());
    run(&warm, WARM_UP, 8, move |user| sign_in(side, c.clone(), b.clone(), user)).await;
    let users = users_named("versus", o.users);
    let mut figures = BTreeMap::new();
    let (c, b) = (client.clone(), server.base.clone());
    let op = move |user| register(side, c.clone(), b.clone(), user);
    let registered = phase(&users, pid, with_postgres, o.users, 8, callgrind, op).await;
    figures.insert(("registration", 8), registered);
    for &in_flight in &o.concurrency {
        let (c, b) = (client.clone(), server.base.clone());
        let op = move |user| sign_in(side, c.clone(), b.clone(), user);
        let measured = phase(&users, pid, with_postgres, o.logins, in_flight, callgrind, op).await;
        figures.insert(("sign-in", in_flight), measured);
    }
    drop(server);
    if let Some(url) = database.filter(|_| o.db == "postgres") {
        common::drop_database(&url).await;
    }
    figures
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

#[tokio::main]
async fn main() {
    let o = options();
    if let Some(cpu) = &o.client_cpu {
        let _ = Command::new("taskset")
            .args(["-a", "-p", "-c", cpu, &std::process::id().to_string()])
            .output();
    }
    println!(
        "passgate ({}) against the webauthn-rs actix tutorial, {} rounds, server cpu {:?}, \
         client cpu {:?}, demo RUST_LOG={}",
        o.db, o.rounds, o.server_cpu, o.client_cpu, o.demo_log
    );
    println!();
    println!(
        "| round | server | operation | in flight | ops/s | p50 ms | p99 ms | CPU ms/op \
         | of it system | of it the store | log bytes/op | switches/op | instructions/op |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    // (operation, in flight, side) -> one figure per round
    let mut all: BTreeMap<(&'static str, usize, Side), Vec<Figures>> = BTreeMap::new();
    for round in 0..o.rounds {
        // Alternate which goes first, so that a drift of the machine's
        // speed within a round favours neither.
        let order = if round % 2 == 0 {
            [Side::Demo, Side::Passgate]
        } else {
            [Side::Passgate, Side::Demo]
        };
        for side in order {
            for ((what, in_flight), f) in measure(side, &o, round).await {
                println!(
                    "| {round} | {} | {what} | {in_flight} | {:.0} | {:.2} | {:.2} | {:.3} | {:.3} \
                     | {:.3} | {:.0} | {:.1} | {:.0} |",
                    side.name(),
                    f.ops_per_s,
                    f.p50_ms,
                    f.p99_ms,
                    f.cpu_ms,
                    f.system_ms,
                    f.store_ms,
                    f.log_bytes,
                    f.switches,
                    f.instructions
                );
                all.entry((what, in_flight, side)).or_default().push(f);
            }
        }
    }
    println!();
    println!("Ratios, passgate over the demo: the median of the rounds' ratios.");
    println!();
    println!("| measure | in flight | ratio | target | per round |");
    println!("|---|---|---|---|---|");
    let cpu_target = |what: &str, in_flight: usize| match (what, o.db.as_str()) {
        ("registration", _) => 1.5,
        ("sign-in", "postgres") => 2.0,
        (_, _) if in_flight == 1 => 1.0,
        _ => 0.8,
    };
    let keys: Vec<(&'static str, usize)> =
        all.keys().filter(|k| k.2 == Side::Demo).map(|k| (k.0, k.1)).collect();
    for (what, in_flight) in keys {
        let (Some(demo), Some(ours)) =
            (all.get(&(what, in_flight, Side::Demo)), all.get(&(what, in_flight, Side::Passgate)))
        else {
            continue;
        };
        // One row: the median of the rounds' ratios of `measure`, passgate
        // over the demo, then each round's.
        let row = |label: &str, target: &str, measure: fn(&Figures) -> f64| {
            let ratios: Vec<f64> =
                ours.iter().zip(demo).map(|(p, d)| measure(p) / measure(d)).collect();
            let rounds: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
            let (ratio, rounds) = (median(ratios), rounds.join(", "));
            println!("| {what}, {label} | {in_flight} | {ratio:.2} | {target} | {rounds} |");
        };
        let name = if o.db == "postgres" { "CPU + PostgreSQL's" } else { "server CPU" };
        row(name, &format!("≤ {:.1}", cpu_target(what, in_flight)), |f| f.cpu_ms);
        // What the excess is made of: the server's own code, or the
        // kernel's work for it. (On PostgreSQL the CPU includes the
        // database's, whose system time is not split out.)
        if o.db != "postgres" {
            row("server CPU less system time", "-", |f| f.cpu_ms - f.system_ms);
        }
        // Without the store's share: what passgate spends where the demo
        // spends all of its CPU, against the demo's whole.
        row("CPU outside the store", "-", |f| f.cpu_ms - f.store_ms);
        if o.instructions {
            row("user-space instructions", "-", |f| f.instructions);
        }
        if what == "sign-in" && in_flight == 32 {
            row("p99", "≤ 1.0", |f| f.p99_ms);
        }
    }
}
