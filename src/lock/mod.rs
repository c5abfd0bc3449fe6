//! The exclusive writer lock of a store.
//!
//! # Model
//!
//! Readers never lock. Every write (publish, rollback, gc) runs under one
//! exclusive lock per store. A writer *tries* first; only when the lock is
//! taken does it wait, polling with a short backoff (1 ms doubling to 2 ms)
//! until it gets the lock, its budget runs out, or it is cancelled. Polling,
//! rather than a blocking lock call on a helper thread, keeps cancellation
//! (Ctrl-C) and the timeout exact and leaves no thread stuck in a kernel call;
//! the 2 ms cap bounds the handoff delay after the holder releases.
//!
//! # Feedback
//!
//! When the wait lasts longer than [`QUIET_WAIT`], the [`LockObserver`] hears
//! who holds the lock (from the holder record, see [`HolderInfo`]), the
//! budget and where it came from; then periodic progress, and finally
//! `acquired` or `timed_out`. Tracing events: `lock_contended`,
//! `lock_acquired` (backend, waited_ms), `lock_timeout`.

mod advisory;
mod fs_kind;
mod holder;
mod lease;
#[cfg(test)]
mod lease_crash_sim;
mod lease_view;
mod wait;

use std::borrow::Cow;
use std::fmt;
use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

pub use holder::HolderInfo;
pub(crate) use holder::{process_alive, same_pid_namespace, this_temp_owner};
pub(crate) use lease::{MAX_LEASE_TTL, MIN_LEASE_TTL, create_complete};
pub use lease_view::LeaseView;

use crate::durable::Durable;
use crate::error::{Error, Result};
use crate::layout::Layout;
pub(crate) use wait::Wait;

/// Waits shorter than this are not reported as contention.
pub const QUIET_WAIT: Duration = Duration::from_millis(100);
const POLL_FIRST: Duration = Duration::from_millis(1);
const POLL_MAX: Duration = Duration::from_millis(2);

/// The default budget for waiting on the writer lock.
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(600);

/// How long a writer waits for the lock.
///
/// ```
/// use snapcache::LockWait;
/// use std::time::Duration;
/// assert_eq!(LockWait::parse("0"), Some(LockWait::TryOnce));
/// assert_eq!(LockWait::parse("1.5"), Some(LockWait::For(Duration::from_millis(1500))));
/// assert_eq!(LockWait::parse("infinite"), Some(LockWait::Forever));
/// assert_eq!(LockWait::parse("soon"), None);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockWait {
    /// Try once; fail at once if the lock is taken.
    TryOnce,
    /// Wait at most this long.
    For(Duration),
    /// Wait as long as it takes.
    Forever,
}

impl LockWait {
    /// Parses seconds (`0` = try once, fractions allowed) or `infinite`.
    pub fn parse(text: &str) -> Option<LockWait> {
        let text = text.trim();
        // Only the documented spelling: `never` or `none` could as well
        // mean "do not wait", so no guess is made.
        if text == "infinite" {
            return Some(LockWait::Forever);
        }
        let secs: f64 = text.parse().ok()?;
        if !secs.is_finite() || secs < 0.0 {
            return None;
        }
        if secs == 0.0 {
            return Some(LockWait::TryOnce);
        }
        Duration::try_from_secs_f64(secs).ok().map(LockWait::For)
    }

    /// The budget, `None` when unbounded.
    pub fn budget(&self) -> Option<Duration> {
        match self {
            LockWait::TryOnce => Some(Duration::ZERO),
            LockWait::For(d) => Some(*d),
            LockWait::Forever => None,
        }
    }
}

/// Where a lock budget came from, for messages ("600 s from the default",
/// "30 s from KOPI_LOCK_TIMEOUT").
///
/// An embedding program names its own sources with [`TimeoutSource::Label`]
/// (a flag, an environment variable, a configuration key): the label is shown
/// verbatim in lock-wait messages and in [`Error::LockTimeout`], so the user
/// learns which of *their* settings to change.
///
/// ```
/// use snapcache::{LockBudget, LockWait, TimeoutSource};
/// use std::time::Duration;
/// let budget = LockBudget::labelled(LockWait::For(Duration::from_secs(30)), "KOPI_LOCK_TIMEOUT");
/// assert_eq!(budget.source, TimeoutSource::Label("KOPI_LOCK_TIMEOUT".into()));
/// assert_eq!(budget.to_string(), "30 s from KOPI_LOCK_TIMEOUT");
/// assert_eq!(LockBudget::default().to_string(), "600 s from the default");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum TimeoutSource {
    /// The built-in default ([`DEFAULT_LOCK_TIMEOUT`]).
    Default,
    /// Set by a library caller without saying where it came from.
    Caller,
    /// Set by a library caller, from the source it names: a flag
    /// (`"--lock-timeout"`), an environment variable (`"KOPI_LOCK_TIMEOUT"`),
    /// a configuration key (`"config: locking.timeout"`). Shown as given.
    Label(Cow<'static, str>),
}

impl TimeoutSource {
    /// A source named by the caller (see [`TimeoutSource::Label`]).
    pub fn label(label: impl Into<Cow<'static, str>>) -> Self {
        TimeoutSource::Label(label.into())
    }
}

impl fmt::Display for TimeoutSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TimeoutSource::Default => "the default",
            TimeoutSource::Caller => "the caller",
            TimeoutSource::Label(label) => label,
        })
    }
}

/// A lock budget and where it came from.
///
/// ```
/// use snapcache::{LockBudget, LockWait, StoreOptions};
/// // Kopi resolves --lock-timeout > KOPI_LOCK_TIMEOUT > its config file:
/// let options = StoreOptions::new("/tmp/kopi-cache")
///     .lock_budget(LockBudget::labelled(LockWait::Forever, "--lock-timeout"));
/// # let _ = options;
/// ```
///
/// The fields are public to read; the struct is `#[non_exhaustive]` (built
/// with [`LockBudget::labelled`], [`LockBudget::new`] or `default()`), so a
/// field added later breaks no caller.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LockBudget {
    /// How long to wait.
    pub wait: LockWait,
    /// Where that came from.
    pub source: TimeoutSource,
}

impl LockBudget {
    /// A budget from any source.
    ///
    /// ```
    /// use snapcache::{LockBudget, LockWait, TimeoutSource};
    /// let budget = LockBudget::new(LockWait::TryOnce, TimeoutSource::Caller);
    /// assert_eq!(budget.to_string(), "0 s (try once) from the caller");
    /// ```
    pub fn new(wait: LockWait, source: TimeoutSource) -> Self {
        LockBudget { wait, source }
    }

    /// A budget whose source is the caller's own label ("--lock-timeout",
    /// "KOPI_LOCK_TIMEOUT", "config"), shown in messages and errors.
    pub fn labelled(wait: LockWait, label: impl Into<Cow<'static, str>>) -> Self {
        LockBudget {
            wait,
            source: TimeoutSource::label(label),
        }
    }
}

impl Default for LockBudget {
    fn default() -> Self {
        LockBudget {
            wait: LockWait::For(DEFAULT_LOCK_TIMEOUT),
            source: TimeoutSource::Default,
        }
    }
}

impl fmt::Display for LockBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.wait.budget() {
            Some(b) => write!(f, "{} from {}", format_budget(b), self.source),
            None => write!(f, "no limit (infinite, from {})", self.source),
        }
    }
}

/// `600 s`, `1.5 s`, `0 s (try once)`.
pub(crate) fn format_budget(d: Duration) -> String {
    if d.is_zero() {
        "0 s (try once)".to_string()
    } else {
        format!("{} s", d.as_secs_f64())
    }
}

/// Which mechanism provides mutual exclusion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// An fs4 advisory lock on `<store>/lock` (released by the kernel on exit).
    Advisory,
    /// A lease file for filesystems where advisory locks are unreliable.
    Lease,
    /// A store on an object store (`s3://...`): a lease object for the
    /// run-once promise, and the pointer's conditional put as the commit.
    #[serde(rename = "object-store")]
    ObjectStore,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Advisory => "advisory",
            Backend::Lease => "lease",
            Backend::ObjectStore => "object-store",
        })
    }
}

/// Which backend to use; `Auto` (the default) picks the lease backend on
/// network and pass-through filesystems and advisory locks elsewhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackendChoice {
    /// Detect from the filesystem (and fall back if advisory locks fail).
    #[default]
    Auto,
    /// Always the advisory lock.
    Advisory,
    /// Always the lease file.
    Lease,
}

impl BackendChoice {
    /// Parses `auto`, `advisory` or `lease`.
    pub fn parse(text: &str) -> Option<Self> {
        match text.trim() {
            "auto" => Some(BackendChoice::Auto),
            "advisory" => Some(BackendChoice::Advisory),
            "lease" => Some(BackendChoice::Lease),
            _ => None,
        }
    }
}

/// Default lease time of the lease backend (renewed every third of it).
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(30);

/// What a waiting writer learns when it starts waiting.
#[derive(Debug, Clone)]
pub struct WaitStarted {
    /// The lock being waited for.
    pub lock_path: PathBuf,
    /// Who holds it, when the holder recorded itself.
    pub holder: Option<HolderInfo>,
    /// The waiting budget and its source.
    pub budget: LockBudget,
}

/// Hears about lock waits, e.g. to drive a progress line.
///
/// All methods have empty defaults; implement the ones you need.
///
/// ```
/// use snapcache::{LockObserver, WaitStarted};
/// use std::time::Duration;
/// struct Log;
/// impl LockObserver for Log {
///     fn wait_started(&self, w: &WaitStarted) {
///         eprintln!("waiting for {} ({})", w.lock_path.display(), w.budget);
///     }
///     fn acquired(&self, waited: Duration, _backend: snapcache::Backend, _contended: bool) {
///         eprintln!("got it after {waited:?}");
///     }
/// }
/// ```
pub trait LockObserver: Send + Sync {
    /// The lock has been busy for longer than [`QUIET_WAIT`].
    fn wait_started(&self, _wait: &WaitStarted) {}
    /// Still waiting (about every 250 ms); `remaining` is `None` without a limit.
    fn progress(&self, _elapsed: Duration, _remaining: Option<Duration>) {}
    /// The lock was acquired; `contended` is true when `wait_started` was called.
    fn acquired(&self, _waited: Duration, _backend: Backend, _contended: bool) {}
    /// The budget ran out.
    fn timed_out(&self, _waited: Duration) {}
}

/// Whether the lock is held right now (for `status`).
///
/// ```
/// # fn main() -> Result<(), snapcache::Error> {
/// # let dir = tempfile::tempdir().map_err(|e| snapcache::Error::InvalidOption(e.to_string()))?;
/// use snapcache::{LockState, Store, StoreOptions};
/// let store = Store::open(StoreOptions::new(dir.path()))?;
/// store.publish_bytes(b"[1]", &Default::default())?;
/// // An empty lease file, as a power cut during a lease write could leave.
/// std::fs::write(dir.path().join("lease"), b"")
///     .map_err(|e| snapcache::Error::InvalidOption(e.to_string()))?;
/// assert!(matches!(store.status()?.lock, LockState::UnreadableLease { .. }));
/// # Ok(()) }
/// ```
///
/// Serialized (`serde`) as `"free"`, `{"held": <holder or null>}` or
/// `{"unreadable-lease": {"path", "age", "takeover_after"}}` (durations as
/// serde's `{"secs", "nanos"}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum LockState {
    /// Nobody holds it.
    Free,
    /// Somebody holds it; the record says who, when it could be read.
    Held(Option<HolderInfo>),
    /// A lease file exists that cannot be read (empty or damaged, as a
    /// power cut during a lease write can leave it), so no holder can be
    /// named. Lease writers wait until it is `takeover_after` old by its
    /// modification time, then take it over.
    UnreadableLease {
        /// The lease file.
        path: PathBuf,
        /// How long ago it was last modified, when known.
        age: Option<Duration>,
        /// The age at which writers take it over (one lease time).
        takeover_after: Duration,
    },
}

/// Everything `acquire` needs.
pub(crate) struct AcquireOptions<'a> {
    pub budget: LockBudget,
    pub backend: BackendChoice,
    pub lease_ttl: Duration,
    pub observer: Option<&'a dyn LockObserver>,
    pub cancel: Option<&'a AtomicBool>,
    pub purpose: &'a str,
}

/// The held writer lock; released on drop.
#[must_use = "the lock is released as soon as the guard is dropped"]
pub(crate) struct WriterLock {
    /// The advisory lock, when held (always with the advisory backend; with
    /// the lease backend too where flock works, to exclude advisory writers).
    advisory: Option<File>,
    lease: Option<lease::LeaseGuard>,
    /// The lease object of a store on an object store.
    #[cfg(feature = "s3")]
    object_lease: Option<crate::object_store::LeaseHold>,
    layout: Layout,
    durable: Durable,
    backend: Backend,
    /// How long we waited for it.
    pub waited: Duration,
    /// When the wait started (the budget counts from here).
    started: Instant,
    budget: Option<Duration>,
}

impl WriterLock {
    /// The lock of a store on an object store: its lease object, held.
    #[cfg(feature = "s3")]
    pub(crate) fn object_store(
        lease: Option<crate::object_store::LeaseHold>,
        layout: Layout,
        waited: Duration,
        started: Instant,
        budget: Option<Duration>,
    ) -> WriterLock {
        WriterLock {
            advisory: None,
            lease: None,
            object_lease: lease,
            layout,
            durable: Durable::default(),
            backend: Backend::ObjectStore,
            waited,
            started,
            budget,
        }
    }

    /// When the lock budget runs out (it also bounds rename retries).
    pub(crate) fn deadline(&self) -> Option<Instant> {
        // A budget too large for the clock to represent means no deadline.
        self.budget.and_then(|b| self.started.checked_add(b))
    }

    pub(crate) fn backend(&self) -> Backend {
        self.backend
    }

    /// Fencing check before a commit: `LeaseLost` when a lease was lost (it
    /// expired while we stalled and another writer took over),
    /// `LockFileReplaced` when the advisory lock file was removed or
    /// replaced while held (another writer may have locked the new one).
    pub(crate) fn check_held(&self) -> Result<()> {
        #[cfg(feature = "s3")]
        if let Some(lease) = &self.object_lease {
            return match lease.lost() {
                false => Ok(()),
                true => Err(Error::LeaseLost {
                    path: self.layout.lease_file(),
                }),
            };
        }
        if self.lease.as_ref().is_some_and(|l| !l.still_held()) {
            return Err(Error::LeaseLost {
                path: self.layout.lease_file(),
            });
        }
        if let Some(file) = &self.advisory {
            let path = self.layout.lock_file();
            match advisory::still_at(file, &path) {
                Ok(true) => {}
                Ok(false) => return Err(Error::LockFileReplaced { path }),
                Err(e) => return Err(Error::io("check the writer lock file", path, e)),
            }
        }
        Ok(())
    }
}

impl Drop for WriterLock {
    fn drop(&mut self) {
        if self.backend == Backend::ObjectStore {
            // The lease object carries the holder record; releasing it is
            // the lease's own drop. Nothing local to remove.
            tracing::debug!(backend = %self.backend, "lock_released");
            return;
        }
        // Remove our record first: once unlocked, the next holder writes its
        // own. Only while we still hold the lock: a writer whose lock file
        // was removed or whose lease was taken over would otherwise remove
        // the record of whoever holds the lock now.
        if self.check_held().is_ok() {
            holder::remove(&self.layout, &self.durable);
        }
        self.lease.take();
        if let Some(file) = &self.advisory {
            advisory::release(file, &self.layout.lock_file());
        }
        tracing::debug!(backend = %self.backend, "lock_released");
    }
}

/// Whether writers of this store with `choice` use the lease backend (as
/// [`resolve_backend`] decides, without its log lines).
pub(crate) fn would_use_lease(choice: BackendChoice, layout: &Layout) -> bool {
    match choice {
        BackendChoice::Advisory => false,
        BackendChoice::Lease => true,
        BackendChoice::Auto => fs_kind::unreliable_lock_filesystem(layout.root()).is_some(),
    }
}

/// Picks the backend for this store, logging why the lease backend is used.
fn resolve_backend(choice: BackendChoice, layout: &Layout) -> Backend {
    match choice {
        BackendChoice::Advisory => Backend::Advisory,
        BackendChoice::Lease => {
            tracing::info!(
                backend = "lease",
                reason = "requested by the caller",
                "lock_fallback"
            );
            Backend::Lease
        }
        BackendChoice::Auto => match fs_kind::unreliable_lock_filesystem(layout.root()) {
            Some(fs) => {
                tracing::info!(backend = "lease", reason = %format!("the store is on {fs}, where advisory locks are unreliable"), "lock_fallback");
                Backend::Lease
            }
            None => Backend::Advisory,
        },
    }
}

/// One attempt: the held lock, or who seems to hold it.
enum Try {
    Got(Option<File>),
    Busy(Option<HolderInfo>),
}

/// Acquires the writer lock of the store at `layout`, waiting per `options`.
pub(crate) fn acquire(
    layout: &Layout,
    durable: &Durable,
    options: &AcquireOptions<'_>,
) -> Result<WriterLock> {
    let path = layout.lock_file();
    let mut wait = Wait::start(options.budget.wait.budget(), POLL_FIRST, POLL_MAX);
    let mut backend = resolve_backend(options.backend, layout);
    let mut lease_guard: Option<lease::LeaseGuard> = None;
    let mut lease_watch = lease::LeaseWatch::default();
    // A lease writer holding its lease but not the advisory lock, which a
    // writer on the advisory backend holds: what it waits for is `lock`.
    let mut blocked_on_advisory = false;
    loop {
        let me = HolderInfo::this_process(options.purpose, backend);
        let attempt = match backend {
            // Never chosen for a directory (a store on an object store
            // takes its lease object instead); the lease file is the safe
            // local equivalent.
            Backend::ObjectStore => {
                backend = Backend::Lease;
                continue;
            }
            Backend::Advisory => match advisory::try_acquire(&path) {
                Ok(advisory::Attempt::Acquired(file)) => {
                    match lease::live_lease(layout, Some(&mut lease_watch)) {
                        // A writer on the lease backend holds the store.
                        Some(record) => Try::Busy(Some(record.holder)),
                        None => Try::Got(Some(file)),
                    }
                }
                Ok(advisory::Attempt::Busy) => Try::Busy(None),
                Err(e)
                    if advisory::is_unsupported(&e) && options.backend == BackendChoice::Auto =>
                {
                    tracing::warn!(backend = "lease", reason = %format!("advisory locks fail here: {e}"), "lock_fallback");
                    backend = Backend::Lease;
                    continue;
                }
                Err(e) => {
                    // ENOLCK/ENOSYS/EOPNOTSUPP all mean "no advisory locks
                    // here": one kind, so that the message advises the
                    // lease backend.
                    let e = if advisory::is_unsupported(&e) {
                        std::io::Error::new(std::io::ErrorKind::Unsupported, e)
                    } else {
                        e
                    };
                    return Err(Error::io("open or lock the writer lock file", &path, e));
                }
            },
            // The advisory lock first, where it works, then the lease: every
            // writer takes `lock` before anything else, so a writer forced
            // onto the advisory backend is excluded too, and a lease holder
            // stopped (SIGSTOP, a paused VM) past its lease on a filesystem
            // where flock works keeps its lease instead of losing it to a
            // waiter that would then block on its flock for ever: taken in
            // the other order, neither of them published.
            Backend::Lease => match advisory::try_acquire(&path) {
                Ok(advisory::Attempt::Busy) => {
                    blocked_on_advisory = true;
                    Try::Busy(None)
                }
                advisory_attempt => {
                    blocked_on_advisory = false;
                    // Err: no working flock here (the lease's reason to exist).
                    let file = match advisory_attempt {
                        Ok(advisory::Attempt::Acquired(file)) => Some(file),
                        _ => None,
                    };
                    match lease::try_acquire(
                        layout,
                        durable,
                        &me,
                        options.lease_ttl,
                        &mut lease_watch,
                    ) {
                        Ok(lease::Attempt::Acquired(guard)) => {
                            lease_guard = Some(guard);
                            Try::Got(file)
                        }
                        // Dropping `file` releases the advisory lock while
                        // we wait for the lease.
                        Ok(lease::Attempt::Busy(record)) => Try::Busy(record.map(|r| r.holder)),
                        Err(e) => {
                            return Err(Error::io("create the lease file", layout.lease_file(), e));
                        }
                    }
                }
            },
        };
        let busy_holder = match attempt {
            Try::Got(advisory) => {
                let waited = wait.elapsed();
                holder::write(layout, durable, &me);
                tracing::info!(backend = %backend, waited_ms = waited.as_millis() as u64, "lock_acquired");
                if let Some(o) = options.observer {
                    o.acquired(waited, backend, wait.contended());
                }
                return Ok(WriterLock {
                    advisory,
                    lease: lease_guard,
                    #[cfg(feature = "s3")]
                    object_lease: None,
                    layout: layout.clone(),
                    durable: durable.clone(),
                    backend,
                    waited,
                    started: wait.started(),
                    budget: options.budget.wait.budget(),
                });
            }
            Try::Busy(holder) => holder,
        };
        let elapsed = wait.elapsed();
        let who = || busy_holder.clone().or_else(|| holder::read(layout));
        if wait.deadline_passed() {
            let holder = who();
            // Advisory writers back off from a live lease too.
            let lease = lease::live_lease_view(layout).map(|(_, view)| view);
            tracing::warn!(
                waited_ms = elapsed.as_millis() as u64,
                holder_pid = holder.as_ref().map(|h| h.pid),
                lease_clocks_disagree = lease.as_ref().map(LeaseView::clocks_disagree),
                "lock_timeout"
            );
            if let Some(o) = options.observer {
                o.timed_out(elapsed);
            }
            return Err(Error::LockTimeout {
                path: if backend == Backend::Lease && !blocked_on_advisory {
                    layout.lease_file()
                } else {
                    path
                },
                waited: elapsed,
                budget: options.budget.wait.budget().unwrap_or_default(),
                budget_source: options.budget.source.clone(),
                holder: holder.map(Box::new),
                lease: lease.map(Box::new),
            });
        }
        if options.cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
            return Err(Error::Interrupted {
                during: "waiting for the writer lock",
            });
        }
        if wait.contention_begins(elapsed) {
            let holder = who();
            tracing::info!(
                holder_pid = holder.as_ref().map(|h| h.pid),
                budget = %options.budget,
                backend = %backend,
                "lock_contended"
            );
            if backend == Backend::Lease && holder.is_none() {
                if let Some((path, age)) = lease::unreadable_lease(layout) {
                    tracing::warn!(
                        path = %path.display(),
                        age_ms = age.map(|a| a.as_millis() as u64),
                        takeover_after_ms = options.lease_ttl.as_millis() as u64,
                        "the lease file is unreadable (no holder can be named); it is taken over once it is one lease time old"
                    );
                }
            }
            if let Some(o) = options.observer {
                o.wait_started(&WaitStarted {
                    lock_path: if backend == Backend::Lease {
                        layout.lease_file()
                    } else {
                        path.clone()
                    },
                    holder,
                    budget: options.budget.clone(),
                });
            }
        } else {
            wait.report_progress(elapsed, options.observer);
        }
        wait.back_off();
    }
}

/// Reports whether the lock is held, and by whom, with the times of a live
/// lease; never waits. `lease_ttl` is the lease time after which an
/// unreadable lease is taken over.
pub(crate) fn probe(
    layout: &Layout,
    lease_ttl: Duration,
) -> Result<(LockState, Option<LeaseView>)> {
    if let Some((record, view)) = lease::live_lease_view(layout) {
        // A lease writer takes its lease first, then the advisory lock: one
        // that waits for an advisory writer holds a live lease but not the
        // store. The holder record is written by whoever holds both, so a
        // held advisory lock with another process's record names the
        // holder (it read "held by" the waiting lease writer).
        if matches!(advisory::probe(&layout.lock_file()), Ok(Some(true))) {
            if let Some(holder) = holder::read(layout) {
                if holder.pid != record.holder.pid || holder.host != record.holder.host {
                    return Ok((LockState::Held(Some(holder)), None));
                }
            }
        }
        return Ok((LockState::Held(Some(record.holder)), Some(view)));
    }
    Ok((probe_without_lease(layout, lease_ttl)?, None))
}

/// [`probe`] once no live lease was found.
fn probe_without_lease(layout: &Layout, lease_ttl: Duration) -> Result<LockState> {
    let path = layout.lock_file();
    match advisory::probe(&path) {
        Ok(Some(true)) => return Ok(LockState::Held(holder::read(layout))),
        Ok(None) | Ok(Some(false)) => {}
        // Where advisory locks do not work, only the lease tells.
        Err(e) if advisory::is_unsupported(&e) => {}
        Err(e) => return Err(Error::io("probe the writer lock", &path, e)),
    }
    // Not free for lease writers: an unreadable lease blocks them until it
    // is one lease time old.
    if let Some((path, age)) = lease::unreadable_lease(layout) {
        return Ok(LockState::UnreadableLease {
            path,
            age,
            takeover_after: lease_ttl,
        });
    }
    Ok(LockState::Free)
}
