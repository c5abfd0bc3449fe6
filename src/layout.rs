//! Every on-disk name of a store, built in one place.
//!
//! ```text
//! <root>/
//! ├── current            pointer: format version, checksum, retained generations
//! ├── lock               advisory lock file (fs4); never deleted
//! ├── lock.holder        who holds the lock (description only, never authority)
//! ├── lease              lease-backend lock (network filesystems only)
//! ├── lease.break        held for an instant by the waiter breaking a stale lease
//! ├── snapshots/
//! │   └── <64-hex blake3>   immutable, read-only snapshot files
//! └── tmp/               writers' temp files; emptied at the start of every write
//! ```
//!
//! Nobody else joins `"snapshots"` or `"current"` onto a path by hand.

use std::path::{Path, PathBuf};

use crate::hash::ContentHash;

/// File name of the pointer.
pub const CURRENT: &str = "current";
/// Directory of immutable snapshots.
pub const SNAPSHOTS: &str = "snapshots";
/// Directory of writers' temp files.
pub const TMP: &str = "tmp";
/// The advisory lock file.
pub const LOCK: &str = "lock";
/// The lock holder's self-description.
pub const LOCK_HOLDER: &str = "lock.holder";
/// The lease file used by the lease lock backend.
pub const LEASE: &str = "lease";
/// Taken by the one waiter that breaks a stale lease (lease backend).
pub const LEASE_BREAK: &str = "lease.break";
/// Prefix of every temp file, so a stray file in `tmp/` is recognisable.
pub const TEMP_PREFIX: &str = ".snapcache-";

/// Paths of one store.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    root: PathBuf,
}

impl Layout {
    pub(crate) fn new(root: impl Into<PathBuf>) -> Self {
        Layout { root: root.into() }
    }

    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    pub(crate) fn current(&self) -> PathBuf {
        self.root.join(CURRENT)
    }

    pub(crate) fn snapshots_dir(&self) -> PathBuf {
        self.root.join(SNAPSHOTS)
    }

    pub(crate) fn snapshot(&self, hash: &ContentHash) -> PathBuf {
        self.snapshots_dir().join(hash.to_hex())
    }

    pub(crate) fn tmp_dir(&self) -> PathBuf {
        self.root.join(TMP)
    }

    pub(crate) fn lock_file(&self) -> PathBuf {
        self.root.join(LOCK)
    }

    pub(crate) fn holder_file(&self) -> PathBuf {
        self.root.join(LOCK_HOLDER)
    }

    pub(crate) fn lease_file(&self) -> PathBuf {
        self.root.join(LEASE)
    }

    pub(crate) fn lease_break_file(&self) -> PathBuf {
        self.root.join(LEASE_BREAK)
    }
}
