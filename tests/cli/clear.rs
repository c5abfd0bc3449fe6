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
