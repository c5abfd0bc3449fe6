//! Bad input and damaged stores: each a clear error, nothing lost.

use crate::common::*;

fn store_with_two_generations() -> TestStore {
    let store = TestStore::new();
    store.refresh(&json_payload(3000, 1), &[]);
    store.refresh(&json_payload(3000, 2), &[]);
    store
}

/// Asserts a refresh attempt failed with `exit` and left the store as it was.
fn assert_rejected(store: &TestStore, args: &[&str], exit: i32, message: &str) -> String {
    let before = store.fingerprint();
    let out = store.run(args);
    let stderr = text(&out.stderr);
    assert_eq!(code(&out), exit, "snapcache {args:?}: stderr {stderr}");
    assert!(
        stderr.contains(message),
        "stderr must explain ({message:?}): {stderr}"
    );
    assert_eq!(
        store.fingerprint(),
        before,
        "a rejected refresh changes nothing"
    );
    assert!(
        store.files_in("tmp").is_empty(),
        "no temp file is left behind"
    );
    assert_eq!(
        store.show(),
        json_payload(3000, 2),
        "the current generation still reads"
    );
    stderr
}

#[test]
fn empty_payload_is_rejected_with_65() {
    let store = store_with_two_generations();
    let empty = store.payload("empty", b"");
    assert_rejected(
        &store,
        &["refresh", "--from", empty.to_str().unwrap()],
        65,
        "empty",
    );
    assert_rejected(
        &store,
        &["refresh", "--raw", "--from", empty.to_str().unwrap()],
        65,
        "empty",
    );
}

#[test]
fn invalid_json_is_rejected_with_its_position() {
    let store = store_with_two_generations();
    let bad = store.payload("bad", b"{\n  \"a\": [1, 2,, 3]\n}");
    let stderr = assert_rejected(
        &store,
        &["refresh", "--from", bad.to_str().unwrap()],
        65,
        "not well-formed JSON",
    );
    assert!(
        stderr.contains("line 2 column"),
        "the first error position is named: {stderr}"
    );
    let trailing = store.payload("trailing", b"{} {}");
    assert_rejected(
        &store,
        &["refresh", "--from", trailing.to_str().unwrap()],
        65,
        "trailing characters",
    );
}

#[test]
fn missing_from_file_is_a_clear_error() {
    let store = store_with_two_generations();
    let missing = store.scratch("does-not-exist.json");
    let stderr = assert_rejected(
        &store,
        &["refresh", "--from", missing.to_str().unwrap()],
        1,
        "cannot open the payload file",
    );
    assert!(
        stderr.contains(missing.to_str().unwrap()),
        "the path is named: {stderr}"
    );
}

#[test]
fn failing_exec_publishes_nothing_and_shows_its_stderr() {
    let store = store_with_two_generations();
    let stderr = assert_rejected(
        &store,
        &[
            "refresh",
            "--exec",
            "sh",
            "-c",
            "echo '{\"partial\":'; echo 'foojay is down' >&2; exit 7",
        ],
        1,
        "foojay is down",
    );
    assert!(stderr.contains("exited with status 7"), "{stderr}");
    // A signal is named as people know it (it read `("Signal::KILL")`).
    let stderr = assert_rejected(
        &store,
        &["refresh", "--exec", "sh", "-c", "kill -9 $$"],
        1,
        "was killed by signal 9 (SIGKILL)",
    );
    assert!(!stderr.contains("Signal::"), "{stderr}");
    assert_rejected(
        &store,
        &["refresh", "--exec", "/nonexistent/tool"],
        1,
        "could not start",
    );
}

#[test]
fn usage_errors_exit_2() {
    let store = TestStore::new();
    assert_eq!(code(&store.run(&["refresh"])), 2, "a source is required");
    assert_eq!(
        code(&store.run(&["refresh", "--from", "x", "--lock-timeout", "soon"])),
        2
    );
    assert_eq!(code(&store.run(&["frobnicate"])), 2);
}

#[test]
fn show_on_an_empty_store_is_a_clear_error() {
    let store = TestStore::new();
    let out = store.run(&["show"]);
    assert_eq!(code(&out), 1);
    assert!(
        text(&out.stderr).contains("no snapshot has been published"),
        "{}",
        text(&out.stderr)
    );
    assert!(out.stdout.is_empty());
}

/// Each damaged pointer: reads and writes fail clearly, naming the pointer
/// and the way out; no snapshot file is lost.
fn assert_damaged_pointer_is_handled(damage: impl Fn(&std::path::Path)) {
    let store = store_with_two_generations();
    let snapshots = store.files_in("snapshots");
    damage(&pointer_path(&store));
    let pointer = pointer_path(&store);
    for args in [vec!["show"], vec!["history"], vec!["rollback"]] {
        let out = store.run(&args);
        let stderr = text(&out.stderr);
        assert_eq!(code(&out), 1, "{args:?}: {stderr}");
        assert!(
            out.stdout.is_empty(),
            "{args:?} prints no data from a damaged store"
        );
        assert!(
            stderr.contains(pointer.to_str().unwrap()),
            "{args:?} names the pointer: {stderr}"
        );
        // Found by a hostile audit: the hint promised that `verify` lists
        // the intact generations, which it cannot through a damaged
        // pointer; it now says to keep a copy of the snapshots before a
        // new history removes them.
        let snapshots_dir = store.root().join("snapshots");
        assert!(
            !stderr.contains("lists the intact generations")
                && stderr.contains(&format!("copy {} first", snapshots_dir.display()))
                && stderr.contains(&format!("mv {p} {p}.damaged", p = pointer.display())),
            "{args:?}: {stderr}"
        );
    }
    let out = store.run(&[
        "refresh",
        "--from",
        store.payload("new", b"[9]").to_str().unwrap(),
    ]);
    assert_eq!(
        code(&out),
        1,
        "a refresh does not silently replace a damaged history"
    );
    let out = store.run(&["verify"]);
    assert_eq!(code(&out), 1);
    assert!(
        text(&out.stdout).contains("pointer"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(
        store.files_in("snapshots"),
        snapshots,
        "no snapshot is lost"
    );

    // The documented way out: move the pointer aside and refresh.
    std::fs::rename(&pointer, store.scratch("current.damaged")).unwrap();
    store.refresh(b"[10]", &[]);
    assert_eq!(store.show(), b"[10]");
}

#[test]
fn garbage_pointer() {
    assert_damaged_pointer_is_handled(|p| std::fs::write(p, b"\x00\xffgarbage\n\x13").unwrap());
}

#[test]
fn truncated_pointer() {
    assert_damaged_pointer_is_handled(|p| {
        let bytes = std::fs::read(p).unwrap();
        std::fs::write(p, &bytes[..bytes.len() / 2]).unwrap();
    });
}

#[test]
fn pointer_with_wrong_checksum() {
    assert_damaged_pointer_is_handled(|p| {
        let text = std::fs::read_to_string(p).unwrap();
        std::fs::write(p, text.replacen("\"current\":2", "\"current\":1", 1)).unwrap();
    });
}

#[test]
fn pointer_naming_a_path_instead_of_a_hash() {
    assert_damaged_pointer_is_handled(|p| {
        write_pointer_with_body(
            p,
            r#"{"current":1,"last_generation":1,"checked_at":"2026-01-01T00:00:00Z","generations":[{"generation":1,"hash":"../../etc/passwd","bytes":10,"created_at":"2026-01-01T00:00:00Z","note":null}]}"#,
        )
    });
}

#[test]
fn empty_pointer() {
    assert_damaged_pointer_is_handled(|p| std::fs::write(p, b"").unwrap());
}

#[test]
fn tampered_snapshot_is_never_served() {
    let store = store_with_two_generations();
    let current = store
        .root()
        .join("snapshots")
        .join(hash_hex(&json_payload(3000, 2)));
    make_owner_writable(&current);
    let mut bytes = std::fs::read(&current).unwrap();
    bytes[100] ^= 0x20;
    std::fs::write(&current, &bytes).unwrap();
    let out = store.run(&["show"]);
    let stderr = text(&out.stderr);
    assert_eq!(code(&out), 1, "{stderr}");
    assert!(out.stdout.is_empty(), "no unverified byte reaches stdout");
    assert!(
        stderr.contains(current.to_str().unwrap()) && stderr.contains("rollback"),
        "{stderr}"
    );
    // Nothing lost: the previous generation is intact and can be made current.
    store.ok(&["rollback"]);
    assert_eq!(store.show(), json_payload(3000, 1));
    // And a refresh with the same content repairs the damaged snapshot.
    store.refresh(&json_payload(3000, 2), &[]);
    assert_eq!(store.show(), json_payload(3000, 2));
    store.ok(&["verify"]);
}

/// Reproduced: nothing bounded a payload. `refresh --raw --from - </dev/zero`
/// (or `--exec cat /dev/zero`) filled the filesystem before failing, and a
/// 300 MB payload of `[` took 299 MB of memory for the JSON check's
/// nesting. `--max-size` (or `SNAPCACHE_MAX_SIZE`) rejects a payload as
/// soon as it goes past the limit: exit 65, nothing published, no temp file.
#[test]
fn a_payload_larger_than_max_size_is_rejected_as_soon_as_it_passes_it() {
    let store = store_with_two_generations();
    let big = store.payload("big", &json_payload(5000, 9));
    let stderr = assert_rejected(
        &store,
        &[
            "refresh",
            "--max-size",
            "1K",
            "--from",
            big.to_str().unwrap(),
        ],
        65,
        "larger than the limit of 1024 bytes",
    );
    assert!(stderr.contains("nothing was published"), "{stderr}");
    // Found by a hostile audit: a first read past the limit said "stopped
    // after 0 bytes", and nothing said where the limit was set.
    let read: u64 = stderr
        .split("stopped at ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("says how far it read: {stderr}"));
    assert!(read > 1024, "{stderr}");
    assert!(stderr.contains("hint: the limit is --max-size"), "{stderr}");
    // An endless source is stopped at the limit, not at a full disk.
    let started = std::time::Instant::now();
    assert_rejected(
        &store,
        &[
            "refresh",
            "--raw",
            "--max-size",
            "2M",
            "--exec",
            "cat",
            "/dev/zero",
        ],
        65,
        "larger than the limit of 2097152 bytes",
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
    // The variable, below the flag.
    let mut cmd = store.command(&["refresh", "--from", big.to_str().unwrap()]);
    cmd.env("SNAPCACHE_MAX_SIZE", "1k");
    let out = run_with_timeout(cmd);
    assert_eq!(code(&out), 65);
    assert!(
        text(&out.stderr).contains(r#"SNAPCACHE_MAX_SIZE (set to "1k" in this environment)"#),
        "{}",
        text(&out.stderr)
    );
    let mut cmd = store.command(&[
        "refresh",
        "--max-size",
        "1M",
        "--from",
        big.to_str().unwrap(),
    ]);
    cmd.env("SNAPCACHE_MAX_SIZE", "1k");
    let out = run_with_timeout(cmd);
    assert_eq!(code(&out), 0, "the flag wins: {}", text(&out.stderr));
    for bad in ["0", "12X", "-1", "99999999999T"] {
        let mut cmd = store.command(&["refresh", "--from", big.to_str().unwrap()]);
        cmd.env("SNAPCACHE_MAX_SIZE", bad);
        let out = run_with_timeout(cmd);
        assert_eq!(code(&out), 2, "{bad}: {}", text(&out.stderr));
        assert!(text(&out.stderr).contains("SNAPCACHE_MAX_SIZE"), "{bad}");
    }
}
