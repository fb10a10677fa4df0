//! Test harness: the real app on a loopback port, on a fresh SQLite file or
//! a fresh PostgreSQL database per test, with typed calls per endpoint.

use std::net::TcpListener;
use std::sync::{Arc, Once};

use passgate::clock::ManualClock;
use passgate::config::Settings;
use passgate::startup::Application;
use passgate::store::{self, Store};
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};

use crate::authenticator::SoftAuthenticator;

/// An Android app's origin (the base64url SHA-256 of its signing cert).
pub const ANDROID_ORIGIN: &str = "android:apk-key-hash:U2lnbmluZ0NlcnRIYXNoRm9yVGVzdHM";

/// Which engine a test runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Db {
    Sqlite,
    Postgres,
}

/// The admin connection for making per-test databases; override with
/// PASSGATE_TEST_POSTGRES for another server.
pub fn postgres_admin_url() -> String {
    std::env::var("PASSGATE_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// A database made for one test. SQLite files live in a temporary folder
/// removed on drop; PostgreSQL databases are dropped by the next run.
pub struct TestDb {
    pub db: Db,
    pub url: String,
    _dir: Option<Arc<tempfile::TempDir>>,
}

impl TestDb {
    pub async fn create(db: Db) -> TestDb {
        match db {
            Db::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let url = format!("sqlite:{}", dir.path().join("passgate.db").display());
                TestDb { db, url, _dir: Some(Arc::new(dir)) }
            }
            Db::Postgres => {
                let admin = postgres_admin_url();
                let mut conn = sqlx::PgPool::connect(&admin).await.unwrap_or_else(|e| {
                    panic!("PostgreSQL is required for the test suite ({admin}): {e}")
                });
                drop_stale_databases(&mut conn).await;
                let name = format!("pgt_{}_{}", std::process::id(), uuid::Uuid::new_v4().simple());
                sqlx::query(sqlx::AssertSqlSafe(format!("create database {name}")))
                    .execute(&conn)
                    .await
                    .expect("create test database");
                conn.close().await;
                let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin);
                TestDb { db, url: format!("{base}/{name}"), _dir: None }
            }
        }
    }

    /// A SQLite file at `path`, in a folder the caller looks after (a
    /// small file system of a fault test's own).
    pub fn sqlite_at(path: &std::path::Path) -> TestDb {
        TestDb { db: Db::Sqlite, url: format!("sqlite:{}", path.display()), _dir: None }
    }

    pub fn share(&self) -> TestDb {
        self.through(self.url.clone())
    }

    /// The same database reached through another address (a proxy).
    pub fn through(&self, url: String) -> TestDb {
        TestDb { db: self.db, url, _dir: self._dir.clone() }
    }

    /// A PostgreSQL database's server (`host:port`) and name.
    pub fn server_and_name(&self) -> (String, String) {
        let (_, after) = self.url.split_once('@').expect("a PostgreSQL URL");
        let (server, name) = after.split_once('/').expect("a database name");
        (server.to_owned(), name.to_owned())
    }

    /// The same PostgreSQL database reached through a proxy on a loopback port.
    pub fn via_port(&self, port: u16) -> TestDb {
        let (before, _) = self.url.split_once('@').expect("a PostgreSQL URL");
        let (_, name) = self.server_and_name();
        self.through(format!("{before}@127.0.0.1:{port}/{name}"))
    }
}

/// Databases of earlier test processes that are no longer running.
async fn drop_stale_databases(conn: &mut sqlx::PgPool) {
    static ONCE: Once = Once::new();
    let mut first = false;
    ONCE.call_once(|| first = true);
    if !first {
        return;
    }
    let names: Vec<(String,)> =
        sqlx::query_as("select datname from pg_database where datname like 'pgt\\_%'")
            .fetch_all(&*conn)
            .await
            .unwrap_or_default();
    for (name,) in names {
        let pid: Option<u32> = name.split('_').nth(1).and_then(|p| p.parse().ok());
        let alive = pid.is_some_and(|p| std::path::Path::new(&format!("/proc/{p}")).exists());
        if !alive {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                "drop database if exists {name} with (force)"
            )))
            .execute(&*conn)
            .await;
        }
    }
}

pub struct TestApp {
    pub address: String,
    pub port: u16,
    /// The operators' listener, with PASSGATE__SERVER__ADMIN_BIND set.
    pub admin_port: Option<u16>,
    pub client: reqwest::Client,
    pub store: Arc<dyn Store>,
    /// The node's services, for driving what a timer would (housekeeping).
    pub core: actix_web::web::Data<passgate::service::Core>,
    pub clock: ManualClock,
    pub db: TestDb,
    /// The web origin the app accepts: http://localhost:PORT.
    pub origin: String,
}

/// Everything every app in this test process logged, as JSON lines, so a
/// test can check that no secret ever reaches a log.
static CAPTURED_LOGS: std::sync::Mutex<Vec<u8>> = std::sync::Mutex::new(Vec::new());

struct LogCapture;

impl std::io::Write for LogCapture {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        CAPTURED_LOGS.lock().unwrap().extend_from_slice(bytes);
        if std::env::var_os("TEST_LOG").is_some() {
            std::io::stderr().write_all(bytes)?;
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The logs captured so far (all tests of this process).
pub fn captured_logs() -> String {
    String::from_utf8_lossy(&CAPTURED_LOGS.lock().unwrap()).into_owned()
}

fn init_logs() {
    static LOGS: Once = Once::new();
    LOGS.call_once(|| {
        // Debug for our own code: the most it could ever say.
        let filter = tracing_subscriber::EnvFilter::new("info,passgate=debug,audit=debug");
        let _ = tracing_subscriber::fmt()
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .with_env_filter(filter)
            .with_writer(|| LogCapture)
            .try_init();
    });
}

/// Settings for a test node: RP id localhost, its own port as the web
/// origin plus `extra_origins`, one worker, then `extra_env` on top.
pub fn test_settings(
    db_url: &str,
    port: u16,
    extra_origins: &[&str],
    extra_env: &[(&str, &str)],
) -> Settings {
    let mut origins = vec![format!("http://localhost:{port}")];
    origins.extend(extra_origins.iter().map(|o| o.to_string()));
    let env = [
        ("PASSGATE__DATABASE__URL", db_url.to_owned()),
        ("PASSGATE__WEBAUTHN__RP_ID", "localhost".to_owned()),
        ("PASSGATE__WEBAUTHN__ORIGINS", origins.join(",")),
        ("PASSGATE__SERVER__WORKERS", "1".to_owned()),
        ("PASSGATE__DATABASE__MAX_CONNECTIONS", "4".to_owned()),
        // Mail goes to the loopback SMTP server of this test process.
        ("PASSGATE__SMTP__HOST", "127.0.0.1".to_owned()),
        ("PASSGATE__SMTP__PORT", crate::smtp::port().to_string()),
        ("PASSGATE__SMTP__TLS", "none".to_owned()),
        // Cheaper argon2 than production's, so many sign-ins stay quick;
        // the parameters are tested on their own.
        ("PASSGATE__PASSWORD__MEMORY_KIB", "4096".to_owned()),
        ("PASSGATE__PASSWORD__ITERATIONS", "1".to_owned()),
    ];
    let env = env
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .chain(extra_env.iter().map(|(k, v)| (k.to_string(), v.to_string())))
        .collect();
    Settings::load_from(None, env).expect("test settings are valid")
}

pub async fn spawn_app(db: Db) -> TestApp {
    spawn_app_with(TestDb::create(db).await, &[ANDROID_ORIGIN], &[]).await
}

/// A node with some settings changed, as `PASSGATE__...` variables.
pub async fn spawn_app_configured(db: Db, env: &[(&str, &str)]) -> TestApp {
    spawn_app_with(TestDb::create(db).await, &[ANDROID_ORIGIN], env).await
}

/// A second node on the same database (its own port, keys read from the
/// database, no shared memory) that also serves the first node's origin,
/// as two nodes behind one load balancer do.
pub async fn spawn_app_on(other: &TestApp) -> TestApp {
    spawn_app_with(other.db.share(), &[ANDROID_ORIGIN, &other.origin], &[]).await
}

pub async fn spawn_app_with(
    db: TestDb,
    extra_origins: &[&str],
    extra_env: &[(&str, &str)],
) -> TestApp {
    init_logs();
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    let port = listener.local_addr().unwrap().port();
    let settings = test_settings(&db.url, port, extra_origins, extra_env);
    let store = store::connect(&settings.database).await.expect("connect the test database");
    let clock = ManualClock::default();
    let app = Application::build_with(settings, listener, store.clone(), Arc::new(clock.clone()))
        .await
        .expect("build the app");
    let core = app.core();
    let admin_port = app.admin_port();
    tokio::spawn(app.run_until_stopped());
    TestApp {
        address: format!("http://127.0.0.1:{port}"),
        port,
        admin_port,
        client: reqwest::Client::new(),
        store,
        core,
        clock,
        db,
        origin: format!("http://localhost:{port}"),
    }
}

/// A snapshot of everything a refused request must leave alone.
#[derive(Debug, PartialEq, Eq)]
pub struct Fingerprint(Vec<(String, i64)>);

impl Fingerprint {
    /// Without the ceremony count: a refused finish still uses up its
    /// ceremony (a challenge is answered at most once), and nothing else.
    pub fn ignoring_ceremonies(&self) -> Fingerprint {
        Fingerprint(self.0.iter().filter(|(sql, _)| !sql.contains("ceremony")).cloned().collect())
    }
}

impl TestApp {
    /// This node's database, for another node to share.
    pub fn db_share(&self) -> TestDb {
        self.db.share()
    }

    pub fn authenticator(&self) -> SoftAuthenticator {
        SoftAuthenticator::new(&self.origin)
    }

    pub async fn post(&self, path: &str, body: &Value) -> Response {
        self.client
            .post(format!("{}{path}", self.address))
            .json(body)
            .send()
            .await
            .expect("request sent")
    }

    pub async fn post_bearer(&self, path: &str, bearer: &str, body: &Value) -> Response {
        self.client
            .post(format!("{}{path}", self.address))
            .bearer_auth(bearer)
            .json(body)
            .send()
            .await
            .expect("request sent")
    }

    pub async fn post_raw(&self, path: &str, content_type: &str, body: Vec<u8>) -> Response {
        self.client
            .post(format!("{}{path}", self.address))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .expect("request sent")
    }

    pub async fn get(&self, path: &str, bearer: Option<&str>) -> Response {
        let mut request = self.client.get(format!("{}{path}", self.address));
        if let Some(token) = bearer {
            request = request.bearer_auth(token);
        }
        request.send().await.expect("request sent")
    }

    pub async fn register_start(&self, username: &str) -> Response {
        self.post("/v1/register/start", &json!({ "username": username })).await
    }

    pub async fn register_finish(&self, ceremony_id: &str, credential: &Value) -> Response {
        self.post(
            "/v1/register/finish",
            &json!({ "ceremony_id": ceremony_id, "credential": credential }),
        )
        .await
    }

    pub async fn login_start(&self, username: Option<&str>) -> Response {
        let body = match username {
            Some(name) => json!({ "username": name }),
            None => json!({}),
        };
        self.post("/v1/login/start", &body).await
    }

    pub async fn login_finish(&self, ceremony_id: &str, credential: &Value) -> Response {
        self.post(
            "/v1/login/finish",
            &json!({ "ceremony_id": ceremony_id, "credential": credential }),
        )
        .await
    }

    pub async fn refresh(&self, refresh_token: &str) -> Response {
        self.post("/v1/token/refresh", &json!({ "refresh_token": refresh_token })).await
    }

    pub async fn logout(&self, refresh_token: &str) -> Response {
        self.post("/v1/logout", &json!({ "refresh_token": refresh_token })).await
    }

    pub async fn me(&self, access_token: &str) -> Response {
        self.get("/v1/me", Some(access_token)).await
    }

    /// Starts a registration and returns (ceremony_id, publicKey).
    pub async fn started_registration(&self, username: &str) -> (String, Value) {
        started(self.register_start(username).await).await
    }

    /// Starts a sign-in and returns (ceremony_id, publicKey).
    pub async fn started_login(&self, username: Option<&str>) -> (String, Value) {
        started(self.login_start(username).await).await
    }

    /// Registers `username` with the authenticator; returns the token set.
    pub async fn register(&self, authenticator: &mut SoftAuthenticator, username: &str) -> Value {
        match self.try_register(authenticator, username).await {
            Ok(tokens) => tokens,
            Err(refused) => panic!("registration of {username}: {}", refused.status()),
        }
    }

    /// Registers `username`: the token set, or the answer that refused it
    /// (at the start or at the finish).
    pub async fn try_register(
        &self,
        authenticator: &mut SoftAuthenticator,
        username: &str,
    ) -> Result<Value, Response> {
        let start = self.register_start(username).await;
        if start.status() != StatusCode::OK {
            return Err(start);
        }
        let (ceremony_id, options) = started(start).await;
        let credential = authenticator.register(&options);
        let response = self.register_finish(&ceremony_id, &credential).await;
        if response.status() != StatusCode::CREATED {
            return Err(response);
        }
        Ok(response.json().await.expect("token set"))
    }

    /// Signs in (username-first or discoverable); returns the response.
    pub async fn login(
        &self,
        authenticator: &mut SoftAuthenticator,
        username: Option<&str>,
    ) -> Response {
        let (ceremony_id, options) = self.started_login(username).await;
        let credential = authenticator.login(&options);
        self.login_finish(&ceremony_id, &credential).await
    }

    /// Counts and sums over every table that a request could change.
    pub async fn fingerprint(&self) -> Fingerprint {
        const PROBES: [&str; 22] = [
            "select count(*) from app_user",
            "select count(*) from credential",
            "select cast(coalesce(sum(sign_count), 0) as bigint) from credential",
            "select count(*) from credential where last_used_at is not null",
            "select count(*) from session",
            "select count(*) from session where revoked_at is not null",
            "select count(*) from refresh_token",
            "select count(*) from refresh_token where retired_at is not null",
            "select count(*) from ceremony",
            "select count(*) from signing_key",
            "select count(*) from user_password",
            "select count(*) from user_totp where confirmed_at is not null",
            "select cast(coalesce(sum(last_step), 0) as bigint) from user_totp",
            "select count(*) from recovery_code where used_at is null",
            "select count(*) from mfa_token",
            "select cast(coalesce(sum(tries), 0) as bigint) from email_code",
            "select cast(coalesce(sum(failures), 0) as bigint) from login_failure",
            "select count(*) from app_user where roles <> '' or locked_at is not null",
            "select count(*) from app_user where email_verified",
            "select count(*) from email_code",
            "select count(*) from enrolment_code",
            "select count(*) from passkey_recovery_code where used_at is null",
        ];
        let mut values = Vec::new();
        macro_rules! probe_all {
            ($pool:expr) => {{
                let pool = $pool;
                for sql in PROBES {
                    let (n,): (i64,) = sqlx::query_as(sql).fetch_one(&pool).await.expect(sql);
                    values.push((sql.to_owned(), n));
                }
                pool.close().await;
            }};
        }
        match self.db.db {
            Db::Sqlite => {
                probe_all!(sqlx::SqlitePool::connect(&self.db.url).await.expect("sqlite"))
            }
            Db::Postgres => {
                probe_all!(sqlx::PgPool::connect(&self.db.url).await.expect("postgres"))
            }
        }
        Fingerprint(values)
    }
}

/// A pool of the test's own on the app's database: it sees only what the
/// app has committed, as another node or process would.
pub enum Observer {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

impl Observer {
    /// A count, by a query with one text parameter.
    pub async fn count(&self, sql: &'static str, arg: &str) -> i64 {
        match self {
            Observer::Sqlite(pool) => sqlx::query_scalar(sql).bind(arg).fetch_one(pool).await,
            Observer::Postgres(pool) => sqlx::query_scalar(sql).bind(arg).fetch_one(pool).await,
        }
        .expect(sql)
    }

    /// A write with one text parameter; the rows it wrote, or its error.
    pub async fn execute(&self, sql: &'static str, arg: &str) -> Result<u64, sqlx::Error> {
        Ok(match self {
            Observer::Sqlite(pool) => {
                sqlx::query(sql).bind(arg).execute(pool).await?.rows_affected()
            }
            Observer::Postgres(pool) => {
                sqlx::query(sql).bind(arg).execute(pool).await?.rows_affected()
            }
        })
    }
}

impl TestApp {
    /// An observer whose writes give up after `wait` on a locked database.
    pub async fn observer(&self, wait: std::time::Duration) -> Observer {
        match self.db.db {
            Db::Sqlite => {
                let options: sqlx::sqlite::SqliteConnectOptions =
                    self.db.url.parse().expect("sqlite url");
                let pool = sqlx::SqlitePool::connect_with(options.busy_timeout(wait));
                Observer::Sqlite(pool.await.expect("sqlite"))
            }
            Db::Postgres => {
                let pool = sqlx::postgres::PgPoolOptions::new().acquire_timeout(wait);
                Observer::Postgres(pool.connect(&self.db.url).await.expect("postgres"))
            }
        }
    }
}

async fn started(response: Response) -> (String, Value) {
    assert_eq!(response.status(), StatusCode::OK, "ceremony start");
    let body: Value = response.json().await.expect("start body");
    let ceremony_id = body["ceremony_id"].as_str().expect("ceremony_id").to_owned();
    (ceremony_id, body["publicKey"].clone())
}

/// Asserts a problem+json answer with this status and code, whose
/// request_id matches the x-request-id header; returns the body.
pub async fn assert_problem(response: Response, status: u16, code: &str) -> Value {
    assert_eq!(response.status().as_u16(), status, "status for expected {code}");
    let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
    assert_eq!(content_type, "application/problem+json");
    let request_id = response.headers()["x-request-id"].to_str().unwrap().to_owned();
    let body: Value = response.json().await.expect("problem body");
    assert_eq!(body["code"], code, "problem: {body}");
    assert_eq!(body["status"], status);
    assert_eq!(body["request_id"], request_id.as_str());
    assert!(body["title"].is_string() && body["detail"].is_string() && body["type"].is_string());
    body
}

/// The claims of a JWT, unverified (tests check the signature separately).
pub fn claims_of(jwt: &str) -> Value {
    use base64::Engine;
    let payload = jwt.split('.').nth(1).expect("a JWT has three parts");
    let bytes =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).expect("base64url");
    serde_json::from_slice(&bytes).expect("claims JSON")
}

/// Declares one test per engine: `name::sqlite` and `name::postgres`.
macro_rules! on_both {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test]
                async fn sqlite() {
                    super::$name($crate::helpers::Db::Sqlite).await
                }
                #[tokio::test]
                async fn postgres() {
                    super::$name($crate::helpers::Db::Postgres).await
                }
            }
        )*
    };
}
pub(crate) use on_both;
