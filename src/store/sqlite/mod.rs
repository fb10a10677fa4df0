//! The embedded default: one SQLite file in WAL mode. Writes are durable
//! against a killed process (WAL with synchronous=NORMAL survives SIGKILL;
//! only power loss can drop the last commits).

mod checkpoint;
mod file;
mod group;

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use anyhow::Context;
use sqlx::ConnectOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqliteSynchronous};
use tokio::sync::{Mutex, OwnedMappedMutexGuard, OwnedMutexGuard, watch};

use self::checkpoint::{BACKSTOP_CHECKPOINT_PAGES, checkpoints};
use self::file::DatabaseFile;
use self::group::{Group, GroupedSql, Held, InFlight, Tidy, Waiting, Way, WriteTurn, commit_apart};
use super::ceremonies::{LOGIN_ARGS, ceremony_args, login_args};
use super::engine::{Arg, Decoded, Engine, Sql};
use super::risk::{text_for, texts_by_history};
use super::users::{REGISTRATION_ARGS, registration_args};
use super::{
    CeremonyRow, LoginRows, LoginStored, MIGRATOR, RegistrationRows, StoreError, StoreResult,
};
use crate::config::DatabaseSettings;

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
///
/// The sign-in's two writes (its ceremony at start, in the same text as
/// the read of the user's passkeys; ceremony, counter, session, refresh
/// token and audit row at finish) and other ceremonies' starts commit in
/// groups: while other requests wait for the connection, a write leaves
/// its transaction open for them to join, and the last of the group, or a
/// task that queues behind them, commits it. Each write is answered only
/// after its group committed, so an answered write survives a SIGKILL as
/// before; a group shares one commit (one round trip to the connection's
/// thread, one set of log pages and locks) instead of paying one each.
pub struct SqliteStore {
    held: Arc<Mutex<Held>>,
    /// Tasks waiting for the connection.
    waiting: Arc<AtomicUsize>,
    /// The database file, whose file system readiness looks at.
    path: PathBuf,
    file: Option<DatabaseFile>,
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
            .pragma("wal_autocheckpoint", BACKSTOP_CHECKPOINT_PAGES.to_string())
            // A joined write's savepoint keeps the pages it replaces in a
            // journal of its own; past 64 KiB SQLite spills that to a
            // temporary file, one per write (BENCHMARKS.md).
            .pragma("temp_store", "memory")
            .busy_timeout(Duration::from_secs(5));
        if let Some(parent) = options.get_filename().parent()
            && !parent.as_os_str().is_empty()
        {
            std::fs::create_dir_all(parent).with_context(|| {
                format!("database.url: cannot create folder {}", parent.display())
            })?;
        }
        file::create_private(options.get_filename())
            .with_context(|| format!("cannot create {}", settings.url.redacted()))?;
        let mut conn = options
            .clone()
            .connect()
            .await
            .with_context(|| format!("cannot open {}", settings.url.redacted()))?;
        MIGRATOR.run(&mut conn).await.context("SQLite migrations failed")?;
        // The log and shared-memory files exist once the migrations ran.
        file::make_private(options.get_filename());
        // The audit trail is append-only in the database itself.
        for sql in [
            "create trigger if not exists audit_event_no_update before update on audit_event \
             begin select raise(abort, 'audit_event is append-only'); end",
            "create trigger if not exists audit_event_no_delete before delete on audit_event \
             begin select raise(abort, 'audit_event is append-only'); end",
        ] {
            sqlx::query(sql).execute(&mut conn).await.context("SQLite audit trail guard")?;
        }
        drop_plan_samples(&mut conn).await?;
        let copier = options.connect().await.context("SQLite checkpoint connection")?;
        let file = DatabaseFile::open(options.get_filename());
        let path = options.get_filename().to_owned();
        let held = Held::new(conn, options);
        let held = Arc::new(Mutex::new(held));
        tokio::spawn(checkpoints(Arc::downgrade(&held), copier, file));
        Ok(SqliteStore { held, waiting: Arc::new(AtomicUsize::new(0)), path, file })
    }
}

/// `ANALYZE` or `PRAGMA optimize`, run on the file by hand, leave STAT4
/// samples; with them the bundled SQLite (built with STAT4) plans a
/// statement again every time it runs with new values: about 30 % more CPU
/// per sign-in, for plans that stay the same, since every lookup here is by
/// key (BENCHMARKS.md). So they go at start, and the log says so.
async fn drop_plan_samples(conn: &mut SqliteConnection) -> anyhow::Result<()> {
    // No such table until ANALYZE has run once.
    let samples = sqlx::query_scalar::<_, i64>("select count(*) from sqlite_stat4");
    let Ok(samples) = samples.fetch_one(&mut *conn).await else { return Ok(()) };
    if samples > 0 {
        sqlx::query("delete from sqlite_stat4; analyze sqlite_schema")
            .execute(&mut *conn)
            .await
            .context("removing SQLite's STAT4 samples")?;
        tracing::warn!(
            samples,
            "removed SQLite's STAT4 samples (left by ANALYZE or PRAGMA optimize): \
             with them every statement is planned again each time it runs"
        );
    }
    Ok(())
}

type Conn = OwnedMappedMutexGuard<Held, SqliteConnection>;

impl SqliteStore {
    /// The connection, with nothing left half-done on it; a group of
    /// writes may still be open.
    async fn lock(&self) -> StoreResult<OwnedMutexGuard<Held>> {
        let mut held = {
            let _waiting = Waiting::new(&self.waiting);
            tokio::time::timeout(WAIT_FOR_CONNECTION, self.held.clone().lock_owned())
                .await
                .map_err(|_| sqlx::Error::PoolTimedOut)?
        };
        held.recover().await;
        held.forget_ended_transaction().await?;
        Ok(held)
    }

    /// The connection with no group open: what it reads is committed, and
    /// transactions begun on it are its own.
    async fn committed(&self) -> StoreResult<Conn> {
        // A failed commit has told its own writers; this caller goes on.
        let (held, _) = commit_apart(self.lock().await?).await?;
        Ok(OwnedMutexGuard::map(held, |held| &mut held.conn))
    }

    /// The connection, for the read at a sign-in's finish: it may see the
    /// open group's writes. What it reads feeds a write that waits for the
    /// group (or a later one), and a write that finds its ceremony gone
    /// stores nothing, so nothing is answered on rows that may not stay.
    async fn uncommitted(&self) -> StoreResult<Conn> {
        Ok(OwnedMutexGuard::map(self.lock().await?, |held| &mut held.conn))
    }

    /// The connection for a write that may be grouped. Alone while nobody
    /// else waits (one round trip, as an ungrouped write); joining the open
    /// group if there is one; else opening one.
    async fn write_turn(&self) -> StoreResult<WriteTurn<'_>> {
        let mut held = self.lock().await?;
        let way = if held.group.is_some() {
            Way::Join
        } else if self.waiting.load(Ordering::Acquire) > 0 {
            held.groups += 1;
            let id = held.groups;
            held.group = Some(Group { id, done: watch::channel(None).0, committer: false });
            Way::Open
        } else {
            Way::Alone
        };
        held.in_flight = InFlight::Write(way, false);
        let tidy = Tidy(Some(self.held.clone()));
        Ok(WriteTurn { held, way, store: self, tidy })
    }

    /// Readiness: the connection answers, and the file system takes
    /// writes (a full or read-only disk lets reads, and some writes, go
    /// on, but not sign-ins for long).
    async fn ping_file(&self) -> StoreResult<()> {
        self.ping_connection().await?;
        let unavailable = |error: std::io::Error| StoreError::Unavailable(error.into());
        file::takes_writes(&self.path).map_err(unavailable)?;
        // A file system that the kernel made read-only after an error may
        // still say it is writable (ext4 since Linux 6.x); a flush asks it.
        match self.file {
            Some(file) => file.flush().await.map_err(unavailable),
            None => Ok(()),
        }
    }

    /// A pool would replace a connection whose thread has gone
    /// (sqlx-sqlite stops it after a panic, or when a cancelled
    /// transaction cannot be rolled back); with one connection and no
    /// pool, the readiness probe does: it opens the file again, so the
    /// node answers 503 only until the next probe.
    async fn ping_connection(&self) -> StoreResult<()> {
        let (mut held, _) = commit_apart(self.lock().await?).await?;
        match sqlx::query("select 1").execute(&mut held.conn).await {
            Err(sqlx::Error::WorkerCrashed | sqlx::Error::Io(_)) => {
                tracing::warn!("the SQLite connection's thread is gone; opening the file again");
                held.reopen().await?;
                sqlx::query("select 1").execute(&mut held.conn).await?;
                Ok(())
            }
            done => done.map(drop).map_err(StoreError::from),
        }
    }
}

/// A new ceremony; alone, one statement is its own transaction.
static PUT_CEREMONY: LazyLock<GroupedSql> = LazyLock::new(|| {
    GroupedSql::one(
        "insert into ceremony (ceremony_id, kind, user_id, state, expires_at) \
         values ($1, $2, $3, $4, $5)",
    )
});

/// A sign-in's writes (see `store_login`), bound by `login_args`: one text
/// for each number of history rows (0 to `MOST_SEEN`), which go last, if
/// the session was written.
static LOGIN: LazyLock<Vec<GroupedSql>> = LazyLock::new(|| {
    let steps = "insert into ceremony (ceremony_id, kind, user_id, state, expires_at) \
           values ($1, 'used', null, '', $29) on conflict (ceremony_id) do nothing \
           returning 'taken'; \
         update credential set backup_eligible = $3, sign_count = $4, backup_state = $5, \
           last_used_at = $6 where credential_id = $2 \
           and (sign_count < $4 or (sign_count = 0 and $4 = 0)) and changes() = 1 \
           returning 'counted'; \
         insert into session (session_id, user_id, device_id, amr, client_ip, user_agent, \
           created_at, last_used_at, expires_at, revoked_at) \
           select $7, $8, $9, $10, $11, $12, $13, $14, $15, $16 where changes() = 1; \
         insert into refresh_token (token_hash, session_id, created_at) \
           select $17, $7, $13 where changes() = 1; \
         insert into audit_event (event_id, occurred_at, event, outcome, user_id, actor_id, \
           device_id, client_ip, user_agent, reason, request_id) \
           select $18, $19, $20, $21, $22, $23, $24, $25, $26, $27, $28 where changes() = 1; \
         delete from login_failure where subject = 'user:' || $8 and changes() = 1";
    let opened = Some("exists (select 1 from session where session_id = $7)");
    texts_by_history("$8", "$13", LOGIN_ARGS + 1, opened, |seen| grouped(steps, seen))
});

/// A write's steps, then its history's insert if any, as one grouped text.
fn grouped(steps: &str, seen: Option<String>) -> GroupedSql {
    match seen {
        None => GroupedSql::with_savepoint(steps),
        Some(seen) => GroupedSql::with_savepoint(&format!("{steps}; {seen}")),
    }
}

/// A registration's writes (see `store_registration`), bound by
/// `registration_args`: one text for each number of history rows (0 to
/// `MOST_SEEN`), which go last.
static REGISTER: LazyLock<Vec<GroupedSql>> = LazyLock::new(|| {
    let steps = "insert into app_user (user_id, username, display_name, email, email_verified, roles, \
           locked_at, created_at, language) values ($1, $2, $3, $4, $5, $6, $7, $8, $9); \
         insert into credential (credential_id, device_id, user_id, name, passkey, sign_count, \
           backup_eligible, backup_state, aaguid, transports, created_at, last_used_at, \
           payments_after) \
           values ($10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22); \
         insert into session (session_id, user_id, device_id, amr, client_ip, user_agent, \
           created_at, last_used_at, expires_at, revoked_at) \
           values ($23, $24, $25, $26, $27, $28, $29, $30, $31, $32); \
         insert into refresh_token (token_hash, session_id, created_at) values ($33, $23, $29); \
         insert into audit_event (event_id, occurred_at, event, outcome, user_id, actor_id, \
           device_id, client_ip, user_agent, reason, request_id) \
           values ($34, $35, $36, $37, $38, $39, $40, $41, $42, $43, $44)";
    texts_by_history("$1", "$29", REGISTRATION_ARGS + 1, None, |seen| grouped(steps, seen))
});

impl Engine for SqliteStore {
    type Conn = SqliteConnection;
    type Lease = Conn;

    async fn db(&self) -> StoreResult<Conn> {
        self.committed().await
    }

    async fn read_db(&self) -> StoreResult<Conn> {
        self.uncommitted().await
    }

    async fn store_ceremony(&self, ceremony: &CeremonyRow) -> StoreResult<()> {
        let mut turn = self.write_turn().await?;
        let args = ceremony_args(ceremony);
        let sql = turn.sql(&PUT_CEREMONY);
        let wrote = turn.conn().execute(sql, &args).await;
        turn.finish(wrote.map(drop)).await
    }

    /// A sign-in's writes in one transaction, and in one call to the
    /// connection's thread: the statements go as one text, each running
    /// only if the one before it wrote a row (`changes()` counts the
    /// statement that finished last). The counter only if the handle was
    /// recorded as used here first; the session, refresh token and audit
    /// row only if the counter moved forward, so a ceremony already gone
    /// writes nothing. As on PostgreSQL, a counter that did not move
    /// forward still takes the ceremony (the caller takes it anyway on
    /// refusal).
    async fn store_login(&self, login: &LoginRows<'_>) -> StoreResult<LoginStored> {
        let args = login_args(login);
        let text = text_for(&LOGIN, login.seen)?;
        let mut turn = self.write_turn().await?;
        let sql = turn.sql(text);
        let wrote: Result<Vec<(String,)>, _> = turn.conn().fetch_all(sql, &args).await;
        let steps = turn.finish(wrote).await?;
        let done = |step: &str| steps.iter().any(|(done,)| done == step);
        Ok(if !done("taken") {
            LoginStored::CeremonyGone
        } else if done("counted") {
            LoginStored::Done
        } else {
            LoginStored::CounterNotIncreased
        })
    }

    /// A registration's writes in one call to the connection's thread, in
    /// one transaction (or under a savepoint in a group): a taken
    /// username refuses the first statement and nothing stays.
    async fn store_registration(&self, rows: &RegistrationRows<'_>) -> StoreResult<()> {
        let roles = rows.user.roles.to_stored();
        let args = registration_args(rows, &roles);
        let text = text_for(&REGISTER, rows.seen)?;
        let mut turn = self.write_turn().await?;
        let sql = turn.sql(text);
        let wrote = turn.conn().execute(sql, &args).await;
        turn.finish(wrote.map(drop)).await
    }

    async fn write_shared<T: Decoded>(
        &self,
        statement: &'static str,
        args: &[Arg<'_>],
    ) -> StoreResult<Vec<T>> {
        let grouped = GroupedSql::shared(statement);
        let mut turn = self.write_turn().await?;
        let sql = turn.sql(grouped);
        let wrote = turn.conn().fetch_all(sql, args).await;
        turn.finish(wrote).await
    }

    async fn execute_shared(&self, statement: &'static str, args: &[Arg<'_>]) -> StoreResult<u64> {
        let grouped = GroupedSql::shared(statement);
        let mut turn = self.write_turn().await?;
        let sql = turn.sql(grouped);
        let wrote = turn.conn().execute(sql, args).await;
        turn.finish(wrote).await
    }

    async fn ping_db(&self) -> StoreResult<()> {
        self.ping_file().await
    }

    /// Connections open and idle, as a pool would count them.
    fn pool_use(&self) -> (u32, usize) {
        (1, usize::from(self.held.try_lock().is_ok()))
    }
}
