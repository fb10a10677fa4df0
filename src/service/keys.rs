//! Token signing keys (ES256 by default, EdDSA selectable). The first node
//! to start makes a key and stores it; every node verifies with any
//! published key and signs with the newest key whose `active_from` has
//! come, so nodes agree by the stored rows and the time, without talking
//! to each other.
//!
//! A rotation (CLI or schedule) adds a key as *next*: published in the JWKS
//! at once, signing only once it has been published for `JWKS_MAX_AGE`,
//! the JWKS cache lifetime, so that no verifier holding a cached key set
//! meets a token whose key it has not seen. It also retires all but the
//! new key and the one signing; a retired key stays published while
//! tokens it signed can still be alive, so rotation breaks nothing in
//! flight. The very first key signs at once (no one has cached anything).
//!
//! A revocation (`passgate keys revoke`) withdraws a key at once: out of
//! the JWKS, and tokens naming it refused by `verify_access` (checked with
//! the session, in the same query). If it was signing, the next key signs
//! at once, or a new one is made to: the old one is compromised, so
//! waiting for caches is not worth it. Private keys are sealed at rest
//! when a key-encryption key is configured (see `sealing`).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair,
};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, Header};
use p256::elliptic_curve::sec1::ToEncodedPoint;
use p256::pkcs8::EncodePrivateKey;
use serde::Serialize;
use serde_json::{Value, json};

use super::sealing::Sealer;
use crate::clock::{Clock, Millis};
use crate::config::{KeyAlgorithm, MAX_ACCESS_TTL};
use crate::store::{SigningKeyRow, Store};

/// How often an unknown `kid` may trigger a reload from the store.
const RELOAD_INTERVAL: Duration = Duration::from_secs(5);

/// How long `/.well-known/jwks.json` may be cached (its `Cache-Control:
/// max-age`), and so how long a new key is published before it signs.
pub const JWKS_MAX_AGE: Duration = Duration::from_secs(300);

pub struct SigningKeys {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    sealer: Sealer,
    algorithm: KeyAlgorithm,
    ring: RwLock<KeyRing>,
}

struct KeyRing {
    newest_created_at: Millis,
    /// Keys that sign now or will (`active_from`, `created_at`, kid,
    /// algorithm, key), the one to sign with first: a next key takes over
    /// by time alone.
    signers: Vec<(Millis, Millis, String, Algorithm, Signer)>,
    verifying: HashMap<String, (Algorithm, DecodingKey)>,
    jwks: Vec<Value>,
    /// What the ring was built from, to tell when the stored set changed.
    built_from: Vec<RowState>,
    loaded_at: Instant,
}

/// The columns of a key row that decide its part.
type RowState = (String, Option<Millis>, Option<Millis>, Option<Millis>);

fn row_state(row: &SigningKeyRow) -> RowState {
    (row.kid.clone(), row.active_from, row.retired_at, row.revoked_at)
}

/// A key's part, as `keys list` shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyState {
    /// Published, signing once it has been for `JWKS_MAX_AGE`.
    Next,
    Signing,
    /// Signed before; still published and valid.
    Previous,
    /// Published only while tokens it signed may live, then not at all.
    Retired,
    /// Withdrawn: not published, not accepted.
    Revoked,
}

impl std::fmt::Display for KeyState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            KeyState::Next => "next",
            KeyState::Signing => "signing",
            KeyState::Previous => "previous",
            KeyState::Retired => "retired",
            KeyState::Revoked => "revoked",
        })
    }
}

/// A stored key as `keys list` shows it.
#[derive(Debug, Serialize)]
pub struct KeySummary {
    pub kid: String,
    pub algorithm: String,
    pub created_at: Millis,
    /// When it signs (or signed) from.
    pub active_from: Millis,
    pub retired_at: Option<Millis>,
    pub revoked_at: Option<Millis>,
    pub state: KeyState,
    pub sealed: bool,
}

/// When a stored key may sign: rows from before `active_from` existed sign
/// from their creation.
fn active_from(row: &SigningKeyRow) -> Millis {
    row.active_from.unwrap_or(row.created_at)
}

/// Keys that may sign at some time (not retired, not revoked), in the
/// order they are preferred: the latest to become active first.
fn candidates(rows: &[SigningKeyRow]) -> Vec<&SigningKeyRow> {
    let mut keys: Vec<&SigningKeyRow> =
        rows.iter().filter(|r| r.retired_at.is_none() && r.revoked_at.is_none()).collect();
    keys.sort_by(|a, b| {
        (active_from(b), b.created_at, &b.kid).cmp(&(active_from(a), a.created_at, &a.kid))
    });
    keys
}

/// The key that signs at `now`. When none is active yet by this clock (a
/// key made active "now" by a node or the CLI whose clock runs a little
/// ahead), the first to become active signs.
fn signing_at(rows: &[SigningKeyRow], now: Millis) -> Option<&SigningKeyRow> {
    let candidates = candidates(rows);
    candidates.iter().find(|r| active_from(r) <= now).or(candidates.last()).copied()
}

/// The newest key published but not signing yet.
fn next_at(rows: &[SigningKeyRow], now: Millis) -> Option<&SigningKeyRow> {
    let signing = signing_at(rows, now)?;
    candidates(rows).into_iter().find(|r| active_from(r) > now && r.kid != signing.kid)
}

fn state_of(row: &SigningKeyRow, signing: Option<&str>, now: Millis) -> KeyState {
    if row.revoked_at.is_some() {
        KeyState::Revoked
    } else if row.retired_at.is_some() {
        KeyState::Retired
    } else if signing == Some(row.kid.as_str()) {
        KeyState::Signing
    } else if active_from(row) > now {
        KeyState::Next
    } else {
        KeyState::Previous
    }
}

impl SigningKeys {
    /// Loads the stored keys, making the first one when there is none.
    pub async fn load_or_create(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        sealer: Sealer,
        algorithm: KeyAlgorithm,
    ) -> anyhow::Result<Self> {
        let now = clock.now_ms();
        let mut rows = store.signing_keys().await?;
        if rows.is_empty() {
            // Signs at once: a fresh database has no key anyone cached.
            store.add_signing_key(&generate(algorithm, &sealer, now, now)?).await?;
            // Reload rather than use our own: when two nodes start at once,
            // both then pick the same newest key.
            rows = store.signing_keys().await?;
        }
        let ring = KeyRing::from_rows(&rows, &sealer, now)?;
        Ok(SigningKeys { store, clock, sealer, algorithm, ring: RwLock::new(ring) })
    }

    /// Signs `claims` with the current key, under the JWT type `typ`: a
    /// JWS in compact form (RFC 7515 §7.1). jsonwebtoken's `encode` would
    /// parse the PKCS#8 key again for every token (about 15 µs of its 40
    /// here); the ring holds the parsed key. Tokens are still checked with
    /// jsonwebtoken, in passgate and downstream.
    pub fn sign<T: Serialize>(&self, claims: &T, typ: &str) -> anyhow::Result<String> {
        let now = self.clock.now_ms();
        let ring = self.ring.read().map_err(|_| anyhow!("signing key lock poisoned"))?;
        // As in `signing_at`: the first to become active, if none is yet.
        let (_, _, kid, algorithm, signer) = ring
            .signers
            .iter()
            .find(|(from, ..)| *from <= now)
            .or(ring.signers.last())
            .ok_or_else(|| anyhow!("no signing key is active"))?;
        let mut header = Header::new(*algorithm);
        header.kid = Some(kid.clone());
        header.typ = Some(typ.to_owned());
        let mut token = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header)?);
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(serde_json::to_vec(claims)?, &mut token);
        let signature = signer.sign(token.as_bytes())?;
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(signature, &mut token);
        Ok(token)
    }

    /// The algorithm and verifying key for `kid`; an unknown kid reloads
    /// the stored keys (another node may have rotated), at most every few
    /// seconds.
    pub async fn verifying_key(
        &self,
        kid: &str,
        now: Millis,
    ) -> anyhow::Result<Option<(Algorithm, DecodingKey)>> {
        let stale = {
            let ring = self.ring.read().map_err(|_| anyhow!("signing key lock poisoned"))?;
            if let Some(key) = ring.verifying.get(kid) {
                return Ok(Some(key.clone()));
            }
            ring.loaded_at.elapsed() >= RELOAD_INTERVAL
        };
        if !stale {
            return Ok(None);
        }
        self.reload(now).await?;
        let ring = self.ring.read().map_err(|_| anyhow!("signing key lock poisoned"))?;
        Ok(ring.verifying.get(kid).cloned())
    }

    /// Reloads unless the ring was loaded in the last few seconds (so a
    /// flood of tokens naming a revoked key costs few reads).
    pub async fn refresh_if_stale(&self, now: Millis) -> anyhow::Result<()> {
        let stale = {
            let ring = self.ring.read().map_err(|_| anyhow!("signing key lock poisoned"))?;
            ring.loaded_at.elapsed() >= RELOAD_INTERVAL
        };
        if stale {
            self.reload(now).await?;
        }
        Ok(())
    }

    /// RFC 7517 key set of the published keys, read fresh from the store
    /// (a rotation by another node or the CLI shows at once).
    pub async fn jwks(&self, now: Millis) -> anyhow::Result<Value> {
        self.reload(now).await?;
        let ring = self.ring.read().map_err(|_| anyhow!("signing key lock poisoned"))?;
        Ok(json!({ "keys": ring.jwks }))
    }

    /// Picks up keys other nodes (or the CLI) stored. The private key is
    /// opened and parsed again only when the stored set differs from the
    /// ring's, so a reload on every JWKS request costs one read.
    pub async fn reload(&self, now: Millis) -> anyhow::Result<()> {
        let rows = self.store.signing_keys().await?;
        let mut ring = self.ring.write().map_err(|_| anyhow!("signing key lock poisoned"))?;
        let published: Vec<&str> = published(&rows, now).map(|row| row.kid.as_str()).collect();
        let unchanged = rows.iter().map(row_state).eq(ring.built_from.iter().cloned())
            && published.len() == ring.verifying.len()
            && published.iter().all(|kid| ring.verifying.contains_key(*kid));
        if unchanged {
            ring.loaded_at = Instant::now();
        } else {
            *ring = KeyRing::from_rows(&rows, &self.sealer, now)?;
        }
        Ok(())
    }

    /// Makes a new key, published at once and signing once it has been for
    /// `JWKS_MAX_AGE`; the signing key goes on until then and stays valid
    /// as the previous key, older ones are retired. Returns the new kid.
    pub async fn rotate(&self, now: Millis) -> anyhow::Result<String> {
        let rows = self.store.signing_keys().await?;
        let previous = signing_at(&rows, now)
            .map(|row| row.kid.clone())
            .ok_or_else(|| anyhow!("no active signing key is stored"))?;
        let from = now + JWKS_MAX_AGE.as_millis() as i64;
        let key = generate(self.algorithm, &self.sealer, now, from)?;
        self.store.rotate_signing_key(&key, &previous, now).await?;
        self.reload(now).await?;
        tracing::info!(target: "audit", event = "signing_key_rotated", kid = %key.kid, previous = %previous);
        Ok(key.kid)
    }

    /// Withdraws `kid` at once (see the module comment). Returns the kid
    /// that signs from now on, when it changed.
    pub async fn revoke(&self, kid: &str, now: Millis) -> anyhow::Result<Option<String>> {
        let rows = self.store.signing_keys().await?;
        let Some(row) = rows.iter().find(|row| row.kid == kid) else {
            anyhow::bail!("no signing key {kid}");
        };
        if row.revoked_at.is_some() {
            anyhow::bail!("signing key {kid} is already revoked");
        }
        let was_signing = signing_at(&rows, now).is_some_and(|row| row.kid == kid);
        let (activate, replacement) = match next_at(&rows, now) {
            _ if !was_signing => (None, None),
            Some(next) => (Some(next.kid.clone()), None),
            None => (None, Some(generate(self.algorithm, &self.sealer, now, now)?)),
        };
        self.store.revoke_signing_key(kid, now, activate.as_deref(), replacement.as_ref()).await?;
        self.reload(now).await?;
        Ok(activate.or(replacement.map(|key| key.kid)))
    }

    /// Rotates when the newest key is older than `max_age` (the schedule).
    pub async fn rotate_if_older(&self, max_age: Duration, now: Millis) -> anyhow::Result<bool> {
        self.reload(now).await?;
        let newest = {
            let ring = self.ring.read().map_err(|_| anyhow!("signing key lock poisoned"))?;
            ring.newest_created_at
        };
        if now - newest < max_age.as_millis() as i64 {
            return Ok(false);
        }
        self.rotate(now).await?;
        Ok(true)
    }

    pub async fn list(&self, now: Millis) -> anyhow::Result<Vec<KeySummary>> {
        let rows = self.store.signing_keys().await?;
        let signing = signing_at(&rows, now).map(|row| row.kid.clone());
        Ok(rows
            .iter()
            .map(|row| KeySummary {
                sealed: row.private_key.starts_with("sealed:"),
                state: state_of(row, signing.as_deref(), now),
                active_from: active_from(row),
                kid: row.kid.clone(),
                algorithm: row.algorithm.clone(),
                created_at: row.created_at,
                retired_at: row.retired_at,
                revoked_at: row.revoked_at,
            })
            .collect())
    }

    /// How long ago the key that signs at `now` was made. From the ring,
    /// not the store, so that a scrape never waits on the database; the
    /// ring is reloaded every housekeeping round, so a rotation elsewhere
    /// shows within one.
    pub fn signing_key_age(&self, now: Millis) -> anyhow::Result<Duration> {
        let ring = self.ring.read().map_err(|_| anyhow!("signing key lock poisoned"))?;
        // As in `sign`.
        let (_, created_at, ..) = ring
            .signers
            .iter()
            .find(|(from, ..)| *from <= now)
            .or(ring.signers.last())
            .ok_or_else(|| anyhow!("no signing key is active"))?;
        Ok(Duration::from_millis(u64::try_from(now - created_at).unwrap_or(0)))
    }

    pub fn seals_keys(&self) -> bool {
        self.sealer.encrypts()
    }
}

impl KeyRing {
    /// The signing key at `now` and any next key are opened, in the order
    /// they sign in; keys are published while neither retired nor revoked,
    /// and after retirement for as long as a token they signed may live.
    fn from_rows(rows: &[SigningKeyRow], sealer: &Sealer, now: Millis) -> anyhow::Result<Self> {
        let signing =
            signing_at(rows, now).ok_or_else(|| anyhow!("no active signing key is stored"))?;
        let mut signers = Vec::new();
        for row in
            candidates(rows).into_iter().take_while(|row| active_from(row) >= active_from(signing))
        {
            let algorithm = algorithm_of(&row.algorithm)?;
            let der = secrecy::zeroize::Zeroizing::new(
                sealer
                    .open(&row.kid, &row.private_key)
                    .with_context(|| format!("signing key {}", row.kid))?,
            );
            let key = Signer::from_pkcs8(algorithm, &der)
                .with_context(|| format!("signing key {}", row.kid))?;
            signers.push((active_from(row), row.created_at, row.kid.clone(), algorithm, key));
        }
        let newest_created_at =
            candidates(rows).iter().map(|row| row.created_at).max().unwrap_or(0);
        let mut verifying = HashMap::new();
        let mut jwks = Vec::new();
        for row in published(rows, now) {
            let jwk: Value = serde_json::from_str(&row.public_jwk).context("stored public JWK")?;
            let text = |name: &str| jwk[name].as_str().unwrap_or_default().to_owned();
            let row_algorithm = algorithm_of(&row.algorithm)?;
            let decoding = match row_algorithm {
                Algorithm::EdDSA => DecodingKey::from_ed_components(&text("x")),
                _ => DecodingKey::from_ec_components(&text("x"), &text("y")),
            }
            .context("stored public JWK")?;
            verifying.insert(row.kid.clone(), (row_algorithm, decoding));
            jwks.push(jwk);
        }
        Ok(KeyRing {
            newest_created_at,
            signers,
            verifying,
            jwks,
            built_from: rows.iter().map(row_state).collect(),
            loaded_at: Instant::now(),
        })
    }
}

/// A parsed private key, kept for the life of the ring.
enum Signer {
    Es256(EcdsaKeyPair, SystemRandom),
    EdDsa(Ed25519KeyPair),
}

impl Signer {
    fn from_pkcs8(algorithm: Algorithm, der: &[u8]) -> anyhow::Result<Self> {
        Ok(match algorithm {
            Algorithm::EdDSA => Signer::EdDsa(
                Ed25519KeyPair::from_pkcs8(der).map_err(|_| anyhow!("not an Ed25519 key"))?,
            ),
            _ => Signer::Es256(
                EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der)
                    .map_err(|_| anyhow!("not a P-256 key"))?,
                SystemRandom::new(),
            ),
        })
    }

    /// JWS signature bytes: r || s for ES256 (RFC 7518 §3.4), the
    /// Ed25519 signature for EdDSA (RFC 8037 §3.1).
    fn sign(&self, message: &[u8]) -> anyhow::Result<Vec<u8>> {
        Ok(match self {
            Signer::Es256(key, rng) => key
                .sign(rng, message)
                .map_err(|_| anyhow!("ES256 signing failed"))?
                .as_ref()
                .to_vec(),
            Signer::EdDsa(key) => key.sign(message).as_ref().to_vec(),
        })
    }
}

/// The keys to publish: unretired ones, and retired ones for as long as a
/// token they signed may live; never revoked ones.
fn published(rows: &[SigningKeyRow], now: Millis) -> impl Iterator<Item = &SigningKeyRow> {
    let grace = (MAX_ACCESS_TTL + Duration::from_secs(60)).as_millis() as i64;
    rows.iter()
        .filter(move |r| r.revoked_at.is_none() && r.retired_at.is_none_or(|at| at > now - grace))
}

fn algorithm_of(name: &str) -> anyhow::Result<Algorithm> {
    match name {
        "ES256" => Ok(Algorithm::ES256),
        "EdDSA" => Ok(Algorithm::EdDSA),
        other => Err(anyhow!("stored signing key has unknown algorithm {other}")),
    }
}

/// A new key, made at `now`, to sign from `active_from`.
fn generate(
    algorithm: KeyAlgorithm,
    sealer: &Sealer,
    now: Millis,
    active_from: Millis,
) -> anyhow::Result<SigningKeyRow> {
    let kid = uuid::Uuid::now_v7().simple().to_string();
    let (name, der, jwk) = match algorithm {
        KeyAlgorithm::Es256 => {
            let secret = p256::SecretKey::random(&mut rand::rngs::OsRng);
            let der = secret.to_pkcs8_der().context("encoding a new signing key")?;
            let point = secret.public_key().to_encoded_point(false);
            let (Some(x), Some(y)) = (point.x(), point.y()) else {
                return Err(anyhow!("a new P-256 public key had no coordinates"));
            };
            let jwk = json!({
                "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": kid,
                "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y),
            });
            ("ES256", der.as_bytes().to_vec(), jwk)
        }
        KeyAlgorithm::EdDsa => {
            let rng = aws_lc_rs::rand::SystemRandom::new();
            let der = Ed25519KeyPair::generate_pkcs8(&rng)
                .map_err(|_| anyhow!("generating an Ed25519 key failed"))?;
            let pair = Ed25519KeyPair::from_pkcs8(der.as_ref())
                .map_err(|_| anyhow!("a new Ed25519 key did not parse"))?;
            let jwk = json!({
                "kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig", "kid": kid,
                "x": URL_SAFE_NO_PAD.encode(pair.public_key().as_ref()),
            });
            ("EdDSA", der.as_ref().to_vec(), jwk)
        }
    };
    Ok(SigningKeyRow {
        private_key: sealer.seal(&kid, &der)?,
        kid,
        algorithm: name.into(),
        public_jwk: jwk.to_string(),
        created_at: now,
        active_from: Some(active_from),
        retired_at: None,
        revoked_at: None,
    })
}
