//! `snapcache forget`: drop specific generations and their snapshots.

use snapcache::Store;

use crate::output::{human_bytes, outln, print_json, warn_not_removed};
use crate::{Context, Failure, LockTimeoutArg};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Generations to drop (never the current one)
    #[arg(value_name = "N", required = true, num_args = 1..)]
    generations: Vec<u64>,
    #[command(flatten)]
    lock_timeout: LockTimeoutArg,
}

pub fn run(ctx: &Context, args: &Args) -> Result<(), Failure> {
    let options = args.lock_timeout.apply(&ctx.options)?;
    let report = Store::open(options)?.forget(&args.generations)?;
    warn_not_removed(ctx.quiet, &report.not_removed, "snapcache gc");
    if ctx.json {
        print_json(&report);
        return Ok(());
    }
    let list: Vec<String> = report.forgotten.iter().map(u64::to_string).collect();
    outln!(
        "forgot generation(s) {}; removed {} snapshot(s), {} freed",
        list.join(", "),
        report.removed_snapshots,
        human_bytes(report.freed_bytes)
    );
    Ok(())
}
