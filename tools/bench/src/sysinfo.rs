//! What the bench ran on: CPU, cores, kernel, filesystem of the bench
//! directory.

use std::path::Path;
use std::process::Command;

/// Machine and filesystem description.
#[derive(Debug, Clone, Default)]
pub struct SysInfo {
    /// Logical CPUs available to the bench.
    pub nproc: usize,
    /// CPU model name from `/proc/cpuinfo`.
    pub cpu_model: String,
    /// Kernel release.
    pub kernel: String,
    /// Total memory from `/proc/meminfo`.
    pub memory: String,
    /// Filesystem type from `stat -f`.
    pub fs_type: String,
    /// Mount entry (device, mount point, type, options) from `/proc/mounts`.
    pub mount: String,
    /// For ext4: whether it has a journal (a `/proc/fs/jbd2/<device>-*`
    /// entry); `None` for other filesystems or when it cannot be told.
    pub journal: Option<bool>,
    /// Directory the contenders wrote into.
    pub bench_dir: String,
    /// `/proc/loadavg` when the run started (other load skews figures).
    pub load_at_start: String,
    /// DAMON monitors that run (`/sys/kernel/mm/damon/admin/kdamonds`), with
    /// what they do: one with a `pageout` scheme reclaims memory it finds
    /// cold on its own, which changes what page cache and fresh memory cost.
    pub damon: Vec<String>,
    /// Measured: wall time per 4 KiB page of first touching freshly mapped
    /// memory (a page fault, the kernel zeroing the page, then a write), in
    /// nanoseconds. A read into a fresh buffer pays it for every page.
    pub fresh_page_ns: Option<f64>,
}

/// The 1, 5 and 15 minute load averages from `/proc/loadavg`.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// Collect the description for a bench directory `dir`.
pub fn collect(dir: &Path) -> SysInfo {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name").and_then(|r| r.split_once(':')))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|r| r.split_whitespace().next()?.parse::<u64>().ok())
        })
        .map(|kib| format!("{:.1} GiB", kib as f64 / (1024.0 * 1024.0)))
        .unwrap_or_else(|| "unknown".into());
    let fs_type = Command::new("stat")
        .args(["-f", "-c", "%T"])
        .arg(dir)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    let mount = mount_of(dir);
    SysInfo {
        nproc: std::thread::available_parallelism().map_or(1, |n| n.get()),
        cpu_model,
        kernel,
        memory,
        fs_type,
        journal: mount.as_deref().and_then(ext4_journal),
        mount: mount.unwrap_or_else(|| "unknown".into()),
        bench_dir: dir.display().to_string(),
        load_at_start: loadavg(),
        damon: damon(),
        fresh_page_ns: fresh_page_ns(),
    }
}

/// Each running kdamond as `kdamond N: <operations> (schemes: <actions>)`.
fn damon() -> Vec<String> {
    let root = Path::new("/sys/kernel/mm/damon/admin/kdamonds");
    let read = |p: &Path| {
        std::fs::read_to_string(p)
            .map(|s| s.trim().to_string())
            .ok()
    };
    let Ok(entries) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        .collect();
    names.sort();
    names
        .into_iter()
        .filter(|n| read(&root.join(n).join("state")).as_deref() == Some("on"))
        .map(|n| {
            let contexts = root.join(&n).join("contexts");
            let mut parts = Vec::new();
            for c in std::fs::read_dir(&contexts).into_iter().flatten().flatten() {
                let c = c.path();
                if !c.is_dir() {
                    continue;
                }
                let ops = read(&c.join("operations")).unwrap_or_else(|| "?".into());
                let actions: Vec<String> = std::fs::read_dir(c.join("schemes"))
                    .into_iter()
                    .flatten()
                    .flatten()
                    .filter_map(|s| read(&s.path().join("action")))
                    .collect();
                parts.push(if actions.is_empty() {
                    ops
                } else {
                    format!("{ops} (schemes: {})", actions.join(", "))
                });
            }
            format!("kdamond {n}: {}", parts.join("; "))
        })
        .collect()
}

/// The median over five tries of the time per page to fill 16 MiB of
/// freshly allocated memory (an allocation this size is mapped fresh by
/// glibc, whatever its threshold), per 4 KiB page.
fn fresh_page_ns() -> Option<f64> {
    const BYTES: usize = 16 << 20;
    let mut tries: Vec<f64> = (0..5)
        .map(|_| {
            let start = std::time::Instant::now();
            let v = std::hint::black_box(vec![1u8; BYTES]);
            let took = start.elapsed();
            drop(v);
            took.as_nanos() as f64 / (BYTES / 4096) as f64
        })
        .collect();
    tries.sort_by(f64::total_cmp);
    tries.get(2).copied()
}

/// The `/proc/mounts` line whose mount point is the longest prefix of `dir`.
fn mount_of(dir: &Path) -> Option<String> {
    let dir = dir.canonicalize().ok()?;
    let mounts = std::fs::read_to_string("/proc/mounts").ok()?;
    mounts
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 4 && dir.starts_with(f[1])).then(|| {
                (
                    f[1].len(),
                    format!("{} on {} type {} ({})", f[0], f[1], f[2], f[3]),
                )
            })
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, s)| s)
}

/// Whether the ext4 filesystem of a `mount_of` line has a journal: jbd2
/// lists each journal it runs as `/proc/fs/jbd2/<device>-<inode>`. It
/// matters here because without one, ext4 frees a deleted file's blocks, and
/// with `discard` trims them, inside the `unlink` itself (seen in off-CPU
/// stacks: `ext4_free_blocks` → `blkdev_issue_discard`), where a journal
/// would defer that to its commit. `None` for other filesystems or without
/// `/proc/fs/jbd2`.
fn ext4_journal(mount: &str) -> Option<bool> {
    let name = ext4_device(mount)?;
    let journals = std::fs::read_dir("/proc/fs/jbd2").ok()?;
    let prefix = format!("{name}-");
    Some(
        journals
            .filter_map(|e| e.ok())
            .any(|e| e.file_name().to_string_lossy().starts_with(&prefix)),
    )
}

/// The device name (`vda` of `/dev/vda`) of a `mount_of` line, when its
/// filesystem is ext4: the name jbd2 files its journal under.
fn ext4_device(mount: &str) -> Option<&str> {
    let mut fields = mount.split_whitespace();
    let device = fields.next()?;
    // `<device> on <mount point> type <fs> (<options>)`
    (fields.nth(3)? == "ext4").then_some(())?;
    Path::new(device).file_name()?.to_str()
}

/// CPU accounting at one instant, to tell how busy the rest of the machine
/// was while the bench ran.
#[derive(Debug, Clone, Copy)]
pub struct CpuSnapshot {
    /// Busy ticks of all CPUs (everything but idle and iowait), `/proc/stat`.
    busy: u64,
    /// All ticks of all CPUs.
    total: u64,
    /// Ticks of this process and its waited-for children, `/proc/self/stat`.
    own: u64,
}

/// Take a [`CpuSnapshot`]; `None` without `/proc`.
pub fn cpu_snapshot() -> Option<CpuSnapshot> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let cpu: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal ...
    let total: u64 = cpu.iter().take(8).sum();
    let idle = cpu.get(3)? + cpu.get(4)?;
    let own_stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let f: Vec<u64> = own_stat
        .rsplit_once(')')?
        .1
        .split_whitespace()
        .skip(11)
        .take(4)
        .filter_map(|v| v.parse().ok())
        .collect();
    Some(CpuSnapshot {
        busy: total.saturating_sub(idle),
        total,
        own: f.iter().sum(),
    })
}

/// Share (0 to 1) of the machine's CPU time used by *other* processes
/// between two snapshots.
pub fn others_share(start: CpuSnapshot, end: CpuSnapshot) -> Option<f64> {
    let total = end.total.saturating_sub(start.total);
    let others = end
        .busy
        .saturating_sub(start.busy)
        .saturating_sub(end.own.saturating_sub(start.own));
    (total > 0).then(|| others as f64 / total as f64)
}

/// Share of the machine's CPU time used by *other* processes between two
/// snapshots, as a sentence for the report.
pub fn others_busy(start: CpuSnapshot, end: CpuSnapshot) -> String {
    let total = end.total.saturating_sub(start.total);
    let busy = end.busy.saturating_sub(start.busy);
    let own = end.own.saturating_sub(start.own);
    let others = busy.saturating_sub(own);
    if total == 0 {
        return "unknown".into();
    }
    // Ticks are USER_HZ = 100 per second.
    format!(
        "{:.1} CPU-seconds of {:.1} available ({:.0}%); the bench and its children used {:.1}",
        others as f64 / 100.0,
        total as f64 / 100.0,
        100.0 * others as f64 / total as f64,
        own as f64 / 100.0
    )
}

#[cfg(test)]
mod tests {
    use super::ext4_device;

    #[test]
    fn only_an_ext4_mount_names_a_device_to_look_up_a_journal_for() {
        assert_eq!(
            ext4_device("/dev/vda on / type ext4 (rw,relatime,discard)"),
            Some("vda")
        );
        assert_eq!(
            ext4_device("/dev/nvme0n1p2 on /work type ext4 (rw)"),
            Some("nvme0n1p2")
        );
        assert_eq!(ext4_device("tmpfs on /tmp type tmpfs (rw)"), None);
        assert_eq!(ext4_device("/dev/sda1 on /data type xfs (rw)"), None);
        assert_eq!(ext4_device("unknown"), None);
    }
}
