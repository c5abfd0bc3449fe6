//! One 64-byte block of a JSON document classified into bitmasks, bit `i`
//! standing for byte `i` (simdjson's "stage 1"): which bytes are quotes,
//! backslashes, whitespace, newlines and control bytes. The JSON check then walks the set bits of a few masks
//! instead of looking at every byte, so indentation and string bodies cost
//! next to nothing.
//!
//! The compares run 16 bytes at a time on `wide`'s safe SIMD vectors (SSE2
//! `pcmpeqb`/`pmovmskb` on x86_64, NEON on aarch64, plain arrays on other
//! targets), so this crate needs no `unsafe`. LLVM does not turn the
//! equivalent scalar loops into those instructions by itself.

use wide::u8x16;

/// Bytes per block: one bit per byte in a `u64`.
pub(super) const BLOCK: usize = 64;

/// A block's byte classes, one bit per byte.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Classes {
    /// `"`.
    pub quote: u64,
    /// `\`.
    pub backslash: u64,
    /// JSON whitespace: space, tab, line feed, carriage return.
    pub whitespace: u64,
    /// Line feed (lines are counted for error positions).
    pub newline: u64,
    /// Bytes below 0x20 (line feed, tab and carriage return included).
    pub control: u64,
}

/// The 16-bit mask of a vector compare's result, widened.
#[inline]
fn bits(v: u8x16) -> u64 {
    u64::from(v.move_mask() as u16)
}

/// The 64-bit mask of `test` over the four 16-byte lanes of a block.
#[inline]
fn mask(lanes: &[u8x16; 4], test: impl Fn(u8x16) -> u8x16) -> u64 {
    let mut m = 0;
    for (k, &v) in lanes.iter().enumerate() {
        m |= bits(test(v)) << (16 * k);
    }
    m
}

/// Classifies a block. `pmovmskb` is the scarce instruction (one port on
/// x86), so the classes that are usually absent (backslashes; tabs and
/// carriage returns, which tell line feeds apart from the other
/// whitespace control bytes) are first tested for the whole block at
/// once, and get their exact mask only when present.
#[inline]
pub(super) fn classify(block: &[u8; BLOCK]) -> Classes {
    let lanes: [u8x16; 4] =
        std::array::from_fn(|k| u8x16::new(std::array::from_fn(|j| block[16 * k + j])));
    let splat = u8x16::splat;
    let mut c = Classes::default();
    let mut any_backslash = splat(0);
    let mut any_tab_cr = splat(0);
    for (k, &v) in lanes.iter().enumerate() {
        let eq = |b: u8| v.cmp_eq(splat(b));
        let tab_cr = eq(b'\t') | eq(b'\r');
        any_backslash |= eq(b'\\');
        any_tab_cr |= tab_cr;
        // `b <= 0x1F` as `min(b, 0x1F) == b` (SSE2 has no unsigned `<`).
        let control = v.min(splat(0x1F)).cmp_eq(v);
        let shift = 16 * k;
        c.quote |= bits(eq(b'"')) << shift;
        c.whitespace |= bits(eq(b' ') | eq(b'\n') | tab_cr) << shift;
        c.control |= bits(control) << shift;
    }
    if bits(any_backslash) != 0 {
        c.backslash = mask(&lanes, |v| v.cmp_eq(splat(b'\\')));
    }
    c.newline = if bits(any_tab_cr) != 0 {
        mask(&lanes, |v| v.cmp_eq(splat(b'\n')))
    } else {
        // The whitespace control bytes are then line feeds only.
        c.control & c.whitespace
    };
    c
}

/// A block's classes and its string spans, as the JSON check's block walk
/// (and the bench's view of its first stages) starts every block.
#[derive(Debug, Clone, Copy)]
pub(super) struct Spans {
    /// The byte classes.
    pub classes: Classes,
    /// The quotes that are not escaped: the strings' own quotes.
    pub quotes: u64,
    /// The bytes from each opening quote up to (not including) its closing
    /// one, `in_string` carried in.
    pub inside: u64,
    /// The bytes a backslash escapes.
    pub escaped: u64,
    /// Whether the next block's first byte is escaped.
    pub escape_out: bool,
}

/// Classifies `block` and finds its strings: `in_string` (all ones or
/// zero) and `escape_carry` say how the previous block ended.
#[inline(always)]
pub(super) fn spans(block: &[u8; BLOCK], in_string: u64, escape_carry: bool) -> Spans {
    let classes = classify(block);
    let (escaped, escape_out) = if classes.backslash == 0 && !escape_carry {
        (0, false)
    } else {
        escaped(classes.backslash, escape_carry)
    };
    let quotes = classes.quote & !escaped;
    Spans {
        classes,
        quotes,
        inside: prefix_xor(quotes) ^ in_string,
        escaped,
        escape_out,
    }
}

/// Bytes per step of [`ascii_prefix`].
const ASCII_STEP: usize = 256;

/// The length of the longest prefix of `bytes`, in whole 256-byte steps,
/// that is all ASCII: UTF-8 by definition, so `from_utf8` needs to see only
/// the rest. One OR per 16 bytes and one `pmovmskb` per step, where
/// `from_utf8`'s own ASCII path costs several times as many instructions.
pub(super) fn ascii_prefix(bytes: &[u8]) -> usize {
    let mut n = 0;
    for step in bytes.chunks_exact(ASCII_STEP) {
        let mut any = u8x16::splat(0);
        for lane in step.chunks_exact(16) {
            let lane: [u8; 16] = std::array::from_fn(|j| lane[j]);
            any |= u8x16::new(lane);
        }
        if any.move_mask() != 0 {
            break;
        }
        n += ASCII_STEP;
    }
    n
}

/// Bit `i` of the result is the parity of bits `0..=i` of `x`: with `x`
/// the unescaped quotes, the bytes from an opening quote up to (not
/// including) its closing one.
#[inline]
pub(super) fn prefix_xor(mut x: u64) -> u64 {
    x ^= x << 1;
    x ^= x << 2;
    x ^= x << 4;
    x ^= x << 8;
    x ^= x << 16;
    x ^= x << 32;
    x
}

/// The bytes that a backslash escapes: each backslash that is not itself
/// escaped escapes the byte after it. `carry_in` says the block's first
/// byte is escaped (the previous block ended on an escaping backslash);
/// the second value says the same of the next block. Backslashes are rare
/// in metadata, so this walks them one by one.
#[inline]
pub(super) fn escaped(backslash: u64, carry_in: bool) -> (u64, bool) {
    let mut escaped = u64::from(carry_in);
    let mut escapers = backslash & !escaped;
    while escapers != 0 {
        let at = escapers.trailing_zeros();
        if at == 63 {
            return (escaped, true);
        }
        let next = 1u64 << (at + 1);
        escaped |= next;
        escapers &= !(next | (1u64 << at));
    }
    (escaped, false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The byte-by-byte definition of every class.
    fn classify_slowly(block: &[u8; BLOCK]) -> Classes {
        let mut c = Classes::default();
        for (i, &b) in block.iter().enumerate() {
            let bit = 1u64 << i;
            let set = |mask: &mut u64, yes: bool| {
                if yes {
                    *mask |= bit;
                }
            };
            set(&mut c.quote, b == b'"');
            set(&mut c.backslash, b == b'\\');
            set(&mut c.whitespace, matches!(b, b' ' | b'\t' | b'\n' | b'\r'));
            set(&mut c.newline, b == b'\n');
            set(&mut c.control, b < 0x20);
        }
        c
    }

    fn escaped_slowly(block: &[u8; BLOCK], carry_in: bool) -> (u64, bool) {
        let mut escaped = 0;
        let mut pending = carry_in;
        for (i, &b) in block.iter().enumerate() {
            if pending {
                escaped |= 1u64 << i;
                pending = false;
            } else if b == b'\\' {
                pending = true;
            }
        }
        (escaped, pending)
    }

    fn block_of(bytes: &[u8]) -> [u8; BLOCK] {
        std::array::from_fn(|i| bytes[i % bytes.len()])
    }

    #[test]
    fn every_byte_value_is_classified_like_the_definition() {
        for start in (0..=255u8).step_by(BLOCK) {
            let block: [u8; BLOCK] = std::array::from_fn(|i| start.wrapping_add(i as u8));
            assert_eq!(
                classify(&block),
                classify_slowly(&block),
                "bytes from {start}"
            );
        }
    }

    #[test]
    fn prefix_xor_marks_string_spans() {
        let block =
            block_of(br#"{"ab": "c", "d": 1}                                              "#);
        let quotes = classify(&block).quote;
        let inside = prefix_xor(quotes);
        for i in 0..BLOCK {
            let expected = block[..=i].iter().filter(|&&b| b == b'"').count() % 2 == 1;
            assert_eq!(inside >> i & 1 == 1, expected, "byte {i}");
        }
    }

    #[test]
    fn backslash_runs_escape_alternately_and_carry_into_the_next_block() {
        let mut block = [b'a'; BLOCK];
        block[3] = b'\\';
        block[10..13].copy_from_slice(b"\\\\\\");
        block[63] = b'\\';
        let (mask, carry) = escaped(classify(&block).backslash, false);
        assert_eq!(mask, (1 << 4) | (1 << 11) | (1 << 13));
        assert!(
            carry,
            "the last backslash escapes the next block's first byte"
        );
        let (mask, carry) = escaped(classify(&block).backslash, true);
        assert_eq!((mask, carry), escaped_slowly(&block, true));
    }

    #[test]
    fn the_ascii_prefix_stops_before_the_step_holding_the_first_high_byte() {
        let mut bytes = vec![b'a'; 1000];
        assert_eq!(ascii_prefix(&bytes), 768, "whole steps only");
        for at in [0, 1, 255, 256, 300, 511, 512, 767, 768, 999] {
            bytes[at] = 0x80;
            assert_eq!(ascii_prefix(&bytes), at / ASCII_STEP * ASCII_STEP, "{at}");
            bytes[at] = b'a';
        }
        assert_eq!(ascii_prefix(&[]), 0);
    }

    proptest! {
        #[test]
        fn classes_and_escapes_match_the_definition(
            bytes in proptest::collection::vec(
                prop_oneof![
                    prop::sample::select(b"\"\\ \t\n\r{}[]:,;Z{|0x\x00\x1f\x20\x7f\x80\xff".to_vec()),
                    any::<u8>(),
                ],
                BLOCK,
            ),
            carry in any::<bool>(),
        ) {
            let block = block_of(&bytes);
            prop_assert_eq!(classify(&block), classify_slowly(&block));
            prop_assert_eq!(escaped(classify(&block).backslash, carry), escaped_slowly(&block, carry));
        }
    }
}
