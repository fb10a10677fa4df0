//! Encryption of secrets at rest: private signing keys, TOTP secrets and
//! the server's own keys (ChaCha20-Poly1305 under the key-encryption key,
//! the value's place as associated data, so a sealed value cannot be moved
//! to another row). With no key-encryption key configured, values are
//! stored in the clear and the server says so at start (allowed only with
//! `webauthn.rp_id` localhost).

use anyhow::{Context, anyhow, bail};
use aws_lc_rs::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;

use crate::store::SecretPlace;

const SEALED_PREFIX: &str = "sealed:v1:";

/// What a value stored at `place` is bound to (its associated data).
fn label(place: SecretPlace<'_>) -> String {
    match place {
        SecretPlace::SigningKey { kid } => kid.to_owned(),
        SecretPlace::Totp { user_id } => format!("totp:{user_id}"),
        SecretPlace::ServerSecret { name } => format!("server_secret:{name}"),
    }
}

pub fn is_sealed(stored: &str) -> bool {
    stored.starts_with(SEALED_PREFIX)
}

pub struct Sealer {
    key: Option<LessSafeKey>,
}

impl Sealer {
    /// `key` is the 32-byte key-encryption key, if one is configured.
    pub fn new(key: Option<&[u8; 32]>) -> anyhow::Result<Sealer> {
        let key = key
            .map(|bytes| UnboundKey::new(&CHACHA20_POLY1305, bytes).map(LessSafeKey::new))
            .transpose()
            .map_err(|_| anyhow!("tokens.key_encryption_key: not a ChaCha20-Poly1305 key"))?;
        Ok(Sealer { key })
    }

    pub fn seal(&self, kid: &str, secret: &[u8]) -> anyhow::Result<String> {
        let Some(key) = &self.key else {
            return Ok(STANDARD.encode(secret));
        };
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let mut sealed = secret.to_vec();
        key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(kid.as_bytes()),
            &mut sealed,
        )
        .map_err(|_| anyhow!("sealing failed"))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Ok(format!("{SEALED_PREFIX}{}", STANDARD.encode(out)))
    }

    pub fn open(&self, kid: &str, stored: &str) -> anyhow::Result<Vec<u8>> {
        let Some(sealed) = stored.strip_prefix(SEALED_PREFIX) else {
            // With a key, everything was sealed at start (`seal_unsealed`):
            // a value in the clear was put there by someone who can write
            // to the database (a TOTP secret or a code key of their own).
            if self.key.is_some() {
                bail!("{kid} is stored in the clear although tokens.key_encryption_key is set");
            }
            return STANDARD.decode(stored).context("stored signing key");
        };
        let Some(key) = &self.key else {
            bail!("{kid} is encrypted: set tokens.key_encryption_key");
        };
        let bytes = STANDARD.decode(sealed).context("stored signing key")?;
        if bytes.len() < NONCE_LEN {
            bail!("{kid}: sealed value too short");
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_LEN);
        let nonce =
            Nonce::try_assume_unique_for_key(nonce).map_err(|_| anyhow!("{kid}: bad nonce"))?;
        let mut buffer = ciphertext.to_vec();
        let plain = key
            .open_in_place(nonce, Aad::from(kid.as_bytes()), &mut buffer)
            .map_err(|_| anyhow!("{kid} does not open with tokens.key_encryption_key"))?;
        Ok(plain.to_vec())
    }

    pub fn encrypts(&self) -> bool {
        self.key.is_some()
    }

    /// `seal` for the value stored at `place`. Unsealed server secrets
    /// keep the form they always had (base64url).
    pub fn seal_at(&self, place: SecretPlace<'_>, secret: &[u8]) -> anyhow::Result<String> {
        match place {
            SecretPlace::ServerSecret { .. } if !self.encrypts() => {
                Ok(URL_SAFE_NO_PAD.encode(secret))
            }
            _ => self.seal(&label(place), secret),
        }
    }

    /// `open` for the value stored at `place`, sealed or not.
    pub fn open_at(&self, place: SecretPlace<'_>, stored: &str) -> anyhow::Result<Vec<u8>> {
        match place {
            SecretPlace::ServerSecret { name } if !is_sealed(stored) && !self.encrypts() => {
                URL_SAFE_NO_PAD
                    .decode(stored)
                    .with_context(|| format!("stored server secret {name}"))
            }
            _ => self.open(&label(place), stored),
        }
    }

    /// The value at `place` sealed under this sealer's key, from what is
    /// stored there now (sealed under `current`, or in the clear).
    pub fn reseal(
        &self,
        current: &Sealer,
        place: SecretPlace<'_>,
        stored: &str,
    ) -> anyhow::Result<String> {
        let secret = secrecy::zeroize::Zeroizing::new(current.open_at(place, stored)?);
        self.seal_at(place, &secret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_keys_open_only_with_their_key_and_kid() {
        let sealer = Sealer::new(Some(&[7u8; 32])).unwrap();
        let sealed = sealer.seal("kid-1", b"private key bytes").unwrap();
        assert!(sealed.starts_with(SEALED_PREFIX));
        assert!(!sealed.contains("private"));
        assert_eq!(sealer.open("kid-1", &sealed).unwrap(), b"private key bytes");
        assert!(sealer.open("kid-2", &sealed).is_err(), "bound to its kid");
        assert!(Sealer::new(Some(&[8u8; 32])).unwrap().open("kid-1", &sealed).is_err());
        assert!(Sealer::new(None).unwrap().open("kid-1", &sealed).is_err());
    }

    #[test]
    fn a_resealed_value_opens_with_the_new_key_only_and_keeps_its_secret() {
        let old = Sealer::new(Some(&[7u8; 32])).unwrap();
        let new = Sealer::new(Some(&[8u8; 32])).unwrap();
        let place = SecretPlace::ServerSecret { name: "one_time_code_key" };
        let other = SecretPlace::ServerSecret { name: "decoy_credential_key" };
        let plain = Sealer::new(None).unwrap().seal_at(place, b"code key").unwrap();
        assert_eq!(URL_SAFE_NO_PAD.decode(&plain).unwrap(), b"code key", "the old plain form");

        let sealed = old.reseal(&Sealer::new(None).unwrap(), place, &plain).unwrap();
        let resealed = new.reseal(&old, place, &sealed).unwrap();

        assert!(is_sealed(&sealed) && is_sealed(&resealed));
        assert_eq!(new.open_at(place, &resealed).unwrap(), b"code key");
        assert!(old.open_at(place, &resealed).is_err(), "the old key opens nothing");
        assert!(new.open_at(other, &resealed).is_err(), "bound to its place");
    }

    #[test]
    fn with_a_key_a_value_in_the_clear_is_refused_not_read() {
        let plain = Sealer::new(None).unwrap().seal("kid", b"abc").unwrap();
        assert_eq!(Sealer::new(None).unwrap().open("kid", &plain).unwrap(), b"abc");
        // Someone who can write to the database must not be able to put in
        // a secret of their own in the clear.
        let keyed = Sealer::new(Some(&[1u8; 32])).unwrap();
        assert!(keyed.open("kid", &plain).is_err());
        let place = SecretPlace::ServerSecret { name: "one_time_code_key" };
        let stored = Sealer::new(None).unwrap().seal_at(place, b"abc").unwrap();
        assert!(keyed.open_at(place, &stored).is_err());
        // The start-up sealing reads it with a keyless sealer, as before.
        let resealed = keyed.reseal(&Sealer::new(None).unwrap(), place, &stored).unwrap();
        assert_eq!(keyed.open_at(place, &resealed).unwrap(), b"abc");
    }
}
