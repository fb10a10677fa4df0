//! Rate limits and lockout for the password, code and MFA endpoints. The
//! counters live in the database, so every node enforces the same limit.
//!
//! - Requests per minute per client IP and per account (fixed windows):
//!   429 `rate_limited` with Retry-After.
//! - Consecutive failures per account: after `lockout_threshold` of them
//!   the account's fallback sign-in is locked for `lockout_base`, doubling
//!   with each further failure up to `lockout_max`: 403 `account_locked`
//!   with Retry-After. Subjects are account names whether or not they
//!   exist, so a lockout tells nothing about which names are registered.
//!   Passkey sign-in never looks at these counters.

use super::Core;
use super::audit::Event;
use crate::error::{ApiError, Result};
use crate::net::rate_limit_block;
use crate::service::tokens::ClientInfo;

const WINDOW_MS: i64 = 60_000;

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

impl Core {
    /// Counts this request against the client's IP and, when known, the
    /// account; refuses it when either is over its limit.
    pub async fn throttle(
        &self,
        group: &str,
        client: &ClientInfo,
        account: Option<&str>,
    ) -> Result<()> {
        let ip = client.ip.as_deref().unwrap_or("unknown");
        let limit = self.settings.limits.ip_requests_per_minute;
        self.count_hit("ip", format!("ip:{group}:{}", rate_limit_block(ip)), limit, group).await?;
        match account {
            Some(account) => self.throttle_account(group, account).await,
            None => Ok(()),
        }
    }

    /// Counts this request against the account only (its IP was counted
    /// before the account was known).
    pub async fn throttle_account(&self, group: &str, account: &str) -> Result<()> {
        let limit = self.settings.limits.account_requests_per_minute;
        self.count_hit("account", format!("acct:{group}:{account}"), limit, group).await
    }

    async fn count_hit(&self, scope: &str, bucket: String, limit: u64, group: &str) -> Result<()> {
        let now = self.clock.now_ms();
        let (hits, window_ends) = self.store.hit_rate_window(&bucket, now, WINDOW_MS).await?;
        if u64::try_from(hits).unwrap_or(0) > limit {
            self.metrics.rate_limited(scope);
            tracing::info!(target: "audit", event = "rate_limited", scope, group);
            return Err(ApiError::RateLimited { retry_after_secs: retry_after(window_ends, now) });
        }
        Ok(())
    }

    /// Refuses while the subject is locked out.
    pub async fn ensure_not_locked(&self, subject: &str) -> Result<()> {
        let now = self.clock.now_ms();
        let until = self.store.locked_until(subject).await?;
        if until > now {
            self.metrics.lockout_hit();
            return Err(ApiError::AccountLocked { retry_after_secs: retry_after(until, now) });
        }
        Ok(())
    }

    /// Counts a failed password or code, locking the subject once there
    /// have been too many in a row.
    pub async fn record_failure(&self, subject: &str) -> Result<()> {
        let limits = &self.settings.limits;
        let now = self.clock.now_ms();
        let forget_before = now - limits.failure_window.as_millis() as i64;
        let failures = self.store.record_failure(subject, now, forget_before).await?;
        let threshold = i64::try_from(limits.lockout_threshold).unwrap_or(i64::MAX);
        if failures >= threshold {
            let doublings = u32::try_from(failures - threshold).unwrap_or(u32::MAX).min(20);
            let base = limits.lockout_base.as_millis() as i64;
            let lock =
                base.saturating_mul(1 << doublings).min(limits.lockout_max.as_millis() as i64);
            self.store.lock_subject(subject, now + lock).await?;
            self.metrics.lockout();
            let reason = format!("{failures} failed sign-ins in a row: locked {} s", lock / 1000);
            let event = Event::failed("account_locked", &reason);
            match subject.strip_prefix("user:") {
                Some(user_id) => self.audit(event.user(user_id)).await,
                // Names that do not exist are what an attacker typed; they
                // stay out of the record.
                None => self.audit(event).await,
            }
        }
        Ok(())
    }

    pub async fn clear_failures(&self, subject: &str) -> Result<()> {
        Ok(self.store.clear_failures(subject).await?)
    }
}
