//! A store trusts only what its owner controls (issue 8 point 2): dirs and
//! files writable by group or others, or owned by another user, are refused
//! before anything is read or written; a writer must be the store's owner;
//! a read-only store owned by root can be read by everyone.
//!
//! The multi-user cases create two temporary users (needs root and
//! `useradd`; skipped with a printed reason otherwise) and run the binary as
//! one of them with `setpriv`.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use crate::common::*;

/// A user that exists for one test; deleted on drop, even on failure.
struct TempUser {
    name: String,
    uid: u32,
    gid: u32,
}

impl TempUser {
    fn create(role: &str) -> Option<TempUser> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        if !rustix::process::geteuid().is_root() {
            eprintln!("SKIPPED: creating a second user needs root (CI runs as root)");
            return None;
        }
        let name = format!(
            "sc{role}{}x{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        if Command::new("setpriv").arg("--version").output().is_err() {
            eprintln!("SKIPPED: setpriv (util-linux) is not available to run as another user");
            return None;
        }
        let made = Command::new("useradd")
            .args(["--no-create-home", "--user-group", "--shell", "/bin/sh"])
            .arg(&name)
            .stderr(Stdio::piped())
            .output();
        match made {
            Ok(out) if out.status.success() => {}
            Ok(out) => {
                eprintln!(
                    "SKIPPED: useradd failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                return None;
            }
            Err(e) => {
                eprintln!("SKIPPED: useradd is not available: {e}");
                return None;
            }
        }
        // The guard exists before `id` runs, so the user is removed even if
        // it fails.
        let mut user = TempUser {
            name,
            uid: u32::MAX,
            gid: u32::MAX,
        };
        let id = |flag: &str, name: &str| -> u32 {
            let out = Command::new("id").arg(flag).arg(name).output().unwrap();
            String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
        };
        user.uid = id("-u", &user.name);
        user.gid = id("-g", &user.name);
        Some(user)
    }

    /// `snapcache --store <root> <args>` run as this user.
    fn command(&self, root: &Path, args: &[&str]) -> Command {
        let mut cmd = Command::new("setpriv");
        cmd.arg(format!("--reuid={}", self.uid))
            .arg(format!("--regid={}", self.gid))
            .arg("--clear-groups")
            .arg("--")
            .arg(bin())
            .arg("--store")
            .arg(root)
            .args(args);
        cmd.env_remove("SNAPCACHE_DIR")
            .env_remove("SNAPCACHE_LOCK_TIMEOUT")
            .env_remove("SNAPCACHE_KEEP")
            .env_remove("SNAPCACHE_LOG")
            .stdin(Stdio::null());
        cmd
    }

    fn run(&self, root: &Path, args: &[&str]) -> Output {
        run_with_timeout(self.command(root, args))
    }
}

impl Drop for TempUser {
    fn drop(&mut self) {
        let ok = Command::new("userdel")
            .arg(&self.name)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("warning: could not delete the test user {}", self.name);
        }
        // userdel removes the user's private group; if not, remove it here.
        let _ = Command::new("groupdel")
            .arg(&self.name)
            .stderr(Stdio::null())
            .status();
    }
}

/// A temp directory others can traverse (the store goes inside it).
fn shared_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

fn chown(path: &Path, user: &TempUser) {
    std::os::unix::fs::lchown(path, Some(user.uid), Some(user.gid)).unwrap();
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// An empty store directory owned by `user` (mode 0700), as `mkdir` by
/// that user would leave it.
fn home_for(dir: &Path, user: &TempUser) -> PathBuf {
    let root = dir.join("store");
    std::fs::create_dir(&root).unwrap();
    chown(&root, user);
    chmod(&root, 0o700);
    root
}

/// Every path in the store tree (root included).
fn walk(root: &Path) -> Vec<PathBuf> {
    let mut out = vec![root.to_path_buf()];
    let mut i = 0;
    while i < out.len() {
        let p = out[i].clone();
        if std::fs::symlink_metadata(&p).is_ok_and(|m| m.is_dir()) {
            for e in std::fs::read_dir(&p).unwrap().flatten() {
                out.push(e.path());
            }
        }
        i += 1;
    }
    out
}

fn payload_file(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    chmod(&path, 0o644);
    path
}

fn assert_untrusted(out: &Output, path: &Path, needles: &[&str]) {
    let stderr = text(&out.stderr);
    assert_eq!(code(out), 1, "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        stderr.contains(&format!("refusing to use {}", path.display())),
        "names the path {}: {stderr}",
        path.display()
    );
    for needle in needles {
        assert!(stderr.contains(needle), "expected {needle:?} in: {stderr}");
    }
}

/// Reproduced: another user pre-created the store directories with mode
/// 0777, and the victim's refresh used them silently.
#[test]
fn a_refresh_refuses_store_dirs_another_user_precreated_world_writable() {
    let (Some(mallory), Some(alice)) = (TempUser::create("m"), TempUser::create("a")) else {
        return;
    };
    let dir = shared_dir();
    let root = dir.path().join("store");
    for sub in ["", "snapshots", "tmp"] {
        let p = root.join(sub);
        std::fs::create_dir_all(&p).unwrap();
        chown(&p, &mallory);
        chmod(&p, 0o777);
    }
    let from = payload_file(dir.path(), "p.json", b"[1]");
    let out = alice.run(&root, &["refresh", "--from", from.to_str().unwrap()]);
    assert_untrusted(
        &out,
        &root,
        &[
            &format!("uid {} ({})", mallory.uid, mallory.name),
            "mode 0777",
            // Not `chmod go-w`: alice cannot change mallory's directory.
            "so only they can remove that permission",
            "--store",
        ],
    );
    assert!(
        !text(&out.stderr).contains("chmod go-w"),
        "{}",
        text(&out.stderr)
    );
    assert!(
        !root.join("current").exists(),
        "nothing was published into the untrusted store"
    );
    assert!(
        walk(&root)
            .iter()
            .all(|p| { std::fs::symlink_metadata(p).unwrap().uid() == mallory.uid })
    );
    // Mode fixed but still mallory's: a writer that is not the owner refuses.
    for sub in ["", "snapshots", "tmp"] {
        chmod(&root.join(sub), 0o755);
    }
    let out = alice.run(&root, &["refresh", "--from", from.to_str().unwrap()]);
    assert_untrusted(
        &out,
        &root,
        &[
            &format!("belongs to uid {} ({})", mallory.uid, mallory.name),
            &format!("runs as uid {} ({})", alice.uid, alice.name),
        ],
    );
}

/// A store of `user`'s own in `dir`, with `bytes` published from the file
/// it returns alongside the root.
fn published_by(user: &TempUser, dir: &Path, bytes: &[u8]) -> (PathBuf, PathBuf) {
    let root = home_for(dir, user);
    let from = payload_file(dir, "good.json", bytes);
    let out = user.run(&root, &["refresh", "--from", from.to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    (root, from)
}

/// Reproduced: in a victim store with world-writable dirs the attacker
/// planted a snapshot and a valid pointer; `show` served `{"evil":true}`
/// and `verify` said ok.
#[test]
fn a_planted_snapshot_and_pointer_in_a_world_writable_store_are_never_served() {
    let (Some(mallory), Some(alice)) = (TempUser::create("m"), TempUser::create("a")) else {
        return;
    };
    let dir = shared_dir();
    let (root, _) = published_by(&alice, dir.path(), b"{\"good\":true}");
    for sub in ["", "snapshots", "tmp"] {
        chmod(&root.join(sub), 0o777);
    }
    // The attacker's store, published normally, then copied in as mallory's.
    let evil = TestStore::new();
    evil.refresh(b"{\"evil\":true}", &[]);
    let evil_hash = hash_hex(b"{\"evil\":true}");
    let planted_snapshot = root.join("snapshots").join(&evil_hash);
    std::fs::copy(
        evil.root().join("snapshots").join(&evil_hash),
        &planted_snapshot,
    )
    .unwrap();
    std::fs::remove_file(root.join("current")).unwrap();
    std::fs::copy(evil.root().join("current"), root.join("current")).unwrap();
    chown(&planted_snapshot, &mallory);
    chown(&root.join("current"), &mallory);
    chmod(&root.join("current"), 0o644);

    for args in [&["show"][..], &["verify"], &["status"], &["history"]] {
        let out = alice.run(&root, args);
        assert!(
            !text(&out.stdout).contains("evil"),
            "{args:?} served the planted data"
        );
        assert_untrusted(
            &out,
            &root,
            &["mode 0777", "writable by its group and others"],
        );
    }
    // With the dirs fixed, the planted pointer itself is still refused: it
    // belongs to another user.
    for sub in ["", "snapshots", "tmp"] {
        chmod(&root.join(sub), 0o700);
    }
    let out = alice.run(&root, &["show"]);
    assert!(!text(&out.stdout).contains("evil"));
    assert_untrusted(
        &out,
        &root.join("current"),
        &[
            &format!("uid {} ({})", mallory.uid, mallory.name),
            "not to the store's owner",
        ],
    );
}

/// `snapcache --store <root> <args>` run as this process's user.
fn run_here(root: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(bin());
    cmd.arg("--store")
        .arg(root)
        .args(args)
        .env_remove("SNAPCACHE_DIR");
    run_with_timeout(cmd)
}

/// The arguments of a lease-backend refresh from `from`.
fn lease_refresh(from: &Path) -> [&str; 5] {
    let from = from.to_str().unwrap();
    ["--lock-backend", "lease", "refresh", "--from", from]
}

/// A lease-backend store at `root` with generations `[1]` then `[2]`,
/// published by `user` (`None`: this process).
fn lease_store(root: &Path, user: Option<&TempUser>, dir: &Path) {
    for (n, body) in [(1, b"[1]"), (2, b"[2]")] {
        let from = payload_file(dir, &format!("lease{n}.json"), body);
        let args = lease_refresh(&from);
        let out = match user {
            Some(user) => user.run(root, &args),
            None => run_here(root, &args),
        };
        assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    }
}

/// Reproduced: on the lease backend readers follow `commits/`, which the
/// trust check did not look at. With it world-writable, another user copied
/// in a commit record of their own (the same contents, rolled back to 1):
/// `show` served generation 1 and `verify` said ok. Now the directory is
/// refused like `snapshots/`; and a record planted while it was open, still
/// its planter's, is never followed: readers pass over it, writers refuse,
/// and nothing of the owner's history is removed.
#[test]
fn a_commit_record_planted_through_a_world_writable_commits_dir_is_never_followed() {
    let (Some(mallory), Some(alice)) = (TempUser::create("m"), TempUser::create("a")) else {
        return;
    };
    let dir = shared_dir();
    let root = home_for(dir.path(), &alice);
    lease_store(&root, Some(&alice), dir.path());
    // Mallory's own store: the same two payloads, then a rollback, whose
    // commit record 3 is what she plants.
    let evil = dir.path().join("evil");
    std::fs::create_dir(&evil).unwrap();
    chown(&evil, &mallory);
    chmod(&evil, 0o700);
    let evil_root = evil.join("store");
    lease_store(&evil_root, Some(&mallory), dir.path());
    let out = mallory.run(
        &evil_root,
        &["--lock-backend", "lease", "rollback", "--to", "1"],
    );
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));

    let commits = root.join("commits");
    chmod(&commits, 0o777);
    let planted = commits.join("3");
    std::fs::copy(evil_root.join("commits").join("3"), &planted).unwrap();
    chown(&planted, &mallory);
    chmod(&planted, 0o644);
    let snapshots_before = std::fs::read_dir(root.join("snapshots")).unwrap().count();

    let from = payload_file(dir.path(), "p3.json", b"[3]");
    let refresh = lease_refresh(&from);
    for args in [
        &["show"][..],
        &["status"],
        &["verify"],
        &["history"],
        &refresh,
    ] {
        let out = alice.run(&root, args);
        assert_ne!(out.stdout, b"[1]", "{args:?} followed the planted record");
        assert_untrusted(
            &out,
            &commits,
            &["mode 0777", "writable by its group and others"],
        );
    }

    // The directory fixed; the record is still mallory's, so she can still
    // rewrite it. Readers pass over it and serve the owner's pointer...
    chmod(&commits, 0o700);
    let out = alice.run(&root, &["show"]);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    assert_eq!(out.stdout, b"[2]", "the planted record was followed");
    // ...and a writer refuses, naming the record and its owner.
    let out = alice.run(&root, &refresh);
    assert_untrusted(
        &out,
        &planted,
        &[
            &format!("uid {} ({})", mallory.uid, mallory.name),
            "not to the store's owner",
        ],
    );
    assert_eq!(
        std::fs::read_dir(root.join("snapshots")).unwrap().count(),
        snapshots_before,
        "no snapshot of the owner's history was removed"
    );
    // Once the owner removes it, all is well.
    std::fs::remove_file(&planted).unwrap();
    let out = alice.run(&root, &refresh);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    assert_eq!(alice.run(&root, &["show"]).stdout, b"[3]");
}

/// A snapshot file another user owns is refused even though it verifies:
/// planted while `snapshots/` was open to others (here: over the owner's
/// own current snapshot, with the same bytes), it stays its planter's to
/// rewrite, for instance between `show`'s hash pass and its copy out.
#[test]
fn a_snapshot_file_another_user_owns_is_refused_even_when_it_verifies() {
    let (Some(mallory), Some(alice)) = (TempUser::create("m"), TempUser::create("a")) else {
        return;
    };
    let dir = shared_dir();
    let (root, from) = published_by(&alice, dir.path(), b"{\"good\":true}");
    let snapshot = root.join("snapshots").join(hash_hex(b"{\"good\":true}"));
    // What mallory did while the directory was 0777: her own copy, same
    // bytes, writable by her.
    let copy = std::fs::read(&snapshot).unwrap();
    std::fs::remove_file(&snapshot).unwrap();
    std::fs::write(&snapshot, &copy).unwrap();
    chown(&snapshot, &mallory);
    chmod(&snapshot, 0o644);

    for args in [&["show"][..], &["show", "--generation", "1"]] {
        let out = alice.run(&root, args);
        assert!(out.stdout.is_empty(), "{args:?} printed a snapshot");
        assert_untrusted(
            &out,
            &snapshot,
            &[
                &format!("uid {} ({})", mallory.uid, mallory.name),
                "not to the store's owner",
            ],
        );
    }
    let out = alice.run(&root, &["verify"]);
    assert_eq!(code(&out), 1, "{}", text(&out.stderr));
    let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(said.contains("untrusted"), "{said}");
    assert!(said.contains(&format!("uid {}", mallory.uid)), "{said}");
    // The owner's next refresh of the same bytes replaces it with her own
    // read-only file, and reads work again.
    let out = alice.run(&root, &["refresh", "--from", from.to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    let m = std::fs::symlink_metadata(&snapshot).unwrap();
    assert_eq!((m.uid(), m.mode() & 0o777), (alice.uid, 0o400));
    assert_eq!(alice.run(&root, &["show"]).stdout, b"{\"good\":true}");
}

/// The same rules for the files the root check cannot name in advance, as
/// any user: a `commits/` directory, a commit record or a snapshot file
/// that its group or others can write is refused, with the path, the mode
/// and `chmod go-w`; readers pass over such a record, writers refuse it.
#[test]
fn writable_commits_records_and_snapshot_files_are_refused() {
    let dir = shared_dir();
    let root = dir.path().join("store");
    lease_store(&root, None, dir.path());
    let run = |args: &[&str]| run_here(&root, args);
    let from = payload_file(dir.path(), "p3.json", b"[3]");
    let refresh = lease_refresh(&from);

    let commits = root.join("commits");
    chmod(&commits, 0o702);
    for args in [&["show"][..], &["status"], &["verify"], &refresh] {
        let out = run(args);
        assert_untrusted(
            &out,
            &commits,
            &["mode 0702", "writable by others", "chmod go-w"],
        );
    }
    chmod(&commits, 0o700);

    // A record ahead of `current` (another store's rollback, same
    // contents), made group-writable.
    let other = dir.path().join("other");
    lease_store(&other, None, dir.path());
    let out = run_here(
        &other,
        &["--lock-backend", "lease", "rollback", "--to", "1"],
    );
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    let record = commits.join("3");
    std::fs::copy(other.join("commits").join("3"), &record).unwrap();
    chmod(&record, 0o660);
    let out = run(&["show"]);
    assert_eq!(
        out.stdout,
        b"[2]",
        "a writable record was followed: {}",
        text(&out.stderr)
    );
    let out = run(&refresh);
    assert_untrusted(&out, &record, &["mode 0660", "writable by its group"]);
    // Only its mode kept it out: made the owner's alone, it is followed.
    chmod(&record, 0o600);
    assert_eq!(run(&["show"]).stdout, b"[1]");

    let snapshot = root.join("snapshots").join(hash_hex(b"[1]"));
    chmod(&snapshot, 0o444 | 0o022);
    let out = run(&["show"]);
    assert!(out.stdout.is_empty());
    assert_untrusted(
        &out,
        &snapshot,
        &["mode 0466", "writable by its group and others"],
    );
    let out = run(&["--json", "verify"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(code(&out), 1, "{}", text(&out.stderr));
    let problems = report["problems"].as_array().unwrap();
    assert!(
        problems.iter().any(|p| p["kind"] == "untrusted"
            && p["path"] == snapshot.to_str().unwrap()
            && p["detail"].as_str().unwrap().contains("chmod go-w")),
        "{report}"
    );
    chmod(&snapshot, 0o400);
    assert_eq!(run(&["show"]).stdout, b"[1]");
}

/// Reproduced: root's refresh left a root-only `current` and locked the
/// owner out. Now it refuses and leaves nothing root-owned.
#[test]
fn root_refuses_to_write_a_users_store_and_leaves_nothing_behind() {
    let Some(alice) = TempUser::create("a") else {
        return;
    };
    let dir = shared_dir();
    let root = home_for(dir.path(), &alice);
    let from = payload_file(dir.path(), "p1.json", b"[1]");
    let out = alice.run(&root, &["refresh", "--from", from.to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    let before = walk(&root);

    let from2 = payload_file(dir.path(), "p2.json", b"[2]");
    let as_root = |args: &[&str]| run_here(&root, args);
    for args in [
        &["refresh", "--from", from2.to_str().unwrap()][..],
        &[
            "--lock-backend",
            "lease",
            "refresh",
            "--from",
            from2.to_str().unwrap(),
        ],
        &["gc"],
        &["rollback"],
    ] {
        let out = as_root(args);
        assert_untrusted(
            &out,
            &root,
            &[
                &format!("belongs to uid {} ({})", alice.uid, alice.name),
                "runs as uid 0 (root)",
                &format!("Run the write as {}", alice.name),
            ],
        );
    }
    // Root reads it only when it trusts alice (like git's safe.directory).
    let out = as_root(&["show"]);
    assert_eq!(code(&out), 1, "{}", text(&out.stderr));
    let mut cmd = Command::new(bin());
    cmd.arg("--store")
        .arg(&root)
        .arg("show")
        .env_remove("SNAPCACHE_DIR")
        .env("SNAPCACHE_TRUSTED_OWNERS", &alice.name);
    let out = run_with_timeout(cmd);
    assert_eq!(out.stdout, b"[1]", "{}", text(&out.stderr));
    let after = walk(&root);
    assert_eq!(before, after, "root's refused writes created nothing");
    for p in &after {
        let uid = std::fs::symlink_metadata(p).unwrap().uid();
        assert_eq!(uid, alice.uid, "{} is owned by uid {uid}", p.display());
    }
    let from3 = payload_file(dir.path(), "p3.json", b"[3]");
    let out = alice.run(&root, &["refresh", "--from", from3.to_str().unwrap()]);
    assert_eq!(
        code(&out),
        0,
        "the owner can still write: {}",
        text(&out.stderr)
    );
}

/// A system-wide read-only cache: owned by root, 0755 dirs and 0644/0444
/// files. Every user can read it; nobody but root can write it.
#[test]
fn a_user_reads_a_root_owned_read_only_store() {
    let Some(alice) = TempUser::create("a") else {
        return;
    };
    let dir = shared_dir();
    let store = TestStore { dir };
    store.refresh(b"{\"system\":1}", &[]);
    store.refresh(b"{\"system\":2}", &[]);
    let root = store.root();
    for p in walk(&root) {
        let m = std::fs::symlink_metadata(&p).unwrap();
        chmod(&p, if m.is_dir() { 0o755 } else { 0o644 });
    }
    let out = alice.run(&root, &["show"]);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    assert_eq!(out.stdout, b"{\"system\":2}");
    let out = alice.run(&root, &["show", "--generation", "1"]);
    assert_eq!(out.stdout, b"{\"system\":1}", "{}", text(&out.stderr));
    for args in [
        &["status"][..],
        &["history"],
        &["verify"],
        &["--json", "status"],
    ] {
        let out = alice.run(&root, args);
        assert_eq!(code(&out), 0, "{args:?}: {}", text(&out.stderr));
    }
    // tmp/ private to root (readers never need it): still readable; the
    // check judges what it cannot open by lstat under the checked root.
    chmod(&root.join("tmp"), 0o700);
    for args in [&["show"][..], &["status"], &["history"]] {
        let out = alice.run(&root, args);
        assert_eq!(
            code(&out),
            0,
            "{args:?} with tmp/ 0700: {}",
            text(&out.stderr)
        );
    }
    chmod(&root.join("tmp"), 0o755);
    let from = payload_file(store.dir.path(), "p.json", b"[9]");
    let out = alice.run(&root, &["refresh", "--from", from.to_str().unwrap()]);
    assert_untrusted(
        &out,
        &root,
        &[
            "belongs to uid 0 (root)",
            &format!("runs as uid {}", alice.uid),
        ],
    );
}

/// A group-writable `current` or `lock` (or a store dir) is refused, by
/// readers and writers, with the path and mode; after `chmod go-w` all is
/// well again. Runs as any user.
#[test]
fn group_or_world_writable_store_entries_are_refused() {
    for (name, mode, needle) in [
        ("current", 0o660, "writable by its group"),
        ("lock", 0o620, "writable by its group"),
        ("current", 0o646, "writable by others"),
        ("", 0o770, "writable by its group"),
        ("snapshots", 0o703, "writable by others"),
        ("tmp", 0o730, "writable by its group"),
    ] {
        let store = TestStore::new();
        store.refresh(b"[1]", &[]);
        let path = store.root().join(name);
        let path = if name.is_empty() { store.root() } else { path };
        let original = std::fs::metadata(&path).unwrap().permissions().mode() & 0o7777;
        chmod(&path, mode);
        let from = store.payload("p", b"[2]");
        for args in [
            &["show"][..],
            &["status"],
            &["verify"],
            &["refresh", "--from", from.to_str().unwrap()],
        ] {
            let out = store.run(args);
            assert_untrusted(&out, &path, &[&format!("mode {mode:04o}"), needle]);
            assert!(out.stdout.is_empty() || !text(&out.stdout).contains("[1]"));
        }
        chmod(&path, original);
        assert_eq!(store.show(), b"[1]");
    }
}

/// A store file owned by another uid (no such user needed: root can chown
/// to any uid) is refused and named with its uid.
#[test]
fn a_store_file_owned_by_another_uid_is_refused() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("SKIPPED: chown to another uid needs root (CI runs as root)");
        return;
    }
    let store = TestStore::new();
    store.refresh(b"[1]", &[]);
    let current = store.root().join("current");
    std::os::unix::fs::lchown(&current, Some(54321), Some(54321)).unwrap();
    let out = store.run(&["show"]);
    assert_untrusted(
        &out,
        &current,
        &["uid 54321", "not to the store's owner (uid 0"],
    );
    // Root-owned entries in a user's store are trusted (root can change
    // anything anyway); here the owner is root, so back to root is fine.
    std::os::unix::fs::lchown(&current, Some(0), Some(0)).unwrap();
    assert_eq!(store.show(), b"[1]");
}

/// Reproduced: `sudo snapcache --store ~alice/.cache/kopi/store refresh`
/// made `.cache` and `.cache/kopi` root-owned `0700` in alice's home, so
/// that neither she nor any other program of hers could write there again.
/// A writer makes no directory inside one that belongs to another user
/// (root's own and the writer's own directories are fine).
#[test]
fn root_makes_no_store_directories_in_another_users_directory() {
    let Some(alice) = TempUser::create("a") else {
        return;
    };
    let dir = shared_dir();
    let home = dir.path().join("home");
    std::fs::create_dir(&home).unwrap();
    chown(&home, &alice);
    chmod(&home, 0o755);
    let from = payload_file(dir.path(), "p.json", b"[1]");
    let root = home.join(".cache/kopi/store");
    let as_root = || run_here(&root, &["refresh", "--from", from.to_str().unwrap()]);
    let refused_in = |out: &Output, path: &Path| {
        assert_untrusted(
            out,
            path,
            &[
                &format!("belongs to uid {} ({})", alice.uid, alice.name),
                "runs as uid 0 (root)",
                &format!("Run the write as {}", alice.name),
            ],
        );
    };
    refused_in(&as_root(), &home);
    assert_eq!(walk(&home), vec![home.clone()], "nothing made in her home");
    // Her own `.cache`, `0700`: refused there just the same.
    let cache = home.join(".cache");
    std::fs::create_dir(&cache).unwrap();
    chown(&cache, &alice);
    chmod(&cache, 0o700);
    refused_in(&as_root(), &cache);
    assert_eq!(walk(&cache), vec![cache.clone()], "nothing made in .cache");
    // She makes it herself: every directory is hers, owner-only.
    let out = alice.run(&root, &["refresh", "--from", from.to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    for made in [home.join(".cache/kopi"), root.clone()] {
        let meta = std::fs::metadata(&made).unwrap();
        assert_eq!(meta.uid(), alice.uid, "{}", made.display());
        assert_eq!(meta.mode() & 0o7777, 0o700, "{}", made.display());
    }
}

/// Reproduced (8 to 40 tries of a racing loop): another user made the
/// store root, `0777`, between the writer's look (nothing there) and its
/// `mkdir -p`, which took the directory as it found it; the writer then
/// published into it with exit 0. A writer judges what it finds after
/// making the root, as it judges a store it opens: the hook stops it at
/// that very moment, so no luck is involved.
#[test]
fn a_store_root_another_user_makes_while_a_writer_makes_it_is_refused() {
    if !Path::new("/proc/self/stat").exists() {
        eprintln!("SKIPPED: no /proc to see a stopped process");
        return;
    }
    let (Some(mallory), Some(alice)) = (TempUser::create("m"), TempUser::create("a")) else {
        return;
    };
    // A shared, sticky directory like /tmp.
    let dir = shared_dir();
    chmod(dir.path(), 0o1777);
    let from = payload_file(dir.path(), "p.json", b"[1]");
    for (mode, needle) in [
        (0o777, "writable by its group and others".to_string()),
        (
            0o755,
            format!("belongs to uid {} ({})", mallory.uid, mallory.name),
        ),
    ] {
        let root = dir.path().join(format!("store{mode:o}"));
        let mut cmd = alice.command(&root, &["refresh", "--from", from.to_str().unwrap()]);
        cmd.env("SNAPCACHE_TEST_HOOKS", "1")
            .env("SNAPCACHE_TEST_STOP_BEFORE_ROOT_CREATION", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let child = cmd.spawn().expect("spawn");
        let pid = child.id();
        wait_for(
            "the writer to stop before it makes the root",
            COMMAND_TIMEOUT,
            || (process_state(pid) == Some('T')).then_some(()),
        );
        std::fs::create_dir(&root).unwrap();
        chown(&root, &mallory);
        chmod(&root, mode);
        let cont = rustix::process::Pid::from_raw(pid as i32).expect("pid");
        rustix::process::kill_process(cont, rustix::process::Signal::CONT).expect("SIGCONT");
        let out = wait_output(child, COMMAND_TIMEOUT);
        assert_untrusted(&out, &root, &[&needle]);
        assert_eq!(walk(&root), vec![root.clone()], "nothing made in it");
    }
}

/// Reproduced: `--store /tmp` (or `/`, whose `tmp/` is `/tmp`) was refused
/// with the advice `chmod go-w /tmp`, which would break every other user of
/// it. A sticky shared directory gets the advice to make a directory of
/// one's own inside it.
#[test]
fn a_shared_sticky_directory_is_not_advised_to_be_chmodded() {
    let dir = shared_dir();
    let sticky = dir.path().join("shared");
    std::fs::create_dir(&sticky).unwrap();
    chmod(&sticky, 0o1777);
    for args in [&["status"][..], &["refresh", "--from", "-"]] {
        let out = run_here(&sticky, args);
        assert_untrusted(&out, &sticky, &["shared directory (sticky", "mkdir -m 700"]);
        assert!(
            !text(&out.stderr).contains("chmod go-w"),
            "{}",
            text(&out.stderr)
        );
    }
}

/// Reproduced: bob's `show` of a store alice made in `/tmp` (`0755`/`0644`,
/// so nobody but alice can write it) served alice's payload, exit 0: a
/// reader such as Kopi then acts on whatever alice put there (a JDK's
/// download URL). Like git's `safe.directory`, another user's store is
/// read only when the reader trusts that user (`SNAPCACHE_TRUSTED_OWNERS`,
/// names or uids); root's stores are read as before.
#[test]
fn a_store_of_another_user_is_read_only_when_its_owner_is_trusted() {
    let (Some(alice), Some(bob)) = (TempUser::create("a"), TempUser::create("b")) else {
        return;
    };
    let dir = shared_dir();
    let root = home_for(dir.path(), &alice);
    let from = payload_file(dir.path(), "p.json", br#"{"jdk_url":"http://alice"}"#);
    let out = alice.run(&root, &["refresh", "--from", from.to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    // Readable by all, writable by alice alone.
    for p in walk(&root) {
        let dir = std::fs::symlink_metadata(&p).unwrap().is_dir();
        chmod(&p, if dir { 0o755 } else { 0o644 });
    }
    for args in [
        &["show"][..],
        &["status"],
        &["history"],
        &["verify"],
        &["--json", "show"],
    ] {
        let out = bob.run(&root, args);
        let stderr = text(&out.stderr);
        assert_eq!(code(&out), 1, "{args:?}: {stderr}");
        assert!(
            out.stdout.is_empty() || args[0] == "--json",
            "{args:?} served it"
        );
        assert!(
            stderr.contains(&format!("refusing to read {}", root.display()))
                && stderr.contains(&format!("uid {} ({})", alice.uid, alice.name))
                && stderr.contains(&format!("SNAPCACHE_TRUSTED_OWNERS={}", alice.name)),
            "{args:?}: {stderr}"
        );
    }
    let out = bob.run(&root, &["--json", "show"]);
    let error: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(error["error"]["kind"], "untrusted-path", "{error}");
    // Trusted by name or by uid: read as before.
    for trusted in [alice.name.clone(), format!("nobody,{}", alice.uid)] {
        let mut cmd = bob.command(&root, &["show"]);
        cmd.env("SNAPCACHE_TRUSTED_OWNERS", &trusted);
        let out = run_with_timeout(cmd);
        assert_eq!(
            out.stdout,
            br#"{"jdk_url":"http://alice"}"#,
            "{trusted}: {}",
            text(&out.stderr)
        );
    }
    // A name that is no user is a usage error, not silently nobody.
    let mut cmd = bob.command(&root, &["show"]);
    cmd.env("SNAPCACHE_TRUSTED_OWNERS", "no-such-user-here");
    let out = run_with_timeout(cmd);
    assert_eq!(code(&out), 2, "{}", text(&out.stderr));
    // Trusting alice does not let bob write her store.
    let mut cmd = bob.command(&root, &["refresh", "--from", from.to_str().unwrap()]);
    cmd.env("SNAPCACHE_TRUSTED_OWNERS", &alice.name);
    let out = run_with_timeout(cmd);
    assert_eq!(code(&out), 1, "{}", text(&out.stderr));
}

/// Reproduced: a snapshot its owner could not read (mode `0000`) was
/// reported as damaged ("it could not be read: Permission denied", kind
/// `corrupt-store`), with advice to roll back or publish again, which
/// cannot help. It is a permission error, named as one.
#[test]
fn a_snapshot_its_owner_cannot_read_is_a_permission_error_not_damage() {
    let Some(alice) = TempUser::create("a") else {
        return;
    };
    let dir = shared_dir();
    let root = home_for(dir.path(), &alice);
    let from = payload_file(dir.path(), "p.json", b"[1]");
    let out = alice.run(&root, &["refresh", "--from", from.to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    let snapshots: Vec<PathBuf> = std::fs::read_dir(root.join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    chmod(&snapshots[0], 0o000);
    let out = alice.run(&root, &["--json", "show"]);
    let stderr = text(&out.stderr);
    assert_eq!(code(&out), 1, "{stderr}");
    assert!(
        stderr.contains("Permission denied") && !stderr.contains("damaged"),
        "{stderr}"
    );
    let error: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(error["error"]["kind"], "error", "{error}");
}

/// Reproduced: another user's symbolic link in a directory anyone can
/// write, pointing at a directory of root's, made root's refresh create
/// the store there (the parent judged was the target, root's own). A store
/// is never made through another user's link.
#[test]
fn a_store_is_never_made_through_another_users_link() {
    let Some(mallory) = TempUser::create("m") else {
        return;
    };
    let dir = shared_dir();
    let open = dir.path().join("open");
    std::fs::create_dir(&open).unwrap();
    chmod(&open, 0o777);
    let target = dir.path().join("rootonly");
    std::fs::create_dir(&target).unwrap();
    let link = open.join("x");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    std::os::unix::fs::lchown(&link, Some(mallory.uid), Some(mallory.gid)).unwrap();
    let from = payload_file(dir.path(), "p.json", b"[1]");
    let out = run_here(
        &link.join("y/store"),
        &["refresh", "--from", from.to_str().unwrap()],
    );
    assert_untrusted(&out, &link, &["symbolic link of", &mallory.name]);
    assert_eq!(
        walk(&target),
        vec![target.clone()],
        "nothing made where it points"
    );
}
