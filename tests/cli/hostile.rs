//! Hostile or damaged store contents: clear errors, no panic, nothing read
//! or written outside the store.

use std::os::unix::fs::{PermissionsExt, symlink};

use crate::common::*;

fn two_generations() -> TestStore {
    let store = TestStore::new();
    store.refresh(&json_payload(5000, 1), &[]);
    store.refresh(&json_payload(5000, 2), &[]);
    store
}

fn current_snapshot(store: &TestStore) -> std::path::PathBuf {
    store
        .root()
        .join("snapshots")
        .join(hash_hex(&json_payload(5000, 2)))
}

fn assert_show_fails(store: &TestStore, needle: &str) -> String {
    let out = store.run(&["show"]);
    let stderr = text(&out.stderr);
    assert_eq!(code(&out), 1, "{stderr}");
    assert!(
        out.stdout.is_empty(),
        "no bytes are served from a damaged store"
    );
    assert!(!stderr.contains("panicked"), "no panic: {stderr}");
    assert!(stderr.contains(needle), "expected {needle:?} in: {stderr}");
    stderr
}

#[test]
fn an_oversized_pointer_is_rejected_without_reading_it() {
    let store = two_generations();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(pointer_path(&store))
        .unwrap();
    file.set_len(1 << 30).unwrap(); // 1 GiB, sparse
    let started = std::time::Instant::now();
    let stderr = assert_show_fails(&store, "larger than 65536 bytes");
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    // Found by a hostile audit: it was re-read for a second first, like a
    // pointer a writer is replacing, which no writer's pointer explains.
    assert!(!stderr.contains("stayed so across"), "{stderr}");
}

#[test]
fn an_unknown_pointer_version_is_named() {
    let store = two_generations();
    let text = std::fs::read_to_string(pointer_path(&store)).unwrap();
    std::fs::write(
        pointer_path(&store),
        text.replacen("snapcache-pointer 1 ", "snapcache-pointer 2 ", 1),
    )
    .unwrap();
    assert_show_fails(&store, "format version 2");
}

/// Found by a hostile audit: a store of a newer format (marker or pointer
/// version 2, nothing damaged) was reported as `corrupt-store`, whose
/// advice is a rollback or a refresh; it has a kind of its own, and the
/// message says to upgrade.
#[test]
fn a_newer_format_is_its_own_error_kind_not_damage() {
    for file in ["snapcache-store", "current"] {
        let store = two_generations();
        let path = store.root().join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        let newer = text
            .replacen("snapcache-store 1", "snapcache-store 2", 1)
            .replacen("snapcache-pointer 1 ", "snapcache-pointer 2 ", 1);
        assert_ne!(newer, text, "{file}");
        std::fs::write(&path, newer).unwrap();
        for args in [
            &["--json", "show"][..],
            &["--json", "status"],
            &["--json", "history"],
        ] {
            let out = store.run(args);
            assert_eq!(code(&out), 1, "{file} {args:?}");
            let value: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            assert_eq!(
                value["error"]["kind"], "unsupported-version",
                "{file} {args:?}: {value}"
            );
            let message = value["error"]["message"].as_str().unwrap();
            assert!(message.contains("upgrade"), "{file}: {message}");
        }
    }
}

#[test]
fn uppercase_or_short_hashes_in_the_pointer_are_rejected() {
    let hash = hash_hex(&json_payload(5000, 2));
    for bad in [
        hash.to_uppercase(),
        hash[..40].to_string(),
        format!("{hash}00"),
    ] {
        let store = two_generations();
        write_pointer_with_body(
            &pointer_path(&store),
            &format!(
                r#"{{"current":2,"last_generation":2,"checked_at":"2026-01-01T00:00:00Z","generations":[{{"generation":2,"hash":"{bad}","bytes":5000,"created_at":"2026-01-01T00:00:00Z","note":null}}]}}"#
            ),
        );
        assert_show_fails(&store, "not a content hash");
    }
}

#[test]
fn a_truncated_snapshot_is_detected() {
    let store = two_generations();
    let snap = current_snapshot(&store);
    make_owner_writable(&snap);
    let bytes = std::fs::read(&snap).unwrap();
    std::fs::write(&snap, &bytes[..bytes.len() - 10]).unwrap();
    assert_show_fails(&store, "bytes long, the pointer recorded");
}

#[test]
fn a_missing_snapshot_is_detected() {
    let store = two_generations();
    std::fs::remove_file(current_snapshot(&store)).unwrap();
    assert_show_fails(&store, "is missing");
}

#[test]
fn a_directory_in_place_of_a_snapshot_is_detected_and_left_for_the_user() {
    let store = two_generations();
    let snap = current_snapshot(&store);
    std::fs::remove_file(&snap).unwrap();
    std::fs::create_dir(&snap).unwrap();
    std::fs::write(snap.join("inside.txt"), b"someone's file").unwrap();
    assert_show_fails(&store, "not a regular file");
    // Republishing the same content needs the name: snapcache refuses to
    // delete a directory it did not create, names it and says what to do.
    let payload = store.payload("again", &json_payload(5000, 2));
    let out = store.run(&["refresh", "--from", payload.to_str().unwrap()]);
    let stderr = text(&out.stderr);
    assert_eq!(code(&out), 1, "{stderr}");
    assert!(stderr.contains(snap.to_str().unwrap()), "{stderr}");
    assert!(stderr.contains("left in place"), "{stderr}");
    assert!(stderr.contains("move it out of the store"), "{stderr}");
    assert_eq!(
        std::fs::read(snap.join("inside.txt")).unwrap(),
        b"someone's file",
        "the directory and its contents are untouched"
    );
    let (_, report) = store.json(&["verify"]);
    assert_eq!(report["problems"][0]["kind"], "not-a-file", "{report}");
    assert_eq!(report["foreign"][0]["path"], snap.to_str().unwrap());
    assert_eq!(report["foreign"][0]["what"], "directory");
    // Once the user moved it away, a refresh repairs the generation.
    std::fs::remove_dir_all(&snap).unwrap();
    store.refresh(&json_payload(5000, 2), &[]);
    assert_eq!(store.show(), json_payload(5000, 2));
    store.ok(&["verify"]);
}

#[test]
fn a_symlink_in_place_of_a_snapshot_is_never_followed() {
    let store = two_generations();
    let snap = current_snapshot(&store);
    // Even a link to a file with exactly the right bytes is refused: the
    // store never reads outside itself.
    let outside = store.payload("outside", &json_payload(5000, 2));
    std::fs::remove_file(&snap).unwrap();
    symlink(&outside, &snap).unwrap();
    assert_show_fails(&store, "not a regular file");
    let out = store.run(&["verify"]);
    assert_eq!(code(&out), 1);
    assert!(
        text(&out.stdout).contains("not-a-file"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn a_symlinked_pointer_is_not_followed() {
    let store = two_generations();
    let outside = store.scratch("outside-pointer");
    std::fs::copy(pointer_path(&store), &outside).unwrap();
    std::fs::remove_file(pointer_path(&store)).unwrap();
    symlink(&outside, pointer_path(&store)).unwrap();
    let before = std::fs::read(&outside).unwrap();
    assert_show_fails(&store, "symbolic link");
    let out = store.run(&[
        "refresh",
        "--from",
        store.payload("p", b"[1]").to_str().unwrap(),
    ]);
    assert_eq!(code(&out), 1, "{}", text(&out.stderr));
    assert_eq!(
        std::fs::read(&outside).unwrap(),
        before,
        "nothing was written through the link"
    );
}

#[test]
fn symlinks_at_tmp_or_the_lock_never_make_snapcache_write_outside() {
    for planted in ["tmp", "lock", "snapshots"] {
        let store = two_generations();
        let outside = store.scratch("outside");
        std::fs::create_dir_all(&outside).unwrap();
        let target = if planted == "lock" {
            outside.join("victim")
        } else {
            outside.clone()
        };
        if planted == "lock" {
            std::fs::write(&target, b"precious").unwrap();
        }
        let path = store.root().join(planted);
        if path.is_dir() {
            std::fs::remove_dir_all(&path).unwrap();
        } else {
            std::fs::remove_file(&path).unwrap();
        }
        symlink(&target, &path).unwrap();
        let out = store.run(&[
            "refresh",
            "--from",
            store.payload("p", b"[3]").to_str().unwrap(),
        ]);
        let stderr = text(&out.stderr);
        assert_eq!(code(&out), 1, "{planted}: {stderr}");
        assert!(
            stderr.contains(path.to_str().unwrap()),
            "{planted}: the message names the path: {stderr}"
        );
        let entries: Vec<_> = std::fs::read_dir(&outside)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        if planted == "lock" {
            assert_eq!(
                std::fs::read(&target).unwrap(),
                b"precious",
                "the lock's link target is untouched"
            );
            assert_eq!(entries.len(), 1);
        } else {
            assert!(
                entries.is_empty(),
                "{planted}: nothing was written outside the store: {entries:?}"
            );
        }
    }
}

#[test]
fn show_fallback_serves_the_newest_intact_generation_and_verify_still_reports() {
    let store = TestStore::new();
    for i in 1..=3 {
        store.refresh(&json_payload(4000, i), &[]);
    }
    let damaged = store
        .root()
        .join("snapshots")
        .join(hash_hex(&json_payload(4000, 3)));
    make_owner_writable(&damaged);
    std::fs::write(&damaged, json_payload(4000, 9)).unwrap();
    assert_show_fails(&store, "damaged");
    let out = store.run(&["show", "--fallback"]);
    let stderr = text(&out.stderr);
    assert_eq!(code(&out), 0, "{stderr}");
    assert_eq!(
        out.stdout,
        json_payload(4000, 2),
        "the newest intact generation is served"
    );
    assert!(
        stderr.contains("served generation 2") && stderr.contains("damaged"),
        "it says which and why: {stderr}"
    );
    let out = store.run(&["verify"]);
    assert_eq!(code(&out), 1, "verify still reports the damage");
    let out = store.run(&["show", "--fallback", "--generation", "1"]);
    assert_eq!(code(&out), 2, "--fallback and --generation do not mix");
}

/// Reproduced: a lock holder record written by hand (or by another tool)
/// with terminal escape sequences put them, raw, into `status` and into the
/// lock-timeout error ("cmd\e[2J\e[31mRED" cleared and recoloured the
/// screen). A note in a hand-edited pointer (checksum recomputed) did the
/// same in `history`. snapcache writes such text as one line already; what
/// it reads is now turned into one line too: no control character reaches
/// stdout, stderr or `--json`.
#[test]
fn escape_sequences_in_a_holder_record_or_a_note_never_reach_the_terminal() {
    const HOSTILE: &str = "x\u{1b}]0;pwned\u{7}\u{1b}[2J\u{1b}[31mRED\ninjected\r";
    let store = TestStore::new();
    store.refresh(b"[1]", &[]);
    crate::clocks::edit_pointer(&store, |body| {
        body["generations"][0]["note"] = HOSTILE.into();
    });
    let clean = |what: &str, bytes: &[u8]| {
        let text = text(bytes);
        let bad = text
            .chars()
            .find(|&c| c.is_control() && c != '\n')
            .or_else(|| text.contains("RED\ninjected").then_some('\n'));
        assert_eq!(bad, None, "{what} printed a control character: {text:?}");
    };
    let out = store.ok(&["history"]);
    clean("history", &out.stdout);
    assert!(
        text(&out.stdout).contains("RED injected"),
        "{}",
        text(&out.stdout)
    );
    let (_, history) = store.json(&["history"]);
    let note = history["generations"][0]["note"].as_str().unwrap();
    assert!(!note.chars().any(char::is_control), "{note:?}");

    let mut holder = store
        .command(&["refresh", "--exec", "sh", "-c", "sleep 4; echo '[2]'"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let status = store.wait_until_locked();
    let mut record = status["lock"].clone();
    record["host"] = HOSTILE.into();
    record["command"] = HOSTILE.into();
    record
        .as_object_mut()
        .unwrap()
        .retain(|k, _| !["held", "held_for_seconds"].contains(&k.as_str()));
    let path = store.root().join("lock.holder");
    std::fs::write(&path, record.to_string()).unwrap();
    let payload = store.payload("p", b"[3]");
    for args in [
        &["status"][..],
        &["--json", "status"],
        &[
            "refresh",
            "--lock-timeout",
            "0",
            "--from",
            payload.to_str().unwrap(),
        ],
        &[
            "--json",
            "refresh",
            "--lock-timeout",
            "0",
            "--from",
            payload.to_str().unwrap(),
        ],
    ] {
        let out = store.run(args);
        clean(&format!("{args:?} (stdout)"), &out.stdout);
        clean(&format!("{args:?} (stderr)"), &out.stderr);
        let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
        assert!(
            said.contains("RED injected"),
            "{args:?} names the holder: {said}"
        );
    }
    assert!(holder.wait().unwrap().success());
}

/// Reproduced: `verify` printed a foreign file name from the store as it
/// was, and `diff` a payload's key (the payload comes from the network), so
/// an ESC in either reached the terminal. Every line for people now shows a
/// control character other than newline and tab as an escape (`\u{1b}`).
#[test]
fn escape_sequences_in_file_names_and_payload_keys_are_shown_escaped() {
    let store = TestStore::new();
    store.refresh(br#"{"k\u001b[31m":1}"#, &[]);
    store.refresh(br#"{"k\u001b[31m":2}"#, &[]);
    std::fs::write(store.root().join("snapshots").join("x\u{1b}]0;t\u{7}"), b"").unwrap();
    for args in [&["verify"][..], &["diff"]] {
        let out = store.run(args);
        for (which, bytes) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
            let text = text(bytes);
            assert!(
                !text.chars().any(|c| c.is_control() && c != '\n'),
                "{args:?} {which}: {text:?}"
            );
        }
        let said = text(&out.stdout);
        assert!(
            said.contains("\\u{1b}"),
            "{args:?} shows the escape: {said}"
        );
    }
}

/// Reproduced: `--json diff` of a payload holding U+0085 (a NEL, as a
/// mis-decoded "…" leaves it) printed `"\u{85}"`, which is not JSON, and
/// so did `--json verify` with a DEL in a foreign file name and `--json
/// status` of a store whose path holds one; `verify` printed a foreign
/// name with a newline as two lines (the second a forged `problem:`);
/// `diff` and `history` passed a right-to-left override (U+202E) through
/// raw, reversing the rest of the line; and `-v` wrote a planted temp
/// file's name into its log line as it was, ESC and newline included.
#[test]
fn newlines_bidi_and_c1_controls_from_outside_neither_forge_lines_nor_break_json() {
    let store = TestStore::new();
    store.refresh(br#"{"k":1}"#, &[]);
    store.refresh(
        br#"{"k":1,"x\n- /forged: \"removed\"":1,"v":"Zulu\u0085 b\u202egpj.exe"}"#,
        &["--note", "release\u{202e} cod.lmth"],
    );
    std::fs::write(store.root().join("snapshots/junk\nproblem: forged"), b"").unwrap();
    std::fs::write(store.root().join("snapshots/x\u{7f}y"), b"").unwrap();
    let raw_hostile = |t: &str| {
        t.chars()
            .find(|&c| (c.is_control() && c != '\n') || ('\u{202a}'..='\u{202e}').contains(&c))
    };
    for args in [&["diff"][..], &["verify"], &["history"]] {
        let out = store.run(args);
        let said = text(&out.stdout);
        assert_eq!(raw_hostile(&said), None, "{args:?}: {said:?}");
        for line in said.lines() {
            assert!(
                !line.starts_with("problem:") && !line.starts_with("- /forged"),
                "{args:?} printed a forged line: {said}"
            );
        }
    }
    assert!(text(&store.run(&["diff"]).stdout).contains("\\u{202e}"));
    for args in [
        &["--json", "diff"][..],
        &["--json", "verify"],
        &["--json", "history"],
    ] {
        let out = store.run(args);
        let parsed: Result<serde_json::Value, _> = serde_json::from_slice(&out.stdout);
        assert!(parsed.is_ok(), "{args:?}: {}", text(&out.stdout));
        assert_eq!(raw_hostile(&text(&out.stdout)), None, "{args:?}");
    }
    let (_, diff) = store.json(&["diff"]);
    let added = diff["added"].to_string();
    assert!(
        added.contains("Zulu\u{85} b\u{202e}gpj.exe"),
        "the value is unchanged, only escaped: {added}"
    );

    // A store whose own path holds a DEL.
    let odd = store.scratch("sd\u{7f}");
    let from = store.payload("p", b"[1]");
    for args in [
        &["refresh", "--from", from.to_str().unwrap()][..],
        &["--json", "status"],
        &["--json", "show", "--generation", "9"],
    ] {
        let mut cmd = std::process::Command::new(bin());
        cmd.arg("--store").arg(&odd).args(args);
        let out = run_with_timeout(cmd);
        if args[0] == "--json" {
            let parsed: Result<serde_json::Value, _> = serde_json::from_slice(&out.stdout);
            assert!(parsed.is_ok(), "{args:?}: {}", text(&out.stdout));
        }
    }

    // The log line of a sweep that removes a planted temp file.
    std::fs::write(
        store
            .root()
            .join("tmp/.snapcache-1\u{1b}]0;pwned\u{7}\nFAKE LOG LINE"),
        b"",
    )
    .unwrap();
    let from = store.payload("p2", b"[2]");
    let out = store.run(&["-v", "refresh", "--from", from.to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    let log = text(&out.stderr);
    assert!(log.contains("removed leftover"), "{log}");
    assert_eq!(raw_hostile(&log), None, "{log:?}");
    assert!(
        log.lines().all(|l| !l.starts_with("FAKE")),
        "a forged log line: {log}"
    );
}

/// Reproduced: with a damaged commit record after `current` (garbage, or
/// empty, at `commits/4` of a lease-backend store), `verify` said ok, exit
/// 0, while every refresh, `gc`, `rollback` and `pin` failed on it (readers
/// pass over such a record on purpose). `verify` now reports it as a
/// pointer problem naming the record, and says that writes refuse the
/// store until it is removed.
#[test]
fn verify_reports_a_damaged_commit_record_that_blocks_every_write() {
    for planted in [&b"garbage\n"[..], b""] {
        let store = TestStore::new();
        for i in 1..=3 {
            store.refresh(format!("[{i}]").as_bytes(), &[]);
        }
        // Three lease-backend commits, so that commits/ exists.
        for i in 4..=6 {
            store.lease_refresh(format!("[{i}]").as_bytes());
        }
        let (_, status) = store.json(&["status"]);
        let next = status["commit"]
            .as_u64()
            .map_or_else(|| store.newest_commit_record() + 1, |c| c + 1);
        let record = store.root().join("commits").join(next.to_string());
        std::fs::write(&record, planted).unwrap();
        let p = store.payload("p", b"[9]");
        let write = store.run(&["refresh", "--from", p.to_str().unwrap()]);
        assert_eq!(code(&write), 1, "writes refuse it: {}", text(&write.stderr));
        let out = store.run(&["--json", "verify"]);
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(report["ok"], false, "{report}");
        assert_ne!(code(&out), 0, "{report}");
        let problem = &report["problems"][0];
        assert_eq!(problem["kind"], "pointer", "{report}");
        assert_eq!(problem["path"], record.to_str().unwrap(), "{report}");
        assert!(
            problem["detail"]
                .as_str()
                .unwrap()
                .contains("no write can commit after this record"),
            "{report}"
        );
        // Readers still serve the pointer's generation.
        assert_eq!(store.show(), b"[6]".to_vec());
        // Found by a hostile audit: the human summary said the *pointer* was
        // damaged and advised moving it aside for a new history, which
        // lost the history and fixed nothing. It names the record, and
        // following it keeps the history.
        let out = store.run(&["verify"]);
        let said = text(&out.stdout) + &text(&out.stderr);
        let record_text = record.to_str().unwrap();
        assert!(
            said.contains(&format!("mv {record_text} {record_text}.damaged"))
                && said.contains("the history are kept")
                && !said.contains("starts a new history"),
            "{said}"
        );
        std::fs::rename(&record, store.scratch("record.damaged")).unwrap();
        store.refresh(b"[9]", &[]);
        let (_, history) = store.json(&["history"]);
        assert!(
            history["generations"].as_array().unwrap().len() > 1,
            "the history was kept: {history}"
        );
    }
}

/// Found by a review: a commit record its group and others can write was
/// reported by `verify` as a damaged record to move aside; it is refused
/// for its permissions, and `chmod go-w` is the fix.
#[test]
fn verify_calls_a_commit_record_others_can_write_untrusted_not_damaged() {
    let store = TestStore::new();
    store.lease_refresh(b"[1]");
    store.lease_refresh(b"[2]");
    let newest = store.newest_commit_record();
    let commits = store.root().join("commits");
    let planted = commits.join((newest + 1).to_string());
    std::fs::copy(commits.join(newest.to_string()), &planted).unwrap();
    std::fs::set_permissions(&planted, std::fs::Permissions::from_mode(0o666)).unwrap();
    let (out, report) = store.json(&["verify"]);
    assert_ne!(code(&out), 0, "{report}");
    assert_eq!(report["problems"][0]["kind"], "untrusted", "{report}");
    let out = store.run(&["verify"]);
    let said = text(&out.stdout);
    assert!(
        said.contains("chmod go-w") && !said.contains(".damaged") && !said.contains("damaged:"),
        "{said}"
    );
}
