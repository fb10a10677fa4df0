//! PostgreSQL: the production and multi-node store. Nodes share everything
//! through it, so any node can finish what another started.

use std::time::Duration;

use anyhow::Context;
use sqlx::postgres::PgPoolOptions;

use super::sql::{COUNTED_USE, impl_store};
use super::{
    AuditFilter, AuditRow, CeremonyRow, CredentialRow, CredentialUse, EmailCodeRow, FactorCounts,
    MIGRATOR, RefreshOutcome, SessionRow, SigningKeyRow, StoreResult, TotpRow, UserRow,
};
use crate::clock::Millis;
use crate::config::DatabaseSettings;

type Db = sqlx::Postgres;

pub struct PgStore {
    pool: sqlx::PgPool,
}

impl PgStore {
    pub async fn connect(settings: &DatabaseSettings) -> anyhow::Result<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(settings.max_connections)
            .acquire_timeout(Duration::from_secs(5))
            .connect(settings.url.expose())
            .await
            .with_context(|| format!("cannot connect to {}", settings.url.redacted()))?;
        // The migrator takes an advisory lock, so nodes starting together
        // migrate once.
        MIGRATOR.run(&pool).await.context("PostgreSQL migrations failed")?;
        guard_audit_trail(&pool).await.context("PostgreSQL audit trail guard")?;
        Ok(PgStore { pool })
    }
}

/// Makes the audit trail append-only in the database itself, so not even a
/// bug in this server can rewrite it. Under an advisory lock: nodes
/// starting together would otherwise race on CREATE OR REPLACE.
async fn guard_audit_trail(pool: &sqlx::PgPool) -> anyhow::Result<()> {
    let mut tx = pool.begin().await?;
    sqlx::query("select pg_advisory_xact_lock(7306284417)").execute(&mut *tx).await?;
    sqlx::query(
        "create or replace function audit_event_append_only() returns trigger \
         language plpgsql as $$ begin \
         raise exception 'audit_event is append-only'; end $$",
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "create or replace trigger audit_event_append_only before update or delete \
         on audit_event for each row execute function audit_event_append_only()",
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "create or replace trigger audit_event_no_truncate before truncate \
         on audit_event for each statement execute function audit_event_append_only()",
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

impl_store!(PgStore);
