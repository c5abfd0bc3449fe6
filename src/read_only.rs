//! Removing and replacing read-only files (Windows).
//!
//! Snapshots are made read-only once published. On Unix that does not stop
//! an unlink or a rename over them (those need write permission on the
//! directory, not the file). On Windows a file with the read-only attribute
//! cannot be deleted or replaced: `DeleteFile` and `MoveFileEx` fail with
//! "access denied". So on Windows the sweep, gc, clear and a publish that
//! repairs a damaged snapshot clear the attribute and retry once, when the
//! first attempt was denied and the file really carries it.

use std::io;
use std::path::Path;

/// Runs `op` on `path`; when it fails with "permission denied" and
/// `clear_attr` finds and clears a read-only attribute on `path` (returning
/// `Ok(true)`), runs `op` once more. Any other outcome is `op`'s first result,
/// so a denial with another cause is reported as it was.
pub(crate) fn retry_read_only(
    path: &Path,
    op: impl Fn() -> io::Result<()>,
    clear_attr: impl FnOnce(&Path) -> io::Result<bool>,
) -> io::Result<()> {
    match op() {
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => match clear_attr(path) {
            Ok(true) => {
                tracing::debug!(path = %path.display(), "cleared the read-only attribute to remove or replace the file");
                op()
            }
            Ok(false) | Err(_) => Err(e),
        },
        other => other,
    }
}

/// Clears the read-only attribute of the regular file at `path`; false when
/// there is none to clear (or it is not a regular file: the attribute of a
/// link's target is never touched).
#[cfg(windows)]
pub(crate) fn clear_read_only(path: &Path) -> io::Result<bool> {
    let meta = std::fs::symlink_metadata(path)?;
    if !meta.file_type().is_file() || !meta.permissions().readonly() {
        return Ok(false);
    }
    let mut perms = meta.permissions();
    // On Windows this clears the read-only attribute and nothing else (the
    // lint warns of Unix, where it would make the file writable by anyone).
    #[allow(clippy::permissions_set_readonly_false)]
    perms.set_readonly(false);
    std::fs::set_permissions(path, perms)?;
    Ok(true)
}

/// On Unix a file's mode never stops its removal or replacement.
#[cfg(not(windows))]
pub(crate) fn clear_read_only(_path: &Path) -> io::Result<bool> {
    Ok(false)
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    fn denied() -> io::Error {
        io::Error::from(io::ErrorKind::PermissionDenied)
    }

    /// A file that refuses removal while "read-only", as Windows does.
    struct FakeFile {
        read_only: Cell<bool>,
        present: Cell<bool>,
        attempts: Cell<u32>,
    }

    impl FakeFile {
        fn new(read_only: bool) -> Self {
            FakeFile {
                read_only: Cell::new(read_only),
                present: Cell::new(true),
                attempts: Cell::new(0),
            }
        }
        fn remove(&self) -> io::Result<()> {
            self.attempts.set(self.attempts.get() + 1);
            if self.read_only.get() {
                return Err(denied());
            }
            self.present.set(false);
            Ok(())
        }
        fn clear(&self) -> io::Result<bool> {
            Ok(self.read_only.replace(false))
        }
    }

    #[test]
    fn a_read_only_file_is_removed_after_clearing_the_attribute() {
        let file = FakeFile::new(true);
        retry_read_only(Path::new("s"), || file.remove(), |_| file.clear()).expect("removed");
        assert!(!file.present.get());
        assert_eq!(file.attempts.get(), 2);
    }

    #[test]
    fn a_writable_file_is_removed_at_once_and_the_attribute_left_alone() {
        let file = FakeFile::new(false);
        let cleared = Cell::new(false);
        retry_read_only(
            Path::new("s"),
            || file.remove(),
            |_| {
                cleared.set(true);
                file.clear()
            },
        )
        .expect("removed");
        assert_eq!((file.attempts.get(), cleared.get()), (1, false));
    }

    #[test]
    fn a_denial_with_another_cause_is_reported_without_a_second_attempt() {
        // Denied, but not read-only (an ACL, a file held open): no retry.
        let attempts = Cell::new(0);
        let op = || {
            attempts.set(attempts.get() + 1);
            Err(denied())
        };
        let err = retry_read_only(Path::new("s"), op, |_| Ok(false)).expect_err("denied");
        assert_eq!(
            (err.kind(), attempts.get()),
            (io::ErrorKind::PermissionDenied, 1)
        );
        // Clearing fails: the first error is reported.
        let err = retry_read_only(Path::new("s"), op, |_| Err(io::Error::other("no")))
            .expect_err("denied");
        assert_eq!(
            (err.kind(), attempts.get()),
            (io::ErrorKind::PermissionDenied, 2)
        );
        // Still denied after clearing: that error, after exactly one retry.
        let err = retry_read_only(Path::new("s"), op, |_| Ok(true)).expect_err("denied");
        assert_eq!(
            (err.kind(), attempts.get()),
            (io::ErrorKind::PermissionDenied, 4)
        );
    }

    #[test]
    fn other_errors_pass_through_untouched() {
        let err = retry_read_only(
            Path::new("s"),
            || Err(io::Error::from(io::ErrorKind::NotFound)),
            |_| panic!("not consulted"),
        )
        .expect_err("not found");
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }

    #[cfg(unix)]
    #[test]
    fn on_unix_a_read_only_file_is_removed_without_clearing() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("snap");
        std::fs::write(&path, b"x").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).expect("chmod");
        assert!(!clear_read_only(&path).expect("no-op"));
        retry_read_only(&path, || std::fs::remove_file(&path), clear_read_only).expect("removed");
        assert!(!path.exists());
    }
}
