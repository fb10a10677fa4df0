//! PostgreSQL: the production and multi-node store. Nodes share everything
//! through it, so any node can finish what another started.

use std::str::FromStr;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use anyhow::Context;
use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection};

use super::ceremonies::{LOGIN_ARGS, ceremony_args, login_args};
use super::engine::{Arg, Decoded, Engine, Sql};
use super::pg_pool::{PgConnections, PgLease};
use super::risk::{text_for, texts_by_history};
use super::users::{REGISTRATION_ARGS, registration_args};
use super::{
    CeremonyRow, LoginRows, LoginStored, MIGRATOR, RegistrationRows, StoreError, StoreResult,
};
use crate::config::DatabaseSettings;

/// Set on every connection, for the server's side of it. sqlx 0.9 sets no
/// TCP keepalive on its own sockets; these have PostgreSQL probe an idle
/// connection after 30 s and drop it after three unanswered probes, so
/// the backend (and any lock it holds) of a node that vanished is freed in
/// about a minute; and a transaction left open by a node that stopped
/// midway is ended after 60 s. Our side of a black-holed connection is
/// covered by the request deadline and housekeeping's round limit.
const SESSION_SETTINGS: [(&str, &str); 4] = [
    ("tcp_keepalives_idle", "30"),
    ("tcp_keepalives_interval", "10"),
    ("tcp_keepalives_count", "3"),
    ("idle_in_transaction_session_timeout", "60000"),
];

/// How long a request waits for a connection before it gives up with a
/// 503.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

pub struct PgStore {
    pool: Arc<PgConnections>,
}

impl PgStore {
    pub async fn connect(settings: &DatabaseSettings) -> anyhow::Result<Self> {
        let options = PgConnectOptions::from_str(settings.url.expose())
            .with_context(|| {
                format!("database.url: {} is not a PostgreSQL URL", settings.url.redacted())
            })?
            .options(SESSION_SETTINGS);
        let pool = PgConnections::new(options, settings.max_connections, ACQUIRE_TIMEOUT);
        let pool = Arc::new(pool);
        // The migrator takes an advisory lock, so nodes starting together
        // migrate once. Both steps on one connection, which then stays in
        // the pool: each new one costs a TLS handshake (about 100 ms here).
        let mut conn = pool
            .acquire()
            .await
            .with_context(|| format!("cannot connect to {}", settings.url.redacted()))?;
        MIGRATOR.run(&mut *conn).await.context("PostgreSQL migrations failed")?;
        guard_audit_trail(&mut conn).await.context("PostgreSQL audit trail guard")?;
        drop(conn);
        Ok(PgStore { pool })
    }
}

/// Makes the audit trail append-only in the database itself, so not even a
/// bug in this server can rewrite it. Under an advisory lock: nodes
/// starting together would otherwise race on CREATE OR REPLACE.
async fn guard_audit_trail(conn: &mut sqlx::PgConnection) -> anyhow::Result<()> {
    let mut tx = conn.begin().await?;
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

/// A new ceremony. Its condition, always true, lets the statement's own
/// transaction commit without waiting for PostgreSQL to flush its log to
/// disk (`synchronous_commit` off for this transaction alone). For a new
/// ceremony only: it is visible to every node at once all the same, and it
/// survives this server being killed; what PostgreSQL itself crashing may
/// lose is up to about 600 ms of such ceremonies (three times its
/// `wal_writer_delay`, 200 ms by default), and their users' finish gets the
/// answer an expired ceremony gets: start again. The finish, which takes
/// the ceremony and writes the counter, session and audit row, waits for
/// the flush as before, and that flush covers the ceremony's insert too.
/// One flush per sign-in instead of two: the flush was a fifth of
/// PostgreSQL's CPU per sign-in (BENCHMARKS.md).
const PUT_CEREMONY: &str = "insert into ceremony (ceremony_id, kind, user_id, state, expires_at) \
     select $1, $2, $3, $4, $5 where set_config('synchronous_commit', 'off', true) = 'off'";

/// A sign-in's writes as one statement, bound by `login_args`.
static LOGIN: LazyLock<Vec<String>> = LazyLock::new(|| {
    let steps = "with taken as (insert into ceremony (ceremony_id, kind, user_id, state, \
       expires_at) values ($1, 'used', null, '', $29) on conflict (ceremony_id) do nothing \
       returning 1), \
     used as (update credential set backup_eligible = $3, sign_count = $4, \
       backup_state = $5, last_used_at = $6 where credential_id = $2 \
       and (sign_count < $4 or (sign_count = 0 and $4 = 0)) \
       and exists (select 1 from taken) returning 1), \
     opened as (insert into session (session_id, user_id, device_id, amr, client_ip, \
       user_agent, created_at, last_used_at, expires_at, revoked_at) \
       select $7, $8, $9, $10, $11, $12, $13, $14, $15, $16 \
       where exists (select 1 from used) returning session_id), \
     refresh as (insert into refresh_token (token_hash, session_id, created_at) \
       select $17, session_id, $13 from opened returning 1), \
     audited as (insert into audit_event (event_id, occurred_at, event, outcome, user_id, \
       actor_id, device_id, client_ip, user_agent, reason, request_id) \
       select $18, $19, $20, $21, $22, $23, $24, $25, $26, $27, $28 \
       where exists (select 1 from used) returning 1), \
     cleared as (delete from login_failure where subject = 'user:' || $8 \
       and exists (select 1 from used))";
    let answer = "select (select count(*) from taken), (select count(*) from used)";
    let opened = Some("exists (select 1 from used)");
    texts_by_history("$8", "$13", LOGIN_ARGS + 1, opened, |seen| with_history(steps, seen, answer))
});

/// A statement's CTEs, then its history's insert as one more, then its
/// final statement.
fn with_history(ctes: &str, seen: Option<String>, last: &str) -> String {
    match seen {
        None => format!("{ctes} {last}"),
        Some(seen) => format!("{ctes}, new_seen as ({seen}) {last}"),
    }
}

/// A registration's writes (see `store_registration`), bound by
/// `registration_args`: one text for each number of history rows (0 to
/// `MOST_SEEN`), written by a CTE of their own.
static REGISTER: LazyLock<Vec<String>> = LazyLock::new(|| {
    let inserts = "with new_user as (insert into app_user (user_id, username, display_name, \
       email, email_verified, roles, locked_at, created_at, language) \
       values ($1, $2, $3, $4, $5, $6, $7, $8, $9)), \
     new_credential as (insert into credential (credential_id, device_id, user_id, name, \
       passkey, sign_count, backup_eligible, backup_state, aaguid, transports, created_at, \
       last_used_at, payments_after) \
       values ($10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22)), \
     new_session as (insert into session (session_id, user_id, device_id, amr, client_ip, \
       user_agent, created_at, last_used_at, expires_at, revoked_at) \
       values ($23, $24, $25, $26, $27, $28, $29, $30, $31, $32)), \
     new_refresh as (insert into refresh_token (token_hash, session_id, created_at) \
       values ($33, $23, $29))";
    let audit = "insert into audit_event (event_id, occurred_at, event, outcome, user_id, \
       actor_id, device_id, client_ip, user_agent, reason, request_id) \
       values ($34, $35, $36, $37, $38, $39, $40, $41, $42, $43, $44)";
    texts_by_history("$1", "$29", REGISTRATION_ARGS + 1, None, |seen| {
        with_history(inserts, seen, audit)
    })
});

impl Engine for PgStore {
    type Conn = PgConnection;
    type Lease = PgLease;

    async fn db(&self) -> StoreResult<PgLease> {
        Ok(self.pool.acquire().await?)
    }

    /// Every connection reads committed rows; SQLite's differs.
    async fn read_db(&self) -> StoreResult<PgLease> {
        self.db().await
    }

    async fn store_ceremony(&self, ceremony: &CeremonyRow) -> StoreResult<()> {
        let args = ceremony_args(ceremony);
        self.db().await?.execute(PUT_CEREMONY, &args).await?;
        Ok(())
    }

    /// A registration's writes as one statement: one round trip and one
    /// implicit transaction (foreign keys are checked at the end of the
    /// statement, so the passkey and session may name the user inserted
    /// beside them).
    async fn store_registration(&self, rows: &RegistrationRows<'_>) -> StoreResult<()> {
        let roles = rows.user.roles.to_stored();
        let args = registration_args(rows, &roles);
        let text = text_for(&REGISTER, rows.seen)?;
        self.db().await?.execute(text, &args).await?;
        Ok(())
    }

    async fn write_shared<T: Decoded>(
        &self,
        statement: &'static str,
        args: &[Arg<'_>],
    ) -> StoreResult<Vec<T>> {
        Ok(self.db().await?.fetch_all(statement, args).await?)
    }

    async fn execute_shared(&self, statement: &'static str, args: &[Arg<'_>]) -> StoreResult<u64> {
        Ok(self.db().await?.execute(statement, args).await?)
    }

    /// Readiness: the database answers, and takes writes. A hot standby,
    /// or `default_transaction_read_only`, answers every read and refuses
    /// every write, a sign-in's included.
    async fn ping_db(&self) -> StoreResult<()> {
        let sql = "select current_setting('transaction_read_only')";
        let (read_only,): (String,) = self.db().await?.fetch_one(sql, &[]).await?;
        if read_only == "on" {
            // Its connections are replaced, so that the node sees the
            // database take writes again without a restart.
            super::pg_pool::read_only_refused();
            let cause = anyhow::anyhow!("PostgreSQL takes no writes: transaction_read_only is on");
            return Err(StoreError::Unavailable(cause));
        }
        Ok(())
    }

    /// A sign-in's writes as one statement: one round trip and one
    /// implicit transaction instead of seven round trips (each costs
    /// PostgreSQL CPU; BENCHMARKS.md). Each step runs only if the one
    /// before it wrote: the counter only if the ceremony was taken, the
    /// session, refresh token and audit row only if the counter moved
    /// forward. A counter that did not move forward still takes the
    /// ceremony (the caller takes it anyway on refusal).
    /// Foreign keys are checked at the end of the statement, so the
    /// refresh token may point at the session inserted beside it.
    async fn store_login(&self, login: &LoginRows<'_>) -> StoreResult<LoginStored> {
        let args = login_args(login);
        let text = text_for(&LOGIN, login.seen)?;
        let (taken, counted): (i64, i64) = self.db().await?.fetch_one(text, &args).await?;
        Ok(match (taken, counted) {
            (0, _) => LoginStored::CeremonyGone,
            (_, 0) => LoginStored::CounterNotIncreased,
            _ => LoginStored::Done,
        })
    }

    fn pool_use(&self) -> (u32, usize) {
        self.pool.state()
    }
}
