//! The operator's database tasks that are no request's: the schema
//! version the migrations reach (`passgate migrate`), and an online copy
//! of a SQLite database (`passgate backup`), safe while nodes serve.

use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use anyhow::{Context, bail};
use sqlx::ConnectOptions;
use sqlx::sqlite::SqliteConnectOptions;

use super::MIGRATOR;
use crate::config::{Backend, DatabaseSettings};

/// The number of migrations this build carries and the version of the
/// newest: what `connect` brings every database to.
pub fn migrations() -> (usize, i64) {
    let newest = MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0);
    (MIGRATOR.iter().count(), newest)
}

/// What `backup_sqlite` wrote.
#[derive(Debug)]
pub struct Backup {
    pub bytes: u64,
    pub accounts: i64,
}

/// Copies the configured SQLite database to `target` with `VACUUM INTO`:
/// one read transaction, so the copy is a consistent snapshot while nodes
/// go on writing (in WAL mode a reader holds up no writer; the log only
/// grows until the copy ends), and compact.
/// `target` must not exist: it is created first, empty and readable by
/// its owner only (the copy holds what the database holds), which also
/// keeps two backups from writing one file. A partial copy is removed.
pub async fn backup_sqlite(settings: &DatabaseSettings, target: &Path) -> anyhow::Result<Backup> {
    if settings.url.backend()? == Backend::Postgres {
        bail!(
            "backup copies a SQLite database; database.url is PostgreSQL ({}): \
             use pg_dump, e.g. pg_dump --format=custom --file=passgate.dump DATABASE_URL",
            settings.url.redacted()
        );
    }
    let source = SqliteConnectOptions::from_str(settings.url.expose())
        .with_context(|| format!("database.url: {} is not a SQLite URL", settings.url.redacted()))?
        .create_if_missing(false)
        .busy_timeout(Duration::from_secs(10));
    let mut conn = source
        .connect()
        .await
        .with_context(|| format!("cannot open {}", settings.url.redacted()))?;
    let created = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(target);
    match created {
        Ok(file) => drop(file),
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
            bail!("{} already exists; a backup never overwrites a file", target.display())
        }
        Err(error) => {
            return Err(error).with_context(|| format!("cannot create {}", target.display()));
        }
    }
    let copied = copy_into(&mut conn, target).await;
    if copied.is_err() {
        let _ = std::fs::remove_file(target);
    }
    copied
}

async fn copy_into(conn: &mut sqlx::SqliteConnection, target: &Path) -> anyhow::Result<Backup> {
    let Some(name) = target.to_str() else {
        bail!("{}: the backup's path must be UTF-8", target.display());
    };
    sqlx::query("vacuum into $1")
        .bind(name)
        .execute(&mut *conn)
        .await
        .with_context(|| format!("copying the database into {} failed", target.display()))?;
    // Read back from the copy itself: what a restore would find. In
    // rollback-journal mode it is one self-contained file (a WAL-mode copy
    // would need its -shm beside it to be opened read-only).
    let mut copy = SqliteConnectOptions::new()
        .filename(target)
        .create_if_missing(false)
        .journal_mode(sqlx::sqlite::SqliteJournalMode::Delete)
        .connect()
        .await
        .with_context(|| format!("cannot open the copy {}", target.display()))?;
    let check: String = sqlx::query_scalar("pragma quick_check").fetch_one(&mut copy).await?;
    if check != "ok" {
        bail!("the copy {} fails SQLite's check: {check}", target.display());
    }
    let accounts: i64 =
        sqlx::query_scalar("select count(*) from app_user").fetch_one(&mut copy).await?;
    drop(copy);
    std::fs::File::open(target)
        .and_then(|file| file.sync_all())
        .with_context(|| format!("cannot flush {}", target.display()))?;
    let bytes = std::fs::metadata(target)?.len();
    Ok(Backup { bytes, accounts })
}
