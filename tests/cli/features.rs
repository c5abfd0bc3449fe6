//! Features users of other tools expect (issue 11, part 2): relative ages
//! in `history`, `--exec` arguments kept private, progress on a terminal.

use std::process::{Command, Stdio};

use crate::common::*;

fn has_script() -> bool {
    let ok = Command::new("script").arg("--version").output().is_ok();
    if !ok {
        eprintln!("SKIPPED: util-linux `script` (to give snapcache a terminal) is not installed");
    }
    ok
}

#[test]
fn history_shows_relative_ages_beside_the_absolute_time() {
    let store = TestStore::new();
    store.refresh(b"[1]", &[]);
    let out = store.ok(&["history"]);
    let table = text(&out.stdout);
    let row = table.lines().nth(1).expect("a row");
    assert!(row.contains("seconds ago"), "{table}");
    assert!(
        row.contains('T') && row.contains('Z'),
        "the absolute time stays: {table}"
    );
    assert!(table.lines().next().unwrap().contains("age"), "{table}");
    let (_, history) = store.json(&["history"]);
    assert!(
        history["generations"][0]["age_seconds"].is_u64(),
        "{history}"
    );
}

#[test]
fn history_ages_are_in_gits_relative_style_for_old_generations_too() {
    // Generations created 40, 35, 20 and 1 days ago (git rounds: weeks
    // from two weeks on, hours below 36 hours).
    let store = crate::generations::store_with_dated_generations();
    let table = text(&store.ok(&["history"]).stdout);
    let rows: Vec<&str> = table.lines().skip(1).collect();
    assert_eq!(rows.len(), 4, "{table}");
    for (row, age) in rows
        .iter()
        .zip(["6 weeks ago", "5 weeks ago", "3 weeks ago", "24 hours ago"])
    {
        assert!(row.contains(age), "{age:?} in {row:?}\n{table}");
    }
}

#[test]
fn exec_arguments_are_not_persisted_but_the_program_is() {
    let store = TestStore::new();
    let secret = "Authorization: Bearer s3cr3t-t0ken";
    // The command holds the lock for a while so the holder record is seen.
    let script = format!("sleep 1; echo '[1]' # {secret}");
    let child = store
        .command(&["refresh", "--exec", "sh", "-c", &script])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = store.wait_until_locked();
    let holder = std::fs::read_to_string(store.root().join("lock.holder")).unwrap_or_default();
    let out = wait_output(child, COMMAND_TIMEOUT);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    assert!(!status.to_string().contains("s3cr3t"), "status: {status}");
    assert!(!holder.contains("s3cr3t"), "holder record: {holder}");
    assert!(
        status["lock"]["command"]
            .as_str()
            .unwrap_or("")
            .contains("--exec sh"),
        "the program is named: {status}"
    );
    let (_, history) = store.json(&["history"]);
    assert_eq!(history["generations"][0]["note"], "exec sh", "{history}");
    let everything: Vec<u8> = std::fs::read(store.root().join("current")).unwrap();
    assert!(!text(&everything).contains("s3cr3t"), "pointer");
    // --note still says what the user wants.
    store.ok(&["refresh", "--note", "foojay all", "--exec", "echo", "[2]"]);
    let (_, history) = store.json(&["history"]);
    assert_eq!(history["generations"][1]["note"], "foojay all");
}

#[test]
fn a_slow_refresh_on_a_terminal_shows_progress_and_never_elsewhere() {
    let store = TestStore::new();
    let slow = "printf '['; sleep 1.6; printf '1]'";
    // Off a terminal: no progress line.
    let out = store.run(&["refresh", "--exec", "sh", "-c", slow]);
    assert_eq!(code(&out), 0);
    assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
    if !has_script() {
        return;
    }
    let run = |flags: &str| {
        let inner = format!(
            "{} --store {} {flags} refresh --exec sh -c \"{slow}\" 2>&1 >/dev/null",
            bin(),
            store.root().display()
        );
        let mut cmd = Command::new("script");
        cmd.args(["-qec", &inner, "/dev/null"]);
        let out = run_with_timeout(cmd);
        assert_eq!(code(&out), 0, "{}", text(&out.stdout));
        text(&out.stdout)
    };
    let tty = run("");
    assert!(
        tty.contains("\r\x1b[2Ksnapcache: read "),
        "a live line: {tty:?}"
    );
    assert!(tty.contains("B/s)"), "with a rate: {tty:?}");
    assert!(
        tty.ends_with("\r\x1b[2K") || tty.contains("\r\x1b[2K\r"),
        "erased at the end: {tty:?}"
    );
    let quiet = run("-q");
    assert!(!quiet.contains("B/s"), "-q: {quiet:?}");
    let json = run("--json");
    assert!(!json.contains("B/s"), "--json: {json:?}");
    // A quick refresh shows nothing.
    let quick = {
        let inner = format!(
            "{} --store {} refresh --exec echo '[3]' 2>&1 >/dev/null",
            bin(),
            store.root().display()
        );
        let mut cmd = Command::new("script");
        cmd.args(["-qec", &inner, "/dev/null"]);
        text(&run_with_timeout(cmd).stdout)
    };
    assert!(!quick.contains("B/s"), "{quick:?}");
}

#[test]
fn a_slow_show_on_a_terminal_shows_progress_and_never_elsewhere() {
    // A reader that takes its time: the kernel copy to the pipe blocks
    // until it drains, so the show runs well past a second however fast the
    // copy itself is, and each megabyte done is reported.
    let store = TestStore::new();
    let payload = json_payload(3_000_000, 7);
    store.refresh(&payload, &[]);
    let slow_reader = "{ sleep 1.5; cat > /dev/null; }";
    // Off a terminal: stdout gets every byte, stderr nothing.
    let mut cmd = store.command(&["show"]);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(1500));
        let mut all = Vec::new();
        std::io::Read::read_to_end(&mut stdout, &mut all).unwrap();
        all
    });
    let out = wait_output(child, COMMAND_TIMEOUT);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    assert!(reader.join().unwrap() == payload, "every byte, in order");
    assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
    if !has_script() {
        return;
    }
    let run = |flags: &str| {
        // stderr is the terminal; stdout the slow pipe.
        let inner = format!(
            "{} --store {} {flags} show | {slow_reader}",
            bin(),
            store.root().display()
        );
        let mut cmd = Command::new("script");
        cmd.args(["-qec", &inner, "/dev/null"]);
        let out = run_with_timeout(cmd);
        assert_eq!(code(&out), 0, "{}", text(&out.stdout));
        text(&out.stdout)
    };
    let tty = run("");
    assert!(
        tty.contains("\r\x1b[2Ksnapcache: written "),
        "a live line: {tty:?}"
    );
    assert!(tty.contains("B/s)"), "with a rate: {tty:?}");
    assert!(tty.contains(" MB in "), "megabytes done: {tty:?}");
    assert!(
        tty.ends_with("\r\x1b[2K"),
        "erased at the end, nothing else said: {tty:?}"
    );
    let quiet = run("-q");
    assert!(!quiet.contains("B/s"), "-q: {quiet:?}");
    assert!(quiet.is_empty(), "-q: {quiet:?}");
    let json = run("--json");
    assert!(!json.contains("B/s"), "--json: {json:?}");
    // A quick show (a reader that keeps up) shows nothing.
    let quick = {
        let inner = format!(
            "{} --store {} show > /dev/null",
            bin(),
            store.root().display()
        );
        let mut cmd = Command::new("script");
        cmd.args(["-qec", &inner, "/dev/null"]);
        text(&run_with_timeout(cmd).stdout)
    };
    assert!(quick.is_empty(), "{quick:?}");
}

#[test]
fn completions_for_every_shell_name_every_subcommand() {
    let store = TestStore::new();
    // Every subcommand `--help` lists, so that a new one is checked too.
    let help = text(&Command::new(bin()).arg("--help").output().unwrap().stdout);
    let (_, list) = help.split_once("Commands:").expect("a command list");
    let subcommands: Vec<&str> = list
        .lines()
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| *n != "help")
        .collect();
    for sub in [
        "refresh",
        "forget",
        "pin",
        "unpin",
        "diff",
        "clear",
        "completions",
        "man",
    ] {
        assert!(subcommands.contains(&sub), "{sub} in {subcommands:?}");
    }
    for shell in ["bash", "zsh", "fish", "powershell", "elvish"] {
        let out = Command::new(bin())
            .args(["completions", shell])
            .env_remove("HOME")
            .env_remove("SNAPCACHE_DIR")
            .output()
            .unwrap();
        assert_eq!(code(&out), 0, "{shell}: {}", text(&out.stderr));
        let script = text(&out.stdout);
        assert!(script.len() > 200, "{shell}: a script");
        for sub in &subcommands {
            assert!(script.contains(sub), "{shell} lacks {sub}");
        }
        assert!(script.contains("lock-timeout"), "{shell}: options too");
    }
    let out = store.run(&["completions", "tcsh"]);
    assert_eq!(code(&out), 2, "an unknown shell is a usage error");
    assert!(!store.root().exists(), "no store is made");
}

#[test]
fn the_man_page_renders() {
    let out = Command::new(bin()).arg("man").output().unwrap();
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    let roff = text(&out.stdout);
    assert!(
        roff.starts_with(".ie") || roff.contains(".TH"),
        "roff: {}",
        &roff[..roff.len().min(200)]
    );
    assert!(roff.contains("snapcache"));
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("snapcache.1");
    std::fs::write(&page, &out.stdout).unwrap();
    let rendered = Command::new("groff")
        .args(["-man", "-Tutf8"])
        .arg(&page)
        .output();
    match rendered {
        Ok(r) => {
            assert!(r.status.success(), "groff: {}", text(&r.stderr));
            let page = text(&r.stdout);
            assert!(
                page.contains("SYNOPSIS") || page.contains("S\u{8}SY"),
                "{page}"
            );
            for sub in ["refresh", "rollback", "completions"] {
                assert!(page.contains(sub), "the page lists {sub}");
            }
        }
        Err(e) => {
            eprintln!("SKIPPED: groff is not installed ({e}); the roff text was checked only")
        }
    }
}

/// Found by a hostile audit: `{"a":1,"a":2}` and `{"a":2}` were reported
/// as holding equal JSON values and nothing more, though their bytes (and
/// what a parser keeping the first duplicate sees) differ.
#[test]
fn diff_of_equal_values_in_different_bytes_says_the_bytes_differ() {
    let store = TestStore::new();
    store.refresh(br#"{"a":1,"a":2}"#, &[]);
    store.refresh(br#"{"a":2}"#, &[]);
    let said = text(&store.ok(&["diff"]).stdout);
    assert!(
        said.contains("equal JSON values, but their bytes differ"),
        "{said}"
    );
    let (_, value) = store.json(&["diff"]);
    assert_eq!(
        (value["identical"].as_bool(), value["same_bytes"].as_bool()),
        (Some(true), Some(false)),
        "{value}"
    );
    store.refresh(br#"{"a":2}"#, &[]);
    store.refresh(b"[1]", &[]);
    store.refresh(br#"{"a":2}"#, &[]);
    let (_, value) = store.json(&["diff", "2"]);
    assert_eq!(value["same_bytes"], true, "{value}");
}

#[test]
fn diff_lists_json_changes_as_pointers_with_counts_and_a_bound() {
    let store = TestStore::new();
    store.refresh(
        br#"{"distributions":{"temurin":{"packages":[{"size":1},{"size":2}]},"zulu":{"v":1}},"a/b":1}"#,
        &[],
    );
    store.refresh(
        br#"{"distributions":{"temurin":{"packages":[{"size":1},{"size":3},{"size":4}]},"corretto":{}},"a/b":1}"#,
        &[],
    );
    let out = store.ok(&["diff"]);
    let human = text(&out.stdout);
    assert!(
        human.starts_with("generation 1 -> 2: 2 added, 1 removed, 1 changed"),
        "{human}"
    );
    assert!(
        human.contains("~ /distributions/temurin/packages/1/size: 2 -> 3"),
        "{human}"
    );
    assert!(
        human.contains("+ /distributions/temurin/packages/2: {\"size\":4}"),
        "{human}"
    );
    assert!(human.contains("- /distributions/zulu: "), "{human}");
    assert!(human.contains("+ /distributions/corretto: {}"), "{human}");
    let (_, value) = store.json(&["diff", "1", "2"]);
    assert_eq!(value["format"], "json");
    assert_eq!(value["counts"]["added"], 2);
    assert_eq!(value["counts"]["removed"], 1);
    assert_eq!(value["counts"]["changed"], 1);
    assert_eq!(
        value["changed"][0]["path"],
        "/distributions/temurin/packages/1/size"
    );
    assert_eq!(value["changed"][0]["old"], 2);
    assert_eq!(value["changed"][0]["new"], 3);
    // Bounded output, saying how many more.
    let out = store.ok(&["diff", "--limit", "1"]);
    let human = text(&out.stdout);
    assert_eq!(human.lines().count(), 3, "{human}");
    assert!(human.contains("... and 3 more"), "{human}");
    // The other way round, and a key with a slash escaped as ~1.
    store.refresh(br#"{"a/b":2}"#, &["--raw"]);
    let (_, value) = store.json(&["diff", "2", "3"]);
    assert_eq!(value["changed"][0]["path"], "/a~1b", "{value}");
    // Raw snapshots: sizes and whether they differ.
    store.refresh(b"not json at all", &["--raw"]);
    let out = store.ok(&["diff"]);
    let human = text(&out.stdout);
    assert!(
        human.contains("not both JSON") && human.contains("differ"),
        "{human}"
    );
    let (_, value) = store.json(&["diff"]);
    assert_eq!(value["format"], "raw");
    assert_eq!(value["identical"], false);
    assert_eq!(value["to_bytes"], 15);
    assert_eq!(value["both_json"], false, "{value}");
    // JSON nested deeper than serde_json holds as a value: the store takes
    // it (its check has no nesting limit), and diff says both are JSON
    // instead of calling one "not JSON".
    let deep = format!("{}{}", "[".repeat(200_000), "]".repeat(200_000));
    store.refresh(deep.as_bytes(), &[]);
    store.refresh(br#"{"a": 1e999}"#, &[]);
    for (args, generation, needle) in [
        (["diff", "3", "5"], 5, "recursion limit exceeded"),
        (["diff", "5", "6"], 5, "recursion limit exceeded"),
        (["diff", "3", "6"], 6, "number out of range"),
    ] {
        let out = store.ok(&args);
        let human = text(&out.stdout);
        assert!(
            human.contains(&format!(
                "are both JSON, but generation {generation} cannot be compared value by value ("
            )) && human.contains(needle)
                && human.contains("compared as bytes, their bytes differ"),
            "{args:?}: {human}"
        );
        assert!(!human.contains("not both JSON"), "{args:?}: {human}");
        let (_, value) = store.json(&args);
        assert_eq!(value["format"], "raw", "{value}");
        assert_eq!(value["both_json"], true, "{value}");
        assert_eq!(value["not_comparable"]["generation"], generation, "{value}");
        assert!(
            value["not_comparable"]["reason"]
                .as_str()
                .unwrap()
                .contains(needle),
            "{value}"
        );
    }
    // Not JSON beside deep JSON is still "not both JSON".
    let out = store.ok(&["diff", "4", "5"]);
    assert!(
        text(&out.stdout).contains("not both JSON"),
        "{}",
        text(&out.stdout)
    );
    // Unknown generation: exit 1; a single generation: nothing to compare.
    let out = store.run(&["diff", "99"]);
    assert_eq!(code(&out), 1);
    let single = TestStore::new();
    single.refresh(b"[1]", &[]);
    let out = single.run(&["diff"]);
    assert_eq!(code(&out), 1);
    assert!(
        text(&out.stderr).contains("nothing to compare"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn clear_takes_the_writer_lock() {
    let store = TestStore::new();
    store.refresh(b"[1]", &[]);
    let holder = store
        .command(&["refresh", "--exec", "sh", "-c", "sleep 2; echo '[2]'"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    store.wait_until_locked();
    let (out, value) = store.json(&["clear", "--lock-timeout", "0.3"]);
    assert_eq!(
        code(&out),
        75,
        "it waits for the lock, then gives up: {value}"
    );
    assert_eq!(value["error"]["kind"], "lock-timeout", "{value}");
    let done = wait_output(holder, COMMAND_TIMEOUT);
    assert_eq!(code(&done), 0, "{}", text(&done.stderr));
    assert_eq!(store.show(), b"[2]\n", "nothing was cleared meanwhile");
    let (out, value) = store.json(&["clear"]);
    assert_eq!(code(&out), 0, "{value}");
    assert_eq!(value["previous_generation"], 2, "{value}");
}

#[test]
fn clear_removes_every_generation_and_creates_no_store() {
    let store = TestStore::new();
    store.refresh(b"[1]", &[]);
    store.refresh(b"[2]", &[]);
    let out = store.ok(&["clear"]);
    let said = text(&out.stdout);
    assert!(
        said.starts_with("cleared: generation 2 was current; removed 2 snapshot(s)"),
        "{said}"
    );
    let hex: Vec<String> = store
        .files_in("snapshots")
        .into_iter()
        .filter(|n| n.len() == 64)
        .collect();
    assert!(hex.is_empty(), "no snapshot is left: {hex:?}");
    let (out, value) = store.json(&["show"]);
    assert_eq!(code(&out), 1);
    assert_eq!(value["error"]["kind"], "no-store", "{value}");
    let (out, value) = store.json(&["clear"]);
    assert_eq!(code(&out), 0, "clearing a cleared store is fine");
    assert_eq!(value["previous_generation"], serde_json::Value::Null);
    // A refresh starts again.
    store.refresh(b"[3]", &[]);
    assert_eq!(store.show(), b"[3]");
    // A mistyped path: no-store, nothing created.
    let missing = TestStore::new();
    let (out, value) = missing.json(&["clear"]);
    assert_eq!(code(&out), 1);
    assert_eq!(value["error"]["kind"], "no-store", "{value}");
    assert!(!missing.root().exists());
}

/// Found by a hostile audit: `diff` kept every difference, each with a
/// copy of its path, and printed only `--limit` of them. Two 360 KB
/// payloads (a 300 KB key above 20,000 changed elements) needed 6 GB and
/// aborted under a 3 GB limit with no JSON. Only the first `limit` are
/// kept now; all are counted. Run under a 1 GB address-space limit.
#[test]
fn diff_of_many_changes_under_a_long_path_keeps_only_what_it_prints() {
    let store = TestStore::new();
    let key = "k".repeat(300_000);
    let payload =
        |v: u8| serde_json::to_vec(&serde_json::json!({ &key: vec![v; 20_000] })).unwrap();
    store.refresh(&payload(0), &[]);
    store.refresh(&payload(1), &[]);
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg("ulimit -v 1000000 && exec \"$0\" \"$@\"")
        .arg(bin())
        .args([
            "--store",
            store.root().to_str().unwrap(),
            "--json",
            "diff",
            "--limit",
            "1",
        ]);
    let out = run_with_timeout(cmd);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    let value: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(value["counts"]["changed"], 20_000, "every change counted");
    assert_eq!(value["changed"].as_array().map(Vec::len), Some(1));
    assert_eq!(value["omitted"], 19_999);
}
