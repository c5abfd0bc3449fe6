//! `snapcache-stress`: W writer processes x R refreshes against one store,
//! K reader processes reading continuously, and random SIGKILLs of writers
//! at random moments; then checks the invariants and reports.
//!
//! Invariants (any violation makes the exit code 1):
//!
//! - every read is byte-identical to a payload offered to a writer (no torn
//!   or partial read) and parses as JSON; no read fails, except "nothing
//!   published yet" before the first publish;
//! - generations: successful refreshes report distinct generations; one
//!   generation number never has two contents; `history` lists strictly
//!   increasing generations with one current; the current generation never
//!   goes backwards for a reader or across `history` polls;
//! - no refresh fails other than by our SIGKILL (no lock timeout, no error);
//! - with `--verify-during`, `snapcache verify` never reports a problem
//!   while writers are active;
//! - at the end one more refresh succeeds with a generation above every one
//!   seen, `snapcache verify` is ok, `<store>/tmp` is empty, and `show` and
//!   the library return exactly that last payload.
//!
//! Exit codes: 0 all invariants hold, 1 an invariant failed, 2 usage,
//! 3 the tool itself could not run. See docs/reliability-stress.md.

#[cfg(unix)]
mod monitor;
#[cfg(unix)]
mod payload;
#[cfg(unix)]
mod procs;
#[cfg(unix)]
mod reader;
#[cfg(unix)]
mod report;
#[cfg(unix)]
mod rng;
#[cfg(unix)]
mod state;
#[cfg(unix)]
mod writer;

#[cfg(not(unix))]
fn main() -> std::process::ExitCode {
    eprintln!("snapcache-stress runs on Unix only (it sends SIGKILL to writers)");
    std::process::ExitCode::from(3)
}

#[cfg(unix)]
fn main() -> std::process::ExitCode {
    run::main()
}

#[cfg(unix)]
mod run {
    use std::error::Error;
    use std::path::{Path, PathBuf};
    use std::process::ExitCode;
    use std::sync::Mutex;
    use std::sync::atomic::Ordering;
    use std::time::{Duration, Instant};

    use clap::{Parser, Subcommand, ValueEnum};

    use crate::monitor::{self, Seen};
    use crate::procs::Running;
    use crate::report::{Config, FinalChecks, Report};
    use crate::state::{Shared, tail};
    use crate::writer::{self, Estimator, Plan};
    use crate::{reader, report};

    /// Stress a snapcache store: concurrent writers, continuous readers and
    /// random SIGKILLs of writers; exit 0 only if every invariant held.
    #[derive(Debug, Parser)]
    #[command(
        name = "snapcache-stress",
        version,
        args_conflicts_with_subcommands = true
    )]
    struct Cli {
        #[command(subcommand)]
        internal: Option<Internal>,
        #[command(flatten)]
        options: Options,
    }

    #[derive(Debug, Subcommand)]
    enum Internal {
        /// Library reader child (internal).
        #[command(name = "__lib-reader", hide = true)]
        LibReader {
            #[arg(long)]
            store: PathBuf,
            #[arg(long)]
            marker: PathBuf,
            #[arg(long, default_value_t = 0)]
            pause_ms: u64,
        },
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
    pub enum ReaderKind {
        /// Alternate: even readers run `snapcache show`, odd ones the library.
        Mixed,
        /// Only `snapcache show` processes.
        Cli,
        /// Only library reader processes (`Store::read_current`).
        Library,
    }

    #[derive(Debug, clap::Args)]
    struct Options {
        /// Writer slots (each runs one `snapcache refresh` at a time)
        #[arg(long, default_value_t = 3, value_name = "W")]
        writers: u64,
        /// Refreshes per writer [default: 8, or unlimited with --duration]
        #[arg(long, value_name = "R")]
        refreshes: Option<u64>,
        /// Reader processes reading continuously
        #[arg(long, default_value_t = 2, value_name = "K")]
        readers: u64,
        /// Which readers to run
        #[arg(long, value_enum, default_value_t = ReaderKind::Mixed)]
        reader_kind: ReaderKind,
        /// Stop starting refreshes after this many seconds (with --refreshes: whichever comes first)
        #[arg(long, value_name = "SECS")]
        duration: Option<f64>,
        /// Probability that a refresh is SIGKILLed (0 to 1)
        #[arg(long, default_value_t = 0.2, value_name = "P")]
        kill_probability: f64,
        /// Largest payload in bytes (sizes are log-uniform from 1 KiB)
        #[arg(long, default_value_t = 8 << 20, value_name = "N")]
        max_bytes: u64,
        /// Fraction of refreshes whose payload comes from `--exec` (cat, or a source that stalls half way)
        #[arg(long, default_value_t = 0.25, value_name = "F")]
        exec_fraction: f64,
        /// Largest delay of a kill timed from the writer's start
        #[arg(long, default_value_t = 50, value_name = "MS")]
        max_kill_delay_ms: u64,
        /// `--lock-timeout` given to every refresh
        #[arg(long, default_value_t = 60, value_name = "SECS")]
        lock_timeout: u64,
        /// Pause between two reads of one reader
        #[arg(long, default_value_t = 0, value_name = "MS")]
        read_pause_ms: u64,
        /// Store directory; must be new or empty [default: a temp dir, removed unless the run fails]
        #[arg(long, value_name = "DIR")]
        store: Option<PathBuf>,
        /// Keep the temp store even when the run passes
        #[arg(long)]
        keep_store: bool,
        /// Seed of every random choice [default: from the clock; printed in the report]
        #[arg(long, value_name = "S")]
        seed: Option<u64>,
        /// The snapcache binary [default: `snapcache` next to this executable]
        #[arg(long, value_name = "PATH")]
        snapcache: Option<PathBuf>,
        /// `--lock-backend` for every snapcache command (auto, advisory or lease)
        #[arg(long, value_name = "BACKEND")]
        lock_backend: Option<String>,
        /// Retention for every snapcache command (`SNAPCACHE_KEEP`, 1 to 100) [default: snapcache's, 5]
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=100))]
        keep: Option<u64>,
        /// Also run `snapcache verify` back to back during the run; a problem it reports is a violation
        #[arg(long)]
        verify_during: bool,
        /// Seconds between progress lines on stderr (0: none)
        #[arg(long, default_value_t = 10, value_name = "SECS")]
        progress_secs: u64,
        /// Print one JSON object on stdout instead of text
        #[arg(long)]
        json: bool,
    }

    pub fn main() -> ExitCode {
        let cli = Cli::parse();
        if let Some(Internal::LibReader {
            store,
            marker,
            pause_ms,
        }) = cli.internal
        {
            return match reader::lib_reader_main(store, marker, pause_ms) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("snapcache-stress __lib-reader: {e}");
                    ExitCode::from(3)
                }
            };
        }
        match run(cli.options) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::from(1),
            Err(e) => {
                eprintln!("snapcache-stress: error: {e}");
                ExitCode::from(3)
            }
        }
    }

    fn validate(o: &Options) -> Result<(), Box<dyn Error>> {
        if o.writers == 0 {
            return Err("--writers must be at least 1".into());
        }
        if !(0.0..=1.0).contains(&o.kill_probability) {
            return Err("--kill-probability must be between 0 and 1".into());
        }
        if !(0.0..=1.0).contains(&o.exec_fraction) {
            return Err("--exec-fraction must be between 0 and 1".into());
        }
        if o.max_bytes < crate::payload::MIN_BYTES {
            return Err(
                format!("--max-bytes must be at least {}", crate::payload::MIN_BYTES).into(),
            );
        }
        if o.duration.is_some_and(|d| !d.is_finite() || d <= 0.0) {
            return Err("--duration must be a positive number of seconds".into());
        }
        if o.refreshes == Some(0) {
            return Err("--refreshes must be at least 1".into());
        }
        Ok(())
    }

    /// Runs the stress; `Ok(true)` when every invariant held.
    fn run(o: Options) -> Result<bool, Box<dyn Error>> {
        validate(&o)?;
        let exe = std::env::current_exe()?;
        let snapcache = match &o.snapcache {
            Some(p) => p.clone(),
            None => exe
                .parent()
                .ok_or("the executable has no directory")?
                .join("snapcache"),
        };
        if !snapcache.is_file() {
            return Err(format!(
                "no snapcache binary at {} (build it, or pass --snapcache PATH)",
                snapcache.display()
            )
            .into());
        }
        let seed = o.seed.unwrap_or_else(clock_seed);
        let base = tempfile::Builder::new()
            .prefix("snapcache-stress-")
            .tempdir()?;
        let scratch = base.path().join("payloads");
        std::fs::create_dir(&scratch)?;
        let store = match &o.store {
            Some(dir) => {
                if std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some()) {
                    return Err(format!(
                        "--store {} is not empty: the stress needs a new store (every read must be one of its own payloads)",
                        dir.display()
                    )
                    .into());
                }
                dir.clone()
            }
            None => base.path().join("store"),
        };
        let mut shared = Shared::new(
            snapcache.clone(),
            store.clone(),
            o.lock_backend.clone(),
            base.path().join("published"),
        );
        shared.keep = o.keep;
        let refreshes = o
            .refreshes
            .or(if o.duration.is_some() { None } else { Some(8) });
        let plan = Plan {
            seed,
            refreshes,
            deadline: o
                .duration
                .map(|d| shared.started + Duration::from_secs_f64(d)),
            kill_probability: o.kill_probability,
            max_bytes: o.max_bytes,
            exec_fraction: o.exec_fraction,
            max_kill_delay: Duration::from_millis(o.max_kill_delay_ms),
            lock_timeout_secs: o.lock_timeout,
            hang_limit: Duration::from_secs(o.lock_timeout + 120),
        };
        let kinds: Vec<ReaderKind> = (0..o.readers)
            .map(|i| match o.reader_kind {
                ReaderKind::Mixed if i % 2 == 0 => ReaderKind::Cli,
                ReaderKind::Mixed => ReaderKind::Library,
                other => other,
            })
            .collect();
        if !o.json {
            eprintln!(
                "snapcache-stress: seed {seed}, store {}, snapcache {}",
                store.display(),
                snapcache.display()
            );
        }
        let estimator = Mutex::new(Estimator::default());
        let pause = Duration::from_millis(o.read_pause_ms);
        let reaper_stop = std::sync::atomic::AtomicBool::new(false);

        std::thread::scope(|scope| {
            scope.spawn(|| {
                while !reaper_stop.load(Ordering::Relaxed) {
                    shared.procs.reap_orphans();
                    std::thread::sleep(Duration::from_millis(100));
                }
            });
            let mut background = Vec::new();
            for (i, kind) in kinds.iter().enumerate() {
                let (shared, exe) = (&shared, &exe);
                background.push(match kind {
                    ReaderKind::Library => {
                        scope.spawn(move || reader::library_reader(shared, i, exe, pause))
                    }
                    _ => scope.spawn(move || reader::cli_reader(shared, i, pause)),
                });
            }
            background.push(scope.spawn(|| monitor::run(&shared)));
            if o.verify_during {
                background.push(scope.spawn(|| monitor::verifier(&shared)));
            }
            let writers: Vec<_> = (0..o.writers)
                .map(|i| {
                    let (shared, plan, scratch, estimator) = (&shared, &plan, &scratch, &estimator);
                    scope.spawn(move || writer::run(shared, plan, i, scratch, estimator))
                })
                .collect();
            let mut last_progress = Instant::now();
            while !writers.iter().all(|w| w.is_finished()) {
                std::thread::sleep(Duration::from_millis(100));
                if o.progress_secs > 0
                    && last_progress.elapsed() >= Duration::from_secs(o.progress_secs)
                {
                    last_progress = Instant::now();
                    eprintln!("{}", report::progress_line(&shared));
                }
            }
            shared.stop.store(true, Ordering::Relaxed);
            for handle in writers.into_iter().chain(background) {
                if handle.join().is_err() {
                    shared.violation("tool-error", "a thread of the tool panicked".into());
                }
            }
            reaper_stop.store(true, Ordering::Relaxed);
        });
        let run_secs = shared.elapsed_secs();
        let checks = final_checks(&shared, &plan, &scratch);
        shared.procs.kill_orphans();
        let report = Report::build(
            &shared,
            Config {
                writers: o.writers,
                refreshes_per_writer: refreshes,
                readers: o.readers,
                cli_readers: kinds.iter().filter(|k| **k == ReaderKind::Cli).count() as u64,
                library_readers: kinds.iter().filter(|k| **k == ReaderKind::Library).count() as u64,
                duration_secs: o.duration,
                kill_probability: o.kill_probability,
                max_bytes: o.max_bytes,
                exec_fraction: o.exec_fraction,
                max_kill_delay_ms: o.max_kill_delay_ms,
                lock_timeout_secs: o.lock_timeout,
                seed,
                store: store.clone(),
                snapcache: snapcache.clone(),
                lock_backend: o.lock_backend.clone(),
                keep: o.keep,
                subreaper: shared.procs.subreaper,
            },
            run_secs,
            checks,
        );
        let kept = if !report.ok || o.keep_store {
            if o.store.is_none() {
                Some(base.keep())
            } else {
                None
            }
        } else {
            None
        };
        if o.json {
            println!("{}", serde_json::to_string(&report)?);
        } else {
            print!("{}", report.human());
        }
        if let Some(dir) = kept {
            eprintln!(
                "snapcache-stress: kept the store and scratch files in {}",
                dir.display()
            );
        }
        Ok(report.ok)
    }

    fn clock_seed() -> u64 {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or_default();
        nanos ^ (u64::from(std::process::id()) << 32)
    }

    /// The checks after the last writer: one more refresh, temp files,
    /// `verify`, `history`, and the final content through both read paths.
    fn final_checks(shared: &Shared, plan: &Plan, scratch: &Path) -> FinalChecks {
        let mut checks = FinalChecks {
            max_generation_before: shared.max_generation(),
            ..FinalChecks::default()
        };
        let final_payload = match writer::final_refresh(shared, plan, scratch) {
            Ok((data, generation)) => {
                checks.refresh_ok = true;
                checks.generation = Some(generation);
                if generation <= checks.max_generation_before {
                    shared.violation(
                        "final-refresh",
                        format!(
                            "the final refresh got generation {generation}, not above {} seen before",
                            checks.max_generation_before
                        ),
                    );
                }
                Some(data)
            }
            Err(e) => {
                shared.violation("final-refresh", format!("the final refresh failed: {e}"));
                None
            }
        };

        // Temp files: the final refresh swept tmp/ and must leave nothing.
        checks.temp_files = std::fs::read_dir(shared.store.join("tmp"))
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        if !checks.temp_files.is_empty() {
            shared.violation(
                "temp-files",
                format!(
                    "{} file(s) left in {}: {:?}",
                    checks.temp_files.len(),
                    shared.store.join("tmp").display(),
                    checks.temp_files
                ),
            );
        }

        // verify
        let start = Instant::now();
        let mut cmd = shared.snapcache(["--json", "verify"]);
        match Running::start(&shared.procs, &mut cmd).and_then(|r| r.wait(start, plan.hang_limit)) {
            Ok(f) => {
                checks.verify_exit_code = f.status.code();
                match serde_json::from_slice::<serde_json::Value>(&f.stdout) {
                    Ok(v) => {
                        checks.verify_ok = v["ok"] == true && f.status.success();
                        checks.verify_problems = v["problems"].as_array().map_or(0, Vec::len);
                        checks.verify_reclaimable = v["reclaimable"].as_array().map_or(0, Vec::len);
                        if !checks.verify_ok {
                            shared.violation("verify", format!("`snapcache verify`: {v}"));
                        }
                    }
                    Err(e) => shared.violation(
                        "verify",
                        format!(
                            "`snapcache verify` exit {:?}, output not JSON ({e}): {}",
                            f.status.code(),
                            tail(&f.stderr, 400)
                        ),
                    ),
                }
            }
            Err(e) => shared.violation("tool-error", format!("running verify: {e}")),
        }

        // history: strictly increasing, the final generation current.
        let mut seen = Seen::default();
        match monitor::history(shared, &mut seen, "final history") {
            Ok(current) => {
                checks.history_ok = checks.generation.is_none_or(|g| g == current);
                if !checks.history_ok {
                    shared.violation(
                        "final-history",
                        format!("history marks generation {current} current, not the final one"),
                    );
                }
            }
            Err(problem) => shared.violation(
                "final-history",
                problem.unwrap_or_else(|| "no store after the run".into()),
            ),
        }

        // The final content through `show` and through the library.
        if let Some(data) = final_payload {
            let start = Instant::now();
            let mut cmd = shared.snapcache(["show"]);
            match Running::start(&shared.procs, &mut cmd)
                .and_then(|r| r.wait(start, plan.hang_limit))
            {
                Ok(f) => {
                    checks.show_matches = f.status.success() && f.stdout == data;
                    if !checks.show_matches {
                        shared.violation(
                            "final-read",
                            format!(
                                "`snapcache show` after the final refresh: exit {:?}, {} bytes, {}",
                                f.status.code(),
                                f.stdout.len(),
                                if f.stdout == data {
                                    "same bytes"
                                } else {
                                    "not the final payload"
                                }
                            ),
                        );
                    }
                }
                Err(e) => shared.violation("tool-error", format!("running show: {e}")),
            }
            let read = snapcache::Store::open(snapcache::StoreOptions::new(&shared.store))
                .and_then(|s| s.read_current());
            match read {
                Ok(s) if s.data == data && Some(s.generation) == checks.generation => {
                    checks.library_matches = true;
                }
                Ok(s) => shared.violation(
                    "final-read",
                    format!(
                        "the library read generation {} ({} bytes), not the final payload",
                        s.generation,
                        s.data.len()
                    ),
                ),
                Err(e) => shared.violation(
                    "final-read",
                    format!("library read after the final refresh: {e}"),
                ),
            }
        }
        checks
    }
}
