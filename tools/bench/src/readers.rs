//! Reader throughput and tail latency, idle versus while a writer publishes
//! continuously. Readers are threads sharing one `Store` (reads take no
//! lock, so threads and processes behave alike as far as the store goes);
//! the writer is another thread publishing a freshly stamped payload in a
//! loop, each publish being a full durable write.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use snapcache::{PublishOptions, Store};

use crate::contenders::{BoxError, Result};
use crate::payload::Payload;
use crate::stats::Samples;

/// One reader run.
#[derive(Debug, Clone)]
pub struct ReaderRun {
    /// Reader threads.
    pub readers: usize,
    /// Whether a writer was publishing meanwhile.
    pub with_writer: bool,
    /// All read latencies of all readers.
    pub latencies: Samples,
    /// Reads completed per second (all readers together).
    pub reads_per_sec: f64,
    /// Publishes completed by the writer during the run.
    pub publishes: u64,
}

/// Run `readers` reader threads for `duration`, with or without a writer.
pub fn run(
    store: &Store,
    payload: &Payload,
    readers: usize,
    with_writer: bool,
    duration: Duration,
    stamp_base: u64,
) -> Result<ReaderRun> {
    let stop = Arc::new(AtomicBool::new(false));
    let publishes = Arc::new(AtomicU64::new(0));
    let expected_len = payload.len();
    let results = thread::scope(|s| -> Result<Vec<Samples>> {
        let writer = with_writer.then(|| {
            let stop = stop.clone();
            let publishes = publishes.clone();
            let mut payload = payload.clone();
            let store = store.clone();
            s.spawn(move || -> std::result::Result<(), BoxError> {
                let opts = PublishOptions::default();
                let mut n = stamp_base;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    payload.stamp(n);
                    store.publish_bytes(&payload.bytes, &opts)?;
                    publishes.fetch_add(1, Ordering::Relaxed);
                }
                Ok(())
            })
        });
        let handles: Vec<_> = (0..readers)
            .map(|_| {
                let stop = stop.clone();
                let store = store.clone();
                s.spawn(move || -> std::result::Result<Samples, BoxError> {
                    let mut samples = Samples::new();
                    while !stop.load(Ordering::Relaxed) {
                        let t = Instant::now();
                        let snap = store.read_current()?;
                        samples.push(t.elapsed());
                        if snap.data.len() != expected_len {
                            return Err("reader saw a snapshot of the wrong size".into());
                        }
                    }
                    Ok(samples)
                })
            })
            .collect();
        thread::sleep(duration);
        stop.store(true, Ordering::Relaxed);
        let mut all = Vec::new();
        for h in handles {
            all.push(h.join().map_err(|_| "reader thread panicked")??);
        }
        if let Some(w) = writer {
            w.join().map_err(|_| "writer thread panicked")??;
        }
        Ok(all)
    })?;
    let mut latencies = Samples::new();
    for r in &results {
        latencies.extend(r);
    }
    Ok(ReaderRun {
        readers,
        with_writer,
        reads_per_sec: latencies.len() as f64 / duration.as_secs_f64(),
        latencies,
        publishes: publishes.load(Ordering::Relaxed),
    })
}
