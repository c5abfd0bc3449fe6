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
    /// Contending processes per round.
    pub processes: usize,
    /// Rounds (each round starts `processes` fresh processes together).
    pub rounds: usize,
    /// Contended handoff latencies.
    pub handoffs: Samples,
    /// Publishes in total.
    pub publishes: usize,
    /// How long each publish held the lock.
    pub hold: Samples,
}

#[derive(Debug, Clone, Copy)]
struct Record {
    call: u128,
    acquired: u128,
    returned: u128,
}

/// Parent side: `rounds` times, start `processes` children together, each
/// doing one publish into `store_dir` (like concurrent `snapcache refresh`
/// runs), and collect the contended handoffs.
pub fn run(
    bench_exe: &Path,
    store_dir: &Path,
    payload_file: &Path,
    processes: usize,
    rounds: usize,
) -> Result<HandoffRun> {
    let mut handoffs = Samples::new();
    let mut hold = Samples::new();
    let mut publishes = 0;
    for round in 0..rounds {
        let records = one_round(bench_exe, store_dir, payload_file, processes, round)?;
        publishes += records.len();
        for d in contended_handoffs(&records) {
            handoffs.push(d);
        }
        for r in &records {
            hold.push(ns(r.returned.saturating_sub(r.acquired)));
        }
    }
    Ok(HandoffRun {
        processes,
        rounds,
        handoffs,
        publishes,
        hold,
    })
}

fn ns(n: u128) -> Duration {
    Duration::from_nanos(u64::try_from(n).unwrap_or(u64::MAX))
}

/// Handoffs of records sorted by acquisition: for each consecutive pair
/// where the next writer was already waiting (it called before the previous
/// one returned), the time from that return to the next acquisition.
fn contended_handoffs(records: &[Record]) -> Vec<Duration> {
    records
        .windows(2)
        .filter(|pair| pair[1].call < pair[0].returned)
        .map(|pair| ns(pair[1].acquired.saturating_sub(pair[0].returned)))
        .collect()
}

fn one_round(
    bench_exe: &Path,
    store_dir: &Path,
    payload_file: &Path,
    processes: usize,
    round: usize,
) -> Result<Vec<Record>> {
    // Start everybody together, late enough for all children to be up.
    let start_ns = now_ns() + 60_000_000 + processes as u128 * 10_000_000;
    let mut children = Vec::new();
    for p in 0..processes {
        let id = (round * processes + p + 1) as u64;
        let child = Command::new(bench_exe)
            .arg("--child-handoff")
            .arg(store_dir)
            .arg(payload_file)
            .arg(id.to_string())
            .arg("1")
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
    if records.len() != processes {
        return Err(format!("expected {processes} records, got {}", records.len()).into());
    }
    if records.iter().any(|r| r.call < start_ns) {
        return Err(
            "a child started publishing before the common start (machine too slow?)".into(),
        );
    }
    records.sort_by_key(|r| r.acquired);
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(call: u128, acquired: u128, returned: u128) -> Record {
        Record {
            call,
            acquired,
            returned,
        }
    }

    #[test]
    fn only_contended_pairs_count() {
        let records = [
            r(0, 10, 100),    // first holder
            r(5, 103, 200),   // waited since 5: handoff 3
            r(300, 301, 400), // arrived after the release: not a handoff
            r(350, 450, 500), // waited: handoff 50
            r(360, 499, 600), // acquired before the return was observed: 0
        ];
        let got: Vec<u128> = contended_handoffs(&records)
            .iter()
            .map(|d| d.as_nanos())
            .collect();
        assert_eq!(got, [3, 50, 0]);
    }
}
