//! The operator's command line, run as the real binary against a database
//! of the test's own (and, where the command talks to one, a server): its
//! output, its exit code and what it changed.

use std::path::Path;
use std::process::{Command, Output};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::authenticator::SoftAuthenticator;
use crate::fallback::{db_tag, verified_email};
use crate::helpers::{Db, TestApp, TestDb, assert_problem, claims_of, on_both, spawn_app};

on_both!(
    migrate_brings_a_new_database_up_to_date_and_is_idempotent,
    a_created_user_binds_a_first_passkey_with_the_printed_code,
    a_break_glass_reset_ends_every_session_and_prints_a_code_that_binds_a_new_passkey,
);

/// Runs `passgate ARGS` with only `env` set, in a working directory of its
/// own (so a stray write cannot land in the repository), mail going to the
/// test's SMTP sink.
pub fn passgate(db_url: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let cwd = tempfile::tempdir().unwrap();
    Command::new(env!("CARGO_BIN_EXE_passgate"))
        .args(args)
        .current_dir(cwd.path())
        .env_clear()
        .env("PASSGATE__DATABASE__URL", db_url)
        .env("PASSGATE__SMTP__HOST", "127.0.0.1")
        .env("PASSGATE__SMTP__PORT", crate::smtp::port().to_string())
        .env("PASSGATE__SMTP__TLS", "none")
        .envs(env.iter().copied())
        .output()
        .expect("run passgate")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A failure: non-zero, and its message one line on stderr (the last,
/// after any log lines) that contains `needle`.
fn assert_refused(output: &Output, needle: &str) {
    let err = stderr(output);
    assert!(!output.status.success(), "succeeded: {}{err}", stdout(output));
    let messages: Vec<&str> = err.lines().filter(|l| l.starts_with("passgate: ")).collect();
    assert_eq!(messages.len(), 1, "one message line: {err}");
    assert_eq!(err.trim_end().lines().last(), Some(messages[0]), "{err}");
    assert!(messages[0].contains(needle), "{needle:?} not in: {err}");
}

/// The code a `user create` or `user reset-devices` printed.
pub fn printed_code(output: &Output) -> String {
    let text = stdout(output);
    assert!(output.status.success(), "{text}{}", stderr(output));
    text.lines()
        .find_map(|line| line.strip_prefix("enrolment code: "))
        .unwrap_or_else(|| panic!("no enrolment code in: {text}"))
        .trim()
        .to_owned()
}

/// Binds a passkey to `username` with an enrolment code over the API;
/// the token set.
pub async fn enrol(
    app: &TestApp,
    passkey: &mut SoftAuthenticator,
    username: &str,
    code: &str,
) -> Value {
    let started = app.post("/v1/enrol/start", &json!({"username": username, "code": code})).await;
    assert_eq!(started.status(), StatusCode::OK, "enrol start");
    let started: Value = started.json().await.unwrap();
    let credential = passkey.register(&started["publicKey"]);
    let body = json!({"ceremony_id": started["ceremony_id"], "credential": credential});
    let finished = app.post("/v1/enrol/finish", &body).await;
    assert_eq!(finished.status(), StatusCode::CREATED, "enrol finish");
    finished.json().await.unwrap()
}

#[test]
fn version_and_help_are_answered_and_a_bad_command_is_one_line() {
    let run = |args: &[&str]| passgate("sqlite::memory:", args, &[]);
    let version = run(&["--version"]);
    assert!(version.status.success());
    assert_eq!(stdout(&version), format!("passgate {}\n", env!("CARGO_PKG_VERSION")));

    let help = run(&["--help"]);
    assert!(help.status.success());
    for command in ["config", "migrate", "healthcheck", "user", "backup", "keys", "admin"] {
        assert!(stdout(&help).contains(command), "{command} in --help");
    }
    let user_help = run(&["user", "--help"]);
    assert!(stdout(&user_help).contains("reset-devices") && stdout(&user_help).contains("create"));

    assert_refused(&run(&["frobnicate"]), "frobnicate");
    assert_eq!(run(&["frobnicate"]).status.code(), Some(2), "a usage error");
    assert_refused(&run(&["user", "create"]), "USERNAME");
    assert_refused(&run(&["backup"]), "PATH");
}

#[test]
fn config_check_summarises_with_secrets_hidden_and_names_a_bad_setting() {
    let dir = tempfile::tempdir().unwrap();
    let kek_file = dir.path().join("kek");
    std::fs::write(&kek_file, "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n").unwrap();
    let database = dir.path().join("never-made.db");
    let secrets = [
        ("PASSGATE__TOKENS__KEY_ENCRYPTION_KEY_FILE", kek_file.to_str().unwrap()),
        ("PASSGATE__SMTP__HOST", "mail.example"),
        ("PASSGATE__SMTP__TLS", "starttls"),
        ("PASSGATE__SMTP__PORT", "587"),
        ("PASSGATE__SMTP__USERNAME", "relay-user"),
        ("PASSGATE__SMTP__PASSWORD", "smtp-topsecret"),
        ("PASSGATE__WEBAUTHN__RP_ID", "wallet.example"),
        ("PASSGATE__WEBAUTHN__ORIGINS", "https://wallet.example"),
        ("PASSGATE__SERVER__CORS_ORIGINS", "https://shop.example"),
        ("PASSGATE__SERVER__ADMIN_BIND", "127.0.0.1:9099"),
    ];
    let sqlite = format!("sqlite:{}", database.display());
    let checked = passgate(&sqlite, &["config", "check"], &secrets);
    let out = stdout(&checked);
    assert!(checked.status.success(), "{out}{}", stderr(&checked));
    assert!(out.starts_with("configuration is valid\n"), "{out}");
    let row = |key: &str| {
        out.lines()
            .find(|l| l.trim_start().starts_with(key))
            .unwrap_or_else(|| panic!("{key}: {out}"))
    };
    assert!(row("tokens.key_encryption_key").ends_with("set (hidden)"), "{out}");
    assert!(
        row("smtp").contains("mail.example:587") && row("smtp").contains("relay-user"),
        "{out}"
    );
    assert!(row("webauthn.rp_id").ends_with("wallet.example"));
    assert!(row("server.cors_origins").ends_with("https://shop.example"), "{out}");
    assert!(row("server.admin_bind").contains("127.0.0.1:9099"), "{out}");
    for secret in ["smtp-topsecret", "AAECAwQF"] {
        assert!(!out.contains(secret) && !stderr(&checked).contains(secret), "{secret} shown");
    }
    assert!(!database.exists(), "config check opens no database");

    // A database password is redacted too.
    let postgres =
        passgate("postgres://passgate:db-topsecret@db.invalid/passgate", &["config", "check"], &[]);
    assert!(postgres.status.success(), "{}", stderr(&postgres));
    assert!(row_of(&stdout(&postgres), "database.url").contains("***"));
    assert!(!stdout(&postgres).contains("db-topsecret"));

    // A bad value, a missing key-encryption key outside localhost (a check
    // that start makes after loading), an unreadable secret file.
    let bad = passgate(
        &sqlite,
        &["config", "check"],
        &[("PASSGATE__TOKENS__ACCESS_TTL_SECONDS", "3600")],
    );
    assert_refused(&bad, "tokens.access_ttl_seconds");
    let keyless = passgate(
        &sqlite,
        &["config", "check"],
        &[
            ("PASSGATE__WEBAUTHN__RP_ID", "wallet.example"),
            ("PASSGATE__WEBAUTHN__ORIGINS", "https://wallet.example"),
        ],
    );
    assert_refused(&keyless, "tokens.key_encryption_key");
    let missing = passgate(
        &sqlite,
        &["config", "check"],
        &[("PASSGATE__SMTP__PASSWORD_FILE", "/nonexistent/smtp")],
    );
    assert_refused(&missing, "PASSGATE__SMTP__PASSWORD_FILE");
    let no_file =
        passgate(&sqlite, &["--config", "/nonexistent/passgate.toml", "config", "check"], &[]);
    assert_refused(&no_file, "--config");
    assert!(!database.exists());
}

fn row_of<'a>(out: &'a str, key: &str) -> &'a str {
    out.lines().find(|l| l.trim_start().starts_with(key)).unwrap_or_else(|| panic!("{key}: {out}"))
}

/// A count on a database the test reaches by URL, as another process would.
async fn count(db: &TestDb, sql: &'static str) -> i64 {
    match db.db {
        Db::Sqlite => {
            let pool = sqlx::SqlitePool::connect(&db.url).await.expect("sqlite");
            sqlx::query_scalar(sql).fetch_one(&pool).await.expect(sql)
        }
        Db::Postgres => {
            let pool = sqlx::PgPool::connect(&db.url).await.expect("postgres");
            sqlx::query_scalar(sql).fetch_one(&pool).await.expect(sql)
        }
    }
}

async fn migrate_brings_a_new_database_up_to_date_and_is_idempotent(db: Db) {
    let db = TestDb::create(db).await;
    let migrations = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "sql"))
        .count() as i64;
    for _ in 0..2 {
        let migrated = passgate(&db.url, &["migrate"], &[]);
        assert!(migrated.status.success(), "{}", stderr(&migrated));
        let out = stdout(&migrated);
        assert!(
            out.contains("schema up to date") && out.contains(&format!("{migrations} migrations")),
            "{out}"
        );
        let applied = count(&db, "select count(*) from _sqlx_migrations where success").await;
        assert_eq!(applied, migrations);
    }
    // The schema is there to use: the tables, and nothing in them.
    assert_eq!(count(&db, "select count(*) from app_user").await, 0);
    let unreachable = passgate("postgres://nobody@127.0.0.1:1/none", &["migrate"], &[]);
    assert_refused(&unreachable, "cannot connect to postgres://nobody@127.0.0.1:1/none");
}

async fn a_created_user_binds_a_first_passkey_with_the_printed_code(db: Db) {
    let app = spawn_app(db).await;
    let created = passgate(&app.db.url, &["user", "create", "first-admin", "--admin"], &[]);
    let code = printed_code(&created);
    let out = stdout(&created);
    assert!(out.contains("created first-admin") && out.contains("roles [admin]"), "{out}");
    assert!(out.contains("/enrol.html"), "{out}");
    assert!(!stderr(&created).contains(&code), "the code is printed once, on stdout");
    let user = app.store.find_user_by_username("first-admin").await.unwrap().unwrap();
    assert!(user.roles.is_admin());
    assert!(app.store.user_credentials(&user.user_id.to_string()).await.unwrap().is_empty());

    // Taken, or not a username: refused, and nothing changes.
    let before = app.fingerprint().await;
    assert_refused(
        &passgate(&app.db.url, &["user", "create", "first-admin"], &[]),
        "already exists",
    );
    assert_refused(
        &passgate(&app.db.url, &["user", "create", "no spaces allowed"], &[]),
        "username",
    );
    assert_eq!(before, app.fingerprint().await);

    let mut passkey = app.authenticator();
    let tokens = enrol(&app, &mut passkey, "first-admin", &code).await;
    assert_eq!(tokens["user_id"], user.user_id.to_string().as_str());
    let access = tokens["access_token"].as_str().unwrap();
    assert_eq!(claims_of(access)["roles"], json!(["admin"]));
    assert_eq!(app.get("/v1/admin/users", Some(access)).await.status(), StatusCode::OK);
    assert_eq!(app.login(&mut passkey, Some("first-admin")).await.status(), StatusCode::OK);
    // The code worked once.
    let again =
        app.post("/v1/enrol/start", &json!({"username": "first-admin", "code": code})).await;
    assert_problem(again, 401, "invalid_code").await;

    let observer = app.observer(std::time::Duration::from_secs(5)).await;
    let by_cli = "select count(*) from audit_event where actor_id = 'cli' and user_id = $1 \
                  and event in ('user_registered', 'enrolment_code_issued')";
    assert_eq!(observer.count(by_cli, &user.user_id.to_string()).await, 2);
    let leaked = "select count(*) from audit_event where reason like '%' || $1 || '%'";
    assert_eq!(observer.count(leaked, &code).await, 0, "no code in the audit trail");
}

async fn a_break_glass_reset_ends_every_session_and_prints_a_code_that_binds_a_new_passkey(db: Db) {
    let app = spawn_app(db).await;
    let mut lost = app.authenticator();
    let tokens = app.register(&mut lost, "glass").await;
    let access = tokens["access_token"].as_str().unwrap();
    let address = format!("glass-{}@example.test", db_tag(&app));
    verified_email(&app, access, &address).await;
    let second: Value = app.login(&mut lost, None).await.json().await.unwrap();

    let reset = passgate(
        &app.db.url,
        &["user", "reset-devices", "glass", "--reason", "phone lost, no admin left"],
        &[],
    );
    let code = printed_code(&reset);
    assert!(stdout(&reset).contains("1 passkeys unbound, 2 sessions ended"), "{}", stdout(&reset));

    for signed_in in [&tokens, &second] {
        let refresh = signed_in["refresh_token"].as_str().unwrap();
        assert_problem(app.refresh(refresh).await, 401, "invalid_credentials").await;
        let bearer = signed_in["access_token"].as_str().unwrap();
        assert_problem(app.me(bearer).await, 401, "unauthorized").await;
    }
    assert_problem(app.login(&mut lost, None).await, 401, "invalid_credentials").await;

    // The owner is told, without the code (it is the operator's to hand
    // over); the command waits for the notice to go before it ends.
    let notices: Vec<String> = crate::smtp::mails_to(&address)
        .into_iter()
        .filter(|m| m.contains("Subject: The passkeys of your account were reset"))
        .collect();
    assert_eq!(notices.len(), 1, "one notice");
    assert!(!notices[0].contains(&code), "the notice holds no code");
    assert!(notices[0].contains("this server's own tools"), "{}", notices[0]);

    let mut new_phone = app.authenticator();
    let enrolled = enrol(&app, &mut new_phone, "glass", &code).await;
    assert_eq!(enrolled["user_id"], tokens["user_id"]);
    assert_eq!(app.login(&mut new_phone, None).await.status(), StatusCode::OK);

    let observer = app.observer(std::time::Duration::from_secs(5)).await;
    let audited = "select count(*) from audit_event where actor_id = 'cli' \
                   and event = 'devices_reset' and reason = $1";
    assert_eq!(observer.count(audited, "phone lost, no admin left").await, 1);

    assert_refused(
        &passgate(&app.db.url, &["user", "reset-devices", "nobody-here"], &[]),
        "no account named",
    );
}

#[tokio::test]
async fn a_backup_copies_a_live_sqlite_database_and_never_overwrites() {
    let app = spawn_app(Db::Sqlite).await;
    let mut phone = app.authenticator();
    app.register(&mut phone, "backed-up").await;
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("copy.db");
    let path = target.to_str().unwrap();

    let backup = passgate(&app.db.url, &["backup", path], &[]);
    assert!(backup.status.success(), "{}", stderr(&backup));
    assert!(stdout(&backup).contains("1 accounts"), "{}", stdout(&backup));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&target).unwrap().permissions().mode() & 0o777, 0o600);
    // The copy is one file that SQLite opens on its own, with the user.
    let copy = TestDb::sqlite_at(&target);
    let names = "select count(*) from app_user where username = 'backed-up'";
    assert_eq!(count(&copy, names).await, 1);
    assert_eq!(count(&copy, "select count(*) from credential").await, 1);
    // The server went on serving meanwhile, and still does.
    assert_eq!(app.login(&mut phone, None).await.status(), StatusCode::OK);

    let copied = std::fs::read(&target).unwrap();
    assert_refused(&passgate(&app.db.url, &["backup", path], &[]), "already exists");
    assert_eq!(std::fs::read(&target).unwrap(), copied, "the existing file is left alone");

    let postgres = TestDb::create(Db::Postgres).await;
    let elsewhere = dir.path().join("pg.db");
    let refused = passgate(&postgres.url, &["backup", elsewhere.to_str().unwrap()], &[]);
    assert_refused(&refused, "pg_dump");
    assert!(!elsewhere.exists());
    let no_database = format!("sqlite:{}", dir.path().join("absent.db").display());
    assert_refused(
        &passgate(&no_database, &["backup", elsewhere.to_str().unwrap()], &[]),
        "cannot open",
    );
    assert!(!elsewhere.exists() && !Path::new(&dir.path().join("absent.db")).exists());
}

/// Multi-threaded: the node in this process serves while the test's
/// thread waits for the command.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthcheck_passes_against_a_serving_node_and_fails_otherwise() {
    let app = spawn_app(Db::Sqlite).await;
    let check = |bind: String, timeout: &str| {
        passgate(
            "sqlite::memory:",
            &["healthcheck", "--timeout", timeout],
            &[("PASSGATE__SERVER__BIND", &bind)],
        )
    };
    // 0.0.0.0 means this host: the check goes to loopback.
    let healthy = check(format!("0.0.0.0:{}", app.port), "2");
    assert!(healthy.status.success(), "{}", stderr(&healthy));
    assert!(check(format!("127.0.0.1:{}", app.port), "2").status.success());

    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    assert_refused(&check(format!("0.0.0.0:{closed}"), "2"), "cannot connect");

    // Something that answers, but not 200; and something that never does.
    let answering = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let answering_port = answering.local_addr().unwrap().port();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for stream in answering.incoming().take(1) {
            let mut stream = stream.unwrap();
            let _ = stream.read(&mut [0u8; 1024]);
            let _ =
                stream.write_all(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n");
        }
    });
    assert_refused(&check(format!("127.0.0.1:{answering_port}"), "2"), "503");
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let started = std::time::Instant::now();
    assert_refused(&check(format!("127.0.0.1:{silent_port}"), "1"), "no answer");
    assert!(started.elapsed() < std::time::Duration::from_secs(5), "gave up in time");
    drop(silent);
}
