use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

use super::ValidationError;

/// A bearer secret handed to a client once (a refresh token): 256 random
/// bits, base64url. The server keeps only its SHA-256, so a database leak
/// gives no usable tokens; lookups go by that hash, never by comparing
/// secrets byte by byte.
#[derive(Clone, serde::Deserialize)]
#[serde(try_from = "String")]
pub struct OpaqueToken(SecretString);

impl OpaqueToken {
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        OpaqueToken(SecretString::from(URL_SAFE_NO_PAD.encode(bytes)))
    }

    pub fn parse(input: String) -> Result<Self, ValidationError> {
        let well_formed = input.len() == 43
            && URL_SAFE_NO_PAD.decode(input.as_bytes()).map(|b| b.len() == 32).unwrap_or(false);
        if well_formed {
            Ok(OpaqueToken(SecretString::from(input)))
        } else {
            Err(ValidationError("refresh_token: malformed token".into()))
        }
    }

    /// The stored form.
    pub fn hash(&self) -> String {
        sha256_hex(self.0.expose_secret().as_bytes())
    }

    /// The value to give to the client, once.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl TryFrom<String> for OpaqueToken {
    type Error = ValidationError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(value)
    }
}

impl fmt::Debug for OpaqueToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OpaqueToken(<redacted>)")
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut out = String::with_capacity(64);
    for byte in digest {
        out.push_str(&format!("{byte:02x}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_secret() {
        let token = OpaqueToken::generate();
        assert!(!format!("{token:?}").contains(token.expose()));
    }

    #[test]
    fn tokens_round_trip_and_hash_stably() {
        let token = OpaqueToken::generate();
        let again = OpaqueToken::parse(token.expose().to_owned()).unwrap();
        assert_eq!(token.hash(), again.hash());
        assert_eq!(token.hash().len(), 64);
        assert_ne!(token.hash(), OpaqueToken::generate().hash());
    }

    #[test]
    fn malformed_tokens_are_refused() {
        for bad in ["", "abc", &"*".repeat(43), &"A".repeat(44)] {
            assert!(OpaqueToken::parse(bad.to_string()).is_err(), "{bad:?}");
        }
    }
}
