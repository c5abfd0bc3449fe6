//! The object-store backend's protocol against a real server (Ceph RGW from
//! `tools/s3-server`): conflicts between writers that hold no lease (the
//! fence alone), a stalled writer's stale ETag, lease expiry by the
//! server's clock. Skipped, with the reason printed, without a server.

use std::collections::BTreeSet;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use super::lease_object::LeaseBody;
use super::writer::take_unleased;
use crate::lock::{Backend, HolderInfo, LockBudget, LockState, LockWait};
use crate::store::{PublishOptions, Store, StoreOptions};

#[path = "../../tests/support/s3_env.rs"]
mod s3_env;

/// A fresh `s3://` URL under the test bucket, or `None` (reason printed).
fn url(test: &str) -> Option<String> {
    s3_env::fresh_url("unit", test)
}

fn open(url: &str) -> Store {
    Store::open(StoreOptions::new(url).keep(100)).expect("open the object store")
}

#[test]
fn racing_unleased_writers_each_commit_once_with_unique_increasing_generations() {
    let Some(url) = url("race") else { return };
    const WRITERS: usize = 4;
    const ROUNDS: usize = 3;
    let barrier = Arc::new(Barrier::new(WRITERS));
    let threads: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (url, barrier) = (url.clone(), Arc::clone(&barrier));
            std::thread::spawn(move || {
                let store = open(&url);
                let mut generations = Vec::new();
                for round in 0..ROUNDS {
                    barrier.wait();
                    let mut writer = take_unleased(&store).expect("writer");
                    let body = format!(r#"{{"writer":{w},"round":{round}}}"#);
                    let outcome = writer
                        .publish_bytes(body.as_bytes(), &PublishOptions::default())
                        .expect("a loser rebases and commits");
                    assert!(outcome.changed, "{body}");
                    generations.push(outcome.generation);
                }
                generations
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in threads {
        let mine = t.join().expect("writer thread");
        assert!(mine.windows(2).all(|w| w[0] < w[1]), "{mine:?}");
        all.extend(mine);
    }
    let unique: BTreeSet<u64> = all.iter().copied().collect();
    assert_eq!(
        unique.len(),
        WRITERS * ROUNDS,
        "no number issued twice: {all:?}"
    );
    assert_eq!(
        unique,
        (1..=(WRITERS * ROUNDS) as u64).collect(),
        "numbers are contiguous"
    );
    // No lost update: every writer's every round is in the history.
    let store = open(&url);
    let history = store.history().expect("history");
    assert_eq!(history.len(), WRITERS * ROUNDS);
    for entry in &history {
        let read = store.read_generation(entry.generation).expect("read");
        assert!(read.data.starts_with(b"{\"writer\":"));
    }
    store.clear().expect("clear");
}

#[test]
fn a_stalled_writer_with_a_stale_etag_loses_its_put_and_rebases_without_losing_the_other() {
    let Some(url) = url("stale") else { return };
    let store = open(&url);
    store
        .publish_bytes(b"[1]", &PublishOptions::default())
        .expect("gen 1");
    // A reads the pointer (ETag of gen 1), then stalls.
    let mut stalled = take_unleased(&store).expect("writer");
    // Meanwhile B commits gen 2 (through the lease: A holds none).
    let other = open(&url);
    assert_eq!(
        other
            .publish_bytes(b"[2]", &PublishOptions::default())
            .expect("gen 2")
            .generation,
        2
    );
    // A resumes: its If-Match names gen 1's pointer, which is gone.
    let outcome = stalled
        .publish_bytes(b"[3]", &PublishOptions::default())
        .expect("rebased");
    assert_eq!((outcome.generation, outcome.changed), (3, true));
    let history: Vec<u64> = store
        .history()
        .expect("history")
        .iter()
        .map(|h| h.generation)
        .collect();
    assert_eq!(history, [1, 2, 3], "B's generation 2 survives");
    assert_eq!(store.read_generation(2).expect("gen 2").data, b"[2]");

    // A stalled writer whose content another writer already published
    // reports unchanged, without a new generation.
    let mut stalled = take_unleased(&store).expect("writer");
    other
        .publish_bytes(b"[4]", &PublishOptions::default())
        .expect("gen 4");
    let same = stalled
        .publish_bytes(b"[4]", &PublishOptions::default())
        .expect("unchanged");
    assert_eq!((same.generation, same.changed), (4, false));

    // One whose max_age the newer pointer satisfies reports skipped.
    let mut stalled = take_unleased(&store).expect("writer");
    stalled.set_object_max_age(Some(Duration::from_secs(3600)));
    other
        .publish_bytes(b"[5]", &PublishOptions::default())
        .expect("gen 5");
    let skipped = stalled
        .publish_bytes(b"[6]", &PublishOptions::default())
        .expect("skipped");
    assert_eq!((skipped.generation, skipped.skipped), (5, true));
    assert_eq!(store.read_current().expect("read").data, b"[5]");
    store.clear().expect("clear");
}

#[test]
fn an_expired_lease_is_taken_over_by_the_server_clock_and_a_live_one_names_its_holder() {
    let Some(url) = url("lease") else { return };
    let store = open(&url);
    let object = store.object_store().expect("object store").clone();
    let mut elsewhere = HolderInfo::this_process("refresh on another host", Backend::ObjectStore);
    elsewhere.host = "ci-runner-7".into();
    let held = |ttl_ms| LeaseBody::Held {
        lease_id: "someone-else".into(),
        holder: elsewhere.clone(),
        ttl_ms,
    };
    let body = serde_json::to_vec(&held(60_000)).expect("json");
    assert!(
        object
            .client()
            .put(crate::layout::OBJECT_LEASE, &body)
            .is_ok()
    );
    let try_once = Store::open(
        StoreOptions::new(&url).lock_budget(LockBudget::labelled(LockWait::TryOnce, "test")),
    )
    .expect("open");
    let err = try_once
        .publish_bytes(b"[1]", &PublishOptions::default())
        .expect_err("held");
    assert!(err.is_lock_timeout(), "{err}");
    assert!(err.to_string().contains("ci-runner-7"), "{err}");
    assert!(
        matches!(store.status().expect("status").lock, LockState::Held(Some(h)) if h.host == "ci-runner-7")
    );

    // A lease of one second that nobody renews: expired two to three
    // seconds later by the server's Date against its Last-Modified.
    let body = serde_json::to_vec(&held(1_000)).expect("json");
    assert!(
        object
            .client()
            .put(crate::layout::OBJECT_LEASE, &body)
            .is_ok()
    );
    let started = std::time::Instant::now();
    let waiting =
        Store::open(StoreOptions::new(&url).lock_timeout(LockWait::For(Duration::from_secs(20))))
            .expect("open");
    let outcome = waiting
        .publish_bytes(b"[1]", &PublishOptions::default())
        .expect("taken over");
    let waited = started.elapsed();
    assert_eq!(outcome.generation, 1);
    assert!(
        waited >= Duration::from_millis(900),
        "not before the lease time: {waited:?}"
    );
    // Released with a conditional put, not deleted.
    let lease = object
        .client()
        .get(crate::layout::OBJECT_LEASE)
        .expect("get")
        .expect("the lease object stays");
    assert!(matches!(
        serde_json::from_slice::<LeaseBody>(&lease.data),
        Ok(LeaseBody::Released { .. })
    ));
    assert_eq!(store.status().expect("status").lock, LockState::Free);
    store.clear().expect("clear");
    assert!(object.client().delete(crate::layout::OBJECT_LEASE).is_ok());
}
