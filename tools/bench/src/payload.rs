//! Benchmark payloads: Kopi-shaped metadata from `snapcache-metagen`, made
//! unique per iteration by rewriting digits of the `last_updated` timestamp
//! in place (content-addressed stores would otherwise deduplicate repeated
//! writes and skip the work being measured).

use std::io::{self, BufWriter, Write};
use std::path::Path;

/// A payload and the position of its rewritable timestamp digits.
#[derive(Debug, Clone)]
pub struct Payload {
    /// The JSON document.
    pub bytes: Vec<u8>,
    stamp_at: usize,
}

/// Number of nanosecond digits in `last_updated` that [`Payload::stamp`]
/// rewrites.
const STAMP_DIGITS: usize = 9;

impl Payload {
    /// Generate a payload of about `size` bytes with metagen seed `seed`.
    pub fn generate(size: usize, seed: u64) -> io::Result<Self> {
        Self::from_bytes(snapcache_metagen::generate(size, seed))
    }

    /// Wrap an existing metagen document (e.g. read back from a file).
    pub fn from_bytes(bytes: Vec<u8>) -> io::Result<Self> {
        let key = b"\"last_updated\": \"";
        let start = find(&bytes, key)
            .ok_or_else(|| io::Error::other("generated payload has no last_updated"))?;
        // `2026-05-01T21:34:27.` is 20 characters; the nanoseconds follow.
        let stamp_at = start + key.len() + 20;
        let digits = bytes
            .get(stamp_at..stamp_at + STAMP_DIGITS)
            .ok_or_else(|| io::Error::other("short timestamp"))?;
        if !digits.iter().all(u8::is_ascii_digit) {
            return Err(io::Error::other("unexpected timestamp layout"));
        }
        Ok(Self { bytes, stamp_at })
    }

    /// Make the payload unique for `n` (mod 10^9) by rewriting the
    /// timestamp's nanosecond digits; the JSON stays valid and the same size.
    pub fn stamp(&mut self, n: u64) {
        let mut v = n % 1_000_000_000;
        for i in (0..STAMP_DIGITS).rev() {
            self.bytes[self.stamp_at + i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Stream a generated payload of about `size` bytes into `path` with bounded
/// memory (used for the 256 MiB peak-RSS runs).
pub fn write_file(path: &Path, size: usize, seed: u64) -> io::Result<u64> {
    let mut w = BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    let n = snapcache_metagen::write_to(&mut w, size, seed)?;
    w.flush()?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamping_keeps_json_valid_and_changes_bytes() -> io::Result<()> {
        let mut p = Payload::generate(64 * 1024, 1)?;
        let before = p.bytes.clone();
        p.stamp(123_456_789);
        assert_ne!(before, p.bytes);
        assert_eq!(before.len(), p.len());
        let v: serde_json::Value = serde_json::from_slice(&p.bytes).map_err(io::Error::other)?;
        let ts = v["last_updated"].as_str().unwrap_or_default();
        assert!(ts.ends_with(".123456789Z"), "{ts}");
        Ok(())
    }
}
