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

#[cfg(test)]
mod tests {
    use super::*;

    /// Keeps the last write in memory; records the order of calls.
    struct Mem {
        name: &'static str,
        data: Vec<u8>,
        log: std::rc::Rc<std::cell::RefCell<Vec<&'static str>>>,
    }

    impl Contender for Mem {
        fn name(&self) -> &'static str {
            self.name
        }
        fn write(&mut self, payload: &[u8]) -> Result<()> {
            self.log.borrow_mut().push(self.name);
            self.data = payload.to_vec();
            Ok(())
        }
        fn read(&mut self) -> Result<Vec<u8>> {
            Ok(self.data.clone())
        }
    }

    #[test]
    fn rounds_rotate_and_record_after_warmup() -> Result<()> {
        let log = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
        let mut list: Vec<Box<dyn Contender>> = ["a", "b", "c"]
            .into_iter()
            .map(|name| {
                Box::new(Mem {
                    name,
                    data: Vec::new(),
                    log: log.clone(),
                }) as Box<dyn Contender>
            })
            .collect();
        let mut payload = Payload::generate(16 * 1024, 1)?;
        let out = run(&mut list, &mut payload, 1, 3, 0)?;
        assert_eq!(out.len(), 3);
        assert!(out.iter().all(|m| m.write.len() == 3 && m.read.len() == 3));
        let order: Vec<&str> = log.borrow().clone();
        assert_eq!(
            order,
            ["a", "b", "c", "b", "c", "a", "c", "a", "b", "a", "b", "c"]
        );
        Ok(())
    }

    #[test]
    fn a_wrong_read_back_is_an_error() -> Result<()> {
        struct Liar;
        impl Contender for Liar {
            fn name(&self) -> &'static str {
                "liar"
            }
            fn write(&mut self, _: &[u8]) -> Result<()> {
                Ok(())
            }
            fn read(&mut self) -> Result<Vec<u8>> {
                Ok(b"{}".to_vec())
            }
        }
        let mut list: Vec<Box<dyn Contender>> = vec![Box::new(Liar)];
        let mut payload = Payload::generate(16 * 1024, 1)?;
        assert!(run(&mut list, &mut payload, 0, 1, 0).is_err());
        Ok(())
    }
}
