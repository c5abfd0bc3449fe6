//! `clear` (library, under the writer lock) while readers run `snapcache
//! show`: every read is a whole published payload or "nothing published",
//! never a pointer naming a snapshot that is gone.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use snapcache::{PublishOptions, Store, StoreOptions};

use crate::common::*;

#[test]
fn readers_during_clears_and_refreshes_see_a_whole_payload_or_nothing_published() {
    let store = TestStore::new();
    let payloads: Arc<Vec<Vec<u8>>> = Arc::new(
        [2_000, 300_000, 40_000]
            .iter()
            .enumerate()
            .map(|(i, &n)| json_payload(n, 50 + i as u64))
            .collect(),
    );
    let lib = Store::open(StoreOptions::new(store.root())).unwrap();
    lib.publish_bytes(&payloads[0], &PublishOptions::default())
        .unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let (whole, nothing) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let (stop, payloads, root) = (stop.clone(), payloads.clone(), store.root());
            let (whole, nothing) = (whole.clone(), nothing.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let out = run_with_timeout({
                        let mut cmd = std::process::Command::new(bin());
                        cmd.args(["--json", "--store", root.to_str().unwrap(), "show"]);
                        cmd
                    });
                    if out.status.success() {
                        assert!(
                            payloads.contains(&out.stdout),
                            "a read returned {} bytes that are no published payload",
                            out.stdout.len()
                        );
                        whole.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    let value: serde_json::Value = serde_json::from_slice(&out.stdout)
                        .unwrap_or_else(|e| panic!("{e}: {}", text(&out.stderr)));
                    assert_eq!(
                        value["error"]["kind"],
                        "no-store",
                        "a failed read must be 'nothing published', not a partial state: {}",
                        text(&out.stderr)
                    );
                    nothing.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();

    // Clear and refresh in a loop until the readers have seen both states
    // several times (bounded: the test fails if they never do).
    let started = Instant::now();
    let mut cycles = 0usize;
    while (cycles < 40
        || whole.load(Ordering::Relaxed) < 20
        || nothing.load(Ordering::Relaxed) < 20)
        && started.elapsed() < Duration::from_secs(90)
    {
        let cleared = lib.clear().unwrap();
        assert!(cleared.previous_generation.is_some());
        // A moment with nothing published, then a refresh.
        std::thread::sleep(Duration::from_millis(15));
        let p = &payloads[cycles % payloads.len()];
        let outcome = lib.publish_bytes(p, &PublishOptions::default()).unwrap();
        assert_eq!(outcome.generation, 1, "numbering restarts after a clear");
        std::thread::sleep(Duration::from_millis(15));
        cycles += 1;
    }
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.join().expect("a reader saw a partial state");
    }
    let (w, n) = (
        whole.load(Ordering::Relaxed),
        nothing.load(Ordering::Relaxed),
    );
    eprintln!("{cycles} clear+refresh cycles; reads: {w} whole payloads, {n} nothing-published");
    assert!(w >= 20 && n >= 20, "both states were read ({w} / {n})");
    // The lock and the marker survived every clear.
    for kept in ["lock", "snapcache-store"] {
        assert!(store.root().join(kept).exists(), "{kept} is kept");
    }
}

/// Reproduced: `clear` on a store whose pointer, or newest commit record,
/// was damaged printed "nothing was current", as on an empty store, telling
/// the user their history had been empty. It now says the pointer was
/// damaged, and `--json` tells the two apart with `pointer_damaged`.
#[test]
fn clear_of_a_damaged_history_says_so_instead_of_nothing_was_current() {
    let damaged_pointer = |store: &TestStore| {
        std::fs::write(pointer_path(store), b"\x00garbage\n").unwrap();
    };
    let damaged_commit_record = |store: &TestStore| {
        store.lease_refresh(b"[3]");
        store.lease_refresh(b"[4]");
        let newest = store.newest_commit_record();
        let record = store.root().join("commits").join((newest + 1).to_string());
        std::fs::write(record, b"garbage\n").unwrap();
    };
    type Damage<'a> = &'a dyn Fn(&TestStore);
    let damages: [(&str, Damage); 2] = [
        ("pointer", &damaged_pointer),
        ("commit record", &damaged_commit_record),
    ];
    for (what, damage) in damages {
        for json in [false, true] {
            let store = TestStore::new();
            store.refresh(b"[1]", &[]);
            store.refresh(b"[2]", &[]);
            damage(&store);
            let write = store.run(&[
                "refresh",
                "--from",
                store.payload("p", b"[9]").to_str().unwrap(),
            ]);
            assert_eq!(
                code(&write),
                1,
                "{what}: writes refuse the store: {}",
                text(&write.stderr)
            );
            let args: &[&str] = if json {
                &["--json", "clear"]
            } else {
                &["clear"]
            };
            let out = store.run(args);
            assert_eq!(code(&out), 0, "{what}: {}", text(&out.stderr));
            if json {
                let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
                assert_eq!(report["pointer_damaged"], true, "{what}: {report}");
                assert_eq!(
                    report["previous_generation"],
                    serde_json::Value::Null,
                    "{what}: {report}"
                );
            } else {
                let said = text(&out.stdout);
                assert!(
                    said.contains("the pointer could not be read")
                        && !said.contains("nothing was current"),
                    "{what}: {said}"
                );
            }
            // The way out works: the next refresh publishes generation 1.
            store.refresh(b"[3]", &[]);
            assert_eq!(store.show(), b"[3]");
            // And a clear of a healthy empty store still says nothing was.
            let again = store.run(&["clear"]);
            assert_eq!(code(&again), 0);
            let again = store.run(&["--json", "clear"]);
            let report: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
            assert_eq!(report["pointer_damaged"], false, "{report}");
        }
    }
}
