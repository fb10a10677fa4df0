//! Token ids already spent, so each authorization pays once.

use std::collections::HashMap;

/// How often expired replay-cache entries are swept (seconds).
pub(crate) const SWEEP_EVERY_SECS: i64 = 10;

/// Token ids seen, each with the time after which its token is refused as
/// expired anyway and the entry can go.
#[derive(Default)]
pub(crate) struct ReplayCache {
    pub(crate) seen: HashMap<String, i64>,
    next_sweep: i64,
}

impl ReplayCache {
    /// Records `jti`; false if it was already recorded and still live.
    pub(crate) fn first_use(&mut self, jti: &str, forget_after: i64, now: i64) -> bool {
        // A sweep per call would cost a full scan per payment; every few
        // seconds keeps the map at about one token lifetime of payments.
        if now >= self.next_sweep {
            self.seen.retain(|_, until| *until > now);
            self.next_sweep = now + SWEEP_EVERY_SECS;
        }
        match self.seen.get(jti) {
            Some(until) if *until > now => false,
            _ => {
                self.seen.insert(jti.to_owned(), forget_after);
                true
            }
        }
    }
}
