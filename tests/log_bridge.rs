//! With the `log` feature, a program logging through the `log` crate (as
//! Kopi does with env_logger) receives snapcache's events as `log` records
//! when no tracing subscriber is installed (issue 10, point 4).
//!
//! Its own test binary: a `log` logger is process-wide.
#![cfg(feature = "log")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Mutex;

use snapcache::{PublishOptions, Store, StoreOptions};

static RECORDS: Mutex<Vec<(log::Level, String, String)>> = Mutex::new(Vec::new());

struct TestLogger;

impl log::Log for TestLogger {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        RECORDS.lock().unwrap().push((
            record.level(),
            record.target().to_string(),
            record.args().to_string(),
        ));
    }
    fn flush(&self) {}
}

#[test]
fn a_log_logger_receives_the_publish_event() {
    log::set_logger(&TestLogger).expect("the only logger of this binary");
    log::set_max_level(log::LevelFilter::Trace);

    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(StoreOptions::new(dir.path().join("cache"))).unwrap();
    let outcome = store
        .publish_json(&[1, 2, 3], &PublishOptions::default())
        .unwrap();

    let records = RECORDS.lock().unwrap().clone();
    let published = records
        .iter()
        .find(|(_, target, message)| {
            target.starts_with("snapcache") && message.contains("published")
        })
        .unwrap_or_else(|| panic!("no publish record among {records:#?}"));
    assert_eq!(published.0, log::Level::Info, "{published:?}");
    assert!(
        published.2.contains(&format!("hash={}", outcome.hash)),
        "the event's fields are in the record: {published:?}"
    );

    // The sweep's worker threads (one beside the staging, several for many
    // leftovers) must not turn the fallback to `log` off for what follows.
    let snapshots = dir.path().join("cache").join("snapshots");
    for i in 0..100u32 {
        std::fs::write(
            snapshots.join(format!("{:064x}", 0xfeed_0000_u64 + u64::from(i))),
            b"x",
        )
        .unwrap();
    }
    let swept = store
        .publish_json(&[4, 5, 6], &PublishOptions::default())
        .unwrap();
    let after = store
        .publish_json(&[7, 8, 9], &PublishOptions::default())
        .unwrap();
    let left = std::fs::read_dir(&snapshots).unwrap().count();
    assert!(
        left <= 3,
        "the planted leftovers were swept: {left} files left"
    );
    let records = RECORDS.lock().unwrap().clone();
    for hash in [swept.hash, after.hash] {
        assert!(
            records
                .iter()
                .any(|(_, target, message)| target.starts_with("snapcache")
                    && message.contains("published")
                    && message.contains(&format!("hash={hash}"))),
            "a publish after a sweep on worker threads is still logged ({hash}): {records:#?}"
        );
    }
}
