//! A hostile but well-checksummed `current` pointer, planted in a real
//! store: whatever its body says (generation numbers at the ends of `u64`,
//! duplicate or unsorted entries, pins, notes, times, sizes, hashes of
//! snapshots that do or do not exist), every operation returns a value or
//! an error and never panics. The input is the pointer's body (JSON); the
//! target writes the header with the body's true checksum, so the fuzzer
//! gets past the checksum to the decoding and to the code that acts on it.
//! The first byte of the input picks which write operation, if any, runs
//! after the reads: each of the six in one case in 16 (writes fsync, so
//! most cases only read).
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use snapcache::{ContentHash, GcOptions, PublishOptions, Store, StoreOptions, FORMAT_VERSION};

/// One store for the whole run, made by three real publishes of the
/// payloads the seed corpus names, so that `snapshots/` holds real files
/// the hostile pointer may name.
fn store() -> &'static (tempfile::TempDir, PathBuf) {
    static STORE: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    STORE.get_or_init(|| {
        let dir = tempfile::tempdir().expect("a temp dir for the fuzzed store");
        let root = dir.path().join("store");
        let store = Store::open(StoreOptions::new(&root)).expect("open the fuzzed store");
        for payload in [&b"[1]\n"[..], b"[2]\n", b"[3]\n"] {
            store
                .publish_bytes(payload, &PublishOptions::default())
                .expect("seed the fuzzed store");
        }
        (dir, root)
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&op, body)) = data.split_first() else {
        return;
    };
    let (_, root) = store();
    let mut pointer = format!(
        "snapcache-pointer {FORMAT_VERSION} {}\n",
        ContentHash::of(body)
    )
    .into_bytes();
    pointer.extend_from_slice(body);
    // Planted the way a writer replaces it: a new file renamed over `current`
    // (owner-only, like everything in the store).
    let planted = root.join("tmp").join("fuzz-current");
    std::fs::write(&planted, &pointer).expect("write the planted pointer");
    std::fs::rename(&planted, root.join("current")).expect("plant the pointer");
    let Ok(store) = Store::open(StoreOptions::new(root)) else {
        return;
    };
    let _ = store.read_current();
    let _ = store.current_generation();
    let _ = store.status();
    let _ = store.history();
    let _ = store.verify();
    for generation in [0, 1, 2, u64::MAX] {
        let _ = store.read_generation(generation);
    }
    match op % 16 {
        0 => drop(store.publish_bytes(b"[3]", &PublishOptions::default())),
        1 => drop(store.rollback(None)),
        2 => drop(store.gc(&GcOptions::default())),
        3 => drop(store.forget(&[1, u64::MAX])),
        4 => drop(store.pin(&[1, 2])),
        5 => drop(store.unpin(&[1, 2])),
        _ => {}
    }
});
