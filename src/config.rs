//! Configuration: `config/default.toml`, then an optional `--config` file,
//! then `PASSGATE__SECTION__KEY` environment variables. `Settings::load`
//! validates everything at start and names the offending key, so a bad
//! deployment fails before it serves a single request.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use ipnet::IpNet;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use url::Url;

use crate::net::TrustedProxies;

/// The compiled-in defaults: the same text as `config/default.toml`, so the
/// binary also starts from a directory without that file.
const DEFAULTS: &str = include_str!("../config/default.toml");

/// Access tokens live at most this long (API contract, Tokens).
pub const MAX_ACCESS_TTL: Duration = Duration::from_secs(900);
/// Payment authorization tokens live at most this long (API contract,
/// Payment step-up).
pub const MAX_AUTHORIZATION_TTL: Duration = passgate_verifier::MAX_TOKEN_LIFETIME;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSettings {
    server: RawServer,
    database: RawDatabase,
    webauthn: RawWebauthn,
    tokens: RawTokens,
    stepup: RawStepup,
    apps: RawApps,
    password: RawPassword,
    mfa: RawMfa,
    smtp: RawSmtp,
    limits: RawLimits,
    housekeeping: RawHousekeeping,
    log: RawLog,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPassword {
    memory_kib: u32,
    iterations: u32,
    parallelism: u32,
    max_concurrent_hashes: usize,
    max_queued_hashes: usize,
    min_length: usize,
    max_length: usize,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMfa {
    token_ttl_seconds: u64,
    totp_issuer: String,
    email_code_ttl_seconds: u64,
    email_code_max_tries: u32,
    email_resend_seconds: u64,
    fresh_auth_seconds: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSmtp {
    host: String,
    port: u16,
    tls: String,
    username: String,
    password: SecretString,
    from: String,
    outbox_dir: PathBuf,
    timeout_seconds: u64,
    ca_file: String,
}

impl fmt::Debug for RawSmtp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawSmtp").field("host", &self.host).finish_non_exhaustive()
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    ip_requests_per_minute: u64,
    account_requests_per_minute: u64,
    lockout_threshold: u64,
    lockout_base_seconds: u64,
    lockout_max_seconds: u64,
    failure_window_seconds: u64,
    lockout_permanent_threshold: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHousekeeping {
    interval_seconds: u64,
    ended_sessions_kept_seconds: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    bind: String,
    static_dir: PathBuf,
    trust_request_id: bool,
    trusted_proxies: Vec<String>,
    /// Replaced by `trusted_proxies`; still read for one release so that
    /// a deployment that set it is told what to do instead.
    #[serde(default)]
    trust_forwarded_for: Option<bool>,
    workers: usize,
    request_timeout_seconds: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDatabase {
    url: SecretString,
    max_connections: u32,
}

impl fmt::Debug for RawDatabase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawDatabase").finish_non_exhaustive()
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWebauthn {
    rp_id: String,
    rp_name: String,
    origins: Vec<String>,
    ceremony_ttl_seconds: u64,
    related_origins: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApps {
    android: Vec<String>,
    ios: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTokens {
    issuer: String,
    audience: String,
    access_ttl_seconds: u64,
    refresh_ttl_seconds: u64,
    idle_timeout_seconds: u64,
    algorithm: String,
    key_encryption_key: SecretString,
    key_rotation_days: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStepup {
    audience: String,
    token_ttl_seconds: u64,
    require_device_bound: bool,
    fallback_passkey_delay_seconds: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLog {
    level: String,
    format: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Pretty,
    Json,
}

/// Validated settings: typed values only.
#[derive(Clone, Debug)]
pub struct Settings {
    pub server: ServerSettings,
    pub database: DatabaseSettings,
    pub webauthn: WebauthnSettings,
    pub tokens: TokenSettings,
    pub stepup: StepupSettings,
    pub apps: AppSettings,
    pub password: PasswordSettings,
    pub mfa: MfaSettings,
    pub smtp: SmtpSettings,
    pub limits: LimitSettings,
    pub housekeeping: HousekeepingSettings,
    pub log: LogSettings,
    /// Settings accepted but worth an operator's attention (a key on its
    /// way out), logged when the server starts: telemetry is not set up
    /// yet while settings load.
    pub warnings: Vec<String>,
}

/// argon2id cost and the hashing pool's bounds, and the password policy.
#[derive(Clone, Debug)]
pub struct PasswordSettings {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
    /// Threads that hash at once (each holds `memory_kib`).
    pub max_concurrent_hashes: usize,
    /// Checks waiting for a thread; more are refused with 429.
    pub max_queued_hashes: usize,
    pub min_length: usize,
    pub max_length: usize,
}

#[derive(Clone, Debug)]
pub struct MfaSettings {
    pub token_ttl: Duration,
    pub totp_issuer: String,
    pub email_code_ttl: Duration,
    pub email_code_max_tries: u32,
    pub email_resend: Duration,
    /// How recent a sign-in must be for sensitive changes without the
    /// current password.
    pub fresh_auth: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SmtpTls {
    None,
    StartTls,
    Tls,
}

#[derive(Clone)]
pub struct SmtpSettings {
    /// None: mail is written to `outbox_dir` instead of sent.
    pub host: Option<String>,
    pub port: u16,
    pub tls: SmtpTls,
    pub username: Option<String>,
    pub password: SecretString,
    pub from: String,
    pub outbox_dir: PathBuf,
    pub timeout: Duration,
    /// A PEM file of certificates to trust for the mail server, besides
    /// the system's (a private CA).
    pub ca_file: Option<PathBuf>,
}

impl fmt::Debug for SmtpSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpSettings")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("username", &self.username)
            .field("from", &self.from)
            .field("outbox_dir", &self.outbox_dir)
            .finish_non_exhaustive()
    }
}

/// Throttling of the password, code and MFA endpoints.
#[derive(Clone, Debug)]
pub struct LimitSettings {
    pub ip_requests_per_minute: u64,
    pub account_requests_per_minute: u64,
    pub lockout_threshold: u64,
    pub lockout_base: Duration,
    pub lockout_max: Duration,
    /// Ages the lock's length: a failure after this long a quiet spell
    /// locks for `lockout_base` again. The count itself is never forgotten.
    pub failure_window: Duration,
    /// Consecutive failures after which fallback sign-in stays locked until
    /// a passkey sign-in or an admin unlock.
    pub lockout_permanent_threshold: u64,
}

/// The background purge each node runs.
#[derive(Clone, Debug)]
pub struct HousekeepingSettings {
    pub interval: Duration,
    /// How long an ended session stays, so the reuse of one of its retired
    /// refresh tokens is still recognised.
    pub ended_sessions_kept: Duration,
}

#[derive(Clone, Debug)]
pub struct ServerSettings {
    pub bind: SocketAddr,
    pub static_dir: PathBuf,
    pub trust_request_id: bool,
    /// Proxies whose X-Forwarded-For entries name the client.
    pub trusted_proxies: TrustedProxies,
    /// 0 means one worker per core.
    pub workers: usize,
    /// The longest a request may take; past it the caller gets a 503.
    pub request_timeout: Duration,
}

#[derive(Clone, Debug)]
pub struct DatabaseSettings {
    pub url: DatabaseUrl,
    pub max_connections: u32,
}

#[derive(Clone, Debug)]
pub struct WebauthnSettings {
    pub rp_id: String,
    pub rp_name: String,
    pub origins: Vec<Url>,
    pub ceremony_ttl: Duration,
    pub related_origins: Vec<Url>,
}

/// Native apps that share this relying party's passkeys.
#[derive(Clone, Debug, Default)]
pub struct AppSettings {
    pub android: Vec<AndroidApp>,
    /// `TEAMID.bundle.id`
    pub ios: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AndroidApp {
    pub package_name: String,
    /// SHA-256 of the app's signing certificate.
    pub cert_sha256: [u8; 32],
}

impl AndroidApp {
    /// The origin Android's Credential Manager puts in clientDataJSON.
    pub fn origin(&self) -> String {
        use base64::Engine;
        let hash = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(self.cert_sha256);
        format!("android:apk-key-hash:{hash}")
    }

    /// The fingerprint as Digital Asset Links writes it: AA:BB:...
    pub fn fingerprint(&self) -> String {
        self.cert_sha256.iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":")
    }
}

#[derive(Clone)]
pub struct TokenSettings {
    pub issuer: String,
    pub audience: String,
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
    /// A session not refreshed for this long ends.
    pub idle_timeout: Duration,
    pub algorithm: KeyAlgorithm,
    /// Seals private signing keys at rest, when set.
    pub key_encryption_key: Option<[u8; 32]>,
    /// None: rotate only on request.
    pub key_rotation: Option<Duration>,
}

impl fmt::Debug for TokenSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenSettings")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("access_ttl", &self.access_ttl)
            .field("refresh_ttl", &self.refresh_ttl)
            .field("idle_timeout", &self.idle_timeout)
            .field("algorithm", &self.algorithm)
            .field("key_encryption_key", &self.key_encryption_key.map(|_| "<redacted>"))
            .field("key_rotation", &self.key_rotation)
            .finish()
    }
}

/// The algorithm of newly made signing keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyAlgorithm {
    Es256,
    EdDsa,
}

#[derive(Clone, Debug)]
pub struct StepupSettings {
    pub audience: String,
    pub token_ttl: Duration,
    pub require_device_bound: bool,
    /// How long a passkey bound from a password sign-in waits before it
    /// may approve payments.
    pub fallback_passkey_delay: Duration,
}

#[derive(Clone, Debug)]
pub struct LogSettings {
    pub level: String,
    pub format: LogFormat,
}

/// Which engine a database URL names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A database URL whose `Debug` never shows the password.
#[derive(Clone)]
pub struct DatabaseUrl(SecretString);

impl DatabaseUrl {
    pub fn backend(&self) -> anyhow::Result<Backend> {
        let text = self.0.expose_secret();
        if text.starts_with("sqlite:") {
            Ok(Backend::Sqlite)
        } else if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            Ok(Backend::Postgres)
        } else {
            bail!(
                "database.url: the scheme must be sqlite: or postgres:// (got {})",
                self.redacted()
            )
        }
    }

    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }

    /// The URL with any password replaced, fit for logs and errors.
    pub fn redacted(&self) -> String {
        match Url::parse(self.0.expose_secret()) {
            Ok(mut url) if url.password().is_some() => {
                let _ = url.set_password(Some("***"));
                url.to_string()
            }
            Ok(url) => url.to_string(),
            Err(_) => "<unparseable url>".to_owned(),
        }
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl({})", self.redacted())
    }
}

impl Settings {
    /// Loads the layered configuration from the process environment.
    pub fn load(config_file: Option<&Path>) -> anyhow::Result<Settings> {
        let env: HashMap<String, String> =
            std::env::vars().filter(|(key, _)| key.starts_with("PASSGATE__")).collect();
        Self::load_from(config_file, env)
    }

    /// Loads from an explicit environment map (tests pass their own).
    pub fn load_from(
        config_file: Option<&Path>,
        env: HashMap<String, String>,
    ) -> anyhow::Result<Settings> {
        let mut builder = config::Config::builder()
            .add_source(config::File::from_str(DEFAULTS, config::FileFormat::Toml));
        if let Some(path) = config_file {
            if !path.exists() {
                bail!("--config: file {} does not exist", path.display());
            }
            builder = builder.add_source(config::File::from(path));
        }
        let environment = config::Environment::with_prefix("PASSGATE")
            .prefix_separator("__")
            .separator("__")
            .list_separator(",")
            .with_list_parse_key("webauthn.origins")
            .with_list_parse_key("webauthn.related_origins")
            .with_list_parse_key("apps.android")
            .with_list_parse_key("apps.ios")
            .with_list_parse_key("server.trusted_proxies")
            .try_parsing(true)
            .source(Some(env.into_iter().collect()));
        let raw: RawSettings = builder
            .add_source(environment)
            .build()
            .and_then(|c| c.try_deserialize())
            .context("configuration could not be read")?;
        raw.validate()
    }
}

impl RawSettings {
    fn validate(self) -> anyhow::Result<Settings> {
        let bind: SocketAddr = self.server.bind.parse().with_context(|| {
            format!("server.bind: {:?} is not an address like 127.0.0.1:8080", self.server.bind)
        })?;
        if self.server.request_timeout_seconds == 0 {
            bail!("server.request_timeout_seconds: must be at least 1");
        }
        let trusted_proxies = validate_trusted_proxies(
            &self.server.trusted_proxies,
            self.server.trust_forwarded_for,
        )?;
        let mut warnings = Vec::new();
        if self.server.trust_forwarded_for.is_some() {
            warnings.push(
                "server.trust_forwarded_for is ignored (server.trusted_proxies decides whose \
                 X-Forwarded-For is read) and will be refused in the next release: remove it"
                    .to_owned(),
            );
        }
        let url = DatabaseUrl(self.database.url);
        url.backend()?;
        if self.database.max_connections == 0 {
            bail!("database.max_connections: must be at least 1");
        }
        let webauthn = validate_webauthn(self.webauthn)?;
        let tokens = validate_tokens(self.tokens)?;
        if self.stepup.audience.trim().is_empty() {
            bail!("stepup.audience: must not be empty");
        }
        let token_ttl = Duration::from_secs(self.stepup.token_ttl_seconds);
        if token_ttl.is_zero() || token_ttl > MAX_AUTHORIZATION_TTL {
            bail!(
                "stepup.token_ttl_seconds: {} is outside 1..={}",
                self.stepup.token_ttl_seconds,
                MAX_AUTHORIZATION_TTL.as_secs()
            );
        }
        let format = match self.log.format.as_str() {
            "pretty" => LogFormat::Pretty,
            "json" => LogFormat::Json,
            other => bail!("log.format: {other:?} is not one of pretty, json"),
        };
        Ok(Settings {
            server: ServerSettings {
                bind,
                static_dir: self.server.static_dir,
                trust_request_id: self.server.trust_request_id,
                trusted_proxies,
                workers: self.server.workers,
                request_timeout: Duration::from_secs(self.server.request_timeout_seconds),
            },
            database: DatabaseSettings { url, max_connections: self.database.max_connections },
            webauthn,
            tokens,
            stepup: StepupSettings {
                audience: self.stepup.audience,
                token_ttl,
                require_device_bound: self.stepup.require_device_bound,
                fallback_passkey_delay: Duration::from_secs(
                    self.stepup.fallback_passkey_delay_seconds,
                ),
            },
            apps: validate_apps(self.apps)?,
            password: validate_password(self.password)?,
            mfa: validate_mfa(self.mfa)?,
            smtp: validate_smtp(self.smtp)?,
            limits: validate_limits(self.limits)?,
            housekeeping: validate_housekeeping(self.housekeeping)?,
            log: LogSettings { level: self.log.level, format },
            warnings,
        })
    }
}

/// CIDRs (a bare address is a single host). A prefix with host bits set
/// (`10.0.0.1/8`) is refused rather than rounded: it is more likely a
/// mistyped single address than a wish to trust a whole network.
fn validate_trusted_proxies(
    list: &[String],
    trust_forwarded_for: Option<bool>,
) -> anyhow::Result<TrustedProxies> {
    let mut networks = Vec::new();
    for text in list.iter().map(|t| t.trim()).filter(|t| !t.is_empty()) {
        let network = match text.parse::<IpNet>() {
            Ok(network) => network,
            Err(_) => text.parse::<IpAddr>().map(IpNet::from).map_err(|_| {
                anyhow::anyhow!(
                    "server.trusted_proxies: {text:?} is not a CIDR such as 10.0.0.0/8 or ::1/128"
                )
            })?,
        };
        if network.addr() != network.network() {
            bail!(
                "server.trusted_proxies: {text:?} has host bits set; write {} for the network or {} for the one address",
                network.trunc(),
                IpNet::from(network.addr())
            );
        }
        networks.push(network);
    }
    if trust_forwarded_for == Some(true) && networks.is_empty() {
        bail!(
            "server.trust_forwarded_for is replaced by server.trusted_proxies: list the proxies \
             in front of passgate as CIDRs (PASSGATE__SERVER__TRUSTED_PROXIES=10.0.0.0/8,::1/128) \
             and remove server.trust_forwarded_for (PASSGATE__SERVER__TRUST_FORWARDED_FOR)"
        );
    }
    Ok(TrustedProxies::new(networks))
}

fn validate_webauthn(raw: RawWebauthn) -> anyhow::Result<WebauthnSettings> {
    let rp_id = raw.rp_id.trim().to_ascii_lowercase();
    if rp_id.is_empty() || rp_id.contains(['/', ':', ' ']) {
        bail!("webauthn.rp_id: {:?} must be a bare domain such as wallet.example", raw.rp_id);
    }
    if raw.origins.is_empty() {
        bail!("webauthn.origins: at least one origin is required");
    }
    let mut origins = Vec::with_capacity(raw.origins.len());
    for text in raw.origins.iter().map(|o| o.trim()).filter(|o| !o.is_empty()) {
        origins.push(validate_origin(text, &rp_id)?);
    }
    if !origins.iter().any(|o| matches!(o.scheme(), "https" | "http")) {
        bail!("webauthn.origins: at least one web (https://) origin is required");
    }
    let ttl = raw.ceremony_ttl_seconds;
    if !(10..=3600).contains(&ttl) {
        bail!("webauthn.ceremony_ttl_seconds: {ttl} is outside 10..=3600");
    }
    let mut related_origins = Vec::new();
    for text in raw.related_origins.iter().map(|o| o.trim()).filter(|o| !o.is_empty()) {
        let url = Url::parse(text)
            .ok()
            .filter(|u| u.scheme() == "https" && u.path() == "/" && u.host_str().is_some())
            .with_context(|| {
                format!("webauthn.related_origins: {text:?} must be an https origin with no path")
            })?;
        related_origins.push(url);
    }
    Ok(WebauthnSettings {
        rp_id,
        rp_name: raw.rp_name,
        origins,
        ceremony_ttl: Duration::from_secs(ttl),
        related_origins,
    })
}

fn validate_password(raw: RawPassword) -> anyhow::Result<PasswordSettings> {
    // argon2's own bounds, and RFC 9106's minimum of 8 KiB per lane.
    if raw.parallelism == 0 || raw.parallelism > 16 {
        bail!("password.parallelism: {} is outside 1..=16", raw.parallelism);
    }
    if raw.memory_kib < 8 * raw.parallelism || raw.memory_kib > 4 * 1024 * 1024 {
        bail!(
            "password.memory_kib: {} is outside {}..=4194304",
            raw.memory_kib,
            8 * raw.parallelism
        );
    }
    if raw.iterations == 0 || raw.iterations > 100 {
        bail!("password.iterations: {} is outside 1..=100", raw.iterations);
    }
    if raw.max_queued_hashes == 0 {
        bail!("password.max_queued_hashes: must be at least 1");
    }
    if raw.min_length < 8 {
        bail!("password.min_length: {} is below 8 (NIST SP 800-63B)", raw.min_length);
    }
    if raw.max_length < 64 || raw.max_length > 1024 {
        bail!("password.max_length: {} is outside 64..=1024", raw.max_length);
    }
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    // One core stays free for everything else, so a flood of password
    // checks cannot starve passkey sign-ins.
    let max_concurrent_hashes = if raw.max_concurrent_hashes == 0 {
        cores.saturating_sub(1).max(1)
    } else {
        raw.max_concurrent_hashes
    };
    Ok(PasswordSettings {
        memory_kib: raw.memory_kib,
        iterations: raw.iterations,
        parallelism: raw.parallelism,
        max_concurrent_hashes,
        max_queued_hashes: raw.max_queued_hashes,
        min_length: raw.min_length,
        max_length: raw.max_length,
    })
}

fn validate_mfa(raw: RawMfa) -> anyhow::Result<MfaSettings> {
    let seconds = |key: &str, value: u64, range: std::ops::RangeInclusive<u64>| {
        if range.contains(&value) {
            Ok(Duration::from_secs(value))
        } else {
            Err(anyhow::anyhow!(
                "mfa.{key}: {value} is outside {}..={}",
                range.start(),
                range.end()
            ))
        }
    };
    if raw.totp_issuer.trim().is_empty() || raw.totp_issuer.contains(':') {
        bail!("mfa.totp_issuer: must be a non-empty name without ':'");
    }
    if !(1..=20).contains(&raw.email_code_max_tries) {
        bail!("mfa.email_code_max_tries: {} is outside 1..=20", raw.email_code_max_tries);
    }
    Ok(MfaSettings {
        token_ttl: seconds("token_ttl_seconds", raw.token_ttl_seconds, 30..=1800)?,
        totp_issuer: raw.totp_issuer.trim().to_owned(),
        email_code_ttl: seconds("email_code_ttl_seconds", raw.email_code_ttl_seconds, 60..=3600)?,
        email_code_max_tries: raw.email_code_max_tries,
        email_resend: seconds("email_resend_seconds", raw.email_resend_seconds, 0..=3600)?,
        fresh_auth: seconds("fresh_auth_seconds", raw.fresh_auth_seconds, 30..=3600)?,
    })
}

fn validate_smtp(raw: RawSmtp) -> anyhow::Result<SmtpSettings> {
    let tls = match raw.tls.trim().to_ascii_lowercase().as_str() {
        "none" => SmtpTls::None,
        "starttls" => SmtpTls::StartTls,
        "tls" => SmtpTls::Tls,
        other => bail!("smtp.tls: {other:?} is not one of none, starttls, tls"),
    };
    let host = Some(raw.host.trim().to_owned()).filter(|h| !h.is_empty());
    if host.is_some() && raw.port == 0 {
        bail!("smtp.port: must not be 0");
    }
    if raw.from.parse::<lettre::message::Mailbox>().is_err() {
        bail!(
            "smtp.from: {:?} is not an address like \"passgate <no-reply@example.com>\"",
            raw.from
        );
    }
    if raw.timeout_seconds == 0 {
        bail!("smtp.timeout_seconds: must be at least 1");
    }
    let username = Some(raw.username.trim().to_owned()).filter(|u| !u.is_empty());
    if username.is_some() && tls == SmtpTls::None {
        bail!("smtp.username: credentials are refused over smtp.tls = none; use starttls or tls");
    }
    let ca_file = Some(raw.ca_file.trim()).filter(|f| !f.is_empty()).map(PathBuf::from);
    if ca_file.is_some() && tls == SmtpTls::None {
        bail!("smtp.ca_file: there is no TLS to trust it for with smtp.tls = none");
    }
    Ok(SmtpSettings {
        host,
        port: raw.port,
        tls,
        username,
        password: raw.password,
        from: raw.from,
        outbox_dir: raw.outbox_dir,
        timeout: Duration::from_secs(raw.timeout_seconds),
        ca_file,
    })
}

fn validate_limits(raw: RawLimits) -> anyhow::Result<LimitSettings> {
    for (key, value) in [
        ("ip_requests_per_minute", raw.ip_requests_per_minute),
        ("account_requests_per_minute", raw.account_requests_per_minute),
        ("lockout_threshold", raw.lockout_threshold),
        ("lockout_base_seconds", raw.lockout_base_seconds),
        ("failure_window_seconds", raw.failure_window_seconds),
    ] {
        if value == 0 {
            bail!("limits.{key}: must be at least 1");
        }
    }
    if raw.lockout_max_seconds < raw.lockout_base_seconds {
        bail!("limits.lockout_max_seconds: must be at least limits.lockout_base_seconds");
    }
    // NIST SP 800-63B 5.2.2: at most 100 consecutive failures.
    if !(raw.lockout_threshold..=100).contains(&raw.lockout_permanent_threshold) {
        bail!(
            "limits.lockout_permanent_threshold: {} is outside limits.lockout_threshold..=100",
            raw.lockout_permanent_threshold
        );
    }
    Ok(LimitSettings {
        ip_requests_per_minute: raw.ip_requests_per_minute,
        account_requests_per_minute: raw.account_requests_per_minute,
        lockout_threshold: raw.lockout_threshold,
        lockout_base: Duration::from_secs(raw.lockout_base_seconds),
        lockout_max: Duration::from_secs(raw.lockout_max_seconds),
        failure_window: Duration::from_secs(raw.failure_window_seconds),
        lockout_permanent_threshold: raw.lockout_permanent_threshold,
    })
}

fn validate_housekeeping(raw: RawHousekeeping) -> anyhow::Result<HousekeepingSettings> {
    if !(1..=3600).contains(&raw.interval_seconds) {
        bail!("housekeeping.interval_seconds: {} is outside 1..=3600", raw.interval_seconds);
    }
    // A year at most, so that the cutoff in milliseconds cannot overflow.
    const YEAR: u64 = 365 * 86_400;
    if raw.ended_sessions_kept_seconds > YEAR {
        bail!(
            "housekeeping.ended_sessions_kept_seconds: {} is outside 0..={YEAR}",
            raw.ended_sessions_kept_seconds
        );
    }
    Ok(HousekeepingSettings {
        interval: Duration::from_secs(raw.interval_seconds),
        ended_sessions_kept: Duration::from_secs(raw.ended_sessions_kept_seconds),
    })
}

fn validate_apps(raw: RawApps) -> anyhow::Result<AppSettings> {
    let mut android = Vec::new();
    for entry in raw.android.iter().map(|e| e.trim()).filter(|e| !e.is_empty()) {
        let refused = || {
            anyhow::anyhow!(
                "apps.android: {entry:?} must be package.name=AA:BB:... (32 hex bytes, the SHA-256 of the signing certificate)"
            )
        };
        let (package_name, fingerprint) = entry.split_once('=').ok_or_else(refused)?;
        let package_ok = package_name.contains('.')
            && package_name.split('.').all(|part| {
                !part.is_empty() && part.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            });
        let bytes: Vec<u8> = fingerprint
            .split(':')
            .map(|pair| if pair.len() == 2 { u8::from_str_radix(pair, 16).ok() } else { None })
            .collect::<Option<_>>()
            .ok_or_else(refused)?;
        let cert_sha256: [u8; 32] = bytes.try_into().map_err(|_| refused())?;
        if !package_ok {
            return Err(refused());
        }
        android.push(AndroidApp { package_name: package_name.to_owned(), cert_sha256 });
    }
    let mut ios = Vec::new();
    for entry in raw.ios.iter().map(|e| e.trim()).filter(|e| !e.is_empty()) {
        let team_ok = entry.split_once('.').is_some_and(|(team, bundle)| {
            team.len() == 10
                && team.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
                && !bundle.is_empty()
        });
        if !team_ok {
            bail!("apps.ios: {entry:?} must be TEAMID.bundle.id (a 10-character team id)");
        }
        ios.push(entry.to_owned());
    }
    Ok(AppSettings { android, ios })
}

/// A web origin must be covered by the RP id (WebAuthn §5.1.3: the RP id is
/// a registrable suffix of the origin's host); plain http only for
/// localhost, which browsers treat as a secure context. App origins
/// (`android:apk-key-hash:<base64url sha-256 of the signing cert>`) are
/// taken as they are, and must then match exactly.
/// A key-encryption key as configured: 32 bytes in base64 (standard or
/// URL-safe). None for anything else; the text itself is never echoed.
pub fn parse_key_encryption_key(text: &str) -> Option<[u8; 32]> {
    use base64::Engine;
    let text = text.trim();
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(text))
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
}

fn validate_origin(text: &str, rp_id: &str) -> anyhow::Result<Url> {
    if let Some(hash) = text.strip_prefix("android:apk-key-hash:") {
        let plain = !hash.is_empty()
            && hash.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'));
        if !plain {
            bail!("webauthn.origins: {text:?} must be android:apk-key-hash:<base64url>");
        }
        return Url::parse(text).with_context(|| format!("webauthn.origins: {text:?}"));
    }
    let url = Url::parse(text)
        .with_context(|| format!("webauthn.origins: {text:?} is not a valid origin"))?;
    let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
        bail!("webauthn.origins: {text:?} must be an origin (scheme://host[:port]) with no path");
    }
    match url.scheme() {
        "https" => {}
        "http" if host == "localhost" => {}
        _ => bail!("webauthn.origins: {text:?} must use https (http only for localhost)"),
    }
    if host != rp_id && !host.ends_with(&format!(".{rp_id}")) {
        bail!("webauthn.origins: {text:?} is not covered by webauthn.rp_id {rp_id:?}");
    }
    Ok(url)
}

fn validate_tokens(raw: RawTokens) -> anyhow::Result<TokenSettings> {
    if raw.issuer.trim().is_empty() {
        bail!("tokens.issuer: must not be empty");
    }
    if raw.audience.trim().is_empty() {
        bail!("tokens.audience: must not be empty");
    }
    let access_ttl = Duration::from_secs(raw.access_ttl_seconds);
    if access_ttl.is_zero() || access_ttl > MAX_ACCESS_TTL {
        bail!(
            "tokens.access_ttl_seconds: {} is outside 1..={}",
            raw.access_ttl_seconds,
            MAX_ACCESS_TTL.as_secs()
        );
    }
    if raw.refresh_ttl_seconds < raw.access_ttl_seconds {
        bail!("tokens.refresh_ttl_seconds: must be at least tokens.access_ttl_seconds");
    }
    if raw.idle_timeout_seconds < raw.access_ttl_seconds
        || raw.idle_timeout_seconds > raw.refresh_ttl_seconds
    {
        bail!(
            "tokens.idle_timeout_seconds: must be between tokens.access_ttl_seconds and tokens.refresh_ttl_seconds"
        );
    }
    let algorithm = match raw.algorithm.as_str() {
        "ES256" => KeyAlgorithm::Es256,
        "EdDSA" => KeyAlgorithm::EdDsa,
        other => bail!("tokens.algorithm: {other:?} is not one of ES256, EdDSA"),
    };
    let kek_text = raw.key_encryption_key.expose_secret().trim();
    let key_encryption_key = if kek_text.is_empty() {
        None
    } else {
        Some(
            parse_key_encryption_key(kek_text)
                .context("tokens.key_encryption_key: must be 32 bytes, base64-encoded")?,
        )
    };
    let key_rotation = (raw.key_rotation_days > 0)
        .then(|| Duration::from_secs(raw.key_rotation_days.saturating_mul(86_400)));
    Ok(TokenSettings {
        issuer: raw.issuer,
        audience: raw.audience,
        access_ttl,
        refresh_ttl: Duration::from_secs(raw.refresh_ttl_seconds),
        idle_timeout: Duration::from_secs(raw.idle_timeout_seconds),
        algorithm,
        key_encryption_key,
        key_rotation,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    proptest::proptest! {
        /// Any value of any setting: settings or a message, never a panic.
        #[test]
        fn any_value_of_any_setting_is_taken_or_refused_with_a_message(
            key in proptest::sample::select(vec![
                "PASSGATE__SERVER__BIND", "PASSGATE__SERVER__TRUSTED_PROXIES",
                "PASSGATE__DATABASE__URL", "PASSGATE__WEBAUTHN__RP_ID",
                "PASSGATE__WEBAUTHN__ORIGINS", "PASSGATE__WEBAUTHN__CEREMONY_TTL_SECONDS",
                "PASSGATE__APPS__ANDROID", "PASSGATE__TOKENS__ACCESS_TTL_SECONDS",
                "PASSGATE__TOKENS__IDLE_TIMEOUT_SECONDS", "PASSGATE__TOKENS__KEY_ENCRYPTION_KEY",
                "PASSGATE__LIMITS__LOCKOUT_THRESHOLD",
                "PASSGATE__LIMITS__LOCKOUT_PERMANENT_THRESHOLD", "PASSGATE__SMTP__FROM",
                "PASSGATE__SMTP__TLS", "PASSGATE__MFA__FRESH_AUTH_SECONDS",
                "PASSGATE__HOUSEKEEPING__INTERVAL_SECONDS",
                "PASSGATE__HOUSEKEEPING__ENDED_SESSIONS_KEPT_SECONDS",
            ]),
            value in "\\PC{0,80}",
        ) {
            let loaded = Settings::load_from(None, env(&[(key, &value)]));
            if let Err(error) = loaded {
                proptest::prop_assert!(!error.to_string().is_empty());
            }
        }
    }

    fn load_error(pairs: &[(&str, &str)]) -> String {
        format!("{:#}", Settings::load_from(None, env(pairs)).expect_err("should be refused"))
    }

    #[test]
    fn defaults_load_and_serve_localhost() {
        let settings = Settings::load_from(None, HashMap::new()).expect("defaults are valid");
        assert_eq!(settings.webauthn.rp_id, "localhost");
        assert_eq!(settings.database.url.backend().unwrap(), Backend::Sqlite);
        assert_eq!(settings.tokens.audience, "payments");
        // Payment authorizations have an audience of their own.
        assert_eq!(settings.stepup.audience, "payments:authorize");
        assert_eq!(settings.tokens.access_ttl, Duration::from_secs(300));
        // One of OWASP's argon2id settings, and mail to the outbox.
        let p = &settings.password;
        assert_eq!((p.memory_kib, p.iterations, p.parallelism), (7168, 5, 1));
        assert!(p.max_concurrent_hashes >= 1);
        assert!(settings.smtp.host.is_none());
        assert_eq!(settings.smtp.tls, SmtpTls::StartTls);
        assert_eq!(settings.limits.lockout_threshold, 5);
        let h = &settings.housekeeping;
        assert_eq!((h.interval, h.ended_sessions_kept), (Duration::from_secs(60), DAY));
    }

    const DAY: Duration = Duration::from_secs(86_400);

    #[test]
    fn housekeeping_settings_are_read_and_checked_by_name() {
        let settings = Settings::load_from(
            None,
            env(&[
                ("PASSGATE__HOUSEKEEPING__INTERVAL_SECONDS", "5"),
                ("PASSGATE__HOUSEKEEPING__ENDED_SESSIONS_KEPT_SECONDS", "0"),
            ]),
        )
        .unwrap();
        assert_eq!(settings.housekeeping.interval, Duration::from_secs(5));
        assert_eq!(settings.housekeeping.ended_sessions_kept, Duration::ZERO);
        for (key, value) in [
            ("PASSGATE__HOUSEKEEPING__INTERVAL_SECONDS", "0"),
            ("PASSGATE__HOUSEKEEPING__INTERVAL_SECONDS", "3601"),
            ("PASSGATE__HOUSEKEEPING__ENDED_SESSIONS_KEPT_SECONDS", "31536001"),
        ] {
            let named = key.trim_start_matches("PASSGATE__").replacen("__", ".", 1).to_lowercase();
            assert!(load_error(&[(key, value)]).contains(&named), "{key}={value}");
        }
    }

    #[test]
    fn fallback_settings_are_read_and_checked_by_name() {
        let settings = Settings::load_from(
            None,
            env(&[
                ("PASSGATE__SMTP__HOST", "mail.example"),
                ("PASSGATE__SMTP__PORT", "465"),
                ("PASSGATE__SMTP__TLS", "TLS"),
                ("PASSGATE__SMTP__USERNAME", "passgate"),
                ("PASSGATE__SMTP__PASSWORD", "smtp-secret"),
                ("PASSGATE__SMTP__FROM", "Wallet <auth@wallet.example>"),
                ("PASSGATE__PASSWORD__MAX_CONCURRENT_HASHES", "3"),
            ]),
        )
        .unwrap();
        assert_eq!(settings.smtp.host.as_deref(), Some("mail.example"));
        assert_eq!((settings.smtp.port, settings.smtp.tls), (465, SmtpTls::Tls));
        assert_eq!(settings.password.max_concurrent_hashes, 3);
        assert!(!format!("{:?}", settings.smtp).contains("smtp-secret"));
        for (key, value, named) in [
            ("PASSGATE__SMTP__TLS", "ssl", "smtp.tls"),
            ("PASSGATE__SMTP__FROM", "not an address", "smtp.from"),
            ("PASSGATE__PASSWORD__MEMORY_KIB", "4", "password.memory_kib"),
            ("PASSGATE__PASSWORD__MIN_LENGTH", "6", "password.min_length"),
            ("PASSGATE__PASSWORD__MAX_LENGTH", "32", "password.max_length"),
            ("PASSGATE__MFA__EMAIL_CODE_MAX_TRIES", "0", "mfa.email_code_max_tries"),
            ("PASSGATE__MFA__TOKEN_TTL_SECONDS", "5", "mfa.token_ttl_seconds"),
            ("PASSGATE__LIMITS__LOCKOUT_THRESHOLD", "0", "limits.lockout_threshold"),
            ("PASSGATE__LIMITS__LOCKOUT_MAX_SECONDS", "1", "limits.lockout_max_seconds"),
        ] {
            assert!(load_error(&[(key, value)]).contains(named), "{key}={value}");
        }
        let plain_auth = load_error(&[
            ("PASSGATE__SMTP__HOST", "mail.example"),
            ("PASSGATE__SMTP__TLS", "none"),
            ("PASSGATE__SMTP__USERNAME", "passgate"),
        ]);
        assert!(plain_auth.contains("smtp.username"), "{plain_auth}");
    }

    #[test]
    fn environment_overrides_defaults_including_origin_lists() {
        let settings = Settings::load_from(
            None,
            env(&[
                ("PASSGATE__SERVER__BIND", "0.0.0.0:9000"),
                ("PASSGATE__WEBAUTHN__RP_ID", "wallet.example"),
                (
                    "PASSGATE__WEBAUTHN__ORIGINS",
                    "https://wallet.example,https://pay.wallet.example,android:apk-key-hash:abc_-1",
                ),
                ("PASSGATE__DATABASE__URL", "postgres://u:hunter2@db/passgate"),
            ]),
        )
        .expect("valid");
        assert_eq!(settings.server.bind.port(), 9000);
        assert_eq!(settings.webauthn.origins.len(), 3);
        assert_eq!(settings.webauthn.origins[2].as_str(), "android:apk-key-hash:abc_-1");
        assert_eq!(settings.database.url.backend().unwrap(), Backend::Postgres);
        assert!(!format!("{settings:?}").contains("hunter2"), "Debug must hide the password");
    }

    #[test]
    fn bad_values_fail_naming_the_key() {
        assert!(load_error(&[("PASSGATE__SERVER__BIND", "nope")]).contains("server.bind"));
        assert!(
            load_error(&[("PASSGATE__TOKENS__ACCESS_TTL_SECONDS", "901")])
                .contains("tokens.access_ttl_seconds")
        );
        assert!(load_error(&[("PASSGATE__DATABASE__URL", "mysql://x")]).contains("database.url"));
        assert!(
            load_error(&[("PASSGATE__WEBAUTHN__ORIGINS", "https://evil.example")])
                .contains("not covered by webauthn.rp_id")
        );
        assert!(
            load_error(&[
                ("PASSGATE__WEBAUTHN__RP_ID", "wallet.example"),
                ("PASSGATE__WEBAUTHN__ORIGINS", "http://wallet.example")
            ])
            .contains("https")
        );
        assert!(
            load_error(&[("PASSGATE__WEBAUTHN__ORIGINS", "android:apk-key-hash:a b")])
                .contains("webauthn.origins")
        );
        assert!(load_error(&[("PASSGATE__LOG__FORMAT", "xml")]).contains("log.format"));
        assert!(
            load_error(&[("PASSGATE__SERVER__REQUEST_TIMEOUT_SECONDS", "0")])
                .contains("server.request_timeout_seconds")
        );
        assert!(
            load_error(&[("PASSGATE__SMTP__TLS", "none"), ("PASSGATE__SMTP__CA_FILE", "ca.pem")])
                .contains("smtp.ca_file")
        );
        assert!(
            load_error(&[("PASSGATE__STEPUP__TOKEN_TTL_SECONDS", "121")])
                .contains("stepup.token_ttl_seconds")
        );
        assert!(
            load_error(&[("PASSGATE__TOKENS__ALGORITHM", "HS256")]).contains("tokens.algorithm")
        );
        let short_key = load_error(&[("PASSGATE__TOKENS__KEY_ENCRYPTION_KEY", "c2VjcmV0LWtleQ==")]);
        assert!(short_key.contains("tokens.key_encryption_key"));
        assert!(!short_key.contains("c2VjcmV0LWtleQ"), "the value is never echoed");
    }

    #[test]
    fn a_config_file_overrides_defaults_and_the_environment_overrides_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("passgate.toml");
        std::fs::write(&path, "[tokens]\naudience = \"wallet\"\naccess_ttl_seconds = 120\n")
            .unwrap();
        let settings = Settings::load_from(
            Some(&path),
            env(&[("PASSGATE__TOKENS__ACCESS_TTL_SECONDS", "60")]),
        )
        .unwrap();
        assert_eq!(settings.tokens.audience, "wallet");
        assert_eq!(settings.tokens.access_ttl, Duration::from_secs(60));
    }

    #[test]
    fn apps_and_related_origins_are_read_and_checked() {
        let fingerprint = (0..32).map(|i| format!("{i:02X}")).collect::<Vec<_>>().join(":");
        let settings = Settings::load_from(
            None,
            env(&[
                ("PASSGATE__APPS__ANDROID", &format!("com.wallet.app={fingerprint}")),
                ("PASSGATE__APPS__IOS", "ABCDE12345.com.wallet.app"),
                ("PASSGATE__WEBAUTHN__RELATED_ORIGINS", "https://wallet.example.org"),
            ]),
        )
        .unwrap();
        let app = &settings.apps.android[0];
        assert_eq!(app.fingerprint(), fingerprint);
        assert_eq!(
            app.origin(),
            "android:apk-key-hash:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8"
        );
        assert_eq!(settings.apps.ios, ["ABCDE12345.com.wallet.app"]);
        assert_eq!(settings.webauthn.related_origins[0].as_str(), "https://wallet.example.org/");
        assert!(
            load_error(&[("PASSGATE__APPS__ANDROID", "com.wallet.app=AB:CD")])
                .contains("apps.android")
        );
        assert!(load_error(&[("PASSGATE__APPS__IOS", "com.wallet.app")]).contains("apps.ios"));
        assert!(
            load_error(&[("PASSGATE__WEBAUTHN__RELATED_ORIGINS", "http://x.example")])
                .contains("webauthn.related_origins")
        );
    }

    #[test]
    fn trusted_proxies_are_cidrs_from_a_comma_separated_variable() {
        let settings = Settings::load_from(
            None,
            env(&[("PASSGATE__SERVER__TRUSTED_PROXIES", "10.0.0.0/8, ::1/128,192.0.2.7")]),
        )
        .unwrap();
        let expected = ["10.0.0.0/8", "::1/128", "192.0.2.7/32"].map(|n| n.parse().unwrap());
        assert_eq!(settings.server.trusted_proxies, TrustedProxies::new(expected.to_vec()));
        assert!(
            Settings::load_from(None, HashMap::new()).unwrap().server.trusted_proxies.is_empty()
        );
        for bad in ["10.0.0.0/33", "proxy.internal", "10.0.0.1/8"] {
            let error = load_error(&[("PASSGATE__SERVER__TRUSTED_PROXIES", bad)]);
            assert!(error.contains("server.trusted_proxies"), "{bad}: {error}");
        }
        assert!(
            load_error(&[("PASSGATE__SERVER__TRUSTED_PROXIES", "10.0.0.1/8")])
                .contains("10.0.0.0/8")
        );
    }

    #[test]
    fn the_old_trust_forwarded_for_is_refused_without_trusted_proxies() {
        let error = load_error(&[("PASSGATE__SERVER__TRUST_FORWARDED_FOR", "true")]);
        assert!(
            error.contains("server.trust_forwarded_for")
                && error.contains("server.trusted_proxies"),
            "{error}"
        );
        let settings = Settings::load_from(
            None,
            env(&[
                ("PASSGATE__SERVER__TRUST_FORWARDED_FOR", "true"),
                ("PASSGATE__SERVER__TRUSTED_PROXIES", "10.0.0.0/8"),
            ]),
        )
        .unwrap();
        assert!(settings.warnings.iter().any(|w| w.contains("server.trust_forwarded_for")));
        let off =
            Settings::load_from(None, env(&[("PASSGATE__SERVER__TRUST_FORWARDED_FOR", "false")]));
        assert!(off.unwrap().server.trusted_proxies.is_empty());
        assert!(Settings::load_from(None, HashMap::new()).unwrap().warnings.is_empty());
    }

    #[test]
    fn unknown_keys_are_refused_by_name() {
        let error = load_error(&[("PASSGATE__TOKENS__ACCES_TTL_SECONDS", "60")]);
        assert!(error.contains("acces_ttl_seconds"), "{error}");
    }
}
