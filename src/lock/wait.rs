//! The bookkeeping of one wait for a writer lock: when it started, when the
//! budget runs out, when it became contended (the observer's
//! `wait_started`), when progress was last reported, and the backoff
//! between looks. The local lock and the object-store lease wait the same
//! way; only how a look is made and the backoff bounds differ, so both keep
//! their loop and share these steps.

use std::time::{Duration, Instant};

use super::{LockObserver, QUIET_WAIT};

/// How often a contended wait reports progress to the observer.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);

/// One wait for a lock, from its first look to its last.
pub(crate) struct Wait {
    started: Instant,
    deadline: Option<Instant>,
    delay: Duration,
    max_delay: Duration,
    contended: bool,
    last_progress: Instant,
}

impl Wait {
    /// Starts a wait now, with `budget` (`None`: no limit) and a backoff
    /// that begins at `first_delay` and doubles up to `max_delay`.
    pub(crate) fn start(
        budget: Option<Duration>,
        first_delay: Duration,
        max_delay: Duration,
    ) -> Self {
        let started = Instant::now();
        Wait {
            started,
            // A budget too large for the clock to represent means no deadline.
            deadline: budget.and_then(|b| started.checked_add(b)),
            delay: first_delay,
            max_delay,
            contended: false,
            last_progress: started,
        }
    }

    /// When the wait started (the budget counts from here).
    pub(crate) fn started(&self) -> Instant {
        self.started
    }

    /// How long the wait has lasted.
    pub(crate) fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Whether the wait has become contended (lasted [`QUIET_WAIT`]).
    pub(crate) fn contended(&self) -> bool {
        self.contended
    }

    /// Whether the budget has run out.
    pub(crate) fn deadline_passed(&self) -> bool {
        self.deadline.is_some_and(|d| Instant::now() >= d)
    }

    /// What is left of the budget (`None` without a limit).
    pub(crate) fn remaining(&self) -> Option<Duration> {
        crate::durable::remaining(self.deadline)
    }

    /// After a busy look at `elapsed`: `true` once, when the wait has just
    /// become contended (the caller logs it and tells the observer
    /// `wait_started`).
    pub(crate) fn contention_begins(&mut self, elapsed: Duration) -> bool {
        if self.contended || elapsed < QUIET_WAIT {
            return false;
        }
        self.contended = true;
        true
    }

    /// On a contended wait, tells `observer` how long it has lasted and
    /// what is left, about every [`PROGRESS_EVERY`].
    pub(crate) fn report_progress(
        &mut self,
        elapsed: Duration,
        observer: Option<&dyn LockObserver>,
    ) {
        if self.contended && self.last_progress.elapsed() >= PROGRESS_EVERY {
            self.last_progress = Instant::now();
            if let Some(o) = observer {
                o.progress(elapsed, self.remaining());
            }
        }
    }

    /// Sleeps until the next look (never past the deadline) and doubles the
    /// delay, up to its maximum.
    pub(crate) fn back_off(&mut self) {
        let mut sleep = self.delay;
        if let Some(left) = self.remaining() {
            sleep = sleep.min(left);
        }
        std::thread::sleep(sleep);
        self.delay = (self.delay * 2).min(self.max_delay);
    }
}
