//! Retention: `keep = N` means N generations besides the current one, so
//! `N = 1` always leaves one generation to roll back to.

use crate::common::*;

/// Retained generation numbers, oldest first, and the current one.
fn retained(store: &TestStore) -> (Vec<u64>, u64) {
    let (out, history) = store.json(&["history"]);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    let gens = history["generations"].as_array().unwrap();
    let numbers = gens
        .iter()
        .map(|g| g["generation"].as_u64().unwrap())
        .collect();
    let current = gens
        .iter()
        .find(|g| g["current"] == true)
        .and_then(|g| g["generation"].as_u64())
        .unwrap();
    (numbers, current)
}

/// `refresh` with `SNAPCACHE_KEEP` set.
fn refresh_keeping(store: &TestStore, keep: &str, payload: &[u8]) {
    let file = store.payload("payload.json", payload);
    let mut cmd = store.command(&["refresh", "--from", file.to_str().unwrap()]);
    cmd.env("SNAPCACHE_KEEP", keep);
    let out = run_with_timeout(cmd);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
}

#[test]
fn the_default_keeps_five_generations_besides_the_current_one() {
    let store = TestStore::new();
    for i in 1..=7u64 {
        store.refresh(&json_payload(300, i), &[]);
    }
    let (numbers, current) = retained(&store);
    assert_eq!(numbers, vec![2, 3, 4, 5, 6, 7], "5 + current 7");
    assert_eq!(current, 7);
    // The publish that dropped generation 1 left its snapshot for the next
    // write: verify lists it as reclaimable, never as a problem; each
    // earlier one was removed by the publish after the one that dropped it.
    let dropped = hash_hex(&json_payload(300, 1));
    let (out, report) = store.json(&["verify"]);
    assert_eq!(code(&out), 0, "{report}");
    assert_eq!(report["problems"], serde_json::json!([]), "{report}");
    assert_eq!(
        report["verified_generations"],
        serde_json::json!([2, 3, 4, 5, 6, 7])
    );
    let reclaimable = report["reclaimable"].as_array().unwrap();
    assert_eq!(reclaimable.len(), 1, "{report}");
    assert!(
        reclaimable[0]["path"].as_str().unwrap().ends_with(&dropped),
        "{report}"
    );
    let out = store.ok(&["verify"]);
    assert!(
        text(&out.stdout).contains("awaiting removal by the next write or `snapcache gc`"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(store.files_in("snapshots").len(), 7);
    let (_, gc) = store.json(&["gc"]);
    assert_eq!(gc["removed_snapshots"], 1, "{gc}");
    assert!(!store.files_in("snapshots").contains(&dropped));
    assert_eq!(
        store.files_in("snapshots").len(),
        6,
        "six retained snapshots stay"
    );
    for n in 2..=7u64 {
        let out = store.ok(&["show", "--generation", &n.to_string()]);
        assert_eq!(out.stdout, json_payload(300, n), "generation {n}");
    }
}

#[test]
fn snapcache_keep_1_leaves_exactly_one_rollback_target() {
    let store = TestStore::new();
    for i in 1..=4u64 {
        refresh_keeping(&store, "1", &json_payload(300, i));
    }
    assert_eq!(retained(&store), (vec![3, 4], 4));
    // 1 and 2 dropped: 1's snapshot was removed by the sweep of the publish
    // after the one that dropped it (the 4th), 2's waits for the next write.
    let names = store.files_in("snapshots");
    assert_eq!(names.len(), 3, "{names:?}");
    assert!(
        !names.contains(&hash_hex(&json_payload(300, 1))),
        "{names:?}"
    );
    assert!(
        names.contains(&hash_hex(&json_payload(300, 2))),
        "{names:?}"
    );
    let (out, rolled) = store.json(&["rollback"]);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    assert_eq!(rolled["generation"], 3);
    assert_eq!(store.show(), json_payload(300, 3), "show serves the target");
    let out = store.run(&["rollback"]);
    assert_eq!(code(&out), 1, "only one target was retained");
}

#[test]
fn gc_keep_1_leaves_exactly_one_rollback_target() {
    let store = TestStore::new();
    for i in 1..=6u64 {
        store.refresh(&json_payload(300, i), &[]);
    }
    let (out, report) = store.json(&["gc", "--keep", "1"]);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    assert_eq!(
        report["dropped_generations"],
        serde_json::json!([1, 2, 3, 4])
    );
    assert_eq!(report["removed_snapshots"], 4, "{report}");
    assert_eq!(retained(&store), (vec![5, 6], 6));
    let (_, rolled) = store.json(&["rollback"]);
    assert_eq!(rolled["generation"], 5);
    assert_eq!(store.show(), json_payload(300, 5));
    let (out, report) = store.json(&["verify"]);
    assert_eq!(code(&out), 0, "{report}");
    assert_eq!(report["verified_generations"], serde_json::json!([5, 6]));
}

#[test]
fn after_a_rollback_the_current_stays_with_the_newest_others() {
    let store = TestStore::new();
    for i in 1..=4u64 {
        refresh_keeping(&store, "2", &json_payload(300, i));
    }
    assert_eq!(retained(&store), (vec![2, 3, 4], 4));
    store.ok(&["rollback", "--to", "2"]);
    assert_eq!(
        retained(&store),
        (vec![2, 3, 4], 2),
        "a rollback drops nothing"
    );

    // gc while the current is the oldest: it stays, with the newest other.
    let (_, report) = store.json(&["gc", "--keep", "1"]);
    assert_eq!(report["dropped_generations"], serde_json::json!([3]));
    assert_eq!(retained(&store), (vec![2, 4], 2));
    let out = store.run(&["rollback"]);
    assert_eq!(code(&out), 1, "nothing older than 2 is retained");
    store.ok(&["rollback", "--to", "4"]);
    assert_eq!(store.show(), json_payload(300, 4));
    store.ok(&["rollback", "--to", "2"]);

    // The next publish: current 5 plus the two newest others, 4 and 2.
    refresh_keeping(&store, "2", &json_payload(300, 5));
    assert_eq!(retained(&store), (vec![2, 4, 5], 5));
    store.ok(&["gc"]);
    assert_eq!(store.files_in("snapshots").len(), 3);
}
