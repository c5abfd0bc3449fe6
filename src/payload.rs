//! Taking in a payload: stream it into a temp file while hashing, then check it.
//!
//! Memory stays bounded whatever the payload size: bytes go in one pass
//! into the temp file, the hasher and (by default) the streaming JSON check;
//! the document is never built in memory. The JSON check runs on a second
//! thread fed through a small bounded channel, so on a multi-core machine it
//! overlaps with writing and hashing instead of adding to them.

use std::io::{self, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use crate::durable::{Durable, TempFile};
use crate::hash::ContentHash;
use crate::json_check::JsonCheck;

/// How a payload is checked before it is published.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PayloadFormat {
    /// Well-formed JSON (the default): anything else is rejected.
    #[default]
    Json,
    /// Any non-empty bytes.
    Raw,
}

/// A `Write` into a temp file that hashes and counts as it goes.
///
/// Library callers of [`Store::publish_with`](crate::Store::publish_with)
/// write their payload into this.
pub struct PayloadSink<'a> {
    durable: &'a Durable,
    temp: &'a mut TempFile,
    /// `None` when the payload is hashed elsewhere (a slice in memory, on
    /// a thread of its own: `Writer::stage`).
    hasher: Option<blake3::Hasher>,
    bytes: u64,
    cancel: Option<Arc<AtomicBool>>,
    json: Option<JsonWorker>,
    /// The first error of our own side (the temp file), kept so that a
    /// source that swallows it cannot hide a full disk.
    pub(crate) write_error: Option<io::Error>,
    /// The largest payload accepted, and whether the source went past it.
    limit: Option<u64>,
    /// How many bytes the source had offered when it went past the limit
    /// (the refused chunk included: the bytes kept can be 0).
    over_limit: Option<u64>,
    /// Whether a write was refused because the cancel flag was set: then
    /// the payload has a hole and is never committed, even if the source
    /// ignored the error and the host cleared its flag since.
    cancelled: bool,
}

impl<'a> PayloadSink<'a> {
    pub(crate) fn new(
        durable: &'a Durable,
        temp: &'a mut TempFile,
        format: PayloadFormat,
        cancel: Option<Arc<AtomicBool>>,
        hashing: bool,
        limit: Option<u64>,
    ) -> Self {
        PayloadSink {
            durable,
            temp,
            hasher: hashing.then(blake3::Hasher::new),
            bytes: 0,
            cancel,
            json: (format == PayloadFormat::Json).then(JsonWorker::start),
            write_error: None,
            limit,
            over_limit: None,
            cancelled: false,
        }
    }

    /// The limit the source went past, if it did (then that is why it
    /// stopped, whatever it says), and how many bytes it had offered by
    /// then.
    pub(crate) fn exceeded_limit(&self) -> Option<(u64, u64)> {
        self.limit.zip(self.over_limit)
    }

    /// Whether the cancel flag stopped a write, or is set now.
    pub(crate) fn cancelled(&self) -> bool {
        self.cancelled || self.cancel_requested()
    }

    fn cancel_requested(&self) -> bool {
        self.cancel
            .as_ref()
            .is_some_and(|c| c.load(Ordering::Relaxed))
    }

    /// Bytes written so far.
    pub fn bytes_written(&self) -> u64 {
        self.bytes
    }

    /// Whether the JSON check already found an error in the bytes so far
    /// (then the rejection, not the source's own error, is the cause).
    pub(crate) fn rejected_early(&self) -> bool {
        self.json.as_ref().is_some_and(JsonWorker::failed)
    }

    /// The hash (`None` when it is computed elsewhere) and length, and the
    /// JSON check's verdict still to come (`None` for raw payloads). An
    /// empty payload is rejected here.
    pub(crate) fn finish(self) -> Result<(Option<ContentHash>, u64, Option<JsonVerdict>), String> {
        if self.bytes == 0 {
            return Err("the payload is empty (0 bytes)".into());
        }
        let hash = self
            .hasher
            .map(|hasher| ContentHash::from_blake3(hasher.finalize()));
        // The last, partial batch goes to the check now, so that it is
        // checked while the caller makes the temp file durable, not after.
        let json = self.json.map(|mut worker| {
            worker.flush();
            JsonVerdict(worker)
        });
        Ok((hash, self.bytes, json))
    }
}

impl Write for PayloadSink<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.cancelled || self.cancel_requested() {
            self.cancelled = true;
            // Not ErrorKind::Interrupted: `write_all` and `io::copy` retry those forever.
            return Err(io::Error::other("cancelled"));
        }
        if let Some(limit) = self.limit {
            let offered = self.bytes.saturating_add(buf.len() as u64);
            if offered > limit {
                self.over_limit = Some(offered);
                return Err(io::Error::other(format!(
                    "payload rejected: larger than the limit of {limit} bytes"
                )));
            }
        }
        if let Some(json) = &mut self.json {
            if !json.send(buf) {
                // Stop the source early: the payload can no longer be accepted.
                return Err(io::Error::other("payload rejected: not well-formed JSON"));
            }
        }
        if let Err(e) = self.durable.write(self.temp, buf) {
            let copy = io::Error::new(e.kind(), e.to_string());
            self.write_error.get_or_insert(e);
            return Err(copy);
        }
        if let Some(hasher) = &mut self.hasher {
            hasher.update(buf);
        }
        self.bytes += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The JSON check's verdict, which may still be computing on its thread:
/// the caller can make the temp file durable meanwhile.
pub(crate) struct JsonVerdict(JsonWorker);

impl JsonVerdict {
    /// Waits for the verdict; the error is the rejection reason.
    pub(crate) fn wait(self) -> Result<(), String> {
        self.0.verdict().map_err(not_json)
    }
}

/// Bytes batched per message to the checking thread.
const BATCH: usize = 256 * 1024;

/// Batches queued for the checking thread at most (the writer waits when
/// it is this far ahead).
const QUEUED: usize = 4;

/// The JSON check on its own thread (or inline, if no thread can be started).
struct JsonWorker {
    pending: Vec<u8>,
    mode: CheckMode,
    /// Batch buffers allocated so far (the rest were given back).
    allocated: usize,
}

enum CheckMode {
    Thread {
        chunks: SyncSender<Vec<u8>>,
        /// Checked batches coming back, emptied, to be filled again: a
        /// publish allocates (and page-faults) a handful of buffers, not one
        /// per 256 KiB.
        returned: Receiver<Vec<u8>>,
        failed: Arc<AtomicBool>,
        /// The verdict, sent just before the thread ends. Not a join: the
        /// thread's own teardown (glibc releasing its stack) need not be
        /// waited for, and the thread touches nothing of the store.
        verdict: Receiver<Result<(), String>>,
    },
    Inline(JsonCheck, Option<String>),
}

impl JsonWorker {
    fn start() -> Self {
        let (chunks, received) = sync_channel::<Vec<u8>>(QUEUED);
        // Room for every buffer in circulation (queued, being checked, being
        // filled), so that giving one back never waits.
        let (give_back, returned) = sync_channel::<Vec<u8>>(QUEUED + 2);
        let (send_verdict, verdict) = sync_channel::<Result<(), String>>(1);
        let failed = Arc::new(AtomicBool::new(false));
        let flag = failed.clone();
        let spawned = std::thread::Builder::new()
            .name("snapcache-json-check".into())
            .spawn(move || {
                let check = move || {
                    let mut check = JsonCheck::default();
                    for mut chunk in received {
                        if let Err(e) = check.feed(&chunk) {
                            flag.store(true, Ordering::Relaxed);
                            return Err(e);
                        }
                        chunk.clear();
                        // Full or closed: the buffer is dropped, nothing lost.
                        let _ = give_back.try_send(chunk);
                    }
                    check.finish()
                };
                // Room for one: never blocks. A panic drops the sender,
                // which the receiving side reports.
                let _ = send_verdict.try_send(check());
            });
        let mode = match spawned {
            // Detached: the verdict comes through its channel.
            Ok(_thread) => CheckMode::Thread {
                chunks,
                returned,
                failed,
                verdict,
            },
            Err(_) => CheckMode::Inline(JsonCheck::default(), None),
        };
        JsonWorker {
            pending: Vec::with_capacity(BATCH),
            mode,
            allocated: 1,
        }
    }

    fn failed(&self) -> bool {
        match &self.mode {
            CheckMode::Thread { failed, .. } => failed.load(Ordering::Relaxed),
            CheckMode::Inline(_, error) => error.is_some(),
        }
    }

    /// Queues bytes for checking; false once an error was found.
    fn send(&mut self, buf: &[u8]) -> bool {
        if self.failed() {
            return false;
        }
        self.pending.extend_from_slice(buf);
        if self.pending.len() >= BATCH {
            let next = self.empty_buffer();
            let batch = std::mem::replace(&mut self.pending, next);
            return self.dispatch(batch);
        }
        true
    }

    /// A buffer to fill next: one the checking thread gave back, else a new one.
    fn empty_buffer(&mut self) -> Vec<u8> {
        let given_back = match &self.mode {
            CheckMode::Thread { returned, .. } => returned.try_recv().ok(),
            // Inline (no thread could be started), a fresh one each time.
            CheckMode::Inline(..) => None,
        };
        given_back.unwrap_or_else(|| {
            self.allocated += 1;
            Vec::with_capacity(BATCH)
        })
    }

    fn dispatch(&mut self, batch: Vec<u8>) -> bool {
        match &mut self.mode {
            // A closed channel means the thread stopped at an error.
            CheckMode::Thread { chunks, .. } => chunks.send(batch).is_ok(),
            CheckMode::Inline(check, error) => match check.feed(&batch) {
                Ok(()) => true,
                Err(e) => {
                    *error = Some(e);
                    false
                }
            },
        }
    }

    /// Checks what is left and returns the verdict on the whole payload.
    /// Sends what is pending, however little, to the check.
    fn flush(&mut self) {
        let rest = std::mem::take(&mut self.pending);
        if !rest.is_empty() {
            // A refusal shows in the verdict: the thread stopped at an error.
            self.dispatch(rest);
        }
    }

    fn verdict(mut self) -> Result<(), String> {
        self.flush();
        match self.mode {
            CheckMode::Thread {
                chunks, verdict, ..
            } => {
                drop(chunks);
                verdict
                    .recv()
                    .unwrap_or_else(|_| Err("the JSON check failed unexpectedly".into()))
            }
            CheckMode::Inline(check, error) => match error {
                Some(e) => Err(e),
                None => check.finish(),
            },
        }
    }
}

/// How every "not JSON" rejection reason starts ([`crate::Hint::PublishRaw`]).
pub(crate) const NOT_JSON: &str = "the payload is not well-formed JSON";

/// The start of a rejection for size ([`crate::Hint::RaiseLimit`]).
pub(crate) const OVER_LIMIT: &str = "the payload is larger than the limit of";

pub(crate) fn not_json(reason: String) -> String {
    format!(
        "{NOT_JSON}: {reason} (only JSON is accepted unless the publish asks for raw bytes, PayloadFormat::Raw)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_payload_is_checked_through_a_handful_of_recycled_batch_buffers() {
        let mut worker = JsonWorker::start();
        assert!(matches!(worker.mode, CheckMode::Thread { .. }));
        // 16 MiB of JSON in 64 KiB writes: 64 batches.
        let element = b"{\"id\": 12345, \"name\": \"temurin\"},\n";
        let mut block = Vec::new();
        while block.len() + element.len() <= 64 * 1024 {
            block.extend_from_slice(element);
        }
        assert!(worker.send(b"["));
        let mut sent = 1;
        while sent < 16 * 1024 * 1024 {
            assert!(worker.send(&block));
            sent += block.len();
        }
        assert!(worker.send(b"0]"));
        let allocated = worker.allocated;
        assert_eq!(worker.verdict(), Ok(()));
        // Queued, being checked, being filled, and a little slack for the
        // moments the checker has not given one back yet.
        assert!(
            allocated <= QUEUED + 3,
            "{allocated} buffers for {} batches",
            sent / BATCH
        );
    }

    #[test]
    fn an_error_in_a_recycled_buffer_is_still_found() {
        let mut worker = JsonWorker::start();
        let mut ok = true;
        ok &= worker.send(b"[");
        for _ in 0..40 {
            ok &= worker.send(&[b' '; 64 * 1024]);
        }
        ok &= worker.send(b"1,,]");
        let verdict = worker.verdict();
        assert!(verdict.is_err(), "{ok} {verdict:?}");
    }
}
