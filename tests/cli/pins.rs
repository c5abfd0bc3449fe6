//! `pin` / `unpin`: a pinned generation survives retention, `gc --keep` and
//! `gc --older-than`, is refused by `forget`, shown by `history` and
//! `status`, and goes with `clear`; pins count inside the retention bound.

use serde_json::{Value, json};

use crate::clocks::edit_pointer;
use crate::common::*;
use crate::generations::{retained, store_with_dated_generations};

/// Publishes `bytes` with `SNAPCACHE_KEEP=keep` (retention of every publish).
fn refresh_keeping(store: &TestStore, bytes: &[u8], keep: u32) {
    let file = store.payload("keep.json", bytes);
    let mut cmd = store.command(&["refresh", "--from", file.to_str().unwrap()]);
    cmd.env("SNAPCACHE_KEEP", keep.to_string());
    let out = run_with_timeout(cmd);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
}

fn pinned_in_history(store: &TestStore) -> Vec<u64> {
    let (out, history) = store.json(&["history"]);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    let entries = history["generations"].as_array().unwrap();
    for entry in entries {
        assert!(entry["pinned"].is_boolean(), "every entry says: {entry}");
    }
    entries
        .iter()
        .filter(|e| e["pinned"] == true)
        .map(|e| e["generation"].as_u64().unwrap())
        .collect()
}

/// The pointer's body with its commit number blanked (every write adds one).
fn body_without_commit(store: &TestStore) -> String {
    let text = std::fs::read_to_string(pointer_path(store)).unwrap();
    let body = text.split_once('\n').unwrap().1;
    let at = body.find("\"commit\":").expect("a commit number");
    let digits = body[at + 9..].find(|c: char| !c.is_ascii_digit()).unwrap();
    format!("{}\"commit\":_{}", &body[..at], &body[at + 9 + digits..])
}

#[test]
fn a_pinned_generation_survives_keep_1_publishes_and_shows_in_history() {
    let store = TestStore::new();
    for i in 1..=3u64 {
        store.refresh(&json_payload(300, i), &[]);
    }
    let (out, report) = store.json(&["pin", "1"]);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    assert_eq!(
        report,
        json!({"generations": [1], "changed": true, "pinned": [1]})
    );
    for i in 4..=6u64 {
        refresh_keeping(&store, &json_payload(300, i), 1);
    }
    assert_eq!(retained(&store), vec![1, 5, 6], "the pin plus keep 1");
    assert_eq!(pinned_in_history(&store), vec![1]);
    let human = text(&store.ok(&["history"]).stdout);
    let row = |n: &str| {
        human
            .lines()
            .find(|l| l.split_whitespace().find(|w| *w != "*") == Some(n))
            .unwrap_or_else(|| panic!("no row {n}: {human}"))
            .to_string()
    };
    assert!(row("1").contains("pinned"), "{human}");
    assert!(!row("5").contains("pinned"), "{human}");
    assert!(human.lines().next().unwrap().contains("pin"), "{human}");
    let (_, status) = store.json(&["status"]);
    assert_eq!(
        (status["pinned"].as_u64(), status["retained"].as_u64()),
        (Some(1), Some(3))
    );
    // Its snapshot is still there: it reads, and a rollback to it works.
    assert_eq!(
        store.ok(&["show", "--generation", "1"]).stdout,
        json_payload(300, 1)
    );
    store.ok(&["rollback", "--to", "1"]);
    assert_eq!(store.show(), json_payload(300, 1));
    store.ok(&["verify"]);
}

#[test]
fn an_unpinned_generation_goes_at_the_next_publish() {
    let store = TestStore::new();
    for i in 1..=3u64 {
        store.refresh(&json_payload(300, i), &[]);
    }
    store.ok(&["pin", "1"]);
    let (out, report) = store.json(&["unpin", "1"]);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    assert_eq!(
        report,
        json!({"generations": [1], "changed": true, "pinned": []})
    );
    // Still retained until retention runs again.
    assert_eq!(retained(&store), vec![1, 2, 3]);
    refresh_keeping(&store, &json_payload(300, 4), 1);
    assert_eq!(retained(&store), vec![3, 4]);
    // Its snapshot goes at the next write's sweep, as any dropped one's.
    store.ok(&["gc"]);
    assert!(
        !store
            .files_in("snapshots")
            .contains(&hash_hex(&json_payload(300, 1)))
    );
}

#[test]
fn the_current_generation_can_be_pinned_and_stays_once_pushed_out() {
    let store = TestStore::new();
    store.refresh(&json_payload(300, 1), &[]);
    store.refresh(&json_payload(300, 2), &[]);
    store.ok(&["pin", "2"]);
    for i in 3..=5u64 {
        refresh_keeping(&store, &json_payload(300, i), 1);
    }
    assert_eq!(retained(&store), vec![2, 4, 5]);
    assert_eq!(pinned_in_history(&store), vec![2]);
}

#[test]
fn pin_and_unpin_twice_succeed_without_a_write() {
    let store = TestStore::new();
    store.refresh(&json_payload(300, 1), &[]);
    store.refresh(&json_payload(300, 2), &[]);
    store.ok(&["pin", "1"]);
    let before = store.fingerprint();
    let (out, report) = store.json(&["pin", "1"]);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    assert_eq!(
        report,
        json!({"generations": [1], "changed": false, "pinned": [1]})
    );
    let out = store.ok(&["pin", "1"]);
    assert!(
        text(&out.stdout).contains("already pinned"),
        "{}",
        text(&out.stdout)
    );
    let (_, report) = store.json(&["unpin", "2"]);
    assert_eq!(report["changed"], false);
    let out = store.ok(&["unpin", "2"]);
    assert!(
        text(&out.stdout).contains("not pinned"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(store.fingerprint(), before, "nothing was written");
}

#[test]
fn gc_keep_spares_pinned_generations() {
    let store = TestStore::new();
    for i in 1..=4u64 {
        store.refresh(&json_payload(300, i), &[]);
    }
    store.ok(&["pin", "1"]);
    let (out, report) = store.json(&["gc", "--keep", "1"]);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    assert_eq!(report["dropped_generations"], json!([2]));
    assert_eq!(retained(&store), vec![1, 3, 4]);
    assert!(
        store
            .files_in("snapshots")
            .contains(&hash_hex(&json_payload(300, 1)))
    );
}

#[test]
fn gc_older_than_spares_pinned_generations() {
    // Created 40, 35, 20 and 1 days ago; 4 is current.
    let store = store_with_dated_generations();
    store.ok(&["pin", "1"]);
    // Cutoff 10 days ago: 1, 2, 3 are older; 3 was current then, 1 is pinned.
    let (out, report) = store.json(&["gc", "--older-than", "10d"]);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    assert_eq!(report["dropped_generations"], json!([2]));
    assert_eq!(retained(&store), vec![1, 3, 4]);
    store.ok(&["rollback", "--to", "1"]);
    assert_eq!(store.show(), json_payload(300, 1));
}

#[test]
fn forget_refuses_a_pinned_generation_and_changes_nothing() {
    let store = TestStore::new();
    for i in 1..=3u64 {
        store.refresh(&json_payload(300, i), &[]);
    }
    store.ok(&["pin", "1"]);
    let pointer = std::fs::read(pointer_path(&store)).unwrap();
    let before = store.fingerprint();
    for args in [&["forget", "1"][..], &["forget", "2", "1"]] {
        let out = store.run(args);
        assert_eq!(code(&out), 1, "{args:?}");
        let err = text(&out.stderr);
        assert!(
            err.contains("generation 1") && err.contains("pinned"),
            "{err}"
        );
        assert!(err.contains("hint: run `snapcache unpin 1`"), "{err}");
    }
    let (out, value) = store.json(&["forget", "1"]);
    assert_eq!(code(&out), 1);
    assert_eq!(value["error"]["kind"], "pinned", "{value}");
    assert_eq!(value["error"]["exit_code"], 1);
    assert_eq!(std::fs::read(pointer_path(&store)).unwrap(), pointer);
    assert_eq!(
        store.fingerprint(),
        before,
        "a refused forget changes nothing"
    );
    // Unpinned, it can go.
    store.ok(&["unpin", "1"]);
    store.ok(&["forget", "1"]);
    assert_eq!(retained(&store), vec![2, 3]);
}

#[test]
fn pinning_what_is_not_retained_is_an_error_naming_it_and_the_retained_ones() {
    let store = TestStore::new();
    store.refresh(&json_payload(300, 1), &[]);
    store.refresh(&json_payload(300, 2), &[]);
    let before = store.fingerprint();
    for command in ["pin", "unpin"] {
        let (out, value) = store.json(&[command, "1", "9"]);
        assert_eq!(code(&out), 1, "{command}");
        assert_eq!(value["error"]["kind"], "error", "{value}");
        let message = value["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("generation 9 is not retained") && message.contains("1, 2"),
            "{message}"
        );
        assert!(message.contains("snapcache history"), "{message}");
        assert_eq!(code(&store.run(&[command])), 2, "no N is a usage error");
    }
    assert_eq!(
        store.fingerprint(),
        before,
        "generation 1 was not pinned either"
    );
    // On a missing store: no-store, and nothing is created.
    let missing = TestStore::new();
    let (out, value) = missing.json(&["pin", "1"]);
    assert_eq!(code(&out), 1);
    assert_eq!(value["error"]["kind"], "no-store", "{value}");
    assert!(!missing.root().exists());
}

#[test]
fn clear_removes_pinned_generations_too() {
    let store = TestStore::new();
    store.refresh(&json_payload(300, 1), &[]);
    store.refresh(&json_payload(300, 2), &[]);
    store.ok(&["pin", "1", "2"]);
    store.ok(&["clear"]);
    assert!(store.files_in("snapshots").is_empty());
    store.refresh(&json_payload(300, 3), &[]);
    assert_eq!(retained(&store), vec![1]);
    assert_eq!(pinned_in_history(&store), Vec::<u64>::new());
}

#[test]
fn a_pointer_without_pins_keeps_the_earlier_format() {
    let store = TestStore::new();
    store.refresh(&json_payload(300, 1), &[]);
    store.refresh(&json_payload(300, 2), &[]);
    let pointer = std::fs::read_to_string(pointer_path(&store)).unwrap();
    let body: Value = serde_json::from_str(pointer.split_once('\n').unwrap().1).unwrap();
    for g in body["generations"].as_array().unwrap() {
        let mut keys: Vec<&str> = g.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["bytes", "created_at", "generation", "hash", "note"]);
    }
    let before = body_without_commit(&store);
    store.ok(&["pin", "1"]);
    let pinned = std::fs::read_to_string(pointer_path(&store)).unwrap();
    assert_eq!(pinned.matches("\"pinned\":true").count(), 1, "{pinned}");
    store.ok(&["unpin", "1"]);
    assert_eq!(
        body_without_commit(&store),
        before,
        "pinned and unpinned: the same bytes but the commit number"
    );
}

/// A store whose pointer lists generations 1..=n (all the same snapshot),
/// n current; `pinned` of them pinned from the oldest.
fn store_with_generations(n: u64, pinned: u64) -> TestStore {
    let store = TestStore::new();
    store.refresh(&json_payload(300, 1), &[]);
    edit_pointer(&store, |body| {
        let first = body["generations"][0].clone();
        body["generations"] = (1..=n)
            .map(|i| {
                let mut g = first.clone();
                g["generation"] = i.into();
                if i <= pinned {
                    g["pinned"] = true.into();
                }
                g
            })
            .collect();
        body["current"] = n.into();
        body["last_generation"] = n.into();
    });
    store
}

#[test]
fn many_pins_and_a_small_keep_never_retain_more_than_100_besides_the_current() {
    let store = store_with_generations(101, 0);
    let numbers: Vec<String> = (1..=100).map(|n| n.to_string()).collect();
    let mut args = vec!["pin"];
    args.extend(numbers.iter().map(String::as_str));
    let (out, report) = store.json(&args);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    assert_eq!(report["pinned"].as_array().unwrap().len(), 100);
    // A 101st pin does not fit: refused, nothing changed.
    let before = store.fingerprint();
    let (out, value) = store.json(&["pin", "101"]);
    assert_eq!(code(&out), 1);
    assert_eq!(value["error"]["kind"], "pinned", "{value}");
    let message = value["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("generation 101") && message.contains("100"),
        "{message}"
    );
    assert!(message.contains("snapcache unpin"), "{message}");
    assert_eq!(store.fingerprint(), before);
    // The next publishes keep the 100 pins and the new current one only.
    refresh_keeping(&store, &json_payload(300, 2), 1);
    let kept = retained(&store);
    assert_eq!(kept.len(), 101);
    assert_eq!(kept[..100], (1..=100).collect::<Vec<_>>()[..]);
    assert_eq!(kept[100], 102, "101 left: no room beside 100 pins");
    // Half unpinned: those go, the newest unpinned other takes one place.
    store.ok(&["unpin", "1", "2", "3"]);
    refresh_keeping(&store, &json_payload(300, 3), 5);
    let kept = retained(&store);
    assert_eq!(kept.len(), 101, "{kept:?}");
    assert_eq!(
        kept[..2],
        [2, 3],
        "room for 3 unpinned: 102, 3 and 2; 1 goes"
    );
    assert_eq!(kept[97..], [99, 100, 102, 103]);
    store.ok(&["verify"]);
}

#[test]
fn a_pointer_with_more_pins_than_a_writer_makes_is_brought_back_under_the_bound() {
    // 120 pinned, written by something other than snapcache.
    let store = store_with_generations(121, 120);
    refresh_keeping(&store, &json_payload(300, 2), 1);
    let kept = retained(&store);
    assert_eq!(kept.len(), 101, "{kept:?}");
    assert_eq!(pinned_in_history(&store), (21..=120).collect::<Vec<_>>());
    assert_eq!(*kept.last().unwrap(), 122);
    store.ok(&["verify"]);
}

#[test]
fn on_the_lease_backend_a_pinned_snapshot_never_enters_the_dropped_list() {
    let store = TestStore::new();
    let lease = |args: &[&str]| {
        let mut cmd = store.command(&[&["--lock-backend", "lease"][..], args].concat());
        cmd.env("SNAPCACHE_KEEP", "1");
        let out = run_with_timeout(cmd);
        assert_eq!(code(&out), 0, "{args:?}: {}", text(&out.stderr));
    };
    for i in 1..=3u64 {
        let file = store.payload("p.json", &json_payload(300, i));
        lease(&["refresh", "--from", file.to_str().unwrap()]);
    }
    // keep 1 already dropped 1 at the third publish; pin 2, then publish twice.
    lease(&["pin", "2"]);
    for i in 4..=5u64 {
        let file = store.payload("p.json", &json_payload(300, i));
        lease(&["refresh", "--from", file.to_str().unwrap()]);
    }
    assert_eq!(retained(&store), vec![2, 4, 5]);
    let pointer = std::fs::read_to_string(pointer_path(&store)).unwrap();
    let body: Value = serde_json::from_str(pointer.split_once('\n').unwrap().1).unwrap();
    let dropped: Vec<&str> = body["dropped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["hash"].as_str().unwrap())
        .collect();
    let hash = |i| hash_hex(&json_payload(300, i));
    assert_eq!(dropped, [hash(1), hash(3)], "{pointer}");
    assert!(store.files_in("snapshots").contains(&hash(2)));
}
