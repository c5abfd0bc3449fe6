//! Clocks: a time recorded by a writer whose clock ran ahead counts as an
//! unknown age (tolerance: 60 s, `snapcache::CLOCK_SKEW_TOLERANCE`).

use serde_json::Value;

use crate::common::*;

/// Rewrites the store's pointer body with `edit` (checksum recomputed).
pub fn edit_pointer(store: &TestStore, edit: impl FnOnce(&mut Value)) {
    let path = pointer_path(store);
    let text = String::from_utf8(std::fs::read(&path).unwrap()).unwrap();
    let body = text.split_once('\n').unwrap().1.trim_end();
    let mut body: Value = serde_json::from_str(body).unwrap();
    edit(&mut body);
    write_pointer_with_body(&path, &body.to_string());
}

fn rfc3339(offset_secs: i64) -> String {
    let now = std::time::SystemTime::now();
    let t = if offset_secs >= 0 {
        now + std::time::Duration::from_secs(offset_secs as u64)
    } else {
        now - std::time::Duration::from_secs(offset_secs.unsigned_abs())
    };
    humantime::format_rfc3339_millis(t).to_string()
}

/// A store whose only generation was published (and checked) by a clock
/// one hour ahead.
fn store_from_a_fast_clock() -> TestStore {
    let store = TestStore::new();
    store.refresh(b"[1]", &[]);
    let hour_ahead = rfc3339(3600);
    edit_pointer(&store, |body| {
        body["checked_at"] = hour_ahead.clone().into();
        body["generations"][0]["created_at"] = hour_ahead.clone().into();
    });
    store
}

#[test]
fn max_age_refreshes_when_the_last_refresh_lies_in_the_future() {
    let store = store_from_a_fast_clock();
    let outcome = store.refresh(b"[2]", &["--max-age", "10m"]);
    assert_eq!(outcome["skipped"], false, "{outcome}");
    assert_eq!(outcome["generation"], 2);
    assert_eq!(store.show(), b"[2]");
    // Now the last refresh is on this clock: the next one is skipped.
    let again = store.refresh(b"[3]", &["--max-age", "10m"]);
    assert_eq!(again["skipped"], true, "{again}");
}

#[test]
fn after_an_unchanged_refresh_on_a_correct_clock_max_age_skips_again() {
    let store = store_from_a_fast_clock();
    // Same content: no new generation, but checked on a correct clock.
    let same = store.refresh(b"[1]", &["--max-age", "10m"]);
    assert_eq!(
        (same["skipped"].clone(), same["changed"].clone()),
        (false.into(), false.into())
    );
    let next = store.refresh(b"[2]", &["--max-age", "10m"]);
    assert_eq!(next["skipped"], true, "checked_at is known now: {next}");
    // The generation's own time is still the fast clock's, and says so.
    let (_, status) = store.json(&["status"]);
    assert_eq!(status["created_at_in_future"], true, "{status}");
    assert_eq!(status["checked_at_in_future"], false, "{status}");
    assert!(status["age_seconds"].is_u64(), "{status}");
}

#[test]
fn a_checked_at_alone_in_the_future_also_counts_as_unknown() {
    let store = TestStore::new();
    store.refresh(b"[1]", &[]);
    let ahead = rfc3339(3600);
    edit_pointer(&store, |body| body["checked_at"] = ahead.clone().into());
    let outcome = store.refresh(b"[2]", &["--max-age", "10m"]);
    assert_eq!(outcome["skipped"], false, "{outcome}");
}

#[test]
fn a_clock_slightly_ahead_within_the_tolerance_still_skips() {
    let store = TestStore::new();
    store.refresh(b"[1]", &[]);
    let ahead = rfc3339(20);
    edit_pointer(&store, |body| {
        body["checked_at"] = ahead.clone().into();
        body["generations"][0]["created_at"] = ahead.clone().into();
    });
    let outcome = store.refresh(b"[2]", &["--max-age", "10m"]);
    assert_eq!(outcome["skipped"], true, "{outcome}");
    let (_, status) = store.json(&["status"]);
    assert_eq!(status["checked_at_in_future"], false);
    assert_eq!(status["age_seconds"], 0);
}

#[test]
fn status_and_history_say_a_time_is_in_the_future() {
    let store = store_from_a_fast_clock();
    let (_, status) = store.json(&["status"]);
    assert_eq!(status["checked_at_in_future"], true, "{status}");
    assert_eq!(status["created_at_in_future"], true, "{status}");
    assert!(status["age_seconds"].is_null(), "unknown age: {status}");
    assert!(status["checked_at"].is_string(), "the time is still shown");
    let human = text(&store.ok(&["status"]).stdout);
    assert!(
        human.contains("in the future") && !human.contains("0 s ago"),
        "{human}"
    );

    let (_, history) = store.json(&["history"]);
    let first = &history["generations"][0];
    assert_eq!(first["created_at_in_future"], true, "{history}");
    assert!(first["created_at"].is_string());
    let human = text(&store.ok(&["history"]).stdout);
    assert!(human.contains("created in the future"), "{human}");

    // A correct-clock refresh: the new generation is not in the future.
    store.refresh(b"[2]", &[]);
    let (_, status) = store.json(&["status"]);
    assert_eq!(status["checked_at_in_future"], false);
    assert!(status["age_seconds"].is_u64());
    let (_, history) = store.json(&["history"]);
    assert_eq!(history["generations"][0]["created_at_in_future"], true);
    assert_eq!(history["generations"][1]["created_at_in_future"], false);
}

/// Reproduced first: on tmpfs (and btrfs), which take any mtime, an
/// unreferenced snapshot in a lease store with its mtime at the largest
/// time there is made `verify` panic (`overflow when adding duration to
/// instant`, exit 101) while it worked out the snapshot's grace. Now it is
/// kept for grace "until 9999-12-31", the furthest a time is shown.
#[test]
fn the_largest_mtime_there_is_on_a_snapshot_is_no_panic() {
    let Some(shm) = Some(std::path::Path::new("/dev/shm")).filter(|p| p.is_dir()) else {
        eprintln!(
            "SKIPPED the_largest_mtime_there_is_on_a_snapshot_is_no_panic: no /dev/shm (tmpfs) here to hold such a time"
        );
        return;
    };
    let dir = tempfile::tempdir_in(shm).expect("tempdir in /dev/shm");
    let root = dir.path().join("store");
    let run = |args: &[&str]| {
        let mut cmd = std::process::Command::new(bin());
        cmd.arg("--store")
            .arg(&root)
            .arg("--lock-backend")
            .arg("lease");
        cmd.args(args).env_remove("SNAPCACHE_DIR");
        run_with_timeout(cmd)
    };
    let payload = dir.path().join("p.json");
    std::fs::write(&payload, b"[1]").unwrap();
    let out = run(&["refresh", "--from", payload.to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    let planted = root.join("snapshots").join("a".repeat(64));
    std::fs::write(&planted, b"hi").unwrap();
    let file = std::fs::File::options().write(true).open(&planted).unwrap();
    let latest = std::time::UNIX_EPOCH + std::time::Duration::from_secs(i64::MAX as u64);
    if file.set_modified(latest).is_err()
        || std::fs::metadata(&planted).unwrap().modified().unwrap() != latest
    {
        eprintln!(
            "SKIPPED the_largest_mtime_there_is_on_a_snapshot_is_no_panic: this /dev/shm does not hold the largest mtime"
        );
        return;
    }
    drop(file);
    make_owner_writable(&planted);
    for args in [&["verify"][..], &["--json", "verify"], &["gc"], &["status"]] {
        let out = run(args);
        let stderr = text(&out.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert_eq!(code(&out), 0, "{args:?}: {stderr}");
    }
    let out = run(&["verify"]);
    assert!(
        text(&out.stdout).contains("until 9999-12-31"),
        "{}",
        text(&out.stdout)
    );
    assert!(planted.exists(), "kept for its grace, not removed");
}
