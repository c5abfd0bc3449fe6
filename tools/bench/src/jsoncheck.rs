//! The JSON check's throughput against `serde_json::from_slice::<IgnoredAny>`
//! on the same Kopi payloads, pretty (as Kopi writes them) and compact.
//! The check is fed in 256 KiB chunks, as a publish feeds it. Its first
//! stages are timed on their own too (`snapcache::json_check_stages`), to
//! show what its walk over the tokens costs.

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
    /// The check's classification of every 64-byte block alone (string
    /// spans and token starts, no token looked at), median of the rounds.
    pub classify: Duration,
    /// That and a load of every token's first byte: the least a check that
    /// steps from token to token does, median of the rounds.
    pub visit: Duration,
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
        let mut classify = Samples::new();
        let mut visit = Samples::new();
        for _ in 0..rounds {
            for (visiting, samples) in [(false, &mut classify), (true, &mut visit)] {
                let t = Instant::now();
                std::hint::black_box(snapcache::json_check_stages(
                    std::hint::black_box(bytes),
                    visiting,
                ));
                samples.push(t.elapsed());
            }
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
            classify: classify.median(),
            visit: visit.median(),
        });
    }
    Ok(out)
}
