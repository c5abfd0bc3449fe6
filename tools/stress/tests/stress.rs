//! A short round of the stress tool (`snapcache-stress`, tools/stress):
//! writer processes killed with SIGKILL at random moments while reader
//! processes read continuously; the tool checks the invariants and reports
//! them as JSON, which this test asserts on. A second test proves the tool
//! is not blind: against a deliberately broken `snapcache` it must fail.

// Test code fails loudly by design: a panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

const STRESS: &str = env!("CARGO_BIN_EXE_snapcache-stress");

/// The `snapcache` binary under test, built by cargo for this run.
///
/// It is a binary of another package (`snapcache`), for which cargo sets no
/// `CARGO_BIN_EXE_*`: building it here (a no-op when `cargo test` at the
/// workspace root has just built it) means the test never runs a stale or
/// missing binary, even under `cargo test -p snapcache-stress`.
fn snapcache() -> &'static str {
    static PATH: OnceLock<String> = OnceLock::new();
    PATH.get_or_init(|| {
        let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
        let out = Command::new(env!("CARGO"))
            .args([
                "build",
                "--locked",
                "--quiet",
                "-p",
                "snapcache",
                "--bin",
                "snapcache",
                "--message-format",
                "json-render-diagnostics",
            ])
            .current_dir(&workspace)
            .stderr(Stdio::inherit())
            .output()
            .expect("run cargo build for the snapcache binary");
        assert!(out.status.success(), "cargo build -p snapcache failed");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "snapcache")
            .find_map(|m| m["executable"].as_str().map(str::to_owned))
            .expect("cargo build reported the snapcache executable")
    })
}

/// Runs the stress tool with `--json`; fails the test after `limit`.
fn stress(args: &[&str], limit: Duration) -> (Output, Value) {
    let mut child = Command::new(STRESS)
        .args(args)
        .args(["--json", "--progress-secs", "0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn snapcache-stress");
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut buf);
            }
            buf
        })
    };
    let stdout = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let stderr = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("snapcache-stress did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = Output {
        status,
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    };
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "the report must be one JSON object ({e}); stdout {:?}, stderr {:?}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out, report)
}

fn n(report: &Value, path: &str) -> u64 {
    report
        .pointer(path)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("{path} missing in the report: {report}"))
}

#[test]
fn a_short_stress_run_with_sigkilled_writers_keeps_every_invariant() {
    // Seed 1 plans 6 kills among the 24 refreshes (the plan is seeded; where
    // each kill lands is up to the scheduler).
    let (out, report) = stress(
        &[
            "--writers",
            "3",
            "--refreshes",
            "8",
            "--readers",
            "2",
            "--max-bytes",
            "2097152",
            "--kill-probability",
            "0.2",
            "--seed",
            "1",
            "--snapcache",
            snapcache(),
        ],
        Duration::from_secs(120),
    );
    let pretty = serde_json::to_string_pretty(&report).unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "every invariant must hold: {pretty}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(report["ok"], true, "{pretty}");
    assert_eq!(report["failures"], serde_json::json!([]), "{pretty}");

    // The invariants.
    assert_eq!(n(&report, "/reads/torn"), 0, "{pretty}");
    assert_eq!(n(&report, "/reads/failed"), 0, "{pretty}");
    assert_eq!(n(&report, "/reads/not_json"), 0, "{pretty}");
    assert_eq!(n(&report, "/refreshes/failed"), 0, "{pretty}");
    assert_eq!(n(&report, "/refreshes/timed_out"), 0, "{pretty}");
    assert_eq!(n(&report, "/refreshes/hung"), 0, "{pretty}");
    assert_eq!(n(&report, "/generations/duplicates"), 0, "{pretty}");
    assert_eq!(n(&report, "/generations/conflicts"), 0, "{pretty}");
    assert_eq!(n(&report, "/generations/regressions"), 0, "{pretty}");
    assert_eq!(n(&report, "/generations/history_violations"), 0, "{pretty}");
    assert_eq!(report["final"]["refresh_ok"], true, "{pretty}");
    assert_eq!(report["final"]["verify_ok"], true, "{pretty}");
    assert_eq!(report["final"]["verify_problems"], 0, "{pretty}");
    assert_eq!(
        report["final"]["temp_files"],
        serde_json::json!([]),
        "{pretty}"
    );
    assert_eq!(report["final"]["history_ok"], true, "{pretty}");
    assert_eq!(report["final"]["show_matches"], true, "{pretty}");
    assert_eq!(report["final"]["library_matches"], true, "{pretty}");
    assert!(
        n(&report, "/final/generation") > n(&report, "/generations/max_seen_during_run"),
        "{pretty}"
    );

    // Not vacuous: writers were killed, refreshes got through, both kinds
    // of readers read many times, history was polled.
    assert_eq!(n(&report, "/refreshes/attempted"), 24, "{pretty}");
    assert!(n(&report, "/kills/total") >= 1, "{pretty}");
    assert!(n(&report, "/refreshes/succeeded") > 0, "{pretty}");
    assert_eq!(
        n(&report, "/refreshes/succeeded") + n(&report, "/refreshes/killed"),
        24,
        "every refresh either succeeded or was killed: {pretty}"
    );
    assert!(n(&report, "/reads/total") > 50, "{pretty}");
    assert!(n(&report, "/reads/cli") > 0, "{pretty}");
    assert!(n(&report, "/reads/library") > 0, "{pretty}");
    assert!(n(&report, "/generations/history_checks") > 0, "{pretty}");
    // Successful refreshes (the final one included) had distinct generations.
    assert_eq!(
        n(&report, "/generations/successful_refreshes"),
        n(&report, "/refreshes/succeeded") + 1,
        "{pretty}"
    );
    assert!(
        report["elapsed_secs"].as_f64().unwrap() < 60.0,
        "the short run must stay short: {pretty}"
    );
}

#[test]
fn the_stress_tool_detects_torn_reads_from_a_broken_snapcache() {
    // A `snapcache` whose `show` prints only the first 100 bytes.
    let snapcache = snapcache();
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("snapcache");
    std::fs::write(
        &fake,
        format!(
            "#!/bin/sh\nfor arg in \"$@\"; do\n  if [ \"$arg\" = show ]; then\n    '{snapcache}' \"$@\" | head -c 100\n    exit 0\n  fi\ndone\nexec '{snapcache}' \"$@\"\n"
        ),
    )
    .unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let store = dir.path().join("store");
    let (out, report) = stress(
        &[
            "--store",
            store.to_str().unwrap(),
            "--writers",
            "1",
            "--refreshes",
            "3",
            "--readers",
            "1",
            "--reader-kind",
            "cli",
            "--max-bytes",
            "65536",
            "--kill-probability",
            "0",
            "--seed",
            "2",
            "--snapcache",
            fake.to_str().unwrap(),
        ],
        Duration::from_secs(60),
    );
    let pretty = serde_json::to_string_pretty(&report).unwrap();
    assert_eq!(out.status.code(), Some(1), "{pretty}");
    assert_eq!(report["ok"], false, "{pretty}");
    assert!(n(&report, "/reads/torn") > 0, "{pretty}");
    assert!(report["violations"]["torn-read"]["count"].as_u64().unwrap() > 0);
    assert_eq!(report["final"]["show_matches"], false, "{pretty}");
}
