//! The monitor: polls `snapcache --json history` during the run and checks
//! that the retained generations are strictly increasing, exactly one is
//! current, every one holds a payload that was offered, and neither the
//! current nor the newest generation ever goes backwards.

use std::time::{Duration, Instant};

use crate::procs::Running;
use crate::state::{NO_STORE_MESSAGE, Shared, parse_hex, tail};

const POLL: Duration = Duration::from_millis(200);

/// What the previous `history` showed.
#[derive(Debug, Default, Clone, Copy)]
pub struct Seen {
    pub current: u64,
    pub newest: u64,
}

/// Polls `history` until the run stops.
pub fn run(shared: &Shared) {
    let mut seen = Seen::default();
    while !shared.stopping() {
        let start = Instant::now();
        match history(shared, &mut seen, "history during the run") {
            Ok(_) | Err(None) => {}
            Err(Some(problem)) => {
                shared.count(|c| c.history_violations += 1);
                shared.violation("history", problem);
            }
        }
        let elapsed = start.elapsed();
        if elapsed < POLL {
            std::thread::sleep(POLL - elapsed);
        }
    }
}

/// `--verify-during`: runs `snapcache verify` back to back while writers
/// are active (once something is published). The store is healthy, so any
/// problem it reports is a violation.
pub fn verifier(shared: &Shared) {
    while !shared.stopping() {
        if shared.published_before(Instant::now()) {
            verify(shared);
        } else {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

fn verify(shared: &Shared) {
    let start = Instant::now();
    let mut cmd = shared.snapcache(["--json", "verify"]);
    let finished = match Running::start(&shared.procs, &mut cmd)
        .and_then(|r| r.wait(start, Duration::from_secs(60)))
    {
        Ok(f) => f,
        Err(e) => {
            shared.violation("tool-error", format!("running verify: {e}"));
            return;
        }
    };
    shared.count(|c| c.verify_checks += 1);
    if !finished.status.success() {
        shared.count(|c| c.verify_failures += 1);
        shared.violation(
            "verify-during-run",
            format!(
                "`snapcache verify` during refreshes: exit {:?}: {}",
                finished.status.code(),
                tail(&finished.stdout, 800)
            ),
        );
    }
}

/// Runs `history` and checks it against `seen`; returns the current
/// generation. `Err(None)`: nothing published yet (and none known to be).
pub fn history(shared: &Shared, seen: &mut Seen, what: &str) -> Result<u64, Option<String>> {
    let start = Instant::now();
    let mut cmd = shared.snapcache(["--json", "history"]);
    let finished = Running::start(&shared.procs, &mut cmd)
        .and_then(|r| r.wait(start, Duration::from_secs(60)))
        .map_err(|e| Some(format!("{what}: running snapcache: {e}")))?;
    if !finished.status.success() {
        if String::from_utf8_lossy(&finished.stderr).contains(NO_STORE_MESSAGE)
            && !shared.published_before(start)
        {
            return Err(None);
        }
        return Err(Some(format!(
            "{what}: exit {:?}: {}",
            finished.status.code(),
            tail(&finished.stderr, 600)
        )));
    }
    shared.count(|c| c.history_checks += 1);
    let value: serde_json::Value = serde_json::from_slice(&finished.stdout)
        .map_err(|e| Some(format!("{what}: output is not JSON: {e}")))?;
    let entries = value["generations"]
        .as_array()
        .ok_or_else(|| Some(format!("{what}: no generations array: {value}")))?;
    let mut problems = Vec::new();
    let mut previous = 0u64;
    let mut current = Vec::new();
    for entry in entries {
        let (Some(generation), Some(hash)) = (
            entry["generation"].as_u64(),
            entry["hash"].as_str().and_then(parse_hex),
        ) else {
            problems.push(format!("malformed entry {entry}"));
            continue;
        };
        if generation <= previous {
            problems.push(format!(
                "generation {generation} listed after {previous} (not strictly increasing)"
            ));
        }
        previous = generation;
        if !shared.is_offered(&hash) {
            problems.push(format!(
                "generation {generation} holds content that was never offered"
            ));
        }
        shared.observe_generation(generation, hash, what);
        if entry["current"] == true {
            current.push(generation);
        }
    }
    let newest = previous;
    match current.as_slice() {
        [one] => {
            if *one < seen.current {
                problems.push(format!(
                    "current generation went back from {} to {one}",
                    seen.current
                ));
                shared.count(|c| c.generation_regressions += 1);
            }
            seen.current = seen.current.max(*one);
        }
        other => problems.push(format!("{} generations marked current", other.len())),
    }
    if newest < seen.newest {
        problems.push(format!(
            "newest retained generation went back from {} to {newest}",
            seen.newest
        ));
    }
    seen.newest = seen.newest.max(newest);
    if problems.is_empty() {
        shared.note_published();
        Ok(current.first().copied().unwrap_or_default())
    } else {
        Err(Some(format!(
            "{what}: {}; history {value}",
            problems.join("; ")
        )))
    }
}
