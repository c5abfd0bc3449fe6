//! End-to-end CLI runs: `snapcache show` of a snapshot versus `cat` of the
//! same snapshot file, and `true` as the bare process-start cost. All three
//! write into a pipe that the bench drains, interleaved per iteration.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use crate::contenders::Result;
use crate::stats::Samples;

/// Find (building it if needed) the release `snapcache` binary: it lives
/// next to the bench's own executable (`<target>/release/`). The bench runs
/// `cargo build --release -p snapcache --bin snapcache` with that target
/// directory first, so it always measures the current sources.
pub fn snapcache_binary(explicit: Option<&Path>, build: bool) -> Result<PathBuf> {
    if let Some(p) = explicit {
        return Ok(p.to_path_buf());
    }
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .ok_or("the bench executable has no parent directory")?;
    let bin = dir.join(format!("snapcache{}", std::env::consts::EXE_SUFFIX));
    if build {
        let target_dir = dir
            .parent()
            .ok_or("the bench executable is not in <target>/<profile>/")?;
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../Cargo.toml");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        eprintln!(
            "building the snapcache CLI (cargo build --release -p snapcache --bin snapcache)…"
        );
        let status = Command::new(cargo)
            .args([
                "build",
                "--release",
                "-q",
                "-p",
                "snapcache",
                "--bin",
                "snapcache",
            ])
            .arg("--manifest-path")
            .arg(&manifest)
            .env("CARGO_TARGET_DIR", target_dir)
            .status()?;
        if !status.success() {
            return Err(format!("building the snapcache CLI failed ({status})").into());
        }
    }
    if !bin.is_file() {
        return Err(format!("no snapcache binary at {}", bin.display()).into());
    }
    Ok(bin)
}

/// Spawn `cmd`, drain its stdout, wait; return the number of bytes it
/// printed. Fails when the process fails.
pub fn run_drained(cmd: &mut Command) -> Result<usize> {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::null()).spawn()?;
    let mut n = 0usize;
    if let Some(mut out) = child.stdout.take() {
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let k = out.read(&mut buf)?;
            if k == 0 {
                break;
            }
            n += k;
        }
    }
    let status = child.wait()?;
    if !status.success() {
        return Err(format!("{cmd:?} failed: {status}").into());
    }
    Ok(n)
}

/// Latencies of the three commands.
#[derive(Debug, Clone)]
pub struct CliResult {
    /// `snapcache --store DIR show`.
    pub show: Samples,
    /// `cat <snapshot file>`.
    pub cat: Samples,
    /// `true`.
    pub true_: Samples,
    /// Size of the snapshot shown.
    pub bytes: usize,
    /// The payload size that was asked of the generator (label).
    pub requested: usize,
}

/// Time `snapcache show` vs `cat` vs `true`, interleaved, `iterations`
/// rounds after `warmup` rounds. `snapshot_file` must hold exactly what
/// `show` prints (`expected` bytes).
pub fn show_vs_cat(
    bin: &Path,
    store: &Path,
    snapshot_file: &Path,
    expected: usize,
    requested: usize,
    warmup: usize,
    iterations: usize,
) -> Result<CliResult> {
    let mut show = Samples::new();
    let mut cat = Samples::new();
    let mut true_ = Samples::new();
    for round in 0..warmup + iterations {
        for k in 0..3 {
            let which = (round + k) % 3;
            let mut cmd = match which {
                0 => {
                    let mut c = Command::new(bin);
                    c.arg("--store").arg(store).arg("--quiet").arg("show");
                    c
                }
                1 => {
                    let mut c = Command::new("cat");
                    c.arg(snapshot_file);
                    c
                }
                _ => Command::new("true"),
            };
            let t = Instant::now();
            let n = run_drained(&mut cmd)?;
            let d = t.elapsed();
            let want = if which == 2 { 0 } else { expected };
            if n != want {
                return Err(format!("{cmd:?} printed {n} bytes, expected {want}").into());
            }
            if round >= warmup {
                match which {
                    0 => show.push(d),
                    1 => cat.push(d),
                    _ => true_.push(d),
                }
            }
        }
    }
    Ok(CliResult {
        show,
        cat,
        true_,
        bytes: expected,
        requested,
    })
}
