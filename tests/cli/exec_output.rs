//! `refresh --exec` never waits on a process the command left behind, and
//! SIGINT/SIGTERM end a refresh at once whatever holds its pipes.
//!
//! The grace after the command's exit is 1 s (`EXEC_OUTPUT_GRACE`); bounds
//! below add a margin for a loaded test machine, and every measured figure
//! is printed (`--nocapture`).

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use rustix::process::Signal;

use crate::common::*;

/// The documented grace plus a margin for a loaded machine.
const GRACE_BOUND: Duration = Duration::from_secs(4);
/// Bound on signal-to-exit (the design reacts within one 20 ms tick; the
/// margin is for test load only).
const SIGNAL_BOUND: Duration = Duration::from_secs(1);

/// Kills the recorded processes when the test ends, pass or fail.
struct KillOnDrop(Vec<u32>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        for pid in &self.0 {
            if let Some(pid) = rustix::process::Pid::from_raw(*pid as i32) {
                let _ = rustix::process::kill_process(pid, Signal::KILL);
            }
        }
    }
}

/// Waits for a command under test to write its pid into `path`.
fn wait_pidfile(path: &Path) -> u32 {
    wait_for(
        "the command to record its pid",
        Duration::from_secs(20),
        || {
            std::fs::read_to_string(path)
                .ok()
                .and_then(|s| s.trim().parse().ok())
        },
    )
}

/// True when `pid` no longer runs (absent, or a zombie awaiting its reaper).
fn process_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
    }
}

fn have_setsid() -> bool {
    let found = std::process::Command::new("setsid")
        .arg("true")
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        eprintln!("skipped: no `setsid` command on this machine");
    }
    found
}

fn generation_numbers(store: &TestStore) -> Vec<u64> {
    let (_, history) = store.json(&["history"]);
    history["generations"]
        .as_array()
        .expect("generations")
        .iter()
        .map(|g| g["generation"].as_u64().expect("number"))
        .collect()
}

fn spawn_refresh(store: &TestStore, script: &str) -> Child {
    let mut cmd = store.command(&["refresh", "--exec", "sh", "-c", script]);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.spawn().expect("spawn refresh")
}

/// A refresh whose command left a process holding stdout fails after the
/// grace with a message naming the command; nothing is published; a second
/// writer started meanwhile gets the lock promptly afterwards.
fn assert_held_stdout_fails_promptly(store: &TestStore, script: &str, pidfile: &Path) -> u32 {
    let before = generation_numbers(store);
    let started = Instant::now();
    let bad = spawn_refresh(store, script);
    let holder = wait_pidfile(pidfile);
    // A second writer while the first still holds the lock.
    let payload = store.payload("second.json", b"[\"second\"]");
    let second = {
        let mut cmd = store.command(&[
            "--json",
            "refresh",
            "--lock-timeout",
            "5",
            "--from",
            payload.to_str().unwrap(),
        ]);
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        cmd.spawn().expect("spawn second writer")
    };
    let out = wait_output(bad, COMMAND_TIMEOUT);
    let took = started.elapsed();
    let stderr = text(&out.stderr);
    eprintln!("held stdout: the refresh failed after {took:?}");
    assert_eq!(code(&out), 1, "stderr: {stderr}");
    assert!(took < GRACE_BOUND, "took {took:?}, grace is 1 s");
    assert!(
        stderr.contains("a background process it started still held its stdout open")
            && stderr.contains("sh -c")
            && stderr.contains("published nothing"),
        "the message names the command and the cause: {stderr}"
    );
    let second_started = Instant::now();
    let second = wait_output(second, COMMAND_TIMEOUT);
    eprintln!(
        "held stdout: the second writer finished {:?} after the first failed",
        second_started.elapsed()
    );
    assert_eq!(
        code(&second),
        0,
        "the second writer got the lock within its 5 s: {}",
        text(&second.stderr)
    );
    let after = generation_numbers(store);
    let last = *before.last().unwrap();
    assert_eq!(
        after,
        [before.clone(), vec![last + 1]].concat(),
        "only the second writer published"
    );
    assert_eq!(store.show(), b"[\"second\"]");
    holder
}

#[test]
fn a_background_child_holding_stdout_is_killed_after_the_grace() {
    let store = TestStore::new();
    store.refresh(b"[0]", &[]);
    let pidfile = store.scratch("bg.pid");
    let script = format!(
        "echo '[1]'; sh -c 'echo $$ > {}; exec sleep 30' & exit 0",
        pidfile.display()
    );
    let holder = assert_held_stdout_fails_promptly(&store, &script, &pidfile);
    let _guard = KillOnDrop(vec![holder]);
    wait_for(
        "the background child (same process group) to be killed",
        Duration::from_secs(5),
        || process_gone(holder).then_some(()),
    );
}

#[test]
fn a_setsid_grandchild_holding_stdout_does_not_hold_the_refresh() {
    if !have_setsid() {
        return;
    }
    let store = TestStore::new();
    store.refresh(b"[0]", &[]);
    let pidfile = store.scratch("setsid.pid");
    // Its own session: the process-group kill cannot reach it.
    let script = format!(
        "echo '[1]'; setsid sh -c 'echo $$ > {}; exec sleep 30' & exit 0",
        pidfile.display()
    );
    let holder = assert_held_stdout_fails_promptly(&store, &script, &pidfile);
    let _guard = KillOnDrop(vec![holder]);
}

#[test]
fn a_background_child_that_closes_stdout_does_not_delay_the_publish() {
    let store = TestStore::new();
    store.refresh(b"[0]", &[]);
    let started = Instant::now();
    let out = store.run(&[
        "refresh",
        "--exec",
        "sh",
        "-c",
        "(sleep 5 >/dev/null 2>&1 &); echo []",
    ]);
    let took = started.elapsed();
    eprintln!("well-behaved background child: published in {took:?}");
    assert_eq!(code(&out), 0, "stderr: {}", text(&out.stderr));
    assert!(
        took < Duration::from_secs(3),
        "did not wait for the 5 s background sleep: {took:?}"
    );
    assert_eq!(generation_numbers(&store), [1, 2]);
    assert_eq!(store.show(), b"[]\n");
}

/// Sends `signal` to a refresh whose command is running `script` (which
/// records a pid in `pidfile`), and checks it exits with 130 quickly and
/// leaves the lock free.
/// `in_grace`: the command exits at once, so signal right away, before the
/// 1 s grace after its exit runs out.
fn assert_signal_ends_refresh(
    script_for: impl Fn(&Path) -> String,
    signal: Signal,
    what: &str,
    in_grace: bool,
) {
    let store = TestStore::new();
    store.refresh(b"[0]", &[]);
    let pidfile: PathBuf = store.scratch("cmd.pid");
    let mut child = spawn_refresh(&store, &script_for(&pidfile));
    let pid = wait_pidfile(&pidfile);
    let _guard = KillOnDrop(vec![pid]);
    if !in_grace {
        store.wait_until_locked();
        // Let the refresh settle into its wait.
        std::thread::sleep(Duration::from_millis(200));
    }
    let target = rustix::process::Pid::from_raw(child.id() as i32).expect("pid");
    let sent = Instant::now();
    rustix::process::kill_process(target, signal).expect("send signal");
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        assert!(
            sent.elapsed() < Duration::from_secs(20),
            "{what}: the refresh ignored {signal:?}"
        );
        std::thread::sleep(Duration::from_millis(1));
    };
    let took = sent.elapsed();
    let out = wait_output(child, COMMAND_TIMEOUT);
    eprintln!(
        "{what}, {signal:?}: exited {:?} after {took:?}",
        status.code()
    );
    assert_eq!(status.code(), Some(130), "stderr: {}", text(&out.stderr));
    assert!(took < SIGNAL_BOUND, "{what}: {signal:?} took {took:?}");
    // The lock is free: a writer that tries once succeeds.
    let payload = store.payload("next.json", b"[\"next\"]");
    let next = store.run(&[
        "refresh",
        "--lock-timeout",
        "0",
        "--from",
        payload.to_str().unwrap(),
    ]);
    assert_eq!(code(&next), 0, "{what}: stderr {}", text(&next.stderr));
    assert_eq!(generation_numbers(&store), [1, 2], "{what}");
}

#[test]
fn sigterm_and_sigint_end_a_refresh_whose_command_holds_the_pipe() {
    for signal in [Signal::TERM, Signal::INT] {
        assert_signal_ends_refresh(
            |pidfile| format!("echo $$ > {}; echo '['; exec sleep 30", pidfile.display()),
            signal,
            "command holds stdout",
            false,
        );
    }
}

#[test]
fn sigterm_and_sigint_end_a_refresh_whose_setsid_grandchild_holds_the_pipe() {
    if !have_setsid() {
        return;
    }
    for signal in [Signal::TERM, Signal::INT] {
        // The command still runs...
        assert_signal_ends_refresh(
            |pidfile| {
                format!(
                    "setsid sh -c 'echo $$ > {}; exec sleep 30' & echo '['; sleep 30",
                    pidfile.display()
                )
            },
            signal,
            "setsid grandchild holds stdout, command running",
            false,
        );
        // ...or has exited and the refresh is in its grace.
        assert_signal_ends_refresh(
            |pidfile| {
                format!(
                    "setsid sh -c 'echo $$ > {}; exec sleep 30' & echo '['; exit 0",
                    pidfile.display()
                )
            },
            signal,
            "setsid grandchild holds stdout, command exited",
            true,
        );
    }
}

/// Sends `signal` to `child` and returns how long it took to exit, and its code.
fn signal_and_time(child: &mut Child, signal: Signal) -> (Duration, Option<i32>) {
    let target = rustix::process::Pid::from_raw(child.id() as i32).expect("pid");
    let sent = Instant::now();
    rustix::process::kill_process(target, signal).expect("send signal");
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return (sent.elapsed(), status.code());
        }
        assert!(
            sent.elapsed() < Duration::from_secs(20),
            "the refresh ignored {signal:?}"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn sigterm_ends_a_refresh_reading_a_silent_stdin_or_fifo() {
    let store = TestStore::new();
    store.refresh(b"[0]", &[]);
    // stdin held open by the test, never written.
    let mut cmd = store.command(&["refresh", "--from", "-"]);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn");
    let _stdin = child.stdin.take();
    store.wait_until_locked();
    let (took, status) = signal_and_time(&mut child, Signal::TERM);
    eprintln!("silent stdin, SIGTERM: exited {status:?} after {took:?}");
    assert_eq!(status, Some(130));
    assert!(took < SIGNAL_BOUND, "took {took:?}");

    // A FIFO nobody writes: opening it would block.
    let fifo = store.scratch("fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .is_ok_and(|s| s.success());
    if !made {
        eprintln!("skipped the FIFO case: mkfifo failed");
        return;
    }
    let mut cmd = store.command(&["refresh", "--from", fifo.to_str().unwrap()]);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn");
    std::thread::sleep(Duration::from_millis(300));
    let (took, status) = signal_and_time(&mut child, Signal::TERM);
    eprintln!("unopened FIFO, SIGTERM: exited {status:?} after {took:?}");
    assert_eq!(status, Some(130));
    assert!(took < SIGNAL_BOUND, "took {took:?}");
    assert_eq!(generation_numbers(&store), [1], "nothing was published");
    assert_eq!(
        code(&store.run(&["gc", "--lock-timeout", "0"])),
        0,
        "lock free"
    );
}

/// A background process holding only stderr does not hold up the refresh:
/// a successful command publishes at once, a failing one is reported within
/// the grace (with what stderr said so far).
#[test]
fn a_background_child_holding_only_stderr_does_not_hold_the_refresh() {
    let store = TestStore::new();
    store.refresh(b"[0]", &[]);
    let pidfile = store.scratch("err.pid");
    let bg = format!(
        "sh -c 'echo $$ > {}; exec sleep 30' >/dev/null &",
        pidfile.display()
    );
    let started = Instant::now();
    let out = store.run(&["refresh", "--exec", "sh", "-c", &format!("{bg} echo '[1]'")]);
    let took = started.elapsed();
    let _guard = KillOnDrop(vec![wait_pidfile(&pidfile)]);
    eprintln!("stderr held, command succeeded: published in {took:?}");
    assert_eq!(code(&out), 0, "stderr: {}", text(&out.stderr));
    assert!(took < Duration::from_secs(3), "took {took:?}");
    assert_eq!(generation_numbers(&store), [1, 2]);

    let _ = std::fs::remove_file(&pidfile);
    let started = Instant::now();
    let out = store.run(&[
        "refresh",
        "--exec",
        "sh",
        "-c",
        &format!("{bg} echo 'upstream said 503' >&2; exit 4"),
    ]);
    let took = started.elapsed();
    let _guard2 = KillOnDrop(vec![wait_pidfile(&pidfile)]);
    let stderr = text(&out.stderr);
    eprintln!("stderr held, command failed: reported in {took:?}");
    assert_eq!(code(&out), 1, "{stderr}");
    assert!(took < GRACE_BOUND, "took {took:?}");
    assert!(
        stderr.contains("exited with status 4") && stderr.contains("upstream said 503"),
        "{stderr}"
    );
    assert_eq!(generation_numbers(&store), [1, 2]);
}
