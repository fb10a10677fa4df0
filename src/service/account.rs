//! The signed-in user's fallback factors (API contract, "The signed-in
//! user"): the password, the email address and its verification. TOTP and
//! recovery codes are in `totp.rs`.

use super::Core;
use super::audit::Event;
use super::password::Checked;
use super::throttle::subject;
use super::tokens::{AccessClaims, ClientInfo};
use crate::domain::{EmailAddress, OneTimeCode, Password};
use crate::error::{ApiError, Result};
use crate::service::fallback::CodeSent;

const VERIFY_EMAIL: &str = "verify_email";
const GROUP: &str = "account";

impl Core {
    /// Refuses unless the bearer's session began (with a passkey, when
    /// `passkey` is set) within `mfa.fresh_auth_seconds`. Refreshing a
    /// token does not make a sign-in fresh.
    pub async fn require_fresh_sign_in(&self, claims: &AccessClaims, passkey: bool) -> Result<()> {
        let session = self.store.find_session(&claims.sid).await?.ok_or(ApiError::Unauthorized)?;
        let age = self.clock.now_ms() - session.created_at;
        let fresh = age <= self.settings.mfa.fresh_auth.as_millis() as i64;
        let by_passkey = session.amr.split(' ').any(|m| m == "hwk");
        if fresh && (by_passkey || !passkey) {
            return Ok(());
        }
        Err(ApiError::Forbidden(format!(
            "this change needs a sign-in {}within the last {} seconds; sign in again",
            if passkey { "with a passkey " } else { "" },
            self.settings.mfa.fresh_auth.as_secs()
        )))
    }

    /// Sets or changes the fallback password. A change needs the current
    /// password or a fresh passkey sign-in.
    pub async fn set_password(
        &self,
        claims: &AccessClaims,
        password: &Password,
        current: Option<&Password>,
        client: &ClientInfo,
    ) -> Result<()> {
        let user_id = claims.sub.as_str();
        let user = self.store.find_user(user_id).await?.ok_or(ApiError::Unauthorized)?;
        self.throttle(GROUP, client, Some(user_id)).await?;
        let stored = self.store.password_hash(user_id).await?;
        match (current, &stored) {
            (Some(current), Some(_)) => {
                let subject = subject(Some(user_id), "");
                self.ensure_not_locked(&subject).await?;
                if self.check_password(current, stored.as_deref()).await? == Checked::Wrong {
                    self.record_failure(&subject).await?;
                    self.audit(
                        Event::failed("password_change", "wrong current password").user(user_id),
                    )
                    .await;
                    return Err(ApiError::InvalidCredentials);
                }
            }
            // No password yet (a current_password proves nothing then), or
            // none given: only a fresh passkey sign-in may set it.
            _ => self.require_fresh_sign_in(claims, true).await?,
        }
        self.passwords.check_policy(password, &user.username)?;
        let phc = self.passwords.hash(password).await.inspect_err(|e| {
            if matches!(e, ApiError::RateLimited { .. }) {
                self.metrics.rate_limited("hash_queue");
            }
        })?;
        self.store.set_password(user_id, &phc, self.clock.now_ms()).await?;
        let event = if stored.is_some() { "password_changed" } else { "password_set" };
        self.audit(Event::ok(event).user(user_id)).await;
        Ok(())
    }

    /// Sets the address (unverified) and mails it a code.
    pub async fn set_email(
        &self,
        user_id: &str,
        email: &EmailAddress,
        client: &ClientInfo,
    ) -> Result<CodeSent> {
        self.throttle(GROUP, client, Some(user_id)).await?;
        let user = self.store.find_user(user_id).await?.ok_or(ApiError::Unauthorized)?;
        let sent = self
            .mail_code(
                &user,
                VERIFY_EMAIL,
                email.as_ref(),
                "Confirm your email address",
                "confirm this address",
            )
            .await?;
        self.store.set_email(user_id, email.as_ref()).await?;
        self.audit(Event::ok("email_set").user(user_id)).await;
        Ok(sent)
    }

    pub async fn verify_email(
        &self,
        user_id: &str,
        code: &OneTimeCode,
        client: &ClientInfo,
    ) -> Result<()> {
        self.throttle(GROUP, client, Some(user_id)).await?;
        let address = self
            .take_mailed_code(user_id, VERIFY_EMAIL, code)
            .await?
            .ok_or(ApiError::InvalidSetupCode)?;
        if !self.store.verify_email(user_id, &address).await? {
            // The address changed after this code was sent.
            return Err(ApiError::InvalidSetupCode);
        }
        self.audit(Event::ok("email_verified").user(user_id)).await;
        Ok(())
    }
}
