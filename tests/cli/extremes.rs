//! Extreme inputs: arguments and paths that are not UTF-8, numbers out of
//! range, an exhausted generation counter, a stdout that fails. Each is a
//! documented exit code with a clear message, never a panic (exit 101).

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::process::{Command, Stdio};

use crate::clocks::edit_pointer;
use crate::common::*;

fn not_utf8(prefix: &str) -> OsString {
    let mut name = OsString::from(prefix);
    name.push(OsString::from_vec(b"-\xff\xfe".to_vec()));
    name
}

fn assert_no_panic(out: &std::process::Output, what: &str) {
    let stderr = text(&out.stderr);
    assert!(
        !stderr.contains("panicked") && code(out) != 101,
        "{what}: exit {} {stderr}",
        code(out)
    );
}

/// `snapcache <args>` with a clean environment (no `--store`).
fn command(args: &[OsString]) -> Command {
    let mut cmd = Command::new(bin());
    cmd.args(args)
        .env_remove("SNAPCACHE_DIR")
        .env_remove("SNAPCACHE_LOCK_TIMEOUT")
        .env_remove("SNAPCACHE_KEEP")
        .env_remove("SNAPCACHE_LEASE_SECS")
        .stdin(Stdio::null());
    cmd
}

#[test]
fn a_store_path_and_file_names_that_are_not_utf8_work() {
    let scratch = TestStore::new();
    let mut root = scratch.dir.path().as_os_str().to_owned();
    root.push("/");
    root.push(not_utf8("store"));
    let mut payload = scratch.dir.path().as_os_str().to_owned();
    payload.push("/");
    payload.push(not_utf8("payload.json"));
    std::fs::write(&payload, b"[1]").unwrap();
    let run = |args: &[&str], extra: &[OsString]| {
        let mut all: Vec<OsString> = vec!["--store".into(), root.clone()];
        all.extend(args.iter().map(OsString::from));
        all.extend_from_slice(extra);
        let out = run_with_timeout(command(&all));
        assert_no_panic(&out, &format!("{args:?}"));
        out
    };
    let out = run(&["refresh", "--from"], std::slice::from_ref(&payload));
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    let out = run(
        &["refresh", "--note"],
        &[
            not_utf8("note"),
            "--exec".into(),
            "echo".into(),
            "[2]".into(),
        ],
    );
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    let out = run(&["refresh", "--exec", "printf"], &[not_utf8("[3]")]);
    assert_eq!(code(&out), 65, "not JSON: {}", text(&out.stderr));

    let out = run(&["--json", "status"], &[]);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let shown = status["store"].as_str().unwrap();
    assert!(
        shown.ends_with("store-\u{fffd}\u{fffd}"),
        "shown lossily: {shown:?}"
    );
    assert_eq!(status["generation"], 2);

    let out = run(&["--json", "history"], &[]);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    let history: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(history["generations"][1]["note"], "note-\u{fffd}\u{fffd}");

    let out = run(&["--json", "verify"], &[]);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    let out = run(&["rollback"], &[]);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    let out = run(&["gc", "--keep", "1"], &[]);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    // A damaged snapshot: verify reports its (non-UTF-8) path in JSON.
    let snapshots = std::path::PathBuf::from(&root).join("snapshots");
    for entry in std::fs::read_dir(&snapshots).unwrap() {
        let path = entry.unwrap().path();
        make_owner_writable(&path);
        std::fs::write(&path, b"[9]").unwrap();
    }
    let out = run(&["--json", "verify"], &[]);
    assert_eq!(code(&out), 1, "{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let path = report["problems"][0]["path"].as_str().unwrap();
    assert!(path.contains("store-\u{fffd}\u{fffd}"), "{report}");
}

#[test]
fn out_of_range_environment_numbers_are_usage_errors_naming_the_range() {
    let store = TestStore::new();
    let payload = store.payload("p.json", b"[1]");
    let refresh = |env: (&str, &str)| {
        let mut cmd = store.command(&[
            "--lock-backend",
            "lease",
            "refresh",
            "--from",
            payload.to_str().unwrap(),
        ]);
        cmd.env(env.0, env.1);
        let out = run_with_timeout(cmd);
        assert_no_panic(&out, &format!("{env:?}"));
        out
    };
    for secs in [
        "1e12", "1e19", "1e30", "1e309", "NaN", "inf", "0.2", "-1", "86401",
    ] {
        let out = refresh(("SNAPCACHE_LEASE_SECS", secs));
        let stderr = text(&out.stderr);
        assert_eq!(code(&out), 2, "{secs}: {stderr}");
        assert!(stderr.contains("from 0.3 to 86400"), "{secs}: {stderr}");
    }
    assert_eq!(code(&refresh(("SNAPCACHE_LEASE_SECS", "86400"))), 0);
    for secs in ["1e19", "1e30", "1000000001", "-1", "NaN"] {
        let out = refresh(("SNAPCACHE_LOCK_TIMEOUT", secs));
        let stderr = text(&out.stderr);
        assert_eq!(code(&out), 2, "{secs}: {stderr}");
        assert!(stderr.contains("to 1000000000"), "{secs}: {stderr}");
    }
    for keep in ["0", "101", "-1", "1e3"] {
        let out = refresh(("SNAPCACHE_KEEP", keep));
        let stderr = text(&out.stderr);
        assert_eq!(code(&out), 2, "{keep}: {stderr}");
        assert!(stderr.contains("from 1 to 100"), "{keep}: {stderr}");
    }
    let mut cmd = store.command(&["refresh", "--from", payload.to_str().unwrap()]);
    cmd.env("SNAPCACHE_KEEP", OsString::from_vec(b"\xff".to_vec()));
    let out = run_with_timeout(cmd);
    assert_eq!(code(&out), 2, "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("not valid UTF-8"));
}

#[test]
fn out_of_range_flag_numbers_are_usage_errors_naming_the_range() {
    let store = TestStore::new();
    let payload = store.payload("p.json", b"[1]");
    let from = payload.to_str().unwrap();
    for timeout in ["1e19", "1e30", "1e309", "1000000001", "-0.5"] {
        let flag = format!("--lock-timeout={timeout}");
        for command in [
            vec!["refresh", flag.as_str(), "--from", from],
            vec!["gc", flag.as_str()],
            vec!["rollback", flag.as_str()],
        ] {
            let out = store.run(&command);
            assert_no_panic(&out, timeout);
            let stderr = text(&out.stderr);
            assert_eq!(code(&out), 2, "{command:?}: {stderr}");
            assert!(stderr.contains("to 1000000000"), "{stderr}");
        }
    }
    for ok in ["1e9", "infinite", "0"] {
        let out = store.run(&["refresh", "--lock-timeout", ok, "--from", from]);
        assert_eq!(code(&out), 0, "{ok}: {}", text(&out.stderr));
    }
    for age in ["99999999999y", "1000000001s", "18446744073709551615s"] {
        let out = store.run(&["refresh", "--max-age", age, "--from", from]);
        assert_no_panic(&out, age);
        let stderr = text(&out.stderr);
        assert_eq!(code(&out), 2, "{age}: {stderr}");
        assert!(
            stderr.contains("1000000000s") || stderr.contains("too large"),
            "{age}: {stderr}"
        );
    }
}

#[test]
fn an_exhausted_generation_counter_is_an_error_and_changes_nothing() {
    let store = TestStore::new();
    store.refresh(b"[1]", &[]);
    edit_pointer(&store, |body| {
        body["last_generation"] = u64::MAX.into();
    });
    let before = store.fingerprint();
    let payload = store.payload("new.json", b"[2]");
    let out = store.run(&["refresh", "--from", payload.to_str().unwrap()]);
    assert_no_panic(&out, "exhausted counter");
    let stderr = text(&out.stderr);
    assert_eq!(code(&out), 1, "{stderr}");
    assert!(
        stderr.contains("handed out every generation number") && stderr.contains("current"),
        "{stderr}"
    );
    assert_eq!(store.fingerprint(), before, "the store is unchanged");
    assert!(store.files_in("tmp").is_empty(), "no temp file left");
    assert_eq!(store.show(), b"[1]");
    let (out, status) = store.json(&["status"]);
    assert_eq!(code(&out), 0);
    assert_eq!(status["generation"], 1);
    // The same content needs no new number: still an (unchanged) refresh.
    let same = store.refresh(b"[1]", &[]);
    assert_eq!(same["changed"], false);
    assert_eq!(same["generation"], 1);
    assert_eq!(code(&store.run(&["verify"])), 0);
}

#[test]
fn a_failing_stdout_is_exit_1_and_a_closed_pipe_is_not_an_error() {
    let store = TestStore::new();
    store.refresh(b"[1]", &[]);
    if let Ok(full) = std::fs::OpenOptions::new().write(true).open("/dev/full") {
        let mut cmd = store.command(&["status"]);
        cmd.stdout(full).stderr(Stdio::piped());
        let out = cmd.output().unwrap();
        assert_no_panic(&out, "/dev/full");
        assert_eq!(code(&out), 1, "{}", text(&out.stderr));
        assert!(text(&out.stderr).contains("could not write the result to stdout"));
        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap();
        let mut cmd = store.command(&["show"]);
        cmd.stdout(full).stderr(Stdio::piped());
        let out = cmd.output().unwrap();
        assert_no_panic(&out, "show > /dev/full");
        assert_eq!(code(&out), 1, "{}", text(&out.stderr));
        assert!(text(&out.stderr).contains("could not write the snapshot to stdout"));
    } else {
        eprintln!("skipped the /dev/full case: it cannot be opened here");
    }
    // A reader that went away: history into a closed pipe.
    let mut cmd = store.command(&["history"]);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    drop(child.stdout.take());
    let out = wait_output(child, COMMAND_TIMEOUT);
    assert_no_panic(&out, "closed pipe");
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
}

#[test]
fn verify_json_shows_planted_names_that_are_not_utf8() {
    let store = TestStore::new();
    store.refresh(b"[1]", &[]);
    let tmp = store.root().join("tmp");
    // A leftover of ours (our prefix) and a foreign directory, both named
    // with bytes that are not UTF-8.
    let mut ours = tmp.clone().into_os_string();
    ours.push("/.snapcache-");
    ours.push(OsString::from_vec(b"\xff".to_vec()));
    std::fs::write(&ours, b"junk").unwrap();
    let mut foreign = tmp.into_os_string();
    foreign.push("/");
    foreign.push(not_utf8("planted"));
    std::fs::create_dir(&foreign).unwrap();
    let (out, report) = store.json(&["verify"]);
    assert_no_panic(&out, "verify --json");
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    let listed = report.to_string();
    assert!(
        listed.contains("planted-\u{fffd}\u{fffd}") && listed.contains(".snapcache-\u{fffd}"),
        "both shown lossily: {listed}"
    );
}

/// Reproduced: a pointer whose commit counter was at its maximum (edited;
/// its generation 1) made writes fail with "handed out every generation
/// number (last generation 18446744073709551615)", naming the wrong
/// counter. It is a damaged pointer, named as one, and nothing changes.
#[test]
fn an_exhausted_commit_counter_is_a_damaged_pointer_not_exhausted_generations() {
    let store = TestStore::new();
    store.refresh(b"[1]", &[]);
    edit_pointer(&store, |body| {
        body["commit"] = u64::MAX.into();
    });
    let before = store.fingerprint();
    let payload = store.payload("new.json", b"[2]");
    for backend in ["advisory", "lease"] {
        let out = store.run(&[
            "--lock-backend",
            backend,
            "refresh",
            "--from",
            payload.to_str().unwrap(),
        ]);
        assert_no_panic(&out, "exhausted commit counter");
        let stderr = text(&out.stderr);
        assert_eq!(code(&out), 1, "{backend}: {stderr}");
        assert!(
            stderr.contains("commit counter is at its maximum")
                && !stderr.contains("every generation number"),
            "{backend}: {stderr}"
        );
    }
    assert_eq!(store.fingerprint(), before, "the store is unchanged");
    assert_eq!(store.show(), b"[1]");
}

/// Found by a hostile audit: a pointer edited to commit 2^63 − 2 let lease
/// writers number records past 2^63, the highest a record's name may carry,
/// so every later reader took them for foreign files (never pruned, listed
/// by `verify` as "not created by snapcache"), and after a `clear` every
/// refresh and clear failed as a commit conflict for ever. The counter now
/// ends at 2^63: the write past it is refused as a damaged pointer before a
/// record is made, and `clear` is the way out.
#[test]
fn lease_writers_never_number_a_commit_record_past_the_names_bound() {
    let store = TestStore::new();
    store.refresh(b"[1]", &[]);
    let bound: u64 = 1 << 63;
    edit_pointer(&store, |body| {
        body["commit"] = (bound - 2).into();
    });
    let lease_refresh = |content: &[u8]| {
        let p = store.payload("p", content);
        store.run(&[
            "--lock-backend",
            "lease",
            "refresh",
            "--from",
            p.to_str().unwrap(),
        ])
    };
    // Commits 2^63 − 1 and 2^63 can still be numbered.
    for i in 2..=3 {
        let out = lease_refresh(format!("[{i}]").as_bytes());
        assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    }
    let out = lease_refresh(b"[4]");
    let stderr = text(&out.stderr);
    assert_eq!(code(&out), 1, "{stderr}");
    assert!(
        stderr.contains("commit counter is at its maximum") && stderr.contains("2^63"),
        "{stderr}"
    );
    // Found by a review: it was reported as a damaged pointer "nothing was
    // read from", with a `mv` that the lease backend undid from its newest
    // record; the way out that works is a clear.
    assert!(
        !stderr.contains("nothing was read") && stderr.contains("hint: `snapcache clear`"),
        "{stderr}"
    );
    assert_eq!(store.show(), b"[3]", "the store is as it was");
    let records: Vec<String> = store.files_in("commits");
    assert!(
        records
            .iter()
            .all(|n| n.parse::<u64>().is_ok_and(|n| n <= bound)),
        "a record named past 2^63: {records:?}"
    );
    let (_, report) = store.json(&["verify"]);
    assert_eq!(
        report["foreign"].as_array().map_or(0, Vec::len),
        0,
        "{report}"
    );
    // The way out: clear, then the numbering starts again.
    let out = store.run(&["--lock-backend", "lease", "clear"]);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    for i in 1..=2 {
        let out = lease_refresh(format!("[1{i}]").as_bytes());
        assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    }
    assert_eq!(store.show(), b"[12]");
    let (_, status) = store.json(&["status"]);
    assert_eq!(status["generation"], 2, "{status}");
    assert_eq!(code(&store.run(&["verify"])), 0);
}

/// Found by a hostile audit: on the lease backend the advice for an
/// exhausted generation counter, "move the pointer aside", did not work
/// (the newest commit record holds the same pointer, and the writer put it
/// back). The advice is now to clear the store, which works on both.
#[test]
fn the_advice_for_an_exhausted_generation_counter_works_on_both_backends() {
    for backend in ["advisory", "lease"] {
        let store = TestStore::new();
        store.refresh(b"[1]", &[]);
        edit_pointer(&store, |body| {
            body["last_generation"] = (u64::MAX - 1).into();
        });
        let refresh = |content: &[u8]| {
            let p = store.payload("p", content);
            store.run(&[
                "--lock-backend",
                backend,
                "refresh",
                "--from",
                p.to_str().unwrap(),
            ])
        };
        let out = refresh(b"[2]");
        assert_eq!(code(&out), 0, "{backend}: {}", text(&out.stderr));
        let out = refresh(b"[3]");
        let stderr = text(&out.stderr);
        assert_eq!(code(&out), 1, "{backend}: {stderr}");
        assert!(
            stderr.contains("handed out every generation number")
                && stderr.contains("clear the store"),
            "{backend}: {stderr}"
        );
        let out = store.run(&["--lock-backend", backend, "clear"]);
        assert_eq!(code(&out), 0, "{backend}: {}", text(&out.stderr));
        let out = refresh(b"[3]");
        assert_eq!(code(&out), 0, "{backend}: {}", text(&out.stderr));
        assert_eq!(store.show(), b"[3]", "{backend}");
        let (_, status) = store.json(&["status"]);
        assert_eq!(status["generation"], 1, "{backend}: {status}");
    }
}

/// Found by a hostile audit: an old generation's `created_at` written as a
/// valid RFC 3339 time before 1970 or with an offset made every read and
/// write refuse the store as damaged ("not an RFC 3339 time"). Such a time
/// is read (converted to UTC, clamped to 1970) and the store serves on.
#[test]
fn valid_rfc3339_times_with_offsets_or_before_1970_do_not_damage_the_store() {
    let store = TestStore::new();
    for i in 1..=3 {
        store.refresh(format!("[{i}]").as_bytes(), &[]);
    }
    edit_pointer(&store, |body| {
        body["generations"][0]["created_at"] = "1969-12-31T23:59:59Z".into();
        body["generations"][1]["created_at"] = "2026-12-07T23:00:00+05:00".into();
    });
    assert_eq!(store.show(), b"[3]");
    let (out, history) = store.json(&["history"]);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    let times: Vec<&str> = history["generations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["created_at"].as_str().unwrap())
        .collect();
    assert!(times.contains(&"1970-01-01T00:00:00.000Z"), "{times:?}");
    assert!(times.contains(&"2026-12-07T18:00:00.000Z"), "{times:?}");
    assert_eq!(code(&store.run(&["verify"])), 0);
    store.refresh(b"[4]", &[]);
    assert_eq!(store.show(), b"[4]");
}
