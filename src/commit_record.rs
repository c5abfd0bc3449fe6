//! Commit records: the compare-and-swap that fences writers on the lease
//! backend.
//!
//! # Why
//!
//! A lease can expire under a writer that is stalled (SIGSTOP, a paused VM,
//! a slow NFS server) after its last "do I still hold the lease" check; a
//! check followed by a rename is no fence. So on the lease backend the
//! commit is one atomic, create-only step: before replacing `current`, the
//! writer creates `commits/<n>` (`n` = the commit number of the pointer it
//! read + 1) holding the *complete new pointer*, by hard link of a fsynced
//! temp file (create-new, atomic on local filesystems, NFS and SMB). The
//! writer that creates record `n` owns commit `n`; any other writer based on
//! the same pointer finds the name taken and fails with
//! [`Error::CommitConflict`], having published nothing.
//!
//! # The record is the commit; `current` is a cache of the newest record
//!
//! The winner renames `current` after creating its record, so a winner that
//! stalls *between* the two has committed but `current` does not show it
//! yet (or, renamed late, shows an older commit than a record). Writers
//! therefore never trust `current` alone: they follow the records from
//! `current`'s commit number (`n + 1`, `n + 2`, … while they exist, one
//! `stat` when there is none) and take the newest as the truth, rewriting
//! `current` from it ("roll forward"). Readers follow the records the same
//! way, without writing.
//!
//! `clear` is a commit too: its record says "cleared" ([`CLEARED`]), so a
//! writer stalled across a clear cannot commit after it, and numbering goes
//! on after it.
//!
//! # Snapshot grace
//!
//! On the lease backend a snapshot is not deleted while it may still be
//! needed by a stalled writer or a reader on another host: an unreferenced
//! snapshot younger than [`SNAPSHOT_GRACE`] (by mtime) is kept, and so is
//! the snapshot of a generation that left retention less than
//! [`SNAPSHOT_GRACE`] ago (the pointer's `dropped` list).
//!
//! The advisory backend keeps its fast path: no records are written (the
//! kernel's lock excludes a stalled writer), `dropped` stays empty, and the
//! records are only looked for (one failed `stat` per write).

use std::collections::HashSet;
use std::fs;
use std::io;
use std::path::Path;
use std::time::{Duration, SystemTime};

use crate::durable::{Durable, open_no_follow_with_metadata};
use crate::error::{Error, Result};
use crate::hash::ContentHash;
use crate::layout::{self, Layout};
use crate::lock::Backend;
use crate::pointer::{self, Pointer};
use crate::sweep::{InGrace, Leftover, LeftoverKind};
use crate::time::Timestamp;

/// How many of the newest commit records are kept (older ones are removed
/// by name after each commit).
pub(crate) const RECORDS_KEPT: u64 = 8;

/// How long the lease backend keeps a snapshot that may still be needed by
/// a stalled writer or a reader on another host: 10 minutes.
pub(crate) const SNAPSHOT_GRACE: Duration = Duration::from_secs(600);

/// The grace in force: [`SNAPSHOT_GRACE`], or a test's shorter one
/// (`SNAPCACHE_TEST_SNAPSHOT_GRACE_SECS`, see [`crate::test_hooks`]).
pub(crate) fn snapshot_grace() -> Duration {
    crate::test_hooks::snapshot_grace().unwrap_or(SNAPSHOT_GRACE)
}

/// Upper bound on records followed in one look (a planted run of names
/// must not keep a writer busy).
const MAX_FOLLOWED: u64 = 1000;

/// The whole content of the record `clear` commits on the lease backend:
/// clearing is a commit too, so that a writer stalled across a clear finds
/// its record's name taken (or a higher record) and cannot bring back the
/// pointer of the history the clear removed.
const CLEARED: &[u8] = b"snapcache-cleared 1\n";

/// What a commit record holds.
#[derive(Debug)]
enum Record {
    /// The complete pointer of that commit.
    Commit(Pointer),
    /// The store was cleared by that commit: nothing is published.
    Cleared,
}

impl Record {
    /// The current generation it committed (0 for a clear), for messages.
    fn generation(&self) -> u64 {
        match self {
            Record::Commit(p) => p.current,
            Record::Cleared => 0,
        }
    }
}

/// Reads record `n`: `None` when there is none.
fn read(layout: &Layout, n: u64) -> Result<Option<Record>> {
    let path = layout.commit_record(n);
    let (file, meta) = match open_no_follow_with_metadata(&path) {
        Ok(found) => found,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("open the commit record", &path, e)),
    };
    // A record is a pointer: one that another user can write is not the
    // owner's word, whatever it says. (Records are rare: read only when
    // `current` is behind, so the look at the root costs nothing on the
    // common path.)
    let owner = crate::trust::store_owner(layout)?;
    crate::trust::refuse_untrusted_file(&path, &meta, owner)?;
    let bytes = pointer::read_bounded(file, &path)?;
    if bytes == CLEARED {
        return Ok(Some(Record::Cleared));
    }
    let record = Pointer::decode(&bytes, &path)?;
    if record.commit != n {
        return Err(Error::CorruptPointer {
            path,
            detail: format!("it is named commit {n} but holds commit {}", record.commit),
        });
    }
    Ok(Some(Record::Commit(record)))
}

/// The newest committed pointer: `current` itself, or the newest commit
/// record that follows it; `None` when nothing is published (no pointer,
/// or the newest commit is a clear). The bool says whether `current` is
/// behind (a writer rewrites or, after a clear, removes it).
///
/// Without `current` the highest record is where the history stands: a
/// first publish stalled before its rename, or a clear.
///
/// A record `n + 1` that did not come from this pointer (its generation
/// counter is lower: it is left from before an earlier release rewrote the
/// pointer without commit numbers) is not followed; the numbering then
/// continues after the highest record, so no commit collides with it.
pub(crate) fn newest(layout: &Layout, current: Option<Pointer>) -> Result<(Option<Pointer>, bool)> {
    let mut base = current.as_ref().map_or(0, |p| p.commit);
    let mut truth = current;
    let mut behind = false;
    if truth.is_none() {
        if let Some(highest) = highest_record(layout) {
            base = highest;
            if let Some(Record::Commit(p)) = read(layout, highest)? {
                tracing::info!(
                    commit = highest,
                    generation = p.current,
                    "no pointer, but a commit record: it is the truth"
                );
                truth = Some(p);
                behind = true;
            }
        }
    }
    for _ in 0..MAX_FOLLOWED {
        let Some(next) = base.checked_add(1) else {
            break;
        };
        let record = match read(layout, next)? {
            None => break,
            Some(Record::Cleared) => {
                tracing::info!(
                    commit = next,
                    "commit record of a clear newer than the pointer: nothing is published"
                );
                truth = None;
                base = next;
                behind = true;
                continue;
            }
            Some(Record::Commit(record)) => record,
        };
        let base_last = truth.as_ref().map_or(0, |p| p.last_generation);
        if record.last_generation < base_last {
            let highest = highest_record(layout).unwrap_or(next);
            tracing::warn!(record = %layout.commit_record(next).display(), highest, "a commit record left from an earlier history; numbering continues after the highest record");
            if let Some(p) = truth.as_mut() {
                p.commit = highest;
            }
            break;
        }
        tracing::info!(
            commit = next,
            generation = record.current,
            "commit record newer than the pointer: it is the truth"
        );
        base = next;
        truth = Some(record);
        behind = true;
    }
    Ok((truth, behind))
}

/// Where a writer numbers its commit from, given the newest pointer it
/// found: after that pointer's commit, or after the highest record when a
/// record lies beyond a gap (record `commit + 1` missing, a higher one
/// there). Readers follow records one by one from `current` and never
/// reach such a record; a writer that numbered its commit below it would
/// find it higher than its own and conflict, on every attempt, for good.
/// So a writer bases its history on what readers see, `pointer`, and only
/// its numbering goes past the orphan (logged, named). A writer that
/// stalled while others committed still conflicts: its base was read
/// before their records existed, and the claim checks for higher ones.
pub(crate) fn number_past_orphans(layout: &Layout, pointer: &mut Pointer) {
    let Some(highest) = highest_record(layout).filter(|h| *h > pointer.commit) else {
        return;
    };
    tracing::warn!(
        record = %layout.commit_record(highest).display(),
        commit = pointer.commit,
        highest,
        "a commit record no reader reaches (a gap before it); numbering continues after it"
    );
    pointer.commit = highest;
}

/// The commit number a first pointer is based on when nothing is
/// published: after the highest record (a clear's, on the lease backend),
/// so that numbering goes on past it; 0 in a store without records.
pub(crate) fn base_without_pointer(layout: &Layout) -> u64 {
    highest_record(layout).unwrap_or(0)
}

/// The commit number after `commit`. The commit counter, not the
/// generation numbers, is what ran out when there is none (it read "handed
/// out every generation number (last generation 2^64-1)" of a pointer at
/// generation 1): only a damaged or edited pointer gets there. Its end is
/// [`MAX_RECORD_NUMBER`], the highest number a record's name may carry,
/// not `u64::MAX`: past it a writer made records that every later reader
/// took for foreign files (never pruned, and a clear after them could
/// never commit).
pub(crate) fn next_commit(layout: &Layout, commit: u64) -> Result<u64> {
    commit
        .checked_add(1)
        .filter(|n| *n <= layout::MAX_RECORD_NUMBER)
        .ok_or_else(|| Error::CommitsExhausted {
            path: layout.current(),
            last: commit,
        })
}

/// Whether the commit after `commit` can be numbered (see [`next_commit`]).
pub(crate) fn has_next_commit(commit: u64) -> bool {
    commit < layout::MAX_RECORD_NUMBER
}

/// `clear`'s commit on the lease backend: creates the record after `base`
/// (the commit number of the newest pointer this writer read, or of the
/// highest record when it could not read one) saying that the store was
/// cleared. Fails with [`Error::CommitConflict`] when another writer
/// committed that number first. Older records are pruned as after any
/// commit; the records stay, so a writer stalled across the clear cannot
/// commit after it.
pub(crate) fn commit_cleared(layout: &Layout, durable: &Durable, base: u64) -> Result<()> {
    let n = next_commit(layout, base)?;
    claim(layout, durable, n, CLEARED)?;
    prune(layout, durable, n);
    Ok(())
}

/// The highest record number in `commits/`.
fn highest_record(layout: &Layout) -> Option<u64> {
    fs::read_dir(layout.commits_dir())
        .ok()?
        .flatten()
        .filter_map(|e| layout::record_number(&e.file_name()))
        .max()
}

/// The commit step before `current` is replaced: numbers `pointer` as the
/// next commit and, on the lease backend, creates its record (the
/// compare-and-swap). `pointer.commit` is the commit number of the pointer
/// it was derived from. Fails with [`Error::CommitConflict`] when another
/// writer created that record first; nothing is written then.
pub(crate) fn commit(
    layout: &Layout,
    durable: &Durable,
    backend: Backend,
    pointer: &mut Pointer,
) -> Result<()> {
    let n = next_commit(layout, pointer.commit)?;
    if backend == Backend::Advisory {
        pointer.dropped.clear();
        pointer.commit = n;
        return Ok(());
    }
    let now = SystemTime::now();
    let grace = snapshot_grace();
    pointer.dropped.retain(|d| {
        now.duration_since(d.dropped_at.system_time())
            .map_or(true, |age| age < grace)
    });
    pointer.commit = n;
    let claimed = claim(layout, durable, n, &pointer.encode());
    if claimed.is_err() {
        pointer.commit = n - 1;
    }
    claimed
}

/// Creates record `n` with `bytes`, exclusively: the compare-and-swap.
/// Fails with [`Error::CommitConflict`] when the name is taken, and also
/// when a higher record exists once it is created: a writer stalled through
/// more than [`RECORDS_KEPT`] commits finds its name free again (pruned),
/// and the higher record says that the truth moved on without it. Its own
/// record is below the truth then, followed by nobody; it is removed.
fn claim(layout: &Layout, durable: &Durable, n: u64, bytes: &[u8]) -> Result<()> {
    let dir = layout.commits_dir();
    durable
        .create_dir(&dir, false)
        .map_err(|e| Error::io("create the commit record directory", &dir, e))?;
    let path = layout.commit_record(n);
    match crate::lock::create_complete(durable, &layout.tmp_dir(), &path, bytes) {
        Ok(true) => {
            if let Some(highest) = highest_record(layout).filter(|h| *h > n) {
                if let Err(e) = durable.remove_file(&path) {
                    tracing::warn!(path = %path.display(), error = %e, "could not remove a stale commit record; nobody follows it and it is pruned later");
                }
                let generation = read(layout, highest)
                    .ok()
                    .flatten()
                    .map_or(0, |r| r.generation());
                tracing::warn!(
                    commit = n,
                    highest,
                    generation,
                    "commit conflict: records newer than this writer's were made while it was stalled"
                );
                return Err(Error::CommitConflict {
                    path: layout.commit_record(highest),
                    generation,
                });
            }
            tracing::debug!(commit = n, path = %path.display(), "commit record created");
            Ok(())
        }
        Ok(false) => {
            let generation = read(layout, n).ok().flatten().map_or(0, |r| r.generation());
            tracing::warn!(commit = n, generation, path = %path.display(), "commit conflict: another writer committed first");
            Err(Error::CommitConflict { path, generation })
        }
        Err(e) => Err(Error::io("create the commit record", &path, e)),
    }
}

/// Removes records older than the [`RECORDS_KEPT`] newest, by name (lease
/// backend, after a commit). A record that cannot be removed is logged.
pub(crate) fn prune(layout: &Layout, durable: &Durable, newest: u64) {
    let Ok(entries) = fs::read_dir(layout.commits_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let Some(n) = layout::record_number(&entry.file_name()) else {
            continue;
        };
        let ours = entry
            .file_type()
            .is_ok_and(|t| t.is_file() || t.is_symlink());
        if ours && n.saturating_add(RECORDS_KEPT) <= newest {
            if let Err(e) = durable.remove_file(&entry.path()) {
                tracing::warn!(path = %entry.path().display(), error = %e, "could not remove an old commit record");
            }
        }
    }
}

/// Removes every commit record by name (`clear`, before the pointer goes:
/// a record left behind would otherwise be taken for a newer commit).
pub(crate) fn remove_all(layout: &Layout, durable: &Durable) -> Result<()> {
    let dir = layout.commits_dir();
    let entries = match fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io("list the commit records", &dir, e)),
    };
    for entry in entries.flatten() {
        let ours = entry
            .file_type()
            .is_ok_and(|t| t.is_file() || t.is_symlink());
        if ours && layout::is_record_name(&entry.file_name()) {
            durable
                .remove_file(&entry.path())
                .map_err(|e| Error::io("remove the commit record", entry.path(), e))?;
        }
    }
    durable
        .sync_dir(&dir)
        .map_err(|e| Error::io("fsync the directory", &dir, e))
}

/// The hashes the lease backend keeps besides the retained generations:
/// snapshots of generations dropped less than [`SNAPSHOT_GRACE`] ago.
pub(crate) fn in_grace(pointer: &Pointer) -> HashSet<ContentHash> {
    let now = Timestamp::now().system_time();
    let grace = snapshot_grace();
    pointer
        .dropped
        .iter()
        .filter(|d| {
            now.duration_since(d.dropped_at.system_time())
                .map_or(true, |age| age < grace)
        })
        .map(|d| d.hash)
        .collect()
}

/// Splits the unreferenced snapshots among `leftovers` by the lease
/// backend's grace (for `verify`): those whose grace has not ended (their
/// generation was dropped, or the file was written, less than the grace
/// ago) are kept until the later of the two ends; the rest stay reclaimable.
pub(crate) fn split_in_grace(
    pointer: Option<&Pointer>,
    leftovers: Vec<Leftover>,
) -> (Vec<Leftover>, Vec<InGrace>) {
    let now = SystemTime::now();
    let grace = snapshot_grace();
    let mut reclaimable = Vec::new();
    let mut kept = Vec::new();
    for l in leftovers {
        if l.kind != LeftoverKind::UnreferencedSnapshot {
            reclaimable.push(l);
            continue;
        }
        let name = l.path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let dropped_until = ContentHash::parse(name).and_then(|h| {
            pointer?
                .dropped
                .iter()
                .filter(|d| d.hash == h)
                .map(|d| later_by(d.dropped_at.system_time(), grace))
                .max()
        });
        // An unknown mtime counts as young, as the sweep treats it.
        let written_until = fs::symlink_metadata(&l.path)
            .and_then(|m| m.modified())
            .map_or(later_by(now, grace), |t| later_by(t, grace));
        let until = dropped_until.map_or(written_until, |d| d.max(written_until));
        if until > now {
            kept.push(InGrace {
                path: l.path,
                bytes: l.bytes,
                until: Timestamp::from(until),
            });
        } else {
            reclaimable.push(l);
        }
    }
    (reclaimable, kept)
}

/// `t + by`, or `t` itself where that is beyond what the clock can hold.
/// A file's mtime is anyone's to set: tmpfs and btrfs take the largest
/// time there is (plain `+` panicked on it).
fn later_by(t: SystemTime, by: Duration) -> SystemTime {
    t.checked_add(by).unwrap_or(t)
}

/// Leaves out of `leftovers` the unreferenced snapshots younger than
/// [`SNAPSHOT_GRACE`] by mtime: a stalled writer may be about to commit one.
pub(crate) fn spare_young_snapshots(leftovers: Vec<Leftover>) -> Vec<Leftover> {
    let grace = snapshot_grace();
    leftovers
        .into_iter()
        .filter(|l| {
            if l.kind != LeftoverKind::UnreferencedSnapshot {
                return true;
            }
            let old = age(&l.path).is_some_and(|a| a >= grace);
            if !old {
                tracing::info!(path = %l.path.display(), grace_secs = grace.as_secs_f64(), "kept an unreferenced snapshot younger than the grace period");
            }
            old
        })
        .collect()
}

fn age(path: &Path) -> Option<Duration> {
    let modified = fs::symlink_metadata(path).ok()?.modified().ok()?;
    Some(
        SystemTime::now()
            .duration_since(modified)
            .unwrap_or(Duration::ZERO),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lock::BackendChoice;
    use crate::store::{PublishOptions, Store, StoreOptions};

    fn lease_store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store =
            Store::open(StoreOptions::new(dir.path().join("s")).lock_backend(BackendChoice::Lease))
                .expect("open");
        (dir, store)
    }

    fn rewrite_current(store: &Store, edit: impl FnOnce(&mut Pointer)) {
        let path = store.root().join("current");
        let mut p = Pointer::decode(&std::fs::read(&path).expect("read"), &path).expect("decode");
        edit(&mut p);
        std::fs::write(&path, p.encode()).expect("write");
    }

    #[test]
    fn a_pointer_of_the_earlier_release_does_not_collide_with_old_records() {
        let (_dir, store) = lease_store();
        for n in 1..=3u8 {
            store
                .publish_bytes(&[b'[', b'0' + n, b']'], &PublishOptions::default())
                .expect("publish");
        }
        // The earlier release rewrote the pointer: no commit number.
        rewrite_current(&store, |p| p.commit = 0);
        let outcome = store
            .publish_bytes(b"[4]", &PublishOptions::default())
            .expect("no false conflict with the old record 1");
        assert_eq!(outcome.generation, 4);
        let layout = Layout::new(store.root());
        assert_eq!(
            read(&layout, 4).expect("read").map(|r| r.generation()),
            Some(4)
        );
        assert_eq!(store.read_current().expect("read").data, b"[4]");
    }

    #[test]
    fn a_record_holding_another_commit_number_is_reported() {
        let (_dir, store) = lease_store();
        store
            .publish_bytes(b"[1]", &PublishOptions::default())
            .expect("publish");
        let layout = Layout::new(store.root());
        let record = std::fs::read(layout.commit_record(1)).expect("record 1");
        std::fs::write(layout.commit_record(2), record).expect("plant");
        let err = store
            .publish_bytes(b"[2]", &PublishOptions::default())
            .expect_err("a mislabelled record is damage");
        assert!(err.is_corrupt(), "{err}");
        assert!(
            err.to_string().contains("commits"),
            "names the record: {err}"
        );
    }

    #[test]
    fn a_writer_stalled_through_more_commits_than_the_records_kept_still_conflicts() {
        let (_dir, store) = lease_store();
        store
            .publish_bytes(b"[0]", &PublishOptions::default())
            .expect("publish");
        let layout = Layout::new(store.root());
        let path = layout.current();
        let base = Pointer::decode(&std::fs::read(&path).expect("read"), &path).expect("decode");
        // Others commit RECORDS_KEPT + 1 times meanwhile: record base + 1 is
        // pruned, so its name is free again.
        for n in 1..=RECORDS_KEPT + 1 {
            store
                .publish_bytes(format!("[{n}]").as_bytes(), &PublishOptions::default())
                .expect("publish");
        }
        assert!(!layout.commit_record(base.commit + 1).exists(), "pruned");
        let before = std::fs::read(&path).expect("read");
        let mut stale = base.clone();
        let err = commit(&layout, &Durable::default(), Backend::Lease, &mut stale)
            .expect_err("the stalled writer must lose");
        assert!(err.is_commit_conflict(), "{err}");
        assert_eq!(stale.commit, base.commit, "unchanged");
        assert!(
            !layout.commit_record(base.commit + 1).exists(),
            "its stale record is gone"
        );
        assert_eq!(std::fs::read(&path).expect("read"), before);
        let last = RECORDS_KEPT + 2;
        assert!(
            err.to_string()
                .contains(&format!("another writer committed generation {last}")),
            "{err}"
        );
        let next = store
            .publish_bytes(b"[\"next\"]", &PublishOptions::default())
            .expect("publish");
        assert_eq!(next.generation, last + 1);
    }

    #[test]
    fn two_writers_based_on_one_pointer_one_commits_the_other_conflicts() {
        let (_dir, store) = lease_store();
        store
            .publish_bytes(b"[1]", &PublishOptions::default())
            .expect("publish");
        let layout = Layout::new(store.root());
        let path = layout.current();
        let base = Pointer::decode(&std::fs::read(&path).expect("read"), &path).expect("decode");
        let durable = Durable::default();
        let mut a = base.clone();
        let mut b = base.clone();
        b.checked_at = Timestamp::now();
        commit(&layout, &durable, Backend::Lease, &mut a).expect("the first wins");
        assert_eq!(a.commit, base.commit + 1);
        let err = commit(&layout, &durable, Backend::Lease, &mut b).expect_err("the second loses");
        assert!(err.is_commit_conflict(), "{err}");
        assert_eq!(b.commit, base.commit, "the loser's pointer is unchanged");
        assert!(
            err.to_string()
                .contains("another writer committed generation 1"),
            "{err}"
        );
    }
}
