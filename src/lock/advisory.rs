//! The advisory backend: an fs4 (flock/LockFileEx) exclusive lock on
//! `<store>/lock`. The only module that calls fs4.
//!
//! The kernel releases the lock when the holder's process dies, however it
//! dies, so a crashed writer never leaves a stale lock behind. The lock file
//! itself is never deleted: deleting it would let two processes lock two
//! different inodes under the same name. Since others can delete it, a
//! writer checks that the file it locked is still the one at the name, when
//! it takes the lock and again right before it commits.

use std::fs::File;
use std::io;
use std::path::Path;

use fs4::{FileExt, TryLockError};

/// Outcome of one non-blocking attempt.
pub(crate) enum Attempt {
    Acquired(File),
    Busy,
}

/// Opens the lock file through the store's open gate: never through a
/// planted link, never blocking on a FIFO or device (a clear error instead),
/// only a regular file; created exclusively with mode 0600 when missing.
fn open(path: &Path, create: bool) -> io::Result<File> {
    if create {
        crate::durable::open_read_write(path, true)
    } else {
        crate::durable::open_no_follow(path)
    }
}

/// Tries once to take the exclusive lock.
///
/// The lock guards the store only while the file locked is the one at
/// `path`. Someone else may remove it (`rm`, a temp-file cleaner: the empty
/// file's times never change): a writer that opened it just before then
/// locks a file nobody else will ever open, while the next writer creates
/// a new one and locks that. So the file is checked to still be at `path`
/// once locked, and opened again if it is not.
pub(crate) fn try_acquire(path: &Path) -> io::Result<Attempt> {
    if crate::test_hooks::advisory_lock_disabled() {
        return Err(io::Error::from(io::ErrorKind::Unsupported));
    }
    for _ in 0..3 {
        let file = open(path, true)?;
        match FileExt::try_lock(&file) {
            Ok(()) if still_at(&file, path)? => return Ok(Attempt::Acquired(file)),
            // Removed or replaced meanwhile: this lock guards nothing.
            Ok(()) => continue,
            Err(TryLockError::WouldBlock) => return Ok(Attempt::Busy),
            Err(TryLockError::Error(e)) => return Err(e),
        }
    }
    // Replaced at every try: someone keeps removing it; wait and retry.
    Ok(Attempt::Busy)
}

/// Whether the locked `file` is still the file at `path` (same device and
/// inode), as a holder checks again right before it commits: if not, it
/// was removed or replaced, and another writer may hold a lock on the file
/// there now.
pub(crate) fn still_at(file: &File, path: &Path) -> io::Result<bool> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let held = file.metadata()?;
        match std::fs::symlink_metadata(path) {
            Ok(now) => Ok(now.dev() == held.dev() && now.ino() == held.ino()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }
    // Windows: a file std opened cannot be deleted or renamed over while it
    // is open (no FILE_SHARE_DELETE), so it is still there.
    #[cfg(not(unix))]
    {
        let _ = (file, path);
        Ok(true)
    }
}

/// Releases the lock (closing the file would too; this logs a failure).
pub(crate) fn release(file: &File, path: &Path) {
    if let Err(e) = FileExt::unlock(file) {
        tracing::warn!(path = %path.display(), error = %e, "failed to unlock the writer lock; it is released when the process exits");
    }
}

/// Whether someone holds the lock right now, without waiting and without
/// creating the lock file. `None`: no lock file, so nobody has ever held it.
///
/// The probe takes a shared lock for an instant; a writer polling at that
/// moment retries a millisecond later.
pub(crate) fn probe(path: &Path) -> io::Result<Option<bool>> {
    if crate::test_hooks::advisory_lock_disabled() {
        return Err(io::Error::from(io::ErrorKind::Unsupported));
    }
    let file = match open(path, false) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    match FileExt::try_lock_shared(&file) {
        Ok(()) => {
            let _ = FileExt::unlock(&file);
            Ok(Some(false))
        }
        Err(TryLockError::WouldBlock) => Ok(Some(true)),
        Err(TryLockError::Error(e)) => Err(e),
    }
}

/// Whether an error from the lock call means "advisory locks do not work here".
pub(crate) fn is_unsupported(err: &io::Error) -> bool {
    matches!(err.kind(), io::ErrorKind::Unsupported)
        || matches!(err.raw_os_error(), Some(37) | Some(38) | Some(95)) // ENOLCK, ENOSYS, EOPNOTSUPP on Linux
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn a_lock_file_removed_or_replaced_after_locking_is_not_still_at_its_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("lock");
        let Attempt::Acquired(held) = try_acquire(&path).expect("lock") else {
            panic!("a fresh lock file is free");
        };
        assert!(still_at(&held, &path).expect("stat"));
        std::fs::remove_file(&path).expect("rm");
        assert!(!still_at(&held, &path).expect("stat"), "removed");
        // A new file there, which the next writer locks: not ours either.
        let Attempt::Acquired(next) = try_acquire(&path).expect("lock") else {
            panic!("the new file is free: nobody else holds it");
        };
        assert!(!still_at(&held, &path).expect("stat"), "replaced");
        assert!(still_at(&next, &path).expect("stat"));
    }
}
