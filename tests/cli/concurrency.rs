//! Concurrent writers in separate processes.

use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::common::*;

/// Starts a refresh that holds the lock for `secs` while its source runs.
fn slow_writer(store: &TestStore, secs: f64, payload: &str) -> std::process::Child {
    let script = format!("sleep {secs}; printf '%s' '{payload}'");
    store
        .command(&["--json", "refresh", "--exec", "sh", "-c", &script])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn slow writer")
}

#[test]
fn a_second_writer_waits_until_the_first_finishes() {
    let store = TestStore::new();
    let first = slow_writer(&store, 2.0, "[\"first\"]");
    let status = store.wait_until_locked();
    let holder_pid = status["lock"]["pid"]
        .as_u64()
        .expect("status names the holder pid");
    assert_eq!(
        holder_pid,
        first.id() as u64,
        "status --json reports the holder's pid"
    );
    assert!(
        status["lock"]["command"]
            .as_str()
            .unwrap()
            .contains("refresh --exec sh"),
        "the program, never its arguments (issue 11: privacy): {status}"
    );

    let started = Instant::now();
    let second = store.payload("second", b"[\"second\"]");
    let (out, outcome) = store.json(&["refresh", "--from", second.to_str().unwrap()]);
    let elapsed = started.elapsed();
    let first_out = wait_output(first, COMMAND_TIMEOUT);
    assert_eq!(code(&first_out), 0, "{}", text(&first_out.stderr));
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    let first_outcome: serde_json::Value = serde_json::from_slice(&first_out.stdout).unwrap();
    assert_eq!(
        first_outcome["generation"], 1,
        "the first writer publishes first"
    );
    assert_eq!(
        outcome["generation"], 2,
        "the second writer publishes after it"
    );
    assert!(
        outcome["waited_ms"].as_u64().unwrap() >= 1000,
        "it waited for the lock: {outcome}"
    );
    assert!(
        elapsed >= Duration::from_millis(1000),
        "it waited: {elapsed:?}"
    );
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!("pid {}", holder_pid)),
        "the wait message names the holder: {stderr}"
    );
    assert!(
        stderr.contains("refresh --exec sh") && !stderr.contains("sleep 2"),
        "the wait message names the holder's program, not its arguments: {stderr}"
    );
    assert!(
        stderr.contains("acquired the writer lock after"),
        "{stderr}"
    );
    assert_eq!(store.show(), b"[\"second\"]");
}

#[test]
fn lock_timeout_exits_75_after_the_budget() {
    let store = TestStore::new();
    let holder = slow_writer(&store, 3.0, "[1]");
    store.wait_until_locked();
    let started = Instant::now();
    let out = store.run(&[
        "refresh",
        "--lock-timeout",
        "1",
        "--from",
        store.payload("p", b"[2]").to_str().unwrap(),
    ]);
    let elapsed = started.elapsed();
    let stderr = text(&out.stderr);
    assert_eq!(code(&out), 75, "{stderr}");
    assert!(
        elapsed >= Duration::from_millis(950) && elapsed < Duration::from_millis(2500),
        "gave up after about 1 s: {elapsed:?}"
    );
    assert!(
        stderr.contains("budget 1 s from --lock-timeout"),
        "names budget and source: {stderr}"
    );
    assert!(
        stderr.contains(&format!("pid {}", holder.id())),
        "names the holder: {stderr}"
    );
    assert!(
        stderr.contains("snapcache status"),
        "says what to do: {stderr}"
    );
    let out = wait_output(holder, COMMAND_TIMEOUT);
    assert_eq!(code(&out), 0);
    assert_eq!(
        store.show(),
        b"[1]",
        "the timed-out writer published nothing"
    );
}

#[test]
fn lock_timeout_from_the_environment_and_try_once() {
    let store = TestStore::new();
    let holder = slow_writer(&store, 2.0, "[1]");
    store.wait_until_locked();
    let payload = store.payload("p", b"[2]");
    let mut cmd = store.command(&["refresh", "--from", payload.to_str().unwrap()]);
    cmd.env("SNAPCACHE_LOCK_TIMEOUT", "0.3");
    let out = run_with_timeout(cmd);
    assert_eq!(code(&out), 75);
    assert!(
        text(&out.stderr).contains("from SNAPCACHE_LOCK_TIMEOUT"),
        "{}",
        text(&out.stderr)
    );

    let mut cmd = store.command(&[
        "refresh",
        "--lock-timeout",
        "0",
        "--from",
        payload.to_str().unwrap(),
    ]);
    cmd.env("SNAPCACHE_LOCK_TIMEOUT", "100");
    let started = Instant::now();
    let out = run_with_timeout(cmd);
    assert_eq!(
        code(&out),
        75,
        "the flag beats the environment; 0 tries once"
    );
    assert!(started.elapsed() < Duration::from_millis(900));
    assert!(
        text(&out.stderr).contains("try once"),
        "{}",
        text(&out.stderr)
    );
    wait_output(holder, COMMAND_TIMEOUT);
}

#[test]
fn concurrent_max_age_refreshes_run_the_source_exactly_once() {
    let store = TestStore::new();
    let counter = store.scratch("runs");
    let script = format!(
        "echo run >> {}; sleep 0.5; echo '[\"fresh\"]'",
        counter.display()
    );
    let children: Vec<_> = (0..4)
        .map(|_| {
            store
                .command(&[
                    "--json",
                    "refresh",
                    "--max-age",
                    "1h",
                    "--exec",
                    "sh",
                    "-c",
                    &script,
                ])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outcomes: Vec<serde_json::Value> = children
        .into_iter()
        .map(|c| {
            let out = wait_output(c, COMMAND_TIMEOUT);
            assert_eq!(code(&out), 0, "{}", text(&out.stderr));
            serde_json::from_slice(&out.stdout).unwrap()
        })
        .collect();
    let runs = std::fs::read_to_string(&counter).unwrap();
    assert_eq!(runs.lines().count(), 1, "the source ran exactly once");
    assert_eq!(
        outcomes.iter().filter(|o| o["skipped"] == true).count(),
        3,
        "{outcomes:?}"
    );
    assert!(outcomes.iter().all(|o| o["generation"] == 1));
}

#[test]
fn max_age_does_not_skip_an_old_refresh() {
    let store = TestStore::new();
    store.refresh(b"[1]", &[]);
    std::thread::sleep(Duration::from_millis(1100));
    let outcome = store.refresh(b"[2]", &["--max-age", "1s"]);
    assert_eq!(outcome["skipped"], false);
    assert_eq!(outcome["generation"], 2);
    let outcome = store.refresh(b"[3]", &["--max-age", "1h"]);
    assert_eq!(outcome["skipped"], true, "fresh enough: skipped");
    assert_eq!(store.show(), b"[2]");
}
