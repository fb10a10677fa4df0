//! `Idempotency-Key` (issue 20 item 6), after the IETF draft "The
//! Idempotency-Key HTTP Header Field": a client that sends a key with a
//! payment approval or an admin action may send the same request again
//! (its connection dropped, it timed out) and gets the first answer, with
//! no second effect.
//!
//! A key belongs to its caller and operation: the row is found by a keyed
//! hash of (caller, method and route, key), so two callers' keys never
//! meet and nobody reads another's answer. The first request claims the
//! row (pending), runs, and stores its answer; one that comes meanwhile
//! waits for it, within the request's deadline. The same key with another
//! request (path, query or body) is refused. The answer may hold a bearer
//! secret (an authorization token, an enrolment code), so it is sealed
//! under a key derived from the server's secret and the client's key,
//! which is stored nowhere: a copy of the database opens no answer, even
//! with the key-encryption key.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use secrecy::zeroize::Zeroizing;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::admin::AdminCaller;
use super::sealing::Sealer;
use super::tokens::AccessClaims;
use crate::clock::{Clock, Millis};
use crate::config::Settings;
use crate::error::{ApiError, Result};
use crate::store::{IdempotencyRow, Store};

/// The request header (case-insensitive on the wire).
pub const HEADER: &str = "idempotency-key";
/// Set on an answer that is the stored first answer.
pub const REPLAYED_HEADER: &str = "idempotent-replayed";
/// The longest key taken, as the draft suggests for a UUID and more.
pub const MAX_KEY_LENGTH: usize = 255;
/// How long an admin action's answer is kept: a day of retries.
pub const ADMIN_ANSWERS_KEPT: Duration = Duration::from_secs(24 * 60 * 60);

/// A client's idempotency key: 1 to 255 printable ASCII characters, sent
/// bare or as a structured-field string (`"..."`). Never printed.
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub fn parse(header: &[u8]) -> Result<IdempotencyKey> {
        let refuse = |why: &str| ApiError::BadRequest(format!("Idempotency-Key: {why}"));
        let text = std::str::from_utf8(header).map_err(|_| refuse("not ASCII"))?.trim();
        let key = match text.strip_prefix('"') {
            Some(quoted) => sf_string(quoted).ok_or_else(|| refuse("an unfinished string"))?,
            None => text.to_owned(),
        };
        if key.is_empty() {
            return Err(refuse("empty"));
        }
        if key.len() > MAX_KEY_LENGTH {
            return Err(refuse(&format!("longer than {MAX_KEY_LENGTH} characters")));
        }
        if !key.bytes().all(|b| (0x20..=0x7e).contains(&b)) {
            return Err(refuse("only printable ASCII characters may be used"));
        }
        Ok(IdempotencyKey(key))
    }
}

impl std::fmt::Debug for IdempotencyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IdempotencyKey(<redacted>)")
    }
}

/// The inside of an RFC 8941 string after its opening quote: its value,
/// when the closing quote ends the text and escapes are `\"` or `\\`.
fn sf_string(quoted: &str) -> Option<String> {
    let mut value = String::new();
    let mut chars = quoted.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next()? {
                escaped @ ('"' | '\\') => value.push(escaped),
                _ => return None,
            },
            '"' => return chars.next().is_none().then_some(value),
            other => value.push(other),
        }
    }
    None
}

/// Whose key it is, and so how long its answers are kept.
pub struct Caller {
    id: String,
    keep: Kept,
}

#[derive(Clone, Copy)]
enum Kept {
    /// As long as the authorization token it answered with lives.
    Payment,
    Admin,
}

impl Caller {
    /// A user approving a payment with their bearer token.
    pub fn payer(claims: &AccessClaims) -> Caller {
        Caller { id: claims.sub.clone(), keep: Kept::Payment }
    }

    pub fn admin(admin: &AdminCaller) -> Caller {
        Caller { id: admin.claims().sub.clone(), keep: Kept::Admin }
    }
}

/// What one request with a key asks.
pub struct IdempotentRequest<'a> {
    pub key: &'a IdempotencyKey,
    pub caller: &'a Caller,
    /// The method and the route's pattern: `POST /v1/admin/users/{user_id}/lock`.
    pub operation: &'a str,
    /// The method, path and query as sent.
    pub target: &'a str,
    /// SHA-256 of the canonical body (its JSON with sorted members and no
    /// spaces), or of nothing.
    pub body_digest: [u8; 32],
}

/// An answer as sent: status, the headers the handler set, the body. No
/// Debug: it may hold a bearer secret.
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// The sealed form of an answer.
#[derive(Serialize, Deserialize)]
struct SealedAnswer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

/// What `begin` found.
pub enum Begun {
    /// This request runs; it ends with `Attempt::settle`.
    Run(Attempt),
    /// The first request's answer.
    Replay(Answer),
}

/// The request that holds a key while it runs.
pub struct Attempt {
    store: Arc<dyn Store>,
    key_hash: String,
    attempt: String,
    sealer: Sealer,
}

impl Attempt {
    /// Stores the answer for retries, or, for one that says to try again
    /// later or sign in again, releases the key: such an answer changed
    /// nothing, and a retry must be able to do what it asked.
    pub async fn settle(self, answer: &Answer, error: Option<&ApiError>) {
        let settled = if kept(answer, error) {
            match self.seal(answer) {
                Ok(sealed) => self
                    .store
                    .complete_idempotency_key(
                        &self.key_hash,
                        &self.attempt,
                        i32::from(answer.status),
                        &sealed,
                    )
                    .await
                    .map(|_| ())
                    .map_err(anyhow::Error::from),
                Err(error) => Err(error),
            }
        } else {
            self.store
                .release_idempotency_key(&self.key_hash, &self.attempt)
                .await
                .map(|_| ())
                .map_err(anyhow::Error::from)
        };
        if let Err(error) = settled {
            // The row stays pending: a retry waits, and once the lease has
            // run out runs the request again.
            tracing::warn!(error.cause_chain = ?error, "the first answer to an idempotent request could not be stored");
        }
    }

    fn seal(&self, answer: &Answer) -> anyhow::Result<String> {
        let sealed = SealedAnswer {
            status: answer.status,
            headers: answer.headers.clone(),
            body: STANDARD.encode(&answer.body),
        };
        let plain = Zeroizing::new(serde_json::to_vec(&sealed)?);
        self.sealer.seal(&self.key_hash, &plain)
    }
}

/// Whether an answer is kept for retries (the draft: the first answer,
/// whatever it is), except those that say the same request may do better
/// later: a server error, "too many requests" or anything with
/// Retry-After, and a passkey sign-in required (the admin signs in again
/// and retries). None of those had an effect.
fn kept(answer: &Answer, error: Option<&ApiError>) -> bool {
    let later = answer.status >= 500
        || answer.status == 429
        || answer.headers.iter().any(|(name, _)| name.eq_ignore_ascii_case("retry-after"));
    !later && !matches!(error, Some(ApiError::PasskeyRequired(_)))
}

/// Keys, their stored answers, and the waiting of retries.
#[derive(Clone)]
pub struct Idempotency {
    settings: Arc<Settings>,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    /// The server secret the row keys and answer keys derive from.
    secret: Arc<Zeroizing<Vec<u8>>>,
}

impl Idempotency {
    pub fn new(
        settings: Arc<Settings>,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        secret: Zeroizing<Vec<u8>>,
    ) -> Idempotency {
        Idempotency { settings, store, clock, secret: Arc::new(secret) }
    }

    /// How long the first request's work may go on after its own caller
    /// has stopped waiting (its deadline passed, or it hung up), so that a
    /// retry finds its answer: twice the request deadline.
    pub fn work_limit(&self) -> Duration {
        self.settings.server.request_timeout * 2
    }

    /// Past this a pending row is taken for a dead node's: longer than the
    /// work may run.
    fn lease(&self) -> Duration {
        self.settings.server.request_timeout * 3
    }

    /// How long a retry waits for the first answer: within the request's
    /// own deadline, with room to answer.
    fn wait(&self) -> Duration {
        self.settings.server.request_timeout * 3 / 4
    }

    fn kept_for(&self, caller: &Caller) -> Duration {
        match caller.keep {
            Kept::Payment => self.settings.stepup.token_ttl,
            Kept::Admin => ADMIN_ANSWERS_KEPT,
        }
    }

    /// Claims the key for this request, or returns the first request's
    /// answer, waiting for it while it runs. 422 `idempotency_key_reused`
    /// for the key with another request; 409 `idempotency_in_progress`
    /// when the first is still running as this one's wait ends.
    pub async fn begin(&self, request: &IdempotentRequest<'_>) -> Result<Begun> {
        let parts: [&[u8]; 3] =
            [request.caller.id.as_bytes(), request.operation.as_bytes(), request.key.0.as_bytes()];
        let key_hash = hex(&self.mac("row", &parts));
        let answer_key = Zeroizing::new(self.mac("answer", &parts));
        let sealer = Sealer::new(Some(&*answer_key))?;
        let fingerprint =
            hex(&self.mac("request", &[request.target.as_bytes(), &request.body_digest]));
        let kept_for = millis(self.kept_for(request.caller));
        let lease = millis(self.lease());
        let give_up = Instant::now() + self.wait();
        let mut pause = Duration::from_millis(5);
        loop {
            let now = self.clock.now_ms();
            let row = IdempotencyRow {
                key_hash: key_hash.clone(),
                fingerprint: fingerprint.clone(),
                attempt: uuid::Uuid::new_v4().to_string(),
                state: "pending".into(),
                lease_until: now + lease,
                status: None,
                answer: None,
                created_at: now,
                expires_at: now + kept_for,
            };
            if self.store.claim_idempotency_key(&row, now).await? {
                let store = self.store.clone();
                return Ok(Begun::Run(Attempt { store, key_hash, attempt: row.attempt, sealer }));
            }
            // Taken: read (a read, not another claim, while it runs) until
            // it is answered, or may be claimed again.
            loop {
                let Some(found) = self.store.idempotency_key(&key_hash).await? else {
                    break; // released or purged since
                };
                // An expired key is a new one, whatever it was used for.
                let now = self.clock.now_ms();
                if found.expires_at <= now {
                    break;
                }
                if !bool::from(found.fingerprint.as_bytes().ct_eq(fingerprint.as_bytes())) {
                    return Err(ApiError::IdempotencyKeyReused);
                }
                // Its attempt died: the same request may run it again.
                if !found.is_done() && found.lease_until <= now {
                    break;
                }
                if found.is_done() {
                    return Ok(Begun::Replay(open(&sealer, &found)?));
                }
                if Instant::now() + pause > give_up {
                    return Err(ApiError::IdempotencyInProgress { retry_after_secs: 1 });
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(100));
            }
            if Instant::now() > give_up {
                return Err(ApiError::IdempotencyInProgress { retry_after_secs: 1 });
            }
        }
    }

    /// HMAC-SHA256 under the server secret of a label and length-prefixed
    /// parts, so that no two inputs share a message.
    fn mac(&self, label: &str, parts: &[&[u8]]) -> [u8; 32] {
        // A key of any length is valid for HMAC.
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.secret) else {
            return [0; 32];
        };
        mac.update(b"passgate idempotency ");
        mac.update(label.as_bytes());
        for part in parts {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part);
        }
        mac.finalize().into_bytes().into()
    }
}

fn open(sealer: &Sealer, row: &IdempotencyRow) -> Result<Answer> {
    let stored = row.answer.as_deref().unwrap_or_default();
    let plain = Zeroizing::new(sealer.open(&row.key_hash, stored)?);
    let sealed: SealedAnswer = serde_json::from_slice(&plain).map_err(anyhow::Error::from)?;
    let body = STANDARD.decode(&sealed.body).map_err(anyhow::Error::from)?;
    Ok(Answer { status: sealed.status, headers: sealed.headers, body })
}

fn millis(duration: Duration) -> Millis {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_printable_ascii_of_1_to_255_bare_or_quoted() {
        let key = |text: &str| IdempotencyKey::parse(text.as_bytes()).map(|k| k.0);
        assert_eq!(
            key("8e03978e-40d5-43e8-bc93-6894a57f9324").unwrap(),
            "8e03978e-40d5-43e8-bc93-6894a57f9324"
        );
        assert_eq!(key("\"abc\"").unwrap(), "abc");
        assert_eq!(key(r#""a\"b\\c""#).unwrap(), r#"a"b\c"#);
        assert_eq!(key(&"k".repeat(255)).unwrap().len(), 255);
        for bad in ["", "  ", "\"\"", "\"abc", "\"a\"b\"", r#""a\b""#, "ключ", "a\tb"] {
            assert!(key(bad).is_err(), "{bad:?}");
        }
        assert!(key(&"k".repeat(256)).is_err());
        assert!(IdempotencyKey::parse(b"\xff\xfe").is_err());
        let printed = format!("{:?}", IdempotencyKey::parse(b"secret-key").unwrap());
        assert!(!printed.contains("secret-key"));
    }

    #[test]
    fn answers_that_say_try_later_or_sign_in_again_are_not_kept() {
        let answer = |status: u16, headers: &[(&str, &str)]| Answer {
            status,
            headers: headers.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect(),
            body: Vec::new(),
        };
        assert!(kept(&answer(200, &[]), None));
        assert!(kept(&answer(204, &[]), None));
        let not_found = ApiError::CeremonyNotFound;
        assert!(kept(&answer(404, &[]), Some(&not_found)));
        assert!(kept(&answer(401, &[("www-authenticate", "Bearer")]), None));
        assert!(!kept(&answer(500, &[]), Some(&ApiError::Unavailable)));
        assert!(!kept(&answer(503, &[]), None));
        assert!(!kept(&answer(429, &[]), None));
        assert!(!kept(&answer(403, &[("Retry-After", "30")]), None));
        let stale = ApiError::PasskeyRequired(String::new());
        assert!(!kept(&answer(403, &[]), Some(&stale)));
    }
}
