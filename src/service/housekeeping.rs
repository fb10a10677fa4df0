//! What every node does every `housekeeping.interval_seconds` (a minute by
//! default): delete expired ceremonies, ended
//! sessions and spent codes and counters, and pick up or make signing
//! keys. A round has a time limit of its own: a database that stops
//! answering (a black-holed connection, which TCP may take many minutes
//! to notice) must not hold the round, or the connection it holds, for
//! longer than that. A round cut short is tried again at the next tick.

use std::sync::Arc;
use std::time::Duration;

use super::keys::SigningKeys;
use crate::clock::Clock;
use crate::config::Settings;
use crate::store;
use crate::store::Store;

/// How long one round may take, all of its statements together.
pub const ROUND_LIMIT: Duration = Duration::from_secs(10);

/// How a round ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Round {
    Done,
    /// Cut short at its limit; the database did not answer in time.
    TimedOut,
}

/// Each node's periodic clean-up and key refresh.
#[derive(Clone)]
pub struct Housekeeping {
    settings: Arc<Settings>,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    keys: Arc<SigningKeys>,
}

impl Housekeeping {
    pub fn new(
        settings: Arc<Settings>,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        keys: Arc<SigningKeys>,
    ) -> Housekeeping {
        Housekeeping { settings, store, clock, keys }
    }

    /// One round of housekeeping, given up after `limit`.
    pub async fn round(&self, limit: Duration) -> Round {
        match tokio::time::timeout(limit, self.housekeeping_steps()).await {
            Ok(()) => Round::Done,
            Err(_) => {
                // The statement in flight was dropped: its connection must
                // be checked before anyone else uses it.
                store::suspect_connections();
                tracing::warn!(limit_seconds = limit.as_secs(), "housekeeping cut short");
                Round::TimedOut
            }
        }
    }

    async fn housekeeping_steps(&self) {
        let now = self.clock.now_ms();
        match self.store.purge_expired_ceremonies(now).await {
            Ok(0) => {}
            Ok(purged) => tracing::debug!(purged, "expired ceremonies deleted"),
            Err(error) => tracing::warn!(error.cause_chain = ?error, "ceremony purge failed"),
        }
        // Kept a while (a day by default) after they end, so a reused
        // refresh token still meets its ended session rather than an
        // unknown one.
        let kept = self.settings.housekeeping.ended_sessions_kept.as_millis() as i64;
        let idle = self.settings.tokens.idle_timeout.as_millis() as i64;
        if let Err(error) = self.store.purge_ended_sessions(now - kept, now - kept - idle).await {
            tracing::warn!(error.cause_chain = ?error, "session purge failed");
        }
        // Ended trusted browsers stay as long as ended sessions, then go.
        if let Err(error) = self.store.purge_trusted_devices(now - kept).await {
            tracing::warn!(error.cause_chain = ?error, "trusted browser purge failed");
        }
        let forget = now - self.settings.limits.failure_window.as_millis() as i64;
        if let Err(error) = self.store.purge_fallback(now, forget).await {
            tracing::warn!(error.cause_chain = ?error, "purge of codes and counters failed");
        }
        // Answers kept for Idempotency-Key retries, past their time.
        match self.store.purge_idempotency_keys(now).await {
            Ok(0) => {}
            Ok(purged) => tracing::debug!(purged, "expired idempotency keys deleted"),
            Err(error) => {
                tracing::warn!(error.cause_chain = ?error, "idempotency key purge failed")
            }
        }
        let keys = match self.settings.tokens.key_rotation {
            Some(max_age) => self.keys.rotate_if_older(max_age, now).await.map(|_| ()),
            None => self.keys.reload(now).await,
        };
        if let Err(error) = keys {
            tracing::warn!(error.cause_chain = ?error, "signing key refresh failed");
        }
    }
}
