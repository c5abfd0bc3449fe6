//! Readers: separate processes reading the store continuously.
//!
//! - **CLI readers** run `snapcache --store DIR show` in a loop and check
//!   the bytes it prints.
//! - **Library readers** are this tool re-executed in a hidden mode
//!   (`__lib-reader`) that calls `snapcache::Store::read_current()` in a loop
//!   and prints one JSON line per read: the generation, the blake3 of the
//!   bytes it got (computed independently of the library) and whether they
//!   parse as JSON. The parent checks each line.
//!
//! Every read must be byte-identical to a payload offered to a writer (its
//! hash is in the offered set: a torn or partial read would not be) and
//! parse as JSON; a library reader's generation must never go backwards.
//! "Nothing published yet" is accepted only before the first publish.

use std::error::Error;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use snapcache::{Store, StoreOptions};

use crate::procs::Running;
use crate::state::{Content, NO_STORE_MESSAGE, Shared, hex, parse_hex, tail};

/// A single read never takes longer than this (else: a hung reader).
const READ_LIMIT: Duration = Duration::from_secs(60);

/// The CLI reader loop (runs until the run stops).
pub fn cli_reader(shared: &Shared, index: usize, pause: Duration) {
    let mut had_ok = false;
    while !shared.stopping() {
        let start = Instant::now();
        let mut cmd = shared.snapcache(["show"]);
        let finished =
            match Running::start(&shared.procs, &mut cmd).and_then(|r| r.wait(start, READ_LIMIT)) {
                Ok(f) => f,
                Err(e) => {
                    shared.violation("tool-error", format!("cli reader {index}: {e}"));
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
            };
        let what = format!("cli reader {index}");
        if finished.hung {
            shared.count(|c| c.reads_failed += 1);
            shared.violation(
                "read-failed",
                format!("{what}: `show` hung for {READ_LIMIT:?}"),
            );
        } else if finished.status.success() {
            match shared.check_content(&finished.stdout) {
                Content::Published(_) => {
                    had_ok = true;
                    shared.note_published();
                    shared.count(|c| {
                        c.reads_cli += 1;
                        c.bytes_read += finished.stdout.len() as u64;
                    });
                }
                Content::Torn(hash) => torn(shared, &what, finished.stdout.len(), &hash),
                Content::NotJson(hash) => not_json(shared, &what, &hash),
            }
        } else {
            let stderr = String::from_utf8_lossy(&finished.stderr);
            if stderr.contains(NO_STORE_MESSAGE) && !had_ok && !shared.published_before(start) {
                shared.count(|c| c.reads_empty += 1);
            } else {
                shared.count(|c| c.reads_failed += 1);
                shared.violation(
                    "read-failed",
                    format!(
                        "{what}: `show` exit {:?}: {}",
                        finished.status.code(),
                        tail(&finished.stderr, 600)
                    ),
                );
            }
        }
        if !pause.is_zero() {
            std::thread::sleep(pause);
        }
    }
}

fn torn(shared: &Shared, what: &str, len: usize, hash: &[u8; 32]) {
    shared.count(|c| c.reads_torn += 1);
    shared.violation(
        "torn-read",
        format!(
            "{what}: read {len} bytes (blake3 {}) that are not any payload offered",
            hex(hash)
        ),
    );
}

fn not_json(shared: &Shared, what: &str, hash: &[u8; 32]) {
    shared.count(|c| c.reads_not_json += 1);
    shared.violation(
        "not-json-read",
        format!("{what}: read payload {} but it does not parse", hex(hash)),
    );
}

/// Runs a library reader child and checks its lines until the run stops.
pub fn library_reader(shared: &Shared, index: usize, exe: &Path, pause: Duration) {
    let what = format!("library reader {index}");
    let mut cmd = Command::new(exe);
    cmd.arg("__lib-reader")
        .arg("--store")
        .arg(&shared.store)
        .arg("--marker")
        .arg(&shared.published_marker)
        .arg("--pause-ms")
        .arg(pause.as_millis().to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = match shared.procs.spawn(&mut cmd) {
        Ok(c) => c,
        Err(e) => {
            shared.violation(
                "tool-error",
                format!("{what}: spawning {}: {e}", exe.display()),
            );
            return;
        }
    };
    let pid = child.id();
    // Closing its stdin tells the child to stop.
    let stdin = child.stdin.take();
    let stderr = child.stderr.take().map(|mut pipe| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = pipe.read_to_end(&mut buf);
            buf
        })
    });
    std::thread::scope(|scope| {
        scope.spawn(|| {
            while !shared.stopping() {
                std::thread::sleep(Duration::from_millis(10));
            }
            drop(stdin);
        });
        let mut last_generation = 0u64;
        let mut had_ok = false;
        if let Some(stdout) = child.stdout.take() {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                check_line(shared, &what, &line, &mut last_generation, &mut had_ok);
            }
        }
    });
    let status = child.wait();
    shared.procs.forget(pid);
    let stderr = stderr.and_then(|h| h.join().ok()).unwrap_or_default();
    match status {
        Ok(s) if s.success() => {}
        other => shared.violation(
            "tool-error",
            format!("{what} exited with {other:?}: {}", tail(&stderr, 600)),
        ),
    }
}

fn check_line(
    shared: &Shared,
    what: &str,
    line: &str,
    last_generation: &mut u64,
    had_ok: &mut bool,
) {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
        shared.violation("tool-error", format!("{what}: bad line {line:?}"));
        return;
    };
    if v["ok"] == true {
        let (Some(generation), Some(hash), Some(bytes)) = (
            v["generation"].as_u64(),
            v["hash"].as_str().and_then(parse_hex),
            v["bytes"].as_u64(),
        ) else {
            shared.violation("tool-error", format!("{what}: bad line {line:?}"));
            return;
        };
        if !shared.is_offered(&hash) || v["claimed"].as_str().and_then(parse_hex) != Some(hash) {
            torn(shared, what, bytes as usize, &hash);
            return;
        }
        if v["json"] != true {
            not_json(shared, what, &hash);
            return;
        }
        *had_ok = true;
        shared.note_published();
        shared.observe_generation(generation, hash, "library read");
        if generation < *last_generation {
            shared.count(|c| c.generation_regressions += 1);
            shared.violation(
                "generation-regression",
                format!("{what}: read generation {generation} after generation {last_generation}"),
            );
        }
        *last_generation = (*last_generation).max(generation);
        shared.count(|c| {
            c.reads_library += 1;
            c.bytes_read += bytes;
        });
    } else if v["no_store"] == true && !*had_ok && v["published_before"] != true {
        shared.count(|c| c.reads_empty += 1);
    } else {
        shared.count(|c| c.reads_failed += 1);
        shared.violation("read-failed", format!("{what}: {line}"));
    }
}

/// The hidden `__lib-reader` mode: reads until stdin is closed.
pub fn lib_reader_main(
    store: PathBuf,
    marker: PathBuf,
    pause_ms: u64,
) -> Result<(), Box<dyn Error>> {
    let store = Store::open(StoreOptions::new(store))?;
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
            stop.store(true, Ordering::Relaxed);
        });
    }
    let mut out = std::io::stdout().lock();
    while !stop.load(Ordering::Relaxed) {
        let published_before = marker.exists();
        let line = match store.read_current() {
            Ok(snapshot) => json!({
                "ok": true,
                "generation": snapshot.generation,
                "hash": blake3::hash(&snapshot.data).to_hex().to_string(),
                "claimed": snapshot.hash.to_hex(),
                "bytes": snapshot.data.len(),
                "json": serde_json::from_slice::<serde::de::IgnoredAny>(&snapshot.data).is_ok(),
            }),
            Err(snapcache::Error::NoStore { .. }) => {
                // Nothing to read yet: do not spin.
                std::thread::sleep(Duration::from_millis(2));
                json!({
                    "ok": false,
                    "no_store": true,
                    "published_before": published_before,
                })
            }
            Err(e) => json!({ "ok": false, "no_store": false, "error": e.to_string() }),
        };
        if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
            break; // the parent is gone
        }
        if pause_ms > 0 {
            std::thread::sleep(Duration::from_millis(pause_ms));
        }
    }
    Ok(())
}
