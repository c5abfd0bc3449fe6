//! Generation management: `forget` drops chosen generations and their
//! snapshots (never the current one; content still referenced stays).

use crate::common::*;

pub(crate) fn retained(store: &TestStore) -> Vec<u64> {
    let (out, history) = store.json(&["history"]);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    history["generations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["generation"].as_u64().unwrap())
        .collect()
}

#[test]
fn forget_drops_the_generation_and_removes_its_snapshot() {
    let store = TestStore::new();
    let first = json_payload(400, 1);
    for i in 1..=3u64 {
        store.refresh(&json_payload(400, i), &[]);
    }
    assert_eq!(store.files_in("snapshots").len(), 3);
    let (out, report) = store.json(&["forget", "1", "2"]);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    assert_eq!(report["forgotten"], serde_json::json!([1, 2]));
    assert_eq!(report["removed_snapshots"], 2);
    let freed = (json_payload(400, 1).len() + json_payload(400, 2).len()) as u64;
    assert_eq!(report["freed_bytes"].as_u64(), Some(freed), "{report}");
    assert_eq!(retained(&store), vec![3]);
    let snapshots = store.files_in("snapshots");
    assert_eq!(snapshots, vec![hash_hex(&json_payload(400, 3))]);
    assert!(!snapshots.contains(&hash_hex(&first)));
    // The store is still whole: the current snapshot reads and verifies.
    assert_eq!(store.show(), json_payload(400, 3));
    store.ok(&["verify"]);
}

#[test]
fn forget_keeps_a_snapshot_still_referenced_by_a_retained_generation() {
    let store = TestStore::new();
    let a = json_payload(300, 1);
    store.refresh(&a, &[]);
    store.refresh(&json_payload(300, 2), &[]);
    store.refresh(&a, &[]); // generation 3: same content as 1 (deduplicated)
    assert_eq!(retained(&store), vec![1, 2, 3]);
    let (out, report) = store.json(&["forget", "1"]);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    assert_eq!(report["forgotten"], serde_json::json!([1]));
    assert_eq!(report["removed_snapshots"], 0, "3 still references it");
    assert_eq!(retained(&store), vec![2, 3]);
    assert!(store.files_in("snapshots").contains(&hash_hex(&a)));
    assert_eq!(store.show(), a);
}

#[test]
fn forget_refuses_the_current_generation_and_unknown_ones_and_changes_nothing() {
    let store = TestStore::new();
    store.refresh(&json_payload(300, 1), &[]);
    store.refresh(&json_payload(300, 2), &[]);
    let before = store.fingerprint();
    let out = store.run(&["forget", "1", "2"]);
    assert_eq!(code(&out), 1);
    let err = text(&out.stderr);
    assert!(
        err.contains("generation 2") && err.contains("current"),
        "{err}"
    );
    let out = store.run(&["forget", "9"]);
    assert_eq!(code(&out), 1);
    let err = text(&out.stderr);
    assert!(err.contains("generation 9 is not retained"), "{err}");
    assert_eq!(
        store.fingerprint(),
        before,
        "a refused forget changes nothing"
    );
    assert_eq!(
        code(&store.run(&["forget"])),
        2,
        "no number is a usage error"
    );
}

#[test]
fn on_the_lease_backend_a_forgotten_snapshot_waits_out_the_grace_period() {
    let store = TestStore::new();
    let lease = |args: &[&str]| {
        let mut all = vec!["--lock-backend", "lease"];
        all.extend_from_slice(args);
        all.iter().map(|s| s.to_string()).collect::<Vec<_>>()
    };
    for i in 1..=2u64 {
        let file = store.payload("p.json", &json_payload(300, i));
        let args = lease(&["refresh", "--from", file.to_str().unwrap()]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        store.ok(&args);
    }
    let args = lease(&["forget", "1"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (out, report) = store.json(&args);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    assert_eq!(report["forgotten"], serde_json::json!([1]));
    assert_eq!(report["removed_snapshots"], 0, "still in its grace period");
    assert_eq!(retained(&store), vec![2]);
    assert!(
        store
            .files_in("snapshots")
            .contains(&hash_hex(&json_payload(300, 1))),
        "a reader on another host may still be reading it"
    );
    let pointer = std::fs::read_to_string(pointer_path(&store)).unwrap();
    assert!(
        pointer.contains(&format!(
            "\"dropped\":[{{\"hash\":\"{}\"",
            hash_hex(&json_payload(300, 1))
        )),
        "{pointer}"
    );
}

pub(crate) fn days_ago(days: u64) -> String {
    let t = std::time::SystemTime::now() - std::time::Duration::from_secs(days * 86_400);
    humantime::format_rfc3339_millis(t).to_string()
}

/// Four generations created 40, 35, 20 and 1 days ago; 4 is current.
pub(crate) fn store_with_dated_generations() -> TestStore {
    let store = TestStore::new();
    for i in 1..=4u64 {
        store.refresh(&json_payload(300, i), &[]);
    }
    crate::clocks::edit_pointer(&store, |body| {
        for (g, days) in body["generations"]
            .as_array_mut()
            .unwrap()
            .iter_mut()
            .zip([40, 35, 20, 1])
        {
            g["created_at"] = days_ago(days).into();
        }
    });
    store
}

#[test]
fn gc_older_than_keeps_the_generation_current_at_the_cutoff() {
    let store = store_with_dated_generations();
    // Cutoff 30 days ago: 1 and 2 are older; 2 was current then and stays.
    let (out, report) = store.json(&["gc", "--older-than", "30days"]);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    assert_eq!(report["dropped_generations"], serde_json::json!([1]));
    assert_eq!(report["removed_snapshots"], 1);
    assert_eq!(retained(&store), vec![2, 3, 4]);
    assert!(
        !store
            .files_in("snapshots")
            .contains(&hash_hex(&json_payload(300, 1)))
    );
    // Rolling back to what was current 30 days ago still works.
    store.ok(&["rollback", "--to", "2"]);
    assert_eq!(store.show(), json_payload(300, 2));
}

#[test]
fn gc_older_than_never_drops_the_current_one_and_combines_with_keep() {
    let store = store_with_dated_generations();
    store.ok(&["rollback", "--to", "1"]);
    // Cutoff 10 days ago: 1, 2, 3 are older; 3 was current then, 1 is current now.
    let (out, report) = store.json(&["gc", "--older-than", "10d"]);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    assert_eq!(report["dropped_generations"], serde_json::json!([2]));
    assert_eq!(retained(&store), vec![1, 3, 4]);
    let (out, report) = store.json(&["gc", "--older-than", "10d", "--keep", "1"]);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    assert_eq!(report["dropped_generations"], serde_json::json!([3]));
    assert_eq!(retained(&store), vec![1, 4]);
}

#[test]
fn gc_older_than_dry_run_changes_nothing_and_bad_durations_are_usage_errors() {
    let store = store_with_dated_generations();
    let before = store.fingerprint();
    let (out, report) = store.json(&["gc", "--older-than", "30d", "--dry-run"]);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    assert_eq!(report["dropped_generations"], serde_json::json!([1]));
    assert_eq!(report["removed_snapshots"], 1);
    assert_eq!(report["dry_run"], true);
    assert_eq!(store.fingerprint(), before, "a dry run changes nothing");
    for bad in ["soon", "-1d", "2000000000s"] {
        let out = store.run(&["gc", "--older-than", bad]);
        assert_eq!(code(&out), 2, "{bad}: {}", text(&out.stderr));
    }
    assert_eq!(store.fingerprint(), before);
}
