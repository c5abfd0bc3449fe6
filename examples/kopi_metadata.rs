//! How Kopi embeds snapcache: its metadata cache (`MetadataCache`, the shape
//! of `samples/kopi-metadata.json`, a cache file Kopi wrote) kept in a store
//! instead of one `metadata.json` written with temp file + fsync + rename.
//!
//! - `refresh` takes the store's writer handle, checks under the lock whether
//!   another process refreshed meanwhile, and only then "fetches" (a slow
//!   step standing in for the foojay API) and publishes. Concurrent refreshes
//!   fetch once.
//! - Errors are Kopi's own (`KopiError`, with Kopi's exit codes); a fetch
//!   error raised inside a publish source comes back as that same error.
//! - The fetch time is the store's `checked_at`, not a field of the payload,
//!   and Kopi's `HashMap`s are published as canonical JSON (sorted keys), so
//!   an unchanged fetch publishes equal bytes and reports `unchanged`.
//! - `info`, `history`, `rollback`, `gc` and `clear` are the cache commands
//!   Kopi gets on top; a legacy `metadata.json` is imported on first open.
//!
//! ```text
//! cargo run --example kopi_metadata -- STORE_DIR refresh|info|history|rollback|gc|clear
//! ```
//!
//! `cargo test` runs the tests at the bottom, including one where several
//! processes (this test binary, re-spawned) refresh at once.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use snapcache::{
    GcOptions, LockBudget, LockWait, PublishOptions, PublishOutcome, Store, StoreOptions, Timestamp,
};

// ------------------------------------------------------------------ model

/// Kopi's `MetadataCache`: every distribution's packages, as fetched.
///
/// `HashMap`s, as Kopi has them: their order differs from process to
/// process, so the cache is published as canonical JSON (sorted keys), and
/// equal content gives equal bytes (an unchanged fetch is `unchanged`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetadataCache {
    pub version: u32,
    /// When the cache was fetched. Not part of the payload: it is the
    /// store's `checked_at` (filled in by [`load`]), so an unchanged fetch
    /// publishes equal bytes.
    #[serde(skip)]
    pub last_updated: Option<Timestamp>,
    pub distributions: HashMap<String, DistributionCache>,
    #[serde(default)]
    pub synonym_map: HashMap<String, String>,
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

impl MetadataCache {
    pub fn total_packages(&self) -> usize {
        self.distributions.values().map(|d| d.packages.len()).sum()
    }
}

// ----------------------------------------------------------------- errors

/// Kopi's errors (the ones the cache can cause), with Kopi's exit codes.
#[derive(Debug)]
pub enum KopiError {
    /// The metadata source failed (Kopi: exit 20).
    MetadataFetch(String),
    /// Kopi's `InvalidMetadata`: the cache is damaged or of another shape.
    InvalidMetadata(String),
    /// No cache yet.
    NoCache(PathBuf),
    /// The writer lock was not acquired within the budget.
    LockingTimeout(String),
    /// Ctrl-C while waiting (Kopi: exit 75).
    LockingCancelled(String),
    /// The cache directory is not safe to use (Kopi: exit 13).
    PermissionDenied(String),
    /// Anything else from the cache.
    Cache(snapcache::Error),
}

impl KopiError {
    /// Kopi's `get_exit_code` for these errors.
    pub fn exit_code(&self) -> i32 {
        match self {
            KopiError::MetadataFetch(_) => 20,
            KopiError::PermissionDenied(_) => 13,
            KopiError::LockingCancelled(_) => 75,
            _ => 1,
        }
    }
}

impl std::fmt::Display for KopiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KopiError::MetadataFetch(m) => write!(f, "Failed to fetch metadata: {m}"),
            KopiError::InvalidMetadata(m) => write!(f, "Invalid metadata format: {m}"),
            KopiError::NoCache(p) => write!(
                f,
                "No cache found at {}: run 'kopi cache refresh'",
                p.display()
            ),
            KopiError::LockingTimeout(m) => write!(f, "{m}; retry, or raise --lock-timeout"),
            KopiError::LockingCancelled(m) => write!(f, "{m}"),
            KopiError::PermissionDenied(m) => write!(f, "Permission denied: {m}"),
            KopiError::Cache(e) => write!(f, "Cache error: {e}"),
        }
    }
}

impl std::error::Error for KopiError {}

/// The one mapping from snapcache's errors to Kopi's: by predicate, never by
/// message text. A `KopiError` that a publish source returned comes back
/// as itself.
impl From<snapcache::Error> for KopiError {
    fn from(e: snapcache::Error) -> Self {
        let e = match e.into_source::<KopiError>() {
            Ok(mine) => return mine,
            Err(e) => e,
        };
        if e.is_lock_timeout() {
            KopiError::LockingTimeout(e.to_string())
        } else if e.is_interrupted() {
            KopiError::LockingCancelled(e.to_string())
        } else if e.is_untrusted() {
            KopiError::PermissionDenied(e.to_string())
        } else if e.is_corrupt() || matches!(e, snapcache::Error::UnexpectedShape { .. }) {
            KopiError::InvalidMetadata(e.to_string())
        } else if let snapcache::Error::NoStore { root, .. } = &e {
            KopiError::NoCache(root.clone())
        } else {
            KopiError::Cache(e)
        }
    }
}

// ------------------------------------------------------------ the cache

/// Where Kopi keeps its cache store: `$KOPI_HOME/cache/metadata`.
pub fn store_dir(kopi_home: &Path) -> PathBuf {
    kopi_home.join("cache").join("metadata")
}

/// Opens the store with Kopi's lock timeout and where it came from
/// (`--lock-timeout` > `KOPI_LOCK_TIMEOUT` > config), shown in messages.
pub fn open(root: &Path, budget: LockBudget) -> Result<Store, KopiError> {
    Ok(Store::open(
        StoreOptions::new(root)
            .keep(5)
            .lock_budget(budget)
            .purpose("kopi cache refresh"),
    )?)
}

/// The cache with its fetch time, read lock-free and verified.
pub fn load(store: &Store) -> Result<MetadataCache, KopiError> {
    let read = store.read_json_with_meta::<MetadataCache>()?;
    let mut cache = read.value;
    cache.last_updated = Some(read.meta.checked_at);
    Ok(cache)
}

/// Kopi's `is_stale`: from the pointer alone (no snapshot read).
pub fn is_stale(store: &Store, max_age: Duration) -> Result<bool, KopiError> {
    Ok(!store
        .current_generation()?
        .is_some_and(|meta| meta.is_fresh(max_age)))
}

/// What a refresh did.
#[derive(Debug)]
pub enum Refresh {
    /// Another process refreshed within `max_age`: no fetch.
    Fresh { generation: u64 },
    /// Fetched and published (`changed == false`: same content as before).
    Fetched(PublishOutcome),
}

/// `kopi cache refresh`: under the writer handle, fetch only when stale.
pub fn refresh(
    store: &Store,
    max_age: Duration,
    fetch: impl FnOnce() -> Result<MetadataCache, KopiError>,
) -> Result<Refresh, KopiError> {
    let mut writer = store.lock_writer()?;
    if writer.is_fresh(max_age) {
        let generation = writer.generation().unwrap_or(0);
        return Ok(Refresh::Fresh { generation });
    }
    // The slow part, under the lock: concurrent refreshers wait for it and
    // then find the store fresh.
    let cache = fetch()?;
    let outcome = writer.publish_json(&cache, &publish_options("foojay API"))?;
    Ok(Refresh::Fetched(outcome))
}

/// Kopi's `fetch_and_cache_distribution`: merge one distribution into the
/// cache, under the writer handle (the current cache cannot change between
/// the read and the publish).
pub fn refresh_distribution(
    store: &Store,
    name: &str,
    fetch: impl FnOnce(&str) -> Result<DistributionCache, KopiError>,
) -> Result<PublishOutcome, KopiError> {
    let mut writer = store.lock_writer()?;
    let mut cache = match writer.generation() {
        Some(_) => load(store)?,
        None => empty_cache(),
    };
    cache.distributions.insert(name.to_string(), fetch(name)?);
    Ok(writer.publish_json(&cache, &publish_options(name))?)
}

/// A refresh that streams the server's response body straight into the
/// store (no copy in memory). The fetch runs inside the publish source, so
/// its `KopiError` travels through snapcache and comes back as itself
/// (exit code 20), and nothing is published.
pub fn refresh_streaming(
    store: &Store,
    stream: impl FnOnce(&mut dyn Write) -> Result<u64, KopiError>,
) -> Result<(PublishOutcome, u64), KopiError> {
    let mut writer = store.lock_writer()?;
    Ok(
        writer.publish_with(&publish_options("foojay API, streamed"), |sink| {
            Ok(stream(sink)?)
        })?,
    )
}

/// Every publish: canonical JSON (equal content, equal bytes), with a note.
fn publish_options(note: &str) -> PublishOptions {
    PublishOptions::default().canonical(true).note(note)
}

/// On first open: a cache file of an earlier Kopi (`metadata.json`) becomes
/// generation 1, so users keep their cache. Checked again under the lock: of
/// several processes starting at once, one imports.
pub fn import_legacy(store: &Store, legacy: &Path) -> Result<Option<PublishOutcome>, KopiError> {
    if store.current_generation()?.is_some() || !legacy.is_file() {
        return Ok(None);
    }
    let mut writer = store.lock_writer()?;
    if writer.generation().is_some() {
        return Ok(None); // another process imported it meanwhile
    }
    let text = std::fs::read_to_string(legacy)
        .map_err(|e| KopiError::InvalidMetadata(format!("{}: {e}", legacy.display())))?;
    let cache: MetadataCache = serde_json::from_str(&text)
        .map_err(|e| KopiError::InvalidMetadata(format!("{}: {e}", legacy.display())))?;
    let note = format!("imported from {}", legacy.display());
    Ok(Some(writer.publish_json(&cache, &publish_options(&note))?))
}

fn empty_cache() -> MetadataCache {
    MetadataCache {
        version: 1,
        last_updated: None,
        distributions: HashMap::new(),
        synonym_map: HashMap::new(),
    }
}

// --------------------------------------------------- the example program

const SAMPLE: &str = include_str!("../samples/kopi-metadata.json");

/// Stands in for the foojay fetch: the sample cache, after
/// `KOPI_EXAMPLE_FETCH_MS` milliseconds; each fetch appends a line to
/// `KOPI_EXAMPLE_FETCH_LOG` when set (the tests count fetches with it).
fn fetch_from_foojay() -> Result<MetadataCache, KopiError> {
    if let Some(ms) = std::env::var("KOPI_EXAMPLE_FETCH_MS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        std::thread::sleep(Duration::from_millis(ms));
    }
    if let Some(log) = std::env::var_os("KOPI_EXAMPLE_FETCH_LOG") {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| KopiError::MetadataFetch(e.to_string()))?;
        writeln!(file, "fetch by pid {}", std::process::id())
            .map_err(|e| KopiError::MetadataFetch(e.to_string()))?;
    }
    serde_json::from_str(SAMPLE).map_err(|e| KopiError::MetadataFetch(e.to_string()))
}

/// The lock budget as Kopi resolves it: the environment, else its default.
fn lock_budget() -> LockBudget {
    match std::env::var("KOPI_LOCK_TIMEOUT")
        .ok()
        .and_then(|v| LockWait::parse(&v))
    {
        Some(wait) => LockBudget::labelled(wait, "KOPI_LOCK_TIMEOUT"),
        None => LockBudget::labelled(LockWait::For(Duration::from_secs(600)), "kopi's default"),
    }
}

fn run(root: &Path, command: &str) -> Result<(), KopiError> {
    let store = open(root, lock_budget())?;
    let max_age = Duration::from_secs(720 * 3600); // Kopi's default max_age_hours
    match command {
        "refresh" => match refresh(&store, max_age, fetch_from_foojay)? {
            Refresh::Fresh { generation } => {
                println!("fresh: generation {generation}, no fetch")
            }
            Refresh::Fetched(o) => println!(
                "fetched: generation {} {} ({} bytes)",
                o.generation,
                if o.changed { "published" } else { "unchanged" },
                o.bytes
            ),
        },
        "info" => {
            let cache = load(&store)?;
            let meta = store
                .current_generation()?
                .ok_or(KopiError::NoCache(root.into()))?;
            println!(
                "Location: {}",
                store.snapshot_path(meta.generation)?.display()
            );
            println!("Size: {} KB", meta.bytes / 1024);
            if let Some(t) = cache.last_updated {
                println!("Last updated: {t}");
            }
            println!("Distributions: {}", cache.distributions.len());
            println!("Total JDK packages: {}", cache.total_packages());
        }
        "history" => {
            for e in store.history()? {
                let mark = if e.current { "*" } else { " " };
                let note = e.note.as_deref().unwrap_or("");
                println!(
                    "{mark} {:>4}  {}  {:>8} B  {note}",
                    e.generation, e.created_at, e.bytes
                );
            }
        }
        "rollback" => {
            let o = store.rollback(None)?;
            println!(
                "rolled back from generation {} to {}",
                o.previous, o.generation
            );
        }
        "gc" => {
            let r = store.gc(&GcOptions::default())?;
            println!(
                "removed {} snapshots ({} bytes)",
                r.removed_snapshots, r.freed_bytes
            );
        }
        "clear" => match store.clear() {
            // A damaged pointer hides which generation was current: that
            // store held a cache too.
            Ok(r) if r.previous_generation.is_some() || r.pointer_damaged => {
                println!("Cache cleared successfully")
            }
            Ok(_) => println!("No cache to clear"),
            Err(snapcache::Error::NoStore { .. }) => println!("No cache to clear"),
            Err(e) => return Err(e.into()),
        },
        other => {
            return Err(KopiError::Cache(snapcache::Error::InvalidOption(format!(
                "unknown command {other:?}: use refresh, info, history, rollback, gc or clear"
            ))));
        }
    }
    Ok(())
}

fn main() {
    let mut args = std::env::args_os().skip(1);
    let root = args
        .next()
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("snapcache-kopi-example"));
    let command = args.next().map(|c| c.to_string_lossy().into_owned());
    if let Err(e) = run(&root, command.as_deref().unwrap_or("refresh")) {
        eprintln!("Error: {e}");
        std::process::exit(e.exit_code());
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::process::Command;

    fn sample() -> MetadataCache {
        serde_json::from_str(SAMPLE).unwrap()
    }

    fn store_in(dir: &Path) -> Store {
        open(
            &store_dir(dir),
            LockBudget::labelled(LockWait::For(Duration::from_secs(60)), "test"),
        )
        .unwrap()
    }

    #[test]
    fn the_kopi_cache_round_trips_typed_with_its_fetch_time() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_in(dir.path());
        assert!(is_stale(&store, Duration::from_secs(3600)).unwrap());
        let Refresh::Fetched(first) =
            refresh(&store, Duration::from_secs(3600), || Ok(sample())).unwrap()
        else {
            panic!("an empty store is stale");
        };
        assert!(first.changed && first.generation == 1);
        let cache = load(&store).unwrap();
        assert_eq!(
            cache.total_packages(),
            546,
            "the sample Kopi cache holds 546 packages"
        );
        assert!(
            cache
                .last_updated
                .is_some_and(|t| t.age() < Duration::from_secs(60))
        );
        assert!(matches!(
            cache.distributions["microsoft"].distribution,
            Distribution::Other { .. }
        ));
        assert!(matches!(
            cache.distributions["temurin"].distribution,
            Distribution::Known(_)
        ));
        assert!(!is_stale(&store, Duration::from_secs(3600)).unwrap());

        // Fresh: no fetch at all.
        let fresh = refresh(&store, Duration::from_secs(3600), || {
            panic!("fresh: not fetched")
        })
        .unwrap();
        assert!(matches!(fresh, Refresh::Fresh { generation: 1 }));
        // Stale, fetched again, same content: unchanged, no new generation,
        // but the fetch time moved.
        let before = store.current_generation().unwrap().unwrap().checked_at;
        std::thread::sleep(Duration::from_millis(5));
        let Refresh::Fetched(again) = refresh(&store, Duration::ZERO, || Ok(sample())).unwrap()
        else {
            panic!("max_age 0 is always stale");
        };
        assert!(!again.changed && again.generation == 1, "{again:?}");
        assert!(store.current_generation().unwrap().unwrap().checked_at > before);
    }

    #[test]
    fn fetch_errors_keep_kopis_exit_codes_and_change_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_in(dir.path());
        // Fetch fails before any publish (outside the source).
        let err = refresh(&store, Duration::ZERO, || {
            Err(KopiError::MetadataFetch("HTTP 503".into()))
        })
        .unwrap_err();
        assert!(
            matches!(err, KopiError::MetadataFetch(_)) && err.exit_code() == 20,
            "{err}"
        );
        // No cache yet: Kopi's own "no cache" error.
        assert!(matches!(load(&store), Err(KopiError::NoCache(_))));
        refresh(&store, Duration::ZERO, || Ok(sample())).unwrap();
        // Fetch fails inside the publish source, mid-stream: the same
        // KopiError comes back through snapcache, not a stringified one.
        let err = refresh_streaming(&store, |body| {
            body.write_all(b"{\"version\":1,")
                .map_err(|e| KopiError::MetadataFetch(e.to_string()))?;
            Err(KopiError::MetadataFetch("connection reset".into()))
        })
        .unwrap_err();
        assert!(
            matches!(&err, KopiError::MetadataFetch(m) if m == "connection reset"),
            "{err}"
        );
        assert_eq!(err.exit_code(), 20);
        assert_eq!(store.history().unwrap().len(), 1, "nothing was published");
        // A stream that succeeds returns its own value (bytes streamed).
        let (outcome, streamed) = refresh_streaming(&store, |body| {
            body.write_all(SAMPLE.as_bytes())
                .map_err(|e| KopiError::MetadataFetch(e.to_string()))?;
            Ok(SAMPLE.len() as u64)
        })
        .unwrap();
        assert_eq!((outcome.generation, streamed), (2, outcome.bytes));
        // A lock timeout is Kopi's LockingTimeout, and names Kopi's own setting.
        let held = store.lock_writer().unwrap();
        let impatient = open(
            &store_dir(dir.path()),
            LockBudget::labelled(LockWait::TryOnce, "KOPI_LOCK_TIMEOUT"),
        )
        .unwrap();
        let err = refresh(&impatient, Duration::ZERO, || Ok(sample())).unwrap_err();
        assert!(
            matches!(&err, KopiError::LockingTimeout(m) if m.contains("KOPI_LOCK_TIMEOUT")),
            "{err}"
        );
        drop(held);
    }

    #[test]
    fn one_distribution_merges_and_rollback_gc_clear_work() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_in(dir.path());
        refresh(&store, Duration::ZERO, || Ok(sample())).unwrap();
        let mut corretto = sample().distributions["corretto"].clone();
        corretto.packages.truncate(1);
        let outcome = refresh_distribution(&store, "corretto", |_| Ok(corretto)).unwrap();
        assert_eq!(outcome.generation, 2);
        assert_eq!(
            load(&store).unwrap().distributions["corretto"]
                .packages
                .len(),
            1
        );
        // Roll back to the full cache.
        assert_eq!(store.rollback(None).unwrap().generation, 1);
        let full = sample().distributions["corretto"].packages.len();
        assert_eq!(
            load(&store).unwrap().distributions["corretto"]
                .packages
                .len(),
            full
        );
        assert_eq!(
            store
                .gc(&GcOptions::default().keep(1))
                .unwrap()
                .dropped_generations,
            Vec::<u64>::new()
        );
        run(&store_dir(dir.path()), "clear").unwrap();
        assert!(matches!(load(&store), Err(KopiError::NoCache(_))));
        assert!(
            store_dir(dir.path()).join("lock").exists(),
            "clear keeps the lock"
        );
    }

    #[test]
    fn a_legacy_metadata_json_is_imported_once_on_first_open() {
        let dir = tempfile::tempdir().unwrap();
        let legacy = dir.path().join("cache").join("metadata.json");
        std::fs::create_dir_all(legacy.parent().unwrap()).unwrap();
        std::fs::write(&legacy, SAMPLE).unwrap();
        let store = store_in(dir.path());
        let imported = import_legacy(&store, &legacy).unwrap().expect("imported");
        assert_eq!(imported.generation, 1);
        assert_eq!(load(&store).unwrap().total_packages(), 546);
        assert!(
            import_legacy(&store, &legacy).unwrap().is_none(),
            "only once"
        );
        let note = store.history().unwrap()[0].note.clone().unwrap();
        assert!(note.starts_with("imported from"), "{note}");
    }

    /// Environment of the child processes of the test below.
    const CHILD_STORE: &str = "KOPI_EXAMPLE_CHILD_STORE";

    /// Not a test of its own: the body of each child process of
    /// `concurrent_refreshes_fetch_once` (this test binary, re-spawned).
    #[test]
    #[ignore = "run as a child process by concurrent_refreshes_fetch_once"]
    fn child_refresh() {
        let root = std::env::var_os(CHILD_STORE).expect("run by concurrent_refreshes_fetch_once");
        let store = open(Path::new(&root), lock_budget()).unwrap();
        match refresh(&store, Duration::from_secs(3600), fetch_from_foojay).unwrap() {
            Refresh::Fresh { generation } => println!("child: fresh {generation}"),
            Refresh::Fetched(o) => println!("child: fetched {}", o.generation),
        }
    }

    #[test]
    fn concurrent_refreshes_fetch_once() {
        let dir = tempfile::tempdir().unwrap();
        let root = store_dir(dir.path());
        let log = dir.path().join("fetches.log");
        let me = std::env::current_exe().unwrap();
        let children: Vec<_> = (0..6)
            .map(|_| {
                Command::new(&me)
                    .args([
                        "--ignored",
                        "--exact",
                        "tests::child_refresh",
                        "--nocapture",
                        "--test-threads=1",
                    ])
                    .env(CHILD_STORE, &root)
                    .env("KOPI_EXAMPLE_FETCH_MS", "400")
                    .env("KOPI_EXAMPLE_FETCH_LOG", &log)
                    .env("KOPI_LOCK_TIMEOUT", "120")
                    .output_child()
            })
            .collect();
        let outputs: Vec<_> = children
            .into_iter()
            .map(|c| c.wait_with_output().unwrap())
            .collect();
        let mut fetched = 0;
        for out in &outputs {
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "child failed: {stdout} {}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(
                stdout.contains("1 passed"),
                "the child ran its body: {stdout}"
            );
            fetched += stdout.matches("child: fetched").count();
        }
        let lines = std::fs::read_to_string(&log).unwrap();
        assert_eq!(
            lines.lines().count(),
            1,
            "exactly one fetch among 6 processes: {lines}"
        );
        assert_eq!(fetched, 1);
        let store = open(&root, lock_budget()).unwrap();
        assert_eq!(store.history().unwrap().len(), 1);
    }

    /// `Command::spawn` with piped output, so six children run at once.
    trait OutputChild {
        fn output_child(&mut self) -> std::process::Child;
    }

    impl OutputChild for Command {
        fn output_child(&mut self) -> std::process::Child {
            self.stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        }
    }
}
