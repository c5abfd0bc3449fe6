//! The report: one JSON object (`--json`) or a few lines of text.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::PathBuf;
use std::sync::atomic::Ordering;

use serde::Serialize;

use crate::state::{Shared, Violations};

#[derive(Debug, Clone, Serialize)]
pub struct Config {
    pub writers: u64,
    pub refreshes_per_writer: Option<u64>,
    pub readers: u64,
    pub cli_readers: u64,
    pub library_readers: u64,
    pub duration_secs: Option<f64>,
    pub kill_probability: f64,
    pub max_bytes: u64,
    pub exec_fraction: f64,
    pub max_kill_delay_ms: u64,
    pub lock_timeout_secs: u64,
    pub seed: u64,
    pub store: PathBuf,
    pub snapcache: PathBuf,
    pub lock_backend: Option<String>,
    pub keep: Option<u64>,
    /// Whether orphaned `--exec` sources of killed writers are reaped here.
    pub subreaper: bool,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct FinalChecks {
    pub refresh_ok: bool,
    pub generation: Option<u64>,
    pub max_generation_before: u64,
    pub verify_ok: bool,
    pub verify_exit_code: Option<i32>,
    pub verify_problems: usize,
    /// Leftovers `verify` lists as reclaimable (not problems: e.g. the
    /// snapshot the final refresh dropped from retention).
    pub verify_reclaimable: usize,
    pub temp_files: Vec<String>,
    pub history_ok: bool,
    pub show_matches: bool,
    pub library_matches: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Refreshes {
    pub attempted: u64,
    pub succeeded: u64,
    pub timed_out: u64,
    pub killed: u64,
    pub failed: u64,
    pub hung: u64,
    pub sources_file: u64,
    pub sources_exec_cat: u64,
    pub sources_exec_split: u64,
    pub bytes_offered: u64,
    pub bytes_published: u64,
    /// The longest lock wait a successful refresh reported.
    pub max_lock_wait_ms: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Kills {
    /// Writers that died of our SIGKILL.
    pub total: u64,
    pub planned: u64,
    /// Planned, but the writer had exited already.
    pub missed: u64,
    /// Planned kills by timing (see tools/stress/src/writer.rs).
    pub planned_by_timing: BTreeMap<String, u64>,
    /// Kills that landed, by timing.
    pub by_timing: BTreeMap<String, u64>,
    /// The system call each victim was in when the signal was sent.
    pub in_syscall: BTreeMap<String, u64>,
    /// The victim was the lock holder (per `lock.holder`) when killed.
    pub holding_lock: u64,
    pub exec_source: u64,
    /// Killed after the commit point: the payload was seen published later.
    pub published_anyway: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Reads {
    /// Successful, checked reads.
    pub total: u64,
    pub cli: u64,
    pub library: u64,
    /// "Nothing published yet" before the first publish (allowed).
    pub empty_before_first_publish: u64,
    pub failed: u64,
    pub torn: u64,
    pub not_json: u64,
    pub bytes: u64,
    pub per_second: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Generations {
    /// Successful refreshes (the final one included) reporting a generation.
    pub successful_refreshes: usize,
    pub duplicates: u64,
    pub conflicts: u64,
    pub regressions: u64,
    pub history_checks: u64,
    pub history_violations: u64,
    /// `verify` runs while writers were active (`--verify-during`), and failures.
    pub verify_during_run: u64,
    pub verify_during_run_failures: u64,
    pub max_seen_during_run: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Orphans {
    pub reaped: u64,
    pub killed_at_end: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub ok: bool,
    pub failures: Vec<String>,
    pub config: Config,
    pub elapsed_secs: f64,
    pub refreshes: Refreshes,
    pub kills: Kills,
    pub reads: Reads,
    pub generations: Generations,
    #[serde(rename = "final")]
    pub final_checks: FinalChecks,
    pub orphans: Orphans,
    pub violations: BTreeMap<&'static str, Violations>,
}

impl Report {
    pub fn build(shared: &Shared, config: Config, run_secs: f64, checks: FinalChecks) -> Report {
        let c = shared.counters();
        // A run that proves nothing is a failure too.
        if config.readers > 0 && c.reads_cli + c.reads_library == 0 {
            shared.violation("vacuous", "no read succeeded".into());
        }
        if config.kill_probability < 1.0 && c.refreshes_succeeded == 0 {
            shared.violation("vacuous", "no refresh succeeded".into());
        }
        let violations = shared.violations();
        let failures: Vec<String> = violations
            .iter()
            .map(|(kind, v)| format!("{kind}: {} time(s)", v.count))
            .collect();
        let reads_total = c.reads_cli + c.reads_library;
        Report {
            ok: failures.is_empty(),
            failures,
            elapsed_secs: shared.elapsed_secs(),
            refreshes: Refreshes {
                attempted: c.refreshes_attempted,
                succeeded: c.refreshes_succeeded,
                timed_out: c.refreshes_timed_out,
                killed: c.refreshes_killed,
                failed: c.refreshes_failed,
                hung: c.refreshes_hung,
                sources_file: c.sources_file,
                sources_exec_cat: c.sources_exec_cat,
                sources_exec_split: c.sources_exec_split,
                bytes_offered: c.payload_bytes_offered,
                bytes_published: c.payload_bytes_published,
                max_lock_wait_ms: c.max_lock_wait_ms,
            },
            kills: Kills {
                total: c.refreshes_killed,
                planned: c.kills_planned,
                missed: c.kills_missed,
                planned_by_timing: c.kills_planned_by_timing.clone(),
                by_timing: c.kills_by_timing.clone(),
                in_syscall: c.kills_in_syscall.clone(),
                holding_lock: c.kills_holding_lock,
                exec_source: c.kills_exec_source,
                published_anyway: shared.killed_but_published(),
            },
            reads: Reads {
                total: reads_total,
                cli: c.reads_cli,
                library: c.reads_library,
                empty_before_first_publish: c.reads_empty,
                failed: c.reads_failed,
                torn: c.reads_torn,
                not_json: c.reads_not_json,
                bytes: c.bytes_read,
                per_second: if run_secs > 0.0 {
                    (reads_total as f64 / run_secs * 10.0).round() / 10.0
                } else {
                    0.0
                },
            },
            generations: Generations {
                successful_refreshes: shared.success_generation_count(),
                duplicates: c.duplicate_generations,
                conflicts: c.generation_conflicts,
                regressions: c.generation_regressions,
                history_checks: c.history_checks,
                history_violations: c.history_violations,
                verify_during_run: c.verify_checks,
                verify_during_run_failures: c.verify_failures,
                max_seen_during_run: checks.max_generation_before,
            },
            final_checks: checks,
            orphans: Orphans {
                reaped: shared.procs.orphans_reaped.load(Ordering::Relaxed),
                killed_at_end: shared.procs.orphans_killed.load(Ordering::Relaxed),
            },
            violations,
            config,
        }
    }

    pub fn human(&self) -> String {
        let mut s = String::new();
        let (c, r, k, rd, g, f) = (
            &self.config,
            &self.refreshes,
            &self.kills,
            &self.reads,
            &self.generations,
            &self.final_checks,
        );
        let _ = writeln!(
            s,
            "snapcache-stress: {}",
            if self.ok {
                "OK, every invariant held".to_string()
            } else {
                format!("FAILED: {}", self.failures.join("; "))
            }
        );
        let per_writer = c
            .refreshes_per_writer
            .map_or_else(|| "refreshes".to_string(), |n| format!("{n} refreshes"));
        let _ = writeln!(
            s,
            "  run:         {} writers x {per_writer}{}, {} readers ({} cli, {} library), kill probability {}, payloads 1 KiB..{} bytes, seed {}, {:.1} s",
            c.writers,
            c.duration_secs
                .map_or(String::new(), |d| format!(" for {d} s")),
            c.readers,
            c.cli_readers,
            c.library_readers,
            c.kill_probability,
            c.max_bytes,
            c.seed,
            self.elapsed_secs
        );
        let _ = writeln!(
            s,
            "  refreshes:   {} attempted, {} succeeded, {} timed out, {} killed, {} failed, {} hung (sources: {} file, {} exec cat, {} exec split; {} MB published; longest lock wait {} ms)",
            r.attempted,
            r.succeeded,
            r.timed_out,
            r.killed,
            r.failed,
            r.hung,
            r.sources_file,
            r.sources_exec_cat,
            r.sources_exec_split,
            r.bytes_published / 1_000_000,
            r.max_lock_wait_ms
        );
        let _ = writeln!(
            s,
            "  kills:       {} SIGKILLs ({} planned, {} missed as the writer had exited; {} hit the lock holder; {} with --exec sources; {} after the commit point)\n               timed: {}\n               victim's system call: {}",
            k.total,
            k.planned,
            k.missed,
            k.holding_lock,
            k.exec_source,
            k.published_anyway,
            list(k.planned_by_timing.iter().map(|(name, n)| {
                format!(
                    "{} {}/{n} landed",
                    name.get(2..).unwrap_or(name),
                    k.by_timing.get(name).unwrap_or(&0)
                )
            })),
            list(k.in_syscall.iter().map(|(name, n)| format!("{name} {n}")))
        );
        let _ = writeln!(
            s,
            "  reads:       {} ({} cli, {} library; {:.0}/s, {} MB), {} failed, {} torn, {} not JSON, {} before the first publish",
            rd.total,
            rd.cli,
            rd.library,
            rd.per_second,
            rd.bytes / 1_000_000,
            rd.failed,
            rd.torn,
            rd.not_json,
            rd.empty_before_first_publish
        );
        let _ = writeln!(
            s,
            "  generations: {} successful refreshes, {} duplicate generations, {} conflicts, {} regressions; history polled {} times, {} violations; verify during the run {} times, {} failed; highest seen {}",
            g.successful_refreshes,
            g.duplicates,
            g.conflicts,
            g.regressions,
            g.history_checks,
            g.history_violations,
            g.verify_during_run,
            g.verify_during_run_failures,
            g.max_seen_during_run
        );
        let _ = writeln!(
            s,
            "  final:       refresh {} (generation {}), verify {} ({} problems, {} reclaimable), {} temp files left, history {}, show {}, library read {}",
            if f.refresh_ok { "ok" } else { "FAILED" },
            f.generation.map_or("-".to_string(), |g| g.to_string()),
            if f.verify_ok { "ok" } else { "FAILED" },
            f.verify_problems,
            f.verify_reclaimable,
            f.temp_files.len(),
            if f.history_ok { "ok" } else { "FAILED" },
            if f.show_matches {
                "matches"
            } else {
                "MISMATCH"
            },
            if f.library_matches {
                "matches"
            } else {
                "MISMATCH"
            }
        );
        let _ = writeln!(
            s,
            "  orphans:     {} --exec sources of killed writers reaped, {} killed at the end{}",
            self.orphans.reaped,
            self.orphans.killed_at_end,
            if c.subreaper {
                ""
            } else {
                " (not a subreaper: orphans went to PID 1)"
            }
        );
        for (kind, v) in &self.violations {
            let _ = writeln!(s, "  violation {kind} ({} time(s)):", v.count);
            for example in &v.examples {
                let _ = writeln!(s, "    {example}");
            }
        }
        s
    }
}

/// `a, b, c`, or `-` when empty.
fn list(items: impl Iterator<Item = String>) -> String {
    let items: Vec<String> = items.collect();
    if items.is_empty() {
        "-".into()
    } else {
        items.join(", ")
    }
}

/// One progress line for stderr.
pub fn progress_line(shared: &Shared) -> String {
    let c = shared.counters();
    format!(
        "[{:>6.0} s] refreshes {} ok / {} attempted, {} killed, {} timed out, {} failed; reads {} ok, {} failed, {} torn; violations {}",
        shared.elapsed_secs(),
        c.refreshes_succeeded,
        c.refreshes_attempted,
        c.refreshes_killed,
        c.refreshes_timed_out,
        c.refreshes_failed,
        c.reads_cli + c.reads_library,
        c.reads_failed,
        c.reads_torn,
        shared.violations().values().map(|v| v.count).sum::<u64>()
    )
}
