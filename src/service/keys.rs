//! Access-token signing keys (ES256, P-256). The first node to start makes
//! a key and stores it; every node signs with the newest stored key and
//! verifies with any stored one, so nodes agree without talking to each
//! other and keys can rotate without breaking tokens in flight.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use p256::elliptic_curve::sec1::ToEncodedPoint;
use p256::pkcs8::EncodePrivateKey;
use serde::Serialize;
use serde_json::{Value, json};

use crate::clock::Clock;
use crate::store::{SigningKeyRow, Store};

/// How often an unknown `kid` may trigger a reload from the store.
const RELOAD_INTERVAL: Duration = Duration::from_secs(5);

pub struct SigningKeys {
    store: Arc<dyn Store>,
    ring: RwLock<KeyRing>,
}

struct KeyRing {
    signing: (String, EncodingKey),
    verifying: HashMap<String, DecodingKey>,
    jwks: Vec<Value>,
    loaded_at: Instant,
}

impl SigningKeys {
    /// Loads the stored keys, making the first one when there is none.
    pub async fn load_or_create(store: Arc<dyn Store>, clock: &dyn Clock) -> anyhow::Result<Self> {
        let mut rows = store.signing_keys().await?;
        if rows.is_empty() {
            store.add_signing_key(&generate_es256(clock.now_ms())?).await?;
            // Reload rather than use our own: when two nodes start at once,
            // both then pick the same newest key.
            rows = store.signing_keys().await?;
        }
        let ring = KeyRing::from_rows(&rows)?;
        Ok(SigningKeys { store, ring: RwLock::new(ring) })
    }

    pub fn sign<T: Serialize>(&self, claims: &T) -> anyhow::Result<String> {
        let ring = self.ring.read().map_err(|_| anyhow!("signing key lock poisoned"))?;
        let (kid, key) = &ring.signing;
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(kid.clone());
        jsonwebtoken::encode(&header, claims, key).context("signing an access token")
    }

    /// The verifying key for `kid`; an unknown kid reloads the stored keys
    /// (another node may have made a newer one), at most every few seconds.
    pub async fn verifying_key(&self, kid: &str) -> anyhow::Result<Option<DecodingKey>> {
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
        self.reload().await?;
        let ring = self.ring.read().map_err(|_| anyhow!("signing key lock poisoned"))?;
        Ok(ring.verifying.get(kid).cloned())
    }

    /// RFC 7517 key set of every stored key, read fresh from the store.
    pub async fn jwks(&self) -> anyhow::Result<Value> {
        self.reload().await?;
        let ring = self.ring.read().map_err(|_| anyhow!("signing key lock poisoned"))?;
        Ok(json!({ "keys": ring.jwks }))
    }

    async fn reload(&self) -> anyhow::Result<()> {
        let rows = self.store.signing_keys().await?;
        let fresh = KeyRing::from_rows(&rows)?;
        *self.ring.write().map_err(|_| anyhow!("signing key lock poisoned"))? = fresh;
        Ok(())
    }
}

impl KeyRing {
    /// `rows` come newest first; the newest unretired key signs.
    fn from_rows(rows: &[SigningKeyRow]) -> anyhow::Result<Self> {
        let newest = rows
            .iter()
            .find(|row| row.retired_at.is_none())
            .ok_or_else(|| anyhow!("no active signing key is stored"))?;
        let der = STANDARD.decode(&newest.private_key).context("stored signing key")?;
        let signing = (newest.kid.clone(), EncodingKey::from_ec_der(&der));
        let mut verifying = HashMap::new();
        let mut jwks = Vec::new();
        for row in rows {
            let jwk: Value = serde_json::from_str(&row.public_jwk).context("stored public JWK")?;
            let x = jwk["x"].as_str().unwrap_or_default();
            let y = jwk["y"].as_str().unwrap_or_default();
            let key = DecodingKey::from_ec_components(x, y).context("stored public JWK")?;
            verifying.insert(row.kid.clone(), key);
            jwks.push(jwk);
        }
        Ok(KeyRing { signing, verifying, jwks, loaded_at: Instant::now() })
    }
}

fn generate_es256(now_ms: i64) -> anyhow::Result<SigningKeyRow> {
    let secret = p256::SecretKey::random(&mut rand::rngs::OsRng);
    let der = secret.to_pkcs8_der().context("encoding a new signing key")?;
    let point = secret.public_key().to_encoded_point(false);
    let (Some(x), Some(y)) = (point.x(), point.y()) else {
        return Err(anyhow!("a new P-256 public key had no coordinates"));
    };
    let kid = uuid::Uuid::now_v7().simple().to_string();
    let jwk = json!({
        "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": kid,
        "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y),
    });
    Ok(SigningKeyRow {
        kid,
        algorithm: "ES256".into(),
        private_key: STANDARD.encode(der.as_bytes()),
        public_jwk: jwk.to_string(),
        created_at: now_ms,
        retired_at: None,
    })
}
