//! `[trust]`: trusted browsers (issue 20 item 5).

use std::time::Duration;

use anyhow::bail;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTrust {
    days: u64,
}

/// How long a browser marked trusted stays trusted.
#[derive(Clone, Debug)]
pub struct TrustSettings {
    /// The cookie's Max-Age and the record's lifetime.
    pub lifetime: Duration,
}

pub(super) fn validate_trust(raw: RawTrust) -> anyhow::Result<TrustSettings> {
    // A year at most: trust that outlives every session by far is a
    // standing exception to the risk rules, and should be renewed.
    if !(1..=365).contains(&raw.days) {
        bail!("trust.days: {} is outside 1..=365", raw.days);
    }
    Ok(TrustSettings { lifetime: Duration::from_secs(raw.days * 86_400) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;
    use crate::config::tests::{env, load_error};

    #[test]
    fn trust_days_default_to_thirty_and_are_checked_by_name() {
        let defaults = Settings::load_from(None, env(&[])).unwrap();
        assert_eq!(defaults.trust.lifetime, Duration::from_secs(30 * 86_400));
        let set = Settings::load_from(None, env(&[("PASSGATE__TRUST__DAYS", "7")])).unwrap();
        assert_eq!(set.trust.lifetime, Duration::from_secs(7 * 86_400));
        for value in ["0", "366", "-1", "soon"] {
            assert!(load_error(&[("PASSGATE__TRUST__DAYS", value)]).contains("days"), "{value}");
        }
    }
}
