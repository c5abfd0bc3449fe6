//! Every on-disk name of a store, built in one place.
//!
//! ```text
//! <root>/
//! ├── snapcache-store    marker: "this directory is a snapcache store, format N"
//! ├── CACHEDIR.TAG       Cache Directory Tagging Specification tag (backups skip it)
//! ├── current            pointer: format version, checksum, retained generations
//! ├── lock               advisory lock file (fs4); never deleted
//! ├── lock.holder        who holds the lock (description only, never authority)
//! ├── lease              lease-backend lock (network filesystems only)
//! ├── lease.break        held for an instant by the waiter breaking a stale lease
//! ├── commits/           lease backend: `<n>`, the record of commit n (newest few)
//! ├── snapshots/
//! │   └── <64-hex blake3>   immutable, read-only snapshot files
//! └── tmp/               writers' temp files (`.snapcache-*`); swept by every write
//! ```
//!
//! Nobody else joins `"snapshots"` or `"current"` onto a path by hand.
//!
//! # Names are ownership
//!
//! snapcache deletes only what carries one of its names: in `tmp/` names
//! starting with [`TEMP_PREFIX`] ([`is_temp_name`]), in `snapshots/` names of
//! exactly 64 lowercase hex digits ([`is_snapshot_name`]), and only regular
//! files or symlinks. Anything else, and any root entry that is not
//! [`is_store_name`], is foreign: left in place and listed by `verify`.

use std::ffi::OsStr;
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
/// The store marker: its presence (with valid content) is what makes a
/// directory a store that snapcache may write to.
pub const MARKER: &str = "snapcache-store";
/// The cache directory tag, so backup tools skip the store.
pub const CACHEDIR_TAG: &str = "CACHEDIR.TAG";
/// Directory of commit records (lease backend): `commits/<number>`.
pub const COMMITS: &str = "commits";

/// Every name snapcache creates directly in a store root.
pub const STORE_NAMES: [&str; 10] = [
    CURRENT,
    LOCK,
    LOCK_HOLDER,
    LEASE,
    LEASE_BREAK,
    SNAPSHOTS,
    TMP,
    MARKER,
    CACHEDIR_TAG,
    COMMITS,
];

/// Whether a root entry carries one of snapcache's names.
///
/// ```text
/// is_store_name("current") == true; is_store_name("notes.txt") == false
/// ```
pub fn is_store_name(name: &OsStr) -> bool {
    STORE_NAMES.iter().any(|n| OsStr::new(n) == name)
}

/// Whether an entry of `tmp/` carries snapcache's temp-file name.
pub fn is_temp_name(name: &OsStr) -> bool {
    name.to_str().is_some_and(|n| n.starts_with(TEMP_PREFIX))
}

/// Whether an entry of `snapshots/` carries a snapshot name: exactly 64
/// lowercase hex digits.
pub fn is_snapshot_name(name: &OsStr) -> bool {
    name.to_str().is_some_and(|n| {
        n.len() == 64
            && n.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// Whether an entry of `commits/` carries a commit record's name: a
/// decimal number from 1 up to 2^63 (more commits than any store will ever
/// make; a larger number is foreign, so that numbering after the highest
/// record always has room), without leading zeros.
///
/// ```text
/// is_record_name("42") == true; is_record_name("042") == false
/// ```
pub fn is_record_name(name: &OsStr) -> bool {
    record_number(name).is_some()
}

/// The commit number a record's name carries.
pub(crate) fn record_number(name: &OsStr) -> Option<u64> {
    let n = name.to_str()?;
    if n.is_empty() || n.starts_with('0') || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    n.parse().ok().filter(|n| *n <= MAX_RECORD_NUMBER)
}

/// The highest commit number a record's name may carry.
pub(crate) const MAX_RECORD_NUMBER: u64 = 1 << 63;

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

    pub(crate) fn marker(&self) -> PathBuf {
        self.root.join(MARKER)
    }

    pub(crate) fn cachedir_tag(&self) -> PathBuf {
        self.root.join(CACHEDIR_TAG)
    }

    pub(crate) fn commits_dir(&self) -> PathBuf {
        self.root.join(COMMITS)
    }

    /// The commit record of commit number `n`.
    pub(crate) fn commit_record(&self, n: u64) -> PathBuf {
        self.commits_dir().join(n.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_recognised_exactly() {
        for name in STORE_NAMES {
            assert!(is_store_name(OsStr::new(name)), "{name}");
        }
        for name in ["currents", "tmp2", "Snapshots", "notes.txt", ""] {
            assert!(!is_store_name(OsStr::new(name)), "{name}");
        }
        assert!(is_temp_name(OsStr::new(".snapcache-42-abc")));
        assert!(!is_temp_name(OsStr::new("notes.txt")));
        assert!(!is_temp_name(OsStr::new("snapcache-42")));
        let hex = "0123456789abcdef".repeat(4);
        assert!(is_snapshot_name(OsStr::new(&hex)));
        assert!(!is_snapshot_name(OsStr::new(&hex.to_uppercase())));
        assert!(!is_snapshot_name(OsStr::new(&hex[1..])));
        assert!(!is_snapshot_name(OsStr::new("holiday.png")));
        assert!(is_record_name(OsStr::new("1")) && is_record_name(OsStr::new("42")));
        for name in ["0", "042", "4a", "", "-1", "99999999999999999999999"] {
            assert!(!is_record_name(OsStr::new(name)), "{name}");
        }
    }
}

/// Who created a temp file, as its name records it: `.snapcache-<pid>-…`
/// or, where the PID namespace is known, `.snapcache-<pid>.<ns>-…` (the
/// namespace's inode number; a pid means nothing outside its namespace),
/// and where the boot is known too, `.snapcache-<pid>.<ns>.<boot>-…` (the
/// first 8 hex digits of the Linux boot id). The initial PID namespace has
/// the same inode number on every Linux machine, so on a store shared over
/// NFS only the boot tells this machine's files from another's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TempOwner {
    pub pid: u32,
    pub pid_ns: Option<u64>,
    pub boot: Option<u32>,
}

/// The name prefix of a temp file created by `owner`:
/// `.snapcache-<pid>.<ns>.<boot>-`, `.snapcache-<pid>.<ns>-` or
/// `.snapcache-<pid>-`.
pub(crate) fn temp_prefix(owner: TempOwner) -> String {
    match (owner.pid_ns, owner.boot) {
        (Some(ns), Some(boot)) => format!("{TEMP_PREFIX}{}.{ns}.{boot:08x}-", owner.pid),
        (Some(ns), None) => format!("{TEMP_PREFIX}{}.{ns}-", owner.pid),
        (None, _) => format!("{TEMP_PREFIX}{}-", owner.pid),
    }
}

/// The creator recorded in a temp file's name, if the name has that shape.
///
/// ```text
/// .snapcache-42.4026531836.1dd1a01a-Ab3…  -> pid 42 in namespace 4026531836, boot 1dd1a01a…
/// .snapcache-42.4026531836-Ab3…           -> pid 42 in namespace 4026531836
/// .snapcache-42-Ab3…                      -> pid 42, namespace not recorded
/// ```
pub(crate) fn temp_owner(name: &str) -> Option<TempOwner> {
    let tag = name.strip_prefix(TEMP_PREFIX)?.split('-').next()?;
    let mut parts = tag.split('.');
    let pid = parts.next()?.parse().ok()?;
    let pid_ns = parts.next().map(str::parse).transpose().ok()?;
    let boot = match parts.next() {
        Some(b) if b.len() == 8 => Some(u32::from_str_radix(b, 16).ok()?),
        Some(_) => return None,
        None => None,
    };
    if parts.next().is_some() {
        return None;
    }
    Some(TempOwner { pid, pid_ns, boot })
}

#[cfg(test)]
mod temp_owner_tests {
    use super::*;

    #[test]
    fn temp_names_round_trip_their_creator() {
        for owner in [
            TempOwner {
                pid: 42,
                pid_ns: Some(4_026_531_836),
                boot: Some(0x1dd1_a01a),
            },
            TempOwner {
                pid: 42,
                pid_ns: Some(4_026_531_836),
                boot: Some(0),
            },
            TempOwner {
                pid: 42,
                pid_ns: Some(4_026_531_836),
                boot: None,
            },
            TempOwner {
                pid: 7,
                pid_ns: None,
                boot: None,
            },
        ] {
            let name = format!("{}AbCdEf0123456789", temp_prefix(owner));
            assert!(name.starts_with(TEMP_PREFIX));
            assert_eq!(temp_owner(&name), Some(owner), "{name}");
        }
        assert_eq!(temp_owner(".snapcache-x-abc"), None);
        assert_eq!(temp_owner(".snapcache-1.x-abc"), None);
        assert_eq!(temp_owner(".snapcache-1.2.abc-abc"), None);
        assert_eq!(temp_owner(".snapcache-1.2.0000000g-abc"), None);
        assert_eq!(temp_owner(".snapcache-1.2.00000000.3-abc"), None);
        assert_eq!(temp_owner("other-1-abc"), None);
    }
}

/// Where the object-store client's conditional-write probe puts its
/// throwaway object, relative to the store's prefix (one random name under it
/// per probe, deleted at the end). It starts with [`TEMP_PREFIX`] so that it
/// reads as snapcache's own leftover, never as a snapshot or the pointer.
#[cfg(feature = "s3")]
pub(crate) const OBJECT_PROBE_DIR: &str = ".snapcache-probe/";

/// The object store's names, relative to its prefix: the pointer, the
/// snapshots (`snapshots/<blake3 hex>`) and the lease. Anything else under
/// the prefix is not snapcache's and is never deleted.
#[cfg(feature = "s3")]
pub(crate) const OBJECT_POINTER: &str = CURRENT;
/// See [`OBJECT_POINTER`].
#[cfg(feature = "s3")]
pub(crate) const OBJECT_SNAPSHOTS: &str = "snapshots/";
/// See [`OBJECT_POINTER`].
#[cfg(feature = "s3")]
pub(crate) const OBJECT_LEASE: &str = LEASE;

/// The key of a snapshot object.
#[cfg(feature = "s3")]
pub(crate) fn object_snapshot(hash: &ContentHash) -> String {
    format!("{OBJECT_SNAPSHOTS}{}", hash.to_hex())
}
