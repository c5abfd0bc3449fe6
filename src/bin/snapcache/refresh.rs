//! `snapcache refresh`: publish from a file, stdin or a command.
//!
//! The refresh never blocks its main thread in a read: the payload (when it
//! is not a regular file) and a command's output are read on helper threads
//! (see [`crate::pump`]), so SIGINT/SIGTERM end a refresh within one tick
//! ([`TICK`]) whatever the source does, and the lock is released.

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use snapcache::{Error, PayloadSink, PublishOptions, PublishOutcome, SourceError, Store};

use crate::output::{errln, human_bytes, outln, print_json, short_hash};
use crate::progress::{Counted, Progress};
use crate::pump::{Event, Pump};
use crate::{Context, Failure, LockTimeoutArg};

/// How long `--exec` waits, once the command has exited, for its stdout and
/// stderr to reach end-of-file. A background process that the command left
/// running with the pipe open would otherwise keep the refresh (and the
/// writer lock) waiting for as long as it lives.
pub const EXEC_OUTPUT_GRACE: Duration = Duration::from_secs(1);
/// How often a waiting refresh checks for a signal, the command's exit and
/// the grace deadline (bounds the reaction to SIGINT/SIGTERM).
const TICK: Duration = Duration::from_millis(20);
/// Longest accepted `--max-age` (about 31 years).
pub const MAX_AGE_LIMIT: Duration = Duration::from_secs(1_000_000_000);
/// How much of a failing command's stderr is quoted in the error.
const STDERR_TAIL: usize = 2048;

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["from", "exec"])))]
pub struct Args {
    /// Read the payload from this file (`-` for stdin)
    #[arg(long, value_name = "PATH|-")]
    from: Option<PathBuf>,
    /// Run CMD under the lock and publish its stdout (put --exec last: everything after it is CMD's)
    #[arg(long, value_name = "CMD [ARG]...", num_args = 1.., allow_hyphen_values = true)]
    exec: Option<Vec<OsString>>,
    /// Skip when the last successful refresh is younger than this (e.g. 30s, 10m, 1h; at most 1000000000s)
    #[arg(long, value_name = "DURATION", value_parser = parse_max_age)]
    max_age: Option<Duration>,
    /// Accept any bytes instead of requiring well-formed JSON
    #[arg(long)]
    raw: bool,
    /// A note recorded with the new generation (default: the source; bytes that are not UTF-8 are replaced)
    #[arg(long, value_name = "TEXT")]
    note: Option<OsString>,
    /// Reject a payload larger than SIZE (bytes, or with K, M, G, T: binary multiples, e.g. 64M) [default: $SNAPCACHE_MAX_SIZE, else no limit]
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    max_size: Option<u64>,
    #[command(flatten)]
    lock_timeout: LockTimeoutArg,
}

/// `--max-size` and `SNAPCACHE_MAX_SIZE`: a number of bytes, with an
/// optional binary suffix `K`, `M`, `G` or `T` (`KiB`, `MB`, ... read the
/// same: a cache is sized in binary units).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(digits);
    let unit = unit.trim().to_ascii_uppercase();
    let shift = match unit.trim_end_matches("IB").trim_end_matches('B') {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        _ => {
            return Err(format!(
                "{text:?} is not a size: give bytes, or a number with K, M, G or T (e.g. 64M)"
            ));
        }
    };
    let n: u64 = number.parse().map_err(|_| {
        format!("{text:?} is not a size: give bytes, or a number with K, M, G or T (e.g. 64M)")
    })?;
    if n == 0 {
        return Err("a size limit of 0 would reject every payload".into());
    }
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| format!("{text:?} is larger than any payload could be"))
}

/// `--max-age` (and `gc --older-than`): a humantime duration up to [`MAX_AGE_LIMIT`].
pub fn parse_max_age(text: &str) -> Result<Duration, String> {
    let age = humantime::parse_duration(text).map_err(|e| e.to_string())?;
    if age > MAX_AGE_LIMIT {
        return Err(format!(
            "longer than the accepted maximum of {}s (about 31 years)",
            MAX_AGE_LIMIT.as_secs()
        ));
    }
    Ok(age)
}

pub fn run(ctx: &Context, args: &Args) -> Result<(), Failure> {
    let options = args.lock_timeout.apply(&ctx.options)?;
    let mut publish = PublishOptions::default().raw(args.raw);
    publish.max_age = args.max_age;
    publish.max_bytes = match args.max_size {
        Some(limit) => Some(limit),
        None => match crate::env_value("SNAPCACHE_MAX_SIZE")? {
            Some(text) => Some(
                parse_size(&text)
                    .map_err(|e| Failure::Usage(format!("SNAPCACHE_MAX_SIZE: {e}")))?,
            ),
            None => None,
        },
    };
    let outcome = match (&args.from, &args.exec) {
        (Some(path), _) => {
            publish.note =
                Some(note_text(args).unwrap_or_else(|| format!("from {}", path.display())));
            // Open before taking the lock: a typo should not wait for a writer.
            let source = open_source(path, ctx)?;
            let store = Store::open(options)?;
            let progress = Progress::new(ctx, "read");
            match source {
                Source::Regular(file) => store.publish_reader(
                    Counted {
                        inner: file,
                        progress,
                    },
                    &publish,
                )?,
                Source::Pumped(mut pump) => store.publish_with(&publish, |sink| {
                    copy_pumped(&mut pump, sink, &ctx.cancel, progress)
                })?,
            }
        }
        (None, Some(command)) => {
            // Privacy: only the program is recorded (in the note and the
            // holder record), never its arguments, which may carry tokens
            // (an `Authorization` header, a signed URL).
            let program = command
                .first()
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default();
            publish.note = Some(note_text(args).unwrap_or_else(|| format!("exec {program}")));
            let store =
                Store::open(options.purpose(format!("snapcache refresh --exec {program}")))?;
            let cancel = ctx.cancel.clone();
            let progress = Progress::new(ctx, "read");
            store.publish_with(&publish, |sink| {
                run_command(command, sink, &cancel, progress)
            })?
        }
        (None, None) => {
            return Err(Failure::Usage(
                "refresh needs --from PATH|- or --exec CMD".into(),
            ));
        }
    };
    print_outcome(ctx, &outcome);
    Ok(())
}

/// `--note`, with bytes that are not UTF-8 replaced (the pointer is JSON).
fn note_text(args: &Args) -> Option<String> {
    args.note.as_ref().map(|n| n.to_string_lossy().into_owned())
}

/// A command line for messages; arguments that are not UTF-8 are shown lossily.
fn command_text(command: &[OsString]) -> String {
    command
        .iter()
        .map(|a| a.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Where `--from` reads: a regular file directly (reads of a regular file
/// do not block indefinitely), anything else (stdin, a FIFO, a device)
/// through a reader thread.
enum Source {
    Regular(File),
    Pumped(Pump),
}

fn open_source(path: &Path, ctx: &Context) -> Result<Source, Failure> {
    let cancel = &*ctx.cancel;
    let failed = |e: io::Error| {
        Failure::Other(format!(
            "cannot open the payload file {}: {e}; check the path given to --from (use `-` for stdin)",
            path.display()
        ))
    };
    let pump = if path.as_os_str() == "-" {
        if io::stdin().is_terminal() && !ctx.quiet {
            // Otherwise the refresh seems to hang on a prompt-less terminal.
            errln!(
                "snapcache: reading the payload from stdin (the terminal); end it with Ctrl-D (Ctrl-Z then Enter on Windows), or Ctrl-C to cancel"
            );
        }
        Pump::start("stdin", || Ok(io::stdin()))
    } else {
        // Opening a FIFO blocks until a writer appears: open without
        // blocking first, and keep the file only when it is regular.
        let file = open_nonblocking(path).map_err(failed)?;
        let meta = file.metadata().map_err(failed)?;
        if meta.is_file() {
            return Ok(Source::Regular(
                reopen_blocking(file, path).map_err(failed)?,
            ));
        }
        if meta.is_dir() {
            return Err(failed(io::Error::other("it is a directory")));
        }
        drop(file);
        let owned = path.to_path_buf();
        Pump::start("payload", move || File::open(owned))
    }
    .map_err(failed)?;
    let mut pump = pump;
    loop {
        if cancel.load(Ordering::Relaxed) {
            return Err(Failure::Store(Error::Interrupted {
                during: "opening the payload file",
            }));
        }
        match pump.next(TICK) {
            Event::Opened => return Ok(Source::Pumped(pump)),
            Event::Failed(e) => return Err(failed(e)),
            Event::Idle => {}
            // The thread always reports `Opened` first.
            Event::Data(_) | Event::End => return Ok(Source::Pumped(pump)),
        }
    }
}

#[cfg(unix)]
fn open_nonblocking(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let nonblock = i32::try_from(rustix::fs::OFlags::NONBLOCK.bits()).unwrap_or(0);
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nonblock)
        .open(path)
}

#[cfg(not(unix))]
fn open_nonblocking(path: &Path) -> io::Result<File> {
    File::open(path)
}

/// A regular file opened without blocking, made blocking again (O_NONBLOCK
/// has no effect on regular files on Linux, but other systems may differ).
#[cfg(unix)]
fn reopen_blocking(file: File, _path: &Path) -> io::Result<File> {
    let flags = rustix::fs::fcntl_getfl(&file)?;
    rustix::fs::fcntl_setfl(&file, flags - rustix::fs::OFlags::NONBLOCK)?;
    Ok(file)
}

#[cfg(not(unix))]
fn reopen_blocking(file: File, _path: &Path) -> io::Result<File> {
    Ok(file)
}

/// Copies a pumped source into the sink, stopping at once on a cancel.
fn copy_pumped(
    pump: &mut Pump,
    sink: &mut PayloadSink<'_>,
    cancel: &AtomicBool,
    mut progress: Progress,
) -> Result<(), SourceError> {
    loop {
        if cancel.load(Ordering::Relaxed) {
            // The store sees the flag and reports the interruption.
            return Err("interrupted".into());
        }
        match pump.next(TICK) {
            Event::Data(bytes) => {
                sink.write_all(&bytes)?;
                progress.add(bytes.len());
            }
            Event::End => return Ok(()),
            Event::Failed(e) => return Err(format!("reading the payload failed: {e}").into()),
            Event::Opened | Event::Idle => progress.tick(),
        }
    }
}

/// Runs `command`, streaming its stdout into the sink. Its stderr is kept
/// (the last 2 KiB) for the error message. A cancel (Ctrl-C) kills it; so
/// does a background process of it that keeps stdout open past
/// [`EXEC_OUTPUT_GRACE`] after the command exited.
fn run_command(
    command: &[OsString],
    sink: &mut PayloadSink<'_>,
    cancel: &Arc<AtomicBool>,
    progress: Progress,
) -> Result<(), SourceError> {
    let (program, args) = command.split_first().ok_or("--exec needs a command")?;
    let text = command_text(command);
    let mut command_builder = Command::new(program);
    command_builder
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // Its own process group: on cancel the whole group is killed, so no
    // grandchild keeps running (a `setsid` one escapes; see below).
    #[cfg(unix)]
    std::os::unix::process::CommandExt::process_group(&mut command_builder, 0);
    let mut child = command_builder
        .spawn()
        .map_err(|e| spawn_failure(program, &e))?;
    let result = supervise(&mut child, &text, sink, cancel, progress);
    if result.is_err() {
        kill_tree(&mut child);
    }
    result
}

/// The loop of [`run_command`]: the caller kills the command on error.
fn supervise(
    child: &mut Child,
    text: &str,
    sink: &mut PayloadSink<'_>,
    cancel: &AtomicBool,
    mut progress: Progress,
) -> Result<(), SourceError> {
    let stdout = child.stdout.take().ok_or("no stdout pipe")?;
    let mut stdout = Pump::start("exec-stdout", move || Ok(stdout))?;
    let stderr = StderrTail::start(child.stderr.take())?;
    let mut exited: Option<(ExitStatus, Instant)> = None;
    let mut stdout_open = true;
    // Polls for the exit after stdout closed: 1 ms doubling to a tick, so a
    // command that exits right after closing stdout costs no full tick.
    let mut exit_poll = Duration::from_millis(1);
    loop {
        if cancel.load(Ordering::Relaxed) {
            // The store sees the flag and reports the interruption.
            return Err("interrupted".into());
        }
        if exited.is_none() {
            exited = child.try_wait()?.map(|status| (status, Instant::now()));
        }
        match (exited, stdout_open) {
            (Some(_), false) => break,
            (Some((status, at)), true) if at.elapsed() >= EXEC_OUTPUT_GRACE => {
                return Err(format!(
                    "`{text}` {}, but a background process it started still held its stdout open {} s later; killed the command's process group and published nothing. Make background processes of the command redirect their output (e.g. `daemon >/dev/null 2>&1 &`)",
                    describe_exit(status),
                    EXEC_OUTPUT_GRACE.as_secs_f64()
                )
                .into());
            }
            (None, false) => {
                // stdout closed, the command still runs: wait for its exit.
                std::thread::sleep(exit_poll);
                exit_poll = (exit_poll * 2).min(TICK);
                continue;
            }
            _ => {}
        }
        match stdout.next(TICK) {
            Event::Data(bytes) => {
                sink.write_all(&bytes)?;
                progress.add(bytes.len());
            }
            Event::End => stdout_open = false,
            Event::Failed(e) => {
                return Err(format!("reading the output of `{text}` failed: {e}").into());
            }
            Event::Opened | Event::Idle => progress.tick(),
        }
    }
    // Erase the progress line before any error message about the exit.
    drop(progress);
    let (status, exited_at) = exited.ok_or("the command's exit status is unknown")?;
    if status.success() {
        return Ok(());
    }
    // Quote stderr, waiting for its end no longer than the grace allows.
    let tail = stderr.text(exited_at + EXEC_OUTPUT_GRACE, cancel);
    let tail = if tail.is_empty() {
        "(no stderr output)".to_string()
    } else {
        tail
    };
    Err(format!(
        "`{text}` {}; its stderr ended with:\n{tail}",
        describe_exit(status)
    )
    .into())
}

/// "exited with status 3", "was killed by signal 9 (SIGKILL)".
pub fn describe_exit(status: ExitStatus) -> String {
    if let Some(code) = status.code() {
        return format!("exited with status {code}");
    }
    #[cfg(unix)]
    if let Some(signal) = std::os::unix::process::ExitStatusExt::signal(&status) {
        // rustix has no name to display, only a `Debug` that varies by
        // version (`"Signal::KILL"`, `KILL`): its last word, as `SIGKILL`.
        let name = rustix::process::Signal::from_named_raw(signal)
            .map(|s| {
                let debug = format!("{s:?}");
                let debug = debug.trim_matches('"');
                let bare = debug.rsplit("::").next().unwrap_or(debug);
                format!(" (SIG{})", bare.trim_start_matches("SIG"))
            })
            .unwrap_or_default();
        return format!("was killed by signal {signal}{name}");
    }
    format!("ended ({status})")
}

/// Why a command could not be started, with what to do about it.
fn spawn_failure(program: &std::ffi::OsStr, e: &io::Error) -> String {
    let name = program.to_string_lossy();
    let has_path = Path::new(program).components().count() > 1;
    let hint = match e.kind() {
        io::ErrorKind::NotFound if has_path => "no such file; check the path".to_string(),
        io::ErrorKind::NotFound => "no such command: is it installed and on PATH?".to_string(),
        io::ErrorKind::PermissionDenied => format!(
            "it is not executable (or a directory on the way is not searchable); make it executable (`chmod +x {name}`) or run it through its interpreter (e.g. `--exec sh {name}`)"
        ),
        _ => e.to_string(),
    };
    format!("could not start `{name}`: {hint}")
}

/// The last [`STDERR_TAIL`] bytes of a command's stderr, read on a thread.
struct StderrTail {
    tail: Arc<Mutex<Vec<u8>>>,
    done: Receiver<()>,
}

impl StderrTail {
    fn start(pipe: Option<ChildStderr>) -> io::Result<StderrTail> {
        let tail = Arc::new(Mutex::new(Vec::new()));
        let (tx, done) = mpsc::channel();
        let shared = tail.clone();
        std::thread::Builder::new()
            .name("exec-stderr".into())
            .spawn(move || {
                if let Some(mut pipe) = pipe {
                    let mut buf = [0u8; 8192];
                    loop {
                        match pipe.read(&mut buf) {
                            Ok(0) => break,
                            Ok(n) => {
                                if let Ok(mut t) = shared.lock() {
                                    t.extend_from_slice(buf.get(..n).unwrap_or_default());
                                    let excess = t.len().saturating_sub(STDERR_TAIL);
                                    t.drain(..excess);
                                }
                            }
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                            Err(_) => break,
                        }
                    }
                }
                let _ = tx.send(());
            })?;
        Ok(StderrTail { tail, done })
    }

    /// The tail as text, once stderr ended or `deadline` passed (or a cancel).
    fn text(&self, deadline: Instant, cancel: &AtomicBool) -> String {
        while !cancel.load(Ordering::Relaxed) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match self.done.recv_timeout(left.min(TICK)) {
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                _ => break,
            }
        }
        let bytes = self.tail.lock().map(|t| t.clone()).unwrap_or_default();
        String::from_utf8_lossy(&bytes).trim().to_string()
    }
}

/// Kills the command and, on Unix, its whole process group; reaps it if it
/// is already gone (never waits).
fn kill_tree(child: &mut Child) {
    #[cfg(unix)]
    if let Some(pgid) = i32::try_from(child.id())
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    {
        let _ = rustix::process::kill_process_group(pgid, rustix::process::Signal::KILL);
    }
    let _ = child.kill();
    let _ = child.try_wait();
}

fn print_outcome(ctx: &Context, outcome: &PublishOutcome) {
    if ctx.json {
        print_json(outcome);
        return;
    }
    let what = if outcome.skipped {
        "skipped (last refresh is younger than --max-age)"
    } else if outcome.changed {
        "published"
    } else {
        "unchanged (same content as the current snapshot)"
    };
    outln!(
        "{what}: generation {} is current, {} ({} bytes), blake3 {}, store {}",
        outcome.generation,
        human_bytes(outcome.bytes),
        outcome.bytes,
        short_hash(&outcome.hash),
        ctx.options.root().display()
    );
}

#[cfg(test)]
mod size_tests {
    use super::parse_size;

    #[test]
    fn sizes_take_binary_suffixes_and_refuse_the_rest() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64M"), Ok(64 << 20));
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("1 gb"), Ok(1 << 30));
        assert_eq!(parse_size("2k"), Ok(2048));
        for bad in ["", "0", "M", "1.5M", "-1", "12X", "18446744073709551615T"] {
            assert!(parse_size(bad).is_err(), "{bad:?}");
        }
    }
}
