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

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod clock;
mod keys;
mod replay;
#[cfg(test)]
mod tests;
mod transaction;

use std::sync::{Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::Algorithm;
use serde::Deserialize;
use subtle::ConstantTimeEq;

use crate::clock::{Clock, SystemClock};
use crate::keys::{KeyCache, KeySet, error_chain};
use crate::replay::ReplayCache;
pub use crate::transaction::{InvalidTransaction, RawTransaction, Transaction};

// passgate issues its tokens with these very constants (it depends on this
// crate), so the issuing and the checking side cannot drift apart.

/// The only `scope` a payment authorization token carries.
pub const PAYMENT_SCOPE: &str = "payment:authorize";
/// The JWT `typ` of payment authorization tokens.
pub const AUTHORIZATION_TYP: &str = "payment-authz+jwt";
/// The JWT `typ` of access tokens.
pub const ACCESS_TYP: &str = "JWT";
/// The longest `exp - iat` accepted: passgate issues at most this (API
/// contract, Payment step-up), and the bound also caps how long the replay
/// cache must remember each token.
pub const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(120);
/// Clock difference tolerated between passgate and the payment service.
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(5);

/// An unknown `kid` may trigger a JWKS fetch at most this often, so a flood
/// of forged tokens cannot turn into a flood of requests to passgate.
const MIN_REFETCH_INTERVAL: Duration = Duration::from_secs(5);
/// Keys are refetched after this long even when every `kid` is known, so a
/// key that passgate withdraws stops being trusted here too.
const MAX_KEY_AGE: Duration = Duration::from_secs(300);
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Far above a real token, low enough that parsing junk stays cheap.
const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// `jti` values are UUIDs; the bound keeps replay-cache entries small.
const MAX_JTI_BYTES: usize = 128;

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
