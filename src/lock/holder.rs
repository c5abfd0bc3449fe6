//! The lock holder's self-description, `<store>/lock.holder`.
//!
//! Written atomically by a writer right after it acquires the lock and
//! removed right before it releases it. It only *describes*: whether the lock
//! is held is decided by the lock itself, so a record left behind by a killed
//! holder is never presented as a live holder.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::Backend;
use crate::durable::{Durable, open_no_follow};
use crate::layout::Layout;
use crate::time::Timestamp;

/// Who holds (or held) the writer lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HolderInfo {
    /// Process id of the holder.
    pub pid: u32,
    /// Host name of the holder's machine (read as one line of text of at
    /// most 200 bytes, see `pointer::one_clipped_line`; a real host name
    /// has at most 64).
    #[serde(deserialize_with = "crate::pointer::one_clipped_line")]
    pub host: String,
    /// Linux boot id of the holder's machine (detects a reboot), if known.
    #[serde(default)]
    pub boot_id: Option<String>,
    /// The holder's machine, as a hash of its machine id (`/etc/machine-id`,
    /// never written as it is: systemd asks applications not to reveal it),
    /// if known. Host names are not unique; this tells a reboot of this
    /// machine (same machine, another boot id) from another machine that
    /// has our name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine: Option<String>,
    /// The holder's PID namespace (Linux: the inode number of
    /// `/proc/self/ns/pid`), if known. `pid` is meaningful only inside it:
    /// a holder in a container or under `unshare --pid` is never judged by
    /// its pid from outside.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid_ns: Option<u64>,
    /// The holder's command line or purpose string (read as one line of
    /// text of at most 200 bytes: a record that another tool or a person
    /// wrote cannot put escape sequences, or pages of text, into the
    /// messages that name the holder).
    #[serde(deserialize_with = "crate::pointer::one_clipped_line")]
    pub command: String,
    /// When it acquired the lock.
    pub since: Timestamp,
    /// Which lock backend it holds.
    pub backend: Backend,
}

impl HolderInfo {
    /// Describes the current process as a holder.
    pub(crate) fn this_process(command: &str, backend: Backend) -> Self {
        HolderInfo {
            pid: std::process::id(),
            host: host_name(),
            boot_id: boot_id(),
            machine: machine_id(),
            pid_ns: pid_namespace(),
            command: crate::pointer::clip_note(command),
            since: Timestamp::now(),
            backend,
        }
    }

    /// `pid 42 on host "box" (snapcache refresh ...) for 3.2 s`; a holder
    /// in another PID namespace on this host is `pid 42 (in another PID
    /// namespace) on host "box" ...`. A start time ahead of this machine's
    /// clock (beyond the tolerance) is not shown as "for 0.0 s": how long
    /// it has held the lock is then unknown.
    pub fn describe(&self) -> String {
        let elsewhere =
            self.host == host_name() && !same_pid_namespace(self.pid_ns, pid_namespace());
        let held = match self.since.known_age() {
            Some(age) => format!("for {:.1} s", age.as_secs_f64()),
            None => "for an unknown time (its start lies ahead of this machine's clock)".into(),
        };
        format!(
            "pid {}{} on host {:?} ({}) {held}",
            self.pid,
            if elsewhere {
                " (in another PID namespace)"
            } else {
                ""
            },
            self.host,
            self.command,
        )
    }

    /// True when the record describes a process on this machine (same host
    /// and, where known, same boot) that no longer exists. Its pid is
    /// consulted only when it lives in our PID namespace: from another one
    /// (a container, `unshare --pid`), or one we cannot identify, the pid
    /// names some unrelated process or none, so such a holder is never
    /// judged dead by it (only a lease expiry or a reboot frees its lock).
    ///
    /// Host names are not unique (cloned VMs, CI images all called
    /// `localhost`), so the name alone proves nothing. Only a holder in this
    /// very boot (the same boot id, random per boot) is judged by its pid; a
    /// holder with another boot id is dead only when its machine id is ours
    /// (this machine rebooted). Anything else, another machine of our name
    /// or a platform without boot ids, is left to its lease's expiry.
    pub(crate) fn is_dead_local_process(&self) -> bool {
        if self.host != host_name() {
            return false;
        }
        match (&self.boot_id, boot_id()) {
            (Some(theirs), Some(ours)) if *theirs == ours => {
                same_pid_namespace(self.pid_ns, pid_namespace()) && !process_alive(self.pid)
            }
            (Some(_), Some(_)) => {
                matches!((&self.machine, machine_id()), (Some(theirs), Some(ours)) if *theirs == ours)
            }
            _ => false,
        }
    }
}

impl fmt::Display for HolderInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

/// Writes the record for the current holder (atomic, not fsynced: losing it
/// in a crash only loses a description).
pub(crate) fn write(layout: &Layout, durable: &Durable, info: &HolderInfo) {
    let bytes = serde_json::to_vec(info).unwrap_or_default();
    if let Err(e) = durable.replace_file(
        &layout.tmp_dir(),
        &layout.holder_file(),
        &bytes,
        false,
        None,
    ) {
        tracing::warn!(path = %e.path.display(), error = %e.source, "could not write the lock holder record");
    }
}

/// Removes the record (called by the holder before it releases the lock).
pub(crate) fn remove(layout: &Layout, durable: &Durable) {
    if let Err(e) = durable.remove_file(&layout.holder_file()) {
        tracing::warn!(path = %layout.holder_file().display(), error = %e, "could not remove the lock holder record");
    }
}

/// Reads the record; `None` when absent, unreadable or describing a dead
/// local process.
pub(crate) fn read(layout: &Layout) -> Option<HolderInfo> {
    let path = layout.holder_file();
    let file = open_no_follow(&path).ok()?;
    let bytes = crate::pointer::read_bounded(file, &path).ok()?;
    let info: HolderInfo = serde_json::from_slice(&bytes).ok()?;
    (!info.is_dead_local_process()).then_some(info)
}

/// This machine's host name, as a holder record is read back (one line of
/// at most 200 bytes; Linux allows 64, macOS 255), so that it compares equal
/// to what this machine wrote.
pub(crate) fn host_name() -> String {
    #[cfg(unix)]
    let name = rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned();
    #[cfg(not(unix))]
    let name = std::env::var("COMPUTERNAME").unwrap_or_else(|_| "unknown".into());
    crate::pointer::clip_note(&name)
}

/// Whether pids recorded in namespace `theirs` can be checked from `ours`:
/// both known and equal, or both unknown (a platform without PID
/// namespaces). One known and the other not is treated as different.
pub(crate) fn same_pid_namespace(theirs: Option<u64>, ours: Option<u64>) -> bool {
    theirs == ours
}

/// This process's PID namespace: the inode number of `/proc/self/ns/pid`
/// (the namespace's identity on Linux); `None` where there is no such file.
/// A process never changes its own PID namespace, so it is read once.
pub(crate) fn pid_namespace() -> Option<u64> {
    static NS: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    *NS.get_or_init(|| {
        #[cfg(target_os = "linux")]
        {
            use std::os::unix::fs::MetadataExt;
            // metadata follows the magic link to the namespace's nsfs inode.
            std::fs::metadata("/proc/self/ns/pid").ok().map(|m| m.ino())
        }
        #[cfg(not(target_os = "linux"))]
        {
            None
        }
    })
}

/// How this process signs its temp files (see [`crate::layout::temp_owner`]).
pub(crate) fn this_temp_owner() -> crate::layout::TempOwner {
    crate::layout::TempOwner {
        pid: std::process::id(),
        pid_ns: pid_namespace(),
        boot: boot_tag(),
    }
}

/// The first 8 hex digits of this boot's id, as temp names carry it.
pub(crate) fn boot_tag() -> Option<u32> {
    let id = boot_id()?;
    u32::from_str_radix(id.get(..8)?, 16).ok()
}

/// Linux's per-boot random id (a UUID); `None` elsewhere or when it cannot
/// be read whole. A process does not outlive the boot it started in, so it
/// is read once, with one `read`: procfs hands out the whole 37 bytes at
/// once, and anything that is not a whole UUID is taken as unknown (never
/// a truncated id, which would make a live holder look rebooted).
pub(crate) fn boot_id() -> Option<String> {
    static ID: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    ID.get_or_init(|| {
        use std::io::Read;
        let mut buf = [0u8; 64];
        let n = std::fs::File::open("/proc/sys/kernel/random/boot_id")
            .and_then(|mut f| f.read(&mut buf))
            .ok()?;
        parse_boot_id(&buf[..n])
    })
    .clone()
}

/// This machine's identity for holder records: a hash of its machine id
/// (`/etc/machine-id`, else `/var/lib/dbus/machine-id`: 32 hex digits),
/// derived for snapcache alone, so that the id itself never reaches a store
/// others may read; `None` where there is none. Read once per process.
pub(crate) fn machine_id() -> Option<String> {
    static ID: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    ID.get_or_init(|| {
        ["/etc/machine-id", "/var/lib/dbus/machine-id"]
            .iter()
            .find_map(|path| {
                let text = std::fs::read_to_string(path).ok()?;
                let id = text.trim();
                (id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())).then(|| {
                    let mut hasher = blake3::Hasher::new_derive_key(
                        "snapcache 2026-12-03 lock holder machine identity",
                    );
                    hasher.update(id.to_ascii_lowercase().as_bytes());
                    hasher.finalize().to_hex()[..32].to_string()
                })
            })
    })
    .clone()
}

/// The boot id in `bytes`: a UUID (36 characters, hex digits and dashes),
/// surrounded by whitespace at most.
fn parse_boot_id(bytes: &[u8]) -> Option<String> {
    let id = std::str::from_utf8(bytes).ok()?.trim();
    let uuid = id.len() == 36
        && id.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        });
    uuid.then(|| id.to_string())
}

/// Whether a process with this pid exists on this machine.
pub(crate) fn process_alive(pid: u32) -> bool {
    #[cfg(unix)]
    {
        let Some(pid) = i32::try_from(pid)
            .ok()
            .and_then(rustix::process::Pid::from_raw)
        else {
            return false;
        };
        let exists = match rustix::process::test_kill_process(pid) {
            Ok(()) => true,
            Err(e) => e == rustix::io::Errno::PERM,
        };
        exists && !is_zombie(pid.as_raw_nonzero().get())
    }
    #[cfg(not(unix))]
    {
        // Without a safe liveness check, assume alive: the lease expiry
        // still frees the lock eventually.
        let _ = pid;
        true
    }
}

/// Whether process `pid` has exited and only waits for its parent to reap
/// it (state `Z` in `/proc/<pid>/stat`). A signal still reaches a zombie,
/// so without this a holder killed under a parent that never waits (a
/// supervisor, a shell script's background job) counted as alive, and its
/// lease held writers off for its whole lease time. Where there is no
/// `/proc`, nothing is known: not a zombie.
#[cfg(unix)]
fn is_zombie(pid: i32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The command name, in parentheses, may itself hold ") ": the state
    // follows the last one.
    stat.rsplit_once(") ")
        .and_then(|(_, rest)| rest.chars().next())
        .is_some_and(|state| state == 'Z')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dead_pid() -> u32 {
        let mut child = std::process::Command::new("true")
            .spawn()
            .expect("spawn true");
        let pid = child.id();
        let _ = child.wait();
        pid
    }

    /// Reproduced: a lease holder killed under a parent that never reaped
    /// it held writers off for its whole lease time ("held by pid N ...
    /// for 5.9 s"), since a signal still reaches a zombie.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_zombie_is_not_alive() {
        let mut child = std::process::Command::new("true")
            .spawn()
            .expect("spawn true");
        let pid = child.id();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !is_zombie(pid as i32) {
            assert!(
                std::time::Instant::now() < deadline,
                "never became a zombie"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(!process_alive(pid), "exited, not yet reaped");
        let _ = child.wait();
        assert!(!process_alive(pid), "reaped");
        assert!(process_alive(std::process::id()), "this process");
    }

    #[test]
    fn a_dead_pid_counts_only_in_our_pid_namespace() {
        let ours = pid_namespace();
        let mut info = HolderInfo::this_process("test", Backend::Lease);
        info.pid = dead_pid();
        assert_eq!(info.pid_ns, ours);
        assert!(
            info.is_dead_local_process(),
            "same namespace: judged by pid"
        );
        if let Some(ns) = ours {
            info.pid_ns = Some(ns + 1);
            assert!(
                !info.is_dead_local_process(),
                "another namespace: never by pid"
            );
            info.pid_ns = None;
            assert!(
                !info.is_dead_local_process(),
                "an unrecorded namespace while ours is known: never by pid"
            );
            // A reboot of this machine still frees it, whatever the
            // namespace; another boot id on another machine of our name
            // does not.
            info.boot_id = Some("another-boot".into());
            assert_eq!(
                info.is_dead_local_process(),
                boot_id().is_some() && machine_id().is_some(),
                "a changed boot id on this machine means dead"
            );
            info.machine = Some("another machine".into());
            assert!(!info.is_dead_local_process(), "another machine of our name");
            info.machine = None;
            assert!(
                !info.is_dead_local_process(),
                "a machine that cannot be told"
            );
        }
        info.pid = std::process::id();
        info.pid_ns = ours;
        info.boot_id = boot_id();
        assert!(!info.is_dead_local_process(), "we are alive");
    }

    #[test]
    fn a_boot_id_is_a_whole_uuid_or_unknown() {
        let id = "1dd1a01a-99f4-4f03-a8b4-3be1cff3a057";
        assert_eq!(
            parse_boot_id(format!("{id}\n").as_bytes()).as_deref(),
            Some(id)
        );
        // A short read must not become an id that differs from ours.
        assert_eq!(parse_boot_id(&id.as_bytes()[..32]), None);
        assert_eq!(parse_boot_id(b""), None);
        assert_eq!(
            parse_boot_id(b"1dd1a01a_99f4-4f03-a8b4-3be1cff3a057\n"),
            None
        );
        assert_eq!(parse_boot_id(b"\xff\xfe"), None);
        #[cfg(target_os = "linux")]
        {
            let text = std::fs::read_to_string("/proc/sys/kernel/random/boot_id");
            if let Ok(text) = text {
                assert_eq!(
                    boot_id().as_deref(),
                    Some(text.trim()),
                    "the same as read whole"
                );
            }
        }
    }

    #[test]
    fn a_long_host_or_command_is_read_as_one_line_of_at_most_200_bytes() {
        let long = format!("kopi\u{1b}[2J {}", "x".repeat(10_000));
        let record = serde_json::json!({
            "pid": 1, "host": long, "boot_id": null, "command": long,
            "since": "2026-01-01T00:00:00Z", "backend": "lease",
        });
        let info: HolderInfo = serde_json::from_value(record).expect("a record");
        for field in [&info.host, &info.command] {
            assert!(field.len() <= 200, "{} bytes", field.len());
            assert!(
                field.starts_with("kopi [2J xxx") && field.ends_with('…'),
                "{field}"
            );
            assert!(!field.chars().any(char::is_control), "{field:?}");
        }
        let ours = HolderInfo::this_process(&long, Backend::Lease);
        assert_eq!(ours.command, info.command, "written as it is read");
    }

    #[test]
    fn the_record_carries_the_namespace_and_old_records_still_parse() {
        let info = HolderInfo::this_process("test", Backend::Lease);
        let json = serde_json::to_string(&info).expect("serialize");
        if let Some(ns) = info.pid_ns {
            assert!(json.contains(&format!("\"pid_ns\":{ns}")), "{json}");
        }
        let old = r#"{"pid":1,"host":"h","boot_id":null,"command":"c","since":"2026-01-01T00:00:00Z","backend":"lease"}"#;
        let parsed: HolderInfo = serde_json::from_str(old).expect("an older record parses");
        assert_eq!(parsed.pid_ns, None);
    }
}
