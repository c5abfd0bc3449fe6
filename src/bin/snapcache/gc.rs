//! `snapcache gc`: remove what no retained generation references.

use snapcache::{GcOptions, Store};

use crate::output::{human_bytes, outln, print_json, warn_not_removed};
use crate::{Context, Failure, LockTimeoutArg};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Shrink retention to N generations besides the current one first
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=100))]
    keep: Option<u64>,
    /// Drop generations older than this (e.g. 30d), keeping the one current then (at most 1000000000s)
    #[arg(long, value_name = "DURATION", value_parser = crate::refresh::parse_max_age)]
    older_than: Option<std::time::Duration>,
    /// Only report what would be removed
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    lock_timeout: LockTimeoutArg,
}

pub fn run(ctx: &Context, args: &Args) -> Result<(), Failure> {
    let options = args.lock_timeout.apply(&ctx.options)?;
    let mut gc = GcOptions::default().dry_run(args.dry_run);
    if let Some(keep) = args.keep {
        gc = gc.keep(usize::try_from(keep).unwrap_or(usize::MAX));
    }
    if let Some(age) = args.older_than {
        gc = gc.older_than(age);
    }
    let report = Store::open(options)?.gc(&gc)?;
    warn_not_removed(ctx.quiet, &report.not_removed, "snapcache gc");
    if ctx.json {
        print_json(&report);
        return Ok(());
    }
    let verb = if report.dry_run {
        "would remove"
    } else {
        "removed"
    };
    outln!(
        "{verb} {} unreferenced snapshot(s) and {} temp file(s), {} freed",
        report.removed_snapshots,
        report.removed_temp_files,
        human_bytes(report.freed_bytes)
    );
    if !report.dropped_generations.is_empty() {
        let list: Vec<String> = report
            .dropped_generations
            .iter()
            .map(u64::to_string)
            .collect();
        let verb = if report.dry_run {
            "would drop"
        } else {
            "dropped"
        };
        outln!("{verb} generation(s) {} from retention", list.join(", "));
    }
    Ok(())
}
