//! `snapcache rollback`: make an earlier retained generation current.

use snapcache::Store;

use crate::output::{outln, print_json, short_hash};
use crate::{Context, Failure, LockTimeoutArg};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Roll back to this retained generation (default: the one before the current)
    #[arg(long, value_name = "N")]
    to: Option<u64>,
    #[command(flatten)]
    lock_timeout: LockTimeoutArg,
}

pub fn run(ctx: &Context, args: &Args) -> Result<(), Failure> {
    let options = args.lock_timeout.apply(&ctx.options)?;
    let outcome = Store::open(options)?.rollback(args.to)?;
    if ctx.json {
        print_json(&outcome);
    } else if outcome.generation == outcome.previous {
        outln!(
            "already current: generation {} (blake3 {}); nothing changed",
            outcome.generation,
            short_hash(&outcome.hash)
        );
    } else {
        let verb = if outcome.generation > outcome.previous {
            "switched to"
        } else {
            "rolled back to"
        };
        outln!(
            "{verb} generation {} (was {}), blake3 {}",
            outcome.generation,
            outcome.previous,
            short_hash(&outcome.hash)
        );
    }
    Ok(())
}
