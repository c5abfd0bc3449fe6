//! Leftovers: temp files in `tmp/` and snapshot files no retained generation
//! references; and foreign entries, which are never touched.
//!
//! # Crash story
//!
//! A writer killed mid-publish leaves at most a temp file (killed before the
//! snapshot rename) or an unreferenced snapshot (killed after it, before the
//! pointer swap). Both are harmless to readers, who only follow the pointer.
//! Every write sweeps them, while holding the lock: only a lock holder
//! creates files in `tmp/`, so nothing in there belongs to an active writer
//! but the sweeping one (a publish sweeps on a second thread while it stages
//! and commits its payload, sparing its own temp file; see `Writer::stage`). The
//! snapshots that left retention at a publish are swept the same way, by
//! the next write: no unlink on the publish path. `verify` lists the same leftovers as reclaimable without touching
//! them.
//!
//! # Deleting by name only
//!
//! An entry is a leftover only if it carries a snapcache name (in `tmp/` the
//! [`TEMP_PREFIX`](crate::layout::TEMP_PREFIX), in `snapshots/` 64 lowercase
//! hex digits) *and* is a regular file or a symlink (judged without
//! following it). Everything else (a user's files, a directory, a FIFO, a
//! store nested inside this one) is [`ForeignEntry`]: never removed, never
//! counted by `gc`, listed by `verify`. A leftover that cannot be removed is
//! logged and skipped: someone else's file must not make every write fail.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::durable::Durable;
use crate::error::{Error, Result};
use crate::hash::ContentHash;
use crate::layout::{self, Layout};

/// What kind of leftover a file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LeftoverKind {
    /// A file in `tmp/` named like snapcache's temp files.
    TempFile,
    /// A file in `snapshots/` that no retained generation references.
    UnreferencedSnapshot,
}

/// One reclaimable file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Leftover {
    /// Where it is.
    pub path: PathBuf,
    /// What it is.
    pub kind: LeftoverKind,
    /// Its size (what removing it frees).
    pub bytes: u64,
}

/// A snapshot no retained generation references that the lease backend
/// keeps until its grace ends (its generation left retention, or the file
/// was written, less than the grace ago: a reader on another host or a
/// stalled writer may still need it). Not reclaimable before `until`;
/// listed by `verify` apart from the reclaimable leftovers.
///
/// ```
/// # fn main() -> Result<(), snapcache::Error> {
/// # let dir = tempfile::tempdir().map_err(|e| snapcache::Error::InvalidOption(e.to_string()))?;
/// use snapcache::{BackendChoice, Store, StoreOptions};
/// let store = Store::open(StoreOptions::new(dir.path()).lock_backend(BackendChoice::Lease))?;
/// store.publish_bytes(b"[1]", &Default::default())?;
/// store.publish_bytes(b"[2]", &Default::default())?;
/// store.forget(&[1])?;
/// let report = store.verify()?;
/// assert_eq!((report.in_grace.len(), report.reclaimable.len()), (1, 0));
/// assert!(report.in_grace[0].until > snapcache::Timestamp::now());
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InGrace {
    /// Where it is.
    pub path: PathBuf,
    /// Its size (what removing it will free).
    pub bytes: u64,
    /// When its grace ends: from then on a write or `gc` removes it.
    pub until: crate::time::Timestamp,
}

/// Something in the store that snapcache did not create (or that no longer
/// has the shape snapcache gives its files): left in place, never counted
/// by `gc`, listed by `verify`.
///
/// ```
/// # fn main() -> Result<(), snapcache::Error> {
/// # let dir = tempfile::tempdir().map_err(|e| snapcache::Error::InvalidOption(e.to_string()))?;
/// # let store = snapcache::Store::open(snapcache::StoreOptions::new(dir.path()))?;
/// store.publish_bytes(b"[1]", &Default::default())?;
/// std::fs::create_dir(dir.path().join("tmp").join("kept"))
///     .map_err(|e| snapcache::Error::InvalidOption(e.to_string()))?;
/// let report = store.verify()?;
/// assert_eq!(report.foreign[0].what, "directory");
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ForeignEntry {
    /// Where it is.
    pub path: PathBuf,
    /// What it is: `file`, `directory`, `symlink`, `fifo`, `socket`,
    /// `char-device`, `block-device` or `unknown`.
    pub what: String,
}

/// What a scan of the store found.
pub(crate) struct Scan {
    /// Reclaimable files (removed by the next write or `gc`).
    pub leftovers: Vec<Leftover>,
    /// Entries that are not snapcache's.
    pub foreign: Vec<ForeignEntry>,
}

/// Lists leftovers and foreign entries. `referenced == None` means the
/// retained set is unknown (no pointer): then no snapshot is listed as a
/// leftover, because none can be proven unreferenced.
///
/// With `spare_live_writers` (the lease backend, with its lease time), temp
/// files that may belong to a live writer other than us are not listed: a
/// lease can expire under a stalled writer that is still alive, and its
/// files are not ours to delete. (With advisory locks the kernel guarantees
/// that no other writer is alive while we hold the lock.)
pub(crate) fn scan(
    layout: &Layout,
    referenced: Option<&HashSet<ContentHash>>,
    spare_live_writers: Option<Duration>,
) -> Result<Scan> {
    scan_for(layout, referenced, spare_live_writers, true)
}

/// The leftovers of [`scan`] alone, for a sweep: the root and `commits/`,
/// which hold no leftovers, are not listed (they are only looked at for
/// foreign entries, which a sweep never touches).
pub(crate) fn leftovers(
    layout: &Layout,
    referenced: Option<&HashSet<ContentHash>>,
    spare_live_writers: Option<Duration>,
) -> Result<Vec<Leftover>> {
    Ok(scan_for(layout, referenced, spare_live_writers, false)?.leftovers)
}

fn scan_for(
    layout: &Layout,
    referenced: Option<&HashSet<ContentHash>>,
    spare_live_writers: Option<Duration>,
    list_foreign: bool,
) -> Result<Scan> {
    let mut leftovers = Vec::new();
    let mut foreign = Vec::new();
    if list_foreign {
        for entry in entries(layout.root())? {
            if !layout::is_store_name(entry.path.file_name().unwrap_or_default()) {
                foreign.push(entry.foreign());
            }
        }
    }
    for entry in entries(&layout.tmp_dir())? {
        if !entry.is_candidate(layout::is_temp_name) {
            foreign.push(entry.foreign());
            continue;
        }
        if spare_live_writers.is_some_and(|lease| belongs_to_live_writer(&entry.path, lease)) {
            tracing::info!(path = %entry.path.display(), "kept a temp file of a live writer");
            continue;
        }
        leftovers.push(Leftover {
            bytes: entry.bytes(),
            path: entry.path,
            kind: LeftoverKind::TempFile,
        });
    }
    // Commit records are pruned by the commit itself (crate::commit_record);
    // here only what is not a record is listed, as foreign.
    if list_foreign {
        for entry in entries(&layout.commits_dir())? {
            if !entry.is_candidate(layout::is_record_name) {
                foreign.push(entry.foreign());
            }
        }
    }
    for entry in entries(&layout.snapshots_dir())? {
        if !entry.is_candidate(layout::is_snapshot_name) {
            foreign.push(entry.foreign());
            continue;
        }
        let Some(referenced) = referenced else {
            continue;
        };
        let name = entry
            .path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("");
        if !ContentHash::parse(name).is_some_and(|h| referenced.contains(&h)) {
            leftovers.push(Leftover {
                bytes: entry.bytes(),
                path: entry.path,
                kind: LeftoverKind::UnreferencedSnapshot,
            });
        }
    }
    Ok(Scan { leftovers, foreign })
}

/// A leftover a removal was to unlink but could not (made immutable, in a
/// directory without write permission, ...): it was left in place. `gc`,
/// `forget` and `clear` report these, so that a removal that did nothing
/// does not look like one that had nothing to do.
///
/// ```
/// # fn main() -> Result<(), snapcache::Error> {
/// # let dir = tempfile::tempdir().map_err(|e| snapcache::Error::InvalidOption(e.to_string()))?;
/// let store = snapcache::Store::open(snapcache::StoreOptions::new(dir.path()))?;
/// store.publish_bytes(b"[1]", &Default::default())?;
/// let report = store.gc(&Default::default())?;
/// assert!(report.not_removed.is_empty());
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NotRemoved {
    /// The file (in JSON, its text with bytes that are not UTF-8 replaced).
    #[serde(serialize_with = "lossy_path")]
    pub path: PathBuf,
    /// What the system said when asked to remove it.
    pub error: String,
}

fn lossy_path<S: serde::Serializer>(path: &Path, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(&path.to_string_lossy())
}

/// What [`remove`] removed, in the order given, and what it could not.
#[derive(Debug, Default)]
pub(crate) struct Removal {
    pub(crate) removed: Vec<Leftover>,
    pub(crate) not_removed: Vec<NotRemoved>,
}

/// Removes the given leftovers (unlink only: never a directory). One that
/// cannot be removed is logged and skipped, and listed in the result.
///
/// Many leftovers (a `gc` after a long time, thousands of crashed writers'
/// files) are unlinked by several threads at once. An unlink of a file with
/// data blocks mostly *waits* in the filesystem (freeing the blocks in the
/// journal, trimming them on a `discard` mount): on the ext4 virtual disk
/// the bench runs on, 10,000 sequential unlinks of 1 KiB files took about
/// 8 s of wall time for 0.24 s of CPU, while a few unlinks in flight at once
/// share those waits. A short list stays on the calling thread.
///
/// `held` is asked before every unlink: a writer whose lock was lost (its
/// lock file removed, and another writer in) must stop deleting at once,
/// since the other writer may have just made one of these files current
/// again (reproduced: a `gc` stalled mid-way deleted the snapshot another
/// writer had reused and committed). The caller then reports the loss.
pub(crate) fn remove(
    durable: &Durable,
    leftovers: Vec<Leftover>,
    held: &(dyn Fn() -> bool + Sync),
) -> Removal {
    let workers = removal_workers(leftovers.len());
    let removed = if workers <= 1 {
        remove_sequentially(durable, leftovers, held)
    } else {
        let chunk = leftovers.len().div_ceil(workers);
        let mut chunks = Vec::with_capacity(workers);
        let mut rest = leftovers;
        while rest.len() > chunk {
            let tail = rest.split_off(chunk);
            chunks.push(rest);
            rest = tail;
        }
        chunks.push(rest);
        // The workers log through the caller's subscriber, scoped or global.
        let dispatch = crate::worker_log::callers();
        std::thread::scope(|scope| {
            let handles: Vec<_> = chunks
                .into_iter()
                .map(|part| {
                    let dispatch = dispatch.clone();
                    scope.spawn(move || {
                        crate::worker_log::with(dispatch.as_ref(), || {
                            remove_sequentially(durable, part, held)
                        })
                    })
                })
                .collect();
            // A worker only unlinks and logs; should one ever panic, what it
            // removed is not reported (the files are gone either way).
            let mut all = Removal::default();
            for part in handles.into_iter().map(|h| h.join().unwrap_or_default()) {
                all.removed.extend(part.removed);
                all.not_removed.extend(part.not_removed);
            }
            all
        })
    };
    // No directory fsync: a removal lost in a crash only brings back an
    // unreferenced file, which the next sweep removes again. Skipping it
    // saves an fsync on every publish.
    removed
}

/// How many threads unlink `n` leftovers: one below [`PARALLEL_FROM`],
/// then one per [`PARALLEL_FROM`] files, at most [`MAX_REMOVAL_WORKERS`].
fn removal_workers(n: usize) -> usize {
    if n < PARALLEL_FROM {
        1
    } else {
        (n / PARALLEL_FROM).clamp(2, MAX_REMOVAL_WORKERS)
    }
}

/// Below this many leftovers, removal stays on the calling thread (a
/// publish's sweep usually has none or one).
const PARALLEL_FROM: usize = 64;

/// At most this many unlinks in flight: enough to overlap the filesystem's
/// waits (on the bench's loaded disk, 16 in flight removed 4,000 1 KiB
/// files in 1.8 s, 32 in 0.63 s, 64 in 0.55 s), few enough to be a short
/// burst of threads for an embedder, and only for 2,048 leftovers or more.
const MAX_REMOVAL_WORKERS: usize = 32;

fn remove_sequentially(
    durable: &Durable,
    leftovers: Vec<Leftover>,
    held: &(dyn Fn() -> bool + Sync),
) -> Removal {
    let mut done = Removal {
        removed: Vec::with_capacity(leftovers.len()),
        not_removed: Vec::new(),
    };
    for leftover in leftovers {
        if !held() {
            tracing::warn!(path = %leftover.path.display(), "the writer lock was lost: removing nothing more");
            break;
        }
        match durable.remove_file(&leftover.path) {
            Ok(()) => {
                tracing::info!(path = %leftover.path.display(), kind = ?leftover.kind, bytes = leftover.bytes, "removed leftover");
                done.removed.push(leftover);
            }
            Err(e) => {
                tracing::warn!(path = %leftover.path.display(), kind = ?leftover.kind, error = %e, "could not remove a leftover; it was left in place");
                done.not_removed.push(NotRemoved {
                    path: leftover.path,
                    error: e.to_string(),
                });
            }
        }
    }
    done
}

/// Whether a temp file may belong to a live writer other than us, judged
/// from its name (`.snapcache-<pid>.<ns>-…`, see [`crate::layout::temp_owner`])
/// and its age:
///
/// - created in our PID namespace, in this boot (or a name that does not
///   record its boot): not when that pid is gone (or is ours);
/// - otherwise only while it is younger than the lease time `lease` by its
///   mtime. A writer that stopped touching it for longer has lost its
///   lease anyway (the sweeper holds it now), and a pid alone is no proof:
///   reused by a long-lived process (pid 1, a daemon), it used to keep a
///   crashed writer's temp file, a whole payload, for as long as that
///   process lived.
///
/// An mtime in the future (a clock that ran ahead, `touch -d 2099`) is not
/// taken as "just written" for ever: the age is then counted from the
/// status-change time, which the kernel sets and `touch` cannot move
/// (Unix; elsewhere, or if that lies ahead too, the file counts as young).
fn belongs_to_live_writer(path: &Path, lease: Duration) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let Some(owner) = crate::layout::temp_owner(name) else {
        return false;
    };
    let me = crate::lock::this_temp_owner();
    // A name that records its boot is judged by pid only in this boot: the
    // same namespace number on another machine (the initial namespace's is
    // the same everywhere) or an earlier boot names some other process.
    let same_boot = owner.boot.is_none_or(|theirs| me.boot == Some(theirs));
    if same_boot
        && crate::lock::same_pid_namespace(owner.pid_ns, me.pid_ns)
        && (owner.pid == me.pid || !crate::lock::process_alive(owner.pid))
    {
        return false;
    }
    // An unknown age (no mtime) is treated as young: keep it.
    file_age(path).is_none_or(|age| age < lease)
}

/// How long ago the file at `path` was last written, by its mtime, or by
/// its status-change time when the mtime lies in the future.
fn file_age(path: &Path) -> Option<Duration> {
    let meta = fs::symlink_metadata(path).ok()?;
    let now = SystemTime::now();
    if let Ok(age) = now.duration_since(meta.modified().ok()?) {
        return Some(age);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let changed = SystemTime::UNIX_EPOCH
            .checked_add(Duration::new(u64::try_from(meta.ctime()).ok()?, 0))?;
        now.duration_since(changed).ok()
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// One directory entry, typed without following it.
struct Entry {
    path: PathBuf,
    file_type: Option<fs::FileType>,
}

impl Entry {
    /// Its size (not followed through a symlink), 0 when it cannot be
    /// read. Asked only of leftovers: the entries a scan passes over (the
    /// retained snapshots, one per generation) cost no `stat`.
    fn bytes(&self) -> u64 {
        self.path.symlink_metadata().map_or(0, |m| m.len())
    }

    /// A leftover candidate: snapcache's name, and a file or a symlink.
    fn is_candidate(&self, named: fn(&std::ffi::OsStr) -> bool) -> bool {
        named(self.path.file_name().unwrap_or_default())
            && self
                .file_type
                .is_some_and(|t| t.is_file() || t.is_symlink())
    }

    fn foreign(self) -> ForeignEntry {
        ForeignEntry {
            what: describe(self.file_type).to_string(),
            path: self.path,
        }
    }
}

/// `file`, `directory`, ... for [`ForeignEntry::what`].
fn describe(file_type: Option<fs::FileType>) -> &'static str {
    let Some(t) = file_type else {
        return "unknown";
    };
    if t.is_file() {
        return "file";
    }
    if t.is_dir() {
        return "directory";
    }
    if t.is_symlink() {
        return "symlink";
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return "fifo";
        }
        if t.is_socket() {
            return "socket";
        }
        if t.is_char_device() {
            return "char-device";
        }
        if t.is_block_device() {
            return "block-device";
        }
    }
    "unknown"
}

/// Entries directly in `dir`, sorted, with their types (not followed
/// through a symlink; from the directory listing itself where the
/// filesystem gives it, else from a `stat`).
fn entries(dir: &Path) -> Result<Vec<Entry>> {
    let read = match fs::read_dir(dir) {
        Ok(r) => r,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("list the directory", dir, e)),
    };
    let mut out = Vec::new();
    for entry in read {
        let entry = entry.map_err(|e| Error::io("list the directory", dir, e))?;
        let path = entry.path();
        let file_type = entry
            .file_type()
            .ok()
            .or_else(|| path.symlink_metadata().ok().map(|m| m.file_type()));
        out.push(Entry { path, file_type });
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A removal stops at once when the lock is lost, mid-way: the next
    /// file may be one another writer just made current again.
    #[test]
    fn a_removal_stops_when_the_lock_is_lost() {
        let dir = tempfile::tempdir().expect("tempdir");
        let list: Vec<Leftover> = (0..4)
            .map(|i| {
                let path = dir.path().join(format!("f{i}"));
                fs::write(&path, b"x").expect("write");
                Leftover {
                    path,
                    kind: LeftoverKind::TempFile,
                    bytes: 1,
                }
            })
            .collect();
        let asked = std::sync::atomic::AtomicUsize::new(0);
        let removal = remove(&Durable::default(), list, &|| {
            asked.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < 2
        });
        assert_eq!(removal.removed.len(), 2, "two while held, then none");
        assert_eq!(fs::read_dir(dir.path()).expect("list").count(), 2);
    }

    /// Reproduced: a crashed writer's temp file whose pid now belongs to a
    /// long-lived process (pid 1 here) was spared for as long as that
    /// process lived, and one with its mtime set to 2099 until 2099, while
    /// `verify` called both reclaimable. Both go once a lease time old.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_reused_pid_or_a_future_mtime_does_not_keep_a_temp_file_for_ever() {
        let dir = tempfile::tempdir().expect("tempdir");
        let me = crate::lock::this_temp_owner();
        let name = |pid| {
            crate::layout::temp_prefix(crate::layout::TempOwner { pid, ..me }) + "AAAAAAAAAAAAAAAA"
        };
        let lease = Duration::from_secs(1);
        let reused = dir.path().join(name(1));
        // Another PID namespace: judged by age alone.
        let future = dir.path().join(
            crate::layout::temp_prefix(crate::layout::TempOwner {
                pid: 4242,
                pid_ns: Some(123),
                ..me
            }) + "DDDDDDDDDDDDDDDD",
        );
        fs::write(&reused, b"x").expect("write");
        fs::write(&future, b"x").expect("write");
        let year_2099 = SystemTime::UNIX_EPOCH + Duration::from_secs(4_070_908_800);
        fs::File::options()
            .write(true)
            .open(&future)
            .and_then(|f| f.set_modified(year_2099))
            .expect("set mtime");
        let old = SystemTime::now() - Duration::from_secs(3600);
        fs::File::options()
            .write(true)
            .open(&reused)
            .and_then(|f| f.set_modified(old))
            .expect("set mtime");
        assert!(crate::lock::process_alive(1), "pid 1 lives");
        assert!(
            !belongs_to_live_writer(&reused, lease),
            "pid 1, written an hour ago"
        );
        // Just touched, the future mtime's file is young by its ctime; a
        // lease time later it is not.
        assert!(belongs_to_live_writer(&future, lease), "changed just now");
        std::thread::sleep(Duration::from_millis(1100));
        assert!(
            !belongs_to_live_writer(&future, lease),
            "changed a lease time ago"
        );
        // A temp file of a live writer that is writing it is still spared.
        let live = dir.path().join(name(1));
        fs::write(&live, b"y").expect("rewrite");
        assert!(belongs_to_live_writer(&live, Duration::from_secs(30)));
    }

    fn leftover(path: PathBuf) -> Leftover {
        Leftover {
            path,
            kind: LeftoverKind::UnreferencedSnapshot,
            bytes: 1,
        }
    }

    #[test]
    fn many_leftovers_are_removed_in_parallel_in_order_and_failures_skipped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut list = Vec::new();
        for i in 0..1000 {
            let path = dir.path().join(format!("{i:05}"));
            if i == 500 {
                // Not removable with an unlink: reported as not removed.
                fs::create_dir(&path).expect("mkdir");
            } else {
                fs::write(&path, b"x").expect("write");
            }
            list.push(leftover(path));
        }
        assert!(removal_workers(list.len()) > 1);
        let removed = remove(&Durable::default(), list.clone(), &|| true);
        let expected: Vec<Leftover> = list
            .into_iter()
            .enumerate()
            .filter(|(i, _)| *i != 500)
            .map(|(_, l)| l)
            .collect();
        assert_eq!(removed.removed, expected);
        // The directory at 00500 is not unlinked, and is said so.
        let not: Vec<_> = removed.not_removed.iter().map(|n| n.path.clone()).collect();
        assert_eq!(not, [dir.path().join("00500")]);
        let left: Vec<_> = fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(left, ["00500"]);
    }

    #[test]
    fn worker_counts() {
        assert_eq!(removal_workers(0), 1);
        assert_eq!(removal_workers(PARALLEL_FROM - 1), 1);
        assert_eq!(removal_workers(PARALLEL_FROM), 2);
        assert_eq!(removal_workers(10_000), MAX_REMOVAL_WORKERS);
    }
}
