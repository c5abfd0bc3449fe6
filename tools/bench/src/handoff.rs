//! Writer-lock handoff latency between processes.
//!
//! The bench spawns N copies of itself in the hidden `--child-handoff` mode.
//! Each child opens the same store with a [`LockObserver`] and, after a
//! common start instant, publishes `count` unique payloads back to back.
//! For every publish it prints three wall-clock timestamps (ns since the
//! epoch, `CLOCK_REALTIME`, shared by all processes): when it called
//! `publish_bytes`, when the observer heard `acquired`, and when
//! `publish_bytes` returned (the lock guard is dropped just before that).
//!
//! The parent merges all records and sorts them by acquisition. Hold
//! intervals never overlap (the lock is exclusive), so for each consecutive
//! pair where the next writer was already waiting when the previous one
//! returned, `handoff = next.acquired - previous.returned`: the time the
//! lock sat free while somebody wanted it (release, wake-up or poll
//! interval, re-acquire, holder record).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use snapcache::{Backend, LockObserver, PublishOptions, Store, StoreOptions};

use crate::contenders::Result;
use crate::payload::Payload;
use crate::stats::Samples;

/// Records when the lock was acquired.
#[derive(Default)]
struct AcquireClock(Mutex<Option<u128>>);

impl LockObserver for AcquireClock {
    fn acquired(&self, _waited: Duration, _backend: Backend, _contended: bool) {
        if let Ok(mut slot) = self.0.lock() {
            *slot = Some(now_ns());
        }
    }
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// Child side: publish `count` payloads read from `payload_file`, starting
/// at `start_ns`, printing `call acquired returned` per publish.
pub fn child(
    store_dir: &Path,
    payload_file: &Path,
    id: u64,
    count: usize,
    start_ns: u128,
) -> Result<()> {
    let bytes = std::fs::read(payload_file)?;
    let mut payload = Payload::from_bytes(bytes)?;
    let clock = Arc::new(AcquireClock::default());
    let store = Store::open(StoreOptions::new(store_dir).lock_observer(clock.clone()))?;
    let opts = PublishOptions::default();
    while now_ns() < start_ns {
        std::thread::sleep(Duration::from_micros(200));
    }
    let mut lines = String::new();
    for i in 0..count {
        payload.stamp(id * 1_000_000 + i as u64);
        let call = now_ns();
        store.publish_bytes(&payload.bytes, &opts)?;
        let returned = now_ns();
        let acquired = clock
            .0
            .lock()
            .map_err(|_| "observer poisoned")?
            .take()
            .ok_or("the lock observer did not hear `acquired`")?;
        lines.push_str(&format!("{call} {acquired} {returned}\n"));
    }
    print!("{lines}");
    Ok(())
}

/// Result of one handoff run.
#[derive(Debug, Clone)]
pub struct HandoffRun {
    /// Contending processes.
    pub processes: usize,
    /// Contended handoff latencies.
    pub handoffs: Samples,
    /// Publishes in total.
    pub publishes: usize,
    /// Median time a publish held the lock.
    pub hold: Samples,
}

#[derive(Debug, Clone, Copy)]
struct Record {
    call: u128,
    acquired: u128,
    returned: u128,
}

/// Parent side: spawn `processes` children publishing `count` times each
/// into `store_dir` and compute the contended handoffs.
pub fn run(
    bench_exe: &Path,
    store_dir: &Path,
    payload_file: &Path,
    processes: usize,
    count: usize,
) -> Result<HandoffRun> {
    // Start everybody together, late enough for all children to be up.
    let start_ns = now_ns() + 300_000_000 + processes as u128 * 20_000_000;
    let mut children = Vec::new();
    for id in 0..processes {
        let child = Command::new(bench_exe)
            .arg("--child-handoff")
            .arg(store_dir)
            .arg(payload_file)
            .arg((id + 1).to_string())
            .arg(count.to_string())
            .arg(start_ns.to_string())
            .stdout(Stdio::piped())
            .spawn()?;
        children.push(child);
    }
    let mut records = Vec::new();
    for mut child in children {
        let out = child.stdout.take().ok_or("no child stdout")?;
        for line in BufReader::new(out).lines() {
            let line = line?;
            let v: Vec<u128> = line
                .split_whitespace()
                .map(str::parse)
                .collect::<std::result::Result<_, _>>()?;
            if let [call, acquired, returned] = v[..] {
                records.push(Record {
                    call,
                    acquired,
                    returned,
                });
            }
        }
        let status = child.wait()?;
        if !status.success() {
            return Err(format!("handoff child failed: {status}").into());
        }
    }
    if records.len() != processes * count {
        return Err(format!(
            "expected {} records, got {}",
            processes * count,
            records.len()
        )
        .into());
    }
    records.sort_by_key(|r| r.acquired);
    let mut handoffs = Samples::new();
    let mut hold = Samples::new();
    for pair in records.windows(2) {
        let (prev, next) = (pair[0], pair[1]);
        if next.acquired < prev.acquired || prev.acquired < prev.call {
            return Err("inconsistent lock timestamps".into());
        }
        // Contended: the next writer was already waiting when the lock
        // was released.
        if next.call < prev.returned {
            let gap = next.acquired.saturating_sub(prev.returned);
            handoffs.push(Duration::from_nanos(u64::try_from(gap).unwrap_or(u64::MAX)));
        }
    }
    for r in &records {
        hold.push(Duration::from_nanos(
            u64::try_from(r.returned.saturating_sub(r.acquired)).unwrap_or(u64::MAX),
        ));
    }
    Ok(HandoffRun {
        processes,
        handoffs,
        publishes: records.len(),
        hold,
    })
}
