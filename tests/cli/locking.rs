//! The writer lock: crashes of holders, the lease backend, churn with an
//! exclusive marker, Ctrl-C, and wait feedback.

use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime};

use crate::common::*;

fn spawn_holder(store: &TestStore, backend: &str, script: &str) -> Child {
    store
        .command(&[
            "--lock-backend",
            backend,
            "--json",
            "refresh",
            "--exec",
            "sh",
            "-c",
            script,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn holder")
}

fn signal(child: &Child, sig: rustix::process::Signal) {
    let pid = rustix::process::Pid::from_raw(child.id() as i32).expect("pid");
    rustix::process::kill_process(pid, sig).expect("send signal");
}

fn refresh_now(store: &TestStore, backend: &str, payload: &[u8]) -> std::process::Output {
    let file = store.payload("now", payload);
    store.run(&[
        "--lock-backend",
        backend,
        "refresh",
        "--lock-timeout",
        "0",
        "--from",
        file.to_str().unwrap(),
    ])
}

#[test]
fn a_killed_advisory_holder_frees_the_lock_at_once() {
    let store = TestStore::new();
    let holder = spawn_holder(&store, "advisory", "sleep 30; echo '[0]'");
    store.wait_until_locked();
    let mut holder = holder;
    holder.kill().unwrap();
    holder.wait().unwrap();
    let (_, status) = store.json(&["status"]);
    assert_eq!(
        status["lock"]["held"], false,
        "a dead holder's record is never presented as a live holder: {status}"
    );
    let out = refresh_now(&store, "advisory", b"[1]");
    assert_eq!(
        code(&out),
        0,
        "the next writer acquires at once (try once): {}",
        text(&out.stderr)
    );
}

#[test]
fn a_killed_lease_holder_on_this_host_frees_the_lock_at_once() {
    let store = TestStore::new();
    let mut holder = spawn_holder(&store, "lease", "sleep 30; echo '[0]'");
    let status = store.wait_until_locked();
    assert_eq!(status["lock"]["backend"], "lease");
    assert!(
        store.root().join("lease").exists(),
        "the lease file exists while held"
    );
    holder.kill().unwrap();
    holder.wait().unwrap();
    let mut cmd = store.command(&[
        "--lock-backend",
        "lease",
        "refresh",
        "--lock-timeout",
        "0",
        "--from",
    ]);
    cmd.arg(store.payload("p", b"[1]"))
        .env("SNAPCACHE_LOG", "warn");
    let out = run_with_timeout(cmd);
    let stderr = text(&out.stderr);
    assert_eq!(
        code(&out),
        0,
        "a lease of a dead pid on this host is taken over at once: {stderr}"
    );
    assert!(
        stderr.contains("lock_takeover") && stderr.contains("holder process is gone"),
        "the takeover is logged: {stderr}"
    );
    assert!(
        !store.root().join("lease").exists(),
        "the lease is released after the write"
    );
}

fn plant_foreign_lease(store: &TestStore, expires_in: Duration) {
    let now = SystemTime::now();
    plant_foreign_lease_at(store, now + expires_in, None, now);
}

/// A lease of a holder on another host (so no pid can be checked), expiring
/// at `expires_at` by its holder's clock, naming `ttl_ms` as its lease time
/// (or nothing, as the earlier release), its file last modified at
/// `modified`.
fn plant_foreign_lease_at(
    store: &TestStore,
    expires_at: SystemTime,
    ttl_ms: Option<u64>,
    modified: SystemTime,
) {
    std::fs::create_dir_all(store.root()).unwrap();
    let mut record = serde_json::json!({
        "lease_id": "0123456789abcdef0123456789abcdef",
        "holder": {
            "pid": 1, "host": "build-server-7", "boot_id": "00000000-0000-0000-0000-000000000000",
            "command": "kopi cache refresh", "since": humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            "backend": "lease"
        },
        "expires_at": humantime::format_rfc3339_millis(expires_at).to_string(),
    });
    if let Some(ms) = ttl_ms {
        record["ttl_ms"] = ms.into();
    }
    let path = store.root().join("lease");
    std::fs::write(&path, serde_json::to_vec(&record).unwrap()).unwrap();
    let file = std::fs::File::options().write(true).open(&path).unwrap();
    file.set_modified(modified).unwrap();
}

/// A refresh on `backend` with a `timeout`-second lock budget, the takeover
/// log on stderr.
fn refresh_within(store: &TestStore, backend: &str, timeout: &str, payload: &[u8]) -> Output {
    let file = store.payload("p", payload);
    let mut cmd = store.command(&[
        "--lock-backend",
        backend,
        "refresh",
        "--lock-timeout",
        timeout,
        "--from",
    ]);
    cmd.arg(file).env("SNAPCACHE_LOG", "warn");
    run_with_timeout(cmd)
}

/// Asserts that the writer `out` succeeded, no sooner than `at_least` after
/// `started` (it waited for the lease to lapse) and well before its 20 s
/// budget (it then took over); returns its stderr.
fn took_over_after(out: &Output, started: Instant, at_least: Duration, what: &str) -> String {
    let elapsed = started.elapsed();
    let stderr = text(&out.stderr);
    assert_eq!(code(out), 0, "{what}: {stderr}");
    assert!(elapsed >= at_least, "{what}: waited first: {elapsed:?}");
    assert!(
        elapsed < Duration::from_secs(10),
        "{what}: then took over: {elapsed:?}"
    );
    stderr
}

/// A year that no lease's holder will live to see renewed.
fn far_year() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(4_102_444_800) // 2100-01-01
}

/// Reproduced first: a lease whose holder's clock ran decades ahead (or a
/// lease written by hand) expires in a year that never comes; once its
/// holder, on another host, was gone, every writer on either backend timed
/// out behind it for good ("retry once that writer is done"). A live holder
/// replaces its lease every third of its lease time, so a lease file that
/// has not changed for longer than that lease time (plus the clock
/// tolerance, since the mtime is the file server's clock) has no holder.
#[test]
fn a_lease_expiring_in_a_far_year_is_taken_over_once_it_goes_unrenewed() {
    let two_days_ago = SystemTime::now() - Duration::from_secs(2 * 86_400);
    for backend in ["lease", "advisory"] {
        // Of the earlier release (no lease time named): judged by the
        // longest lease time there is, one day.
        let store = TestStore::new();
        store.refresh(b"[0]", &[]);
        plant_foreign_lease_at(&store, far_year(), None, two_days_ago);
        let (_, status) = store.json(&["status"]);
        assert_eq!(status["lock"]["held"], false, "{backend}: {status}");
        let out = refresh_within(&store, backend, "2", b"[1]");
        let stderr = text(&out.stderr);
        assert_eq!(code(&out), 0, "{backend}: {stderr}");
        assert_eq!(store.show(), b"[1]", "{backend}");
        if backend == "lease" {
            assert!(
                stderr.contains("lock_takeover")
                    && stderr.contains("not renewed within its lease time")
                    && stderr.contains("build-server-7"),
                "the takeover is logged with its reason: {stderr}"
            );
        }
    }

    // Naming a 30 s lease time: two minutes without a renewal is enough.
    let store = TestStore::new();
    plant_foreign_lease_at(
        &store,
        far_year(),
        Some(30_000),
        SystemTime::now() - Duration::from_secs(120),
    );
    let out = refresh_within(&store, "lease", "2", b"[2]");
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    assert_eq!(store.show(), b"[2]");

    // The same lease just renewed still holds the store: its holder may be
    // alive, whatever its clock says.
    let store = TestStore::new();
    plant_foreign_lease_at(&store, far_year(), Some(30_000), SystemTime::now());
    for backend in ["lease", "advisory"] {
        let out = refresh_within(&store, backend, "0.5", b"[3]");
        let stderr = text(&out.stderr);
        assert_eq!(
            code(&out),
            75,
            "{backend}: a renewed lease blocks: {stderr}"
        );
        assert!(stderr.contains("build-server-7"), "{stderr}");
        // The timeout says why waiting longer may be the fix.
        assert!(
            stderr.contains("The lease's times cannot be trusted: its expiry lies ")
                && stderr.contains("days beyond its lease time (the holder's clock runs ahead")
                && stderr.contains("a writer that sees the lease go unrenewed for its lease time (30 s) takes it over"),
            "{backend}: {stderr}"
        );
    }
    let (_, status) = store.json(&["status"]);
    assert_eq!(status["lock"]["held"], true, "{status}");
    // A lease with believable times times out without that sentence.
    let now = SystemTime::now();
    plant_foreign_lease_at(&store, now + Duration::from_secs(20), Some(30_000), now);
    let out = refresh_within(&store, "lease", "0.5", b"[4]");
    let stderr = text(&out.stderr);
    assert_eq!(code(&out), 75, "{stderr}");
    assert!(!stderr.contains("cannot be trusted"), "{stderr}");
}

/// `status` never waits, so it cannot see what a waiting writer sees of a
/// lease. It shows the lease's times instead, and says when they cannot be
/// trusted: an expiry decades ahead (the holder's clock), a renewal in the
/// future (the file's clock), a holder that started in the future. Each is
/// what an operator needs to see why writers wait, and for how long.
#[test]
fn status_shows_a_lease_s_times_and_says_when_they_cannot_be_trusted() {
    let store = TestStore::new();
    store.refresh(b"[0]", &[]);
    let (_, idle) = store.json(&["status"]);
    assert!(idle["lock"].get("lease").is_none(), "no lease: {idle}");

    // A live holder of our own, lease time 30 s: its times are shown plainly.
    let mut holder = spawn_holder(&store, "lease", "sleep 2; echo '[1]'");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !store.root().join("lease").exists() {
        assert!(Instant::now() < deadline, "no lease appeared");
        std::thread::sleep(Duration::from_millis(10));
    }
    let (_, status) = store.json(&["status"]);
    let lease = &status["lock"]["lease"];
    assert_eq!(lease["lease_time_seconds"], 30.0, "{status}");
    let left = lease["expires_in_seconds"].as_f64().unwrap();
    assert!(left > 0.0 && left <= 30.0, "{status}");
    assert!(
        lease["renewed_age_seconds"].as_f64().unwrap() < 10.0,
        "{status}"
    );
    assert_eq!(lease["renewed_in_future"], false, "{status}");
    assert!(lease["expiry_ahead_seconds"].is_null(), "{status}");
    let human = text(&store.command(&["status"]).output().unwrap().stdout);
    assert!(
        human.contains("lease:      renewed ")
            && human.contains(" s ago, expires ")
            && human.contains("lease time 30 s"),
        "{human}"
    );
    assert!(!human.contains("runs ahead"), "{human}");
    assert_eq!(holder.wait().unwrap().code(), Some(0));

    // A holder whose clock runs decades ahead, started "in the future".
    plant_foreign_lease_at(&store, far_year(), Some(30_000), SystemTime::now());
    let path = store.root().join("lease");
    let mut record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    record["holder"]["since"] = humantime::format_rfc3339_millis(far_year())
        .to_string()
        .into();
    std::fs::write(&path, serde_json::to_vec(&record).unwrap()).unwrap();
    let (_, status) = store.json(&["status"]);
    let ahead = status["lock"]["lease"]["expiry_ahead_seconds"]
        .as_f64()
        .unwrap();
    assert!(ahead > 70.0 * 365.0 * 86_400.0, "{status}");
    let human = text(&store.command(&["status"]).output().unwrap().stdout);
    for needle in [
        "held by pid 1 on host \"build-server-7\" (kopi cache refresh) for an unknown time",
        "expires 2100-01-01T00:00:00.000Z (in ",
        " years beyond one lease time: the holder's clock runs ahead of this machine's",
        "a waiting writer takes it over once it has seen the lease go unrenewed for 30 s",
    ] {
        assert!(human.contains(needle), "{needle:?} in {human}");
    }
    assert!(!human.contains("for 0.0 s"), "{human}");

    // A lease renewed "in the future" by the file's clock, expiring soon.
    plant_foreign_lease_at(
        &store,
        SystemTime::now() + Duration::from_secs(20),
        Some(30_000),
        far_year(),
    );
    let (_, status) = store.json(&["status"]);
    let lease = &status["lock"]["lease"];
    assert_eq!(lease["renewed_in_future"], true, "{status}");
    assert!(lease["renewed_age_seconds"].is_null(), "{status}");
    assert!(lease["expiry_ahead_seconds"].is_null(), "{status}");
    let human = text(&store.command(&["status"]).output().unwrap().stdout);
    assert!(
        human.contains("renewed 2100-01-01T00:00:00.000Z, in the future by this machine's clock")
            && human.contains(
                "a waiting writer takes it over once it has seen the lease go unrenewed for 30 s"
            ),
        "{human}"
    );
    assert!(!human.contains("runs ahead"), "{human}");
}

/// The lease of a live writer on another machine that has our host name
/// (cloned VMs, CI images all called `localhost`): a different boot id there
/// is another machine, not a reboot of this one. Reproduced first: such a
/// lease was taken over at once ("holder process is gone"), so two writers
/// ran at once. Now it holds until it expires, as any lease of another
/// machine does. A reboot of this very machine (same machine id) still frees
/// it at once.
#[test]
fn a_lease_of_another_machine_with_our_host_name_is_not_taken_for_a_reboot() {
    let store = TestStore::new();
    store.refresh(b"[0]", &[]);
    // A real lease of this machine, to copy its holder from.
    let mut holder = spawn_holder(&store, "lease", "sleep 1; echo '[1]'");
    let lease_path = store.root().join("lease");
    let deadline = Instant::now() + Duration::from_secs(10);
    let ours: serde_json::Value = loop {
        if let Some(v) = std::fs::read(&lease_path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
        {
            break v;
        }
        assert!(Instant::now() < deadline, "no lease appeared");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(holder.wait().unwrap().code(), Some(0));
    let expires = humantime::format_rfc3339_millis(SystemTime::now() + Duration::from_secs(60));
    let plant = |edit: &dyn Fn(&mut serde_json::Value)| {
        let mut lease = ours.clone();
        lease["expires_at"] = expires.to_string().into();
        lease["holder"]["boot_id"] = "0b0e5d1c-0000-4000-8000-00000000beef".into();
        edit(&mut lease);
        std::fs::write(&lease_path, serde_json::to_vec(&lease).unwrap()).unwrap();
        make_owner_writable(&lease_path);
    };
    for (what, edit) in [
        (
            "another machine id",
            &(|l: &mut serde_json::Value| l["holder"]["machine"] = "f".repeat(32).into())
                as &dyn Fn(&mut serde_json::Value),
        ),
        (
            "no machine id (the earlier release)",
            &|l: &mut serde_json::Value| {
                l["holder"].as_object_mut().unwrap().remove("machine");
            },
        ),
    ] {
        plant(edit);
        let out = refresh_within(&store, "lease", "1", b"[2]");
        let stderr = text(&out.stderr);
        assert_eq!(
            code(&out),
            75,
            "{what}: a live lease elsewhere blocks: {stderr}"
        );
        assert!(!stderr.contains("lock_takeover"), "{what}: {stderr}");
        let (_, status) = store.json(&["status"]);
        assert_eq!(status["lock"]["held"], true, "{what}: {status}");
    }
    if ours["holder"]["machine"].is_string() {
        plant(&|_| {});
        let out = refresh_within(&store, "lease", "5", b"[3]");
        let stderr = text(&out.stderr);
        assert_eq!(code(&out), 0, "a reboot of this machine frees it: {stderr}");
        assert!(stderr.contains("holder process is gone"), "{stderr}");
    } else {
        eprintln!(
            "SKIPPED the reboot half of a_lease_of_another_machine_with_our_host_name_is_not_taken_for_a_reboot: no machine id (/etc/machine-id) here"
        );
    }
}

/// Every time in a lease can lie, the file's mtime too (a file server's
/// clock that went back, a `touch`). A waiter's own monotonic clock cannot:
/// a lease it has seen unchanged for longer than the lease time it names is
/// not being renewed, and is taken over.
#[test]
fn a_lease_seen_unchanged_for_longer_than_its_lease_time_is_taken_over_whatever_its_times_say() {
    for backend in ["lease", "advisory"] {
        let store = TestStore::new();
        plant_foreign_lease_at(&store, far_year(), Some(1_000), far_year());
        let started = Instant::now();
        let out = refresh_within(&store, backend, "20", b"[1]");
        let stderr = took_over_after(&out, started, Duration::from_millis(900), backend);
        if backend == "lease" {
            assert!(stderr.contains("seen unchanged"), "{stderr}");
        }
        assert_eq!(store.show(), b"[1]");
    }
}

/// The other side of the rule above: a live holder with a lease time far
/// shorter than its command runs renews its lease, so a writer waiting many
/// lease times behind it waits for it to finish, and never takes over.
#[test]
fn a_renewed_lease_is_never_taken_over_however_long_a_writer_waits() {
    let store = TestStore::new();
    let lease_env = |cmd: &mut Command| {
        cmd.env("SNAPCACHE_LEASE_SECS", "0.5")
            .env("SNAPCACHE_TEST_HOOKS", "1")
            .env("SNAPCACHE_TEST_NO_ADVISORY_LOCK", "1")
            .env("SNAPCACHE_LOG", "warn");
    };
    let mut holder = store.command(&[
        "--lock-backend",
        "lease",
        "refresh",
        "--exec",
        "sh",
        "-c",
        "sleep 3; echo '[1]'",
    ]);
    lease_env(&mut holder);
    let holder = holder
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn holder");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !store.root().join("lease").exists() {
        assert!(Instant::now() < deadline, "the holder never took the lease");
        std::thread::sleep(Duration::from_millis(20));
    }
    let file = store.payload("p", b"[2]");
    let mut waiter = store.command(&[
        "--lock-backend",
        "lease",
        "refresh",
        "--lock-timeout",
        "20",
        "--from",
    ]);
    waiter.arg(file);
    lease_env(&mut waiter);
    let waiter = run_with_timeout(waiter);
    let holder = wait_output(holder, Duration::from_secs(30));
    let (h, w) = (text(&holder.stderr), text(&waiter.stderr));
    assert_eq!(code(&holder), 0, "the holder commits: {h}");
    assert_eq!(code(&waiter), 0, "the waiter publishes after it: {w}");
    assert!(
        !w.contains("lock_takeover"),
        "no takeover of a live lease: {w}"
    );
    assert_eq!(store.show(), b"[2]", "the waiter's generation is the newer");
    let (_, history) = store.json(&["history"]);
    assert_eq!(
        history["generations"].as_array().map(Vec::len),
        Some(2),
        "{history}"
    );
}

#[test]
fn a_lease_from_another_host_is_respected_until_it_expires() {
    let store = TestStore::new();
    plant_foreign_lease(&store, Duration::from_secs(60));
    let out = store.run(&[
        "--lock-backend",
        "lease",
        "refresh",
        "--lock-timeout",
        "0.5",
        "--from",
        store.payload("p", b"[1]").to_str().unwrap(),
    ]);
    let stderr = text(&out.stderr);
    assert_eq!(code(&out), 75, "a live foreign lease blocks: {stderr}");
    assert!(
        stderr.contains("build-server-7") && stderr.contains("kopi cache refresh"),
        "names the holder: {stderr}"
    );
    let (_, status) = store.json(&["status"]);
    assert_eq!(status["lock"]["held"], true);
    assert_eq!(status["lock"]["host"], "build-server-7");

    let store = TestStore::new();
    plant_foreign_lease(&store, Duration::from_millis(1500));
    let started = Instant::now();
    let mut cmd = store.command(&[
        "--lock-backend",
        "lease",
        "--json",
        "refresh",
        "--lock-timeout",
        "20",
        "--from",
    ]);
    cmd.arg(store.payload("p", b"[2]"))
        .env("SNAPCACHE_LOG", "warn");
    let out = run_with_timeout(cmd);
    let stderr = took_over_after(&out, started, Duration::from_millis(1200), "expiry");
    assert!(
        stderr.contains("lock_takeover")
            && stderr.contains("lease expired")
            && stderr.contains("build-server-7"),
        "{stderr}"
    );
    assert_eq!(store.show(), b"[2]");
}

/// 4 writer processes × 6 refreshes each; every holder creates an exclusive
/// marker (mkdir is atomic create-new) and removes it before releasing. Two
/// holders at once would make a source fail and its refresh exit 1.
fn churn(backend: &str) {
    let store = TestStore::new();
    let marker = store.scratch("holder-marker");
    let script = format!(
        "mkdir '{m}' 2>/dev/null || {{ echo 'TWO''HOLDERS' >&2; exit 9; }}; sleep 0.02; rmdir '{m}'; echo \"[$$]\"",
        m = marker.display()
    );
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let (root, script, backend) = (store.root(), script.clone(), backend.to_string());
            std::thread::spawn(move || {
                let mut codes = Vec::new();
                for _ in 0..6 {
                    let out = std::process::Command::new(bin())
                        .args([
                            "--store",
                            root.to_str().unwrap(),
                            "--lock-backend",
                            &backend,
                            "refresh",
                            "--lock-timeout",
                            "30",
                            "--exec",
                            "sh",
                            "-c",
                            &script,
                        ])
                        .env("SNAPCACHE_LEASE_SECS", "1")
                        .output()
                        .unwrap();
                    codes.push((out.status.code(), text(&out.stderr)));
                }
                codes
            })
        })
        .collect();
    let mut completed = 0;
    for worker in workers {
        for (code, stderr) in worker.join().unwrap() {
            assert!(
                code == Some(0) || code == Some(75),
                "{backend}: every refresh completes or times out cleanly: {code:?} {stderr}"
            );
            assert!(
                !stderr.contains("TWOHOLDERS"),
                "{backend}: never two holders: {stderr}"
            );
            completed += usize::from(code == Some(0));
        }
    }
    assert_eq!(
        completed, 24,
        "{backend}: with a 30 s budget all 24 refreshes complete"
    );
    let (_, history) = store.json(&["history"]);
    assert!(history["generations"].as_array().unwrap().len() >= 5);
    store.ok(&["verify"]);
}

#[test]
fn churn_on_the_advisory_backend_never_has_two_holders() {
    churn("advisory");
}

#[test]
fn churn_on_the_lease_backend_never_has_two_holders() {
    churn("lease");
}

#[test]
fn ctrl_c_while_waiting_ends_promptly_with_130_and_leaves_nothing() {
    let store = TestStore::new();
    store.refresh(b"[0]", &[]);
    let mut holder = spawn_holder(&store, "auto", "sleep 4; echo '[1]'");
    store.wait_until_locked();
    let before = store.files_in("snapshots");
    let waiter = store
        .command(&[
            "refresh",
            "--from",
            store.payload("p", b"[2]").to_str().unwrap(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(400));
    let sent = Instant::now();
    signal(&waiter, rustix::process::Signal::INT);
    let out = wait_output(waiter, COMMAND_TIMEOUT);
    let took = sent.elapsed();
    assert_eq!(code(&out), 130, "{}", text(&out.stderr));
    assert!(
        took < Duration::from_millis(250),
        "ended within ~100 ms of Ctrl-C (allowing process exit): {took:?}"
    );
    assert!(
        text(&out.stderr).contains("interrupted"),
        "{}",
        text(&out.stderr)
    );
    holder.kill().unwrap();
    holder.wait().unwrap();
    assert_eq!(
        store.files_in("snapshots"),
        before,
        "the interrupted waiter published nothing"
    );
}

#[test]
fn ctrl_c_while_holding_stops_the_source_publishes_nothing_and_releases() {
    let store = TestStore::new();
    store.refresh(b"[0]", &[]);
    let marker = store.scratch("source-finished");
    let holder = spawn_holder(
        &store,
        "auto",
        &format!(
            "printf '[1'; sleep 3; touch '{}'; echo ']'",
            marker.display()
        ),
    );
    store.wait_until_locked();
    std::thread::sleep(Duration::from_millis(200));
    let sent = Instant::now();
    signal(&holder, rustix::process::Signal::TERM);
    let out = wait_output(holder, COMMAND_TIMEOUT);
    assert_eq!(code(&out), 130, "{}", text(&out.stderr));
    assert!(
        sent.elapsed() < Duration::from_millis(500),
        "stopped promptly: {:?}",
        sent.elapsed()
    );
    let (_, status) = store.json(&["status"]);
    assert_eq!(status["lock"]["held"], false, "the lock is released");
    assert_eq!(status["generation"], 1, "nothing was published");
    std::thread::sleep(Duration::from_millis(3200));
    assert!(
        !marker.exists(),
        "the source command was stopped, not left running"
    );
    let out = refresh_now(&store, "auto", b"[2]");
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    assert!(store.files_in("tmp").is_empty());
}

#[test]
fn no_wait_message_when_the_lock_is_free_and_quiet_silences_it() {
    let store = TestStore::new();
    let out = store.run(&[
        "refresh",
        "--from",
        store.payload("p", b"[1]").to_str().unwrap(),
    ]);
    assert_eq!(code(&out), 0);
    assert!(
        text(&out.stderr).is_empty(),
        "nothing on stderr without contention: {}",
        text(&out.stderr)
    );

    let holder = spawn_holder(&store, "auto", "sleep 1; echo '[2]'");
    store.wait_until_locked();
    let out = store.run(&[
        "--quiet",
        "refresh",
        "--from",
        store.payload("q", b"[3]").to_str().unwrap(),
    ]);
    assert_eq!(code(&out), 0);
    assert!(
        text(&out.stderr).is_empty(),
        "--quiet prints no wait message: {}",
        text(&out.stderr)
    );
    wait_output(holder, COMMAND_TIMEOUT);
}

#[test]
fn lock_backend_values_are_checked() {
    let store = TestStore::new();
    let out = store.run(&["--lock-backend", "flock", "status"]);
    assert_eq!(code(&out), 2, "{}", text(&out.stderr));
    let mut cmd = store.command(&["status"]);
    cmd.env("SNAPCACHE_LOCK_BACKEND", "nfs");
    let out = run_with_timeout(cmd);
    assert_eq!(code(&out), 2);
    assert!(
        text(&out.stderr).contains("SNAPCACHE_LOCK_BACKEND"),
        "{}",
        text(&out.stderr)
    );
    let outcome = store.refresh(b"[1]", &[]);
    assert_eq!(
        outcome["backend"], "advisory",
        "auto picks advisory locks on a local filesystem"
    );
}

#[test]
fn on_a_terminal_the_wait_is_one_live_line() {
    if std::process::Command::new("script")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("SKIPPED: util-linux `script` (to give the waiter a terminal) is not installed");
        return;
    }
    let store = TestStore::new();
    let holder = spawn_holder(&store, "auto", "sleep 1.5; echo '[1]'");
    store.wait_until_locked();
    let payload = store.payload("p", b"[2]");
    let inner = format!(
        "{} --store {} refresh --from {} 2>&1",
        bin(),
        store.root().display(),
        payload.display()
    );
    let mut cmd = std::process::Command::new("script");
    cmd.args(["-qec", &inner, "/dev/null"]);
    let out = run_with_timeout(cmd);
    let tty = text(&out.stdout);
    assert_eq!(code(&out), 0, "{tty}");
    assert!(
        tty.contains("\r\x1b[2Ksnapcache: waiting"),
        "a live line, redrawn in place: {tty:?}"
    );
    assert!(
        tty.contains("s left"),
        "it shows the remaining time: {tty:?}"
    );
    assert!(tty.contains("acquired the writer lock after"), "{tty:?}");
    wait_output(holder, COMMAND_TIMEOUT);
}

/// Records what a library caller's observer hears.
#[derive(Default)]
struct Recorded(std::sync::Mutex<Vec<String>>);

impl snapcache::LockObserver for Recorded {
    fn wait_started(&self, wait: &snapcache::WaitStarted) {
        let pid = wait.holder.as_ref().map(|h| h.pid).unwrap_or(0);
        self.0
            .lock()
            .unwrap()
            .push(format!("started pid={pid} source={:?}", wait.budget.source));
    }
    fn progress(&self, _elapsed: Duration, remaining: Option<Duration>) {
        self.0
            .lock()
            .unwrap()
            .push(format!("progress remaining={}", remaining.is_some()));
    }
    fn acquired(&self, waited: Duration, backend: snapcache::Backend, contended: bool) {
        self.0.lock().unwrap().push(format!(
            "acquired {backend} contended={contended} waited_ms={}",
            waited.as_millis()
        ));
    }
}

#[test]
fn a_library_observer_hears_wait_start_progress_and_acquisition() {
    let store = TestStore::new();
    let holder = spawn_holder(&store, "auto", "sleep 1.2; echo '[1]'");
    store.wait_until_locked();
    let recorded = std::sync::Arc::new(Recorded::default());
    let lib = snapcache::Store::open(
        snapcache::StoreOptions::new(store.root())
            .lock_timeout(snapcache::LockWait::For(Duration::from_secs(30)))
            .lock_observer(recorded.clone()),
    )
    .unwrap();
    lib.publish_bytes(b"[2]", &snapcache::PublishOptions::default())
        .unwrap();
    let events = recorded.0.lock().unwrap().clone();
    assert_eq!(
        events.first().map(String::as_str),
        Some(format!("started pid={} source=Caller", holder.id()).as_str()),
        "{events:?}"
    );
    assert!(
        events.iter().any(|e| e == "progress remaining=true"),
        "{events:?}"
    );
    let last = events.last().unwrap();
    assert!(
        last.starts_with("acquired advisory contended=true"),
        "{events:?}"
    );
    wait_output(holder, COMMAND_TIMEOUT);
}

#[test]
fn a_dead_breakers_lease_break_does_not_stall_writers() {
    let store = TestStore::new();
    // A holder killed while it held the lease, and a breaker killed while it
    // was taking that lease over: both dead local processes.
    let mut holder = spawn_holder(&store, "lease", "sleep 30; echo '[0]'");
    store.wait_until_locked();
    holder.kill().unwrap();
    holder.wait().unwrap();
    let mut dead = std::process::Command::new("true").spawn().unwrap();
    let dead_pid = dead.id();
    dead.wait().unwrap();
    let record = serde_json::json!({
        "pid": dead_pid, "host": rustix::system::uname().nodename().to_string_lossy(),
        "boot_id": std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok().map(|s| s.trim().to_string()),
        // Its PID namespace is ours: only then does its pid tell.
        "pid_ns": std::os::unix::fs::MetadataExt::ino(&std::fs::metadata("/proc/self/ns/pid").unwrap()),
        "command": "snapcache refresh (killed mid-break)", "since": "2026-01-01T00:00:00Z", "backend": "lease"
    });
    std::fs::write(
        store.root().join("lease.break"),
        serde_json::to_vec(&record).unwrap(),
    )
    .unwrap();
    let started = Instant::now();
    let out = store.run(&[
        "--lock-backend",
        "lease",
        "refresh",
        "--lock-timeout",
        "5",
        "--from",
        store.payload("p", b"[1]").to_str().unwrap(),
    ]);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "no 10 s stall behind a dead breaker: {:?}",
        started.elapsed()
    );
    assert!(!store.root().join("lease.break").exists());
}

/// A `lease.break` left by a breaker on another host (its pid tells
/// nothing) whose mtime lies in a far year, beside an expired lease: its age
/// by mtime is never known, so before the waiter's own watch every writer
/// stalled behind it for good. Now a waiter that sees it unchanged for
/// longer than a break can take removes it and takes the lease over.
#[test]
fn a_lease_break_dated_in_a_far_year_does_not_stall_writers_for_good() {
    let store = TestStore::new();
    store.refresh(b"[0]", &[]);
    let now = SystemTime::now();
    plant_foreign_lease_at(&store, now - Duration::from_secs(1), Some(1_000), now);
    let record = serde_json::json!({
        "pid": 1, "host": "build-server-8", "boot_id": null,
        "command": "snapcache refresh (lost mid-break)", "since": "2026-01-01T00:00:00Z", "backend": "lease"
    });
    let path = store.root().join("lease.break");
    std::fs::write(&path, serde_json::to_vec(&record).unwrap()).unwrap();
    let file = std::fs::File::options().write(true).open(&path).unwrap();
    file.set_modified(far_year()).unwrap();
    drop(file);

    let started = Instant::now();
    let out = refresh_within(&store, "lease", "30", b"[1]");
    let elapsed = started.elapsed();
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    assert!(
        elapsed >= Duration::from_secs(9),
        "a breaker gets its 10 s first: {elapsed:?}"
    );
    assert!(elapsed < Duration::from_secs(25), "{elapsed:?}");
    assert!(!path.exists(), "the dead breaker's file is gone");
    assert_eq!(store.show(), b"[1]");
}

/// An empty lease, as a power cut during an unsynced lease write left it
/// (before renewals were fsynced): `status` says so, and a writer takes it
/// over once it is one lease time old, not two.
#[test]
fn an_unreadable_lease_file_is_reported_and_broken_after_one_lease_time() {
    let store = TestStore::new();
    store.refresh(b"[0]", &[]);
    let lease = store.root().join("lease");
    std::fs::write(&lease, b"").unwrap();
    let started = Instant::now();

    let mut cmd = store.command(&["--json", "status"]);
    cmd.env("SNAPCACHE_LEASE_SECS", "2");
    let out = run_with_timeout(cmd);
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["lock"]["held"], true, "not free: {status}");
    assert_eq!(status["lock"]["unreadable_lease"], lease.to_str().unwrap());
    assert_eq!(status["lock"]["takeover_after_seconds"], 2.0);
    assert!(status["lock"]["lease_age_seconds"].as_f64().unwrap() < 2.0);
    let mut cmd = store.command(&["status"]);
    cmd.env("SNAPCACHE_LEASE_SECS", "2");
    let human = text(&run_with_timeout(cmd).stdout);
    assert!(
        human.contains("held by an unreadable lease file")
            && human.contains(lease.to_str().unwrap())
            && human.contains("take it over once it is 2 s old"),
        "{human}"
    );

    let mut cmd = store.command(&[
        "--lock-backend",
        "lease",
        "refresh",
        "--lock-timeout",
        "20",
        "--from",
    ]);
    cmd.arg(store.payload("p", b"[1]"))
        .env("SNAPCACHE_LEASE_SECS", "2")
        .env("SNAPCACHE_LOG", "warn");
    let out = run_with_timeout(cmd);
    let elapsed = started.elapsed();
    let stderr = text(&out.stderr);
    assert_eq!(code(&out), 0, "{stderr}");
    assert!(
        elapsed >= Duration::from_millis(1900),
        "waited until the lease was one lease time old: {elapsed:?}"
    );
    assert!(
        elapsed < Duration::from_millis(3800),
        "taken over after one lease time (2 s), not two (4 s): {elapsed:?}"
    );
    assert!(stderr.contains("unreadable lease file"), "{stderr}");
    assert!(
        stderr.contains("the lease file is unreadable")
            && stderr.contains("takeover_after_ms")
            && stderr.contains("2000"),
        "the wait says why: {stderr}"
    );
    assert!(
        store.files_in("tmp").is_empty(),
        "no lease temp file is left behind"
    );
    let (_, status) = store.json(&["status"]);
    assert_eq!(status["lock"]["held"], false, "{status}");
}

/// Reproduced: with `<store>/lock` removed while a writer held it (by `rm`,
/// or a temp-file cleaner: the empty file's times never change), the next
/// writer created a new lock file, locked it and published alongside the
/// first; in a loop of two writers and a remover, 11 of 106 refreshes that
/// exited 0 reported a generation another one also got, their payloads
/// lost. The holder now checks, right before its commit, that the file it
/// locked is still the one at `lock`: here it fails, publishing nothing,
/// and the other writer's generation stands.
#[test]
fn a_writer_whose_lock_file_was_removed_while_it_held_it_publishes_nothing() {
    let store = TestStore::new();
    store.refresh(b"[1]", &[]);
    let holder = spawn_holder(&store, "advisory", "sleep 1.5; echo '[\"from A\"]'");
    store.wait_until_locked();
    std::fs::remove_file(store.root().join("lock")).unwrap();
    // B finds no lock held (a new file), takes it and publishes.
    let b = refresh_now(&store, "advisory", b"[\"from B\"]");
    assert_eq!(code(&b), 0, "B: {}", text(&b.stderr));
    let a = wait_output(holder, COMMAND_TIMEOUT);
    let stderr = text(&a.stderr);
    assert_eq!(code(&a), 1, "A must fail: {stderr}");
    assert!(
        stderr.contains(&format!(
            "the writer lock file {} was removed or replaced while this writer held it",
            store.root().join("lock").display()
        )) && stderr.contains("nothing was published"),
        "{stderr}"
    );
    let error: serde_json::Value = serde_json::from_slice(&a.stdout).expect("--json error");
    assert_eq!(error["error"]["exit_code"], 1, "{error}");
    assert_eq!(store.show(), b"[\"from B\"]".to_vec());
    let (_, history) = store.json(&["history"]);
    let numbers: Vec<u64> = history["generations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["generation"].as_u64().unwrap())
        .collect();
    assert_eq!(numbers, vec![1, 2], "{history}");
    assert_eq!(code(&store.run(&["verify"])), 0);
    // The next writer locks the file that is there now, and publishes.
    assert_eq!(code(&refresh_now(&store, "advisory", b"[3]")), 0);
    assert_eq!(store.show(), b"[3]".to_vec());
}

/// Reproduced: a writer whose lock file was removed, failing once another
/// writer had locked the new one, removed that writer's holder record as it
/// exited, so `status` said the lock was held by an unknown process. A
/// writer that no longer holds the lock leaves the record alone.
#[test]
fn a_writer_that_lost_its_lock_leaves_the_new_holders_record() {
    let store = TestStore::new();
    store.refresh(b"[1]", &[]);
    let gate = |name: &str| {
        let path = store.root().parent().unwrap().join(name);
        let wait = format!("while [ ! -e '{}' ]; do sleep 0.02; done", path.display());
        (path, wait)
    };
    let (go_a, wait_a) = gate("go-a");
    let (go_b, wait_b) = gate("go-b");
    let a = spawn_holder(&store, "advisory", &format!("{wait_a}; echo '[\"A\"]'"));
    let a_pid = store.wait_until_locked()["lock"]["pid"].as_u64().unwrap();
    std::fs::remove_file(store.root().join("lock")).unwrap();
    let b = spawn_holder(&store, "advisory", &format!("{wait_b}; echo '[\"B\"]'"));
    let b_pid = u64::from(b.id());
    wait_for(
        "B to hold the new lock file",
        Duration::from_secs(20),
        || {
            let (_, status) = store.json(&["status"]);
            (status["lock"]["pid"].as_u64() == Some(b_pid)).then_some(())
        },
    );
    std::fs::write(&go_a, b"").unwrap();
    let a = wait_output(a, COMMAND_TIMEOUT);
    assert_eq!(code(&a), 1, "A must fail: {}", text(&a.stderr));
    let (_, status) = store.json(&["status"]);
    assert_eq!(
        status["lock"]["pid"].as_u64(),
        Some(b_pid),
        "A (pid {a_pid}) removed B's record: {status}"
    );
    std::fs::write(&go_b, b"").unwrap();
    let b = wait_output(b, COMMAND_TIMEOUT);
    assert_eq!(code(&b), 0, "B: {}", text(&b.stderr));
    assert_eq!(store.show(), b"[\"B\"]\n".to_vec());
}

/// Found by a hostile audit: a lease writer stopped (SIGSTOP) past its
/// lease on a filesystem where flock works kept its advisory lock; the
/// waiter took its lease over and then waited on that flock until its
/// budget ran out, and the stopped writer, resumed, found its lease lost:
/// neither published. Writers now take `lock` before the lease, so the
/// waiter times out without touching the lease and the stopped writer
/// publishes once resumed.
#[test]
fn a_stopped_lease_holder_where_flock_works_keeps_its_lease_and_publishes_when_resumed() {
    let store = TestStore::new();
    store.refresh(b"[1]", &[]);
    let gate = store.root().parent().unwrap().join("go");
    let script = format!(
        "while [ ! -e '{}' ]; do sleep 0.02; done; echo '[\"A\"]'",
        gate.display()
    );
    let mut a = store.command(&[
        "--lock-backend",
        "lease",
        "--json",
        "refresh",
        "--exec",
        "sh",
        "-c",
        &script,
    ]);
    a.env("SNAPCACHE_LEASE_SECS", "0.5")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let a = a.spawn().expect("spawn A");
    store.wait_until_locked();
    signal(&a, rustix::process::Signal::STOP);
    std::thread::sleep(Duration::from_millis(1500));
    let file = store.payload("b", b"[\"B\"]");
    let mut b = store.command(&[
        "--lock-backend",
        "lease",
        "refresh",
        "--lock-timeout",
        "2",
        "--from",
        file.to_str().unwrap(),
    ]);
    b.env("SNAPCACHE_LEASE_SECS", "0.5");
    let b = run_with_timeout(b);
    signal(&a, rustix::process::Signal::CONT);
    std::fs::write(&gate, b"").unwrap();
    let a = wait_output(a, COMMAND_TIMEOUT);
    assert_eq!(code(&b), 75, "B times out: {}", text(&b.stderr));
    assert_eq!(code(&a), 0, "A publishes once resumed: {}", text(&a.stderr));
    assert_eq!(store.show(), b"[\"A\"]\n".to_vec());
}

/// Reproduced: a lease file larger than any lease (70,000 bytes, or a
/// 100 GiB sparse file) counted as no lease at all to a lease writer, which
/// then could not create its own and waited behind it for ever (exit 75
/// after its whole budget), while `status` said writers take it over once
/// it is one lease time old. It is now an unreadable lease like a torn one:
/// ten minutes old, it is taken over at once.
#[test]
fn a_lease_file_too_large_to_be_a_lease_is_taken_over_like_a_torn_one() {
    for size in [70_000u64, 100 << 30] {
        let store = TestStore::new();
        store.refresh(b"[0]", &[]);
        let lease = store.root().join("lease");
        {
            let file = std::fs::File::create(&lease).unwrap();
            if size < 1 << 20 {
                std::io::Write::write_all(&mut &file, &vec![b'x'; size as usize]).unwrap();
            } else {
                file.set_len(size).unwrap();
            }
            file.set_modified(SystemTime::now() - Duration::from_secs(600))
                .unwrap();
        }
        let (_, status) = store.json(&["--lock-backend", "lease", "status"]);
        assert_eq!(
            status["lock"]["unreadable_lease"],
            lease.to_str().unwrap(),
            "{size}: {status}"
        );
        let started = Instant::now();
        let out = refresh_within(&store, "lease", "20", b"[1]");
        let stderr = text(&out.stderr);
        assert_eq!(code(&out), 0, "{size}: {stderr}");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{size}: taken over at once, not after the budget: {:?}",
            started.elapsed()
        );
        assert_eq!(store.show(), b"[1]".to_vec(), "{size}");
        let (_, status) = store.json(&["status"]);
        assert_eq!(status["lock"]["held"], false, "{size}: {status}");
    }
}

/// Reproduced: while an advisory writer held the lock and a lease writer
/// waited for it (holding its own lease, as lease writers take the lease
/// first), `status` named the waiting lease writer as the holder, and the
/// waiter's timeout named `lease` as the lock it waited for. Both now name
/// the advisory writer and `lock`.
#[test]
fn status_names_the_advisory_holder_while_a_lease_writer_waits_for_it() {
    let store = TestStore::new();
    store.refresh(b"[0]", &[]);
    let holder = spawn_holder(&store, "advisory", "sleep 4; echo '[1]'");
    let holder_pid = holder.id();
    let (_, status) = {
        store.wait_until_locked();
        store.json(&["status"])
    };
    assert_eq!(status["lock"]["pid"], holder_pid, "{status}");
    let file = store.payload("w", b"[2]");
    let waiter = store
        .command(&[
            "--lock-backend",
            "lease",
            "refresh",
            "--lock-timeout",
            "2",
            "--from",
            file.to_str().unwrap(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The waiter takes `lock` before the lease, so while the advisory
    // writer holds it the waiter never takes a lease (it used to, and then
    // waited holding it).
    std::thread::sleep(Duration::from_millis(700));
    assert!(
        !store.root().join("lease").exists(),
        "the waiter took a lease while `lock` was held"
    );
    let (_, status) = store.json(&["status"]);
    assert_eq!(
        status["lock"]["pid"], holder_pid,
        "the advisory writer holds the store, not the waiter: {status}"
    );
    let out = wait_output(waiter, COMMAND_TIMEOUT);
    let stderr = text(&out.stderr);
    assert_eq!(code(&out), 75, "{stderr}");
    assert!(
        stderr.contains(&format!("{}", store.root().join("lock").display()))
            && stderr.contains(&format!("pid {holder_pid}")),
        "{stderr}"
    );
    assert_eq!(code(&wait_output(holder, COMMAND_TIMEOUT)), 0);
}
