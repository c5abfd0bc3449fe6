//! blake3 of a large input on two threads.
//!
//! A verified read hashes the whole snapshot, which on one core is about as
//! long as reading it; a second core is usually idle meanwhile. blake3 is a
//! binary tree over 1 KiB chunks, so the input splits at a chunk boundary
//! near its middle into whole subtrees: the first half's on a second thread,
//! the second half's on the caller's, each side reading its own bytes (from
//! memory or with positioned reads of the one open file) and hashing them
//! into chaining values, which are merged up to the root here. The result is
//! exactly `blake3::hash` of the whole input (property-tested below).
//!
//! Below [`TWO_THREADS_FROM`] the caller hashes on one thread: starting a
//! thread and waking the other core for it cost about 120 µs on the 2-core
//! virtual machine the bench ran on (an empty thread's spawn and join),
//! where a read of 1 MiB, hashed on two threads, came out no faster than on
//! one, and one of 8 MiB about a third faster (docs/performance.md). When
//! no thread can be started, the caller hashes on one thread.

pub(crate) use blake3::hazmat::HasherExt;
use blake3::hazmat::{self, ChainingValue, Mode};
use blake3::{CHUNK_LEN, Hash, Hasher};

/// Inputs at least this long are hashed on two threads.
pub(crate) const TWO_THREADS_FROM: u64 = 1024 * 1024;

/// A contiguous part of the input that is a whole subtree of blake3's tree:
/// what one [`Side`] hashes into one chaining value ([`subtree_hasher`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Subtree {
    /// Offset of its first byte in the input (a multiple of 1 KiB).
    pub(crate) start: u64,
    /// Its length in bytes (at least 1).
    pub(crate) len: u64,
}

/// One side's work: its subtrees, in input order, each to be hashed into a
/// chaining value; together they cover a contiguous range of the input.
pub(crate) type Side<'a> = &'a [Subtree];

/// A hasher for one subtree: feed it exactly the subtree's bytes, in order,
/// then take `finalize_non_root()`.
pub(crate) fn subtree_hasher(subtree: Subtree) -> Hasher {
    let mut hasher = Hasher::new();
    hasher.set_input_offset(subtree.start);
    hasher
}

/// The chaining value of one subtree held in memory.
pub(crate) fn subtree_cv(subtree: Subtree, bytes: &[u8]) -> ChainingValue {
    subtree_hasher(subtree).update(bytes).finalize_non_root()
}

/// Where the input is cut between the sides: the chunk boundary at or below
/// its middle. `None` when the input is too short to cut (one chunk or
/// less on one side).
pub(crate) fn cut(len: u64) -> Option<u64> {
    let chunk = CHUNK_LEN as u64;
    let cut = len / 2 / chunk * chunk;
    (cut >= chunk && cut < len).then_some(cut)
}

/// The blake3 hash of an input of `len` bytes cut at `cut(len)`: `first`
/// hashes the subtrees before the cut (on a second thread), `second` those
/// after it (on the caller's). Each returns one chaining value per subtree
/// it was given, in order, or its error; the first error wins. `None` when
/// `len` cannot be cut (see [`cut`]): hash it on one thread.
pub(crate) fn two_sided<E: Send>(
    len: u64,
    first: impl FnOnce(Side<'_>) -> Result<Vec<ChainingValue>, E> + Send,
    second: impl FnOnce(Side<'_>) -> Result<Vec<ChainingValue>, E>,
) -> Option<Result<Hash, E>> {
    let cut = cut(len)?;
    let (mut before, mut after) = (Vec::new(), Vec::new());
    plan(0, len, cut, &mut before, &mut after);
    let (before_cvs, after_cvs) = std::thread::scope(|scope| {
        let before = &before;
        let spawned = std::thread::Builder::new()
            .name("snapcache-hash".into())
            .spawn_scoped(scope, move || first(before));
        match spawned {
            Ok(worker) => {
                let after_cvs = second(&after);
                let before_cvs = worker.join().ok();
                (before_cvs, after_cvs)
            }
            // No thread to be had: the closure is gone with the error, and
            // the caller hashes on one thread instead.
            Err(_) => (None, second(&after)),
        }
    });
    let before_cvs = before_cvs?;
    Some(join(
        len,
        cut,
        before_cvs,
        after_cvs,
        before.len(),
        after.len(),
    ))
}

/// Merges the two sides' chaining values up to the root hash.
fn join<E>(
    len: u64,
    cut: u64,
    before_cvs: Result<Vec<ChainingValue>, E>,
    after_cvs: Result<Vec<ChainingValue>, E>,
    before_count: usize,
    after_count: usize,
) -> Result<Hash, E> {
    let (before_cvs, after_cvs) = (before_cvs?, after_cvs?);
    // A side that returned another number of values than it was given
    // subtrees is a bug in the caller; hashing garbage would report a
    // damaged snapshot, so the debug build says so first.
    debug_assert_eq!(
        (before_cvs.len(), after_cvs.len()),
        (before_count, after_count)
    );
    let mut cvs = before_cvs.into_iter().chain(after_cvs);
    let left = hazmat::left_subtree_len(len);
    let l = node(0, left, cut, &mut cvs);
    let r = node(left, len - left, cut, &mut cvs);
    Ok(hazmat::merge_subtrees_root(&l, &r, Mode::Hash))
}

/// The whole subtrees that cover `[start, start + len)` without crossing
/// `cut`, in order, sorted into the sides: blake3's own split of each
/// subtree that straddles the cut, down to where the cut is a boundary.
fn plan(start: u64, len: u64, cut: u64, before: &mut Vec<Subtree>, after: &mut Vec<Subtree>) {
    if start + len <= cut {
        before.push(Subtree { start, len });
    } else if start >= cut {
        after.push(Subtree { start, len });
    } else {
        // The cut is a chunk boundary strictly inside: more than one chunk.
        let left = hazmat::left_subtree_len(len);
        plan(start, left, cut, before, after);
        plan(start + left, len - left, cut, before, after);
    }
}

/// The chaining value of the (non-root) subtree `[start, start + len)`,
/// from the leaves' values in `cvs`, in the order `plan` listed them.
fn node(
    start: u64,
    len: u64,
    cut: u64,
    cvs: &mut impl Iterator<Item = ChainingValue>,
) -> ChainingValue {
    if start + len <= cut || start >= cut {
        // Every leaf has a value when the sides kept their contract (see
        // `join`); a missing one merges as zeros and fails the comparison.
        return cvs.next().unwrap_or_default();
    }
    let left = hazmat::left_subtree_len(len);
    let l = node(start, left, cut, cvs);
    let r = node(start + left, len - left, cut, cvs);
    hazmat::merge_subtrees_non_root(&l, &r, Mode::Hash)
}

/// blake3 of `bytes`, on two threads from [`TWO_THREADS_FROM`] on (the
/// tests' way in; the store's callers read as they hash, `snapshot.rs`).
#[cfg(test)]
pub(crate) fn of_slice(bytes: &[u8]) -> Hash {
    if (bytes.len() as u64) < TWO_THREADS_FROM {
        return blake3::hash(bytes);
    }
    let cvs = |side: Side<'_>| -> Result<Vec<ChainingValue>, std::convert::Infallible> {
        Ok(side
            .iter()
            .map(|s| subtree_cv(*s, &bytes[range(*s)]))
            .collect())
    };
    match two_sided(bytes.len() as u64, cvs, cvs) {
        Some(Ok(hash)) => hash,
        Some(Err(never)) => match never {},
        None => blake3::hash(bytes),
    }
}

/// The byte range of a subtree, for indexing an in-memory input. The
/// subtrees come from [`plan`] over that input's length, so they fit it.
#[cfg(test)]
pub(crate) fn range(s: Subtree) -> std::ops::Range<usize> {
    let start = usize::try_from(s.start).unwrap_or(usize::MAX);
    let len = usize::try_from(s.len).unwrap_or(usize::MAX);
    start..start.saturating_add(len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn input(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 10) as u8)
            .collect()
    }

    #[test]
    fn equals_blake3_at_the_edges_of_the_tree() {
        let chunk = CHUNK_LEN;
        let mut lens = vec![0, 1, chunk, chunk + 1, 2 * chunk, 2 * chunk + 1, 3 * chunk];
        for p in 11..=23 {
            let n = 1usize << p;
            lens.extend([n - 1, n, n + 1, n + chunk, n + n / 2, 3 * n - 7]);
        }
        for len in lens {
            let bytes = input(len, 7);
            assert_eq!(of_slice(&bytes), blake3::hash(&bytes), "len {len}");
            if let Some(result) = two_sided(
                len as u64,
                |side| {
                    Ok::<_, ()>(
                        side.iter()
                            .map(|s| subtree_cv(*s, &bytes[range(*s)]))
                            .collect(),
                    )
                },
                |side| {
                    Ok(side
                        .iter()
                        .map(|s| subtree_cv(*s, &bytes[range(*s)]))
                        .collect())
                },
            ) {
                assert_eq!(result, Ok(blake3::hash(&bytes)), "two sided, len {len}");
            } else {
                assert!(len < 2 * chunk + 2, "len {len} should be cut");
            }
        }
    }

    #[test]
    fn the_sides_cover_the_input_once_in_order_and_split_near_the_middle() {
        for len in [2049u64, 4096, 1 << 20, (1 << 20) + 1, 8_388_602, 3_000_001] {
            let cut = cut(len).expect("cut");
            let (mut before, mut after) = (Vec::new(), Vec::new());
            plan(0, len, cut, &mut before, &mut after);
            let mut at = 0;
            for s in before.iter().chain(&after) {
                assert_eq!(s.start, at, "len {len}");
                assert!(s.len > 0);
                at += s.len;
            }
            assert_eq!(at, len);
            let first: u64 = before.iter().map(|s| s.len).sum();
            assert_eq!(first, cut);
            assert!(
                first.abs_diff(len - first) <= CHUNK_LEN as u64 * 2,
                "len {len}"
            );
        }
    }

    #[test]
    fn an_error_on_either_side_is_returned() {
        let len = 1 << 20;
        let ok = |side: Side<'_>| Ok(vec![[0u8; 32]; side.len()]);
        let failed = two_sided(len, |_| Err("first"), ok);
        assert_eq!(failed, Some(Err("first")));
        let failed = two_sided(len, ok, |_| Err("second"));
        assert_eq!(failed, Some(Err("second")));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn any_length_and_content_hash_as_blake3(len in 0usize..(3 << 20), seed in any::<u8>()) {
            let bytes = input(len, seed);
            prop_assert_eq!(of_slice(&bytes), blake3::hash(&bytes));
        }
    }
}
