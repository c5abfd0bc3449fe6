//! `snapcache verify`: check everything, change nothing.

use snapcache::{Problem, Store, VerifyReport};

use crate::output::{human_bytes, lossy_path, outln, print_json};
use crate::{Context, Failure, exit};

pub fn run(ctx: &Context) -> Result<(), Failure> {
    let store = Store::open(ctx.options.clone())?;
    let report = store.verify()?;
    if ctx.json {
        // Paths that are not UTF-8 are shown lossily (serde refuses them).
        let mut shown = report.clone();
        for p in &mut shown.problems {
            p.path = lossy_path(&p.path);
        }
        for l in &mut shown.reclaimable {
            l.path = lossy_path(&l.path);
        }
        for k in &mut shown.in_grace {
            k.path = lossy_path(&k.path);
        }
        for f in &mut shown.foreign {
            f.path = lossy_path(&f.path);
        }
        print_json(&shown);
    } else {
        let grouped = group_problems(&report.problems);
        for (p, generations) in &grouped {
            let which = match generations.as_slice() {
                [] => String::new(),
                [one] => format!(" (generation {one})"),
                many => format!(" (generations {})", list(many)),
            };
            outln!(
                "problem ({}){which}: {}: {}",
                p.kind,
                p.path.display(),
                p.detail
            );
        }
        if report.ok {
            outln!(
                "ok: the pointer and {} retained generation(s) verified",
                report.verified_generations.len()
            );
        } else {
            // The current generation, when the pointer itself is readable.
            let current = store
                .history()
                .ok()
                .and_then(|h| h.into_iter().find(|e| e.current))
                .map(|e| e.generation);
            // Files refused for their permissions are not damaged: their
            // bytes may be fine, and `chmod go-w` is the whole fix.
            let word = if report.problems.iter().all(|p| p.kind == "untrusted") {
                "refused"
            } else {
                "damaged"
            };
            outln!(
                "{word}: {} problem(s); {}",
                grouped.len(),
                advice(&report, current)
            );
        }
        if !report.reclaimable.is_empty() {
            let bytes: u64 = report.reclaimable.iter().map(|l| l.bytes).sum();
            outln!(
                "reclaimable: {} leftover file(s), {} (not problems: awaiting removal by the next write or `snapcache gc`)",
                report.reclaimable.len(),
                human_bytes(bytes)
            );
        }
        if let Some(last) = report.in_grace.iter().map(|k| k.until).max() {
            let bytes: u64 = report.in_grace.iter().map(|k| k.bytes).sum();
            outln!(
                "kept for grace: {} unreferenced snapshot(s), {}, until {last} at the latest (a reader elsewhere or a stalled writer may still need them; lease-backend writers and gc keep them until then, an advisory-backend gc removes them now):",
                report.in_grace.len(),
                human_bytes(bytes)
            );
            for k in &report.in_grace {
                outln!("  {} until {}", k.path.display(), k.until);
            }
        }
    }
    if !ctx.json && !report.foreign.is_empty() {
        outln!(
            "foreign: {} entr{} snapcache did not create, left in place (not problems, never removed):",
            report.foreign.len(),
            if report.foreign.len() == 1 {
                "y"
            } else {
                "ies"
            }
        );
        for f in &report.foreign {
            outln!("  {} ({})", f.path.display(), f.what);
        }
    }
    if report.ok {
        Ok(())
    } else {
        Err(Failure::Reported(exit::FAILURE))
    }
}

/// One entry per damaged file: generations sharing a snapshot share its
/// problem, which is printed once with all their numbers.
fn group_problems(problems: &[Problem]) -> Vec<(&Problem, Vec<u64>)> {
    let mut grouped: Vec<(&Problem, Vec<u64>)> = Vec::new();
    for p in problems {
        let same = grouped
            .iter_mut()
            .find(|(q, _)| q.path == p.path && q.kind == p.kind && q.detail == p.detail);
        match same {
            Some((_, generations)) => generations.extend(p.generation),
            None => grouped.push((p, p.generation.into_iter().collect())),
        }
    }
    grouped
}

/// `path` when it names a commit record (`<root>/commits/<n>`, see
/// docs/format.md).
pub fn commit_record(path: &std::path::Path) -> Option<&std::path::Path> {
    let dir = path.parent()?.file_name()?;
    (dir == "commits").then_some(path)
}

fn list(generations: &[u64]) -> String {
    generations
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// What to do, suggesting only commands that can work: a rollback only to
/// an intact generation other than the current one, and none when the
/// pointer itself is damaged (a rollback needs it).
fn advice(report: &VerifyReport, current: Option<u64>) -> String {
    if let Some(problem) = report.problems.iter().find(|p| p.kind == "pointer") {
        // A damaged commit record (lease backend) is not a damaged pointer:
        // readers still serve the pointer, and moving the record aside is
        // the whole fix. Moving `current` aside instead lost the history.
        if let Some(record) = commit_record(&problem.path) {
            return format!(
                "the commit record {r} is damaged and every write refuses the store until it is moved aside: `mv {r} {r}.damaged`; the pointer and the history are kept",
                r = record.display()
            );
        }
        return "the pointer is damaged, so no rollback is possible and no generation can be verified: copy the snapshots/ directory first if you may need an old generation (a new history removes what the old one named), then move the pointer aside (keep it) and run `snapcache refresh`, which starts a new history".into();
    }
    // Not damage: the bytes may be fine, but nobody else may be able to
    // change them. Removing the permission is the whole fix.
    if report.problems.iter().any(|p| p.kind == "untrusted") {
        return "files of the store that their group or others can write are refused, whatever they hold: run `chmod go-w` on each file named above, and they verify again".into();
    }
    let intact = &report.verified_generations;
    let damaged: Vec<u64> = report
        .problems
        .iter()
        .filter_map(|p| p.generation)
        .collect();
    let current_intact = current.is_some_and(|c| intact.contains(&c));
    if current_intact {
        return format!(
            "the current generation is intact and serves reads; the damaged retained generation(s) {} cannot be rolled back to, and leave retention as new generations are published",
            list(&damaged)
        );
    }
    match intact.iter().max() {
        Some(newest) => format!(
            "the current generation is damaged; intact generation(s): {}. `snapcache rollback --to {newest}` makes the newest intact one current, `snapcache refresh` publishes a new one",
            list(intact)
        ),
        None => "no retained generation is intact: `snapcache refresh` publishes a new one".into(),
    }
}
