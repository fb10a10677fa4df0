//! Validated values. Each type has one constructor, `parse`, so anything of
//! that type has passed its checks; DTOs deserialize through it.

mod email;
mod ids;
mod label;
mod language;
mod roles;
mod secret;
mod username;

pub use email::EmailAddress;
pub use ids::{CeremonyId, DeviceId, SessionId, UserId};
pub use label::{DeviceName, DisplayName};
pub use language::Language;
pub use roles::{ADMIN, Roles};
pub use secret::{MfaToken, OneTimeCode, OpaqueToken, Password, sha256_hex};
// Defined beside the verifier, which hashes it the same way passgate does.
pub use passgate_verifier::{RawTransaction, Transaction};
pub use username::Username;

/// Why a value was refused; the text goes to the client as `detail`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ValidationError(pub String);
