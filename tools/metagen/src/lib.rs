//! Deterministic generator of foojay-shaped Kopi metadata cache JSON.
//!
//! The output has the exact shape of Kopi's `metadata` cache file (see
//! `samples/kopi-metadata.json` in the repository):
//!
//! ```text
//! {"version": 1, "last_updated": "...Z",
//!  "distributions": {"<name>": {"distribution": "<name>" | {"other": "<name>"},
//!                               "display_name": "<name>",
//!                               "packages": [{"id": ..., "version": {...}, ...}]}},
//!  "synonym_map": {"<alias>": "<name>"}}
//! ```
//!
//! pretty-printed like `serde_json::to_string_pretty` (two-space indent, no
//! trailing newline). Packages are spread over a catalog of real vendors with
//! realistic versions, platforms, URLs and checksums. The document size is
//! steered to the requested byte count: packages are added while they fit,
//! then the synonym map absorbs the remainder with small entries, so the
//! output is at most `target_bytes` and at least `target_bytes - 1 KiB`
//! (in practice within a few dozen bytes) once `target_bytes` exceeds the
//! few hundred bytes of the empty skeleton.
//!
//! The same `(target_bytes, seed)` always yields the same bytes; generation
//! is streaming, so memory stays bounded (one package at a time) no matter
//! how large the output.
#![forbid(unsafe_code)]

pub mod catalog;
pub mod rng;

use std::fmt::Write as _;
use std::io::{self, Write};

use catalog::{CATALOG, DistKind, Package, Version};
use rng::SplitMix64;

/// Generate Kopi-cache-shaped metadata JSON of approximately `target_bytes`
/// (never more than `target_bytes` unless the target is smaller than the
/// empty skeleton, never less than `target_bytes - 1 KiB`), deterministic for
/// a given seed.
pub fn generate(target_bytes: usize, seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(target_bytes);
    // Writing into a Vec<u8> cannot fail.
    let _ = write_to(&mut out, target_bytes, seed);
    out
}

/// Same as [`generate`], streamed into a writer; returns the number of bytes
/// written. Memory use is bounded by one package (about 1 KiB) plus the
/// small synonym table, whatever `target_bytes` is. Wrap unbuffered writers
/// (files, stdout) in a `BufWriter`: output is written in package-sized
/// pieces.
pub fn write_to(w: &mut impl Write, target_bytes: usize, seed: u64) -> io::Result<u64> {
    let mut generator = Generator {
        w,
        written: 0,
        rng: SplitMix64::new(seed),
    };
    generator.run(target_bytes as u64)?;
    Ok(generator.written)
}

const DIST_CLOSE: &str = "\n      ]\n    }";
const DISTS_CLOSE_SYN_OPEN: &str = "\n  },\n  \"synonym_map\": {";
const SYN_CLOSE: &str = "\n  }\n}";

struct Generator<'a, W: Write> {
    w: &'a mut W,
    written: u64,
    rng: SplitMix64,
}

impl<W: Write> Generator<'_, W> {
    fn put(&mut self, s: &str) -> io::Result<()> {
        self.w.write_all(s.as_bytes())?;
        self.written += s.len() as u64;
        Ok(())
    }

    fn run(&mut self, target: u64) -> io::Result<()> {
        let header = format!(
            "{{\n  \"version\": 1,\n  \"last_updated\": \"{}\",\n  \"distributions\": {{",
            timestamp(&mut self.rng)
        );
        self.put(&header)?;

        let tail_len = (DISTS_CLOSE_SYN_OPEN.len() + SYN_CLOSE.len()) as u64;
        let synonyms = catalog::synonyms();
        let pool: u64 = synonyms
            .iter()
            .map(|(k, v)| synonym_entry(k, v, false).len() as u64)
            .sum();
        // Leave room for part of the synonym table on big documents, so that
        // large caches carry a realistic synonym map too.
        let syn_reserve = (pool / 2).min(target / 32);

        let mut remaining_weight: u64 = CATALOG.iter().map(|s| u64::from(s.weight)).sum();
        let mut first_dist = true;
        let mut buf = String::with_capacity(2048);
        for spec in CATALOG {
            let avail = target.saturating_sub(self.written + tail_len + syn_reserve);
            let weight = u64::from(spec.weight);
            let share = if remaining_weight <= weight {
                avail
            } else {
                ((u128::from(avail) * u128::from(weight)) / u128::from(remaining_weight)) as u64
            };
            remaining_weight -= weight;

            let dist_header = dist_header(spec, first_dist);
            buf.clear();
            render_package(&mut buf, &catalog::package(&mut self.rng, spec));
            let fixed = (dist_header.len() + DIST_CLOSE.len()) as u64;
            if fixed + buf.len() as u64 > share {
                continue;
            }
            self.put(&dist_header)?;
            first_dist = false;
            let mut used = fixed + buf.len() as u64;
            self.put(&buf)?;
            loop {
                buf.clear();
                buf.push(',');
                render_package(&mut buf, &catalog::package(&mut self.rng, spec));
                if used + buf.len() as u64 > share {
                    break;
                }
                used += buf.len() as u64;
                self.put(&buf)?;
            }
            self.put(DIST_CLOSE)?;
        }

        if first_dist {
            // No package fitted: an empty object, like serde_json prints it.
            self.put("}")?;
            self.put(",\n  \"synonym_map\": {}\n}")?;
            return Ok(());
        }

        self.put(DISTS_CLOSE_SYN_OPEN)?;
        let mut first_syn = true;
        let mut left = target.saturating_sub(self.written + SYN_CLOSE.len() as u64);
        for (k, v) in &synonyms {
            let entry = synonym_entry(k, v, !first_syn);
            if entry.len() as u64 <= left {
                left -= entry.len() as u64;
                self.put(&entry)?;
                first_syn = false;
            }
        }
        if first_syn {
            // serde_json prints an empty map as `{}`; the closing bracket
            // then follows directly.
            self.put("}\n}")?;
        } else {
            self.put(SYN_CLOSE)?;
        }
        Ok(())
    }
}

fn timestamp(rng: &mut SplitMix64) -> String {
    format!(
        "2026-{:02}-{:02}T{:02}:{:02}:{:02}.{:09}Z",
        rng.range(1, 12),
        rng.range(1, 28),
        rng.below(24),
        rng.below(60),
        rng.below(60),
        rng.below(1_000_000_000)
    )
}

fn dist_header(spec: &catalog::DistSpec, first: bool) -> String {
    let comma = if first { "" } else { "," };
    let key = spec.key;
    let distribution = match spec.kind {
        DistKind::Known => format!("\"{key}\""),
        DistKind::Other => format!("{{\n        \"other\": \"{key}\"\n      }}"),
    };
    format!(
        "{comma}\n    \"{key}\": {{\n      \"distribution\": {distribution},\n      \"display_name\": \"{key}\",\n      \"packages\": ["
    )
}

fn synonym_entry(k: &str, v: &str, comma: bool) -> String {
    format!("{}\n    \"{k}\": \"{v}\"", if comma { "," } else { "" })
}

/// Append a JSON string literal (with escaping) to `out`.
fn json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn opt_str(out: &mut String, s: Option<&str>) {
    match s {
        Some(s) => json_str(out, s),
        None => out.push_str("null"),
    }
}

fn num_array(out: &mut String, nums: &[u32], indent: usize) {
    if nums.is_empty() {
        out.push_str("[]");
        return;
    }
    out.push('[');
    for (i, n) in nums.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('\n');
        pad(out, indent + 2);
        let _ = write!(out, "{n}");
    }
    out.push('\n');
    pad(out, indent);
    out.push(']');
}

fn pad(out: &mut String, n: usize) {
    for _ in 0..n {
        out.push(' ');
    }
}

fn version(out: &mut String, v: &Version) {
    // The version object's fields sit at indent 12.
    out.push_str("{\n            \"components\": ");
    num_array(out, &v.components, 12);
    out.push_str(",\n            \"build\": ");
    match &v.build {
        Some(b) => num_array(out, b, 12),
        None => out.push_str("null"),
    }
    out.push_str(",\n            \"pre_release\": ");
    opt_str(out, v.pre_release);
    out.push_str("\n          }");
}

/// Render one package exactly as `serde_json::to_string_pretty` would at its
/// depth in the cache document (opening brace at indent 8), preceded by a
/// newline.
fn render_package(out: &mut String, p: &Package) {
    const F: &str = "\n          ";
    out.push_str("\n        {");
    out.push_str(F);
    out.push_str("\"id\": ");
    json_str(out, &p.id);
    out.push(',');
    out.push_str(F);
    out.push_str("\"distribution\": ");
    json_str(out, p.distribution);
    out.push(',');
    out.push_str(F);
    out.push_str("\"version\": ");
    version(out, &p.version);
    out.push(',');
    out.push_str(F);
    out.push_str("\"distribution_version\": ");
    version(out, &p.distribution_version);
    for (name, value) in [
        ("architecture", p.architecture),
        ("operating_system", p.operating_system),
        ("package_type", p.package_type),
        ("archive_type", p.archive_type),
        ("download_url", p.download_url.as_str()),
    ] {
        out.push(',');
        out.push_str(F);
        let _ = write!(out, "\"{name}\": ");
        json_str(out, value);
    }
    out.push(',');
    out.push_str(F);
    out.push_str("\"checksum\": ");
    opt_str(out, p.checksum.as_deref());
    out.push(',');
    out.push_str(F);
    out.push_str("\"checksum_type\": ");
    opt_str(out, p.checksum_type);
    let _ = write!(out, ",{F}\"size\": {}", p.size);
    out.push(',');
    out.push_str(F);
    out.push_str("\"lib_c_type\": ");
    json_str(out, p.lib_c_type);
    let _ = write!(out, ",{F}\"javafx_bundled\": {}", p.javafx_bundled);
    out.push(',');
    out.push_str(F);
    out.push_str("\"term_of_support\": ");
    json_str(out, p.term_of_support);
    out.push(',');
    out.push_str(F);
    out.push_str("\"release_status\": ");
    json_str(out, p.release_status);
    let _ = write!(
        out,
        ",{F}\"latest_build_available\": {}",
        p.latest_build_available
    );
    out.push_str("\n        }");
}

#[cfg(test)]
mod tests;
