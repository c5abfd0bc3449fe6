//! `snapcache status`: the current generation and the lock, without locking.

use std::time::SystemTime;

use serde_json::{Value, json};
use snapcache::{LeaseView, LockState, Store};

use crate::output::{human_bytes, human_span, human_time_age, json_path, outln, print_json};
use crate::{Context, Failure};

pub fn run(ctx: &Context) -> Result<(), Failure> {
    let status = Store::open(ctx.options.clone())?.status()?;
    let mut lock = match &status.lock {
        LockState::Free => json!({ "held": false }),
        LockState::Held(None) => json!({ "held": true }),
        LockState::Held(Some(h)) => json!({
            "held": true, "pid": h.pid, "host": h.host, "command": h.command,
            "since": h.since, "backend": h.backend, "pid_ns": h.pid_ns,
            "held_for_seconds": h.since.age().as_secs_f64(),
        }),
        LockState::UnreadableLease {
            path,
            age,
            takeover_after,
        } => json!({
            "held": true, "unreadable_lease": json_path(path),
            "lease_age_seconds": age.map(|a| a.as_secs_f64()),
            "takeover_after_seconds": takeover_after.as_secs_f64(),
        }),
        _ => json!({ "held": true }),
    };
    if let Some(view) = &status.lease {
        lock["lease"] = lease_json(view);
    }
    if ctx.json {
        let current = status.current.as_ref();
        print_json(&json!({
            "store": json_path(&status.root),
            "generation": current.map(|g| g.generation),
            "hash": current.map(|g| g.hash),
            "bytes": current.map(|g| g.bytes),
            "created_at": current.map(|g| g.created_at),
            "created_at_in_future": current.map(|g| g.created_at.in_future()),
            "note": current.and_then(|g| g.note.as_deref()),
            // Both ages in whole seconds; null when unknown (nothing
            // published, or a time in the future).
            "created_age_seconds": current.and_then(|g| g.created_at.known_age()).map(|a| a.as_secs()),
            "checked_age_seconds": status.checked_at.and_then(|t| t.known_age()).map(|a| a.as_secs()),
            "checked_at": status.checked_at,
            "checked_at_in_future": status.checked_at.map(|t| t.in_future()),
            // null when unknown: nothing published, or a time in the future.
            "age_seconds": status.checked_at.and_then(|t| t.known_age()).map(|a| a.as_secs()),
            "retained": status.retained,
            "pinned": status.pinned,
            "lock": lock,
        }));
        return Ok(());
    }
    outln!("store:      {}", status.root.display());
    match &status.current {
        None => outln!("generation: none (nothing published yet)"),
        Some(g) => {
            let pinned = match status.pinned {
                0 => String::new(),
                n => format!(", {n} pinned"),
            };
            outln!(
                "generation: {} ({} retained{pinned}){}",
                g.generation,
                status.retained,
                if g.pinned { ", pinned" } else { "" }
            );
            outln!("hash:       {}", g.hash);
            outln!("bytes:      {} ({})", g.bytes, human_bytes(g.bytes));
            outln!(
                "created:    {} ({})",
                g.created_at,
                human_time_age(g.created_at)
            );
            if let Some(checked) = status.checked_at {
                outln!("checked:    {checked} ({})", human_time_age(checked));
            }
            if let Some(note) = &g.note {
                outln!("note:       {note}");
            }
        }
    }
    match &status.lock {
        LockState::Free => outln!("lock:       free"),
        LockState::Held(None) => outln!("lock:       held (holder unknown)"),
        LockState::Held(Some(h)) => outln!(
            "lock:       held by {}, {} lock, since {}",
            h.describe(),
            h.backend,
            h.since
        ),
        LockState::UnreadableLease {
            path,
            age,
            takeover_after,
        } => outln!(
            "lock:       held by an unreadable lease file {} (empty or damaged, e.g. by a power cut; no holder can be named){}; writers take it over once it is {} s old",
            path.display(),
            age.map(|a| format!(", last modified {:.1} s ago", a.as_secs_f64()))
                .unwrap_or_default(),
            takeover_after.as_secs_f64()
        ),
        _ => outln!("lock:       held"),
    }
    if let Some(view) = &status.lease {
        print_lease(view);
    }
    Ok(())
}

/// Seconds from now to `t`: negative in the past.
fn seconds_from_now(t: snapcache::Timestamp) -> f64 {
    match t.system_time().duration_since(SystemTime::now()) {
        Ok(ahead) => ahead.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}

/// The `lock.lease` object of `status --json`.
fn lease_json(view: &LeaseView) -> Value {
    json!({
        "path": json_path(&view.path),
        "lease_time_seconds": view.lease_time.as_secs_f64(),
        "renewed_at": view.renewed_at,
        // null when unknown, or in the future beyond the tolerance.
        "renewed_age_seconds": view.renewed_at.and_then(|t| t.known_age()).map(|a| a.as_secs_f64()),
        "renewed_in_future": view.renewed_in_future(),
        "expires_at": view.expires_at,
        "expires_in_seconds": view.expires_at.map(seconds_from_now),
        "expiry_ahead_seconds": view.expiry_ahead_by().map(|d| d.as_secs_f64()),
    })
}

/// The `lease:` line, and why a waiting writer may not go by its times.
fn print_lease(view: &LeaseView) {
    let renewed = match view.renewed_at {
        None => "last renewal unknown".to_string(),
        Some(t) if view.renewed_in_future() => {
            format!("renewed {t}, in the future by this machine's clock")
        }
        Some(t) => format!(
            "renewed {}{}",
            human_time_age(t),
            if view.expires_at.is_none() {
                " (by the server's clock)"
            } else {
                ""
            }
        ),
    };
    let expires =
        view.expires_at.map(
            |t| match t.system_time().duration_since(SystemTime::now()) {
                Ok(left) => format!(", expires {t} (in {})", human_span(left)),
                Err(_) => format!(", expired {t}"),
            },
        );
    outln!(
        "lease:      {renewed}{}, lease time {}",
        expires.unwrap_or_default(),
        human_span(view.lease_time)
    );
    if let Some(ahead) = view.expiry_ahead_by() {
        outln!(
            "            its expiry lies {} beyond one lease time: the holder's clock runs ahead of this machine's, or the lease was written by hand",
            human_span(ahead)
        );
    }
    if view.clocks_disagree() {
        outln!(
            "            a waiting writer takes it over once it has seen the lease go unrenewed for {}",
            human_span(view.lease_time)
        );
    }
}
