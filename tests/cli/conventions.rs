//! The conventions users of other CLIs expect (issue 11, part 1): usage
//! errors as JSON, no escape codes off a terminal, each message once, log
//! filters, honest messages for the common mistakes, and help that
//! documents the environment, exit codes and JSON keys.

use std::io::Read;
use std::process::{Command, Stdio};

use crate::common::*;

fn has_script() -> bool {
    let ok = Command::new("script").arg("--version").output().is_ok();
    if !ok {
        eprintln!("SKIPPED: util-linux `script` (to give snapcache a terminal) is not installed");
    }
    ok
}

/// Runs `inner` (a shell command line) on a pseudo-terminal; its stdout and
/// stderr both end up in the returned text.
fn on_terminal(inner: &str) -> (i32, String) {
    let mut cmd = Command::new("script");
    cmd.args(["-qec", inner, "/dev/null"])
        .env_remove("NO_COLOR")
        .env_remove("SNAPCACHE_LOG")
        .env_remove("RUST_LOG");
    let out = run_with_timeout(cmd);
    (code(&out), text(&out.stdout))
}

#[test]
fn usage_errors_found_by_the_parser_are_json_with_exit_2() {
    let store = TestStore::new();
    let file = store.payload("p", b"[1]");
    let file = file.to_str().unwrap();
    for args in [
        vec!["refresh", "--bogus", "--from", file],
        vec![],
        vec!["nosuchcommand"],
        vec!["refresh"],
        vec!["refresh", "--from", file, "--max-age", "soon"],
        vec!["gc", "--keep", "0"],
        vec!["--color", "sometimes", "status"],
    ] {
        let (out, value) = store.json(&args);
        assert_eq!(code(&out), 2, "{args:?}: {}", text(&out.stderr));
        assert_eq!(value["error"]["kind"], "usage", "{args:?}: {value}");
        assert_eq!(value["error"]["exit_code"], 2, "{args:?}");
        assert!(
            value["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{args:?}: {value}"
        );
    }
    // --json after the subcommand counts as well; without it stdout stays empty.
    let out = store.run(&["refresh", "--nope", "--json"]);
    assert_eq!(code(&out), 2);
    assert!(
        text(&out.stdout).contains("\"usage\""),
        "{}",
        text(&out.stdout)
    );
    let out = store.run(&["refresh", "--nope"]);
    assert_eq!(code(&out), 2);
    assert!(out.stdout.is_empty());
    // --help and --version are not errors, with or without --json.
    for args in [
        vec!["--help"],
        vec!["--version"],
        vec!["--json", "--help"],
        vec!["gc", "--help"],
    ] {
        let out = store.run(&args);
        assert_eq!(code(&out), 0, "{args:?}");
        assert!(!out.stdout.is_empty(), "{args:?} prints to stdout");
    }
    assert!(!store.root().exists(), "parsing errors touch no store");
}

#[test]
fn json_after_exec_belongs_to_the_command() {
    // `--json` after `--exec` is an argument of CMD, not snapcache's flag.
    let store = TestStore::new();
    let out = store.run(&["refresh", "--exec", "echo", "--json"]);
    assert_eq!(code(&out), 65, "`--json` is not JSON: rejected payload");
    assert!(
        out.stdout.is_empty(),
        "no JSON output: {}",
        text(&out.stdout)
    );
}

#[test]
fn a_usage_error_is_json_exactly_when_the_parser_reads_the_json_flag() {
    // The early scan that lets a usage error honour `--json` reads the
    // command line as clap does: an option's value, the arguments after
    // `--` or `--exec`, and grouped short flags are not fooled by a literal
    // `--json`, and a real `--json` is never missed.
    let store = TestStore::new();
    let file = store.payload("p", b"[1]");
    let file = file.to_str().unwrap();
    let not_json: &[&[&str]] = &[
        // the note's value is the literal `--json`
        &["refresh", "--from", file, "--note=--json", "--bogus"],
        &["--store=--json", "status", "--bogus"],
        &[
            "--color=never",
            "refresh",
            "--from",
            file,
            "--note=--json",
            "--bogus",
        ],
        // after `--` every argument is a value
        &["forget", "--", "--json"],
        &["refresh", "--note", "x", "--from", file, "--", "--json"],
        // `--exec` takes every argument after it
        &["refresh", "--max-age", "soon", "--exec", "echo", "--json"],
        // grouped flags, no `--json` at all
        &["-qv", "refresh", "--bogus"],
    ];
    for args in not_json {
        let out = store.run(args);
        assert_eq!(code(&out), 2, "{args:?}: {}", text(&out.stderr));
        assert!(
            out.stdout.is_empty(),
            "{args:?}: the literal is not the flag: {}",
            text(&out.stdout)
        );
        assert!(!out.stderr.is_empty(), "{args:?}: the error is said");
    }
    let json: &[&[&str]] = &[
        // clap takes `--json` for the flag here (the note is missing)
        &["refresh", "--from", file, "--note", "--json"],
        // an option's value is skipped, the flag after it counts
        &[
            "refresh", "--note", "x", "--json", "--from", file, "--bogus",
        ],
        &["--color", "never", "--json", "status", "--bogus"],
        &["--color", "--json", "status"],
        // grouped short flags take no value: the next argument is the flag
        &["-qv", "--json", "refresh", "--bogus"],
        &["status", "-vq", "--json", "--bogus"],
        // `--exec` in a command that has none is not a command line
        &["status", "--exec", "--json"],
        // `--` after the flag
        &["--json", "forget", "--", "x"],
    ];
    for args in json {
        let out = store.run(args);
        assert_eq!(code(&out), 2, "{args:?}: {}", text(&out.stderr));
        let value: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {}", text(&out.stdout)));
        assert_eq!(value["error"]["kind"], "usage", "{args:?}: {value}");
    }
    assert!(!store.root().exists(), "parsing errors touch no store");
}

#[test]
fn no_escape_codes_off_a_terminal_unless_asked() {
    let store = TestStore::new();
    let file = store.payload("p", b"[1]");
    let file = file.to_str().unwrap();
    let out = store.ok(&["-vv", "refresh", "--from", file]);
    let err = text(&out.stderr);
    assert!(err.contains("INFO"), "logs with -vv: {err}");
    assert!(
        !err.contains('\x1b'),
        "no escape codes into a pipe: {err:?}"
    );
    let out = store.ok(&["-vv", "--color", "always", "refresh", "--from", file]);
    assert!(text(&out.stderr).contains('\x1b'), "--color always colours");
    let out = store.ok(&["-vv", "--color", "never", "refresh", "--from", file]);
    assert!(text(&out.stderr).contains("INFO"));
    assert!(!text(&out.stderr).contains('\x1b'));
    if !has_script() {
        return;
    }
    let inner = |env: &str, color: &str| {
        format!(
            "{env} {} --store {} -vv {color} refresh --from {file} 2>&1 >/dev/null",
            bin(),
            store.root().display()
        )
    };
    let (_, tty) = on_terminal(&inner("", ""));
    assert!(tty.contains('\x1b'), "colour on a terminal: {tty:?}");
    let (_, tty) = on_terminal(&inner("NO_COLOR=1", ""));
    assert!(!tty.contains('\x1b'), "NO_COLOR honoured: {tty:?}");
    let (_, tty) = on_terminal(&inner("", "--color never"));
    assert!(
        !tty.contains('\x1b'),
        "--color never on a terminal: {tty:?}"
    );
}

/// clap's own output (help, usage errors) follows `--color` too: the
/// command line is parsed without colour first and only scanned for
/// `--color` when clap has something to print, so that path is checked
/// here; `--version` is one plain line either way.
#[test]
fn help_and_usage_errors_follow_color() {
    let store = TestStore::new();
    let help = store.run(&["--color", "always", "refresh", "--help"]);
    assert_eq!(code(&help), 0);
    let coloured = text(&help.stdout);
    assert!(coloured.contains('\x1b'), "--color always: {coloured:?}");
    assert!(
        coloured.contains("--from"),
        "the subcommand's own options: {coloured}"
    );
    let plain = store.run(&["refresh", "--help"]);
    assert!(!text(&plain.stdout).contains('\x1b'), "auto into a pipe");
    assert!(text(&plain.stdout).contains("--from"));
    let error = store.run(&["--color", "always", "refresh", "--bogus"]);
    assert_eq!(code(&error), 2);
    assert!(
        text(&error.stderr).contains('\x1b'),
        "{:?}",
        text(&error.stderr)
    );
    let error = store.run(&["refresh", "--bogus", "--color=never"]);
    assert_eq!(code(&error), 2);
    assert!(text(&error.stderr).contains("--bogus"));
    assert!(!text(&error.stderr).contains('\x1b'));
    for args in [&["--version"][..], &["--color", "always", "--version"]] {
        let out = store.run(args);
        assert_eq!(code(&out), 0, "{args:?}");
        assert_eq!(
            text(&out.stdout),
            format!("snapcache {}\n", env!("CARGO_PKG_VERSION")),
            "{args:?}"
        );
    }
    assert!(!store.root().exists(), "parsing touches no store");
}

#[test]
fn log_lines_only_when_asked_rust_log_too_and_snapcache_log_wins() {
    let store = TestStore::new();
    let file = store.payload("p", b"[1]");
    let file = file.to_str().unwrap();
    let out = store.ok(&["refresh", "--from", file]);
    assert!(
        out.stderr.is_empty(),
        "nothing on stderr by default: {}",
        text(&out.stderr)
    );
    let out = run_with_timeout({
        let mut c = store.command(&["rollback", "--to", "1"]);
        c.env("RUST_LOG", "debug");
        c
    });
    assert!(
        text(&out.stderr).contains("DEBUG"),
        "RUST_LOG honoured: {}",
        text(&out.stderr)
    );
    let out = run_with_timeout({
        let mut c = store.command(&["rollback", "--to", "1"]);
        c.env("RUST_LOG", "debug").env("SNAPCACHE_LOG", "off");
        c
    });
    assert!(
        out.stderr.is_empty(),
        "SNAPCACHE_LOG wins: {}",
        text(&out.stderr)
    );
    let out = run_with_timeout({
        let mut c = store.command(&["status"]);
        c.env("SNAPCACHE_LOG", "snapcache=loud");
        c
    });
    assert_eq!(code(&out), 0);
    let err = text(&out.stderr);
    assert!(
        err.contains("SNAPCACHE_LOG") && err.contains("not a valid log filter"),
        "an invalid filter is reported: {err}"
    );
    assert_eq!(err.lines().count(), 1, "once: {err}");
    // A long one is quoted in part: the warning stays one short line.
    let long = format!("snapcache[{}]=debug", "{".repeat(5000));
    let out = run_with_timeout({
        let mut c = store.command(&["status"]);
        c.env("SNAPCACHE_LOG", &long);
        c
    });
    let err = text(&out.stderr);
    assert!(
        err.contains("not a valid log filter") && err.contains("… (5017 characters in all)"),
        "{err}"
    );
    assert!(err.len() < 400, "{} bytes: {err}", err.len());
    // An invalid RUST_LOG is reported the same way; then -v applies.
    let out = run_with_timeout({
        let mut c = store.command(&["-v", "rollback", "--to", "1"]);
        c.env("RUST_LOG", "snapcache=loud");
        c
    });
    assert_eq!(code(&out), 0);
    let err = text(&out.stderr);
    assert!(
        err.contains("RUST_LOG") && err.contains("not a valid log filter"),
        "{err}"
    );
    assert!(err.contains("INFO"), "-v applies instead: {err}");
}

#[test]
fn a_lock_timeout_and_a_fallback_are_said_once() {
    let store = TestStore::new();
    store.refresh(b"[1]", &[]);
    let holder = store
        .command(&["refresh", "--exec", "sh", "-c", "sleep 3; echo '[2]'"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    store.wait_until_locked();
    let file = store.payload("p", b"[3]");
    let out = store.run(&[
        "refresh",
        "--lock-timeout",
        "0.3",
        "--from",
        file.to_str().unwrap(),
    ]);
    assert_eq!(code(&out), 75);
    let err = text(&out.stderr);
    assert_eq!(err.matches("gave up waiting").count(), 1, "once: {err}");
    assert!(
        !err.contains("WARN"),
        "no tracing line at the default verbosity: {err}"
    );
    wait_output(holder, COMMAND_TIMEOUT);

    // Damage the current snapshot: show --fallback warns once.
    let (_, history) = store.json(&["history"]);
    let current = history["generations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["current"] == true)
        .unwrap()["hash"]
        .as_str()
        .unwrap()
        .to_string();
    let snap = store.root().join("snapshots").join(&current);
    make_owner_writable(&snap);
    std::fs::write(&snap, b"[9]").unwrap();
    let out = store.run(&["show", "--fallback"]);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    assert_eq!(out.stdout, b"[1]");
    let err = text(&out.stderr);
    assert_eq!(err.matches("served generation").count(), 1, "once: {err}");
    assert!(!err.contains("WARN"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn a_closed_pipe_ends_show_quietly() {
    let store = TestStore::new();
    store.refresh(&json_payload(2_000_000, 7), &[]);
    let mut child = store
        .command(&["show"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut head = [0u8; 10];
    child
        .stdout
        .as_mut()
        .unwrap()
        .read_exact(&mut head)
        .unwrap();
    drop(child.stdout.take());
    let out = wait_output(child, COMMAND_TIMEOUT);
    assert_eq!(code(&out), 0, "a reader that went away is not a failure");
    assert!(out.stderr.is_empty(), "no message: {}", text(&out.stderr));
}

#[test]
fn a_store_given_as_a_file_is_called_that_and_never_offered_for_deletion() {
    let store = TestStore::new();
    let file = store.payload("mydata.json", b"{\"mine\":true}");
    let payload = store.payload("payload.json", b"[1]");
    let payload = payload.to_str().unwrap();
    for args in [
        vec!["status"],
        vec!["show"],
        vec!["history"],
        vec!["verify"],
        vec!["diff"],
        vec!["gc"],
        vec!["rollback"],
        vec!["forget", "1"],
        vec!["pin", "1"],
        vec!["clear"],
        vec!["refresh", "--from", payload],
    ] {
        let out = Command::new(bin())
            .arg("--store")
            .arg(&file)
            .args(&args)
            .env_remove("SNAPCACHE_DIR")
            .output()
            .unwrap();
        assert_eq!(code(&out), 1, "{args:?}");
        let err = text(&out.stderr);
        assert!(
            err.contains("`--store` points at a file, not a store directory"),
            "{args:?}: {err}"
        );
        assert!(
            !err.contains("remove"),
            "{args:?}: never advise deleting it: {err}"
        );
        assert!(!err.contains("current generation is unchanged"), "{err}");
    }
    let out = Command::new(bin())
        .arg("status")
        .env("SNAPCACHE_DIR", &file)
        .output()
        .unwrap();
    assert!(
        text(&out.stderr).contains("`SNAPCACHE_DIR` points at a file"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(std::fs::read(&file).unwrap(), b"{\"mine\":true}");
    // A store path *under* the file: the way there is not a directory.
    for args in [vec!["status"], vec!["refresh", "--from", payload]] {
        let out = Command::new(bin())
            .arg("--store")
            .arg(file.join("store"))
            .args(&args)
            .env_remove("SNAPCACHE_DIR")
            .output()
            .unwrap();
        assert_eq!(code(&out), 1, "{args:?}");
        let err = text(&out.stderr);
        assert!(
            err.contains("Not a directory") && err.contains("mydata.json/store"),
            "{args:?}: {err}"
        );
        assert!(!err.contains("special file"), "{args:?}: {err}");
        assert!(!err.contains("remove"), "{args:?}: {err}");
    }
    assert_eq!(std::fs::read(&file).unwrap(), b"{\"mine\":true}");
}

#[test]
fn verify_and_gc_dry_run_on_a_mistyped_path_create_nothing() {
    let store = TestStore::new();
    for args in [
        vec!["verify"],
        vec!["gc", "--dry-run"],
        vec!["gc"],
        vec!["rollback"],
    ] {
        let (out, value) = store.json(&args);
        assert_eq!(code(&out), 1, "{args:?}");
        assert_eq!(value["error"]["kind"], "no-store", "{args:?}: {value}");
        assert!(
            !store.root().exists(),
            "{args:?} created {:?}",
            store.root()
        );
    }
}

#[test]
fn only_refresh_creates_a_store_on_a_mistyped_path() {
    // Every other command, reading or writing, creates nothing there; the
    // ones that need a store say `no-store` (exit 1).
    let store = TestStore::new();
    let needs_a_store: &[&[&str]] = &[
        &["show"],
        &["show", "--generation", "1"],
        &["history"],
        &["verify"],
        &["diff"],
        &["rollback"],
        &["rollback", "--to", "1"],
        &["gc"],
        &["gc", "--dry-run"],
        &["gc", "--keep", "1"],
        &["gc", "--older-than", "1d"],
        &["forget", "1"],
        &["pin", "1"],
        &["unpin", "1"],
        &["clear"],
    ];
    for args in needs_a_store {
        let (out, value) = store.json(args);
        assert_eq!(code(&out), 1, "{args:?}: {value}");
        assert_eq!(value["error"]["kind"], "no-store", "{args:?}: {value}");
        assert!(
            !store.root().exists(),
            "{args:?} created {:?}",
            store.root()
        );
    }
    // status reports the empty store as such, and creates nothing either.
    let (out, value) = store.json(&["status"]);
    assert_eq!(code(&out), 0, "{value}");
    assert!(!store.root().exists(), "status created {:?}", store.root());
    let file = store.payload("p", b"[1]");
    store.ok(&["refresh", "--from", file.to_str().unwrap()]);
    assert!(store.root().join("current").is_file(), "refresh does");
}

#[test]
fn refresh_from_a_directory_names_it() {
    let store = TestStore::new();
    let dir = store.scratch("payloads");
    std::fs::create_dir(&dir).unwrap();
    let (out, value) = store.json(&["refresh", "--from", dir.to_str().unwrap()]);
    assert_eq!(code(&out), 1, "{value}");
    let message = value["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(dir.to_str().unwrap()),
        "names the path: {message}"
    );
    assert!(
        message.contains("is a directory"),
        "says what it is: {message}"
    );
    assert!(
        !store.root().join("current").exists(),
        "nothing was published"
    );
}

#[test]
fn help_offers_lock_timeout_only_to_commands_that_take_the_lock() {
    let store = TestStore::new();
    let writes = [
        "refresh", "rollback", "gc", "forget", "pin", "unpin", "clear",
    ];
    let reads = ["show", "status", "history", "verify", "diff"];
    for sub in writes.iter().chain(&reads) {
        let help = text(&store.ok(&[sub, "--help"]).stdout);
        let own = help.split("Global options").next().unwrap_or_default();
        assert_eq!(
            own.contains("--lock-timeout"),
            writes.contains(sub),
            "{sub} --help: {help}"
        );
        assert!(help.contains("Global options"), "{sub}: {help}");
    }
    // Options of one command are not offered by another.
    let show = text(&store.ok(&["show", "--help"]).stdout);
    for foreign in ["--from", "--exec", "--keep", "--note", "--raw", "--dry-run"] {
        assert!(!show.contains(foreign), "show offers {foreign}: {show}");
    }
    assert!(!store.root().exists(), "help touches no store");
}

/// Found by a hostile audit: every writing command's `--help` (and the man
/// page) began with "`--lock-timeout`, shared by the commands that write"
/// instead of what the command does, and `pin`/`unpin` lost their long help
/// (the limit of 100 pins, the JSON shape); `--lock-timeout -1` got clap's
/// "unexpected argument" instead of the range.
#[test]
fn every_writing_command_describes_itself_and_a_negative_lock_timeout_names_the_range() {
    let store = TestStore::new();
    let overview = text(&store.ok(&["--help"]).stdout);
    for sub in [
        "refresh", "rollback", "gc", "forget", "pin", "unpin", "clear",
    ] {
        let help = text(&store.ok(&[sub, "--help"]).stdout);
        let first = help.lines().next().unwrap_or_default();
        assert!(
            !help.contains("shared by the commands that write"),
            "{sub} --help: {help}"
        );
        // The same line the overview gives it.
        let listed = overview
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{sub} ")))
            .unwrap_or_default();
        assert!(
            !first.is_empty() && listed.ends_with(first.trim()),
            "{sub}: {first:?} is not {listed:?}"
        );
    }
    let pin = text(&store.ok(&["pin", "--help"]).stdout);
    assert!(
        pin.contains("At most 100") && pin.contains(r#""changed": bool"#),
        "{pin}"
    );
    let unpin = text(&store.ok(&["unpin", "--help"]).stdout);
    assert!(unpin.contains("may then drop them"), "{unpin}");
    let man = text(&store.ok(&["man"]).stdout);
    assert!(!man.contains("shared by the commands"), "the man page");
    let out = store.run(&["rollback", "--lock-timeout", "-1"]);
    assert_eq!(code(&out), 2);
    assert!(
        text(&out.stderr).contains("give seconds from 0"),
        "{}",
        text(&out.stderr)
    );
    assert!(!store.root().exists(), "help touches no store");
}

#[test]
fn exec_failures_name_the_status_and_a_file_that_is_not_executable() {
    let store = TestStore::new();
    let out = store.run(&["refresh", "--exec", "sh", "-c", "echo oops >&2; exit 3"]);
    assert_eq!(code(&out), 1);
    let err = text(&out.stderr);
    assert!(err.contains("exited with status 3"), "{err}");
    assert!(err.contains("oops"), "{err}");
    let plain = store.payload("script.sh", b"#!/bin/sh\necho '[1]'\n");
    let out = store.run(&["refresh", "--exec", plain.to_str().unwrap()]);
    assert_eq!(code(&out), 1);
    let err = text(&out.stderr);
    assert!(err.contains("not executable"), "{err}");
    assert!(!err.contains("PATH"), "it is no PATH problem: {err}");
    let out = store.run(&["refresh", "--exec", "snapcache-no-such-program-xyz"]);
    let err = text(&out.stderr);
    assert!(err.contains("is it installed and on PATH?"), "{err}");
}

#[test]
fn rollback_says_already_current_and_switched_to() {
    let store = TestStore::new();
    store.refresh(b"[1]", &[]);
    store.refresh(b"[2]", &[]);
    let out = store.ok(&["rollback", "--to", "2"]);
    assert!(
        text(&out.stdout).starts_with("already current: generation 2"),
        "{}",
        text(&out.stdout)
    );
    let out = store.ok(&["rollback"]);
    assert!(
        text(&out.stdout).starts_with("rolled back to generation 1 (was 2)"),
        "{}",
        text(&out.stdout)
    );
    let out = store.ok(&["rollback", "--to", "2"]);
    assert!(
        text(&out.stdout).starts_with("switched to generation 2 (was 1)"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn a_long_note_is_cut_at_200_bytes_including_the_ellipsis() {
    let store = TestStore::new();
    let long = "n".repeat(300);
    store.refresh(b"[1]", &["--note", &long]);
    let (_, history) = store.json(&["history"]);
    let note = history["generations"][0]["note"].as_str().unwrap();
    assert_eq!(note.len(), 200, "{note}");
    assert!(note.ends_with('…'));
    let exact = "e".repeat(200);
    store.refresh(b"[2]", &["--note", &exact]);
    let (_, history) = store.json(&["history"]);
    assert_eq!(
        history["generations"][1]["note"],
        exact.as_str(),
        "200 bytes fit"
    );
}

fn damage(store: &TestStore, hash: &str) {
    let snap = store.root().join("snapshots").join(hash);
    make_owner_writable(&snap);
    std::fs::write(&snap, b"[0]").unwrap();
}

#[test]
fn verify_lists_a_shared_problem_once_and_suggests_only_what_works() {
    let store = TestStore::new();
    let a = store.refresh(b"[\"a\"]", &[]);
    store.refresh(b"[\"b\"]", &[]);
    store.refresh(b"[\"a\"]", &[]); // generation 3 shares generation 1's snapshot
    damage(&store, a["hash"].as_str().unwrap());
    let out = store.run(&["verify"]);
    assert_eq!(code(&out), 1);
    let report = text(&out.stdout);
    assert_eq!(report.matches("problem (").count(), 1, "once: {report}");
    assert!(report.contains("(generations 1, 3)"), "{report}");
    assert!(
        report.contains("rollback --to 2"),
        "to the intact one: {report}"
    );

    // Only an old generation damaged: no rollback is suggested.
    let store = TestStore::new();
    let old = store.refresh(b"[\"old\"]", &[]);
    store.refresh(b"[\"new\"]", &[]);
    damage(&store, old["hash"].as_str().unwrap());
    let out = store.run(&["verify"]);
    let report = text(&out.stdout);
    assert!(report.contains("(generation 1)"), "{report}");
    assert!(
        !report.contains("rollback"),
        "the current one is intact: {report}"
    );
    assert!(report.contains("current generation is intact"), "{report}");

    // Nothing intact: only a refresh can help.
    let store = TestStore::new();
    let only = store.refresh(b"[\"only\"]", &[]);
    damage(&store, only["hash"].as_str().unwrap());
    let report = text(&store.run(&["verify"]).stdout);
    assert!(!report.contains("rollback"), "{report}");
    assert!(report.contains("snapcache refresh"), "{report}");
}

#[test]
fn lock_timeout_accepts_only_the_documented_spellings() {
    let store = TestStore::new();
    store.refresh(b"[1]", &[]);
    for bad in ["never", "inf", "forever", "none"] {
        let out = store.run(&["gc", "--lock-timeout", bad]);
        assert_eq!(code(&out), 2, "{bad}: {}", text(&out.stderr));
    }
    store.ok(&["gc", "--lock-timeout", "infinite"]);
    // The variable takes the same spellings.
    for bad in ["never", "forever"] {
        let mut cmd = store.command(&["gc"]);
        cmd.env("SNAPCACHE_LOCK_TIMEOUT", bad);
        let out = run_with_timeout(cmd);
        assert_eq!(code(&out), 2, "{bad}: {}", text(&out.stderr));
        assert!(
            text(&out.stderr).contains("SNAPCACHE_LOCK_TIMEOUT"),
            "{}",
            text(&out.stderr)
        );
    }
    let mut cmd = store.command(&["gc"]);
    cmd.env("SNAPCACHE_LOCK_TIMEOUT", "infinite");
    assert_eq!(code(&run_with_timeout(cmd)), 0);
}

#[test]
fn a_relative_xdg_cache_home_is_ignored() {
    let home = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let out = Command::new(bin())
        .args(["--json", "status"])
        .current_dir(work.path())
        .env_remove("SNAPCACHE_DIR")
        .env("XDG_CACHE_HOME", "relative/cache")
        .env("HOME", home.path())
        .output()
        .unwrap();
    let value: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let expected = home.path().join(".cache").join("snapcache");
    assert_eq!(
        value["store"],
        expected.to_str().unwrap(),
        "the default under HOME is used: {value}"
    );
    assert!(!work.path().join("relative").exists());
}

/// Reproduced: `HOME=relhome snapcache refresh` made its store under the
/// working directory (`./relhome/.cache/snapcache`), and with only relative
/// variables the error told the user to set `XDG_CACHE_HOME`, which was
/// set. A relative `HOME` is ignored like a relative `XDG_CACHE_HOME`, and
/// the error names what it ignored.
#[test]
fn a_relative_home_is_ignored_and_the_error_says_so() {
    let work = tempfile::tempdir().unwrap();
    let from = work.path().join("p.json");
    std::fs::write(&from, b"[1]").unwrap();
    for (xdg, home) in [(None, "relhome"), (Some("rel/cache"), "relhome")] {
        let mut cmd = Command::new(bin());
        cmd.args(["--json", "refresh", "--from"])
            .arg(&from)
            .current_dir(work.path())
            .env_remove("SNAPCACHE_DIR")
            .env_remove("XDG_CACHE_HOME")
            .env("HOME", home);
        if let Some(xdg) = xdg {
            cmd.env("XDG_CACHE_HOME", xdg);
        }
        let out = run_with_timeout(cmd);
        assert_eq!(code(&out), 2, "{}", text(&out.stderr));
        let value: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let message = value["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("HOME=\"relhome\"") && message.contains("not an absolute path"),
            "{message}"
        );
        if xdg.is_some() {
            assert!(
                message.contains("XDG_CACHE_HOME=\"rel/cache\""),
                "{message}"
            );
        }
        assert!(
            !work.path().join("relhome").exists(),
            "nothing made under the working directory"
        );
        assert!(!work.path().join("rel").exists());
    }
}

#[test]
fn status_json_has_the_note_and_both_ages() {
    let store = TestStore::new();
    store.refresh(b"[1]", &["--note", "from foojay"]);
    let (_, status) = store.json(&["status"]);
    assert_eq!(status["note"], "from foojay");
    assert!(status["created_age_seconds"].is_u64(), "{status}");
    assert!(status["checked_age_seconds"].is_u64(), "{status}");
    assert_eq!(
        status["age_seconds"], status["checked_age_seconds"],
        "the old key stays"
    );
}

#[test]
fn help_documents_environment_exit_codes_and_json_and_separates_global_options() {
    let store = TestStore::new();
    let help = text(&store.ok(&["--help"]).stdout);
    for needle in [
        "Environment:",
        "SNAPCACHE_LOG",
        "RUST_LOG",
        "NO_COLOR",
        "SNAPCACHE_LOCK_TIMEOUT",
        "Exit codes:",
        "75",
        "JSON (--json)",
        "created_age_seconds",
        "Global options",
        "--color",
    ] {
        assert!(help.contains(needle), "--help lacks {needle:?}");
    }
    let gc = text(&store.ok(&["gc", "--help"]).stdout);
    let (own, global) = gc.split_once("Global options").expect("a global section");
    assert!(
        own.contains("--keep") && own.contains("--lock-timeout"),
        "{gc}"
    );
    assert!(
        global.contains("--store") && !global.contains("--keep"),
        "{gc}"
    );
    // Only writing commands offer --lock-timeout.
    let show = text(&store.ok(&["show", "--help"]).stdout);
    assert!(!show.contains("--lock-timeout"), "{show}");
}

#[test]
fn refresh_from_stdin_on_a_terminal_says_so() {
    if !has_script() {
        return;
    }
    let store = TestStore::new();
    let inner = format!(
        "timeout --foreground -s INT 2 {} --store {} refresh --from - 2>&1",
        bin(),
        store.root().display()
    );
    let (_, tty) = on_terminal(&inner);
    assert!(tty.contains("reading the payload from stdin"), "{tty:?}");
    assert!(tty.contains("Ctrl-D"), "{tty:?}");
    // Not with -q.
    let (_, tty) = on_terminal(&inner.replace(" refresh ", " -q refresh "));
    assert!(!tty.contains("reading the payload"), "-q: {tty:?}");
    // Off a terminal (a pipe), nothing is said.
    let mut cmd = store.command(&["refresh", "--from", "-"]);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"[1]").unwrap();
    }
    let out = wait_output(child, COMMAND_TIMEOUT);
    assert_eq!(code(&out), 0);
    assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
}
