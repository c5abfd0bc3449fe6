//! `snapcache status`: the current generation and the lock, without locking.

use serde_json::json;
use snapcache::{LockState, Store};

use crate::output::{human_age, human_bytes, print_json};
use crate::{Context, Failure};

pub fn run(ctx: &Context) -> Result<(), Failure> {
    let status = Store::open(ctx.options.clone())?.status()?;
    let lock = match &status.lock {
        LockState::Free => json!({ "held": false }),
        LockState::Held(None) => json!({ "held": true }),
        LockState::Held(Some(h)) => json!({
            "held": true, "pid": h.pid, "host": h.host, "command": h.command,
            "since": h.since, "backend": h.backend,
            "held_for_seconds": h.since.age().as_secs_f64(),
        }),
    };
    if ctx.json {
        let current = status.current.as_ref();
        print_json(&json!({
            "store": status.root,
            "generation": current.map(|g| g.generation),
            "hash": current.map(|g| g.hash),
            "bytes": current.map(|g| g.bytes),
            "created_at": current.map(|g| g.created_at),
            "checked_at": status.checked_at,
            "age_seconds": status.checked_at.map(|t| t.age().as_secs()),
            "retained": status.retained,
            "lock": lock,
        }));
        return Ok(());
    }
    println!("store:      {}", status.root.display());
    match &status.current {
        None => println!("generation: none (nothing published yet)"),
        Some(g) => {
            println!(
                "generation: {} ({} retained)",
                g.generation, status.retained
            );
            println!("hash:       {}", g.hash);
            println!("bytes:      {} ({})", g.bytes, human_bytes(g.bytes));
            println!(
                "created:    {} ({})",
                g.created_at,
                human_age(g.created_at.age())
            );
            if let Some(checked) = status.checked_at {
                println!("checked:    {checked} ({})", human_age(checked.age()));
            }
            if let Some(note) = &g.note {
                println!("note:       {note}");
            }
        }
    }
    match &status.lock {
        LockState::Free => println!("lock:       free"),
        LockState::Held(None) => println!("lock:       held (holder unknown)"),
        LockState::Held(Some(h)) => println!(
            "lock:       held by {}, {} lock, since {}",
            h.describe(),
            h.backend,
            h.since
        ),
    }
    Ok(())
}
