//! `snapcache verify`: check everything, change nothing.

use snapcache::Store;

use crate::output::{human_bytes, lossy_path, outln, print_json};
use crate::{Context, Failure, exit};

pub fn run(ctx: &Context) -> Result<(), Failure> {
    let report = Store::open(ctx.options.clone())?.verify()?;
    if ctx.json {
        // Paths that are not UTF-8 are shown lossily (serde refuses them).
        let mut shown = report.clone();
        for p in &mut shown.problems {
            p.path = lossy_path(&p.path);
        }
        for l in &mut shown.reclaimable {
            l.path = lossy_path(&l.path);
        }
        for f in &mut shown.foreign {
            f.path = lossy_path(&f.path);
        }
        print_json(&shown);
    } else {
        for p in &report.problems {
            outln!("problem ({}): {}: {}", p.kind, p.path.display(), p.detail);
        }
        if report.ok {
            outln!(
                "ok: the pointer and {} retained generation(s) verified",
                report.verified_generations.len()
            );
        } else {
            outln!(
                "damaged: {} problem(s); intact generations: {:?}. `snapcache rollback --to N` makes an intact one current, `snapcache refresh` publishes a new one",
                report.problems.len(),
                report.verified_generations
            );
        }
        if !report.reclaimable.is_empty() {
            let bytes: u64 = report.reclaimable.iter().map(|l| l.bytes).sum();
            outln!(
                "reclaimable: {} leftover file(s), {} (`snapcache gc` removes them)",
                report.reclaimable.len(),
                human_bytes(bytes)
            );
        }
    }
    if !ctx.json && !report.foreign.is_empty() {
        println!(
            "foreign: {} entr{} snapcache did not create, left in place (not problems, never removed):",
            report.foreign.len(),
            if report.foreign.len() == 1 {
                "y"
            } else {
                "ies"
            }
        );
        for f in &report.foreign {
            println!("  {} ({})", f.path.display(), f.what);
        }
    }
    if report.ok {
        Ok(())
    } else {
        Err(Failure::Reported(exit::FAILURE))
    }
}
