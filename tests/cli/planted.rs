//! Nothing planted at a store name can hang a command (issue 8 point 3):
//! a FIFO, a Unix socket, a character device, a directory or a symlink at
//! `current`, a snapshot, `lock`, `lock.holder`, `lease`, `lease.break`, the
//! marker or `CACHEDIR.TAG` is a clear error (exit 1, the path and what it
//! is) within seconds, and lock budgets stay exact when such a file appears
//! while a writer waits.

use std::os::unix::fs::symlink;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

/// Far beyond what any command here needs; a hang shows up as a failure.
const HANG: Duration = Duration::from_secs(15);

#[derive(Debug, Clone, Copy)]
enum Kind {
    Fifo,
    Socket,
    CharDevice,
    Directory,
    Symlink,
}

const KINDS: [Kind; 5] = [
    Kind::Fifo,
    Kind::Socket,
    Kind::CharDevice,
    Kind::Directory,
    Kind::Symlink,
];

impl Kind {
    /// How the error message names it.
    fn described(self) -> &'static str {
        match self {
            Kind::Fifo => "a FIFO (named pipe)",
            Kind::Socket => "a Unix socket",
            Kind::CharDevice => "a character device",
            Kind::Directory => "a directory",
            Kind::Symlink => "a symbolic link",
        }
    }
}

/// Keeps a planted socket's listener alive for the test.
enum Planted {
    Plain,
    Socket(#[allow(dead_code)] UnixListener),
}

/// Replaces whatever is at `path` by a `kind`; `target` is where a symlink
/// points (an outside file with the right bytes, when there are any).
/// `None`: this kind cannot be made here (reason printed).
fn plant(path: &Path, kind: Kind, target: &Path) -> Option<Planted> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path).unwrap(),
        Ok(_) => std::fs::remove_file(path).unwrap(),
        Err(_) => {}
    }
    match kind {
        Kind::Fifo => {
            let status = std::process::Command::new("mkfifo")
                .arg(path)
                .status()
                .unwrap();
            assert!(status.success(), "mkfifo {}", path.display());
        }
        Kind::Socket => return Some(Planted::Socket(UnixListener::bind(path).unwrap())),
        Kind::CharDevice => {
            // The numbers of /dev/null: harmless even if it were opened.
            let made = std::process::Command::new("mknod")
                .arg(path)
                .args(["c", "1", "3"])
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if !made {
                eprintln!(
                    "SKIPPED: mknod of a character device failed (needs root and a filesystem that allows device nodes); not testing a device at {}",
                    path.display()
                );
                return None;
            }
        }
        Kind::Directory => std::fs::create_dir(path).unwrap(),
        Kind::Symlink => symlink(target, path).unwrap(),
    }
    Some(Planted::Plain)
}

fn two_generations() -> TestStore {
    let store = TestStore::new();
    store.refresh(&json_payload(3000, 1), &[]);
    store.refresh(&json_payload(3000, 2), &[]);
    store
}

fn current_snapshot(store: &TestStore) -> PathBuf {
    store
        .root()
        .join("snapshots")
        .join(hash_hex(&json_payload(3000, 2)))
}

/// Runs a command with [`HANG`] as its limit; returns the output and time.
fn timed(store: &TestStore, args: &[&str]) -> (Output, Duration) {
    let started = Instant::now();
    let child = store
        .command(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = wait_output(child, HANG);
    (out, started.elapsed())
}

fn assert_refused(store: &TestStore, args: &[&str], path: &Path, kind: Kind) {
    let (out, took) = timed(store, args);
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert_eq!(
        code(&out),
        1,
        "{args:?} with {kind:?} at {}: {all}",
        path.display()
    );
    assert!(!all.contains("panicked"), "{args:?}: no panic: {all}");
    assert!(
        all.contains(path.to_str().unwrap()),
        "{args:?} with {kind:?}: the message names {}: {all}",
        path.display()
    );
    assert!(
        all.contains(kind.described()),
        "{args:?} with {kind:?}: the message says {:?}: {all}",
        kind.described()
    );
    assert!(
        !out.stdout.windows(8).any(|w| w == b"\"seed\":2"),
        "{args:?}: no payload served"
    );
    assert!(took < Duration::from_secs(10), "{args:?} took {took:?}");
}

/// Every command on a store with `kind` at the root name `name`.
fn check_root_name(name: &str) {
    for kind in KINDS {
        let store = two_generations();
        let path = store.root().join(name);
        let outside = store.payload("outside", &std::fs::read(pointer_path(&store)).unwrap());
        let before = std::fs::read(&outside).unwrap();
        let Some(_planted) = plant(&path, kind, &outside) else {
            continue;
        };
        let payload = store.payload("next", &json_payload(3000, 3));
        let from = payload.to_str().unwrap();
        for args in [
            &["show"][..],
            &["status"],
            &["--json", "status"],
            &["verify"],
            &["history"],
            &["refresh", "--lock-timeout", "1", "--from", from],
            &[
                "--lock-backend",
                "lease",
                "refresh",
                "--lock-timeout",
                "1",
                "--from",
                from,
            ],
            &["gc", "--lock-timeout", "1"],
        ] {
            assert_refused(&store, args, &path, kind);
        }
        assert_eq!(
            std::fs::read(&outside).unwrap(),
            before,
            "nothing was written through a link at {name}"
        );
    }
}

#[test]
fn anything_but_a_file_at_current_is_refused_at_once() {
    check_root_name("current");
}

#[test]
fn anything_but_a_file_at_lock_is_refused_at_once() {
    check_root_name("lock");
}

#[test]
fn anything_but_a_file_at_lock_holder_is_refused_at_once() {
    check_root_name("lock.holder");
}

#[test]
fn anything_but_a_file_at_lease_is_refused_at_once() {
    check_root_name("lease");
}

#[test]
fn anything_but_a_file_at_lease_break_is_refused_at_once() {
    check_root_name("lease.break");
}

#[test]
fn anything_but_a_file_at_the_marker_or_cachedir_tag_is_refused_at_once() {
    check_root_name("snapcache-store");
    check_root_name("CACHEDIR.TAG");
}

/// At a snapshot's name: readers refuse it (naming path and kind), `status`
/// and `history` (which read no snapshot) finish normally, and a refresh
/// still publishes.
#[test]
fn anything_but_a_file_at_a_snapshot_name_is_refused_at_once() {
    for kind in KINDS {
        let store = two_generations();
        let path = current_snapshot(&store);
        let outside = store.payload("outside", &json_payload(3000, 2));
        let Some(_planted) = plant(&path, kind, &outside) else {
            continue;
        };
        assert_refused(&store, &["show"], &path, kind);
        assert_refused(&store, &["show", "--generation", "2"], &path, kind);
        assert_refused(&store, &["verify"], &path, kind);
        for args in [&["status"][..], &["history"]] {
            let (out, _) = timed(&store, args);
            assert_eq!(code(&out), 0, "{args:?}: {}", text(&out.stderr));
        }
        let payload = store.payload("next", &json_payload(3000, 3));
        let (out, _) = timed(
            &store,
            &[
                "refresh",
                "--lock-timeout",
                "1",
                "--from",
                payload.to_str().unwrap(),
            ],
        );
        assert_eq!(code(&out), 0, "refresh: {}", text(&out.stderr));
        assert_eq!(store.show(), json_payload(3000, 3));
    }
}

// ------------------------------------------- appearing while a writer waits

fn spawn_holder(store: &TestStore, backend: &str, secs: &str) -> Child {
    store
        .command(&[
            "--lock-backend",
            backend,
            "refresh",
            "--exec",
            "sh",
            "-c",
            &format!("sleep {secs}; echo '[0]'"),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// A writer waiting for the lock; `run` returns once it has said that it
/// waits (so what the test plants next appears mid-wait).
struct Waiter {
    child: Child,
    stderr: std::thread::JoinHandle<String>,
    started: Instant,
}

impl Waiter {
    fn run(store: &TestStore, backend: &str, budget: &str) -> Waiter {
        use std::io::BufRead;
        let payload = store.payload("waiter", b"[7]");
        let started = Instant::now();
        let mut child = store
            .command(&[
                "--lock-backend",
                backend,
                "refresh",
                "--lock-timeout",
                budget,
                "--from",
                payload.to_str().unwrap(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let pipe = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = std::thread::spawn(move || {
            let mut all = String::new();
            for line in std::io::BufReader::new(pipe).lines().map_while(Result::ok) {
                if line.contains("waiting for the writer lock") {
                    let _ = tx.send(());
                }
                all.push_str(&line);
                all.push('\n');
            }
            all
        });
        rx.recv_timeout(HANG)
            .expect("the waiter reports that it waits for the lock");
        Waiter {
            child,
            stderr,
            started,
        }
    }

    /// Exit code, stderr and the time since the waiter started.
    fn finish(mut self) -> (i32, String, Duration) {
        let deadline = Instant::now() + HANG;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("the waiting writer hung");
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let took = self.started.elapsed();
        (
            status.code().unwrap_or(-1),
            self.stderr.join().unwrap(),
            took,
        )
    }
}

/// Replaces `path` by a FIFO atomically (made under another name, renamed
/// over it): a waiter polling every 2 ms must never see the name missing,
/// or it would just create a fresh file there.
fn mkfifo(path: &Path) {
    let staged = path.with_file_name("staged-fifo");
    let status = std::process::Command::new("mkfifo")
        .arg(&staged)
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::rename(&staged, path).unwrap();
}

/// A FIFO at `lease` while a writer waits for the lease: it keeps polling
/// (never blocks in an open) and gives up exactly at its budget.
#[test]
fn a_fifo_replacing_the_lease_mid_wait_does_not_stretch_the_budget() {
    let store = two_generations();
    let mut holder = spawn_holder(&store, "lease", "3");
    store.wait_until_locked();
    let waiter = Waiter::run(&store, "lease", "1");
    mkfifo(&store.root().join("lease"));
    let (code, stderr, took) = waiter.finish();
    assert_eq!(code, 75, "the waiter times out: {stderr}");
    assert!(
        took < Duration::from_millis(3000),
        "a 1 s budget ended after {took:?}"
    );
    let _ = holder.kill();
    let _ = holder.wait();
}

/// A FIFO at `lease.break` while a writer waits on a stale lease: reading
/// the breaker's record never blocks, so the budget holds.
#[test]
fn a_fifo_at_lease_break_mid_wait_does_not_stretch_the_budget() {
    let store = two_generations();
    let mut holder = spawn_holder(&store, "lease", "3");
    store.wait_until_locked();
    let waiter = Waiter::run(&store, "lease", "1");
    mkfifo(&store.root().join("lease.break"));
    // The lease now looks stale (expired, another host): the waiter tries
    // to break it, which goes through lease.break.
    let record = serde_json::json!({
        "lease_id": "0123456789abcdef0123456789abcdef",
        "holder": {
            "pid": 1, "host": "build-server-7", "boot_id": null,
            "command": "kopi cache refresh",
            "since": humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
            "backend": "lease"
        },
        "expires_at": humantime::format_rfc3339_millis(std::time::SystemTime::now() - Duration::from_secs(60)).to_string(),
    });
    let staged = store.root().join("tmp").join("staged-lease");
    std::fs::write(&staged, serde_json::to_vec(&record).unwrap()).unwrap();
    std::fs::rename(&staged, store.root().join("lease")).unwrap();
    let (code, stderr, took) = waiter.finish();
    assert_eq!(code, 75, "the waiter times out: {stderr}");
    assert!(
        took < Duration::from_millis(3000),
        "a 1 s budget ended after {took:?}"
    );
    assert!(
        std::fs::symlink_metadata(store.root().join("lease.break")).is_ok_and(|m| !m.is_file()),
        "the FIFO is not the store's: left in place"
    );
    let _ = holder.kill();
    let _ = holder.wait();
}

/// A FIFO replacing `lock` while a writer waits for the advisory lock: the
/// waiter stops at once with a clear error instead of locking a FIFO (which
/// would let it run next to the holder).
#[test]
fn a_fifo_replacing_the_lock_mid_wait_is_a_clear_error() {
    let store = two_generations();
    let mut holder = spawn_holder(&store, "advisory", "3");
    store.wait_until_locked();
    let waiter = Waiter::run(&store, "advisory", "5");
    let lock = store.root().join("lock");
    mkfifo(&lock);
    let (code, stderr, took) = waiter.finish();
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains(lock.to_str().unwrap()) && stderr.contains("a FIFO (named pipe)"),
        "{stderr}"
    );
    assert!(took < Duration::from_millis(3000), "took {took:?}");
    let _ = holder.kill();
    let _ = holder.wait();
}

/// Found by a hostile audit: a directory under a snapshot's name in
/// `snapshots/` of a store without a pointer (after `clear`) counted as a
/// snapshot, so every command took it for a pointer being replaced and
/// re-read for the whole window (1 s each); nothing ever removes such an
/// entry. Only a regular file counts now.
#[test]
fn a_directory_under_a_snapshot_name_does_not_make_reads_wait_for_a_pointer() {
    let store = TestStore::new();
    store.refresh(b"[0]", &[]);
    assert_eq!(code(&store.run(&["clear"])), 0);
    std::fs::create_dir(store.root().join("snapshots").join("a".repeat(64))).unwrap();
    for args in [["status"], ["show"]] {
        let mut cmd = store.command(&args);
        cmd.env("SNAPCACHE_LOG", "snapcache=info");
        let out = run_with_timeout(cmd);
        let stderr = text(&out.stderr);
        assert!(!stderr.contains("pointer_reread"), "{args:?}: {stderr}");
    }
    assert!(
        store.root().join("snapshots").join("a".repeat(64)).is_dir(),
        "left in place"
    );
}
