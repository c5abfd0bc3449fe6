//! Power-loss model of the lease backend: creation, renewal, release and
//! takeover of `<store>/lease`.
//!
//! The real lease code runs with a recording [`Durable`] (every create,
//! write, fsync, link, rename, directory fsync and unlink of a lease goes
//! through it), and the model of [`crate::crash_sim`] enumerates every state
//! a power cut may leave after each prefix of the log. Each distinct state
//! (files outside `tmp/`, which lease decisions never look at) is written to
//! a fresh directory, and the next writer — the real `try_acquire`, on this
//! host, after the reboot — is run against it:
//!
//! - while the recorded holder believes it holds the lease and lives on
//!   another host (the store's machine crashed, not the holder's), the
//!   lease on disk must be its own, readable, reported by `status` as held
//!   by it, and the next writer must not get the lock (never two holders);
//! - a holder that died in the power cut (same host, earlier boot) must not
//!   make the next writer wait at all when its lease is readable;
//! - in every state the next writer gets the lock within one lease time (the
//!   lease clock moved one lease time and a second ahead), and an
//!   unreadable lease is reported by `status` as such, never as free.
//!
//! Teeth: dropping the renewal's fsync produces an empty lease under a live
//! holder; dropping the directory fsync after the link loses a live
//! holder's lease, and the next writer then runs beside it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::holder::HolderInfo;
use super::lease::{self, Attempt, LeaseRecord, test_clock};
use super::{Backend, LockState};
use crate::crash_sim::{Model, Rec, Recorder, materialize};
use crate::durable::Durable;
use crate::layout::Layout;
use crate::time::Timestamp;

const TTL: Duration = Duration::from_secs(30);
/// "One lease time after the crash": the lease clock is moved this far.
const LATER: Duration = Duration::from_secs(31);

/// Where the recorded holder lives, and so what its lease must do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    /// On another host, alive through the store machine's power cut.
    Remote,
    /// On this host, dead since the power cut (the boot id changed).
    LocalDead,
}

fn dead_pid() -> u32 {
    let mut child = std::process::Command::new("true")
        .spawn()
        .expect("spawn true");
    let pid = child.id();
    let _ = child.wait();
    pid
}

fn holder(who: Who, command: &str) -> HolderInfo {
    let mut h = HolderInfo::this_process(command, Backend::Lease);
    match who {
        Who::Remote => {
            h.host = "remote-host".into();
            h.pid = 4242;
            h.boot_id = Some("remote-boot".into());
        }
        Who::LocalDead => {
            h.boot_id = Some("boot-before-the-power-cut".into());
            h.pid = dead_pid();
        }
    }
    h
}

/// One recorded sequence of lease operations.
struct Scenario {
    name: String,
    _dir: tempfile::TempDir,
    root: PathBuf,
    initial: Model,
    log: Vec<Rec>,
    /// After prefixes `claim.0 ..= claim.1` of the log the recorded holder
    /// believes it holds the lease (from `try_acquire`'s return to the
    /// release).
    claim: (usize, usize),
    claimant: LeaseRecord,
    who: Who,
}

fn fresh_store() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("store");
    for sub in ["tmp", "snapshots"] {
        std::fs::create_dir_all(root.join(sub)).expect("store dirs");
    }
    (dir, root)
}

/// One attempt to take the lease, by a waiter that has seen nothing yet.
fn try_once(layout: &Layout, durable: &Durable, me: &HolderInfo) -> std::io::Result<Attempt> {
    lease::try_acquire(layout, durable, me, TTL, &mut lease::LeaseWatch::default())
}

/// [`try_once`], which must get the lease.
fn acquire_once(layout: &Layout, durable: &Durable, me: &HolderInfo) -> lease::LeaseGuard {
    acquired(try_once(layout, durable, me))
}

fn acquired(attempt: std::io::Result<Attempt>) -> lease::LeaseGuard {
    match attempt.expect("try_acquire") {
        Attempt::Acquired(guard) => guard,
        Attempt::Busy(r) => panic!("the recorded holder must get the lease: {r:?}"),
    }
}

/// Acquire on an empty store, renew once, release.
fn lifecycle(who: Who) -> Scenario {
    let (dir, root) = fresh_store();
    let layout = Layout::new(&root);
    let initial = Model::of_directory(&root);
    let recorder = Arc::new(Recorder::default());
    let durable = Durable::with_hook(recorder.clone());
    let me = holder(who, "holder");
    let guard = acquire_once(&layout, &durable, &me);
    let from = recorder.log().len();
    let claimant = lease::read(&layout.lease_file()).expect("our lease");
    let mut renewed = claimant.clone();
    renewed.expires_at = Timestamp::from(SystemTime::now() + TTL);
    lease::renew(&durable, &layout.tmp_dir(), &layout.lease_file(), &renewed).expect("renew");
    let until = recorder.log().len();
    drop(guard);
    Scenario {
        name: format!("create, renew, release ({who:?})"),
        _dir: dir,
        root,
        initial,
        log: recorder.log(),
        claim: (from, until),
        claimant,
        who,
    }
}

/// What the next writer finds in place of a crashed holder's lease.
#[derive(Debug, Clone, Copy)]
enum Old {
    /// A readable lease that has expired.
    Expired,
    /// An empty lease file one and a half lease times old.
    Empty,
}

/// A takeover of an old lease, then release.
fn takeover(who: Who, old: Old) -> Scenario {
    let (dir, root) = fresh_store();
    let layout = Layout::new(&root);
    let previous = LeaseRecord {
        lease_id: "0123456789abcdef0123456789abcdef".into(),
        holder: holder(Who::Remote, "previous holder"),
        expires_at: Timestamp::from(SystemTime::now() - Duration::from_secs(1)),
        ttl_ms: None,
    };
    let bytes = match old {
        Old::Expired => serde_json::to_vec(&previous).expect("record"),
        Old::Empty => Vec::new(),
    };
    std::fs::write(layout.lease_file(), bytes).expect("old lease");
    let file = std::fs::File::options()
        .write(true)
        .open(layout.lease_file())
        .expect("open old lease");
    file.set_modified(SystemTime::now() - TTL - TTL / 2)
        .expect("age the old lease");
    let initial = Model::of_directory(&root);
    let recorder = Arc::new(Recorder::default());
    let durable = Durable::with_hook(recorder.clone());
    let me = holder(who, "taking over");
    let guard = acquire_once(&layout, &durable, &me);
    let from = recorder.log().len();
    let claimant = lease::read(&layout.lease_file()).expect("our lease");
    drop(guard);
    Scenario {
        name: format!("take over an {old:?} lease, release ({who:?})"),
        _dir: dir,
        root,
        initial,
        log: recorder.log(),
        claim: (from, from),
        claimant,
        who,
    }
}

/// Whether the next writer (this process, this host) gets the lease within
/// a few attempts; a breaker that finds a stale `lease.break` removes it in
/// one attempt and takes it in the next.
fn next_writer_acquires(layout: &Layout) -> bool {
    let me = HolderInfo::this_process("next writer", Backend::Lease);
    for _ in 0..3 {
        match try_once(layout, &Durable::default(), &me) {
            Ok(Attempt::Acquired(guard)) => {
                drop(guard);
                return true;
            }
            Ok(Attempt::Busy(_)) => {}
            Err(_) => return false,
        }
    }
    false
}

#[derive(Debug, Default)]
struct Report {
    /// Crash states enumerated (with duplicates).
    states: usize,
    /// Distinct states outside `tmp/`, each checked.
    distinct: usize,
    /// Distinct states whose `lease` is empty.
    empty_lease: usize,
    violations: Vec<String>,
}

/// Checks one crash state; returns what is wrong with it.
fn check_state(
    s: &Scenario,
    state: &BTreeMap<PathBuf, Vec<u8>>,
    claimed: bool,
    dest: &Path,
) -> Option<String> {
    // Right after the reboot.
    let now = dest.join("now");
    materialize(state, &s.root, &now);
    let layout = Layout::new(&now);
    let status = match super::probe(&layout, TTL) {
        Ok((status, _)) => status,
        Err(e) => return Some(format!("status failed: {e}")),
    };
    let readable = lease::read(&layout.lease_file());
    if layout.lease_file().exists()
        && readable.is_none()
        && !matches!(status, LockState::UnreadableLease { .. })
    {
        return Some(format!("status says {status:?} for an unreadable lease"));
    }
    if claimed && s.who == Who::Remote {
        match &readable {
            Some(r) if r.lease_id == s.claimant.lease_id => {}
            Some(r) => return Some(format!("the live holder's lease is {}'s", r.lease_id)),
            None if layout.lease_file().exists() => {
                return Some("the live holder's lease is unreadable".into());
            }
            None => return Some("the live holder's lease is gone".into()),
        }
        let named = matches!(&status, LockState::Held(Some(h)) if *h == s.claimant.holder);
        if !named {
            return Some(format!("status does not name the live holder: {status:?}"));
        }
        if next_writer_acquires(&layout) {
            return Some("two holders: the next writer took a live holder's lease".into());
        }
    }
    // A reboot is told from another machine of our name by the machine id;
    // without one here the holder waits for its expiry (checked below).
    if s.who == Who::LocalDead
        && super::holder::machine_id().is_some()
        && (readable.is_some() || !layout.lease_file().exists())
        && !next_writer_acquires(&Layout::new(&{
            let again = dest.join("again");
            materialize(state, &s.root, &again);
            again
        }))
    {
        return Some("the next writer waits for a holder that died in the power cut".into());
    }
    // One lease time later (the holder, if any, stopped renewing).
    let later = dest.join("later");
    materialize(state, &s.root, &later);
    if !test_clock::ahead_by(LATER, || next_writer_acquires(&Layout::new(&later))) {
        return Some("the next writer cannot take over within one lease time".into());
    }
    None
}

fn check(s: &Scenario, log: &[Rec], claim: (usize, usize)) -> Report {
    let mut report = Report::default();
    // The next writer fsyncs for real: on tmpfs where there is one.
    let scratch = tempfile::tempdir_in("/dev/shm")
        .or_else(|_| tempfile::tempdir())
        .expect("scratch");
    let tmp = s.root.join(crate::layout::TMP);
    let lease_path = s.root.join(crate::layout::LEASE);
    let mut model = s.initial.clone();
    for k in 0..=log.len() {
        if k > 0 {
            model.apply(&log[k - 1]);
        }
        let claimed = claim.0 <= k && k <= claim.1;
        let mut seen = BTreeSet::new();
        for state in model.crash_states() {
            report.states += 1;
            let outside_tmp: BTreeMap<PathBuf, Vec<u8>> = state
                .into_iter()
                .filter(|(path, _)| !path.starts_with(&tmp))
                .collect();
            if !seen.insert(outside_tmp.clone()) {
                continue;
            }
            report.distinct += 1;
            report.empty_lease +=
                usize::from(outside_tmp.get(&lease_path).is_some_and(Vec::is_empty));
            let dest = scratch.path().join(format!("s{}", report.distinct));
            if let Some(why) = check_state(s, &outside_tmp, claimed, &dest) {
                let files: Vec<String> = outside_tmp
                    .iter()
                    .map(|(p, b)| format!("{} ({} bytes)", p.display(), b.len()))
                    .collect();
                report.violations.push(format!(
                    "{}: crash after {k} operations (last {}), files {files:?}: {why}",
                    s.name,
                    k.checked_sub(1).map_or("none".into(), |i| short(&log[i]))
                ));
            }
            let _ = std::fs::remove_dir_all(&dest);
        }
    }
    report
}

/// One operation, without the bytes of a write.
fn short(rec: &Rec) -> String {
    match rec {
        Rec::Write(p, data) => format!("Write({}, {} bytes)", p.display(), data.len()),
        other => format!("{other:?}"),
    }
}

/// The log without its operation at `index`, and the claim shifted with it.
fn without(log: &[Rec], claim: (usize, usize), index: usize) -> (Vec<Rec>, (usize, usize)) {
    let mut shorter = log.to_vec();
    shorter.remove(index);
    let shift = |i: usize| if index < i { i - 1 } else { i };
    (shorter, (shift(claim.0), shift(claim.1)))
}

#[test]
fn every_crash_state_of_lease_creation_renewal_and_takeover_is_safe_and_recovers_in_one_lease_time()
{
    let mut total = Report::default();
    let mut ops = 0;
    if super::holder::machine_id().is_none() {
        eprintln!(
            "SKIPPED the at-once takeover from a holder that died in the power cut: no machine id \
             (/etc/machine-id) here to tell a reboot from another machine; its lease is still \
             checked to be taken over within one lease time"
        );
    }
    for who in [Who::Remote, Who::LocalDead] {
        for s in [
            lifecycle(who),
            takeover(who, Old::Expired),
            takeover(who, Old::Empty),
        ] {
            assert!(
                s.log.iter().any(|r| matches!(r, Rec::Link(..))),
                "{}: the lease is linked into place: {:?}",
                s.name,
                s.log
            );
            let report = check(&s, &s.log, s.claim);
            eprintln!(
                "{}: {} operations, {} crash states, {} distinct checked",
                s.name,
                s.log.len(),
                report.states,
                report.distinct
            );
            ops += s.log.len();
            total.states += report.states;
            total.distinct += report.distinct;
            total.violations.extend(report.violations);
        }
    }
    eprintln!(
        "lease model: {ops} operations, {} crash states, {} distinct states checked",
        total.states, total.distinct
    );
    assert!(
        total.violations.is_empty(),
        "crash states that fail:\n{}",
        total.violations.join("\n")
    );
    assert!(
        total.distinct > 50,
        "explored only {} states",
        total.distinct
    );
}

#[test]
fn without_the_renewal_fsync_a_live_holder_is_left_with_an_empty_lease() {
    let s = lifecycle(Who::Remote);
    let renewal_temp = s
        .log
        .iter()
        .find_map(|r| match r {
            Rec::Rename(a, b) if b.ends_with(crate::layout::LEASE) => Some(a.clone()),
            _ => None,
        })
        .expect("the renewal renames over the lease");
    let index = s
        .log
        .iter()
        .position(|r| matches!(r, Rec::SyncFile(p) if *p == renewal_temp))
        .expect("the renewal fsyncs its temp file");
    let intact = check(&s, &s.log, s.claim);
    assert_eq!(
        intact.empty_lease, 0,
        "with the fsync: never an empty lease"
    );
    let (log, claim) = without(&s.log, s.claim, index);
    let report = check(&s, &log, claim);
    assert!(
        report.empty_lease > 0,
        "the model must produce the empty-lease state"
    );
    assert!(
        report
            .violations
            .iter()
            .any(|v| v.contains("lease is unreadable")),
        "and flag it: {:?}",
        report.violations
    );
}

#[test]
fn without_the_directory_fsync_after_the_link_a_live_holder_loses_its_lease() {
    let s = lifecycle(Who::Remote);
    let link = s
        .log
        .iter()
        .position(|r| matches!(r, Rec::Link(_, b) if b.ends_with(crate::layout::LEASE)))
        .expect("the lease is linked");
    let index = link
        + s.log[link..]
            .iter()
            .position(|r| matches!(r, Rec::SyncDir(d) if *d == s.root))
            .expect("the store directory is fsynced after the link");
    let (log, claim) = without(&s.log, s.claim, index);
    let report = check(&s, &log, claim);
    assert!(
        report
            .violations
            .iter()
            .any(|v| v.contains("lease is gone") || v.contains("two holders")),
        "the check must catch a lost lease: {:?}",
        report.violations
    );
}
