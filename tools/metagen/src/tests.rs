//! Unit tests of the generator: size, validity, shape and determinism.
#![allow(clippy::unwrap_used)]

use super::*;
use serde_json::Value;

const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;

const PACKAGE_KEYS: &[&str] = &[
    "id",
    "distribution",
    "version",
    "distribution_version",
    "architecture",
    "operating_system",
    "package_type",
    "archive_type",
    "download_url",
    "checksum",
    "checksum_type",
    "size",
    "lib_c_type",
    "javafx_bundled",
    "term_of_support",
    "release_status",
    "latest_build_available",
];

fn sample() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../samples/kopi-metadata.json"
    );
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn check_shape(doc: &Value) -> usize {
    let top = doc.as_object().unwrap();
    let mut keys: Vec<&str> = top.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        ["distributions", "last_updated", "synonym_map", "version"]
    );
    assert_eq!(doc["version"], 1);
    assert!(doc["last_updated"].as_str().unwrap().ends_with('Z'));
    let mut packages = 0;
    let mut ids = std::collections::HashSet::new();
    for (name, dist) in doc["distributions"].as_object().unwrap() {
        match &dist["distribution"] {
            Value::String(s) => assert_eq!(s, name),
            Value::Object(o) => assert_eq!(o["other"], Value::String(name.clone())),
            other => panic!("bad distribution field {other}"),
        }
        assert_eq!(dist["display_name"], Value::String(name.clone()));
        for p in dist["packages"].as_array().unwrap() {
            let obj = p.as_object().unwrap();
            assert_eq!(obj.len(), PACKAGE_KEYS.len());
            for k in PACKAGE_KEYS {
                assert!(obj.contains_key(*k), "missing {k}");
            }
            let id = p["id"].as_str().unwrap();
            assert_eq!(id.len(), 32);
            assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
            assert!(ids.insert(id.to_string()), "duplicate id");
            assert_eq!(p["distribution"], Value::String(name.clone()));
            for v in ["version", "distribution_version"] {
                let comps = p[v]["components"].as_array().unwrap();
                assert!(!comps.is_empty());
                assert!(comps.iter().all(Value::is_u64));
                assert!(p[v].get("build").is_some());
                assert!(p[v].get("pre_release").is_some());
            }
            assert!(p["download_url"].as_str().unwrap().starts_with("https://"));
            assert!(p["size"].is_u64());
            assert!(p["javafx_bundled"].is_boolean());
            assert!(p["latest_build_available"].is_boolean());
            packages += 1;
        }
    }
    for (k, v) in doc["synonym_map"].as_object().unwrap() {
        assert!(!k.is_empty());
        assert!(doc["distributions"].as_object().is_some());
        assert!(CATALOG.iter().any(|s| s.key == v.as_str().unwrap()));
    }
    packages
}

fn check_size(target: usize, len: usize) {
    assert!(len <= target, "{len} > target {target}");
    assert!(len + KIB >= target, "{len} < target {target} - 1 KiB");
    assert!(
        (target - len) as f64 <= target as f64 * 0.01,
        "{len} not within 1% of {target}"
    );
}

#[test]
fn sizes_are_close_and_documents_parse() {
    for target in [64 * KIB, MIB, 8 * MIB] {
        let bytes = generate(target, 7);
        check_size(target, bytes.len());
        let doc: Value = serde_json::from_slice(&bytes).unwrap();
        let packages = check_shape(&doc);
        assert!(packages * 2000 > target, "too few packages: {packages}");
    }
}

#[test]
fn many_odd_sizes_stay_in_bounds() {
    for target in (20 * KIB..200 * KIB).step_by(3_331) {
        for seed in 0..3 {
            let bytes = generate(target, seed);
            check_size(target, bytes.len());
            let _: Value = serde_json::from_slice(&bytes).unwrap();
        }
    }
}

#[test]
fn tiny_targets_give_valid_json() {
    for target in [
        0, 1, 100, 300, 500, 1_000, 1_500, 2_000, 3_000, 5_000, 10_000,
    ] {
        let bytes = generate(target, 3);
        let doc: Value = serde_json::from_slice(&bytes).unwrap();
        check_shape(&doc);
        if target >= 300 {
            assert!(bytes.len() <= target);
            assert!(bytes.len() + KIB >= target, "{} for {target}", bytes.len());
        }
    }
}

#[test]
fn same_seed_same_bytes_different_seed_different_bytes() {
    let a = generate(256 * KIB, 42);
    let b = generate(256 * KIB, 42);
    let c = generate(256 * KIB, 43);
    assert_eq!(a, b);
    assert_ne!(a, c);
}

#[test]
fn write_to_matches_generate_and_reports_length() {
    let mut out = Vec::new();
    let n = write_to(&mut out, 300 * KIB, 9).unwrap();
    assert_eq!(n as usize, out.len());
    assert_eq!(out, generate(300 * KIB, 9));
}

#[test]
fn same_shape_as_the_real_kopi_sample() {
    let sample = sample();
    let ours: Value = serde_json::from_slice(&generate(MIB, 1)).unwrap();
    check_shape(&sample);
    let keys = |v: &Value| {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    assert_eq!(keys(&sample), keys(&ours));
    let sample_pkg = &sample["distributions"]["temurin"]["packages"][0];
    let our_pkg = &ours["distributions"]["temurin"]["packages"][0];
    assert_eq!(keys(sample_pkg), keys(our_pkg));
    assert_eq!(keys(&sample_pkg["version"]), keys(&our_pkg["version"]));
    // Both pretty-printed with two-space indentation.
    let text = String::from_utf8(generate(64 * KIB, 1)).unwrap();
    assert!(text.starts_with("{\n  \"version\": 1,\n  \"last_updated\": \""));
}

#[test]
fn output_varies_across_distributions_and_platforms() {
    let doc: Value = serde_json::from_slice(&generate(2 * MIB, 5)).unwrap();
    let dists = doc["distributions"].as_object().unwrap();
    assert!(dists.len() >= 10, "only {} distributions", dists.len());
    let mut archs = std::collections::HashSet::new();
    let mut oses = std::collections::HashSet::new();
    let mut majors = std::collections::HashSet::new();
    for dist in dists.values() {
        for p in dist["packages"].as_array().unwrap() {
            archs.insert(p["architecture"].as_str().unwrap().to_string());
            oses.insert(p["operating_system"].as_str().unwrap().to_string());
            majors.insert(p["version"]["components"][0].as_u64().unwrap());
        }
    }
    assert!(archs.len() >= 5, "{archs:?}");
    assert!(oses.len() >= 4, "{oses:?}");
    assert!(majors.len() >= 10, "{majors:?}");
}

#[test]
fn streaming_is_bounded_in_memory() {
    /// A writer that only counts bytes, to generate a big document without
    /// holding it.
    struct Counter(u64);
    impl Write for Counter {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0 += buf.len() as u64;
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let mut c = Counter(0);
    let target = 32 * MIB;
    let n = write_to(&mut c, target, 11).unwrap();
    assert_eq!(n, c.0);
    check_size(target, n as usize);
}

#[test]
fn synonym_pool_is_big_enough_to_fill_the_last_gap() {
    let pool: usize = catalog::synonyms()
        .iter()
        .map(|(k, v)| synonym_entry(k, v, true).len())
        .sum();
    assert!(pool >= 6 * KIB, "pool only {pool} bytes");
}
