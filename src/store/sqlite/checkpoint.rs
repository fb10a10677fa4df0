//! Copying the write-ahead log into the database file, off the writer's
//! connection.

use std::sync::Weak;
use std::time::Duration;

use sqlx::sqlite::SqliteConnection;
use tokio::sync::Mutex;

use super::file::DatabaseFile;
use super::group::Held;

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
pub(super) const BACKSTOP_CHECKPOINT_PAGES: u32 = 40_000;

/// Copies the write-ahead log into the database file from a connection of
/// its own. SQLite would do it on the writer's connection at the commit
/// that fills 1,000 pages, and every request waits meanwhile: that copy
/// and its two fsyncs made most of the tail (p95 at 8 in flight 6 to 7 ms
/// with them, 2.9 ms with no checkpoints at all; BENCHMARKS.md). The bulk
/// is copied while writes go on; past `RESTART_LOG_AFTER` the log is
/// started over (`restart_log`), so that it does not grow without end.
pub(super) async fn checkpoints(
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
