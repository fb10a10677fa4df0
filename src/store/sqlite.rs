//! The embedded default: one SQLite file in WAL mode. Writes are durable
//! against a killed process (WAL with synchronous=NORMAL survives SIGKILL;
//! only power loss can drop the last commits).

use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqliteSynchronous};
use sqlx::{ConnectOptions, Row};
use tokio::sync::{Mutex, MutexGuard};

use super::sql::{COUNTED_USE, audit_columns, impl_store, session_columns};
use super::{
    AuditFilter, AuditRow, CeremonyRow, CredentialRow, CredentialUse, EmailCodeRow, FactorCounts,
    LoginRows, LoginStored, MIGRATOR, RefreshOutcome, SessionRow, SigningKeyRow, StoreError,
    StoreResult, TotpRow, UserRow,
};
use crate::clock::Millis;
use crate::config::DatabaseSettings;

type Db = sqlx::Sqlite;

/// The most of the database file mapped into memory (address space, not
/// memory: pages are only resident while the OS keeps them cached).
const MMAP_SIZE: u64 = 1 << 30;

/// How long a request waits for the connection before it gives up with a
/// 503, as a pool's acquire timeout would.
const WAIT_FOR_CONNECTION: Duration = Duration::from_secs(5);

/// One connection, taken in turn. SQLite has one writer at a time: with
/// more connections, writers wait on its lock (busy_timeout sleeps: the
/// p99 doubled), and each write empties the other connections' page
/// caches. Not a sqlx pool either: a pool pings the connection when it
/// hands it out and again when it takes it back, and sqlx-sqlite runs the
/// connection on its own thread, so each ping is a round trip between
/// threads; three per statement instead of one (BENCHMARKS.md).
pub struct SqliteStore {
    conn: Mutex<SqliteConnection>,
    /// To open the connection again if its thread is gone.
    options: SqliteConnectOptions,
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
            // copy each (BENCHMARKS.md, "One change at a time").
            .pragma("mmap_size", MMAP_SIZE.to_string())
            .busy_timeout(Duration::from_secs(5));
        if let Some(parent) = options.get_filename().parent()
            && !parent.as_os_str().is_empty()
        {
            std::fs::create_dir_all(parent).with_context(|| {
                format!("database.url: cannot create folder {}", parent.display())
            })?;
        }
        let mut conn = options
            .clone()
            .connect()
            .await
            .with_context(|| format!("cannot open {}", settings.url.redacted()))?;
        MIGRATOR.run(&mut conn).await.context("SQLite migrations failed")?;
        // The audit trail is append-only in the database itself.
        for sql in [
            "create trigger if not exists audit_event_no_update before update on audit_event \
             begin select raise(abort, 'audit_event is append-only'); end",
            "create trigger if not exists audit_event_no_delete before delete on audit_event \
             begin select raise(abort, 'audit_event is append-only'); end",
        ] {
            sqlx::query(sql).execute(&mut conn).await.context("SQLite audit trail guard")?;
        }
        Ok(SqliteStore { conn: Mutex::new(conn), options })
    }
}

impl SqliteStore {
    async fn db(&self) -> StoreResult<MutexGuard<'_, SqliteConnection>> {
        tokio::time::timeout(WAIT_FOR_CONNECTION, self.conn.lock())
            .await
            .map_err(|_| sqlx::Error::PoolTimedOut.into())
    }

    /// Readiness. A pool would replace a connection whose thread has
    /// gone (sqlx-sqlite stops it after a panic, or when a cancelled
    /// transaction cannot be rolled back); with one connection and no
    /// pool, the readiness probe does: it opens the file again, so the
    /// node answers 503 only until the next probe.
    async fn ping_db(&self) -> StoreResult<()> {
        let mut conn = self.db().await?;
        match sqlx::query("select 1").execute(&mut *conn).await {
            Err(sqlx::Error::WorkerCrashed | sqlx::Error::Io(_)) => {
                tracing::warn!("the SQLite connection's thread is gone; opening the file again");
                *conn = self.options.connect().await?;
                sqlx::query("select 1").execute(&mut *conn).await?;
                Ok(())
            }
            done => done.map(drop).map_err(StoreError::from),
        }
    }

    /// Connections open and idle, as a pool would count them.
    fn pool_use(&self) -> (u32, usize) {
        (1, usize::from(self.conn.try_lock().is_ok()))
    }

    /// A sign-in's writes in one transaction, and in one call to the
    /// connection's thread: the statements go as one text, each running
    /// only if the one before it wrote a row (`changes()` counts the
    /// statement that finished last). The counter only if the ceremony was
    /// taken; the session, refresh token and audit row only if the counter
    /// moved forward. As on PostgreSQL, a counter that did not move forward
    /// still takes the ceremony (the caller takes it anyway on refusal).
    async fn store_login(&self, login: &LoginRows<'_>) -> StoreResult<LoginStored> {
        const LOGIN: &str = concat!(
            "delete from ceremony where ceremony_id = $1 returning 'taken'; \
             update credential set backup_eligible = $3, sign_count = $4, backup_state = $5, \
               last_used_at = $6 where credential_id = $2 \
               and (sign_count < $4 or (sign_count = 0 and $4 = 0)) and changes() = 1 \
               returning 'counted'; \
             insert into ",
            session_columns!(),
            " select $7, $8, $9, $10, $11, $12, $13, $14, $15, $16 where changes() = 1; \
             insert into refresh_token (token_hash, session_id, created_at) \
               select $17, $7, $13 where changes() = 1; \
             insert into ",
            audit_columns!(),
            " select $18, $19, $20, $21, $22, $23, $24, $25, $26, $27, $28 where changes() = 1"
        );
        let mut conn = self.db().await?;
        let mut tx = sqlx::Connection::begin(&mut *conn).await?;
        let used = login.used;
        let query = sqlx::query(LOGIN)
            .bind(login.ceremony_id)
            .bind(&used.credential_id)
            .bind(used.backup_eligible)
            .bind(used.sign_count)
            .bind(used.backup_state)
            .bind(used.used_at);
        let query = bind_session(query, login.session).bind(login.refresh_hash);
        let steps = bind_audit(query, login.audit).fetch_all(&mut *tx).await?;
        let done = |step: &str| {
            steps.iter().any(|row| row.try_get::<&str, _>(0).is_ok_and(|done| done == step))
        };
        if !done("taken") {
            // Nothing was written; and should a later edit break the
            // chain, nothing is kept either.
            tx.rollback().await?;
            return Ok(LoginStored::CeremonyGone);
        }
        let stored =
            if done("counted") { LoginStored::Done } else { LoginStored::CounterNotIncreased };
        tx.commit().await?;
        Ok(stored)
    }
}

impl_store!(SqliteStore);
