//! Group commit: writes that wait for the one connection share one
//! transaction and one commit, each answered once its group committed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};

use sqlx::ConnectOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use tokio::sync::{Mutex, OwnedMutexGuard, watch};

use super::SqliteStore;
use crate::store::{StoreError, StoreResult};

/// The connection and the group of writes open on it.
pub(crate) struct Held {
    pub(super) conn: SqliteConnection,
    pub(super) group: Option<Group>,
    pub(super) groups: u64,
    /// What ran when the connection was last let go of. Anything but
    /// `Nothing` means its caller went away midway (a request that was
    /// cancelled), and the next holder sets things straight (`recover`).
    pub(super) in_flight: InFlight,
    /// To open the file again (`reopen`).
    options: SqliteConnectOptions,
}

#[derive(Clone, Copy, PartialEq)]
pub(super) enum InFlight {
    Nothing,
    /// A grouped write; true if it joined under a savepoint.
    Write(Way, bool),
    /// A commit or a rollback.
    Ending,
}

/// An open transaction holding answered-to-be writes.
pub(super) struct Group {
    pub(super) id: u64,
    /// Some once committed or rolled back; a dropped sender also means
    /// rolled back.
    pub(super) done: watch::Sender<Option<Result<(), Lost>>>,
    pub(super) committer: bool,
}

/// Why a group of writes was rolled back, which its writers answer with.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Lost {
    /// The file could not take it (full, read-only, failing): every writer
    /// of the group gets a 503, as a write of its own would have.
    Unavailable,
    /// Anything else: a caller that went away midway, an unknown error.
    Other,
}

impl Lost {
    fn by(error: &sqlx::Error) -> Lost {
        match error {
            sqlx::Error::Database(db) if crate::store::refuses_writes(db.as_ref()) => {
                Lost::Unavailable
            }
            sqlx::Error::Io(_) | sqlx::Error::WorkerCrashed => Lost::Unavailable,
            _ => Lost::Other,
        }
    }
}

impl Held {
    pub(super) fn new(conn: SqliteConnection, options: SqliteConnectOptions) -> Held {
        Held { conn, group: None, groups: 0, in_flight: InFlight::Nothing, options }
    }

    /// Commits the open group, if any, and tells its writers; why not, if
    /// it had to be rolled back. Callers that may be cancelled go through
    /// `commit_apart`.
    pub(super) async fn commit(&mut self) -> Result<(), Lost> {
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
    pub(super) async fn reopen(&mut self) -> Result<(), sqlx::Error> {
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
    pub(super) async fn forget_ended_transaction(&mut self) -> StoreResult<()> {
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
    pub(super) async fn recover(&mut self) {
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
pub(super) async fn commit_apart(
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
pub(super) struct GroupedSql {
    alone: String,
    open: String,
    join: String,
    savepoint: bool,
}

impl GroupedSql {
    /// `steps` in a transaction of their own when alone, so that they
    /// commit or roll back whole.
    pub(super) fn new(steps: &str) -> GroupedSql {
        GroupedSql {
            alone: format!("begin immediate; {steps}; commit"),
            open: format!("begin immediate; {steps}"),
            join: steps.to_owned(),
            savepoint: false,
        }
    }

    /// One statement, which alone is its own transaction.
    pub(super) fn one(statement: &str) -> GroupedSql {
        GroupedSql { alone: statement.to_owned(), ..GroupedSql::new(statement) }
    }

    /// The grouped forms of a single statement the aggregates write with
    /// (`Engine::write_shared`), made once per statement: a handful of
    /// texts, kept for the life of the process, as sqlx caches their
    /// prepared statements anyway.
    pub(super) fn shared(statement: &'static str) -> &'static GroupedSql {
        static MADE: LazyLock<std::sync::Mutex<HashMap<&'static str, &'static GroupedSql>>> =
            LazyLock::new(Default::default);
        let mut made = match MADE.lock() {
            Ok(made) => made,
            Err(poisoned) => poisoned.into_inner(),
        };
        made.entry(statement).or_insert_with(|| Box::leak(Box::new(GroupedSql::one(statement))))
    }

    /// Steps that, joining a group, go back to a savepoint of their own if
    /// they fail.
    pub(super) fn with_savepoint(steps: &str) -> GroupedSql {
        GroupedSql {
            join: format!("savepoint joined; {steps}; release joined"),
            savepoint: true,
            ..GroupedSql::new(steps)
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
pub(super) enum Way {
    Alone,
    Open,
    Join,
}

/// The connection, held for one grouped write.
pub(super) struct WriteTurn<'a> {
    pub(super) held: OwnedMutexGuard<Held>,
    pub(super) way: Way,
    pub(super) store: &'a SqliteStore,
    pub(super) tidy: Tidy,
}

impl WriteTurn<'_> {
    pub(super) fn sql<'s>(&mut self, sql: &'s GroupedSql) -> &'s str {
        self.held.in_flight = InFlight::Write(self.way, sql.savepoint);
        match self.way {
            Way::Alone => &sql.alone,
            Way::Open => &sql.open,
            Way::Join => &sql.join,
        }
    }

    pub(super) fn conn(&mut self) -> &mut SqliteConnection {
        &mut self.held.conn
    }

    /// After the write's statements ran: answers once its group committed.
    pub(super) async fn finish<T>(self, wrote: Result<T, sqlx::Error>) -> StoreResult<T> {
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
pub(super) struct Tidy(pub(super) Option<Arc<Mutex<Held>>>);

impl Drop for Tidy {
    fn drop(&mut self) {
        if let Some(shared) = self.0.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(async move { shared.lock().await.recover().await });
        }
    }
}

pub(super) fn group_lost(why: Lost) -> StoreError {
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
pub(super) async fn commit_later(held: Arc<Mutex<Held>>, waiting: Arc<AtomicUsize>, id: u64) {
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
pub(super) struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    pub(super) fn new(waiting: &'a AtomicUsize) -> Self {
        waiting.fetch_add(1, Ordering::AcqRel);
        Waiting(waiting)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}
