//! Payloads: JSON documents of an exact size, distinct for every refresh.

use std::io::Write;

use crate::rng::SplitMix64;

/// The smallest payload this module builds (the header must fit).
pub const MIN_BYTES: u64 = 1024;

/// A JSON document of exactly `size` bytes (at least [`MIN_BYTES`]).
///
/// The header names the run's seed, the writer and the refresh, so no two
/// refreshes of a run publish the same content (each is a new generation);
/// the body is an array of small objects with random values, padded with a
/// final string to the exact size.
pub fn generate(rng: &mut SplitMix64, size: u64, seed: u64, writer: &str, refresh: u64) -> Vec<u8> {
    let size = size.max(MIN_BYTES) as usize;
    let mut out = Vec::with_capacity(size);
    let _ = write!(
        out,
        "{{\"stress\":{{\"seed\":{seed},\"writer\":\"{writer}\",\"refresh\":{refresh},\"nonce\":\"{:016x}\",\"bytes\":{size}}},\"items\":[",
        rng.next_u64()
    );
    const TAIL: &[u8] = b"],\"pad\":\"\"}";
    let mut item = Vec::with_capacity(64);
    let mut id = 0u64;
    loop {
        item.clear();
        if id > 0 {
            item.push(b',');
        }
        let _ = write!(item, "{{\"id\":{id},\"v\":\"{:016x}\"}}", rng.next_u64());
        if out.len() + item.len() + TAIL.len() > size {
            break;
        }
        out.extend_from_slice(&item);
        id += 1;
    }
    out.extend_from_slice(&TAIL[..TAIL.len() - 2]);
    let mut bits = rng.next_u64();
    while out.len() + 2 < size {
        if bits < 26 {
            bits = rng.next_u64();
        }
        out.push(b'a' + (bits % 26) as u8);
        bits /= 26;
    }
    out.extend_from_slice(b"\"}");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_size_valid_json_and_distinct() {
        let mut rng = SplitMix64::new(42);
        let mut seen = std::collections::HashSet::new();
        for (i, size) in [1024u64, 1025, 1100, 4096, 65_537, 1 << 20, 3_000_001]
            .into_iter()
            .enumerate()
        {
            let p = generate(&mut rng, size, 42, "0", i as u64);
            assert_eq!(p.len() as u64, size);
            let v: serde_json::Value = serde_json::from_slice(&p).unwrap();
            assert_eq!(v["stress"]["refresh"], i as u64);
            assert!(seen.insert(blake3::hash(&p)));
        }
        // Same size, same writer and refresh, other random state: still distinct.
        let a = generate(&mut rng, 2048, 1, "w", 0);
        let b = generate(&mut rng, 2048, 1, "w", 0);
        assert_ne!(a, b);
    }

    #[test]
    fn sizes_below_the_minimum_are_raised() {
        let p = generate(&mut SplitMix64::new(0), 10, 0, "final", 0);
        assert_eq!(p.len() as u64, MIN_BYTES);
        serde_json::from_slice::<serde_json::Value>(&p).unwrap();
    }
}
