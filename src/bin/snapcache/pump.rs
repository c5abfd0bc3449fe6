//! A reader on its own thread, handing chunks to the main thread over a
//! channel.
//!
//! Why: a blocking `read()` on a pipe, a FIFO or stdin cannot be interrupted
//! by a signal (the handlers restart system calls), so a refresh whose
//! source is silent would ignore Ctrl-C and keep the writer lock. With the
//! read on a thread, the main thread waits with a timeout and checks the
//! cancel flag, the command's exit and deadlines in between. A reader thread
//! still blocked in `read()` when the refresh ends is simply abandoned: the
//! process exits right after.

use std::io::{self, Read};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::time::Duration;

/// Bytes per read (large reads: fewer syscalls and checker batches).
const CHUNK: usize = 256 * 1024;
/// Chunks buffered between the threads (bounds memory to about 1 MiB).
const QUEUE: usize = 4;

/// What the reader thread reports.
pub enum Event {
    /// The source was opened (always the first event on success).
    Opened,
    /// Bytes read.
    Data(Vec<u8>),
    /// End of input.
    End,
    /// Opening or reading failed.
    Failed(io::Error),
    /// Nothing arrived within the timeout.
    Idle,
}

/// The receiving end.
pub struct Pump {
    events: Receiver<Event>,
    finished: bool,
}

impl Pump {
    /// Runs `open` and then reads what it returns to the end, on a new thread.
    pub fn start<R, F>(name: &str, open: F) -> io::Result<Pump>
    where
        R: Read,
        F: FnOnce() -> io::Result<R> + Send + 'static,
    {
        let (tx, rx) = mpsc::sync_channel(QUEUE);
        std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || read_all(open, &tx))?;
        Ok(Pump {
            events: rx,
            finished: false,
        })
    }

    /// The next event, waiting at most `timeout`. After `End` or `Failed`,
    /// every call returns `End`.
    pub fn next(&mut self, timeout: Duration) -> Event {
        if self.finished {
            return Event::End;
        }
        match self.events.recv_timeout(timeout) {
            Ok(event) => {
                if matches!(event, Event::End | Event::Failed(_)) {
                    self.finished = true;
                }
                event
            }
            Err(RecvTimeoutError::Timeout) => Event::Idle,
            Err(RecvTimeoutError::Disconnected) => {
                self.finished = true;
                Event::Failed(io::Error::other("the reader thread stopped unexpectedly"))
            }
        }
    }
}

fn read_all<R: Read>(open: impl FnOnce() -> io::Result<R>, tx: &SyncSender<Event>) {
    let mut reader = match open() {
        Ok(r) => r,
        Err(e) => {
            let _ = tx.send(Event::Failed(e));
            return;
        }
    };
    if tx.send(Event::Opened).is_err() {
        return;
    }
    let mut buf = vec![0u8; CHUNK];
    loop {
        let event = match reader.read(&mut buf) {
            Ok(0) => Event::End,
            Ok(n) => Event::Data(buf.get(..n).unwrap_or_default().to_vec()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => Event::Failed(e),
        };
        let last = !matches!(event, Event::Data(_));
        // A closed channel: the main thread gave up on this source.
        if tx.send(event).is_err() || last {
            return;
        }
    }
}
