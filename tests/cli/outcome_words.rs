//! What an error says about the current generation: only a write has one to
//! speak of. A read-only command's error never says "the current generation
//! is unchanged" (it never had one to change); a write that failed before
//! its commit says so, because that is what its user needs to know.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Command;

use crate::common::*;

const PHRASE: &str = "current generation is unchanged";

/// Every read-only command, in the forms that read different things.
const READS: &[&[&str]] = &[
    &["show"],
    &["show", "--generation", "1"],
    &["show", "--fallback"],
    &["status"],
    &["history"],
    &["verify"],
    &["diff"],
    &["diff", "1", "2"],
];

/// Runs every read-only command against `root`, text and `--json`, and
/// asserts that none speaks of a generation change. Returns their stderr
/// (some succeed: `status` does not read snapshots, for one), for the
/// caller to check that the error of the case was met.
fn reads_fail_without_the_phrase(root: &std::path::Path, case: &str) -> Vec<String> {
    let mut seen = Vec::new();
    for args in READS {
        for json in [false, true] {
            let mut cmd = Command::new(bin());
            cmd.arg("--store").arg(root).env_remove("SNAPCACHE_DIR");
            if json {
                cmd.arg("--json");
            }
            cmd.args(*args);
            let out = run_with_timeout(cmd);
            let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
            assert!(
                !stderr.contains(PHRASE) && !stdout.contains(PHRASE),
                "{case}: {args:?} (json {json}) speaks of a generation change: {stderr}{stdout}"
            );
            seen.push(stderr);
        }
    }
    seen
}

/// A store with two generations, for the cases that damage one.
fn two_generations() -> TestStore {
    let store = TestStore::new();
    store.refresh(b"{\"a\":1}", &[]);
    store.refresh(b"{\"a\":2}", &[]);
    store
}

#[test]
fn read_only_commands_never_speak_of_a_generation_change() {
    // No store at all.
    let missing = TestStore::new();
    let seen = reads_fail_without_the_phrase(&missing.root(), "no store");
    assert!(
        seen.iter()
            .any(|e| e.contains("no snapshot has been published")),
        "{seen:?}"
    );

    // A directory that is not a store.
    let foreign = TestStore::new();
    std::fs::create_dir(foreign.root()).unwrap();
    std::fs::write(foreign.root().join("notes.txt"), b"mine").unwrap();
    let seen = reads_fail_without_the_phrase(&foreign.root(), "not a store");
    assert!(
        seen.iter().all(|e| e.contains("is not a snapcache store")),
        "{seen:?}"
    );

    // A damaged pointer.
    let damaged = two_generations();
    std::fs::write(pointer_path(&damaged), b"garbage\n").unwrap();
    let seen = reads_fail_without_the_phrase(&damaged.root(), "damaged pointer");
    assert!(seen.iter().any(|e| e.contains("is damaged")), "{seen:?}");

    // Every snapshot missing (so that no fallback can succeed either).
    let gone = two_generations();
    for name in gone.files_in("snapshots") {
        std::fs::remove_file(gone.root().join("snapshots").join(name)).unwrap();
    }
    let seen = reads_fail_without_the_phrase(&gone.root(), "missing snapshots");
    assert!(seen.iter().any(|e| e.contains("is missing")), "{seen:?}");

    // A store others may write.
    let open = two_generations();
    std::fs::set_permissions(open.root(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let seen = reads_fail_without_the_phrase(&open.root(), "untrusted store");
    assert!(
        seen.iter().all(|e| e.contains("refusing to use")),
        "{seen:?}"
    );

    // An I/O error of the filesystem itself (a name too long for it): the
    // library's I/O message, which for a write ends with the phrase.
    let long = TestStore::new();
    let root = long.dir.path().join("s".repeat(300));
    let seen = reads_fail_without_the_phrase(&root, "name too long");
    assert!(seen.iter().all(|e| e.contains("failed to")), "{seen:?}");
}

#[test]
fn a_write_that_failed_before_its_commit_says_the_current_generation_is_unchanged() {
    let store = TestStore::new();
    let root: PathBuf = store.dir.path().join("s".repeat(300));
    let payload = store.payload("p.json", b"[1]");
    for json in [false, true] {
        let mut cmd = Command::new(bin());
        cmd.arg("--store").arg(&root).env_remove("SNAPCACHE_DIR");
        if json {
            cmd.arg("--json");
        }
        cmd.arg("refresh").arg("--from").arg(&payload);
        let out = run_with_timeout(cmd);
        assert_eq!(code(&out), 1, "{}", text(&out.stderr));
        let stderr = text(&out.stderr);
        assert!(stderr.contains("failed to"), "{stderr}");
        assert!(
            stderr.contains(PHRASE),
            "a write says what it left: {stderr}"
        );
        if json {
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            let message = v["error"]["message"].as_str().unwrap();
            assert!(message.contains(PHRASE), "{message}");
        }
    }
}
