//! What the run knows, shared by the writer, reader and monitor threads:
//! the payloads offered to writers, the generations observed, counters and
//! invariant violations.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::OsStr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use serde::Serialize;

use crate::procs::Procs;

/// A blake3 hash.
pub type Hash = [u8; 32];

/// The stderr text of snapcache's "nothing published yet" error. The CLI has
/// no distinct exit code or JSON error kind for it (it is exit 1, kind
/// `error`), so the message is the only way to tell it apart.
pub const NO_STORE_MESSAGE: &str = "no snapshot has been published";

/// A payload handed to a writer.
#[derive(Debug, Clone)]
pub struct Offer {
    pub writer: String,
    pub refresh: u64,
    pub bytes: u64,
    /// The writer of this payload was killed.
    pub killed: bool,
}

/// Every counter of the run (all start at 0).
#[derive(Debug, Default, Clone, Serialize)]
pub struct Counters {
    pub refreshes_attempted: u64,
    pub refreshes_succeeded: u64,
    pub refreshes_timed_out: u64,
    pub refreshes_killed: u64,
    /// Exit codes other than 0, 75 and our SIGKILL (each is a violation).
    pub refreshes_failed: u64,
    /// Writers still running after the hang limit (each is a violation).
    pub refreshes_hung: u64,
    pub sources_file: u64,
    pub sources_exec_cat: u64,
    pub sources_exec_split: u64,
    pub payload_bytes_offered: u64,
    pub payload_bytes_published: u64,
    /// The longest lock wait a successful refresh reported (`waited_ms`).
    pub max_lock_wait_ms: u64,

    pub kills_planned: u64,
    /// Planned kills whose writer had already exited.
    pub kills_missed: u64,
    /// Planned kills by how they were timed.
    pub kills_planned_by_timing: BTreeMap<String, u64>,
    /// Kills that landed, by how they were timed.
    pub kills_by_timing: BTreeMap<String, u64>,
    /// The system call each victim was in when killed.
    pub kills_in_syscall: BTreeMap<String, u64>,
    /// Kills that hit the process named in `lock.holder` at that moment.
    pub kills_holding_lock: u64,
    /// Kills of writers with an `--exec` source.
    pub kills_exec_source: u64,

    pub reads_cli: u64,
    pub reads_library: u64,
    /// "Nothing published yet" before the first publish (not failures).
    pub reads_empty: u64,
    pub reads_failed: u64,
    pub reads_torn: u64,
    pub reads_not_json: u64,
    pub bytes_read: u64,
    /// A reader saw the current generation go backwards.
    pub generation_regressions: u64,
    pub history_checks: u64,
    pub history_violations: u64,
    /// `verify` runs during the run (`--verify-during`) and how many failed.
    pub verify_checks: u64,
    pub verify_failures: u64,
    /// One generation number observed with two different hashes.
    pub generation_conflicts: u64,
    /// Two successful refreshes reported the same generation.
    pub duplicate_generations: u64,
}

/// Violations of one kind: how many, and the first few messages.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Violations {
    pub count: u64,
    pub examples: Vec<String>,
}

/// How a read's content compares with the payloads offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Content {
    /// One of the payloads, and valid JSON.
    Published(Hash),
    /// Not one of the payloads: torn, partial or foreign.
    Torn(Hash),
    /// One of the payloads but not JSON (impossible unless the tool is wrong).
    NotJson(Hash),
}

pub struct Shared {
    pub snapcache: PathBuf,
    pub store: PathBuf,
    pub lock_backend: Option<String>,
    /// `SNAPCACHE_KEEP` for every snapcache command (retention).
    pub keep: Option<u64>,
    pub procs: Procs,
    pub started: Instant,
    /// Readers stop when set.
    pub stop: AtomicBool,
    /// Created once a publish is known: a reader that saw it before starting
    /// a read must not get "nothing published yet".
    pub published_marker: PathBuf,
    offered: Mutex<HashMap<Hash, Offer>>,
    generations: Mutex<BTreeMap<u64, Hash>>,
    success_generations: Mutex<BTreeMap<u64, String>>,
    observed: Mutex<HashSet<Hash>>,
    counters: Mutex<Counters>,
    violations: Mutex<BTreeMap<&'static str, Violations>>,
    first_publish: Mutex<Option<Instant>>,
    max_generation: AtomicU64,
}

/// Locks a mutex, recovering the data if a thread panicked while holding it.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Shared {
    pub fn new(
        snapcache: PathBuf,
        store: PathBuf,
        lock_backend: Option<String>,
        published_marker: PathBuf,
    ) -> Self {
        Shared {
            snapcache,
            store,
            lock_backend,
            keep: None,
            procs: Procs::new(),
            started: Instant::now(),
            stop: AtomicBool::new(false),
            published_marker,
            offered: Mutex::default(),
            generations: Mutex::default(),
            success_generations: Mutex::default(),
            observed: Mutex::default(),
            counters: Mutex::default(),
            violations: Mutex::default(),
            first_publish: Mutex::default(),
            max_generation: AtomicU64::new(0),
        }
    }

    /// `snapcache --store STORE [--lock-backend B] ARGS`, environment cleaned.
    pub fn snapcache<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = Command::new(&self.snapcache);
        cmd.arg("--store").arg(&self.store);
        if let Some(backend) = &self.lock_backend {
            cmd.arg("--lock-backend").arg(backend);
        }
        cmd.args(args).stdin(Stdio::null());
        for var in [
            "SNAPCACHE_DIR",
            "SNAPCACHE_LOCK_TIMEOUT",
            "SNAPCACHE_KEEP",
            "SNAPCACHE_LOG",
            "SNAPCACHE_LOCK_BACKEND",
            "SNAPCACHE_LEASE_SECS",
        ] {
            cmd.env_remove(var);
        }
        if let Some(keep) = self.keep {
            cmd.env("SNAPCACHE_KEEP", keep.to_string());
        }
        cmd
    }

    pub fn count(&self, f: impl FnOnce(&mut Counters)) {
        f(&mut lock(&self.counters));
    }

    pub fn counters(&self) -> Counters {
        lock(&self.counters).clone()
    }

    pub fn violation(&self, kind: &'static str, message: String) {
        let mut all = lock(&self.violations);
        let v = all.entry(kind).or_default();
        v.count += 1;
        if v.examples.len() < 5 {
            v.examples.push(message);
        }
    }

    pub fn violations(&self) -> BTreeMap<&'static str, Violations> {
        lock(&self.violations).clone()
    }

    /// Registers a payload before any writer can publish it.
    pub fn offer(&self, hash: Hash, offer: Offer) {
        lock(&self.offered).insert(hash, offer);
    }

    pub fn mark_killed(&self, hash: &Hash) {
        if let Some(o) = lock(&self.offered).get_mut(hash) {
            o.killed = true;
        }
    }

    /// `payload of writer W refresh R (N bytes, blake3 ...)`.
    pub fn describe(&self, hash: &Hash) -> String {
        match lock(&self.offered).get(hash) {
            Some(o) => format!(
                "the payload of writer {} refresh {} ({} bytes, blake3 {})",
                o.writer,
                o.refresh,
                o.bytes,
                hex(hash)
            ),
            None => format!("unknown content (blake3 {})", hex(hash)),
        }
    }

    pub fn is_offered(&self, hash: &Hash) -> bool {
        lock(&self.offered).contains_key(hash)
    }

    /// Checks read bytes against the payloads offered so far.
    pub fn check_content(&self, data: &[u8]) -> Content {
        let hash = *blake3::hash(data).as_bytes();
        if !self.is_offered(&hash) {
            return Content::Torn(hash);
        }
        lock(&self.observed).insert(hash);
        if serde_json::from_slice::<serde::de::IgnoredAny>(data).is_err() {
            return Content::NotJson(hash);
        }
        Content::Published(hash)
    }

    /// Records that `generation` has content `hash` (from `source`); flags a
    /// generation seen with two different contents.
    pub fn observe_generation(&self, generation: u64, hash: Hash, source: &str) {
        lock(&self.observed).insert(hash);
        self.max_generation.fetch_max(generation, Ordering::Relaxed);
        let known = *lock(&self.generations).entry(generation).or_insert(hash);
        if known != hash {
            self.count(|c| c.generation_conflicts += 1);
            self.violation(
                "generation-conflict",
                format!(
                    "generation {generation} seen as {} and as {} ({source})",
                    self.describe(&known),
                    self.describe(&hash)
                ),
            );
        }
    }

    /// Records a successful refresh's generation; flags duplicates.
    pub fn success_generation(&self, generation: u64, who: String) {
        let mut all = lock(&self.success_generations);
        if let Some(previous) = all.get(&generation) {
            let message = format!("generation {generation} reported by {previous} and by {who}");
            drop(all);
            self.count(|c| c.duplicate_generations += 1);
            self.violation("duplicate-generation", message);
            return;
        }
        all.insert(generation, who);
    }

    pub fn success_generation_count(&self) -> usize {
        lock(&self.success_generations).len()
    }

    pub fn max_generation(&self) -> u64 {
        self.max_generation.load(Ordering::Relaxed)
    }

    /// Payloads of killed writers that were published anyway (killed after
    /// the commit point) and then seen by a reader or in `history`.
    pub fn killed_but_published(&self) -> u64 {
        let offered = lock(&self.offered);
        let observed = lock(&self.observed);
        offered
            .iter()
            .filter(|(h, o)| o.killed && observed.contains(*h))
            .count() as u64
    }

    /// A publish is known to have happened (by now).
    pub fn note_published(&self) {
        let mut first = lock(&self.first_publish);
        if first.is_none() {
            *first = Some(Instant::now());
            let _ = std::fs::write(&self.published_marker, b"published\n");
        }
    }

    /// Whether a publish was known before `instant`.
    pub fn published_before(&self, instant: Instant) -> bool {
        lock(&self.first_publish).is_some_and(|t| t < instant)
    }

    pub fn elapsed_secs(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

pub fn hex(hash: &Hash) -> String {
    blake3::Hash::from_bytes(*hash).to_hex().to_string()
}

pub fn parse_hex(text: &str) -> Option<Hash> {
    blake3::Hash::from_hex(text).ok().map(|h| *h.as_bytes())
}

/// The last `max` bytes of a process's stderr, as text on one line.
pub fn tail(bytes: &[u8], max: usize) -> String {
    let start = bytes.len().saturating_sub(max);
    String::from_utf8_lossy(&bytes[start..])
        .trim()
        .replace('\n', " | ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared() -> Shared {
        Shared::new("snapcache".into(), "store".into(), None, "marker".into())
    }

    #[test]
    fn reads_are_classified_against_the_offered_payloads() {
        let s = shared();
        let good = br#"{"a":[1,2,3]}"#;
        let hash = *blake3::hash(good).as_bytes();
        s.offer(
            hash,
            Offer {
                writer: "0".into(),
                refresh: 0,
                bytes: good.len() as u64,
                killed: false,
            },
        );
        assert_eq!(s.check_content(good), Content::Published(hash));
        assert!(matches!(s.check_content(&good[..7]), Content::Torn(_)));
        assert!(matches!(s.check_content(b""), Content::Torn(_)));
        let not_json = b"{\"a\":";
        s.offer(
            *blake3::hash(not_json).as_bytes(),
            Offer {
                writer: "x".into(),
                refresh: 1,
                bytes: 5,
                killed: false,
            },
        );
        assert!(matches!(s.check_content(not_json), Content::NotJson(_)));
    }

    #[test]
    fn conflicting_and_duplicate_generations_are_violations() {
        let s = shared();
        s.observe_generation(3, [1; 32], "a");
        s.observe_generation(3, [1; 32], "b");
        assert_eq!(s.counters().generation_conflicts, 0);
        s.observe_generation(3, [2; 32], "c");
        assert_eq!(s.counters().generation_conflicts, 1);
        s.success_generation(5, "w0".into());
        s.success_generation(6, "w1".into());
        assert_eq!(s.counters().duplicate_generations, 0);
        s.success_generation(5, "w2".into());
        assert_eq!(s.counters().duplicate_generations, 1);
        assert_eq!(s.violations().len(), 2);
        assert_eq!(s.max_generation(), 3);
    }
}
