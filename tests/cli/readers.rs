//! Lock-free readers during repeated refreshes never see partial data.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::common::*;

#[test]
fn readers_see_only_whole_published_payloads_during_refreshes() {
    let store = TestStore::new();
    // Differently sized payloads, so a torn read would show as a wrong length.
    let sizes = [1_000, 64_000, 700_000, 2_500_000];
    let payloads: Vec<Vec<u8>> = sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| json_payload(n, i as u64))
        .collect();
    let files: Vec<String> = payloads
        .iter()
        .enumerate()
        .map(|(i, p)| {
            store
                .payload(&format!("p{i}"), p)
                .to_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let lengths: Arc<Vec<usize>> = Arc::new(payloads.iter().map(Vec::len).collect());
    let by_hash: Arc<HashMap<String, usize>> = Arc::new(
        payloads
            .iter()
            .enumerate()
            .map(|(i, p)| (hash_hex(p), i))
            .collect(),
    );
    store.refresh(&payloads[0], &[]);

    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, files, root) = (stop.clone(), files.clone(), store.root());
        std::thread::spawn(move || {
            let mut refreshes = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let file = &files[refreshes % files.len()];
                // SNAPCACHE_KEEP=1: old snapshots are deleted at every write,
                // racing with readers that still hold the old pointer.
                let out = std::process::Command::new(bin())
                    .args(["--store", root.to_str().unwrap(), "refresh", "--from", file])
                    .env("SNAPCACHE_KEEP", "1")
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "refresh failed: {}",
                    text(&out.stderr)
                );
                refreshes += 1;
            }
            refreshes
        })
    };

    // 50 reads in separate processes and 50 in threads through the library.
    let thread_reads = {
        let (root, by_hash, lengths) = (store.root(), by_hash.clone(), lengths.clone());
        std::thread::spawn(move || {
            let store = snapcache::Store::open(snapcache::StoreOptions::new(root)).unwrap();
            let mut seen = Vec::new();
            for _ in 0..50 {
                let snap = store
                    .read_current()
                    .expect("a lock-free read never fails during refreshes");
                let index = by_hash[&hash_hex(&snap.data)];
                assert_eq!(snap.data.len(), lengths[index], "no short read");
                serde_json::from_slice::<serde_json::Value>(&snap.data).expect("every read parses");
                seen.push(index);
                std::thread::sleep(Duration::from_millis(2));
            }
            seen
        })
    };
    let mut seen = Vec::new();
    for _ in 0..50 {
        let out = store.run(&["show"]);
        assert_eq!(
            code(&out),
            0,
            "show failed during refreshes: {}",
            text(&out.stderr)
        );
        let index = *by_hash
            .get(&hash_hex(&out.stdout))
            .expect("every read equals one published payload");
        assert_eq!(out.stdout.len(), lengths[index], "no short read");
        serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("every read parses");
        seen.push(index);
    }
    seen.extend(thread_reads.join().expect("reader thread"));
    stop.store(true, Ordering::Relaxed);
    let refreshes = writer.join().expect("writer thread");
    assert!(
        refreshes >= 4,
        "the writer kept refreshing during the reads ({refreshes})"
    );
    let distinct: std::collections::HashSet<_> = seen.iter().collect();
    assert!(
        distinct.len() >= 2,
        "readers observed several generations: {seen:?}"
    );
}
