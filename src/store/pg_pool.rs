//! PostgreSQL connections, lent out one request step at a time.
//!
//! Not sqlx's pool: it sends a ping (a round trip to PostgreSQL) each
//! time a connection comes back, unconditionally (sqlx-core 0.9
//! `pool/connection.rs`), three per passkey sign-in, about 0.1 ms of CPU
//! between the server and PostgreSQL (BENCHMARKS.md); and that ping has no
//! timeout, so a connection cut without a reset never comes back and the
//! pool runs dry. That ping does three jobs, done here otherwise:
//! - it sends the `ROLLBACK` that a dropped transaction leaves queued on
//!   its connection. Here a connection given back with something queued,
//!   or inside a transaction, is settled (`settle`) in a task of its own
//!   before it is lent again, so no lock outlives its step.
//! - it drains what a cancelled statement left unanswered. A request can
//!   be cancelled (its client went away, or the request deadline passed)
//!   only through the deadline middleware (startup.rs), which calls
//!   `connection_failed` first, so every connection is settled before its
//!   next use.
//! - it finds connections that died (PostgreSQL restarted, a proxy cut
//!   them). Here a connection is settled before it is lent if it sat idle
//!   a second, or if any statement failed for want of a connection since
//!   it was last known good (`connection_failed`): after a restart every
//!   connection is dead at once, and one failed request is enough to have
//!   them all checked.
//!
//! A settling that takes longer than `SETTLE_WITHIN` drops the connection.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{ConnectOptions, Connection};
use tokio::sync::{OwnedMutexGuard, OwnedSemaphorePermit, Semaphore};

/// A connection idle this long is settled before it is lent: the server or
/// a proxy may have dropped it meanwhile. One in steady use has just
/// answered.
const PING_AFTER_IDLE: Duration = Duration::from_secs(1);

/// A connection lent after this long is replaced instead, so that a node
/// picks up a failover or a rebalanced proxy without a restart (sqlx's
/// default lifetime).
const MAX_LIFETIME: Duration = Duration::from_secs(30 * 60);

/// The longest a connection may take to settle (a round trip, and a
/// rollback if it was inside a transaction) before it is dropped as dead.
const SETTLE_WITHIN: Duration = Duration::from_secs(2);

/// Counts statements that failed for want of a connection, and requests
/// cancelled midway, in any store of the process; a connection last known
/// good before the latest is settled before it is lent again.
static CONNECTION_FAILURES: AtomicU64 = AtomicU64::new(0);

/// Called when a statement failed with the connection lost, refused or in
/// an unknown state, and before a request is cancelled midway.
pub(crate) fn connection_failed() {
    CONNECTION_FAILURES.fetch_add(1, Ordering::Relaxed);
}

/// Counts writes refused as read-only (SQLSTATE 25006), in any store of
/// the process; a connection opened before the latest is replaced instead
/// of lent. A session keeps the read-only default it began with, and one
/// opened to a server that has since become a standby stays on it: kept,
/// such connections would refuse writes until `MAX_LIFETIME`, long after
/// the database took writes again (behind a failover's new address, or
/// with the setting turned off).
static READ_ONLY_REFUSALS: AtomicU64 = AtomicU64::new(0);

/// Called when PostgreSQL refused a write as read-only.
pub(crate) fn read_only_refused() {
    READ_ONLY_REFUSALS.fetch_add(1, Ordering::Relaxed);
}

pub(crate) struct PgConnections {
    options: PgConnectOptions,
    /// One permit per connection that may be open.
    permits: Arc<Semaphore>,
    max: u32,
    /// Most recently used last: it is the one lent next, its pages warm.
    idle: Mutex<Vec<Slot>>,
    acquire_timeout: Duration,
}

/// A connection, locked while it is lent.
type Slot = Arc<tokio::sync::Mutex<Held>>;

struct Held {
    conn: PgConnection,
    opened: Instant,
    /// When it was last given back.
    since: Instant,
    /// `CONNECTION_FAILURES` when it was last known good.
    failures: u64,
    /// `READ_ONLY_REFUSALS` when it was opened.
    refusals: u64,
}

impl PgConnections {
    pub(crate) fn new(options: PgConnectOptions, max: u32, acquire_timeout: Duration) -> Self {
        PgConnections {
            options,
            permits: Arc::new(Semaphore::new(max as usize)),
            max,
            idle: Mutex::new(Vec::new()),
            acquire_timeout,
        }
    }

    /// A connection for one step, waiting at most the acquire timeout for
    /// one to come free or to open.
    pub(crate) async fn acquire(self: &Arc<Self>) -> Result<PgLease, sqlx::Error> {
        match tokio::time::timeout(self.acquire_timeout, self.lend()).await {
            Ok(lent) => lent,
            Err(_) => Err(sqlx::Error::PoolTimedOut),
        }
    }

    async fn lend(self: &Arc<Self>) -> Result<PgLease, sqlx::Error> {
        let permit =
            self.permits.clone().acquire_owned().await.map_err(|_| sqlx::Error::PoolClosed)?;
        loop {
            // Not in the loop's condition: the lock would be held throughout.
            let slot = self.idle_slots().pop();
            let Some(slot) = slot else { break };
            // Given back a moment ago: its lease may not have let go yet.
            let mut held = slot.lock_owned().await;
            let failures = CONNECTION_FAILURES.load(Ordering::Relaxed);
            let refusals = READ_ONLY_REFUSALS.load(Ordering::Relaxed);
            if held.opened.elapsed() >= MAX_LIFETIME || held.refusals != refusals {
                let slot = OwnedMutexGuard::mutex(&held).clone();
                drop(held);
                if let Some(old) = Arc::into_inner(slot) {
                    let close = old.into_inner().conn.close();
                    tokio::spawn(tokio::time::timeout(SETTLE_WITHIN, close));
                }
                continue;
            }
            if held.since.elapsed() >= PING_AFTER_IDLE || held.failures != failures {
                // A dead one is dropped with its slot: nothing to say
                // goodbye to.
                if settle(&mut held.conn).await.is_err() {
                    continue;
                }
                held.failures = failures;
            }
            return Ok(PgLease { held, pool: self.clone(), permit: Some(permit) });
        }
        // Whatever stops a connection from opening (refused, closed midway
        // by a server shutting down, which sqlx may read as a protocol
        // error, a failed login) means no database for this request: a
        // 503, not a 500. The cause stays in the log.
        let conn = self.options.connect().await.map_err(|error| match error {
            sqlx::Error::Io(_) | sqlx::Error::Tls(_) => error,
            other => sqlx::Error::Io(std::io::Error::other(format!("connecting: {other}"))),
        })?;
        let now = Instant::now();
        let failures = CONNECTION_FAILURES.load(Ordering::Relaxed);
        let refusals = READ_ONLY_REFUSALS.load(Ordering::Relaxed);
        let held = Held { conn, opened: now, since: now, failures, refusals };
        let slot = Arc::new(tokio::sync::Mutex::new(held));
        Ok(PgLease { held: slot.lock_owned().await, pool: self.clone(), permit: Some(permit) })
    }

    fn idle_slots(&self) -> std::sync::MutexGuard<'_, Vec<Slot>> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Connections open (lent or idle), and of them idle.
    pub(crate) fn state(&self) -> (u32, usize) {
        let idle = self.idle_slots().len();
        let lent = self.max as usize - self.permits.available_permits();
        ((idle + lent) as u32, idle)
    }
}

/// Makes sure a connection answers and is outside any transaction, in
/// one round trip: what was queued on it goes first and what was left
/// unanswered is read (sqlx does both before any statement), then an empty
/// transaction ends whatever one was open (a `BEGIN` whose caller went
/// away before it was answered leaves one that sqlx does not count).
async fn settle(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    let settled =
        tokio::time::timeout(SETTLE_WITHIN, sqlx::raw_sql("begin; rollback").execute(conn));
    settled.await.unwrap_or(Err(sqlx::Error::PoolTimedOut)).map(drop)
}

/// A lent connection; it goes back when dropped. Its permit is released
/// after it is back, so a waiter finds it idle.
pub(crate) struct PgLease {
    held: OwnedMutexGuard<Held>,
    pool: Arc<PgConnections>,
    /// Taken only by a settling on the way back, which holds it until done.
    permit: Option<OwnedSemaphorePermit>,
}

impl std::ops::Deref for PgLease {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        &self.held.conn
    }
}

impl std::ops::DerefMut for PgLease {
    fn deref_mut(&mut self) -> &mut PgConnection {
        &mut self.held.conn
    }
}

impl Drop for PgLease {
    fn drop(&mut self) {
        self.held.since = Instant::now();
        let slot = OwnedMutexGuard::mutex(&self.held).clone();
        let conn = &self.held.conn;
        if !conn.should_flush() && !conn.is_in_transaction() {
            self.pool.idle_slots().push(slot);
            return;
        }
        // A transaction dropped midway has its rollback queued, not sent:
        // it is sent now, so that its locks go now, not whenever the
        // connection is next lent. Without a runtime to do it in (never
        // while serving), the connection goes.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let (pool, permit) = (self.pool.clone(), self.permit.take());
        runtime.spawn(async move {
            // Ours once this lease has let go of it.
            let mut held = slot.clone().lock_owned().await;
            if settle(&mut held.conn).await.is_ok() {
                pool.idle_slots().push(slot);
            }
            drop((held, permit));
        });
    }
}
