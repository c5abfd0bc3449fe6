//! Where a whole-process publish spends its time beyond the floor, measured
//! with `strace -f -c -w` (wall-clock time per system call, summed over the
//! process and its threads): `snapcache refresh`, `refresh --raw` and
//! `floor publish` on the same freshly stamped payload file, a few rounds
//! each. Skipped, with the reason, where `strace` is missing or not allowed.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::contenders::Result;
use crate::payload::Payload;
use crate::stats::Samples;

/// Per-command totals, per round.
#[derive(Debug, Clone, Default)]
pub struct Profile {
    /// Label of the command.
    pub label: &'static str,
    /// Wall time of the whole process under strace.
    pub wall: Samples,
    /// Per system call: (calls, seconds), summed over the rounds.
    pub calls: BTreeMap<String, (u64, f64)>,
    /// Rounds summed.
    pub rounds: usize,
}

impl Attribution {
    /// The profile of snapcache's command (the first) and of the floor's.
    pub fn pair(&self) -> Option<(&Profile, &Profile)> {
        let floor = self
            .profiles
            .iter()
            .find(|p| p.label.starts_with("floor"))?;
        Some((self.profiles.first()?, floor))
    }
}

impl Profile {
    /// Calls per round and time per round of `syscall`.
    pub fn per_round(&self, syscall: &str) -> (f64, Duration) {
        let (c, s) = self.calls.get(syscall).copied().unwrap_or((0, 0.0));
        let n = self.rounds.max(1) as f64;
        (c as f64 / n, Duration::from_secs_f64(s / n))
    }

    /// Time per round in all system calls.
    pub fn total(&self) -> Duration {
        let s: f64 = self.calls.values().map(|v| v.1).sum();
        Duration::from_secs_f64(s / self.rounds.max(1) as f64)
    }
}

/// The attribution at one payload size.
#[derive(Debug, Clone)]
pub struct Attribution {
    /// What was profiled: "publish" or "show".
    pub what: &'static str,
    /// Requested payload size.
    pub requested: usize,
    /// `snapcache refresh`, `refresh --raw`, `floor publish`.
    pub profiles: Vec<Profile>,
}

/// Whether `strace -f -c -w` works here; the reason when not.
pub fn available() -> std::result::Result<(), String> {
    match Command::new("strace")
        .args(["-f", "-c", "-w", "-o", "/dev/null", "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(format!(
            "strace -f -c -w true failed ({s}); ptrace not permitted?"
        )),
        Err(e) => Err(format!("strace is not available: {e}")),
    }
}

/// Parse the summary table of `strace -c` into (syscall, calls, seconds).
pub fn parse_summary(text: &str) -> Vec<(String, u64, f64)> {
    let mut out = Vec::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 5 || f[0].parse::<f64>().is_err() {
            continue;
        }
        let name = f[f.len() - 1];
        if name == "total" {
            continue;
        }
        let (Ok(secs), Ok(calls)) = (f[1].parse::<f64>(), f[3].parse::<u64>()) else {
            continue;
        };
        out.push((name.to_string(), calls, secs));
    }
    out
}

/// Profile the three publishes at `requested` bytes, `rounds` rounds.
pub fn run(
    bin: &Path,
    floor: &Path,
    dir: &Path,
    requested: usize,
    rounds: usize,
) -> Result<Attribution> {
    std::fs::create_dir_all(dir)?;
    let mut payload = Payload::generate(requested, 90 + requested as u64)?;
    let file = dir.join("payload.json");
    let summary = dir.join("strace.txt");
    let labels = [
        "snapcache refresh",
        "snapcache refresh --raw",
        "floor publish",
    ];
    let stores = [dir.join("json"), dir.join("raw"), dir.join("floor")];
    let mut profiles: Vec<Profile> = labels
        .iter()
        .map(|l| Profile {
            label: l,
            ..Profile::default()
        })
        .collect();
    // One unrecorded round first: the stores exist and hold a generation,
    // as in steady state.
    for round in 0..=rounds {
        payload.stamp(3_000_000 + round as u64);
        std::fs::write(&file, &payload.bytes)?;
        for (i, profile) in profiles.iter_mut().enumerate() {
            let mut cmd = crate::cli::command("strace");
            cmd.args(["-f", "-c", "-w", "-o"]).arg(&summary).arg("--");
            if i == 2 {
                cmd.arg(floor).arg("publish").arg(&stores[2]).arg(&file);
            } else {
                cmd.arg(bin)
                    .arg("--store")
                    .arg(&stores[i])
                    .arg("--quiet")
                    .arg("refresh");
                if i == 1 {
                    cmd.arg("--raw");
                }
                cmd.arg("--from").arg(&file);
            }
            trace_once(&mut cmd, &summary, (round > 0).then_some(profile))?;
        }
        let keep = blake3::hash(&payload.bytes).to_hex();
        crate::contenders::remove_all_but(&stores[2].join("snapshots"), keep.as_str())?;
    }
    let _ = std::fs::remove_dir_all(dir);
    Ok(Attribution {
        what: "publish",
        requested,
        profiles,
    })
}

/// Run `cmd` (an `strace -o SUMMARY ... -- program` command line) with its
/// stdout drained through a pipe; add its summary to `profile` when given.
fn trace_once(cmd: &mut Command, summary: &Path, profile: Option<&mut Profile>) -> Result<()> {
    let t = Instant::now();
    crate::cli::run_drained(cmd)?;
    let d = t.elapsed();
    if let Some(profile) = profile {
        profile.wall.push(d);
        profile.rounds += 1;
        for (name, calls, secs) in parse_summary(&std::fs::read_to_string(summary)?) {
            let e = profile.calls.entry(name).or_insert((0, 0.0));
            e.0 += calls;
            e.1 += secs;
        }
    }
    Ok(())
}

/// Profile `snapcache show`, `floor read` and `cat` of the same snapshot
/// (`store`, `floor_store` and `snapshot_file` as for
/// [`crate::cli::show_run`]), output drained through a pipe.
pub fn run_show(
    bin: &Path,
    floor: &Path,
    store: &Path,
    floor_store: &Path,
    snapshot_file: &Path,
    requested: usize,
    rounds: usize,
) -> Result<Attribution> {
    let summary = store.with_extension("strace.txt");
    let labels = ["snapcache show", "floor read", "cat"];
    let mut profiles: Vec<Profile> = labels
        .iter()
        .map(|l| Profile {
            label: l,
            ..Profile::default()
        })
        .collect();
    for round in 0..=rounds {
        for (i, profile) in profiles.iter_mut().enumerate() {
            let mut cmd = crate::cli::command("strace");
            cmd.args(["-f", "-c", "-w", "-o"]).arg(&summary).arg("--");
            match i {
                0 => cmd
                    .arg(bin)
                    .arg("--store")
                    .arg(store)
                    .arg("--quiet")
                    .arg("show"),
                1 => cmd.arg(floor).arg("read").arg(floor_store),
                _ => cmd.arg("cat").arg(snapshot_file),
            };
            trace_once(&mut cmd, &summary, (round > 0).then_some(profile))?;
        }
    }
    let _ = std::fs::remove_file(&summary);
    Ok(Attribution {
        what: "show",
        requested,
        profiles,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_strace_summaries() {
        let text = "% time     seconds  usecs/call     calls    errors syscall\n\
------ ----------- ----------- --------- --------- ------------------\n\
 98.49    4.766001        2381      2001           unlink\n\
  1.40    0.067596          33      2023         2 statx\n\
------ ----------- ----------- --------- --------- ------------------\n\
100.00    4.839000         1.2      4024         2 total\n";
        let rows = parse_summary(text);
        assert_eq!(
            rows,
            vec![
                ("unlink".to_string(), 2001, 4.766001),
                ("statx".to_string(), 2023, 0.067596)
            ]
        );
    }
}
