//! `[tokens]` and `[stepup]`: the access, refresh and payment
//! authorization tokens passgate issues, and the keys that sign them.

use std::fmt;
use std::time::Duration;

use anyhow::{Context, bail};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

/// Access tokens live at most this long (API contract, Tokens).
pub const MAX_ACCESS_TTL: Duration = Duration::from_secs(900);
/// Payment authorization tokens live at most this long (API contract,
/// Payment step-up). The verifier a payment service embeds refuses longer
/// ones, so this is its bound rather than a copy of it.
pub const MAX_AUTHORIZATION_TTL: Duration = passgate_verifier::MAX_TOKEN_LIFETIME;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTokens {
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
pub(super) struct RawStepup {
    audience: String,
    token_ttl_seconds: u64,
    require_device_bound: bool,
    fallback_passkey_delay_seconds: u64,
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

pub(super) fn validate_tokens(raw: RawTokens) -> anyhow::Result<TokenSettings> {
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

pub(super) fn validate_stepup(raw: RawStepup) -> anyhow::Result<StepupSettings> {
    if raw.audience.trim().is_empty() {
        bail!("stepup.audience: must not be empty");
    }
    let token_ttl = Duration::from_secs(raw.token_ttl_seconds);
    if token_ttl.is_zero() || token_ttl > MAX_AUTHORIZATION_TTL {
        bail!(
            "stepup.token_ttl_seconds: {} is outside 1..={}",
            raw.token_ttl_seconds,
            MAX_AUTHORIZATION_TTL.as_secs()
        );
    }
    Ok(StepupSettings {
        audience: raw.audience,
        token_ttl,
        require_device_bound: raw.require_device_bound,
        fallback_passkey_delay: Duration::from_secs(raw.fallback_passkey_delay_seconds),
    })
}
