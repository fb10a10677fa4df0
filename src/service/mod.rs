//! The application's behaviour, free of HTTP: routes call one function
//! here and map its result. Time comes from `Core::clock`, storage from
//! `Core::store`.

pub mod aaguid;
pub mod account;
pub mod admin;
pub mod assertion;
pub mod audit;
mod authenticator_data;
mod codes;
pub mod devices;
pub mod fallback;
pub mod keys;
mod login_handle;
mod notify;
pub mod passkey;
pub mod password;
pub mod profile;
mod sealing;
pub mod stepup;
mod throttle;
pub mod tokens;
pub mod totp;
mod well_known;

use std::sync::Arc;

use anyhow::Context;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use webauthn_rs::prelude::{Webauthn, WebauthnBuilder};

use crate::clock::Clock;
use crate::config::Settings;
use crate::mailer::Mailer;
use crate::metrics::Metrics;
use crate::store::Store;
use codes::CodeHasher;
use keys::SigningKeys;
use password::PasswordHasher;
use sealing::Sealer;

/// Everything a request may need, shared by all workers.
pub struct Core {
    pub settings: Settings,
    pub store: Arc<dyn Store>,
    pub clock: Arc<dyn Clock>,
    pub webauthn: Webauthn,
    /// Checks sign-in and step-up assertions (see `assertion`).
    pub rp: assertion::RelyingParty,
    pub keys: SigningKeys,
    pub metrics: Metrics,
    pub passwords: PasswordHasher,
    pub mailer: Arc<Mailer>,
    codes: CodeHasher,
    /// Seals sign-in ceremonies into their handles (a key every node shares).
    handles: login_handle::HandleSealer,
    /// Seals TOTP secrets (the same key-encryption key as signing keys).
    secrets: Sealer,
    decoy_key: Vec<u8>,
}

impl Core {
    pub async fn new(
        settings: Settings,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Core> {
        let webauthn = build_webauthn(&settings)?;
        let rp =
            assertion::RelyingParty::new(&settings.webauthn.rp_id, allowed_origins(&settings)?);
        let sealer = sealing::Sealer::new(settings.tokens.key_encryption_key.as_ref())?;
        let keys = SigningKeys::load_or_create(
            store.clone(),
            clock.as_ref(),
            sealer,
            settings.tokens.algorithm,
        )
        .await?;
        if !keys.seals_keys() {
            tracing::warn!(
                "tokens.key_encryption_key is not set: private signing keys are stored unencrypted"
            );
        }
        let mut candidate = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut candidate);
        let decoy_key = store
            .shared_secret(
                "decoy_credential_key",
                &URL_SAFE_NO_PAD.encode(candidate),
                clock.now_ms(),
            )
            .await?;
        let decoy_key = URL_SAFE_NO_PAD.decode(decoy_key).context("stored decoy key")?;
        rand::rngs::OsRng.fill_bytes(&mut candidate);
        let code_key = store
            .shared_secret("one_time_code_key", &URL_SAFE_NO_PAD.encode(candidate), clock.now_ms())
            .await?;
        let codes = CodeHasher::new(URL_SAFE_NO_PAD.decode(code_key).context("stored code key")?);
        rand::rngs::OsRng.fill_bytes(&mut candidate);
        let handle_key = store
            .shared_secret(
                "ceremony_handle_key",
                &URL_SAFE_NO_PAD.encode(candidate),
                clock.now_ms(),
            )
            .await?;
        let handles = login_handle::HandleSealer::new(
            &URL_SAFE_NO_PAD.decode(handle_key).context("stored ceremony handle key")?,
        )?;
        let metrics = Metrics::new()?;
        let passwords = PasswordHasher::new(&settings.password)?;
        let mailer = Arc::new(Mailer::new(&settings.smtp)?);
        let secrets = Sealer::new(settings.tokens.key_encryption_key.as_ref())?;
        Ok(Core {
            settings,
            store,
            clock,
            webauthn,
            rp,
            keys,
            metrics,
            passwords,
            mailer,
            codes,
            handles,
            secrets,
            decoy_key,
        })
    }
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
