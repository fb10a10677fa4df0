//! The container image's way of running passgate, checked without a
//! Docker engine: the binary runs as an unprivileged user (uid and gid
//! 65534 when the test runs as root, as CI does; otherwise the current
//! user), from a working directory it cannot write (mode 0555, as /app
//! belongs to root in the image), with one writable data folder standing
//! for /data, and configured only by the environment the Dockerfile sets
//! (its paths moved under the test's folder). It then serves a whole
//! mailed-code sign-in over HTTP, and writes nothing outside the data
//! folder.
//!
//! The binary is `CARGO_BIN_EXE_passgate` (the debug build `cargo test`
//! makes). The image ships the release build: to test that one, build it
//! (`cargo build --release`) and set `PASSGATE_TEST_BINARY=target/release/passgate`.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, SystemTime};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::authenticator::SoftAuthenticator;
use crate::cli::printed_code;
use crate::fallback::PASSWORD;
use crate::helpers::claims_of;

/// nobody:nogroup, the unprivileged user the binary runs as under root.
const NOBODY: u32 = 65534;

/// The binary under test: PASSGATE_TEST_BINARY, or the debug build.
fn binary() -> PathBuf {
    match std::env::var_os("PASSGATE_TEST_BINARY") {
        Some(path) => std::fs::canonicalize(&path)
            .unwrap_or_else(|e| panic!("PASSGATE_TEST_BINARY {path:?}: {e}")),
        None => PathBuf::from(env!("CARGO_BIN_EXE_passgate")),
    }
}

fn running_as_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// The image's file system, in a temporary folder: `bin/passgate`, `app/`
/// (the working directory, with the pages) and `data/`.
struct Image {
    root: tempfile::TempDir,
    port: u16,
}

impl Image {
    fn new() -> Image {
        let root = tempfile::tempdir().unwrap();
        // The unprivileged user must be able to pass through the root.
        std::fs::set_permissions(root.path(), PermissionsExt::from_mode(0o755)).unwrap();
        let bin = root.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        std::fs::copy(binary(), bin.join("passgate")).unwrap();
        std::fs::set_permissions(bin.join("passgate"), PermissionsExt::from_mode(0o755)).unwrap();
        let app = root.path().join("app");
        let pages = app.join("static");
        std::fs::create_dir_all(&pages).unwrap();
        let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("static");
        for entry in std::fs::read_dir(source).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_file() {
                std::fs::copy(entry.path(), pages.join(entry.file_name())).unwrap();
            }
        }
        for dir in [&pages, &app] {
            std::fs::set_permissions(dir, PermissionsExt::from_mode(0o555)).unwrap();
        }
        let data = root.path().join("data");
        std::fs::create_dir(&data).unwrap();
        std::fs::set_permissions(&data, PermissionsExt::from_mode(0o700)).unwrap();
        if running_as_root() {
            std::os::unix::fs::chown(&data, Some(NOBODY), Some(NOBODY)).unwrap();
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        Image { root, port }
    }

    fn path(&self, part: &str) -> PathBuf {
        self.root.path().join(part)
    }

    /// `passgate ARGS` as the image runs it: its user, its working
    /// directory, its environment and nothing else.
    fn command(&self, args: &[&str]) -> Command {
        let data = self.path("data");
        let mut command = Command::new(self.path("bin/passgate"));
        command
            .args(args)
            .current_dir(self.path("app"))
            .env_clear()
            // The Dockerfile's ENV, with /app and /data moved here.
            .env("PASSGATE__SERVER__BIND", format!("0.0.0.0:{}", self.port))
            .env("PASSGATE__SERVER__STATIC_DIR", self.path("app/static"))
            .env(
                "PASSGATE__DATABASE__URL",
                format!("sqlite:{}", data.join("passgate.db").display()),
            )
            .env("PASSGATE__SMTP__OUTBOX_DIR", data.join("outbox"))
            .env("PASSGATE__LOG__FORMAT", "json")
            // What any deployment sets: the origin its pages are served at.
            .env("PASSGATE__WEBAUTHN__ORIGINS", self.origin());
        if running_as_root() {
            // std drops root's supplementary groups along with the ids.
            command.uid(NOBODY).gid(NOBODY);
        }
        command
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run passgate")
    }

    fn origin(&self) -> String {
        format!("http://localhost:{}", self.port)
    }

    /// Every file and folder under the root but `data/`, with its size
    /// and modification time.
    fn outside_data(&self) -> BTreeMap<PathBuf, (u64, SystemTime)> {
        let mut found = BTreeMap::new();
        let mut pending = vec![self.root.path().to_owned()];
        while let Some(dir) = pending.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path == self.path("data") {
                    continue;
                }
                let meta = std::fs::symlink_metadata(&path).unwrap();
                if meta.is_dir() {
                    pending.push(path.clone());
                }
                found.insert(path, (meta.len(), meta.modified().unwrap()));
            }
        }
        found
    }

    /// The newest mail in the outbox whose subject is `subject`.
    fn mail(&self, subject: &str) -> String {
        let outbox = self.path("data/outbox");
        let mut mails: Vec<PathBuf> =
            std::fs::read_dir(&outbox).unwrap().map(|e| e.unwrap().path()).collect();
        // Named by UUIDv7: by name is by time.
        mails.sort();
        mails
            .iter()
            .rev()
            .map(|path| std::fs::read_to_string(path).unwrap())
            .find(|mail| mail.contains(&format!("Subject: {subject}")))
            .unwrap_or_else(|| panic!("no mail {subject:?} in {}", outbox.display()))
    }
}

/// The six-digit code in a code mail ("Your code to ... is 123456").
fn code_in(mail: &str) -> String {
    let after = mail.split(" is ").nth(1).unwrap_or_else(|| panic!("no code in: {mail}"));
    let code: String = after.chars().take(6).collect();
    assert!(code.chars().all(|c| c.is_ascii_digit()), "{mail}");
    code
}

/// The server process, stopped (SIGTERM, as `docker stop` does) on drop.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        // SAFETY: signalling our own child by its id.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

/// A small API client of the served node.
struct Api {
    client: reqwest::Client,
    base: String,
}

impl Api {
    async fn post(&self, path: &str, bearer: Option<&str>, body: &Value) -> reqwest::Response {
        let mut request = self.client.post(format!("{}{path}", self.base)).json(body);
        if let Some(bearer) = bearer {
            request = request.bearer_auth(bearer);
        }
        request.send().await.unwrap()
    }

    async fn put(&self, path: &str, bearer: &str, body: &Value) -> reqwest::Response {
        let url = format!("{}{path}", self.base);
        self.client.put(url).bearer_auth(bearer).json(body).send().await.unwrap()
    }
}

#[tokio::test]
async fn the_image_s_way_of_running_serves_a_mailed_code_sign_in_writing_only_under_data() {
    let image = Image::new();
    let before = image.outside_data();
    let logs = tempfile::tempfile().unwrap();
    let server = image
        .command(&[])
        .stdout(Stdio::from(logs.try_clone().unwrap()))
        .stderr(Stdio::from(logs.try_clone().unwrap()))
        .spawn()
        .expect("start passgate");
    let server = Server(server);
    let api =
        Api { client: reqwest::Client::new(), base: format!("http://127.0.0.1:{}", image.port) };
    let mut ready = false;
    for _ in 0..200 {
        let answer = api.client.get(format!("{}/readyz", api.base)).send().await;
        if answer.is_ok_and(|a| a.status() == StatusCode::OK) {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ready, "the node never became ready: {}", read_all(&logs));

    // The image's HEALTHCHECK.
    let health = image.run(&["healthcheck"]);
    assert!(health.status.success(), "{}", String::from_utf8_lossy(&health.stderr));

    // The first account, made inside the "container" as the README says,
    // enrolled over HTTP with the printed code.
    let created = image.run(&["user", "create", "carol"]);
    let code = printed_code(&created);
    let mut passkey = SoftAuthenticator::new(&image.origin());
    let started =
        api.post("/v1/enrol/start", None, &json!({"username": "carol", "code": code})).await;
    assert_eq!(started.status(), StatusCode::OK);
    let started: Value = started.json().await.unwrap();
    let credential = passkey.register(&started["publicKey"]);
    let body = json!({"ceremony_id": started["ceremony_id"], "credential": credential});
    let tokens = api.post("/v1/enrol/finish", None, &body).await;
    assert_eq!(tokens.status(), StatusCode::CREATED);
    let tokens: Value = tokens.json().await.unwrap();
    // A session an enrolment code opened may not change factors: a passkey
    // sign-in may.
    let started = api.post("/v1/login/start", None, &json!({"username": "carol"})).await;
    let started: Value = started.json().await.unwrap();
    let assertion = passkey.login(&started["publicKey"]);
    let body = json!({"ceremony_id": started["ceremony_id"], "credential": assertion});
    let signed_in = api.post("/v1/login/finish", None, &body).await;
    assert_eq!(signed_in.status(), StatusCode::OK);
    let signed_in: Value = signed_in.json().await.unwrap();
    let bearer = signed_in["access_token"].as_str().unwrap();

    // A password and a verified address, the code read from the outbox.
    let set = api.put("/v1/me/password", bearer, &json!({"password": PASSWORD})).await;
    assert_eq!(set.status(), StatusCode::NO_CONTENT);
    let address = "carol@example.test";
    let asked = api.post("/v1/me/email", Some(bearer), &json!({"email": address})).await;
    assert_eq!(asked.status(), StatusCode::ACCEPTED, "{}", read_all(&logs));
    let verify = code_in(&image.mail("Confirm your email address"));
    let verified = api.post("/v1/me/email/verify", Some(bearer), &json!({"code": verify})).await;
    assert_eq!(verified.status(), StatusCode::NO_CONTENT);

    // The password, then a mailed code, signs in.
    let challenge = api
        .post("/v1/login/password", None, &json!({"username": "carol", "password": PASSWORD}))
        .await;
    assert_eq!(challenge.status(), StatusCode::OK);
    let challenge: Value = challenge.json().await.unwrap();
    let mfa = challenge["mfa_token"].as_str().unwrap();
    let sent = api.post("/v1/login/mfa/email/send", None, &json!({"mfa_token": mfa})).await;
    assert_eq!(sent.status(), StatusCode::ACCEPTED);
    let sign_in = code_in(&image.mail("Your sign-in code"));
    let signed_in = api
        .post("/v1/login/mfa/email/verify", None, &json!({"mfa_token": mfa, "code": sign_in}))
        .await;
    assert_eq!(signed_in.status(), StatusCode::OK);
    let signed_in: Value = signed_in.json().await.unwrap();
    let access = signed_in["access_token"].as_str().unwrap();
    assert_eq!(claims_of(access)["amr"], json!(["pwd", "otp", "mfa"]));
    assert_eq!(claims_of(access)["sub"], tokens["user_id"]);
    drop(server);

    // Everything it wrote is under data/, owned by the unprivileged user
    // and private; nothing else changed.
    assert_eq!(before, image.outside_data(), "written outside the data folder");
    let data = image.path("data");
    for written in ["passgate.db", "outbox"] {
        let meta = std::fs::metadata(data.join(written)).unwrap();
        assert_eq!(meta.mode() & 0o077, 0, "{written} is its owner's only");
        if running_as_root() {
            assert_eq!(meta.uid(), NOBODY, "{written} written by the unprivileged user");
        }
    }
    // JSON logs, without the enrolment code (six-digit codes could match
    // any number in a log line by chance).
    let logs = read_all(&logs);
    assert!(!logs.is_empty());
    for line in logs.lines() {
        assert!(serde_json::from_str::<Value>(line).is_ok(), "not JSON: {line}");
    }
    assert!(!logs.contains(&code), "the enrolment code reached the log");
}

fn read_all(file: &std::fs::File) -> String {
    use std::io::{Read, Seek};
    let mut file = file.try_clone().unwrap();
    file.rewind().unwrap();
    let mut text = String::new();
    file.read_to_string(&mut text).unwrap();
    text
}
