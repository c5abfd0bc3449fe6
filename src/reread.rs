//! Re-reading the pointer across a replace that is not atomic for readers.
//!
//! # Why
//!
//! Writers replace `current` with one `rename`, which local filesystems make
//! atomic for readers. Some network and FUSE filesystems (sshfs, some SMB
//! and NFS clients with aggressive caching) do not: for a moment a reader
//! can find the name missing, or find a file that is still being written
//! (short, or failing its checksum). Reported as damage, such a moment would
//! send the user to repair a healthy store.
//!
//! # Rule
//!
//! A reader that finds the pointer missing *while the store has snapshots*,
//! or finds it short or failing its checksum, looks again with a backoff of
//! 1 ms doubling to 100 ms, for at most [`POINTER_WINDOW`] in total (about
//! 16 reads). Only a fault that is still there at the end of the window is
//! reported. "The store has snapshots" is the evidence that a pointer
//! exists: a snapshot is always renamed into `snapshots/` before the first
//! pointer names it, and no write ever removes the current snapshot, so a
//! store that never published (no snapshot file) reports "nothing published"
//! at once, without waiting.

use std::io;
use std::time::Duration;

/// The longest a reader keeps re-reading a pointer that looks mid-replace.
pub(crate) const POINTER_WINDOW: Duration = Duration::from_secs(1);

/// How long to keep looking and how to space the looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Window {
    /// First pause.
    pub first_delay: Duration,
    /// Pauses double up to this.
    pub max_delay: Duration,
    /// Total pause time never exceeds this.
    pub total: Duration,
}

impl Window {
    /// The pointer's window: 1 ms doubling to 100 ms, 1 s in total.
    pub(crate) const POINTER: Window = Window {
        first_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(100),
        total: POINTER_WINDOW,
    };

    /// One look, no re-reads (for tests of static crash states).
    #[cfg(test)]
    pub(crate) const NONE: Window = Window {
        first_delay: Duration::ZERO,
        max_delay: Duration::ZERO,
        total: Duration::ZERO,
    };
}

/// What one look found.
pub(crate) enum Look<T> {
    /// A final answer (good or bad): return it.
    Settled(T),
    /// Something that a concurrent replace explains: look again, or return
    /// it when the window is spent.
    Unsettled(T),
}

/// How many looks were taken and how long was slept between them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Looks {
    pub count: u32,
    pub waited: Duration,
}

/// Looks until the answer is settled or the window is spent. The pauses
/// start at `first_delay`, double up to `max_delay`, and the last one is cut
/// so that their sum never exceeds `total`.
pub(crate) fn look_until_settled<T>(
    window: Window,
    mut look: impl FnMut() -> Look<T>,
    mut sleep: impl FnMut(Duration),
) -> (T, Looks) {
    let mut looks = Looks::default();
    let mut delay = window.first_delay;
    loop {
        looks.count += 1;
        let value = match look() {
            Look::Settled(v) => return (v, looks),
            Look::Unsettled(v) => v,
        };
        let left = window.total.saturating_sub(looks.waited);
        if left.is_zero() {
            return (value, looks);
        }
        let pause = delay.min(left);
        sleep(pause);
        looks.waited += pause;
        delay = (delay * 2).min(window.max_delay.max(window.first_delay));
    }
}

/// An open error that a replace in progress explains: a stale file handle
/// on NFS (the name moved to a new file between lookup and open), and on
/// Windows a sharing violation or a delete-pending file (access denied).
pub(crate) fn is_transient_open_error(err: &io::Error) -> bool {
    #[cfg(unix)]
    {
        err.raw_os_error() == Some(rustix::io::Errno::STALE.raw_os_error())
    }
    #[cfg(windows)]
    {
        matches!(err.raw_os_error(), Some(32) | Some(5))
    }
    #[cfg(not(any(unix, windows)))]
    {
        let _ = err;
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(unsettled_for: u32, window: Window) -> (u32, Looks, Vec<u64>) {
        let mut pauses = Vec::new();
        let mut seen = 0;
        let (value, looks) = look_until_settled(
            window,
            || {
                seen += 1;
                if seen <= unsettled_for {
                    Look::Unsettled(seen)
                } else {
                    Look::Settled(seen)
                }
            },
            |d| pauses.push(d.as_millis() as u64),
        );
        (value, looks, pauses)
    }

    #[test]
    fn a_settled_first_look_does_not_wait() {
        let (value, looks, pauses) = run(0, Window::POINTER);
        assert_eq!((value, looks.count, looks.waited), (1, 1, Duration::ZERO));
        assert!(pauses.is_empty());
    }

    #[test]
    fn pauses_double_from_1_ms_to_100_ms() {
        let (value, looks, pauses) = run(9, Window::POINTER);
        assert_eq!(value, 10, "the first settled look is returned");
        assert_eq!(pauses, vec![1, 2, 4, 8, 16, 32, 64, 100, 100]);
        assert_eq!(looks.waited, Duration::from_millis(pauses.iter().sum()));
    }

    #[test]
    fn a_fault_that_stays_is_returned_after_about_one_second() {
        let (value, looks, pauses) = run(u32::MAX, Window::POINTER);
        assert_eq!(looks.waited, POINTER_WINDOW, "the whole window, no more");
        assert_eq!(*pauses.last().expect("pauses"), 73, "the last pause is cut");
        assert_eq!(looks.count as usize, pauses.len() + 1);
        assert_eq!(value, looks.count, "the last look is what is reported");
        assert!(
            (14..=20).contains(&looks.count),
            "about 16 looks: {}",
            looks.count
        );
    }

    #[test]
    fn no_window_means_one_look() {
        let (value, looks, pauses) = run(u32::MAX, Window::NONE);
        assert_eq!((value, looks.count), (1, 1));
        assert!(pauses.is_empty());
    }
}
