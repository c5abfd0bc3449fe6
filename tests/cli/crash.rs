//! Leftovers of crashed writers, and writers killed with SIGKILL.

use std::process::Stdio;
use std::time::Duration;

use crate::common::*;

#[test]
fn planted_temp_files_and_orphan_snapshots_are_removed_by_name_only() {
    let store = TestStore::new();
    store.refresh(b"[1]", &[]);
    let tmp = store.root().join("tmp");
    let snapshots = store.root().join("snapshots");
    // Leftovers: snapcache's names, regular files or symlinks.
    std::fs::write(tmp.join(".snapcache-4242-abcdefabcdef"), b"half a payl").unwrap();
    std::os::unix::fs::symlink("/nonexistent", tmp.join(".snapcache-4242-link")).unwrap();
    let orphan = snapshots.join(hash_hex(b"[\"orphan\"]"));
    std::fs::write(&orphan, b"[\"orphan\"]").unwrap();
    // Foreign: other names, or snapcache's names on a directory.
    std::fs::write(tmp.join("other-junk"), b"x").unwrap();
    std::fs::create_dir(tmp.join("a-directory")).unwrap();
    std::fs::create_dir(tmp.join(".snapcache-4242-dir")).unwrap();
    std::fs::write(tmp.join(".snapcache-4242-dir").join("inside"), b"x").unwrap();
    std::fs::write(snapshots.join("holiday.png"), b"png").unwrap();
    std::fs::create_dir(snapshots.join(hash_hex(b"a directory"))).unwrap();

    let (out, report) = store.json(&["verify"]);
    assert_eq!(
        code(&out),
        0,
        "leftovers and foreign entries are not problems"
    );
    assert_eq!(
        report["reclaimable"].as_array().unwrap().len(),
        3,
        "{report}"
    );
    assert_eq!(report["foreign"].as_array().unwrap().len(), 5, "{report}");

    let (_, gc) = store.json(&["gc", "--dry-run"]);
    assert_eq!(gc["removed_temp_files"], 2, "{gc}");
    assert_eq!(gc["removed_snapshots"], 1, "{gc}");
    assert_eq!(gc["freed_bytes"], 11 + "/nonexistent".len() + 10, "{gc}");

    store.refresh(b"[2]", &[]);
    assert_eq!(
        store.files_in("tmp"),
        vec![".snapcache-4242-dir", "a-directory", "other-junk"],
        "only snapcache's temp files are removed"
    );
    assert_eq!(
        std::fs::read(tmp.join(".snapcache-4242-dir").join("inside")).unwrap(),
        b"x"
    );
    assert!(!orphan.exists(), "the orphan snapshot is removed");
    assert!(snapshots.join("holiday.png").exists());
    assert!(snapshots.join(hash_hex(b"a directory")).is_dir());
    let (_, report) = store.json(&["verify"]);
    assert_eq!(report["reclaimable"].as_array().unwrap().len(), 0);
    assert_eq!(report["foreign"].as_array().unwrap().len(), 5, "{report}");
    assert_eq!(report["ok"], true);
}

#[test]
fn a_writer_killed_mid_write_leaves_the_previous_snapshot_current() {
    let store = TestStore::new();
    store.refresh(b"{\"generation\":1}", &[]);
    // The source writes half a payload, then stalls: the temp file exists.
    let mut child = store
        .command(&[
            "refresh",
            "--exec",
            "sh",
            "-c",
            "printf '{\"partial\": ['; sleep 30",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The payload's temp file, with the half payload in it (not the holder
    // record's short-lived temp file, which is empty or JSON of the holder).
    wait_for("the writer's temp file", Duration::from_secs(20), || {
        let tmp = store.root().join("tmp");
        store
            .files_in("tmp")
            .iter()
            .any(|n| std::fs::read(tmp.join(n)).is_ok_and(|b| b.starts_with(b"{\"partial\"")))
            .then_some(())
    });
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    let (_, status) = store.json(&["status"]);
    assert_eq!(
        status["lock"]["held"], false,
        "the kernel released the dead writer's lock"
    );
    assert_eq!(
        store.show(),
        b"{\"generation\":1}",
        "the previous generation is still current"
    );
    let (out, report) = store.json(&["verify"]);
    assert_eq!(code(&out), 0, "{report}");
    assert!(
        !report["reclaimable"].as_array().unwrap().is_empty(),
        "the dead writer's temp file is reclaimable"
    );
    store.refresh(b"{\"generation\":2}", &[]);
    assert!(
        store.files_in("tmp").is_empty(),
        "{:?}",
        store.files_in("tmp")
    );
}

#[test]
fn writers_killed_at_random_moments_never_damage_the_store() {
    let store = TestStore::new();
    let (payloads, files) = three_payloads(&store, 1_500_000, 100_000);
    store.refresh(&payloads[0], &[]);
    // Kill delays spread over the whole publish (source, hashing, fsync, rename).
    for round in 0..24u64 {
        let mut child = store
            .command(&[
                "refresh",
                "--from",
                files[(round % 3) as usize].to_str().unwrap(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_micros(round * 1_500));
        let _ = child.kill();
        child.wait().unwrap();
        let out = store.run(&["show"]);
        assert_eq!(code(&out), 0, "round {round}: {}", text(&out.stderr));
        assert!(
            payloads.contains(&out.stdout),
            "round {round}: show returned a published payload"
        );
        let (out, report) = store.json(&["verify"]);
        assert_eq!(code(&out), 0, "round {round}: {report}");
    }
    store.refresh(b"[\"final\"]", &[]);
    assert!(
        store.files_in("tmp").is_empty(),
        "one final refresh leaves no temp file"
    );
}

/// With `SNAPCACHE_KEEP=1` and three payloads in turn, every publish stages
/// content whose snapshot left retention at the publish before last and
/// still awaits removal: its own sweep, running alongside the staging,
/// unlinks a file of the very name it is about to rename into place.
/// Writers are killed at moments spread over the sweep, the staging and the
/// commit, and some run to the end; several also run at once. The store
/// must always show a published payload and verify, and at the end hold
/// the retained snapshots plus at most one publish's worth.
#[test]
fn writers_sweeping_the_snapshot_they_publish_again_never_damage_the_store() {
    let store = TestStore::new();
    let (payloads, files) = three_payloads(&store, 1_000_000, 50_000);
    let refresh = |i: usize| {
        let mut cmd = store.command(&["refresh", "--from", files[i % 3].to_str().unwrap()]);
        cmd.env("SNAPCACHE_KEEP", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        cmd
    };
    let check = |round: usize| {
        let out = store.run(&["show"]);
        assert_eq!(code(&out), 0, "round {round}: {}", text(&out.stderr));
        assert!(payloads.contains(&out.stdout), "round {round}");
        let (out, report) = store.json(&["verify"]);
        assert_eq!(code(&out), 0, "round {round}: {report}");
    };
    for i in 0..3 {
        assert_eq!(refresh(i).status().unwrap().code(), Some(0));
    }
    for round in 0..30usize {
        let mut child = refresh(round).spawn().unwrap();
        if round % 3 == 2 {
            assert_eq!(child.wait().unwrap().code(), Some(0), "round {round}");
        } else {
            std::thread::sleep(Duration::from_micros(round as u64 * 700));
            let _ = child.kill();
            child.wait().unwrap();
        }
        check(round);
    }
    // Concurrent writers: they queue on the lock, each one sweeping what
    // the one before it dropped while staging the next payload in turn.
    let children: Vec<_> = (0..6).map(|i| refresh(i).spawn().unwrap()).collect();
    for mut child in children {
        assert_eq!(child.wait().unwrap().code(), Some(0));
    }
    check(30);
    let (_, history) = store.json(&["history"]);
    assert_eq!(
        history["generations"].as_array().unwrap().len(),
        2,
        "{history}"
    );
    assert!(
        store.files_in("snapshots").len() <= 3,
        "two retained, at most one awaiting removal: {:?}",
        store.files_in("snapshots")
    );
}

/// Three JSON payloads of `first`, `first + step` and `first + 2 * step`
/// bytes, and the files holding them (`p0`, `p1`, `p2`).
fn three_payloads(
    store: &TestStore,
    first: usize,
    step: usize,
) -> (Vec<Vec<u8>>, Vec<std::path::PathBuf>) {
    let payloads: Vec<Vec<u8>> = (0..3)
        .map(|i| json_payload(first + i * step, i as u64))
        .collect();
    let files = payloads
        .iter()
        .enumerate()
        .map(|(i, p)| store.payload(&format!("p{i}"), p))
        .collect();
    (payloads, files)
}
