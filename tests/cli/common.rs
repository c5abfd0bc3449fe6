//! Shared helpers: a temp store, the binary with a timeout, JSON parsing.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Every spawned command must finish within this, or the test fails.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// Lets the owner write a (read-only) store file, to damage it, and nobody
/// else: a file its group or others can write is refused as untrusted, not
/// judged on its bytes. (`Permissions::set_readonly(false)` would add write
/// for everyone on Unix.)
pub fn make_owner_writable(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .expect("make the file writable by its owner");
    }
    #[cfg(not(unix))]
    {
        let mut perms = std::fs::metadata(path).expect("metadata").permissions();
        #[allow(clippy::permissions_set_readonly_false)]
        perms.set_readonly(false);
        std::fs::set_permissions(path, perms).expect("make the file writable");
    }
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_snapcache")
}

/// A store in a fresh temp directory.
pub struct TestStore {
    pub dir: tempfile::TempDir,
}

impl TestStore {
    /// A `refresh --lock-backend lease` of `content`, which must succeed:
    /// a lease-backend commit, so that `commits/` holds its record.
    pub fn lease_refresh(&self, content: &[u8]) {
        let p = self.payload("lease-payload", content);
        let out = self.run(&[
            "--lock-backend",
            "lease",
            "refresh",
            "--from",
            p.to_str().unwrap(),
        ]);
        assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    }

    /// The highest commit record number in `commits/`.
    pub fn newest_commit_record(&self) -> u64 {
        self.files_in("commits")
            .iter()
            .filter_map(|n| n.parse::<u64>().ok())
            .max()
            .expect("a commit record")
    }

    pub fn new() -> Self {
        TestStore {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    /// A scratch file path outside the store.
    pub fn scratch(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes a payload file outside the store and returns its path.
    pub fn payload(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.scratch(name);
        std::fs::write(&path, bytes).expect("write payload file");
        path
    }

    /// `snapcache --store <root> <args>` as a command, environment cleaned.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(bin());
        cmd.arg("--store").arg(self.root()).args(args);
        cmd.env_remove("SNAPCACHE_DIR")
            .env_remove("SNAPCACHE_LOCK_TIMEOUT")
            .env_remove("SNAPCACHE_KEEP")
            .env_remove("SNAPCACHE_LOG")
            .env_remove("RUST_LOG")
            .env_remove("NO_COLOR")
            .stdin(Stdio::null());
        cmd
    }

    /// Runs to completion (with a timeout).
    pub fn run(&self, args: &[&str]) -> Output {
        run_with_timeout(self.command(args))
    }

    /// Runs with `--json` and parses stdout.
    pub fn json(&self, args: &[&str]) -> (Output, Value) {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = self.run(&all);
        let value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "--json output must be one JSON object ({e}): {:?} / stderr {:?}",
                text(&out.stdout),
                text(&out.stderr)
            )
        });
        (out, value)
    }

    /// Runs and asserts exit code 0.
    pub fn ok(&self, args: &[&str]) -> Output {
        let out = self.run(args);
        assert_eq!(
            code(&out),
            0,
            "snapcache {args:?} must succeed; stderr: {}",
            text(&out.stderr)
        );
        out
    }

    /// Publishes bytes from a file; returns the parsed `--json` outcome.
    pub fn refresh(&self, bytes: &[u8], extra: &[&str]) -> Value {
        let file = tempfile::NamedTempFile::new_in(self.dir.path()).expect("temp payload");
        std::fs::write(file.path(), bytes).expect("write payload");
        let path = file.path().to_str().expect("utf8 path").to_string();
        let mut args = vec!["refresh", "--from", path.as_str()];
        args.extend_from_slice(extra);
        let (out, value) = self.json(&args);
        assert_eq!(
            code(&out),
            0,
            "refresh must succeed; stderr: {}",
            text(&out.stderr)
        );
        value
    }

    /// The bytes `snapcache show` prints.
    pub fn show(&self) -> Vec<u8> {
        self.ok(&["show"]).stdout
    }

    /// Names of the files in a store subdirectory.
    pub fn files_in(&self, sub: &str) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.root().join(sub))
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    /// A snapshot of every file in the store (path, bytes), to prove "nothing changed".
    pub fn fingerprint(&self) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        for sub in ["", "snapshots"] {
            let dir = self.root().join(sub);
            for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let path = entry.path();
                if path.is_file() && !path.ends_with("lock") {
                    out.push((
                        path.display().to_string(),
                        std::fs::read(&path).unwrap_or_default(),
                    ));
                }
            }
        }
        out.sort();
        out
    }

    /// Waits until `status --json` reports the lock as held and its holder
    /// has recorded itself (it does so right after acquiring).
    pub fn wait_until_locked(&self) -> Value {
        wait_for(
            "the writer lock to be taken",
            Duration::from_secs(20),
            || {
                let (_, status) = self.json(&["status"]);
                let recorded = status["lock"]["pid"].is_u64();
                (status["lock"]["held"] == true && recorded).then_some(status)
            },
        )
    }
}

pub fn run_with_timeout(mut cmd: Command) -> Output {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = cmd.spawn().expect("spawn snapcache");
    wait_output(child, COMMAND_TIMEOUT)
}

/// Waits for a spawned child, killing it (and failing) after `timeout`.
/// Its stdout and stderr are drained on threads so a full pipe never stalls it.
pub fn wait_output(mut child: Child, timeout: Duration) -> Output {
    use std::io::Read;
    fn drain(pipe: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<Vec<u8>> {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut buf);
            }
            buf
        })
    }
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let err = stderr.join().unwrap_or_default();
            panic!(
                "command did not finish within {timeout:?}; stderr: {}",
                text(&err)
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    }
}

/// Polls `probe` until it returns `Some`, failing after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The state letter of a process in /proc (`T` when stopped).
pub fn process_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(") ")?.1.chars().next()
}

pub fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// blake3 hex of bytes, as the store names snapshots.
pub fn hash_hex(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex().to_string()
}

/// A JSON payload of roughly `size` bytes, distinct per `seed`.
pub fn json_payload(size: usize, seed: u64) -> Vec<u8> {
    let mut out = format!("{{\"seed\":{seed},\"items\":[").into_bytes();
    let mut i = 0u64;
    while out.len() + 64 < size {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(
            format!(
                "{{\"id\":{i},\"v\":\"{:016x}\"}}",
                seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ i
            )
            .as_bytes(),
        );
        i += 1;
    }
    out.extend_from_slice(b"]}");
    out
}

/// Reads the store's pointer file.
pub fn pointer_path(store: &TestStore) -> PathBuf {
    store.root().join("current")
}

/// Writes a syntactically valid pointer (correct checksum) with this body.
pub fn write_pointer_with_body(path: &Path, body: &str) {
    let body = format!("{body}\n");
    let sum = hash_hex(body.as_bytes());
    std::fs::write(path, format!("snapcache-pointer 1 {sum}\n{body}")).expect("write pointer");
}
