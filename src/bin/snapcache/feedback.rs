//! Lock-wait messages on stderr.
//!
//! On a terminal: one live line with elapsed and remaining time. Otherwise
//! (logs, CI): one line when the wait starts and one when the lock is
//! acquired. Nothing at all when the lock was free or handed over within
//! [`snapcache::QUIET_WAIT`].

use std::io::{IsTerminal, Write};
use std::time::Duration;

use snapcache::{Backend, LockObserver, WaitStarted};

use crate::output::errln;

pub struct StderrFeedback {
    terminal: bool,
}

impl StderrFeedback {
    pub fn new() -> Self {
        StderrFeedback {
            terminal: std::io::stderr().is_terminal(),
        }
    }
}

impl LockObserver for StderrFeedback {
    fn wait_started(&self, wait: &WaitStarted) {
        let who = match &wait.holder {
            Some(h) => format!("held by {}, {} lock", h.describe(), h.backend),
            None => "held by another process (no holder record yet)".to_string(),
        };
        errln!(
            "snapcache: waiting for the writer lock {}: {who}; waiting at most {} (Ctrl-C to stop)",
            wait.lock_path.display(),
            wait.budget
        );
    }

    fn progress(&self, elapsed: Duration, remaining: Option<Duration>) {
        if !self.terminal {
            return;
        }
        let left = match remaining {
            Some(r) => format!("{:.0} s left", r.as_secs_f64()),
            None => "no limit".to_string(),
        };
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\r\x1b[2Ksnapcache: waiting {:.1} s ({left})",
            elapsed.as_secs_f64()
        );
        let _ = err.flush();
    }

    fn acquired(&self, waited: Duration, backend: Backend, contended: bool) {
        if !contended {
            return;
        }
        if self.terminal {
            let _ = write!(std::io::stderr(), "\r\x1b[2K");
        }
        errln!(
            "snapcache: acquired the writer lock after {:.1} s ({backend})",
            waited.as_secs_f64()
        );
    }

    fn timed_out(&self, _waited: Duration) {
        if self.terminal {
            let _ = write!(std::io::stderr(), "\r\x1b[2K");
        }
    }
}
