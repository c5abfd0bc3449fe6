//! Taking in a payload: stream it into a temp file while hashing, then check it.
//!
//! Memory stays bounded whatever the payload size: bytes go through a fixed
//! buffer into the temp file, the hasher and (by default) the streaming JSON
//! check, all in one pass; the document is never built in memory.

use std::io::{self, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

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
    hasher: blake3::Hasher,
    bytes: u64,
    cancel: Option<Arc<AtomicBool>>,
    json: Option<JsonCheck>,
    /// Why the payload was rejected, once the JSON check found an error.
    pub(crate) rejected: Option<String>,
    /// The first error of our own side (the temp file), kept so that a
    /// source that swallows it cannot hide a full disk.
    pub(crate) write_error: Option<io::Error>,
}

impl<'a> PayloadSink<'a> {
    pub(crate) fn new(
        durable: &'a Durable,
        temp: &'a mut TempFile,
        format: PayloadFormat,
        cancel: Option<Arc<AtomicBool>>,
    ) -> Self {
        PayloadSink {
            durable,
            temp,
            hasher: blake3::Hasher::new(),
            bytes: 0,
            cancel,
            json: (format == PayloadFormat::Json).then(JsonCheck::default),
            rejected: None,
            write_error: None,
        }
    }

    /// Bytes written so far.
    pub fn bytes_written(&self) -> u64 {
        self.bytes
    }

    /// The hash and length, or why the payload is rejected.
    pub(crate) fn finish(self) -> Result<(ContentHash, u64), String> {
        if self.bytes == 0 {
            return Err("the payload is empty (0 bytes)".into());
        }
        if let Some(json) = self.json {
            json.finish().map_err(not_json)?;
        }
        Ok((ContentHash::from_blake3(self.hasher.finalize()), self.bytes))
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
        if let Some(json) = &mut self.json {
            if let Err(reason) = json.feed(buf) {
                // Stop the source early: the payload can no longer be accepted.
                self.rejected.get_or_insert(not_json(reason));
                return Err(io::Error::other("payload rejected"));
            }
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

fn not_json(reason: String) -> String {
    format!(
        "the payload is not well-formed JSON: {reason} (pass --raw, or PayloadFormat::Raw, to store arbitrary bytes)"
    )
}
