//! Faults outside the node: a mail server that accepts connections and
//! then says nothing (the code endpoints answer 503 within
//! `smtp.timeout_seconds`, notices of changes do not hold up the change
//! they report, and nothing else slows); a database that cannot take
//! writes, for a full disk or a read-only one (every write refused is a
//! 503 `unavailable`, every one answered is stored, and service returns
//! by itself).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use passgate::store::StoreError;

use crate::authenticator::SoftAuthenticator;
use crate::fallback::{PASSWORD, db_tag, verified_email};
use crate::helpers::{
    Db, Observer, TestApp, TestDb, assert_problem, captured_logs, on_both, spawn_app,
    spawn_app_with,
};

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

/// A file system of the test's own for the node's database, mounted on a
/// folder of its own: a tmpfs small enough to fill, or ext4 on a loop
/// device that the kernel can be made to turn read-only. Unmounted on drop,
/// also when the test panics; lazily, since the node's SQLite files stay
/// open for the life of the test process.
struct OwnDisk {
    folder: tempfile::TempDir,
    /// The loop device's name under /sys/fs/ext4, for ext4.
    device: Option<String>,
    _image: Option<tempfile::NamedTempFile>,
}

impl OwnDisk {
    fn tmpfs() -> OwnDisk {
        let folder = tempfile::tempdir().unwrap();
        mount(&["-t", "tmpfs", "-o", "size=16m", "tmpfs"], folder.path());
        OwnDisk { folder, device: None, _image: None }
    }

    /// Mounted with `errors=remount-ro`, the default of many distributions
    /// for their root file system: an error the kernel finds in the file
    /// system (a failing disk) leaves it read-only until it is unmounted.
    fn ext4() -> OwnDisk {
        let image = tempfile::NamedTempFile::new().unwrap();
        image.as_file().set_len(32 << 20).unwrap();
        let made = std::process::Command::new("mkfs.ext4").arg("-qF").arg(image.path()).status();
        assert!(made.expect("mkfs.ext4").success(), "mkfs.ext4");
        let folder = tempfile::tempdir().unwrap();
        let image_path = image.path().to_str().unwrap();
        mount(&["-o", "loop,errors=remount-ro", image_path], folder.path());
        let device = loop_device_of(folder.path());
        OwnDisk { folder, device: Some(device), _image: Some(image) }
    }

    fn database(&self) -> TestDb {
        TestDb::sqlite_at(&self.folder.path().join("passgate.db"))
    }

    fn filler(&self) -> PathBuf {
        self.folder.path().join("filler")
    }

    /// Writes a filler file until the file system has no room left.
    fn fill(&self) {
        use std::io::Write;
        let mut filler = std::fs::File::create(self.filler()).unwrap();
        let block = vec![0xa5; 64 << 10];
        loop {
            match filler.write(&block) {
                Ok(_) => {}
                Err(error) if error.kind() == std::io::ErrorKind::StorageFull => return,
                Err(error) => panic!("filling the disk: {error}"),
            }
        }
    }

    fn empty(&self) {
        std::fs::remove_file(self.filler()).unwrap();
    }

    /// Has ext4 report an error, as it does when the disk fails: the
    /// kernel makes the file system read-only under the running node.
    fn go_read_only(&self) {
        let device = self.device.as_deref().expect("an ext4 disk");
        let trigger = format!("/sys/fs/ext4/{device}/trigger_fs_error");
        std::fs::write(trigger, "passgate fault test\n").unwrap();
        let probe = std::fs::write(self.folder.path().join("probe"), "");
        assert_eq!(probe.unwrap_err().kind(), std::io::ErrorKind::ReadOnlyFilesystem);
    }

    fn path(&self) -> &Path {
        self.folder.path()
    }
}

impl Drop for OwnDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("--lazy").arg(self.path()).status();
    }
}

fn mount(args: &[&str], on: &Path) {
    let mounted = std::process::Command::new("mount").args(args).arg(on).status();
    assert!(mounted.expect("mount").success(), "mount {args:?} needs root, as CI has");
}

/// The loop device mounted on `folder`, as /sys/fs/ext4 names it.
fn loop_device_of(folder: &Path) -> String {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    let folder = folder.to_str().unwrap();
    let line = mounts.lines().find(|line| line.split(' ').nth(1) == Some(folder));
    let source = line.and_then(|line| line.split(' ').next()).expect("mounted");
    source.trim_start_matches("/dev/").to_owned()
}

/// A user whose registration was answered 201.
struct Registered {
    username: String,
    passkey: SoftAuthenticator,
    tokens: Value,
}

/// Registers `count` users named `prefix-n`.
async fn register_some(app: &TestApp, prefix: &str, count: usize) -> Vec<Registered> {
    let mut registered = Vec::new();
    for n in 0..count {
        let username = format!("{prefix}-{n}");
        let mut passkey = app.authenticator();
        let tokens = app.register(&mut passkey, &username).await;
        registered.push(Registered { username, passkey, tokens });
    }
    registered
}

/// On a node whose disk has just failed it: /readyz says 503, and users
/// named `prefix-n` are registered until one is refused, with a 503
/// `unavailable` whose cause only the log names. Until the database has
/// used up the room its files already had, some may still be stored, and
/// those must have been answered 201. Returns them, and the refused name.
async fn register_until_refused(
    app: &TestApp,
    disk: &OwnDisk,
    prefix: &str,
    cause: &str,
) -> (Vec<Registered>, String) {
    assert_problem(app.get("/readyz", None).await, 503, "unavailable").await;
    let mut stored = Vec::new();
    for n in 0..500 {
        let username = format!("{prefix}-{n}");
        let mut passkey = app.authenticator();
        match app.try_register(&mut passkey, &username).await {
            Ok(tokens) => stored.push(Registered { username, passkey, tokens }),
            Err(refused) => {
                let problem = assert_problem(refused, 503, "unavailable").await;
                assert_cause_logged_not_told(&problem, &disk.path().display().to_string(), cause);
                return (stored, username);
            }
        }
    }
    panic!("500 registrations were all stored on a database that cannot take writes");
}

/// The answer to a write the node may still store, or must refuse with a
/// 503.
async fn assert_stored_or_unavailable(answer: reqwest::Response) {
    if !answer.status().is_success() {
        assert_problem(answer, 503, "unavailable").await;
    }
}

/// The problem says nothing of the cause (no file, no SQL, no engine),
/// and the log of its request does.
fn assert_cause_logged_not_told(problem: &Value, secret: &str, cause: &str) {
    let text = problem.to_string().to_lowercase();
    for leaked in [secret, "sqlite", "postgres", "insert", "disk", "read-only"] {
        assert!(!text.contains(&leaked.to_lowercase()), "{leaked} in {problem}");
    }
    let request_id = problem["request_id"].as_str().unwrap();
    let logs = captured_logs();
    let lines: Vec<&str> = logs.lines().filter(|line| line.contains(request_id)).collect();
    assert!(lines.iter().any(|line| line.contains(cause)), "{cause} not in {lines:#?}");
}

/// /readyz answers 200 within `within`.
async fn ready_within(app: &TestApp, within: Duration) {
    let started = Instant::now();
    loop {
        if app.get("/readyz", None).await.status() == StatusCode::OK {
            return;
        }
        assert!(started.elapsed() < within, "not ready after {:?}", started.elapsed());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// After the fault: every registration answered 201 signs in, none
/// refused was stored, and no account named `prefix-…` was left without
/// its passkey.
async fn assert_nothing_lost_or_half_made(
    app: &TestApp,
    stored: &mut [Registered],
    refused: &[String],
    prefix: &str,
) {
    for user in stored.iter_mut() {
        let signed_in = app.login(&mut user.passkey, Some(&user.username)).await;
        assert_eq!(signed_in.status(), StatusCode::OK, "{} lost", user.username);
    }
    let observer = app.observer(Duration::from_secs(5)).await;
    for username in refused {
        let sql = "select count(*) from app_user where username = $1";
        assert_eq!(observer.count(sql, username).await, 0, "{username} refused but stored");
    }
    let half_made = "select count(*) from app_user u where u.username like $1 \
                     and not exists (select 1 from credential c where c.user_id = u.user_id)";
    assert_eq!(observer.count(half_made, &format!("{prefix}-%")).await, 0);
}

/// Registrations until one is refused may take hundreds of requests.
const UNLIMITED: [(&str, &str); 1] = [("PASSGATE__LIMITS__IP_REQUESTS_PER_MINUTE", "1000000")];

/// SQLite on a real full disk (a tmpfs filled to ENOSPC): /readyz says so;
/// every registration is stored and answered 201, or refused with a 503
/// `unavailable` that names no cause (the log does); reads go on. Once
/// there is room again, service returns with no restart, the file is
/// intact, and every answered registration signs in.
#[tokio::test]
async fn sqlite_on_a_full_disk_answers_503_and_loses_nothing() {
    let disk = OwnDisk::tmpfs();
    let app = spawn_app_with(disk.database(), &[], &UNLIMITED).await;
    let mut stored = register_some(&app, "full", 3).await;

    disk.fill();
    let (more, refused) = register_until_refused(&app, &disk, "full-more", "disk is full").await;
    stored.extend(more);
    // A sign-in and a refresh write too; a read needs no room.
    let first = &mut stored[0];
    assert_stored_or_unavailable(app.login(&mut first.passkey, Some(&first.username)).await).await;
    let refresh = first.tokens["refresh_token"].as_str().unwrap();
    assert_stored_or_unavailable(app.refresh(refresh).await).await;
    let access = first.tokens["access_token"].as_str().unwrap();
    assert_eq!(app.me(access).await.status(), StatusCode::OK);

    disk.empty();
    ready_within(&app, Duration::from_secs(5)).await;
    stored.extend(register_some(&app, "full-after", 1).await);
    assert_sqlite_intact(&app).await;
    assert_nothing_lost_or_half_made(&app, &mut stored, &[refused], "full").await;
}

/// SQLite on a disk that the kernel turns read-only under the running
/// node, as ext4 does when the disk fails: /readyz says so, every write is
/// refused with a 503 `unavailable` that names no cause (the log does),
/// reads go on. Such a file system stays read-only until it is unmounted,
/// so service cannot come back without a restart; the node's files, as
/// they are, served by a new node elsewhere, are intact and hold every
/// registration answered 201.
#[tokio::test]
async fn sqlite_on_a_disk_gone_read_only_answers_503_and_loses_nothing() {
    let disk = OwnDisk::ext4();
    let app = spawn_app_with(disk.database(), &[], &UNLIMITED).await;
    let mut stored = register_some(&app, "gone", 3).await;

    disk.go_read_only();
    let (more, refused) = register_until_refused(&app, &disk, "gone-more", "disk I/O error").await;
    assert!(more.is_empty(), "{} stored on a read-only disk", more.len());
    // A sign-in's start reads only; its finish writes.
    let first = &mut stored[0];
    let signed_in = app.login(&mut first.passkey, Some(&first.username)).await;
    assert_problem(signed_in, 503, "unavailable").await;
    let access = first.tokens["access_token"].as_str().unwrap();
    assert_eq!(app.me(access).await.status(), StatusCode::OK);

    let elsewhere = tempfile::tempdir().unwrap();
    for suffix in ["", "-wal"] {
        let name = format!("passgate.db{suffix}");
        std::fs::copy(disk.path().join(&name), elsewhere.path().join(&name)).unwrap();
    }
    let moved = TestDb::sqlite_at(&elsewhere.path().join("passgate.db"));
    let again = spawn_app_with(moved, &[&app.origin], &UNLIMITED).await;
    assert_sqlite_intact(&again).await;
    assert_nothing_lost_or_half_made(&again, &mut stored, &[refused], "gone").await;
}

/// A commit that SQLite refuses for want of room ends its transaction by
/// itself. The writer must keep track: a transaction refused afterwards
/// (here for a duplicate row) must not be left open, and every write
/// answered afterwards must be committed, as a connection of the test's
/// own sees.
#[tokio::test]
async fn sqlite_a_commit_refused_on_a_full_disk_leaves_the_writer_sound() {
    let disk = OwnDisk::tmpfs();
    let app = spawn_app_with(disk.database(), &[], &[]).await;
    let tokens = app.register(&mut app.authenticator(), "sound").await;
    let user_id = tokens["user_id"].as_str().unwrap();
    disk.fill();
    refuse_a_transaction_for_want_of_room(&app, user_id).await;

    disk.empty();
    let twice = vec!["twice".to_owned(); 2];
    let refused = app.store.replace_recovery_codes(user_id, &twice, 1).await;
    assert!(matches!(refused, Err(StoreError::Conflict(_))), "{refused:?}");
    app.store.put_ceremony(&crate::store::ceremony("after", i64::MAX)).await.unwrap();
    app.store.replace_recovery_codes(user_id, &["after".to_owned()], 2).await.unwrap();
    let observer = app.observer(Duration::from_secs(5)).await;
    let ceremony = "select count(*) from ceremony where ceremony_id = $1";
    assert_eq!(observer.count(ceremony, "after").await, 1, "an answered write not committed");
    let code = "select count(*) from recovery_code where code_hash = $1";
    assert_eq!(observer.count(code, "after").await, 1, "an answered write not committed");
}

/// Writes that wait for SQLite's connection together are committed in
/// groups, by one COMMIT. On a full disk each must be answered as its
/// group went: stored, or refused as unavailable (a 503), every writer of
/// a refused group alike; none answered and not committed.
#[tokio::test]
async fn sqlite_writes_grouped_on_a_full_disk_are_each_committed_or_refused_as_unavailable() {
    let disk = OwnDisk::tmpfs();
    let app = spawn_app_with(disk.database(), &[], &[]).await;
    disk.fill();
    let writers = (0..16).map(|writer| {
        let store = app.store.clone();
        tokio::spawn(async move {
            let mut answers = Vec::new();
            for n in 0..8 {
                let mut row = crate::store::ceremony(&format!("crowd-{writer}-{n}"), i64::MAX);
                row.state = format!("\"{}\"", "x".repeat(16 << 10));
                answers.push((row.ceremony_id.clone(), store.put_ceremony(&row).await));
            }
            answers
        })
    });
    let answers =
        futures_util::future::join_all(writers).await.into_iter().flat_map(Result::unwrap);
    let observer = app.observer(Duration::from_secs(5)).await;
    let sql = "select count(*) from ceremony where ceremony_id = $1";
    let mut refused = 0;
    for (id, answer) in answers {
        let committed = observer.count(sql, &id).await;
        match answer {
            Ok(()) => assert_eq!(committed, 1, "{id} answered and not committed"),
            Err(StoreError::Unavailable(_)) => {
                assert_eq!(committed, 0, "{id} refused and committed");
                refused += 1;
            }
            Err(other) => panic!("{id} refused otherwise: {other:?}"),
        }
    }
    assert!(refused > 0, "every write stored on a full disk");
}

/// Replaces the user's recovery codes with ever more of them, each in one
/// transaction, until the full disk refuses one: as unavailable.
async fn refuse_a_transaction_for_want_of_room(app: &TestApp, user_id: &str) {
    for round in 1..=64 {
        let codes: Vec<String> = (0..round * 32).map(|n| format!("{n:0>4096}")).collect();
        match app.store.replace_recovery_codes(user_id, &codes, round).await {
            Ok(()) => {}
            Err(StoreError::Unavailable(_)) => return,
            Err(other) => panic!("refused otherwise: {other:?}"),
        }
    }
    panic!("64 ever larger transactions were all committed on a full disk");
}

async fn assert_sqlite_intact(app: &TestApp) {
    let Observer::Sqlite(pool) = app.observer(Duration::from_secs(5)).await else {
        panic!("a SQLite node")
    };
    let check: String =
        sqlx::query_scalar("pragma integrity_check").fetch_one(&pool).await.unwrap();
    assert_eq!(check, "ok");
}

/// PostgreSQL refusing writes (`default_transaction_read_only`, as a hot
/// standby does after a failover): writes answer 503 `unavailable`, not
/// 500, and /readyz says so; reads go on. Once writes are allowed again,
/// the node serves within 5 s with no restart, though its connections
/// were opened read-only.
#[tokio::test]
async fn postgres_read_only_answers_503_and_service_returns_by_itself() {
    let app = spawn_app(Db::Postgres).await;
    let mut stored = register_some(&app, "ro", 2).await;
    let (_, name) = app.db.server_and_name();
    let admin = sqlx::PgPool::connect(&crate::helpers::postgres_admin_url()).await.unwrap();
    let read_only = |on: &'static str| {
        let (admin, name) = (&admin, &name);
        async move {
            let set = format!("alter database {name} set default_transaction_read_only = {on}");
            sqlx::query(sqlx::AssertSqlSafe(set)).execute(admin).await.unwrap();
        }
    };

    read_only("on").await;
    // The setting reaches new connections only: the node's are ended.
    sqlx::query("select pg_terminate_backend(pid) from pg_stat_activity where datname = $1")
        .bind(&name)
        .execute(&admin)
        .await
        .unwrap();
    // The first requests may meet the ended connections, which is a 503
    // as well; then the read-only ones.
    let mut refused = Vec::new();
    for n in 0..3 {
        let username = format!("ro-refused-{n}");
        let answer = app.try_register(&mut app.authenticator(), &username).await;
        assert_problem(answer.expect_err("stored while read-only"), 503, "unavailable").await;
        refused.push(username);
    }
    let problem = assert_problem(app.register_start("ro-refused").await, 503, "unavailable").await;
    assert_cause_logged_not_told(&problem, &name, "read-only transaction");
    assert_problem(app.get("/readyz", None).await, 503, "unavailable").await;
    let access = stored[0].tokens["access_token"].as_str().unwrap();
    assert_eq!(app.me(access).await.status(), StatusCode::OK);

    read_only("off").await;
    ready_within(&app, Duration::from_secs(5)).await;
    stored.extend(register_some(&app, "ro-after", 1).await);
    assert_nothing_lost_or_half_made(&app, &mut stored, &refused, "ro").await;
}
