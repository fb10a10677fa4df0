//! Health, readiness, request ids and the API description.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{Db, assert_problem, on_both, spawn_app};

on_both!(
    health_and_readiness_answer_with_a_request_id,
    a_client_supplied_request_id_is_not_trusted_by_default,
    openapi_describes_every_contract_endpoint_and_each_one_exists,
    the_demo_page_is_served_at_the_root,
);

async fn health_and_readiness_answer_with_a_request_id(db: Db) {
    let app = spawn_app(db).await;
    for path in ["/healthz", "/readyz"] {
        let response = app.get(path, None).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let id = response.headers()["x-request-id"].to_str().unwrap();
        assert_eq!(uuid::Uuid::parse_str(id).unwrap().get_version_num(), 7);
    }
}

async fn a_client_supplied_request_id_is_not_trusted_by_default(db: Db) {
    let app = spawn_app(db).await;
    let response = app
        .client
        .get(format!("{}/nowhere", app.address))
        .header("x-request-id", "forged-id")
        .send()
        .await
        .unwrap();
    assert_ne!(response.headers()["x-request-id"], "forged-id");
    assert_problem(response, 404, "not_found").await;
}

/// The endpoints of the API contract sections this server implements.
const CONTRACT: &[(&str, &str)] = &[
    ("post", "/v1/register/start"),
    ("post", "/v1/register/finish"),
    ("post", "/v1/login/start"),
    ("post", "/v1/login/finish"),
    ("post", "/v1/token/refresh"),
    ("post", "/v1/logout"),
    ("get", "/v1/me"),
    ("post", "/v1/login/password"),
    ("post", "/v1/login/mfa/totp"),
    ("post", "/v1/login/mfa/email/send"),
    ("post", "/v1/login/mfa/email/verify"),
    ("put", "/v1/me/password"),
    ("post", "/v1/me/email"),
    ("post", "/v1/me/email/verify"),
    ("post", "/v1/me/totp/start"),
    ("post", "/v1/me/totp/finish"),
    ("delete", "/v1/me/totp"),
    ("get", "/v1/me/devices"),
    ("post", "/v1/me/devices/start"),
    ("post", "/v1/me/devices/finish"),
    ("patch", "/v1/me/devices/{device_id}"),
    ("delete", "/v1/me/devices/{device_id}"),
    ("get", "/v1/admin/users"),
    ("get", "/v1/admin/users/{user_id}"),
    ("post", "/v1/admin/users/{user_id}/reset-devices"),
    ("delete", "/v1/admin/users/{user_id}/devices/{device_id}"),
    ("post", "/v1/admin/users/{user_id}/lock"),
    ("post", "/v1/admin/users/{user_id}/unlock"),
    ("get", "/v1/admin/audit"),
    ("post", "/v1/stepup/start"),
    ("post", "/v1/stepup/finish"),
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
    ("get", "/openapi.json"),
    ("get", "/.well-known/jwks.json"),
    ("get", "/.well-known/assetlinks.json"),
    ("get", "/.well-known/apple-app-site-association"),
    ("get", "/.well-known/webauthn"),
];

async fn openapi_describes_every_contract_endpoint_and_each_one_exists(db: Db) {
    let app = spawn_app(db).await;
    let spec: Value = app.get("/openapi.json", None).await.json().await.unwrap();
    assert!(spec["openapi"].as_str().unwrap().starts_with("3.1"));
    for (method, path) in CONTRACT {
        assert!(spec["paths"][path][method].is_object(), "{method} {path} missing from openapi");
    }
    // And nothing described is missing from the app: every path answers
    // its method with something other than "no such endpoint".
    for (path, item) in spec["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            let url = format!("{}{path}", app.address);
            let request = match method.as_str() {
                "get" => app.client.get(url),
                "post" => app.client.post(url).json(&serde_json::json!({})),
                "put" => app.client.put(url).json(&serde_json::json!({})),
                "delete" => app.client.delete(url),
                "patch" => app.client.patch(url).json(&serde_json::json!({})),
                other => panic!("unexpected method {other}"),
            };
            let response = request.send().await.unwrap();
            let status = response.status();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            assert!(
                body["detail"] != "no such endpoint" && status != StatusCode::METHOD_NOT_ALLOWED,
                "{method} {path}: {status} {body}"
            );
        }
    }
}

/// The published WebAuthn schemas hold what really passes: the options a
/// registration and a sign-in start with, and the credentials an
/// authenticator answers with, have every member the schemas require; and
/// each ceremony's start links to its finish with the ceremony_id (the
/// fuzzer in tests/fuzz follows these links to reach the verifier).
#[tokio::test]
async fn the_webauthn_schemas_describe_real_ceremonies_and_link_start_to_finish() {
    let app = spawn_app(Db::Sqlite).await;
    let spec: Value = app.get("/openapi.json", None).await.json().await.unwrap();
    let schema = |name: &str| &spec["components"]["schemas"][name];
    let mut authenticator = crate::authenticator::SoftAuthenticator::new(&app.origin);

    let (ceremony_id, options) = app.started_registration("schema-user").await;
    assert_eq!(missing(&spec, schema("PublicKeyCredentialCreationOptionsJSON"), &options), [""; 0]);
    let credential = authenticator.register(&options);
    assert_eq!(missing(&spec, schema("RegistrationResponseJSON"), &credential), [""; 0]);
    assert_eq!(app.register_finish(&ceremony_id, &credential).await.status(), StatusCode::CREATED);

    let (_, options) = app.started_login(Some("schema-user")).await;
    assert_eq!(missing(&spec, schema("PublicKeyCredentialRequestOptionsJSON"), &options), [""; 0]);
    let assertion = authenticator.login(&options);
    assert_eq!(missing(&spec, schema("AuthenticationResponseJSON"), &assertion), [""; 0]);

    for (start, finish) in [
        ("/v1/register/start", "register_finish"),
        ("/v1/login/start", "login_finish"),
        ("/v1/me/devices/start", "devices_finish"),
        ("/v1/enrol/start", "enrol_finish"),
        ("/v1/stepup/start", "stepup_finish"),
    ] {
        let link = &spec["paths"][start]["post"]["responses"]["200"]["links"][finish];
        assert_eq!(link["operationId"], finish, "{start}");
        assert_eq!(link["requestBody"]["ceremony_id"], "$response.body#/ceremony_id", "{start}");
    }
}

/// The members `schema` requires that `value` lacks, at any depth, as
/// JSON pointers (following `$ref`s into the document's components).
fn missing(spec: &Value, schema: &Value, value: &Value) -> Vec<String> {
    let schema = match schema["$ref"].as_str() {
        Some(reference) => spec.pointer(&reference[1..]).expect("a $ref into the document"),
        None => schema,
    };
    let mut gaps = Vec::new();
    for name in schema["required"].as_array().into_iter().flatten() {
        let name = name.as_str().unwrap();
        if value.get(name).is_none() {
            gaps.push(format!("/{name}"));
        }
    }
    for (name, member) in schema["properties"].as_object().into_iter().flatten() {
        if let Some(inner) = value.get(name).filter(|v| v.is_object()) {
            gaps.extend(
                missing(spec, member, inner).into_iter().map(|gap| format!("/{name}{gap}")),
            );
        }
    }
    gaps
}

/// The route table is `routes::configure`; every resource and method it
/// registers must be in /openapi.json, so nothing is served undocumented.
/// Read from the source, since actix does not list its routes.
#[tokio::test]
async fn every_route_the_app_registers_is_in_openapi() {
    let app = spawn_app(Db::Sqlite).await;
    let spec: Value = app.get("/openapi.json", None).await.json().await.unwrap();
    let source = include_str!("../../src/routes/mod.rs");
    let table = &source[source.find("pub fn configure").expect("configure")..];
    let mut registered = 0;
    for resource in table.split("web::resource(\"").skip(1) {
        let path = &resource[..resource.find('"').unwrap()];
        let chain = &resource[..resource.find(".default_service").unwrap()];
        for method in ["get", "post", "put", "patch", "delete"] {
            if chain.contains(&format!(".{method}(")) {
                registered += 1;
                assert!(
                    spec["paths"][path][method].is_object(),
                    "{method} {path} is served but not in /openapi.json"
                );
            }
        }
    }
    assert!(registered >= CONTRACT.len(), "the route table was read ({registered} routes)");
}

async fn the_demo_page_is_served_at_the_root(db: Db) {
    let app = spawn_app(db).await;
    let response = app.get("/", None).await;
    assert_eq!(response.status(), StatusCode::OK);
    let html = response.text().await.unwrap();
    assert!(html.contains("/app.js"));
    assert_eq!(app.get("/app.js", None).await.status(), StatusCode::OK);
}

/// PostgreSQL only: its database can be taken away under a running node.
#[tokio::test]
async fn a_lost_database_makes_readiness_fail_without_leaking_internals() {
    let app = spawn_app(Db::Postgres).await;
    let name = app.db.url.rsplit('/').next().unwrap().to_owned();
    let admin = sqlx::PgPool::connect(&crate::helpers::postgres_admin_url()).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("drop database {name} with (force)")))
        .execute(&admin)
        .await
        .unwrap();

    let ready = app.get("/readyz", None).await;
    let body = assert_problem(ready, 503, "unavailable").await;
    let login = app.login_start(Some("alice")).await;

    assert!(login.status().is_server_error());
    let text = login.text().await.unwrap();
    for leaked in [name.as_str(), "sqlx", "select", "database", "src/"] {
        assert!(!text.to_lowercase().contains(leaked), "{leaked} leaked: {text}");
        assert!(!body.to_string().contains(leaked), "{leaked} leaked: {body}");
    }
}

/// A TCP proxy on loopback that can cut every connection open through it
/// without a word to either side, as a network partition or a firewall
/// dropping its state does: from then on those connections swallow what
/// is sent and never answer. The next connection opened gets through, and
/// so do all after it.
struct Partition {
    port: u16,
    cut: Arc<AtomicBool>,
}

impl Partition {
    async fn to(target: String) -> Partition {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let cut = Arc::new(AtomicBool::new(false));
        let cutting = cut.clone();
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let Ok(outbound) = tokio::net::TcpStream::connect(&target).await else { return };
                // A new connection gets through: the partition has healed
                // for it, not for the connections it cut.
                cutting.store(false, Ordering::SeqCst);
                let severed = Arc::new(AtomicBool::new(false));
                let (from_client, to_client) = inbound.into_split();
                let (from_server, to_server) = outbound.into_split();
                for (from, to) in [(from_client, to_server), (from_server, to_client)] {
                    let (cut, severed) = (cutting.clone(), severed.clone());
                    tokio::spawn(Self::pump(from, to, cut, severed));
                }
            }
        });
        Partition { port, cut }
    }

    async fn pump(
        mut from: tokio::net::tcp::OwnedReadHalf,
        mut to: tokio::net::tcp::OwnedWriteHalf,
        cut: Arc<AtomicBool>,
        severed: Arc<AtomicBool>,
    ) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut buffer = vec![0; 64 << 10];
        while let Ok(n) = from.read(&mut buffer).await {
            if n == 0 {
                return;
            }
            if cut.load(Ordering::SeqCst) {
                severed.store(true, Ordering::SeqCst);
            }
            if !severed.load(Ordering::SeqCst) && to.write_all(&buffer[..n]).await.is_err() {
                return;
            }
        }
    }

    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
    }
}

/// A TCP proxy on loopback that can take the database away: while down,
/// it closes every connection through it and every new one at once, as a
/// stopped or restarting PostgreSQL does; then it lets them through again.
struct Outage {
    port: u16,
    down: Arc<AtomicBool>,
    open: Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Outage {
    async fn to(target: String) -> Outage {
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let down = Arc::new(AtomicBool::new(false));
        let open = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (is_down, opened) = (down.clone(), open.clone());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if is_down.load(Ordering::SeqCst) {
                    let _ = inbound.shutdown().await;
                    continue;
                }
                let Ok(outbound) = tokio::net::TcpStream::connect(&target).await else { return };
                let link = tokio::spawn(async move {
                    let (mut inbound, mut outbound) = (inbound, outbound);
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                });
                opened.lock().unwrap().push(link.abort_handle());
            }
        });
        Outage { port, down, open }
    }

    /// The database goes away: open connections are closed, new ones too.
    fn down(&self) {
        self.down.store(true, Ordering::SeqCst);
        for link in self.open.lock().unwrap().drain(..) {
            link.abort();
        }
    }

    fn up(&self) {
        self.down.store(false, Ordering::SeqCst);
    }
}

/// PostgreSQL unreachable: requests fail within 2 s with 503 `unavailable`
/// (no internals in the body), /readyz says 503, and once the database is
/// back the node serves again within 5 s, with no restart.
#[tokio::test]
async fn an_unreachable_database_answers_503_at_once_and_service_returns_by_itself() {
    let db = crate::helpers::TestDb::create(Db::Postgres).await;
    let (server, name) = db.server_and_name();
    let outage = Outage::to(server).await;
    let proxied = db.via_port(outage.port);
    let app = crate::helpers::spawn_app_with(proxied, &[], &[]).await;
    let mut passkey = app.authenticator();
    app.register(&mut passkey, "outage").await;
    let timed = |path: &'static str| {
        let app = &app;
        async move {
            let started = Instant::now();
            let answer = match path {
                "/readyz" => app.get(path, None).await,
                _ => app.login_start(Some("outage")).await,
            };
            (answer, started.elapsed())
        }
    };

    outage.down();
    for path in ["/readyz", "/v1/login/start", "/readyz"] {
        let (answer, took) = timed(path).await;
        assert!(took < Duration::from_secs(2), "{path} answered after {took:?}");
        let body = assert_problem(answer, 503, "unavailable").await;
        assert!(!body.to_string().contains(&name), "{body}");
    }

    outage.up();
    let back = Instant::now();
    loop {
        let (answer, _) = timed("/readyz").await;
        if answer.status() == StatusCode::OK {
            break;
        }
        assert!(back.elapsed() < Duration::from_secs(5), "not back after {:?}", back.elapsed());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(app.login(&mut passkey, Some("outage")).await.status(), StatusCode::OK);
}

/// A database that stops answering without closing anything holds no
/// request past `server.request_timeout`: the caller gets a 503
/// problem+json with its request_id, and once new connections get
/// through, the node drops the dead ones and answers again.
#[tokio::test]
async fn a_database_that_stops_answering_gets_a_503_at_the_deadline_and_the_node_recovers() {
    let db = crate::helpers::TestDb::create(Db::Postgres).await;
    let (server, _) = db.server_and_name();
    let partition = Partition::to(server).await;
    let proxied = db.via_port(partition.port);
    let deadline = ("PASSGATE__SERVER__REQUEST_TIMEOUT_SECONDS", "1");
    let app = crate::helpers::spawn_app_with(proxied, &[], &[deadline]).await;
    // Without the deadline the node would not answer at all.
    let ready = || async {
        let started = Instant::now();
        let answer = tokio::time::timeout(Duration::from_secs(10), app.get("/readyz", None)).await;
        (answer.expect("no answer within 10 s"), started.elapsed())
    };
    assert_eq!(ready().await.0.status(), StatusCode::OK);

    partition.cut();
    let (answer, waited) = ready().await;
    // The deadline's answer is made outside the handlers, and still carries
    // the security headers.
    assert_eq!(answer.headers()["x-content-type-options"], "nosniff");
    let problem = assert_problem(answer, 503, "unavailable").await;
    assert!(waited < Duration::from_secs(3), "answered after {waited:?}");
    // Support finds the cause from the id the caller was given.
    let request_id = problem["request_id"].as_str().unwrap();
    let logs = crate::helpers::captured_logs();
    let lines: Vec<&str> = logs.lines().filter(|line| line.contains(request_id)).collect();
    assert!(lines.iter().any(|line| line.contains("request timed out")), "{lines:#?}");
    assert!(lines.iter().any(|line| line.contains("\"status\":503")), "{lines:#?}");
    // The cut holds for connections open at the time only: the next ones
    // pass, as when a partition heals. Each dead connection the node still
    // holds may cost one more request its deadline.
    let mut refused = 0;
    loop {
        let (answer, waited) = ready().await;
        if answer.status() == StatusCode::OK {
            break;
        }
        assert!(waited < Duration::from_secs(3), "answered after {waited:?}");
        assert_problem(answer, 503, "unavailable").await;
        refused += 1;
        assert!(refused <= 4, "still refused after {refused} requests");
    }
    for _ in 0..3 {
        assert_eq!(ready().await.0.status(), StatusCode::OK);
    }
}

/// Housekeeping on a database that stops answering gives up at its round
/// limit (instead of holding its connection until TCP notices, which can
/// take many minutes), and its next round, once the database answers
/// again, does its work.
#[tokio::test]
async fn housekeeping_on_a_database_that_stops_answering_gives_up_at_its_limit() {
    use passgate::service::housekeeping::Round;
    let db = crate::helpers::TestDb::create(Db::Postgres).await;
    let (server, _) = db.server_and_name();
    let partition = Partition::to(server).await;
    let proxied = db.via_port(partition.port);
    let app = crate::helpers::spawn_app_with(proxied, &[], &[]).await;
    let limit = Duration::from_secs(1);
    assert_eq!(app.core.housekeeping.round(limit).await, Round::Done);

    partition.cut();
    let started = Instant::now();
    assert_eq!(app.core.housekeeping.round(limit).await, Round::TimedOut);
    assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());
    // The cut holds for the connections open at the time; each may cost
    // one more round before the node has replaced them.
    let mut rounds = 0;
    while app.core.housekeeping.round(limit).await == Round::TimedOut {
        rounds += 1;
        assert!(rounds <= 4, "still cut short after {rounds} rounds");
    }
}

/// The real binary on the embedded defaults, started in `folder`.
struct Binary {
    server: std::process::Child,
    base: String,
}

impl Binary {
    /// Starts it and waits until /readyz answers (None if it never does).
    async fn start(folder: &std::path::Path, port: u16) -> Option<Binary> {
        Self::start_with(folder, port, &[]).await
    }

    /// `start`, with some settings changed.
    async fn start_with(
        folder: &std::path::Path,
        port: u16,
        env: &[(&str, &str)],
    ) -> Option<Binary> {
        let server = std::process::Command::new(env!("CARGO_BIN_EXE_passgate"))
            .current_dir(folder)
            .env("PASSGATE__SERVER__BIND", format!("127.0.0.1:{port}"))
            .env("PASSGATE__WEBAUTHN__ORIGINS", format!("http://localhost:{port}"))
            .envs(env.iter().copied())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let mut binary = Binary { server, base: format!("http://127.0.0.1:{port}") };
        let client = reqwest::Client::new();
        for _ in 0..100 {
            let response = client.get(format!("{}/readyz", binary.base)).send().await;
            if response.is_ok_and(|r| r.status() == StatusCode::OK) {
                return Some(binary);
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        binary.kill();
        None
    }

    /// SIGKILL: no shutdown, no flush, no checkpoint.
    fn kill(&mut self) {
        let _ = self.server.kill();
        self.server.wait().unwrap();
    }

    async fn post(&self, path: &str, body: &Value) -> reqwest::Response {
        reqwest::Client::new().post(format!("{}{path}", self.base)).json(body).send().await.unwrap()
    }

    /// Runs a ceremony's start and finish; returns the finish's body.
    async fn ceremony(
        &self,
        kind: &str,
        start: Value,
        answer: impl FnOnce(&Value) -> Value,
    ) -> Value {
        let started: Value =
            self.post(&format!("/v1/{kind}/start"), &start).await.json().await.unwrap();
        let credential = answer(&started["publicKey"]);
        let body =
            serde_json::json!({ "ceremony_id": started["ceremony_id"], "credential": credential });
        let finished = self.post(&format!("/v1/{kind}/finish"), &body).await;
        assert!(finished.status().is_success(), "{kind}: {}", finished.status());
        finished.json().await.unwrap()
    }
}

/// Registrations under load, and a SIGKILL in the middle of it: every
/// registration the server answered 201 for is there after a restart on
/// the same files, and its passkey signs in.
#[tokio::test]
async fn a_sigkill_during_registrations_loses_none_that_were_answered() {
    use std::cell::RefCell;
    let folder = tempfile::tempdir().unwrap();
    let port = free_port();
    let unlimited = [("PASSGATE__LIMITS__IP_REQUESTS_PER_MINUTE", "1000000")];
    let mut binary = Binary::start_with(folder.path(), port, &unlimited).await.expect("ready");
    let origin = format!("http://localhost:{port}");
    let base = binary.base.clone();
    let answered = RefCell::new(Vec::new());
    let client = reqwest::Client::new();
    let worker = |worker: usize| {
        let (client, base, origin, answered) = (&client, &base, &origin, &answered);
        async move {
            for n in 0.. {
                let username = format!("load-{worker}-{n}");
                let mut passkey = crate::authenticator::SoftAuthenticator::new(origin);
                let start = serde_json::json!({ "username": username });
                let Ok(started) =
                    client.post(format!("{base}/v1/register/start")).json(&start).send().await
                else {
                    return;
                };
                let Ok(started) = started.json::<Value>().await else { return };
                let credential = passkey.register(&started["publicKey"]);
                let body = serde_json::json!({"ceremony_id": started["ceremony_id"], "credential": credential});
                let Ok(finished) =
                    client.post(format!("{base}/v1/register/finish")).json(&body).send().await
                else {
                    return;
                };
                if finished.status() == StatusCode::CREATED {
                    answered.borrow_mut().push((username, passkey));
                }
            }
        }
    };
    let killer = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        binary.kill();
    };
    let workers = futures_util::future::join_all((0..8).map(worker));
    tokio::join!(workers, killer);
    let mut answered = answered.into_inner();
    assert!(answered.len() >= 5, "only {} registrations before the kill", answered.len());

    let again = Binary::start_with(folder.path(), port, &unlimited).await.expect("ready again");
    for (username, passkey) in &mut answered {
        let login = serde_json::json!({ "username": username });
        again.ceremony("login", login, |options| passkey.login(options)).await;
    }
}

/// A failed assertion does not leave the server running.
impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The README's first command, as a newcomer runs it: the real binary with
/// the embedded defaults, in an empty folder.
#[tokio::test]
async fn the_binary_starts_on_embedded_defaults_and_creates_its_sqlite_file() {
    let folder = tempfile::tempdir().unwrap();
    let binary = Binary::start(folder.path(), free_port()).await;
    let database = folder.path().join("data/passgate.db");
    let journal_mode = if binary.is_some() {
        let pool =
            sqlx::SqlitePool::connect(&format!("sqlite:{}", database.display())).await.unwrap();
        let (mode,): (String,) =
            sqlx::query_as("pragma journal_mode").fetch_one(&pool).await.unwrap();
        mode
    } else {
        String::new()
    };
    binary.expect("the server never became ready").kill();
    assert!(database.is_file());
    assert_eq!(journal_mode, "wal");
}

/// Issue 6's durability rule: what a sign-in wrote (handle recorded as used,
/// counter, session, refresh token, audit row) is there after a SIGKILL,
/// with no shutdown to flush or checkpoint anything, and a restarted
/// server honours the session. (That it is written before the answer goes
/// out rests on `complete_login` returning only after its commit.)
#[tokio::test]
async fn a_sign_in_answered_before_a_sigkill_is_all_there_after_it() {
    let folder = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut binary = Binary::start(folder.path(), port).await.expect("ready");
    let mut passkey =
        crate::authenticator::SoftAuthenticator::new(&format!("http://localhost:{port}"));
    let register = serde_json::json!({ "username": "kill-me" });
    binary.ceremony("register", register, |options| passkey.register(options)).await;
    let login = serde_json::json!({ "username": "kill-me" });
    let tokens = binary.ceremony("login", login, |options| passkey.login(options)).await;
    binary.kill();

    let database = folder.path().join("data/passgate.db");
    let pool = sqlx::SqlitePool::connect(&format!("sqlite:{}", database.display())).await.unwrap();
    let count = |sql: &'static str| {
        let pool = pool.clone();
        async move { sqlx::query_scalar::<_, i64>(sql).fetch_one(&pool).await.unwrap() }
    };
    // The registration's ceremony taken; the sign-in's handle recorded as used.
    assert_eq!(count("select count(*) from ceremony where kind <> 'used'").await, 0);
    assert_eq!(count("select count(*) from ceremony where kind = 'used'").await, 1);
    let counted = "select count(*) from credential where sign_count > 0 and last_used_at > 0";
    assert_eq!(count(counted).await, 1, "the sign-in's counter");
    assert_eq!(count("select count(*) from session where amr like '%hwk%'").await, 2);
    assert_eq!(count("select count(*) from refresh_token").await, 2);
    let logins = "select count(*) from audit_event where event = 'login' and outcome = 'success'";
    assert_eq!(count(logins).await, 1);
    pool.close().await;

    let mut again = Binary::start(folder.path(), port).await.expect("ready after the kill");
    let refresh = serde_json::json!({ "refresh_token": tokens["refresh_token"] });
    let refreshed = again.post("/v1/token/refresh", &refresh).await;
    again.kill();
    assert_eq!(refreshed.status(), StatusCode::OK);
}

#[test]
fn the_binary_refuses_bad_configuration_naming_the_key() {
    let cases = [
        ("PASSGATE__SERVER__BIND", "not-an-address", "server.bind"),
        ("PASSGATE__WEBAUTHN__ORIGINS", "https://elsewhere.example", "webauthn.origins"),
        ("PASSGATE__TOKENS__ACCESS_TTL_SECONDS", "3600", "tokens.access_ttl_seconds"),
    ];
    for (key, value, named) in cases {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_passgate"))
            .env(key, value)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{key}={value} was accepted");
        assert!(stderr.contains(named), "{key}={value}: {stderr}");
    }
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_passgate"))
        .args(["--config", "/nonexistent/passgate.toml"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&output.stderr).contains("--config"));
}

/// The value of one series in a Prometheus text exposition, or 0.
fn series(text: &str, name_and_labels: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(name_and_labels)?.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn metrics_count_requests_ceremonies_and_clone_warnings() {
    let app = spawn_app(Db::Sqlite).await;
    let mut phone = app.authenticator();
    app.register(&mut phone, "alice").await;
    assert_eq!(app.login(&mut phone, None).await.status(), StatusCode::OK);
    phone.set_counter(&phone.credential_ids()[0], 0);
    assert_eq!(app.login(&mut phone, Some("alice")).await.status(), StatusCode::UNAUTHORIZED);

    // A made-up method name must not become a label of its own.
    let brew = reqwest::Method::from_bytes(b"BREW").unwrap();
    app.client.request(brew, format!("{}/healthz", app.address)).send().await.unwrap();
    let response = app.get("/metrics", None).await;
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    let text = response.text().await.unwrap();

    assert_eq!(
        series(&text, r#"passgate_ceremonies_total{kind="register",outcome="finished",reason=""}"#),
        1.0
    );
    assert_eq!(
        series(&text, r#"passgate_ceremonies_total{kind="login",outcome="started",reason=""}"#),
        2.0
    );
    assert_eq!(
        series(&text, r#"passgate_ceremonies_total{kind="login",outcome="finished",reason=""}"#),
        1.0
    );
    assert_eq!(
        series(
            &text,
            r#"passgate_ceremonies_total{kind="login",outcome="failed",reason="invalid_credentials"}"#
        ),
        1.0
    );
    assert_eq!(series(&text, "passgate_clone_warnings_total"), 1.0);
    assert_eq!(
        series(
            &text,
            r#"passgate_http_requests_total{method="POST",route="/v1/login/finish",status="401"}"#
        ),
        1.0
    );
    assert_eq!(
        series(
            &text,
            r#"passgate_http_request_duration_seconds_count{method="POST",route="/v1/register/start"}"#
        ),
        1.0
    );
    assert_eq!(
        series(&text, r#"passgate_build_info{version=""#.trim_end_matches('"')).max(1.0),
        1.0
    );
    assert!(text.contains("passgate_db_pool_connections{state=\"idle\"}"));
    assert!(text.contains(r#"method="OTHER",route="/healthz""#) && !text.contains("BREW"));
}
