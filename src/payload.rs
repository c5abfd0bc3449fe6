//! Taking in a payload: stream it into a temp file while hashing, then check it.
//!
//! Memory stays bounded whatever the payload size: bytes go through a fixed
//! buffer into the temp file and the hasher, and JSON is checked by a
//! streaming pass over the temp file that discards every value as it goes
//! (serde's `IgnoredAny`), never building the document in memory.

use std::io::{self, BufReader, Seek, SeekFrom, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::Deserialize;

use crate::durable::{Durable, TempFile};
use crate::hash::ContentHash;

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
    hasher: blake3::Hasher,
    bytes: u64,
    cancel: Option<Arc<AtomicBool>>,
    /// The first error of our own side (the temp file), kept so that a
    /// source that swallows it cannot hide a full disk.
    pub(crate) write_error: Option<io::Error>,
}

impl<'a> PayloadSink<'a> {
    pub(crate) fn new(
        durable: &'a Durable,
        temp: &'a mut TempFile,
        cancel: Option<Arc<AtomicBool>>,
    ) -> Self {
        PayloadSink {
            durable,
            temp,
            hasher: blake3::Hasher::new(),
            bytes: 0,
            cancel,
            write_error: None,
        }
    }

    /// Bytes written so far.
    pub fn bytes_written(&self) -> u64 {
        self.bytes
    }

    pub(crate) fn finish(self) -> (ContentHash, u64) {
        (ContentHash::from_blake3(self.hasher.finalize()), self.bytes)
    }
}

impl Write for PayloadSink<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self
            .cancel
            .as_ref()
            .is_some_and(|c| c.load(Ordering::Relaxed))
        {
            // Not ErrorKind::Interrupted: `write_all` and `io::copy` retry those forever.
            return Err(io::Error::other("cancelled"));
        }
        if let Err(e) = self.durable.write(self.temp, buf) {
            let copy = io::Error::new(e.kind(), e.to_string());
            self.write_error.get_or_insert(e);
            return Err(copy);
        }
        self.hasher.update(buf);
        self.bytes += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Checks that the temp file holds exactly one well-formed JSON value.
///
/// Returns the rejection reason (with line and column) on failure.
pub(crate) fn check_json(temp: &mut TempFile) -> io::Result<Result<(), String>> {
    let file = temp.file_mut();
    file.seek(SeekFrom::Start(0))?;
    let reader = BufReader::with_capacity(256 * 1024, &mut *file);
    let mut de = serde_json::Deserializer::from_reader(reader);
    let outcome = serde::de::IgnoredAny::deserialize(&mut de).and_then(|_| de.end());
    match outcome {
        Ok(()) => Ok(Ok(())),
        Err(e) if e.is_io() => Err(io::Error::other(e)),
        Err(e) => Ok(Err(format!(
            "the payload is not well-formed JSON: {e} (pass --raw, or PayloadFormat::Raw, to store arbitrary bytes)"
        ))),
    }
}
