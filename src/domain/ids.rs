use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use uuid::Uuid;

use super::ValidationError;

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident, $field:literal) => {
        uuid_id!($(#[$doc])* $name, $field, Uuid::new_v4);
    };
    ($(#[$doc:meta])* $name:ident, $field:literal, $make:path) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(Uuid);

        impl $name {
            pub fn new() -> Self {
                $name($make())
            }

            pub fn parse(input: String) -> Result<Self, ValidationError> {
                Uuid::parse_str(input.trim())
                    .map($name)
                    .map_err(|_| ValidationError(concat!($field, ": not a valid UUID").into()))
            }

            pub fn as_uuid(&self) -> &Uuid {
                &self.0
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl TryFrom<String> for $name {
            type Error = ValidationError;
            fn try_from(value: String) -> Result<Self, Self::Error> {
                Self::parse(value)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0.to_string()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

uuid_id!(
    /// A user; also the WebAuthn user handle, so a discoverable login
    /// names its account.
    UserId,
    "user_id"
);
uuid_id!(
    /// One bound passkey, as the API names it.
    DeviceId,
    "device_id"
);
uuid_id!(
    /// One sign-in session: the `sid` claim, and what a refresh token renews.
    /// Time-ordered (UUIDv7): a new session's keys land beside the last
    /// one's in the session and refresh token indexes, so a sign-in
    /// rewrites pages that others around it rewrite too, not pages of its
    /// own (BENCHMARKS.md). Not a secret: every use is checked against its
    /// user, and the JWT carries its time anyway.
    SessionId,
    "session_id",
    Uuid::now_v7
);

/// An opaque ceremony handle: the time it was made in milliseconds (6
/// bytes) then 128 random bits, base64url (30 characters). Unguessable, so
/// holding it is what ties a finish to its start; its time prefix keeps
/// the ceremonies in flight on a few index pages, so that starting and
/// finishing one rewrites pages shared with the others instead of a page
/// of its own (BENCHMARKS.md). Handles of 128 random bits alone (22
/// characters, made before) are still read, so that a finish reaching a
/// node upgraded since its start still completes.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CeremonyId(String);

impl CeremonyId {
    pub fn generate() -> Self {
        let millis = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_millis() as u64);
        let mut bytes = [0u8; 22];
        bytes[..6].copy_from_slice(&millis.to_be_bytes()[2..]);
        rand::rngs::OsRng.fill_bytes(&mut bytes[6..]);
        CeremonyId(URL_SAFE_NO_PAD.encode(bytes))
    }

    /// Any string: a ceremony id is opaque, and one the server did not
    /// issue, whatever its shape, is answered 404 `ceremony_not_found` like
    /// an expired or used one (the lookup finds nothing), so that a client
    /// cannot tell them apart. The body limit bounds its length.
    pub fn parse(input: String) -> Result<Self, ValidationError> {
        Ok(CeremonyId(input))
    }
}

impl TryFrom<String> for CeremonyId {
    type Error = ValidationError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(value)
    }
}

impl From<CeremonyId> for String {
    fn from(id: CeremonyId) -> String {
        id.0
    }
}

impl AsRef<str> for CeremonyId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CeremonyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceremony_ids_are_fresh_and_parse_back() {
        let a = CeremonyId::generate();
        let b = CeremonyId::generate();
        assert_ne!(a, b);
        assert_eq!(CeremonyId::parse(a.to_string()).unwrap(), a);
    }

    #[test]
    fn ceremony_ids_carry_their_time_then_128_random_bits() {
        let millis = |id: &CeremonyId| {
            let bytes = URL_SAFE_NO_PAD.decode(id.as_ref()).unwrap();
            assert_eq!(bytes.len(), 22);
            u64::from_be_bytes([0, 0, bytes[0], bytes[1], bytes[2], bytes[3], bytes[4], bytes[5]])
        };
        let before =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis()
                as u64;
        let (a, b) = (CeremonyId::generate(), CeremonyId::generate());
        assert_eq!(a.as_ref().len(), 30);
        assert!(millis(&a) >= before && millis(&a) < before + 60_000, "{}", millis(&a));
        assert!(millis(&b) >= millis(&a));
        // Same millisecond or not, the random part differs.
        assert_ne!(a.as_ref()[8..], b.as_ref()[8..]);
    }

    #[test]
    fn ceremony_ids_made_before_the_time_prefix_still_parse() {
        let old = URL_SAFE_NO_PAD.encode([7u8; 16]);
        assert_eq!(CeremonyId::parse(old.clone()).unwrap().as_ref(), old);
    }

    #[test]
    fn session_ids_are_time_ordered_uuids() {
        let (a, b) = (SessionId::new(), SessionId::new());
        assert_eq!(a.as_uuid().get_version_num(), 7);
        assert!(a.to_string() < b.to_string());
        assert_eq!(UserId::new().as_uuid().get_version_num(), 4);
    }

    #[test]
    fn malformed_user_ids_are_refused_and_any_ceremony_id_is_taken() {
        assert!(UserId::parse("not-a-uuid".into()).is_err());
        for any in ["", "short", "!!!!", &"A".repeat(5000)] {
            assert_eq!(CeremonyId::parse(any.to_string()).unwrap().as_ref(), any);
        }
    }
}
