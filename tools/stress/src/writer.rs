//! Writer slots: each runs `snapcache refresh` processes one after another,
//! with a fresh payload each time, and kills some of them with SIGKILL.
//!
//! # Where kills land
//!
//! A planned kill is timed in one of four ways (30 %, 30 %, 25 %, 15 %):
//!
//! - **from the start**: 0 to `--max-kill-delay-ms` (50 ms) after the
//!   process was spawned. This lands in process start-up, the lock wait,
//!   the source and, for small payloads, the write, fsyncs and renames.
//! - **under the lock**: the slot polls `<store>/lock.holder` (written right
//!   after the lock is taken) until it names the writer, then waits a random
//!   fraction (0 to 1.2) of the expected lock-held time for a payload of this
//!   size (learnt from the successful refreshes so far) and kills. This
//!   spreads kills over the sweep, the source (`--exec` sources pause half
//!   way), the write, the read-back JSON check and the commit.
//! - **at an fsync** (Linux): once the writer holds the lock, the slot
//!   samples `/proc/<pid>/syscall` every ~100 µs and kills when the writer
//!   enters its n-th `fsync` (n from 1 to 3). A publish makes four: the
//!   temp file, `snapshots/`, the new pointer's temp file, then (after the
//!   pointer rename) the store directory. fsync is not interruptible, so the
//!   writer dies as that fsync returns: before the snapshot rename, before
//!   the pointer is written, or between the pointer's fsync and its rename.
//! - **after the pointer swap**: once the writer holds the lock, the slot
//!   polls the inode of `<store>/current` and kills as soon as it changes:
//!   the publish is committed, the writer dies in the directory fsync or
//!   while releasing the lock.
//!
//! Just before every kill the slot records whether the victim held the lock
//! (`lock.holder`) and which system call it was in (`/proc/<pid>/syscall`),
//! so the report shows where the kills landed.

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::payload;
use crate::procs::{Finished, Running};
use crate::rng::SplitMix64;
use crate::state::{Offer, Shared, hex, lock, parse_hex, tail};

/// What every writer slot is told.
#[derive(Debug, Clone)]
pub struct Plan {
    pub seed: u64,
    pub refreshes: Option<u64>,
    pub deadline: Option<Instant>,
    pub kill_probability: f64,
    pub max_bytes: u64,
    pub exec_fraction: f64,
    pub max_kill_delay: Duration,
    pub lock_timeout_secs: u64,
    /// A writer running longer than this is killed and reported as hung.
    pub hang_limit: Duration,
}

/// How a refresh gets its payload.
#[derive(Debug, Clone, Copy)]
enum Source {
    /// `--from FILE`.
    File,
    /// `--exec cat FILE`.
    ExecCat,
    /// `--exec sh -c 'head -c SPLIT FILE; sleep PAUSE; tail ...'`: the
    /// source stalls half way, with part of the payload in the temp file.
    ExecSplit { split: u64, pause_ms: u64 },
}

/// When a refresh is killed.
#[derive(Debug, Clone, Copy)]
enum Kill {
    None,
    FromStart(Duration),
    /// A fraction of the expected lock-held time.
    UnderLock(f64),
    /// When the writer enters its n-th fsync under the lock (1 to 3).
    AtFsync(u32),
    /// As soon as the writer has swapped the pointer (the commit point).
    AtCommit,
}

impl Kill {
    fn label(&self) -> String {
        match self {
            Kill::None => "none".into(),
            Kill::FromStart(_) => "1 from the start".into(),
            Kill::UnderLock(_) => "2 after taking the lock".into(),
            Kill::AtFsync(1) => "3 at fsync 1 (temp file)".into(),
            Kill::AtFsync(2) => "4 at fsync 2 (snapshots/)".into(),
            Kill::AtFsync(n) => format!("5 at fsync {n} (pointer temp file)"),
            Kill::AtCommit => "6 after the pointer swap".into(),
        }
    }
}

/// Expected lock-held time of a publish as a function of its size, a
/// least-squares line through recent successful refreshes (time from spawn
/// to exit minus the lock wait the outcome reports), older samples fading.
#[derive(Debug, Default)]
pub struct Estimator {
    n: f64,
    sx: f64,
    sy: f64,
    sxx: f64,
    sxy: f64,
}

impl Estimator {
    const DECAY: f64 = 0.98;

    pub fn add(&mut self, mib: f64, ms: f64) {
        for v in [
            &mut self.n,
            &mut self.sx,
            &mut self.sy,
            &mut self.sxx,
            &mut self.sxy,
        ] {
            *v *= Self::DECAY;
        }
        self.n += 1.0;
        self.sx += mib;
        self.sy += ms;
        self.sxx += mib * mib;
        self.sxy += mib * ms;
    }

    /// Milliseconds expected for `mib` MiB.
    pub fn estimate_ms(&self, mib: f64) -> f64 {
        if self.n < 3.0 {
            return 20.0 + 100.0 * mib;
        }
        let denominator = self.n * self.sxx - self.sx * self.sx;
        let slope = if denominator.abs() > 1e-9 {
            ((self.n * self.sxy - self.sx * self.sy) / denominator).max(0.0)
        } else {
            0.0
        };
        let intercept = ((self.sy - slope * self.sx) / self.n).max(1.0);
        (intercept + slope * mib).max(2.0)
    }
}

/// Runs one writer slot to the end of the plan.
pub fn run(shared: &Shared, plan: &Plan, index: u64, scratch: &Path, estimator: &Mutex<Estimator>) {
    let mut rng = SplitMix64::stream(plan.seed, index);
    let writer = index.to_string();
    let mut refresh = 0u64;
    loop {
        if plan.refreshes.is_some_and(|n| refresh >= n)
            || plan.deadline.is_some_and(|d| Instant::now() >= d)
        {
            break;
        }
        one_refresh(shared, plan, &mut rng, &writer, refresh, scratch, estimator);
        refresh += 1;
    }
}

fn one_refresh(
    shared: &Shared,
    plan: &Plan,
    rng: &mut SplitMix64,
    writer: &str,
    refresh: u64,
    scratch: &Path,
    estimator: &Mutex<Estimator>,
) {
    let size = rng.log_uniform(payload::MIN_BYTES, plan.max_bytes);
    let data = payload::generate(rng, size, plan.seed, writer, refresh);
    let hash = *blake3::hash(&data).as_bytes();
    let file = scratch.join(format!("w{writer}-r{refresh}.json"));
    if let Err(e) = std::fs::write(&file, &data) {
        shared.violation(
            "tool-error",
            format!("writing payload {}: {e}", file.display()),
        );
        return;
    }
    let source = if rng.chance(plan.exec_fraction) {
        if rng.chance(0.5) {
            Source::ExecCat
        } else {
            Source::ExecSplit {
                split: rng.below(size),
                pause_ms: 1 + rng.below(30),
            }
        }
    } else {
        Source::File
    };
    let kill = if rng.chance(plan.kill_probability) {
        match rng.below(20) {
            0..=5 => {
                let max = plan.max_kill_delay.as_micros() as u64;
                Kill::FromStart(Duration::from_micros(rng.below(max + 1)))
            }
            6..=11 => Kill::UnderLock(rng.unit() * 1.2),
            12..=16 => Kill::AtFsync(1 + rng.below(3) as u32),
            _ => Kill::AtCommit,
        }
    } else {
        Kill::None
    };
    // Offered before the writer exists: a reader may see it any time after.
    shared.offer(
        hash,
        Offer {
            writer: writer.to_string(),
            refresh,
            bytes: size,
            killed: false,
        },
    );
    shared.count(|c| {
        c.refreshes_attempted += 1;
        c.payload_bytes_offered += size;
        match source {
            Source::File => c.sources_file += 1,
            Source::ExecCat => c.sources_exec_cat += 1,
            Source::ExecSplit { .. } => c.sources_exec_split += 1,
        }
        if !matches!(kill, Kill::None) {
            c.kills_planned += 1;
            *c.kills_planned_by_timing.entry(kill.label()).or_default() += 1;
        }
    });

    let who = format!("writer {writer} refresh {refresh}");
    let mut cmd = shared.snapcache(refresh_args(plan, &who, source, &file));
    let started = Instant::now();
    let mut running = match Running::start(&shared.procs, &mut cmd) {
        Ok(r) => r,
        Err(e) => {
            shared.violation("tool-error", format!("{who}: spawning snapcache: {e}"));
            let _ = std::fs::remove_file(&file);
            return;
        }
    };
    let pause_ms = match source {
        Source::ExecSplit { pause_ms, .. } => pause_ms as f64,
        _ => 0.0,
    };
    let mib = size as f64 / (1024.0 * 1024.0);
    let expected_ms = lock(estimator).estimate_ms(mib) + pause_ms;
    let sent = execute_kill(shared, plan, &mut running, started, kill, expected_ms);
    let finished = match running.wait(started, plan.hang_limit) {
        Ok(f) => f,
        Err(e) => {
            shared.violation("tool-error", format!("{who}: waiting for snapcache: {e}"));
            let _ = std::fs::remove_file(&file);
            return;
        }
    };
    let wall_ms = started.elapsed().as_secs_f64() * 1000.0;
    let _ = std::fs::remove_file(&file);

    if finished.hung {
        shared.count(|c| c.refreshes_hung += 1);
        shared.violation(
            "writer-hung",
            format!(
                "{who}: still running after {:?}, killed; stderr: {}",
                plan.hang_limit,
                tail(&finished.stderr, 400)
            ),
        );
        return;
    }
    if let Some(sent) = sent {
        if finished.status.signal() == Some(9) {
            shared.mark_killed(&hash);
            shared.count(|c| {
                c.refreshes_killed += 1;
                *c.kills_by_timing.entry(kill.label()).or_default() += 1;
                *c.kills_in_syscall.entry(sent.syscall).or_default() += 1;
                if sent.holding_lock {
                    c.kills_holding_lock += 1;
                }
                if !matches!(source, Source::File) {
                    c.kills_exec_source += 1;
                }
            });
            return;
        }
    }
    if !matches!(kill, Kill::None) {
        shared.count(|c| c.kills_missed += 1);
    }
    classify_exit(shared, &who, &finished, hash, size, wall_ms, estimator);
}

/// The arguments of one refresh (`--exec` must come last).
fn refresh_args(plan: &Plan, note: &str, source: Source, file: &Path) -> Vec<String> {
    let path = file.display().to_string();
    let mut args: Vec<String> = [
        "--json",
        "--quiet",
        "refresh",
        "--lock-timeout",
        &plan.lock_timeout_secs.to_string(),
        "--note",
        note,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    match source {
        Source::File => args.extend(["--from".to_string(), path]),
        Source::ExecCat => args.extend(["--exec".into(), "cat".into(), path]),
        Source::ExecSplit { split, pause_ms } => args.extend([
            "--exec".into(),
            "sh".into(),
            "-c".into(),
            r#"head -c "$1" "$2" && sleep "$3" && tail -c "+$(($1 + 1))" "$2""#.into(),
            "stress-source".into(),
            split.to_string(),
            path,
            format!("{:.3}", pause_ms as f64 / 1000.0),
        ]),
    }
    args
}

/// A SIGKILL that was sent.
struct Sent {
    holding_lock: bool,
    /// The system call the victim was in (`running`: in user space).
    syscall: String,
}

/// Sends the planned SIGKILL at the planned moment, if the writer still runs.
fn execute_kill(
    shared: &Shared,
    plan: &Plan,
    running: &mut Running<'_>,
    started: Instant,
    kill: Kill,
    expected_ms: f64,
) -> Option<Sent> {
    let at = match kill {
        Kill::None => return None,
        Kill::FromStart(delay) => started + delay,
        Kill::UnderLock(fraction) => {
            wait_for_lock(shared, plan, running, started)?;
            Instant::now() + Duration::from_secs_f64(fraction * expected_ms / 1000.0)
        }
        Kill::AtFsync(n) => {
            wait_for_lock(shared, plan, running, started)?;
            let mut entered = 0;
            let mut in_fsync = false;
            loop {
                if !running.running() || started.elapsed() > plan.hang_limit {
                    return None;
                }
                let now_in_fsync = syscall_of(running.pid).as_deref() == Some(FSYNC);
                if now_in_fsync && !in_fsync {
                    entered += 1;
                    if entered >= n {
                        break;
                    }
                }
                in_fsync = now_in_fsync;
                std::thread::sleep(Duration::from_micros(100));
            }
            Instant::now()
        }
        Kill::AtCommit => {
            wait_for_lock(shared, plan, running, started)?;
            // The writer holds the lock: only it can replace `current` now.
            let before = pointer_inode(&shared.store);
            loop {
                if !running.running() || started.elapsed() > plan.hang_limit {
                    return None;
                }
                if pointer_inode(&shared.store) != before {
                    break;
                }
                std::thread::sleep(Duration::from_micros(100));
            }
            Instant::now()
        }
    };
    while Instant::now() < at {
        if !running.running() {
            return None;
        }
        let left = at.saturating_duration_since(Instant::now());
        std::thread::sleep(left.min(Duration::from_millis(2)));
    }
    if !running.running() {
        return None;
    }
    let syscall = syscall_of(running.pid).unwrap_or_else(|| "unknown".into());
    let holding_lock = holder_pid(&shared.store) == Some(running.pid);
    running.kill().then_some(Sent {
        holding_lock,
        syscall,
    })
}

/// Waits until `lock.holder` names the writer; `None` if it exits (or
/// hangs) first.
fn wait_for_lock(
    shared: &Shared,
    plan: &Plan,
    running: &mut Running<'_>,
    started: Instant,
) -> Option<()> {
    loop {
        if !running.running() || started.elapsed() > plan.hang_limit {
            return None;
        }
        if holder_pid(&shared.store) == Some(running.pid) {
            return Some(());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The inode of `<store>/current` (it changes with every pointer swap).
fn pointer_inode(store: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(store.join("current"))
        .ok()
        .map(|m| m.ino())
}

const FSYNC: &str = "fsync";

/// The system call the process's main thread is in, from
/// `/proc/<pid>/syscall`: a name for the common ones (x86-64 numbers),
/// `running` when it is in user space, `syscall N` otherwise.
fn syscall_of(pid: u32) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/syscall")).ok()?;
    let first = text.split_whitespace().next()?;
    if first == "running" {
        return Some("running (user space)".into());
    }
    let number: i64 = first.parse().ok()?;
    Some(syscall_name(number).map_or_else(|| format!("syscall {number}"), str::to_string))
}

#[cfg(target_arch = "x86_64")]
fn syscall_name(number: i64) -> Option<&'static str> {
    Some(match number {
        0 => "read",
        1 => "write",
        3 => "close",
        7 => "poll",
        9 => "mmap",
        11 => "munmap",
        35 => "nanosleep",
        56 => "clone",
        59 => "execve",
        61 => "wait4",
        72 => "fcntl",
        73 => "flock",
        74 => FSYNC,
        75 => "fdatasync",
        82 => "rename",
        87 => "unlink",
        202 => "futex",
        217 => "getdents64",
        230 => "clock_nanosleep",
        247 => "waitid",
        257 => "openat",
        262 => "newfstatat",
        263 => "unlinkat",
        264 => "renameat",
        316 => "renameat2",
        332 => "statx",
        435 => "clone3",
        _ => return None,
    })
}

#[cfg(not(target_arch = "x86_64"))]
fn syscall_name(_number: i64) -> Option<&'static str> {
    None
}

/// What the lock files of the store look like (for a lock timeout report).
fn lock_files(store: &Path) -> String {
    ["lease", "lease.break", "lock.holder"]
        .iter()
        .map(|name| {
            let path = store.join(name);
            match std::fs::symlink_metadata(&path) {
                Err(_) => format!("no {name}"),
                Ok(meta) => {
                    let age = meta
                        .modified()
                        .ok()
                        .and_then(|t| t.elapsed().ok())
                        .map_or_else(|| "?".to_string(), |a| format!("{:.1}", a.as_secs_f64()));
                    let content = std::fs::read(&path).unwrap_or_default();
                    format!(
                        "{name}: {} bytes, modified {age} s ago: {}",
                        meta.len(),
                        tail(&content, 200)
                    )
                }
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// The pid in `<store>/lock.holder`, if it can be read.
fn holder_pid(store: &Path) -> Option<u32> {
    let bytes = std::fs::read(store.join("lock.holder")).ok()?;
    let value: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    value
        .get("pid")?
        .as_u64()
        .and_then(|p| u32::try_from(p).ok())
}

/// Accounts for a writer that exited on its own.
fn classify_exit(
    shared: &Shared,
    who: &str,
    finished: &Finished,
    hash: [u8; 32],
    size: u64,
    wall_ms: f64,
    estimator: &Mutex<Estimator>,
) {
    match finished.status.code() {
        Some(0) => {}
        Some(75) => {
            shared.count(|c| c.refreshes_timed_out += 1);
            shared.violation(
                "lock-timeout",
                format!(
                    "{who}: timed out waiting for the writer lock: {}; at that moment: {}",
                    tail(&finished.stderr, 400),
                    lock_files(&shared.store)
                ),
            );
            return;
        }
        code => {
            shared.count(|c| c.refreshes_failed += 1);
            shared.violation(
                "writer-failed",
                format!(
                    "{who}: exit {code:?} (signal {:?}): {}",
                    finished.status.signal(),
                    tail(&finished.stderr, 600)
                ),
            );
            return;
        }
    }
    let outcome: serde_json::Value = match serde_json::from_slice(&finished.stdout) {
        Ok(v) => v,
        Err(e) => {
            shared.count(|c| c.refreshes_failed += 1);
            shared.violation(
                "writer-failed",
                format!(
                    "{who}: exit 0 but stdout is not one JSON object ({e}): {}",
                    tail(&finished.stdout, 300)
                ),
            );
            return;
        }
    };
    let generation = outcome["generation"].as_u64();
    let reported = outcome["hash"].as_str().and_then(parse_hex);
    let problems: Vec<String> = [
        (generation.is_none(), "no generation".to_string()),
        (
            reported != Some(hash),
            format!(
                "hash {:?}, expected {}",
                outcome["hash"].as_str(),
                hex(&hash)
            ),
        ),
        (
            outcome["bytes"].as_u64() != Some(size),
            format!("bytes {}, expected {size}", outcome["bytes"]),
        ),
        (
            outcome["changed"] != true,
            "changed is not true (every payload is new)".to_string(),
        ),
        (outcome["skipped"] != false, "skipped is not false".into()),
    ]
    .into_iter()
    .filter_map(|(bad, what)| bad.then_some(what))
    .collect();
    if !problems.is_empty() {
        shared.count(|c| c.refreshes_failed += 1);
        shared.violation(
            "writer-outcome",
            format!("{who}: {}; outcome {outcome}", problems.join(", ")),
        );
        return;
    }
    let generation = generation.unwrap_or_default();
    shared.note_published();
    shared.success_generation(generation, who.to_string());
    shared.observe_generation(generation, hash, "refresh outcome");
    let waited = outcome["waited_ms"].as_f64().unwrap_or(0.0);
    shared.count(|c| {
        c.refreshes_succeeded += 1;
        c.payload_bytes_published += size;
        c.max_lock_wait_ms = c.max_lock_wait_ms.max(waited as u64);
    });
    lock(estimator).add(size as f64 / (1024.0 * 1024.0), (wall_ms - waited).max(1.0));
}

/// Publishes one last payload (never killed) and returns its bytes and
/// outcome generation, or why it failed.
pub fn final_refresh(
    shared: &Shared,
    plan: &Plan,
    scratch: &Path,
) -> Result<(Vec<u8>, u64), String> {
    let mut rng = SplitMix64::stream(plan.seed, u64::MAX);
    let size = rng.log_uniform(payload::MIN_BYTES, plan.max_bytes.min(1 << 20));
    let data = payload::generate(&mut rng, size, plan.seed, "final", 0);
    let hash = *blake3::hash(&data).as_bytes();
    let file: PathBuf = scratch.join("final.json");
    std::fs::write(&file, &data).map_err(|e| format!("writing {}: {e}", file.display()))?;
    shared.offer(
        hash,
        Offer {
            writer: "final".into(),
            refresh: 0,
            bytes: size,
            killed: false,
        },
    );
    let mut cmd = shared.snapcache(refresh_args(plan, "final refresh", Source::File, &file));
    let started = Instant::now();
    let finished = Running::start(&shared.procs, &mut cmd)
        .and_then(|r| r.wait(started, plan.hang_limit))
        .map_err(|e| format!("running snapcache: {e}"))?;
    let _ = std::fs::remove_file(&file);
    if finished.status.code() != Some(0) {
        return Err(format!(
            "exit {:?}: {}",
            finished.status.code(),
            tail(&finished.stderr, 600)
        ));
    }
    let outcome: serde_json::Value =
        serde_json::from_slice(&finished.stdout).map_err(|e| format!("stdout is not JSON: {e}"))?;
    let generation = outcome["generation"]
        .as_u64()
        .ok_or_else(|| format!("no generation in {outcome}"))?;
    if outcome["hash"].as_str().and_then(parse_hex) != Some(hash) || outcome["changed"] != true {
        return Err(format!("unexpected outcome {outcome}"));
    }
    shared.success_generation(generation, "the final refresh".into());
    Ok((data, generation))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_estimator_learns_a_line() {
        let mut e = Estimator::default();
        assert_eq!(e.estimate_ms(1.0), 120.0, "default before samples");
        for i in 0..50 {
            let mib = (i % 8) as f64;
            e.add(mib, 5.0 + 10.0 * mib);
        }
        assert!(
            (e.estimate_ms(4.0) - 45.0).abs() < 0.5,
            "{}",
            e.estimate_ms(4.0)
        );
        assert!(e.estimate_ms(0.0) >= 2.0);
    }

    #[test]
    fn exec_comes_last_in_the_arguments() {
        let plan = Plan {
            seed: 1,
            refreshes: Some(1),
            deadline: None,
            kill_probability: 0.0,
            max_bytes: 4096,
            exec_fraction: 0.0,
            max_kill_delay: Duration::ZERO,
            lock_timeout_secs: 60,
            hang_limit: Duration::from_secs(1),
        };
        let args = refresh_args(
            &plan,
            "n",
            Source::ExecSplit {
                split: 10,
                pause_ms: 5,
            },
            Path::new("/x/p.json"),
        );
        let exec = args.iter().position(|a| a == "--exec").unwrap();
        assert_eq!(args[exec + 1], "sh");
        assert_eq!(args.last().unwrap(), "0.005");
        assert!(args[..exec].contains(&"--lock-timeout".to_string()));
    }

    #[test]
    fn the_split_source_reassembles_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("p.json");
        let data = payload::generate(&mut SplitMix64::new(9), 5000, 9, "0", 0);
        std::fs::write(&file, &data).unwrap();
        for split in [0u64, 1, 2500, 4999, 5000] {
            let args = refresh_args(
                &Plan {
                    seed: 0,
                    refreshes: None,
                    deadline: None,
                    kill_probability: 0.0,
                    max_bytes: 0,
                    exec_fraction: 0.0,
                    max_kill_delay: Duration::ZERO,
                    lock_timeout_secs: 1,
                    hang_limit: Duration::ZERO,
                },
                "n",
                Source::ExecSplit { split, pause_ms: 1 },
                &file,
            );
            let exec = args.iter().position(|a| a == "--exec").unwrap();
            let out = std::process::Command::new(&args[exec + 1])
                .args(&args[exec + 2..])
                .output()
                .unwrap();
            assert!(out.status.success());
            assert_eq!(out.stdout, data, "split {split}");
        }
    }
}
