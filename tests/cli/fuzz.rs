//! Property test: whatever the arguments and environment, the binary ends
//! with a documented exit code and never panics.
//!
//! Each case runs the built binary once against one scratch store (holding
//! two generations to begin with), stdin null, with a short lock timeout
//! unless the case sets its own, and a hard per-run timeout. Arguments are
//! grammar-shaped (real subcommands and flags with generated values: extreme,
//! negative, NaN and `1e309` numbers, empty strings, bytes that are not
//! UTF-8) or plain garbage (random byte strings).
//!
//! `cargo test` runs 48 cases (a few seconds). A longer run:
//! `SNAPCACHE_FUZZ_CASES=2000 cargo test --test cli fuzz` (see
//! docs/reliability.md).

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

use crate::common::*;

/// The exit codes the CLI documents (docs/reference.md).
const DOCUMENTED: [i32; 6] = [0, 1, 2, 65, 75, 130];
/// No single run may take longer than this.
const RUN_TIMEOUT: Duration = Duration::from_secs(20);

fn cases() -> u32 {
    std::env::var("SNAPCACHE_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(48)
}

/// Bytes for an argument (no NUL: the OS cannot pass it).
fn bytes_arg(max: usize) -> impl Strategy<Value = OsString> {
    prop::collection::vec(1u8..=255, 0..max).prop_map(OsString::from_vec)
}

/// A number-like value: the boundaries and the absurd.
fn number() -> impl Strategy<Value = OsString> {
    prop_oneof![
        3 => (0u32..12).prop_map(|n| OsString::from(n.to_string())),
        3 => prop::sample::select(vec![
            "0",
            "-0",
            "1",
            "-1",
            "0.3",
            "0.29",
            "1.5",
            "100",
            "101",
            "86400",
            "86401",
            "1e9",
            "1e12",
            "1e19",
            "1e30",
            "1e309",
            "-1e309",
            "NaN",
            "nan",
            "inf",
            "-inf",
            "infinite",
            "18446744073709551615",
            "18446744073709551616",
            "99999999999999999999999",
            "0x10",
            " 5 ",
            "",
            "5s",
        ])
        .prop_map(OsString::from),
        1 => any::<u64>().prop_map(|n| OsString::from(n.to_string())),
        1 => any::<i64>().prop_map(|n| OsString::from(n.to_string())),
        1 => any::<f64>().prop_map(|n| OsString::from(format!("{n:e}"))),
        1 => bytes_arg(8),
    ]
}

/// A `--max-age`-like duration.
fn duration() -> impl Strategy<Value = OsString> {
    prop_oneof![
        prop::sample::select(vec![
            "0s",
            "10m",
            "1h",
            "99999999999y",
            "18446744073709551615s",
            "1000000000s",
            "1000000001s",
            "-5m",
            "",
            "1e309s",
            "forever",
        ])
        .prop_map(OsString::from),
        (
            any::<u64>(),
            prop::sample::select(vec!["ns", "s", "m", "h", "d", "y"])
        )
            .prop_map(|(n, unit)| OsString::from(format!("{n}{unit}"))),
        number(),
    ]
}

/// An optional `--lock-timeout VALUE`.
fn lock_timeout() -> impl Strategy<Value = Option<Vec<OsString>>> {
    prop::option::weighted(
        0.3,
        number().prop_map(|v| vec![OsString::from("--lock-timeout"), v]),
    )
}

/// The argument list of one subcommand.
fn subcommand(payloads: Vec<OsString>) -> impl Strategy<Value = Vec<OsString>> {
    let os = |s: &str| OsString::from(s);
    let source = prop_oneof![
        prop::sample::select(payloads).prop_map(move |p| vec![os("--from"), p]),
        Just(vec![os("--from"), os("-")]),
        bytes_arg(12).prop_map(move |p| vec![os("--from"), p]),
        prop::sample::select(vec![
            vec!["echo", "[1]"],
            vec!["sh", "-c", "echo {}"],
            vec!["sh", "-c", "echo '[' ; exit 3"],
            vec!["sh", "-c", "echo oops >&2; exit 1"],
            vec!["true"],
            vec!["false"],
            vec!["/nonexistent/program"],
            vec![""],
        ])
        .prop_map(move |cmd| {
            let mut args = vec![os("--exec")];
            args.extend(cmd.into_iter().map(os));
            args
        }),
        bytes_arg(10).prop_map(move |a| vec![os("--exec"), os("printf"), a]),
    ];
    let refresh = (
        source,
        prop::option::weighted(0.3, duration()),
        any::<bool>(),
        prop::option::weighted(
            0.3,
            prop_oneof![
                "[a-z ]{0,20}".prop_map(OsString::from),
                // Long notes (clipped at 200 bytes, maybe inside a character).
                ".{190,210}".prop_map(|s: String| OsString::from(s.replace('\0', " "))),
                bytes_arg(300),
            ],
        ),
        lock_timeout(),
    )
        .prop_map(move |(source, max_age, raw, note, timeout)| {
            let mut args = vec![os("refresh")];
            if let Some(age) = max_age {
                args.extend([os("--max-age"), age]);
            }
            if raw {
                args.push(os("--raw"));
            }
            if let Some(note) = note {
                args.extend([os("--note"), note]);
            }
            args.extend(timeout.into_iter().flatten());
            // --exec takes the rest of the line: it goes last.
            args.extend(source);
            args
        });
    let show = prop_oneof![
        Just(vec![os("show")]),
        Just(vec![os("show"), os("--fallback")]),
        number().prop_map(move |n| vec![os("show"), os("--generation"), n]),
    ];
    let rollback = (prop::option::of(number()), lock_timeout()).prop_map(move |(to, t)| {
        let mut args = vec![os("rollback")];
        if let Some(to) = to {
            args.extend([os("--to"), to]);
        }
        args.extend(t.into_iter().flatten());
        args
    });
    let gc = (prop::option::of(number()), any::<bool>(), lock_timeout()).prop_map(
        move |(keep, dry, t)| {
            let mut args = vec![os("gc")];
            if let Some(keep) = keep {
                args.extend([os("--keep"), keep]);
            }
            if dry {
                args.push(os("--dry-run"));
            }
            args.extend(t.into_iter().flatten());
            args
        },
    );
    prop_oneof![
        4 => refresh,
        2 => show,
        1 => Just(vec![os("status")]),
        1 => Just(vec![os("history")]),
        1 => Just(vec![os("verify")]),
        1 => rollback,
        1 => gc,
        1 => bytes_arg(10).prop_map(|a| vec![a]),
    ]
}

/// Global options placed before the subcommand.
fn globals(store: OsString) -> impl Strategy<Value = Vec<OsString>> {
    let os = |s: &str| OsString::from(s);
    (
        any::<bool>(),
        any::<bool>(),
        0usize..4,
        prop::option::weighted(
            0.3,
            prop_oneof![
                prop::sample::select(vec!["auto", "advisory", "lease", "", "LEASE"])
                    .prop_map(OsString::from),
                bytes_arg(6),
            ],
        ),
        prop::option::of(prop_oneof![
                    4 => Just(store.clone()),
                    1 =>
        bytes_arg(10).prop_map(move |name| {
                        // A generated store name inside the scratch directory.
                        let mut path = store.clone();
                        path.push("-");
                        path.push(name);
                        path
                    }),
                ]),
    )
        .prop_map(move |(json, quiet, verbose, backend, store)| {
            let mut args = Vec::new();
            if json {
                args.push(os("--json"));
            }
            if quiet {
                args.push(os("--quiet"));
            }
            for _ in 0..verbose {
                args.push(os("-v"));
            }
            if let Some(b) = backend {
                args.extend([os("--lock-backend"), b]);
            }
            if let Some(s) = store {
                args.extend([os("--store"), s]);
            }
            args
        })
}

/// Environment variables the CLI reads, with generated values.
fn environment() -> impl Strategy<Value = Vec<(&'static str, OsString)>> {
    let var = prop::sample::select(vec![
        "SNAPCACHE_KEEP",
        "SNAPCACHE_LEASE_SECS",
        "SNAPCACHE_LOCK_TIMEOUT",
        "SNAPCACHE_LOCK_BACKEND",
        "SNAPCACHE_LOG",
        "SNAPCACHE_DIR",
    ]);
    let value = prop_oneof![
        3 => prop::sample::select(vec!["1", "3", "100", "0.5", "30", "lease", "advisory", "debug", "trace"])
            .prop_map(OsString::from),
        2 => number(),
        1 => bytes_arg(12),
    ];
    prop::collection::vec((var, value), 0..2)
}

/// One case: the arguments and environment of one run.
#[derive(Debug, Clone)]
struct Case {
    args: Vec<OsString>,
    env: Vec<(&'static str, OsString)>,
}

fn case(store: OsString, payloads: Vec<OsString>) -> impl Strategy<Value = Case> {
    let grammar = (globals(store.clone()), subcommand(payloads), environment()).prop_map(
        move |(mut args, sub, env)| {
            args.extend(sub);
            Case { args, env }
        },
    );
    let garbage =
        (prop::collection::vec(bytes_arg(16), 0..6), environment()).prop_map(move |(junk, env)| {
            let mut args = vec![OsString::from("--store"), store.clone()];
            args.extend(junk);
            Case { args, env }
        });
    prop_oneof![4 => grammar, 1 => garbage]
}

fn run_case(store: &TestStore, case: &Case) -> Result<i32, TestCaseError> {
    let mut cmd = Command::new(bin());
    cmd.args(&case.args)
        .env_remove("SNAPCACHE_DIR")
        .env_remove("SNAPCACHE_KEEP")
        .env_remove("SNAPCACHE_LOG")
        .env_remove("SNAPCACHE_LEASE_SECS")
        .env_remove("SNAPCACHE_LOCK_BACKEND")
        .env_remove("RUST_BACKTRACE")
        // Nothing else runs against the store, but never wait long.
        .env("SNAPCACHE_LOCK_TIMEOUT", "2")
        .env("XDG_CACHE_HOME", store.scratch("xdg"))
        .current_dir(store.dir.path())
        .stdin(Stdio::null());
    for (name, value) in &case.env {
        if *name == "SNAPCACHE_DIR" {
            // Generated store locations stay inside the scratch directory.
            let mut dir = store.scratch("env-").into_os_string();
            dir.push(value);
            cmd.env(name, dir);
        } else {
            cmd.env(name, value);
        }
    }
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = cmd
        .spawn()
        .map_err(|e| TestCaseError::fail(format!("spawn: {e}")))?;
    let out = wait_output(child, RUN_TIMEOUT);
    let stderr = text(&out.stderr);
    let code = code(&out);
    prop_assert!(
        !stderr.contains("panicked"),
        "panic (exit {code}) for {case:?}: {stderr}"
    );
    prop_assert!(
        DOCUMENTED.contains(&code),
        "undocumented exit code {code} for {case:?}: {stderr}"
    );
    Ok(code)
}

#[test]
fn fuzz_any_arguments_and_environment_exit_with_a_documented_code() {
    let store = TestStore::new();
    store.refresh(&json_payload(500, 1), &[]);
    store.refresh(&json_payload(500, 2), &[]);
    let mut payloads = vec![
        store
            .payload("valid.json", b"{\"a\":[1,2,3]}")
            .into_os_string(),
        store.payload("invalid.json", b"{\"a\":").into_os_string(),
        store.payload("empty", b"").into_os_string(),
        store.scratch("missing.json").into_os_string(),
        store.dir.path().as_os_str().to_owned(),
    ];
    // A payload file whose name is not UTF-8.
    let mut odd = store.dir.path().as_os_str().to_owned();
    odd.push("/");
    odd.push(OsString::from_vec(b"payload-\xff\xfe.json".to_vec()));
    std::fs::write(&odd, b"[\"odd\"]").unwrap();
    payloads.push(odd);

    let config = Config {
        cases: cases(),
        failure_persistence: None,
        max_shrink_iters: 200,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    let strategy = case(store.root().into_os_string(), payloads);
    let tally = std::sync::Mutex::new(std::collections::BTreeMap::<i32, u32>::new());
    let result = runner.run(&strategy, |c| {
        let code = run_case(&store, &c)?;
        *tally.lock().unwrap().entry(code).or_default() += 1;
        Ok(())
    });
    // The spread of exit codes shows the cases reach past argument parsing.
    eprintln!("fuzz: exit codes (code: runs): {:?}", tally.lock().unwrap());
    if let Err(e) = result {
        panic!("{e}");
    }
}
