//! The advisory backend: an fs4 (flock/LockFileEx) exclusive lock on
//! `<store>/lock`. The only module that calls fs4.
//!
//! The kernel releases the lock when the holder's process dies, however it
//! dies, so a crashed writer never leaves a stale lock behind. The lock file
//! itself is never deleted: deleting it would let two processes lock two
//! different inodes under the same name.

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
pub(crate) fn try_acquire(path: &Path) -> io::Result<Attempt> {
    if crate::test_hooks::advisory_lock_disabled() {
        return Err(io::Error::from(io::ErrorKind::Unsupported));
    }
    let file = open(path, true)?;
    match FileExt::try_lock(&file) {
        Ok(()) => Ok(Attempt::Acquired(file)),
        Err(TryLockError::WouldBlock) => Ok(Attempt::Busy),
        Err(TryLockError::Error(e)) => Err(e),
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
