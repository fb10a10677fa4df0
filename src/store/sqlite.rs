//! The embedded default: one SQLite file in WAL mode. Writes are durable
//! against a killed process (WAL with synchronous=NORMAL survives SIGKILL;
//! only power loss can drop the last commits).

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use anyhow::Context;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqliteSynchronous};
use sqlx::{ConnectOptions, Row};
use tokio::sync::{Mutex, OwnedMappedMutexGuard, OwnedMutexGuard, watch};

use super::sql::{COUNTED_USE, audit_columns, ceremony_insert, impl_store, session_columns};
use super::sqlite_file::{self, DatabaseFile};
use super::{
    AuditFilter, AuditRow, CeremonyRow, CredentialRow, CredentialUse, EmailCodeRow, FactorCounts,
    LoginRows, LoginStored, MIGRATOR, RefreshOutcome, SecretPlace, SessionRow, SigningKeyRow,
    StoreError, StoreResult, TotpRow, UserRow,
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
        sqlite_file::create_private(options.get_filename())
            .with_context(|| format!("cannot create {}", settings.url.redacted()))?;
        let mut conn = options
            .clone()
            .connect()
            .await
            .with_context(|| format!("cannot open {}", settings.url.redacted()))?;
        MIGRATOR.run(&mut conn).await.context("SQLite migrations failed")?;
        // The log and shared-memory files exist once the migrations ran.
        sqlite_file::make_private(options.get_filename());
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
        let held = Held { conn, group: None, groups: 0, in_flight: InFlight::Nothing, options };
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

/// How often the write-ahead log is copied into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);

/// Past this many pages (64 MiB) the log is started over, with writes held
/// back for the end of the copy. Each time costs writes a few ms (two
/// fsyncs), so not too often: at 2,000 pages it was every tick under load
/// and p99 at 32 in flight rose; at 16,000, about five times a second at
/// 4,000 sign-ins/s (machine F), or every 0.8 s at 3,000 (machine G, with
/// the file flushed first: held 9 to 12 ms each; BENCHMARKS.md).
const RESTART_LOG_AFTER: i64 = 16_000;

/// The writer's own checkpoint (SQLite's default is 1,000 pages), left as
/// a backstop should the checkpoint task fall behind or fail. It copies
/// the whole log with every write waiting (13 ms at a time here).
const BACKSTOP_CHECKPOINT_PAGES: u32 = 40_000;

/// Copies the write-ahead log into the database file from a connection of
/// its own. SQLite would do it on the writer's connection at the commit
/// that fills 1,000 pages, and every request waits meanwhile: that copy
/// and its two fsyncs made most of the tail (p95 at 8 in flight 6 to 7 ms
/// with them, 2.9 ms with no checkpoints at all; BENCHMARKS.md). The bulk
/// is copied while writes go on; past `RESTART_LOG_AFTER` the log is
/// started over (`restart_log`), so that it does not grow without end.
async fn checkpoints(
    held: Weak<Mutex<Held>>,
    mut copier: SqliteConnection,
    file: Option<DatabaseFile>,
) {
    let mut ticks = tokio::time::interval(CHECKPOINT_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The log's length the last time it was all copied with writes held.
    let mut restarted_at = None;
    loop {
        ticks.tick().await;
        let Some(held) = held.upgrade() else { return };
        let copied = match checkpoint(&mut copier).await {
            Ok((log, _)) if log < RESTART_LOG_AFTER => continue,
            // All copied and nothing written since: the next write starts
            // the log over, with nobody held back for it.
            Ok((log, copied)) if copied == log && restarted_at == Some(log) => continue,
            Ok(_) => {
                restart_log(&held, &mut copier, file).await.map(|log| restarted_at = Some(log))
            }
            Err(error) => Err(error),
        };
        if let Err(error) = copied {
            tracing::warn!(%error, "SQLite checkpoint failed; the writer's own will run");
        }
    }
}

/// Copies the rest of the log with writes held back, so that the next
/// write starts it over; the log's length then. Under steady writes a
/// checkpoint never catches up by itself (it copies what the log held
/// when it began, and the writes meanwhile add more), so the log grew
/// until the backstop copied it all with every write waiting.
///
/// Before writes are held, the copy runs and the database file is flushed
/// twice (the second time for what came in during the first), so that
/// what is left to copy and sync while they wait is only what came in
/// during the second: at 32 in flight writes were held 30 ms and more
/// without the flushes, when SQLite's sync had every page copied since the
/// last restart to flush (BENCHMARKS.md, machine G).
async fn restart_log(
    held: &Mutex<Held>,
    copier: &mut SqliteConnection,
    file: Option<DatabaseFile>,
) -> Result<i64, sqlx::Error> {
    for _ in 0..2 {
        checkpoint(copier).await?;
        if let Some(file) = file {
            file.flush().await?;
        }
    }
    let mut held = held.lock().await;
    held.recover().await;
    // An open group would hold its pages back from the copy. Its writers
    // are told how it went.
    let _ = held.commit().await;
    Ok(checkpoint(copier).await?.0)
}

/// A checkpoint that waits for no one: the pages in the log, and how many
/// of them are now in the database file.
async fn checkpoint(copier: &mut SqliteConnection) -> Result<(i64, i64), sqlx::Error> {
    let (_busy, log, copied): (i64, i64, i64) =
        sqlx::query_as("pragma wal_checkpoint(passive)").fetch_one(copier).await?;
    Ok((log, copied))
}

/// The connection and the group of writes open on it.
struct Held {
    conn: SqliteConnection,
    group: Option<Group>,
    groups: u64,
    /// What ran when the connection was last let go of. Anything but
    /// `Nothing` means its caller went away midway (a request that was
    /// cancelled), and the next holder sets things straight (`recover`).
    in_flight: InFlight,
    /// To open the file again (`reopen`).
    options: SqliteConnectOptions,
}

#[derive(Clone, Copy, PartialEq)]
enum InFlight {
    Nothing,
    /// A grouped write; true if it joined under a savepoint.
    Write(Way, bool),
    /// A commit or a rollback.
    Ending,
}

/// An open transaction holding answered-to-be writes.
struct Group {
    id: u64,
    /// Some once committed or rolled back; a dropped sender also means
    /// rolled back.
    done: watch::Sender<Option<Result<(), Lost>>>,
    committer: bool,
}

/// Why a group of writes was rolled back, which its writers answer with.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Lost {
    /// The file could not take it (full, read-only, failing): every writer
    /// of the group gets a 503, as a write of its own would have.
    Unavailable,
    /// Anything else: a caller that went away midway, an unknown error.
    Other,
}

impl Lost {
    fn by(error: &sqlx::Error) -> Lost {
        match error {
            sqlx::Error::Database(db) if super::refuses_writes(db.as_ref()) => Lost::Unavailable,
            sqlx::Error::Io(_) | sqlx::Error::WorkerCrashed => Lost::Unavailable,
            _ => Lost::Other,
        }
    }
}

impl Held {
    /// Commits the open group, if any, and tells its writers; why not, if
    /// it had to be rolled back. Callers that may be cancelled go through
    /// `commit_apart`.
    async fn commit(&mut self) -> Result<(), Lost> {
        let Some(id) = self.group.as_ref().map(|group| group.id) else { return Ok(()) };
        self.in_flight = InFlight::Ending;
        let committed = sqlx::query("commit").execute(&mut self.conn).await;
        self.in_flight = InFlight::Nothing;
        match committed {
            Ok(_) => {
                if let Some(group) = self.group.take() {
                    group.done.send_replace(Some(Ok(())));
                }
                Ok(())
            }
            Err(error) => {
                tracing::error!(%error, group = id, "a group of writes could not be committed");
                let lost = Lost::by(&error);
                self.abandon(lost).await;
                Err(lost)
            }
        }
    }

    /// Rolls back whatever transaction is open (none is fine) and tells the
    /// open group's writers that nothing of theirs was kept, and why.
    async fn abandon(&mut self, why: Lost) {
        self.in_flight = InFlight::Ending;
        let rolled_back = sqlx::query("rollback").execute(&mut self.conn).await;
        self.in_flight = InFlight::Nothing;
        if let Some(group) = self.group.take() {
            group.done.send_replace(Some(Err(why)));
        }
        if let Err(error) = rolled_back
            && !says(&error, "no transaction is active")
        {
            // A transaction may still be open, and every later statement
            // would run inside it and never be committed: start afresh.
            tracing::error!(%error, "SQLite rollback failed; opening the file again");
            if let Err(error) = self.reopen().await {
                tracing::error!(%error, "SQLite: cannot open the file again");
            }
        }
    }

    /// A fresh connection in place of one that cannot go on (its thread
    /// gone, or a transaction that would not end).
    async fn reopen(&mut self) -> Result<(), sqlx::Error> {
        self.conn = self.options.connect().await?;
        self.in_flight = InFlight::Nothing;
        Ok(())
    }

    /// sqlx counts the transactions it began on the connection. Once the
    /// connection is let go of, none of them can be open; if sqlx still
    /// counts one after the rollback a dropped transaction queued has run,
    /// SQLite ended it without sqlx: a COMMIT refused for a full or
    /// read-only disk rolls back by itself, and the ROLLBACK sqlx then
    /// sends fails. Counting on, sqlx would begin the next transaction as
    /// a savepoint, and take a refused one back with ROLLBACK TO, which
    /// leaves a transaction open: every write after it would run inside
    /// it, be answered, and never be committed. A fresh connection counts
    /// from nought; without one, nothing is written.
    async fn forget_ended_transaction(&mut self) -> StoreResult<()> {
        if !sqlx::Connection::is_in_transaction(&self.conn) {
            return Ok(());
        }
        // Queued commands run in order: after this, the rollback has run.
        let answered = sqlx::query("select 1").execute(&mut self.conn).await;
        if answered.is_err() || sqlx::Connection::is_in_transaction(&self.conn) {
            tracing::warn!("sqlx counts a transaction that SQLite ended; opening the file again");
            self.reopen().await?;
        }
        Ok(())
    }

    /// Sets straight what a caller that went away midway left: a write
    /// that joined a group is taken back to its savepoint, or, being one
    /// statement, ran whole or not at all, so the rest of the group stays;
    /// anything else ends the transaction and its group.
    async fn recover(&mut self) {
        match self.in_flight {
            InFlight::Nothing => {}
            InFlight::Write(Way::Join, false) => self.in_flight = InFlight::Nothing,
            InFlight::Write(Way::Join, true) => {
                self.in_flight = InFlight::Ending;
                let undone = sqlx::query(UNDO_JOINED).execute(&mut self.conn).await;
                self.in_flight = InFlight::Nothing;
                match undone {
                    // Undone, or already released: the write had finished.
                    Ok(_) => {}
                    Err(error) if says(&error, "no such savepoint") => {}
                    Err(_) => self.abandon(Lost::Other).await,
                }
            }
            InFlight::Write(..) | InFlight::Ending => self.abandon(Lost::Other).await,
        }
    }
}

/// Whether SQLite answered with this message.
fn says(error: &sqlx::Error, message: &str) -> bool {
    matches!(error, sqlx::Error::Database(db) if db.message().contains(message))
}

/// Commits the open group in a task of its own: a caller cancelled midway
/// would otherwise leave the commit's outcome unknown, and its writers
/// told the wrong one.
async fn commit_apart(
    held: OwnedMutexGuard<Held>,
) -> StoreResult<(OwnedMutexGuard<Held>, Result<(), Lost>)> {
    if held.group.is_none() {
        return Ok((held, Ok(())));
    }
    let committing = tokio::spawn(async move {
        let mut held = held;
        let committed = held.commit().await;
        (held, committed)
    });
    committing.await.map_err(|error| StoreError::Other(error.into()))
}

/// Takes a joined write back, leaving the rest of its group.
const UNDO_JOINED: &str = "rollback to joined; release joined";

/// A write's statements as sent each of three ways: alone in a transaction
/// of its own, opening a group, or joining the open group. A write of
/// several statements joins under a savepoint, so that it can fail alone;
/// one that writes with one statement needs none, and skips its cost
/// (SQLite copies every page the write replaces into the savepoint's
/// journal: about 5 to 10 % of a sign-in's CPU, BENCHMARKS.md).
struct GroupedSql {
    alone: &'static str,
    open: &'static str,
    join: &'static str,
    savepoint: bool,
}

macro_rules! grouped_sql {
    ($steps:expr) => {
        GroupedSql {
            alone: concat!("begin immediate; ", $steps, "; commit"),
            open: concat!("begin immediate; ", $steps),
            join: $steps,
            savepoint: false,
        }
    };
    (savepoint: $steps:expr) => {
        GroupedSql {
            join: concat!("savepoint joined; ", $steps, "; release joined"),
            savepoint: true,
            ..grouped_sql!($steps)
        }
    };
}

#[derive(Clone, Copy, PartialEq)]
enum Way {
    Alone,
    Open,
    Join,
}

/// The connection, held for one grouped write.
struct WriteTurn<'a> {
    held: OwnedMutexGuard<Held>,
    way: Way,
    store: &'a SqliteStore,
    tidy: Tidy,
}

impl WriteTurn<'_> {
    fn sql(&mut self, sql: &GroupedSql) -> &'static str {
        self.held.in_flight = InFlight::Write(self.way, sql.savepoint);
        match self.way {
            Way::Alone => sql.alone,
            Way::Open => sql.open,
            Way::Join => sql.join,
        }
    }

    fn conn(&mut self) -> &mut SqliteConnection {
        &mut self.held.conn
    }

    /// After the write's statements ran: answers once its group committed.
    async fn finish<T>(self, wrote: Result<T, sqlx::Error>) -> StoreResult<T> {
        let WriteTurn { held, way, store, mut tidy } = self;
        let answer = settle(held, way, store, wrote).await;
        tidy.0 = None;
        answer
    }
}

async fn settle<T>(
    mut held: OwnedMutexGuard<Held>,
    way: Way,
    store: &SqliteStore,
    wrote: Result<T, sqlx::Error>,
) -> StoreResult<T> {
    let value = match wrote {
        Ok(value) => value,
        Err(error) => {
            // A refused row (a constraint) leaves a joined write's group:
            // the write goes back to its savepoint, or was one statement
            // refused whole. Any other error may have ended SQLite's
            // transaction by itself, so the group goes; and a write that
            // opened a group, or went alone, takes its transaction along.
            let refused = matches!(&error, sqlx::Error::Database(db)
                if db.kind() != sqlx::error::ErrorKind::Other);
            match held.in_flight {
                InFlight::Write(Way::Join, _) if !refused => held.abandon(Lost::by(&error)).await,
                _ => held.recover().await,
            }
            return Err(error.into());
        }
    };
    held.in_flight = InFlight::Nothing;
    if way == Way::Alone {
        return Ok(value);
    }
    if store.waiting.load(Ordering::Acquire) == 0 {
        // Nobody left to join: commit now rather than hand over.
        let (_, committed) = commit_apart(held).await?;
        return committed.map(|()| value).map_err(group_lost);
    }
    let Some(group) = held.group.as_mut() else {
        return Err(group_lost(Lost::Other));
    };
    let mut done = group.done.subscribe();
    if !group.committer {
        group.committer = true;
        tokio::spawn(commit_later(store.held.clone(), store.waiting.clone(), group.id));
    }
    drop(held);
    match done.wait_for(Option::is_some).await.map(|done| *done) {
        Ok(Some(Ok(()))) => Ok(value),
        Ok(Some(Err(lost))) => Err(group_lost(lost)),
        _ => Err(group_lost(Lost::Other)),
    }
}

/// Armed while a write's turn may leave the connection half-done: a
/// request cancelled midway may leave a transaction open, which holds
/// SQLite's write lock against every other process until the next request
/// here. Dropped armed, it sets that straight at once.
struct Tidy(Option<Arc<Mutex<Held>>>);

impl Drop for Tidy {
    fn drop(&mut self) {
        if let Some(shared) = self.0.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(async move { shared.lock().await.recover().await });
        }
    }
}

fn group_lost(why: Lost) -> StoreError {
    let lost = anyhow::anyhow!("a group of writes was rolled back; see the log before this");
    match why {
        Lost::Unavailable => StoreError::Unavailable(lost),
        Lost::Other => StoreError::Other(lost),
    }
}

/// Queues for the connection behind the requests waiting now, which may
/// join the group, and then commits it unless someone did already. It
/// counts as waiting: a write that comes meanwhile opens a group instead of
/// committing alone, which is what keeps groups forming under load.
async fn commit_later(held: Arc<Mutex<Held>>, waiting: Arc<AtomicUsize>, id: u64) {
    let mut held = {
        let _waiting = Waiting::new(&waiting);
        held.lock().await
    };
    held.recover().await;
    if held.group.as_ref().is_some_and(|group| group.id == id) {
        // Its writers are told how it went.
        let _ = held.commit().await;
    }
}

/// Counts a task in `waiting` for as long as it waits.
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn new(waiting: &'a AtomicUsize) -> Self {
        waiting.fetch_add(1, Ordering::AcqRel);
        Waiting(waiting)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
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
    async fn db(&self) -> StoreResult<Conn> {
        // A failed commit has told its own writers; this caller goes on.
        let (held, _) = commit_apart(self.lock().await?).await?;
        Ok(OwnedMutexGuard::map(held, |held| &mut held.conn))
    }

    /// The connection, for the read at a sign-in's finish: it may see the
    /// open group's writes. What it reads feeds a write that waits for the
    /// group (or a later one), and a write that finds its ceremony gone
    /// stores nothing, so nothing is answered on rows that may not stay.
    async fn read_db(&self) -> StoreResult<Conn> {
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
    async fn ping_db(&self) -> StoreResult<()> {
        self.ping_connection().await?;
        let unavailable = |error: std::io::Error| StoreError::Unavailable(error.into());
        sqlite_file::takes_writes(&self.path).map_err(unavailable)?;
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

    /// Connections open and idle, as a pool would count them.
    fn pool_use(&self) -> (u32, usize) {
        (1, usize::from(self.held.try_lock().is_ok()))
    }

    async fn store_ceremony(&self, ceremony: &CeremonyRow) -> StoreResult<()> {
        // Alone, one statement is its own transaction.
        const PUT: GroupedSql =
            GroupedSql { alone: ceremony_insert!(), ..grouped_sql!(ceremony_insert!()) };
        let mut turn = self.write_turn().await?;
        let query = sqlx::query(turn.sql(&PUT));
        let wrote = bind_ceremony(query, ceremony).execute(turn.conn()).await;
        turn.finish(wrote.map(drop)).await
    }

    /// A sign-in's writes in one transaction, and in one call to the
    /// connection's thread: the statements go as one text, each running
    /// only if the one before it wrote a row (`changes()` counts the
    /// statement that finished last). The counter only if the handle was
    /// recorded as used here first; the session, refresh token and audit row only if the counter
    /// moved forward, so a ceremony already gone writes nothing. As on
    /// PostgreSQL, a counter that did not move forward still takes the
    /// ceremony (the caller takes it anyway on refusal).
    async fn store_login(&self, login: &LoginRows<'_>) -> StoreResult<LoginStored> {
        const LOGIN: GroupedSql = grouped_sql!(savepoint: concat!(
            "insert into ceremony (ceremony_id, kind, user_id, state, expires_at) \
               values ($1, 'used', null, '', $29) on conflict (ceremony_id) do nothing \
               returning 'taken'; \
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
            " select $18, $19, $20, $21, $22, $23, $24, $25, $26, $27, $28 where changes() = 1; \
             delete from login_failure where subject = 'user:' || $8 and changes() = 1"
        ));
        let mut turn = self.write_turn().await?;
        let used = login.used;
        let query = sqlx::query(turn.sql(&LOGIN))
            .bind(login.used_id)
            .bind(&used.credential_id)
            .bind(used.backup_eligible)
            .bind(used.sign_count)
            .bind(used.backup_state)
            .bind(used.used_at);
        let query = bind_session(query, login.session).bind(login.refresh_hash);
        let query = bind_audit(query, login.audit).bind(login.handle_expires_at);
        let wrote = query.fetch_all(turn.conn()).await;
        let steps = turn.finish(wrote).await?;
        let done = |step: &str| {
            steps.iter().any(|row| row.try_get::<&str, _>(0).is_ok_and(|done| done == step))
        };
        Ok(if !done("taken") {
            LoginStored::CeremonyGone
        } else if done("counted") {
            LoginStored::Done
        } else {
            LoginStored::CounterNotIncreased
        })
    }
}

impl_store!(SqliteStore);
