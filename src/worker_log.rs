//! Logging from the store's worker threads (the sweep, its parallel
//! unlinks): their events go where the calling thread's would.
//!
//! A thread-local (scoped) subscriber of the caller is not seen by a new
//! thread, so the worker runs under a clone of it. But only when some
//! subscriber was ever set: setting one on a worker, even the no-op one,
//! tells `tracing` that a subscriber exists, which turns off its fallback
//! to the `log` crate for the whole process from then on (the `log`
//! feature: an embedder that logs with `log` would stop seeing our events).

use tracing::Dispatch;

/// The caller's subscriber to hand to a worker, if one was ever set.
pub(crate) fn callers() -> Option<Dispatch> {
    tracing::dispatcher::has_been_set().then(|| tracing::dispatcher::get_default(Clone::clone))
}

/// Runs `work` under `dispatch` (from [`callers`]), or as it is if none.
pub(crate) fn with<R>(dispatch: Option<&Dispatch>, work: impl FnOnce() -> R) -> R {
    match dispatch {
        Some(dispatch) => tracing::dispatcher::with_default(dispatch, work),
        None => work(),
    }
}
