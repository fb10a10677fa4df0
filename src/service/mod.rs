//! The application's behaviour, free of HTTP, as one struct per feature
//! (`Passkeys`, `Devices`, `Fallback`, `Totp`, `Account`, `StepUp`,
//! `Admin`, `Tokens`, `Housekeeping`, `WellKnown`), each holding exactly
//! the parts it uses: the store, the clock, and shared pieces such as
//! `Audit`, `Throttle`, `Notifier` and `Freshness`. Routes call one
//! feature's function and map its result; `Core` builds the features once
//! and holds them.

pub mod aaguid;
pub mod account;
pub mod admin;
pub mod anomalies;
pub mod assertion;
pub mod audit;
pub mod audit_export;
mod authenticator_data;
mod codes;
pub mod devices;
pub mod fallback;
mod fresh;
pub mod housekeeping;
pub mod idempotency;
pub mod keys;
mod locale;
mod login_handle;
mod notify;
pub mod passkey;
pub mod password;
pub mod profile;
pub mod reviews;
pub mod risk;
mod sealing;
pub mod stepup;
mod throttle;
pub mod tokens;
pub mod totp;
pub mod trusted;
pub mod well_known;

use std::sync::Arc;

use account::Account;
use admin::Admin;
use anyhow::Context;
use audit::Audit;
use codes::CodeHasher;
use devices::Devices;
use fallback::Fallback;
use fresh::Freshness;
use housekeeping::Housekeeping;
use keys::SigningKeys;
use notify::Notifier;
use passkey::Passkeys;
use password::PasswordHasher;
use rand::RngCore;
use sealing::Sealer;
use secrecy::zeroize::Zeroizing;
use stepup::StepUp;
use subtle::ConstantTimeEq;
use throttle::Throttle;
use tokens::Tokens;
use totp::Totp;
use webauthn_rs::prelude::{Webauthn, WebauthnBuilder};
use well_known::WellKnown;

use crate::clock::Clock;
use crate::config::Settings;
use crate::error::ApiError;
use crate::mailer::Mailer;
use crate::metrics::Metrics;
pub use crate::metrics::Scrape;
use crate::store::{SecretPlace, Store, StoreError};

/// The features, each with the parts it needs, built once and shared by
/// all workers. Routes call one feature's function; nothing else reaches
/// into another feature's parts.
pub struct Core {
    pub settings: Arc<Settings>,
    pub store: Arc<dyn Store>,
    pub clock: Arc<dyn Clock>,
    pub keys: Arc<SigningKeys>,
    pub metrics: Metrics,
    pub passwords: Arc<PasswordHasher>,
    pub tokens: Tokens,
    pub passkeys: Passkeys,
    pub devices: Devices,
    pub fallback: Fallback,
    pub totp: Totp,
    pub account: Account,
    pub stepup: StepUp,
    pub admin: Admin,
    pub housekeeping: Housekeeping,
    pub well_known: WellKnown,
    pub reviews: reviews::Reviews,
    /// Trusted browsers: `is_trusted` is the risk rules' `trusted_device`.
    pub trusted_devices: trusted::TrustedDevices,
    pub anomalies: anomalies::Anomalies,
    /// The risk decision; `risk.reload()` reads its rules again (SIGHUP).
    pub risk: risk::Risk,
    pub idempotency: idempotency::Idempotency,
    /// Seals TOTP secrets (the same key-encryption key as signing keys).
    secrets: Arc<Sealer>,
    audit: Audit,
}

impl Core {
    pub async fn new(
        settings: Settings,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Core> {
        let webauthn = Arc::new(build_webauthn(&settings)?);
        let rp = Arc::new(assertion::RelyingParty::new(
            &settings.webauthn.rp_id,
            allowed_origins(&settings)?,
        ));
        require_key_encryption_key(&settings)?;
        let secrets = Arc::new(Sealer::new(settings.tokens.key_encryption_key.as_ref())?);
        if secrets.encrypts() {
            seal_unsealed(store.as_ref(), &secrets).await?;
        } else {
            tracing::warn!(
                "tokens.key_encryption_key is not set: private signing keys, TOTP secrets and \
                 the keys behind one-time codes are stored unencrypted (development only)"
            );
        }
        let keys = Arc::new(
            SigningKeys::load_or_create(
                store.clone(),
                clock.clone(),
                Sealer::new(settings.tokens.key_encryption_key.as_ref())?,
                settings.tokens.algorithm,
            )
            .await?,
        );
        if settings.stepup.audience == settings.tokens.audience {
            tracing::warn!(
                audience = %settings.tokens.audience,
                "stepup.audience equals tokens.audience: a payment service that checks only aud \
                 would take an access token for a payment authorization; give them different values"
            );
        }
        let now = clock.now_ms();
        let decoy_key: Arc<[u8]> =
            server_secret(store.as_ref(), &secrets, DECOY_KEY, now).await?.as_slice().into();
        let code_key = server_secret(store.as_ref(), &secrets, CODE_KEY, now).await?;
        let codes = Arc::new(CodeHasher::new(code_key.to_vec()));
        let handles = Arc::new(login_handle::HandleSealer::new(
            &server_secret(store.as_ref(), &secrets, HANDLE_KEY, now).await?,
        )?);
        let metrics = Metrics::new(settings.server.request_timeout, settings.tokens.key_rotation)?;
        let passwords = Arc::new(PasswordHasher::new(&settings.password)?);
        let mailer = Arc::new(Mailer::new(&settings.smtp)?);
        let settings = Arc::new(settings);

        let audit = Audit::new(store.clone(), clock.clone());
        let notifier = Notifier::new(&settings, mailer.clone(), metrics.clone(), clock.clone());
        let fresh = Freshness::new(settings.clone(), store.clone(), clock.clone());
        let reviews = reviews::Reviews::new(
            store.clone(),
            clock.clone(),
            codes.clone(),
            audit.clone(),
            notifier.clone(),
            fresh.clone(),
        );
        let throttle = Throttle::new(
            settings.clone(),
            store.clone(),
            clock.clone(),
            metrics.clone(),
            audit.clone(),
        );
        // Built early: the risk rules of sign-ins and payments read it.
        let trusted_devices = trusted::TrustedDevices::new(
            settings.clone(),
            store.clone(),
            clock.clone(),
            codes.clone(),
            audit.clone(),
            notifier.clone(),
            fresh.clone(),
        );
        let risk = risk::Risk::new(
            settings.risk.enabled,
            settings.risk.rules_file.clone(),
            risk::load_rules(settings.risk.rules_file.as_deref())?,
            store.clone(),
            clock.clone(),
            metrics.clone(),
            audit.clone(),
            reviews.clone(),
            trusted_devices.clone(),
        );
        let tokens = Tokens::new(
            settings.clone(),
            store.clone(),
            clock.clone(),
            keys.clone(),
            audit.clone(),
            metrics.clone(),
        );
        let passkeys = Passkeys::new(
            settings.clone(),
            store.clone(),
            clock.clone(),
            metrics.clone(),
            webauthn,
            rp,
            handles,
            decoy_key,
            audit.clone(),
            throttle.clone(),
            tokens.clone(),
            risk.clone(),
        );
        let devices = Devices::new(
            settings.clone(),
            store.clone(),
            clock.clone(),
            codes.clone(),
            audit.clone(),
            throttle.clone(),
            notifier.clone(),
            fresh.clone(),
            tokens.clone(),
            passkeys.clone(),
        );
        let totp = Totp::new(
            settings.clone(),
            store.clone(),
            clock.clone(),
            secrets.clone(),
            codes.clone(),
            audit.clone(),
            throttle.clone(),
            notifier.clone(),
            fresh.clone(),
        );
        let fallback = Fallback::new(
            settings.clone(),
            store.clone(),
            clock.clone(),
            metrics.clone(),
            passwords.clone(),
            codes.clone(),
            mailer.clone(),
            audit.clone(),
            throttle.clone(),
            tokens.clone(),
            totp.clone(),
            risk.clone(),
        );
        let account = Account::new(
            store.clone(),
            clock.clone(),
            metrics.clone(),
            passwords.clone(),
            audit.clone(),
            throttle,
            notifier.clone(),
            fresh.clone(),
            fallback.clone(),
        );
        let stepup = StepUp::new(
            settings.clone(),
            store.clone(),
            clock.clone(),
            metrics.clone(),
            keys.clone(),
            audit.clone(),
            passkeys.clone(),
            risk.clone(),
        );
        let admin = Admin::new(
            store.clone(),
            clock.clone(),
            codes.clone(),
            mailer,
            audit.clone(),
            notifier,
            fresh,
            tokens.clone(),
            devices.clone(),
            account.clone(),
        );
        let housekeeping =
            Housekeeping::new(settings.clone(), store.clone(), clock.clone(), keys.clone());
        let well_known = WellKnown::new(settings.clone());
        let anomalies = anomalies::Anomalies::new(
            settings.clone(),
            store.clone(),
            clock.clone(),
            metrics.clone(),
            audit.failure_tally(),
        )?;
        let idempotency = idempotency::Idempotency::new(
            settings.clone(),
            store.clone(),
            clock.clone(),
            server_secret(store.as_ref(), &secrets, IDEMPOTENCY_KEY, now).await?,
        );
        Ok(Core {
            settings,
            store,
            clock,
            keys,
            metrics,
            passwords,
            tokens,
            passkeys,
            devices,
            fallback,
            totp,
            account,
            stepup,
            admin,
            housekeeping,
            well_known,
            reviews,
            trusted_devices,
            anomalies,
            risk,
            idempotency,
            secrets,
            audit,
        })
    }

    /// Seals every secret at rest (signing keys, TOTP secrets, server
    /// secrets) under `new_key` instead of the current key-encryption key,
    /// in one transaction. The secrets themselves stay the same, so live
    /// tokens, codes and TOTP apps keep working once every node restarts
    /// with the new key; the old key then opens nothing.
    pub async fn reseal_secrets(&self, new_key: &[u8; 32]) -> anyhow::Result<u64> {
        let configured = self.settings.tokens.key_encryption_key.as_ref();
        if configured.is_some_and(|key| bool::from(key.ct_eq(new_key))) {
            anyhow::bail!("the new key-encryption key is the current one");
        }
        let new = Sealer::new(Some(new_key))?;
        let current = &self.secrets;
        let resealed = self
            .store
            .rewrite_secrets(false, &|place, stored| Ok(Some(new.reseal(current, place, stored)?)))
            .await?;
        let reason = format!("{resealed} secrets sealed under a new key-encryption key");
        self.audit.record(audit::Event::ok("secrets_resealed").reason(&reason)).await;
        Ok(resealed)
    }

    /// Withdraws signing key `kid` at once (see `keys`), audited. Returns
    /// the kid that signs from now on, when it changed.
    pub async fn revoke_signing_key(&self, kid: &str) -> anyhow::Result<Option<String>> {
        let successor = self.keys.revoke(kid, self.clock.now_ms()).await?;
        let reason = match &successor {
            Some(next) => format!("signing key {kid} revoked; {next} signs from now on"),
            None => format!("signing key {kid} revoked"),
        };
        self.audit.record(audit::Event::ok("signing_key_revoked").reason(&reason)).await;
        Ok(successor)
    }
}

/// What `Core::new` checks of the settings before it opens the database
/// (the relying party, the key-encryption key's presence, the mailer and
/// the argon2 parameters), for `passgate config check`: a configuration
/// it passes fails at start only for the database or the secrets in it.
pub fn check_settings(settings: &Settings) -> anyhow::Result<()> {
    build_webauthn(settings)?;
    allowed_origins(settings)?;
    require_key_encryption_key(settings)?;
    Mailer::new(&settings.smtp)?;
    risk::load_rules(settings.risk.rules_file.as_deref())?;
    let p = &settings.password;
    argon2::Params::new(p.memory_kib, p.iterations, p.parallelism, None)
        .map_err(|e| anyhow::anyhow!("password: argon2 parameters refused: {e}"))?;
    Ok(())
}

/// The server secrets every node shares: the key that makes up credential
/// ids for unknown usernames, the HMAC key of one-time codes (mailed,
/// recovery and enrolment codes), and the key of sign-in handles. Random, not derived from the
/// key-encryption key, so that changing that key (`keys reseal`) keeps
/// every live code valid.
const DECOY_KEY: &str = "decoy_credential_key";
const CODE_KEY: &str = "one_time_code_key";
/// The key that seals sign-in ceremonies into their handles (`login_handle`).
const HANDLE_KEY: &str = "ceremony_handle_key";
/// The key that idempotency keys' rows and sealed answers derive from
/// (`idempotency`).
const IDEMPOTENCY_KEY: &str = "idempotency_answer_key";

/// Refuses to run a real relying party with secrets in the clear: only
/// `localhost` (development, the tests) may go without a key-encryption
/// key.
fn require_key_encryption_key(settings: &Settings) -> anyhow::Result<()> {
    if settings.tokens.key_encryption_key.is_none() && settings.webauthn.rp_id != "localhost" {
        anyhow::bail!(
            "tokens.key_encryption_key is not set, and webauthn.rp_id is {:?}, not localhost: \
             outside development the signing keys, TOTP secrets and code keys must be sealed. \
             Set PASSGATE__TOKENS__KEY_ENCRYPTION_KEY to 32 random bytes, base64 \
             (openssl rand -base64 32)",
            settings.webauthn.rp_id
        );
    }
    Ok(())
}

/// Seals, in place, secrets stored in the clear before a key-encryption
/// key was configured (or by a version that did not seal server secrets).
async fn seal_unsealed(store: &dyn Store, sealer: &Sealer) -> anyhow::Result<()> {
    let plain = Sealer::new(None)?;
    let sealed = store
        .rewrite_secrets(true, &|place, stored| Ok(Some(sealer.reseal(&plain, place, stored)?)))
        .await?;
    if sealed > 0 {
        tracing::info!(
            sealed,
            "secrets stored in the clear are now sealed with tokens.key_encryption_key"
        );
    }
    Ok(())
}

/// The server secret `name`, made (32 random bytes) and stored by the first
/// node to start, sealed when a key-encryption key is configured.
async fn server_secret(
    store: &dyn Store,
    sealer: &Sealer,
    name: &str,
    now: crate::clock::Millis,
) -> anyhow::Result<Zeroizing<Vec<u8>>> {
    let place = SecretPlace::ServerSecret { name };
    let mut candidate = Zeroizing::new([0u8; 32]);
    rand::rngs::OsRng.fill_bytes(candidate.as_mut());
    let stored =
        store.shared_secret(name, &sealer.seal_at(place, candidate.as_ref())?, now).await?;
    let secret = sealer.open_at(place, &stored).with_context(|| format!("server secret {name}"))?;
    Ok(Zeroizing::new(secret))
}

fn build_webauthn(settings: &Settings) -> anyhow::Result<Webauthn> {
    let config = &settings.webauthn;
    // validate() guarantees at least one web origin covered by the RP id.
    let primary = config
        .origins
        .iter()
        .find(|o| matches!(o.scheme(), "https" | "http"))
        .context("webauthn.origins: no web origin")?;
    let mut builder = WebauthnBuilder::new(&config.rp_id, primary)
        .with_context(|| format!("webauthn.rp_id {:?} does not cover {primary}", config.rp_id))?
        .rp_name(&config.rp_name)
        .timeout(config.ceremony_ttl);
    for origin in config.origins.iter().chain(&config.related_origins).filter(|o| *o != primary) {
        builder = builder.append_allowed_origin(origin);
    }
    for app in &settings.apps.android {
        let origin = url::Url::parse(&app.origin()).context("apps.android origin")?;
        builder = builder.append_allowed_origin(&origin);
    }
    builder.build().context("webauthn configuration")
}

/// Every origin an assertion may come from: web origins, related
/// origins and Android apps, as given to webauthn-rs above.
fn allowed_origins(settings: &Settings) -> anyhow::Result<Vec<url::Url>> {
    let config = &settings.webauthn;
    let mut origins: Vec<url::Url> =
        config.origins.iter().chain(&config.related_origins).cloned().collect();
    for app in &settings.apps.android {
        origins.push(url::Url::parse(&app.origin()).context("apps.android origin")?);
    }
    Ok(origins)
}

/// What a storage failure means to the client: the store knows nothing of
/// HTTP, and the error type knows nothing of the store.
impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Conflict(constraint) if constraint.contains("username") => {
                ApiError::UsernameTaken
            }
            // A credential id already bound (to this or another account):
            // WebAuthn §7.1 step 22 says to refuse the registration.
            StoreError::Conflict(constraint) if constraint.contains("credential") => {
                ApiError::WebauthnFailed("this credential is already registered".into())
            }
            StoreError::NotFound => ApiError::NotFound("no such resource".into()),
            StoreError::Unavailable(cause) => {
                tracing::error!(error.cause_chain = ?cause, "database unavailable");
                ApiError::Unavailable
            }
            other => ApiError::Internal(anyhow::Error::new(other)),
        }
    }
}
