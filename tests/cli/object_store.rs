//! `--store s3://...` end to end with real processes (a binary built with
//! `--features s3`, against the server of `tools/s3-server`; skipped with
//! the reason printed without one), and the clear refusal of a build
//! without the feature.

use std::process::{Command, Stdio};

use crate::common::*;

#[cfg(feature = "s3")]
#[path = "../support/s3_env.rs"]
mod s3_env;

/// `snapcache --store <url> <args>` with the test environment.
#[cfg_attr(not(feature = "s3"), allow(dead_code))]
fn at(url: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(bin());
    cmd.arg("--store")
        .arg(url)
        .args(args)
        .env_remove("SNAPCACHE_DIR")
        .env_remove("SNAPCACHE_LOCK_TIMEOUT")
        .env_remove("SNAPCACHE_LOG")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null());
    cmd
}

#[cfg(not(feature = "s3"))]
#[test]
fn an_s3_store_without_the_feature_exits_1_with_a_rebuild_hint() {
    let out = run_with_timeout(at("s3://ci-cache/kopi", &["--json", "status"]));
    assert_eq!(code(&out), 1, "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(err.contains("feature `s3`"), "{err}");
    assert!(
        err.contains("cargo install snapcache --features s3"),
        "{err}"
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["error"]["exit_code"], 1);
    assert!(
        !std::path::Path::new("s3:").exists(),
        "no local directory was made"
    );
}

/// Reproduced: `--store S3://bucket/kopi` (URL schemes are
/// case-insensitive) made a local directory tree `./S3:/bucket/kopi` and
/// published into it, exit 0; any other `scheme://` did the same. An `s3`
/// scheme in any case is the object store; another scheme is refused, and
/// nothing local is made.
#[test]
fn a_url_store_location_is_never_taken_for_a_local_directory() {
    let work = tempfile::tempdir().unwrap();
    let from = work.path().join("p.json");
    std::fs::write(&from, b"[1]").unwrap();
    for url in [
        "S3://bucket/kopi",
        "https://example.com/cache",
        "file:///tmp/x",
    ] {
        let mut cmd = at(
            url,
            &["--json", "refresh", "--from", from.to_str().unwrap()],
        );
        cmd.current_dir(work.path());
        let out = run_with_timeout(cmd);
        let err = text(&out.stderr);
        if url.starts_with("S3") {
            // The object store: not built in, or (with the feature) a
            // bucket of the test server's, or none.
            #[cfg(not(feature = "s3"))]
            assert!(err.contains("s3://bucket/kopi"), "{url}: {err}");
        } else {
            assert_eq!(code(&out), 1, "{url}: {err}");
            assert!(
                err.contains("looks like a URL") && err.contains("./"),
                "{url}: {err}"
            );
        }
        let made: Vec<_> = std::fs::read_dir(work.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(made, ["p.json"], "{url}: nothing local was made");
    }
}

#[cfg(feature = "s3")]
mod with_server {
    use std::time::{Duration, Instant};

    use super::*;

    /// A fresh `s3://` URL under the test bucket, or `None` (reason printed).
    fn url(test: &str) -> Option<String> {
        s3_env::fresh_url("cli", test)
    }

    fn ok(url: &str, args: &[&str]) -> std::process::Output {
        let out = run_with_timeout(at(url, args));
        assert_eq!(code(&out), 0, "snapcache {args:?}: {}", text(&out.stderr));
        out
    }

    fn json(url: &str, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        serde_json::from_slice(&ok(url, &all).stdout).unwrap()
    }

    /// Found by a hostile audit: a damaged pointer on an object store was
    /// answered with a shell `mv` of two URLs, which no shell can run.
    #[test]
    fn a_damaged_pointer_on_an_object_store_is_answered_with_an_s3_tools_move() {
        use snapcache::object_store::s3::{S3Client, S3Location, S3Settings};
        let Some(url) = url("damaged-pointer") else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let payload = dir.path().join("p.json");
        std::fs::write(&payload, br#"{"v":1}"#).unwrap();
        ok(&url, &["refresh", "--from", payload.to_str().unwrap()]);
        let raw = S3Client::new(
            S3Location::parse(&url).unwrap(),
            S3Settings::from_env().unwrap(),
        )
        .unwrap();
        raw.put("current", b"not a pointer").unwrap();
        let out = run_with_timeout(at(&url, &["show"]));
        let stderr = text(&out.stderr);
        assert_eq!(code(&out), 1, "{stderr}");
        let pointer = format!("{url}/current");
        assert!(
            stderr.contains(&format!("aws s3 mv {pointer} {pointer}.damaged")),
            "{stderr}"
        );
        assert!(!stderr.contains("`mv s3://"), "{stderr}");
        for info in raw.list("").unwrap() {
            raw.delete(&info.key).unwrap();
        }
    }

    #[test]
    fn refresh_show_status_history_verify_and_rollback_on_an_s3_url() {
        let Some(url) = url("basics") else { return };
        let dir = tempfile::tempdir().unwrap();
        let first = dir.path().join("one.json");
        std::fs::write(&first, br#"{"v":1}"#).unwrap();
        let outcome = json(&url, &["refresh", "--from", first.to_str().unwrap()]);
        assert_eq!(outcome["generation"], 1);
        assert_eq!(outcome["backend"], "object-store");
        let again = json(&url, &["refresh", "--from", first.to_str().unwrap()]);
        assert_eq!(again["changed"], false);

        // SNAPCACHE_DIR works like --store; stdin too.
        let mut child = Command::new(bin())
            .args(["--json", "refresh", "--from", "-"])
            .env("SNAPCACHE_DIR", &url)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(br#"{"v":2}"#)
            .unwrap();
        let out = wait_output(child, COMMAND_TIMEOUT);
        assert_eq!(code(&out), 0, "{}", text(&out.stderr));

        assert_eq!(ok(&url, &["show"]).stdout, br#"{"v":2}"#);
        assert_eq!(
            ok(&url, &["show", "--generation", "1"]).stdout,
            br#"{"v":1}"#
        );
        let status = json(&url, &["status"]);
        assert!(
            status["store"].as_str().unwrap().starts_with("s3://"),
            "{status}"
        );
        assert_eq!(status["generation"], 2);
        let history = json(&url, &["history"]);
        assert_eq!(history["generations"].as_array().unwrap().len(), 2);
        let verify = json(&url, &["verify"]);
        assert_eq!(verify["ok"], true, "{verify}");
        ok(&url, &["rollback"]);
        assert_eq!(ok(&url, &["show"]).stdout, br#"{"v":1}"#);
        ok(&url, &["clear"]);
        let out = run_with_timeout(at(&url, &["show"]));
        assert_eq!(code(&out), 1, "nothing published after clear");
    }

    #[test]
    fn concurrent_max_age_exec_refreshes_run_the_command_once() {
        let Some(url) = url("run-once") else { return };
        let dir = tempfile::tempdir().unwrap();
        let counter = dir.path().join("runs");
        let script = format!(
            "echo run >> {}; sleep 1; echo '[\"fetched\"]'",
            counter.display()
        );
        let children: Vec<_> = (0..4)
            .map(|_| {
                at(
                    &url,
                    &[
                        "--json",
                        "refresh",
                        "--max-age",
                        "1h",
                        "--exec",
                        "sh",
                        "-c",
                        &script,
                    ],
                )
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
            })
            .collect();
        let outs: Vec<_> = children
            .into_iter()
            .map(|c| wait_output(c, COMMAND_TIMEOUT))
            .collect();
        for out in &outs {
            assert_eq!(code(out), 0, "{}", text(&out.stderr));
        }
        let runs = std::fs::read_to_string(&counter).unwrap();
        assert_eq!(runs.lines().count(), 1, "the command ran once: {runs:?}");
        let skipped = outs
            .iter()
            .filter(|o| {
                serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()["skipped"] == true
            })
            .count();
        assert_eq!(skipped, 3);
        ok(&url, &["clear"]);
    }

    /// Whether `pid` is stopped (state `T` in /proc).
    fn stopped(pid: u32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| {
                s.rsplit_once(')')
                    .map(|(_, rest)| rest.trim_start().starts_with('T'))
            })
            .unwrap_or(false)
    }

    /// `status` of a store held through its lease object shows the lease
    /// time and the last renewal, by the server's clock; no expiry (the
    /// holder's clock does not judge an object-store lease).
    #[test]
    fn status_shows_the_lease_object_s_lease_time_and_renewal() {
        let Some(url) = url("status-lease") else {
            return;
        };
        let holder = at(
            &url,
            &["refresh", "--exec", "sh", "-c", "sleep 2; echo '[1]'"],
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
        let status = wait_for("the lease to be held", Duration::from_secs(20), || {
            let status = json(&url, &["status"]);
            (status["lock"]["held"] == true).then_some(status)
        });
        let lease = &status["lock"]["lease"];
        assert_eq!(lease["lease_time_seconds"], 30.0, "{status}");
        assert!(lease["expires_at"].is_null(), "{status}");
        assert!(
            lease["path"].as_str().unwrap().starts_with("s3://"),
            "{status}"
        );
        assert!(
            lease["renewed_age_seconds"].as_f64().unwrap() < 20.0,
            "{status}"
        );
        let human = text(&ok(&url, &["status"]).stdout);
        assert!(
            human.contains("(by the server's clock), lease time 30 s"),
            "{human}"
        );
        let out = wait_output(holder, COMMAND_TIMEOUT);
        assert_eq!(code(&out), 0);
        ok(&url, &["clear"]);
    }

    #[test]
    fn a_writer_stalled_past_its_lease_loses_its_put_and_rebases_without_losing_the_other() {
        let Some(url) = url("stall") else { return };
        if !std::path::Path::new("/proc/self/stat").exists() {
            eprintln!("SKIPPED: /proc is needed to see the writer stop");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let file = |name: &str, body: &[u8]| {
            let path = dir.path().join(name);
            std::fs::write(&path, body).unwrap();
            path.to_str().unwrap().to_string()
        };
        let (one, a, b) = (
            file("1", b"[1]"),
            file("a", b"[\"a\"]"),
            file("b", b"[\"b\"]"),
        );
        ok(&url, &["refresh", "--from", &one]);
        // A stops itself right before its pointer put; its lease (1 s)
        // expires while it is stopped.
        let stalled = at(&url, &["--json", "refresh", "--from", &a])
            .env("SNAPCACHE_TEST_HOOKS", "1")
            .env("SNAPCACHE_TEST_STOP_BEFORE_COMMIT", "1")
            .env("SNAPCACHE_LEASE_SECS", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = stalled.id();
        wait_for(
            "the writer to stop before its commit",
            Duration::from_secs(30),
            || stopped(pid).then_some(()),
        );
        // B takes the expired lease over (server clock) and commits 2.
        let started = Instant::now();
        let other = json(&url, &["refresh", "--from", &b]);
        assert_eq!(other["generation"], 2, "{other}");
        assert!(
            started.elapsed() >= Duration::from_secs(1),
            "only after the lease time"
        );
        // A resumes: its conditional put names the pointer of generation 1.
        let _ = Command::new("kill")
            .args(["-CONT", &pid.to_string()])
            .status();
        let out = wait_output(stalled, COMMAND_TIMEOUT);
        assert_eq!(code(&out), 0, "{}", text(&out.stderr));
        let resumed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(resumed["generation"], 3, "rebased on 2: {resumed}");
        let history = json(&url, &["history"]);
        let numbers: Vec<u64> = history["generations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g["generation"].as_u64().unwrap())
            .collect();
        assert_eq!(numbers, [1, 2, 3], "nothing lost, no number twice");
        assert_eq!(ok(&url, &["show", "--generation", "2"]).stdout, b"[\"b\"]");
        assert_eq!(ok(&url, &["show"]).stdout, b"[\"a\"]");
        ok(&url, &["clear"]);
    }
}
