//! Reader throughput and tail latency, idle versus while a writer publishes
//! continuously.
//!
//! Readers and the writer are separate processes (the bench re-executed in
//! hidden child modes), as in real use: every Kopi invocation is its own
//! reader process and a refresh runs in yet another process. Threads of one
//! process would also share its address-space lock, so one thread's large
//! allocations would stall the others' page faults, which says nothing
//! about the store. The writer publishes a freshly stamped payload in a
//! loop, each publish a full durable write; it starts before the readers
//! and stops after them, so the readers' whole window sees writes.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use snapcache::{PublishOptions, Store, StoreOptions};

use crate::contenders::Result;
use crate::payload::Payload;
use crate::stats::Samples;

/// One reader run.
#[derive(Debug, Clone)]
pub struct ReaderRun {
    /// Reader processes.
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

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

fn wait_until(t_ns: u128) {
    while now_ns() < t_ns {
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// Child side of a reader: from `start_ns` to `end_ns`, call
/// `read_current` in a loop; print one latency in ns per line.
pub fn child_reader(
    store_dir: &Path,
    expected_len: usize,
    start_ns: u128,
    end_ns: u128,
) -> Result<()> {
    let store = Store::open(StoreOptions::new(store_dir))?;
    wait_until(start_ns);
    let mut out = String::new();
    while now_ns() < end_ns {
        let t = Instant::now();
        let snap = store.read_current()?;
        let d = t.elapsed();
        if snap.data.len() != expected_len {
            return Err("reader saw a snapshot of the wrong size".into());
        }
        drop(snap);
        out.push_str(&d.as_nanos().to_string());
        out.push('\n');
    }
    print!("{out}");
    Ok(())
}

/// Child side of the writer: publish stamped copies of the payload file
/// until `end_ns`; print the number of publishes.
pub fn child_writer(
    store_dir: &Path,
    payload_file: &Path,
    stamp_base: u64,
    end_ns: u128,
) -> Result<()> {
    let mut payload = Payload::from_bytes(std::fs::read(payload_file)?)?;
    let store = Store::open(StoreOptions::new(store_dir))?;
    let opts = PublishOptions::default();
    let mut n = 0u64;
    while now_ns() < end_ns {
        n += 1;
        payload.stamp(stamp_base + n);
        store.publish_bytes(&payload.bytes, &opts)?;
    }
    println!("{n}");
    Ok(())
}

/// Run `readers` reader processes for `duration`, with or without a writer
/// process, against the store at `store_dir` (which must hold a current
/// snapshot of `payload_file`'s size).
pub fn run(
    bench_exe: &Path,
    store_dir: &Path,
    payload_file: &Path,
    readers: usize,
    with_writer: bool,
    duration: Duration,
    stamp_base: u64,
) -> Result<ReaderRun> {
    let expected = std::fs::metadata(payload_file)?.len();
    let start_ns = now_ns() + 250_000_000 + readers as u128 * 30_000_000;
    let end_ns = start_ns + duration.as_nanos();
    let writer = if with_writer {
        Some(
            Command::new(bench_exe)
                .arg("--child-writer")
                .arg(store_dir)
                .arg(payload_file)
                .arg(stamp_base.to_string())
                .arg((end_ns + 100_000_000).to_string())
                .stdout(Stdio::piped())
                .spawn()?,
        )
    } else {
        None
    };
    let mut children = Vec::new();
    for _ in 0..readers {
        children.push(
            Command::new(bench_exe)
                .arg("--child-reader")
                .arg(store_dir)
                .arg(expected.to_string())
                .arg(start_ns.to_string())
                .arg(end_ns.to_string())
                .stdout(Stdio::piped())
                .spawn()?,
        );
    }
    let mut latencies = Samples::new();
    for mut child in children {
        let out = child.stdout.take().ok_or("no reader stdout")?;
        for line in BufReader::new(out).lines() {
            latencies.push(Duration::from_nanos(line?.trim().parse()?));
        }
        let status = child.wait()?;
        if !status.success() {
            return Err(format!("reader process failed: {status}").into());
        }
    }
    let mut publishes = 0;
    if let Some(w) = writer {
        let out = w.wait_with_output()?;
        if !out.status.success() {
            return Err(format!("writer process failed: {}", out.status).into());
        }
        publishes = String::from_utf8(out.stdout)?.trim().parse()?;
    }
    Ok(ReaderRun {
        readers,
        with_writer,
        reads_per_sec: latencies.len() as f64 / duration.as_secs_f64(),
        latencies,
        publishes,
    })
}
