//! Configuration: `config/default.toml`, then an optional `--config` file,
//! then `PASSGATE__SECTION__KEY` environment variables (a secret one may
//! name a file instead: `secret_files`). `Settings::load`
//! validates everything at start and names the offending key, so a bad
//! deployment fails before it serves a single request.
//!
//! One file per section (or a few related ones): its raw form as read, its
//! validated settings, and the checks between the two. This file layers
//! the sources and puts the sections together.

mod database;
mod fallback;
mod housekeeping;
mod risk;
mod secret_files;
mod server;
mod smtp;
mod tokens;
mod trust;
mod webauthn;

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, bail};
use serde::Deserialize;

pub use database::{Backend, DatabaseSettings, DatabaseUrl};
pub use fallback::{LimitSettings, MfaSettings, PasswordSettings};
pub use housekeeping::HousekeepingSettings;
pub use risk::RiskSettings;
pub use server::ServerSettings;
pub use smtp::{SmtpSettings, SmtpTls};
pub use tokens::{
    KeyAlgorithm, MAX_ACCESS_TTL, MAX_AUTHORIZATION_TTL, StepupSettings, TokenSettings,
    parse_key_encryption_key,
};
pub use trust::TrustSettings;
pub use webauthn::{AndroidApp, AppSettings, WebauthnSettings};

/// The compiled-in defaults: the same text as `config/default.toml`, so the
/// binary also starts from a directory without that file.
const DEFAULTS: &str = include_str!("../../config/default.toml");

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSettings {
    server: server::RawServer,
    database: database::RawDatabase,
    webauthn: webauthn::RawWebauthn,
    tokens: tokens::RawTokens,
    stepup: tokens::RawStepup,
    apps: webauthn::RawApps,
    password: fallback::RawPassword,
    mfa: fallback::RawMfa,
    smtp: smtp::RawSmtp,
    limits: fallback::RawLimits,
    housekeeping: housekeeping::RawHousekeeping,
    log: RawLog,
    risk: risk::RawRisk,
    trust: trust::RawTrust,
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
    pub risk: RiskSettings,
    pub trust: TrustSettings,
    /// Settings accepted but worth an operator's attention (a key on its
    /// way out), logged when the server starts: telemetry is not set up
    /// yet while settings load.
    pub warnings: Vec<String>,
}

#[derive(Clone, Debug)]
pub struct LogSettings {
    pub level: String,
    pub format: LogFormat,
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
        mut env: HashMap<String, String>,
    ) -> anyhow::Result<Settings> {
        secret_files::read_secret_files(&mut env)?;
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
            .with_list_parse_key("server.cors_origins")
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
    /// The sections are checked in this order, so that a configuration with
    /// several mistakes is refused for the same one as before the split.
    fn validate(self) -> anyhow::Result<Settings> {
        let mut warnings = Vec::new();
        let server = server::validate_server(self.server, &mut warnings)?;
        let database = database::validate_database(self.database)?;
        let webauthn = webauthn::validate_webauthn(self.webauthn)?;
        let tokens = tokens::validate_tokens(self.tokens)?;
        let stepup = tokens::validate_stepup(self.stepup)?;
        let format = match self.log.format.as_str() {
            "pretty" => LogFormat::Pretty,
            "json" => LogFormat::Json,
            other => bail!("log.format: {other:?} is not one of pretty, json"),
        };
        Ok(Settings {
            server,
            database,
            webauthn,
            tokens,
            stepup,
            apps: webauthn::validate_apps(self.apps)?,
            password: fallback::validate_password(self.password)?,
            mfa: fallback::validate_mfa(self.mfa)?,
            smtp: smtp::validate_smtp(self.smtp)?,
            limits: fallback::validate_limits(self.limits)?,
            housekeeping: housekeeping::validate_housekeeping(self.housekeeping)?,
            log: LogSettings { level: self.log.level, format },
            risk: risk::validate_risk(self.risk)?,
            trust: trust::validate_trust(self.trust)?,
            warnings,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// An environment of `PASSGATE__` variables; the sections' tests use it too.
    pub(super) fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
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

    /// The message a configuration is refused with.
    pub(super) fn load_error(pairs: &[(&str, &str)]) -> String {
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
    fn unknown_keys_are_refused_by_name() {
        let error = load_error(&[("PASSGATE__TOKENS__ACCES_TTL_SECONDS", "60")]);
        assert!(error.contains("acces_ttl_seconds"), "{error}");
    }
}
