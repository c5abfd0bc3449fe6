//! `snapcache clear`: remove every generation, under the writer lock.

use snapcache::Store;

use crate::output::{human_bytes, outln, print_json, warn_not_removed};
use crate::{Context, Failure, LockTimeoutArg};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    lock_timeout: LockTimeoutArg,
}

pub fn run(ctx: &Context, args: &Args) -> Result<(), Failure> {
    let options = args.lock_timeout.apply(&ctx.options)?;
    let report = Store::open(options)?.clear()?;
    warn_not_removed(ctx.quiet, &report.not_removed, "snapcache clear");
    if ctx.json {
        print_json(&report);
        return Ok(());
    }
    let was = match (report.previous_generation, report.pointer_damaged) {
        (Some(g), _) => format!("generation {g} was current"),
        // Not "nothing was current": a damaged pointer hides which
        // generation was, and saying none was would tell the user their
        // history had been empty.
        (None, true) => {
            "the pointer could not be read (damaged, or of a newer format), so which generation was current is unknown".to_string()
        }
        (None, false) => "nothing was current".to_string(),
    };
    outln!(
        "cleared: {was}; removed {} snapshot(s) and {} temp file(s), {} freed. The next refresh publishes a new generation",
        report.removed_snapshots,
        report.removed_temp_files,
        human_bytes(report.freed_bytes)
    );
    Ok(())
}
