//! Child processes: spawning, and reaping the orphans of killed writers.
//!
//! A writer killed while its `--exec` source runs leaves that source behind
//! (snapcache starts it in its own process group; it dies of SIGPIPE once it
//! writes again). Its parent is gone, so it is re-parented to the nearest
//! "child subreaper" ancestor, or to PID 1, which in some containers never
//! reaps, leaving zombies that hold PIDs. This tool makes itself a subreaper
//! (Linux) and reaps such orphans: every spawned child is registered, and
//! anything else that turns up as our child is an orphan. Spawning and
//! reaping are serialised by one mutex, so a registered child's exit status
//! is never stolen from its `std::process::Child`.

use std::collections::HashSet;
use std::io::{self, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub struct Procs {
    registered: Mutex<HashSet<u32>>,
    /// Orphaned grandchildren reaped so far.
    pub orphans_reaped: AtomicU64,
    /// Orphans still alive at the end of the run, killed then.
    pub orphans_killed: AtomicU64,
    /// Whether we are a child subreaper (otherwise orphans go to PID 1).
    pub subreaper: bool,
}

impl Procs {
    pub fn new() -> Self {
        #[cfg(target_os = "linux")]
        let subreaper =
            rustix::process::set_child_subreaper(Some(rustix::process::getpid())).is_ok();
        #[cfg(not(target_os = "linux"))]
        let subreaper = false;
        Procs {
            registered: Mutex::new(HashSet::new()),
            orphans_reaped: AtomicU64::new(0),
            orphans_killed: AtomicU64::new(0),
            subreaper,
        }
    }

    /// Spawns `cmd` and registers the child.
    pub fn spawn(&self, cmd: &mut Command) -> io::Result<Child> {
        let mut registered = self
            .registered
            .lock()
            .map_err(|_| io::Error::other("process registry poisoned"))?;
        let child = cmd.spawn()?;
        registered.insert(child.id());
        Ok(child)
    }

    /// Forgets a child once it has been waited for.
    pub fn forget(&self, pid: u32) {
        if let Ok(mut registered) = self.registered.lock() {
            registered.remove(&pid);
        }
    }

    /// Reaps exited orphans; returns how many.
    pub fn reap_orphans(&self) -> u64 {
        self.sweep(false)
    }

    /// Kills the orphans still running and reaps them (end of the run).
    pub fn kill_orphans(&self) {
        if !self.subreaper {
            return;
        }
        self.sweep(true);
        for _ in 0..50 {
            std::thread::sleep(std::time::Duration::from_millis(10));
            self.sweep(false);
            if self.orphans().is_empty() {
                break;
            }
        }
    }

    fn sweep(&self, kill: bool) -> u64 {
        if !self.subreaper {
            return 0;
        }
        let Ok(registered) = self.registered.lock() else {
            return 0;
        };
        let mut reaped = 0;
        for (pid, state) in children() {
            if registered.contains(&pid) {
                continue;
            }
            reaped += u64::from(reap_or_kill(pid, state, kill, &self.orphans_killed));
        }
        self.orphans_reaped.fetch_add(reaped, Ordering::Relaxed);
        reaped
    }

    fn orphans(&self) -> Vec<u32> {
        let Ok(registered) = self.registered.lock() else {
            return Vec::new();
        };
        children()
            .into_iter()
            .map(|(pid, _)| pid)
            .filter(|pid| !registered.contains(pid))
            .collect()
    }
}

/// A spawned child whose stdout and stderr are drained on threads (so a
/// full pipe never stalls it), forgotten by the registry once waited for.
pub struct Running<'a> {
    procs: &'a Procs,
    child: Child,
    pub pid: u32,
    stdout: Option<JoinHandle<Vec<u8>>>,
    stderr: Option<JoinHandle<Vec<u8>>>,
    done: bool,
}

/// A child that has exited.
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// It was still running at the time limit and was killed.
    pub hung: bool,
}

impl<'a> Running<'a> {
    pub fn start(procs: &'a Procs, cmd: &mut Command) -> io::Result<Running<'a>> {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = procs.spawn(cmd)?;
        let pid = child.id();
        let stdout = child.stdout.take().map(drain);
        let stderr = child.stderr.take().map(drain);
        Ok(Running {
            procs,
            child,
            pid,
            stdout,
            stderr,
            done: false,
        })
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends SIGKILL; true when the signal was delivered (it was not reaped yet).
    pub fn kill(&mut self) -> bool {
        self.child.kill().is_ok()
    }

    /// Waits for the exit, killing the child once `limit` has passed since `since`.
    pub fn wait(mut self, since: Instant, limit: Duration) -> io::Result<Finished> {
        let mut hung = false;
        let status = loop {
            if let Some(status) = self.child.try_wait()? {
                break status;
            }
            if since.elapsed() > limit {
                hung = true;
                let _ = self.child.kill();
                break self.child.wait()?;
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        self.done = true;
        self.procs.forget(self.pid);
        Ok(Finished {
            status,
            stdout: join_bounded(self.stdout.take()),
            stderr: join_bounded(self.stderr.take()),
            hung,
        })
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.child.kill();
            let _ = self.child.wait();
            self.procs.forget(self.pid);
        }
    }
}

fn drain(mut pipe: impl Read + Send + 'static) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        buf
    })
}

/// Joins a drain thread, giving up after 5 s (a grandchild might hold the
/// pipe open; then the output is reported empty rather than the tool hanging).
fn join_bounded(handle: Option<JoinHandle<Vec<u8>>>) -> Vec<u8> {
    let Some(handle) = handle else {
        return Vec::new();
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while !handle.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    if handle.is_finished() {
        handle.join().unwrap_or_default()
    } else {
        Vec::new()
    }
}

#[cfg(target_os = "linux")]
fn reap_or_kill(pid: u32, state: char, kill: bool, killed: &AtomicU64) -> bool {
    use rustix::process::{Pid, Signal, WaitOptions, kill_process, waitpid};
    let Some(p) = i32::try_from(pid).ok().and_then(Pid::from_raw) else {
        return false;
    };
    if state == 'Z' {
        return matches!(waitpid(Some(p), WaitOptions::NOHANG), Ok(Some(_)));
    }
    if kill && kill_process(p, Signal::KILL).is_ok() {
        killed.fetch_add(1, Ordering::Relaxed);
    }
    false
}

#[cfg(not(target_os = "linux"))]
fn reap_or_kill(_pid: u32, _state: char, _kill: bool, _killed: &AtomicU64) -> bool {
    false
}

/// Our child processes and their states, from `/proc/<pid>/stat`.
fn children() -> Vec<(u32, char)> {
    let me = std::process::id();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        if let Some((state, ppid)) = parse_stat(&stat) {
            if ppid == me {
                out.push((pid, state));
            }
        }
    }
    out
}

/// State and parent pid from a `/proc/<pid>/stat` line (`pid (comm) S ppid ...`;
/// `comm` may contain spaces and parentheses, so parse after the last `)`).
fn parse_stat(stat: &str) -> Option<(char, u32)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_with_odd_command_names_parse() {
        assert_eq!(parse_stat("123 (sh) Z 77 123 1 0 -1"), Some(('Z', 77)));
        assert_eq!(parse_stat("9 (a) b (c)) S 1 9 9 0"), Some(('S', 1)));
        assert_eq!(parse_stat("garbage"), None);
    }
}
