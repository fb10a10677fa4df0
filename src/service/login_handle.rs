//! The `ceremony_id` of a passkey sign-in: the ceremony's state sealed
//! into the handle itself (ChaCha20-Poly1305 under a key every node
//! shares), so that `POST /v1/login/start`, which anyone may call, writes
//! nothing to the database. A flood of starts costs CPU, not rows.
//!
//! Single use is kept at the finish: the handle's nonce is recorded (as a
//! `ceremony` row of kind `used`, purged once the handle has expired) in
//! the same transaction that opens the session, and a handle whose nonce
//! is recorded is refused. The expiry is inside the seal, so a handle
//! cannot be made to live longer.

use aws_lc_rs::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use uuid::Uuid;

use crate::clock::Millis;

/// Binds a sealed handle to its purpose and format version.
const AAD: &[u8] = b"passgate login ceremony v1";
const HAS_USER: u8 = 1;
const DISCOVERABLE: u8 = 2;

/// What a sign-in's finish needs to know of its start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginTicket {
    /// A username-first sign-in names its user (None for a name that is no
    /// account: such a sign-in looks like any other, and can never finish).
    pub user_id: Option<Uuid>,
    pub discoverable: bool,
    pub challenge: Vec<u8>,
    pub expires_at: Millis,
    nonce: [u8; NONCE_LEN],
}

impl LoginTicket {
    pub fn new(
        user_id: Option<Uuid>,
        discoverable: bool,
        challenge: Vec<u8>,
        expires_at: Millis,
    ) -> LoginTicket {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        LoginTicket { user_id, discoverable, challenge, expires_at, nonce }
    }

    /// The id under which a finished (or refused) sign-in records this
    /// handle as used: unique per handle, and fixed by the seal.
    pub fn used_id(&self) -> String {
        format!("used:{}", URL_SAFE_NO_PAD.encode(self.nonce))
    }
}

pub struct HandleSealer {
    key: LessSafeKey,
}

impl HandleSealer {
    pub fn new(key: &[u8]) -> anyhow::Result<HandleSealer> {
        let key = UnboundKey::new(&CHACHA20_POLY1305, key)
            .map_err(|_| anyhow::anyhow!("the ceremony handle key is not 32 bytes"))?;
        Ok(HandleSealer { key: LessSafeKey::new(key) })
    }

    pub fn seal(&self, ticket: &LoginTicket) -> anyhow::Result<String> {
        let mut plain = Vec::with_capacity(1 + 8 + 16 + ticket.challenge.len());
        let flags = if ticket.user_id.is_some() { HAS_USER } else { 0 }
            | if ticket.discoverable { DISCOVERABLE } else { 0 };
        plain.push(flags);
        plain.extend_from_slice(&ticket.expires_at.to_be_bytes());
        // Always 16 bytes, zeros for no user: a handle for a name that is
        // no account must be as long as one for a real account.
        plain.extend_from_slice(ticket.user_id.unwrap_or_default().as_bytes());
        plain.extend_from_slice(&ticket.challenge);
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(ticket.nonce),
                Aad::from(AAD),
                &mut plain,
            )
            .map_err(|_| anyhow::anyhow!("sealing a ceremony handle failed"))?;
        let mut handle = ticket.nonce.to_vec();
        handle.extend_from_slice(&plain);
        Ok(URL_SAFE_NO_PAD.encode(handle))
    }

    /// The ticket of a handle this server sealed and that has not expired;
    /// None for anything else, whatever its shape (the client cannot tell
    /// a forged handle from an expired one).
    pub fn open(&self, handle: &str, now: Millis) -> Option<LoginTicket> {
        let bytes = URL_SAFE_NO_PAD.decode(handle).ok()?;
        if bytes.len() < NONCE_LEN {
            return None;
        }
        let (nonce_bytes, sealed) = bytes.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce_bytes.try_into().ok()?;
        let mut buffer = sealed.to_vec();
        let plain = self
            .key
            .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(AAD), &mut buffer)
            .ok()?;
        let (&flags, rest) = plain.split_first()?;
        let (expiry, rest) = rest.split_at_checked(8)?;
        let expires_at = Millis::from_be_bytes(expiry.try_into().ok()?);
        let (user, challenge) = rest.split_at_checked(16)?;
        let user_id = (flags & HAS_USER != 0).then(|| Uuid::from_slice(user).ok()).flatten();
        if expires_at <= now || challenge.is_empty() {
            return None;
        }
        Some(LoginTicket {
            user_id,
            discoverable: flags & DISCOVERABLE != 0,
            challenge: challenge.to_vec(),
            expires_at,
            nonce,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealer(byte: u8) -> HandleSealer {
        HandleSealer::new(&[byte; 32]).unwrap()
    }

    #[test]
    fn a_sealed_ticket_opens_to_itself_until_it_expires() {
        let user = Some(Uuid::new_v4());
        for (user_id, discoverable) in [(user, false), (None, false), (None, true)] {
            let ticket = LoginTicket::new(user_id, discoverable, vec![9; 32], 1_000);
            let handle = sealer(1).seal(&ticket).unwrap();
            assert_eq!(sealer(1).open(&handle, 999), Some(ticket.clone()));
            assert_eq!(sealer(1).open(&handle, 1_000), None, "expired");
            assert_eq!(sealer(2).open(&handle, 0), None, "another key");
        }
    }

    #[test]
    fn a_handle_is_as_long_whether_or_not_it_names_a_user() {
        let lengths: Vec<usize> = [(Some(Uuid::new_v4()), false), (None, false), (None, true)]
            .into_iter()
            .map(|(user, discoverable)| {
                let ticket = LoginTicket::new(user, discoverable, vec![1; 32], 5);
                sealer(1).seal(&ticket).unwrap().len()
            })
            .collect();
        assert!(lengths.windows(2).all(|pair| pair[0] == pair[1]), "{lengths:?}");
    }

    #[test]
    fn handles_differ_and_so_do_their_used_ids() {
        let a = LoginTicket::new(None, true, vec![1; 32], 5);
        let b = LoginTicket::new(None, true, vec![1; 32], 5);
        assert_ne!(sealer(1).seal(&a).unwrap(), sealer(1).seal(&b).unwrap());
        assert_ne!(a.used_id(), b.used_id());
    }

    proptest::proptest! {
        #[test]
        fn any_ticket_opens_to_itself(
            user in proptest::option::of(proptest::array::uniform16(0u8..)),
            discoverable: bool,
            challenge in proptest::collection::vec(0u8.., 1..64),
            expires_at in 1i64..i64::MAX,
        ) {
            let ticket = LoginTicket::new(user.map(Uuid::from_bytes), discoverable, challenge, expires_at);
            let handle = sealer(5).seal(&ticket).unwrap();
            proptest::prop_assert_eq!(sealer(5).open(&handle, expires_at - 1), Some(ticket));
        }

        #[test]
        fn arbitrary_text_never_opens_and_never_panics(text in ".{0,200}") {
            proptest::prop_assert_eq!(sealer(5).open(&text, 0), None);
        }

        #[test]
        fn arbitrary_bytes_never_open(bytes in proptest::collection::vec(0u8.., 0..200)) {
            proptest::prop_assert_eq!(sealer(5).open(&URL_SAFE_NO_PAD.encode(bytes), 0), None);
        }
    }

    #[test]
    fn anything_but_an_untouched_handle_is_refused() {
        let ticket = LoginTicket::new(Some(Uuid::new_v4()), false, vec![7; 32], 10);
        let handle = sealer(3).seal(&ticket).unwrap();
        let mut bytes = URL_SAFE_NO_PAD.decode(&handle).unwrap();
        for i in 0..bytes.len() {
            bytes[i] ^= 1;
            assert_eq!(sealer(3).open(&URL_SAFE_NO_PAD.encode(&bytes), 0), None, "byte {i}");
            bytes[i] ^= 1;
        }
        for junk in ["", "a", "AAAAAAAAAAAAAAAA", "not base64!", &handle[..handle.len() - 1]] {
            assert_eq!(sealer(3).open(junk, 0), None, "{junk:?}");
        }
    }
}
