//! Test hooks that the built binary honours, so integration tests can put
//! real processes in states that are otherwise a matter of luck.
//!
//! Every hook is off unless `SNAPCACHE_TEST_HOOKS=1` is set as well as the
//! hook's own variable; both are documented in `docs/reliability.md`. They
//! only make a process stop itself or behave as on a filesystem without
//! advisory locks, never weaken a check.
//!
//! - `SNAPCACHE_TEST_STOP_BEFORE_COMMIT=1`: a writer sends itself SIGSTOP
//!   after its last lease check, right before its commit (every thread
//!   stops, the lease renewer too, as under a real stall); the test resumes
//!   it with SIGCONT. On an object store: right before the pointer's
//!   conditional put. Once per process.
//! - `SNAPCACHE_TEST_NO_ADVISORY_LOCK=1`: advisory locks fail as
//!   "unsupported", as on an NFS mount with `nolock`.
//! - `SNAPCACHE_TEST_SNAPSHOT_GRACE_SECS=S`: the snapshot grace of the
//!   lease backend is `S` seconds instead of 10 minutes, so a test can see a
//!   snapshot kept before the grace ends and deleted after it. It only
//!   changes when, never whether, the grace applies.
//! - `SNAPCACHE_TEST_S3_REQUEST_SECS=S`: an object store's requests time
//!   out after `S` seconds instead of 60, so a test can see a write that
//!   got no answer without waiting a minute.

/// Whether hook `name` is switched on (and hooks are enabled at all).
fn on(name: &str) -> bool {
    let set = |n: &str| std::env::var_os(n).is_some_and(|v| v == "1");
    set("SNAPCACHE_TEST_HOOKS") && set(name)
}

/// The stall between the writer's last lease check and its commit. Once
/// per process: an object-store writer that lost its put retries without
/// stopping again.
pub(crate) fn stall_before_commit() {
    static STOPPED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if !on("SNAPCACHE_TEST_STOP_BEFORE_COMMIT")
        || STOPPED.swap(true, std::sync::atomic::Ordering::Relaxed)
    {
        return;
    }
    tracing::warn!("test hook: stopping before the commit (SIGSTOP)");
    #[cfg(unix)]
    {
        let me = rustix::process::getpid();
        if let Err(e) = rustix::process::kill_process(me, rustix::process::Signal::STOP) {
            tracing::warn!(error = %e, "test hook: could not stop");
        }
    }
}

/// The moment between a writer finding no store root and making it, where
/// another user could make it first: the writer stops itself (SIGSTOP) for
/// the test to do that, and to resume it with SIGCONT.
pub(crate) fn stall_before_root_creation() {
    if !on("SNAPCACHE_TEST_STOP_BEFORE_ROOT_CREATION") {
        return;
    }
    tracing::warn!("test hook: stopping before creating the store root (SIGSTOP)");
    #[cfg(unix)]
    {
        let me = rustix::process::getpid();
        if let Err(e) = rustix::process::kill_process(me, rustix::process::Signal::STOP) {
            tracing::warn!(error = %e, "test hook: could not stop");
        }
    }
}

/// Whether advisory locks are to fail as unsupported.
pub(crate) fn advisory_lock_disabled() -> bool {
    on("SNAPCACHE_TEST_NO_ADVISORY_LOCK")
}

/// The snapshot grace the test asks for, in seconds (fractions allowed).
pub(crate) fn snapshot_grace() -> Option<std::time::Duration> {
    if !on_value("SNAPCACHE_TEST_SNAPSHOT_GRACE_SECS") {
        return None;
    }
    let text = std::env::var("SNAPCACHE_TEST_SNAPSHOT_GRACE_SECS").ok()?;
    let grace = text
        .trim()
        .parse::<f64>()
        .ok()
        .and_then(|s| std::time::Duration::try_from_secs_f64(s).ok());
    if grace.is_none() {
        tracing::warn!(value = %text, "test hook: SNAPCACHE_TEST_SNAPSHOT_GRACE_SECS is not a number of seconds; ignored");
    }
    grace
}

/// The S3 request timeout the test asks for, in seconds.
#[cfg(feature = "s3")]
pub(crate) fn s3_request_timeout() -> Option<std::time::Duration> {
    if !on_value("SNAPCACHE_TEST_S3_REQUEST_SECS") {
        return None;
    }
    let text = std::env::var("SNAPCACHE_TEST_S3_REQUEST_SECS").ok()?;
    text.trim()
        .parse::<f64>()
        .ok()
        .and_then(|s| std::time::Duration::try_from_secs_f64(s).ok())
}

/// Whether hooks are enabled and variable `name` is set (to any value).
fn on_value(name: &str) -> bool {
    std::env::var_os("SNAPCACHE_TEST_HOOKS").is_some_and(|v| v == "1")
        && std::env::var_os(name).is_some()
}
