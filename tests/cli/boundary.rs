//! A store is a directory snapcache made, and it says so (issue 8 point 1):
//! writes refuse a directory that is neither empty nor a store before
//! touching anything in it; reads say "not a snapcache store"; the sweep and
//! gc delete by name only and never a directory tree; stores of the earlier
//! release (no marker) are adopted; new stores carry a marker and a
//! CACHEDIR.TAG.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::*;

/// Everything below `root`, recursively, without following links: path,
/// type, mode, owner, size, mtime (ns) and content. Two equal fingerprints
/// mean nothing was created, removed, renamed, changed or re-moded (an
/// entry created and removed again still changes its directory's mtime).
fn fingerprint(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(path) = stack.pop() {
        let meta = std::fs::symlink_metadata(&path).unwrap();
        let content = if meta.is_file() {
            hash_hex(&std::fs::read(&path).unwrap())
        } else if meta.file_type().is_symlink() {
            std::fs::read_link(&path).unwrap().display().to_string()
        } else {
            String::new()
        };
        out.push(format!(
            "{} {:?} {:o} {}:{} {} {}.{} {content}",
            path.strip_prefix(root).unwrap().display(),
            meta.file_type(),
            meta.mode(),
            meta.uid(),
            meta.gid(),
            meta.len(),
            meta.mtime(),
            meta.mtime_nsec(),
        ));
        if meta.is_dir() {
            for entry in std::fs::read_dir(&path).unwrap() {
                stack.push(entry.unwrap().path());
            }
        }
    }
    out.sort();
    out
}

/// A directory like a user's home: files of theirs at the root and in
/// `tmp/` and `snapshots/`, which the old sweep deleted.
fn home_like(dir: &Path) -> PathBuf {
    let home = dir.join("home");
    for sub in ["", "tmp", "snapshots", "projects/app"] {
        std::fs::create_dir_all(home.join(sub)).unwrap();
    }
    std::fs::write(home.join(".bashrc"), b"export PS1='$ '\n").unwrap();
    std::fs::write(home.join("tmp/notes.txt"), b"call the bank").unwrap();
    std::fs::write(home.join("snapshots/holiday.png"), b"\x89PNG...").unwrap();
    std::fs::write(home.join("projects/app/main.rs"), b"fn main() {}").unwrap();
    std::os::unix::fs::symlink("projects", home.join("work")).unwrap();
    home
}

/// `snapcache <args>` with a clean environment and no `--store`.
fn bare(args: &[&str]) -> Command {
    let mut cmd = Command::new(bin());
    cmd.args(args);
    for var in [
        "SNAPCACHE_DIR",
        "SNAPCACHE_LOCK_TIMEOUT",
        "SNAPCACHE_KEEP",
        "SNAPCACHE_LOG",
        "XDG_CACHE_HOME",
    ] {
        cmd.env_remove(var);
    }
    cmd.stdin(std::process::Stdio::null());
    cmd
}

fn with_store(root: &Path, args: &[&str]) -> Command {
    let mut cmd = bare(&["--store"]);
    cmd.arg(root).args(args);
    cmd
}

/// Asserts a refusal: exit 1, "not a snapcache store", the directory, one
/// of the entries found and the fix.
fn assert_not_a_store(out: &std::process::Output, root: &str, what: &str) {
    let stderr = text(&out.stderr);
    assert_eq!(code(out), 1, "{what}: {stderr}");
    assert!(
        stderr.contains("is not a snapcache store"),
        "{what}: {stderr}"
    );
    assert!(
        stderr.contains(root),
        "{what}: names the directory: {stderr}"
    );
    assert!(
        stderr.contains("\".bashrc\"") || stderr.contains("\"tmp/notes.txt\""),
        "{what}: names an entry found: {stderr}"
    );
    assert!(
        stderr.contains("empty or new directory") && stderr.contains("--store"),
        "{what}: says what to do: {stderr}"
    );
    assert!(
        stderr.contains("nothing in it was read or changed"),
        "{what}: {stderr}"
    );
}

#[test]
fn every_command_refuses_a_home_like_directory_and_touches_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let home = home_like(dir.path());
    let payload = dir.path().join("payload.json");
    std::fs::write(&payload, b"[1]").unwrap();
    let before = fingerprint(&home);
    let name = home.to_str().unwrap();
    let from = payload.to_str().unwrap();

    let commands: Vec<Vec<&str>> = vec![
        vec!["refresh", "--from", from],
        vec!["refresh", "--exec", "echo", "[1]"],
        vec!["--lock-backend", "lease", "refresh", "--from", from],
        vec!["--lock-backend", "lease", "gc"],
        vec!["rollback"],
        vec!["gc"],
        vec!["gc", "--keep", "1"],
        vec!["show"],
        vec!["status"],
        vec!["history"],
        vec!["verify"],
    ];
    for args in &commands {
        // Through --store, through SNAPCACHE_DIR, and as `--store .`.
        let out = run_with_timeout(with_store(&home, args));
        assert_not_a_store(&out, name, &format!("--store {args:?}"));
        let mut env = bare(args);
        env.env("SNAPCACHE_DIR", &home);
        let out = run_with_timeout(env);
        assert_not_a_store(&out, name, &format!("SNAPCACHE_DIR {args:?}"));
        let mut dot = with_store(Path::new("."), args);
        dot.current_dir(&home);
        let out = run_with_timeout(dot);
        assert_eq!(code(&out), 1, "--store . {args:?}: {}", text(&out.stderr));
        assert!(
            text(&out.stderr).contains("is not a snapcache store"),
            "--store . {args:?}: {}",
            text(&out.stderr)
        );
        assert_eq!(
            fingerprint(&home),
            before,
            "{args:?}: nothing in the directory was created, removed or changed"
        );
    }

    // The --json error names the kind.
    let mut cmd = with_store(&home, &["--json", "refresh", "--from", from]);
    cmd.current_dir(dir.path());
    let out = run_with_timeout(cmd);
    let value: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(value["error"]["kind"], "not-a-store", "{value}");
    assert_eq!(value["error"]["exit_code"], 1);
    assert_eq!(fingerprint(&home), before);
}

/// Found by an embedder's audit: a project directory with a shared,
/// sticky `tmp/` of its own (`1777`) was refused for that `tmp/`, with
/// advice to make a store inside it, before anyone said it is not a store
/// at all. An unmarked directory with entries a store never has is now
/// refused as not a store first.
#[test]
fn a_directory_that_is_not_a_store_is_called_that_before_its_tmp_is_judged() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let project = dir.path().join("proj");
    std::fs::create_dir_all(project.join("tmp")).unwrap();
    std::fs::set_permissions(project.join("tmp"), std::fs::Permissions::from_mode(0o1777)).unwrap();
    std::fs::write(project.join("README"), b"hi\n").unwrap();
    let before = fingerprint(&project);
    for args in [vec!["show"], vec!["refresh", "--exec", "echo", "[1]"]] {
        let mut all = vec!["--json"];
        all.extend(args.iter().copied());
        let out = run_with_timeout(with_store(&project, &all));
        let value: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(value["error"]["kind"], "not-a-store", "{args:?}: {value}");
        let out = run_with_timeout(with_store(&project, &args));
        let stderr = text(&out.stderr);
        assert!(
            stderr.contains("\"README\"") && !stderr.contains("mkdir -m 700"),
            "{args:?}: {stderr}"
        );
    }
    assert_eq!(fingerprint(&project), before, "nothing changed");
}

#[test]
fn a_directory_holding_only_snapcache_names_with_foreign_contents_is_refused() {
    // Root names are all snapcache's, but tmp/ and snapshots/ hold a user's
    // files and there is no pointer: not a store.
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("d");
    for sub in ["tmp", "snapshots"] {
        std::fs::create_dir_all(root.join(sub)).unwrap();
    }
    std::fs::write(root.join("tmp/notes.txt"), b"mine").unwrap();
    std::fs::write(root.join("snapshots/holiday.png"), b"mine").unwrap();
    let before = fingerprint(&root);
    let payload = dir.path().join("p.json");
    std::fs::write(&payload, b"[1]").unwrap();
    let out = run_with_timeout(with_store(
        &root,
        &["refresh", "--from", payload.to_str().unwrap()],
    ));
    assert_not_a_store(&out, root.to_str().unwrap(), "refresh");
    assert!(text(&out.stderr).contains("snapshots/holiday.png"));
    assert_eq!(fingerprint(&root), before);
}

#[test]
fn a_file_given_as_the_store_is_not_a_store() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    for args in [vec!["show"], vec!["refresh", "--exec", "echo", "[1]"]] {
        let out = run_with_timeout(with_store(&file, &args));
        let stderr = text(&out.stderr);
        assert_eq!(code(&out), 1, "{args:?}: {stderr}");
        // The trust gate or the identity check says it, either way naming
        // the path and that it is not a directory.
        assert!(stderr.contains(file.to_str().unwrap()), "{stderr}");
        assert!(stderr.contains("not a directory"), "{stderr}");
    }
    assert_eq!(std::fs::read(&file).unwrap(), b"x");
    // A store path below that file: the message says which part is wrong.
    let below = file.join("store");
    for args in [vec!["show"], vec!["refresh", "--exec", "echo", "[1]"]] {
        let out = run_with_timeout(with_store(&below, &args));
        let stderr = text(&out.stderr);
        assert_eq!(code(&out), 1, "{args:?}: {stderr}");
        assert!(
            stderr.contains(below.to_str().unwrap())
                && stderr.contains("a part of the path is a file, not a directory"),
            "{args:?}: {stderr}"
        );
    }
    assert_eq!(std::fs::read(&file).unwrap(), b"x");
}

/// A store path with a name longer than the filesystem allows failed with
/// "File name too long; check the path and retry"; it now says which limit
/// and what to do, and nothing is made.
#[test]
fn a_store_path_with_a_name_too_long_says_so() {
    let store = TestStore::new();
    let long = store.scratch(&"n".repeat(300)).join("store");
    let from = store.payload("p", b"[1]");
    let mut cmd = std::process::Command::new(bin());
    cmd.arg("--store")
        .arg(&long)
        .args(["refresh", "--from"])
        .arg(&from);
    let out = run_with_timeout(cmd);
    let stderr = text(&out.stderr);
    assert_eq!(code(&out), 1, "{stderr}");
    assert!(
        stderr.contains("too long for the filesystem") && stderr.contains("shorter store path"),
        "{stderr}"
    );
}

#[test]
fn a_new_store_carries_a_marker_and_a_cache_directory_tag() {
    let store = TestStore::new();
    store.refresh(b"[1]", &[]);
    let marker = store.root().join("snapcache-store");
    assert_eq!(
        std::fs::read_to_string(&marker).unwrap(),
        "snapcache-store 1\n"
    );
    let tag = std::fs::read_to_string(store.root().join("CACHEDIR.TAG")).unwrap();
    let mut lines = tag.lines();
    assert_eq!(
        lines.next(),
        Some("Signature: 8a477f597d28d172789f06886806bc55"),
        "the first line is exactly the specification's signature"
    );
    let comment = lines.next().unwrap();
    assert!(
        comment.starts_with('#') && comment.contains("snapcache") && tag.contains("cache"),
        "{tag}"
    );
    for file in [marker, store.root().join("CACHEDIR.TAG")] {
        let meta = std::fs::symlink_metadata(&file).unwrap();
        assert!(meta.is_file());
        assert_eq!(meta.mode() & 0o777, 0o600, "{}", file.display());
    }
    // A second write leaves them as they are.
    let before = (
        std::fs::metadata(store.root().join("snapcache-store"))
            .unwrap()
            .ino(),
        std::fs::metadata(store.root().join("CACHEDIR.TAG"))
            .unwrap()
            .ino(),
    );
    store.refresh(b"[2]", &[]);
    let after = (
        std::fs::metadata(store.root().join("snapcache-store"))
            .unwrap()
            .ino(),
        std::fs::metadata(store.root().join("CACHEDIR.TAG"))
            .unwrap()
            .ino(),
    );
    assert_eq!(before, after, "a marked store is not re-marked");
}

#[test]
fn an_existing_empty_directory_becomes_a_store() {
    let store = TestStore::new();
    std::fs::create_dir(store.root()).unwrap();
    store.refresh(b"[1]", &[]);
    assert!(store.root().join("snapcache-store").is_file());
    assert_eq!(store.show(), b"[1]");
}

#[test]
fn rollback_and_gc_on_a_missing_or_empty_directory_create_nothing() {
    let store = TestStore::new();
    for args in [vec!["rollback"], vec!["gc"], vec!["gc", "--keep", "1"]] {
        let (out, value) = store.json(&args);
        assert_eq!(code(&out), 1, "{args:?}: {}", text(&out.stderr));
        assert_eq!(value["error"]["kind"], "no-store", "{args:?}: {value}");
        assert!(
            !store.root().exists(),
            "{args:?} created {}",
            store.root().display()
        );
    }
    std::fs::create_dir(store.root()).unwrap();
    let before = fingerprint(&store.root());
    for args in [vec!["rollback"], vec!["gc"], vec!["rollback", "--to", "1"]] {
        let (out, value) = store.json(&args);
        assert_eq!(code(&out), 1, "{args:?}: {}", text(&out.stderr));
        assert_eq!(value["error"]["kind"], "no-store", "{args:?}: {value}");
        assert_eq!(fingerprint(&store.root()), before, "{args:?}");
    }
    // Reads of a missing directory are still "nothing published yet".
    let empty = TestStore::new();
    let (out, value) = empty.json(&["show"]);
    assert_eq!(code(&out), 1);
    assert_eq!(value["error"]["kind"], "no-store", "{value}");
    assert!(!empty.root().exists());
}

#[test]
fn a_store_of_the_earlier_release_is_read_as_is_and_adopted_by_the_next_write() {
    let store = TestStore::new();
    for i in 1..=3u64 {
        store.refresh(&json_payload(300, i), &[]);
    }
    // What the earlier release left: no marker, no tag.
    std::fs::remove_file(store.root().join("snapcache-store")).unwrap();
    std::fs::remove_file(store.root().join("CACHEDIR.TAG")).unwrap();
    let before = fingerprint(&store.root());
    assert_eq!(store.show(), json_payload(300, 3));
    store.ok(&["status"]);
    store.ok(&["history"]);
    let (out, report) = store.json(&["verify"]);
    assert_eq!(code(&out), 0, "{report}");
    assert_eq!(report["foreign"], serde_json::json!([]));
    assert_eq!(fingerprint(&store.root()), before, "readers never write");

    store.refresh(&json_payload(300, 4), &[]);
    assert_eq!(
        std::fs::read_to_string(store.root().join("snapcache-store")).unwrap(),
        "snapcache-store 1\n",
        "the write adopted the store"
    );
    assert!(store.root().join("CACHEDIR.TAG").is_file());
    let (_, history) = store.json(&["history"]);
    let numbers: Vec<u64> = history["generations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["generation"].as_u64().unwrap())
        .collect();
    assert_eq!(numbers, vec![1, 2, 3, 4], "the history is intact");
    store.ok(&["rollback", "--to", "1"]);
    assert_eq!(store.show(), json_payload(300, 1));
}

#[test]
fn rollback_and_gc_adopt_a_store_of_the_earlier_release_too() {
    for args in [vec!["rollback"], vec!["gc"]] {
        let store = TestStore::new();
        store.refresh(b"[1]", &[]);
        store.refresh(b"[2]", &[]);
        std::fs::remove_file(store.root().join("snapcache-store")).unwrap();
        std::fs::remove_file(store.root().join("CACHEDIR.TAG")).unwrap();
        store.ok(&args);
        assert!(store.root().join("snapcache-store").is_file(), "{args:?}");
        assert!(store.root().join("CACHEDIR.TAG").is_file(), "{args:?}");
    }
}

#[test]
fn what_a_failed_first_write_of_the_earlier_release_left_is_adopted() {
    // Directories, a lock file and a dead writer's temp file, no pointer.
    let store = TestStore::new();
    for sub in ["tmp", "snapshots"] {
        std::fs::create_dir_all(store.root().join(sub)).unwrap();
    }
    std::fs::write(store.root().join("lock"), b"").unwrap();
    std::fs::write(store.root().join("tmp/.snapcache-99999-abc"), b"[1,").unwrap();
    store.refresh(b"[1]", &[]);
    assert!(store.root().join("snapcache-store").is_file());
    assert!(store.files_in("tmp").is_empty(), "its temp file was swept");
}

#[test]
fn a_store_nested_in_another_stores_tmp_and_snapshots_survives_its_writes_and_gc() {
    let outer = TestStore::new();
    outer.refresh(&json_payload(300, 1), &[]);
    // Inner stores under names the old sweep took for its own: one with
    // the temp prefix in tmp/, one with a snapshot-like name... and one
    // plainly named.
    let inner_roots = [
        outer.root().join("tmp").join(".snapcache-1-nested"),
        outer.root().join("tmp").join("nested"),
        outer.root().join("snapshots").join("nested"),
        outer.root().join("snapshots").join(hash_hex(b"nested")),
    ];
    let payload = outer.payload("inner.json", b"{\"inner\":true}");
    for root in &inner_roots {
        let out = run_with_timeout(with_store(
            root,
            &["refresh", "--from", payload.to_str().unwrap()],
        ));
        assert_eq!(code(&out), 0, "{}: {}", root.display(), text(&out.stderr));
    }
    let before: Vec<Vec<String>> = inner_roots.iter().map(|r| fingerprint(r)).collect();

    outer.refresh(&json_payload(300, 2), &[]);
    outer.refresh(&json_payload(300, 3), &[]);
    let (out, gc) = outer.json(&["gc", "--keep", "1"]);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    assert_eq!(gc["removed_temp_files"], 0, "{gc}");
    assert_eq!(gc["removed_snapshots"], 1, "only generation 1's: {gc}");

    for (root, before) in inner_roots.iter().zip(&before) {
        assert_eq!(&fingerprint(root), before, "{} untouched", root.display());
        let out = run_with_timeout(with_store(root, &["show"]));
        assert_eq!(code(&out), 0, "{}", text(&out.stderr));
        assert_eq!(out.stdout, b"{\"inner\":true}");
    }
    let (out, report) = outer.json(&["verify"]);
    assert_eq!(code(&out), 0, "{report}");
    let foreign: Vec<(String, String)> = report["foreign"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["path"].as_str().unwrap().to_string(),
                f["what"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    for root in &inner_roots {
        assert!(
            foreign.contains(&(root.display().to_string(), "directory".to_string())),
            "{} is listed as foreign: {foreign:?}",
            root.display()
        );
    }
}

#[test]
fn foreign_files_in_a_store_are_listed_by_verify_and_never_counted_by_gc() {
    let store = TestStore::new();
    store.refresh(b"[1]", &[]);
    std::fs::write(store.root().join("README.txt"), b"mine").unwrap();
    std::fs::write(store.root().join("tmp/notes.txt"), b"mine").unwrap();
    std::fs::write(store.root().join("snapshots/holiday.png"), b"mine").unwrap();
    std::fs::write(
        store
            .root()
            .join("snapshots")
            .join(hash_hex(b"[1]").to_uppercase()),
        b"[1]",
    )
    .unwrap();

    let out = store.ok(&["verify"]);
    let stdout = text(&out.stdout);
    assert!(stdout.contains("foreign: 4 entries"), "{stdout}");
    for name in ["README.txt", "tmp/notes.txt", "snapshots/holiday.png"] {
        assert!(stdout.contains(name), "{name}: {stdout}");
    }
    let (_, report) = store.json(&["verify"]);
    assert_eq!(report["ok"], true);
    assert_eq!(report["foreign"].as_array().unwrap().len(), 4, "{report}");
    assert_eq!(report["reclaimable"], serde_json::json!([]));

    let (_, gc) = store.json(&["gc"]);
    assert_eq!(gc["removed_snapshots"], 0, "{gc}");
    assert_eq!(gc["removed_temp_files"], 0, "{gc}");
    assert_eq!(gc["freed_bytes"], 0, "{gc}");
    let out = store.ok(&["gc"]);
    assert!(
        text(&out.stdout).contains("removed 0 unreferenced snapshot(s) and 0 temp file(s)"),
        "{}",
        text(&out.stdout)
    );
    store.refresh(b"[2]", &[]);
    for name in ["README.txt", "tmp/notes.txt", "snapshots/holiday.png"] {
        assert_eq!(std::fs::read(store.root().join(name)).unwrap(), b"mine");
    }
}

/// `nobody` exists on every Linux system: a real other user, no useradd
/// (and no cleanup) needed.
const NOBODY: u32 = 65534;

#[test]
fn a_directory_another_user_planted_in_tmp_never_makes_writes_fail() {
    let store = TestStore::new();
    store.refresh(b"[1]", &[]);
    let tmp = store.root().join("tmp");
    // The worst names: the temp prefix itself, and a plain one.
    let planted = [tmp.join(".snapcache-1-planted"), tmp.join("planted")];
    for dir in &planted {
        std::fs::create_dir(dir).unwrap();
        std::fs::write(dir.join("file"), b"theirs").unwrap();
        // Read-only: removing what is inside fails for its owner too.
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o555)).unwrap();
    }
    if rustix::process::geteuid().is_root() {
        for dir in &planted {
            std::os::unix::fs::lchown(dir.join("file"), Some(NOBODY), Some(NOBODY)).unwrap();
            std::os::unix::fs::lchown(dir, Some(NOBODY), Some(NOBODY)).unwrap();
        }
    } else {
        eprintln!("not root: the planted directories stay ours, mode 0555");
    }
    let before: Vec<Vec<String>> = planted.iter().map(|d| fingerprint(d)).collect();
    for i in 2..=4u64 {
        store.refresh(&json_payload(100, i), &[]);
    }
    store.ok(&["rollback"]);
    let (out, gc) = store.json(&["gc"]);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    assert_eq!(gc["removed_temp_files"], 0, "{gc}");
    for (dir, before) in planted.iter().zip(&before) {
        assert_eq!(&fingerprint(dir), before, "{} untouched", dir.display());
    }
    let (_, report) = store.json(&["verify"]);
    assert_eq!(report["foreign"].as_array().unwrap().len(), 2, "{report}");
    for dir in &planted {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

/// Clears the immutable flag on drop, so the temp dir can be removed even
/// when the test fails.
struct Immutable(PathBuf);

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = Command::new("chattr").arg("-i").arg(&self.0).status();
    }
}

#[test]
fn a_leftover_that_cannot_be_removed_is_skipped_not_fatal() {
    let store = TestStore::new();
    store.refresh(b"[1]", &[]);
    let stuck = store.root().join("tmp").join(".snapcache-1-stuck");
    std::fs::write(&stuck, b"half").unwrap();
    // An immutable file cannot be unlinked, not even by root.
    let made = Command::new("chattr")
        .arg("+i")
        .arg(&stuck)
        .output()
        .map(|o| o.status.success());
    if made.as_ref().map_or(true, |ok| !ok) {
        eprintln!("SKIPPED: `chattr +i` is not available or not supported here: {made:?}");
        return;
    }
    let _guard = Immutable(stuck.clone());
    // Library log lines are shown with -v (issue 11: not by default).
    let out = store.run(&["-v", "refresh", "--exec", "echo", "[2]"]);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("could not remove a leftover"),
        "the skip is logged: {}",
        text(&out.stderr)
    );
    assert_eq!(store.show(), b"[2]\n");
    let (_, gc) = store.json(&["gc"]);
    assert_eq!(gc["removed_temp_files"], 0, "not counted as removed: {gc}");
    assert!(stuck.exists());
}

#[test]
fn concurrent_first_writers_and_readers_agree_on_one_new_store() {
    for backend in ["advisory", "lease"] {
        let store = TestStore::new();
        std::fs::create_dir(store.root()).unwrap();
        let mut writers: Vec<_> = (0..4u64)
            .map(|i| {
                let file = store.payload(&format!("p{i}"), &json_payload(2_000_000, i));
                store
                    .command(&[
                        "--lock-backend",
                        backend,
                        "refresh",
                        "--from",
                        file.to_str().unwrap(),
                    ])
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        // Readers meanwhile: nothing published yet, or a published payload;
        // never "not a snapcache store" for a store being made.
        let mut reads = 0;
        loop {
            let out = store.run(&["show"]);
            let stderr = text(&out.stderr);
            assert!(
                code(&out) == 0 || stderr.contains("no snapshot has been published"),
                "{backend}: {stderr}"
            );
            reads += 1;
            if writers.iter_mut().all(|c| c.try_wait().unwrap().is_some()) {
                break;
            }
        }
        eprintln!("{backend}: {reads} reads while the writers ran");
        for child in writers {
            let out = wait_output(child, COMMAND_TIMEOUT);
            assert_eq!(code(&out), 0, "{backend}: {}", text(&out.stderr));
        }
        assert_eq!(
            std::fs::read_to_string(store.root().join("snapcache-store")).unwrap(),
            "snapcache-store 1\n"
        );
        let (_, history) = store.json(&["history"]);
        assert_eq!(history["generations"].as_array().unwrap().len(), 4);
        let (out, report) = store.json(&["verify"]);
        assert_eq!(code(&out), 0, "{report}");
        assert_eq!(report["foreign"], serde_json::json!([]), "{backend}");
    }
}

#[test]
fn concurrent_writers_adopt_a_store_of_the_earlier_release_once() {
    let store = TestStore::new();
    store.refresh(&json_payload(500, 0), &[]);
    std::fs::remove_file(store.root().join("snapcache-store")).unwrap();
    std::fs::remove_file(store.root().join("CACHEDIR.TAG")).unwrap();
    let writers: Vec<_> = (1..=4u64)
        .map(|i| {
            let file = store.payload(&format!("p{i}"), &json_payload(500, i));
            store
                .command(&["refresh", "--from", file.to_str().unwrap()])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in writers {
        let out = wait_output(child, COMMAND_TIMEOUT);
        assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    }
    assert!(store.root().join("snapcache-store").is_file());
    assert!(store.root().join("CACHEDIR.TAG").is_file());
    let (_, history) = store.json(&["history"]);
    assert_eq!(history["generations"].as_array().unwrap().len(), 5);
    assert!(
        store.files_in("tmp").is_empty(),
        "{:?}",
        store.files_in("tmp")
    );
}

#[test]
fn a_relative_store_path_publishes_on_both_backends() {
    // The publish's sweep runs while the payload is staged and must spare
    // that staging's own temp file. With `--store cache` the scan's paths
    // are relative and the temp file's absolute: every publish once removed
    // its own temp file and failed at the rename.
    for backend in ["advisory", "lease"] {
        let dir = tempfile::tempdir().unwrap();
        let payload = dir.path().join("p.json");
        for (round, body) in [&b"[1]"[..], b"[2]", b"[1]", b"[3]"].iter().enumerate() {
            std::fs::write(&payload, body).unwrap();
            for raw in [false, true] {
                let mut args = vec!["--store", "cache", "--lock-backend", backend, "refresh"];
                if raw {
                    args.push("--raw");
                }
                args.extend(["--from", payload.to_str().unwrap()]);
                let mut cmd = bare(&args);
                cmd.current_dir(dir.path());
                let out = run_with_timeout(cmd);
                assert_eq!(
                    code(&out),
                    0,
                    "{backend} round {round} raw {raw}: {}",
                    text(&out.stderr)
                );
                let mut show = bare(&["--store", "cache", "show"]);
                show.current_dir(dir.path());
                let out = run_with_timeout(show);
                assert_eq!(code(&out), 0, "{}", text(&out.stderr));
                assert_eq!(out.stdout, *body, "{backend} round {round} raw {raw}");
            }
        }
        let tmp: Vec<_> = std::fs::read_dir(dir.path().join("cache/tmp"))
            .unwrap()
            .collect();
        assert!(tmp.is_empty(), "{backend}: no temp file is left: {tmp:?}");
    }
}
