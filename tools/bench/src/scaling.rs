//! How the cost of each store operation grows: with the payload size, with
//! the number of retained generations and with the number of leftover files
//! in `snapshots/`. Library calls on fresh stores, medians of a few calls;
//! the log-log slope of every series says whether it grows faster than
//! linearly (slope > 1).

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use snapcache::{GcOptions, PublishOptions, Store, StoreOptions};

use crate::contenders::Result;
use crate::payload::Payload;
use crate::stats::Samples;

/// The operations every axis measures.
pub const OPS: [&str; 5] = ["publish", "read", "history", "verify", "gc"];

/// One axis: x values and, per operation, the median time at each x.
#[derive(Debug, Clone)]
pub struct Axis {
    /// What x is ("payload bytes", ...).
    pub name: &'static str,
    /// Unit label of x for tables.
    pub unit: &'static str,
    /// The x values.
    pub xs: Vec<u64>,
    /// Per operation (in [`OPS`] order), the median at each x.
    pub series: Vec<(&'static str, Vec<Duration>)>,
    /// What the measurement does, for the report.
    pub method: &'static str,
}

impl Axis {
    fn new(name: &'static str, unit: &'static str, method: &'static str) -> Self {
        Self {
            name,
            unit,
            xs: Vec::new(),
            series: OPS.iter().map(|op| (*op, Vec::new())).collect(),
            method,
        }
    }

    fn push(&mut self, x: u64, times: [Duration; 5]) {
        self.xs.push(x);
        for (s, t) in self.series.iter_mut().zip(times) {
            s.1.push(t);
        }
    }
}

/// Least-squares slope of ln(y) over ln(x): 1 is linear, 2 quadratic, 0
/// flat. `None` with fewer than two usable points.
pub fn loglog_slope(xs: &[u64], ys: &[Duration]) -> Option<f64> {
    let pts: Vec<(f64, f64)> = xs
        .iter()
        .zip(ys)
        .filter(|(x, y)| **x > 0 && !y.is_zero())
        .map(|(x, y)| ((*x as f64).ln(), y.as_secs_f64().ln()))
        .collect();
    if pts.len() < 2 {
        return None;
    }
    let n = pts.len() as f64;
    let mx = pts.iter().map(|p| p.0).sum::<f64>() / n;
    let my = pts.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = pts.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = pts.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    (sxx > 0.0).then(|| sxy / sxx)
}

fn time<T>(f: impl FnOnce() -> Result<T>) -> Result<(Duration, T)> {
    let t = Instant::now();
    let v = f()?;
    Ok((t.elapsed(), v))
}

fn median(mut f: impl FnMut() -> Result<Duration>, n: usize) -> Result<Duration> {
    let mut s = Samples::new();
    for _ in 0..n.max(1) {
        s.push(f()?);
    }
    Ok(s.median())
}

/// read, history and verify of a store, `n` times each (medians).
fn reads(store: &Store, n: usize) -> Result<[Duration; 3]> {
    let read = median(|| Ok(time(|| Ok(store.read_current()?))?.0), n)?;
    let history = median(|| Ok(time(|| Ok(store.history()?))?.0), n)?;
    let verify = median(
        || {
            let (d, report) = time(|| Ok(store.verify()?))?;
            if !report.problems.is_empty() {
                return Err(format!("verify found problems: {:?}", report.problems).into());
            }
            Ok(d)
        },
        n,
    )?;
    Ok([read, history, verify])
}

/// Payload size axis: per size a fresh store; `rounds` publishes of a
/// freshly stamped payload (median), then read/history/verify (the store
/// holds `rounds` generations), then `gc --keep 1`, which removes the
/// snapshots of all but two generations (rounds ≥ 3: at least one of the
/// payload's size).
pub fn payload_axis(dir: &Path, sizes: &[(usize, usize)]) -> Result<Axis> {
    let mut axis = Axis::new(
        "payload size",
        "bytes",
        "fresh store per size; publish = median of the rounds' `publish_bytes` (JSON checked, each a new generation); \
         read = `read_current`; verify hashes every retained snapshot (as many as rounds); gc = `gc` with keep 1 \
         removing the snapshots of the generations beyond two",
    );
    for &(size, rounds) in sizes {
        let rounds = rounds.max(3);
        let root = dir.join(format!("size-{size}"));
        let store = Store::open(StoreOptions::new(&root))?;
        let mut payload = Payload::generate(size, 600 + size as u64)?;
        let mut publish = Samples::new();
        for round in 0..rounds {
            payload.stamp(round as u64);
            let (d, o) =
                time(|| Ok(store.publish_bytes(&payload.bytes, &PublishOptions::default())?))?;
            if !o.changed {
                return Err("scaling: a publish did not change the store".into());
            }
            publish.push(d);
        }
        let n = if size >= 64 << 20 { 1 } else { 3 };
        let [read, history, verify] = reads(&store, n)?;
        let (gc, report) = time(|| Ok(store.gc(&GcOptions::default().keep(1))?))?;
        if report.removed_snapshots != rounds - 2 {
            return Err(format!(
                "scaling: gc removed {} snapshots, expected {}",
                report.removed_snapshots,
                rounds - 2
            )
            .into());
        }
        axis.push(
            payload.len() as u64,
            [publish.median(), read, history, verify, gc],
        );
        drop(store);
        let _ = fs::remove_dir_all(&root);
    }
    Ok(axis)
}

/// Retained generations axis (64 KiB payloads, `keep` = the count − 1, at
/// most `MAX_KEEP`): publish that many generations, then time one more
/// publish (which drops the oldest), read, history, verify (hashes every
/// retained snapshot) and a `gc` with nothing to remove.
pub fn generations_axis(dir: &Path, counts: &[usize]) -> Result<Axis> {
    let mut axis = Axis::new(
        "retained generations",
        "generations",
        "64 KiB payloads; keep = count − 1 so the store retains exactly `count` generations; publish = the next \
         publish (it drops the oldest); verify hashes every retained snapshot; gc has nothing to remove",
    );
    for &count in counts {
        let root = dir.join(format!("gens-{count}"));
        let store = Store::open(StoreOptions::new(&root).keep(count.saturating_sub(1).max(1)))?;
        let mut payload = Payload::generate(64 << 10, 7)?;
        for g in 0..count {
            payload.stamp(g as u64);
            store.publish_bytes(&payload.bytes, &PublishOptions::default())?;
        }
        let mut publish = Samples::new();
        for g in 0..3 {
            payload.stamp((count + g) as u64);
            publish.push(
                time(|| Ok(store.publish_bytes(&payload.bytes, &PublishOptions::default())?))?.0,
            );
        }
        let retained = store.history()?.len();
        if retained != count.max(2) {
            return Err(
                format!("scaling: {retained} generations retained, expected {count}").into(),
            );
        }
        let [read, history, verify] = reads(&store, 3)?;
        let gc = median(|| Ok(time(|| Ok(store.gc(&GcOptions::default())?))?.0), 3)?;
        axis.push(
            retained as u64,
            [publish.median(), read, history, verify, gc],
        );
        drop(store);
        let _ = fs::remove_dir_all(&root);
    }
    Ok(axis)
}

/// Plant `n` unreferenced 1 KiB snapshot files (64 lowercase hex names).
fn plant(snapshots: &Path, n: usize, salt: u64) -> Result<()> {
    let filler = [b'x'; 1024];
    for i in 0..n {
        let name = blake3::hash(format!("leftover-{salt}-{i}").as_bytes()).to_hex();
        fs::write(snapshots.join(name.as_str()), filler)?;
    }
    Ok(())
}

/// Leftover files axis: a store with one 64 KiB generation and `n`
/// unreferenced 1 KiB snapshot files. read, history and verify (which lists
/// them as reclaimable) with the files present; then the publish that
/// sweeps them all; then the files are planted again and `gc` removes them.
pub fn leftovers_axis(dir: &Path, counts: &[usize]) -> Result<Axis> {
    let mut axis = Axis::new(
        "leftover files",
        "files",
        "one 64 KiB generation plus n unreferenced 1 KiB files in snapshots/ (flushed with sync first); \
         verify lists them; publish is the write whose opening sweep removes them; gc removes a fresh set",
    );
    for &n in counts {
        let root = dir.join(format!("left-{n}"));
        let store = Store::open(StoreOptions::new(&root))?;
        let mut payload = Payload::generate(64 << 10, 9)?;
        store.publish_bytes(&payload.bytes, &PublishOptions::default())?;
        let snapshots = root.join("snapshots");
        plant(&snapshots, n, 1)?;
        sync()?;
        let [read, history, verify] = reads(&store, 3)?;
        if store.verify()?.reclaimable.len() != n {
            return Err("scaling: verify does not list every leftover".into());
        }
        payload.stamp(1);
        let publish =
            time(|| Ok(store.publish_bytes(&payload.bytes, &PublishOptions::default())?))?.0;
        plant(&snapshots, n, 2)?;
        sync()?;
        let (gc, report) = time(|| Ok(store.gc(&GcOptions::default())?))?;
        if report.removed_snapshots != n {
            return Err(format!("scaling: gc removed {} of {n}", report.removed_snapshots).into());
        }
        axis.push(n as u64, [publish, read, history, verify, gc]);
        drop(store);
        let _ = fs::remove_dir_all(&root);
    }
    Ok(axis)
}

/// Flush everything to disk (`sync(1)`), so that timed unlinks do not also
/// pay for the planted files' write-back.
fn sync() -> Result<()> {
    let status = std::process::Command::new("sync").status()?;
    if !status.success() {
        return Err(format!("sync failed: {status}").into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slopes() {
        let xs = [1u64, 10, 100, 1000];
        let lin: Vec<Duration> = xs.iter().map(|x| Duration::from_micros(5 * x)).collect();
        let quad: Vec<Duration> = xs.iter().map(|x| Duration::from_micros(x * x)).collect();
        let flat = vec![Duration::from_millis(3); 4];
        assert!((loglog_slope(&xs, &lin).unwrap_or(0.0) - 1.0).abs() < 1e-6);
        assert!((loglog_slope(&xs, &quad).unwrap_or(0.0) - 2.0).abs() < 1e-6);
        assert!(loglog_slope(&xs, &flat).unwrap_or(1.0).abs() < 1e-6);
        assert_eq!(loglog_slope(&[1], &[Duration::from_millis(1)]), None);
    }
}
