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
        Self::parse_field(input, "refresh_token")
    }

    /// `parse`, naming the field a malformed token came in.
    pub fn parse_field(input: String, field: &str) -> Result<Self, ValidationError> {
        let well_formed = input.len() == 43
            && URL_SAFE_NO_PAD.decode(input.as_bytes()).map(|b| b.len() == 32).unwrap_or(false);
        if well_formed {
            Ok(OpaqueToken(SecretString::from(input)))
        } else {
            Err(ValidationError(format!("{field}: malformed token")))
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

/// The token between the password and the second factor: an
/// `OpaqueToken` that names its own field when malformed.
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(try_from = "String")]
pub struct MfaToken(pub OpaqueToken);

impl TryFrom<String> for MfaToken {
    type Error = ValidationError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        OpaqueToken::parse_field(value, "mfa_token").map(MfaToken)
    }
}

/// A password as typed: any string (policy is checked where one is set,
/// not where one is tried). Never printed.
#[derive(Clone, serde::Deserialize)]
#[serde(from = "String")]
pub struct Password(SecretString);

impl Password {
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl From<String> for Password {
    fn from(value: String) -> Self {
        Password(SecretString::from(value))
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

/// A one-time code as typed (TOTP, emailed, or recovery), with spaces and
/// dashes removed. At most 64 characters. Never printed.
#[derive(Clone, serde::Deserialize)]
#[serde(try_from = "String")]
pub struct OneTimeCode(SecretString);

impl OneTimeCode {
    pub fn parse(input: String) -> Result<Self, ValidationError> {
        let code: String =
            input.chars().filter(|c| !matches!(c, ' ' | '-')).collect::<String>().to_lowercase();
        if code.is_empty() || code.len() > 64 || !code.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(ValidationError("code: expected the digits or letters of a code".into()));
        }
        Ok(OneTimeCode(SecretString::from(code)))
    }

    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }

    /// Six digits: a TOTP or emailed code.
    pub fn is_six_digits(&self) -> bool {
        let code = self.expose();
        code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit())
    }
}

impl TryFrom<String> for OneTimeCode {
    type Error = ValidationError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(value)
    }
}

impl fmt::Debug for OneTimeCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OneTimeCode(<redacted>)")
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
    fn codes_are_normalised_and_never_printed() {
        let code = OneTimeCode::parse(" 123 456 ".into()).unwrap();
        assert_eq!(code.expose(), "123456");
        assert!(code.is_six_digits());
        let recovery = OneTimeCode::parse("ABCDE-FGHJK".into()).unwrap();
        assert_eq!(recovery.expose(), "abcdefghjk");
        assert!(!recovery.is_six_digits());
        assert!(!format!("{code:?}{:?}", Password::from("hunter22".to_owned())).contains("12"));
        for bad in ["", "  ", "12;456", &"1".repeat(65)] {
            assert!(OneTimeCode::parse(bad.to_string()).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn malformed_tokens_are_refused() {
        for bad in ["", "abc", &"*".repeat(43), &"A".repeat(44)] {
            assert!(OpaqueToken::parse(bad.to_string()).is_err(), "{bad:?}");
        }
    }
}
