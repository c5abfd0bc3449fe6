//! Canonical JSON through the library: a Kopi-shaped model full of
//! `HashMap`s, published by two separate processes (each with its own
//! random hash seed and insertion order), is found unchanged the second
//! time (issue 10, point 3).

use std::collections::HashMap;
use std::process::Command;

use serde_json::Value;
use snapcache::{PublishOptions, Store, StoreOptions};

use crate::common::{TestStore, run_with_timeout, text};

const CHILD_STORE: &str = "SNAPCACHE_TEST_CANONICAL_STORE";
const CHILD_ORDER: &str = "SNAPCACHE_TEST_CANONICAL_ORDER";
const CHILD_PRETTY: &str = "SNAPCACHE_TEST_CANONICAL_PRETTY";
const CHILD: &str = "canonical::publish_model_in_child";

/// Distribution -> version -> package fields, filled in the given order.
fn model(reverse: bool) -> HashMap<String, HashMap<String, HashMap<String, Value>>> {
    let mut entries = Vec::new();
    for d in 0..20 {
        for v in 0..15 {
            entries.push((format!("dist-{d}"), format!("{}.0.{v}", 8 + v)));
        }
    }
    if reverse {
        entries.reverse();
    }
    let mut model: HashMap<String, HashMap<String, HashMap<String, Value>>> = HashMap::new();
    for (dist, version) in entries {
        let mut fields = HashMap::new();
        fields.insert(
            "size".to_string(),
            Value::from(190_000_000u64 + version.len() as u64),
        );
        fields.insert("lts".to_string(), Value::from(version.starts_with("21")));
        fields.insert(
            "url".to_string(),
            Value::from(format!("https://example.invalid/{dist}/{version}.tar.gz")),
        );
        fields.insert("score".to_string(), Value::from(0.1 * version.len() as f64));
        model.entry(dist).or_default().insert(version, fields);
    }
    model
}

/// Not a test of its own: the body of the child processes of
/// `equal_hashmaps_from_two_processes_are_unchanged`, which runs it with
/// `--ignored --exact`.
#[test]
#[ignore = "run as a child process by equal_hashmaps_from_two_processes_are_unchanged"]
fn publish_model_in_child() {
    let root = std::env::var_os(CHILD_STORE).expect("run by the parent test");
    let reverse = std::env::var_os(CHILD_ORDER).is_some_and(|v| v == "reverse");
    let pretty = std::env::var_os(CHILD_PRETTY).is_some();
    let store = Store::open(StoreOptions::new(root)).expect("open");
    let options = PublishOptions::default().canonical(true).pretty(pretty);
    let outcome = store
        .publish_json(&model(reverse), &options)
        .expect("publish");
    println!(
        "\nOUTCOME {}",
        serde_json::to_string(&outcome).expect("json")
    );
}

fn publish_in_child(store: &TestStore, order: &str, pretty: bool) -> Value {
    let mut cmd = Command::new(std::env::current_exe().expect("test binary"));
    cmd.args([
        CHILD,
        "--exact",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(CHILD_STORE, store.root())
    .env(CHILD_ORDER, order);
    if pretty {
        cmd.env(CHILD_PRETTY, "1");
    } else {
        cmd.env_remove(CHILD_PRETTY);
    }
    let out = run_with_timeout(cmd);
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "child failed: {stdout}\n{}",
        text(&out.stderr)
    );
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("OUTCOME "))
        .unwrap_or_else(|| panic!("child ran no publish (was the test filtered out?): {stdout}"));
    serde_json::from_str(line).expect("outcome json")
}

#[test]
fn equal_hashmaps_from_two_processes_are_unchanged() {
    let store = TestStore::new();
    let first = publish_in_child(&store, "forward", false);
    assert_eq!(
        (first["changed"].as_bool(), first["generation"].as_u64()),
        (Some(true), Some(1))
    );
    let second = publish_in_child(&store, "reverse", false);
    assert_eq!(
        (second["changed"].as_bool(), second["generation"].as_u64()),
        (Some(false), Some(1)),
        "equal content from another process must be unchanged: {second}"
    );
    assert_eq!(first["hash"], second["hash"]);

    // The snapshot is the canonical form: sorted keys, no whitespace.
    let reader = Store::open(StoreOptions::new(store.root())).expect("open");
    let data = reader.read_current().expect("read").data;
    assert!(data.starts_with(b"{\"dist-0\":{\"10.0.2\":{\"lts\":false,\"score\":0.6000000000000001,\"size\":190000006,\"url\":"), "{}", text(&data[..120]));
    assert!(!data.contains(&b' ') && !data.contains(&b'\n'));

    // Pretty is another layout (new bytes), just as deterministic.
    let third = publish_in_child(&store, "reverse", true);
    assert_eq!(
        (third["changed"].as_bool(), third["generation"].as_u64()),
        (Some(true), Some(2))
    );
    let fourth = publish_in_child(&store, "forward", true);
    assert_eq!(
        (fourth["changed"].as_bool(), fourth["generation"].as_u64()),
        (Some(false), Some(2)),
        "{fourth}"
    );
    let data = reader.read_current().expect("read").data;
    assert!(
        data.starts_with(b"{\n  \"dist-0\": {\n    \"10.0.2\": {\n      \"lts\": false,\n"),
        "{}",
        text(&data[..80])
    );
}
