//! Encryption of private signing keys at rest (ChaCha20-Poly1305, the key
//! id as associated data, so a sealed key cannot be moved to another row).
//! With no key-encryption key configured, keys are stored in the clear and
//! the server says so at start.

use anyhow::{Context, anyhow, bail};
use aws_lc_rs::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rand::RngCore;

const SEALED_PREFIX: &str = "sealed:v1:";

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
    fn without_a_key_values_are_plain_and_still_readable_later() {
        let plain = Sealer::new(None).unwrap().seal("kid", b"abc").unwrap();
        assert_eq!(Sealer::new(Some(&[1u8; 32])).unwrap().open("kid", &plain).unwrap(), b"abc");
    }
}
