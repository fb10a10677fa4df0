//! What the benchmark and the soak share: the server as a child process on
//! a loopback port, the database it runs on, and what /proc tells of it.

// Each example uses its own part of this module.
#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Mutex;

/// The server where a run makes (and drops) its database.
pub const ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// The password of every user that has one.
pub const PASSWORD: &str = "bench passphrase that is long enough";

pub struct Server {
    pub child: Child,
    pub base: String,
    pub origin: String,
}

impl Drop for Server {
    /// SIGTERM first, so a profiler wrapping the server writes its data.
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // SAFETY: kill(2) on our own child's pid; no memory involved.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        for _ in 0..600 {
            if self.child.try_wait().is_ok_and(|status| status.is_some()) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The command line as `--flag value` pairs.
pub fn flags() -> Vec<(String, String)> {
    let mut args = std::env::args().skip(1);
    let mut pairs = Vec::new();
    while let Some(flag) = args.next() {
        let value = args.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        pairs.push((flag, value));
    }
    pairs
}

/// A loopback port nobody listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Runs `argv` (the server, after any wrapper) on `port` and the database
/// `url`, quiet but for warnings, with `env` on top.
pub fn start_server(argv: &[&str], port: u16, url: &str, env: &[(&str, &str)]) -> Server {
    let origin = format!("http://localhost:{port}");
    let mut command = Command::new(argv[0]);
    command
        .args(&argv[1..])
        .env("PASSGATE__SERVER__BIND", format!("127.0.0.1:{port}"))
        .env("PASSGATE__DATABASE__URL", url)
        .env("PASSGATE__WEBAUTHN__ORIGINS", &origin)
        .env("PASSGATE__LOG__LEVEL", "warn")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    // A run that dies on its own (a panic, a kill) takes its server along
    // instead of leaving it serving.
    // SAFETY: prctl(2) only, between fork and exec; it allocates nothing.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut command, || {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    let child = command.spawn().expect("start passgate");
    Server { child, base: format!("http://127.0.0.1:{port}"), origin }
}

/// Waits for /readyz to answer 200; panics after `patience`.
pub async fn wait_until_ready(client: &reqwest::Client, base: &str, patience: Duration) {
    let started = Instant::now();
    loop {
        let ready = client.get(format!("{base}/readyz")).send().await;
        if ready.is_ok_and(|r| r.status().is_success()) {
            return;
        }
        assert!(started.elapsed() < patience, "server did not become ready");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A SQLite file in `scratch`, or a fresh PostgreSQL database; both named
/// after the run (`bench`, `soak`) and this process.
pub async fn database_url(db: &str, scratch: &std::path::Path, run: &str, sslmode: &str) -> String {
    match db {
        "sqlite" => format!("sqlite:{}", scratch.join(format!("{run}.db")).display()),
        "postgres" => {
            let pool =
                sqlx::PgPool::connect(ADMIN_URL).await.expect("PostgreSQL on 127.0.0.1:5432");
            let name = format!("passgate_{run}_{}", std::process::id());
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!("drop database if exists {name}")))
                .execute(&pool)
                .await;
            sqlx::query(sqlx::AssertSqlSafe(format!("create database {name}")))
                .execute(&pool)
                .await
                .unwrap_or_else(|e| panic!("create the {run} database: {e}"));
            format!("postgres://postgres@127.0.0.1:5432/{name}?sslmode={sslmode}")
        }
        other => panic!("--db must be sqlite or postgres, not {other}"),
    }
}

pub async fn drop_database(url: &str) {
    let Some((_, name)) = url.rsplit_once('/') else { return };
    let name = name.split('?').next().unwrap_or(name);
    let admin = sqlx::PgPool::connect(ADMIN_URL).await.expect("PostgreSQL on 127.0.0.1:5432");
    let sql = format!("drop database if exists {name} with (force)");
    let _ = sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&admin).await;
}

/// CPU seconds (user + system) a process has used, from /proc.
pub fn cpu_seconds(pid: u32) -> f64 {
    let (user, system) = cpu_split(pid);
    user + system
}

/// A process's CPU so far, (user, system) in seconds: what its own code
/// ran, and what the kernel ran for it (system calls, page faults).
pub fn cpu_split(pid: u32) -> (f64, f64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat_cpu(&stat).1
}

/// CPU so far, user plus system in seconds, of a process's threads whose
/// name starts with `prefix` (the kernel keeps 15 bytes of a name), such
/// as sqlx-sqlite's connection threads (`sqlx-sqlite-wor`). Threads that
/// have exited no longer count.
#[allow(dead_code)]
pub fn threads_cpu_seconds(pid: u32, prefix: &str) -> f64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return 0.0 };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("stat")).ok())
        .filter_map(|stat| {
            let (name, (user, system)) = stat_cpu(&stat);
            name.starts_with(prefix).then_some(user + system)
        })
        .sum()
}

/// A /proc `stat` line's name and (user, system) CPU in seconds.
fn stat_cpu(stat: &str) -> (&str, (f64, f64)) {
    let (head, rest) = stat.rsplit_once(')').unwrap_or(("", ""));
    let name = head.split_once('(').map_or("", |(_, name)| name);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |at: usize| fields.get(at).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (name, (ticks(11) / 100.0, ticks(12) / 100.0))
}

/// Context switches of a process so far, summed over its threads (those
/// that have exited no longer count). Steadier than CPU time from one run
/// to the next: each is a hand-over between threads, such as a statement
/// sent to sqlx-sqlite's connection thread and its answer.
#[allow(dead_code)]
pub fn context_switches(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return 0 };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("status")).ok())
        .flat_map(|status| {
            status
                .lines()
                .filter(|l| l.contains("ctxt_switches:"))
                .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                .collect::<Vec<_>>()
        })
        .sum()
}

/// The line of a process's /proc status that starts with `name` (such as
/// `VmRSS:`), as it stands there.
pub fn status_line(pid: u32, name: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with(name)).map(|l| l.to_owned()))
        .unwrap_or_default()
}

/// Unix seconds now.
pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// CPU seconds of every PostgreSQL server process on this machine.
pub fn postgres_cpu_seconds() -> f64 {
    let Ok(entries) = std::fs::read_dir("/proc") else { return 0.0 };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.starts_with("postgres"))
        })
        .map(cpu_seconds)
        .sum()
}

/// Bytes PostgreSQL has written to its write-ahead log so far, on the
/// whole server: what its commits made durable. The same on any machine
/// for the same statements, but for the whole pages it logs again at
/// their first change after each checkpoint.
#[allow(dead_code)]
pub async fn postgres_log_bytes() -> i64 {
    use sqlx::Connection;
    let mut admin =
        sqlx::PgConnection::connect(ADMIN_URL).await.expect("PostgreSQL on 127.0.0.1:5432");
    let sql = "select cast(pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0') as bigint)";
    let (bytes,): (i64,) = sqlx::query_as(sql).fetch_one(&mut admin).await.expect("the log's end");
    bytes
}

pub fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index].as_secs_f64() * 1000.0
}

/// Runs `total` operations with `in_flight` workers; each worker owns a
/// disjoint slice of users (a user's counter must not race itself).
pub async fn run<U, F, Fut>(
    users: &[Arc<Mutex<U>>],
    total: usize,
    in_flight: usize,
    op: F,
) -> Vec<Duration>
where
    U: Send + 'static,
    F: Fn(Arc<Mutex<U>>) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let in_flight = in_flight.min(users.len()).max(1);
    let mut workers = Vec::new();
    for worker in 0..in_flight {
        let mine: Vec<Arc<Mutex<U>>> =
            users.iter().skip(worker).step_by(in_flight).cloned().collect();
        let count = total / in_flight + usize::from(worker < total % in_flight);
        let op = op.clone();
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(count);
            for i in 0..count {
                let user = mine[i % mine.len()].clone();
                let t = Instant::now();
                op(user).await;
                latencies.push(t.elapsed());
            }
            latencies
        }));
    }
    let mut all = Vec::with_capacity(total);
    for worker in workers {
        all.extend(worker.await.expect("worker"));
    }
    all
}
