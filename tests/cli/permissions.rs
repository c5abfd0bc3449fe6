//! Every file snapcache creates in a store is its own: created exclusively,
//! never through a planted link, mode 0600 (snapshots 0400) and directories
//! 0700 whatever the umask, on both lock backends (issue 8 point 4).

use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

/// `snapcache --store <root> <args>` run under `umask <mask>` (a shell sets
/// the umask, then execs the binary: same pid, no unsafe pre_exec).
fn under_umask(store: &TestStore, mask: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(format!("umask {mask}; exec \"$0\" \"$@\""))
        .arg(bin())
        .arg("--store")
        .arg(store.root())
        .args(args);
    cmd.env_remove("SNAPCACHE_DIR")
        .env_remove("SNAPCACHE_LOCK_TIMEOUT")
        .env_remove("SNAPCACHE_KEEP")
        .env_remove("SNAPCACHE_LOG")
        .env("SNAPCACHE_LEASE_SECS", "0.3")
        .stdin(Stdio::null());
    cmd
}

fn mode(path: &Path) -> Option<u32> {
    std::fs::symlink_metadata(path)
        .ok()
        .map(|m| m.permissions().mode() & 0o7777)
}

/// Every entry of the store with its mode (None: vanished while listing).
fn modes(root: &Path) -> Vec<(PathBuf, bool, Option<u32>)> {
    let mut out = vec![(root.to_path_buf(), true, mode(root))];
    for sub in ["", "snapshots", "tmp"] {
        let dir = root.join(sub);
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
            if sub.is_empty() && is_dir {
                out.push((path.clone(), true, mode(&path)));
            } else if !is_dir {
                out.push((path.clone(), false, mode(&path)));
            }
        }
    }
    out
}

/// Asserts the permission rule on every entry present right now; returns
/// the names seen (for "the lease was observed").
fn assert_owner_only(root: &Path, context: &str) -> Vec<String> {
    let mut seen = Vec::new();
    for (path, is_dir, found) in modes(root) {
        let Some(found) = found else { continue };
        let in_snapshots = path.parent().is_some_and(|p| p.ends_with("snapshots"));
        let expected = if is_dir {
            0o700
        } else if in_snapshots {
            0o400
        } else {
            0o600
        };
        assert_eq!(
            found,
            expected,
            "{context}: {} has mode {found:o}, expected {expected:o}",
            path.display()
        );
        seen.push(
            path.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        );
    }
    seen
}

fn refresh_under(store: &TestStore, mask: &str, backend: &str, seed: u64) {
    let file = store.payload(&format!("payload-{seed}"), &json_payload(2000, seed));
    let out = run_with_timeout(under_umask(
        store,
        mask,
        &[
            "--lock-backend",
            backend,
            "refresh",
            "--from",
            file.to_str().unwrap(),
        ],
    ));
    assert_eq!(code(&out), 0, "refresh: {}", text(&out.stderr));
}

/// A refresh that holds the lock for 1.2 s (the lease, 0.3 s, is renewed
/// about every 0.1 s meanwhile).
fn spawn_long_refresh(store: &TestStore, mask: &str, backend: &str) -> Child {
    under_umask(
        store,
        mask,
        &[
            "--lock-backend",
            backend,
            "refresh",
            "--exec",
            "sh",
            "-c",
            "sleep 1.2; echo '[1,2,3]'",
        ],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("spawn refresh")
}

fn check_backend_under_umask(backend: &str, mask: &str) {
    let store = TestStore::new();
    refresh_under(&store, mask, backend, 1);
    refresh_under(&store, mask, backend, 2);
    assert_owner_only(
        &store.root(),
        &format!("{backend}, umask {mask}, after refreshes"),
    );

    // While a writer holds the lock (and renews its lease), every file it
    // has made so far, the lease and the holder record included, is 0600.
    let mut child = spawn_long_refresh(&store, mask, backend);
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    let mut lease_first_seen: Option<Instant> = None;
    let mut seen_renewed_lease = false;
    let mut seen_holder = false;
    // Sample until the writer exits (its stdout is a few bytes: the pipe
    // cannot fill while nobody drains it).
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the held refresh hung");
        let seen = assert_owner_only(
            &store.root(),
            &format!("{backend}, umask {mask}, while held"),
        );
        if seen.iter().any(|n| n == "lease") {
            let first = *lease_first_seen.get_or_insert_with(Instant::now);
            // Renewals run every 0.1 s: 0.4 s after the lease appeared,
            // it has been rewritten several times.
            seen_renewed_lease |= first.elapsed() > Duration::from_millis(400);
        }
        seen_holder |= seen.iter().any(|n| n == "lock.holder");
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = wait_output(child, COMMAND_TIMEOUT);
    assert_eq!(code(&out), 0, "held refresh: {}", text(&out.stderr));
    assert!(seen_holder, "the holder record was observed while held");
    if backend == "lease" {
        assert!(
            seen_renewed_lease,
            "the lease was observed after several renewals"
        );
    }
    assert_owner_only(
        &store.root(),
        &format!("{backend}, umask {mask}, at the end"),
    );
    assert_eq!(store.show(), b"[1,2,3]\n".to_vec());
}

#[test]
fn advisory_backend_under_umask_000_creates_owner_only_files() {
    check_backend_under_umask("advisory", "000");
}

#[test]
fn advisory_backend_under_umask_077_creates_owner_only_files() {
    check_backend_under_umask("advisory", "077");
}

#[test]
fn lease_backend_under_umask_000_creates_owner_only_files_and_renewals() {
    check_backend_under_umask("lease", "000");
}

#[test]
fn lease_backend_under_umask_077_creates_owner_only_files_and_renewals() {
    check_backend_under_umask("lease", "077");
}

/// The renewer used to write `tmp/.snapcache-<pid>-renew-<lease id>` with a
/// plain write (following links). Plant a symlink under exactly that name
/// (the pid and lease id are read from the live lease) and under other
/// `.snapcache-` names: the victim file must stay untouched through many
/// renewals, and the renewal must still work.
#[test]
fn a_symlink_planted_in_tmp_is_never_written_through_by_renewals() {
    let store = TestStore::new();
    refresh_under(&store, "022", "lease", 1);
    let victim = store.scratch("victim.txt");
    std::fs::write(&victim, b"precious").unwrap();
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o644)).unwrap();
    let child = spawn_long_refresh(&store, "022", "lease");
    let pid = child.id();
    let lease = store.root().join("lease");
    let record: serde_json::Value = wait_for("the lease", Duration::from_secs(10), || {
        std::fs::read(&lease)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
    });
    let id = record["lease_id"].as_str().expect("lease id").to_string();
    let tmp = store.root().join("tmp");
    let planted = [
        format!(".snapcache-{pid}-renew-{id}"),
        format!(".snapcache-{pid}-renew"),
        format!(".snapcache-{pid}-lease"),
        format!(".snapcache-{pid}-"),
    ];
    for name in &planted {
        symlink(&victim, tmp.join(name)).unwrap();
    }
    let out = wait_output(child, COMMAND_TIMEOUT);
    assert_eq!(code(&out), 0, "held refresh: {}", text(&out.stderr));
    assert_eq!(
        std::fs::read(&victim).unwrap(),
        b"precious",
        "the victim outside the store was written through a planted link"
    );
    assert_eq!(mode(&victim), Some(0o644), "the victim's mode is unchanged");
    assert_eq!(store.show(), b"[1,2,3]\n".to_vec());
    // The next write removes the planted links (never their targets).
    refresh_under(&store, "022", "lease", 3);
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
}

/// Reproduced: under `umask 0177` a first refresh made its directories
/// `0600` (the umask took the owner's search bit), failed with "Permission
/// denied" and left behind a parent its owner could not enter. Every
/// directory a write makes, the missing ones above the root included, is
/// exactly `0700`.
#[test]
fn a_first_write_makes_its_directories_owner_only_whatever_the_umask() {
    for mask in ["0177", "0277", "0000"] {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("a/b/store");
        let from = dir.path().join("p.json");
        std::fs::write(&from, b"[1]").unwrap();
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(format!("umask {mask}; exec \"$0\" \"$@\""))
            .arg(bin())
            .arg("--store")
            .arg(&root)
            .args(["refresh", "--from"])
            .arg(&from)
            .env_remove("SNAPCACHE_DIR")
            .stdin(Stdio::null());
        let out = run_with_timeout(cmd);
        assert_eq!(code(&out), 0, "umask {mask}: {}", text(&out.stderr));
        for made in [
            "a",
            "a/b",
            "a/b/store",
            "a/b/store/snapshots",
            "a/b/store/tmp",
        ] {
            assert_eq!(
                mode(&dir.path().join(made)),
                Some(0o700),
                "umask {mask}: {made}"
            );
        }
        let mut show = Command::new(bin());
        show.arg("--store").arg(&root).arg("show");
        assert_eq!(run_with_timeout(show).stdout, b"[1]", "umask {mask}");
    }
}
