//! Verifying payment authorization tokens, for the services that execute
//! payments.
//!
//! A payment step-up ends with passgate handing the client a short-lived
//! JWT whose `txn` claim is the SHA-256 of the transaction the user approved
//! with a passkey. The service that moves the money must not take the
//! client's word for any of it: it accepts the payment only when the token
//! is genuine (signed by a key passgate publishes at
//! `/.well-known/jwks.json`), meant for it (`iss`, `aud`, `scope`), current,
//! bound to exactly the transaction it is about to execute, and presented
//! for the first time. [`Verifier`] checks all of that without a web
//! framework, so any service can embed it, and refuses with one
//! [`VerifyError`] variant per reason, so the service can tell the client
//! precisely what was wrong.
//!
//! Access tokens from sign-in share the issuer and keys. Three checks keep
//! one kind from passing for the other, each enough on its own: the header
//! `typ` (`payment-authz+jwt` here, `JWT` for access tokens, RFC 8725
//! §3.11), the audience (`stepup.audience`, by default
//! `payments:authorize`, against `tokens.audience`, by default `payments`)
//! and the `scope` (`payment:authorize`, which access tokens never carry).
//! [`Verifier::verify_access`] checks an access token the same way round.
//!
//! The replay cache lives in this process. Several instances of a payment
//! service behind a load balancer each see only their own payments, so they
//! must also deduplicate `jti` in a shared store (or the payment's own
//! idempotency record); this check alone is then a first line, not the last.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;
use subtle::ConstantTimeEq;

use crate::clock::{Clock, SystemClock};
use crate::domain::Transaction;

/// The only `scope` a payment authorization token carries; the issuing
/// side's constant, so the two cannot drift apart.
pub const PAYMENT_SCOPE: &str = crate::service::stepup::PAYMENT_SCOPE;
/// The JWT `typ` of payment authorization tokens.
pub const AUTHORIZATION_TYP: &str = crate::service::stepup::AUTHORIZATION_TYP;
/// The JWT `typ` of access tokens.
pub const ACCESS_TYP: &str = crate::service::tokens::ACCESS_TYP;
/// The longest `exp - iat` accepted: passgate issues at most this (API
/// contract, Payment step-up), and the bound also caps how long the replay
/// cache must remember each token.
pub const MAX_TOKEN_LIFETIME: Duration = crate::config::MAX_AUTHORIZATION_TTL;
/// Clock difference tolerated between passgate and the payment service.
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(5);

/// An unknown `kid` may trigger a JWKS fetch at most this often, so a flood
/// of forged tokens cannot turn into a flood of requests to passgate.
const MIN_REFETCH_INTERVAL: Duration = Duration::from_secs(5);
/// Keys are refetched after this long even when every `kid` is known, so a
/// key that passgate withdraws stops being trusted here too.
const MAX_KEY_AGE: Duration = Duration::from_secs(300);
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// A key set is a few hundred bytes per key; anything far larger is not one.
const MAX_JWKS_BYTES: usize = 64 * 1024;
/// Far above a real token, low enough that parsing junk stays cheap.
const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// `jti` values are UUIDs; the bound keeps replay-cache entries small.
const MAX_JTI_BYTES: usize = 128;
/// How often expired replay-cache entries are swept (seconds).
const SWEEP_EVERY_SECS: i64 = 10;

/// Why a token was refused. Never carries the token, so it can be logged
/// and sent to the client as it is.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("the token is not a well-formed signed JWT")]
    Malformed,
    #[error("the token's algorithm {0:?} is not accepted (only ES256 and EdDSA)")]
    UnsupportedAlgorithm(String),
    #[error("the token's header names no signing key (kid)")]
    MissingKeyId,
    #[error("the token's signing key is not one the issuer publishes")]
    UnknownKey,
    #[error("the token's algorithm does not match its signing key")]
    AlgorithmMismatch,
    #[error("the token's signature does not verify")]
    BadSignature,
    /// The header's `typ` names another kind of token: an access token
    /// presented as a payment authorization, or the other way round.
    #[error("the token is not of the expected type (typ {0})")]
    WrongType(&'static str),
    #[error("the token has no valid {0:?} claim")]
    MissingClaim(&'static str),
    #[error("the token comes from another issuer")]
    WrongIssuer,
    #[error("the token is meant for another audience")]
    WrongAudience,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token does not carry the {PAYMENT_SCOPE} scope")]
    InsufficientScope,
    #[error("the token lives longer than a payment authorization may")]
    LifetimeTooLong,
    #[error("the token authorizes a different transaction")]
    TransactionMismatch,
    #[error("the token has already been used")]
    Replayed,
    #[error("the issuer's signing keys could not be fetched: {0}")]
    KeysUnavailable(String),
}

/// What a verified token says: who approved the payment, from which
/// session and device, and the token's id for the payment's own records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PaymentAuthorization {
    /// The user id (`sub`).
    pub sub: String,
    /// The token id (`jti`), now spent.
    pub jti: String,
    /// The transaction digest (`txn`), equal to `Transaction::txn()`.
    pub txn: String,
    /// The passgate session the step-up ran in (`sid`).
    pub sid: Option<String>,
    /// The passkey's device (`device_id`).
    pub device_id: Option<String>,
    /// How the user authenticated (`amr`), e.g. `["hwk", "user"]`.
    pub amr: Vec<String>,
    pub iat: i64,
    pub exp: i64,
    /// The signing key (`kid`).
    pub kid: String,
}

/// What a verified access token says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessToken {
    /// The user id (`sub`).
    pub sub: String,
    /// The passgate session (`sid`). Only passgate knows whether it has
    /// ended since; the token's short life bounds that.
    pub sid: Option<String>,
    pub amr: Vec<String>,
    pub exp: i64,
    /// The signing key (`kid`).
    pub kid: String,
}

/// A problem with the verifier's own settings, found when it is built.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("jwks_url {0:?} is not a URL")]
    BadUrl(String),
    /// Over plain HTTP anyone on the path could swap the keys.
    #[error("jwks_url {0:?} must use https (plain http only to localhost)")]
    InsecureUrl(String),
    #[error("cannot set up the HTTP client: {0}")]
    HttpClient(String),
}

/// Checks payment authorization tokens against one issuer's published keys.
/// Share one instance (e.g. in an `Arc`) across the whole process: the key
/// cache and the replay cache only work if every request sees the same one.
pub struct Verifier {
    issuer: String,
    audience: String,
    leeway: Duration,
    clock: Box<dyn Clock>,
    keys: KeyCache,
    replay: Mutex<ReplayCache>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("jwks_url", &self.keys.url.as_str())
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// A verifier for tokens from `issuer` (passgate's `tokens.issuer`) to
    /// `audience` (passgate's `stepup.audience`, by default
    /// `"payments:authorize"`), with the keys at `jwks_url`. Nothing
    /// is fetched yet: the first token (or [`Verifier::refresh_keys`]) does.
    pub fn new(jwks_url: &str, issuer: &str, audience: &str) -> Result<Self, SetupError> {
        let url =
            reqwest::Url::parse(jwks_url).map_err(|_| SetupError::BadUrl(jwks_url.to_owned()))?;
        let loopback = match url.host() {
            Some(url::Host::Domain(name)) => name == "localhost",
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            None => false,
        };
        match url.scheme() {
            "https" => {}
            "http" if loopback => {}
            _ => return Err(SetupError::InsecureUrl(jwks_url.to_owned())),
        }
        let http = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .connect_timeout(FETCH_TIMEOUT)
            // A redirect could lead from https to plain http, or to a host
            // the operator never configured; the JWKS URL is given exactly.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("passgate-verifier/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| SetupError::HttpClient(error_chain(&e)))?;
        Ok(Verifier {
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            leeway: DEFAULT_LEEWAY,
            clock: Box::new(SystemClock),
            keys: KeyCache {
                http,
                url,
                min_refetch: MIN_REFETCH_INTERVAL,
                max_age: MAX_KEY_AGE,
                set: RwLock::new(KeySet::default()),
                fetch_gate: tokio::sync::Mutex::new(None),
            },
            replay: Mutex::new(ReplayCache::default()),
        })
    }

    /// Replaces the tolerated clock difference (default 5 s).
    pub fn with_leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway;
        self
    }

    /// Replaces the clock that `exp`, `nbf`, `iat` and the replay cache are
    /// read against (tests move a manual clock instead of sleeping).
    pub fn with_clock(mut self, clock: impl Clock + 'static) -> Self {
        self.clock = Box::new(clock);
        self
    }

    /// Fetches the key set now, e.g. at start-up to fail fast on a wrong
    /// URL; returns how many usable keys it holds.
    pub async fn refresh_keys(&self) -> Result<usize, VerifyError> {
        let mut last_fetch = self.keys.fetch_gate.lock().await;
        *last_fetch = Some(Instant::now());
        self.keys.fetch_and_store().await
    }

    /// Verifies `token` as the authorization for `transaction`, and spends
    /// it: the same token is refused from then on. The token is spent only
    /// when every other check has passed, so a client that sent the wrong
    /// transaction by mistake can still send the right one.
    pub async fn verify_payment(
        &self,
        token: &str,
        transaction: &Transaction,
    ) -> Result<PaymentAuthorization, VerifyError> {
        let (claims, kid) = self.verified_claims(token, AUTHORIZATION_TYP).await?;
        let now = self.clock.now_secs();
        let authorization = self.check_claims(claims, kid, transaction, now)?;
        let forget_after = authorization.exp.saturating_add(self.leeway_secs());
        let first_use = self.replay.lock().unwrap_or_else(PoisonError::into_inner).first_use(
            &authorization.jti,
            forget_after,
            now,
        );
        if !first_use {
            return Err(VerifyError::Replayed);
        }
        Ok(authorization)
    }

    /// Verifies `token` as a passgate access token (sign-in) for `audience`
    /// (passgate's `tokens.audience`): signature, `typ` `JWT`, issuer,
    /// audience and lifetime. A payment authorization is refused here, as
    /// an access token is by [`Verifier::verify_payment`]. Whether the
    /// session has ended since only passgate knows (`GET /v1/me`).
    pub async fn verify_access(
        &self,
        token: &str,
        audience: &str,
    ) -> Result<AccessToken, VerifyError> {
        let (claims, kid) = self.verified_claims(token, ACCESS_TYP).await?;
        let leeway = self.leeway_secs();
        let now = self.clock.now_secs();
        if claims.iss.ok_or(VerifyError::MissingClaim("iss"))? != self.issuer {
            return Err(VerifyError::WrongIssuer);
        }
        if !claims.aud.ok_or(VerifyError::MissingClaim("aud"))?.includes(audience) {
            return Err(VerifyError::WrongAudience);
        }
        let exp = claims.exp.ok_or(VerifyError::MissingClaim("exp"))?;
        if now >= exp.saturating_add(leeway) {
            return Err(VerifyError::Expired);
        }
        if claims.nbf.or(claims.iat).is_some_and(|nbf| nbf > now.saturating_add(leeway)) {
            return Err(VerifyError::NotYetValid);
        }
        // Access tokens never carry the payment scope; one that does is
        // not what it claims to be.
        if claims.scope.as_deref() == Some(PAYMENT_SCOPE) {
            return Err(VerifyError::WrongType(ACCESS_TYP));
        }
        let sub = claims.sub.filter(|s| !s.is_empty()).ok_or(VerifyError::MissingClaim("sub"))?;
        Ok(AccessToken { sub, sid: claims.sid, amr: claims.amr, exp, kid })
    }

    /// The claims of a well-formed token of type `typ` whose signature
    /// verifies with a published key, and that key's id. Nothing unsigned
    /// decides anything after this.
    async fn verified_claims(
        &self,
        token: &str,
        typ: &'static str,
    ) -> Result<(Claims, String), VerifyError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(VerifyError::Malformed);
        }
        let mut parts = token.split('.');
        let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(VerifyError::Malformed);
        };
        let header: JoseHeader = decode_part(header_b64)?;
        // The header is the attacker's choice: the accepted algorithms are
        // fixed here, never taken from it, so `none` and HS256 keyed with
        // the public key (the classic confusion) fail before any crypto.
        let alg = accepted_algorithm(&header.alg)?;
        // No extension is understood here, and RFC 7515 §4.1.11 says a
        // token with an unknown critical one must be refused.
        if header.crit.is_some() {
            return Err(VerifyError::Malformed);
        }
        let kid = header.kid.ok_or(VerifyError::MissingKeyId)?;
        let key = self.keys.key_for(&kid).await?;
        if key.alg != alg {
            return Err(VerifyError::AlgorithmMismatch);
        }
        let signed = &token[..header_b64.len() + 1 + payload_b64.len()];
        let verified =
            jsonwebtoken::crypto::verify(signature_b64, signed.as_bytes(), &key.key, alg)
                .unwrap_or(false);
        if !verified {
            return Err(VerifyError::BadSignature);
        }
        // The type is part of the signed header: checked once it is known
        // to be passgate's (RFC 8725 §3.11, explicit typing).
        if header.typ.as_deref() != Some(typ) {
            return Err(VerifyError::WrongType(typ));
        }
        Ok((decode_part(payload_b64)?, kid))
    }

    fn leeway_secs(&self) -> i64 {
        i64::try_from(self.leeway.as_secs()).unwrap_or(i64::MAX)
    }

    fn check_claims(
        &self,
        claims: Claims,
        kid: String,
        transaction: &Transaction,
        now: i64,
    ) -> Result<PaymentAuthorization, VerifyError> {
        let leeway = self.leeway_secs();
        if claims.iss.ok_or(VerifyError::MissingClaim("iss"))? != self.issuer {
            return Err(VerifyError::WrongIssuer);
        }
        if !claims.aud.ok_or(VerifyError::MissingClaim("aud"))?.includes(&self.audience) {
            return Err(VerifyError::WrongAudience);
        }
        let exp = claims.exp.ok_or(VerifyError::MissingClaim("exp"))?;
        let iat = claims.iat.ok_or(VerifyError::MissingClaim("iat"))?;
        if now >= exp.saturating_add(leeway) {
            return Err(VerifyError::Expired);
        }
        let earliest = claims.nbf.unwrap_or(iat).max(iat);
        if earliest > now.saturating_add(leeway) {
            return Err(VerifyError::NotYetValid);
        }
        // Before the lifetime check: an access token (longer-lived, no
        // scope) should be refused as what it is, not for its lifetime.
        if claims.scope.as_deref() != Some(PAYMENT_SCOPE) {
            return Err(VerifyError::InsufficientScope);
        }
        let lifetime = u64::try_from(exp.saturating_sub(iat)).unwrap_or(0);
        if lifetime > MAX_TOKEN_LIFETIME.as_secs() {
            return Err(VerifyError::LifetimeTooLong);
        }
        let sub = claims.sub.filter(|s| !s.is_empty()).ok_or(VerifyError::MissingClaim("sub"))?;
        let jti = claims
            .jti
            .filter(|j| !j.is_empty() && j.len() <= MAX_JTI_BYTES)
            .ok_or(VerifyError::MissingClaim("jti"))?;
        let txn = claims.txn.ok_or(VerifyError::MissingClaim("txn"))?;
        // The expected digest is public (anyone can hash the transaction),
        // but a constant-time comparison costs nothing and keeps this check
        // out of any timing argument.
        let expected = transaction.txn();
        if !bool::from(txn.as_bytes().ct_eq(expected.as_bytes())) {
            return Err(VerifyError::TransactionMismatch);
        }
        Ok(PaymentAuthorization {
            sub,
            jti,
            txn,
            sid: claims.sid,
            device_id: claims.device_id,
            amr: claims.amr,
            iat,
            exp,
            kid,
        })
    }
}

fn accepted_algorithm(alg: &str) -> Result<Algorithm, VerifyError> {
    match alg {
        "ES256" => Ok(Algorithm::ES256),
        "EdDSA" => Ok(Algorithm::EdDSA),
        // The name is echoed in error messages: keep it short and printable.
        other => Err(VerifyError::UnsupportedAlgorithm(
            other.chars().filter(|c| c.is_ascii_graphic()).take(16).collect(),
        )),
    }
}

fn decode_part<T: serde::de::DeserializeOwned>(part: &str) -> Result<T, VerifyError> {
    let bytes = URL_SAFE_NO_PAD.decode(part).map_err(|_| VerifyError::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| VerifyError::Malformed)
}

/// The JOSE header members that matter here; others are ignored.
#[derive(Deserialize)]
struct JoseHeader {
    alg: String,
    typ: Option<String>,
    kid: Option<String>,
    crit: Option<serde_json::Value>,
}

/// Every claim optional, so a missing one is refused by name rather than
/// as a parse error.
#[derive(Deserialize)]
struct Claims {
    iss: Option<String>,
    sub: Option<String>,
    aud: Option<Audience>,
    iat: Option<i64>,
    nbf: Option<i64>,
    exp: Option<i64>,
    jti: Option<String>,
    scope: Option<String>,
    txn: Option<String>,
    sid: Option<String>,
    device_id: Option<String>,
    #[serde(default)]
    amr: Vec<String>,
}

/// RFC 7519 allows `aud` as one string or an array of them.
#[derive(Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

impl Audience {
    fn includes(&self, audience: &str) -> bool {
        match self {
            Audience::One(aud) => aud == audience,
            Audience::Many(list) => list.iter().any(|aud| aud == audience),
        }
    }
}

// ------------------------------------------------------------------ keys

#[derive(Clone)]
struct PublicKey {
    alg: Algorithm,
    key: DecodingKey,
}

#[derive(Default)]
struct KeySet {
    keys: HashMap<String, PublicKey>,
    fetched_at: Option<Instant>,
}

struct KeyCache {
    http: reqwest::Client,
    url: reqwest::Url,
    min_refetch: Duration,
    max_age: Duration,
    set: RwLock<KeySet>,
    /// Held while fetching, so concurrent misses wait for one fetch instead
    /// of each making their own; holds when the last fetch was tried.
    fetch_gate: tokio::sync::Mutex<Option<Instant>>,
}

impl KeyCache {
    /// The key for `kid`, and whether the cached set is past its age.
    fn cached(&self, kid: &str) -> (Option<PublicKey>, bool) {
        let set = self.set.read().unwrap_or_else(PoisonError::into_inner);
        let stale = set.fetched_at.is_none_or(|at| at.elapsed() >= self.max_age);
        (set.keys.get(kid).cloned(), stale)
    }

    async fn key_for(&self, kid: &str) -> Result<PublicKey, VerifyError> {
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

    async fn fetch_and_store(&self) -> Result<usize, VerifyError> {
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
fn public_key(jwk: &Jwk) -> Option<PublicKey> {
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
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

// ------------------------------------------------------------------ replay

/// Token ids seen, each with the time after which its token is refused as
/// expired anyway and the entry can go.
#[derive(Default)]
struct ReplayCache {
    seen: HashMap<String, i64>,
    next_sweep: i64,
}

impl ReplayCache {
    /// Records `jti`; false if it was already recorded and still live.
    fn first_use(&mut self, jti: &str, forget_after: i64, now: i64) -> bool {
        // A sweep per call would cost a full scan per payment; every few
        // seconds keeps the map at about one token lifetime of payments.
        if now >= self.next_sweep {
            self.seen.retain(|_, until| *until > now);
            self.next_sweep = now + SWEEP_EVERY_SECS;
        }
        match self.seen.get(jti) {
            Some(until) if *until > now => false,
            _ => {
                self.seen.insert(jti.to_owned(), forget_after);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpListener;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use jsonwebtoken::{EncodingKey, Header};
    use p256::elliptic_curve::sec1::ToEncodedPoint;
    use p256::pkcs8::EncodePrivateKey;
    use serde_json::{Value, json};

    use super::*;
    use crate::clock::ManualClock;
    use crate::domain::RawTransaction;

    const ISSUER: &str = "https://auth.wallet.example";
    const AUDIENCE: &str = "payments:authorize";

    /// RFC 8037 appendix A.1's Ed25519 key, as PKCS#8 and as JWK `x`.
    const ED25519_SEED_HEX: &str =
        "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";
    const ED25519_X: &str = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";

    struct Signer {
        kid: String,
        alg: Algorithm,
        key: EncodingKey,
        jwk: Value,
    }

    fn es256(kid: &str) -> Signer {
        let secret = p256::SecretKey::random(&mut rand::rngs::OsRng);
        let der = secret.to_pkcs8_der().unwrap();
        let point = secret.public_key().to_encoded_point(false);
        Signer {
            kid: kid.into(),
            alg: Algorithm::ES256,
            key: EncodingKey::from_ec_der(der.as_bytes()),
            jwk: json!({
                "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": kid,
                "x": URL_SAFE_NO_PAD.encode(point.x().unwrap()),
                "y": URL_SAFE_NO_PAD.encode(point.y().unwrap()),
            }),
        }
    }

    fn ed25519(kid: &str) -> Signer {
        let mut der = vec![
            0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22,
            0x04, 0x20,
        ];
        der.extend(
            (0..32).map(|i| u8::from_str_radix(&ED25519_SEED_HEX[2 * i..2 * i + 2], 16).unwrap()),
        );
        Signer {
            kid: kid.into(),
            alg: Algorithm::EdDSA,
            key: EncodingKey::from_ed_der(&der),
            jwk: json!({ "kty": "OKP", "crv": "Ed25519", "kid": kid, "x": ED25519_X }),
        }
    }

    impl Signer {
        /// A payment authorization, typed as passgate types it.
        fn sign(&self, claims: &Value) -> String {
            self.sign_typed(claims, AUTHORIZATION_TYP)
        }

        fn sign_typed(&self, claims: &Value, typ: &str) -> String {
            let mut header = Header::new(self.alg);
            header.kid = Some(self.kid.clone());
            header.typ = Some(typ.to_owned());
            jsonwebtoken::encode(&header, claims, &self.key).unwrap()
        }
    }

    /// A JWKS endpoint on a loopback port that counts its requests; the
    /// set it serves can be swapped while it runs.
    struct JwksServer {
        url: String,
        hits: Arc<AtomicUsize>,
        body: Arc<Mutex<String>>,
    }

    fn serve_jwks(keys: &[&Signer]) -> JwksServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/.well-known/jwks.json", listener.local_addr().unwrap());
        let hits = Arc::new(AtomicUsize::new(0));
        let body = Arc::new(Mutex::new(String::new()));
        let server = JwksServer { url, hits: hits.clone(), body: body.clone() };
        server.publish(keys);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut request = [0u8; 4096];
                let _ = stream.read(&mut request);
                hits.fetch_add(1, Ordering::SeqCst);
                let body = body.lock().unwrap().clone();
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        server
    }

    impl JwksServer {
        fn publish(&self, keys: &[&Signer]) {
            let keys: Vec<&Value> = keys.iter().map(|k| &k.jwk).collect();
            *self.body.lock().unwrap() = json!({ "keys": keys }).to_string();
        }
    }

    fn transaction(amount: &str) -> Transaction {
        Transaction::parse(RawTransaction {
            amount: amount.into(),
            currency: "EUR".into(),
            payee: "Coffee Shop".into(),
            reference: None,
        })
        .unwrap()
    }

    fn claims(clock: &ManualClock, txn: &Transaction) -> Value {
        let now = clock.now_secs();
        json!({
            "iss": ISSUER, "sub": "user-1", "aud": AUDIENCE, "iat": now, "nbf": now,
            "exp": now + 120, "jti": uuid::Uuid::new_v4().to_string(),
            "scope": PAYMENT_SCOPE, "txn": txn.txn(), "sid": "session-1",
            "device_id": "device-1", "amr": ["hwk", "user"],
        })
    }

    fn verifier(server: &JwksServer, clock: &ManualClock) -> Verifier {
        Verifier::new(&server.url, ISSUER, AUDIENCE).unwrap().with_clock(clock.clone())
    }

    #[tokio::test]
    async fn accepts_es256_and_eddsa_once_and_reports_the_claims() {
        let (ec, ed) = (es256("ec-1"), ed25519("ed-1"));
        let server = serve_jwks(&[&ec, &ed]);
        let clock = ManualClock::default();
        let verifier = verifier(&server, &clock);
        let txn = transaction("12.50");

        for signer in [&ec, &ed] {
            let token = signer.sign(&claims(&clock, &txn));
            let authorization = verifier.verify_payment(&token, &txn).await.unwrap();
            assert_eq!(authorization.sub, "user-1");
            assert_eq!(authorization.txn, txn.txn());
            assert_eq!(authorization.kid, signer.kid);
            assert_eq!(authorization.amr, ["hwk", "user"]);
            assert_eq!(verifier.verify_payment(&token, &txn).await, Err(VerifyError::Replayed));
        }
        assert_eq!(server.hits.load(Ordering::SeqCst), 1, "one fetch serves both keys");
    }

    #[tokio::test]
    async fn the_type_audience_and_scope_tell_access_tokens_and_authorizations_apart() {
        let ec = es256("ec-1");
        let server = serve_jwks(&[&ec]);
        let clock = ManualClock::default();
        let verifier = verifier(&server, &clock);
        let txn = transaction("12.50");
        let now = clock.now_secs();
        let access = json!({
            "iss": ISSUER, "sub": "user-1", "aud": "payments", "iat": now, "nbf": now,
            "exp": now + 300, "jti": "access-1", "sid": "session-1", "amr": ["hwk"],
        });

        let access_token = ec.sign_typed(&access, ACCESS_TYP);
        let checked = verifier.verify_access(&access_token, "payments").await.unwrap();
        assert_eq!((checked.sub.as_str(), checked.kid.as_str()), ("user-1", "ec-1"));
        assert_eq!(
            verifier.verify_payment(&access_token, &txn).await,
            Err(VerifyError::WrongType(AUTHORIZATION_TYP)),
            "an access token is no authorization"
        );
        // Each check refuses on its own: retyped, the audience and then the
        // scope still do.
        let retyped = ec.sign(&access);
        assert_eq!(verifier.verify_payment(&retyped, &txn).await, Err(VerifyError::WrongAudience));
        let mut same_audience = access.clone();
        same_audience["aud"] = json!(AUDIENCE);
        assert_eq!(
            verifier.verify_payment(&ec.sign(&same_audience), &txn).await,
            Err(VerifyError::InsufficientScope)
        );

        let authorization = ec.sign(&claims(&clock, &txn));
        assert_eq!(
            verifier.verify_access(&authorization, "payments").await,
            Err(VerifyError::WrongType(ACCESS_TYP)),
            "an authorization is no access token"
        );
        let untyped = ec.sign_typed(&claims(&clock, &txn), ACCESS_TYP);
        assert_eq!(
            verifier.verify_access(&untyped, AUDIENCE).await,
            Err(VerifyError::WrongType(ACCESS_TYP)),
            "nor does a payment scope pass as an access token"
        );
        assert_eq!(
            verifier.verify_access(&access_token, AUDIENCE).await,
            Err(VerifyError::WrongAudience)
        );
        assert!(verifier.verify_payment(&authorization, &txn).await.is_ok());
    }

    #[tokio::test]
    async fn refuses_each_bad_claim_with_its_own_reason() {
        let ec = es256("ec-1");
        let server = serve_jwks(&[&ec]);
        let clock = ManualClock::default();
        let verifier = verifier(&server, &clock);
        let txn = transaction("12.50");
        let now = clock.now_secs();
        let cases: [(&str, Value, VerifyError); 12] = [
            ("iss", json!("https://evil.example"), VerifyError::WrongIssuer),
            ("aud", json!("wallet"), VerifyError::WrongAudience),
            ("aud", json!(["wallet", "other"]), VerifyError::WrongAudience),
            ("exp", json!(now - 6), VerifyError::Expired),
            ("nbf", json!(now + 30), VerifyError::NotYetValid),
            ("scope", json!("openid"), VerifyError::InsufficientScope),
            ("scope", Value::Null, VerifyError::InsufficientScope),
            ("exp", json!(now + 121), VerifyError::LifetimeTooLong),
            ("txn", json!(transaction("12.51").txn()), VerifyError::TransactionMismatch),
            ("txn", Value::Null, VerifyError::MissingClaim("txn")),
            ("jti", json!(""), VerifyError::MissingClaim("jti")),
            ("exp", json!("soon"), VerifyError::Malformed),
        ];
        for (claim, value, expected) in cases {
            let mut body = claims(&clock, &txn);
            if value.is_null() {
                body.as_object_mut().unwrap().remove(claim);
            } else {
                body[claim] = value.clone();
            }
            let result = verifier.verify_payment(&ec.sign(&body), &txn).await;
            assert_eq!(result, Err(expected), "{claim} = {value}");
        }
        // An audience list that includes us is fine.
        let mut body = claims(&clock, &txn);
        body["aud"] = json!(["wallet", AUDIENCE]);
        assert!(verifier.verify_payment(&ec.sign(&body), &txn).await.is_ok());
    }

    #[tokio::test]
    async fn refuses_forged_headers_before_any_key_lookup() {
        let ec = es256("ec-1");
        let server = serve_jwks(&[&ec]);
        let clock = ManualClock::default();
        let verifier = verifier(&server, &clock);
        let txn = transaction("12.50");
        let genuine = ec.sign(&claims(&clock, &txn));
        let payload = genuine.split('.').nth(1).unwrap();
        let header = |h: Value| URL_SAFE_NO_PAD.encode(h.to_string());

        let none = format!("{}.{payload}.", header(json!({ "alg": "none", "kid": "ec-1" })));
        let hs256 = format!("{}.{payload}.AAAA", header(json!({ "alg": "HS256", "kid": "ec-1" })));
        let crit = format!(
            "{}.{payload}.AAAA",
            header(json!({ "alg": "ES256", "kid": "ec-1", "crit": ["b64"], "b64": false }))
        );
        let no_kid = format!("{}.{payload}.AAAA", header(json!({ "alg": "ES256" })));
        let cases = [
            (none.as_str(), VerifyError::UnsupportedAlgorithm("none".into())),
            (hs256.as_str(), VerifyError::UnsupportedAlgorithm("HS256".into())),
            (crit.as_str(), VerifyError::Malformed),
            (no_kid.as_str(), VerifyError::MissingKeyId),
            ("", VerifyError::Malformed),
            ("a.b", VerifyError::Malformed),
            ("a.b.c.d", VerifyError::Malformed),
        ];
        for (token, expected) in cases {
            assert_eq!(verifier.verify_payment(token, &txn).await, Err(expected), "{token}");
        }
        assert_eq!(server.hits.load(Ordering::SeqCst), 0);
        let huge = "a".repeat(MAX_TOKEN_BYTES + 1);
        assert_eq!(verifier.verify_payment(&huge, &txn).await, Err(VerifyError::Malformed));
    }

    #[tokio::test]
    async fn an_eddsa_header_on_an_ec_key_is_refused() {
        let ec = es256("shared-kid");
        let ed = ed25519("shared-kid");
        let server = serve_jwks(&[&ec]);
        let clock = ManualClock::default();
        let verifier = verifier(&server, &clock);
        let txn = transaction("12.50");
        let token = ed.sign(&claims(&clock, &txn));
        assert_eq!(
            verifier.verify_payment(&token, &txn).await,
            Err(VerifyError::AlgorithmMismatch)
        );
    }

    #[tokio::test]
    async fn unknown_kids_refetch_at_most_once_per_interval_and_find_new_keys() {
        let (old, new) = (es256("old"), es256("new"));
        let server = serve_jwks(&[&old]);
        let clock = ManualClock::default();
        let mut verifier = verifier(&server, &clock);
        verifier.keys.min_refetch = Duration::from_millis(300);
        let txn = transaction("12.50");

        assert!(verifier.verify_payment(&old.sign(&claims(&clock, &txn)), &txn).await.is_ok());
        // The issuer rotates to a key published after our fetch: a burst of
        // tokens right away cannot make us refetch...
        server.publish(&[&old, &new]);
        for _ in 0..20 {
            let token = new.sign(&claims(&clock, &txn));
            assert_eq!(verifier.verify_payment(&token, &txn).await, Err(VerifyError::UnknownKey));
        }
        assert_eq!(server.hits.load(Ordering::SeqCst), 1);
        // ...but once the interval has passed, the next one does, once.
        tokio::time::sleep(Duration::from_millis(350)).await;
        assert!(verifier.verify_payment(&new.sign(&claims(&clock, &txn)), &txn).await.is_ok());
        assert!(verifier.verify_payment(&old.sign(&claims(&clock, &txn)), &txn).await.is_ok());
        assert_eq!(server.hits.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_withdrawn_key_stops_verifying_once_the_set_is_old() {
        let (old, new) = (es256("old"), es256("new"));
        let server = serve_jwks(&[&old]);
        let clock = ManualClock::default();
        let mut verifier = verifier(&server, &clock);
        verifier.keys.max_age = Duration::from_millis(200);
        verifier.keys.min_refetch = Duration::ZERO;
        let txn = transaction("12.50");
        assert!(verifier.verify_payment(&old.sign(&claims(&clock, &txn)), &txn).await.is_ok());

        server.publish(&[&new]);
        tokio::time::sleep(Duration::from_millis(250)).await;
        let token = old.sign(&claims(&clock, &txn));
        assert_eq!(verifier.verify_payment(&token, &txn).await, Err(VerifyError::UnknownKey));
    }

    #[tokio::test]
    async fn an_unreachable_issuer_is_reported_and_cached_keys_keep_working() {
        let ec = es256("ec-1");
        let clock = ManualClock::default();
        let txn = transaction("12.50");
        // Nothing listens on a port that was just freed.
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let dead = Verifier::new(&format!("http://127.0.0.1:{port}/jwks"), ISSUER, "payments")
            .unwrap()
            .with_clock(clock.clone());
        let result = dead.verify_payment(&ec.sign(&claims(&clock, &txn)), &txn).await;
        assert!(matches!(result, Err(VerifyError::KeysUnavailable(_))), "{result:?}");

        let server = serve_jwks(&[&ec]);
        let mut verifier = verifier(&server, &clock);
        verifier.keys.max_age = Duration::ZERO;
        verifier.keys.min_refetch = Duration::ZERO;
        assert_eq!(verifier.refresh_keys().await, Ok(1));
        verifier.keys.url = reqwest::Url::parse(&format!("http://127.0.0.1:{port}/jwks")).unwrap();
        assert!(verifier.verify_payment(&ec.sign(&claims(&clock, &txn)), &txn).await.is_ok());
    }

    #[test]
    fn the_replay_cache_forgets_a_token_only_once_it_would_be_refused_as_expired() {
        let ec = es256("ec-1");
        let server = serve_jwks(&[&ec]);
        let clock = ManualClock::default();
        let verifier = verifier(&server, &clock);
        let txn = transaction("12.50");
        let token = ec.sign(&claims(&clock, &txn));
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();

        assert!(runtime.block_on(verifier.verify_payment(&token, &txn)).is_ok());
        clock.advance(Duration::from_secs(124));
        assert_eq!(
            runtime.block_on(verifier.verify_payment(&token, &txn)),
            Err(VerifyError::Replayed)
        );
        clock.advance(Duration::from_secs(1));
        assert_eq!(
            runtime.block_on(verifier.verify_payment(&token, &txn)),
            Err(VerifyError::Expired)
        );
        // Sweeps drop what can no longer be replayed.
        clock.advance(Duration::from_secs(SWEEP_EVERY_SECS as u64));
        let fresh = ec.sign(&claims(&clock, &txn));
        assert!(runtime.block_on(verifier.verify_payment(&fresh, &txn)).is_ok());
        assert_eq!(verifier.replay.lock().unwrap().seen.len(), 1);
    }

    #[test]
    fn verification_can_run_on_any_runtime_thread() {
        // axum and tokio::spawn need Send futures; actix does not, so
        // nothing else in the suite would notice a lock held across .await.
        fn assert_send<T: Send>(_: &T) {}
        let verifier = Verifier::new("http://localhost/jwks", ISSUER, "payments").unwrap();
        let txn = transaction("1");
        assert_send(&verifier.verify_payment("a.b.c", &txn));
        assert_send(&verifier.refresh_keys());
    }

    #[test]
    fn refuses_insecure_urls_and_unusable_keys() {
        for url in ["http://auth.example/jwks", "ftp://localhost/jwks", "not a url"] {
            assert!(Verifier::new(url, ISSUER, "payments").is_err(), "{url}");
        }
        for url in ["https://auth.example/jwks", "http://localhost:8080/j", "http://[::1]/j"] {
            assert!(Verifier::new(url, ISSUER, "payments").is_ok(), "{url}");
        }
        let jwk = |v: Value| serde_json::from_value::<Jwk>(v).unwrap();
        let ec = es256("k").jwk;
        assert!(public_key(&jwk(ec.clone())).is_some());
        let mut enc = ec.clone();
        enc["use"] = json!("enc");
        let mut es384 = ec.clone();
        es384["alg"] = json!("ES384");
        for unusable in [enc, es384, json!({ "kty": "oct", "kid": "k", "k": "c2VjcmV0" })] {
            assert!(public_key(&jwk(unusable.clone())).is_none(), "{unusable}");
        }
    }
}
