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
    let run = |args: &[&str]| {
        let mut cmd = Command::new(bin());
        cmd.arg("--store").arg(&root).args(args);
        run_with_timeout(cmd)
    };
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
