//! Full disks and read-only stores, on small tmpfs mounts made by the test.
//! Mounting needs root (CI runs as root); without it these tests say they
//! were skipped and why.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::*;

/// A tmpfs mounted for one test; unmounted on drop.
struct Mount {
    path: PathBuf,
    _dir: Option<tempfile::TempDir>,
}

impl Mount {
    fn tmpfs(size: &str) -> Option<Mount> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mnt");
        std::fs::create_dir(&path).unwrap();
        let mut mount = Mount::tmpfs_at(&path, size)?;
        mount._dir = Some(dir);
        Some(mount)
    }

    /// A tmpfs over the existing directory `path`.
    fn tmpfs_at(path: &Path, size: &str) -> Option<Mount> {
        if !rustix::process::geteuid().is_root() {
            eprintln!(
                "SKIPPED: mounting a tmpfs needs root (CI runs as root); run as root to exercise this test"
            );
            return None;
        }
        let path = path.to_path_buf();
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(&path)
            .status();
        match status {
            Ok(s) if s.success() => Some(Mount { path, _dir: None }),
            other => {
                eprintln!(
                    "SKIPPED: `mount -t tmpfs` failed ({other:?}); this sandbox does not allow mounts"
                );
                None
            }
        }
    }

    fn remount_read_only(&self) {
        let ok = Command::new("mount")
            .args(["-o", "remount,ro"])
            .arg(&self.path)
            .status()
            .unwrap()
            .success();
        assert!(ok, "remount read-only");
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// Runs the CLI on the store at `root` (on a test's mount).
fn run_on(root: &Path, args: &[&str]) -> std::process::Output {
    let mut cmd = Command::new(bin());
    cmd.arg("--store").arg(root).args(args);
    run_with_timeout(cmd)
}

fn store_in(dir: &Path) -> TestStore {
    // A TestStore whose root lives on the mount: reuse the helpers through a symlink-free path.
    let store = TestStore::new();
    std::fs::remove_dir_all(store.dir.path()).ok();
    std::fs::create_dir_all(store.dir.path()).unwrap();
    std::os::unix::fs::symlink(dir, store.root()).unwrap();
    store
}

#[test]
fn a_full_disk_fails_the_refresh_cleanly() {
    let Some(mount) = Mount::tmpfs("1m") else {
        return;
    };
    let root = mount.path.join("store");
    let run = |args: &[&str]| run_on(&root, args);
    let scratch = tempfile::tempdir().unwrap();
    let small = scratch.path().join("small.json");
    std::fs::write(&small, json_payload(100_000, 1)).unwrap();
    let big = scratch.path().join("big.json");
    std::fs::write(&big, json_payload(2_000_000, 2)).unwrap();

    assert_eq!(
        code(&run(&["refresh", "--from", small.to_str().unwrap()])),
        0
    );
    let out = run(&["refresh", "--from", big.to_str().unwrap()]);
    let stderr = text(&out.stderr);
    assert_eq!(code(&out), 1, "{stderr}");
    assert!(
        stderr.contains("disk is full") || stderr.contains("No space left"),
        "names the cause: {stderr}"
    );
    assert!(
        stderr.contains(root.to_str().unwrap()),
        "names the path: {stderr}"
    );
    assert!(
        stderr.contains("the current generation is unchanged"),
        "says what the failed write left: {stderr}"
    );
    let shown = run(&["show"]);
    assert_eq!(
        shown.stdout,
        json_payload(100_000, 1),
        "the previous generation stays current"
    );
    assert_eq!(code(&run(&["verify"])), 0, "and verifies");
    let leftovers: Vec<_> = std::fs::read_dir(root.join("tmp"))
        .unwrap()
        .flatten()
        .collect();
    assert!(
        leftovers.is_empty(),
        "the failed writer's temp file is gone: {leftovers:?}"
    );
}

/// A mount inside the store (here over `snapshots/`) puts its directories
/// on different filesystems, where no rename between them can work. The
/// refresh fails saying so, with the path and what to do, instead of a bare
/// "Invalid cross-device link"; nothing is left in `tmp/`.
#[test]
fn a_mount_inside_the_store_is_named_as_the_cause_of_a_failed_write() {
    let store = TestStore::new();
    store.refresh(b"[1]", &[]);
    let Some(_mount) = Mount::tmpfs_at(&store.root().join("snapshots"), "1m") else {
        return;
    };
    let file = store.payload("p", b"[2]");
    let out = run_with_timeout({
        let mut cmd = store.command(&["refresh", "--from"]);
        cmd.arg(file);
        cmd
    });
    let stderr = text(&out.stderr);
    assert_eq!(code(&out), 1, "{stderr}");
    assert!(
        stderr.contains("are on different filesystems")
            && stderr.contains("a store must lie on one filesystem")
            && stderr.contains(store.root().join("snapshots").to_str().unwrap())
            && stderr.contains("the current generation is unchanged"),
        "{stderr}"
    );
    let leftovers: Vec<_> = std::fs::read_dir(store.root().join("tmp"))
        .unwrap()
        .flatten()
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// Under an open-file limit too low to work (`ulimit -n`), every command
/// fails with exit 1 and says so, naming the path, and never panics; a
/// refresh that fails leaves the current generation as it was.
#[test]
fn an_open_file_limit_too_low_is_named_and_changes_nothing() {
    let store = TestStore::new();
    store.refresh(b"[0]", &[]);
    let mut published = b"[0]".to_vec();
    let mut failures = 0;
    // 3 is stdin, stdout and stderr: the dynamic loader itself fails there.
    for limit in 4..=8 {
        let payload = format!("[{limit}]").into_bytes();
        let file = store.payload("p", &payload);
        for command in ["refresh", "show", "status"] {
            let mut cmd = Command::new("sh");
            cmd.arg("-c")
                .arg(format!("ulimit -n {limit} && exec \"$0\" \"$@\""))
                .arg(bin())
                .arg("--store")
                .arg(store.root())
                .arg(command)
                .env_remove("SNAPCACHE_DIR");
            if command == "refresh" {
                cmd.arg("--from").arg(&file);
            }
            let out = run_with_timeout(cmd);
            let stderr = text(&out.stderr);
            match code(&out) {
                0 if command == "refresh" => published = payload.clone(),
                0 if command == "show" => assert_eq!(out.stdout, published, "limit {limit}"),
                0 => {}
                1 => {
                    failures += 1;
                    assert!(
                        stderr.contains("too many files are open")
                            && stderr.contains(store.root().to_str().unwrap()),
                        "limit {limit}, {command}: {stderr}"
                    );
                }
                other => panic!("limit {limit}, {command}: exit {other}: {stderr}"),
            }
        }
    }
    assert!(failures > 0, "some limit is too low for some command");
    // What failed changed nothing: the store verifies and holds the last
    // payload a refresh reported as published.
    assert_eq!(code(&store.run(&["verify"])), 0);
    assert_eq!(store.show(), published);
}

/// Reproduced: under a file-size limit (`ulimit -f`, in 1 KiB blocks
/// here) a refresh of a larger payload, and a `show` of a larger snapshot
/// into a file, died of SIGXFSZ: exit 153, no message, a temp file left in
/// `tmp/`. Now the write fails with "File too large", named with its path
/// and the limit, exit 1, and nothing is left or changed.
#[test]
fn a_file_size_limit_is_named_and_changes_nothing() {
    let store = TestStore::new();
    let small = json_payload(100_000, 1);
    store.refresh(&small, &[]);
    let big = store.payload("big", &json_payload(3_000_000, 2));
    let under_limit = |args: &[&str], stdout: Option<&std::path::Path>| {
        let redirect = stdout.map_or(String::new(), |p| format!(" > '{}'", p.display()));
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(format!("ulimit -f 1000 && exec \"$0\" \"$@\"{redirect}"))
            .arg(bin())
            .arg("--store")
            .arg(store.root())
            .args(args)
            .env_remove("SNAPCACHE_DIR");
        run_with_timeout(cmd)
    };
    let out = under_limit(&["refresh", "--from", big.to_str().unwrap()], None);
    let stderr = text(&out.stderr);
    assert_eq!(code(&out), 1, "{stderr}");
    assert!(
        stderr.contains("File too large")
            && stderr.contains("ulimit -f")
            && stderr.contains(store.root().to_str().unwrap()),
        "{stderr}"
    );
    assert!(
        store.files_in("tmp").is_empty(),
        "{:?}",
        store.files_in("tmp")
    );
    assert_eq!(store.show(), small);
    // A snapshot larger than the limit, shown into a file.
    store.refresh(&json_payload(2_000_000, 3), &[]);
    let target = store.scratch("shown");
    let out = under_limit(&["show"], Some(&target));
    let stderr = text(&out.stderr);
    assert_eq!(code(&out), 1, "{stderr}");
    assert!(stderr.contains("File too large"), "{stderr}");
    assert_eq!(code(&store.run(&["verify"])), 0);
}

/// Reproduced: `--help > /dev/full` and `--version > /dev/full` printed
/// nothing and exited 0, and so did `--json status` with stdout open
/// read-only (`1<file`: std's stdout takes the `EBADF` for a closed one
/// and reports success), though the docs say a failed write to stdout is
/// exit 1, as it already was for `show`.
#[test]
fn output_that_cannot_be_written_fails_with_exit_1() {
    let store = TestStore::new();
    store.refresh(b"[1]", &[]);
    let read_only = store.payload("ro", b"x");
    let full = std::path::Path::new("/dev/full");
    let mut cases: Vec<(Vec<&str>, std::fs::File)> = vec![
        (
            vec!["--json", "status"],
            std::fs::File::open(&read_only).unwrap(),
        ),
        (vec!["history"], std::fs::File::open(&read_only).unwrap()),
    ];
    if full.exists() {
        for args in [vec!["--help"], vec!["--version"], vec!["status"]] {
            cases.push((
                args,
                std::fs::OpenOptions::new().write(true).open(full).unwrap(),
            ));
        }
    } else {
        eprintln!("SKIPPED (in part): no /dev/full to fill stdout with");
    }
    for (args, stdout) in cases {
        let mut cmd = store.command(&args);
        cmd.stdout(stdout).stderr(std::process::Stdio::piped());
        let out = wait_output(cmd.spawn().unwrap(), COMMAND_TIMEOUT);
        let stderr = text(&out.stderr);
        assert_eq!(code(&out), 1, "{args:?}: {stderr}");
        assert!(stderr.contains("stdout"), "{args:?}: {stderr}");
    }
}

/// Reproduced: with its stdout inherited non-blocking (a parent that polls
/// its end of the pipe sets that on the shared open file), `show` of a 3 MB
/// snapshot stopped after 64 KiB: "Resource temporarily unavailable", exit
/// 1, a cut payload sent. It now waits for the pipe, as a blocking write
/// would, and sends the whole snapshot.
#[test]
fn show_into_a_non_blocking_pipe_sends_the_whole_snapshot() {
    use std::io::Read;
    let store = TestStore::new();
    let payload: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    store.refresh(&payload, &["--raw"]);
    for args in [&["show"][..], &["show", "--generation", "1"]] {
        let (mut reader, writer) = std::io::pipe().unwrap();
        let flags = rustix::fs::fcntl_getfl(&writer).unwrap();
        rustix::fs::fcntl_setfl(&writer, flags | rustix::fs::OFlags::NONBLOCK).unwrap();
        let child = store
            .command(args)
            .stdout(writer)
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Let the pipe fill, so that the writer meets a full one.
        std::thread::sleep(std::time::Duration::from_millis(300));
        let mut got = Vec::new();
        reader.read_to_end(&mut got).unwrap();
        let out = wait_output(child, COMMAND_TIMEOUT);
        assert_eq!(code(&out), 0, "{args:?}: {}", text(&out.stderr));
        assert!(
            got == payload,
            "{args:?}: {} of {} bytes",
            got.len(),
            payload.len()
        );
    }
}

#[test]
fn a_read_only_store_serves_reads_and_refuses_writes_clearly() {
    let Some(mount) = Mount::tmpfs("4m") else {
        return;
    };
    let store = store_in(&mount.path);
    store.refresh(&json_payload(10_000, 1), &[]);
    mount.remount_read_only();
    assert_eq!(
        store.show(),
        json_payload(10_000, 1),
        "reads work on a read-only store"
    );
    store.ok(&["verify"]);
    store.ok(&["status"]);
    store.ok(&["history"]);
    let out = store.run(&[
        "refresh",
        "--from",
        store.payload("p", b"[2]").to_str().unwrap(),
    ]);
    let stderr = text(&out.stderr);
    assert_eq!(code(&out), 1, "{stderr}");
    assert!(
        stderr.contains("read-only"),
        "names the cause and the fix: {stderr}"
    );
    assert!(
        stderr.contains(store.root().to_str().unwrap())
            || stderr.contains(mount.path.to_str().unwrap()),
        "names the path: {stderr}"
    );
}

/// Sets or clears the immutable flag of `path` with `chattr`; false when
/// that is not possible here (no chattr, a filesystem without the flag).
fn set_immutable(path: &std::path::Path, on: bool) -> bool {
    Command::new("chattr")
        .arg(if on { "+i" } else { "-i" })
        .arg(path)
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Reproduced: with the snapshots made immutable (`chattr +i`), `gc` said
/// "removed 0 unreferenced snapshot(s)" and `clear` and `forget` "removed 0
/// snapshot(s)", exit 0, as if there had been nothing to remove; only `-v`
/// showed why. Each now warns on stderr naming the files and the fix, and
/// its `--json` report lists them under `not_removed`.
#[test]
fn files_that_cannot_be_removed_are_reported_by_gc_forget_and_clear() {
    let store = TestStore::new();
    for i in 0..4 {
        store.refresh(format!("[{i}]").as_bytes(), &[]);
    }
    let snapshots: Vec<_> = store
        .files_in("snapshots")
        .into_iter()
        .map(|n| store.root().join("snapshots").join(n))
        .collect();
    if !snapshots.iter().all(|p| set_immutable(p, true)) {
        snapshots.iter().for_each(|p| {
            set_immutable(p, false);
        });
        eprintln!(
            "SKIPPED: chattr +i does not work here (no chattr, or a filesystem without the flag)"
        );
        return;
    }
    struct Mutable(Vec<std::path::PathBuf>);
    impl Drop for Mutable {
        fn drop(&mut self) {
            self.0.iter().for_each(|p| {
                set_immutable(p, false);
            });
        }
    }
    let _undo = Mutable(snapshots.clone());
    let (_, history) = store.json(&["history"]);
    let oldest = history["generations"][0]["generation"].to_string();
    for args in [
        vec!["forget", oldest.as_str()],
        vec!["gc", "--keep", "1"],
        vec!["clear"],
    ] {
        let out = store.run(&args);
        let stderr = text(&out.stderr);
        assert_eq!(code(&out), 0, "{args:?}: {stderr}");
        assert!(
            stderr.contains("could not remove") && stderr.contains("chattr -i"),
            "{args:?}: {stderr}"
        );
        // The command advised is one that removes them: after a clear
        // there is no pointer, and gc never removes a snapshot it cannot
        // prove unreferenced.
        let advised = if args[0] == "clear" { "clear" } else { "gc" };
        assert!(
            stderr.contains(&format!("then run `snapcache {advised}`")),
            "{args:?}: {stderr}"
        );
        let named = snapshots
            .iter()
            .any(|p| stderr.contains(p.to_str().unwrap()));
        assert!(named, "{args:?} names a file: {stderr}");
        let (_, report) = store.json(&args);
        let listed = report["not_removed"].as_array().map_or(0, Vec::len);
        // forget ran already: its generation is gone; gc and clear again
        // find the same files.
        if args[0] != "forget" {
            assert!(listed > 0, "{args:?}: {report}");
            assert!(
                report["not_removed"][0]["error"]
                    .as_str()
                    .is_some_and(|e| e.contains("not permitted")),
                "{report}"
            );
        }
    }
    assert_eq!(
        store.files_in("snapshots").len(),
        snapshots.len(),
        "nothing removed"
    );
    // Made removable, the advised command removes what clear left.
    snapshots.iter().for_each(|p| {
        set_immutable(p, false);
    });
    assert_eq!(code(&store.run(&["clear"])), 0);
    assert!(store.files_in("snapshots").is_empty(), "clear removed them");
}

/// Found by a hostile audit: with the filesystem out of inodes (`df -h`
/// showing free space), a refresh said "the disk is full: free some space"
/// and advised `gc`, which had nothing to remove. The message now names
/// inodes as well as space, and the hint says when gc can help.
#[test]
fn a_filesystem_out_of_inodes_is_named_as_such() {
    let Some(mount) = Mount::tmpfs("8m,nr_inodes=64") else {
        return;
    };
    let root = mount.path.join("store");
    let run = |args: &[&str]| run_on(&root, args);
    let scratch = tempfile::tempdir().unwrap();
    let first = scratch.path().join("first.json");
    std::fs::write(&first, b"[1]").unwrap();
    assert_eq!(
        code(&run(&["refresh", "--from", first.to_str().unwrap()])),
        0
    );
    // Use up the inodes beside the store, keeping its bytes free.
    let filler = mount.path.join("filler");
    std::fs::create_dir(&filler).unwrap();
    let mut made = 0;
    while std::fs::File::create(filler.join(made.to_string())).is_ok() {
        made += 1;
        assert!(made < 10_000, "the tmpfs did not run out of inodes");
    }
    let second = scratch.path().join("second.json");
    std::fs::write(&second, b"[2]").unwrap();
    let out = run(&["refresh", "--from", second.to_str().unwrap()]);
    let stderr = text(&out.stderr);
    assert_eq!(code(&out), 1, "{stderr}");
    assert!(
        stderr.contains("no free space or no free inodes") && stderr.contains("df -i"),
        "{stderr}"
    );
    assert!(
        stderr.contains(root.to_str().unwrap()),
        "names the path: {stderr}"
    );
    assert!(
        !stderr.contains("hint: `snapcache gc` removes"),
        "no bare gc advice: {stderr}"
    );
    assert_eq!(run(&["show"]).stdout, b"[1]", "the store is as it was");
    std::fs::remove_dir_all(&filler).unwrap();
    assert_eq!(
        code(&run(&["refresh", "--from", second.to_str().unwrap()])),
        0
    );
    assert_eq!(run(&["show"]).stdout, b"[2]");
}

/// Found by a hostile audit: on a filesystem that refuses `chmod` (FAT,
/// fusefat, bindfs `--chmod-deny`), a lease writer's create-only fallback
/// failed after creating `lease`, and left it empty: every later writer
/// then waited its whole lock budget for a holder that never existed. The
/// file is now removed, the error says the filesystem keeps no Unix modes,
/// and the next writer (here on a filesystem that allows it again) takes
/// the lock at once. The refusal is injected with strace.
#[cfg(target_os = "linux")]
#[test]
fn a_refused_chmod_leaves_no_lease_file_and_says_why() {
    let store = TestStore::new();
    store.refresh(b"[1]", &[]);
    let payload = store.payload("p.json", b"[2]");
    let mut cmd = Command::new("strace");
    cmd.args([
        "-f",
        "-qq",
        "-o",
        "/dev/null",
        "-e",
        "trace=fchmod,fchmodat",
        "-e",
    ])
    .arg("inject=fchmod,fchmodat:error=EPERM")
    .arg(bin())
    .arg("--store")
    .arg(store.root())
    .args([
        "--lock-backend",
        "lease",
        "refresh",
        "--lock-timeout",
        "0",
        "--from",
    ])
    .arg(&payload)
    .stdin(std::process::Stdio::null());
    let out = match cmd.output() {
        Ok(out) => out,
        Err(e) => {
            eprintln!("SKIPPED: strace cannot be run here: {e}");
            return;
        }
    };
    let stderr = text(&out.stderr);
    if stderr.contains("PTRACE_TRACEME") || stderr.contains("ptrace") {
        eprintln!("SKIPPED: strace could not trace the command: {stderr}");
        return;
    }
    assert_eq!(code(&out), 1, "{stderr}");
    assert!(
        stderr.contains("keep no Unix modes") && stderr.contains("another filesystem"),
        "{stderr}"
    );
    assert!(
        !store.root().join("lease").exists(),
        "an empty lease file was left behind: {stderr}"
    );
    assert!(
        store.files_in("tmp").is_empty(),
        "no temp file left: {:?}",
        store.files_in("tmp")
    );
    let out = store.run(&[
        "--lock-backend",
        "lease",
        "refresh",
        "--lock-timeout",
        "0",
        "--from",
        payload.to_str().unwrap(),
    ]);
    assert_eq!(
        code(&out),
        0,
        "the next writer is not kept waiting: {}",
        text(&out.stderr)
    );
    assert_eq!(store.show(), b"[2]");
}

/// Found by a review: with `--lock-backend advisory` forced where `flock`
/// fails (EOPNOTSUPP, injected with strace), the error advised another
/// filesystem, where `auto` publishes on this very one through the lease
/// backend. It now says advisory locks are missing and names the way.
#[cfg(target_os = "linux")]
#[test]
fn a_forced_advisory_backend_without_flock_names_the_lease_backend() {
    let store = TestStore::new();
    store.refresh(b"[1]", &[]);
    let payload = store.payload("p.json", b"[2]");
    let run = |backend: &str| {
        let mut cmd = Command::new("strace");
        cmd.args(["-f", "-qq", "-o", "/dev/null", "-e", "trace=flock", "-e"])
            .arg("inject=flock:error=EOPNOTSUPP")
            .arg(bin())
            .arg("--store")
            .arg(store.root())
            .args(["--lock-backend", backend, "refresh", "--from"])
            .arg(&payload)
            .stdin(std::process::Stdio::null());
        cmd.output()
    };
    let out = match run("advisory") {
        Ok(out) => out,
        Err(e) => {
            eprintln!("SKIPPED: strace cannot be run here: {e}");
            return;
        }
    };
    let stderr = text(&out.stderr);
    if stderr.contains("ptrace") {
        eprintln!("SKIPPED: strace could not trace the command: {stderr}");
        return;
    }
    assert_eq!(code(&out), 1, "{stderr}");
    assert!(
        stderr.contains("does not support advisory locks")
            && stderr.contains("--lock-backend auto")
            && !stderr.contains("lacks something a store needs"),
        "{stderr}"
    );
    let out = run("auto").unwrap();
    assert_eq!(
        code(&out),
        0,
        "auto falls back to the lease: {}",
        text(&out.stderr)
    );
    assert_eq!(store.show(), b"[2]");
}
