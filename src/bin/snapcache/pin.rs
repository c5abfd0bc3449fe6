//! `snapcache pin` / `snapcache unpin`: keep generations through retention
//! and gc, or release them again.

use snapcache::{PinReport, Store};

use crate::output::{outln, print_json};
use crate::{Context, Failure, LockTimeoutArg};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Retained generations (`snapcache history` lists them)
    #[arg(value_name = "N", required = true, num_args = 1..)]
    generations: Vec<u64>,
    #[command(flatten)]
    lock_timeout: LockTimeoutArg,
}

/// `pin N...` (`pin` true) or `unpin N...`.
pub fn run(ctx: &Context, args: &Args, pin: bool) -> Result<(), Failure> {
    let options = args.lock_timeout.apply(&ctx.options)?;
    let store = Store::open(options)?;
    let report = if pin {
        store.pin(&args.generations)?
    } else {
        store.unpin(&args.generations)?
    };
    if ctx.json {
        print_json(&report);
        return Ok(());
    }
    outln!("{}", summary(&report, pin));
    Ok(())
}

/// The human line: what was asked, and the store's pins afterwards.
fn summary(report: &PinReport, pin: bool) -> String {
    let list = |numbers: &[u64]| {
        numbers
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let asked = list(&report.generations);
    let now = if report.pinned.is_empty() {
        "none".to_string()
    } else {
        list(&report.pinned)
    };
    match (report.changed, pin) {
        (true, true) => format!("pinned generation(s) {asked}; pinned now: {now}"),
        (true, false) => format!("unpinned generation(s) {asked}; pinned now: {now}"),
        (false, true) => format!("already pinned: generation(s) {asked}; nothing changed"),
        (false, false) => format!("not pinned: generation(s) {asked}; nothing changed"),
    }
}
