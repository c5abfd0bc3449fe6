//! One behaviour suite, every backend (issue 13): each behaviour is written
//! once, as a function of a [`Backend`] under test, and run against
//!
//! - `advisory`: a local store with the kernel's advisory lock (the default);
//! - `lease`: a local store on the lease backend (`--lock-backend lease`);
//! - `lease_nolock`: the lease backend chosen by `SNAPCACHE_LOCK_BACKEND`,
//!   with advisory locks failing as on an NFS `nolock` mount (test hook
//!   `SNAPCACHE_TEST_NO_ADVISORY_LOCK`), so only the lease and the commit
//!   records exclude writers;
//! - `object_store`: `--store s3://$SNAPCACHE_TEST_BUCKET/<random>`, only in
//!   a build with the `s3` feature and with a server's environment
//!   (`tools/s3-server env`); otherwise each of its tests prints why it
//!   skipped.
//!
//! Every test drives the built binary in real processes. Where the backends
//! differ on purpose (the snapshot grace of the shared-store backends), the
//! difference is asserted, not skipped: [`Backend::has_grace`].

use std::collections::{BTreeSet, HashMap};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::Value;

use crate::common::*;

/// The backends the suite runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arm {
    Advisory,
    Lease,
    LeaseNolock,
    ObjectStore,
}

/// A store on one backend, with a scratch directory for payloads.
pub struct Backend {
    pub arm: Arm,
    /// Payloads, counters and (local arms) the store itself.
    pub scratch: TestStore,
    /// What `--store` is given: a directory or an `s3://` URL.
    pub location: String,
    #[cfg(feature = "s3")]
    client: Option<snapcache::object_store::s3::S3Client>,
}

/// A name no other test (or earlier run) uses: the object store is shared.
fn unique_name(test: &str) -> String {
    static COUNT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let seed = format!(
        "{test}-{}-{nanos}-{}",
        std::process::id(),
        COUNT.fetch_add(1, Ordering::Relaxed)
    );
    format!("{test}-{}", &hash_hex(seed.as_bytes())[..16])
}

impl Backend {
    /// The store under test, or why this arm cannot run here.
    pub fn new(arm: Arm, test: &str) -> Result<Backend, String> {
        let scratch = TestStore::new();
        let location = match arm {
            Arm::ObjectStore => object_store_location(test)?,
            _ => scratch
                .root()
                .to_str()
                .expect("utf-8 temp path")
                .to_string(),
        };
        #[cfg(feature = "s3")]
        let client = match arm {
            Arm::ObjectStore => Some(s3_client(&location)),
            _ => None,
        };
        Ok(Backend {
            arm,
            scratch,
            location,
            #[cfg(feature = "s3")]
            client,
        })
    }

    /// Whether dropped snapshots stay for the grace period (the backends
    /// for shared stores) rather than going at once (advisory).
    pub fn has_grace(&self) -> bool {
        self.arm != Arm::Advisory
    }

    /// The name of the backend as `refresh --json` reports it.
    pub fn backend_name(&self) -> &'static str {
        match self.arm {
            Arm::Advisory => "advisory",
            Arm::Lease | Arm::LeaseNolock => "lease",
            Arm::ObjectStore => "object-store",
        }
    }

    /// `snapcache --store <location> <args>` on this backend, environment
    /// cleaned (the object store's `AWS_*` settings are inherited).
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(bin());
        cmd.arg("--store").arg(&self.location);
        for var in [
            "SNAPCACHE_DIR",
            "SNAPCACHE_LOCK_TIMEOUT",
            "SNAPCACHE_KEEP",
            "SNAPCACHE_LOG",
            "SNAPCACHE_LOCK_BACKEND",
            "SNAPCACHE_LEASE_SECS",
            "SNAPCACHE_TEST_HOOKS",
            "SNAPCACHE_TEST_NO_ADVISORY_LOCK",
            "SNAPCACHE_TEST_STOP_BEFORE_COMMIT",
            "SNAPCACHE_TEST_SNAPSHOT_GRACE_SECS",
            "RUST_LOG",
            "NO_COLOR",
        ] {
            cmd.env_remove(var);
        }
        match self.arm {
            Arm::Advisory | Arm::ObjectStore => {}
            Arm::Lease => {
                cmd.args(["--lock-backend", "lease"]);
            }
            Arm::LeaseNolock => {
                cmd.env("SNAPCACHE_LOCK_BACKEND", "lease")
                    .env("SNAPCACHE_TEST_HOOKS", "1")
                    .env("SNAPCACHE_TEST_NO_ADVISORY_LOCK", "1");
            }
        }
        cmd.args(args).stdin(Stdio::null());
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Output {
        run_with_timeout(self.command(args))
    }

    /// Runs with `--json`; the exit code and the parsed stdout.
    pub fn json(&self, args: &[&str]) -> (i32, Value) {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = self.run(&all);
        (code(&out), parse_json(&out, args))
    }

    /// Runs with `--json` and asserts success.
    pub fn ok_json(&self, args: &[&str]) -> Value {
        let (code, value) = self.json(args);
        assert_eq!(code, 0, "{:?} {args:?} must succeed: {value}", self.arm);
        value
    }

    /// Publishes `bytes` (from a file); the parsed outcome.
    pub fn refresh(&self, bytes: &[u8], extra: &[&str]) -> Value {
        let file = self.payload_file(bytes);
        let mut args = vec!["refresh", "--from", file.as_str()];
        args.extend_from_slice(extra);
        self.ok_json(&args)
    }

    /// A payload file in the scratch directory (one per content).
    pub fn payload_file(&self, bytes: &[u8]) -> String {
        let path = self
            .scratch
            .payload(&format!("p-{}", &hash_hex(bytes)[..16]), bytes);
        path.to_str().expect("utf-8 temp path").to_string()
    }

    /// `show` (with `args`): exit code and stdout.
    pub fn show(&self, args: &[&str]) -> (i32, Vec<u8>) {
        let mut all = vec!["show"];
        all.extend_from_slice(args);
        let out = self.run(&all);
        (code(&out), out.stdout)
    }

    /// The retained generation numbers and the current one.
    pub fn generations(&self) -> (Vec<u64>, Option<u64>) {
        let history = self.ok_json(&["history"]);
        let list = history["generations"].as_array().expect("generations");
        let numbers = list
            .iter()
            .map(|g| g["generation"].as_u64().expect("number"))
            .collect();
        let current = list
            .iter()
            .find(|g| g["current"] == true)
            .and_then(|g| g["generation"].as_u64());
        (numbers, current)
    }

    /// Writes an object or file of the store directly, as a foreign party
    /// (or damage) would: `key` is relative to the store (`snapshots/<h>`).
    pub fn put_raw(&self, key: &str, bytes: &[u8]) {
        #[cfg(feature = "s3")]
        if let Some(client) = &self.client {
            client.put(key, bytes).expect("put the object");
            return;
        }
        let path = self.scratch.root().join(key);
        if std::fs::metadata(&path).is_ok() {
            // Snapshots are read-only; damage does not care.
            make_owner_writable(&path);
        }
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(&path, bytes).expect("write the file");
    }

    /// Whether an object or file exists in the store.
    pub fn exists_raw(&self, key: &str) -> bool {
        #[cfg(feature = "s3")]
        if let Some(client) = &self.client {
            return client.head(key).expect("head the object").is_some();
        }
        std::fs::symlink_metadata(self.scratch.root().join(key)).is_ok()
    }

    /// The bytes of an object or file of the store, read directly.
    pub fn get_raw(&self, key: &str) -> Option<Vec<u8>> {
        #[cfg(feature = "s3")]
        if let Some(client) = &self.client {
            return client.get(key).expect("get the object").map(|o| o.data);
        }
        std::fs::read(self.scratch.root().join(key)).ok()
    }

    /// The names under `snapshots/`, sorted.
    pub fn snapshot_names(&self) -> Vec<String> {
        #[cfg(feature = "s3")]
        if let Some(client) = &self.client {
            let mut names: Vec<String> = client
                .list("snapshots/")
                .expect("list the snapshots")
                .into_iter()
                .filter_map(|o| o.key.rsplit('/').next().map(str::to_string))
                .collect();
            names.sort();
            return names;
        }
        self.scratch.files_in("snapshots")
    }
}

/// `s3://$SNAPCACHE_TEST_BUCKET/backends/<unique>`, or why not.
fn object_store_location(test: &str) -> Result<String, String> {
    if !cfg!(feature = "s3") {
        return Err(
            "this test binary was built without the `s3` feature (cargo test --features s3 --test cli backends)".into(),
        );
    }
    match (
        std::env::var("SNAPCACHE_TEST_BUCKET"),
        std::env::var("AWS_ENDPOINT_URL"),
    ) {
        (Ok(bucket), Ok(_)) if !bucket.is_empty() => Ok(format!(
            "s3://{bucket}/backends/{}",
            unique_name(&test.replace('_', "-"))
        )),
        _ => Err("SNAPCACHE_TEST_BUCKET and AWS_ENDPOINT_URL are not set (eval \"$(tools/s3-server env | sed 's/^/export /')\" with the server running)".into()),
    }
}

#[cfg(feature = "s3")]
fn s3_client(location: &str) -> snapcache::object_store::s3::S3Client {
    use snapcache::object_store::s3::{S3Client, S3Location, S3Settings};
    let mut client = S3Client::new(
        S3Location::parse(location).expect("the test's location"),
        S3Settings::from_env().expect("the server's settings"),
    )
    .expect("an S3 client");
    client
        .probe_conditional_writes()
        .expect("the test server honours conditional writes");
    client
}

fn parse_json(out: &Output, args: &[&str]) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{args:?}: --json output must be one JSON object ({e}): {:?} / stderr {:?}",
            text(&out.stdout),
            text(&out.stderr)
        )
    })
}

/// Runs `behaviour` on `arm`, or prints why the arm cannot run here.
pub fn on(arm: Arm, test: &str, behaviour: fn(&Backend)) {
    match Backend::new(arm, test) {
        Ok(backend) => behaviour(&backend),
        Err(why) => eprintln!("SKIPPED backends::{arm:?}::{test}: {why}"),
    }
}

/// One `#[test]` per behaviour and backend: `backends::<arm>::<behaviour>`.
macro_rules! on_every_backend {
    ($($behaviour:ident),* $(,)?) => {
        mod advisory {
            $(#[test] fn $behaviour() { super::on(super::Arm::Advisory, stringify!($behaviour), super::$behaviour) })*
        }
        mod lease {
            $(#[test] fn $behaviour() { super::on(super::Arm::Lease, stringify!($behaviour), super::$behaviour) })*
        }
        mod lease_nolock {
            $(#[test] fn $behaviour() { super::on(super::Arm::LeaseNolock, stringify!($behaviour), super::$behaviour) })*
        }
        mod object_store {
            $(#[test] fn $behaviour() { super::on(super::Arm::ObjectStore, stringify!($behaviour), super::$behaviour) })*
        }
    };
}

on_every_backend!(
    publish_show_round_trip_with_the_hash_verified,
    unchanged_content_is_no_new_generation,
    max_age_skips_a_fresh_store_and_not_a_stale_one,
    concurrent_exec_refreshes_run_the_command_once,
    rollback_switches_generations_and_numbers_go_on,
    forget_drops_chosen_generations_never_the_current_one,
    gc_keep_drops_the_oldest,
    gc_older_than_keeps_the_generation_current_at_the_cutoff,
    dropped_snapshots_go_after_the_grace_and_not_before,
    clear_empties_the_store_and_numbering_restarts,
    history_and_status_json_keys,
    concurrent_writers_and_verifying_readers_lose_nothing,
    a_damaged_snapshot_is_never_served,
    a_foreign_object_under_a_snapshot_name_is_never_served,
);

// ------------------------------------------------------------ behaviours

fn publish_show_round_trip_with_the_hash_verified(s: &Backend) {
    let payload = json_payload(20_000, 1);
    let outcome = s.refresh(&payload, &[]);
    assert_eq!(outcome["generation"], 1, "{outcome}");
    assert_eq!(outcome["changed"], true);
    assert_eq!(outcome["hash"], hash_hex(&payload), "the hash is blake3");
    assert_eq!(outcome["bytes"], payload.len());
    assert_eq!(outcome["backend"], s.backend_name(), "{outcome}");
    assert_eq!(s.show(&[]), (0, payload.clone()), "byte for byte");
    assert_eq!(s.show(&["--generation", "1"]), (0, payload.clone()));
    let verify = s.ok_json(&["verify"]);
    assert_eq!(verify["ok"], true, "{verify}");
    assert_eq!(verify["verified_generations"], serde_json::json!([1]));
    assert!(
        s.snapshot_names().contains(&hash_hex(&payload)),
        "the snapshot is named by its hash: {:?}",
        s.snapshot_names()
    );
}

fn unchanged_content_is_no_new_generation(s: &Backend) {
    let first = s.refresh(b"[\"same\"]", &[]);
    std::thread::sleep(Duration::from_millis(20));
    let again = s.refresh(b"[\"same\"]", &[]);
    assert_eq!(again["changed"], false, "{again}");
    assert_eq!(again["generation"], 1);
    assert_eq!(again["hash"], first["hash"]);
    assert_eq!(s.generations(), (vec![1], Some(1)));
    let status = s.ok_json(&["status"]);
    let created = status["created_at"].as_str().unwrap();
    let checked = status["checked_at"].as_str().unwrap();
    assert!(
        checked > created,
        "an unchanged refresh still counts as a refresh: {status}"
    );
}

fn max_age_skips_a_fresh_store_and_not_a_stale_one(s: &Backend) {
    s.refresh(b"[1]", &[]);
    let skipped = s.refresh(b"[2]", &["--max-age", "1h"]);
    assert_eq!(skipped["skipped"], true, "{skipped}");
    assert_eq!(skipped["generation"], 1);
    assert_eq!(s.show(&[]), (0, b"[1]".to_vec()));
    std::thread::sleep(Duration::from_millis(1100));
    let stale = s.refresh(b"[2]", &["--max-age", "1s"]);
    assert_eq!(stale["skipped"], false, "{stale}");
    assert_eq!(stale["generation"], 2);
    assert_eq!(s.show(&[]), (0, b"[2]".to_vec()));
}

fn concurrent_exec_refreshes_run_the_command_once(s: &Backend) {
    const N: usize = 4;
    let counter = s.scratch.scratch("runs");
    let script = format!(
        "echo run >> '{}'; sleep 0.5; echo '[\"fresh\"]'",
        counter.display()
    );
    let children: Vec<_> = (0..N)
        .map(|_| {
            s.command(&[
                "--json",
                "refresh",
                "--lock-timeout",
                "60",
                "--max-age",
                "1h",
                "--exec",
                "sh",
                "-c",
                &script,
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn")
        })
        .collect();
    let outcomes: Vec<Value> = children
        .into_iter()
        .map(|c| {
            let out = wait_output(c, COMMAND_TIMEOUT);
            assert_eq!(code(&out), 0, "{}", text(&out.stderr));
            parse_json(&out, &["refresh"])
        })
        .collect();
    let runs = std::fs::read_to_string(&counter).expect("the command ran");
    assert_eq!(runs.lines().count(), 1, "the command ran exactly once");
    assert_eq!(
        outcomes.iter().filter(|o| o["skipped"] == true).count(),
        N - 1,
        "{outcomes:?}"
    );
    assert!(
        outcomes.iter().all(|o| o["generation"] == 1),
        "{outcomes:?}"
    );
}

fn rollback_switches_generations_and_numbers_go_on(s: &Backend) {
    for n in 1..=3u8 {
        s.refresh(format!("[{n}]").as_bytes(), &[]);
    }
    let back = s.ok_json(&["rollback"]);
    assert_eq!(
        (&back["previous"], &back["generation"]),
        (&3.into(), &2.into())
    );
    assert_eq!(s.show(&[]), (0, b"[2]".to_vec()));
    let to = s.ok_json(&["rollback", "--to", "1"]);
    assert_eq!(to["generation"], 1, "{to}");
    assert_eq!(s.show(&[]), (0, b"[1]".to_vec()));
    assert_eq!(s.generations(), (vec![1, 2, 3], Some(1)));
    let next = s.refresh(b"[4]", &[]);
    assert_eq!(next["generation"], 4, "numbers are never reused: {next}");
    assert_eq!(s.generations(), (vec![1, 2, 3, 4], Some(4)));
}

fn forget_drops_chosen_generations_never_the_current_one(s: &Backend) {
    for n in 1..=3u8 {
        s.refresh(format!("[{n}]").as_bytes(), &[]);
    }
    let report = s.ok_json(&["forget", "1"]);
    assert_eq!(report["forgotten"], serde_json::json!([1]), "{report}");
    let removed = report["removed_snapshots"].as_u64().unwrap();
    assert_eq!(removed, u64::from(!s.has_grace()), "{report}");
    assert_eq!(s.generations(), (vec![2, 3], Some(3)));
    let (code, gone) = s.show(&["--generation", "1"]);
    assert_eq!((code, gone.is_empty()), (1, true), "forgotten");
    let (code, err) = s.json(&["forget", "3"]);
    assert_eq!(code, 1, "the current generation cannot be forgotten: {err}");
    assert_eq!(s.generations(), (vec![2, 3], Some(3)));
    assert_eq!(s.show(&[]), (0, b"[3]".to_vec()));
}

fn gc_keep_drops_the_oldest(s: &Backend) {
    let payloads: Vec<Vec<u8>> = (1..=5u8).map(|n| format!("[{n}]").into_bytes()).collect();
    for p in &payloads {
        s.refresh(p, &[]);
    }
    let dry = s.ok_json(&["gc", "--keep", "2", "--dry-run"]);
    assert_eq!(
        dry["dropped_generations"],
        serde_json::json!([1, 2]),
        "{dry}"
    );
    assert_eq!(
        s.generations().0,
        vec![1, 2, 3, 4, 5],
        "a dry run changes nothing"
    );
    let report = s.ok_json(&["gc", "--keep", "2"]);
    assert_eq!(
        report["dropped_generations"],
        serde_json::json!([1, 2]),
        "{report}"
    );
    assert_eq!(s.generations(), (vec![3, 4, 5], Some(5)));
    let dropped_still_there = payloads[..2]
        .iter()
        .filter(|p| s.exists_raw(&format!("snapshots/{}", hash_hex(p))))
        .count();
    if s.has_grace() {
        assert_eq!(
            report["removed_snapshots"], 0,
            "kept for the grace: {report}"
        );
        assert_eq!(dropped_still_there, 2);
    } else {
        assert_eq!(report["removed_snapshots"], 2, "{report}");
        assert_eq!(dropped_still_there, 0);
    }
    assert_eq!(s.show(&["--generation", "1"]).0, 1, "no longer retained");
    assert_eq!(s.show(&["--generation", "3"]), (0, payloads[2].clone()));
}

fn gc_older_than_keeps_the_generation_current_at_the_cutoff(s: &Backend) {
    s.refresh(b"[1]", &[]);
    s.refresh(b"[2]", &[]);
    std::thread::sleep(Duration::from_millis(1500));
    s.refresh(b"[3]", &[]);
    s.refresh(b"[4]", &[]);
    let report = s.ok_json(&["gc", "--older-than", "1s"]);
    // 1 and 2 are older than the cutoff; 2 was current then, so it stays.
    assert_eq!(
        report["dropped_generations"],
        serde_json::json!([1]),
        "{report}"
    );
    assert_eq!(s.generations(), (vec![2, 3, 4], Some(4)));
    assert_eq!(s.show(&["--generation", "2"]), (0, b"[2]".to_vec()));
}

fn dropped_snapshots_go_after_the_grace_and_not_before(s: &Backend) {
    s.refresh(b"[1]", &[]);
    s.refresh(b"[2]", &[]);
    let dropped = format!("snapshots/{}", hash_hex(b"[1]"));
    // A 2 s grace (test hook): kept before it ends, deleted after.
    let with_grace = |args: &[&str]| {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let mut cmd = s.command(&all);
        cmd.env("SNAPCACHE_TEST_HOOKS", "1")
            .env("SNAPCACHE_TEST_SNAPSHOT_GRACE_SECS", "2");
        let out = run_with_timeout(cmd);
        assert_eq!(code(&out), 0, "{args:?}: {}", text(&out.stderr));
        parse_json(&out, args)
    };
    let listed = |list: &Value| {
        list.as_array()
            .expect("a list")
            .iter()
            .filter(|k| {
                k["path"]
                    .as_str()
                    .is_some_and(|p| p.ends_with(&hash_hex(b"[1]")))
            })
            .count()
    };
    let report = with_grace(&["forget", "1"]);
    if !s.has_grace() {
        assert_eq!(report["removed_snapshots"], 1, "removed at once: {report}");
        assert!(!s.exists_raw(&dropped));
        let verify = with_grace(&["verify"]);
        assert_eq!(verify["in_grace"], serde_json::json!([]), "{verify}");
        return;
    }
    assert_eq!(report["removed_snapshots"], 0, "within the grace: {report}");
    assert!(s.exists_raw(&dropped), "kept for the grace");
    let verify = with_grace(&["verify"]);
    assert_eq!(listed(&verify["in_grace"]), 1, "kept for grace: {verify}");
    assert!(verify["in_grace"][0]["until"].is_string(), "{verify}");
    assert_eq!(
        listed(&verify["reclaimable"]),
        0,
        "not reclaimable yet: {verify}"
    );
    let human = s.run(&["verify"]);
    assert!(
        text(&human.stdout).contains("kept for grace: 1 unreferenced snapshot(s)"),
        "{}",
        text(&human.stdout)
    );
    let report = with_grace(&["gc"]);
    assert_eq!(report["removed_snapshots"], 0, "gc keeps it too: {report}");
    assert!(s.exists_raw(&dropped));
    std::thread::sleep(Duration::from_millis(2300));
    let verify = with_grace(&["verify"]);
    assert_eq!(listed(&verify["in_grace"]), 0, "{verify}");
    assert_eq!(
        listed(&verify["reclaimable"]),
        1,
        "reclaimable after the grace: {verify}"
    );
    let report = with_grace(&["gc"]);
    assert_eq!(report["removed_snapshots"], 1, "after the grace: {report}");
    assert!(!s.exists_raw(&dropped), "deleted after the grace");
    assert_eq!(s.show(&[]), (0, b"[2]".to_vec()));
    assert_eq!(s.ok_json(&["verify"])["ok"], true);
}

fn clear_empties_the_store_and_numbering_restarts(s: &Backend) {
    s.refresh(b"[1]", &[]);
    s.refresh(b"[2]", &[]);
    let report = s.ok_json(&["clear"]);
    assert_eq!(report["previous_generation"], 2, "{report}");
    let (code, err) = s.json(&["show"]);
    assert_eq!(code, 1);
    assert_eq!(err["error"]["kind"], "no-store", "{err}");
    let status = s.ok_json(&["status"]);
    assert!(status["generation"].is_null(), "nothing current: {status}");
    let again = s.refresh(b"[3]", &[]);
    assert_eq!(again["generation"], 1, "{again}");
    assert_eq!(s.generations(), (vec![1], Some(1)));
    assert_eq!(s.show(&[]), (0, b"[3]".to_vec()));
}

fn history_and_status_json_keys(s: &Backend) {
    s.refresh(b"[1]", &["--note", "first"]);
    let has = |value: &Value, keys: &[&str]| {
        let missing: Vec<&&str> = keys.iter().filter(|k| value.get(**k).is_none()).collect();
        assert!(
            missing.is_empty(),
            "{:?}: missing {missing:?} in {value}",
            s.arm
        );
    };
    let history = s.ok_json(&["history"]);
    let entry = &history["generations"][0];
    has(
        entry,
        &[
            "generation",
            "hash",
            "bytes",
            "created_at",
            "age_seconds",
            "created_at_in_future",
            "note",
            "current",
        ],
    );
    assert_eq!(
        (&entry["note"], &entry["current"]),
        (&"first".into(), &true.into())
    );
    let status = s.ok_json(&["status"]);
    has(
        &status,
        &[
            "store",
            "generation",
            "hash",
            "bytes",
            "created_at",
            "checked_at",
            "age_seconds",
            "created_age_seconds",
            "checked_age_seconds",
            "retained",
            "lock",
            "note",
        ],
    );
    assert_eq!(status["store"], s.location.as_str(), "{status}");
    assert_eq!(
        (&status["generation"], &status["retained"]),
        (&1.into(), &1.into())
    );
    assert_eq!(status["lock"]["held"], false, "{status}");
}

fn concurrent_writers_and_verifying_readers_lose_nothing(s: &Backend) {
    const WRITERS: usize = 3;
    const ROUNDS: usize = 4;
    const READERS: usize = 2;
    let payload = |w: usize, r: usize| format!("{{\"writer\":{w},\"round\":{r}}}").into_bytes();
    s.refresh(b"{\"writer\":null}", &[]);
    let files: Vec<Vec<String>> = (0..WRITERS)
        .map(|w| {
            (0..ROUNDS)
                .map(|r| s.payload_file(&payload(w, r)))
                .collect()
        })
        .collect();
    let mut known: BTreeSet<Vec<u8>> = (0..WRITERS)
        .flat_map(|w| (0..ROUNDS).map(move |r| payload(w, r)))
        .collect();
    known.insert(b"{\"writer\":null}".to_vec());
    let done = std::sync::atomic::AtomicBool::new(false);
    let (outcomes, reads) = std::thread::scope(|scope| {
        let readers: Vec<_> = (0..READERS)
            .map(|_| {
                scope.spawn(|| {
                    let mut seen = Vec::new();
                    let mut statuses = Vec::new();
                    while !done.load(Ordering::Relaxed) {
                        let (code, bytes) = s.show(&[]);
                        assert_eq!(code, 0, "every read succeeds");
                        assert!(known.contains(&bytes), "a read served {:?}", text(&bytes));
                        seen.push(bytes);
                        let status = s.ok_json(&["status"]);
                        statuses.push(status["generation"].as_u64().expect("generation"));
                    }
                    (seen, statuses)
                })
            })
            .collect();
        let writers: Vec<_> = files
            .iter()
            .map(|mine| {
                scope.spawn(move || {
                    mine.iter()
                        .map(|file| {
                            s.ok_json(&["refresh", "--lock-timeout", "120", "--from", file])
                        })
                        .collect::<Vec<Value>>()
                })
            })
            .collect();
        let outcomes: Vec<Value> = writers
            .into_iter()
            .flat_map(|w| w.join().expect("writer"))
            .collect();
        done.store(true, Ordering::Relaxed);
        let reads: Vec<_> = readers
            .into_iter()
            .map(|r| r.join().expect("reader"))
            .collect();
        (outcomes, reads)
    });
    // Every publish was a new generation, numbers unique: 2..=13.
    let mut numbers: Vec<u64> = outcomes
        .iter()
        .map(|o| {
            assert_eq!(o["changed"], true, "{o}");
            o["generation"].as_u64().unwrap()
        })
        .collect();
    numbers.sort_unstable();
    let total = (WRITERS * ROUNDS) as u64;
    assert_eq!(
        numbers,
        (2..=total + 1).collect::<Vec<u64>>(),
        "unique, none lost"
    );
    // Each writer's own publishes got increasing numbers.
    for w in outcomes.chunks(ROUNDS) {
        let mine: Vec<u64> = w
            .iter()
            .map(|o| o["generation"].as_u64().unwrap())
            .collect();
        assert!(mine.windows(2).all(|p| p[0] < p[1]), "{mine:?}");
    }
    // What every reader saw moved forward only.
    let generation_of: HashMap<String, u64> = outcomes
        .iter()
        .map(|o| {
            (
                o["hash"].as_str().unwrap().to_string(),
                o["generation"].as_u64().unwrap(),
            )
        })
        .chain([(hash_hex(b"{\"writer\":null}"), 1)])
        .collect();
    let mut reads_seen = 0;
    for (seen, statuses) in &reads {
        reads_seen += seen.len();
        let order: Vec<u64> = seen.iter().map(|b| generation_of[&hash_hex(b)]).collect();
        assert!(
            order.windows(2).all(|p| p[0] <= p[1]),
            "reads went back: {order:?}"
        );
        assert!(
            statuses.windows(2).all(|p| p[0] <= p[1]),
            "status went back: {statuses:?}"
        );
    }
    assert!(reads_seen > 0, "the readers read");
    // The history holds the last ones, each with the content its writer sent.
    let history = s.ok_json(&["history"]);
    for g in history["generations"].as_array().unwrap() {
        let n = g["generation"].as_u64().unwrap();
        assert_eq!(
            generation_of.get(g["hash"].as_str().unwrap()),
            Some(&n),
            "{g}"
        );
    }
    assert_eq!(s.generations().1, Some(total + 1));
    assert_eq!(s.ok_json(&["verify"])["ok"], true);
    eprintln!(
        "{:?}: {WRITERS} writers x {ROUNDS} refreshes, {READERS} readers, {reads_seen} verified reads",
        s.arm
    );
}

fn a_damaged_snapshot_is_never_served(s: &Backend) {
    s.refresh(b"[\"good one\"]", &[]);
    let current = b"[\"good two\"]";
    s.refresh(current, &[]);
    let key = format!("snapshots/{}", hash_hex(current));
    for damage in [&b"[\"evil two\"]"[..], b"[\"longer, evil two\"]", b""] {
        s.put_raw(&key, damage);
        let (code, out) = s.show(&[]);
        assert_eq!(
            code,
            1,
            "{:?}: damage {:?} is not served",
            s.arm,
            text(damage)
        );
        assert!(out.is_empty(), "nothing on stdout: {:?}", text(&out));
        let (code, err) = s.json(&["show"]);
        assert_eq!(
            (code, &err["error"]["kind"]),
            (1, &"corrupt-store".into()),
            "{err}"
        );
        let (code, verify) = s.json(&["verify"]);
        assert_eq!(code, 1, "verify reports it: {verify}");
        assert_eq!(verify["problems"][0]["generation"], 2, "{verify}");
        assert_eq!(
            s.show(&["--generation", "1"]),
            (0, b"[\"good one\"]".to_vec())
        );
    }
}

fn a_foreign_object_under_a_snapshot_name_is_never_served(s: &Backend) {
    // Someone put other bytes under the name that content X will get; a
    // publish of X must not take them for X.
    let x = b"[\"the real content\"]";
    s.refresh(b"[0]", &[]);
    s.put_raw(
        &format!("snapshots/{}", hash_hex(x)),
        b"[\"not it at all!!!!\"]",
    );
    s.put_raw("snapshots/notes.txt", b"mine");
    let outcome = s.refresh(x, &[]);
    assert_eq!(outcome["generation"], 2, "{outcome}");
    assert_eq!(
        s.show(&[]),
        (0, x.to_vec()),
        "the real content, never the planted bytes"
    );
    let verify = s.ok_json(&["verify"]);
    let foreign: Vec<&str> = verify["foreign"]
        .as_array()
        .expect("foreign")
        .iter()
        .filter_map(|f| f["path"].as_str())
        .collect();
    assert!(
        foreign.iter().any(|p| p.ends_with("snapshots/notes.txt")),
        "verify lists the foreign entry: {verify}"
    );
    s.ok_json(&["gc", "--keep", "1"]);
    s.ok_json(&["clear"]);
    assert!(s.exists_raw("snapshots/notes.txt"), "never removed");
}
