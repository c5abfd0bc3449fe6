//! A writer in another PID namespace (a container, `unshare --pid`) records
//! a pid that means nothing outside: it must never be judged dead by that
//! pid, neither when its lease is taken over nor when its temp files are
//! swept.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use crate::common::*;

/// This process's PID namespace, as snapcache records it.
fn our_pid_ns() -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self/ns/pid").unwrap().ino()
}

fn alive(pid: u32) -> bool {
    rustix::process::Pid::from_raw(pid as i32)
        .is_some_and(|p| rustix::process::test_kill_process(p).is_ok())
}

/// Whether `unshare --pid --fork` works here (needs root or user namespaces).
fn unshare_works() -> Result<(), String> {
    match Command::new("unshare")
        .args(["--pid", "--fork", "true"])
        .stdin(Stdio::null())
        .output()
    {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(format!(
            "`unshare --pid --fork true` failed: {}",
            text(&out.stderr).trim()
        )),
        Err(e) => Err(format!("cannot run unshare: {e}")),
    }
}

fn marker_exec(marker: &Path, payload: &str, sleep: &str) -> String {
    format!(
        "mkdir '{m}' 2>/dev/null || {{ echo 'TWO''HOLDERS' >&2; exit 9; }}; sleep {sleep}; rmdir '{m}'; echo '{payload}'",
        m = marker.display()
    )
}

#[test]
fn a_lease_holder_in_another_pid_namespace_is_not_taken_for_dead() {
    if let Err(why) = unshare_works() {
        eprintln!("SKIPPED a_lease_holder_in_another_pid_namespace_is_not_taken_for_dead: {why}");
        return;
    }
    let store = TestStore::new();
    store.refresh(b"[0]", &[]);
    let marker = store.scratch("holder-marker");

    // A pid that is certainly dead out here: one we just reaped. Inside the
    // new namespace the holder is given exactly that pid (ns_last_pid), so
    // an outside liveness check by pid would find it dead.
    let mut reaped = Command::new("true").spawn().unwrap();
    let target = reaped.id();
    reaped.wait().unwrap();
    let script = format!(
        "echo {last} > /proc/sys/kernel/ns_last_pid 2>/dev/null; \"$SNAPCACHE_BIN\" --store \"$SNAPCACHE_STORE\" --lock-backend lease --json refresh --exec sh -c \"$HOLDER_EXEC\" & wait $!",
        last = target - 1
    );
    let holder = Command::new("unshare")
        .args(["--pid", "--fork", "sh", "-c", &script])
        .env("SNAPCACHE_BIN", bin())
        .env("SNAPCACHE_STORE", store.root())
        .env("HOLDER_EXEC", marker_exec(&marker, "[1]", "3"))
        .env_remove("SNAPCACHE_LEASE_SECS")
        .env_remove("SNAPCACHE_LOCK_TIMEOUT")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lease: serde_json::Value = wait_for("the holder's lease", Duration::from_secs(20), || {
        std::fs::read(store.root().join("lease"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
    });
    let holder_pid = lease["holder"]["pid"].as_u64().unwrap() as u32;
    let holder_ns = lease["holder"]["pid_ns"].as_u64();
    let (_, status) = store.json(&["status"]);
    assert_eq!(
        status["lock"]["pid"], holder_pid,
        "status names the live holder: {status}"
    );
    assert!(
        holder_ns.is_some_and(|ns| ns != our_pid_ns()),
        "the holder records its own PID namespace: {lease}"
    );
    if holder_pid == target {
        assert!(!alive(holder_pid), "pid {holder_pid} is dead out here");
    } else {
        eprintln!(
            "note: the holder got pid {holder_pid}, not {target} (ns_last_pid not writable); alive out here: {}",
            alive(holder_pid)
        );
    }
    // The holder's temp file (created before its command runs).
    // `.snapcache-<pid>.<ns>.<boot>-…` (the boot tag where it is known).
    let ns = holder_ns.unwrap();
    let ns_tags = [format!(".{ns}."), format!(".{ns}-")];
    let holder_temps = wait_for("the holder's temp file", Duration::from_secs(10), || {
        let temps: Vec<String> = store
            .files_in("tmp")
            .into_iter()
            .filter(|n| ns_tags.iter().any(|t| n.contains(t.as_str())))
            .collect();
        (!temps.is_empty()).then_some(temps)
    });

    // A second writer outside: must time out, not break a live lease.
    let started = Instant::now();
    let mut cmd = store.command(&[
        "--lock-backend",
        "lease",
        "refresh",
        "--lock-timeout",
        "1",
        "--exec",
        "sh",
        "-c",
        &marker_exec(&marker, "[2]", "0"),
    ]);
    cmd.env("SNAPCACHE_LOG", "warn");
    let out = run_with_timeout(cmd);
    let stderr = text(&out.stderr);
    assert_eq!(
        code(&out),
        75,
        "times out instead of taking the live lease over: {stderr}"
    );
    assert!(!stderr.contains("lock_takeover"), "{stderr}");
    assert!(!stderr.contains("TWOHOLDERS"), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(10));
    let still: serde_json::Value =
        serde_json::from_slice(&std::fs::read(store.root().join("lease")).unwrap()).unwrap();
    assert_eq!(
        still["lease_id"], lease["lease_id"],
        "the holder's lease is untouched"
    );
    let temps_now = store.files_in("tmp");
    for t in &holder_temps {
        assert!(
            temps_now.contains(t),
            "the holder's temp file {t} survives: {temps_now:?}"
        );
    }

    let out = wait_output(holder, Duration::from_secs(30));
    assert_eq!(
        code(&out),
        0,
        "the holder in the namespace publishes: {}",
        text(&out.stderr)
    );
    let mut cmd = store.command(&[
        "--lock-backend",
        "lease",
        "refresh",
        "--lock-timeout",
        "10",
        "--exec",
        "sh",
        "-c",
        &marker_exec(&marker, "[2]", "0"),
    ]);
    cmd.env("SNAPCACHE_LOG", "warn");
    let out = run_with_timeout(cmd);
    assert_eq!(
        code(&out),
        0,
        "after the holder finished, the second writer succeeds: {}",
        text(&out.stderr)
    );
    let (_, history) = store.json(&["history"]);
    let notes: Vec<u64> = history["generations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["generation"].as_u64().unwrap())
        .collect();
    assert_eq!(notes, [1, 2, 3], "{history}");
    assert_eq!(store.show(), b"[2]\n");
    assert!(!marker.exists());
}

/// Sets a file's mtime `age` into the past.
fn age_file(path: &Path, age: Duration) {
    let file = std::fs::File::options().write(true).open(path).unwrap();
    file.set_modified(SystemTime::now() - age).unwrap();
}

#[test]
fn the_lease_sweep_spares_temp_files_it_cannot_judge_until_they_are_a_lease_time_old() {
    let store = TestStore::new();
    store.refresh(b"[0]", &[]);
    let tmp = store.root().join("tmp");
    let ours = our_pid_ns();
    let mut reaped = Command::new("true").spawn().unwrap();
    let dead = reaped.id();
    reaped.wait().unwrap();
    let mut sleeper = Command::new("sleep").arg("30").spawn().unwrap();
    let live = sleeper.id();
    // The boot tag temp names carry: the boot id's first 8 hex digits.
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap()[..8].to_string();
    let other_boot = if boot == "00000000" {
        "ffffffff"
    } else {
        "00000000"
    };
    let files = [
        // Our namespace: judged by pid.
        (
            format!(".snapcache-{dead}.{ours}-deadinourns01"),
            false,
            false,
        ),
        (
            format!(".snapcache-{live}.{ours}-liveinourns01"),
            false,
            true,
        ),
        // Another namespace: judged by age only, whatever the pid.
        (
            format!(".snapcache-{dead}.4026999999-youngforeign1"),
            false,
            true,
        ),
        (
            format!(".snapcache-{dead}.4026999999-oldforeign001"),
            true,
            false,
        ),
        // No namespace recorded (older version): like another namespace.
        (format!(".snapcache-{dead}-youngnons0001"), false, true),
        (format!(".snapcache-{dead}-oldnons000001"), true, false),
        // Our namespace number and this boot: judged by pid.
        (
            format!(".snapcache-{live}.{ours}.{boot}-liveourboot1"),
            false,
            true,
        ),
        (
            format!(".snapcache-{dead}.{ours}.{boot}-deadourboot1"),
            false,
            false,
        ),
        // Our namespace number in another boot: another machine sharing the
        // store (the initial namespace has the same number everywhere) or an
        // earlier boot. Its pid says nothing here, dead or alive: by age.
        (
            format!(".snapcache-{dead}.{ours}.{other_boot}-youngelsewh1"),
            false,
            true,
        ),
        (
            format!(".snapcache-{live}.{ours}.{other_boot}-oldelsewher1"),
            true,
            false,
        ),
    ];
    for (name, old, _) in &files {
        let path = tmp.join(name);
        std::fs::write(&path, b"partial").unwrap();
        if *old {
            age_file(&path, Duration::from_secs(5));
        }
    }
    let mut cmd = store.command(&["--lock-backend", "lease", "refresh", "--from"]);
    cmd.arg(store.payload("p", b"[1]"))
        .env("SNAPCACHE_LEASE_SECS", "2");
    let out = run_with_timeout(cmd);
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    let left = store.files_in("tmp");
    for (name, _, kept) in &files {
        assert_eq!(
            left.contains(name),
            *kept,
            "{name}: {} (left: {left:?})",
            if *kept { "spared" } else { "swept" }
        );
    }
    // With the advisory backend no other writer can be alive: all go.
    store.ok(&[
        "--lock-backend",
        "advisory",
        "refresh",
        "--from",
        store.payload("q", b"[2]").to_str().unwrap(),
    ]);
    assert_eq!(store.files_in("tmp"), Vec::<String>::new());
}
