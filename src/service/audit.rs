//! The audit trail: one row per security event, with the request id, the
//! client and the outcome, so a user's error report leads to its row. The
//! same event also goes to the log (target `audit`). Never a secret: only
//! ids, event names, outcomes and short reasons. Every failed event is
//! also counted per minute for the anomaly view (`anomalies`).

use std::sync::Arc;

use super::anomalies::FailureTally;
use crate::clock::Clock;
use crate::context::{current_client, current_request_id};
use crate::store::{AuditRow, Store};

/// One event to record. Build with `Event::ok` or `Event::failed`.
#[derive(Default)]
pub struct Event<'a> {
    pub event: &'a str,
    pub failed: bool,
    pub user_id: Option<&'a str>,
    pub actor_id: Option<&'a str>,
    pub device_id: Option<&'a str>,
    pub reason: Option<&'a str>,
}

impl<'a> Event<'a> {
    pub fn ok(event: &'a str) -> Self {
        Event { event, ..Event::default() }
    }

    pub fn failed(event: &'a str, reason: &'a str) -> Self {
        Event { event, failed: true, reason: Some(reason), ..Event::default() }
    }

    pub fn user(mut self, user_id: &'a str) -> Self {
        self.user_id = Some(user_id);
        self
    }

    pub fn actor(mut self, actor_id: &'a str) -> Self {
        self.actor_id = Some(actor_id);
        self
    }

    pub fn device(mut self, device_id: &'a str) -> Self {
        self.device_id = Some(device_id);
        self
    }

    pub fn reason(mut self, reason: &'a str) -> Self {
        self.reason = Some(reason);
        self
    }
}

/// Reasons are short, and admin-typed ones are cut, so a row stays small.
const REASON_MAX: usize = 500;

/// Writes the audit trail; every feature that records events holds one.
#[derive(Clone)]
pub struct Audit {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    failures: Arc<FailureTally>,
}

impl Audit {
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>) -> Audit {
        Audit { store, clock, failures: Arc::default() }
    }

    /// Where this trail counts its failed events, for `Anomalies` to
    /// write out and read.
    pub fn failure_tally(&self) -> Arc<FailureTally> {
        self.failures.clone()
    }

    /// Counts a failure that has no row of its own (a request refused by
    /// a rate limit, which would otherwise flood the trail), by the
    /// current request's client.
    pub fn count_failure(&self, event: &str) {
        let client = current_client();
        self.failures.count(self.clock.now_ms(), event, client.ip.as_deref(), None, None);
    }

    /// Records `event`. A failure to write is logged, not returned: the
    /// action it records has already happened.
    pub async fn record(&self, event: Event<'_>) {
        let row = self.row(event);
        log_audit(&row);
        if let Err(error) = self.store.append_audit(&row).await {
            tracing::error!(error.cause_chain = ?error, event = %row.event, "audit row not written");
        }
    }

    /// The row for `event`, for a caller that writes it in the same
    /// transaction as the action (so both or neither stay), and logs it
    /// with `log_audit` once that committed. A failed event is counted
    /// here, so that both ways of recording one count it once: the attempt
    /// failed whether or not its row is kept.
    pub fn row(&self, event: Event<'_>) -> AuditRow {
        let client = current_client();
        let outcome = if event.failed { "failure" } else { "success" };
        let row = AuditRow {
            event_id: uuid::Uuid::now_v7().to_string(),
            occurred_at: self.clock.now_ms(),
            event: event.event.to_owned(),
            outcome: outcome.to_owned(),
            user_id: event.user_id.map(str::to_owned),
            actor_id: event.actor_id.map(str::to_owned),
            device_id: event.device_id.map(str::to_owned),
            client_ip: client.ip,
            user_agent: client.user_agent,
            reason: event.reason.map(|r| r.chars().take(REASON_MAX).collect()),
            request_id: current_request_id(),
        };
        if event.failed {
            self.failures.count(
                row.occurred_at,
                &row.event,
                row.client_ip.as_deref(),
                row.user_id.as_deref(),
                row.device_id.as_deref(),
            );
        }
        row
    }
}

/// The audit row as a log line (target `audit`), for log-based tooling.
pub fn log_audit(row: &AuditRow) {
    let outcome = row.outcome.as_str();
    tracing::info!(
        target: "audit",
        event = %row.event,
        outcome,
        user_id = row.user_id.as_deref().unwrap_or(""),
        actor_id = row.actor_id.as_deref().unwrap_or(""),
        device_id = row.device_id.as_deref().unwrap_or(""),
        reason = row.reason.as_deref().unwrap_or(""),
    );
}
