//! The embedded default: one SQLite file in WAL mode. Writes are durable
//! against a killed process (WAL with synchronous=NORMAL survives SIGKILL;
//! only power loss can drop the last commits).

use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use super::sql::{COUNTED_USE, impl_store};
use super::{
    AuditFilter, AuditRow, CeremonyRow, CredentialRow, CredentialUse, EmailCodeRow, FactorCounts,
    LoginRows, LoginStored, MIGRATOR, RefreshOutcome, SessionRow, SigningKeyRow, StoreResult,
    TotpRow, UserRow,
};
use crate::clock::Millis;
use crate::config::DatabaseSettings;

type Db = sqlx::Sqlite;

/// The most of the database file mapped into memory (address space, not
/// memory: pages are only resident while the OS keeps them cached).
const MMAP_SIZE: u64 = 1 << 30;

pub struct SqliteStore {
    pool: sqlx::SqlitePool,
}

impl SqliteStore {
    pub async fn connect(settings: &DatabaseSettings) -> anyhow::Result<Self> {
        let url = settings.url.expose();
        let options = SqliteConnectOptions::from_str(url)
            .with_context(|| {
                format!("database.url: {} is not a SQLite URL", settings.url.redacted())
            })?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            // Pages are read through a mapping instead of a read(2) and a
            // copy each (BENCHMARKS.md, "SQLite settings").
            .pragma("mmap_size", MMAP_SIZE.to_string())
            .busy_timeout(Duration::from_secs(5));
        if let Some(parent) = options.get_filename().parent()
            && !parent.as_os_str().is_empty()
        {
            std::fs::create_dir_all(parent).with_context(|| {
                format!("database.url: cannot create folder {}", parent.display())
            })?;
        }
        // SQLite has one writer at a time. With more connections, writers
        // wait on its lock (busy_timeout sleeps: the p99 doubled), and each
        // write empties the other connections' page caches. One connection
        // queues in the pool instead, which is cheaper and fair.
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options)
            .await
            .with_context(|| format!("cannot open {}", settings.url.redacted()))?;
        MIGRATOR.run(&pool).await.context("SQLite migrations failed")?;
        // The audit trail is append-only in the database itself.
        for sql in [
            "create trigger if not exists audit_event_no_update before update on audit_event \
             begin select raise(abort, 'audit_event is append-only'); end",
            "create trigger if not exists audit_event_no_delete before delete on audit_event \
             begin select raise(abort, 'audit_event is append-only'); end",
        ] {
            sqlx::query(sql).execute(&pool).await.context("SQLite audit trail guard")?;
        }
        Ok(SqliteStore { pool })
    }
}

impl SqliteStore {
    /// A sign-in's writes in one transaction; nothing is written when the
    /// ceremony is gone or the counter did not move forward.
    async fn store_login(&self, login: &LoginRows<'_>) -> StoreResult<LoginStored> {
        let mut tx = self.pool.begin().await?;
        let taken = sqlx::query("delete from ceremony where ceremony_id = $1")
            .bind(login.ceremony_id)
            .execute(&mut *tx)
            .await?;
        if taken.rows_affected() != 1 {
            tx.rollback().await?;
            return Ok(LoginStored::CeremonyGone);
        }
        let used = login.used;
        let updated = sqlx::query(COUNTED_USE)
            .bind(&used.credential_id)
            .bind(used.backup_eligible)
            .bind(used.sign_count)
            .bind(used.backup_state)
            .bind(used.used_at)
            .execute(&mut *tx)
            .await?;
        if updated.rows_affected() != 1 {
            tx.rollback().await?;
            return Ok(LoginStored::CounterNotIncreased);
        }
        insert_session(&mut tx, login.session, login.refresh_hash).await?;
        insert_audit(&mut *tx, login.audit).await?;
        tx.commit().await?;
        Ok(LoginStored::Done)
    }
}

impl_store!(SqliteStore);
