//! The lease backend: mutual exclusion by a lease file, for filesystems where
//! advisory locks are unreliable (NFS, SMB, 9p, FUSE).
//!
//! # Protocol
//!
//! - **Acquire**: create `<store>/lease` complete and synced (a temp file
//!   written and fsynced, then hard-linked with create-new semantics, atomic
//!   on NFSv3+ and SMB, then the directory fsynced), holding a
//!   [`LeaseRecord`]: a random lease id, the holder (pid, PID namespace,
//!   host, boot id, command), the start and the expiry.
//! - **Renew**: while held, a background thread pushes the expiry forward every
//!   third of the lease time (a complete, fsynced temp file renamed over the
//!   lease, then the directory fsynced; only while the file is ours).
//! - **Release**: remove the lease file, only if it still carries our id.
//! - **Takeover**: a waiter may break a lease only when it has expired, or when
//!   its holder is on this host, in our PID namespace, and its pid is gone
//!   (or the boot id changed). A lease file that cannot be read names no
//!   holder: it is broken once it is one lease time old by its mtime (a live
//!   holder replaces it every third of that). Breaking happens under a second
//!   create-new file, `lease.break`, so among several waiters exactly one
//!   re-checks and removes the stale lease; then all compete again with
//!   create-new, and only one wins. Every takeover is logged
//!   (`lock_takeover`) with the old holder.
//!
//! Every file operation goes through [`Durable`], so the power-loss model
//! (`lease_crash_sim`) runs this code, not a copy of it.
//!
//! Expiry compares wall clocks of different hosts: keep them in sync (NTP).

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

use super::{HolderInfo, LeaseView};
use crate::durable::{Durable, open_no_follow_with_metadata};
use crate::layout::Layout;
use crate::time::{CLOCK_SKEW_TOLERANCE, Timestamp};

/// The wall clock of lease decisions (expiry, file ages). Tests of the
/// power-loss model move it forward to see what a writer does one lease
/// time after a crash; elsewhere it is the system clock.
fn now() -> SystemTime {
    #[cfg(test)]
    {
        SystemTime::now() + test_clock::ahead()
    }
    #[cfg(not(test))]
    {
        SystemTime::now()
    }
}

/// A per-thread offset on [`now`], for tests only.
#[cfg(test)]
pub(crate) mod test_clock {
    use std::cell::Cell;
    use std::time::Duration;

    thread_local! {
        static AHEAD: Cell<Duration> = const { Cell::new(Duration::ZERO) };
    }

    pub(crate) fn ahead() -> Duration {
        AHEAD.with(Cell::get)
    }

    /// Runs `f` with the lease clock `by` ahead of the system clock.
    pub(crate) fn ahead_by<T>(by: Duration, f: impl FnOnce() -> T) -> T {
        let before = AHEAD.with(|a| a.replace(by));
        let out = f();
        AHEAD.with(|a| a.set(before));
        out
    }
}

/// A `lease.break` older than this belongs to a breaker that died mid-break
/// (one on this host is recognised at once by its dead pid).
const BREAK_STALE: Duration = Duration::from_secs(10);

/// The shortest lease time a writer may ask for.
pub(crate) const MIN_LEASE_TTL: Duration = Duration::from_millis(300);

/// The longest lease time a writer may ask for. A lease that names no lease
/// time (one of the earlier release) is judged by this one.
pub(crate) const MAX_LEASE_TTL: Duration = Duration::from_secs(86_400);

/// The content of the lease file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct LeaseRecord {
    pub lease_id: String,
    pub holder: HolderInfo,
    pub expires_at: Timestamp,
    /// The lease time its holder renews against, every third of it. Absent
    /// in leases of the earlier release.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_ms: Option<u64>,
}

impl LeaseRecord {
    /// How long this lease may go unrenewed while its holder lives.
    fn ttl(&self) -> Duration {
        self.ttl_ms
            .map_or(MAX_LEASE_TTL, Duration::from_millis)
            .clamp(MIN_LEASE_TTL, MAX_LEASE_TTL)
    }

    /// Why this lease, last modified at `modified` (the file's mtime), no
    /// longer holds the store, or `None` while it does.
    ///
    /// `expires_at` is the holder's own clock: a holder whose clock ran far
    /// ahead (or a hand-made lease) can name a year that never comes. So a
    /// lease also lapses once its file has gone unrenewed for longer than its
    /// lease time: a live holder replaces the file every third of that. The
    /// mtime is another clock again (the file server's, on NFS), hence the
    /// tolerance on top.
    fn stale_reason(&self, modified: Option<SystemTime>) -> Option<&'static str> {
        if now() > self.expires_at.system_time() {
            return Some("lease expired");
        }
        if self.holder.is_dead_local_process() {
            return Some("holder process is gone");
        }
        let unrenewed = modified
            .and_then(|m| now().duration_since(m).ok())
            .is_some_and(|age| age > self.ttl().saturating_add(CLOCK_SKEW_TOLERANCE));
        unrenewed.then_some("not renewed within its lease time (file modification time)")
    }
}

/// What one waiter has seen of the lease files, by its own monotonic clock.
///
/// Every wall clock and mtime in a lease can be wrong: a holder's clock far
/// ahead, a file server's clock that went back. What no clock can fake is a
/// lease that does not change: a live holder replaces it every third of its
/// lease time. A lease a waiter has seen unchanged for longer than its lease
/// time is not being renewed, and a `lease.break` seen unchanged for longer
/// than [`BREAK_STALE`] was left by a breaker that died. Only a waiter that
/// waits that long benefits; every other rule still applies first.
#[derive(Debug, Default)]
pub(crate) struct LeaseWatch {
    lease: Option<(Vec<u8>, Instant)>,
    lease_break: Option<(Vec<u8>, Instant)>,
}

impl LeaseWatch {
    /// How long `slot` has held exactly `seen` (zero when it just changed).
    fn unchanged_for(slot: &mut Option<(Vec<u8>, Instant)>, seen: &[u8]) -> Duration {
        match slot {
            Some((bytes, since)) if bytes.as_slice() == seen => since.elapsed(),
            _ => {
                *slot = Some((seen.to_vec(), Instant::now()));
                Duration::ZERO
            }
        }
    }
}

/// What one attempt found.
pub(crate) enum Attempt {
    Acquired(LeaseGuard),
    /// Held by someone else (the record, when it could be read).
    Busy(Option<LeaseRecord>),
}

/// A held lease; renewed in the background, released on drop.
pub(crate) struct LeaseGuard {
    path: PathBuf,
    durable: Durable,
    lease_id: String,
    stop: Arc<AtomicBool>,
    lost: Arc<AtomicBool>,
    renewer: Option<JoinHandle<()>>,
}

impl LeaseGuard {
    /// False once a renewal found the lease file replaced (our lease expired
    /// and another writer took over): the holder must not commit.
    pub(crate) fn still_held(&self) -> bool {
        !self.lost.load(Ordering::Relaxed)
            && read(&self.path).is_some_and(|r| r.lease_id == self.lease_id)
    }
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(renewer) = self.renewer.take() {
            renewer.thread().unpark();
            let _ = renewer.join();
        }
        // Remove only our own lease: after an expiry it may be someone else's.
        if read(&self.path).is_some_and(|r| r.lease_id == self.lease_id) {
            if let Err(e) = self.durable.remove_file(&self.path) {
                tracing::warn!(path = %self.path.display(), error = %e, "could not remove our lease; it expires on its own");
            }
        }
        tracing::debug!(lease_id = %self.lease_id, "lease released");
    }
}

fn random_id() -> String {
    let mut hasher = blake3::Hasher::new();
    hasher.update(&std::process::id().to_le_bytes());
    hasher.update(format!("{:?}", now()).as_bytes());
    hasher.update(format!("{:?}", std::thread::current().id()).as_bytes());
    // A fresh temp name adds OS randomness without a new dependency.
    if let Ok(t) = tempfile::Builder::new().rand_bytes(16).tempfile() {
        hasher.update(t.path().as_os_str().as_encoded_bytes());
    }
    hasher.finalize().to_hex()[..32].to_string()
}

/// Creates `path` holding `bytes`, only if it does not exist, and never
/// visible half-written: the bytes go to a temp file in `tmp/` first, which
/// is fsynced and then hard-linked to `path` (link fails if `path` exists,
/// atomically, on local filesystems, NFS and SMB); the directory is fsynced
/// so that the new name survives a power cut (a holder on another host must
/// not lose its lease to a crash of the store's machine). Where hard links
/// are not supported, falls back to create-new and write. Returns false
/// when `path` exists.
pub(crate) fn create_complete(
    durable: &Durable,
    tmp_dir: &Path,
    path: &Path,
    bytes: &[u8],
) -> io::Result<bool> {
    let linked = durable.create_temp(tmp_dir).and_then(|mut temp| {
        durable.write(&mut temp, bytes)?;
        durable.sync_file(&temp)?;
        let linked = durable.link(&temp, path);
        if let Err(e) = durable.discard(temp) {
            tracing::debug!(error = %e, "could not remove a lease temp file; the next sweep does");
        }
        linked
    });
    match linked {
        Ok(()) => {
            let dir = path.parent().unwrap_or(Path::new("."));
            if let Err(e) = durable.sync_dir(dir) {
                // The lease holds; only its survival of a power cut is in doubt.
                tracing::warn!(path = %dir.display(), error = %e, "could not fsync the directory of a new lease file");
            }
            Ok(true)
        }
        // NotFound: a sweep removed our temp file before the link; try again.
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::AlreadyExists | io::ErrorKind::NotFound
            ) =>
        {
            Ok(false)
        }
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::Unsupported | io::ErrorKind::PermissionDenied
            ) =>
        {
            match crate::durable::create_exclusive(path, false) {
                Ok(mut file) => {
                    if let Err(e) = file.write_all(bytes).and_then(|()| file.sync_all()) {
                        let _ = fs::remove_file(path);
                        return Err(e);
                    }
                    Ok(true)
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e),
    }
}

/// Reads a lease record; `None` when absent or unreadable.
pub(crate) fn read(path: &Path) -> Option<LeaseRecord> {
    read_seen(path)?.record
}

/// A lease file as one look found it.
struct SeenLease {
    /// Its bytes (bounded), what [`LeaseWatch`] compares.
    bytes: Vec<u8>,
    /// The record, when the bytes are one.
    record: Option<LeaseRecord>,
    modified: Option<SystemTime>,
}

/// Reads the lease file at `path`, through the open gate; `None` when there
/// is no regular file to read.
///
/// A regular file that cannot be read (larger than any lease, or not
/// readable by this user: `0000`, or root's `0600` in a user's store) is an
/// unreadable lease like a torn one, taken over once it is one lease time
/// old, as `status` says. It used to count as no lease at all to the
/// writer that then failed to create its own, which waited behind it for
/// ever. What a waiter watches of it, in place of its bytes, is its length
/// and modification time (a holder's renewal changes both).
fn read_seen(path: &Path) -> Option<SeenLease> {
    let read = open_no_follow_with_metadata(path).and_then(|(file, meta)| {
        let bytes = crate::pointer::read_bounded(file, path)
            .map_err(|e| io::Error::other(e.to_string()))?;
        Ok((bytes, meta))
    });
    match read {
        Ok((bytes, meta)) => Some(SeenLease {
            record: serde_json::from_slice(&bytes).ok(),
            bytes,
            modified: meta.modified().ok(),
        }),
        Err(_) => {
            let meta = fs::symlink_metadata(path).ok().filter(|m| m.is_file())?;
            let modified = meta.modified().ok();
            Some(SeenLease {
                bytes: format!("unreadable: {} bytes, modified {modified:?}", meta.len())
                    .into_bytes(),
                record: None,
                modified,
            })
        }
    }
}

/// Whether a live (not stale) lease exists. A waiter passes its `watch`, so
/// that a lease it has seen unchanged for longer than its lease time does
/// not count.
pub(crate) fn live_lease(layout: &Layout, watch: Option<&mut LeaseWatch>) -> Option<LeaseRecord> {
    let (record, seen) = read_live(&layout.lease_file())?;
    if let Some(watch) = watch {
        if LeaseWatch::unchanged_for(&mut watch.lease, &seen.bytes) > record.ttl() {
            return None;
        }
    }
    Some(record)
}

/// The lease at `path` and what was read of it, unless it is stale.
fn read_live(path: &Path) -> Option<(LeaseRecord, SeenLease)> {
    let mut seen = read_seen(path)?;
    let record = seen.record.take()?;
    record
        .stale_reason(seen.modified)
        .is_none()
        .then_some((record, seen))
}

/// The live lease, as [`live_lease`] without a watch sees it, and what a
/// status report shows of its times.
pub(crate) fn live_lease_view(layout: &Layout) -> Option<(LeaseRecord, LeaseView)> {
    let path = layout.lease_file();
    let (record, seen) = read_live(&path)?;
    let view = LeaseView {
        path,
        lease_time: record.ttl(),
        renewed_at: seen.modified.map(Timestamp::from),
        expires_at: Some(record.expires_at),
    };
    Some((record, view))
}

/// One non-blocking attempt to take the lease. A stale lease is broken and
/// the create retried at once, so a dead holder costs no waiting.
pub(crate) fn try_acquire(
    layout: &Layout,
    durable: &Durable,
    holder: &HolderInfo,
    ttl: Duration,
    watch: &mut LeaseWatch,
) -> io::Result<Attempt> {
    let path = layout.lease_file();
    let mut current = None;
    for _ in 0..2 {
        let record = LeaseRecord {
            lease_id: random_id(),
            holder: holder.clone(),
            expires_at: Timestamp::from(now() + ttl),
            ttl_ms: Some(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX)),
        };
        let bytes = serde_json::to_vec(&record).map_err(io::Error::other)?;
        match create_complete(durable, &layout.tmp_dir(), &path, &bytes) {
            Ok(true) => {
                let stop = Arc::new(AtomicBool::new(false));
                let lost = Arc::new(AtomicBool::new(false));
                let renewer = spawn_renewer(
                    layout,
                    durable.clone(),
                    record.clone(),
                    ttl,
                    stop.clone(),
                    lost.clone(),
                );
                return Ok(Attempt::Acquired(LeaseGuard {
                    path,
                    durable: durable.clone(),
                    lease_id: record.lease_id,
                    stop,
                    lost,
                    renewer,
                }));
            }
            Ok(false) => {
                let seen = read_seen(&path);
                let unchanged = seen.as_ref().map_or(Duration::ZERO, |s| {
                    LeaseWatch::unchanged_for(&mut watch.lease, &s.bytes)
                });
                current = seen.as_ref().and_then(|s| s.record.clone());
                let broken = match &seen {
                    None => false,
                    Some(SeenLease {
                        record: Some(old),
                        modified,
                        ..
                    }) => {
                        let reason = old.stale_reason(*modified).or_else(|| {
                            (unchanged > old.ttl())
                                .then_some("not renewed within its lease time (seen unchanged)")
                        });
                        reason.is_some_and(|why| {
                            break_stale(layout, durable, holder, old, why, watch)
                        })
                    }
                    // Unreadable (empty, torn, garbage): no holder can be
                    // identified. A live holder replaces its lease every
                    // third of the lease time and a new one is never visible
                    // incomplete (see create_complete), so an unreadable
                    // file one lease time old (by mtime, or seen unchanged
                    // that long) has no live owner.
                    Some(SeenLease {
                        record: None,
                        bytes,
                        ..
                    }) => {
                        (is_old(&path, ttl) || unchanged > ttl)
                            && break_unreadable(layout, durable, holder, bytes, ttl, watch)
                    }
                };
                if !broken {
                    break;
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(Attempt::Busy(current))
}

/// Whether `path` is a regular file older than `age` (anything else at the
/// name is not ours to break or remove).
fn is_old(path: &Path, age: Duration) -> bool {
    file_age(path).is_some_and(|a| a > age)
}

/// How long ago a regular file at `path` was last modified.
fn file_age(path: &Path) -> Option<Duration> {
    fs::symlink_metadata(path)
        .ok()
        .filter(|m| m.is_file())
        .and_then(|m| m.modified().ok())
        .and_then(|t| now().duration_since(t).ok())
}

/// A lease file that exists but cannot be read as a lease (empty, torn,
/// garbage): its path and age by mtime. Nobody can be named as its
/// holder; writers take it over once it is one lease time old.
pub(crate) fn unreadable_lease(layout: &Layout) -> Option<(PathBuf, Option<Duration>)> {
    let path = layout.lease_file();
    let meta = fs::symlink_metadata(&path).ok()?;
    if !meta.is_file() || read(&path).is_some() {
        return None;
    }
    let age = file_age(&path);
    Some((path, age))
}

/// Serialises breakers: returns a guard that removes `lease.break` on drop.
struct BreakGuard(PathBuf, Durable);

impl Drop for BreakGuard {
    fn drop(&mut self) {
        let _ = self.1.remove_file(&self.0);
    }
}

/// Takes `lease.break`, which records its holder: a breaker that died
/// mid-break (same host, pid gone) is recognised at once; one on another
/// host only after [`BREAK_STALE`].
fn take_break_lock(
    layout: &Layout,
    durable: &Durable,
    me: &HolderInfo,
    watch: &mut LeaseWatch,
) -> Option<BreakGuard> {
    let path = layout.lease_break_file();
    let bytes = serde_json::to_vec(me).unwrap_or_default();
    match create_complete(durable, &layout.tmp_dir(), &path, &bytes) {
        Ok(true) => Some(BreakGuard(path, durable.clone())),
        Ok(false) => {
            let seen = read_seen(&path);
            let dead_breaker = seen
                .as_ref()
                .and_then(|s| serde_json::from_slice::<HolderInfo>(&s.bytes).ok())
                .is_some_and(|h| h.is_dead_local_process());
            let unchanged = seen.as_ref().map_or(Duration::ZERO, |s| {
                LeaseWatch::unchanged_for(&mut watch.lease_break, &s.bytes)
            });
            if dead_breaker || is_old(&path, BREAK_STALE) || unchanged > BREAK_STALE {
                tracing::warn!(path = %path.display(), dead_breaker, "removing a lease.break left by a breaker that died");
                let _ = durable.remove_file(&path);
            }
            None
        }
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "could not create lease.break");
            None
        }
    }
}

/// Removes the lease `old` if it is still there, under the break lock.
/// Returns whether it was removed.
fn break_stale(
    layout: &Layout,
    durable: &Durable,
    me: &HolderInfo,
    old: &LeaseRecord,
    reason: &'static str,
    watch: &mut LeaseWatch,
) -> bool {
    let Some(_guard) = take_break_lock(layout, durable, me, watch) else {
        return false;
    };
    let path = layout.lease_file();
    // Re-check under the break lock: another breaker may have removed the
    // stale lease already and a new holder created a fresh one. The lease
    // judged is still there when its id and expiry are (a renewal moves the
    // expiry), and then so is the verdict.
    let still_stale =
        read(&path).is_some_and(|r| r.lease_id == old.lease_id && r.expires_at == old.expires_at);
    let removed = still_stale && durable.remove_file(&path).is_ok();
    if removed {
        tracing::warn!(
            old_pid = old.holder.pid,
            old_host = %old.holder.host,
            old_command = %old.holder.command,
            old_expires_at = %old.expires_at,
            reason,
            "lock_takeover"
        );
    }
    removed
}

fn break_unreadable(
    layout: &Layout,
    durable: &Durable,
    me: &HolderInfo,
    judged: &[u8],
    age: Duration,
    watch: &mut LeaseWatch,
) -> bool {
    let Some(_guard) = take_break_lock(layout, durable, me, watch) else {
        return false;
    };
    let path = layout.lease_file();
    // Still the very bytes judged (a new holder's lease is never
    // unreadable), and still old by mtime or by what this waiter saw.
    let same = read_seen(&path).is_some_and(|s| s.record.is_none() && s.bytes == judged);
    let removed = same
        && (is_old(&path, age) || watch.lease.as_ref().is_some_and(|(_, t)| t.elapsed() > age))
        && durable.remove_file(&path).is_ok();
    if removed {
        tracing::warn!(path = %path.display(), reason = "unreadable lease file", "lock_takeover");
    }
    removed
}

fn spawn_renewer(
    layout: &Layout,
    durable: Durable,
    record: LeaseRecord,
    ttl: Duration,
    stop: Arc<AtomicBool>,
    lost: Arc<AtomicBool>,
) -> Option<JoinHandle<()>> {
    let path = layout.lease_file();
    let tmp_dir = layout.tmp_dir();
    std::thread::Builder::new()
        .name("snapcache-lease-renewer".into())
        .spawn(move || {
            let mut record = record;
            while !stop.load(Ordering::Relaxed) {
                std::thread::park_timeout(ttl / 3);
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                if read(&path).is_none_or(|r| r.lease_id != record.lease_id) {
                    tracing::error!(path = %path.display(), "lost the lease (it expired and was taken over); this writer will not commit");
                    lost.store(true, Ordering::Relaxed);
                    break;
                }
                record.expires_at = Timestamp::from(now() + ttl);
                if let Err((at, e)) = renew(&durable, &tmp_dir, &path, &record) {
                    tracing::warn!(path = %at.display(), error = %e, "could not renew the lease; retrying");
                }
            }
        })
        .ok()
}

/// Writes the renewed record over `lease`: a fresh exclusive temp file with
/// an unpredictable name (so nothing planted in `tmp/` can be written
/// through), complete and fsynced before the rename, then the directory
/// fsynced. A power loss at any point leaves the old record or the new one,
/// never an empty or partial lease (which would stall the next writer).
pub(super) fn renew(
    durable: &Durable,
    tmp_dir: &Path,
    path: &Path,
    record: &LeaseRecord,
) -> Result<(), (PathBuf, io::Error)> {
    let bytes =
        serde_json::to_vec(record).map_err(|e| (path.to_path_buf(), io::Error::other(e)))?;
    durable.replace_file(tmp_dir, path, &bytes, true, None)?;
    Ok(())
}

#[cfg(test)]
// Test helpers fail loudly by design: a panic is a failed test.
#[allow(clippy::expect_used, clippy::unwrap_used)]
mod renewal_tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::durable::{FsHook, Op};

    /// Records the operations of the gate as short strings.
    #[derive(Default)]
    struct Log(Mutex<Vec<String>>);

    impl FsHook for Log {
        fn before(&self, op: &Op<'_>) -> io::Result<()> {
            let name = |p: &Path| {
                p.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            };
            let entry = match op {
                Op::Create(p) => format!("create {}", name(p)),
                Op::Write(p, _) => format!("write {}", name(p)),
                Op::SyncFile(p) => format!("fsync {}", name(p)),
                Op::Rename(a, b) => format!("rename {} {}", name(a), name(b)),
                Op::SyncDir(p) => format!("fsync-dir {}", name(p)),
                Op::Remove(p) => format!("remove {}", name(p)),
                Op::Link(a, b) => format!("link {} {}", name(a), name(b)),
            };
            self.0.lock().unwrap().push(entry);
            Ok(())
        }
    }

    /// Issue 9.5, first half: a renewal is written to a fresh exclusive temp
    /// file, fsynced, and only then renamed over `lease`, and the rename is
    /// made durable; a power loss leaves the old lease or the new one.
    #[test]
    fn a_renewal_is_complete_and_synced_before_it_replaces_the_lease() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path().join("store"));
        fs::create_dir_all(layout.tmp_dir()).unwrap();
        let log = Arc::new(Log::default());
        let durable = Durable::with_hook(log.clone());
        let holder = HolderInfo::this_process("test", super::super::Backend::Lease);
        let record = LeaseRecord {
            lease_id: random_id(),
            holder,
            expires_at: Timestamp::from(SystemTime::now() + Duration::from_secs(30)),
            ttl_ms: Some(30_000),
        };
        fs::write(layout.lease_file(), b"old").unwrap();
        renew(&durable, &layout.tmp_dir(), &layout.lease_file(), &record).unwrap();

        let ops = log.0.lock().unwrap().clone();
        assert_eq!(ops.len(), 5, "{ops:?}");
        let temp = ops[0].strip_prefix("create ").expect("a temp file first");
        assert!(temp.starts_with(".snapcache-"), "{ops:?}");
        let random = temp.rsplit('-').next().unwrap();
        assert_eq!(random.len(), 16, "an unpredictable name: {temp}");
        assert_eq!(
            ops[1..],
            [
                format!("write {temp}"),
                format!("fsync {temp}"),
                format!("rename {temp} lease"),
                "fsync-dir store".to_string(),
            ]
        );
        let back = read(&layout.lease_file()).expect("the renewed lease reads back");
        assert_eq!(back.lease_id, record.lease_id);
        assert!(fs::read_dir(layout.tmp_dir()).unwrap().next().is_none());
    }
}

#[cfg(test)]
// Test helpers fail loudly by design: a panic is a failed test.
#[allow(clippy::expect_used, clippy::unwrap_used)]
mod staleness_tests {
    use super::*;

    fn record(expires_in: Duration, ttl_ms: Option<u64>) -> LeaseRecord {
        let mut holder = HolderInfo::this_process("test", super::super::Backend::Lease);
        // Another host: its pid tells nothing.
        holder.host = "elsewhere".into();
        LeaseRecord {
            lease_id: random_id(),
            holder,
            expires_at: Timestamp::from(SystemTime::now() + expires_in),
            ttl_ms,
        }
    }

    fn modified_ago(secs: u64) -> Option<SystemTime> {
        Some(SystemTime::now() - Duration::from_secs(secs))
    }

    #[test]
    fn a_far_expiry_holds_only_while_the_file_is_renewed_within_its_lease_time() {
        let far = Duration::from_secs(70 * 365 * 86_400);
        let thirty = record(far, Some(30_000));
        // Renewed just now, or as long ago as its lease time and the clock
        // tolerance allow: a live holder (or one whose clock is off).
        assert_eq!(thirty.stale_reason(modified_ago(0)), None);
        assert_eq!(thirty.stale_reason(modified_ago(85)), None);
        // Not renewed for its lease time plus the tolerance: no holder.
        assert!(thirty.stale_reason(modified_ago(95)).is_some());
        // An mtime in the future or unknown gives no age: only the expiry
        // (or a waiter's own watch) decides.
        assert_eq!(thirty.stale_reason(Some(SystemTime::now() + far)), None);
        assert_eq!(thirty.stale_reason(None), None);
        // A lease that names no lease time (the earlier release) is judged
        // by the longest one there is.
        let old = record(far, None);
        assert_eq!(old.stale_reason(modified_ago(86_400)), None);
        assert!(old.stale_reason(modified_ago(86_400 + 61)).is_some());
        // The expiry still decides first.
        let expired = record(Duration::ZERO, Some(30_000));
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(expired.stale_reason(modified_ago(0)), Some("lease expired"));
        // A lease time out of range is clamped to it.
        assert_eq!(record(far, Some(0)).ttl(), MIN_LEASE_TTL);
        assert_eq!(record(far, Some(u64::MAX)).ttl(), MAX_LEASE_TTL);
    }

    #[test]
    fn a_watch_counts_only_while_the_bytes_stay_the_same() {
        let mut slot = None;
        assert_eq!(LeaseWatch::unchanged_for(&mut slot, b"a"), Duration::ZERO);
        std::thread::sleep(Duration::from_millis(20));
        assert!(LeaseWatch::unchanged_for(&mut slot, b"a") >= Duration::from_millis(20));
        // A renewal (new bytes) starts the count again.
        assert_eq!(LeaseWatch::unchanged_for(&mut slot, b"b"), Duration::ZERO);
        assert!(LeaseWatch::unchanged_for(&mut slot, b"b") < Duration::from_millis(20));
    }
}
