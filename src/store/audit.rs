//! The audit trail: append-only in the database itself (see each engine's
//! `connect`).

use async_trait::async_trait;

use super::engine::{Arg, Engine, Sql};
use super::{AuditFilter, AuditRow, StoreResult};

#[async_trait]
pub trait AuditStore: Send + Sync {
    async fn append_audit(&self, event: &AuditRow) -> StoreResult<()>;
    async fn audit_events(&self, filter: &AuditFilter) -> StoreResult<Vec<AuditRow>>;
}

const INSERT_AUDIT: &str = "insert into audit_event (event_id, occurred_at, event, outcome, \
     user_id, actor_id, device_id, client_ip, user_agent, reason, request_id) \
     values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)";

/// A page of audit rows, oldest first. Absent filters are nulls that match
/// everything: one text for both engines and every combination.
const AUDIT_PAGE_FORWARD: &str = "select * from audit_event where \
     ($1 is null or user_id = $1) and ($2 is null or event = $2) \
     and ($3 is null or occurred_at >= $3) and ($4 is null or occurred_at < $4) \
     and ($5 is null or event_id > $5) \
     order by event_id asc limit $6";

/// `AUDIT_PAGE_FORWARD`, newest first.
const AUDIT_PAGE_BACKWARD: &str = "select * from audit_event where \
     ($1 is null or user_id = $1) and ($2 is null or event = $2) \
     and ($3 is null or occurred_at >= $3) and ($4 is null or occurred_at < $4) \
     and ($5 is null or event_id < $5) \
     order by event_id desc limit $6";

/// An audit row's eleven columns, in table order (as `INSERT_AUDIT` and the
/// sign-in's writes name them).
pub(crate) fn audit_args(event: &AuditRow) -> [Arg<'_>; 11] {
    [
        (&event.event_id).into(),
        event.occurred_at.into(),
        (&event.event).into(),
        (&event.outcome).into(),
        (&event.user_id).into(),
        (&event.actor_id).into(),
        (&event.device_id).into(),
        (&event.client_ip).into(),
        (&event.user_agent).into(),
        (&event.reason).into(),
        (&event.request_id).into(),
    ]
}

#[async_trait]
impl<E: Engine> AuditStore for E {
    async fn append_audit(&self, event: &AuditRow) -> StoreResult<()> {
        self.execute_shared(INSERT_AUDIT, &audit_args(event)).await?;
        Ok(())
    }

    async fn audit_events(&self, filter: &AuditFilter) -> StoreResult<Vec<AuditRow>> {
        let sql = if filter.newest_first { AUDIT_PAGE_BACKWARD } else { AUDIT_PAGE_FORWARD };
        let args = [
            (&filter.user_id).into(),
            (&filter.event).into(),
            filter.since.into(),
            filter.until.into(),
            (&filter.after).into(),
            filter.limit.into(),
        ];
        Ok(self.db().await?.fetch_all(sql, &args).await?)
    }
}
