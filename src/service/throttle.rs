//! Rate limits and lockout for the password, code and MFA endpoints. The
//! counters live in the database, so every node enforces the same limit.
//!
//! - Requests per minute per client IP and per account (fixed windows):
//!   429 `rate_limited` with Retry-After.
//! - Consecutive failures per account, however far apart, until a
//!   successful sign-in: after `lockout_threshold` of them the account's
//!   fallback sign-in is locked for `lockout_base`, doubling with each
//!   further failure up to `lockout_max`: 403 `account_locked` with
//!   Retry-After. After `lockout_permanent_threshold` it stays locked until
//!   a passkey sign-in or an admin unlock (403 `account_locked`, no
//!   Retry-After). Attempts are counted before they are checked. Subjects are account names whether or not they
//!   exist, so a lockout tells nothing about which names are registered.
//!   Passkey sign-in never looks at these counters.

use std::sync::Arc;

use super::audit::{Audit, Event};
use crate::clock::{Clock, Millis};
use crate::config::Settings;
use crate::context::ClientInfo;
use crate::error::{ApiError, Result};
use crate::metrics::Metrics;
use crate::net::rate_limit_block;
use crate::store::Store;

const WINDOW_MS: i64 = 60_000;
/// `locked_until` of a subject locked until a passkey sign-in or an admin
/// unlock.
pub const LOCKED_FOR_GOOD: Millis = i64::MAX;

/// A counted password or code attempt, whose outcome is still to be told.
/// One dropped untold (an error on the way, the request's deadline, a
/// client that went away before the answer) is handed back, since nothing
/// was learnt from it: otherwise it would count as a failure for good.
#[must_use = "report the attempt's outcome"]
pub struct Attempt {
    subject: String,
    failures: i64,
    streak: i64,
    /// The provisional lock this attempt set, if it reached the threshold.
    provisional_until: Millis,
    /// Set once the outcome is told.
    told: bool,
    store: Arc<dyn Store>,
}

impl Attempt {
    fn tell(mut self) -> (String, i64, i64, Millis) {
        self.told = true;
        (std::mem::take(&mut self.subject), self.failures, self.streak, self.provisional_until)
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        if self.told {
            return;
        }
        let (store, subject, provisional) =
            (self.store.clone(), std::mem::take(&mut self.subject), self.provisional_until);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(error) = store.return_attempt(&subject, provisional).await {
                    tracing::warn!(error.cause_chain = ?error, "an untold attempt was not handed back");
                }
            });
        }
    }
}

/// Whose failures count: a known account by id, an unknown name by name.
pub fn subject(user_id: Option<&str>, username: &str) -> String {
    match user_id {
        Some(id) => format!("user:{id}"),
        None => format!("name:{username}"),
    }
}

fn retry_after(until: i64, now: i64) -> u64 {
    u64::try_from((until - now + 999) / 1000).unwrap_or(0).max(1)
}

/// Rate limits and lockout, shared by every feature that takes a password
/// or a code.
#[derive(Clone)]
pub struct Throttle {
    settings: Arc<Settings>,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    metrics: Metrics,
    audit: Audit,
}

impl Throttle {
    pub fn new(
        settings: Arc<Settings>,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        metrics: Metrics,
        audit: Audit,
    ) -> Throttle {
        Throttle { settings, store, clock, metrics, audit }
    }

    /// Counts this request against the client's IP and, when known, the
    /// account; refuses it when either is over its limit.
    pub async fn check(
        &self,
        group: &str,
        client: &ClientInfo,
        account: Option<&str>,
    ) -> Result<()> {
        let ip = client.ip.as_deref().unwrap_or("unknown");
        let limit = self.settings.limits.ip_requests_per_minute;
        self.count_hit("ip", format!("ip:{group}:{}", rate_limit_block(ip)), limit, group).await?;
        match account {
            Some(account) => self.account(group, account).await,
            None => Ok(()),
        }
    }

    /// Counts this request against the account only (its IP was counted
    /// before the account was known).
    pub async fn account(&self, group: &str, account: &str) -> Result<()> {
        let limit = self.settings.limits.account_requests_per_minute;
        self.count_hit("account", format!("acct:{group}:{account}"), limit, group).await
    }

    async fn count_hit(&self, scope: &str, bucket: String, limit: u64, group: &str) -> Result<()> {
        let now = self.clock.now_ms();
        let (hits, window_ends) = self.store.hit_rate_window(&bucket, now, WINDOW_MS).await?;
        if u64::try_from(hits).unwrap_or(0) > limit {
            self.metrics.rate_limited(scope);
            tracing::info!(target: "audit", event = "rate_limited", scope, group);
            // No row (a flood would fill the trail), but counted: past its
            // limit a flood is only visible here.
            self.audit.count_failure("rate_limited");
            return Err(ApiError::RateLimited { retry_after_secs: retry_after(window_ends, now) });
        }
        Ok(())
    }

    /// Refuses while the subject is locked out.
    pub async fn ensure_not_locked(&self, subject: &str) -> Result<()> {
        let now = self.clock.now_ms();
        let until = self.store.locked_until(subject).await?;
        if until > now {
            return Err(self.lock_answer(until, now));
        }
        Ok(())
    }

    fn lock_answer(&self, until: Millis, now: Millis) -> ApiError {
        self.metrics.lockout_hit();
        if until == LOCKED_FOR_GOOD {
            ApiError::FallbackLocked
        } else {
            ApiError::AccountLocked { retry_after_secs: retry_after(until, now) }
        }
    }

    /// Counts a password or code attempt before it is checked, so that a
    /// burst of guesses at once cannot run past the threshold: refuses it
    /// while the subject is locked. The caller then reports the outcome
    /// with `attempt_failed`, `attempt_returned` or `clear_failures`.
    pub async fn begin_attempt(&self, subject: &str) -> Result<Attempt> {
        let limits = &self.settings.limits;
        let now = self.clock.now_ms();
        let quiet_before = now - limits.failure_window.as_millis() as i64;
        let provisional = now + limits.lockout_max.as_millis() as i64;
        let counted = self
            .store
            .count_attempt(subject, now, quiet_before, self.lock_from(), provisional)
            .await?;
        match counted {
            Some((failures, streak)) => Ok(Attempt {
                subject: subject.to_owned(),
                failures,
                streak,
                provisional_until: provisional,
                told: false,
                store: self.store.clone(),
            }),
            None => {
                let until = self.store.locked_until(subject).await?;
                Err(self.lock_answer(until.max(now + 1), now))
            }
        }
    }

    fn lock_from(&self) -> i64 {
        i64::try_from(self.settings.limits.lockout_threshold).unwrap_or(i64::MAX)
    }

    /// A right answer that does not finish a sign-in (a right password
    /// before its second factor): neither a failure nor a success.
    pub async fn attempt_returned(&self, attempt: Attempt) -> Result<()> {
        let (subject, _, _, provisional) = attempt.tell();
        Ok(self.store.return_attempt(&subject, provisional).await?)
    }

    /// A whole sign-in: the count starts over.
    pub async fn attempt_succeeded(&self, attempt: Attempt) -> Result<()> {
        let (subject, ..) = attempt.tell();
        self.clear_failures(&subject).await
    }

    /// A wrong password or code: once there have been too many in a row,
    /// locks the subject for `lockout_base`, doubling with each further
    /// failure (back to `lockout_base` after a quiet spell of
    /// `failure_window`), up to `lockout_max`; past
    /// `lockout_permanent_threshold`, until a passkey sign-in or an admin
    /// unlock (NIST SP 800-63B 5.2.2).
    pub async fn attempt_failed(&self, attempt: Attempt) -> Result<()> {
        let limits = &self.settings.limits;
        let now = self.clock.now_ms();
        let threshold = self.lock_from();
        let (subject, failures, streak, _) = attempt.tell();
        if failures < threshold {
            return Ok(());
        }
        let permanent = i64::try_from(limits.lockout_permanent_threshold).unwrap_or(i64::MAX);
        let (until, reason) = if failures >= permanent {
            let reason = format!(
                "{failures} failed sign-ins in a row: password sign-in locked until a passkey sign-in or an admin unlock"
            );
            (LOCKED_FOR_GOOD, reason)
        } else {
            let doublings = (failures - threshold).min(streak - 1).clamp(0, 20) as u32;
            let base = limits.lockout_base.as_millis() as i64;
            let lock =
                base.saturating_mul(1 << doublings).min(limits.lockout_max.as_millis() as i64);
            (now + lock, format!("{failures} failed sign-ins in a row: locked {} s", lock / 1000))
        };
        self.store.lock_subject(&subject, until).await?;
        self.metrics.lockout();
        let event = Event::failed("account_locked", &reason);
        match subject.strip_prefix("user:") {
            Some(user_id) => self.audit.record(event.user(user_id)).await,
            // Names that do not exist are what an attacker typed; they
            // stay out of the record.
            None => self.audit.record(event).await,
        }
        Ok(())
    }

    pub async fn clear_failures(&self, subject: &str) -> Result<()> {
        Ok(self.store.clear_failures(subject).await?)
    }
}
