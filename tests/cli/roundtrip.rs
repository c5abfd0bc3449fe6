//! Round trips, dedup, history, rollback, gc and verify through the CLI.

use crate::common::*;

const SAMPLE: &[u8] = include_bytes!("../../samples/kopi-metadata.json");

#[test]
fn show_returns_exactly_the_published_json_bytes() {
    let store = TestStore::new();
    let outcome = store.refresh(SAMPLE, &[]);
    assert_eq!(outcome["generation"], 1);
    assert_eq!(outcome["bytes"], SAMPLE.len());
    assert_eq!(outcome["hash"], hash_hex(SAMPLE));
    assert_eq!(outcome["changed"], true);
    assert_eq!(outcome["skipped"], false);
    assert!(outcome["waited_ms"].is_u64());
    assert_eq!(
        store.show(),
        SAMPLE,
        "show must return the published bytes unchanged"
    );
}

#[test]
fn show_returns_exactly_the_published_binary_bytes_with_raw() {
    let store = TestStore::new();
    let binary: Vec<u8> = (0..300_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let out = store.run(&[
        "refresh",
        "--from",
        store.payload("bin", &binary).to_str().unwrap(),
    ]);
    assert_eq!(
        code(&out),
        65,
        "binary bytes are not JSON: rejected without --raw"
    );
    store.refresh(&binary, &["--raw"]);
    assert_eq!(
        store.show(),
        binary,
        "binary payload must round-trip byte for byte"
    );
}

#[test]
fn stdin_is_a_source() {
    let store = TestStore::new();
    let mut cmd = store.command(&["refresh", "--from", "-"]);
    cmd.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"{\"from\":\"stdin\"}")
        .unwrap();
    let out = wait_output(child, COMMAND_TIMEOUT);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    assert_eq!(store.show(), b"{\"from\":\"stdin\"}");
}

#[test]
fn identical_content_makes_no_new_generation_and_reuses_snapshots() {
    let store = TestStore::new();
    let a = json_payload(10_000, 1);
    let b = json_payload(10_000, 2);
    let first = store.refresh(&a, &[]);
    let again = store.refresh(&a, &[]);
    assert_eq!(again["changed"], false, "same content: changed=false");
    assert_eq!(
        again["generation"], first["generation"],
        "same content: no new generation"
    );
    let (_, status1) = store.json(&["status"]);
    assert!(
        status1["checked_at"].as_str() >= first_created(&store).as_deref(),
        "checked_at moves on"
    );

    store.refresh(&b, &[]);
    let back_to_a = store.refresh(&a, &[]);
    assert_eq!(back_to_a["generation"], 3, "A, B, A is three generations");
    assert_eq!(
        store.files_in("snapshots").len(),
        2,
        "A's snapshot is stored once (dedup)"
    );
    assert_eq!(store.show(), a);
}

fn first_created(store: &TestStore) -> Option<String> {
    let (_, h) = store.json(&["history"]);
    h["generations"][0]["created_at"]
        .as_str()
        .map(str::to_string)
}

#[test]
fn history_rollback_and_numbering() {
    let store = TestStore::new();
    for i in 1..=3u64 {
        store.refresh(&json_payload(500, i), &["--note", &format!("payload {i}")]);
    }
    let (_, history) = store.json(&["history"]);
    let gens = history["generations"].as_array().unwrap();
    assert_eq!(gens.len(), 3);
    for (i, g) in gens.iter().enumerate() {
        assert_eq!(g["generation"], i as u64 + 1);
        assert_eq!(g["current"], i == 2, "only the newest is current");
        assert_eq!(g["note"], format!("payload {}", i + 1));
        assert_eq!(g["hash"], hash_hex(&json_payload(500, i as u64 + 1)));
        assert!(
            g["created_at"].as_str().unwrap().ends_with('Z'),
            "RFC 3339 UTC"
        );
    }

    let (out, rolled) = store.json(&["rollback"]);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    assert_eq!(rolled["generation"], 2);
    assert_eq!(rolled["hash"], hash_hex(&json_payload(500, 2)));
    assert_eq!(store.show(), json_payload(500, 2));

    let (_, rolled) = store.json(&["rollback", "--to", "1"]);
    assert_eq!(rolled["generation"], 1);
    assert_eq!(store.show(), json_payload(500, 1));

    let out = store.run(&["rollback"]);
    assert_eq!(code(&out), 1, "nothing earlier than generation 1");
    assert!(
        text(&out.stderr).contains("oldest retained generation"),
        "{}",
        text(&out.stderr)
    );

    let out = store.run(&["rollback", "--to", "9"]);
    assert_eq!(code(&out), 1);
    assert!(
        text(&out.stderr).contains("generation 9 is not retained"),
        "{}",
        text(&out.stderr)
    );

    let next = store.refresh(&json_payload(500, 4), &[]);
    assert_eq!(
        next["generation"], 4,
        "after a rollback the next refresh gets max+1, numbers never reused"
    );
    let out = store.ok(&["show", "--generation", "3"]);
    assert_eq!(
        out.stdout,
        json_payload(500, 3),
        "show --generation reads a retained generation"
    );
}

#[test]
fn retention_keeps_the_newest_generations_plus_the_current_one() {
    let store = TestStore::new();
    for i in 1..=4u64 {
        store.refresh(&json_payload(300, i), &[]);
    }
    store.ok(&["rollback", "--to", "1"]);
    let mut cmd = store.command(&[
        "--json",
        "refresh",
        "--from",
        store.payload("p5", &json_payload(300, 5)).to_str().unwrap(),
    ]);
    cmd.env("SNAPCACHE_KEEP", "2");
    let out = run_with_timeout(cmd);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    let (_, history) = store.json(&["history"]);
    let numbers: Vec<u64> = history["generations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["generation"].as_u64().unwrap())
        .collect();
    assert_eq!(
        numbers,
        vec![3, 4, 5],
        "SNAPCACHE_KEEP=2 keeps current 5 and the two newest others, 3 and 4"
    );
}

#[test]
fn gc_removes_only_unreferenced_files_and_dry_run_changes_nothing() {
    let store = TestStore::new();
    store.refresh(&json_payload(1000, 1), &[]);
    store.refresh(&json_payload(1000, 2), &[]);
    let orphan = store.root().join("snapshots").join(hash_hex(b"orphan"));
    std::fs::write(&orphan, b"orphan").unwrap();
    std::fs::write(
        store.root().join("tmp").join(".snapcache-4242-leftover"),
        b"0123456789",
    )
    .unwrap();
    // Not snapcache's name: foreign, never counted, never removed.
    std::fs::write(store.root().join("tmp").join("leftover"), b"0123456789").unwrap();
    let before = store.fingerprint();

    let (_, dry) = store.json(&["gc", "--dry-run"]);
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["removed_snapshots"], 1);
    assert_eq!(dry["removed_temp_files"], 1);
    assert_eq!(dry["freed_bytes"], 16);
    assert_eq!(store.fingerprint(), before, "a dry run changes nothing");
    assert!(orphan.exists());

    let (_, report) = store.json(&["gc"]);
    assert_eq!(report["dry_run"], false);
    assert_eq!(report["removed_snapshots"], 1);
    assert_eq!(report["removed_temp_files"], 1);
    assert_eq!(report["freed_bytes"], 16);
    assert!(!orphan.exists(), "the unreferenced snapshot is gone");
    assert_eq!(
        store.files_in("tmp"),
        vec!["leftover".to_string()],
        "only the foreign file is left in tmp/"
    );
    assert_eq!(
        store.files_in("snapshots").len(),
        2,
        "retained snapshots stay"
    );

    let (_, rolled) = store.json(&["rollback"]);
    assert_eq!(rolled["generation"], 1, "rollback after gc still works");
    assert_eq!(store.show(), json_payload(1000, 1));
}

#[test]
fn gc_keep_shrinks_retention_to_one_rollback_target() {
    let store = TestStore::new();
    for i in 1..=4u64 {
        store.refresh(&json_payload(200, i), &[]);
    }
    let (_, report) = store.json(&["gc", "--keep", "1"]);
    assert_eq!(report["removed_snapshots"], 2, "{report}");
    assert_eq!(report["dropped_generations"], serde_json::json!([1, 2]));
    let (_, history) = store.json(&["history"]);
    assert_eq!(history["generations"].as_array().unwrap().len(), 2);
    let (_, rolled) = store.json(&["rollback"]);
    assert_eq!(rolled["generation"], 3, "one rollback target is left");
    assert_eq!(store.show(), json_payload(200, 3));
    let out = store.run(&["rollback"]);
    assert_eq!(code(&out), 1, "nothing earlier than 3 is retained");
}

#[test]
fn verify_reports_damage_and_leftovers_without_changing_anything() {
    let store = TestStore::new();
    store.refresh(&json_payload(2000, 1), &[]);
    store.refresh(&json_payload(2000, 2), &[]);
    let (out, report) = store.json(&["verify"]);
    assert_eq!(code(&out), 0);
    assert_eq!(report["ok"], true);
    assert_eq!(report["problems"].as_array().unwrap().len(), 0);

    std::fs::write(store.root().join("tmp").join(".snapcache-7-stray"), b"x").unwrap();
    std::fs::write(store.root().join("tmp").join("stray"), b"x").unwrap();
    let damaged = store
        .root()
        .join("snapshots")
        .join(hash_hex(&json_payload(2000, 1)));
    make_owner_writable(&damaged);
    std::fs::write(&damaged, json_payload(2000, 9)).unwrap();
    let before = store.fingerprint();
    let (out, report) = store.json(&["verify"]);
    assert_eq!(code(&out), 1, "a damaged retained snapshot fails verify");
    assert_eq!(report["ok"], false);
    let problems = report["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0]["path"], damaged.to_str().unwrap());
    assert!(problems[0]["kind"] == "hash" || problems[0]["kind"] == "length");
    assert!(problems[0]["detail"].as_str().unwrap().len() > 10);
    assert_eq!(
        report["reclaimable"].as_array().unwrap().len(),
        1,
        "the stray temp file is reclaimable, not a problem"
    );
    let foreign = report["foreign"].as_array().unwrap();
    assert_eq!(foreign.len(), 1, "{report}");
    assert_eq!(
        foreign[0]["path"],
        store.root().join("tmp").join("stray").to_str().unwrap()
    );
    assert_eq!(foreign[0]["what"], "file");
    assert_eq!(store.fingerprint(), before, "verify changes nothing");
    assert_eq!(
        store.show(),
        json_payload(2000, 2),
        "the intact current generation still reads"
    );
}

#[test]
fn status_reports_the_current_generation_and_a_free_lock() {
    let store = TestStore::new();
    let (out, empty) = store.json(&["status"]);
    assert_eq!(code(&out), 0, "status of an empty store is not an error");
    assert_eq!(empty["generation"], serde_json::Value::Null);
    let outcome = store.refresh(&json_payload(100, 1), &[]);
    let (_, status) = store.json(&["status"]);
    for key in [
        "store",
        "generation",
        "hash",
        "bytes",
        "created_at",
        "checked_at",
        "lock",
    ] {
        assert!(status.get(key).is_some(), "status --json has {key}");
    }
    assert_eq!(status["generation"], outcome["generation"]);
    assert_eq!(status["hash"], outcome["hash"]);
    assert_eq!(status["lock"]["held"], false);
    let human = text(&store.ok(&["status"]).stdout);
    assert!(human.contains("lock:       free"), "{human}");
}

#[test]
fn new_stores_are_owner_only_and_snapshots_read_only() {
    use std::os::unix::fs::PermissionsExt;
    let store = TestStore::new();
    let outcome = store.refresh(b"[1]", &[]);
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&store.root()), 0o700);
    assert_eq!(mode(&store.root().join("snapshots")), 0o700);
    assert_eq!(mode(&store.root().join("tmp")), 0o700);
    assert_eq!(mode(&store.root().join("current")), 0o600);
    assert_eq!(mode(&store.root().join("lock")), 0o600);
    let snap = store
        .root()
        .join("snapshots")
        .join(outcome["hash"].as_str().unwrap());
    assert_eq!(mode(&snap), 0o400, "published snapshots are read-only");
}

#[test]
fn reads_work_on_a_read_only_store() {
    let store = TestStore::new();
    store.refresh(b"{\"ro\":1}", &[]);
    set_tree_read_only(&store.root(), true);
    let out = store.run(&["show"]);
    let status = store.run(&["--json", "status"]);
    let verify = store.run(&["verify"]);
    set_tree_read_only(&store.root(), false);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    assert_eq!(out.stdout, b"{\"ro\":1}");
    assert_eq!(code(&status), 0, "{}", text(&status.stderr));
    assert_eq!(code(&verify), 0, "{}", text(&verify.stderr));
}

fn set_tree_read_only(root: &std::path::Path, read_only: bool) {
    use std::os::unix::fs::PermissionsExt;
    let mode = if read_only { 0o500 } else { 0o700 };
    for dir in [root.join("snapshots"), root.join("tmp"), root.to_path_buf()] {
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode)).unwrap();
    }
}
