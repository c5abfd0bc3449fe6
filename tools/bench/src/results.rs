//! Everything one bench run measured, and the budgets derived from it.

use std::time::Duration;

use crate::cli::{RefreshRun, ShowRun};
use crate::gc::GcRun;
use crate::handoff::HandoffRun;
use crate::readers::ReaderRun;
use crate::runner::Measured;
use crate::stats::{Samples, fmt_bytes, fmt_duration, ms};
use crate::sysinfo::SysInfo;

/// Names of the contenders the budgets compare (must match `Contender::name`).
pub mod names {
    /// The physical floor (verified read).
    pub const FLOOR: &str = "floor";
    /// The floor that unlinks its superseded snapshot inside each write.
    pub const FLOOR_DELETING: &str = "floor, deleting the superseded snapshot alongside";
    /// The floor without fsync and with a plain read.
    pub const REFERENCE: &str = "reference: no fsync, plain read";
    /// snapcache, default options.
    pub const SNAPCACHE: &str = "snapcache";
    /// snapcache without JSON validation.
    pub const SNAPCACHE_RAW: &str = "snapcache (raw)";
}

/// Measurements at one payload size.
#[derive(Debug, Clone)]
pub struct SizeResult {
    /// Requested payload size.
    pub size: usize,
    /// Actual generated size.
    pub actual: usize,
    /// Interleaved latencies per contender.
    pub measured: Vec<Measured>,
    /// Median in-memory blake3 time of the payload.
    pub blake3: Duration,
    /// Median in-memory `serde_json` validation time (`IgnoredAny`).
    pub json_check: Duration,
}

impl SizeResult {
    /// The measurement of contender `name`, if it ran.
    pub fn get(&self, name: &str) -> Option<&Measured> {
        self.measured.iter().find(|m| m.name == name)
    }
}

/// Peak RSS figures for a big payload.
#[derive(Debug, Clone, Default)]
pub struct RssResult {
    /// Payload size.
    pub payload: u64,
    /// The bench process doing nothing (its own floor).
    pub idle: u64,
    /// Library `publish_reader` of the payload file.
    pub publish: u64,
    /// Library `read_current`.
    pub read: u64,
    /// `snapcache refresh --from FILE` under `/usr/bin/time -v`.
    pub cli_refresh: Option<u64>,
    /// `snapcache show` under `/usr/bin/time -v`.
    pub cli_show: Option<u64>,
}

/// A whole run.
#[derive(Debug, Clone, Default)]
pub struct Results {
    /// Quick mode.
    pub quick: bool,
    /// The command line to reproduce.
    pub command: String,
    /// UTC date of the run.
    pub date: String,
    /// Machine.
    pub sys: SysInfo,
    /// Latency per payload size.
    pub sizes: Vec<SizeResult>,
    /// `snapcache show` whole-process, per snapshot size.
    pub show: Vec<ShowRun>,
    /// `snapcache refresh` whole-process against the floor binary, per size.
    pub refresh: Vec<RefreshRun>,
    /// Reader runs.
    pub readers: Vec<ReaderRun>,
    /// Payload size used by the reader runs.
    pub reader_payload: usize,
    /// Lock handoff runs.
    pub handoff: Vec<HandoffRun>,
    /// gc runs.
    pub gc: Vec<GcRun>,
    /// Peak RSS.
    pub rss: Option<RssResult>,
    /// JSON check vs serde_json, per requested payload size.
    pub json_check: Vec<(usize, Vec<crate::jsoncheck::JsonRun>)>,
    /// How each operation's cost grows (payload size, generations, leftovers).
    pub scaling: Vec<crate::scaling::Axis>,
    /// strace attribution of whole-process publishes, per payload size.
    pub attribution: Vec<crate::attribution::Attribution>,
    /// Sections that could not run, with the reason.
    pub failures: Vec<String>,
    /// Wall time of the whole run.
    pub elapsed: Duration,
    /// Wall time per section.
    pub sections: Vec<(String, Duration)>,
    /// Allocator configuration the run used.
    pub allocator: String,
    /// `/proc/loadavg` when the run ended.
    pub load_at_end: String,
    /// CPU time other processes used during the run.
    pub other_cpu: String,
    /// The share of all CPU time that other processes used, when known.
    pub other_share: Option<f64>,
}

/// One budget line.
#[derive(Debug, Clone)]
pub struct Budget {
    /// What is bounded.
    pub name: String,
    /// The measured figure, formatted.
    pub measured: String,
    /// The limit, formatted.
    pub limit: String,
    /// Whether the budget holds.
    pub pass: bool,
}

fn ratio(a: Duration, b: Duration) -> f64 {
    if b.is_zero() {
        f64::INFINITY
    } else {
        a.as_secs_f64() / b.as_secs_f64()
    }
}

impl Results {
    /// Check every budget that has data; budgets without data are listed as
    /// `NOT RUN` misses by the report, never silently dropped.
    pub fn budgets(&self) -> Vec<Budget> {
        let mut out = Vec::new();
        for size in [1 << 20, 8 << 20] {
            let label = fmt_bytes(size as u64);
            let row = self.sizes.iter().find(|s| s.size == size);
            let pair = row.and_then(|r| Some((r.get(names::SNAPCACHE)?, r.get(names::FLOOR)?)));
            match pair {
                Some((s, f)) => {
                    let r = ratio(s.write.median(), f.write.median());
                    out.push(Budget {
                        name: format!("publish ≤ 1.15 × floor at {label} (median)"),
                        measured: format!(
                            "{:.2}× ({} vs {})",
                            r,
                            fmt_duration(s.write.median()),
                            fmt_duration(f.write.median())
                        ),
                        limit: "1.15×".into(),
                        pass: r <= 1.15,
                    });
                    let r = ratio(s.read.median(), f.read.median());
                    out.push(Budget {
                        name: format!(
                            "verified read ≤ 1.10 × floor verified read at {label} (median)"
                        ),
                        measured: format!(
                            "{:.2}× ({} vs {})",
                            r,
                            fmt_duration(s.read.median()),
                            fmt_duration(f.read.median())
                        ),
                        limit: "1.10×".into(),
                        pass: r <= 1.10,
                    });
                }
                None => {
                    out.push(not_run(&format!("publish ≤ 1.15 × floor at {label}")));
                    out.push(not_run(&format!("verified read ≤ 1.10 × floor at {label}")));
                }
            }
        }
        for size in [1 << 20, 8 << 20] {
            let label = fmt_bytes(size as u64);
            let row = self.sizes.iter().find(|s| s.size == size);
            match row.and_then(|r| Some((r.get(names::SNAPCACHE_RAW)?, r.get(names::FLOOR)?))) {
                Some((s, f)) => {
                    let r = ratio(s.write.median(), f.write.median());
                    out.push(Budget {
                        name: format!("raw publish ≤ 1.05 × floor at {label} (median)"),
                        measured: format!(
                            "{:.2}× ({} vs {})",
                            r,
                            fmt_duration(s.write.median()),
                            fmt_duration(f.write.median())
                        ),
                        limit: "1.05×".into(),
                        pass: r <= 1.05,
                    });
                }
                None => out.push(not_run(&format!("raw publish ≤ 1.05 × floor at {label}"))),
            }
        }
        if self.json_check.is_empty() {
            out.push(not_run("JSON check ≥ 2 × serde_json IgnoredAny"));
        }
        for (size, runs) in &self.json_check {
            for r in runs {
                let speedup = r.speedup();
                out.push(Budget {
                    name: format!(
                        "JSON check ≥ 2 × `serde_json::from_slice::<IgnoredAny>`, {} Kopi payload, {} ({})",
                        fmt_bytes(*size as u64),
                        r.style,
                        fmt_bytes(r.bytes as u64)
                    ),
                    measured: format!(
                        "{speedup:.2}× ({:.2} GB/s vs {:.2} GB/s)",
                        r.gbps(r.check),
                        r.gbps(r.serde)
                    ),
                    limit: "2×".into(),
                    pass: speedup >= 2.0,
                });
            }
        }
        for size in [1 << 20, 8 << 20] {
            let label = fmt_bytes(size as u64);
            match self.refresh.iter().find(|r| r.requested == size) {
                Some(r) => {
                    out.push(whole(
                        format!("`snapcache refresh --from F` ≤ 1.15 × `floor publish` at {label}, whole process (median)"),
                        &r.json,
                        &r.floor,
                        1.15,
                    ));
                    out.push(whole(
                        format!("`snapcache refresh --raw --from F` ≤ 1.05 × `floor publish` at {label}, whole process (median)"),
                        &r.raw,
                        &r.floor,
                        1.05,
                    ));
                }
                None => {
                    out.push(not_run(&format!(
                        "`snapcache refresh` ≤ 1.15 × floor at {label}"
                    )));
                    out.push(not_run(&format!(
                        "`snapcache refresh --raw` ≤ 1.05 × floor at {label}"
                    )));
                }
            }
        }
        for size in [1 << 20, 8 << 20] {
            let label = fmt_bytes(size as u64);
            match self.show.iter().find(|r| r.requested == size) {
                Some(c) => {
                    out.push(whole(
                        format!("`snapcache show` ≤ 2 × `cat` at {label} (median)"),
                        &c.show,
                        &c.cat,
                        2.0,
                    ));
                    out.push(whole(
                        format!("`snapcache show` ≤ 1.05 × `floor read` (verified) at {label}, whole process (median)"),
                        &c.show,
                        &c.floor,
                        1.05,
                    ));
                }
                None => {
                    out.push(not_run(&format!("`snapcache show` ≤ 2 × `cat` at {label}")));
                    out.push(not_run(&format!(
                        "`snapcache show` ≤ 1.05 × `floor read` at {label}"
                    )));
                }
            }
        }
        if self.handoff.is_empty() {
            out.push(not_run("lock handoff"));
        }
        for h in &self.handoff {
            let (med, p99) = (h.handoffs.median(), h.handoffs.p99());
            out.push(Budget {
                name: format!("lock handoff median ≤ 5 ms, {} processes", h.processes),
                measured: fmt_duration(med),
                limit: "5 ms".into(),
                pass: !h.handoffs.is_empty() && ms(med) <= 5.0,
            });
            out.push(Budget {
                name: format!("lock handoff p99 ≤ 50 ms, {} processes", h.processes),
                measured: fmt_duration(p99),
                limit: "50 ms".into(),
                pass: !h.handoffs.is_empty() && ms(p99) <= 50.0,
            });
        }
        match self
            .gc
            .iter()
            .find(|g| g.planted == 10_000 && g.file_size > 0)
        {
            Some(g) => out.push(Budget {
                name: "gc of 10,000 unreferenced snapshots ≤ 1 s".into(),
                measured: format!("{} ({} removed)", fmt_duration(g.elapsed), g.removed),
                limit: "1 s".into(),
                pass: g.elapsed <= Duration::from_secs(1) && g.removed == g.planted,
            }),
            None => out.push(not_run("gc of 10,000 unreferenced snapshots")),
        }
        match &self.rss {
            Some(r) => {
                let mib = |b: u64| format!("{:.1} MiB", b as f64 / (1 << 20) as f64);
                let payload = fmt_bytes(r.payload);
                out.push(Budget {
                    name: format!("publish peak RSS ≤ 32 MiB, {payload} payload (library)"),
                    measured: mib(r.publish),
                    limit: "32 MiB".into(),
                    pass: r.publish <= 32 << 20,
                });
                if let Some(cli) = r.cli_refresh {
                    out.push(Budget {
                        name: format!(
                            "publish peak RSS ≤ 32 MiB, {payload} payload (`snapcache refresh`)"
                        ),
                        measured: mib(cli),
                        limit: "32 MiB".into(),
                        pass: cli <= 32 << 20,
                    });
                }
                let limit = r.payload + (16 << 20);
                out.push(Budget {
                    name: format!("read peak RSS ≤ payload + 16 MiB, {payload} payload (library)"),
                    measured: mib(r.read),
                    limit: mib(limit),
                    pass: r.read <= limit,
                });
                if let Some(cli) = r.cli_show {
                    out.push(Budget {
                        name: format!("`snapcache show` peak RSS ≤ 32 MiB, {payload} payload"),
                        measured: mib(cli),
                        limit: "32 MiB".into(),
                        pass: cli <= 32 << 20,
                    });
                }
            }
            None => out.push(not_run("peak RSS")),
        }
        if self.scaling.is_empty() {
            out.push(not_run("scaling: nothing grows faster than linearly"));
        }
        for axis in &self.scaling {
            let slopes: Vec<(&str, f64)> = axis
                .series
                .iter()
                .filter_map(|(op, ys)| Some((*op, crate::scaling::loglog_slope(&axis.xs, ys)?)))
                .collect();
            let worst = slopes
                .iter()
                .cloned()
                .fold(None::<(&str, f64)>, |acc, s| match acc {
                    Some(a) if a.1 >= s.1 => Some(a),
                    _ => Some(s),
                });
            match worst {
                Some((op, slope)) => out.push(Budget {
                    name: format!(
                        "scaling with {}: no operation grows faster than linearly (largest log-log slope)",
                        axis.name
                    ),
                    measured: format!("{slope:.2} ({op})"),
                    limit: format!("{SLOPE_LIMIT}"),
                    pass: slope <= SLOPE_LIMIT,
                }),
                None => out.push(not_run(&format!("scaling with {}", axis.name))),
            }
        }
        let mut any_readers = false;
        for readers in [1, 2] {
            let idle = self
                .readers
                .iter()
                .find(|r| r.readers == readers && !r.with_writer);
            let busy = self
                .readers
                .iter()
                .find(|r| r.readers == readers && r.with_writer);
            if let (Some(i), Some(b)) = (idle, busy) {
                any_readers = true;
                let r = ratio(b.latencies.p99(), i.latencies.p99());
                out.push(Budget {
                    name: format!("reader p99 during writes ≤ 2 × idle p99, {readers} reader(s)"),
                    measured: format!(
                        "{:.2}× ({} vs {})",
                        r,
                        fmt_duration(b.latencies.p99()),
                        fmt_duration(i.latencies.p99())
                    ),
                    limit: "2×".into(),
                    pass: r <= 2.0,
                });
            }
        }
        if !any_readers {
            out.push(not_run("reader p99 during writes"));
        }
        out
    }
}

/// The largest log-log slope accepted as "linear": 1 plus what a few
/// noisy medians on a loaded machine can add.
pub const SLOPE_LIMIT: f64 = 1.15;

/// A ratio-of-medians budget `measured ≤ limit × baseline`.
fn whole(name: String, measured: &Samples, baseline: &Samples, limit: f64) -> Budget {
    let r = ratio(measured.median(), baseline.median());
    Budget {
        name,
        measured: format!(
            "{:.2}× ({} vs {})",
            r,
            fmt_duration(measured.median()),
            fmt_duration(baseline.median())
        ),
        limit: format!("{limit}×"),
        pass: !measured.is_empty() && r <= limit,
    }
}

fn not_run(name: &str) -> Budget {
    Budget {
        name: name.to_string(),
        measured: "NOT RUN".into(),
        limit: "-".into(),
        pass: false,
    }
}
