//! The store: publish under the writer lock, read without it.
//!
//! # Publish, step by step (and why)
//!
//! 1. Take the writer lock: one writer at a time, so generation numbers and
//!    the pointer swap never race.
//! 2. Sweep leftovers of crashed writers and the snapshots that left
//!    retention at the last publish (see [`crate::sweep`]), on a second
//!    thread alongside steps 3 to 5, joined before step 5's rename.
//! 3. Stream the payload into a temp file in `tmp/`, hashing as it goes.
//! 4. Reject empty or (by default) malformed JSON: the temp file is dropped,
//!    nothing else was touched.
//! 5. `fsync` the temp file, make it read-only, rename it to
//!    `snapshots/<hash>`, `fsync` `snapshots/`. Before the pointer names a
//!    snapshot, its bytes and its name must be on disk.
//! 6. Write the new pointer through a temp file, `fsync`, rename over
//!    `current`, `fsync` the store directory. The rename is the commit point:
//!    a crash before it leaves the old generation current, after it the new.
//!
//! Readers read `current`, open the snapshot it names and verify length and
//! hash, so they see the old or the new generation, never a partial one.

use std::collections::HashSet;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::durable::{Durable, RenameStats, remaining};
use crate::error::{Error, Result, SourceError};
use crate::hash::ContentHash;
use crate::layout::Layout;
use crate::lock::{
    self, AcquireOptions, Backend, BackendChoice, DEFAULT_LEASE_TTL, LeaseView, LockBudget,
    LockObserver, LockState, LockWait, TimeoutSource, WriterLock,
};
use crate::marker::{self, Found};
use crate::payload::{PayloadFormat, PayloadSink};
use crate::pointer::{self, Generation, MAX_KEEP, Pointer};
use crate::reread::{self, Look};
use crate::snapshot::{self, SnapshotFault};
use crate::store_root;
use crate::sweep::{self, ForeignEntry, InGrace, Leftover};
use crate::time::Timestamp;
use crate::trust::{self, Access};
use crate::verified::VerifiedSnapshot;
use crate::writer::{
    ClearReport, ForgetReport, PinReport, Take, Writer, json_source, reader_source,
};

/// Default number of generations retained besides the current one (6 in all).
pub const DEFAULT_KEEP: usize = 5;
/// How often a reader re-reads the pointer when a snapshot vanished under it.
const READ_ATTEMPTS: usize = 5;

/// How to open a store.
///
/// ```
/// use snapcache::{LockWait, StoreOptions};
/// use std::time::Duration;
/// let options = StoreOptions::new("/tmp/my-cache")
///     .keep(3)
///     .lock_timeout(LockWait::For(Duration::from_secs(30)));
/// ```
#[derive(Clone)]
pub struct StoreOptions {
    root: PathBuf,
    lock_budget: LockBudget,
    keep: usize,
    backend: BackendChoice,
    lease_ttl: Duration,
    observer: Option<Arc<dyn LockObserver>>,
    cancel: Option<Arc<AtomicBool>>,
    purpose: Option<String>,
    snapshot_grace: Duration,
    pub(crate) trusted_owners: Vec<u32>,
}

/// How long a store on an object store keeps a snapshot object that no
/// retained generation needs any more, before gc may delete it (10 min).
pub const DEFAULT_SNAPSHOT_GRACE: Duration = crate::commit_record::SNAPSHOT_GRACE;

impl std::fmt::Debug for StoreOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreOptions")
            .field("root", &self.root)
            .field("lock_budget", &self.lock_budget)
            .field("keep", &self.keep)
            .finish_non_exhaustive()
    }
}

impl StoreOptions {
    /// Options for the store at `root`, with defaults: lock budget 600 s,
    /// retention [`DEFAULT_KEEP`].
    pub fn new(root: impl Into<PathBuf>) -> Self {
        StoreOptions {
            root: root.into(),
            lock_budget: LockBudget::default(),
            keep: DEFAULT_KEEP,
            backend: BackendChoice::Auto,
            lease_ttl: DEFAULT_LEASE_TTL,
            observer: None,
            cancel: None,
            purpose: None,
            snapshot_grace: DEFAULT_SNAPSHOT_GRACE,
            trusted_owners: Vec::new(),
        }
    }

    /// The default store root: `$SNAPCACHE_DIR`, else
    /// `$XDG_CACHE_HOME/snapcache`, else `~/.cache/snapcache`
    /// (`%LOCALAPPDATA%\snapcache` on Windows). `XDG_CACHE_HOME`, `HOME`
    /// and `LOCALAPPDATA` count only when absolute; `None` when none is
    /// set (or all are relative).
    pub fn default_root() -> Option<PathBuf> {
        let env = |k: &str| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        if let Some(dir) = env("SNAPCACHE_DIR") {
            return Some(dir);
        }
        // The XDG base directory spec: a relative path is invalid and
        // must be ignored.
        if let Some(dir) = env("XDG_CACHE_HOME").filter(|d| d.is_absolute()) {
            return Some(dir.join("snapcache"));
        }
        // A relative home would put the store under whatever directory the
        // program happens to run in: ignored like a relative XDG path.
        #[cfg(windows)]
        if let Some(dir) = env("LOCALAPPDATA").filter(|d| d.is_absolute()) {
            return Some(dir.join("snapcache"));
        }
        env("HOME")
            .filter(|h| h.is_absolute())
            .map(|h| h.join(".cache").join("snapcache"))
    }

    /// The store root these options point at.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Sets how long writers wait for the lock (source: the caller).
    pub fn lock_timeout(self, wait: LockWait) -> Self {
        self.lock_budget(LockBudget::new(wait, TimeoutSource::Caller))
    }

    /// Sets the lock budget together with where it came from.
    pub fn lock_budget(mut self, budget: LockBudget) -> Self {
        self.lock_budget = budget;
        self
    }

    /// Generations retained besides the current one (1 to 100).
    pub fn keep(mut self, keep: usize) -> Self {
        self.keep = keep.clamp(1, MAX_KEEP);
        self
    }

    /// Chooses the lock backend (default: detect from the filesystem).
    pub fn lock_backend(mut self, choice: BackendChoice) -> Self {
        self.backend = choice;
        self
    }

    /// Reads stores that belong to the user with this uid, as well as this
    /// process's own and root's (Unix; one call per user).
    ///
    /// By default a store that belongs to another user is not read, like
    /// a git repository outside `safe.directory`: whatever it serves, that
    /// user put there, and a cache's content decides what its program
    /// downloads and runs. A team's shared cache, written by one account
    /// and read by others, names that account here. Whoever is trusted,
    /// nobody but the owner may be able to write the store.
    ///
    /// ```
    /// let options = snapcache::StoreOptions::new("/srv/cache/kopi").trust_owner(1001);
    /// # let _ = options;
    /// ```
    pub fn trust_owner(mut self, uid: u32) -> Self {
        if !self.trusted_owners.contains(&uid) {
            self.trusted_owners.push(uid);
        }
        self
    }

    /// Like [`trust_owner`](Self::trust_owner), for a user given by name
    /// (looked up in `/etc/passwd`) or by uid written as digits.
    ///
    /// Fails with [`Error::InvalidOption`] when no such user is known.
    /// Where ownership is not checked (Windows) any name is accepted and
    /// changes nothing.
    ///
    /// ```
    /// # fn main() -> Result<(), snapcache::Error> {
    /// let options = snapcache::StoreOptions::new("/srv/cache/kopi").trust_owner_named("root")?;
    /// # let _ = options;
    /// # Ok(()) }
    /// ```
    pub fn trust_owner_named(self, name: &str) -> Result<Self> {
        if let Ok(uid) = name.parse::<u32>() {
            return Ok(self.trust_owner(uid));
        }
        if cfg!(not(unix)) {
            return Ok(self);
        }
        match trust::uid_of_user(name) {
            Some(uid) => Ok(self.trust_owner(uid)),
            None => Err(Error::InvalidOption(format!(
                "no user named {name:?} is listed in /etc/passwd, so their stores cannot be trusted by name; give that user's uid instead"
            ))),
        }
    }

    /// Lease time of the lease backend (default 30 s; 300 ms to 1 day,
    /// values outside are clamped). A crashed holder on another host blocks
    /// writers for up to this long.
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.lease_ttl = ttl.clamp(lock::MIN_LEASE_TTL, lock::MAX_LEASE_TTL);
        self
    }

    /// Receives lock-wait events (for a progress UI).
    pub fn lock_observer(mut self, observer: Arc<dyn LockObserver>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// A flag that, once set, makes waits and payload streaming stop with
    /// [`Error::Interrupted`] (the CLI sets it on SIGINT/SIGTERM).
    pub fn cancel_flag(mut self, flag: Arc<AtomicBool>) -> Self {
        self.cancel = Some(flag);
        self
    }

    /// Describes this writer in the lock holder record (default: the
    /// process's command line).
    pub fn purpose(mut self, purpose: impl Into<String>) -> Self {
        self.purpose = Some(pointer::clip_note(&purpose.into()));
        self
    }

    /// How long a store on an object store keeps a snapshot object that
    /// left use (its generation dropped out of retention, or it was never
    /// committed) before gc may delete it: a reader on another host that
    /// read the older pointer may still be fetching it (default
    /// [`DEFAULT_SNAPSHOT_GRACE`]). Measured by the server's clock. Local
    /// stores ignore it (the lease backend keeps its fixed 10 min).
    ///
    /// ```
    /// use snapcache::StoreOptions;
    /// use std::time::Duration;
    /// let options = StoreOptions::new("s3://ci-cache/kopi").snapshot_grace(Duration::from_secs(3600));
    /// # let _ = options;
    /// ```
    pub fn snapshot_grace(mut self, grace: Duration) -> Self {
        self.snapshot_grace = grace;
        self
    }

    #[cfg(feature = "s3")]
    pub(crate) fn purpose_value(&self) -> Option<&str> {
        self.purpose.as_deref()
    }

    #[cfg(feature = "s3")]
    pub(crate) fn lock_budget_value(&self) -> &LockBudget {
        &self.lock_budget
    }

    #[cfg(feature = "s3")]
    pub(crate) fn observer_ref(&self) -> Option<&dyn LockObserver> {
        self.observer.as_deref()
    }

    pub(crate) fn cancel_flag_ref(&self) -> Option<&Arc<AtomicBool>> {
        self.cancel.as_ref()
    }

    pub(crate) fn keep_count(&self) -> usize {
        self.keep
    }

    pub(crate) fn lease_ttl_value(&self) -> Duration {
        self.lease_ttl
    }
}

/// Options of one publish, built from [`PublishOptions::default`] (JSON,
/// no note, always publish) with the methods below. The fields are public
/// to read; the struct is `#[non_exhaustive]`, so an option added later
/// breaks no caller.
///
/// ```
/// let options = snapcache::PublishOptions::default().raw(true).note("nightly");
/// assert_eq!(options.format, snapcache::PayloadFormat::Raw);
/// assert_eq!(options.note.as_deref(), Some("nightly"));
/// ```
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct PublishOptions {
    /// How the payload is checked (JSON by default).
    pub format: PayloadFormat,
    /// A note recorded with the generation (cut to 200 bytes).
    pub note: Option<String>,
    /// Skip the publish when the last successful refresh is younger than this.
    pub max_age: Option<Duration>,
    /// [`Store::publish_json`] writes canonical JSON: object keys sorted,
    /// no insignificant whitespace, RFC 8785 number form (see
    /// [`PublishOptions::canonical`]).
    pub canonical: bool,
    /// [`Store::publish_json`] writes serde_json's pretty layout (2-space
    /// indent), for a snapshot file a person reads.
    pub pretty: bool,
    /// The largest payload accepted, in bytes (`None`: no limit; see
    /// [`PublishOptions::max_bytes`]).
    pub max_bytes: Option<u64>,
}

impl PublishOptions {
    /// Accept any bytes instead of JSON.
    pub fn raw(mut self, raw: bool) -> Self {
        self.format = if raw {
            PayloadFormat::Raw
        } else {
            PayloadFormat::Json
        };
        self
    }

    /// Record a note with the generation.
    pub fn note(mut self, note: impl Into<String>) -> Self {
        self.note = Some(note.into());
        self
    }

    /// Skip when the last refresh is younger than `age`.
    pub fn max_age(mut self, age: Duration) -> Self {
        self.max_age = Some(age);
        self
    }

    /// Make [`Store::publish_json`] write canonical JSON, so that equal
    /// content gives equal bytes (and an unchanged refresh is found
    /// unchanged) even when the value holds `HashMap`s, whose key order
    /// changes from process to process.
    ///
    /// The form is RFC 8785 (JCS): object keys (struct fields too) sorted by
    /// their UTF-16 code units, no insignificant whitespace, strings escaped
    /// as serde_json escapes them (`"`, `\` and control characters only),
    /// floating-point numbers in ECMAScript form (`1.0` is `1`, `1e21` is
    /// `1e+21`). It differs from RFC 8785 only outside I-JSON's range:
    /// integers beyond ±2^53 are written exactly (RFC 8785 would round them
    /// to a double), and NaN and infinities are written as `null`, as
    /// serde_json writes them (RFC 8785 rejects them). A key that occurs
    /// twice in one object fails the publish.
    ///
    /// Arrays stream through; each object is buffered, serialized, until its
    /// keys are sorted, so memory peaks at about twice the serialized size
    /// of the largest top-level object (no `serde_json::Value` tree). Only
    /// `publish_json` serializes: the byte-publishing methods store their
    /// bytes as given and ignore this option.
    ///
    /// ```
    /// # fn main() -> Result<(), snapcache::Error> {
    /// # let dir = tempfile::tempdir().map_err(|e| snapcache::Error::InvalidOption(e.to_string()))?;
    /// use std::collections::HashMap;
    /// use snapcache::{PublishOptions, Store, StoreOptions};
    ///
    /// let store = Store::open(StoreOptions::new(dir.path().join("metadata")))?;
    /// let canonical = PublishOptions::default().canonical(true);
    /// let first: HashMap<&str, u32> = [("temurin", 21), ("zulu", 17), ("corretto", 11)].into();
    /// let again: HashMap<&str, u32> = [("zulu", 17), ("corretto", 11), ("temurin", 21)].into();
    /// store.publish_json(&first, &canonical)?;
    /// assert!(!store.publish_json(&again, &canonical)?.changed);
    /// assert_eq!(store.read_current()?.data, br#"{"corretto":11,"temurin":21,"zulu":17}"#);
    /// # Ok(()) }
    /// ```
    pub fn canonical(mut self, canonical: bool) -> Self {
        self.canonical = canonical;
        self
    }

    /// Make [`Store::publish_json`] write serde_json's pretty layout
    /// (2-space indent, one entry per line) instead of the compact one. With
    /// [`canonical`](PublishOptions::canonical) the keys are sorted too, so
    /// the file is both readable and deterministic.
    ///
    /// ```
    /// # fn main() -> Result<(), snapcache::Error> {
    /// # let dir = tempfile::tempdir().map_err(|e| snapcache::Error::InvalidOption(e.to_string()))?;
    /// # let store = snapcache::Store::open(snapcache::StoreOptions::new(dir.path().join("m")))?;
    /// let options = snapcache::PublishOptions::default().canonical(true).pretty(true);
    /// store.publish_json(&serde_json::json!({"b": [1], "a": null}), &options)?;
    /// assert_eq!(store.read_current()?.data, b"{\n  \"a\": null,\n  \"b\": [\n    1\n  ]\n}");
    /// # Ok(()) }
    /// ```
    pub fn pretty(mut self, pretty: bool) -> Self {
        self.pretty = pretty;
        self
    }

    /// Rejects a payload larger than `bytes` as soon as its source goes
    /// past it ([`Error::PayloadRejected`]; nothing is published, the temp
    /// file goes). A payload costs its size on disk while it is staged and,
    /// for the JSON check, up to one byte of memory per level of nesting
    /// still open: a source gone wrong (an endless stream, a server sending
    /// the wrong file) is otherwise stopped only by a full disk.
    ///
    /// ```
    /// # fn main() -> Result<(), snapcache::Error> {
    /// # let dir = tempfile::tempdir().map_err(|e| snapcache::Error::InvalidOption(e.to_string()))?;
    /// # let store = snapcache::Store::open(snapcache::StoreOptions::new(dir.path().join("m")))?;
    /// let limited = snapcache::PublishOptions::default().max_bytes(4);
    /// assert!(store.publish_bytes(b"[1]", &limited).is_ok());
    /// let err = store.publish_bytes(b"[1,2,3]", &limited).unwrap_err();
    /// assert!(err.is_payload_rejected());
    /// # Ok(()) }
    /// ```
    pub fn max_bytes(mut self, bytes: u64) -> Self {
        self.max_bytes = Some(bytes);
        self
    }
}

/// What a publish did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PublishOutcome {
    /// The current generation afterwards.
    pub generation: u64,
    /// Its hash.
    pub hash: ContentHash,
    /// Its length in bytes.
    pub bytes: u64,
    /// False when the content equals the current snapshot (no new generation).
    pub changed: bool,
    /// True when `max_age` skipped the refresh (the source did not run).
    pub skipped: bool,
    /// Milliseconds spent waiting for the lock.
    pub waited_ms: u64,
    /// The lock backend used.
    pub backend: Backend,
    /// Rename attempts (1 per rename without retries) and total retry wait.
    pub rename_attempts: u32,
    /// Milliseconds slept between rename retries.
    pub rename_wait_ms: u64,
}

/// A verified snapshot read from the store.
///
/// Serialized (`serde`), it is its metadata only, as [`SnapshotMeta`]: the
/// bytes are not part of the serialized form (they are the payload itself;
/// write [`Snapshot::data`] out as it is).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Its generation.
    pub generation: u64,
    /// Its hash (verified).
    pub hash: ContentHash,
    /// When it was published.
    pub created_at: Timestamp,
    /// When the store was last refreshed successfully (a publish, changed
    /// or not): the age that staleness checks measure. The same for every
    /// generation read through one pointer.
    pub checked_at: Timestamp,
    /// Its note.
    pub note: Option<String>,
    /// The bytes, exactly as published.
    pub data: Vec<u8>,
}

impl Snapshot {
    fn new(entry: &Generation, checked_at: Timestamp, data: Vec<u8>) -> Snapshot {
        Snapshot {
            generation: entry.generation,
            hash: entry.hash,
            created_at: entry.created_at,
            checked_at,
            note: entry.note.clone(),
            data,
        }
    }

    /// Its metadata, without the bytes.
    pub fn meta(&self) -> SnapshotMeta {
        SnapshotMeta {
            generation: self.generation,
            hash: self.hash,
            bytes: self.data.len() as u64,
            created_at: self.created_at,
            checked_at: self.checked_at,
            note: self.note.clone(),
        }
    }
}

impl Serialize for Snapshot {
    fn serialize<S: serde::Serializer>(
        &self,
        serializer: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        self.meta().serialize(serializer)
    }
}

/// What the pointer says about one generation, and when the store was last
/// refreshed: everything about a snapshot but its bytes.
///
/// ```
/// # fn main() -> Result<(), snapcache::Error> {
/// # let dir = tempfile::tempdir().map_err(|e| snapcache::Error::InvalidOption(e.to_string()))?;
/// # let store = snapcache::Store::open(snapcache::StoreOptions::new(dir.path()))?;
/// use std::time::Duration;
/// store.publish_bytes(br#"{"packages":[]}"#, &Default::default())?;
/// let meta = store.current_generation()?.expect("published");
/// assert_eq!((meta.generation, meta.bytes), (1, 15));
/// assert!(meta.is_fresh(Duration::from_secs(3600)));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SnapshotMeta {
    /// The generation number.
    pub generation: u64,
    /// The blake3 hash of its bytes (its file name).
    pub hash: ContentHash,
    /// Its length in bytes.
    pub bytes: u64,
    /// When it was published.
    pub created_at: Timestamp,
    /// When the store was last refreshed successfully (changed or not).
    pub checked_at: Timestamp,
    /// Its note.
    pub note: Option<String>,
}

impl SnapshotMeta {
    pub(crate) fn of(entry: &Generation, checked_at: Timestamp) -> SnapshotMeta {
        SnapshotMeta {
            generation: entry.generation,
            hash: entry.hash,
            bytes: entry.bytes,
            created_at: entry.created_at,
            checked_at,
            note: entry.note.clone(),
        }
    }

    pub(crate) fn current_of(pointer: &Pointer) -> SnapshotMeta {
        SnapshotMeta::of(pointer.current_entry(), pointer.checked_at)
    }

    /// Time since the last successful refresh; `None` when it lies in the
    /// future beyond [`CLOCK_SKEW_TOLERANCE`](crate::CLOCK_SKEW_TOLERANCE)
    /// (a writer's clock ran ahead: the age is unknown).
    pub fn age(&self) -> Option<Duration> {
        self.checked_at.known_age()
    }

    /// True when the last successful refresh is younger than `max_age`
    /// (false when its age is unknown), as [`Writer::is_fresh`] judges.
    pub fn is_fresh(&self, max_age: Duration) -> bool {
        self.age().is_some_and(|age| age < max_age)
    }
}

/// A value read from the store with the metadata of the snapshot it came
/// from (see [`Store::read_json_with_meta`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Versioned<T> {
    /// The deserialized value.
    pub value: T,
    /// The snapshot's generation, hash, size and times.
    pub meta: SnapshotMeta,
}

/// The store's state, for `status`.
///
/// Serialized (`serde`) with the field names below; `current` as a
/// [`Generation`], the lock as [`LockState`]'s serde form.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// The store root.
    pub root: PathBuf,
    /// The current generation, `None` when nothing was published yet.
    pub current: Option<Generation>,
    /// Last successful refresh.
    pub checked_at: Option<Timestamp>,
    /// How many generations are retained.
    pub retained: usize,
    /// How many of them are pinned.
    pub pinned: usize,
    /// The writer lock.
    pub lock: LockState,
    /// The times of the lease that holds the lock, when a live lease does:
    /// a writer on the lease backend holds it (whichever backend this store
    /// was opened with), or the store is on an object store.
    pub lease: Option<LeaseView>,
}

/// One line of `history`: a retained generation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HistoryEntry {
    /// Generation number.
    pub generation: u64,
    /// blake3 hash of the snapshot (and its file name).
    pub hash: ContentHash,
    /// Length of the snapshot in bytes.
    pub bytes: u64,
    /// When this generation was published.
    pub created_at: Timestamp,
    /// The note recorded with it.
    pub note: Option<String>,
    /// Whether it is the current one.
    pub current: bool,
    /// Whether it is pinned (kept by retention and age-based collection
    /// until unpinned; see [`Store::pin`]).
    pub pinned: bool,
}

impl HistoryEntry {
    /// The lines of `history` for `pointer`: its retained generations,
    /// oldest first. Both backends list their history here.
    pub(crate) fn all_of(pointer: &Pointer) -> Vec<Self> {
        pointer
            .generations
            .iter()
            .map(|g| HistoryEntry {
                generation: g.generation,
                hash: g.hash,
                bytes: g.bytes,
                created_at: g.created_at,
                note: g.note.clone(),
                current: g.generation == pointer.current,
                pinned: g.pinned,
            })
            .collect()
    }
}

/// What `rollback` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RollbackOutcome {
    /// The generation that is current now.
    pub generation: u64,
    /// Its hash.
    pub hash: ContentHash,
    /// The generation that was current before.
    pub previous: u64,
}

/// Options of `gc`, built from [`GcOptions::default`] (collect leftovers
/// only) with the methods below. The fields are public to read; the struct
/// is `#[non_exhaustive]`, so an option added later breaks no caller.
///
/// ```
/// # fn main() -> Result<(), snapcache::Error> {
/// # let dir = tempfile::tempdir().map_err(|e| snapcache::Error::InvalidOption(e.to_string()))?;
/// use std::time::Duration;
/// use snapcache::{GcOptions, Store, StoreOptions};
///
/// let store = Store::open(StoreOptions::new(dir.path()))?;
/// for n in 1..=4 {
///     store.publish_bytes(format!("[{n}]").as_bytes(), &Default::default())?;
/// }
/// let week = Duration::from_secs(7 * 24 * 3600);
/// let plan = GcOptions::default().keep(1).older_than(week).dry_run(true);
/// assert_eq!(store.gc(&plan)?.dropped_generations, [1, 2]);
/// assert_eq!(store.history()?.len(), 4, "a dry run changes nothing");
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, Default)]
#[non_exhaustive]
pub struct GcOptions {
    /// Shrink retention to this many generations besides the current one
    /// (pinned ones are kept as well and do not count).
    pub keep: Option<usize>,
    /// Only report what would be removed.
    pub dry_run: bool,
    /// Drop generations created longer ago than this, except the one that
    /// was current then (the newest created at or before the cutoff), the
    /// current one and the pinned ones.
    pub older_than: Option<Duration>,
}

impl GcOptions {
    /// Shrink retention to `keep` generations besides the current one
    /// (clamped to 1..=100; pinned ones are kept as well).
    pub fn keep(mut self, keep: usize) -> Self {
        self.keep = Some(keep);
        self
    }

    /// Only report what would be removed (`true`), changing nothing.
    pub fn dry_run(mut self, dry_run: bool) -> Self {
        self.dry_run = dry_run;
        self
    }

    /// Drop generations created longer ago than `age`, except the one that
    /// was current then, the current one and the pinned ones.
    pub fn older_than(mut self, age: Duration) -> Self {
        self.older_than = Some(age);
        self
    }
}

/// What `gc` removed (or would remove, with `dry_run`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GcReport {
    /// Snapshot files removed.
    pub removed_snapshots: usize,
    /// Temp files removed.
    pub removed_temp_files: usize,
    /// Bytes freed.
    pub freed_bytes: u64,
    /// Generations dropped by `keep` and `older_than`.
    pub dropped_generations: Vec<u64>,
    /// Whether this was a dry run.
    pub dry_run: bool,
    /// What was to be removed but could not be, and why (left in place).
    pub not_removed: Vec<sweep::NotRemoved>,
}

impl GcReport {
    /// The report of a gc that removed (or, with `dry_run`, would remove)
    /// `removed` and dropped the generations `dropped`; logs it. Both
    /// backends build their report here so the counts and the `gc` event
    /// cannot drift apart.
    pub(crate) fn of(
        removed: &[Leftover],
        not_removed: Vec<sweep::NotRemoved>,
        dropped: Vec<u64>,
        dry_run: bool,
    ) -> Self {
        let count = |kind| removed.iter().filter(|l| l.kind == kind).count();
        let report = GcReport {
            removed_snapshots: count(sweep::LeftoverKind::UnreferencedSnapshot),
            removed_temp_files: count(sweep::LeftoverKind::TempFile),
            freed_bytes: removed.iter().map(|l| l.bytes).sum(),
            dropped_generations: dropped,
            dry_run,
            not_removed,
        };
        tracing::info!(
            removed_snapshots = report.removed_snapshots,
            removed_temp_files = report.removed_temp_files,
            bytes = report.freed_bytes,
            dry_run = report.dry_run,
            not_removed = report.not_removed.len(),
            "gc"
        );
        report
    }
}

/// One problem found by `verify`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// The file involved.
    pub path: PathBuf,
    /// `pointer`, `missing`, `not-a-file`, `length`, `hash` or `io`.
    pub kind: String,
    /// Human-readable detail.
    pub detail: String,
    /// The generation concerned, if any.
    pub generation: Option<u64>,
}

/// The result of `verify`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// True when the pointer and every retained snapshot verified.
    pub ok: bool,
    /// Generations that verified.
    pub verified_generations: Vec<u64>,
    /// What is wrong.
    pub problems: Vec<Problem>,
    /// Leftovers that a write or `gc` would remove (not problems).
    pub reclaimable: Vec<Leftover>,
    /// Unreferenced snapshots the lease backend keeps until their grace
    /// ends (not problems, and not reclaimable before then). Always empty
    /// on a store only the advisory backend writes.
    pub in_grace: Vec<InGrace>,
    /// Entries snapcache did not create (or that lost the shape it gives
    /// its files): never removed, never counted by `gc`; not problems.
    pub foreign: Vec<ForeignEntry>,
}

/// A snapshot store.
///
/// ```
/// # fn main() -> Result<(), snapcache::Error> {
/// # let dir = tempfile::tempdir().map_err(|e| snapcache::Error::InvalidOption(e.to_string()))?;
/// use snapcache::{PublishOptions, Store, StoreOptions};
/// let store = Store::open(StoreOptions::new(dir.path().join("cache")))?;
/// let outcome = store.publish_bytes(br#"{"packages":[]}"#, &PublishOptions::default())?;
/// assert_eq!(outcome.generation, 1);
/// assert_eq!(store.read_current()?.data, br#"{"packages":[]}"#);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Store {
    layout: Layout,
    options: StoreOptions,
    durable: Durable,
    /// How long a pointer that looks mid-replace is re-read.
    reread: reread::Window,
    /// The marker file this store (or a clone) verified last.
    verified_marker: Arc<marker::VerifiedMarker>,
    /// The store is on an object store (`s3://...`): every operation goes
    /// there instead of to `layout`, whose root is then the URL.
    #[cfg(feature = "s3")]
    object: Option<Arc<crate::object_store::ObjectStore>>,
}

impl Store {
    /// Opens the store at `options`' root. Creates nothing: the directories
    /// appear with the first publish, and reads work on a read-only store.
    ///
    /// The root must be missing, empty, or a store snapcache made (it
    /// carries the `snapcache-store` marker, or only snapcache's names, as
    /// stores of the earlier release do, which the next write then marks).
    /// Every read and write on any other directory fails with
    /// [`Error::NotAStore`] before anything in it is created or removed.
    ///
    /// A root of the form `s3://bucket/prefix` is a store on an object store
    /// (cargo feature `s3`; see `snapcache::object_store`): the endpoint and
    /// credentials come from the standard `AWS_*` variables, and the server
    /// is probed once, now, for conditional writes (a server that ignores
    /// them is refused with [`Error::ObjectStoreUnsafe`]). Without the
    /// feature such a root is [`Error::ObjectStoreUnsupported`].
    pub fn open(options: StoreOptions) -> Result<Store> {
        if options.root.as_os_str().is_empty() {
            return Err(Error::InvalidOption(
                "the store root is an empty path".into(),
            ));
        }
        if let Some(url) = location_url(&options.root)?.as_deref() {
            #[cfg(feature = "s3")]
            {
                let object = crate::object_store::ObjectStore::open(
                    url,
                    options.snapshot_grace,
                    options.cancel.as_ref(),
                )?;
                return Ok(Store {
                    layout: Layout::new(PathBuf::from(object.root_url())),
                    options,
                    durable: Durable::default(),
                    reread: reread::Window::POINTER,
                    verified_marker: Arc::default(),
                    object: Some(Arc::new(object)),
                });
            }
            #[cfg(not(feature = "s3"))]
            return Err(Error::ObjectStoreUnsupported { url: url.into() });
        }
        // Resolved against the working directory once, here: a relative
        // root followed later changes of the working directory (an
        // embedder's `set_current_dir`), so one `Store` wrote in two places
        // and its lock checks looked at another directory's lock file.
        // Lexical only: links are followed where the store is used.
        let root = std::path::absolute(&options.root)
            .map_err(|e| Error::io("resolve the store directory", &options.root, e))?;
        Ok(Store {
            layout: Layout::new(root),
            options,
            durable: Durable::default(),
            reread: reread::Window::POINTER,
            verified_marker: Arc::default(),
            #[cfg(feature = "s3")]
            object: None,
        })
    }

    /// The object store this store lives on, if it does.
    #[cfg(feature = "s3")]
    pub(crate) fn object_store(&self) -> Option<&Arc<crate::object_store::ObjectStore>> {
        self.object.as_ref()
    }

    /// Whether the store lives on an object store (`s3://...`) rather than
    /// in a directory.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// let store = snapcache::Store::open(snapcache::StoreOptions::new(dir.path()))?;
    /// assert!(!store.is_object_store());
    /// # Ok::<(), snapcache::Error>(())
    /// ```
    pub fn is_object_store(&self) -> bool {
        #[cfg(feature = "s3")]
        return self.object.is_some();
        #[cfg(not(feature = "s3"))]
        false
    }

    #[cfg(test)]
    pub(crate) fn with_durable(mut self, durable: Durable) -> Self {
        self.durable = durable;
        self
    }

    /// Without pointer re-reads: static crash states need one look each.
    #[cfg(test)]
    pub(crate) fn with_reread(mut self, window: reread::Window) -> Self {
        self.reread = window;
        self
    }

    /// The store root.
    pub fn root(&self) -> &Path {
        self.layout.root()
    }

    pub(crate) fn layout(&self) -> &Layout {
        &self.layout
    }

    pub(crate) fn durable(&self) -> &Durable {
        &self.durable
    }

    pub(crate) fn options(&self) -> &StoreOptions {
        &self.options
    }

    // ---------------------------------------------------------------- reads

    /// Reads and verifies the current snapshot. Takes no lock.
    pub fn read_current(&self) -> Result<Snapshot> {
        self.read_picked(|p| Ok(p.current_entry().clone()))
    }

    /// Self-healing read: the current snapshot or, when it is damaged or
    /// missing, the newest retained generation that verifies. The second
    /// value is the error that forced the fallback (`None` when the current
    /// generation was served). A damaged pointer is still an error: without
    /// it nothing is known to be trustworthy.
    ///
    /// The damage is not repaired: `verify` still reports it.
    pub fn read_with_fallback(&self) -> Result<(Snapshot, Option<Error>)> {
        #[cfg(feature = "s3")]
        if let Some(object) = &self.object {
            let (g, checked_at, data, damage) = object.read_with_fallback()?;
            return Ok((Snapshot::new(&g, checked_at, data), damage));
        }
        self.with_fallback(
            || self.read_current(),
            |g, path, checked_at, owner| {
                snapshot::read_verified(path, &g.hash, g.bytes, owner)
                    .ok()
                    .map(|data| Snapshot::new(g, checked_at, data))
            },
        )
    }

    /// Picks a retained generation from a pointer, or says which are retained.
    fn pick_generation(&self, generation: u64) -> impl Fn(&Pointer) -> Result<Generation> + use<> {
        let root = self.root().to_path_buf();
        move |p| {
            p.find(generation)
                .cloned()
                .ok_or_else(|| Error::NoSuchGeneration {
                    root: root.clone(),
                    generation,
                    available: p.retained_list(),
                })
        }
    }

    /// Reads and verifies a retained generation. Takes no lock.
    pub fn read_generation(&self, generation: u64) -> Result<Snapshot> {
        self.read_picked(self.pick_generation(generation))
    }

    /// Reads the current snapshot and deserializes it.
    ///
    /// ```
    /// # fn main() -> Result<(), snapcache::Error> {
    /// # let dir = tempfile::tempdir().map_err(|e| snapcache::Error::InvalidOption(e.to_string()))?;
    /// # let store = snapcache::Store::open(snapcache::StoreOptions::new(dir.path()))?;
    /// store.publish_json(&vec![1, 2, 3], &Default::default())?;
    /// let back: Vec<u32> = store.read_json()?;
    /// assert_eq!(back, [1, 2, 3]);
    /// # Ok(()) }
    /// ```
    pub fn read_json<T: DeserializeOwned>(&self) -> Result<T> {
        let snapshot = self.read_current()?;
        serde_json::from_slice(&snapshot.data).map_err(|e| Error::UnexpectedShape {
            path: self.layout.snapshot(&snapshot.hash),
            generation: snapshot.generation,
            detail: e.to_string(),
        })
    }

    /// Reads the current snapshot and deserializes it, with the metadata
    /// a staleness check needs (generation, hash, size, `created_at`,
    /// `checked_at`). Takes no lock.
    ///
    /// ```
    /// # fn main() -> Result<(), snapcache::Error> {
    /// # let dir = tempfile::tempdir().map_err(|e| snapcache::Error::InvalidOption(e.to_string()))?;
    /// # let store = snapcache::Store::open(snapcache::StoreOptions::new(dir.path()))?;
    /// use std::time::Duration;
    /// store.publish_json(&vec!["temurin"], &Default::default())?;
    /// let read = store.read_json_with_meta::<Vec<String>>()?;
    /// assert_eq!((read.value.len(), read.meta.generation), (1, 1));
    /// let stale = !read.meta.is_fresh(Duration::from_secs(30 * 24 * 3600));
    /// assert!(!stale);
    /// # Ok(()) }
    /// ```
    pub fn read_json_with_meta<T: DeserializeOwned>(&self) -> Result<Versioned<T>> {
        let snapshot = self.read_current()?;
        let value = serde_json::from_slice(&snapshot.data).map_err(|e| Error::UnexpectedShape {
            path: self.layout.snapshot(&snapshot.hash),
            generation: snapshot.generation,
            detail: e.to_string(),
        })?;
        Ok(Versioned {
            value,
            meta: snapshot.meta(),
        })
    }

    /// What is published, from the pointer alone: the current generation's
    /// metadata, or `None` when nothing is published. Reads no snapshot and
    /// probes no lock (cheap enough for every start of a program).
    ///
    /// ```
    /// # fn main() -> Result<(), snapcache::Error> {
    /// # let dir = tempfile::tempdir().map_err(|e| snapcache::Error::InvalidOption(e.to_string()))?;
    /// # let store = snapcache::Store::open(snapcache::StoreOptions::new(dir.path()))?;
    /// assert_eq!(store.current_generation()?, None);
    /// store.publish_bytes(b"[1]", &Default::default())?;
    /// assert_eq!(store.current_generation()?.map(|g| g.generation), Some(1));
    /// # Ok(()) }
    /// ```
    pub fn current_generation(&self) -> Result<Option<SnapshotMeta>> {
        #[cfg(feature = "s3")]
        if let Some(object) = &self.object {
            return Ok(object
                .load_pointer()?
                .map(|(p, _)| SnapshotMeta::current_of(&p)));
        }
        // Trust first: nothing in the store is read before it passes.
        self.check_readable()?;
        Ok(self
            .read_newest_pointer()?
            .as_ref()
            .map(SnapshotMeta::current_of))
    }

    /// The path of a retained generation's snapshot file, for diagnostics
    /// (an error report, a `doctor` command). Read the bytes through
    /// [`Store::read_generation`], which verifies them; the file itself is
    /// read-only and must not be changed.
    ///
    /// ```
    /// # fn main() -> Result<(), snapcache::Error> {
    /// # let dir = tempfile::tempdir().map_err(|e| snapcache::Error::InvalidOption(e.to_string()))?;
    /// # let store = snapcache::Store::open(snapcache::StoreOptions::new(dir.path()))?;
    /// let outcome = store.publish_bytes(b"[1]", &Default::default())?;
    /// let path = store.snapshot_path(1)?;
    /// assert!(path.ends_with(outcome.hash.to_hex()));
    /// assert!(store.snapshot_path(7).is_err()); // not retained
    /// # Ok(()) }
    /// ```
    pub fn snapshot_path(&self, generation: u64) -> Result<PathBuf> {
        #[cfg(feature = "s3")]
        if let Some(object) = &self.object {
            let pointer = object
                .load_pointer()?
                .map(|(p, _)| p)
                .ok_or_else(|| object.no_store())?;
            let entry = self.pick_generation(generation)(&pointer)?;
            return Ok(object.snapshot_url(&entry.hash).into());
        }
        self.check_readable()?;
        let pointer = self.load_pointer()?;
        let entry = pointer
            .find(generation)
            .ok_or_else(|| Error::NoSuchGeneration {
                root: self.root().to_path_buf(),
                generation,
                available: pointer.retained_list(),
            })?;
        Ok(self.layout.snapshot(&entry.hash))
    }

    fn read_picked(&self, pick: impl Fn(&Pointer) -> Result<Generation>) -> Result<Snapshot> {
        #[cfg(feature = "s3")]
        if let Some(object) = &self.object {
            let (entry, checked_at, data) = object.read_picked(&pick)?;
            return Ok(Snapshot::new(&entry, checked_at, data));
        }
        let (entry, checked_at, data) = self.load_picked(pick, snapshot::read_verified)?;
        Ok(Snapshot::new(&entry, checked_at, data))
    }

    /// Verifies the current snapshot in bounded chunks and returns it still
    /// open, to be copied out (see [`VerifiedSnapshot`]): the bytes are never
    /// held in memory. Takes no lock.
    pub fn open_current(&self) -> Result<VerifiedSnapshot> {
        self.open_picked(|p| Ok(p.current_entry().clone()))
    }

    /// Like [`Store::open_current`], for a retained generation.
    pub fn open_generation(&self, generation: u64) -> Result<VerifiedSnapshot> {
        self.open_picked(self.pick_generation(generation))
    }

    /// Like [`Store::read_with_fallback`], returning the snapshot still open.
    pub fn open_with_fallback(&self) -> Result<(VerifiedSnapshot, Option<Error>)> {
        #[cfg(feature = "s3")]
        if let Some(object) = &self.object {
            let (g, checked_at, data, damage) = object.read_with_fallback()?;
            return Ok((self.spool(object, g, checked_at, &data)?, damage));
        }
        self.with_fallback(
            || self.open_current(),
            |g, path, checked_at, owner| {
                snapshot::open_verified(path, &g.hash, g.bytes, owner)
                    .ok()
                    .map(|opened| {
                        VerifiedSnapshot::new(g.clone(), checked_at, path.to_path_buf(), opened)
                    })
            },
        )
    }

    /// The fallback rule shared by [`Store::read_with_fallback`] and
    /// [`Store::open_with_fallback`]: `first` (the current generation), or
    /// when its snapshot is damaged or missing, the newest other retained
    /// generation that `verified` accepts, with the damage that forced it.
    fn with_fallback<T>(
        &self,
        first: impl FnOnce() -> Result<T>,
        verified: impl Fn(&Generation, &Path, Timestamp, trust::Owner) -> Option<T>,
    ) -> Result<(T, Option<Error>)> {
        let damage = match first() {
            Ok(found) => return Ok((found, None)),
            Err(e @ (Error::CorruptSnapshot { .. } | Error::MissingSnapshot { .. })) => e,
            Err(other) => return Err(other),
        };
        // `first` passed the check a moment ago; the owner it found is
        // asked for again rather than carried out of it.
        let owner = self.check_readable()?;
        let pointer = self.load_pointer()?;
        for g in pointer
            .generations
            .iter()
            .rev()
            .filter(|g| g.generation != pointer.current)
        {
            let path = self.layout.snapshot(&g.hash);
            if let Some(found) = verified(g, &path, pointer.checked_at, owner) {
                tracing::warn!(served = g.generation, current = pointer.current, error = %damage, "served a fallback generation");
                return Ok((found, Some(damage)));
            }
        }
        Err(damage)
    }

    fn open_picked(
        &self,
        pick: impl Fn(&Pointer) -> Result<Generation>,
    ) -> Result<VerifiedSnapshot> {
        #[cfg(feature = "s3")]
        if let Some(object) = &self.object {
            let (entry, checked_at, data) = object.read_picked(&pick)?;
            return self.spool(object, entry, checked_at, &data);
        }
        let (entry, checked_at, opened) = self.load_picked(pick, snapshot::open_verified)?;
        let path = self.layout.snapshot(&entry.hash);
        Ok(VerifiedSnapshot::new(entry, checked_at, path, opened))
    }

    /// A verified snapshot object's bytes in an unnamed temp file (system
    /// temp dir), handed out open like a local snapshot file.
    #[cfg(feature = "s3")]
    fn spool(
        &self,
        object: &crate::object_store::ObjectStore,
        entry: Generation,
        checked_at: Timestamp,
        data: &[u8],
    ) -> Result<VerifiedSnapshot> {
        use std::io::{Seek, Write};
        let dir = std::env::temp_dir();
        let mut file = tempfile::tempfile_in(&dir)
            .and_then(|mut f| {
                f.write_all(data)?;
                f.rewind()?;
                Ok(f)
            })
            .map_err(|e| Error::io("spool the snapshot into a temp file in", &dir, e))?;
        file.flush()
            .map_err(|e| Error::io("spool the snapshot into a temp file in", &dir, e))?;
        let url = object.snapshot_url(&entry.hash);
        let opened = snapshot::Opened {
            file,
            buf: Vec::new(),
            held: false,
        };
        Ok(VerifiedSnapshot::new(entry, checked_at, url.into(), opened))
    }

    /// The entry `pick` chooses and what `load` made of its verified file.
    fn load_picked<T>(
        &self,
        pick: impl Fn(&Pointer) -> Result<Generation>,
        mut load: impl FnMut(
            &Path,
            &ContentHash,
            u64,
            trust::Owner,
        ) -> std::result::Result<T, SnapshotFault>,
    ) -> Result<(Generation, Timestamp, T)> {
        // Trust first: nothing in the store is read before it passes.
        let owner = self.check_readable()?;
        let mut previous: Option<Pointer> = None;
        let mut last = None;
        for _ in 0..READ_ATTEMPTS {
            let pointer = self.load_pointer()?;
            let entry = pick(&pointer)?;
            let path = self.layout.snapshot(&entry.hash);
            match load(&path, &entry.hash, entry.bytes, owner) {
                Ok(data) => {
                    tracing::debug!(generation = entry.generation, hash = %entry.hash, bytes = entry.bytes, "read snapshot");
                    return Ok((entry, pointer.checked_at, data));
                }
                // A concurrent gc may have removed it after a newer pointer
                // landed (or, where renames are not atomic for readers, a
                // repair may be replacing it): look again, unless the
                // pointer did not move.
                Err(fault @ (SnapshotFault::Missing | SnapshotFault::Length { .. }))
                    if previous.as_ref() != Some(&pointer) =>
                {
                    last = Some(fault_error(path, entry.generation, fault));
                    previous = Some(pointer);
                }
                Err(fault) => return Err(fault_error(path, entry.generation, fault)),
            }
        }
        // The pointer moved at every look: report the last fault seen.
        Err(last.unwrap_or_else(|| Error::MissingSnapshot {
            path: self.layout.snapshots_dir(),
            generation: 0,
        }))
    }

    /// Refuses a store that someone other than its owner (or root) can
    /// change, or a write by anyone but the owner (see `trust`); says which
    /// store directories it saw.
    fn check_trust(&self, access: Access) -> Result<trust::Seen> {
        trust::check_store(&self.layout, access, &self.options.trusted_owners)
    }

    /// What the root is (reads only; creates nothing).
    fn identify(&self) -> Result<Found> {
        self.identify_seen(trust::Seen::default())
    }

    /// [`Store::identify`], told what the trust check just saw: the root
    /// as a directory (then it is not looked at again) and the marker (not
    /// read again when this store verified that very file before).
    fn identify_seen(&self, seen: trust::Seen) -> Result<Found> {
        let marker = seen.marker.map(|id| (id, self.verified_marker.as_ref()));
        marker::identify_seen(&self.layout, seen.root, marker, || {
            matches!(self.try_load_pointer(), Ok(Some(_)))
        })
    }

    /// The trust check for a read, then [`Store::ensure_readable`] told
    /// what the check saw of the root (a directory is not stat'ed again).
    /// Gives whose files the store may serve.
    fn check_readable(&self) -> Result<trust::Owner> {
        let seen = self.check_trust(Access::Read)?;
        self.ensure_readable(seen)?;
        Ok(seen.owner)
    }

    /// Readers refuse a directory that is not a store, before reading
    /// anything in it. A missing or empty one is `NoStore` later, and an
    /// unmarked store of an earlier release reads as it is: readers never
    /// write, adoption is the next writer's job. `seen`: what the trust
    /// check just saw (see [`Store::identify_seen`]).
    fn ensure_readable(&self, seen: trust::Seen) -> Result<()> {
        match self.identify_seen(seen)? {
            Found::Foreign(found) => Err(self.not_a_store(found)),
            _ => Ok(()),
        }
    }

    fn not_a_store(&self, found: Vec<String>) -> Error {
        Error::NotAStore {
            root: self.root().to_path_buf(),
            found,
        }
    }

    pub(crate) fn no_store(&self) -> Error {
        Error::NoStore {
            root: self.root().to_path_buf(),
        }
    }

    /// Loads and checks the pointer; `NoStore` when there is none.
    fn load_pointer(&self) -> Result<Pointer> {
        self.read_newest_pointer()?.ok_or_else(|| Error::NoStore {
            root: self.root().to_path_buf(),
        })
    }

    /// What readers go by: the pointer, or the newest commit record after
    /// it when there is one (lease backend: a writer stalled between its
    /// record and its rename, or one that renamed an older pointer late,
    /// leaves `current` behind the records, which are the truth; see
    /// [`crate::commit_record`]). Costs one failed open when `current` is
    /// up to date. Readers change nothing: the next writer rolls `current`
    /// forward. A record that cannot be read is logged and passed over (the
    /// next writer reports it): a planted name must not stop readers.
    fn read_newest_pointer(&self) -> Result<Option<Pointer>> {
        self.read_newest_pointer_noting()
            .map(|(pointer, _)| pointer)
    }

    /// [`Store::read_newest_pointer`], with the error of a commit record
    /// it passed over: `verify` reports it, since every writer refuses the
    /// store until the record is removed.
    fn read_newest_pointer_noting(&self) -> Result<(Option<Pointer>, Option<Error>)> {
        let current = self.try_load_pointer()?;
        match crate::commit_record::newest(&self.layout, current.clone()) {
            Ok((newest, behind)) => {
                if behind {
                    tracing::info!(
                        commit = newest.as_ref().map_or(0, |p| p.commit),
                        "the pointer is behind a commit record; reading the record's generation"
                    );
                }
                Ok((newest, None))
            }
            Err(e) => {
                tracing::warn!(error = %e, "a commit record after the pointer cannot be read; reading the pointer's generation");
                Ok((current, Some(e)))
            }
        }
    }

    /// Loads and checks the pointer; `None` when there is none. A pointer
    /// that looks mid-replace (missing while the store has snapshots, short,
    /// failing its checksum) is re-read for up to about a second before it
    /// is reported (see [`crate::reread`]).
    pub(crate) fn try_load_pointer(&self) -> Result<Option<Pointer>> {
        let (found, looks) = reread::look_until_settled(
            self.reread,
            || {
                let found = self.load_pointer_once();
                if self.may_be_mid_replace(&found) {
                    Look::Unsettled(found)
                } else {
                    Look::Settled(found)
                }
            },
            std::thread::sleep,
        );
        if looks.count > 1 {
            let settled = !self.may_be_mid_replace(&found);
            tracing::info!(path = %self.layout.current().display(), looks = looks.count, waited_ms = looks.waited.as_millis() as u64, settled, "pointer_reread");
        }
        match found {
            PointerLook::Found(p) => Ok(Some(p)),
            PointerLook::Missing => Ok(None),
            PointerLook::Torn(Error::CorruptPointer { path, detail }) if looks.count > 1 => {
                Err(Error::CorruptPointer {
                    path,
                    detail: format!(
                        "{detail}; it stayed so across {} reads over {:.1} s",
                        looks.count,
                        looks.waited.as_secs_f64()
                    ),
                })
            }
            PointerLook::Torn(e) | PointerLook::Failed(e) => Err(e),
        }
    }

    /// One look at the pointer, no retries.
    fn load_pointer_once(&self) -> PointerLook {
        let path = self.layout.current();
        // The gate refuses a link, a FIFO, a device or a directory at once
        // (Error::UnexpectedFileType), checked on the descriptor.
        let file = match crate::durable::open_no_follow(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return PointerLook::Missing,
            Err(e) if reread::is_transient_open_error(&e) => {
                return PointerLook::Torn(Error::io("open the store pointer", &path, e));
            }
            Err(e) => return PointerLook::Failed(Error::io("open the store pointer", &path, e)),
        };
        // Torn from here on: a writer mid-replace explains a short, empty or
        // mismatching file, or a read error (a stale NFS handle), but not an
        // oversized one, since every pointer a writer makes is far smaller:
        // that is reported at once, not re-read for a second.
        let bytes = match pointer::read_bounded(file, &path) {
            Ok(bytes) => bytes,
            Err(e @ Error::CorruptPointer { .. }) => return PointerLook::Failed(e),
            Err(e) => return PointerLook::Torn(e),
        };
        match Pointer::decode_fault(&bytes, &path) {
            Ok(p) => PointerLook::Found(p),
            Err(fault) if fault.torn => PointerLook::Torn(fault.error),
            // Checksummed but invalid (or another version): no replace in
            // progress explains it, so it is reported at once.
            Err(fault) => PointerLook::Failed(fault.error),
        }
    }

    /// Whether one look is explained by a replace in progress on a
    /// filesystem where rename is not atomic for readers: the pointer
    /// missing although the store has snapshots, or its content torn.
    fn may_be_mid_replace(&self, found: &PointerLook) -> bool {
        match found {
            PointerLook::Found(_) | PointerLook::Failed(_) => false,
            PointerLook::Missing => self.has_snapshots(),
            PointerLook::Torn(_) => true,
        }
    }

    /// Whether `snapshots/` holds at least one snapshot-named regular file: the
    /// evidence that a pointer exists (or is about to, mid first publish).
    fn has_snapshots(&self) -> bool {
        // A regular file, as the sweep judges its candidates: a directory or
        // FIFO planted under a hash name is foreign, never removed, and
        // would otherwise make every look at a store without a pointer
        // wait out the whole re-read window.
        std::fs::read_dir(self.layout.snapshots_dir()).is_ok_and(|entries| {
            entries.flatten().any(|e| {
                e.file_type().is_ok_and(|t| t.is_file())
                    && e.file_name()
                        .to_str()
                        .and_then(ContentHash::parse)
                        .is_some()
            })
        })
    }

    /// The store's state: current generation and the lock. Takes no lock.
    pub fn status(&self) -> Result<Status> {
        #[cfg(feature = "s3")]
        if let Some(object) = &self.object {
            let pointer = object.load_pointer()?.map(|(p, _)| p);
            let (lock, lease) = object.lock_state()?;
            return Ok(Status {
                root: self.root().to_path_buf(),
                current: pointer.as_ref().map(|p| p.current_entry().clone()),
                checked_at: pointer.as_ref().map(|p| p.checked_at),
                retained: pointer.as_ref().map_or(0, |p| p.generations.len()),
                pinned: pointer.as_ref().map_or(0, |p| p.pinned().len()),
                lock,
                lease,
            });
        }
        // Trust first: nothing in the store is read before it passes.
        self.check_readable()?;
        let pointer = self.read_newest_pointer()?;
        let (lock, lease) = lock::probe(&self.layout, self.options.lease_ttl)?;
        Ok(Status {
            root: self.root().to_path_buf(),
            current: pointer.as_ref().map(|p| p.current_entry().clone()),
            checked_at: pointer.as_ref().map(|p| p.checked_at),
            retained: pointer.as_ref().map_or(0, |p| p.generations.len()),
            pinned: pointer.as_ref().map_or(0, |p| p.pinned().len()),
            lock,
            lease,
        })
    }

    /// Retained generations, oldest first. Takes no lock.
    pub fn history(&self) -> Result<Vec<HistoryEntry>> {
        #[cfg(feature = "s3")]
        if let Some(object) = &self.object {
            return object.history();
        }
        // Trust first: nothing in the store is read before it passes.
        self.check_readable()?;
        let pointer = self.load_pointer()?;
        Ok(HistoryEntry::all_of(&pointer))
    }

    /// Checks the pointer and every retained snapshot; lists leftovers.
    /// Changes nothing and takes no lock.
    pub fn verify(&self) -> Result<VerifyReport> {
        #[cfg(feature = "s3")]
        if let Some(object) = &self.object {
            return object.verify();
        }
        // Trust first: nothing in the store is read before it passes.
        let owner = self.check_readable()?;
        // Like a reader: a snapshot that vanished while a concurrent write
        // moved the pointer on is not damage; verify the new pointer instead.
        let mut attempt = 0;
        loop {
            attempt += 1;
            let report = self.verify_once(owner)?;
            let raced = report.report.problems.iter().any(|p| p.kind == "missing")
                && report.pointer.is_some()
                && self.read_newest_pointer().ok().flatten() != report.pointer;
            if !raced || attempt >= READ_ATTEMPTS {
                return Ok(report.report);
            }
        }
    }

    fn verify_once(&self, owner: trust::Owner) -> Result<VerifyPass> {
        let mut problems = Vec::new();
        let mut verified = Vec::new();
        let pointer = match self.read_newest_pointer_noting() {
            Ok((pointer, Some(record_error))) => {
                // Readers pass over it; writers stop at it.
                problems.push(Problem {
                    path: record_error
                        .path()
                        .map_or_else(|| self.layout.commits_dir(), Path::to_path_buf),
                    // A record others can write is refused, not damaged:
                    // `chmod go-w` is its fix, not moving it aside.
                    kind: if record_error.is_untrusted() {
                        "untrusted".into()
                    } else {
                        "pointer".into()
                    },
                    // Its message says that readers pass over it and
                    // writers stop at it, and what to do.
                    detail: record_error.to_string(),
                    generation: None,
                });
                match pointer {
                    Some(p) => Some(p),
                    None => {
                        return Err(Error::NoStore {
                            root: self.root().to_path_buf(),
                        });
                    }
                }
            }
            Ok((Some(p), None)) => Some(p),
            Ok((None, None)) => {
                return Err(Error::NoStore {
                    root: self.root().to_path_buf(),
                });
            }
            Err(e) => {
                problems.push(Problem {
                    path: self.layout.current(),
                    kind: "pointer".into(),
                    detail: e.to_string(),
                    generation: None,
                });
                None
            }
        };
        if let Some(p) = &pointer {
            for g in &p.generations {
                let path = self.layout.snapshot(&g.hash);
                match snapshot::verify_file(&path, &g.hash, g.bytes, owner) {
                    Ok(()) => verified.push(g.generation),
                    Err(fault) => problems.push(Problem {
                        path,
                        kind: fault.kind().into(),
                        detail: fault.detail(),
                        generation: Some(g.generation),
                    }),
                }
            }
        }
        let referenced = pointer.as_ref().map(referenced_hashes);
        let grace = self.grace_applies(pointer.as_ref());
        // Where lease writers sweep, a temp file younger than a lease time
        // may be a live writer's on another machine: their sweep keeps it,
        // so it is not called reclaimable here either.
        let spare_live_writers = grace.then_some(self.options.lease_ttl);
        let scan = sweep::scan(&self.layout, referenced.as_ref(), spare_live_writers)?;
        let (reclaimable, in_grace) = if grace {
            crate::commit_record::split_in_grace(pointer.as_ref(), scan.leftovers)
        } else {
            (scan.leftovers, Vec::new())
        };
        let report = VerifyReport {
            ok: problems.is_empty(),
            verified_generations: verified,
            problems,
            reclaimable,
            in_grace,
            foreign: scan.foreign,
        };
        Ok(VerifyPass { report, pointer })
    }

    /// Whether the lease backend's snapshot grace governs this store's
    /// sweeps, judged without the lock: the caller chose the lease backend
    /// (or its filesystem makes it the automatic choice), or the store shows
    /// that lease writers use it (a `dropped` list, commit records). Then
    /// `verify` reports what the grace keeps instead of calling it
    /// reclaimable.
    fn grace_applies(&self, pointer: Option<&Pointer>) -> bool {
        pointer.is_some_and(|p| !p.dropped.is_empty())
            || lock::would_use_lease(self.options.backend, &self.layout)
            || std::fs::read_dir(self.layout.commits_dir()).is_ok_and(|entries| {
                entries
                    .flatten()
                    .any(|e| crate::layout::is_record_name(&e.file_name()))
            })
    }

    // --------------------------------------------------------------- writes

    /// Publishes the bytes read from `reader` (streamed, bounded memory).
    pub fn publish_reader(
        &self,
        reader: impl Read,
        options: &PublishOptions,
    ) -> Result<PublishOutcome> {
        self.publish_with(options, reader_source(reader))
    }

    /// Publishes a byte slice. The JSON check (unless raw) reads the slice
    /// on a second thread while it is written, hashed and fsynced
    /// ([`Writer::publish_bytes`]).
    pub fn publish_bytes(&self, bytes: &[u8], options: &PublishOptions) -> Result<PublishOutcome> {
        match self.writer_unless_fresh(options)? {
            Ok((mut writer, options)) => writer.publish_bytes(bytes, &options),
            Err(skipped) => Ok(skipped),
        }
    }

    /// Serializes `value` as JSON (streamed into the temp file) and publishes it.
    ///
    /// A value equal to the current snapshot's publishes nothing new
    /// (`changed: false`), which needs equal *bytes*: a value holding
    /// `HashMap`s should be published with
    /// [`PublishOptions::canonical`], which sorts keys. With
    /// [`PublishOptions::pretty`] the file is indented for people.
    ///
    /// **Keep fetch times out of the payload.** A `last_updated` field set on
    /// every refresh makes every refresh new content: a new generation each
    /// time, nothing found unchanged, and the retained generations all
    /// copies of the same data. The store records when the content was last
    /// confirmed as `checked_at` (on every publish, changed or not) and when
    /// it last changed as `created_at`; read those from the store instead.
    ///
    /// ```
    /// # fn main() -> Result<(), snapcache::Error> {
    /// # let dir = tempfile::tempdir().map_err(|e| snapcache::Error::InvalidOption(e.to_string()))?;
    /// # let store = snapcache::Store::open(snapcache::StoreOptions::new(dir.path().join("m")))?;
    /// let options = snapcache::PublishOptions::default().canonical(true);
    /// let versions = vec!["21.0.2", "17.0.10"];
    /// assert!(store.publish_json(&versions, &options)?.changed);
    /// assert!(!store.publish_json(&versions, &options)?.changed, "same content, no new generation");
    /// # Ok(()) }
    /// ```
    ///
    /// Unless `canonical` is set, the bytes are not run through the JSON
    /// check whatever `options.format` says: serde_json wrote them, so they
    /// are well-formed by construction (a serializer error fails the publish).
    pub fn publish_json<T: Serialize + ?Sized>(
        &self,
        value: &T,
        options: &PublishOptions,
    ) -> Result<PublishOutcome> {
        self.publish_with(
            &crate::writer::json_options(options),
            json_source(value, options),
        )
    }

    /// Publishes what `source` writes into the sink. `source` runs *under the
    /// writer lock*, after the `max_age` check: a refresh that is not needed
    /// does not run it, and concurrent refreshers run it once. This is
    /// [`Store::lock_writer`], the `max_age` check ([`Writer::is_fresh`]) and
    /// [`Writer::publish_with`] in one call; take the handle yourself to do
    /// more under the lock (a fetch before the publish, several publishes).
    ///
    /// A failing `source` publishes nothing; its error comes back unchanged
    /// in [`Error::SourceFailed`] ([`Error::into_source`] gives it back).
    ///
    /// ```
    /// # fn main() -> Result<(), snapcache::Error> {
    /// # let dir = tempfile::tempdir().map_err(|e| snapcache::Error::InvalidOption(e.to_string()))?;
    /// # let store = snapcache::Store::open(snapcache::StoreOptions::new(dir.path()))?;
    /// use std::io::Write;
    /// let opts = snapcache::PublishOptions::default().max_age(std::time::Duration::from_secs(3600));
    /// let first = store.publish_with(&opts, |sink| Ok(sink.write_all(b"[1]")?))?;
    /// let second = store.publish_with(&opts, |_| unreachable!("fresh enough: not run"))?;
    /// assert!(!first.skipped && second.skipped);
    /// # Ok(()) }
    /// ```
    pub fn publish_with(
        &self,
        options: &PublishOptions,
        source: impl FnOnce(&mut PayloadSink<'_>) -> std::result::Result<(), SourceError>,
    ) -> Result<PublishOutcome> {
        match self.writer_unless_fresh(options)? {
            Ok((mut writer, options)) => writer.publish_with(&options, source).map(|(o, ())| o),
            Err(skipped) => Ok(skipped),
        }
    }

    /// The handle of a one-call publish, with the options for it (the
    /// `max_age` is checked here), or the outcome of a refresh skipped
    /// because the store is fresh.
    fn writer_unless_fresh(
        &self,
        options: &PublishOptions,
    ) -> Result<std::result::Result<(Writer<'_>, PublishOptions), PublishOutcome>> {
        let writer = self.lock_writer()?;
        if let Some(skipped) = options.max_age.and_then(|age| writer.skip_if_fresh(age)) {
            return Ok(Err(skipped));
        }
        #[cfg(feature = "s3")]
        let writer = {
            let mut writer = writer;
            writer.set_object_max_age(options.max_age);
            writer
        };
        let options = PublishOptions {
            max_age: None,
            ..options.clone()
        };
        Ok(Ok((writer, options)))
    }

    /// Takes the store's writer lock and hands it to the caller as a
    /// [`Writer`]: held until the handle is dropped, for work of the
    /// caller's own under the lock (a network fetch), then publishes,
    /// rollbacks, gc or clear through it. Waits per the lock budget
    /// ([`StoreOptions::lock_budget`]). Leftovers (crashed writers' temp
    /// files, snapshots that left retention) are swept by the handle's first
    /// operation: a publish sweeps on a second thread while it stages its
    /// payload; a handle dropped without one leaves them to the next write.
    ///
    /// Like a first publish, it makes the store (directories, marker) where
    /// there is none, after the same trust and identity checks: a directory
    /// that is not a store is refused before anything is created in it.
    ///
    /// ```
    /// # fn main() -> Result<(), snapcache::Error> {
    /// # let dir = tempfile::tempdir().map_err(|e| snapcache::Error::InvalidOption(e.to_string()))?;
    /// use snapcache::{Store, StoreOptions};
    /// let store = Store::open(StoreOptions::new(dir.path().join("cache")))?;
    /// let writer = store.lock_writer()?;
    /// assert_eq!(writer.generation(), None); // nothing published yet
    /// assert!(matches!(store.status()?.lock, snapcache::LockState::Held(_)));
    /// drop(writer);
    /// assert_eq!(store.status()?.lock, snapcache::LockState::Free);
    /// # Ok(()) }
    /// ```
    pub fn lock_writer(&self) -> Result<Writer<'_>> {
        Writer::take(
            self,
            Take {
                create: true,
                sweep: true,
            },
        )
    }

    /// Makes the temp file durable under its hash name (or reuses an intact
    /// snapshot with that name). `synced`: the temp file was already fsynced.
    pub(crate) fn commit_snapshot(
        &self,
        temp: crate::durable::TempFile,
        hash: &ContentHash,
        bytes: u64,
        synced: bool,
        deadline: Option<Instant>,
    ) -> Result<RenameStats> {
        let dest = self.layout.snapshot(hash);
        let found = snapshot::verify_file(&dest, hash, bytes, trust::Owner::this_writer());
        if found.is_ok() {
            tracing::debug!(hash = %hash, "dedup: the snapshot already exists and verifies");
            return Ok(RenameStats::default());
        }
        let temp_path = temp.path().to_path_buf();
        if !synced {
            self.durable
                .sync_file(&temp)
                .map_err(|e| Error::io("fsync the temp file", &temp_path, e))?;
        }
        self.durable
            .make_read_only(&temp)
            .map_err(|e| Error::io("make read-only", &temp_path, e))?;
        // (Nothing to look at when the name was free a moment ago: under
        // the lock nobody else creates snapshots.)
        let occupied = !matches!(found, Err(SnapshotFault::Missing));
        if let Some(m) = occupied
            .then(|| std::fs::symlink_metadata(&dest).ok())
            .flatten()
        {
            let ours = m.is_file() || m.file_type().is_symlink();
            if !ours {
                // A directory (or FIFO, socket, device) on the name is not
                // ours to delete, and a rename would replace all but a
                // directory: refuse and leave it.
                return Err(Error::io(
                    "publish the snapshot",
                    &dest,
                    io::Error::new(
                        io::ErrorKind::AlreadyExists,
                        "something that is not a snapshot file (a directory, FIFO, socket or device snapcache did not create) occupies its name; it was left in place: move it out of the store and retry",
                    ),
                ));
            }
        }
        let (result, stats) = self.durable.persist(temp, &dest, remaining(deadline));
        result.map_err(|e| {
            Error::io(
                if stats.attempts > 1 {
                    "rename the snapshot into place (another process may hold the file open)"
                } else {
                    "rename the snapshot into place"
                },
                &dest,
                e,
            )
        })?;
        let dir = self.layout.snapshots_dir();
        self.durable
            .sync_dir(&dir)
            .map_err(|e| Error::io("fsync the directory", &dir, e))?;
        Ok(stats)
    }

    /// The commit point: replaces `current`, after checking (lease backend)
    /// that we still hold the lock.
    ///
    /// `pointer.commit` is the commit number of the pointer it was derived
    /// from; it becomes the next number. On the lease backend the commit
    /// itself is the exclusive creation of its commit record (see
    /// [`crate::commit_record`]); `current` is replaced after it.
    pub(crate) fn commit_pointer(
        &self,
        lock: &WriterLock,
        pointer: &mut Pointer,
    ) -> Result<RenameStats> {
        lock.check_held()?;
        crate::test_hooks::stall_before_commit();
        crate::commit_record::commit(&self.layout, &self.durable, lock.backend(), pointer)?;
        let stats = self
            .durable
            .replace_file(
                &self.layout.tmp_dir(),
                &self.layout.current(),
                &pointer.encode(),
                true,
                remaining(lock.deadline()),
            )
            .map_err(|e| {
                let error = Error::io("write the store pointer", e.path, e.source);
                // The commit point: the rename of `current`, or on the lease
                // backend the commit record created above (the truth that
                // readers follow and the next writer rolls `current` to).
                if e.replaced || lock.backend() == Backend::Lease {
                    error.after_commit()
                } else {
                    error
                }
            })?;
        if lock.backend() == Backend::Lease {
            crate::commit_record::prune(&self.layout, &self.durable, pointer.commit);
        }
        Ok(stats)
    }

    /// The pointer a writer works from: `current`, or the newest commit
    /// record when `current` is behind it (a writer stalled between its
    /// record and its rename); `current` is then rewritten from the record.
    pub(crate) fn try_load_newest_pointer(&self, lock: &WriterLock) -> Result<Option<Pointer>> {
        let current = self.try_load_pointer()?;
        let (mut newest, behind) = crate::commit_record::newest(&self.layout, current)?;
        if let (None, true) = (&newest, behind) {
            // The newest commit is a clear that did not get to remove the
            // pointer (it crashed or stalled): finish that step.
            let path = self.layout.current();
            match self.durable.remove_file(&path) {
                Ok(()) => {
                    tracing::info!(path = %path.display(), "removed the pointer of a cleared store")
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "could not remove the pointer of a cleared store; the commit record stays the truth")
                }
            }
        }
        if let (Some(p), true) = (&newest, behind) {
            match self.durable.replace_file(
                &self.layout.tmp_dir(),
                &self.layout.current(),
                &p.encode(),
                true,
                remaining(lock.deadline()),
            ) {
                Ok(_) => {
                    tracing::info!(
                        commit = p.commit,
                        generation = p.current,
                        "rolled the pointer forward to the newest commit record"
                    )
                }
                Err(e) => {
                    tracing::warn!(path = %e.path.display(), error = %e.source, "could not roll the pointer forward; the commit record stays the truth")
                }
            }
        }
        if let (Some(p), Backend::Lease) = (newest.as_mut(), lock.backend()) {
            crate::commit_record::number_past_orphans(&self.layout, p);
        }
        Ok(newest)
    }

    /// Identifies the store, creates its directories and takes the writer
    /// lock; then marks an unmarked store. Only `create` (a publish) may
    /// make a store where there is none.
    ///
    /// The root is identified *before* anything is created in it: the lock
    /// file and `tmp/` live inside the store, so a foreign directory must be
    /// refused while it is still untouched. Under the lock the answer is
    /// checked again before the marker is written (another writer may have
    /// marked it meanwhile, or someone may have added a foreign entry).
    pub(crate) fn lock_for_write(&self, create: bool) -> Result<WriterLock> {
        // Trust first: a store others can change, or a writer that is not
        // its owner, is refused before anything in it is read or created.
        // (A missing root passes; the root created below is ours.)
        let mut seen = self.check_trust(Access::Write)?;
        let mut found = self.identify_seen(seen)?;
        if found == Found::Missing && create {
            store_root::create(self.layout.root(), &self.durable)?;
            // What was judged was nothing at all: judge what is there now,
            // which another user may have made in the meantime.
            seen = self.check_trust(Access::Write)?;
            found = self.identify_seen(seen)?;
        }
        match &found {
            Found::Foreign(entries) => return Err(self.not_a_store(entries.clone())),
            Found::Missing | Found::Empty | Found::Unmarked { current: false } if !create => {
                return Err(self.no_store());
            }
            // Made a moment ago, and gone again.
            Found::Missing => {
                return Err(Error::io(
                    "create the store directory",
                    self.layout.root(),
                    io::ErrorKind::NotFound.into(),
                ));
            }
            _ => {}
        }
        // Nothing inside the root may be a link. A directory the trust
        // check just saw as one (judged the same way) is not looked at
        // again.
        let dirs = [
            (self.layout.root().to_path_buf(), true, seen.root),
            (self.layout.snapshots_dir(), false, seen.snapshots),
            (self.layout.tmp_dir(), false, seen.tmp),
        ];
        for (dir, follow_link, _) in dirs.into_iter().filter(|(_, _, seen)| !seen) {
            self.durable
                .create_dir(&dir, follow_link)
                .map_err(|e| Error::io("create the store directory", &dir, e))?;
        }
        let lock = self.acquire()?;
        if found != Found::Marked {
            match self.identify()? {
                Found::Marked => {}
                Found::Foreign(entries) => return Err(self.not_a_store(entries)),
                Found::Missing => return Err(self.no_store()),
                Found::Empty | Found::Unmarked { .. } => {
                    marker::mark(&self.layout, &self.durable, remaining(lock.deadline()))?;
                }
            }
        }
        Ok(lock)
    }

    /// Takes the writer lock (the directories exist).
    fn acquire(&self) -> Result<WriterLock> {
        let purpose = self.options.purpose.clone().unwrap_or_else(command_line);
        lock::acquire(
            &self.layout,
            &self.durable,
            &AcquireOptions {
                budget: self.options.lock_budget.clone(),
                backend: self.options.backend,
                lease_ttl: self.options.lease_ttl,
                observer: self.options.observer.as_deref(),
                cancel: self.options.cancel.as_deref(),
                purpose: &purpose,
            },
        )
    }

    /// Leftovers to sweep while holding `lock`.
    pub(crate) fn leftovers(
        &self,
        lock: &WriterLock,
        pointer: Option<&Pointer>,
    ) -> Result<Vec<Leftover>> {
        let lease = lock.backend() == Backend::Lease;
        let referenced = pointer.map(|p| {
            let mut hashes = referenced_hashes(p);
            if lease {
                hashes.extend(crate::commit_record::in_grace(p));
            }
            hashes
        });
        let spare_live_writers = lease.then_some(self.options.lease_ttl);
        let leftovers = sweep::leftovers(&self.layout, referenced.as_ref(), spare_live_writers)?;
        Ok(if lease {
            crate::commit_record::spare_young_snapshots(leftovers)
        } else {
            leftovers
        })
    }

    /// Removes temp files and unreferenced snapshots (lock held), all but
    /// `spare` (the temp file of a publish staging meanwhile). `scanned`
    /// learns what is about to be removed before anything is: a publish
    /// sweeping on another thread goes on with its commit once it knows
    /// the sweep cannot touch the snapshot it renames into place.
    pub(crate) fn sweep_leftovers(
        &self,
        lock: &WriterLock,
        pointer: Option<&Pointer>,
        spare: Option<&Path>,
        scanned: impl FnOnce(&[Leftover]),
    ) -> Result<Vec<Leftover>> {
        let mut leftovers = self.leftovers(lock, pointer)?;
        // By name, not by path: the temp file's path is absolute (tempfile
        // joins a relative directory to the working directory) while the
        // scan's paths are built on the store root as given, which may be
        // relative (`--store cache`). Both are in `tmp/`, and the name
        // (pid, namespace, 16 random characters) is unique there.
        let spare = spare.and_then(Path::file_name);
        leftovers.retain(|l| {
            spare.is_none()
                || l.kind != sweep::LeftoverKind::TempFile
                || l.path.file_name() != spare
        });
        scanned(&leftovers);
        let removed =
            sweep::remove(&self.durable, leftovers, &|| lock.check_held().is_ok()).removed;
        lock.check_held()?;
        Ok(removed)
    }

    /// Makes an earlier retained generation current (the one before the
    /// current one, or `to`). Generation numbers do not change. On a missing
    /// or empty root it fails with [`Error::NoStore`] and creates nothing.
    /// Takes the writer lock for the call ([`Writer::rollback`]).
    pub fn rollback(&self, to: Option<u64>) -> Result<RollbackOutcome> {
        self.existing_writer(true)?.rollback(to)
    }

    /// Drops the listed generations (never the current one) and removes
    /// their snapshots unless a retained generation still references the
    /// same content. On a missing or empty root it fails with
    /// [`Error::NoStore`]. Takes the writer lock for the call
    /// ([`Writer::forget`]).
    ///
    /// ```
    /// # fn main() -> Result<(), snapcache::Error> {
    /// # let dir = tempfile::tempdir().map_err(|e| snapcache::Error::InvalidOption(e.to_string()))?;
    /// # let store = snapcache::Store::open(snapcache::StoreOptions::new(dir.path()))?;
    /// store.publish_bytes(b"[1]", &Default::default())?;
    /// store.publish_bytes(b"[2]", &Default::default())?;
    /// assert_eq!(store.forget(&[1])?.forgotten, vec![1]);
    /// assert_eq!(store.history()?.len(), 1);
    /// # Ok(()) }
    /// ```
    pub fn forget(&self, generations: &[u64]) -> Result<ForgetReport> {
        self.existing_writer(true)?.forget(generations)
    }

    /// Pins retained generations so that retention and `gc` keep them (see
    /// [`Writer::pin`]). On a missing or empty root it fails with
    /// [`Error::NoStore`]. Takes the writer lock for the call.
    ///
    /// ```
    /// # fn main() -> Result<(), snapcache::Error> {
    /// # let dir = tempfile::tempdir().map_err(|e| snapcache::Error::InvalidOption(e.to_string()))?;
    /// # let store = snapcache::Store::open(snapcache::StoreOptions::new(dir.path()))?;
    /// store.publish_bytes(b"[1]", &Default::default())?;
    /// store.publish_bytes(b"[2]", &Default::default())?;
    /// assert_eq!(store.pin(&[1])?.pinned, vec![1]);
    /// assert!(store.history()?[0].pinned);
    /// assert!(matches!(store.forget(&[1]), Err(snapcache::Error::ForgetPinned { .. })));
    /// # Ok(()) }
    /// ```
    pub fn pin(&self, generations: &[u64]) -> Result<PinReport> {
        self.existing_writer(true)?.pin(generations)
    }

    /// Unpins retained generations (see [`Writer::unpin`]). On a missing or
    /// empty root it fails with [`Error::NoStore`]. Takes the writer lock
    /// for the call.
    ///
    /// ```
    /// # fn main() -> Result<(), snapcache::Error> {
    /// # let dir = tempfile::tempdir().map_err(|e| snapcache::Error::InvalidOption(e.to_string()))?;
    /// # let store = snapcache::Store::open(snapcache::StoreOptions::new(dir.path()))?;
    /// store.publish_bytes(b"[1]", &Default::default())?;
    /// store.pin(&[1])?;
    /// assert!(store.unpin(&[1])?.changed);
    /// assert!(!store.history()?[0].pinned);
    /// # Ok(()) }
    /// ```
    pub fn unpin(&self, generations: &[u64]) -> Result<PinReport> {
        self.existing_writer(true)?.unpin(generations)
    }

    /// Removes leftovers, optionally shrinking retention first. Deletes by
    /// name only (see [`ForeignEntry`]); a leftover that cannot be removed
    /// is logged and skipped. On a missing or empty root it fails with
    /// [`Error::NoStore`] and creates nothing. Takes the writer lock for the
    /// call ([`Writer::gc`]).
    pub fn gc(&self, options: &GcOptions) -> Result<GcReport> {
        // No sweep first: gc's own report counts what it removes.
        self.existing_writer(false)?.gc(options)
    }

    /// Empties the store under the writer lock: the pointer first (durably),
    /// then every snapshot; the lock and the marker stay. Readers see
    /// "nothing published" ([`Error::NoStore`]), never a partial state. The
    /// next publish is generation 1. See [`Writer::clear`].
    ///
    /// ```
    /// # fn main() -> Result<(), snapcache::Error> {
    /// # let dir = tempfile::tempdir().map_err(|e| snapcache::Error::InvalidOption(e.to_string()))?;
    /// # let store = snapcache::Store::open(snapcache::StoreOptions::new(dir.path()))?;
    /// store.publish_bytes(b"[1]", &Default::default())?;
    /// store.clear()?;
    /// assert!(matches!(store.read_current(), Err(snapcache::Error::NoStore { .. })));
    /// # Ok(()) }
    /// ```
    pub fn clear(&self) -> Result<ClearReport> {
        self.existing_writer(true)?.clear()
    }

    /// A handle for the `Store` wrappers that never make a store.
    fn existing_writer(&self, sweep: bool) -> Result<Writer<'_>> {
        Writer::take(
            self,
            Take {
                create: false,
                sweep,
            },
        )
    }
}

/// What one look at the pointer found.
enum PointerLook {
    /// A pointer that decodes and checks.
    Found(Pointer),
    /// No file named `current`.
    Missing,
    /// Content a replace in progress explains (empty, short, checksum), or
    /// a transient open error (a stale NFS handle).
    Torn(Error),
    /// Anything else: a symlink, a non-regular file, an I/O error, an
    /// unsupported version.
    Failed(Error),
}

/// One pass of `verify`, with the pointer it checked.
struct VerifyPass {
    report: VerifyReport,
    pointer: Option<Pointer>,
}

fn referenced_hashes(pointer: &Pointer) -> HashSet<ContentHash> {
    pointer.generations.iter().map(|g| g.hash).collect()
}

pub(crate) fn fault_error(path: PathBuf, generation: u64, fault: SnapshotFault) -> Error {
    match fault {
        SnapshotFault::Missing => Error::MissingSnapshot { path, generation },
        SnapshotFault::Untrusted(e) => *e,
        // Not damage: the file may be intact, only this user may not read
        // it (mode 0000, another owner). Rolling back or publishing again,
        // what damage calls for, would not help; the permissions would.
        SnapshotFault::Io(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            Error::io("read the snapshot", path, e)
        }
        other => Error::CorruptSnapshot {
            path,
            generation,
            detail: other.detail(),
        },
    }
}

/// The process's command line for the holder record; arguments that are not
/// UTF-8 (file names, store paths) are shown lossily, never a panic.
pub(crate) fn command_line() -> String {
    let args: Vec<String> = std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    pointer::clip_note(&args.join(" "))
}

/// The object-store URL `root` names, if it names one: `s3://...`, the
/// scheme in any case (URL schemes are case-insensitive; `S3://bucket`
/// used to become a local directory `S3:/bucket` under the working
/// directory). Any other `scheme://` is refused rather than taken for a
/// directory: a mistyped URL would otherwise make a store where nobody
/// looks for one.
fn location_url(root: &Path) -> Result<Option<String>> {
    let Some(text) = root.to_str() else {
        return Ok(None);
    };
    let Some((scheme, rest)) = text.split_once("://") else {
        return Ok(None);
    };
    let is_scheme = scheme
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if !is_scheme {
        return Ok(None);
    }
    if scheme.eq_ignore_ascii_case("s3") {
        return Ok(Some(format!("s3://{rest}")));
    }
    Err(Error::InvalidOption(format!(
        "the store location {text} looks like a URL ({scheme}://), but the only URLs a store can live at are s3://BUCKET/PREFIX; nothing was created. For a local directory of that name, write it as ./{text}"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(StoreOptions::new(dir.path().join("s"))).expect("open");
        (dir, store)
    }

    /// Reproduced: on the lease backend `verify` called a temp file of a
    /// writer still within its lease time reclaimable, while the lease
    /// writers' sweep (and `gc`) kept it. Both now go by the same rule.
    #[test]
    fn verify_calls_reclaimable_only_the_temp_files_a_lease_sweep_removes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(
            StoreOptions::new(dir.path().join("s"))
                .lock_backend(BackendChoice::Lease)
                .lease_ttl(Duration::from_secs(30)),
        )
        .expect("open");
        store
            .publish_bytes(b"[1]", &PublishOptions::default())
            .expect("publish");
        // A writer on another machine (another boot, so judged by age).
        let owner = crate::layout::TempOwner {
            pid: 4242,
            pid_ns: Some(123),
            ..crate::lock::this_temp_owner()
        };
        let name = |tail: &str| crate::layout::temp_prefix(owner) + tail;
        let young = store.layout.tmp_dir().join(name("YYYYYYYYYYYYYYYY"));
        let old = store.layout.tmp_dir().join(name("OOOOOOOOOOOOOOOO"));
        std::fs::write(&young, b"x").expect("write");
        std::fs::File::create(&old)
            .and_then(|f| f.set_modified(std::time::SystemTime::now() - Duration::from_secs(3600)))
            .expect("old temp file");
        let report = store.verify().expect("verify");
        let listed: Vec<&Path> = report
            .reclaimable
            .iter()
            .map(|l| l.path.as_path())
            .collect();
        assert!(
            listed.iter().any(|p| p.ends_with(old.file_name().unwrap())),
            "{listed:?}"
        );
        assert!(
            !listed
                .iter()
                .any(|p| p.ends_with(young.file_name().unwrap())),
            "{listed:?}"
        );
        let gc = store.gc(&GcOptions::default()).expect("gc");
        assert_eq!(gc.removed_temp_files, 1, "{gc:?}");
        assert!(young.exists() && !old.exists());
    }

    fn cancellable_store() -> (tempfile::TempDir, Store, Arc<std::sync::atomic::AtomicBool>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let flag = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let options = StoreOptions::new(dir.path().join("s")).cancel_flag(flag.clone());
        (dir, Store::open(options).expect("open"), flag)
    }

    /// Found by an embedder's audit: a reader failing with `Interrupted`
    /// for ever (EINTR from a blocked read when Ctrl-C lands) made the
    /// publish spin with the lock held; io::copy retried it at once and
    /// never looked at the cancel flag.
    #[test]
    fn a_reader_interrupted_for_ever_stops_when_the_cancel_flag_is_set() {
        use std::sync::atomic::Ordering;
        struct Eintr(u64, Arc<std::sync::atomic::AtomicBool>);
        impl Read for Eintr {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                self.0 += 1;
                if self.0 == 1000 {
                    self.1.store(true, Ordering::SeqCst);
                }
                Err(io::ErrorKind::Interrupted.into())
            }
        }
        let (_dir, store, flag) = cancellable_store();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let result = store.publish_reader(Eintr(0, flag), &PublishOptions::default());
            let _ = tx.send(result.map(|o| o.generation));
        });
        let result = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("the publish returned");
        assert!(
            matches!(result, Err(Error::Interrupted { .. })),
            "{result:?}"
        );
    }

    /// Found by an embedder's audit: a chunk the sink refused because the
    /// flag was set, ignored by the source, then the flag cleared (a
    /// reused Ctrl-C flag): the rest was committed, a hole in the middle.
    #[test]
    fn a_payload_with_a_chunk_refused_on_cancel_is_never_committed() {
        use std::sync::atomic::Ordering;
        let (_dir, store, flag) = cancellable_store();
        let result = store.publish_with(&PublishOptions::default(), |sink| {
            for (i, item) in ["[\"temurin-21\",", "\"zulu-17\",", "\"corretto-11\"]"]
                .iter()
                .enumerate()
            {
                flag.store(i == 1, Ordering::SeqCst);
                let _ = sink.write_all(item.as_bytes());
            }
            Ok(())
        });
        assert!(
            matches!(result, Err(Error::Interrupted { .. })),
            "{result:?}"
        );
        assert!(matches!(store.read_current(), Err(Error::NoStore { .. })));
    }

    /// A `Read` that claims more bytes than the buffer it was given is a
    /// failed source, not a panic.
    #[test]
    fn a_reader_claiming_more_than_its_buffer_fails_the_publish() {
        struct Liar;
        impl Read for Liar {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                Ok(buf.len() + 1)
            }
        }
        let (_dir, store) = store();
        let result = store.publish_reader(Liar, &PublishOptions::default().raw(true));
        assert!(
            matches!(result, Err(Error::SourceFailed { .. })),
            "{result:?}"
        );
    }

    /// Found by an embedder's audit: a relative root followed the working
    /// directory, so after `set_current_dir` one `Store` wrote to a second
    /// place and blamed a temp-file cleaner for its own lock file. It is
    /// resolved once, when the store is opened.
    #[test]
    fn a_relative_root_is_resolved_when_the_store_is_opened() {
        let store = Store::open(StoreOptions::new("relative/store")).expect("open");
        let cwd = std::env::current_dir().expect("cwd");
        assert_eq!(store.root(), cwd.join("relative/store"));
        assert_eq!(store.layout.lock_file(), cwd.join("relative/store/lock"));
    }

    /// A store reads its marker once and then goes by its identity; any
    /// change to the file is seen at the next read: one renamed over it, one
    /// rewritten in place to the same size (an unsupported version), one
    /// removed (the store then reads as an earlier release's).
    #[test]
    fn a_changed_marker_is_read_again_by_the_same_store() {
        let (_dir, store) = store();
        store
            .publish_bytes(b"[1]", &PublishOptions::default())
            .expect("publish");
        let clone = store.clone();
        assert_eq!(store.read_current().expect("read").data, b"[1]");
        let marker = store.layout.marker();
        let content = marker::marker_content();

        let temp = store.root().join("marker.new");
        std::fs::write(&temp, b"not a marker\n").expect("write");
        std::fs::rename(&temp, &marker).expect("rename over");
        for s in [&store, &clone] {
            assert!(matches!(s.read_current(), Err(Error::NotAStore { .. })));
        }
        std::fs::write(&temp, &content).expect("write");
        std::fs::rename(&temp, &marker).expect("rename back");
        assert_eq!(store.read_current().expect("read").data, b"[1]");

        // The same bytes but one, in place: a new modification time.
        let newer = content.replace(" 1\n", " 9\n");
        assert_eq!(newer.len(), content.len());
        std::thread::sleep(Duration::from_millis(20));
        std::fs::OpenOptions::new()
            .write(true)
            .open(&marker)
            .and_then(|mut f| f.write_all(newer.as_bytes()))
            .expect("rewrite in place");
        assert!(matches!(
            clone.read_current(),
            Err(Error::UnsupportedVersion { found: 9, .. })
        ));

        std::fs::remove_file(&marker).expect("rm");
        assert_eq!(
            store.read_current().expect("unmarked: still read").data,
            b"[1]"
        );
    }

    #[test]
    fn reads_carry_their_metadata_and_serialize_without_the_bytes() {
        let (_dir, store) = store();
        assert_eq!(store.current_generation().expect("query"), None);
        store
            .publish_json(&[1, 2], &PublishOptions::default().note("first"))
            .expect("publish");
        let first = store.read_current().expect("read");
        std::thread::sleep(Duration::from_millis(5));
        // Unchanged: checked_at moves, created_at does not.
        store
            .publish_json(&[1, 2], &PublishOptions::default())
            .expect("publish");
        let read = store.read_json_with_meta::<Vec<u32>>().expect("read");
        assert_eq!(read.value, [1, 2]);
        assert_eq!((read.meta.generation, read.meta.bytes), (1, 5));
        assert_eq!(read.meta.created_at, first.created_at);
        assert!(read.meta.checked_at > first.checked_at);
        assert_eq!(
            store.current_generation().expect("query"),
            Some(read.meta.clone())
        );
        assert_eq!(
            store.snapshot_path(1).expect("path"),
            store.root().join("snapshots").join(read.meta.hash.to_hex())
        );

        let snapshot = serde_json::to_value(store.read_current().expect("read")).expect("json");
        let keys = |v: &serde_json::Value| -> Vec<String> {
            let mut k: Vec<String> = v.as_object().expect("object").keys().cloned().collect();
            k.sort();
            k
        };
        assert_eq!(
            keys(&snapshot),
            [
                "bytes",
                "checked_at",
                "created_at",
                "generation",
                "hash",
                "note"
            ],
            "the bytes are not serialized"
        );
        let history = store.history().expect("history");
        assert_eq!(history[0].generation, 1);
        let entry = serde_json::to_value(&history[0]).expect("json");
        // The keys `history --json` has always printed, and `pinned`.
        assert_eq!(
            keys(&entry),
            [
                "bytes",
                "created_at",
                "current",
                "generation",
                "hash",
                "note",
                "pinned"
            ]
        );
        assert_eq!(entry["pinned"], false);
        let status = serde_json::to_value(store.status().expect("status")).expect("json");
        assert_eq!(status["lock"], "free");
        assert_eq!(status["current"]["generation"], 1);
        assert_eq!(status["retained"], 1);
        assert_eq!(status["pinned"], 0);
    }

    #[test]
    #[cfg(not(feature = "s3"))]
    fn an_object_store_url_without_the_feature_is_a_typed_error_that_names_it() {
        let err = Store::open(StoreOptions::new("s3://ci-cache/kopi")).expect_err("no s3 feature");
        assert!(
            matches!(&err, Error::ObjectStoreUnsupported { url } if url == "s3://ci-cache/kopi"),
            "{err}"
        );
        assert!(err.to_string().contains("feature `s3`"), "{err}");
        assert!(!Path::new("s3:").exists(), "nothing was created locally");
    }

    #[test]
    fn read_json_of_the_wrong_shape_is_its_own_error() {
        let (_dir, store) = store();
        store
            .publish_json(&["a", "b"], &PublishOptions::default())
            .expect("publish");
        let err = store
            .read_json::<std::collections::BTreeMap<String, u32>>()
            .expect_err("wrong shape");
        assert!(
            matches!(err, Error::UnexpectedShape { generation: 1, .. }),
            "{err}"
        );
    }

    #[test]
    fn a_failing_source_publishes_nothing() {
        let (_dir, store) = store();
        store
            .publish_bytes(b"[1]", &PublishOptions::default())
            .expect("publish");
        let err = store
            .publish_with(&PublishOptions::default(), |sink| {
                sink.write_all(b"[2,")?;
                Err("upstream returned 503".into())
            })
            .expect_err("source failed");
        assert!(
            matches!(&err, Error::SourceFailed { source } if source.to_string().contains("503")),
            "{err}"
        );
        assert_eq!(store.read_current().expect("read").data, b"[1]");
        assert_eq!(store.history().expect("history").len(), 1);
    }

    #[test]
    fn a_set_cancel_flag_interrupts_the_publish() {
        let dir = tempfile::tempdir().expect("tempdir");
        let flag = Arc::new(AtomicBool::new(false));
        let store =
            Store::open(StoreOptions::new(dir.path()).cancel_flag(flag.clone())).expect("open");
        let err = store
            .publish_with(&PublishOptions::default(), |sink| {
                sink.write_all(b"[1,")?;
                flag.store(true, std::sync::atomic::Ordering::Relaxed);
                sink.write_all(b"2]")?;
                Ok(())
            })
            .expect_err("cancelled");
        assert!(err.is_interrupted(), "{err}");
        assert!(matches!(store.read_current(), Err(Error::NoStore { .. })));
    }
}
