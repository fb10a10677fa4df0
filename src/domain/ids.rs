use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use uuid::Uuid;

use super::ValidationError;

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident, $field:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(Uuid);

        impl $name {
            pub fn new() -> Self {
                $name(Uuid::new_v4())
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
    SessionId,
    "session_id"
);

/// An opaque ceremony handle: 128 random bits, base64url (22 characters).
/// Unguessable, so holding it is what ties a finish to its start.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CeremonyId(String);

impl CeremonyId {
    pub fn generate() -> Self {
        let mut bytes = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        CeremonyId(URL_SAFE_NO_PAD.encode(bytes))
    }

    pub fn parse(input: String) -> Result<Self, ValidationError> {
        let well_formed = input.len() == 22
            && URL_SAFE_NO_PAD.decode(input.as_bytes()).map(|b| b.len() == 16).unwrap_or(false);
        if well_formed {
            Ok(CeremonyId(input))
        } else {
            Err(ValidationError("ceremony_id: not a ceremony id".into()))
        }
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
    fn malformed_ids_are_refused() {
        for bad in ["", "short", "!!!!!!!!!!!!!!!!!!!!!!", &"A".repeat(23)] {
            assert!(CeremonyId::parse(bad.to_string()).is_err(), "{bad:?}");
        }
        assert!(UserId::parse("not-a-uuid".into()).is_err());
    }
}
