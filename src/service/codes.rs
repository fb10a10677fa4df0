//! One-time codes: made from the OS's randomness, stored only as an
//! HMAC-SHA256 under a server-wide key (so a database leak does not let
//! anyone try the million six-digit codes offline), compared in constant
//! time.

use hmac::{Hmac, Mac};
use rand::Rng;
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// Letters and digits that cannot be mistaken for one another when read
/// aloud or copied from paper (no 0/o, 1/l/i).
const RECOVERY_ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyz23456789";
/// Ten characters of a 31-letter alphabet: about 50 bits each.
const RECOVERY_LENGTH: usize = 10;
pub const RECOVERY_CODES: usize = 10;

pub struct CodeHasher {
    key: Vec<u8>,
}

impl CodeHasher {
    pub fn new(key: Vec<u8>) -> CodeHasher {
        CodeHasher { key }
    }

    /// The stored form of `code`, bound to what it is for and whose it is.
    pub fn hash(&self, purpose: &str, user_id: &str, code: &str) -> String {
        // A key of any length is valid for HMAC.
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.key) else {
            return String::new();
        };
        for part in [purpose, user_id, code] {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part.as_bytes());
        }
        crate::domain::sha256_hex(&mac.finalize().into_bytes())
    }

    /// Whether `code` hashes to `stored`, in constant time.
    pub fn matches(&self, purpose: &str, user_id: &str, code: &str, stored: &str) -> bool {
        let hash = self.hash(purpose, user_id, code);
        !stored.is_empty() && bool::from(hash.as_bytes().ct_eq(stored.as_bytes()))
    }
}

/// Six uniformly random digits.
pub fn six_digits() -> String {
    format!("{:06}", rand::rngs::OsRng.gen_range(0..1_000_000u32))
}

/// A recovery code as shown to the user: `xxxxx-xxxxx`.
pub fn recovery_code() -> String {
    let mut rng = rand::rngs::OsRng;
    let letters: String = (0..RECOVERY_LENGTH)
        .map(|_| RECOVERY_ALPHABET[rng.gen_range(0..RECOVERY_ALPHABET.len())] as char)
        .collect();
    format!("{}-{}", &letters[..5], &letters[5..])
}

/// The form a recovery code is hashed in (as `OneTimeCode` normalises it).
pub fn normalise_recovery(code: &str) -> String {
    code.chars().filter(|c| *c != '-').collect()
}

/// Whether a normalised code has the shape of a recovery code.
pub fn looks_like_recovery(code: &str) -> bool {
    code.len() == RECOVERY_LENGTH && code.bytes().all(|b| RECOVERY_ALPHABET.contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_bind_purpose_user_and_code() {
        let hasher = CodeHasher::new(vec![1; 32]);
        let stored = hasher.hash("login", "user-1", "123456");
        assert_eq!(stored.len(), 64);
        assert!(!stored.contains("123456"));
        assert!(hasher.matches("login", "user-1", "123456", &stored));
        assert!(!hasher.matches("login", "user-1", "123457", &stored));
        assert!(!hasher.matches("verify", "user-1", "123456", &stored));
        assert!(!hasher.matches("login", "user-2", "123456", &stored));
        assert!(!CodeHasher::new(vec![2; 32]).matches("login", "user-1", "123456", &stored));
        assert!(!hasher.matches("login", "user-1", "123456", ""));
    }

    #[test]
    fn codes_have_their_shapes() {
        for _ in 0..200 {
            let code = six_digits();
            assert!(code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit()), "{code}");
            let recovery = recovery_code();
            assert_eq!(recovery.len(), 11);
            assert!(looks_like_recovery(&normalise_recovery(&recovery)), "{recovery}");
        }
        assert!(!looks_like_recovery("123456"));
        assert!(!looks_like_recovery("abcdefghi0"), "0 is not in the alphabet");
    }
}
