//! The signed-in user's fallback factors (API contract, "The signed-in
//! user"): the password, the email address and its verification. TOTP and
//! recovery codes are in `totp.rs`.

use super::Core;
use super::audit::Event;
use super::notify::Change;
use super::password::Checked;
use super::throttle::subject;
use super::tokens::AccessClaims;
use crate::context::ClientInfo;
use crate::domain::{EmailAddress, OneTimeCode, Password};
use crate::error::{ApiError, Result};
use crate::service::fallback::CodeSent;

const VERIFY_EMAIL: &str = "verify_email";

/// How the bearer's session began.
pub(super) struct SessionStart {
    /// Within `mfa.fresh_auth_seconds`.
    pub fresh: bool,
    /// With a passkey sign-in: not an enrolment code, nor a passkey still
    /// waiting out its delay (see `passkey::PROBATION_AMR`).
    pub passkey: bool,
}
const GROUP: &str = "account";

impl Core {
    /// Refuses unless the bearer's session began within
    /// `mfa.fresh_auth_seconds`. Refreshing a token does not make a
    /// sign-in fresh.
    pub(super) async fn require_fresh_sign_in(&self, claims: &AccessClaims) -> Result<()> {
        if self.session_start(claims).await?.fresh {
            return Ok(());
        }
        Err(ApiError::Forbidden(format!(
            "this change needs a sign-in within the last {} seconds; sign in again",
            self.settings.mfa.fresh_auth.as_secs()
        )))
    }

    /// Refuses (403 `passkey_required`) unless the bearer's session began
    /// with a passkey sign-in within `mfa.fresh_auth_seconds`. A password
    /// and a code can be relayed by a phishing page in real time; a passkey
    /// cannot (it signs for its own origin only), so only a passkey may
    /// change what guards the account. A session opened by an admin's
    /// enrolment code does not count (the code was mailed or handed over),
    /// nor one opened by a passkey bound from a password sign-in that is
    /// still waiting out its delay.
    pub(super) async fn require_fresh_passkey(&self, claims: &AccessClaims) -> Result<()> {
        let start = self.session_start(claims).await?;
        if start.fresh && start.passkey {
            return Ok(());
        }
        Err(ApiError::PasskeyRequired(format!(
            "this change needs a passkey sign-in within the last {} seconds{}",
            self.settings.mfa.fresh_auth.as_secs(),
            if start.passkey { "" } else { " (a password and a code are not enough)" }
        )))
    }

    /// The rule for changing the account's own factors: the strongest one
    /// it has must have been used. With a passkey, a fresh passkey sign-in;
    /// an account without one (after an admin reset, say) has nothing
    /// stronger than a fresh sign-in.
    pub(super) async fn require_strongest_factor(&self, claims: &AccessClaims) -> Result<()> {
        if self.store.user_credentials(&claims.sub).await?.is_empty() {
            self.require_fresh_sign_in(claims).await
        } else {
            self.require_fresh_passkey(claims).await
        }
    }

    pub(super) async fn session_start(&self, claims: &AccessClaims) -> Result<SessionStart> {
        let session = self.store.find_session(&claims.sid).await?.ok_or(ApiError::Unauthorized)?;
        let age = self.clock.now_ms() - session.created_at;
        let methods: Vec<&str> = session.amr.split(' ').collect();
        Ok(SessionStart {
            fresh: age <= self.settings.mfa.fresh_auth.as_millis() as i64,
            passkey: methods.contains(&"hwk")
                && !methods.contains(&"enrol")
                && !methods.contains(&"new"),
        })
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
                let attempt = self.begin_attempt(&subject(Some(user_id), "")).await?;
                let checked = match self.check_password(current, stored.as_deref()).await {
                    Ok(checked) => checked,
                    Err(error) => {
                        self.attempt_returned(attempt).await?;
                        return Err(error);
                    }
                };
                if checked == Checked::Wrong {
                    self.attempt_failed(attempt).await?;
                    self.audit(
                        Event::failed("password_change", "wrong current password").user(user_id),
                    )
                    .await;
                    return Err(ApiError::InvalidCredentials);
                }
                self.attempt_returned(attempt).await?;
            }
            // No password yet (a current_password proves nothing then), or
            // none given: only a fresh passkey sign-in may set it.
            _ => self.require_fresh_passkey(claims).await?,
        }
        self.passwords.check_policy(password, &user.username)?;
        let phc = self.passwords.hash(password).await.inspect_err(|e| {
            if matches!(e, ApiError::RateLimited { .. }) {
                self.metrics.rate_limited("hash_queue");
            }
        })?;
        let now = self.clock.now_ms();
        self.store.set_password(user_id, &phc, now).await?;
        let event = if stored.is_some() { "password_changed" } else { "password_set" };
        self.audit(Event::ok(event).user(user_id)).await;
        if stored.is_some() {
            // Whoever knew the old password may hold a session: a change
            // ends every other one.
            // So does every sign-in halfway through with the old password.
            self.store.void_fallback_steps(user_id).await?;
            let ended = self.store.end_other_sessions(user_id, &claims.sid, now).await?;
            if ended > 0 {
                let reason = format!("{ended} other sessions ended by a password change");
                self.audit(Event::ok("session_ended").user(user_id).reason(&reason)).await;
            }
        }
        let change = if stored.is_some() { Change::PasswordChanged } else { Change::PasswordSet };
        self.notify(&user, change, None);
        Ok(())
    }

    /// Sets the address (unverified) and mails it a code. A new address
    /// becomes a second factor: only the account's strongest factor,
    /// freshly used, may set it.
    pub async fn set_email(
        &self,
        claims: &AccessClaims,
        email: &EmailAddress,
        client: &ClientInfo,
    ) -> Result<CodeSent> {
        self.require_strongest_factor(claims).await?;
        let user_id = claims.sub.as_str();
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
        match user.email.as_deref().filter(|_| user.email_verified) {
            // A verified address stays a working factor, and keeps
            // getting the notices, until the new one is confirmed: the
            // code's row holds the new address until then.
            Some(old) => {
                let change = Change::EmailChangeRequested { new_address: email.as_ref() };
                self.notify(&user, change, Some(old));
            }
            None => self.store.set_email(user_id, email.as_ref()).await?,
        }
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
        let user = self.store.find_user(user_id).await?.ok_or(ApiError::Unauthorized)?;
        // The code was mailed to `address` alone, and a newer request
        // replaces it: taking it proves that address, whatever the account
        // held meanwhile.
        if !self.store.verify_email(user_id, &address).await? {
            return Err(ApiError::InvalidSetupCode);
        }
        self.audit(Event::ok("email_verified").user(user_id)).await;
        if let Some(old) =
            user.email.as_deref().filter(|old| user.email_verified && *old != address)
        {
            self.notify(&user, Change::EmailChanged { new_address: &address }, Some(old));
        }
        Ok(())
    }
}
