//! Prometheus metrics (text format at `GET /metrics`). Each app has its own
//! registry, so several nodes in one test process do not mix their counts.
//! Labels are bounded: routes are patterns, reasons are contract codes.
//! The process's own CPU, memory, file descriptors and start time come as
//! the standard `process_*` series (prometheus's process collector).

use std::time::Duration;

use prometheus::{
    Encoder, Gauge, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};

use crate::error::ApiError;

#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    http_requests: IntCounterVec,
    http_duration: HistogramVec,
    ceremonies: IntCounterVec,
    clone_warnings: IntCounter,
    pool_connections: IntGaugeVec,
    rate_limited: IntCounterVec,
    lockouts: IntCounter,
    lockout_hits: IntCounter,
    hash_queue: IntGauge,
    mail_failures: IntCounterVec,
    fallback_logins: IntCounterVec,
    refresh_reuse: IntCounter,
    signing_key_age: Gauge,
    anomaly: AnomalyMetrics,
    risk_decisions: IntCounterVec,
    risk_rule_matches: IntCounterVec,
}

/// What a mail that failed was, for `passgate_mail_failures_total`.
pub const MAIL_KINDS: [&str; 3] = ["notice", "code", "enrolment"];

/// The second factor of a fallback sign-in.
#[derive(Clone, Copy, Debug)]
pub enum FallbackMethod {
    Totp,
    RecoveryCode,
    EmailCode,
}

impl FallbackMethod {
    const ALL: [FallbackMethod; 3] =
        [FallbackMethod::Totp, FallbackMethod::RecoveryCode, FallbackMethod::EmailCode];

    fn label(self) -> &'static str {
        match self {
            FallbackMethod::Totp => "totp",
            FallbackMethod::RecoveryCode => "recovery_code",
            FallbackMethod::EmailCode => "email_otp",
        }
    }
}

/// Values read when `/metrics` is scraped.
pub struct Scrape {
    pub pool_size: u32,
    pub pool_idle: usize,
    pub hash_queue: i64,
    /// How long the key that signs now has existed; None when it could not
    /// be read (the gauge keeps its last value).
    pub signing_key_age: Option<Duration>,
}

/// Where a ceremony ended up, for `passgate_ceremonies_total`.
#[derive(Clone, Copy, Debug)]
pub enum CeremonyOutcome {
    Started,
    Finished,
}

/// Latency buckets from half a millisecond up to the request deadline
/// itself, the largest finite bucket: a slow route shows how near the 503
/// it came instead of vanishing into +Inf past a fixed 2.5 s.
pub fn duration_buckets(request_timeout: Duration) -> Vec<f64> {
    const STEPS: [f64; 26] = [
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0,
        20.0, 30.0, 45.0, 60.0, 90.0, 120.0, 180.0, 300.0, 600.0, 1800.0, 3600.0,
    ];
    let limit = request_timeout.as_secs_f64();
    let mut buckets: Vec<f64> = STEPS.into_iter().filter(|step| *step < limit).collect();
    buckets.push(limit);
    buckets
}

impl Metrics {
    /// `request_timeout` tops the latency buckets; `key_rotation` (None:
    /// rotation is off) is published for the key-age alert to compare with.
    pub fn new(
        request_timeout: Duration,
        key_rotation: Option<Duration>,
    ) -> anyhow::Result<Metrics> {
        let registry = Registry::new();
        let http_requests = IntCounterVec::new(
            Opts::new("passgate_http_requests_total", "HTTP requests by route, method and status"),
            &["route", "method", "status"],
        )?;
        let http_duration = HistogramVec::new(
            HistogramOpts::new(
                "passgate_http_request_duration_seconds",
                "Time from request to response, by route and method",
            )
            .buckets(duration_buckets(request_timeout)),
            &["route", "method"],
        )?;
        let ceremonies = IntCounterVec::new(
            Opts::new(
                "passgate_ceremonies_total",
                "WebAuthn ceremonies by kind (register, login, stepup) and outcome (started, finished, failed), with the error code of a failure",
            ),
            &["kind", "outcome", "reason"],
        )?;
        let clone_warnings = IntCounter::with_opts(Opts::new(
            "passgate_clone_warnings_total",
            "Sign-ins refused because a passkey's sign counter did not move forward",
        ))?;
        let pool_connections = IntGaugeVec::new(
            Opts::new("passgate_db_pool_connections", "Database pool connections by state"),
            &["state"],
        )?;
        let rate_limited = IntCounterVec::new(
            Opts::new(
                "passgate_rate_limited_total",
                "Requests refused with 429 by what was over its limit (ip, account, hash_queue, email_resend)",
            ),
            &["scope"],
        )?;
        // Series made at 0 up front (here and below), so that the first
        // event shows in increase() and the names are on /metrics before
        // anything happens.
        for scope in ["ip", "account", "hash_queue", "email_resend"] {
            rate_limited.with_label_values(&[scope]).reset();
        }
        let lockouts = IntCounter::with_opts(Opts::new(
            "passgate_lockouts_total",
            "Accounts locked (or locked longer) after repeated failed sign-ins",
        ))?;
        let lockout_hits = IntCounter::with_opts(Opts::new(
            "passgate_lockout_refusals_total",
            "Requests refused with account_locked because of a lockout",
        ))?;
        let hash_queue = IntGauge::with_opts(Opts::new(
            "passgate_password_hash_queue_depth",
            "Password checks waiting for a hashing thread",
        ))?;
        let mail_failures = IntCounterVec::new(
            Opts::new(
                "passgate_mail_failures_total",
                "Mail that could not be sent, by kind (notice: a change notice to the owner; \
                 code: a one-time code; enrolment: an admin's device reset code)",
            ),
            &["kind"],
        )?;
        for kind in MAIL_KINDS {
            mail_failures.with_label_values(&[kind]).reset();
        }
        let fallback_logins = IntCounterVec::new(
            Opts::new(
                "passgate_fallback_logins_total",
                "Second steps of password sign-ins by method (totp, recovery_code, email_otp) and \
                 outcome (success, failure), with the error code of a failure",
            ),
            &["method", "outcome", "reason"],
        )?;
        for method in FallbackMethod::ALL {
            fallback_logins.with_label_values(&[method.label(), "success", ""]).reset();
        }
        let refresh_reuse = IntCounter::with_opts(Opts::new(
            "passgate_refresh_token_reuse_total",
            "Retired refresh tokens presented again (a stolen token, or a client that lost its \
             rotation); each ends its session",
        ))?;
        let signing_key_age = Gauge::with_opts(Opts::new(
            "passgate_signing_key_age_seconds",
            "Time since the key that signs tokens now was made",
        ))?;
        let key_rotation_seconds = Gauge::with_opts(Opts::new(
            "passgate_signing_key_rotation_seconds",
            "tokens.key_rotation_days in seconds; 0 when keys are not rotated on a schedule",
        ))?;
        key_rotation_seconds.set(key_rotation.unwrap_or_default().as_secs_f64());
        let request_timeout_seconds = Gauge::with_opts(Opts::new(
            "passgate_request_timeout_seconds",
            "server.request_timeout_seconds: past it a request is answered 503",
        ))?;
        request_timeout_seconds.set(request_timeout.as_secs_f64());
        let build_info = IntGauge::with_opts(
            Opts::new("passgate_build_info", "Build information; always 1")
                .const_label("version", env!("CARGO_PKG_VERSION")),
        )?;
        build_info.set(1);
        let risk_decisions = IntCounterVec::new(
            Opts::new(
                "passgate_risk_decisions_total",
                "Risk decisions by kind (signin, payment) and outcome (allow, step_up, hold, deny)",
            ),
            &["kind", "outcome"],
        )?;
        for kind in ["signin", "payment"] {
            for outcome in ["allow", "step_up", "hold", "deny"] {
                risk_decisions.with_label_values(&[kind, outcome]).reset();
            }
        }
        let risk_rule_matches = IntCounterVec::new(
            Opts::new(
                "passgate_risk_rule_matches_total",
                "Risk rules that matched, by rule name and mode (enforce, dry_run)",
            ),
            &["rule", "mode"],
        )?;
        registry.register(Box::new(http_requests.clone()))?;
        registry.register(Box::new(http_duration.clone()))?;
        registry.register(Box::new(ceremonies.clone()))?;
        registry.register(Box::new(clone_warnings.clone()))?;
        registry.register(Box::new(pool_connections.clone()))?;
        registry.register(Box::new(rate_limited.clone()))?;
        registry.register(Box::new(lockouts.clone()))?;
        registry.register(Box::new(lockout_hits.clone()))?;
        registry.register(Box::new(hash_queue.clone()))?;
        registry.register(Box::new(mail_failures.clone()))?;
        registry.register(Box::new(build_info))?;
        registry.register(Box::new(fallback_logins.clone()))?;
        registry.register(Box::new(refresh_reuse.clone()))?;
        registry.register(Box::new(signing_key_age.clone()))?;
        registry.register(Box::new(key_rotation_seconds))?;
        registry.register(Box::new(request_timeout_seconds))?;
        registry.register(Box::new(risk_decisions.clone()))?;
        registry.register(Box::new(risk_rule_matches.clone()))?;
        #[cfg(target_os = "linux")]
        registry.register(Box::new(prometheus::process_collector::ProcessCollector::for_self()))?;
        let anomaly = AnomalyMetrics::register(&registry)?;
        Ok(Metrics {
            registry,
            http_requests,
            http_duration,
            ceremonies,
            clone_warnings,
            pool_connections,
            rate_limited,
            lockouts,
            lockout_hits,
            hash_queue,
            mail_failures,
            fallback_logins,
            refresh_reuse,
            signing_key_age,
            anomaly,
            risk_decisions,
            risk_rule_matches,
        })
    }

    pub fn observe_request(&self, route: &str, method: &str, status: u16, seconds: f64) {
        self.http_requests.with_label_values(&[route, method, &status.to_string()]).inc();
        self.http_duration.with_label_values(&[route, method]).observe(seconds);
    }

    pub fn ceremony(&self, kind: &str, outcome: CeremonyOutcome) {
        let outcome = match outcome {
            CeremonyOutcome::Started => "started",
            CeremonyOutcome::Finished => "finished",
        };
        self.ceremonies.with_label_values(&[kind, outcome, ""]).inc();
    }

    /// Records a finish by its result: finished, or failed with its code.
    pub fn ceremony_result<T>(&self, kind: &str, result: &Result<T, ApiError>) {
        match result {
            Ok(_) => self.ceremony(kind, CeremonyOutcome::Finished),
            Err(error) => {
                self.ceremonies.with_label_values(&[kind, "failed", error.code()]).inc();
            }
        }
    }

    pub fn clone_warning(&self) {
        self.clone_warnings.inc();
    }

    pub fn rate_limited(&self, scope: &str) {
        self.rate_limited.with_label_values(&[scope]).inc();
    }

    pub fn lockout(&self) {
        self.lockouts.inc();
    }

    /// `kind` is one of `MAIL_KINDS`.
    pub fn mail_failed(&self, kind: &'static str) {
        self.mail_failures.with_label_values(&[kind]).inc();
    }

    /// Records the second step of a password sign-in by its result.
    pub fn fallback_login<T>(&self, method: FallbackMethod, result: &Result<T, ApiError>) {
        let (outcome, reason) = match result {
            Ok(_) => ("success", ""),
            Err(error) => ("failure", error.code()),
        };
        self.fallback_logins.with_label_values(&[method.label(), outcome, reason]).inc();
    }

    pub fn refresh_reused(&self) {
        self.refresh_reuse.inc();
    }

    pub fn lockout_hit(&self) {
        self.lockout_hits.inc();
    }

    /// `count` failed events of audit event `kind`, written by this node.
    pub fn failures_counted(&self, kind: &str, count: i64) {
        let count = u64::try_from(count).unwrap_or(0);
        self.anomaly.failures.with_label_values(&[kind]).inc_by(count);
    }

    /// The most failures one key of `dimension` had in a minute (this one
    /// or the last), all nodes together.
    pub fn failure_rate_worst(&self, dimension: &str, count: i64) {
        self.anomaly.worst.with_label_values(&[dimension]).set(count);
    }

    pub fn anomaly_alert(&self, dimension: &str) {
        self.anomaly.alerts.with_label_values(&[dimension]).inc();
    }

    /// One webhook attempt: delivered (2xx), refused (another status) or
    /// error (no answer).
    pub fn webhook_attempt(&self, outcome: &'static str) {
        self.anomaly.webhook_attempts.with_label_values(&[outcome]).inc();
    }

    /// An alert whose every webhook attempt failed.
    pub fn webhook_undelivered(&self) {
        self.anomaly.webhook_undelivered.inc();
    }

    /// One risk decision: `kind` signin or payment, `outcome` allow,
    /// step_up, hold or deny.
    pub fn risk_decision(&self, kind: &str, outcome: &str) {
        self.risk_decisions.with_label_values(&[kind, outcome]).inc();
    }

    /// A risk rule that matched; `mode` enforce or dry_run. Rule names
    /// come from the operator's rules file, so the label stays bounded.
    pub fn risk_rule_matched(&self, rule: &str, mode: &str) {
        self.risk_rule_matches.with_label_values(&[rule, mode]).inc();
    }

    /// The text exposition, with the gauges read at scrape time.
    pub fn render(&self, scrape: &Scrape) -> anyhow::Result<String> {
        self.hash_queue.set(scrape.hash_queue);
        let idle = i64::try_from(scrape.pool_idle).unwrap_or(i64::MAX);
        self.pool_connections.with_label_values(&["idle"]).set(idle);
        self.pool_connections
            .with_label_values(&["in_use"])
            .set(i64::from(scrape.pool_size) - idle);
        if let Some(age) = scrape.signing_key_age {
            self.signing_key_age.set(age.as_secs_f64());
        }
        let mut out = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut out)?;
        Ok(String::from_utf8(out)?)
    }
}

/// Failures by kind, the worst key's rate per dimension, alerts and
/// webhook outcomes (issue 20 item 4). No label is ever an address, an
/// account or a device: those are in the admin view, not in series.
#[derive(Clone)]
struct AnomalyMetrics {
    failures: IntCounterVec,
    worst: IntGaugeVec,
    alerts: IntCounterVec,
    webhook_attempts: IntCounterVec,
    webhook_undelivered: IntCounter,
}

impl AnomalyMetrics {
    fn register(registry: &Registry) -> anyhow::Result<AnomalyMetrics> {
        const DIMENSIONS: [&str; 4] = ["network", "account", "device", "kind"];
        let failures = IntCounterVec::new(
            Opts::new(
                "passgate_failures_total",
                "Failed audit events (wrong passwords and codes, refused passkeys, rate-limited \
                 requests, ...) by event kind, as counted for the anomaly view",
            ),
            &["kind"],
        )?;
        failures.with_label_values(&["login"]).reset();
        let worst = IntGaugeVec::new(
            Opts::new(
                "passgate_failure_rate_worst",
                "The most failures one key had in one minute (this one or the last), all nodes \
                 together, by dimension (network, account, device, kind)",
            ),
            &["dimension"],
        )?;
        let alerts = IntCounterVec::new(
            Opts::new(
                "passgate_anomaly_alerts_total",
                "Anomaly alerts this node raised (a key's failures in a minute reached \
                 anomaly.*_failures_per_minute), by dimension",
            ),
            &["dimension"],
        )?;
        for dimension in DIMENSIONS {
            worst.with_label_values(&[dimension]).set(0);
            alerts.with_label_values(&[dimension]).reset();
        }
        let webhook_attempts = IntCounterVec::new(
            Opts::new(
                "passgate_anomaly_webhook_attempts_total",
                "Anomaly webhook attempts by outcome: delivered (2xx), refused (another status), \
                 error (no answer)",
            ),
            &["outcome"],
        )?;
        for outcome in ["delivered", "refused", "error"] {
            webhook_attempts.with_label_values(&[outcome]).reset();
        }
        let webhook_undelivered = IntCounter::with_opts(Opts::new(
            "passgate_anomaly_webhook_undelivered_total",
            "Anomaly alerts whose every webhook attempt failed",
        ))?;
        registry.register(Box::new(failures.clone()))?;
        registry.register(Box::new(worst.clone()))?;
        registry.register(Box::new(alerts.clone()))?;
        registry.register(Box::new(webhook_attempts.clone()))?;
        registry.register(Box::new(webhook_undelivered.clone()))?;
        Ok(AnomalyMetrics { failures, worst, alerts, webhook_attempts, webhook_undelivered })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_rise_to_the_request_deadline() {
        for seconds in [1, 2, 30, 31, 3600, 7200] {
            let buckets = duration_buckets(Duration::from_secs(seconds));
            assert_eq!(buckets.last().copied(), Some(seconds as f64), "{seconds}");
            assert!(buckets.windows(2).all(|pair| pair[0] < pair[1]), "{seconds}: {buckets:?}");
            assert_eq!(buckets[0], 0.0005);
        }
        let default = duration_buckets(Duration::from_secs(30));
        assert_eq!(default[default.len() - 3..], [15.0, 20.0, 30.0]);
        assert_eq!(duration_buckets(Duration::from_secs(31)).last(), Some(&31.0));
    }
}
