//! `snapcache rollback`: make an earlier retained generation current.

use snapcache::Store;

use crate::output::{print_json, short_hash};
use crate::{Context, Failure, lock_budget};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Roll back to this retained generation (default: the one before the current)
    #[arg(long, value_name = "N")]
    to: Option<u64>,
    /// Seconds to wait for the writer lock, or `infinite` [default: $SNAPCACHE_LOCK_TIMEOUT, else 600]
    #[arg(long, value_name = "SECS|infinite")]
    lock_timeout: Option<String>,
}

pub fn run(ctx: &Context, args: &Args) -> Result<(), Failure> {
    let options = ctx
        .options
        .clone()
        .lock_budget(lock_budget(args.lock_timeout.as_deref())?);
    let outcome = Store::open(options)?.rollback(args.to)?;
    if ctx.json {
        print_json(&outcome);
    } else {
        println!(
            "rolled back: generation {} is current (was {}), blake3 {}",
            outcome.generation,
            outcome.previous,
            short_hash(&outcome.hash)
        );
    }
    Ok(())
}
