//! Interleaved latency runs: every iteration writes (then reads) the same
//! payload with every contender, in an order rotated per iteration, so slow
//! drifts of the machine (page cache, journal commits, other tenants) spread
//! evenly over the contenders instead of biasing one of them.

use std::time::Instant;

use crate::contenders::{Contender, Result};
use crate::payload::Payload;
use crate::stats::Samples;

/// Write and read latencies of one contender at one payload size.
#[derive(Debug, Clone)]
pub struct Measured {
    /// Contender name.
    pub name: &'static str,
    /// Write (publish) latencies.
    pub write: Samples,
    /// Read latencies.
    pub read: Samples,
    /// Untimed housekeeping between rounds (see
    /// [`Contender::after_iteration`]), recorded to explain costs only.
    pub cleanup: Samples,
}

/// Run `iterations` interleaved rounds (after `warmup` unrecorded ones) of
/// write-then-read for every contender on `payload`. Every round uses a
/// fresh stamp of the payload (unique bytes, same size); every read is
/// checked against what was written, outside the timed region.
pub fn run(
    contenders: &mut [Box<dyn Contender>],
    payload: &mut Payload,
    warmup: usize,
    iterations: usize,
    stamp_base: u64,
) -> Result<Vec<Measured>> {
    let n = contenders.len();
    let mut out: Vec<Measured> = contenders
        .iter()
        .map(|c| Measured {
            name: c.name(),
            write: Samples::new(),
            read: Samples::new(),
            cleanup: Samples::new(),
        })
        .collect();
    for round in 0..warmup + iterations {
        payload.stamp(stamp_base + round as u64);
        let record = round >= warmup;
        for k in 0..n {
            let i = (round + k) % n;
            let t = Instant::now();
            contenders[i].write(&payload.bytes)?;
            let d = t.elapsed();
            if record {
                out[i].write.push(d);
            }
        }
        for k in 0..n {
            let i = (round + k) % n;
            let t = Instant::now();
            let back = contenders[i].read()?;
            let d = t.elapsed();
            if back != payload.bytes {
                return Err(format!("{}: read back different bytes", contenders[i].name()).into());
            }
            drop(back);
            if record {
                out[i].read.push(d);
            }
        }
        for (i, c) in contenders.iter_mut().enumerate() {
            let t = Instant::now();
            c.after_iteration()?;
            if record {
                out[i].cleanup.push(t.elapsed());
            }
        }
    }
    Ok(out)
}
