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
//!   it with SIGCONT.
//! - `SNAPCACHE_TEST_NO_ADVISORY_LOCK=1`: advisory locks fail as
//!   "unsupported", as on an NFS mount with `nolock`.

/// Whether hook `name` is switched on (and hooks are enabled at all).
fn on(name: &str) -> bool {
    let set = |n: &str| std::env::var_os(n).is_some_and(|v| v == "1");
    set("SNAPCACHE_TEST_HOOKS") && set(name)
}

/// The stall between the writer's last lease check and its commit.
pub(crate) fn stall_before_commit() {
    if !on("SNAPCACHE_TEST_STOP_BEFORE_COMMIT") {
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

/// Whether advisory locks are to fail as unsupported.
pub(crate) fn advisory_lock_disabled() -> bool {
    on("SNAPCACHE_TEST_NO_ADVISORY_LOCK")
}
