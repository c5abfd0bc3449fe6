//! Fault injection: every file operation of a publish, a rollback and a gc
//! is failed in turn; the store must stay readable at the old or the new
//! generation, and verify.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::durable::{Durable, FsHook, Op};
use crate::{GcOptions, PublishOptions, Store, StoreOptions};

/// Fails the `fail_at`-th operation (counting from 0) with an I/O error.
struct FailNth {
    seen: AtomicUsize,
    fail_at: usize,
}

impl FsHook for FailNth {
    fn before(&self, op: &Op<'_>) -> io::Result<()> {
        let n = self.seen.fetch_add(1, Ordering::SeqCst);
        if n == self.fail_at {
            return Err(io::Error::other(format!(
                "injected failure at operation {n}: {op:?}"
            )));
        }
        Ok(())
    }
}

fn store_at(dir: &std::path::Path, hook: Option<Arc<FailNth>>) -> Store {
    let store = Store::open(StoreOptions::new(dir)).expect("open");
    match hook {
        Some(h) => store.with_durable(Durable::with_hook(h)),
        None => store,
    }
}

/// Runs `action` with the n-th operation failing, for every n until the
/// action succeeds without reaching the failure point.
fn for_each_failure_point(
    setup: impl Fn(&Store),
    action: impl Fn(&Store) -> crate::Result<()>,
    check: impl Fn(&Store, bool),
) {
    for fail_at in 0.. {
        let dir = tempfile::tempdir().expect("tempdir");
        setup(&store_at(dir.path(), None));
        let hook = Arc::new(FailNth {
            seen: AtomicUsize::new(0),
            fail_at,
        });
        let result = action(&store_at(dir.path(), Some(hook.clone())));
        let plain = store_at(dir.path(), None);
        check(&plain, result.is_ok());
        let report = plain.verify().expect("verify runs");
        assert!(
            report.ok,
            "after a failure at operation {fail_at}, verify found {:?}",
            report.problems
        );
        if hook.seen.load(Ordering::SeqCst) <= fail_at {
            assert!(
                result.is_ok(),
                "no failure was injected, so the action must succeed"
            );
            assert!(
                fail_at > 3,
                "the action performed suspiciously few operations"
            );
            break;
        }
    }
}

#[test]
fn a_failed_publish_leaves_the_old_or_the_new_generation_current() {
    for_each_failure_point(
        |s| {
            s.publish_bytes(br#"{"old":true}"#, &PublishOptions::default())
                .expect("setup");
        },
        |s| {
            s.publish_bytes(br#"{"new":true}"#, &PublishOptions::default())
                .map(drop)
        },
        |s, ok| {
            let data = s.read_current().expect("the store stays readable").data;
            if ok {
                assert_eq!(data, br#"{"new":true}"#);
            } else {
                assert!(
                    data == br#"{"old":true}"# || data == br#"{"new":true}"#,
                    "{data:?}"
                );
            }
        },
    );
}

#[test]
fn a_failed_rollback_or_gc_leaves_a_readable_store() {
    let setup = |s: &Store| {
        s.publish_bytes(b"[1]", &PublishOptions::default())
            .expect("setup");
        s.publish_bytes(b"[2]", &PublishOptions::default())
            .expect("setup");
        s.publish_bytes(b"[3]", &PublishOptions::default())
            .expect("setup");
    };
    let readable = |s: &Store, _ok: bool| {
        let data = s.read_current().expect("the store stays readable").data;
        assert!(data == b"[2]" || data == b"[3]", "{data:?}");
    };
    for_each_failure_point(setup, |s| s.rollback(None).map(drop), readable);
    for_each_failure_point(
        setup,
        |s| {
            s.gc(&GcOptions {
                keep: Some(1),
                dry_run: false,
            })
            .map(drop)
        },
        readable,
    );
}
