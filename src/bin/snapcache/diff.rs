//! `snapcache diff [A [B]]`: what changed between two retained generations.
//!
//! JSON snapshots are compared as values: every difference is a path in
//! JSON Pointer form (RFC 6901, `/distributions/temurin/packages/3/size`)
//! that was added, removed or changed. Objects are compared by key, arrays
//! by index. Other snapshots are compared as bytes: sizes and whether they
//! differ. So are JSON documents that serde_json cannot hold as values
//! (nesting deeper than 128 levels, a number beyond f64): the store accepts
//! them, as its JSON check has no such limits, and `diff` says why it
//! compared them as bytes rather than calling them "not JSON". Output is
//! bounded by `--limit`; the counts are always complete.

use serde_json::{Value, json};
use snapcache::{JsonCheck, Store};

use crate::output::{human_bytes, outln, print_json};
use crate::{Context, Failure};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The older generation [default: the one before the current]
    #[arg(value_name = "A")]
    from: Option<u64>,
    /// The newer generation [default: the current one]
    #[arg(value_name = "B")]
    to: Option<u64>,
    /// Show at most this many differences (the counts are always complete)
    #[arg(long, value_name = "N", default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    limit: u64,
}

/// One difference.
struct Change {
    path: String,
    old: Option<Value>,
    new: Option<Value>,
}

/// The differences found: every one counted, only the first `limit` kept.
/// Keeping them all cost a copy of the path (and of the values) per
/// difference: a 300 KB key above a 20,000-element array took 3 GB for
/// `--limit 1`.
struct Changes {
    kept: Vec<Change>,
    limit: usize,
    added: usize,
    removed: usize,
    changed: usize,
}

impl Changes {
    fn new(limit: usize) -> Self {
        Changes {
            kept: Vec::new(),
            limit,
            added: 0,
            removed: 0,
            changed: 0,
        }
    }

    fn note(&mut self, path: &str, old: Option<&Value>, new: Option<&Value>) {
        match (old, new) {
            (None, _) => self.added += 1,
            (_, None) => self.removed += 1,
            _ => self.changed += 1,
        }
        if self.kept.len() < self.limit {
            self.kept.push(Change {
                path: path.to_string(),
                old: old.cloned(),
                new: new.cloned(),
            });
        }
    }

    fn total(&self) -> usize {
        self.added + self.removed + self.changed
    }
}

impl Change {
    fn kind(&self) -> &'static str {
        match (&self.old, &self.new) {
            (None, _) => "added",
            (_, None) => "removed",
            _ => "changed",
        }
    }
}

pub fn run(ctx: &Context, args: &Args) -> Result<(), Failure> {
    let store = Store::open(ctx.options.clone())?;
    let history = store.history()?;
    let current = history
        .iter()
        .find(|e| e.current)
        .map(|e| e.generation)
        .ok_or_else(|| Failure::Other("the store has no current generation".into()))?;
    let to = args.to.unwrap_or(current);
    let from = match args.from {
        Some(n) => n,
        None => history
            .iter()
            .map(|e| e.generation)
            .filter(|&g| g < current)
            .max()
            .ok_or_else(|| {
                Failure::Other(format!(
                    "nothing to compare: generation {current} is the only one retained in {}; give two generations (`snapcache diff A B`)",
                    store.root().display()
                ))
            })?,
    };
    let old = store.read_generation(from)?;
    let new = store.read_generation(to)?;
    let (a, b) = match (
        serde_json::from_slice::<Value>(&old.data),
        serde_json::from_slice::<Value>(&new.data),
    ) {
        (Ok(a), Ok(b)) => (a, b),
        (a, b) => {
            // Both JSON by the store's own check: say what kept them from
            // being compared as values.
            let failed = a.err().map(|e| (from, e)).or(b.err().map(|e| (to, e)));
            let beyond = failed
                .filter(|_| is_json(&old.data) && is_json(&new.data))
                .map(|(generation, e)| (generation, e.to_string()));
            return raw(ctx, from, to, &old.data, &new.data, beyond);
        }
    };
    let limit = usize::try_from(args.limit).unwrap_or(usize::MAX);
    let mut found = Changes::new(limit);
    compare(&a, &b, &mut String::new(), &mut found);
    let (added, removed, changed) = (found.added, found.removed, found.changed);
    let more = found.total().saturating_sub(limit);
    let identical = found.total() == 0;
    let changes = found.kept;
    if ctx.json {
        let list = |k: &str| -> Vec<Value> {
            changes
                .iter()
                .take(limit)
                .filter(|c| c.kind() == k)
                .map(|c| match k {
                    "added" => json!({ "path": c.path, "value": c.new }),
                    "removed" => json!({ "path": c.path, "value": c.old }),
                    _ => json!({ "path": c.path, "old": c.old, "new": c.new }),
                })
                .collect()
        };
        print_json(&json!({
            "from": from, "to": to, "format": "json",
            "identical": identical,
            "same_bytes": old.data == new.data,
            "counts": { "added": added, "removed": removed, "changed": changed },
            "added": list("added"), "removed": list("removed"), "changed": list("changed"),
            "omitted": more,
        }));
        return Ok(());
    }
    if identical {
        // Equal values need not be equal bytes: a duplicate key (its last
        // value is the one read) made two different documents "equal".
        if old.data == new.data {
            outln!("generation {from} and {to} hold equal JSON values");
        } else {
            outln!(
                "generation {from} and {to} hold equal JSON values, but their bytes differ (formatting, key order, or a duplicate key, of which the last value is the one read)"
            );
        }
        return Ok(());
    }
    outln!("generation {from} -> {to}: {added} added, {removed} removed, {changed} changed");
    for c in changes.iter().take(limit) {
        // The empty pointer is the whole document.
        let path = if c.path.is_empty() {
            "(the whole value)"
        } else {
            &c.path
        };
        match c.kind() {
            "added" => outln!("+ {path}: {}", brief(c.new.as_ref())),
            "removed" => outln!("- {path}: {}", brief(c.old.as_ref())),
            _ => outln!(
                "~ {path}: {} -> {}",
                brief(c.old.as_ref()),
                brief(c.new.as_ref())
            ),
        }
    }
    if more > 0 {
        outln!("... and {more} more (--limit N shows more, --json lists them)");
    }
    Ok(())
}

/// Whether `bytes` are one JSON value, by the store's check (no nesting
/// limit, any number).
fn is_json(bytes: &[u8]) -> bool {
    let mut check = JsonCheck::default();
    check.feed(bytes).and_then(|()| check.finish()).is_ok()
}

/// Compares as bytes. `beyond` names the generation that is JSON but could
/// not be held as a value, and serde_json's reason, when both are JSON.
fn raw(
    ctx: &Context,
    from: u64,
    to: u64,
    a: &[u8],
    b: &[u8],
    beyond: Option<(u64, String)>,
) -> Result<(), Failure> {
    let identical = a == b;
    if ctx.json {
        print_json(&json!({
            "from": from, "to": to, "format": "raw", "identical": identical,
            "from_bytes": a.len(), "to_bytes": b.len(),
            "both_json": beyond.is_some(),
            "not_comparable": beyond.as_ref().map(|(g, why)| json!({ "generation": g, "reason": why })),
        }));
        return Ok(());
    }
    let sizes = format!(
        "generation {from} ({}, {} bytes) and {to} ({}, {} bytes)",
        human_bytes(a.len() as u64),
        a.len(),
        human_bytes(b.len() as u64),
        b.len(),
    );
    let bytes = if identical {
        "their bytes are identical"
    } else {
        "their bytes differ"
    };
    match beyond {
        None => outln!("{sizes} are not both JSON: {bytes}"),
        Some((generation, why)) => outln!(
            "{sizes} are both JSON, but generation {generation} cannot be compared value by value ({why}; JSON nested deeper than 128 levels or a number beyond 64-bit floating point cannot be); compared as bytes, {bytes}"
        ),
    }
    Ok(())
}

/// A value in at most 60 characters.
fn brief(v: Option<&Value>) -> String {
    let text = v.map(Value::to_string).unwrap_or_default();
    if text.chars().count() <= 60 {
        return text;
    }
    let cut: String = text.chars().take(57).collect();
    format!("{cut}...")
}

/// Notes the differences between `a` and `b` under `path`.
/// (serde_json's parser nests at most 128 levels, which bounds the recursion.)
fn compare(a: &Value, b: &Value, path: &mut String, out: &mut Changes) {
    let len = path.len();
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for (k, va) in x {
                push_token(path, k);
                match y.get(k) {
                    Some(vb) => compare(va, vb, path, out),
                    None => out.note(path, Some(va), None),
                }
                path.truncate(len);
            }
            for (k, vb) in y {
                if !x.contains_key(k) {
                    push_token(path, k);
                    out.note(path, None, Some(vb));
                    path.truncate(len);
                }
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            for i in 0..x.len().max(y.len()) {
                push_token(path, &i.to_string());
                match (x.get(i), y.get(i)) {
                    (Some(va), Some(vb)) => compare(va, vb, path, out),
                    (va, vb) => out.note(path, va, vb),
                }
                path.truncate(len);
            }
        }
        _ if a == b => {}
        _ => out.note(path, Some(a), Some(b)),
    }
}

/// RFC 6901: `~` is written `~0`, `/` is written `~1`.
fn push_token(path: &mut String, token: &str) {
    path.push('/');
    path.push_str(&token.replace('~', "~0").replace('/', "~1"));
}
