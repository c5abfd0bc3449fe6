//! The JSON check's throughput against `serde_json::from_slice::<IgnoredAny>`
//! on the same Kopi payloads, pretty (as Kopi writes them) and compact.
//! The check is fed in 256 KiB chunks, as a publish feeds it.

use std::time::{Duration, Instant};

use crate::contenders::Result;
use crate::stats::Samples;

/// Chunk size of the publish path's checker batches.
const CHUNK: usize = 256 * 1024;

/// One payload's figures.
#[derive(Debug, Clone)]
pub struct JsonRun {
    /// "pretty" or "compact".
    pub style: &'static str,
    /// Bytes of the payload.
    pub bytes: usize,
    /// The streaming check, median of the rounds.
    pub check: Duration,
    /// serde_json's `from_slice::<IgnoredAny>`, median of the rounds.
    pub serde: Duration,
}

impl JsonRun {
    /// GB/s (10^9 bytes per second) of a duration over this payload.
    pub fn gbps(&self, d: Duration) -> f64 {
        self.bytes as f64 / d.as_secs_f64().max(1e-12) / 1e9
    }

    /// Check throughput ÷ serde_json throughput.
    pub fn speedup(&self) -> f64 {
        self.serde.as_secs_f64() / self.check.as_secs_f64().max(1e-12)
    }
}

fn check_streaming(bytes: &[u8]) -> std::result::Result<(), String> {
    let mut check = snapcache::JsonCheck::default();
    for chunk in bytes.chunks(CHUNK) {
        check.feed(chunk)?;
    }
    check.finish()
}

/// Measures both on `pretty` and on its compact form, interleaved.
pub fn run(pretty: &[u8], rounds: usize) -> Result<Vec<JsonRun>> {
    let value: serde_json::Value = serde_json::from_slice(pretty)?;
    let compact = serde_json::to_vec(&value)?;
    let mut out = Vec::new();
    for (style, bytes) in [("pretty", pretty), ("compact", &compact[..])] {
        check_streaming(bytes)?;
        let mut check = Samples::new();
        let mut serde = Samples::new();
        for _ in 0..rounds {
            let t = Instant::now();
            std::hint::black_box(check_streaming(std::hint::black_box(bytes)))?;
            check.push(t.elapsed());
            let t = Instant::now();
            std::hint::black_box(serde_json::from_slice::<serde::de::IgnoredAny>(
                std::hint::black_box(bytes),
            ))?;
            serde.push(t.elapsed());
        }
        out.push(JsonRun {
            style,
            bytes: bytes.len(),
            check: check.median(),
            serde: serde.median(),
        });
    }
    Ok(out)
}
