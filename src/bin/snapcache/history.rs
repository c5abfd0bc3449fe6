//! `snapcache history`: retained generations, oldest first.

use serde_json::json;
use snapcache::Store;

use crate::output::{human_bytes, print_json, short_hash};
use crate::{Context, Failure};

pub fn run(ctx: &Context) -> Result<(), Failure> {
    let history = Store::open(ctx.options.clone())?.history()?;
    if ctx.json {
        print_json(&json!({ "generations": history }));
        return Ok(());
    }
    println!(
        "  {:>5}  {:<24}  {:>9}  {:<12}  note",
        "gen", "created", "size", "blake3"
    );
    for entry in &history {
        let g = &entry.generation;
        println!(
            "{} {:>5}  {:<24}  {:>9}  {:<12}  {}",
            if entry.current { "*" } else { " " },
            g.generation,
            g.created_at.to_string(),
            human_bytes(g.bytes),
            short_hash(&g.hash),
            g.note.as_deref().unwrap_or("")
        );
    }
    Ok(())
}
