//! `snapcache show`: the snapshot bytes on stdout, verified first.
//!
//! The whole snapshot verifies (streamed through the hasher in bounded
//! chunks) before a single byte goes to stdout; then the verified file is
//! copied from the same descriptor (see `VerifiedSnapshot`): by the kernel
//! into a pipe on Linux (`sendfile`), through a 256 KiB buffer elsewhere,
//! so a 256 MiB snapshot is shown in a few MiB of memory.

use snapcache::Store;

use crate::progress::Progress;
use crate::{Context, Failure};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Show this retained generation instead of the current one
    #[arg(long, value_name = "N", conflicts_with = "fallback")]
    generation: Option<u64>,
    /// If the current snapshot is damaged, serve the newest retained one that verifies (with a warning)
    #[arg(long)]
    fallback: bool,
}

pub fn run(ctx: &Context, args: &Args) -> Result<(), Failure> {
    let store = Store::open(ctx.options.clone())?;
    let snapshot = match (args.generation, args.fallback) {
        (Some(n), _) => store.open_generation(n)?,
        (None, true) => {
            let (snapshot, damage) = store.open_with_fallback()?;
            if let Some(damage) = damage {
                // Always said, even with --quiet: the caller gets older data.
                crate::output::errln!(
                    "snapcache: warning: served generation {} instead of the current one, which is damaged: {damage}",
                    snapshot.generation
                );
            }
            snapshot
        }
        (None, false) => store.open_current()?,
    };
    let mut progress = Progress::new(ctx, "written");
    let report = |n: u64| progress.add(usize::try_from(n).unwrap_or(usize::MAX));
    // Nothing was printed to stdout before, so its own buffer is empty and
    // a second handle on its descriptor can write first.
    let written = match stdout_file() {
        Some(out) => snapshot.copy_to_file_with(&out, report),
        None => snapshot.copy_to_with(&mut std::io::stdout().lock(), report),
    };
    drop(progress);
    match written {
        // A closed pipe (`snapcache show | head`) is the reader's choice.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(Failure::Other(format!(
            "could not write the snapshot to stdout: {e}"
        ))),
        Ok(_) => Ok(()),
    }
}

/// Standard output as a `File` (a second descriptor for it), so that the
/// copy can let the kernel move the bytes (`sendfile` into a pipe). `None`
/// where it is not a plain descriptor worth handing over: on Windows std's
/// console handling is kept, and a closed stdout is left to the ordinary
/// write to report.
fn stdout_file() -> Option<std::fs::File> {
    #[cfg(unix)]
    {
        use std::os::fd::AsFd;
        std::io::stdout()
            .as_fd()
            .try_clone_to_owned()
            .ok()
            .map(std::fs::File::from)
    }
    #[cfg(not(unix))]
    {
        None
    }
}
