//! `[housekeeping]`: the background purge each node runs.

use std::time::Duration;

use anyhow::bail;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHousekeeping {
    interval_seconds: u64,
    ended_sessions_kept_seconds: u64,
}

/// The background purge each node runs.
#[derive(Clone, Debug)]
pub struct HousekeepingSettings {
    pub interval: Duration,
    /// How long an ended session stays, so the reuse of one of its retired
    /// refresh tokens is still recognised.
    pub ended_sessions_kept: Duration,
}

pub(super) fn validate_housekeeping(raw: RawHousekeeping) -> anyhow::Result<HousekeepingSettings> {
    if !(1..=3600).contains(&raw.interval_seconds) {
        bail!("housekeeping.interval_seconds: {} is outside 1..=3600", raw.interval_seconds);
    }
    // A year at most, so that the cutoff in milliseconds cannot overflow.
    const YEAR: u64 = 365 * 86_400;
    if raw.ended_sessions_kept_seconds > YEAR {
        bail!(
            "housekeeping.ended_sessions_kept_seconds: {} is outside 0..={YEAR}",
            raw.ended_sessions_kept_seconds
        );
    }
    Ok(HousekeepingSettings {
        interval: Duration::from_secs(raw.interval_seconds),
        ended_sessions_kept: Duration::from_secs(raw.ended_sessions_kept_seconds),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;
    use crate::config::tests::{env, load_error};

    #[test]
    fn housekeeping_settings_are_read_and_checked_by_name() {
        let settings = Settings::load_from(
            None,
            env(&[
                ("PASSGATE__HOUSEKEEPING__INTERVAL_SECONDS", "5"),
                ("PASSGATE__HOUSEKEEPING__ENDED_SESSIONS_KEPT_SECONDS", "0"),
            ]),
        )
        .unwrap();
        assert_eq!(settings.housekeeping.interval, Duration::from_secs(5));
        assert_eq!(settings.housekeeping.ended_sessions_kept, Duration::ZERO);
        for (key, value) in [
            ("PASSGATE__HOUSEKEEPING__INTERVAL_SECONDS", "0"),
            ("PASSGATE__HOUSEKEEPING__INTERVAL_SECONDS", "3601"),
            ("PASSGATE__HOUSEKEEPING__ENDED_SESSIONS_KEPT_SECONDS", "31536001"),
        ] {
            let named = key.trim_start_matches("PASSGATE__").replacen("__", ".", 1).to_lowercase();
            assert!(load_error(&[(key, value)]).contains(&named), "{key}={value}");
        }
    }
}
