//! Writers on different hosts sharing one store (issue 13.3), with real
//! processes: each writer runs in its own UTS and PID namespace
//! (`unshare --uts --pid --fork --mount-proc`) under a host name of its own,
//! so its holder record names another host and a pid that means nothing
//! outside, exactly as a writer on another machine looks to the others: it
//! can only be judged by its lease's expiry, never by its pid.
//!
//! The shared store is a local directory on the lease backend without
//! advisory locks (the NFS `nolock` case, [`Arm::LeaseNolock`]), and the
//! object store when this binary is built with `s3` and a server is
//! configured ([`Arm::ObjectStore`]; otherwise its tests print why they
//! skipped). Without root (no `unshare`), every test prints why it skipped.
//!
//! The figures these print (`figures:` lines, run with `--nocapture`) are
//! in docs/reliability.md.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::backends::{Arm, Backend};
use crate::common::*;

/// Whether namespaces with a host name of their own can be made here.
fn unshare_works() -> Result<(), String> {
    match Command::new("unshare")
        .args([
            "--uts",
            "--pid",
            "--fork",
            "--mount-proc",
            "sh",
            "-c",
            "hostname probe-host",
        ])
        .stdin(Stdio::null())
        .output()
    {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(format!(
            "`unshare --uts --pid --fork --mount-proc` failed (needs root): {}",
            text(&out.stderr).trim()
        )),
        Err(e) => Err(format!("cannot run unshare: {e}")),
    }
}

/// `cmd` (a snapcache command of `Backend::command`) run as a process on
/// host `host`: same arguments and environment, inside new UTS and PID
/// namespaces whose host name is `host`, in a process group of its own
/// (the test kills the group).
fn on_host(host: &str, cmd: &Command) -> Command {
    let mut wrapped = Command::new("unshare");
    wrapped
        .args(["--uts", "--pid", "--fork", "--mount-proc", "sh", "-c"])
        // Not `exec`: the init of a PID namespace ignores the signals it
        // sends itself (the stop hook's SIGSTOP), so snapcache runs as its
        // child, pid 2 inside.
        .arg("hostname \"$0\" && \"$@\"")
        .arg(host)
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (key, value) in cmd.get_envs() {
        match value {
            Some(v) => wrapped.env(key, v),
            None => wrapped.env_remove(key),
        };
    }
    std::os::unix::process::CommandExt::process_group(&mut wrapped, 0);
    wrapped.stdin(Stdio::null());
    wrapped
}

/// The snapcache process of an `on_host` child, as seen from here: the
/// descendant of `unshare` whose executable is snapcache.
fn inner_pid(unshare: &Child) -> u32 {
    fn children(pid: u32) -> Vec<u32> {
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()
    }
    let is_snapcache = |pid: u32| {
        std::fs::read_link(format!("/proc/{pid}/exe"))
            .is_ok_and(|exe| exe.file_name() == Some(OsStr::new("snapcache")))
    };
    wait_for(
        "the namespaced writer to start",
        Duration::from_secs(20),
        || {
            let mut todo = children(unshare.id());
            while let Some(pid) = todo.pop() {
                if is_snapcache(pid) {
                    return Some(pid);
                }
                todo.extend(children(pid));
            }
            None
        },
    )
}

fn signal(pid: u32, sig: rustix::process::Signal) {
    let pid = rustix::process::Pid::from_raw(pid as i32).expect("pid");
    rustix::process::kill_process(pid, sig).expect("signal");
}

/// SIGKILLs the process group of a namespaced writer if the test fails
/// first (disarmed once it was waited for).
struct KillGroupOnDrop(Option<u32>);

impl Drop for KillGroupOnDrop {
    fn drop(&mut self) {
        if let Some(pgid) = self
            .0
            .and_then(|p| rustix::process::Pid::from_raw(p as i32))
        {
            let _ = rustix::process::kill_process_group(pgid, rustix::process::Signal::KILL);
        }
    }
}

/// The backend for a multi-host test, or why it cannot run.
fn shared(arm: Arm, test: &str) -> Option<Backend> {
    if let Err(why) = unshare_works() {
        eprintln!("SKIPPED multihost::{test} ({arm:?}): {why}");
        return None;
    }
    match Backend::new(arm, test) {
        Ok(b) => Some(b),
        Err(why) => {
            eprintln!("SKIPPED multihost::{test} ({arm:?}): {why}");
            None
        }
    }
}

fn outcome(out: &std::process::Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "one JSON object ({e}): {:?} / stderr {}",
            text(&out.stdout),
            text(&out.stderr)
        )
    })
}

// ------------------------------------------------------------------ tests

fn writers_on_many_hosts_lose_nothing(arm: Arm) {
    const HOSTS: usize = 3;
    const ROUNDS: usize = 5;
    let Some(s) = shared(arm, "writers_on_many_hosts_lose_nothing") else {
        return;
    };
    s.refresh(b"{\"host\":null}", &[]);
    let payload = |h: usize, r: usize| format!("{{\"host\":{h},\"round\":{r}}}").into_bytes();
    let started = Instant::now();
    let done = std::sync::atomic::AtomicBool::new(false);
    let (outcomes, reads) = std::thread::scope(|scope| {
        let reader = scope.spawn(|| {
            let mut seen = Vec::new();
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let (code, bytes) = s.show(&[]);
                assert_eq!(code, 0, "every read succeeds");
                seen.push(bytes);
            }
            seen
        });
        let hosts: Vec<_> = (0..HOSTS)
            .map(|h| {
                let files: Vec<String> = (0..ROUNDS)
                    .map(|r| s.payload_file(&payload(h, r)))
                    .collect();
                let s = &s;
                scope.spawn(move || {
                    files
                        .iter()
                        .map(|file| {
                            let cmd = s.command(&[
                                "--json",
                                "refresh",
                                "--lock-timeout",
                                "120",
                                "--from",
                                file,
                            ]);
                            let out = run_with_timeout(on_host(&format!("host-{h}"), &cmd));
                            assert_eq!(code(&out), 0, "host-{h}: {}", text(&out.stderr));
                            outcome(&out)
                        })
                        .collect::<Vec<Value>>()
                })
            })
            .collect();
        let outcomes: Vec<Value> = hosts
            .into_iter()
            .flat_map(|h| h.join().expect("host"))
            .collect();
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        (outcomes, reader.join().expect("reader"))
    });
    let elapsed = started.elapsed();
    let mut numbers: Vec<u64> = outcomes
        .iter()
        .map(|o| o["generation"].as_u64().unwrap())
        .collect();
    numbers.sort_unstable();
    let total = (HOSTS * ROUNDS) as u64;
    assert_eq!(
        numbers,
        (2..=total + 1).collect::<Vec<u64>>(),
        "unique, none lost"
    );
    let generation_of: HashMap<String, u64> = outcomes
        .iter()
        .map(|o| {
            (
                o["hash"].as_str().unwrap().to_string(),
                o["generation"].as_u64().unwrap(),
            )
        })
        .chain([(hash_hex(b"{\"host\":null}"), 1)])
        .collect();
    let order: Vec<u64> = reads
        .iter()
        .map(|b| {
            *generation_of
                .get(&hash_hex(b))
                .unwrap_or_else(|| panic!("served {:?}", text(b)))
        })
        .collect();
    assert!(
        order.windows(2).all(|p| p[0] <= p[1]),
        "reads went back: {order:?}"
    );
    assert_eq!(s.generations().1, Some(total + 1));
    assert_eq!(s.ok_json(&["verify"])["ok"], true);
    let waited: u64 = outcomes
        .iter()
        .map(|o| o["waited_ms"].as_u64().unwrap_or(0))
        .sum();
    eprintln!(
        "figures: multihost {arm:?}: {HOSTS} hosts x {ROUNDS} refreshes = {total} generations, {} verified reads, 0 lost, {:.1} s, {waited} ms waited for the lock in all",
        reads.len(),
        elapsed.as_secs_f64()
    );
}

fn a_killed_lease_holder_on_another_host_is_taken_over_after_expiry(arm: Arm) {
    const ROUNDS: usize = 3;
    let Some(s) = shared(
        arm,
        "a_killed_lease_holder_on_another_host_is_taken_over_after_expiry",
    ) else {
        return;
    };
    s.refresh(b"[0]", &[]);
    let mut takeovers = 0;
    let mut waits = Vec::new();
    for round in 0..ROUNDS {
        // host-a takes the lock and runs a long command under it; it is
        // SIGKILLed while it holds the lease (its renewer dies with it).
        let script = "sleep 60; echo '[\"never\"]'";
        let mut cmd = s.command(&["--json", "refresh", "--exec", "sh", "-c", script]);
        cmd.env("SNAPCACHE_LEASE_SECS", "1");
        let holder = on_host("host-a", &cmd)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut reaper = KillGroupOnDrop(Some(holder.id()));
        let status = wait_for("host-a to hold the lock", Duration::from_secs(20), || {
            let status = s.ok_json(&["status"]);
            (status["lock"]["held"] == true && status["lock"]["host"] == "host-a").then_some(status)
        });
        assert_eq!(status["lock"]["host"], "host-a", "{status}");
        let pgid = rustix::process::Pid::from_raw(holder.id() as i32).unwrap();
        rustix::process::kill_process_group(pgid, rustix::process::Signal::KILL).unwrap();
        let out = wait_output(holder, COMMAND_TIMEOUT);
        reaper.0 = None;
        assert!(out.status.code().is_none() || code(&out) != 0, "killed");

        // host-b cannot judge host-a dead by its pid: it waits for the
        // lease to expire, takes over, and publishes.
        let payload = format!("[\"from b, round {round}\"]");
        let file = s.payload_file(payload.as_bytes());
        let mut cmd = s.command(&[
            "--json",
            "-v",
            "refresh",
            "--lock-timeout",
            "30",
            "--from",
            &file,
        ]);
        cmd.env("SNAPCACHE_LEASE_SECS", "1");
        let started = Instant::now();
        let out = run_with_timeout(on_host("host-b", &cmd));
        let waited = started.elapsed();
        assert_eq!(code(&out), 0, "host-b: {}", text(&out.stderr));
        let published = outcome(&out);
        assert_eq!(published["generation"], round as u64 + 2, "{published}");
        let stderr = text(&out.stderr);
        if stderr.contains("lock_takeover") {
            takeovers += 1;
        }
        waits.push(waited);
        assert_eq!(s.show(&[]), (0, payload.into_bytes()));
    }
    assert_eq!(takeovers, ROUNDS, "every round was a takeover");
    let expected: Vec<u64> = (1..=ROUNDS as u64 + 1).collect();
    assert_eq!(
        s.generations().0,
        expected,
        "nothing lost, nothing from the dead holder"
    );
    assert_eq!(s.ok_json(&["verify"])["ok"], true);
    eprintln!(
        "figures: multihost {arm:?}: {ROUNDS} SIGKILLed holders (lease 1 s), {takeovers} takeovers, waits {:?}",
        waits
            .iter()
            .map(|w| format!("{:.2} s", w.as_secs_f64()))
            .collect::<Vec<_>>()
    );
}

fn a_writer_on_another_host_stalled_past_its_lease_loses_its_commit(arm: Arm) {
    const ROUNDS: u64 = 3;
    let Some(s) = shared(
        arm,
        "a_writer_on_another_host_stalled_past_its_lease_loses_its_commit",
    ) else {
        return;
    };
    s.refresh(b"[0]", &[]);
    let mut conflicts = 0;
    let started = Instant::now();
    for round in 0..ROUNDS {
        // host-a stops itself between its last lease check and its commit.
        let file_a = s.payload_file(format!("[\"a{round}\"]").as_bytes());
        let mut cmd = s.command(&[
            "--json",
            "refresh",
            "--lock-timeout",
            "30",
            "--from",
            &file_a,
        ]);
        cmd.env("SNAPCACHE_LEASE_SECS", "1")
            .env("SNAPCACHE_TEST_HOOKS", "1")
            .env("SNAPCACHE_TEST_STOP_BEFORE_COMMIT", "1");
        let a = on_host("host-a", &cmd)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut reaper = KillGroupOnDrop(Some(a.id()));
        let pid = inner_pid(&a);
        wait_for(
            "host-a to stop before its commit",
            Duration::from_secs(30),
            || (process_state(pid) == Some('T')).then_some(()),
        );
        // host-b takes over once host-a's lease expired and publishes.
        let file_b = s.payload_file(format!("[\"b{round}\"]").as_bytes());
        let mut cmd = s.command(&[
            "--json",
            "refresh",
            "--lock-timeout",
            "30",
            "--from",
            &file_b,
        ]);
        cmd.env("SNAPCACHE_LEASE_SECS", "1");
        let out = run_with_timeout(on_host("host-b", &cmd));
        assert_eq!(code(&out), 0, "host-b: {}", text(&out.stderr));
        let b = outcome(&out);
        // On the object store the stalled writer rebases (one more
        // generation per round), on the lease backend it fails.
        let rebases = arm == Arm::ObjectStore;
        let expected = if rebases { 2 + 2 * round } else { 2 + round };
        assert_eq!(b["generation"], expected, "{b}");
        signal(pid, rustix::process::Signal::CONT);
        let out = wait_output(a, COMMAND_TIMEOUT);
        reaper.0 = None;
        let result = outcome(&out);
        if rebases {
            // host-a resumes: its conditional put names the pointer it read,
            // gets 412, and it rebases on host-b's generation (issue 13:
            // re-read, then unchanged / skipped / rebase and retry).
            assert_eq!(
                code(&out),
                0,
                "host-a rebases: {result} / {}",
                text(&out.stderr)
            );
            assert_eq!(result["generation"], expected + 1, "{result}");
            conflicts += 1;
            assert_eq!(s.show(&[]), (0, format!("[\"a{round}\"]").into_bytes()));
            let (_, b_bytes) = s.show(&["--generation", &expected.to_string()]);
            assert_eq!(
                b_bytes,
                format!("[\"b{round}\"]").into_bytes(),
                "host-b's kept"
            );
        } else {
            // host-a resumes: its commit must fail, and say so.
            assert_eq!(
                code(&out),
                1,
                "host-a must lose: {result} / {}",
                text(&out.stderr)
            );
            assert_eq!(result["error"]["kind"], "commit-conflict", "{result}");
            conflicts += 1;
            assert_eq!(s.show(&[]), (0, format!("[\"b{round}\"]").into_bytes()));
        }
    }
    let last = if arm == Arm::ObjectStore {
        2 * ROUNDS + 1
    } else {
        ROUNDS + 1
    };
    // The default retention keeps the current one and 5 more.
    let expected: Vec<u64> = (last.saturating_sub(5).max(1)..=last).collect();
    assert_eq!(
        s.generations(),
        (expected, Some(last)),
        "unique, increasing, none lost"
    );
    assert_eq!(s.ok_json(&["verify"])["ok"], true);
    eprintln!(
        "figures: multihost {arm:?}: {ROUNDS} writers stalled past a 1 s lease, {conflicts} commit conflicts, 0 lost, {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

fn gc_on_another_host_during_slow_reads_keeps_the_snapshot(arm: Arm) {
    let Some(s) = shared(
        arm,
        "gc_on_another_host_during_slow_reads_keeps_the_snapshot",
    ) else {
        return;
    };
    // Generation 1 is large: `show` blocks on a full pipe with it open.
    let big = json_payload(4 << 20, 7);
    s.refresh(&big, &[]);
    s.refresh(b"[2]", &[]);
    // A reader on this host that read the pointer before the gc: it knows
    // generation 1's snapshot by name and opens it afterwards.
    let hash = hash_hex(&big);
    let mut slow = s
        .command(&["show", "--generation", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut pipe = slow.stdout.take().unwrap();
    let mut first = vec![0u8; 1024];
    std::io::Read::read_exact(&mut pipe, &mut first).expect("the slow read started");

    // host-b drops generation 1 from retention and collects, while the
    // reader is stuck mid-read.
    let forget = run_with_timeout(on_host("host-b", &s.command(&["--json", "forget", "1"])));
    assert_eq!(code(&forget), 0, "{}", text(&forget.stderr));
    let forget = outcome(&forget);
    assert_eq!(forget["forgotten"], serde_json::json!([1]), "{forget}");
    assert_eq!(
        forget["removed_snapshots"], 0,
        "kept for the grace: {forget}"
    );
    let gc = run_with_timeout(on_host(
        "host-b",
        &s.command(&["--json", "gc", "--keep", "1"]),
    ));
    assert_eq!(code(&gc), 0, "{}", text(&gc.stderr));
    let gc = outcome(&gc);
    assert_eq!(gc["removed_snapshots"], 0, "gc keeps it too: {gc}");
    let key = format!("snapshots/{hash}");
    assert!(
        s.exists_raw(&key),
        "the grace keeps generation 1's snapshot"
    );

    // The slow read completes with exactly the bytes published.
    std::thread::sleep(Duration::from_millis(500));
    let mut rest = Vec::new();
    std::io::Read::read_to_end(&mut pipe, &mut rest).unwrap();
    let out = wait_output(slow, COMMAND_TIMEOUT);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    first.extend(rest);
    assert!(
        first == big,
        "the slow reader got generation 1 intact ({} bytes)",
        first.len()
    );

    // A reader that learned the name before the gc opens it only now,
    // and it verifies.
    let late = s.get_raw(&key).expect("still there");
    assert_eq!(hash_hex(&late), hash, "intact");
    let verify = s.ok_json(&["verify"]);
    let kept = verify["in_grace"].as_array().expect("in_grace");
    assert!(
        kept.iter()
            .any(|k| k["path"].as_str().is_some_and(|p| p.ends_with(&hash))),
        "verify reports it as kept for the grace: {verify}"
    );
    assert_eq!(s.generations(), (vec![2], Some(2)));
}

fn a_writer_stalled_across_a_clear_never_leaves_a_pointer_to_a_deleted_snapshot(arm: Arm) {
    let Some(s) = shared(
        arm,
        "a_writer_stalled_across_a_clear_never_leaves_a_pointer_to_a_deleted_snapshot",
    ) else {
        return;
    };
    s.refresh(b"[1]", &[]);
    // host-a uploads its snapshot, then stops right before its commit.
    let file_a = s.payload_file(b"[\"from a\"]");
    let mut cmd = s.command(&[
        "--json",
        "refresh",
        "--lock-timeout",
        "30",
        "--from",
        &file_a,
    ]);
    cmd.env("SNAPCACHE_LEASE_SECS", "1")
        .env("SNAPCACHE_TEST_HOOKS", "1")
        .env("SNAPCACHE_TEST_STOP_BEFORE_COMMIT", "1");
    let a = on_host("host-a", &cmd)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut reaper = KillGroupOnDrop(Some(a.id()));
    let pid = inner_pid(&a);
    wait_for(
        "host-a to stop before its commit",
        Duration::from_secs(30),
        || (process_state(pid) == Some('T')).then_some(()),
    );
    // host-b takes over once host-a's lease expired and clears the store.
    let mut cmd = s.command(&["--json", "clear", "--lock-timeout", "30"]);
    cmd.env("SNAPCACHE_LEASE_SECS", "1");
    let out = run_with_timeout(on_host("host-b", &cmd));
    assert_eq!(code(&out), 0, "host-b: {}", text(&out.stderr));
    signal(pid, rustix::process::Signal::CONT);
    let out = wait_output(a, COMMAND_TIMEOUT);
    reaper.0 = None;
    let result = outcome(&out);
    // Either host-a loses (lease backend: the clear was a commit) or it
    // publishes into the cleared store (object store: it rebases); never a
    // pointer naming a snapshot the clear deleted.
    match code(&out) {
        0 => {
            assert_eq!(result["generation"], 1, "a new history: {result}");
            assert_eq!(
                s.show(&[]),
                (0, b"[\"from a\"]".to_vec()),
                "its snapshot is there"
            );
            assert_eq!(s.ok_json(&["verify"])["ok"], true);
        }
        1 => {
            assert_eq!(result["error"]["kind"], "commit-conflict", "{result}");
            let (code, show) = s.json(&["show"]);
            assert_eq!(
                (code, &show["error"]["kind"]),
                (1, &"no-store".into()),
                "{show}"
            );
        }
        other => panic!("host-a exited {other}: {result}"),
    }
    let next = s.refresh(b"[\"next\"]", &[]);
    assert_eq!(s.show(&[]), (0, b"[\"next\"]".to_vec()), "{next}");
    assert_eq!(s.ok_json(&["verify"])["ok"], true);
    eprintln!(
        "figures: multihost {arm:?}: a writer stalled across a clear exited {}",
        code(&out)
    );
}

macro_rules! on_shared_backends {
    ($($behaviour:ident),* $(,)?) => {
        mod lease_nolock {
            $(#[test] fn $behaviour() { super::$behaviour(super::Arm::LeaseNolock) })*
        }
        mod object_store {
            $(#[test] fn $behaviour() { super::$behaviour(super::Arm::ObjectStore) })*
        }
    };
}

on_shared_backends!(
    writers_on_many_hosts_lose_nothing,
    a_killed_lease_holder_on_another_host_is_taken_over_after_expiry,
    a_writer_on_another_host_stalled_past_its_lease_loses_its_commit,
    gc_on_another_host_during_slow_reads_keeps_the_snapshot,
    a_writer_stalled_across_a_clear_never_leaves_a_pointer_to_a_deleted_snapshot,
);
