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
    /// Host name of the holder's machine.
    pub host: String,
    /// Linux boot id of the holder's machine (detects a reboot), if known.
    #[serde(default)]
    pub boot_id: Option<String>,
    /// The holder's command line or purpose string.
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
            command: command.to_string(),
            since: Timestamp::now(),
            backend,
        }
    }

    /// `pid 42 on host "box" (snapcache refresh ...) for 3.2 s`.
    pub fn describe(&self) -> String {
        format!(
            "pid {} on host {:?} ({}) for {:.1} s",
            self.pid,
            self.host,
            self.command,
            self.since.age().as_secs_f64()
        )
    }

    /// True when the record describes a process on this machine (same host
    /// and, where known, same boot) that no longer exists.
    pub(crate) fn is_dead_local_process(&self) -> bool {
        if self.host != host_name() {
            return false;
        }
        match (&self.boot_id, boot_id()) {
            (Some(theirs), Some(ours)) if *theirs != ours => return true,
            _ => {}
        }
        !process_alive(self.pid)
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
    if let Err((path, e)) = durable.replace_file(
        &layout.tmp_dir(),
        &layout.holder_file(),
        &bytes,
        false,
        None,
    ) {
        tracing::warn!(path = %path.display(), error = %e, "could not write the lock holder record");
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

/// This machine's host name.
pub(crate) fn host_name() -> String {
    #[cfg(unix)]
    {
        rustix::system::uname()
            .nodename()
            .to_string_lossy()
            .into_owned()
    }
    #[cfg(not(unix))]
    {
        std::env::var("COMPUTERNAME").unwrap_or_else(|_| "unknown".into())
    }
}

/// Linux's per-boot random id; `None` elsewhere.
pub(crate) fn boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().to_string())
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
        match rustix::process::test_kill_process(pid) {
            Ok(()) => true,
            Err(e) => e == rustix::io::Errno::PERM,
        }
    }
    #[cfg(not(unix))]
    {
        // Without a safe liveness check, assume alive: the lease expiry
        // still frees the lock eventually.
        let _ = pid;
        true
    }
}
