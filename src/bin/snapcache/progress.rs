//! A live "bytes done and rate" line on stderr for a refresh or show that
//! runs longer than [`DELAY`].
//!
//! Only on a terminal, and never with `--quiet` or `--json`: a log or a
//! script sees no progress line at all. The line is redrawn in place at
//! most every [`REDRAW`] and erased when the transfer ends.

use std::io::{IsTerminal, Read, Write};
use std::time::{Duration, Instant};

use crate::Context;
use crate::output::human_bytes;

/// A transfer shorter than this shows nothing.
pub const DELAY: Duration = Duration::from_secs(1);
/// Shortest interval between two redraws.
const REDRAW: Duration = Duration::from_millis(100);

/// The progress of one transfer (see the module doc).
pub struct Progress {
    enabled: bool,
    verb: &'static str,
    start: Instant,
    bytes: u64,
    last_draw: Option<Instant>,
}

impl Progress {
    /// `verb` says what happens to the bytes ("read", "written").
    pub fn new(ctx: &Context, verb: &'static str) -> Progress {
        Progress {
            enabled: !ctx.quiet && !ctx.json && std::io::stderr().is_terminal(),
            verb,
            start: Instant::now(),
            bytes: 0,
            last_draw: None,
        }
    }

    /// Counts `n` more bytes and redraws when due.
    pub fn add(&mut self, n: usize) {
        self.bytes = self.bytes.saturating_add(n as u64);
        self.tick();
    }

    /// Redraws when due, even without new bytes (the rate falls).
    pub fn tick(&mut self) {
        if !self.enabled {
            return;
        }
        let elapsed = self.start.elapsed();
        if elapsed < DELAY || self.last_draw.is_some_and(|t| t.elapsed() < REDRAW) {
            return;
        }
        self.last_draw = Some(Instant::now());
        let rate = (self.bytes as f64 / elapsed.as_secs_f64()) as u64;
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\r\x1b[2Ksnapcache: {} {} in {:.0} s ({}/s)",
            self.verb,
            human_bytes(self.bytes),
            elapsed.as_secs_f64(),
            human_bytes(rate)
        );
        let _ = err.flush();
    }
}

impl Drop for Progress {
    /// Erases the line, so that the result (or an error) starts clean.
    fn drop(&mut self) {
        if self.last_draw.is_some() {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[2K");
            let _ = err.flush();
        }
    }
}

/// A reader that reports what passes through it.
pub struct Counted<R> {
    pub inner: R,
    pub progress: Progress,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.progress.add(n);
        Ok(n)
    }
}
