//! The signed-in user's own view of their account.

use serde::Serialize;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Profile {
    pub user_id: String,
    pub username: String,
    pub display_name: String,
    pub email: Option<String>,
    pub email_verified: bool,
    /// Ways this account can sign in: `passkey`, `password`, and the
    /// second factors `totp`, `email_otp`, `recovery_code`.
    pub factors: Vec<String>,
    pub roles: Vec<String>,
}
