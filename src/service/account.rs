//! The signed-in user's fallback factors (API contract, "The signed-in
//! user"): the password, the email address and its verification. TOTP and
//! recovery codes are in `totp.rs`.

use std::sync::Arc;

use super::audit::{Audit, Event};
use super::fallback::Fallback;
use super::fresh::Freshness;
use super::notify::{Change, Notifier};
use super::password::{Checked, PasswordHasher};
use super::profile::Profile;
use super::throttle::{Throttle, subject};
use super::tokens::AccessClaims;
use crate::clock::Clock;
use crate::context::ClientInfo;
use crate::domain::{EmailAddress, Language, OneTimeCode, Password};
use crate::error::{ApiError, Result};
use crate::metrics::Metrics;
use crate::service::fallback::{CodeMail, CodeSent};
use crate::store::Store;

const VERIFY_EMAIL: &str = "verify_email";

const GROUP: &str = "account";

/// The signed-in user's profile, password and email address.
#[derive(Clone)]
pub struct Account {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    metrics: Metrics,
    passwords: Arc<PasswordHasher>,
    audit: Audit,
    throttle: Throttle,
    notifier: Notifier,
    fresh: Freshness,
    fallback: Fallback,
}

impl Account {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        metrics: Metrics,
        passwords: Arc<PasswordHasher>,
        audit: Audit,
        throttle: Throttle,
        notifier: Notifier,
        fresh: Freshness,
        fallback: Fallback,
    ) -> Account {
        Account { store, clock, metrics, passwords, audit, throttle, notifier, fresh, fallback }
    }

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
        factors.extend(self.fallback.second_factors(&user).await?.into_iter().map(str::to_owned));
        if counts.recovery_codes > 0 {
            factors.push("recovery_code".to_owned());
        }
        if counts.passkey_recovery_codes > 0 {
            factors.push("passkey_recovery_code".to_owned());
        }
        Ok(Profile {
            user_id: user.user_id.to_string(),
            username: user.username,
            display_name: user.display_name,
            email: user.email,
            email_verified: user.email_verified,
            factors,
            roles: user.roles.names().to_vec(),
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
        self.throttle.check(GROUP, client, Some(user_id)).await?;
        let stored = self.store.password_hash(user_id).await?;
        match (current, &stored) {
            (Some(current), Some(_)) => {
                let attempt = self.throttle.begin_attempt(&subject(Some(user_id), "")).await?;
                let checked = match self.fallback.check_password(current, stored.as_deref()).await {
                    Ok(checked) => checked,
                    Err(error) => {
                        self.throttle.attempt_returned(attempt).await?;
                        return Err(error);
                    }
                };
                if checked == Checked::Wrong {
                    self.throttle.attempt_failed(attempt).await?;
                    self.audit
                        .record(
                            Event::failed("password_change", "wrong current password")
                                .user(user_id),
                        )
                        .await;
                    return Err(ApiError::InvalidCredentials);
                }
                self.throttle.attempt_returned(attempt).await?;
            }
            // No password yet (a current_password proves nothing then), or
            // none given: only a fresh passkey sign-in may set it.
            _ => self.fresh.require_fresh_passkey(claims).await?,
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
        self.audit.record(Event::ok(event).user(user_id)).await;
        if stored.is_some() {
            // Whoever knew the old password may hold a session: a change
            // ends every other one.
            // So does every sign-in halfway through with the old password.
            self.store.void_fallback_steps(user_id).await?;
            let ended = self.store.end_other_sessions(user_id, &claims.sid, now).await?;
            if ended > 0 {
                let reason = format!("{ended} other sessions ended by a password change");
                self.audit.record(Event::ok("session_ended").user(user_id).reason(&reason)).await;
            }
        }
        let change = if stored.is_some() { Change::PasswordChanged } else { Change::PasswordSet };
        self.notifier.notify(&user, change, None);
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
        self.fresh.require_strongest_factor(claims).await?;
        let user_id = claims.sub.as_str();
        self.throttle.check(GROUP, client, Some(user_id)).await?;
        let user = self.store.find_user(user_id).await?.ok_or(ApiError::Unauthorized)?;
        let sent = self
            .fallback
            .mail_code(&user, VERIFY_EMAIL, email.as_ref(), CodeMail::VerifyEmail)
            .await?;
        match user.email.as_deref().filter(|_| user.email_verified) {
            // A verified address stays a working factor, and keeps
            // getting the notices, until the new one is confirmed: the
            // code's row holds the new address until then.
            Some(old) => {
                let change = Change::EmailChangeRequested { new_address: email.as_ref() };
                self.notifier.notify(&user, change, Some(old));
            }
            None => self.store.set_email(user_id, email.as_ref()).await?,
        }
        self.audit.record(Event::ok("email_set").user(user_id)).await;
        Ok(sent)
    }

    /// Sets the language the account's notices are written in.
    pub async fn set_language(&self, user_id: &str, language: Language) -> Result<()> {
        if !self.store.set_language(user_id, language.tag()).await? {
            return Err(ApiError::Unauthorized);
        }
        Ok(())
    }

    pub async fn verify_email(
        &self,
        user_id: &str,
        code: &OneTimeCode,
        client: &ClientInfo,
    ) -> Result<()> {
        self.throttle.check(GROUP, client, Some(user_id)).await?;
        let address = self
            .fallback
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
        self.audit.record(Event::ok("email_verified").user(user_id)).await;
        if let Some(old) =
            user.email.as_deref().filter(|old| user.email_verified && *old != address)
        {
            self.notifier.notify(&user, Change::EmailChanged { new_address: &address }, Some(old));
        }
        Ok(())
    }
}
