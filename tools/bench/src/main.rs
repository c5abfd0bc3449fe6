//! `snapcache-bench`: snapcache against the physical floor of its design and
//! against the alternatives (a Kopi-style single file, cacache, SQLite), on
//! Kopi-shaped payloads from `snapcache-metagen`.
//!
//! ```text
//! cargo run --release -p snapcache-bench -- --quick   # a few minutes on 2 cores
//! cargo run --release -p snapcache-bench              # full run, adds 64 MiB
//! ```
//!
//! Prints a Markdown report on stdout and (unless `--no-docs`) rewrites the
//! generated region of `docs/performance.md`, `docs/performance.svg` and
//! `docs/performance-data.json`. The bench builds the `snapcache` CLI itself
//! (`cargo build --release -p snapcache --bin snapcache` into its own target
//! directory) for the end-to-end and RSS measurements.
#![forbid(unsafe_code)]

mod attribution;
mod chart;
mod cli;
mod contenders;
mod gc;
mod handoff;
mod jsoncheck;
mod payload;
mod readers;
mod report;
mod results;
mod rss;
mod runner;
mod scaling;
mod stats;
mod sysinfo;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use contenders::{Cacache, Contender, Floor, KopiFile, Result, Snapcache, Sqlite};
use payload::Payload;
use results::{Results, RssResult, SizeResult};
use stats::{Samples, fmt_bytes};

const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;

/// Command-line configuration.
#[derive(Debug, Clone)]
struct Config {
    quick: bool,
    dir: Option<PathBuf>,
    docs: Option<PathBuf>,
    snapcache_bin: Option<PathBuf>,
    build_cli: bool,
    only: Option<Vec<String>>,
    rounds: Option<usize>,
    fix_mmap_threshold: bool,
}

const SECTIONS: &[&str] = &[
    "json",
    "latency",
    "cli",
    "attribution",
    "readers",
    "handoff",
    "gc",
    "scaling",
    "rss",
];

const USAGE: &str = "usage: snapcache-bench [--quick] [--dir DIR] [--docs DIR | --no-docs] \
[--rounds N] [--only json,latency,cli,attribution,readers,handoff,gc,scaling,rss] [--snapcache-bin PATH] [--no-build] \
[--dynamic-mmap-threshold]";

fn parse_args(args: &[String]) -> Result<Config> {
    let mut c = Config {
        quick: false,
        dir: None,
        docs: Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs")),
        snapcache_bin: None,
        build_cli: true,
        only: None,
        rounds: None,
        fix_mmap_threshold: true,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{a} needs a value\n{USAGE}"))
        };
        match a.as_str() {
            "--quick" => c.quick = true,
            "--full" => c.quick = false,
            "--dir" => c.dir = Some(PathBuf::from(value()?)),
            "--docs" => c.docs = Some(PathBuf::from(value()?)),
            "--no-docs" => c.docs = None,
            "--snapcache-bin" => c.snapcache_bin = Some(PathBuf::from(value()?)),
            "--no-build" => c.build_cli = false,
            "--dynamic-mmap-threshold" => c.fix_mmap_threshold = false,
            "--rounds" => c.rounds = Some(value()?.parse()?),
            "--only" => {
                let list: Vec<String> = value()?.split(',').map(str::to_string).collect();
                if let Some(bad) = list.iter().find(|s| !SECTIONS.contains(&s.as_str())) {
                    return Err(
                        format!("unknown section {bad}; sections: {}", SECTIONS.join(",")).into(),
                    );
                }
                c.only = Some(list);
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other}\n{USAGE}").into()),
        }
    }
    Ok(c)
}

impl Config {
    fn wants(&self, section: &str) -> bool {
        self.only
            .as_ref()
            .is_none_or(|l| l.iter().any(|s| s == section))
    }

    /// (size, warmup, rounds) per payload size.
    fn sizes(&self) -> Vec<(usize, usize, usize)> {
        let mut v = if self.quick {
            vec![(64 * KIB, 2, 40), (MIB, 2, 40), (8 * MIB, 1, 25)]
        } else {
            vec![
                (64 * KIB, 3, 100),
                (MIB, 3, 60),
                (8 * MIB, 2, 30),
                (64 * MIB, 1, 8),
            ]
        };
        if let Some(n) = self.rounds {
            for s in &mut v {
                s.2 = n;
            }
        }
        v
    }
}

fn main() -> std::result::Result<(), contenders::BoxError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // Hidden child modes, used by the handoff and RSS measurements.
    match args.first().map(String::as_str) {
        Some("--child-handoff") => {
            let [_, store, file, id, count, start] = &args[..] else {
                return Err("--child-handoff STORE FILE ID COUNT START_NS".into());
            };
            return handoff::child(
                Path::new(store),
                Path::new(file),
                id.parse()?,
                count.parse()?,
                start.parse()?,
            );
        }
        Some("--child-reader") => {
            let [_, store, len, start, end] = &args[..] else {
                return Err("--child-reader STORE LEN START_NS END_NS".into());
            };
            return readers::child_reader(
                Path::new(store),
                len.parse()?,
                start.parse()?,
                end.parse()?,
            );
        }
        Some("--child-writer") => {
            let [_, store, file, stamp, end] = &args[..] else {
                return Err("--child-writer STORE FILE STAMP END_NS".into());
            };
            return readers::child_writer(
                Path::new(store),
                Path::new(file),
                stamp.parse()?,
                end.parse()?,
            );
        }
        Some("--child-rss") => {
            return match &args[..] {
                [_, mode, store] => rss::child(mode, Path::new(store), None),
                [_, mode, store, file] => rss::child(mode, Path::new(store), Some(Path::new(file))),
                _ => Err("--child-rss MODE STORE [FILE]".into()),
            };
        }
        _ => {}
    }
    let config = parse_args(&args)?;
    if config.fix_mmap_threshold
        && let Some(code) = reexec_with_fixed_mmap_threshold(&args)?
    {
        std::process::exit(code);
    }
    let started = Instant::now();
    let cpu_start = sysinfo::cpu_snapshot();
    let exe = std::env::current_exe()?;
    let base = match &config.dir {
        Some(d) => d.clone(),
        // `<target>/bench-tmp`: on the project's disk rather than a /tmp
        // that may be tmpfs (where fsync costs nothing).
        None => exe
            .parent()
            .and_then(Path::parent)
            .map(|t| t.join("bench-tmp"))
            .unwrap_or_else(std::env::temp_dir),
    };
    std::fs::create_dir_all(&base)?;
    let tmp = tempfile::Builder::new()
        .prefix("snapcache-bench-")
        .tempdir_in(&base)?;
    let sys = sysinfo::collect(tmp.path());
    if sys.fs_type == "tmpfs" || sys.fs_type == "ramfs" {
        eprintln!(
            "warning: the bench directory is on {}: fsync is free there, figures are not representative",
            sys.fs_type
        );
    }
    let mut command = String::from("cargo run --release -p snapcache-bench --");
    for a in &args {
        command.push(' ');
        command.push_str(a);
    }
    let mut results = Results {
        quick: config.quick,
        command,
        date: utc_date(SystemTime::now()),
        sys,
        reader_payload: MIB,
        allocator: if mmap_threshold_fixed() {
            format!("glibc mmap threshold fixed at 128 KiB (`GLIBC_TUNABLES={MMAP_TUNABLE}`)")
        } else {
            "allocator defaults (dynamic glibc mmap threshold)".to_string()
        },
        ..Results::default()
    };
    let mut section_start = Instant::now();
    let mut lap = |results: &mut Results, name: &str| {
        results
            .sections
            .push((name.to_string(), section_start.elapsed()));
        section_start = Instant::now();
    };

    if config.wants("json") {
        for size in [MIB, 8 * MIB] {
            eprintln!(
                "json: the JSON check vs serde_json at {}…",
                fmt_bytes(size as u64)
            );
            let rounds = if size > MIB { 10 } else { 30 };
            let payload = Payload::generate(size, 5150 + size as u64)?;
            match jsoncheck::run(&payload.bytes, config.rounds.unwrap_or(rounds)) {
                Ok(runs) => {
                    for r in &runs {
                        eprintln!(
                            "  {} {}: check {:.2} GB/s, serde_json IgnoredAny {:.2} GB/s, {:.2}×",
                            r.style,
                            fmt_bytes(r.bytes as u64),
                            r.gbps(r.check),
                            r.gbps(r.serde),
                            r.speedup()
                        );
                    }
                    results.json_check.push((size, runs));
                }
                Err(e) => results
                    .failures
                    .push(format!("JSON check at {}: {e}", fmt_bytes(size as u64))),
            }
        }
        lap(&mut results, "json");
    }

    if config.wants("latency") {
        for (size, warmup, rounds) in config.sizes() {
            eprintln!("latency: {} × {rounds} rounds…", fmt_bytes(size as u64));
            match latency(tmp.path(), size, warmup, rounds) {
                Ok(r) => results.sizes.push(r),
                Err(e) => results
                    .failures
                    .push(format!("latency at {}: {e}", fmt_bytes(size as u64))),
            }
        }
    }

    if config.wants("latency") {
        lap(&mut results, "latency");
    }
    let needs_cli = config.wants("cli") || config.wants("attribution") || config.wants("rss");
    let bin = if needs_cli {
        match cli::snapcache_binary(config.snapcache_bin.as_deref(), config.build_cli) {
            Ok(b) => Some(b),
            Err(e) => {
                results
                    .failures
                    .push(format!("snapcache CLI unavailable: {e}"));
                None
            }
        }
    } else {
        None
    };

    if config.wants("cli")
        && let Some(bin) = &bin
    {
        match cli::floor_binary(config.build_cli) {
            Ok(floor) => cli_section(&config, tmp.path(), bin, &floor, &mut results),
            Err(e) => results
                .failures
                .push(format!("the floor binary is unavailable: {e}")),
        }
    }

    if config.wants("cli") {
        lap(&mut results, "cli");
    }
    if config.wants("attribution")
        && let Some(bin) = &bin
    {
        let floor = attribution::available()
            .map_err(contenders::BoxError::from)
            .and_then(|()| cli::floor_binary(config.build_cli));
        match floor {
            Ok(floor) => {
                let rounds = config.rounds.unwrap_or(if config.quick { 5 } else { 15 });
                for size in [MIB, 8 * MIB] {
                    eprintln!(
                        "attribution: strace -f -c -w of refresh, refresh --raw, floor publish at {}…",
                        fmt_bytes(size as u64)
                    );
                    let dir = tmp.path().join(format!("attribution-{size}"));
                    match attribution::run(bin, &floor, &dir, size, rounds) {
                        Ok(a) => results.attribution.push(a),
                        Err(e) => results
                            .failures
                            .push(format!("attribution at {}: {e}", fmt_bytes(size as u64))),
                    }
                }
            }
            Err(e) => results.failures.push(format!("attribution (strace): {e}")),
        }
    }
    if config.wants("attribution") {
        lap(&mut results, "attribution");
    }
    if config.wants("readers") {
        eprintln!("readers: idle vs during writes…");
        let secs = if config.quick { 1.5 } else { 5.0 };
        match readers_section(tmp.path(), &exe, Duration::from_secs_f64(secs)) {
            Ok(r) => results.readers = r,
            Err(e) => results.failures.push(format!("readers: {e}")),
        }
    }

    if config.wants("readers") {
        lap(&mut results, "readers");
    }
    if config.wants("handoff") {
        eprintln!("handoff: 2 and 8 contending processes…");
        // (processes, rounds): every round starts that many one-shot
        // publishers together.
        let plan: &[(usize, usize)] = if config.quick {
            &[(2, 30), (8, 10)]
        } else {
            &[(2, 100), (8, 40)]
        };
        match handoff_section(tmp.path(), &exe, plan) {
            Ok(h) => results.handoff = h,
            Err(e) => results.failures.push(format!("lock handoff: {e}")),
        }
    }

    if config.wants("handoff") {
        lap(&mut results, "handoff");
    }
    if config.wants("gc") {
        eprintln!("gc: 1,000 and 10,000 unreferenced snapshots…");
        let payload = Payload::generate(64 * KIB, 99)?;
        // 1 KiB files are the budgeted case; empty files (no data blocks to
        // free) separate the filesystem's block freeing from the store's
        // own work.
        for (planted, file_size) in [(1_000, 1024), (10_000, 1024), (10_000, 0)] {
            let root = tmp.path().join(format!("gc-{planted}-{file_size}"));
            match gc::run(&root, &payload.bytes, planted, file_size) {
                Ok(g) => results.gc.push(g),
                Err(e) => results.failures.push(format!("gc of {planted}: {e}")),
            }
            let _ = std::fs::remove_dir_all(&root);
        }
    }

    if config.wants("gc") {
        lap(&mut results, "gc");
    }
    if config.wants("scaling") {
        let dir = tmp.path().join("scaling");
        std::fs::create_dir_all(&dir)?;
        let (sizes, gens): (Vec<(usize, usize)>, Vec<usize>) = if config.quick {
            (
                [
                    64 * KIB,
                    256 * KIB,
                    MIB,
                    4 * MIB,
                    16 * MIB,
                    64 * MIB,
                    256 * MIB,
                ]
                .map(|s| (s, 3))
                .to_vec(),
                vec![2, 10, 30, 101],
            )
        } else {
            (
                [
                    64 * KIB,
                    256 * KIB,
                    MIB,
                    4 * MIB,
                    16 * MIB,
                    64 * MIB,
                    256 * MIB,
                ]
                .map(|s| (s, if s >= 64 * MIB { 3 } else { 7 }))
                .to_vec(),
                vec![2, 5, 10, 30, 60, 101],
            )
        };
        eprintln!("scaling: payload size 64 KiB to 256 MiB…");
        match scaling::payload_axis(&dir, &sizes) {
            Ok(a) => results.scaling.push(a),
            Err(e) => results
                .failures
                .push(format!("scaling with payload size: {e}")),
        }
        eprintln!("scaling: retained generations 2 to 101…");
        match scaling::generations_axis(&dir, &gens) {
            Ok(a) => results.scaling.push(a),
            Err(e) => results
                .failures
                .push(format!("scaling with generations: {e}")),
        }
        eprintln!("scaling: leftover files 10 to 10,000…");
        match scaling::leftovers_axis(&dir, &[10, 100, 1_000, 10_000]) {
            Ok(a) => results.scaling.push(a),
            Err(e) => results
                .failures
                .push(format!("scaling with leftovers: {e}")),
        }
        let _ = std::fs::remove_dir_all(&dir);
        lap(&mut results, "scaling");
    }
    if config.wants("rss") {
        eprintln!("rss: publish and read a 256 MiB payload…");
        match rss_section(tmp.path(), &exe, bin.as_deref(), 256 * MIB) {
            Ok(r) => results.rss = Some(r),
            Err(e) => results.failures.push(format!("peak RSS: {e}")),
        }
    }

    if config.wants("rss") {
        lap(&mut results, "rss");
    }
    results.elapsed = started.elapsed();
    results.load_at_end = sysinfo::loadavg();
    let cpu_end = sysinfo::cpu_snapshot();
    results.other_cpu = match (cpu_start, cpu_end) {
        (Some(a), Some(b)) => sysinfo::others_busy(a, b),
        _ => "unknown".into(),
    };
    results.other_share = cpu_start
        .zip(cpu_end)
        .and_then(|(a, b)| sysinfo::others_share(a, b));
    let md = report::markdown(&results);
    println!("{md}");
    if let Some(docs) = &config.docs {
        std::fs::create_dir_all(docs)?;
        report::update_doc(&docs.join("performance.md"), &md)?;
        let data = serde_json::to_string_pretty(&report::json(&results))?;
        std::fs::write(docs.join("performance-data.json"), data + "\n")?;
        if !results.sizes.is_empty() {
            chart::draw(&results, &docs.join("performance.svg"))?;
        }
        if !results.scaling.is_empty() {
            chart::draw_scaling(&results, &docs.join("performance-scaling.svg"))?;
        }
        eprintln!(
            "wrote {}/performance.{{md,svg}} and performance-data.json",
            docs.display()
        );
    }
    Ok(())
}

/// The glibc tunable the bench runs under (see [`reexec_with_fixed_mmap_threshold`]).
const MMAP_TUNABLE: &str = "glibc.malloc.mmap_threshold=131072";

/// Whether this process runs with a fixed glibc mmap threshold.
fn mmap_threshold_fixed() -> bool {
    std::env::var("GLIBC_TUNABLES").is_ok_and(|v| v.contains("glibc.malloc.mmap_threshold"))
}

/// Re-run the bench with glibc's mmap threshold fixed at 128 KiB, unless it
/// already is (returns the child's exit code, or `None` to go on here).
///
/// glibc raises its mmap threshold dynamically when a large mmapped block
/// is freed, after which large buffers come from the heap, pre-faulted or
/// not depending on what the *previous* code freed and trimmed. In an
/// interleaved run that made one contender's frees decide whether the next
/// contender's read buffer had to be page-faulted: reads of the contender
/// that follows SQLite came out twice as slow. A fixed threshold (which
/// turns the dynamic adjustment off) gives every contender fresh memory
/// for every large buffer, the situation of a one-shot CLI process.
fn reexec_with_fixed_mmap_threshold(args: &[String]) -> Result<Option<i32>> {
    if !cfg!(all(target_os = "linux", target_env = "gnu")) || mmap_threshold_fixed() {
        return Ok(None);
    }
    let value = match std::env::var("GLIBC_TUNABLES") {
        Ok(v) if !v.is_empty() => format!("{v}:{MMAP_TUNABLE}"),
        _ => MMAP_TUNABLE.to_string(),
    };
    let status = std::process::Command::new(std::env::current_exe()?)
        .args(args)
        .env("GLIBC_TUNABLES", value)
        .status()?;
    Ok(Some(status.code().unwrap_or(1)))
}

/// The interleaved latency run at one payload size, plus the in-memory
/// hashing and JSON-check costs used to explain it.
fn latency(tmp: &Path, size: usize, warmup: usize, rounds: usize) -> Result<SizeResult> {
    let dir = tmp.join(format!("latency-{size}"));
    let mut payload = Payload::generate(size, size as u64)?;
    let mut list: Vec<Box<dyn Contender>> = vec![
        Box::new(Floor::new(&dir.join("floor"), true)?),
        Box::new(Floor::deleting(&dir.join("floor-deleting"))?),
        Box::new(Floor::reference(&dir.join("reference"))?),
        Box::new(KopiFile::new(&dir.join("kopi"))?),
        Box::new(Cacache::new(&dir.join("cacache"))),
        Box::new(Sqlite::new(&dir.join("sqlite"))?),
        Box::new(Snapcache::new(&dir.join("snapcache"), false)?),
        Box::new(Snapcache::new(&dir.join("snapcache-raw"), true)?),
    ];
    let measured = runner::run(&mut list, &mut payload, warmup, rounds, size as u64 * 1000)?;
    drop(list);
    let n = rounds.clamp(5, 30);
    let mut blake = Samples::new();
    let mut check = Samples::new();
    for _ in 0..n {
        let t = Instant::now();
        std::hint::black_box(blake3::hash(std::hint::black_box(&payload.bytes)));
        blake.push(t.elapsed());
        let t = Instant::now();
        serde_json::from_slice::<serde::de::IgnoredAny>(&payload.bytes)?;
        check.push(t.elapsed());
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(SizeResult {
        size,
        actual: payload.len(),
        measured,
        blake3: blake.median(),
        json_check: check.median(),
    })
}

/// Whole-process publishes and `show` at 1 and 8 MiB.
fn cli_section(config: &Config, tmp: &Path, bin: &Path, floor: &Path, results: &mut Results) {
    // Quick mode: enough rounds that a median moves by a few hundredths,
    // not tenths, between runs (the 8 MiB publishes vary most).
    for (size, rounds) in [(MIB, 30), (8 * MIB, 20)] {
        let label = fmt_bytes(size as u64);
        eprintln!("cli: snapcache refresh vs floor publish at {label}…");
        let rounds = config
            .rounds
            .unwrap_or(if config.quick { rounds } else { rounds * 3 });
        let dir = tmp.join(format!("cli-refresh-{size}"));
        match cli::refresh_run(bin, floor, &dir, size, 2, rounds) {
            Ok(r) => results.refresh.push(r),
            Err(e) => results
                .failures
                .push(format!("CLI refresh at {label}: {e}")),
        }
        eprintln!("cli: snapcache show vs cat vs floor read at {label}…");
        // The strace profile of `show` is taken on the same stores, when
        // the attribution section runs too.
        let trace = (config.wants("attribution") && attribution::available().is_ok())
            .then_some(if config.quick { 5 } else { 15 });
        match show_section(tmp, bin, floor, size, rounds + 5, trace) {
            Ok((c, a)) => {
                results.show.push(c);
                match a {
                    Some(Ok(a)) => results.attribution.push(a),
                    Some(Err(e)) => results
                        .failures
                        .push(format!("attribution of show at {label}: {e}")),
                    None => {}
                }
            }
            Err(e) => results.failures.push(format!("CLI show at {label}: {e}")),
        }
    }
}

fn show_section(
    tmp: &Path,
    bin: &Path,
    floor: &Path,
    size: usize,
    rounds: usize,
    trace_rounds: Option<usize>,
) -> Result<(cli::ShowRun, Option<Result<attribution::Attribution>>)> {
    let root = tmp.join(format!("cli-store-{size}"));
    let floor_root = tmp.join(format!("cli-floor-{size}"));
    let payload = Payload::generate(size, 4242 + size as u64)?;
    let sc = Snapcache::new(&root, false)?;
    let outcome = sc
        .store()
        .publish_bytes(&payload.bytes, &snapcache::PublishOptions::default())?;
    let file = root.join("snapshots").join(outcome.hash.to_hex());
    if !file.is_file() {
        return Err(format!("snapshot file {} not found", file.display()).into());
    }
    let input = tmp.join(format!("cli-show-{size}.json"));
    std::fs::write(&input, &payload.bytes)?;
    let status = cli::command(floor)
        .arg("publish")
        .arg(&floor_root)
        .arg(&input)
        .status()?;
    if !status.success() {
        return Err(format!("floor publish failed: {status}").into());
    }
    let run = cli::show_run(
        bin,
        floor,
        &root,
        &floor_root,
        &file,
        payload.len(),
        size,
        3,
        rounds,
    );
    let traced =
        trace_rounds.map(|n| attribution::run_show(bin, floor, &root, &floor_root, &file, size, n));
    let _ = std::fs::remove_dir_all(&root);
    let _ = std::fs::remove_dir_all(&floor_root);
    let _ = std::fs::remove_file(&input);
    Ok((run?, traced))
}

fn readers_section(tmp: &Path, exe: &Path, duration: Duration) -> Result<Vec<readers::ReaderRun>> {
    let root = tmp.join("readers-store");
    let file = tmp.join("readers-payload.json");
    payload::write_file(&file, MIB, 777)?;
    let sc = Snapcache::new(&root, false)?;
    sc.store().publish_bytes(
        &std::fs::read(&file)?,
        &snapcache::PublishOptions::default(),
    )?;
    let mut out = Vec::new();
    let mut stamp = 1_000_000;
    for n in [1, 2] {
        for with_writer in [false, true] {
            out.push(readers::run(
                exe,
                &root,
                &file,
                n,
                with_writer,
                duration,
                stamp,
            )?);
            stamp += 1_000_000;
        }
    }
    Ok(out)
}

fn handoff_section(
    tmp: &Path,
    exe: &Path,
    plan: &[(usize, usize)],
) -> Result<Vec<handoff::HandoffRun>> {
    let file = tmp.join("handoff-payload.json");
    payload::write_file(&file, 64 * KIB, 31)?;
    let mut out = Vec::new();
    for &(procs, count) in plan {
        let root = tmp.join(format!("handoff-{procs}"));
        out.push(handoff::run(exe, &root, &file, procs, count)?);
        let _ = std::fs::remove_dir_all(&root);
    }
    Ok(out)
}

fn rss_section(tmp: &Path, exe: &Path, bin: Option<&Path>, size: usize) -> Result<RssResult> {
    let file = tmp.join("rss-payload.json");
    let len = payload::write_file(&file, size, 256)?;
    let store = tmp.join("rss-store");
    let idle = rss::measure_child(exe, "idle", &store, None)?;
    let publish = rss::measure_child(exe, "publish", &store, Some(&file))?;
    let read = rss::measure_child(exe, "read", &store, Some(&file))?;
    let (mut cli_refresh, mut cli_show) = (None, None);
    if let Some(bin) = bin {
        let cli_store = tmp.join("rss-cli-store");
        let s = cli_store.as_os_str();
        cli_refresh = rss::measure_command(
            bin,
            &[
                "--store".as_ref(),
                s,
                "--quiet".as_ref(),
                "refresh".as_ref(),
                "--from".as_ref(),
                file.as_os_str(),
            ],
        )?;
        cli_show = rss::measure_command(
            bin,
            &["--store".as_ref(), s, "--quiet".as_ref(), "show".as_ref()],
        )?;
        let _ = std::fs::remove_dir_all(&cli_store);
    }
    let _ = std::fs::remove_dir_all(&store);
    let _ = std::fs::remove_file(&file);
    Ok(RssResult {
        payload: len,
        idle,
        publish,
        read,
        cli_refresh,
        cli_show,
    })
}

/// `YYYY-MM-DD HH:MM` in UTC, without a date crate.
fn utc_date(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}",
        rem / 3600,
        (rem % 3600) / 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(utc_date(UNIX_EPOCH), "1970-01-01 00:00");
        let t = UNIX_EPOCH + Duration::from_secs(1_709_210_096); // 2024-02-29 12:34:56
        assert_eq!(utc_date(t), "2024-02-29 12:34");
    }

    #[test]
    fn args() -> Result<()> {
        let c = parse_args(&["--quick".into(), "--only".into(), "gc,rss".into()])?;
        assert!(c.quick && c.wants("gc") && !c.wants("latency"));
        assert!(parse_args(&["--only".into(), "nope".into()]).is_err());
        Ok(())
    }
}
