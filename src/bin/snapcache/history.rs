//! `snapcache history`: retained generations, oldest first.

use serde_json::json;
use snapcache::Store;

use crate::output::{human_bytes, outln, print_json, short_hash};
use crate::{Context, Failure};

pub fn run(ctx: &Context) -> Result<(), Failure> {
    let history = Store::open(ctx.options.clone())?.history()?;
    if ctx.json {
        let generations: Vec<serde_json::Value> = history
            .iter()
            .map(|entry| {
                let mut value = serde_json::to_value(entry).unwrap_or_default();
                if let Some(object) = value.as_object_mut() {
                    object.insert(
                        "created_at_in_future".into(),
                        entry.created_at.in_future().into(),
                    );
                }
                value
            })
            .collect();
        print_json(&json!({ "generations": generations }));
        return Ok(());
    }
    outln!(
        "  {:>5}  {:<24}  {:>9}  {:<12}  note",
        "gen",
        "created",
        "size",
        "blake3"
    );
    let mut any_in_future = false;
    for entry in &history {
        let g = entry;
        let future = g.created_at.in_future();
        any_in_future |= future;
        outln!(
            "{} {:>5}  {:<24}  {:>9}  {:<12}  {}",
            if entry.current { "*" } else { " " },
            g.generation,
            format!("{}{}", g.created_at, if future { " (!)" } else { "" }),
            human_bytes(g.bytes),
            short_hash(&g.hash),
            g.note.as_deref().unwrap_or("")
        );
    }
    if any_in_future {
        outln!(
            "(!) created in the future: the clock of the writer that published it ran ahead of this machine's by more than {} s",
            snapcache::CLOCK_SKEW_TOLERANCE.as_secs()
        );
    }
    Ok(())
}
