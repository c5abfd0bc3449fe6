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
        |s| s.gc(&GcOptions::default().keep(1)).map(drop),
        readable,
    );
}

#[test]
fn a_failed_first_publish_leaves_a_directory_the_next_publish_makes_a_store() {
    for fail_at in 0.. {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("s");
        let hook = Arc::new(FailNth {
            seen: AtomicUsize::new(0),
            fail_at,
        });
        let result = store_at(&root, Some(hook.clone()))
            .publish_bytes(b"[1]", &PublishOptions::default())
            .map(drop);
        let plain = store_at(&root, None);
        match plain.read_current() {
            Ok(s) => assert_eq!(s.data, b"[1]", "failure at {fail_at}"),
            Err(crate::Error::NoStore { .. }) => {
                assert!(result.is_err(), "a publish that returned Ok is readable")
            }
            Err(e) => panic!("after a failure at operation {fail_at}: {e}"),
        }
        // Whatever the failure left (no marker, a marker without a pointer,
        // a temp file), it is ours: the next publish goes ahead and marks it.
        plain
            .publish_bytes(b"[2]", &PublishOptions::default())
            .unwrap_or_else(|e| panic!("after a failure at operation {fail_at}: {e}"));
        assert_eq!(plain.read_current().expect("read").data, b"[2]");
        assert_eq!(
            std::fs::read_to_string(root.join(crate::layout::MARKER)).expect("marker"),
            "snapcache-store 1\n",
            "failure at {fail_at}"
        );
        assert!(plain.verify().expect("verify").ok);
        if hook.seen.load(Ordering::SeqCst) <= fail_at {
            assert!(result.is_ok(), "no failure was injected");
            assert!(fail_at > 10, "the marker and tag writes are operations too");
            break;
        }
    }
}

#[test]
fn a_failed_write_says_truly_whether_the_current_generation_changed() {
    // Every failure point of a publish, a rollback and a clear: the error
    // is a write's (never a read's, which would say nothing), and one that says
    // "unchanged" left the old generation current.
    type Action = fn(&Store) -> crate::Result<()>;
    let publish: Action = |s| {
        s.publish_bytes(b"[3]", &PublishOptions::default())
            .map(drop)
    };
    let rollback: Action = |s| s.rollback(None).map(drop);
    let clear: Action = |s| s.clear().map(drop);
    let cases = [
        ("publish", publish),
        ("rollback", rollback),
        ("clear", clear),
    ];
    // On both backends: the lease backend commits by its commit record,
    // before `current` is written.
    for backend in [crate::BackendChoice::Advisory, crate::BackendChoice::Lease] {
        for (name, action) in cases {
            let name = format!("{name} ({backend:?})");
            let store_at = |dir: &std::path::Path, hook: Option<Arc<FailNth>>| {
                let store =
                    Store::open(StoreOptions::new(dir).lock_backend(backend)).expect("open");
                match hook {
                    Some(h) => store.with_durable(Durable::with_hook(h)),
                    None => store,
                }
            };
            let mut after_commit_seen = false;
            for fail_at in 0.. {
                let dir = tempfile::tempdir().expect("tempdir");
                let plain = store_at(dir.path(), None);
                for bytes in [b"[1]", b"[2]"] {
                    plain
                        .publish_bytes(bytes, &PublishOptions::default())
                        .expect("setup");
                }
                let hook = Arc::new(FailNth {
                    seen: AtomicUsize::new(0),
                    fail_at,
                });
                let result = action(&store_at(dir.path(), Some(hook.clone())));
                if hook.seen.load(Ordering::SeqCst) <= fail_at {
                    assert!(result.is_ok(), "{name}: no failure was injected");
                    break;
                }
                let Err(e) = result else { continue };
                let message = e.to_string();
                match &e {
                    crate::Error::Io { stage, .. } => match stage {
                        crate::IoStage::BeforeCommit => {
                            let current = plain.read_current().expect("readable").data;
                            assert_eq!(current, b"[2]", "{name} at {fail_at}: {message}");
                            assert!(message.ends_with("the current generation is unchanged"));
                        }
                        crate::IoStage::AfterCommit => {
                            after_commit_seen = true;
                            assert!(message.contains("already committed"), "{message}");
                        }
                        other => panic!(
                            "{name} at {fail_at}: a write's error placed as {other:?}: {message}"
                        ),
                    },
                    other => panic!("{name} at {fail_at}: not an I/O error: {other}"),
                }
            }
            assert!(
                after_commit_seen,
                "{name}: the directory fsync after the pointer's rename is a failure point"
            );
        }
    }
}
