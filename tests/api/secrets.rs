//! Secrets at rest: with a key-encryption key no row of the database lets a
//! thief sign tokens or recompute codes, rows stored in the clear before
//! are sealed in place, `keys reseal` moves everything to a new key, a real
//! relying party refuses to run without a key, and the SQLite files and
//! outbox mail are their owner's only.

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Output;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use passgate::clock::ManualClock;
use passgate::startup::Application;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::Sha256;

use crate::fallback::{Account, PASSWORD, totp_at};
use crate::helpers::{
    ANDROID_ORIGIN, Db, TestApp, TestDb, on_both, spawn_app_configured, spawn_app_with,
    test_settings,
};
use crate::smtp;

on_both!(
    with_a_key_no_stored_row_signs_tokens_or_recomputes_codes_and_plain_rows_get_sealed,
    a_reseal_keeps_sign_in_codes_totp_and_tokens_working_and_the_old_key_opens_nothing,
);

const KEK: &str = "c2VjcmV0cy1hdC1yZXN0LWtlay1udW1iZXItb25lISE=";
const NEW_KEK: &str = "c2VjcmV0cy1hdC1yZXN0LWtlay1udW1iZXItdHdvISE=";
const KEY_VARIABLE: &str = "PASSGATE__TOKENS__KEY_ENCRYPTION_KEY";

/// Every stored row that holds a secret: (server secrets by name, private
/// signing keys, TOTP secrets), read straight from the database.
async fn secret_rows(db: &TestDb) -> (Vec<(String, String)>, Vec<String>, Vec<String>) {
    macro_rules! read_all {
        ($pool:expr) => {{
            let pool = $pool;
            let server = sqlx::query_as("select name, value from server_secret")
                .fetch_all(&pool)
                .await
                .unwrap();
            let keys: Vec<(String,)> = sqlx::query_as("select private_key from signing_key")
                .fetch_all(&pool)
                .await
                .unwrap();
            let totp: Vec<(String,)> =
                sqlx::query_as("select secret from user_totp").fetch_all(&pool).await.unwrap();
            pool.close().await;
            (
                server,
                keys.into_iter().map(|r| r.0).collect(),
                totp.into_iter().map(|r| r.0).collect(),
            )
        }};
    }
    match db.db {
        Db::Sqlite => read_all!(sqlx::SqlitePool::connect(&db.url).await.unwrap()),
        Db::Postgres => read_all!(sqlx::PgPool::connect(&db.url).await.unwrap()),
    }
}

/// The bytes a thief could try as the secret a stored text holds: the
/// text itself and every base64 reading of it, with or without a prefix.
fn readings(stored: &str) -> Vec<Vec<u8>> {
    let mut out = vec![stored.as_bytes().to_vec()];
    let tail = stored.rsplit(':').next().unwrap_or(stored);
    for text in [stored, tail] {
        out.extend(STANDARD.decode(text).ok());
        out.extend(URL_SAFE_NO_PAD.decode(text).ok());
    }
    out
}

/// A mailed code's stored form under `key`, computed as passgate does
/// (HMAC-SHA256 over the length-prefixed purpose, user and code, then
/// SHA-256 hex).
fn code_hash(key: &[u8], purpose: &str, user_id: &str, code: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    for part in [purpose, user_id, code] {
        mac.update(&(part.len() as u64).to_be_bytes());
        mac.update(part.as_bytes());
    }
    passgate::domain::sha256_hex(&mac.finalize().into_bytes())
}

/// What a thief with a copy of the database could do with it.
#[derive(Debug, PartialEq, Eq)]
struct Usable {
    code_key: bool,
    signing_key: bool,
    totp_secret: bool,
    all_sealed: bool,
}

/// Gives `username` a password, TOTP and a mailed code in flight (returned
/// with the account), then looks at every secret row of the database as a
/// thief would.
async fn what_a_copy_gives_away(app: &TestApp, username: &str) -> (Usable, Account, String) {
    let account = app.fallback_account(username).await;
    let address = format!("{username}-{:?}-{}@example.test", app.db.db, app.port).to_lowercase();
    let set =
        app.post_bearer("/v1/me/email", &account.access_token, &json!({"email": address})).await;
    assert_eq!(set.status(), StatusCode::ACCEPTED);
    let code = smtp::last_code_to(&address);
    let user = app.store.find_user_by_username(username).await.unwrap().unwrap();
    let user_id = user.user_id.to_string();
    let purpose = "verify_email";
    let stored = app.store.email_code(purpose, &user_id).await.unwrap();
    let stored_hash = stored.expect("a mailed code is stored").code_hash;
    let (server, keys, totp) = secret_rows(&app.db).await;
    let code_key = server.iter().any(|(_, value)| {
        readings(value).iter().any(|key| code_hash(key, purpose, &user_id, &code) == stored_hash)
    });
    let signing_key = keys.iter().any(|stored| {
        readings(stored).iter().any(|der| {
            aws_lc_rs::signature::EcdsaKeyPair::from_pkcs8(
                &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                der,
            )
            .is_ok()
                || stored.contains("BEGIN")
                || stored.contains("\"d\"")
        })
    });
    let totp_secret = totp.iter().any(|stored| {
        readings(stored)
            .iter()
            .any(|bytes| bytes.windows(account.secret.len()).any(|w| w == account.secret))
    });
    let all_sealed = server
        .iter()
        .map(|(_, v)| v)
        .chain(&keys)
        .chain(&totp)
        .all(|v| v.starts_with("sealed:v1:"));
    assert!(!server.is_empty() && !keys.is_empty() && !totp.is_empty());
    (Usable { code_key, signing_key, totp_secret, all_sealed }, account, code)
}

async fn with_a_key_no_stored_row_signs_tokens_or_recomputes_codes_and_plain_rows_get_sealed(
    db: Db,
) {
    // Without a key (development) everything is usable: the checks below
    // can tell.
    let plain = spawn_app_configured(db, &[]).await;
    let (given_away, account, code) = what_a_copy_gives_away(&plain, "plain").await;
    assert_eq!(
        given_away,
        Usable { code_key: true, signing_key: true, totp_secret: true, all_sealed: false }
    );

    // A node that starts with a key seals those rows in place...
    let sealed = spawn_app_with(plain.db.share(), &[ANDROID_ORIGIN], &[(KEY_VARIABLE, KEK)]).await;
    let (server, keys, totp) = secret_rows(&sealed.db).await;
    let every_value = server.iter().map(|(_, v)| v).chain(&keys).chain(&totp);
    assert!(every_value.clone().all(|v| v.starts_with("sealed:v1:")), "all sealed at start");
    // ...and what was live before still works with the same secrets: the
    // mailed code, the TOTP app, a recovery code.
    let bearer = &account.access_token;
    let verified = sealed.post_bearer("/v1/me/email/verify", bearer, &json!({"code": code})).await;
    assert_eq!(verified.status(), StatusCode::NO_CONTENT, "the code mailed before");
    sealed.clock.advance(Duration::from_secs(60));
    let mfa = sealed.mfa_token("plain", PASSWORD).await;
    let totp = sealed.totp_login(&mfa, &totp_at(&account.secret, sealed.now_secs())).await;
    assert_eq!(totp.status(), StatusCode::OK, "the TOTP app");
    let mfa = sealed.mfa_token("plain", PASSWORD).await;
    let recovery = sealed.totp_login(&mfa, &account.recovery_codes[0]).await;
    assert_eq!(recovery.status(), StatusCode::OK, "a recovery code");

    // Whatever the sealed node stores now gives nothing away.
    let (given_away, _, _) = what_a_copy_gives_away(&sealed, "sealed").await;
    assert_eq!(
        given_away,
        Usable { code_key: false, signing_key: false, totp_secret: false, all_sealed: true }
    );
}

/// Runs the real binary against the app's database.
fn cli(app: &TestApp, args: &[&str], env: &[(&str, &str)]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_passgate"))
        .args(args)
        .env("PASSGATE__DATABASE__URL", &app.db.url)
        .env_remove("PASSGATE_NEW_KEY_ENCRYPTION_KEY")
        .envs(env.iter().copied())
        .output()
        .expect("run passgate")
}

/// A node on `db` with `key`, or why it would not start.
async fn start_with_key(db: &TestDb, key: &str) -> anyhow::Result<Application> {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let settings = test_settings(&db.url, port, &[], &[(KEY_VARIABLE, key)]);
    let store = passgate::store::connect(&settings.database).await?;
    Application::build_with(settings, listener, store, Arc::new(ManualClock::default())).await
}

async fn a_reseal_keeps_sign_in_codes_totp_and_tokens_working_and_the_old_key_opens_nothing(
    db: Db,
) {
    let app = spawn_app_configured(db, &[(KEY_VARIABLE, KEK)]).await;
    let mut account = app.fallback_account("reseal").await;
    let before = secret_rows(&app.db).await;
    let key_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(key_file.path(), format!("{NEW_KEK}\n")).unwrap();

    let resealed = cli(
        &app,
        &["keys", "reseal", "--new-key-file", key_file.path().to_str().unwrap()],
        &[(KEY_VARIABLE, KEK)],
    );

    let stdout = String::from_utf8_lossy(&resealed.stdout);
    let stderr = String::from_utf8_lossy(&resealed.stderr);
    assert!(resealed.status.success(), "{stderr}");
    assert!(!stdout.contains(NEW_KEK) && !stderr.contains(NEW_KEK) && !stderr.contains(KEK));
    let after = secret_rows(&app.db).await;
    for (old, new) in before.1.iter().zip(&after.1).chain(before.2.iter().zip(&after.2)) {
        assert_ne!(old, new, "every sealed value changed");
    }
    let audited = app
        .observer(Duration::from_secs(5))
        .await
        .count("select count(*) from audit_event where event = $1", "secrets_resealed")
        .await;
    assert_eq!(audited, 1);

    // Every node restarts with the new key.
    let node =
        spawn_app_with(app.db.share(), &[ANDROID_ORIGIN, &app.origin], &[(KEY_VARIABLE, NEW_KEK)])
            .await;
    node.clock.advance(Duration::from_secs(90));
    assert_eq!(node.me(&account.access_token).await.status(), StatusCode::OK, "a live token");
    let signed_in = node.login(&mut account.passkey, None).await;
    assert_eq!(signed_in.status(), StatusCode::OK, "passkey sign-in");
    let fresh: Value = signed_in.json().await.unwrap();
    assert_eq!(node.me(fresh["access_token"].as_str().unwrap()).await.status(), StatusCode::OK);
    let mfa = node.mfa_token("reseal", PASSWORD).await;
    let recovery = node.totp_login(&mfa, &account.recovery_codes[0]).await;
    assert_eq!(recovery.status(), StatusCode::OK, "a live recovery code");
    let mfa = node.mfa_token("reseal", PASSWORD).await;
    let totp = node.totp_login(&mfa, &totp_at(&account.secret, node.now_secs())).await;
    assert_eq!(totp.status(), StatusCode::OK, "the TOTP app");

    // The old key opens nothing: a node or the CLI with it stops, saying why.
    let refused = start_with_key(&app.db, KEK).await.err().expect("the old key is refused");
    let message = format!("{refused:#}");
    assert!(message.contains("tokens.key_encryption_key"), "{message}");
    assert!(!message.contains(KEK));
    let listed = cli(&app, &["keys", "list"], &[(KEY_VARIABLE, KEK)]);
    assert!(!listed.status.success());
    assert!(String::from_utf8_lossy(&listed.stderr).contains("tokens.key_encryption_key"));
}

#[tokio::test]
async fn keys_reseal_takes_the_new_key_from_the_environment_or_a_file_only() {
    let app = spawn_app_configured(Db::Sqlite, &[(KEY_VARIABLE, KEK)]).await;
    let nothing = cli(&app, &["keys", "reseal"], &[(KEY_VARIABLE, KEK)]);
    let stderr = String::from_utf8_lossy(&nothing.stderr);
    assert!(!nothing.status.success());
    assert!(stderr.contains("PASSGATE_NEW_KEY_ENCRYPTION_KEY"), "{stderr}");
    let argument = cli(&app, &["keys", "reseal", NEW_KEK], &[(KEY_VARIABLE, KEK)]);
    assert!(!argument.status.success(), "a key on the command line is refused");
    assert!(!String::from_utf8_lossy(&argument.stderr).contains(NEW_KEK));
    let bad = cli(
        &app,
        &["keys", "reseal"],
        &[(KEY_VARIABLE, KEK), ("PASSGATE_NEW_KEY_ENCRYPTION_KEY", "c2hvcnQ=")],
    );
    assert!(!bad.status.success());
    let same = cli(
        &app,
        &["keys", "reseal"],
        &[(KEY_VARIABLE, KEK), ("PASSGATE_NEW_KEY_ENCRYPTION_KEY", KEK)],
    );
    assert!(!same.status.success(), "the current key is no new key");
    assert!(String::from_utf8_lossy(&same.stderr).contains("is the current one"));
    let by_env = cli(
        &app,
        &["keys", "reseal"],
        &[(KEY_VARIABLE, KEK), ("PASSGATE_NEW_KEY_ENCRYPTION_KEY", NEW_KEK)],
    );
    assert!(by_env.status.success(), "{}", String::from_utf8_lossy(&by_env.stderr));
    assert!(start_with_key(&app.db, NEW_KEK).await.is_ok());
}

#[tokio::test]
async fn a_node_for_a_real_domain_refuses_to_start_without_a_key_encryption_key() {
    let db = TestDb::create(Db::Sqlite).await;
    let real_domain = [
        ("PASSGATE__WEBAUTHN__RP_ID", "wallet.example"),
        ("PASSGATE__WEBAUTHN__ORIGINS", "https://wallet.example"),
    ];
    let start = async |extra: &[(&str, &str)]| {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let env: Vec<(&str, &str)> = real_domain.iter().chain(extra).copied().collect();
        let settings = test_settings(&db.url, port, &[], &env);
        let store = passgate::store::connect(&settings.database).await.unwrap();
        Application::build_with(settings, listener, store, Arc::new(ManualClock::default())).await
    };

    let refused = start(&[]).await.err().expect("no key, a real domain: refused");
    let message = format!("{refused:#}");
    assert!(message.contains("tokens.key_encryption_key"), "{message}");
    assert!(message.contains("PASSGATE__TOKENS__KEY_ENCRYPTION_KEY"), "{message}");
    assert!(start(&[(KEY_VARIABLE, KEK)]).await.is_ok(), "with a key it starts");
}

fn mode_of(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

#[tokio::test]
async fn the_sqlite_files_and_outbox_mail_are_readable_by_their_owner_only() {
    let outbox = tempfile::tempdir().unwrap();
    let dir = outbox.path().join("outbox");
    let app = spawn_app_configured(
        Db::Sqlite,
        &[("PASSGATE__SMTP__HOST", ""), ("PASSGATE__SMTP__OUTBOX_DIR", dir.to_str().unwrap())],
    )
    .await;
    let tokens = app.register(&mut app.authenticator(), "modes").await;
    let bearer = tokens["access_token"].as_str().unwrap();
    let set =
        app.post_bearer("/v1/me/email", bearer, &json!({"email": "modes@example.test"})).await;
    assert_eq!(set.status(), StatusCode::ACCEPTED);

    let database = app.db.url.strip_prefix("sqlite:").unwrap().to_owned();
    for suffix in ["", "-wal", "-shm"] {
        let path = format!("{database}{suffix}");
        assert_eq!(mode_of(Path::new(&path)), 0o600, "{path}");
    }
    assert_eq!(mode_of(&dir), 0o700, "the outbox folder");
    let mails: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(mails.len(), 1);
    assert_eq!(mode_of(&mails[0]), 0o600, "an outbox message");
}
