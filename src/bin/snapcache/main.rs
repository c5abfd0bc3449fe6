//! `snapcache`: the command-line face of the snapshot store.
//!
//! This file parses arguments, sets up logging (the only place that does),
//! wires Ctrl-C to the library's cancel flag and maps errors to exit codes:
//! 0 success, 2 usage, 65 payload rejected, 75 lock timeout, 130 interrupted,
//! 1 anything else. Each subcommand lives in its own file.

mod clear;
mod diff;
mod feedback;
mod forget;
mod gc;
mod generate;
mod help;
mod history;
mod logging;
mod output;
mod pin;
mod progress;
mod pump;
mod refresh;
mod rollback;
mod show;
mod status;
mod usage;
mod verify;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use clap::{Parser, Subcommand};
use logging::ColorWhen;
use snapcache::{BackendChoice, Error, Hint, LockBudget, LockWait, StoreOptions};

/// A content-addressed, versioned snapshot store for a CLI's metadata cache.
#[derive(Debug, Parser)]
#[command(
    name = "snapcache",
    version,
    about,
    long_about = None,
    after_long_help = help::AFTER_LONG_HELP,
    subcommand_help_heading = "Commands"
)]
pub struct Cli {
    /// Store root, a directory or s3://BUCKET/PREFIX (builds with the s3 feature) [default: $SNAPCACHE_DIR, else $XDG_CACHE_HOME/snapcache, else ~/.cache/snapcache]
    #[arg(long, global = true, value_name = "DIR|URL", help_heading = help::GLOBAL)]
    store: Option<PathBuf>,
    /// Print one JSON object on stdout instead of text (errors too; `show` still prints the snapshot itself)
    #[arg(long, global = true, help_heading = help::GLOBAL)]
    json: bool,
    /// Print nothing on stderr but errors (no lock-wait messages, no progress)
    #[arg(short, long, global = true, help_heading = help::GLOBAL)]
    quiet: bool,
    /// Writer lock backend: auto (lease on NFS/SMB/9p/FUSE, advisory elsewhere), advisory or lease [default: $SNAPCACHE_LOCK_BACKEND, else auto]
    #[arg(long, global = true, value_name = "auto|advisory|lease", help_heading = help::GLOBAL)]
    lock_backend: Option<String>,
    /// Library log lines on stderr (-v info, -vv debug, -vvv trace); SNAPCACHE_LOG or RUST_LOG override
    #[arg(short, long, global = true, action = clap::ArgAction::Count, help_heading = help::GLOBAL)]
    verbose: u8,
    /// Colour on stderr: auto (only on a terminal and without NO_COLOR), always or never
    #[arg(long, global = true, value_name = "WHEN", default_value = "auto", help_heading = help::GLOBAL)]
    color: ColorWhen,
    #[command(subcommand)]
    command: Command,
}

// `defer`: a subcommand's arguments are defined only when clap builds it,
// that is when the command line names it (or help, completions and the man
// page walk the whole tree), so a run pays for its own subcommand only.
#[derive(Debug, Subcommand)]
#[command(defer = true)]
enum Command {
    /// Publish a new snapshot from a file, stdin or a command's stdout
    Refresh(refresh::Args),
    /// Write the current (or a given) snapshot to stdout, byte for byte
    Show(show::Args),
    /// Current generation, hash, size, times and lock state
    Status,
    /// Retained generations, the current and the pinned ones marked
    History,
    /// Make an earlier retained generation current
    Rollback(rollback::Args),
    /// Remove temp files and unreferenced snapshots
    Gc(gc::Args),
    /// Drop specific generations (never the current or a pinned one) and their snapshots
    Forget(forget::Args),
    /// Keep generations through retention and gc until unpinned
    ///
    /// A pinned generation survives every publish's retention (SNAPCACHE_KEEP
    /// counts only unpinned generations besides the current one), `gc --keep`
    /// and `gc --older-than`; `forget` refuses it and `history` marks it.
    /// The current generation can be pinned: it stays once newer publishes
    /// push it out of the kept ones. Rolling back to a pinned generation works
    /// as to any other; `clear` removes pinned generations too.
    ///
    /// At most 100 generations can be pinned (retention never keeps more than
    /// 100 besides the current one; the pins come first). Only a retained
    /// generation can be pinned: any other N is an error (exit 1) listing the
    /// retained ones, and nothing changes unless every N is retained. Pinning
    /// a pinned generation succeeds and changes nothing.
    ///
    /// JSON (--json): {"generations": [N...], "changed": bool, "pinned": [every
    /// pinned generation afterwards]}.
    Pin(pin::Args),
    /// Release pinned generations to retention and gc again
    ///
    /// The next publish (or `gc --keep` / `--older-than`) may then drop them
    /// like any other generation. Unpinning a generation that is not pinned
    /// succeeds and changes nothing; an N that is not retained is an error
    /// (exit 1).
    ///
    /// JSON (--json): {"generations": [N...], "changed": bool, "pinned": [every
    /// pinned generation afterwards]}.
    Unpin(pin::Args),
    /// Check the pointer and every retained snapshot; change nothing
    Verify,
    /// Remove every generation and snapshot (the store stays, empty)
    Clear(clear::Args),
    /// What changed between two generations [default: the previous one and the current one]
    Diff(diff::Args),
    /// Print a shell completion script (bash, zsh, fish, powershell, elvish)
    Completions(generate::CompletionsArgs),
    /// Print the man page (roff), e.g. `snapcache man | man -l -`
    Man,
}

/// Exit codes of the CLI contract.
pub mod exit {
    pub const FAILURE: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const PAYLOAD_REJECTED: u8 = 65;
    pub const LOCK_TIMEOUT: u8 = 75;
    pub const INTERRUPTED: u8 = 130;
}

/// What every subcommand gets.
pub struct Context {
    pub options: StoreOptions,
    pub json: bool,
    pub quiet: bool,
    /// Whether stderr gets escape codes (`--color`).
    pub color: bool,
    pub cancel: Arc<AtomicBool>,
}

/// A CLI-level failure: a library error or a usage problem found late.
#[derive(Debug)]
pub enum Failure {
    Store(Error),
    Usage(String),
    /// Any other failure found by the CLI itself (exit 1).
    Other(String),
    /// Already reported (e.g. `verify` listed its problems); just exit.
    Reported(u8),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure::Store(e)
    }
}

fn main() -> ExitCode {
    let cli = match usage::parse() {
        Ok(cli) => cli,
        Err(code) => return ExitCode::from(code),
    };
    logging::init(cli.verbose, cli.quiet, cli.color.enabled());
    let cancel = Arc::new(AtomicBool::new(false));
    install_signal_handlers(&cancel);
    // Generated texts need no store (nor a home directory).
    let generated = match &cli.command {
        Command::Completions(args) => Some(generate::completions(args)),
        Command::Man => Some(generate::man()),
        _ => None,
    };
    let result = match generated {
        Some(result) => result,
        None => build_context(&cli, cancel).and_then(|ctx| run(&cli, &ctx)),
    }
    .and_then(|()| match output::stdout_error() {
        // The result was not (fully) delivered: not a success.
        Some(e) => Err(Failure::Other(format!(
            "could not write the result to stdout: {e}; check where stdout goes (a full disk?)"
        ))),
        None => Ok(()),
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => ExitCode::from(report(failure, &cli)),
    }
}

fn run(cli: &Cli, ctx: &Context) -> Result<(), Failure> {
    match &cli.command {
        Command::Refresh(args) => refresh::run(ctx, args),
        Command::Show(args) => show::run(ctx, args),
        Command::Status => status::run(ctx),
        Command::History => history::run(ctx),
        Command::Rollback(args) => rollback::run(ctx, args),
        Command::Gc(args) => gc::run(ctx, args),
        Command::Forget(args) => forget::run(ctx, args),
        Command::Pin(args) => pin::run(ctx, args, true),
        Command::Unpin(args) => pin::run(ctx, args, false),
        Command::Verify => verify::run(ctx),
        Command::Diff(args) => diff::run(ctx, args),
        Command::Clear(args) => clear::run(ctx, args),
        // Handled in main before a store is resolved.
        Command::Completions(_) | Command::Man => Ok(()),
    }
}

fn build_context(cli: &Cli, cancel: Arc<AtomicBool>) -> Result<Context, Failure> {
    let root = match &cli.store {
        Some(dir) => dir.clone(),
        None => StoreOptions::default_root().ok_or_else(|| {
            // Say which were set but ignored, or the advice reads as if
            // they were not set at all.
            let relative: Vec<String> = ["XDG_CACHE_HOME", "HOME"]
                .into_iter()
                .filter_map(|name| {
                    let value = std::env::var_os(name).filter(|v| !v.is_empty())?;
                    let shown = value.to_string_lossy();
                    Some(format!("{name}={shown:?}"))
                })
                .collect();
            let ignored = match relative.is_empty() {
                true => String::new(),
                false => format!(
                    " ({} ignored: not an absolute path)",
                    relative.join(" and ")
                ),
            };
            Failure::Usage(format!(
                "no store location: set --store DIR, SNAPCACHE_DIR, or an absolute XDG_CACHE_HOME or HOME{ignored}"
            ))
        })?,
    };
    let mut options = StoreOptions::new(root).cancel_flag(cancel.clone());
    if let Some(keep) = env_value("SNAPCACHE_KEEP")? {
        let n: usize = keep
            .trim()
            .parse()
            .ok()
            .filter(|n| (1..=100).contains(n))
            .ok_or_else(|| {
                Failure::Usage(format!(
                    "SNAPCACHE_KEEP={keep:?} is not a whole number from 1 to 100"
                ))
            })?;
        options = options.keep(n);
    }
    if let Some(list) = env_value("SNAPCACHE_TRUSTED_OWNERS")? {
        for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            options = options.trust_owner_named(entry).map_err(|_| {
                Failure::Usage(format!(
                    "SNAPCACHE_TRUSTED_OWNERS names {entry:?}, which is neither a uid nor a user in /etc/passwd; give user names or uids, separated by commas"
                ))
            })?;
        }
    }
    let backend_text = match cli.lock_backend.clone() {
        Some(v) => Some((v, "--lock-backend")),
        None => env_value("SNAPCACHE_LOCK_BACKEND")?.map(|v| (v, "SNAPCACHE_LOCK_BACKEND")),
    };
    if let Some((text, from)) = backend_text {
        let choice = BackendChoice::parse(&text).ok_or_else(|| {
            Failure::Usage(format!(
                "{from} {text:?} is not a lock backend: use auto, advisory or lease"
            ))
        })?;
        options = options.lock_backend(choice);
    }
    if let Some(text) = env_value("SNAPCACHE_LEASE_SECS")? {
        let ttl = text
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|s| LEASE_SECS.contains(s))
            .and_then(|s| Duration::try_from_secs_f64(s).ok())
            .ok_or_else(|| {
                Failure::Usage(format!(
                    "SNAPCACHE_LEASE_SECS={text:?} is not a number of seconds from {} to {}",
                    LEASE_SECS.start(),
                    LEASE_SECS.end()
                ))
            })?;
        options = options.lease_ttl(ttl);
    }
    if !cli.quiet {
        options = options.lock_observer(Arc::new(feedback::StderrFeedback::new()));
    }
    Ok(Context {
        options,
        json: cli.json,
        quiet: cli.quiet,
        color: cli.color.enabled(),
        cancel,
    })
}

// `--lock-timeout`, shared by the commands that write. A plain comment, not
// a doc comment: clap takes a flattened struct's doc comment for the
// command's own description, and every writing command's `--help` (and the
// man page) showed this line instead of what the command does.
#[derive(Debug, clap::Args)]
pub struct LockTimeoutArg {
    /// Seconds to wait for the writer lock (0: try once), or `infinite` [default: $SNAPCACHE_LOCK_TIMEOUT, else 600]
    // A negative number is a value, so that it gets the message naming the
    // range instead of clap's "unexpected argument '-1'".
    #[arg(long, value_name = "SECS|infinite", allow_negative_numbers = true)]
    lock_timeout: Option<String>,
}

impl LockTimeoutArg {
    /// The store options with the lock budget resolved (flag > env > default).
    pub fn apply(&self, options: &StoreOptions) -> Result<StoreOptions, Failure> {
        Ok(options
            .clone()
            .lock_budget(lock_budget(self.lock_timeout.as_deref())?))
    }
}

/// Accepted `SNAPCACHE_LEASE_SECS` (seconds): from the library's minimum
/// lease to one day.
pub const LEASE_SECS: std::ops::RangeInclusive<f64> = 0.3..=86_400.0;
/// Longest finite `--lock-timeout` / `SNAPCACHE_LOCK_TIMEOUT` (about 31
/// years); longer waits are spelled `infinite`.
pub const MAX_LOCK_TIMEOUT_SECS: f64 = 1e9;

/// A non-empty environment variable; one that is not UTF-8 is a usage
/// error (silently ignoring it would apply a default the user did not ask for).
pub(crate) fn env_value(name: &str) -> Result<Option<String>, Failure> {
    match std::env::var(name) {
        Ok(v) if v.is_empty() => Ok(None),
        Ok(v) => Ok(Some(v)),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(v)) => Err(Failure::Usage(format!(
            "{name}={:?} is not valid UTF-8; unset it or give a plain value",
            v.to_string_lossy()
        ))),
    }
}

/// Parses a lock timeout: seconds from 0 (try once) to
/// [`MAX_LOCK_TIMEOUT_SECS`], or `infinite`.
fn parse_lock_wait(text: &str) -> Option<LockWait> {
    let wait = LockWait::parse(text)?;
    match wait.budget() {
        Some(b) if b.as_secs_f64() > MAX_LOCK_TIMEOUT_SECS => None,
        _ => Some(wait),
    }
}

/// Resolves the lock budget: `--lock-timeout`, else `$SNAPCACHE_LOCK_TIMEOUT`, else 600 s.
fn lock_budget(flag: Option<&str>) -> Result<LockBudget, Failure> {
    let parse = |text: &str, from: &str| {
        parse_lock_wait(text).ok_or_else(|| {
            Failure::Usage(format!(
                "{from} {text:?} is not a lock timeout: give seconds from 0 (try once) to {MAX_LOCK_TIMEOUT_SECS:.0} (e.g. 30 or 1.5), or `infinite`"
            ))
        })
    };
    if let Some(text) = flag {
        return Ok(LockBudget::labelled(
            parse(text, "--lock-timeout")?,
            "--lock-timeout",
        ));
    }
    if let Some(text) = env_value("SNAPCACHE_LOCK_TIMEOUT")? {
        return Ok(LockBudget::labelled(
            parse(&text, "SNAPCACHE_LOCK_TIMEOUT")?,
            "SNAPCACHE_LOCK_TIMEOUT",
        ));
    }
    Ok(LockBudget::default())
}

fn report(failure: Failure, cli: &Cli) -> u8 {
    let json = cli.json;
    let (code, kind, message) = match failure {
        Failure::Reported(code) => return code,
        Failure::Usage(message) => (exit::USAGE, "usage", message),
        Failure::Other(message) => (exit::FAILURE, "error", message),
        Failure::Store(e) => {
            let (code, kind) = if e.is_payload_rejected() {
                (exit::PAYLOAD_REJECTED, "payload-rejected")
            } else if e.is_lock_timeout() {
                (exit::LOCK_TIMEOUT, "lock-timeout")
            } else if e.is_interrupted() {
                (exit::INTERRUPTED, "interrupted")
            } else if matches!(e, Error::UnsupportedVersion { .. }) {
                // Not damage: a newer snapcache wrote it, and upgrading
                // is the fix (a rollback or refresh would not help).
                (exit::FAILURE, "unsupported-version")
            } else if e.is_corrupt() {
                (exit::FAILURE, "corrupt-store")
            } else if matches!(e, Error::NoStore { .. }) {
                (exit::FAILURE, "no-store")
            } else if e.is_untrusted() {
                (exit::FAILURE, "untrusted-path")
            } else if e.is_unexpected_file_type() {
                (exit::FAILURE, "unexpected-file-type")
            } else if e.is_not_a_store() {
                (exit::FAILURE, "not-a-store")
            } else if e.is_commit_conflict() {
                (exit::FAILURE, "commit-conflict")
            } else if e.is_pinned() {
                (exit::FAILURE, "pinned")
            } else {
                (exit::FAILURE, "error")
            };
            (code, kind, with_cli_hint(&e, cli))
        }
    };
    output::errln!("snapcache: error: {message}");
    if json {
        output::print_json(&serde_json::json!({
            "error": { "kind": kind, "message": message, "exit_code": code }
        }));
    }
    code
}

/// The library's message plus what to run: library messages name no CLI
/// commands, flags or variables; the error's structured [`Hint`] says which
/// of ours is the way out.
///
/// One CLI-only refinement: a store root that is one of the user's files
/// is called that (and never offered for removal).
fn with_cli_hint(e: &Error, cli: &Cli) -> String {
    let named = store_root_named(cli);
    let root_is_a_file = |path: &std::path::Path| {
        named.as_ref().is_some_and(|(root, _)| root == path) && !path.is_dir()
    };
    match e {
        Error::UnexpectedFileType { path, .. } | Error::NotAStore { root: path, .. }
            if root_is_a_file(path) =>
        {
            let from = named.as_ref().map_or("--store", |(_, from)| from);
            let what = match e {
                Error::UnexpectedFileType { found, .. } => found,
                _ => "something else",
            };
            format!(
                "`{from}` points at a file, not a store directory: {} is {what}, not a directory; nothing was read from it or written to it. Give a directory for the store (a new or empty one, or an existing store)",
                path.display()
            )
        }
        _ => match cli_hint(e) {
            Some(hint) => format!("{e}\nhint: {hint}"),
            None => e.to_string(),
        },
    }
}

/// The store root the user named and how (`--store` or `SNAPCACHE_DIR`).
fn store_root_named(cli: &Cli) -> Option<(PathBuf, &'static str)> {
    match &cli.store {
        Some(dir) => Some((dir.clone(), "--store")),
        None => std::env::var_os("SNAPCACHE_DIR")
            .filter(|v| !v.is_empty())
            .map(|v| (PathBuf::from(v), "SNAPCACHE_DIR")),
    }
}

fn cli_hint(e: &Error) -> Option<String> {
    if let Error::ObjectStoreUnsupported { .. } = e {
        return Some("this snapcache was built without object-store support: rebuild it with the s3 feature (`cargo install snapcache --features s3`), or give a directory with --store DIR or SNAPCACHE_DIR".into());
    }
    Some(match e.hint()? {
        Hint::PublishFirst => "run `snapcache refresh --from FILE` first, or point --store / SNAPCACHE_DIR at the store that holds the data".into(),
        Hint::Verify => "run `snapcache verify`, then `snapcache rollback` to an intact generation or `snapcache refresh` to publish a new one".into(),
        Hint::RepairPointer => match e {
            // An object's URL is no file `mv` can move: name the S3 tool's
            // copy and delete instead.
            Error::CorruptPointer { path, .. } if path.to_string_lossy().starts_with("s3://") => format!(
                "no generation can be verified through a damaged pointer: copy the snapshots/ objects first if you may need an old generation (a new history removes what the old one named); to start one, move the pointer aside with your S3 tool (e.g. `aws s3 mv {p} {p}.damaged`), then `snapcache refresh`",
                p = path.display()
            ),
            // A commit record (lease backend): moving it aside is the whole
            // fix, and the history is kept.
            Error::CorruptPointer { path, .. } if verify::commit_record(path).is_some() => {
                format!(
                    "move the damaged record aside: `mv {p} {p}.damaged`; the pointer and the history are kept",
                    p = path.display()
                )
            }
            Error::CorruptPointer { path, .. } => format!(
                "no generation can be verified through a damaged pointer: copy {s} first if you may need an old generation (a new history removes what the old one named); to start one: `mv {p} {p}.damaged`, then `snapcache refresh`",
                p = path.display(),
                s = path.with_file_name("snapshots").display()
            ),
            _ => "run `snapcache verify` to see which generations are intact".into(),
        },
        Hint::History => "run `snapcache history` to list the retained generations".into(),
        Hint::LockTimeout => "wait longer with --lock-timeout SECS (or `infinite`) or SNAPCACHE_LOCK_TIMEOUT, or see who holds the lock with `snapcache status`".into(),
        Hint::ChooseStore => match e {
            Error::Io { action, source, .. }
                if source.kind() == std::io::ErrorKind::Unsupported
                    && action.contains("lock the writer lock") =>
            {
                "`--lock-backend auto` (the default) or `lease` works without advisory locks; or choose another store with --store DIR or SNAPCACHE_DIR".into()
            }
            _ => "choose another store with --store DIR or SNAPCACHE_DIR".into(),
        },
        Hint::TrustOwner => match e {
            Error::OwnerNotTrusted {
                owner_uid,
                owner_name,
                ..
            } => format!(
                "if you trust that user's data, set SNAPCACHE_TRUSTED_OWNERS={} (user names or uids, comma-separated); otherwise choose a store of your own with --store DIR or SNAPCACHE_DIR",
                owner_name.clone().unwrap_or_else(|| owner_uid.to_string())
            ),
            _ => "choose another store with --store DIR or SNAPCACHE_DIR".into(),
        },
        // Not "run gc" alone: on a full disk with nothing unreferenced it
        // frees nothing, and a gc that drops generations must write a
        // pointer first.
        Hint::FreeSpace => "`snapcache verify` lists the reclaimable files that `snapcache gc` would remove; if there are none, space must be freed outside the store".into(),
        Hint::PublishRaw => "pass --raw to store bytes that are not JSON".into(),
        Hint::ClearStore => "`snapcache clear` starts a fresh history (copy the store's snapshots first if you need an old generation), then `snapcache refresh`".into(),
        // Where the limit in force came from: a limit set long ago in the
        // environment is easy to forget.
        Hint::RaiseLimit => match std::env::var("SNAPCACHE_MAX_SIZE") {
            Ok(v) if !v.is_empty() => format!(
                "the limit is --max-size, or else SNAPCACHE_MAX_SIZE (set to {v:?} in this environment): raise the one in force"
            ),
            _ => "the limit is --max-size (SNAPCACHE_MAX_SIZE is not set): raise it".into(),
        },
        Hint::Unpin => match e {
            Error::ForgetPinned { generation, .. } => format!(
                "run `snapcache unpin {generation}` first if it may go, then forget it"
            ),
            _ => "`snapcache history` marks the pinned generations; release one with `snapcache unpin N`".into(),
        },
        _ => return None,
    })
}

/// SIGINT/SIGTERM set the cancel flag: the library stops waiting or
/// streaming and releases the lock. A second signal exits at once. On
/// Windows (untested) the C runtime raises SIGINT for Ctrl-C, and signal-hook
/// registers there the same way.
fn install_signal_handlers(cancel: &Arc<AtomicBool>) {
    #[cfg(any(unix, windows))]
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        let _ = signal_hook::flag::register_conditional_shutdown(
            signal,
            exit::INTERRUPTED as i32,
            cancel.clone(),
        );
        let _ = signal_hook::flag::register(signal, cancel.clone());
    }
    // A file-size limit (`ulimit -f`) kills a process that writes past it
    // with SIGXFSZ, silently (exit 153, no message, a temp file left).
    // Caught instead, the write fails with EFBIG and is reported like a
    // full disk, with the path, and the temp file goes.
    #[cfg(unix)]
    let _ = signal_hook::flag::register(
        signal_hook::consts::SIGXFSZ,
        Arc::new(AtomicBool::new(false)),
    );
    #[cfg(not(any(unix, windows)))]
    let _ = cancel;
}
