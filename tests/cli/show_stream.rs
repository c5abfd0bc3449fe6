//! `show` streams a verified snapshot: large snapshots come out byte for
//! byte into a pipe and into a file, and damage anywhere (even in the last
//! byte, which only the end of the hash pass can see) means no byte at all
//! on stdout.

use std::process::Stdio;

use crate::common::*;

/// Several verification chunks' worth (256 KiB each), not a multiple of it.
const BIG: usize = 3 * 1024 * 1024 + 12_345;

#[test]
fn a_multi_chunk_snapshot_is_shown_exactly_into_a_pipe_and_into_a_file() {
    let store = TestStore::new();
    let payload = json_payload(BIG, 7);
    store.refresh(&payload, &[]);
    // Into a pipe (Output captures through one).
    let shown = store.show();
    assert!(
        shown == payload,
        "pipe: {} bytes shown, {} published",
        shown.len(),
        payload.len()
    );
    // Into a regular file (the kernel copy path differs for files).
    let out_path = store.scratch("shown.json");
    let out_file = std::fs::File::create(&out_path).unwrap();
    let mut cmd = store.command(&["show"]);
    cmd.stdout(Stdio::from(out_file)).stderr(Stdio::piped());
    // Not `run_with_timeout`: it would replace stdout with a pipe.
    let out = wait_output(cmd.spawn().unwrap(), std::time::Duration::from_secs(60));
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    let written = std::fs::read(&out_path).unwrap();
    assert!(
        written == payload,
        "file: {} bytes written, {} published",
        written.len(),
        payload.len()
    );
}

#[test]
fn damage_in_the_last_byte_of_a_large_snapshot_prints_nothing() {
    let store = TestStore::new();
    let payload = json_payload(BIG, 8);
    store.refresh(&payload, &[]);
    let snapshot = store.root().join("snapshots").join(hash_hex(&payload));
    make_owner_writable(&snapshot);
    let mut bytes = std::fs::read(&snapshot).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    std::fs::write(&snapshot, &bytes).unwrap();
    let out = store.run(&["show"]);
    assert_eq!(code(&out), 1, "{}", text(&out.stderr));
    assert!(
        out.stdout.is_empty(),
        "not one byte before the whole snapshot verified ({} printed)",
        out.stdout.len()
    );
    assert!(
        text(&out.stderr).contains("hashes to"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_snapshot_that_grew_is_refused_without_output() {
    let store = TestStore::new();
    let payload = json_payload(BIG, 9);
    store.refresh(&payload, &[]);
    let snapshot = store.root().join("snapshots").join(hash_hex(&payload));
    make_owner_writable(&snapshot);
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&snapshot)
        .unwrap();
    std::io::Write::write_all(&mut file, b" ").unwrap();
    drop(file);
    let out = store.run(&["show"]);
    assert_eq!(code(&out), 1, "{}", text(&out.stderr));
    assert!(out.stdout.is_empty());
    assert!(
        text(&out.stderr).contains("bytes long"),
        "{}",
        text(&out.stderr)
    );
}

/// Into a pipe on Linux, the verified snapshot goes out with `sendfile`
/// (the kernel hands its pages to the pipe, as `cat` cannot), after the
/// hash pass's reads and never through a `write` of snapshot bytes;
/// whoever reads the pipe still gets every byte. Needs `strace` and the
/// right to trace a child; skipped with the reason otherwise.
#[cfg(target_os = "linux")]
#[test]
fn into_a_pipe_the_kernel_copies_the_verified_snapshot() {
    let store = TestStore::new();
    let payload = json_payload(BIG, 10);
    store.refresh(&payload, &[]);
    let log = store.scratch("strace.log");
    let mut cmd = std::process::Command::new("strace");
    cmd.arg("-f")
        .arg("-e")
        .arg("trace=sendfile,write")
        .arg("-o")
        .arg(&log)
        .arg(bin())
        .arg("--store")
        .arg(store.root())
        .arg("show")
        .stdin(Stdio::null());
    let out = match cmd.output() {
        Ok(out) => out,
        Err(e) => {
            eprintln!("SKIPPED: strace cannot be run here: {e}");
            return;
        }
    };
    if code(&out) != 0 && !log.exists() {
        eprintln!(
            "SKIPPED: strace could not trace the command: {}",
            text(&out.stderr)
        );
        return;
    }
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    assert!(out.stdout == payload, "every byte through the pipe");
    let trace = std::fs::read_to_string(&log).unwrap();
    // `PID call(args) = result`: what each call moved.
    let moved = |call: &str| -> usize {
        trace
            .lines()
            .filter(|l| {
                l.split_whitespace()
                    .nth(1)
                    .is_some_and(|c| c.starts_with(call))
            })
            .filter_map(|l| l.rsplit("= ").next()?.trim().parse::<usize>().ok())
            .sum()
    };
    assert_eq!(
        moved("sendfile("),
        payload.len(),
        "every byte by sendfile:\n{trace}"
    );
    assert!(
        moved("write(") < 4096,
        "no snapshot bytes written through the process:\n{trace}"
    );
}
