//! How Kopi embeds snapcache: a typed model of Kopi's metadata cache
//! (the shape of `samples/kopi-metadata.json`, a cache file Kopi wrote),
//! published with `publish_json` and read back with `read_json`.
//!
//! ```text
//! cargo run --example kopi_metadata -- [STORE_DIR]
//! ```
//!
//! `cargo test` runs the test at the bottom, which does the same in a temp dir.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use snapcache::{LockWait, PublishOptions, Store, StoreOptions};

/// Kopi's `MetadataCache`: every distribution's packages, as fetched from foojay.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetadataCache {
    pub version: u32,
    pub last_updated: String,
    pub distributions: BTreeMap<String, DistributionCache>,
    pub synonym_map: BTreeMap<String, String>,
}

/// One distribution (Temurin, Corretto, ...) and its packages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DistributionCache {
    pub distribution: Distribution,
    pub display_name: String,
    pub packages: Vec<JdkMetadata>,
}

/// Kopi serializes known distributions as a string and others as `{"other": name}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Distribution {
    Known(String),
    Other { other: String },
}

/// One downloadable JDK package.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JdkMetadata {
    pub id: String,
    pub distribution: String,
    pub version: Version,
    pub distribution_version: Version,
    pub architecture: String,
    pub operating_system: String,
    pub package_type: String,
    pub archive_type: String,
    pub download_url: String,
    pub checksum: Option<String>,
    pub checksum_type: Option<String>,
    pub size: u64,
    pub lib_c_type: String,
    pub javafx_bundled: bool,
    pub term_of_support: String,
    pub release_status: String,
    pub latest_build_available: bool,
}

/// A version as Kopi stores it: numeric components, optional build and pre-release.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Version {
    pub components: Vec<u64>,
    pub build: Option<Vec<u64>>,
    pub pre_release: Option<String>,
}

const SAMPLE: &str = include_str!("../samples/kopi-metadata.json");

/// Publishes the sample cache into the store at `root` and reads it back typed.
fn round_trip(
    root: &Path,
) -> Result<(MetadataCache, snapcache::PublishOutcome), Box<dyn std::error::Error>> {
    let cache: MetadataCache = serde_json::from_str(SAMPLE)?;
    let store = Store::open(
        StoreOptions::new(root)
            .keep(3)
            .lock_timeout(LockWait::For(Duration::from_secs(30)))
            .purpose("kopi cache refresh"),
    )?;
    let outcome = store.publish_json(&cache, &PublishOptions::default().note("foojay API"))?;
    let back: MetadataCache = store.read_json()?;
    if back != cache {
        return Err("the cache read back differs from the one published".into());
    }
    Ok((back, outcome))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = match std::env::args_os().nth(1) {
        Some(dir) => dir.into(),
        None => std::env::temp_dir().join("snapcache-kopi-example"),
    };
    let (cache, outcome) = round_trip(&root)?;
    let packages: usize = cache.distributions.values().map(|d| d.packages.len()).sum();
    println!(
        "published generation {} ({} bytes, blake3 {}) to {}: {} distributions, {packages} packages, read back typed and equal",
        outcome.generation,
        outcome.bytes,
        outcome.hash,
        root.display(),
        cache.distributions.len(),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn the_kopi_cache_round_trips_typed() {
        let dir = tempfile::tempdir().unwrap();
        let (cache, outcome) = round_trip(dir.path()).unwrap();
        let packages: usize = cache.distributions.values().map(|d| d.packages.len()).sum();
        assert_eq!(packages, 546, "the sample Kopi cache holds 546 packages");
        assert_eq!(outcome.generation, 1);
        assert!(matches!(
            cache.distributions["microsoft"].distribution,
            Distribution::Other { .. }
        ));
        assert!(matches!(
            cache.distributions["temurin"].distribution,
            Distribution::Known(_)
        ));
        // Publishing the same cache again is recognised as unchanged.
        let (_, again) = round_trip(dir.path()).unwrap();
        assert!(!again.changed && again.generation == 1);
    }
}
