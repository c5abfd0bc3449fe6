//! Power-loss simulation, in the spirit of the ALICE and CrashMonkey studies.
//!
//! A recording hook under [`Durable`] logs every file operation of a real
//! publish (create, write, fsync, rename, directory fsync, unlink). A model
//! then replays the log and enumerates every state a power loss may leave
//! after each prefix of it, assuming the worst a POSIX filesystem allows:
//!
//! - a file's data written since its last `fsync` may be lost, entirely or
//!   in part (the file keeps its last synced content, or a prefix of the
//!   rest);
//! - a directory entry change (create, rename, unlink) since the directory's
//!   last `fsync` may or may not have reached the disk, independently of
//!   the others; a rename is atomic (both names change together) and counts
//!   as a change of its destination directory.
//!
//! Each state is materialized in a fresh directory and opened as a store:
//! reading it must give the old or the new generation, verified; never an
//! error, never a pointer to a missing or partial snapshot. The tests also
//! show that the check has teeth: dropping any one of the fsyncs that the
//! crash story relies on from the log makes some state fail.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::durable::{Durable, FsHook, Op};
use crate::reread::Window;
use crate::{PublishOptions, Store, StoreOptions};

/// An owned copy of one operation.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Rec {
    Create(PathBuf),
    Write(PathBuf, Vec<u8>),
    SyncFile(PathBuf),
    Rename(PathBuf, PathBuf),
    SyncDir(PathBuf),
    Remove(PathBuf),
    Link(PathBuf, PathBuf),
}

#[derive(Default)]
pub(crate) struct Recorder {
    log: Mutex<Vec<Rec>>,
}

impl Recorder {
    /// The operations recorded so far.
    pub(crate) fn log(&self) -> Vec<Rec> {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

impl FsHook for Recorder {
    fn before(&self, op: &Op<'_>) -> io::Result<()> {
        let rec = match *op {
            Op::Create(p) => Rec::Create(p.to_path_buf()),
            Op::Write(p, d) => Rec::Write(p.to_path_buf(), d.to_vec()),
            Op::SyncFile(p) => Rec::SyncFile(p.to_path_buf()),
            Op::Rename(a, b) => Rec::Rename(a.to_path_buf(), b.to_path_buf()),
            Op::SyncDir(p) => Rec::SyncDir(p.to_path_buf()),
            Op::Remove(p) => Rec::Remove(p.to_path_buf()),
            Op::Link(a, b) => Rec::Link(a.to_path_buf(), b.to_path_buf()),
        };
        if let Ok(mut log) = self.log.lock() {
            log.push(rec);
        }
        Ok(())
    }
}

/// A file's content: what is on disk for sure, and what may be lost.
#[derive(Debug, Clone)]
struct Inode {
    durable: Vec<u8>,
    volatile: Vec<u8>,
}

/// The model: inodes, the volatile namespace, and the entry changes per
/// directory that are not yet durable.
#[derive(Debug, Clone)]
pub(crate) struct Model {
    inodes: Vec<Inode>,
    /// Durable namespace: path -> inode.
    durable_names: BTreeMap<PathBuf, usize>,
    /// Volatile namespace (what a reader of the running system sees).
    names: BTreeMap<PathBuf, usize>,
    /// Entry changes not yet made durable, in order.
    pending: Vec<Pending>,
}

#[derive(Debug, Clone)]
struct Pending {
    dir: PathBuf,
    change: EntryChange,
}

#[derive(Debug, Clone)]
enum EntryChange {
    Link(PathBuf, usize),
    Unlink(PathBuf),
    Move(PathBuf, PathBuf, usize),
}

fn parent(p: &Path) -> PathBuf {
    p.parent().map(Path::to_path_buf).unwrap_or_default()
}

impl Model {
    /// The model of the files that exist under `root` now (all durable).
    pub(crate) fn of_directory(root: &Path) -> Model {
        let mut model = Model {
            inodes: Vec::new(),
            durable_names: BTreeMap::new(),
            names: BTreeMap::new(),
            pending: Vec::new(),
        };
        for path in walk(root) {
            let bytes = std::fs::read(&path).unwrap_or_default();
            model.inodes.push(Inode {
                durable: bytes.clone(),
                volatile: bytes,
            });
            let id = model.inodes.len() - 1;
            model.durable_names.insert(path.clone(), id);
            model.names.insert(path, id);
        }
        model
    }

    pub(crate) fn apply(&mut self, rec: &Rec) {
        match rec {
            Rec::Create(p) => {
                self.inodes.push(Inode {
                    durable: Vec::new(),
                    volatile: Vec::new(),
                });
                let id = self.inodes.len() - 1;
                self.names.insert(p.clone(), id);
                self.pending.push(Pending {
                    dir: parent(p),
                    change: EntryChange::Link(p.clone(), id),
                });
            }
            Rec::Write(p, data) => {
                if let Some(&id) = self.names.get(p) {
                    self.inodes[id].volatile.extend_from_slice(data);
                }
            }
            Rec::SyncFile(p) => {
                if let Some(&id) = self.names.get(p) {
                    self.inodes[id].durable = self.inodes[id].volatile.clone();
                }
            }
            Rec::Rename(a, b) => {
                if let Some(id) = self.names.remove(a) {
                    self.names.insert(b.clone(), id);
                    self.pending.push(Pending {
                        dir: parent(b),
                        change: EntryChange::Move(a.clone(), b.clone(), id),
                    });
                }
            }
            Rec::Link(a, b) => {
                // link(2) fails when the new name exists: then nothing changed.
                if let (Some(&id), false) = (self.names.get(a), self.names.contains_key(b)) {
                    self.names.insert(b.clone(), id);
                    self.pending.push(Pending {
                        dir: parent(b),
                        change: EntryChange::Link(b.clone(), id),
                    });
                }
            }
            Rec::Remove(p) => {
                self.names.remove(p);
                self.pending.push(Pending {
                    dir: parent(p),
                    change: EntryChange::Unlink(p.clone()),
                });
            }
            Rec::SyncDir(d) => {
                // Everything pending on this directory reaches the disk, in order.
                let (now, later): (Vec<_>, Vec<_>) =
                    self.pending.drain(..).partition(|p| &p.dir == d);
                for p in now {
                    apply_entry(&mut self.durable_names, &p.change);
                }
                self.pending = later;
            }
        }
    }

    /// Every crash state of this model: each subset of pending entry
    /// changes, times each content variant of each file with unsynced data.
    pub(crate) fn crash_states(&self) -> Vec<BTreeMap<PathBuf, Vec<u8>>> {
        let n = self.pending.len();
        assert!(n <= 12, "too many pending entry changes to enumerate ({n})");
        let mut states = Vec::new();
        for mask in 0u32..(1 << n) {
            let mut names = self.durable_names.clone();
            for (i, p) in self.pending.iter().enumerate() {
                if mask & (1 << i) != 0 {
                    apply_entry(&mut names, &p.change);
                }
            }
            // Files whose data may be partly lost, and their variants.
            let uncertain: Vec<(PathBuf, Vec<Vec<u8>>)> = names
                .iter()
                .filter(|(_, id)| self.inodes[**id].durable != self.inodes[**id].volatile)
                .map(|(path, id)| (path.clone(), content_variants(&self.inodes[*id])))
                .collect();
            let mut combos: Vec<BTreeMap<PathBuf, Vec<u8>>> = vec![
                names
                    .iter()
                    .map(|(path, id)| (path.clone(), self.inodes[*id].durable.clone()))
                    .collect(),
            ];
            for (path, variants) in &uncertain {
                combos = combos
                    .into_iter()
                    .flat_map(|state| {
                        variants.iter().map(move |v| {
                            let mut s = state.clone();
                            s.insert(path.clone(), v.clone());
                            s
                        })
                    })
                    .collect();
            }
            states.extend(combos);
        }
        states
    }
}

fn apply_entry(names: &mut BTreeMap<PathBuf, usize>, change: &EntryChange) {
    match change {
        EntryChange::Link(p, id) => {
            names.insert(p.clone(), *id);
        }
        EntryChange::Unlink(p) => {
            names.remove(p);
        }
        EntryChange::Move(a, b, id) => {
            // Atomic: the old name goes only if it still names the same file.
            if names.get(a) == Some(id) {
                names.remove(a);
            }
            names.insert(b.clone(), *id);
        }
    }
}

/// Last synced content, all written content, and a torn prefix in between.
fn content_variants(inode: &Inode) -> Vec<Vec<u8>> {
    let mut variants = vec![inode.durable.clone(), inode.volatile.clone()];
    if inode.volatile.len() > inode.durable.len() + 1 {
        let half = inode.durable.len() + (inode.volatile.len() - inode.durable.len()) / 2;
        variants.push(inode.volatile[..half].to_vec());
    }
    variants
}

/// Regular files below `root`, recursively.
fn walk(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out
}

/// Writes one crash state into `dest` (paths are re-rooted from `root`).
pub(crate) fn materialize(state: &BTreeMap<PathBuf, Vec<u8>>, root: &Path, dest: &Path) {
    for sub in ["snapshots", "tmp"] {
        std::fs::create_dir_all(dest.join(sub)).expect("create dirs");
    }
    for (path, bytes) in state {
        let rel = path.strip_prefix(root).expect("paths under the store root");
        std::fs::write(dest.join(rel), bytes).expect("write state file");
    }
}

/// A store with `before` published, then a recorded publish of `after`.
struct Recording {
    _dir: tempfile::TempDir,
    root: PathBuf,
    initial: Model,
    log: Vec<Rec>,
}

fn record_publish(before: &[&[u8]], after: &[u8]) -> Recording {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("store");
    let plain = Store::open(StoreOptions::new(&root)).expect("open");
    for payload in before {
        plain
            .publish_bytes(payload, &PublishOptions::default())
            .expect("setup publish");
    }
    std::fs::create_dir_all(root.join("snapshots")).expect("dirs");
    std::fs::create_dir_all(root.join("tmp")).expect("dirs");
    let initial = Model::of_directory(&root);
    let recorder = Arc::new(Recorder::default());
    let store = Store::open(StoreOptions::new(&root))
        .expect("open")
        .with_durable(Durable::with_hook(recorder.clone()));
    store
        .publish_bytes(after, &PublishOptions::default())
        .expect("recorded publish");
    let log = recorder.log.lock().map(|l| l.clone()).unwrap_or_default();
    Recording {
        _dir: dir,
        root,
        initial,
        log,
    }
}

/// What reading a crash state gave.
#[derive(Debug, PartialEq)]
enum Outcome {
    Old,
    New,
    Empty,
    Bad(String),
}

/// Checks every crash state after every prefix of `log`. Returns the bad
/// outcomes (prefix length, description) and the outcomes of the states
/// after the whole log (a crash right after the publish returned).
fn check_all(
    rec: &Recording,
    log: &[Rec],
    old: Option<&[u8]>,
    new: &[u8],
) -> (Vec<(usize, String)>, BTreeSet<String>) {
    let mut bad = Vec::new();
    let mut final_outcomes = BTreeSet::new();
    let scratch = tempfile::tempdir().expect("scratch");
    let mut model = rec.initial.clone();
    let mut case = 0usize;
    for k in 0..=log.len() {
        if k > 0 {
            model.apply(&log[k - 1]);
        }
        for state in model.crash_states() {
            case += 1;
            let dest = scratch.path().join(format!("s{case}"));
            materialize(&state, &rec.root, &dest);
            // One look: a crash state is static, re-reading cannot change it.
            let outcome = match Store::open(StoreOptions::new(&dest))
                .and_then(|s| s.with_reread(Window::NONE).read_current())
            {
                Ok(snap) if Some(snap.data.as_slice()) == old => Outcome::Old,
                Ok(snap) if snap.data == new => Outcome::New,
                Ok(snap) => Outcome::Bad(format!("read {} unexpected bytes", snap.data.len())),
                Err(crate::Error::NoStore { .. }) if old.is_none() => Outcome::Empty,
                Err(e) => Outcome::Bad(e.to_string()),
            };
            if let Outcome::Bad(why) = &outcome {
                bad.push((k, why.clone()));
            }
            if k == log.len() {
                final_outcomes.insert(format!("{outcome:?}"));
            }
            let _ = std::fs::remove_dir_all(&dest);
        }
    }
    (bad, final_outcomes)
}

const OLD: &[u8] = br#"{"generation":"old","packages":[1,2,3]}"#;
const NEW: &[u8] = br#"{"generation":"new","packages":[4,5,6,7,8,9]}"#;

fn without(log: &[Rec], pick: impl Fn(&Rec) -> bool) -> Vec<Rec> {
    let index = log
        .iter()
        .position(pick)
        .expect("the log contains the operation to drop");
    let mut shorter = log.to_vec();
    shorter.remove(index);
    shorter
}

fn is_snapshot_path(p: &Path) -> bool {
    p.parent()
        .and_then(|d| d.file_name())
        .is_some_and(|n| n == "snapshots")
}

#[test]
fn every_crash_state_of_a_publish_reads_the_old_or_the_new_generation() {
    let rec = record_publish(&[OLD], NEW);
    assert!(
        rec.log
            .iter()
            .filter(|r| matches!(r, Rec::SyncFile(_) | Rec::SyncDir(_)))
            .count()
            >= 4,
        "{:?}",
        rec.log
    );
    let (bad, final_outcomes) = check_all(&rec, &rec.log, Some(OLD), NEW);
    assert!(bad.is_empty(), "crash states that fail: {bad:?}");
    assert_eq!(
        final_outcomes,
        BTreeSet::from(["New".to_string()]),
        "once publish returns, the new generation is durable"
    );
    let states: usize = {
        let mut model = rec.initial.clone();
        let mut n = model.crash_states().len();
        for op in &rec.log {
            model.apply(op);
            n += model.crash_states().len();
        }
        n
    };
    eprintln!(
        "checked {states} crash states over {} operations",
        rec.log.len()
    );
    assert!(
        states > 100,
        "the enumeration explored only {states} states"
    );
}

#[test]
fn every_crash_state_of_a_first_publish_is_empty_or_the_new_generation() {
    let rec = record_publish(&[], NEW);
    let (bad, final_outcomes) = check_all(&rec, &rec.log, None, NEW);
    assert!(bad.is_empty(), "crash states that fail: {bad:?}");
    assert_eq!(final_outcomes, BTreeSet::from(["New".to_string()]));
}

#[test]
fn without_the_snapshot_fsync_some_crash_state_serves_a_damaged_snapshot() {
    let rec = record_publish(&[OLD], NEW);
    let log = without(
        &rec.log,
        |r| matches!(r, Rec::SyncFile(p) if rec.log.iter().any(|x| matches!(x, Rec::Rename(a, b) if a == p && is_snapshot_path(b)))),
    );
    let (bad, _) = check_all(&rec, &log, Some(OLD), NEW);
    assert!(
        !bad.is_empty(),
        "the check must catch a missing snapshot fsync"
    );
}

#[test]
fn without_the_snapshots_directory_fsync_some_crash_state_loses_the_snapshot() {
    let rec = record_publish(&[OLD], NEW);
    let log = without(
        &rec.log,
        |r| matches!(r, Rec::SyncDir(d) if d.ends_with("snapshots")),
    );
    let (bad, _) = check_all(&rec, &log, Some(OLD), NEW);
    assert!(
        !bad.is_empty(),
        "the check must catch a missing snapshots/ fsync"
    );
}

#[test]
fn without_the_pointer_fsync_some_crash_state_has_a_torn_pointer() {
    let rec = record_publish(&[OLD], NEW);
    let pointer_temp = rec
        .log
        .iter()
        .find_map(|r| match r {
            Rec::Rename(a, b) if b.ends_with("current") => Some(a.clone()),
            _ => None,
        })
        .expect("the pointer is renamed into place");
    let log = without(
        &rec.log,
        |r| matches!(r, Rec::SyncFile(p) if *p == pointer_temp),
    );
    let (bad, _) = check_all(&rec, &log, Some(OLD), NEW);
    assert!(
        !bad.is_empty(),
        "the check must catch a missing pointer fsync"
    );
}

#[test]
fn without_the_store_directory_fsync_a_returned_publish_is_not_durable() {
    let rec = record_publish(&[OLD], NEW);
    let log = without(&rec.log, |r| matches!(r, Rec::SyncDir(d) if *d == rec.root));
    let (bad, final_outcomes) = check_all(&rec, &log, Some(OLD), NEW);
    assert!(bad.is_empty(), "consistency does not depend on it: {bad:?}");
    assert!(
        final_outcomes.contains("Old"),
        "but durability does: {final_outcomes:?}"
    );
}
