//! The signed-in user's own view of their account.

use serde::Serialize;

use super::Core;
use super::tokens::roles_of;
use crate::error::{ApiError, Result};

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

impl Core {
    pub async fn profile(&self, user_id: &str) -> Result<Profile> {
        let user = self.store.find_user(user_id).await?.ok_or(ApiError::Unauthorized)?;
        let passkeys = self.store.user_credentials(user_id).await?;
        let mut factors = Vec::new();
        if !passkeys.is_empty() {
            factors.push("passkey".to_owned());
        }
        let counts = self.store.factor_counts(user_id).await?;
        if counts.passwords > 0 {
            factors.push("password".to_owned());
        }
        factors.extend(self.second_factors(&user).await?.into_iter().map(str::to_owned));
        if counts.recovery_codes > 0 {
            factors.push("recovery_code".to_owned());
        }
        Ok(Profile {
            user_id: user.user_id,
            username: user.username,
            display_name: user.display_name,
            email: user.email,
            email_verified: user.email_verified,
            factors,
            roles: roles_of(&user.roles),
        })
    }
}
