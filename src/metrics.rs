//! Prometheus metrics (text format at `GET /metrics`). Each app has its own
//! registry, so several nodes in one test process do not mix their counts.
//! Labels are bounded: routes are patterns, reasons are contract codes.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
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
}

/// Where a ceremony ended up, for `passgate_ceremonies_total`.
#[derive(Clone, Copy, Debug)]
pub enum CeremonyOutcome {
    Started,
    Finished,
}

impl Metrics {
    pub fn new() -> anyhow::Result<Metrics> {
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
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ]),
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
                "Requests refused with 429 by what was over its limit (ip, account, hash_queue)",
            ),
            &["scope"],
        )?;
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
                "Mail that could not be sent, by kind (notice: a change notice to the owner)",
            ),
            &["kind"],
        )?;
        let build_info = IntGauge::with_opts(
            Opts::new("passgate_build_info", "Build information; always 1")
                .const_label("version", env!("CARGO_PKG_VERSION")),
        )?;
        build_info.set(1);
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

    pub fn mail_failed(&self, kind: &str) {
        self.mail_failures.with_label_values(&[kind]).inc();
    }

    pub fn lockout_hit(&self) {
        self.lockout_hits.inc();
    }

    /// The text exposition, with the gauges read at scrape time.
    pub fn render(
        &self,
        pool_size: u32,
        pool_idle: usize,
        hash_queue: i64,
    ) -> anyhow::Result<String> {
        self.hash_queue.set(hash_queue);
        let idle = i64::try_from(pool_idle).unwrap_or(i64::MAX);
        self.pool_connections.with_label_values(&["idle"]).set(idle);
        self.pool_connections.with_label_values(&["in_use"]).set(i64::from(pool_size) - idle);
        let mut out = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut out)?;
        Ok(String::from_utf8(out)?)
    }
}
