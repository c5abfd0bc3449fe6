//! The commit fence of the lease backend: a writer whose lease expired
//! while it was stalled after its last lease check cannot commit over the
//! writer that took over (issue 13.1).
//!
//! The stall is real: the writer stops itself with SIGSTOP at the exact
//! point between its last lease check and its commit (test hook
//! `SNAPCACHE_TEST_STOP_BEFORE_COMMIT`, honoured only with
//! `SNAPCACHE_TEST_HOOKS=1`), so its lease renewer stops too and the lease
//! expires. Advisory locks are made to fail as on an NFS `nolock` mount
//! (`SNAPCACHE_TEST_NO_ADVISORY_LOCK`): locally flock works and would
//! serialise the writers, hiding the hole.

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::common::*;

/// A lease-backend command with a 1 s lease and no working advisory lock.
fn nolock(store: &TestStore, args: &[&str]) -> Command {
    let mut all = vec!["--lock-backend", "lease", "--json"];
    all.extend_from_slice(args);
    let mut cmd = store.command(&all);
    cmd.env("SNAPCACHE_LEASE_SECS", "1")
        .env("SNAPCACHE_TEST_HOOKS", "1")
        .env("SNAPCACHE_TEST_NO_ADVISORY_LOCK", "1")
        .env_remove("SNAPCACHE_TEST_STOP_BEFORE_COMMIT");
    cmd
}

fn refresh(store: &TestStore, name: &str, payload: &[u8]) -> Command {
    let file = store.payload(name, payload);
    nolock(
        store,
        &[
            "refresh",
            "--lock-timeout",
            "30",
            "--from",
            file.to_str().unwrap(),
        ],
    )
}

/// SIGKILLs a (possibly stopped) writer if the test fails before it was
/// waited for (disarmed after, so a reused pid is never signalled).
struct KillOnDrop(Option<u32>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(pid) = self
            .0
            .and_then(|p| rustix::process::Pid::from_raw(p as i32))
        {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        }
    }
}

fn generations(store: &TestStore) -> (Vec<u64>, Option<u64>) {
    let (out, history) = store.json(&["history"]);
    assert_eq!(code(&out), 0, "history: {}", text(&out.stderr));
    let list = history["generations"].as_array().expect("generations");
    let numbers = list
        .iter()
        .map(|g| g["generation"].as_u64().unwrap())
        .collect();
    let current = list
        .iter()
        .find(|g| g["current"] == true)
        .and_then(|g| g["generation"].as_u64());
    (numbers, current)
}

fn published(out: &std::process::Output) -> Value {
    assert_eq!(code(out), 0, "refresh: {}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("json outcome")
}

#[test]
fn a_writer_stalled_past_its_lease_loses_its_commit_and_nothing_is_lost() {
    if !std::path::Path::new("/proc/self/stat").exists() {
        eprintln!("skipped: no /proc to see a stopped process");
        return;
    }
    let store = TestStore::new();
    let first = published(&run_with_timeout(refresh(&store, "p1", b"[1]")));
    assert_eq!(first["generation"], 1);

    // A passes its lease check, then stops before its commit.
    let mut a = refresh(&store, "pa", b"[\"from A\"]");
    a.env("SNAPCACHE_TEST_STOP_BEFORE_COMMIT", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let a = a.spawn().expect("spawn A");
    let pid = a.id();
    let mut reaper = KillOnDrop(Some(pid));
    wait_for(
        "writer A to stop before its commit",
        Duration::from_secs(30),
        || (process_state(pid) == Some('T')).then_some(()),
    );

    // B waits for A's lease to expire (A's renewer is stopped too), takes
    // over and publishes generation 2.
    let b = published(&run_with_timeout(refresh(&store, "pb", b"[\"from B\"]")));
    assert_eq!(b["generation"], 2, "B: {b}");

    // A resumes: its commit must fail, cleanly.
    let cont = rustix::process::Pid::from_raw(pid as i32).expect("pid");
    rustix::process::kill_process(cont, rustix::process::Signal::CONT).expect("SIGCONT");
    let out = wait_output(a, COMMAND_TIMEOUT);
    reaper.0 = None;
    let stderr = text(&out.stderr);
    assert_eq!(
        code(&out),
        1,
        "A must fail; stdout {} stderr {stderr}",
        text(&out.stdout)
    );
    assert!(
        stderr.contains("another writer committed generation 2")
            && stderr.contains("nothing was published"),
        "A says why: {stderr}"
    );
    let error: Value = serde_json::from_slice(&out.stdout).expect("one JSON error");
    assert_eq!(
        error["error"]["kind"], "commit-conflict",
        "A claims nothing: {error}"
    );

    // B's generation is current, numbers are unique and increasing, every
    // retained snapshot is there.
    assert_eq!(generations(&store), (vec![1, 2], Some(2)));
    assert_eq!(store.show(), b"[\"from B\"]");
    let (out, verify) = store.json(&["verify"]);
    assert_eq!(code(&out), 0, "verify: {verify}");
    assert_eq!(verify["ok"], true, "{verify}");

    // The next writer goes on from B's commit.
    let c = published(&run_with_timeout(refresh(&store, "pc", b"[3]")));
    assert_eq!(c["generation"], 3);
    assert_eq!(generations(&store), (vec![1, 2, 3], Some(3)));
}

#[test]
fn a_pointer_renamed_late_over_a_newer_commit_is_never_what_readers_see_and_is_rolled_forward() {
    // A winner that stalls between creating its commit record and renaming
    // `current` renames an older pointer over a newer one when it resumes.
    // The records stay the truth: readers follow them from the pointer, and
    // the next writer continues from the newest record, so no generation is
    // lost and no number is reused.
    let store = TestStore::new();
    for (n, payload) in [(1, b"[1]"), (2, b"[2]")] {
        let out = published(&run_with_timeout(refresh(&store, "p", payload)));
        assert_eq!(out["generation"], n);
    }
    let late = std::fs::read(pointer_path(&store)).expect("pointer of commit 2");
    let third = published(&run_with_timeout(refresh(&store, "p3", b"[3]")));
    assert_eq!(third["generation"], 3);
    // The stalled winner's late rename:
    std::fs::write(pointer_path(&store), &late).expect("rename late");
    // Readers go by the records too: they see commit 3, not the pointer
    // renamed late.
    assert_eq!(store.show(), b"[3]", "readers see the newest commit");
    assert_eq!(generations(&store), (vec![1, 2, 3], Some(3)));
    let (_, status) = store.json(&["status"]);
    assert_eq!(status["generation"], 3, "{status}");

    let fourth = published(&run_with_timeout(refresh(&store, "p4", b"[4]")));
    assert_eq!(fourth["generation"], 4, "{fourth}");
    assert_eq!(generations(&store), (vec![1, 2, 3, 4], Some(4)));
    assert_eq!(store.show(), b"[4]");
    let mut records = store.files_in("commits");
    records.sort_by_key(|n| n.parse::<u64>().unwrap());
    assert_eq!(records, ["1", "2", "3", "4"]);
}

#[test]
fn old_commit_records_are_pruned_by_name_and_foreign_names_stay() {
    let store = TestStore::new();
    published(&run_with_timeout(refresh(&store, "p0", b"[0]")));
    let foreign = store.root().join("commits").join("notes.txt");
    std::fs::write(&foreign, b"mine").unwrap();
    for n in 1..=12u32 {
        let payload = format!("[{n}]");
        published(&run_with_timeout(refresh(&store, "p", payload.as_bytes())));
    }
    let mut records: Vec<u64> = store
        .files_in("commits")
        .iter()
        .filter_map(|n| n.parse().ok())
        .collect();
    records.sort_unstable();
    assert_eq!(
        records,
        (6..=13).collect::<Vec<u64>>(),
        "the 8 newest records"
    );
    assert!(foreign.exists(), "a foreign name in commits/ is left alone");
    let (_, verify) = store.json(&["verify"]);
    let listed: Vec<&str> = verify["foreign"]
        .as_array()
        .expect("foreign")
        .iter()
        .filter_map(|f| f["path"].as_str())
        .collect();
    assert!(
        listed.len() == 1 && listed[0].ends_with("commits/notes.txt"),
        "verify lists it as foreign, and no record: {verify}"
    );
}

/// Reproduced first: one commit record beyond a gap (here a clear's record
/// at 1000 after record 1; a copy, a restore or a hand edit leaves such a
/// thing) is never reached by readers, who follow records one by one from
/// `current`, but every writer numbered its commit 2, found 1000 higher and
/// reported a commit conflict, on every retry, for good. A record name
/// beyond 2^63 did the same, with no number left after it. Now writers
/// number their commits past the orphan, keep the history readers see, and
/// a name beyond 2^63 is a foreign file.
#[test]
fn a_commit_record_beyond_a_gap_does_not_make_every_write_conflict() {
    for orphan in ["1000", "9223372036854775809", "18446744073709551615"] {
        let store = TestStore::new();
        published(&run_with_timeout(refresh(&store, "p1", b"[1]")));
        let path = store.root().join("commits").join(orphan);
        std::fs::write(&path, b"snapcache-cleared 1\n").unwrap();
        make_owner_writable(&path);
        assert_eq!(store.show(), b"[1]", "{orphan}: readers never reach it");
        for n in 2..=3u32 {
            let payload = format!("[{n}]");
            let out = run_with_timeout(refresh(&store, "p", payload.as_bytes()));
            assert_eq!(code(&out), 0, "{orphan}: {}", text(&out.stderr));
            assert_eq!(store.show(), payload.as_bytes(), "{orphan}");
        }
        assert_eq!(generations(&store), (vec![1, 2, 3], Some(3)), "{orphan}");
        assert!(path.exists(), "{orphan}: left in place");
        let (_, verify) = store.json(&["verify"]);
        assert_eq!(verify["ok"], true, "{orphan}: {verify}");
        let foreign = verify["foreign"].to_string();
        if orphan == "1000" {
            let records = store.files_in("commits");
            assert!(
                records.iter().any(|r| r == "1001") && records.iter().any(|r| r == "1002"),
                "numbered past it: {records:?}"
            );
        } else {
            assert!(foreign.contains(orphan), "{orphan}: foreign: {verify}");
        }
    }
}

#[test]
fn on_the_lease_backend_a_dropped_generation_keeps_its_snapshot_for_the_grace_period() {
    let hashes = |bytes: &[&[u8]]| bytes.iter().map(|b| hash_hex(b)).collect::<Vec<_>>();
    let payloads: [&[u8]; 3] = [b"[1]", b"[2]", b"[3]"];
    let body = |store: &TestStore| -> Value {
        let text = std::fs::read_to_string(pointer_path(store)).unwrap();
        serde_json::from_str(text.lines().nth(1).unwrap()).unwrap()
    };

    // Lease backend, keep 1: generation 1 leaves retention at the third
    // publish, but its snapshot stays (a reader elsewhere may be reading it),
    // recorded in the pointer's `dropped` list; gc keeps it too.
    let lease = TestStore::new();
    for (i, p) in payloads.iter().enumerate() {
        let mut cmd = refresh(&lease, &format!("l{i}"), p);
        cmd.env("SNAPCACHE_KEEP", "1");
        published(&run_with_timeout(cmd));
    }
    assert_eq!(generations(&lease).0, vec![2, 3]);
    let pointer = body(&lease);
    assert_eq!(pointer["dropped"][0]["hash"], hash_hex(b"[1]"), "{pointer}");
    assert!(pointer["dropped"][0]["dropped_at"].is_string(), "{pointer}");
    let mut expected = hashes(&payloads);
    expected.sort();
    assert_eq!(
        lease.files_in("snapshots"),
        expected,
        "kept for the grace period"
    );
    let out = run_with_timeout(nolock(&lease, &["gc"]));
    assert_eq!(code(&out), 0, "gc: {}", text(&out.stderr));
    assert_eq!(
        lease.files_in("snapshots"),
        expected,
        "gc respects the grace period"
    );
    assert_eq!(lease.ok(&["show", "--generation", "3"]).stdout, b"[3]");

    // The advisory backend keeps its fast path: deleted at once, no list.
    let advisory = TestStore::new();
    for p in payloads {
        let mut cmd = advisory.command(&["refresh", "--from"]);
        cmd.arg(advisory.payload("a", p)).env("SNAPCACHE_KEEP", "1");
        assert_eq!(code(&run_with_timeout(cmd)), 0);
    }
    advisory.ok(&["gc"]);
    let mut expected = hashes(&payloads[1..]);
    expected.sort();
    assert_eq!(
        advisory.files_in("snapshots"),
        expected,
        "gc removes it at once"
    );
    assert!(body(&advisory).get("dropped").is_none());
    assert!(
        advisory.files_in("commits").is_empty(),
        "no records on the advisory backend"
    );
}

#[test]
fn a_writer_stalled_across_a_clear_cannot_bring_the_old_history_back() {
    if !std::path::Path::new("/proc/self/stat").exists() {
        eprintln!("skipped: no /proc to see a stopped process");
        return;
    }
    let store = TestStore::new();
    for (n, payload) in [(1, b"[1]"), (2, b"[2]")] {
        let out = published(&run_with_timeout(refresh(&store, "p", payload)));
        assert_eq!(out["generation"], n);
    }

    // A stops between its last lease check and its commit.
    let mut a = refresh(&store, "pa", b"[\"from A\"]");
    a.env("SNAPCACHE_TEST_STOP_BEFORE_COMMIT", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let a = a.spawn().expect("spawn A");
    let pid = a.id();
    let mut reaper = KillOnDrop(Some(pid));
    wait_for(
        "writer A to stop before its commit",
        Duration::from_secs(30),
        || (process_state(pid) == Some('T')).then_some(()),
    );

    // B takes over once A's lease expired and clears the store.
    let out = run_with_timeout(nolock(&store, &["clear", "--lock-timeout", "30"]));
    let cleared = published(&out);
    assert_eq!(cleared["previous_generation"], 2, "{cleared}");

    // A resumes: the clear was a commit, so A's commit conflicts.
    let cont = rustix::process::Pid::from_raw(pid as i32).expect("pid");
    rustix::process::kill_process(cont, rustix::process::Signal::CONT).expect("SIGCONT");
    let out = wait_output(a, COMMAND_TIMEOUT);
    reaper.0 = None;
    let stderr = text(&out.stderr);
    assert_eq!(code(&out), 1, "A must fail: {stderr}");
    let error: Value = serde_json::from_slice(&out.stdout).expect("one JSON error");
    assert_eq!(error["error"]["kind"], "commit-conflict", "{error}");
    assert!(
        stderr.contains("cleared the store") && stderr.contains("nothing was published"),
        "A says why: {stderr}"
    );

    // Nothing came back: the store reads as cleared.
    assert!(!pointer_path(&store).exists(), "no pointer reappeared");
    let (out, show) = store.json(&["show"]);
    assert_eq!(code(&out), 1);
    assert_eq!(show["error"]["kind"], "no-store", "{show}");
    let (_, status) = store.json(&["status"]);
    assert!(status["generation"].is_null(), "{status}");

    // The next publish starts a new history, numbered from 1, and its
    // commit goes on after the clear's record.
    let next = published(&run_with_timeout(refresh(&store, "pn", b"[\"new\"]")));
    assert_eq!(next["generation"], 1, "{next}");
    assert_eq!(generations(&store), (vec![1], Some(1)));
    assert_eq!(store.show(), b"[\"new\"]");
    let mut records: Vec<u64> = store
        .files_in("commits")
        .iter()
        .filter_map(|n| n.parse().ok())
        .collect();
    records.sort_unstable();
    assert_eq!(records, [1, 2, 3, 4], "2 commits, the clear, the new one");
    assert_eq!(
        std::fs::read(store.root().join("commits").join("3")).unwrap(),
        b"snapcache-cleared 1\n"
    );
    let (out, verify) = store.json(&["verify"]);
    assert_eq!(code(&out), 0, "verify: {verify}");
}

#[test]
fn a_clear_that_did_not_remove_the_pointer_is_finished_by_the_next_writer() {
    // A clearer that crashed (or stalled) right after its record: the
    // record is the truth, so readers see nothing published and the next
    // writer removes the pointer before it goes on.
    let store = TestStore::new();
    published(&run_with_timeout(refresh(&store, "p1", b"[1]")));
    let pointer = std::fs::read(pointer_path(&store)).unwrap();
    let out = run_with_timeout(nolock(&store, &["clear"]));
    published(&out);
    std::fs::write(pointer_path(&store), &pointer).unwrap();
    let (out, show) = store.json(&["show"]);
    assert_eq!(code(&out), 1, "the clear's record is the truth: {show}");
    assert_eq!(show["error"]["kind"], "no-store", "{show}");
    let next = published(&run_with_timeout(refresh(&store, "p2", b"[2]")));
    assert_eq!(next["generation"], 1, "{next}");
    assert_eq!(store.show(), b"[2]");
    assert_eq!(generations(&store), (vec![1], Some(1)));
}
