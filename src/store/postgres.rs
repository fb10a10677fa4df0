//! PostgreSQL: the production and multi-node store. Nodes share everything
//! through it, so any node can finish what another started.

use std::time::Duration;

use anyhow::Context;
use sqlx::postgres::PgPoolOptions;

use super::sql::{COUNTED_USE, impl_store};
use super::{
    CeremonyRow, CredentialRow, CredentialUse, EmailCodeRow, FactorCounts, MIGRATOR,
    RefreshOutcome, SessionRow, SigningKeyRow, StoreResult, TotpRow, UserRow,
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
        Ok(PgStore { pool })
    }
}

impl_store!(PgStore);
