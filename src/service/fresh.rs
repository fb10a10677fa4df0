//! How recently, and with what, the bearer signed in: the rule behind
//! every change to what guards an account. A password and a code can be
//! relayed by a phishing page in real time; a passkey cannot (it signs for
//! its own origin only), so only a fresh passkey sign-in may change what
//! guards an account that has one.

use std::sync::Arc;

use super::tokens::AccessClaims;
use crate::clock::Clock;
use crate::config::Settings;
use crate::error::{ApiError, Result};
use crate::store::Store;

/// How the bearer's session began.
pub struct SessionStart {
    /// Within `mfa.fresh_auth_seconds`.
    pub fresh: bool,
    /// With a passkey sign-in: not an enrolment code, nor a passkey still
    /// waiting out its delay (see `passkey::PROBATION_AMR`).
    pub passkey: bool,
}
/// Checks the freshness and strength of the bearer's sign-in.
#[derive(Clone)]
pub struct Freshness {
    settings: Arc<Settings>,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
}

impl Freshness {
    pub fn new(settings: Arc<Settings>, store: Arc<dyn Store>, clock: Arc<dyn Clock>) -> Freshness {
        Freshness { settings, store, clock }
    }

    /// Refuses unless the bearer's session began within
    /// `mfa.fresh_auth_seconds`. Refreshing a token does not make a
    /// sign-in fresh.
    pub async fn require_fresh_sign_in(&self, claims: &AccessClaims) -> Result<()> {
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
    pub async fn require_fresh_passkey(&self, claims: &AccessClaims) -> Result<()> {
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
    pub async fn require_strongest_factor(&self, claims: &AccessClaims) -> Result<()> {
        if self.store.user_credentials(&claims.sub).await?.is_empty() {
            self.require_fresh_sign_in(claims).await
        } else {
            self.require_fresh_passkey(claims).await
        }
    }

    pub async fn session_start(&self, claims: &AccessClaims) -> Result<SessionStart> {
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
}
