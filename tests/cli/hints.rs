//! Library messages name no snapcache command; the CLI adds its own hints
//! (issue 10, point 4).

use std::os::unix::fs::PermissionsExt;

use snapcache::{Hint, Store, StoreOptions};

use crate::common::{TestStore, code, text};

#[test]
fn a_damaged_snapshot_gets_the_cli_hint_but_the_library_message_names_no_command() {
    let store = TestStore::new();
    store.refresh(b"[1,2,3]", &[]);
    let name = store.files_in("snapshots").pop().expect("one snapshot");
    let path = store.root().join("snapshots").join(name);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(&path, b"[9,9,9]").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).unwrap();

    let out = store.run(&["show"]);
    let stderr = text(&out.stderr);
    assert_eq!(code(&out), 1, "{stderr}");
    assert!(
        stderr.contains("\nhint: run `snapcache verify`, then `snapcache rollback`"),
        "{stderr}"
    );

    let lib = Store::open(StoreOptions::new(store.root())).unwrap();
    let err = lib.read_current().expect_err("damaged");
    assert_eq!(err.hint(), Some(Hint::Verify));
    let message = err.to_string();
    assert!(message.contains("roll back"), "{message}");
    for word in ["snapcache verify", "`snapcache", "--", "SNAPCACHE_"] {
        assert!(!message.contains(word), "{word:?} in {message}");
    }
}

#[test]
fn a_missing_store_gets_the_refresh_hint() {
    let store = TestStore::new();
    std::fs::create_dir(store.root()).unwrap();
    let out = store.run(&["show"]);
    let stderr = text(&out.stderr);
    assert_eq!(code(&out), 1, "{stderr}");
    assert!(
        stderr.contains("hint: run `snapcache refresh --from FILE` first"),
        "{stderr}"
    );
}
