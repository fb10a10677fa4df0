//! The SQLite database file, opened once more beside SQLite's own
//! connections, so that the checkpoint task can flush the pages it copied
//! while writes go on.
//!
//! SQLite syncs the database file only when a checkpoint has copied the
//! whole log. Under steady writes only the copy made with writes held back
//! does (`restart_log`), so that one sync flushed everything copied since the
//! last one: about 30 ms here, every request waiting. Flushing first, with
//! writes going on, leaves that sync little to do. This is for speed only:
//! what makes the log safe to start over is still SQLite's own sync.
//!
//! The database holds sealed secrets, password hashes and sessions: its
//! files are made readable by their owner only (mode 0600), whatever the
//! umask.
//!
//! The file is never closed. POSIX record locks belong to a process and a
//! file, not to a descriptor: closing any descriptor of the file drops every
//! lock the process holds on it, SQLite's included. So one descriptor is
//! opened per file and kept for the life of the process.

use std::fs::{File, OpenOptions, Permissions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::Mutex;

/// The files opened so far, by device and inode, each kept open for good.
static OPENED: Mutex<Vec<((u64, u64), &'static File)>> = Mutex::new(Vec::new());

#[derive(Clone, Copy)]
pub(super) struct DatabaseFile(&'static File);

impl DatabaseFile {
    /// The database file at `path`, or None when there is none to flush (an
    /// in-memory database) or it cannot be opened; checkpoints then work as
    /// before, only with a longer hold.
    pub(super) fn open(path: &Path) -> Option<Self> {
        let mut opened = OPENED.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        // Looked up by path first: opening the file again to compare, and
        // closing that descriptor, would drop the locks.
        let key = |meta: &std::fs::Metadata| (meta.dev(), meta.ino());
        let meta = std::fs::metadata(path).ok()?;
        if !meta.is_file() {
            return None;
        }
        if let Some((_, file)) = opened.iter().find(|(opened, _)| *opened == key(&meta)) {
            return Some(DatabaseFile(file));
        }
        let file: &'static File = Box::leak(Box::new(File::open(path).ok()?));
        // The inode opened, which is the one stat saw unless the file was
        // replaced in between.
        let meta = file.metadata().ok()?;
        opened.push((key(&meta), file));
        Some(DatabaseFile(file))
    }

    /// Flushes what was written to the file, on a thread that may block.
    pub(super) async fn flush(self) -> io::Result<()> {
        let DatabaseFile(file) = self;
        tokio::task::spawn_blocking(move || file.sync_data()).await.map_err(io::Error::other)?
    }
}

/// Owner read and write only.
const PRIVATE: u32 = 0o600;

/// Creates the database file, empty and private, before SQLite does (it
/// would create it with the umask's mode). An existing file is left to
/// `make_private`; an in-memory database has no file.
pub(super) fn create_private(path: &Path) -> io::Result<()> {
    if is_in_memory(path) {
        return Ok(());
    }
    // The descriptor is closed before SQLite opens the file, so it holds
    // no lock that closing could drop.
    match OpenOptions::new().write(true).create_new(true).mode(PRIVATE).open(path) {
        Ok(_) => Ok(()),
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(error) => Err(error),
    }
}

/// Sets mode 0600 on the database file and its `-wal` and `-shm` files
/// (SQLite gives those the database file's mode, but a file made by an
/// older version, or copied in, may be wider). Failing to is a warning: the
/// files may belong to another user on a read-only mount.
pub(super) fn make_private(path: &Path) {
    if is_in_memory(path) {
        return;
    }
    for suffix in ["", "-wal", "-shm"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        let file = Path::new(&name);
        let Ok(meta) = std::fs::metadata(file) else { continue };
        if meta.permissions().mode() & 0o777 == PRIVATE {
            continue;
        }
        if let Err(error) = std::fs::set_permissions(file, Permissions::from_mode(PRIVATE)) {
            tracing::warn!(file = %file.display(), %error, "cannot make the database file private (mode 0600)");
        }
    }
}

/// The least free space on the database's file system for the node to
/// say it is ready: far more than one sign-in writes, far less than any
/// disk worth running on.
const LEAST_ROOM: u64 = 1 << 20;

/// Whether the file system holding the database takes writes now: not
/// read-only, and not full. SQLite finds out only when a write needs more
/// room than its files already have: until then reads, and some writes,
/// still go through.
pub(super) fn takes_writes(path: &Path) -> io::Result<()> {
    if is_in_memory(path) {
        return Ok(());
    }
    let name = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)?;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `name` is NUL-terminated, and statvfs fills `stat` when it
    // returns 0.
    let stat = unsafe {
        if libc::statvfs(name.as_ptr(), stat.as_mut_ptr()) != 0 {
            return Err(io::Error::last_os_error());
        }
        stat.assume_init()
    };
    if stat.f_flag & libc::ST_RDONLY != 0 {
        let message = "the database's file system is read-only";
        return Err(io::Error::new(io::ErrorKind::ReadOnlyFilesystem, message));
    }
    let free = stat.f_bavail.saturating_mul(stat.f_frsize);
    if free < LEAST_ROOM {
        let message = format!("the database's file system is full: {free} bytes free");
        return Err(io::Error::new(io::ErrorKind::StorageFull, message));
    }
    Ok(())
}

fn is_in_memory(path: &Path) -> bool {
    path.as_os_str().is_empty() || path == Path::new(":memory:")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Descriptors this process holds on `path`.
    fn descriptors_of(path: &Path) -> usize {
        let path = path.canonicalize().unwrap();
        std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
            .filter(|target| *target == path)
            .count()
    }

    #[tokio::test]
    async fn a_database_file_is_opened_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("one.db");
        std::fs::write(&path, b"pages").unwrap();
        let first = DatabaseFile::open(&path).expect("a file to flush");
        let second = DatabaseFile::open(&path).expect("the same file");
        assert!(std::ptr::eq(first.0, second.0), "one descriptor per file");
        assert_eq!(descriptors_of(&path), 1);
        first.flush().await.unwrap();
        second.flush().await.unwrap();
        assert_eq!(descriptors_of(&path), 1, "kept open after flushing");
    }

    #[test]
    fn there_is_nothing_to_flush_without_a_file() {
        let dir = tempfile::tempdir().unwrap();
        assert!(DatabaseFile::open(Path::new(":memory:")).is_none());
        assert!(DatabaseFile::open(&dir.path().join("missing.db")).is_none());
        assert!(DatabaseFile::open(dir.path()).is_none(), "a folder is not a database file");
    }
}
