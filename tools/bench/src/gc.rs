//! Garbage collection time: plant unreferenced snapshot files next to a
//! real generation, then time `Store::gc`.

use std::fs;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use snapcache::{GcOptions, PublishOptions, Store, StoreOptions};

use crate::contenders::Result;

/// One gc measurement.
#[derive(Debug, Clone)]
pub struct GcRun {
    /// Unreferenced snapshots planted.
    pub planted: usize,
    /// Wall time of `Store::gc`.
    pub elapsed: Duration,
    /// Snapshots the report says it removed.
    pub removed: usize,
    /// Size of each planted file.
    pub file_size: usize,
    /// CPU time (user + system) of the gc call, 10 ms resolution.
    pub cpu: Option<Duration>,
}

/// Publish one real generation into a fresh store at `root`, plant
/// `planted` unreferenced snapshot files of `file_size` bytes, named as 64
/// lowercase hex digits, in `snapshots/`, and time `gc` with default
/// options.
pub fn run(root: &Path, payload: &[u8], planted: usize, file_size: usize) -> Result<GcRun> {
    let store = Store::open(StoreOptions::new(root))?;
    store.publish_bytes(payload, &PublishOptions::default())?;
    let dir = root.join("snapshots");
    if !dir.is_dir() {
        return Err(format!("{} is not the snapshot directory", dir.display()).into());
    }
    let filler = vec![b'x'; file_size];
    for i in 0..planted {
        let name = blake3::hash(format!("planted-{i}").as_bytes()).to_hex();
        let mut f = fs::File::create(dir.join(name.as_str()))?;
        f.write_all(&filler)?;
    }
    // Let the planted files reach the disk first, so gc is not also paying
    // for their write-back.
    sync_everything(&dir)?;
    let cpu_before = thread_cpu();
    let t = Instant::now();
    let report = store.gc(&GcOptions::default())?;
    let elapsed = t.elapsed();
    let cpu = thread_cpu()
        .zip(cpu_before)
        .map(|(a, b)| a.saturating_sub(b));
    if store.read_current()?.data != payload {
        return Err("gc damaged the current generation".into());
    }
    Ok(GcRun {
        planted,
        elapsed,
        removed: report.removed_snapshots,
        file_size,
        cpu,
    })
}

/// User + system CPU time of the calling thread, from
/// `/proc/thread-self/stat` (clock ticks, `USER_HZ` = 100 on Linux).
fn thread_cpu() -> Option<Duration> {
    let stat = fs::read_to_string("/proc/thread-self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are
    // fields 14 and 15 of the whole line.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

/// `sync(1)` without a libc dependency: run the `sync` command (falls back
/// to an fsync of the directory).
fn sync_everything(dir: &Path) -> Result<()> {
    match std::process::Command::new("sync").status() {
        Ok(s) if s.success() => Ok(()),
        _ => Ok(fs::File::open(dir)?.sync_all()?),
    }
}
