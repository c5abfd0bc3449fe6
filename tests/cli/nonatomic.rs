//! Readers on a filesystem where replacing `current` is not atomic for
//! readers (sshfs and other FUSE or network filesystems): they ride out the
//! moment the pointer is missing or half-written, and only a pointer that
//! stays damaged is reported, after about a second.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::common::*;

const A: &[u8] = br#"{"generation":"a","packages":[1,2,3]}"#;
const B: &[u8] = br#"{"generation":"b","packages":[4,5,6,7]}"#;

/// Replaces `path` the way a non-atomic rename looks to a reader: unlink,
/// then create and write the new bytes in two steps, with pauses so that
/// readers really meet the missing and the short file.
fn replace_non_atomically(path: &std::path::Path, bytes: &[u8]) {
    let _ = std::fs::remove_file(path);
    std::thread::sleep(Duration::from_micros(300));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let Ok(mut file) = options.open(path) else {
        return;
    };
    let half = bytes.len() / 2;
    file.write_all(&bytes[..half]).unwrap();
    file.flush().unwrap();
    std::thread::sleep(Duration::from_micros(300));
    file.write_all(&bytes[half..]).unwrap();
}

#[test]
fn readers_never_fail_while_current_is_replaced_non_atomically() {
    let store = TestStore::new();
    store.refresh(A, &[]);
    store.refresh(B, &[]);
    let pointer = pointer_path(&store);
    let second = std::fs::read(&pointer).unwrap();
    store.ok(&["rollback"]);
    let first = std::fs::read(&pointer).unwrap();
    assert_ne!(first, second, "two different valid pointers");

    let stop = Arc::new(AtomicBool::new(false));
    let replaced = Arc::new(AtomicUsize::new(0));
    let writer = {
        let (stop, replaced, pointer) = (stop.clone(), replaced.clone(), pointer.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                for bytes in [&first, &second] {
                    replace_non_atomically(&pointer, bytes);
                    replaced.fetch_add(1, Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
            // Leave a valid pointer behind.
            replace_non_atomically(&pointer, &second);
        })
    };

    let commands: [&[&str]; 4] = [
        &["show"],
        &["--json", "status"],
        &["--json", "history"],
        &["--json", "verify"],
    ];
    let readers: Vec<_> = (0..3)
        .map(|r| {
            let root = store.root();
            std::thread::spawn(move || {
                let mut failures = Vec::new();
                let mut rereads = 0usize;
                for i in 0..48 {
                    let args = commands[(i + r) % commands.len()];
                    let mut cmd = std::process::Command::new(bin());
                    cmd.arg("--store")
                        .arg(&root)
                        .args(args)
                        .env("SNAPCACHE_LOG", "snapcache=info")
                        .env_remove("SNAPCACHE_DIR");
                    let out = run_with_timeout(cmd);
                    let stderr = text(&out.stderr);
                    rereads += usize::from(stderr.contains("pointer_reread"));
                    let fine = code(&out) == 0
                        && match args {
                            ["show"] => out.stdout == A || out.stdout == B,
                            [_, "status"] => {
                                let v: serde_json::Value =
                                    serde_json::from_slice(&out.stdout).unwrap_or_default();
                                v["generation"] == 1 || v["generation"] == 2
                            }
                            [_, "history"] => {
                                let v: serde_json::Value =
                                    serde_json::from_slice(&out.stdout).unwrap_or_default();
                                v["generations"].as_array().map(Vec::len) == Some(2)
                            }
                            _ => {
                                let v: serde_json::Value =
                                    serde_json::from_slice(&out.stdout).unwrap_or_default();
                                v["ok"] == true
                            }
                        };
                    if !fine {
                        failures.push(format!(
                            "{args:?}: exit {} stdout {:?} stderr {stderr}",
                            code(&out),
                            text(&out.stdout)
                        ));
                    }
                }
                (failures, rereads)
            })
        })
        .collect();
    let mut failures = Vec::new();
    let mut rereads = 0;
    for reader in readers {
        let (f, r) = reader.join().unwrap();
        failures.extend(f);
        rereads += r;
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    let replaced = replaced.load(Ordering::Relaxed);
    eprintln!(
        "144 reads during {replaced} non-atomic replaces: {} failed, {rereads} re-read the pointer",
        failures.len()
    );
    assert!(failures.is_empty(), "failed reads: {failures:#?}");
    assert!(
        replaced >= 20,
        "the pointer was replaced during the reads ({replaced})"
    );
    assert!(
        rereads >= 1,
        "some reads met a replace in progress and rode it out (else the test proves nothing)"
    );
}

/// `show`, `history` and `status` on a store whose pointer is damaged: each
/// fails with exit 1; what each took and printed on stderr.
fn failing_reads(store: &TestStore) -> Vec<(&'static [&'static str], Duration, String)> {
    [&["show"][..], &["history"], &["status"]]
        .into_iter()
        .map(|args| {
            let started = Instant::now();
            let out = store.run(args);
            let elapsed = started.elapsed();
            let stderr = text(&out.stderr);
            assert_eq!(code(&out), 1, "{args:?}: {stderr}");
            (args, elapsed, stderr)
        })
        .collect()
}

#[test]
fn a_pointer_that_stays_damaged_is_reported_after_about_a_second() {
    let store = TestStore::new();
    store.refresh(A, &[]);
    store.refresh(B, &[]);
    let pointer = pointer_path(&store);
    let bytes = std::fs::read(&pointer).unwrap();
    std::fs::write(&pointer, &bytes[..bytes.len() - 10]).unwrap();
    for (args, elapsed, stderr) in failing_reads(&store) {
        assert!(
            elapsed >= Duration::from_millis(900),
            "{args:?}: re-read for the whole window first: {elapsed:?}"
        );
        assert!(
            elapsed < Duration::from_secs(3),
            "{args:?}: bounded: {elapsed:?}"
        );
        assert!(
            stderr.contains("stayed so across") && stderr.contains("not a replace in progress"),
            "{args:?}: says it stayed damaged across re-reads: {stderr}"
        );
        assert!(
            stderr.contains("copy") && stderr.contains("snapshots") && stderr.contains("first"),
            "{args:?}: says to keep the snapshots before a new history: {stderr}"
        );
    }
    let started = Instant::now();
    let (out, report) = store.json(&["verify"]);
    assert_eq!(code(&out), 1);
    assert_eq!(report["problems"][0]["kind"], "pointer", "{report}");
    assert!(started.elapsed() < Duration::from_secs(3));
}

/// A pointer whose checksum matches its body was written whole: no replace
/// in progress explains a body that does not parse or breaks an invariant,
/// so it is reported on the first look, without the re-read window (found
/// by the pointer fuzz target, `fuzz/`, whose every case waited a second).
#[test]
fn a_checksummed_pointer_that_is_invalid_is_reported_without_waiting() {
    let store = TestStore::new();
    store.refresh(A, &[]);
    let pointer = pointer_path(&store);
    for body in [
        // Not a pointer at all.
        r#"{"current":1}"#,
        // A pointer that lists no generation.
        r#"{"current":1,"last_generation":1,"checked_at":"2026-01-01T00:00:00Z","generations":[]}"#,
    ] {
        write_pointer_with_body(&pointer, body);
        for (args, elapsed, stderr) in failing_reads(&store) {
            assert!(
                stderr.contains("corrupt") || stderr.contains("damaged"),
                "{args:?}: reports the pointer: {stderr}"
            );
            assert!(
                !stderr.contains("stayed so across"),
                "{args:?}: read once, not re-read: {stderr}"
            );
            assert!(
                elapsed < Duration::from_millis(900),
                "{args:?}: no re-read window ({elapsed:?}): {stderr}"
            );
        }
    }
}

#[test]
fn a_store_that_never_published_is_reported_empty_without_waiting() {
    let store = TestStore::new();
    std::fs::create_dir_all(store.root().join("snapshots")).unwrap();
    let started = Instant::now();
    let out = store.run(&["show"]);
    let elapsed = started.elapsed();
    assert_eq!(code(&out), 1);
    assert!(
        text(&out.stderr).contains("no snapshot has been published"),
        "{}",
        text(&out.stderr)
    );
    assert!(
        elapsed < Duration::from_millis(900),
        "no snapshot file, so no pointer is expected: no re-read window ({elapsed:?})"
    );
}
