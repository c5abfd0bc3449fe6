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
                    // Whole seconds since created_at; null when unknown.
                    object.insert(
                        "age_seconds".into(),
                        entry.created_at.known_age().map(|a| a.as_secs()).into(),
                    );
                }
                value
            })
            .collect();
        print_json(&json!({ "generations": generations }));
        return Ok(());
    }
    outln!(
        "  {:>5}  {:<6}  {:<24}  {:<16}  {:>9}  {:<12}  note",
        "gen",
        "pin",
        "created",
        "age",
        "size",
        "blake3"
    );
    let mut any_in_future = false;
    for entry in &history {
        let g = entry;
        let future = g.created_at.in_future();
        any_in_future |= future;
        let age = match g.created_at.known_age() {
            Some(age) => relative_age(age),
            None => "in the future".to_string(),
        };
        outln!(
            "{} {:>5}  {:<6}  {:<24}  {:<16}  {:>9}  {:<12}  {}",
            if entry.current { "*" } else { " " },
            g.generation,
            if g.pinned { "pinned" } else { "" },
            format!("{}{}", g.created_at, if future { " (!)" } else { "" }),
            age,
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

/// git's `--date=relative` style: "3 minutes ago", "2 days ago",
/// "5 months ago", "1 year, 2 months ago".
pub fn relative_age(age: std::time::Duration) -> String {
    fn unit(n: u64, name: &str) -> String {
        format!("{n} {name}{}", if n == 1 { "" } else { "s" })
    }
    let secs = age.as_secs();
    const MIN: u64 = 60;
    const HOUR: u64 = 60 * MIN;
    const DAY: u64 = 24 * HOUR;
    let ago = match secs {
        0..90 => unit(secs, "second"),
        90..5_400 => unit((secs + MIN / 2) / MIN, "minute"),
        5_400..129_600 => unit((secs + HOUR / 2) / HOUR, "hour"),
        // Up to two weeks in days, then weeks up to two months.
        129_600..1_209_600 => unit((secs + DAY / 2) / DAY, "day"),
        1_209_600..5_184_000 => unit((secs + 7 * DAY / 2) / (7 * DAY), "week"),
        5_184_000..31_536_000 => unit((secs + 15 * DAY) / (30 * DAY), "month"),
        _ => {
            let mut years = secs / (365 * DAY);
            let mut months = (secs - years * 365 * DAY + 15 * DAY) / (30 * DAY);
            // The rest of a year rounds to 12 months at its end (715 days
            // read "1 year, 12 months"): that is the next year.
            if months >= 12 {
                years += 1;
                months = 0;
            }
            if months == 0 {
                unit(years, "year")
            } else {
                format!("{}, {}", unit(years, "year"), unit(months, "month"))
            }
        }
    };
    format!("{ago} ago")
}

#[cfg(test)]
mod tests {
    use super::relative_age;
    use std::time::Duration;

    const DAY: u64 = 86_400;

    #[test]
    fn ages_read_like_git_and_never_say_12_months() {
        let at = |secs| relative_age(Duration::from_secs(secs));
        assert_eq!(at(5), "5 seconds ago");
        assert_eq!(at(3 * 60), "3 minutes ago");
        assert_eq!(at(2 * DAY), "2 days ago");
        assert_eq!(at(400 * DAY), "1 year, 1 month ago");
        // Reproduced: 715 days read "1 year, 12 months ago".
        assert_eq!(at(715 * DAY), "2 years ago");
        assert_eq!(at(730 * DAY), "2 years ago");
        for days in 365..(60 * 365) {
            let text = at(days * DAY);
            assert!(!text.contains("12 months"), "{days} days: {text}");
        }
    }
}
