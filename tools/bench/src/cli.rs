//! Whole-process runs: the `snapcache` CLI against the bench's `floor`
//! binary (the same durable sequence, nothing else; `src/bin/floor.rs`),
//! `cat` and `true`.
//!
//! - `snapcache refresh --from F` (JSON checked) and `--raw` against
//!   `floor publish STORE F`, each round on a freshly stamped payload file;
//! - `snapcache show` against `cat` of the very same snapshot file, the
//!   floor's verified read (`floor read`: whole file, blake3, stdout) and
//!   `true` (the bare cost of starting a process). All write into a pipe
//!   that the bench drains.
//!
//! Commands are interleaved, in an order rotated every round.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use crate::contenders::Result;
use crate::payload::Payload;
use crate::stats::Samples;

/// Find (building it if needed) the release binary `bin` of `package`: it
/// lives next to the bench's own executable (`<target>/release/`). The
/// bench runs `cargo build --release -p PACKAGE --bin BIN` with that target
/// directory first, so it always measures the current sources.
pub fn built_binary(package: &str, bin: &str, build: bool) -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .ok_or("the bench executable has no parent directory")?;
    let path = dir.join(format!("{bin}{}", std::env::consts::EXE_SUFFIX));
    if build {
        let target_dir = dir
            .parent()
            .ok_or("the bench executable is not in <target>/<profile>/")?;
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../Cargo.toml");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        eprintln!("building {bin} (cargo build --release -p {package} --bin {bin})…");
        let status = Command::new(cargo)
            .args(["build", "--release", "-q", "-p", package, "--bin", bin])
            .arg("--manifest-path")
            .arg(&manifest)
            .env("CARGO_TARGET_DIR", target_dir)
            .status()?;
        if !status.success() {
            return Err(format!("building {bin} failed ({status})").into());
        }
    }
    if !path.is_file() {
        return Err(format!("no {bin} binary at {}", path.display()).into());
    }
    Ok(path)
}

/// The `snapcache` CLI (`explicit` if given, else built from the sources).
pub fn snapcache_binary(explicit: Option<&Path>, build: bool) -> Result<PathBuf> {
    match explicit {
        Some(p) => Ok(p.to_path_buf()),
        None => built_binary("snapcache", "snapcache", build),
    }
}

/// The bench's whole-process floor (`src/bin/floor.rs`).
pub fn floor_binary(build: bool) -> Result<PathBuf> {
    built_binary("snapcache-bench", "floor", build)
}

/// A command for a whole-process measurement: without the bench's own
/// `GLIBC_TUNABLES` (its fixed mmap threshold, see `main.rs`), so that the
/// CLI, the floor, `cat` and `true` run with the allocator a user's shell
/// gives them (the fixed threshold makes every 256 KiB buffer a fresh,
/// page-faulted mapping).
pub fn command(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut c = Command::new(program);
    c.env_remove("GLIBC_TUNABLES");
    c
}

/// The capacity the bench gives the pipe it drains (Linux's default limit
/// for an unprivileged process, `/proc/sys/fs/pipe-max-size`).
const DRAIN_PIPE: usize = 1024 * 1024;

/// Spawn `cmd`, drain its stdout, wait; return the number of bytes it
/// printed. Fails when the process fails.
///
/// The pipe is widened to [`DRAIN_PIPE`] (from the default 64 KiB): with 64
/// KiB an 8 MiB output fills it 128 times, and every time the writer sleeps
/// until the bench is scheduled to drain it, which on a loaded two-core
/// machine made `cat`, `floor read` and `snapcache show` alike take tens of
/// milliseconds, the scheduler's time rather than theirs. Every command
/// drained here gets the same pipe.
pub fn run_drained(cmd: &mut Command) -> Result<usize> {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::null()).spawn()?;
    let mut n = 0usize;
    if let Some(mut out) = child.stdout.take() {
        // Best effort: a kernel that refuses keeps the default pipe.
        #[cfg(target_os = "linux")]
        let _ = rustix::pipe::fcntl_setpipe_size(&out, DRAIN_PIPE);
        let mut buf = vec![0u8; DRAIN_PIPE];
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

/// Run `cmd` to completion with no output; fails when it fails.
fn run_quiet(cmd: &mut Command) -> Result<()> {
    let out = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).output()?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?} failed: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )
        .into());
    }
    Ok(())
}

/// `show` against `cat`, the floor's verified read and `true`, at one size.
#[derive(Debug, Clone)]
pub struct ShowRun {
    /// `snapcache --store DIR show`.
    pub show: Samples,
    /// `cat <snapshot file>`.
    pub cat: Samples,
    /// `floor read STORE`.
    pub floor: Samples,
    /// `true`.
    pub true_: Samples,
    /// Size of the snapshot shown.
    pub bytes: usize,
    /// The payload size that was asked of the generator (label).
    pub requested: usize,
}

/// Time `snapcache show` vs `cat` vs `floor read` vs `true`, interleaved,
/// `iterations` rounds after `warmup` rounds. `store` and `floor_store`
/// must both hold `payload` as their current snapshot, `snapshot_file` is
/// snapcache's copy of it.
#[allow(clippy::too_many_arguments)]
pub fn show_run(
    bin: &Path,
    floor_bin: &Path,
    store: &Path,
    floor_store: &Path,
    snapshot_file: &Path,
    expected: usize,
    requested: usize,
    warmup: usize,
    iterations: usize,
) -> Result<ShowRun> {
    let mut samples = [
        Samples::new(),
        Samples::new(),
        Samples::new(),
        Samples::new(),
    ];
    for round in 0..warmup + iterations {
        for k in 0..4 {
            let which = (round + k) % 4;
            let mut cmd = match which {
                0 => {
                    let mut c = command(bin);
                    c.arg("--store").arg(store).arg("--quiet").arg("show");
                    c
                }
                1 => {
                    let mut c = command("cat");
                    c.arg(snapshot_file);
                    c
                }
                2 => {
                    let mut c = command(floor_bin);
                    c.arg("read").arg(floor_store);
                    c
                }
                _ => command("true"),
            };
            let t = Instant::now();
            let n = run_drained(&mut cmd)?;
            let d = t.elapsed();
            let want = if which == 3 { 0 } else { expected };
            if n != want {
                return Err(format!("{cmd:?} printed {n} bytes, expected {want}").into());
            }
            if round >= warmup {
                samples[which].push(d);
            }
        }
    }
    let [show, cat, floor, true_] = samples;
    Ok(ShowRun {
        show,
        cat,
        floor,
        true_,
        bytes: expected,
        requested,
    })
}

/// `snapcache refresh` (JSON checked and `--raw`) against `floor publish`.
#[derive(Debug, Clone)]
pub struct RefreshRun {
    /// `snapcache --store A --quiet refresh --from F`.
    pub json: Samples,
    /// `snapcache --store B --quiet refresh --raw --from F`.
    pub raw: Samples,
    /// `floor publish C F`.
    pub floor: Samples,
    /// `floor publish --delete-superseded D F`: the floor that unlinks the
    /// snapshot it supersedes inside the publish, as snapcache must.
    pub floor_deleting: Samples,
    /// Payload bytes.
    pub bytes: usize,
    /// Requested payload size (label).
    pub requested: usize,
}

/// Interleaved whole-process publishes of a freshly stamped payload file
/// per round into three stores under `dir`. Between rounds (untimed) the
/// floor's superseded snapshot is deleted, as in the library runs, and
/// both snapcache stores are checked to hold the round's payload.
pub fn refresh_run(
    bin: &Path,
    floor_bin: &Path,
    dir: &Path,
    requested: usize,
    warmup: usize,
    iterations: usize,
) -> Result<RefreshRun> {
    std::fs::create_dir_all(dir)?;
    let mut payload = Payload::generate(requested, 8080 + requested as u64)?;
    let file = dir.join("payload.json");
    let stores = [
        dir.join("json"),
        dir.join("raw"),
        dir.join("floor"),
        dir.join("floor-deleting"),
    ];
    let mut samples = [
        Samples::new(),
        Samples::new(),
        Samples::new(),
        Samples::new(),
    ];
    let opened: Vec<snapcache::Store> = stores[..2]
        .iter()
        .map(|s| snapcache::Store::open(snapcache::StoreOptions::new(s)))
        .collect::<std::result::Result<_, _>>()?;
    for round in 0..warmup + iterations {
        payload.stamp(7_000_000 + round as u64);
        std::fs::write(&file, &payload.bytes)?;
        let want = blake3::hash(&payload.bytes);
        for k in 0..4 {
            let which = (round + k) % 4;
            let mut cmd = if which == 2 {
                let mut c = command(floor_bin);
                c.arg("publish").arg(&stores[2]).arg(&file);
                c
            } else if which == 3 {
                let mut c = command(floor_bin);
                c.arg("publish")
                    .arg("--delete-superseded")
                    .arg(&stores[3])
                    .arg(&file);
                c
            } else {
                let mut c = command(bin);
                c.arg("--store")
                    .arg(&stores[which])
                    .arg("--quiet")
                    .arg("refresh");
                if which == 1 {
                    c.arg("--raw");
                }
                c.arg("--from").arg(&file);
                c
            };
            let t = Instant::now();
            run_quiet(&mut cmd)?;
            let d = t.elapsed();
            if round >= warmup {
                samples[which].push(d);
            }
        }
        for store in &opened {
            let meta = store
                .current_generation()?
                .ok_or("snapcache refresh published nothing")?;
            if meta.hash.to_hex() != want.to_hex().as_str() {
                return Err(format!(
                    "{} does not hold the round's payload",
                    store.root().display()
                )
                .into());
            }
        }
        for floor in &stores[2..] {
            let pointer = std::fs::read_to_string(floor.join("current"))?;
            if !pointer.starts_with(want.to_hex().as_str()) {
                return Err("floor publish did not commit the round's payload".into());
            }
        }
        // The deleting floor removed its own superseded snapshot, and only
        // that one: it holds the round's snapshot alone.
        let left = std::fs::read_dir(stores[3].join("snapshots"))?.count();
        if left != 1 {
            return Err(format!("the deleting floor left {left} snapshots, not 1").into());
        }
        crate::contenders::remove_all_but(&stores[2].join("snapshots"), want.to_hex().as_str())?;
    }
    let _ = std::fs::remove_dir_all(dir);
    let [json, raw, floor, floor_deleting] = samples;
    Ok(RefreshRun {
        json,
        raw,
        floor,
        floor_deleting,
        bytes: payload.len(),
        requested,
    })
}
