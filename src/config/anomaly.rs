//! `[anomaly]`: failures counted per minute by network, device, account
//! and event kind, and the signed webhook that fires when one key's
//! failures in a minute reach a threshold.

use std::fmt;
use std::time::Duration;

use anyhow::bail;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAnomaly {
    flush_interval_seconds: u64,
    network_failures_per_minute: u64,
    account_failures_per_minute: u64,
    device_failures_per_minute: u64,
    kind_failures_per_minute: u64,
    quiet_minutes: u64,
    failures_kept_hours: u64,
    alerts_kept_days: u64,
    webhook_url: String,
    webhook_secret: SecretString,
    webhook_attempts: u32,
    webhook_backoff_milliseconds: u64,
    webhook_timeout_seconds: u64,
}

impl fmt::Debug for RawAnomaly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawAnomaly").finish_non_exhaustive()
    }
}

/// Where alerts go, and how they are signed and retried.
#[derive(Clone)]
pub struct WebhookSettings {
    /// May carry a token of the receiver's in its path or query: it is
    /// never logged, shown or recorded.
    pub url: url::Url,
    /// The HMAC-SHA256 key of `Passgate-Signature`.
    pub secret: SecretString,
    /// Attempts per alert, the first included.
    pub attempts: u32,
    /// The wait before the second attempt; each later wait doubles.
    pub backoff: Duration,
    pub timeout: Duration,
}

impl fmt::Debug for WebhookSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookSettings")
            .field("host", &self.url.host_str())
            .field("attempts", &self.attempts)
            .field("backoff", &self.backoff)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

#[derive(Clone, Debug)]
pub struct AnomalySettings {
    /// How often each node writes the failures it counted in memory.
    pub flush_interval: Duration,
    /// Failures of one key in one minute that raise an alert, by
    /// dimension ("network", "account", "device", "kind"); None: never.
    pub network_threshold: Option<i64>,
    pub account_threshold: Option<i64>,
    pub device_threshold: Option<i64>,
    pub kind_threshold: Option<i64>,
    /// After an alert, the same key raises no other for this many minutes
    /// (one spike, one alert).
    pub quiet_minutes: i64,
    pub failures_kept: Duration,
    pub alerts_kept: Duration,
    /// None: alerts are recorded and counted, not sent.
    pub webhook: Option<WebhookSettings>,
}

impl AnomalySettings {
    /// The threshold of `dimension`, when it raises alerts.
    pub fn threshold(&self, dimension: &str) -> Option<i64> {
        match dimension {
            "network" => self.network_threshold,
            "account" => self.account_threshold,
            "device" => self.device_threshold,
            "kind" => self.kind_threshold,
            _ => None,
        }
    }
}

/// A secret shorter than this is refused: it is an HMAC key.
const MIN_SECRET_LEN: usize = 16;

fn threshold(name: &str, value: u64) -> anyhow::Result<Option<i64>> {
    if value > 1_000_000_000 {
        bail!("anomaly.{name}: {value} is outside 0..=1000000000");
    }
    Ok((value > 0).then_some(value as i64))
}

pub(super) fn validate_anomaly(raw: RawAnomaly) -> anyhow::Result<AnomalySettings> {
    if !(1..=60).contains(&raw.flush_interval_seconds) {
        bail!("anomaly.flush_interval_seconds: {} is outside 1..=60", raw.flush_interval_seconds);
    }
    if !(1..=1440).contains(&raw.quiet_minutes) {
        bail!("anomaly.quiet_minutes: {} is outside 1..=1440", raw.quiet_minutes);
    }
    // The admin view reads up to a day back, and the risk rules 15 minutes.
    if !(24..=24 * 90).contains(&raw.failures_kept_hours) {
        bail!("anomaly.failures_kept_hours: {} is outside 24..=2160", raw.failures_kept_hours);
    }
    if !(1..=3650).contains(&raw.alerts_kept_days) {
        bail!("anomaly.alerts_kept_days: {} is outside 1..=3650", raw.alerts_kept_days);
    }
    let webhook = validate_webhook(&raw)?;
    Ok(AnomalySettings {
        flush_interval: Duration::from_secs(raw.flush_interval_seconds),
        network_threshold: threshold(
            "network_failures_per_minute",
            raw.network_failures_per_minute,
        )?,
        account_threshold: threshold(
            "account_failures_per_minute",
            raw.account_failures_per_minute,
        )?,
        device_threshold: threshold("device_failures_per_minute", raw.device_failures_per_minute)?,
        kind_threshold: threshold("kind_failures_per_minute", raw.kind_failures_per_minute)?,
        quiet_minutes: raw.quiet_minutes as i64,
        failures_kept: Duration::from_secs(raw.failures_kept_hours * 3600),
        alerts_kept: Duration::from_secs(raw.alerts_kept_days * 86_400),
        webhook,
    })
}

fn validate_webhook(raw: &RawAnomaly) -> anyhow::Result<Option<WebhookSettings>> {
    let secret = raw.webhook_secret.expose_secret();
    let text = raw.webhook_url.trim();
    if text.is_empty() {
        if !secret.is_empty() {
            bail!("anomaly.webhook_secret is set but anomaly.webhook_url is empty");
        }
        return Ok(None);
    }
    // The URL may hold the receiver's token: messages name the key only.
    let Ok(url) = url::Url::parse(text) else {
        bail!("anomaly.webhook_url: not an absolute URL");
    };
    let loopback = match url.host() {
        Some(url::Host::Domain(name)) => name == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => bail!("anomaly.webhook_url: has no host"),
    };
    match url.scheme() {
        "https" => {}
        "http" if loopback => {}
        "http" => bail!(
            "anomaly.webhook_url: must be https (plain http only to a loopback address): \
             the alerts name networks and accounts"
        ),
        _ => bail!("anomaly.webhook_url: must be an https URL"),
    }
    if secret.chars().count() < MIN_SECRET_LEN {
        bail!(
            "anomaly.webhook_secret: at least {MIN_SECRET_LEN} characters are needed with \
             anomaly.webhook_url (e.g. `openssl rand -hex 32`)"
        );
    }
    if !(1..=10).contains(&raw.webhook_attempts) {
        bail!("anomaly.webhook_attempts: {} is outside 1..=10", raw.webhook_attempts);
    }
    if !(1..=600_000).contains(&raw.webhook_backoff_milliseconds) {
        bail!(
            "anomaly.webhook_backoff_milliseconds: {} is outside 1..=600000",
            raw.webhook_backoff_milliseconds
        );
    }
    if !(1..=60).contains(&raw.webhook_timeout_seconds) {
        bail!("anomaly.webhook_timeout_seconds: {} is outside 1..=60", raw.webhook_timeout_seconds);
    }
    Ok(Some(WebhookSettings {
        url,
        secret: raw.webhook_secret.clone(),
        attempts: raw.webhook_attempts,
        backoff: Duration::from_millis(raw.webhook_backoff_milliseconds),
        timeout: Duration::from_secs(raw.webhook_timeout_seconds),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;
    use crate::config::tests::{env, load_error};

    const URL: &str = "PASSGATE__ANOMALY__WEBHOOK_URL";
    const SECRET: &str = "PASSGATE__ANOMALY__WEBHOOK_SECRET";

    #[test]
    fn defaults_count_and_alert_without_a_webhook() {
        let settings = Settings::load_from(None, env(&[])).unwrap();
        let anomaly = &settings.anomaly;
        assert_eq!(anomaly.flush_interval, Duration::from_secs(5));
        assert!(anomaly.threshold("network").is_some());
        assert!(anomaly.threshold("elsewhere").is_none());
        assert!(anomaly.webhook.is_none());
    }

    #[test]
    fn a_webhook_is_read_and_its_secret_never_shown() {
        let settings = Settings::load_from(
            None,
            env(&[
                (URL, "https://hooks.example/in/T0KEN-in-path"),
                (SECRET, "whsec-0123456789abcdef"),
                ("PASSGATE__ANOMALY__NETWORK_FAILURES_PER_MINUTE", "0"),
                ("PASSGATE__ANOMALY__WEBHOOK_ATTEMPTS", "3"),
            ]),
        )
        .unwrap();
        let webhook = settings.anomaly.webhook.as_ref().unwrap();
        assert_eq!(webhook.attempts, 3);
        assert_eq!(webhook.secret.expose_secret(), "whsec-0123456789abcdef");
        assert!(settings.anomaly.threshold("network").is_none(), "0 turns it off");
        let shown = format!("{settings:?}");
        assert!(!shown.contains("whsec"), "{shown}");
        assert!(!shown.contains("T0KEN"), "{shown}");
    }

    #[test]
    fn bad_anomaly_settings_are_refused_by_name_without_their_values() {
        let secret = (SECRET, "whsec-0123456789abcdef");
        for (pairs, named) in [
            (vec![("PASSGATE__ANOMALY__FLUSH_INTERVAL_SECONDS", "0")], "flush_interval_seconds"),
            (vec![("PASSGATE__ANOMALY__QUIET_MINUTES", "0")], "quiet_minutes"),
            (vec![("PASSGATE__ANOMALY__FAILURES_KEPT_HOURS", "1")], "failures_kept_hours"),
            (vec![(SECRET, "whsec-0123456789abcdef")], "webhook_url is empty"),
            (vec![(URL, "http://hooks.example/T0KEN"), secret], "https"),
            (vec![(URL, "ftp://hooks.example/T0KEN"), secret], "https"),
            (vec![(URL, "not a url T0KEN"), secret], "webhook_url"),
            (vec![(URL, "https://hooks.example/T0KEN"), (SECRET, "short")], "webhook_secret"),
            (vec![(URL, "https://hooks.example/T0KEN")], "webhook_secret"),
            (
                vec![
                    (URL, "https://hooks.example/T0KEN"),
                    secret,
                    ("PASSGATE__ANOMALY__WEBHOOK_ATTEMPTS", "11"),
                ],
                "webhook_attempts",
            ),
        ] {
            let error = load_error(&pairs);
            assert!(error.contains(named), "{pairs:?}: {error}");
            assert!(!error.contains("T0KEN") && !error.contains("whsec"), "{error}");
        }
        // Plain http to this machine is for a receiver beside it (tests).
        let local = Settings::load_from(None, env(&[(URL, "http://127.0.0.1:9/hook"), secret]));
        assert!(local.unwrap().anomaly.webhook.is_some());
    }
}
