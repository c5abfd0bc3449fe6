//! `snapcache refresh`: publish from a file, stdin or a command.

use std::fs::File;
use std::io::{self, Read};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use snapcache::{PayloadSink, PublishOptions, PublishOutcome, SourceError, Store};

use crate::output::{human_bytes, print_json, short_hash};
use crate::{Context, Failure, LockTimeoutArg};

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["from", "exec"])))]
pub struct Args {
    /// Read the payload from this file (`-` for stdin)
    #[arg(long, value_name = "PATH|-")]
    from: Option<PathBuf>,
    /// Run CMD under the lock and publish its stdout (put --exec last: everything after it is CMD's)
    #[arg(long, value_name = "CMD [ARG]...", num_args = 1.., allow_hyphen_values = true)]
    exec: Option<Vec<String>>,
    /// Skip when the last successful refresh is younger than this (e.g. 30s, 10m, 1h)
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    max_age: Option<Duration>,
    /// Accept any bytes instead of requiring well-formed JSON
    #[arg(long)]
    raw: bool,
    /// A note recorded with the new generation (default: the source)
    #[arg(long, value_name = "TEXT")]
    note: Option<String>,
    #[command(flatten)]
    lock_timeout: LockTimeoutArg,
}

pub fn run(ctx: &Context, args: &Args) -> Result<(), Failure> {
    let options = args.lock_timeout.apply(&ctx.options)?;
    let mut publish = PublishOptions::default().raw(args.raw);
    publish.max_age = args.max_age;
    let outcome = match (&args.from, &args.exec) {
        (Some(path), _) => {
            publish.note = Some(
                args.note
                    .clone()
                    .unwrap_or_else(|| format!("from {}", path.display())),
            );
            // Open before taking the lock: a typo should not wait for a writer.
            let reader = open_source(path)?;
            let store = Store::open(options)?;
            store.publish_reader(reader, &publish)?
        }
        (None, Some(command)) => {
            publish.note = Some(
                args.note
                    .clone()
                    .unwrap_or_else(|| format!("exec {}", command.join(" "))),
            );
            let store = Store::open(
                options.purpose(format!("snapcache refresh --exec {}", command.join(" "))),
            )?;
            let cancel = ctx.cancel.clone();
            store.publish_with(&publish, |sink| run_command(command, sink, &cancel))?
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

fn open_source(path: &PathBuf) -> Result<Box<dyn Read + Send>, Failure> {
    if path.as_os_str() == "-" {
        return Ok(Box::new(io::stdin()));
    }
    let file = File::open(path).map_err(|e| {
        Failure::Other(format!(
            "cannot open the payload file {}: {e}; check the path given to --from (use `-` for stdin)",
            path.display()
        ))
    })?;
    Ok(Box::new(file))
}

/// Runs `command`, streaming its stdout into the sink. Its stderr is kept
/// (the last 2 KiB) for the error message. A cancel (Ctrl-C) kills it.
fn run_command(
    command: &[String],
    sink: &mut PayloadSink<'_>,
    cancel: &Arc<AtomicBool>,
) -> Result<(), SourceError> {
    let (program, args) = command.split_first().ok_or("--exec needs a command")?;
    let mut command_builder = Command::new(program);
    command_builder
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // Its own process group: on cancel the whole group is killed, so no
    // grandchild keeps the stdout pipe open and the read ends at once.
    #[cfg(unix)]
    std::os::unix::process::CommandExt::process_group(&mut command_builder, 0);
    let mut child = command_builder
        .spawn()
        .map_err(|e| format!("could not start `{program}`: {e} (is it installed and on PATH?)"))?;
    let mut stdout = child.stdout.take().ok_or("no stdout pipe")?;
    let mut stderr = child.stderr.take().ok_or("no stderr pipe")?;
    let stderr_tail = std::thread::spawn(move || {
        let mut all = Vec::new();
        let _ = stderr.read_to_end(&mut all);
        let start = all.len().saturating_sub(2048);
        String::from_utf8_lossy(&all[start..]).trim().to_string()
    });
    let child = Arc::new(Mutex::new(child));
    let done = Arc::new(AtomicBool::new(false));
    // A watchdog, because the copy below may block in read() when the
    // command is silent: on cancel it kills the command, which ends the read.
    let watchdog = {
        let (child, done, cancel) = (child.clone(), done.clone(), cancel.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                if cancel.load(Ordering::Relaxed) {
                    if let Ok(mut c) = child.lock() {
                        kill_tree(&mut c);
                    }
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let copied = io::copy(
        &mut io::BufReader::with_capacity(256 * 1024, &mut stdout),
        sink,
    );
    if copied.is_err() {
        if let Ok(mut c) = child.lock() {
            kill_tree(&mut c);
        }
    }
    drop(stdout);
    let status = child.lock().map_err(|_| "lock poisoned")?.wait();
    done.store(true, Ordering::Relaxed);
    let _ = watchdog.join();
    let tail = stderr_tail.join().unwrap_or_default();
    copied?;
    let status = status?;
    if !status.success() {
        let tail = if tail.is_empty() {
            "(no stderr output)".to_string()
        } else {
            tail
        };
        return Err(format!(
            "`{}` exited with {status}; its stderr ended with:\n{tail}",
            command.join(" ")
        )
        .into());
    }
    Ok(())
}

/// Kills the command and, on Unix, its whole process group.
fn kill_tree(child: &mut std::process::Child) {
    #[cfg(unix)]
    if let Some(pgid) = i32::try_from(child.id())
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    {
        let _ = rustix::process::kill_process_group(pgid, rustix::process::Signal::KILL);
    }
    let _ = child.kill();
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
    println!(
        "{what}: generation {} is current, {} ({} bytes), blake3 {}, store {}",
        outcome.generation,
        human_bytes(outcome.bytes),
        outcome.bytes,
        short_hash(&outcome.hash),
        ctx.options.root().display()
    );
}
