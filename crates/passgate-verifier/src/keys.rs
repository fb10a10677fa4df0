//! The issuer's published keys: fetched from its JWKS, cached, and
//! refetched when a token names an unknown key or the set grows old.

use std::collections::HashMap;
use std::sync::{PoisonError, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;

use crate::VerifyError;

/// A key set is a few hundred bytes per key; anything far larger is not one.
const MAX_JWKS_BYTES: usize = 64 * 1024;

#[derive(Clone)]
pub(crate) struct PublicKey {
    pub(crate) alg: Algorithm,
    pub(crate) key: DecodingKey,
}

#[derive(Default)]
pub(crate) struct KeySet {
    keys: HashMap<String, PublicKey>,
    fetched_at: Option<Instant>,
}

pub(crate) struct KeyCache {
    pub(crate) http: reqwest::Client,
    pub(crate) url: reqwest::Url,
    pub(crate) min_refetch: Duration,
    pub(crate) max_age: Duration,
    pub(crate) set: RwLock<KeySet>,
    /// Held while fetching, so concurrent misses wait for one fetch instead
    /// of each making their own; holds when the last fetch was tried.
    pub(crate) fetch_gate: tokio::sync::Mutex<Option<Instant>>,
}

impl KeyCache {
    /// The key for `kid`, and whether the cached set is past its age.
    fn cached(&self, kid: &str) -> (Option<PublicKey>, bool) {
        let set = self.set.read().unwrap_or_else(PoisonError::into_inner);
        let stale = set.fetched_at.is_none_or(|at| at.elapsed() >= self.max_age);
        (set.keys.get(kid).cloned(), stale)
    }

    pub(crate) async fn key_for(&self, kid: &str) -> Result<PublicKey, VerifyError> {
        if let (Some(key), false) = self.cached(kid) {
            return Ok(key);
        }
        let mut last_fetch = self.fetch_gate.lock().await;
        // Another request may have fetched while this one waited.
        let (cached, stale) = self.cached(kid);
        if let (Some(key), false) = (&cached, stale) {
            return Ok(key.clone());
        }
        if last_fetch.is_some_and(|at| at.elapsed() < self.min_refetch) {
            return cached.ok_or(VerifyError::UnknownKey);
        }
        *last_fetch = Some(Instant::now());
        match self.fetch_and_store().await {
            Ok(_) => self.cached(kid).0.ok_or(VerifyError::UnknownKey),
            // passgate being briefly unreachable should not stop payments
            // signed by a key it published minutes ago.
            Err(_) if cached.is_some() => cached.ok_or(VerifyError::UnknownKey),
            Err(error) => Err(error),
        }
    }

    pub(crate) async fn fetch_and_store(&self) -> Result<usize, VerifyError> {
        let keys = self.fetch().await.map_err(VerifyError::KeysUnavailable)?;
        let count = keys.len();
        let mut set = self.set.write().unwrap_or_else(PoisonError::into_inner);
        *set = KeySet { keys, fetched_at: Some(Instant::now()) };
        Ok(count)
    }

    async fn fetch(&self) -> Result<HashMap<String, PublicKey>, String> {
        let mut response = self
            .http
            .get(self.url.clone())
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| error_chain(&e))?;
        if !response.status().is_success() {
            return Err(format!("{} answered {}", self.url, response.status()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| error_chain(&e))? {
            if body.len() + chunk.len() > MAX_JWKS_BYTES {
                return Err(format!("{} sent more than {MAX_JWKS_BYTES} bytes", self.url));
            }
            body.extend_from_slice(&chunk);
        }
        #[derive(Deserialize)]
        struct RawSet {
            keys: Vec<serde_json::Value>,
        }
        let raw: RawSet = serde_json::from_slice(&body)
            .map_err(|e| format!("{} is not a JWK set: {e}", self.url))?;
        // One key of a kind this verifier cannot use must not hide the rest.
        Ok(raw
            .keys
            .into_iter()
            .filter_map(|value| serde_json::from_value::<Jwk>(value).ok())
            .filter_map(|jwk| Some((jwk.common.key_id.clone()?, public_key(&jwk)?)))
            .collect())
    }
}

/// A usable signature-verification key, or `None` for anything else: a
/// symmetric (`oct`) key in a public set must never verify anything, and a
/// key's declared `alg` and `use`, when present, are honoured.
pub(crate) fn public_key(jwk: &Jwk) -> Option<PublicKey> {
    if jwk.common.public_key_use.as_ref().is_some_and(|u| *u != PublicKeyUse::Signature) {
        return None;
    }
    let (alg, declared) = match &jwk.algorithm {
        AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => {
            (Algorithm::ES256, KeyAlgorithm::ES256)
        }
        AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
            (Algorithm::EdDSA, KeyAlgorithm::EdDSA)
        }
        _ => return None,
    };
    if jwk.common.key_algorithm.is_some_and(|a| a != declared) {
        return None;
    }
    Some(PublicKey { alg, key: DecodingKey::from_jwk(jwk).ok()? })
}

/// reqwest's own message hides the cause ("error sending request"); the
/// chain says whether it was DNS, a refused connection or TLS.
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
