//! Printing results: one JSON object on stdout with `--json`, text otherwise.

use std::io::Write;

use serde::Serialize;

/// Prints `value` as one line of JSON on stdout.
pub fn print_json(value: &impl Serialize) {
    let mut out = std::io::stdout().lock();
    let _ = serde_json::to_writer(&mut out, value);
    let _ = writeln!(out);
}

/// `1.2 MB`, `512 B`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// `3 min ago`-style age.
pub fn human_age(age: std::time::Duration) -> String {
    let secs = age.as_secs();
    match secs {
        0..=59 => format!("{secs} s ago"),
        60..=3599 => format!("{} min ago", secs / 60),
        3600..=86_399 => format!("{:.1} h ago", secs as f64 / 3600.0),
        _ => format!("{:.1} days ago", secs as f64 / 86_400.0),
    }
}

/// The first 12 hex digits, for human output.
pub fn short_hash(hash: &snapcache::ContentHash) -> String {
    hash.to_hex()[..12].to_string()
}
