//! Anomaly aggregation (issue 20 item 4): every failed audit event is
//! counted per minute by the client's network (IPv4 /24, IPv6 /48), the
//! account, the device and the event kind. Each node counts in memory
//! (`FailureTally`, fed by `Audit`) and writes its counts every
//! `anomaly.flush_interval_seconds`, one row update per key, so that a
//! password flood costs a handful of writes, not one per attempt.
//!
//! After each write the node looks for keys whose failures in a minute,
//! all nodes together, reached their threshold. The first node to insert
//! the alert's row (unique per rule, dimension, key and minute, and none
//! within `quiet_minutes` of an earlier one) sends it, in the background,
//! to the webhook: a JSON POST signed Stripe-style,
//! `Passgate-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret,
//! "<t>.<body>")>`, retried with doubling waits on anything but a 2xx,
//! every attempt in the delivery log.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use hmac::{Hmac, Mac};
use ipnet::{Ipv4Net, Ipv6Net};
use secrecy::ExposeSecret;
use serde::Serialize;
use sha2::Sha256;
use tokio::sync::Notify;
use tokio::task::JoinSet;

use super::admin::AdminCaller;
use crate::clock::{Clock, Millis, rfc3339};
use crate::config::{Settings, WebhookSettings};
use crate::error::{ApiError, Result};
use crate::metrics::Metrics;
use crate::store::{AlertRow, DeliveryLogRow, DeliveryRow, FailureCount, KeyTotal, Store};

/// The client's network: "203.0.113.0/24" or "2001:db8:1::/48".
pub const NETWORK: &str = "network";
/// The account's user id, when the failed event names one.
pub const ACCOUNT: &str = "account";
/// The device id, when the failed event names one.
pub const DEVICE: &str = "device";
/// The audit event's name: every failure counts here once.
pub const KIND: &str = "kind";
pub const DIMENSIONS: [&str; 4] = [NETWORK, ACCOUNT, DEVICE, KIND];

/// The one rule so far: one key's failures in one minute.
pub const RULE: &str = "failures_per_minute";

const MINUTE_MS: i64 = 60_000;
/// Keys counted since the last write past which the flush comes early.
const SOON_KEYS: usize = 20_000;
/// Keys past which new ones are dropped (counted, and logged at the next
/// flush) rather than let a flood from many addresses grow the memory.
const MAX_KEYS: usize = 200_000;
/// The longest wait between two attempts of a webhook.
const MAX_BACKOFF: Duration = Duration::from_secs(600);
/// Keys shown per dimension in the admin view.
const TOP_KEYS: i64 = 10;

/// The minute (Unix time in whole minutes) that `at` falls in.
pub fn minute_of(at: Millis) -> i64 {
    at.div_euclid(MINUTE_MS)
}

/// The network a client address is counted under: its /24 (IPv4) or /48
/// (IPv6; an IPv4-mapped address counts as IPv4). None for anything that
/// is not an address.
pub fn network_of(ip: &str) -> Option<String> {
    match ip.trim().parse::<IpAddr>().ok()?.to_canonical() {
        IpAddr::V4(v4) => Some(Ipv4Net::new(v4, 24).ok()?.trunc().to_string()),
        IpAddr::V6(v6) => Some(Ipv6Net::new(v6, 48).ok()?.trunc().to_string()),
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

type TallyKey = (i64, &'static str, String, String);

/// What one flush wrote of one dimension: its first minute, and each key
/// with its minute.
type Written<'a> = (i64, HashSet<(&'a str, i64)>);

/// Failures counted on this node since its last write, by minute,
/// dimension, key and kind.
#[derive(Default)]
pub struct FailureTally {
    counts: Mutex<HashMap<TallyKey, i64>>,
    /// Wakes the flush loop early when many keys are waiting.
    soon: Notify,
    dropped: AtomicU64,
}

impl FailureTally {
    /// Counts one failed `kind` event at `at`, under each dimension it
    /// names.
    pub fn count(
        &self,
        at: Millis,
        kind: &str,
        ip: Option<&str>,
        user_id: Option<&str>,
        device_id: Option<&str>,
    ) {
        let minute = minute_of(at);
        let mut keys = vec![(KIND, kind.to_owned())];
        if let Some(network) = ip.and_then(network_of) {
            keys.push((NETWORK, network));
        }
        if let Some(user_id) = user_id {
            keys.push((ACCOUNT, user_id.to_owned()));
        }
        if let Some(device_id) = device_id {
            keys.push((DEVICE, device_id.to_owned()));
        }
        let mut counts = lock(&self.counts);
        for (dimension, key) in keys {
            let slot = (minute, dimension, key, kind.to_owned());
            if let Some(count) = counts.get_mut(&slot) {
                *count += 1;
            } else if counts.len() < MAX_KEYS {
                counts.insert(slot, 1);
            } else {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
        if counts.len() >= SOON_KEYS {
            self.soon.notify_one();
        }
    }

    fn drain(&self) -> Vec<FailureCount> {
        let counts = std::mem::take(&mut *lock(&self.counts));
        let mut drained: Vec<FailureCount> = counts
            .into_iter()
            .map(|((minute, dimension, key, kind), count)| FailureCount {
                minute,
                dimension: dimension.to_owned(),
                key,
                kind,
                count,
            })
            .collect();
        // One order for every node's writes, so that two nodes' flushes
        // take the same rows' locks in the same order (no deadlock).
        drained.sort_by(|a, b| {
            (a.minute, &a.dimension, &a.key, &a.kind).cmp(&(
                b.minute,
                &b.dimension,
                &b.key,
                &b.kind,
            ))
        });
        drained
    }

    /// Puts back counts whose write failed, for the next flush.
    fn restore(&self, failed: Vec<FailureCount>) {
        let mut counts = lock(&self.counts);
        for count in failed {
            let Some(dimension) = DIMENSIONS.into_iter().find(|d| *d == count.dimension) else {
                continue;
            };
            let slot = (count.minute, dimension, count.key, count.kind);
            if let Some(existing) = counts.get_mut(&slot) {
                *existing += count.count;
            } else if counts.len() < MAX_KEYS {
                counts.insert(slot, count.count);
            } else {
                self.dropped.fetch_add(count.count.unsigned_abs(), Ordering::Relaxed);
            }
        }
    }
}

/// A webhook's signature header value for `body` sent at `unix_seconds`.
pub fn signature(secret: &[u8], unix_seconds: i64, body: &[u8]) -> String {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return String::new();
    };
    mac.update(format!("{unix_seconds}.").as_bytes());
    mac.update(body);
    let mut hex = String::with_capacity(64);
    for byte in mac.finalize().into_bytes() {
        hex.push_str(&format!("{byte:02x}"));
    }
    format!("t={unix_seconds},v1={hex}")
}

/// What a receiver does with `Passgate-Signature` (this is the reference):
/// take `t` and every `v1`, refuse a `t` more than `tolerance_seconds`
/// from its own clock (a replay), compute HMAC-SHA256 over "<t>.<raw
/// body>" with the shared secret and compare it with a `v1` in constant
/// time.
pub fn verify_signature(
    secret: &[u8],
    header: &str,
    body: &[u8],
    now_seconds: i64,
    tolerance_seconds: i64,
) -> bool {
    let mut sent_at = None;
    let mut candidates = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", value)) => sent_at = value.parse::<i64>().ok(),
            Some(("v1", value)) => candidates.push(value.to_owned()),
            _ => {}
        }
    }
    let Some(sent_at) = sent_at else { return false };
    if (now_seconds - sent_at).abs() > tolerance_seconds {
        return false;
    }
    // verify_slice compares in constant time.
    candidates.iter().filter_map(|candidate| decode_hex(candidate)).any(|sent| {
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else { return false };
        mac.update(format!("{sent_at}.").as_bytes());
        mac.update(body);
        mac.verify_slice(&sent).is_ok()
    })
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok()).collect()
}

/// The webhook's JSON body.
#[derive(Debug, Serialize)]
struct AlertPayload<'a> {
    /// The alert's id, also sent as `Passgate-Delivery` on each attempt:
    /// a receiver that saw it already ignores a retry.
    alert: &'a str,
    rule: &'a str,
    dimension: &'a str,
    key: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    kind: Option<&'a str>,
    count: i64,
    threshold: i64,
    /// The minute that crossed, RFC 3339.
    window_start: String,
}

struct Webhook {
    settings: WebhookSettings,
    client: reqwest::Client,
}

/// Per-minute failure counts, their alerts and the admin view of both.
#[derive(Clone)]
pub struct Anomalies {
    inner: Arc<Inner>,
}

struct Inner {
    settings: Arc<Settings>,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    metrics: Metrics,
    tally: Arc<FailureTally>,
    webhook: Option<Webhook>,
    /// One flush at a time on this node.
    flushing: tokio::sync::Mutex<()>,
    /// Keys and minutes this node has already raised (or seen raised), so
    /// that a flood's every flush does not try the insert again.
    raised: Mutex<HashSet<(String, String, i64)>>,
    /// Webhook deliveries under way.
    sending: Mutex<JoinSet<()>>,
    /// Whether the worst-rate gauges show something: when not and nothing
    /// was written, the flush reads nothing either.
    worst_shown: AtomicBool,
}

impl Anomalies {
    pub fn new(
        settings: Arc<Settings>,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        metrics: Metrics,
        tally: Arc<FailureTally>,
    ) -> anyhow::Result<Anomalies> {
        let webhook = match &settings.anomaly.webhook {
            Some(hook) => Some(Webhook {
                settings: hook.clone(),
                client: reqwest::Client::builder()
                    .timeout(hook.timeout)
                    // A redirect would carry the signed body elsewhere.
                    .redirect(reqwest::redirect::Policy::none())
                    .user_agent(concat!("passgate/", env!("CARGO_PKG_VERSION")))
                    .build()?,
            }),
            None => None,
        };
        Ok(Anomalies {
            inner: Arc::new(Inner {
                settings,
                store,
                clock,
                metrics,
                tally,
                webhook,
                flushing: tokio::sync::Mutex::new(()),
                raised: Mutex::new(HashSet::new()),
                sending: Mutex::new(JoinSet::new()),
                worst_shown: AtomicBool::new(false),
            }),
        })
    }

    /// Resolves when many keys wait to be written, before the next tick.
    pub async fn flush_wanted(&self) {
        self.inner.tally.soon.notified().await;
    }

    /// Writes what this node counted, raises the alerts it crossed and
    /// updates the gauges. Counts whose write failed are kept for the next
    /// flush.
    pub async fn flush_now(&self) -> anyhow::Result<()> {
        let inner = &self.inner;
        let _one = inner.flushing.lock().await;
        let dropped = inner.tally.dropped.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            tracing::warn!(dropped, "failure counts dropped: too many keys between two flushes");
        }
        let counts = inner.tally.drain();
        if counts.is_empty() {
            if inner.worst_shown.load(Ordering::Relaxed) {
                self.update_worst().await;
            }
            return Ok(());
        }
        if let Err(error) = inner.store.add_failures(&counts).await {
            inner.tally.restore(counts);
            return Err(error.into());
        }
        for count in counts.iter().filter(|c| c.dimension == KIND) {
            inner.metrics.failures_counted(&count.kind, count.count);
        }
        let raised = self.raise_alerts(&counts).await;
        self.update_worst().await;
        raised
    }

    /// Waits until every webhook delivery started so far has finished
    /// (delivered, or given up after its last attempt).
    pub async fn deliveries_settled(&self) {
        loop {
            let mut sending = std::mem::take(&mut *lock(&self.inner.sending));
            if sending.is_empty() {
                return;
            }
            while sending.join_next().await.is_some() {}
        }
    }

    async fn raise_alerts(&self, counts: &[FailureCount]) -> anyhow::Result<()> {
        let anomaly = &self.inner.settings.anomaly;
        // Only what this flush wrote can have crossed just now.
        let mut written: HashMap<&str, Written<'_>> = HashMap::new();
        for count in counts {
            if anomaly.threshold(&count.dimension).is_none() {
                continue;
            }
            let (since, keys) =
                written.entry(count.dimension.as_str()).or_insert((count.minute, HashSet::new()));
            *since = (*since).min(count.minute);
            keys.insert((count.key.as_str(), count.minute));
        }
        for (dimension, (since, keys)) in written {
            let Some(threshold) = anomaly.threshold(dimension) else { continue };
            let over = self.inner.store.keys_at_or_over(dimension, since, threshold).await?;
            for crossed in over {
                if !keys.contains(&(crossed.key.as_str(), crossed.minute))
                    || !self.first_sight(dimension, &crossed)
                {
                    continue;
                }
                let noted = (dimension.to_owned(), crossed.key.clone(), crossed.minute);
                if let Err(error) = self.raise(dimension, crossed, threshold).await {
                    // Not raised after all: the next write of this key tries again.
                    lock(&self.inner.raised).remove(&noted);
                    return Err(error);
                }
            }
        }
        Ok(())
    }

    /// Notes a crossing; false when this node had noted it already.
    fn first_sight(&self, dimension: &str, crossed: &KeyTotal) -> bool {
        let mut raised = lock(&self.inner.raised);
        if raised.len() > 10_000 {
            let keep_from = crossed.minute - self.inner.settings.anomaly.quiet_minutes;
            raised.retain(|(_, _, minute)| *minute >= keep_from);
        }
        raised.insert((dimension.to_owned(), crossed.key.clone(), crossed.minute))
    }

    async fn raise(
        &self,
        dimension: &str,
        crossed: KeyTotal,
        threshold: i64,
    ) -> anyhow::Result<()> {
        let inner = &self.inner;
        let kind = match dimension {
            KIND => Some(crossed.key.clone()),
            _ => inner.store.top_kind(dimension, &crossed.key, crossed.minute).await?,
        };
        let alert = AlertRow {
            alert_id: uuid::Uuid::now_v7().to_string(),
            rule: RULE.to_owned(),
            dimension: dimension.to_owned(),
            key: crossed.key,
            window_start: crossed.minute,
            kind,
            count: crossed.total,
            threshold,
            created_at: inner.clock.now_ms(),
        };
        let quiet_from = alert.window_start - (inner.settings.anomaly.quiet_minutes - 1);
        if !inner.store.insert_alert(&alert, quiet_from).await? {
            // Another node raised it, or the same spike already had one.
            return Ok(());
        }
        inner.metrics.anomaly_alert(dimension);
        tracing::warn!(
            alert_id = %alert.alert_id,
            dimension,
            key = %alert.key,
            kind = alert.kind.as_deref().unwrap_or(""),
            count = alert.count,
            threshold,
            window_start = %rfc3339(alert.window_start * MINUTE_MS),
            "failure spike: anomaly alert raised"
        );
        if inner.webhook.is_some() {
            let delivering = deliver(inner.clone(), alert);
            let mut sending = lock(&inner.sending);
            while sending.try_join_next().is_some() {}
            sending.spawn(delivering);
        }
        Ok(())
    }

    async fn update_worst(&self) {
        let inner = &self.inner;
        let since = minute_of(inner.clock.now_ms()) - 1;
        match inner.store.worst_minutes(since).await {
            Ok(worst) => {
                let mut shown = false;
                for dimension in DIMENSIONS {
                    let value = worst.iter().find(|(d, _)| d == dimension).map_or(0, |(_, n)| *n);
                    shown |= value > 0;
                    inner.metrics.failure_rate_worst(dimension, value);
                }
                inner.worst_shown.store(shown, Ordering::Relaxed);
            }
            Err(error) => {
                tracing::debug!(error.cause_chain = ?error, "worst failure rates not read");
            }
        }
    }

    /// The admin view: the keys of each dimension with most failures in
    /// the last `minutes` (this one included), each with its failures per
    /// minute.
    pub async fn overview(&self, _admin: &AdminCaller, minutes: i64) -> Result<AnomalyView> {
        if !(1..=1440).contains(&minutes) {
            return Err(ApiError::ValidationFailed(format!(
                "minutes: {minutes} is outside 1 to 1440"
            )));
        }
        // What this node counted in the last few seconds belongs in it.
        if let Err(error) = self.flush_now().await {
            tracing::warn!(error.cause_chain = ?error, "failure counts not written");
        }
        let inner = &self.inner;
        let since = minute_of(inner.clock.now_ms()) - minutes + 1;
        let mut top = Vec::with_capacity(DIMENSIONS.len());
        for dimension in DIMENSIONS {
            let mut keys = Vec::new();
            for total in inner.store.top_failures(dimension, since, TOP_KEYS).await? {
                let series = inner
                    .store
                    .failure_series(dimension, &total.key, since)
                    .await?
                    .into_iter()
                    .map(|m| MinuteCount { minute: rfc3339(m.minute * MINUTE_MS), count: m.total })
                    .collect();
                keys.push(KeyFailures { key: total.key, total: total.total, series });
            }
            top.push(keys);
        }
        let anomaly = &inner.settings.anomaly;
        let mut top = top.into_iter();
        let mut next = || top.next().unwrap_or_default();
        Ok(AnomalyView {
            minutes,
            since: rfc3339(since * MINUTE_MS),
            thresholds: Thresholds {
                network: anomaly.network_threshold,
                account: anomaly.account_threshold,
                device: anomaly.device_threshold,
                kind: anomaly.kind_threshold,
            },
            networks: next(),
            accounts: next(),
            devices: next(),
            kinds: next(),
        })
    }

    /// The webhook's delivery log, newest first.
    pub async fn deliveries(&self, _admin: &AdminCaller, limit: i64) -> Result<DeliveryLog> {
        if !(1..=500).contains(&limit) {
            return Err(ApiError::ValidationFailed(format!("limit: {limit} is outside 1 to 500")));
        }
        let rows = self.inner.store.deliveries(limit).await?;
        Ok(DeliveryLog {
            webhook: self.inner.webhook.is_some(),
            deliveries: rows.into_iter().map(Delivery::from).collect(),
        })
    }
}

/// The wait after failed attempt `attempt` (1-based): `base`, doubling.
fn backoff(base: Duration, attempt: u32) -> Duration {
    base.saturating_mul(1 << attempt.saturating_sub(1).min(20)).min(MAX_BACKOFF)
}

/// Why an attempt got no status, in words that carry no URL.
fn error_class(error: &reqwest::Error) -> &'static str {
    if error.is_timeout() {
        "timeout"
    } else if error.is_connect() {
        "connect"
    } else if error.is_body() || error.is_request() {
        "request"
    } else {
        "other"
    }
}

/// Sends `alert` until a 2xx answers or the attempts run out, logging each
/// attempt.
async fn deliver(inner: Arc<Inner>, alert: AlertRow) {
    let Some(hook) = &inner.webhook else { return };
    let payload = AlertPayload {
        alert: &alert.alert_id,
        rule: &alert.rule,
        dimension: &alert.dimension,
        key: &alert.key,
        kind: alert.kind.as_deref(),
        count: alert.count,
        threshold: alert.threshold,
        window_start: rfc3339(alert.window_start * MINUTE_MS),
    };
    let Ok(body) = serde_json::to_vec(&payload) else { return };
    let attempts = hook.settings.attempts;
    for attempt in 1..=attempts {
        // Signed afresh each time: a receiver refuses old timestamps.
        let signed = signature(
            hook.settings.secret.expose_secret().as_bytes(),
            inner.clock.now_secs(),
            &body,
        );
        let sent = hook
            .client
            .post(hook.settings.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("Passgate-Signature", signed)
            .header("Passgate-Delivery", alert.alert_id.as_str())
            .header("Passgate-Attempt", attempt.to_string())
            .body(body.clone())
            .send()
            .await;
        let (status_code, error) = match &sent {
            Ok(response) => (Some(i32::from(response.status().as_u16())), None),
            Err(error) => (None, Some(error_class(error).to_owned())),
        };
        let delivered = sent.is_ok_and(|response| response.status().is_success());
        let outcome = match (delivered, status_code) {
            (true, _) => "delivered",
            (false, Some(_)) => "refused",
            (false, None) => "error",
        };
        inner.metrics.webhook_attempt(outcome);
        let row = DeliveryRow {
            delivery_id: uuid::Uuid::now_v7().to_string(),
            alert_id: alert.alert_id.clone(),
            attempt: i32::try_from(attempt).unwrap_or(i32::MAX),
            status_code,
            error,
            at: inner.clock.now_ms(),
        };
        if let Err(error) = inner.store.record_delivery(&row).await {
            tracing::warn!(error.cause_chain = ?error, "webhook delivery not logged");
        }
        if delivered {
            tracing::info!(alert_id = %alert.alert_id, attempt, "anomaly webhook delivered");
            return;
        }
        tracing::warn!(
            alert_id = %alert.alert_id,
            attempt,
            attempts,
            status = status_code.unwrap_or(0),
            error = row.error.as_deref().unwrap_or(""),
            "anomaly webhook attempt failed"
        );
        if attempt < attempts {
            tokio::time::sleep(backoff(hook.settings.backoff, attempt)).await;
        }
    }
    inner.metrics.webhook_undelivered();
    tracing::error!(alert_id = %alert.alert_id, attempts, "anomaly webhook given up");
}

#[derive(Debug, Default, Serialize, utoipa::ToSchema)]
pub struct MinuteCount {
    /// The minute's start, RFC 3339.
    pub minute: String,
    pub count: i64,
}

#[derive(Debug, Default, Serialize, utoipa::ToSchema)]
pub struct KeyFailures {
    /// A network ("203.0.113.0/24", "2001:db8:1::/48"), a user id, a
    /// device id or an audit event name.
    pub key: String,
    pub total: i64,
    /// Failures per minute, oldest first; minutes without any left out.
    pub series: Vec<MinuteCount>,
}

/// Failures of one key in one minute that raise an alert; null: none.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Thresholds {
    pub network: Option<i64>,
    pub account: Option<i64>,
    pub device: Option<i64>,
    pub kind: Option<i64>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AnomalyView {
    pub minutes: i64,
    /// The first minute counted, RFC 3339.
    pub since: String,
    pub thresholds: Thresholds,
    /// Most failures first, at most 10 in each list.
    pub networks: Vec<KeyFailures>,
    pub accounts: Vec<KeyFailures>,
    pub devices: Vec<KeyFailures>,
    pub kinds: Vec<KeyFailures>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Delivery {
    pub delivery_id: String,
    /// Also the `Passgate-Delivery` header and the body's `alert`.
    pub alert_id: String,
    pub attempt: i32,
    /// The receiver's answer; null when none came.
    pub status_code: Option<i32>,
    /// Why none came: timeout, connect, request or other.
    pub error: Option<String>,
    pub at: String,
    pub dimension: String,
    pub key: String,
    pub window_start: String,
    pub count: i64,
}

impl From<DeliveryLogRow> for Delivery {
    fn from(row: DeliveryLogRow) -> Self {
        Delivery {
            delivery_id: row.delivery.delivery_id,
            alert_id: row.delivery.alert_id,
            attempt: row.delivery.attempt,
            status_code: row.delivery.status_code,
            error: row.delivery.error,
            at: rfc3339(row.delivery.at),
            dimension: row.dimension,
            key: row.key,
            window_start: rfc3339(row.window_start * MINUTE_MS),
            count: row.count,
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DeliveryLog {
    /// Whether `anomaly.webhook_url` is set on the node that answered.
    pub webhook: bool,
    pub deliveries: Vec<Delivery>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_count_under_their_24_or_48() {
        assert_eq!(network_of("203.0.113.77").as_deref(), Some("203.0.113.0/24"));
        assert_eq!(network_of("::ffff:203.0.113.77").as_deref(), Some("203.0.113.0/24"));
        assert_eq!(network_of("2001:db8:1:2::5").as_deref(), Some("2001:db8:1::/48"));
        assert_eq!(network_of("2001:db8::1").as_deref(), Some("2001:db8::/48"));
        assert_eq!(network_of("unknown"), None);
        assert_eq!(network_of("10.0.0.1:443"), None);
    }

    #[test]
    fn a_tally_counts_each_dimension_once_per_failure_and_drains_empty() {
        let tally = FailureTally::default();
        let at = 61 * MINUTE_MS + 5;
        for _ in 0..3 {
            tally.count(at, "login", Some("198.51.100.9"), Some("u-1"), None);
        }
        tally.count(at, "device_bound", None, Some("u-1"), Some("d-1"));
        let drained = tally.drain();
        let get = |dimension: &str, key: &str, kind: &str| {
            drained
                .iter()
                .find(|c| c.dimension == dimension && c.key == key && c.kind == kind)
                .map(|c| (c.minute, c.count))
        };
        assert_eq!(get(NETWORK, "198.51.100.0/24", "login"), Some((61, 3)));
        assert_eq!(get(ACCOUNT, "u-1", "login"), Some((61, 3)));
        assert_eq!(get(ACCOUNT, "u-1", "device_bound"), Some((61, 1)));
        assert_eq!(get(DEVICE, "d-1", "device_bound"), Some((61, 1)));
        assert_eq!(get(KIND, "login", "login"), Some((61, 3)));
        assert_eq!(drained.len(), 6);
        assert!(tally.drain().is_empty());
        tally.restore(drained);
        assert_eq!(tally.drain().len(), 6, "a failed write keeps its counts");
    }

    #[test]
    fn signatures_verify_only_for_the_same_secret_body_and_a_fresh_time() {
        let secret = b"whsec-0123456789abcdef";
        let body = br#"{"alert":"a","count":12}"#;
        let header = signature(secret, 1_700_000_000, body);
        assert!(header.starts_with("t=1700000000,v1="), "{header}");
        assert!(verify_signature(secret, &header, body, 1_700_000_100, 300));
        assert!(!verify_signature(
            secret,
            &header,
            br#"{"alert":"a","count":13}"#,
            1_700_000_100,
            300
        ));
        assert!(!verify_signature(b"another-secret-of-16", &header, body, 1_700_000_100, 300));
        assert!(!verify_signature(secret, &header, body, 1_700_000_400, 300), "too old");
        let retimed = header.replace("t=1700000000", "t=1700000350");
        assert!(!verify_signature(secret, &retimed, body, 1_700_000_400, 300), "t is signed");
        assert!(!verify_signature(secret, "v1=00", body, 1_700_000_000, 300));
    }

    #[test]
    fn waits_double_from_the_base_up_to_a_cap() {
        let base = Duration::from_millis(500);
        assert_eq!(backoff(base, 1), base);
        assert_eq!(backoff(base, 2), Duration::from_secs(1));
        assert_eq!(backoff(base, 4), Duration::from_secs(4));
        assert_eq!(backoff(Duration::from_secs(600), 10), MAX_BACKOFF);
    }
}
