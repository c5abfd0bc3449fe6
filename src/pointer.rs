//! The `current` pointer: which generation is current and which are retained.
//!
//! # Format (version 1)
//!
//! ```text
//! snapcache-pointer 1 <64-hex blake3 of the body>\n
//! <body: one line of JSON>\n
//! ```
//!
//! The body is `{"current":N,"last_generation":M,"checked_at":T,"generations":[...]}`
//! with one entry per retained generation (`generation`, `hash`, `bytes`,
//! `created_at`, `note`, and `pinned` only when it is true). The header carries the format version and a checksum
//! of the body, so a torn, truncated or tampered pointer is detected and never
//! half-trusted. The file is replaced only by an atomic rename, so readers see
//! the old or the new pointer, never a mix.
//!
//! Decoding never reads more than [`MAX_POINTER_BYTES`]: a huge file planted
//! in place of the pointer is an error, not an allocation.

use std::io::Read;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::hash::ContentHash;
use crate::time::Timestamp;

/// The pointer format version this build reads and writes.
pub const FORMAT_VERSION: u32 = 1;
/// The magic word that starts every pointer.
pub const MAGIC: &str = "snapcache-pointer";
/// Upper bound on a pointer's size; larger files are rejected unread.
pub const MAX_POINTER_BYTES: u64 = 64 * 1024;
/// Upper bound on a generation's note, in bytes (longer notes are cut).
pub const MAX_NOTE_BYTES: usize = 200;
/// Upper bound on retention, which keeps the pointer small: at most this
/// many generations besides the current one are ever retained, pinned ones
/// included, and at most this many are pinned.
pub const MAX_KEEP: usize = 100;
/// Upper bound on pinned generations: as many as retention ever keeps
/// besides the current one, so a store whose every retained generation but
/// the newest is pinned still fits the pointer's size bound after the next
/// publish.
pub const MAX_PINNED: usize = MAX_KEEP;
/// Upper bound on the `dropped` list (the oldest entries go first).
pub const MAX_DROPPED: usize = 32;

/// One retained generation, as recorded in the pointer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Generation {
    /// Generation number: starts at 1, strictly increasing, never reused.
    pub generation: u64,
    /// blake3 hash of the snapshot (and its file name).
    pub hash: ContentHash,
    /// Length of the snapshot in bytes.
    pub bytes: u64,
    /// When this generation was published.
    pub created_at: Timestamp,
    /// Free text describing the source (`--note`, or the `--exec` command).
    #[serde(default, deserialize_with = "one_clipped_line_opt")]
    pub note: Option<String>,
    /// Pinned: retention and age-based collection keep it, and it cannot be
    /// forgotten until it is unpinned. Written only when true, so a pointer
    /// without pins is byte for byte what earlier releases wrote.
    #[serde(default, skip_serializing_if = "is_false")]
    pub pinned: bool,
}

/// `skip_serializing_if` for [`Generation::pinned`].
fn is_false(value: &bool) -> bool {
    !*value
}

/// The decoded pointer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Pointer {
    /// The current generation (one of `generations`).
    pub current: u64,
    /// Highest generation number ever handed out; the next one is this + 1.
    pub last_generation: u64,
    /// Last time a refresh succeeded (changed or not).
    pub checked_at: Timestamp,
    /// Retained generations, oldest first.
    pub generations: Vec<Generation>,
    /// Number of this pointer in the store's sequence of commits: every
    /// pointer write adds one. On the lease backend the commit record
    /// `commits/<commit>` is created (exclusively) before the pointer is
    /// replaced, so only one writer can commit each number (see
    /// [`crate::commit_record`]). 0 in pointers of earlier releases.
    #[serde(default)]
    pub commit: u64,
    /// Snapshots of generations that left retention, kept on the lease
    /// backend until [`crate::commit_record::SNAPSHOT_GRACE`] after
    /// `dropped_at` (a reader on another host may still be reading one).
    /// Empty (and not written) on the advisory backend.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dropped: Vec<Dropped>,
}

/// A snapshot whose generation left retention, and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Dropped {
    /// The snapshot's hash (and file name).
    pub hash: ContentHash,
    /// When its generation left retention.
    pub dropped_at: Timestamp,
}

impl Pointer {
    /// The entry of the current generation.
    pub fn current_entry(&self) -> &Generation {
        // `decode` and every constructor guarantee that `current` is listed.
        self.find(self.current)
            .unwrap_or(&self.generations[self.generations.len() - 1])
    }

    pub fn find(&self, generation: u64) -> Option<&Generation> {
        self.generations.iter().find(|g| g.generation == generation)
    }

    /// Keeps the current generation, every pinned one and the `keep` newest
    /// unpinned others (at least one): `keep` counts generations *besides*
    /// the current one, so `keep = 1` always leaves one generation to roll
    /// to. After a rollback the current generation is older than some
    /// others; it stays, and the `keep` newest of the rest stay with it.
    ///
    /// Never more than [`MAX_KEEP`] others stay, pinned ones included: the
    /// pins fill the room first, the unpinned ones get what is left. (A
    /// writer never pins more than `MAX_KEEP`; should a pointer written by
    /// something else list more, the oldest pins beyond that go too, so the
    /// pointer stays under its size limit whatever it held.)
    pub fn apply_retention(&mut self, keep: usize) {
        let keep = keep.max(1);
        let current = self.current;
        let newest_first = |pinned: bool| {
            let mut numbers: Vec<u64> = self
                .generations
                .iter()
                .filter(|g| g.generation != current && g.pinned == pinned)
                .map(|g| g.generation)
                .collect();
            numbers.sort_unstable_by(|a, b| b.cmp(a));
            numbers
        };
        let mut pinned = newest_first(true);
        if pinned.len() > MAX_KEEP {
            tracing::warn!(
                pinned = pinned.len(),
                limit = MAX_KEEP,
                "the pointer lists more pinned generations than a store retains: the oldest pins are dropped"
            );
            pinned.truncate(MAX_KEEP);
        }
        let mut unpinned = newest_first(false);
        unpinned.truncate(keep.min(MAX_KEEP - pinned.len()));
        let now = Timestamp::now();
        let (kept, gone): (Vec<_>, Vec<_>) = std::mem::take(&mut self.generations)
            .into_iter()
            .partition(|g| {
                g.generation == current
                    || pinned.contains(&g.generation)
                    || unpinned.contains(&g.generation)
            });
        self.generations = kept;
        self.remember_dropped(gone, now);
    }

    /// The pinned generations, oldest first.
    pub fn pinned(&self) -> Vec<u64> {
        self.generations
            .iter()
            .filter(|g| g.pinned)
            .map(|g| g.generation)
            .collect()
    }

    /// Pins (or unpins) the listed generations that are retained; returns
    /// the numbers whose mark changed, in pointer order.
    pub fn set_pinned(&mut self, numbers: &[u64], pinned: bool) -> Vec<u64> {
        let mut changed = Vec::new();
        for g in &mut self.generations {
            if numbers.contains(&g.generation) && g.pinned != pinned {
                g.pinned = pinned;
                changed.push(g.generation);
            }
        }
        changed
    }

    /// Drops the listed generations (none of them the current one or a
    /// pinned one: the caller checks, and they are skipped here too),
    /// remembering their snapshots like retention does. Returns the numbers
    /// actually dropped, in pointer order.
    pub fn forget(&mut self, numbers: &[u64]) -> Vec<u64> {
        let (gone, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.generations)
            .into_iter()
            .partition(|g| {
                g.generation != self.current && !g.pinned && numbers.contains(&g.generation)
            });
        self.generations = kept;
        let forgotten = gone.iter().map(|g| g.generation).collect();
        self.remember_dropped(gone, Timestamp::now());
        forgotten
    }

    /// Drops the generations created before `cutoff`, except the one that
    /// was current at the cutoff (the newest created at or before it, so a
    /// rollback to "what I had then" still works), the current one and the
    /// pinned ones. Returns the numbers dropped.
    pub fn drop_older_than(&mut self, cutoff: std::time::SystemTime) -> Vec<u64> {
        let old: Vec<&Generation> = self
            .generations
            .iter()
            .filter(|g| g.created_at.system_time() <= cutoff)
            .collect();
        // The one current then is the newest old one, pinned or not.
        let then = old.iter().map(|g| g.generation).max();
        let drop: Vec<u64> = old
            .into_iter()
            .filter(|g| Some(g.generation) != then && g.generation != self.current && !g.pinned)
            .map(|g| g.generation)
            .collect();
        self.forget(&drop)
    }

    /// Remembers the snapshots of generations that left the pointer, for the
    /// lease backend's grace period (the advisory backend clears the list
    /// before it commits). A snapshot still referenced by a retained
    /// generation (equal content) is not dropped.
    fn remember_dropped(&mut self, gone: Vec<Generation>, now: Timestamp) {
        for g in gone {
            if !self.generations.iter().any(|k| k.hash == g.hash)
                && !self.dropped.iter().any(|d| d.hash == g.hash)
            {
                self.dropped.push(Dropped {
                    hash: g.hash,
                    dropped_at: now,
                });
            }
        }
        let excess = self.dropped.len().saturating_sub(MAX_DROPPED);
        self.dropped.drain(..excess);
    }

    /// A comma-separated list of retained generation numbers, for messages.
    pub fn retained_list(&self) -> String {
        self.generations
            .iter()
            .map(|g| g.generation.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Serializes header and body.
    pub fn encode(&self) -> Vec<u8> {
        // Serializing plain structs of strings and integers cannot fail.
        let mut body = serde_json::to_vec(self).unwrap_or_default();
        body.push(b'\n');
        let sum = ContentHash::of(&body);
        let mut out = format!("{MAGIC} {FORMAT_VERSION} {sum}\n").into_bytes();
        out.extend_from_slice(&body);
        out
    }

    /// Parses and checks a pointer; `path` is only used in errors.
    pub fn decode(bytes: &[u8], path: &Path) -> Result<Pointer> {
        Self::decode_fault(bytes, path).map_err(|fault| fault.error)
    }

    /// [`Pointer::decode`], telling a fault that a replace in progress can
    /// explain (empty, no header, a checksum that does not match: a file
    /// still being written) from one it cannot: a body whose checksum
    /// matches was written whole, by some writer, so if it does not parse
    /// or breaks an invariant, looking again will not change it.
    pub(crate) fn decode_fault(
        bytes: &[u8],
        path: &Path,
    ) -> std::result::Result<Pointer, DecodeFault> {
        let torn = |detail: String| DecodeFault {
            error: Error::CorruptPointer {
                path: path.to_path_buf(),
                detail,
            },
            torn: true,
        };
        if bytes.is_empty() {
            return Err(torn("the file is empty".into()));
        }
        let newline = bytes
            .iter()
            .take(128)
            .position(|&b| b == b'\n')
            .ok_or_else(|| torn("no header line".into()))?;
        let header = std::str::from_utf8(&bytes[..newline])
            .map_err(|_| torn("the header is not text".into()))?;
        let mut fields = header.split(' ');
        if fields.next() != Some(MAGIC) {
            return Err(torn(format!("the header does not start with {MAGIC:?}")));
        }
        let version: u32 = fields
            .next()
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| torn("the header has no format version".into()))?;
        if version != FORMAT_VERSION {
            return Err(DecodeFault {
                error: Error::UnsupportedVersion {
                    path: path.to_path_buf(),
                    found: version,
                    supported: FORMAT_VERSION,
                },
                torn: false,
            });
        }
        let sum = fields
            .next()
            .and_then(ContentHash::parse)
            .ok_or_else(|| torn("the header has no valid checksum".into()))?;
        if fields.next().is_some() {
            return Err(torn("the header has extra fields".into()));
        }
        let body = &bytes[newline + 1..];
        if ContentHash::of(body) != sum {
            return Err(torn(
                "the checksum does not match the body (torn or tampered write)".into(),
            ));
        }
        let settled = |detail: String| DecodeFault {
            torn: false,
            ..torn(detail)
        };
        let pointer: Pointer = serde_json::from_slice(body)
            .map_err(|e| settled(format!("the body is not a valid pointer: {e}")))?;
        pointer.check().map_err(settled)?;
        Ok(pointer)
    }

    /// Invariants that the checksum alone cannot promise (a buggy or hostile writer).
    fn check(&self) -> std::result::Result<(), String> {
        if self.generations.is_empty() {
            return Err("it lists no generations".into());
        }
        if !self
            .generations
            .windows(2)
            .all(|w| w[0].generation < w[1].generation)
        {
            return Err("its generations are not strictly increasing".into());
        }
        if self.find(self.current).is_none() {
            return Err(format!(
                "its current generation {} is not listed",
                self.current
            ));
        }
        let max = self
            .generations
            .iter()
            .map(|g| g.generation)
            .max()
            .unwrap_or(0);
        if self.generations.iter().any(|g| g.generation == 0) || self.last_generation < max {
            return Err("its generation numbers are inconsistent".into());
        }
        if self.generations.iter().any(|g| g.bytes == 0) {
            return Err("it lists an empty snapshot".into());
        }
        Ok(())
    }
}

/// Why [`Pointer::decode_fault`] refused a pointer.
#[derive(Debug)]
pub(crate) struct DecodeFault {
    /// What decoding reports.
    pub(crate) error: Error,
    /// Whether a replace still in progress explains it (see
    /// [`crate::reread`]): only then is the pointer worth reading again.
    pub(crate) torn: bool,
}

/// Reads at most [`MAX_POINTER_BYTES`] (+1, to detect oversize) from `reader`.
pub(crate) fn read_bounded(reader: impl Read, path: &Path) -> Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(4096);
    reader
        .take(MAX_POINTER_BYTES + 1)
        .read_to_end(&mut buf)
        .map_err(|e| Error::io("read the store pointer", path, e))?;
    if buf.len() as u64 > MAX_POINTER_BYTES {
        return Err(Error::CorruptPointer {
            path: path.to_path_buf(),
            detail: format!("it is larger than {MAX_POINTER_BYTES} bytes"),
        });
    }
    Ok(buf)
}

/// `text` with every control character (newline, tab, the ESC that starts
/// a terminal escape sequence, ...) and every bidirectional-text control
/// (a right-to-left override shows the rest of a line reversed) turned into
/// a space.
pub(crate) fn one_line_of(text: &str) -> String {
    let hidden = |c: char| {
        c.is_control()
            || matches!(c, '\u{61c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    };
    text.chars()
        .map(|c| if hidden(c) { ' ' } else { c })
        .collect()
}

/// Deserializes text that is shown to people (a lock holder's host and
/// command) as [`clip_note`] makes a note: [`one_line_of`] it, cut to
/// [`MAX_NOTE_BYTES`]. snapcache writes such text that way already; a
/// record written by hand or by another tool could otherwise move the
/// cursor, recolour or retitle the terminal that prints it, or put pages of
/// text into every lock-wait message.
pub(crate) fn one_clipped_line<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    String::deserialize(d).map(|s| clip_note(&s))
}

/// [`one_clipped_line`] for an optional field (a generation's note). The
/// checksum covers the bytes as stored, so a pointer still verifies.
pub(crate) fn one_clipped_line_opt<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<String>, D::Error> {
    Option::<String>::deserialize(d).map(|s| s.map(|s| clip_note(&s)))
}

/// Cuts a note to [`MAX_NOTE_BYTES`] on a character boundary, after turning
/// control characters (newlines, tabs, escapes) into spaces: a note is one
/// line of description, and JSON escapes a control character as six bytes,
/// which would let 101 long notes push the pointer past
/// [`MAX_POINTER_BYTES`].
pub(crate) fn clip_note(note: &str) -> String {
    let note = one_line_of(note);
    if note.len() <= MAX_NOTE_BYTES {
        return note;
    }
    // The ellipsis counts against the limit: the stored note is at most
    // MAX_NOTE_BYTES bytes in all.
    let mut end = MAX_NOTE_BYTES - '…'.len_utf8();
    while !note.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &note[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Pointer {
        let g = |n: u64, s: &[u8]| Generation {
            generation: n,
            hash: ContentHash::of(s),
            bytes: s.len() as u64,
            created_at: Timestamp::now(),
            note: Some(format!("gen {n}")),
            pinned: false,
        };
        Pointer {
            current: 2,
            last_generation: 3,
            checked_at: Timestamp::now(),
            generations: vec![g(1, b"a"), g(2, b"bb"), g(3, b"ccc")],
            commit: 7,
            dropped: Vec::new(),
        }
    }

    #[test]
    fn round_trips() {
        let p = sample();
        let decoded = Pointer::decode(&p.encode(), Path::new("current")).expect("decodes");
        assert_eq!(decoded, p);
    }

    #[test]
    fn a_pointer_with_full_retention_and_long_notes_stays_well_under_4_kib() {
        let mut p = sample();
        p.generations = (1..=6)
            .map(|n| Generation {
                generation: n,
                hash: ContentHash::of(&n.to_le_bytes()),
                bytes: u64::MAX,
                created_at: Timestamp::now(),
                note: Some(clip_note(&"x".repeat(1000))),
                pinned: false,
            })
            .collect();
        p.current = 6;
        p.last_generation = 6;
        assert!(
            p.encode().len() < 2900,
            "pointer is {} bytes",
            p.encode().len()
        );
    }

    /// The largest pointer a writer can produce: [`MAX_KEEP`] generations
    /// besides the current one, every number at its maximum, every note at
    /// its longest and made of the characters JSON escapes most expensively,
    /// every generation pinned (a writer pins at most [`MAX_KEEP`]; all
    /// 101 here, one more than can happen) and a full `dropped` list.
    #[test]
    fn the_largest_possible_pointer_fits_under_the_read_limit() {
        for worst in ["\"", "\\", "\u{1}", "\u{7f}", "\u{2028}"] {
            let mut p = sample();
            p.generations = (0..=MAX_KEEP as u64)
                .map(|i| Generation {
                    generation: u64::MAX - MAX_KEEP as u64 + i,
                    hash: ContentHash::of(&i.to_le_bytes()),
                    bytes: u64::MAX,
                    created_at: Timestamp::from(
                        std::time::UNIX_EPOCH + std::time::Duration::from_secs(253_402_300_799),
                    ),
                    note: Some(clip_note(&worst.repeat(1000))),
                    pinned: true,
                })
                .collect();
            p.current = u64::MAX;
            p.last_generation = u64::MAX;
            p.checked_at = p.generations[0].created_at;
            p.commit = u64::MAX;
            p.dropped = (0..MAX_DROPPED as u64)
                .map(|i| Dropped {
                    hash: ContentHash::of(&(i + 1000).to_le_bytes()),
                    dropped_at: p.checked_at,
                })
                .collect();
            let bytes = p.encode();
            eprintln!("worst case {worst:?}: {} bytes", bytes.len());
            assert!(
                (bytes.len() as u64) < MAX_POINTER_BYTES,
                "{worst:?}: a pointer of {} entries is {} bytes",
                p.generations.len(),
                bytes.len()
            );
            assert_eq!(Pointer::decode(&bytes, Path::new("current")).ok(), Some(p));
        }
    }

    #[test]
    fn any_flipped_byte_is_detected() {
        let bytes = sample().encode();
        for i in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[i] ^= 0x01;
            assert!(
                Pointer::decode(&damaged, Path::new("current")).is_err(),
                "flipping byte {i} went unnoticed"
            );
        }
    }

    #[test]
    fn every_truncation_is_detected() {
        let bytes = sample().encode();
        for len in 0..bytes.len() {
            assert!(
                Pointer::decode(&bytes[..len], Path::new("current")).is_err(),
                "truncated at {len}"
            );
        }
    }

    #[test]
    fn unknown_version_is_its_own_error() {
        let text = String::from_utf8(sample().encode())
            .expect("utf8")
            .replacen(" 1 ", " 7 ", 1);
        let err = Pointer::decode(text.as_bytes(), Path::new("current")).expect_err("rejected");
        assert!(
            matches!(err, Error::UnsupportedVersion { found: 7, .. }),
            "{err}"
        );
    }

    fn numbers(p: &Pointer) -> Vec<u64> {
        p.generations.iter().map(|g| g.generation).collect()
    }

    fn linear(n: u64, current: u64) -> Pointer {
        let mut p = sample();
        p.generations = (1..=n)
            .map(|i| Generation {
                generation: i,
                hash: ContentHash::of(&i.to_le_bytes()),
                bytes: 1,
                created_at: Timestamp::now(),
                note: None,
                pinned: false,
            })
            .collect();
        p.current = current;
        p.last_generation = n;
        p
    }

    #[test]
    fn retention_counts_generations_besides_the_current_one() {
        let mut p = linear(7, 7);
        p.apply_retention(5);
        assert_eq!(numbers(&p), vec![2, 3, 4, 5, 6, 7], "5 besides current 7");
        let mut p = linear(7, 7);
        p.apply_retention(1);
        assert_eq!(numbers(&p), vec![6, 7], "keep 1 leaves one rollback target");
        let mut p = linear(2, 2);
        p.apply_retention(0);
        assert_eq!(numbers(&p), vec![1, 2], "keep 0 is treated as 1");
    }

    #[test]
    fn retention_after_a_rollback_keeps_the_current_and_the_newest_others() {
        let mut p = sample();
        p.current = 1;
        p.apply_retention(1);
        assert_eq!(numbers(&p), vec![1, 3], "current 1 plus the newest other");
        let mut p = linear(7, 3);
        p.apply_retention(2);
        assert_eq!(numbers(&p), vec![3, 6, 7]);
        let mut p = linear(4, 2);
        p.apply_retention(5);
        assert_eq!(numbers(&p), vec![1, 2, 3, 4], "fewer than keep: all stay");
    }

    #[test]
    fn forget_drops_the_listed_generations_but_never_the_current_one() {
        let mut p = linear(5, 4);
        assert_eq!(p.forget(&[2, 4, 9]), vec![2], "4 is current, 9 unknown");
        assert_eq!(numbers(&p), vec![1, 3, 4, 5]);
        assert_eq!(p.dropped.len(), 1);
        assert_eq!(p.dropped[0].hash, ContentHash::of(&2u64.to_le_bytes()));
        // Equal content still referenced by a retained generation is not dropped.
        let mut p = linear(3, 3);
        p.generations[0].hash = p.generations[1].hash;
        assert_eq!(p.forget(&[1]), vec![1]);
        assert!(p.dropped.is_empty(), "{:?}", p.dropped);
    }

    #[test]
    fn older_than_keeps_the_generation_current_at_the_cutoff_and_the_current_one() {
        let at = |secs: u64| std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
        let mut p = linear(5, 5);
        for g in &mut p.generations {
            g.created_at = Timestamp::from(at(g.generation * 100));
        }
        // Cutoff at 350: 1, 2, 3 are older; 3 was current then and stays.
        assert_eq!(p.clone().drop_older_than(at(350)), vec![1, 2]);
        // Exactly at a creation time: that generation was current then.
        assert_eq!(p.clone().drop_older_than(at(300)), vec![1, 2]);
        // After a rollback to 1, the current one stays too.
        p.current = 1;
        let mut q = p.clone();
        assert_eq!(q.drop_older_than(at(450)), vec![2, 3]);
        assert_eq!(numbers(&q), vec![1, 4, 5]);
        assert_eq!(p.drop_older_than(at(50)), Vec::<u64>::new());
    }

    fn pin(p: &mut Pointer, numbers: &[u64]) {
        p.set_pinned(numbers, true);
    }

    #[test]
    fn a_pointer_without_pins_is_encoded_as_before_pins_existed() {
        let at = |secs: u64| {
            Timestamp::from(std::time::UNIX_EPOCH + std::time::Duration::from_millis(secs))
        };
        let mut p = sample();
        for (g, millis) in p.generations.iter_mut().zip([1_000, 2_000, 3_500]) {
            g.created_at = at(millis);
        }
        p.checked_at = at(4_250);
        let (a, b, c) = (
            ContentHash::of(b"a"),
            ContentHash::of(b"bb"),
            ContentHash::of(b"ccc"),
        );
        // The version-1 body as written before generations could be pinned.
        let body = format!(
            concat!(
                r#"{{"current":2,"last_generation":3,"checked_at":"1970-01-01T00:00:04.250Z","generations":["#,
                r#"{{"generation":1,"hash":"{a}","bytes":1,"created_at":"1970-01-01T00:00:01.000Z","note":"gen 1"}},"#,
                r#"{{"generation":2,"hash":"{b}","bytes":2,"created_at":"1970-01-01T00:00:02.000Z","note":"gen 2"}},"#,
                r#"{{"generation":3,"hash":"{c}","bytes":3,"created_at":"1970-01-01T00:00:03.500Z","note":"gen 3"}}"#,
                r#"],"commit":7}}"#,
                "\n"
            ),
            a = a,
            b = b,
            c = c
        );
        let expected = format!(
            "snapcache-pointer 1 {}\n{body}",
            ContentHash::of(body.as_bytes())
        );
        assert_eq!(String::from_utf8(p.encode()).ok(), Some(expected.clone()));
        // Pinned and unpinned again: the same bytes.
        pin(&mut p, &[1, 2]);
        let pinned = String::from_utf8(p.encode()).unwrap_or_default();
        assert_eq!(pinned.matches(r#","pinned":true"#).count(), 2, "{pinned}");
        p.set_pinned(&[1, 2], false);
        assert_eq!(String::from_utf8(p.encode()).ok(), Some(expected.clone()));
        // An entry without the key (every earlier pointer) reads as unpinned.
        let decoded = Pointer::decode(expected.as_bytes(), Path::new("current")).expect("decodes");
        assert!(decoded.generations.iter().all(|g| !g.pinned));
    }

    #[test]
    fn set_pinned_reports_only_the_marks_it_changed() {
        let mut p = linear(4, 4);
        assert_eq!(
            p.set_pinned(&[1, 3, 9], true),
            vec![1, 3],
            "9 is not retained"
        );
        assert_eq!(p.set_pinned(&[3, 4], true), vec![4], "3 was pinned already");
        assert_eq!(p.pinned(), vec![1, 3, 4]);
        assert_eq!(p.set_pinned(&[2, 3], false), vec![3]);
        assert_eq!(p.pinned(), vec![1, 4]);
    }

    #[test]
    fn retention_keeps_every_pin_besides_the_newest_unpinned_ones() {
        let mut p = linear(7, 7);
        pin(&mut p, &[1, 3]);
        p.apply_retention(1);
        assert_eq!(
            numbers(&p),
            vec![1, 3, 6, 7],
            "pins do not count against keep"
        );
        assert_eq!(p.pinned(), vec![1, 3]);
        // A pinned current generation stays once newer ones push it out of keep.
        let mut p = linear(3, 3);
        pin(&mut p, &[3]);
        for n in 4..=6 {
            p.generations.push(Generation {
                generation: n,
                pinned: false,
                ..p.generations[0].clone()
            });
            p.current = n;
            p.last_generation = n;
            p.apply_retention(1);
        }
        assert_eq!(numbers(&p), vec![3, 5, 6]);
        // Unpinned, it goes at the next retention.
        p.set_pinned(&[3], false);
        p.apply_retention(1);
        assert_eq!(numbers(&p), vec![5, 6]);
    }

    #[test]
    fn retention_with_many_pins_never_retains_more_than_max_keep_others() {
        let max = MAX_KEEP as u64;
        // All but one of the room pinned: the newest unpinned one still fits.
        let mut p = linear(max + 20, max + 20);
        let pins: Vec<u64> = (1..max).collect();
        pin(&mut p, &pins);
        p.apply_retention(5);
        assert_eq!(p.generations.len(), MAX_KEEP + 1);
        assert_eq!(p.pinned(), pins);
        assert_eq!(numbers(&p)[MAX_KEEP - 1..], [max + 19, max + 20]);
        // The most a writer pins: no room is left for unpinned ones, yet
        // the pins are all there to roll back to.
        let mut p = linear(max + 20, max + 20);
        let pins: Vec<u64> = (1..=max).collect();
        pin(&mut p, &pins);
        p.apply_retention(MAX_KEEP);
        assert_eq!(numbers(&p), (1..=max).chain([max + 20]).collect::<Vec<_>>());
        // A pointer from elsewhere with more pins than that: the newest
        // MAX_KEEP pins stay, the pointer stays bounded.
        let mut p = linear(max + 50, max + 50);
        let pins: Vec<u64> = (1..max + 50).collect();
        pin(&mut p, &pins);
        p.apply_retention(1);
        assert_eq!(p.generations.len(), MAX_KEEP + 1);
        assert_eq!(p.pinned(), (50..max + 50).collect::<Vec<_>>());
        // keep beyond MAX_KEEP (the wrappers clamp it; this does too).
        let mut p = linear(max + 20, max + 20);
        pin(&mut p, &[1, 2]);
        p.apply_retention(usize::MAX);
        assert_eq!(p.generations.len(), MAX_KEEP + 1);
        assert_eq!(numbers(&p)[..3], [1, 2, 22], "98 unpinned: 22 to 119");
    }

    #[test]
    fn older_than_and_forget_spare_pinned_generations() {
        let at = |secs: u64| std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
        let mut p = linear(5, 5);
        for g in &mut p.generations {
            g.created_at = Timestamp::from(at(g.generation * 100));
        }
        pin(&mut p, &[1]);
        // Cutoff at 350: 1, 2, 3 are older; 3 was current then, 1 is pinned.
        assert_eq!(p.clone().drop_older_than(at(350)), vec![2]);
        // The one current at the cutoff is pinned: it stays, nothing else does.
        pin(&mut p, &[3]);
        assert_eq!(p.clone().drop_older_than(at(450)), vec![2]);
        assert_eq!(p.forget(&[1, 2, 3]), vec![2], "pinned ones are skipped");
        assert_eq!(numbers(&p), vec![1, 3, 4, 5]);
    }

    #[test]
    fn notes_are_clipped_on_char_boundaries() {
        let clipped = clip_note(&"é".repeat(300));
        assert!(clipped.len() <= MAX_NOTE_BYTES + "…".len());
    }

    #[test]
    fn a_long_note_written_by_hand_is_read_clipped() {
        let long = format!("hand\u{1b}[31m{}", "y".repeat(20_000));
        let generation: Generation = serde_json::from_value(serde_json::json!({
            "generation": 1, "hash": ContentHash::of(b"x").to_hex(), "bytes": 1,
            "created_at": "2026-01-01T00:00:00Z", "note": long,
        }))
        .expect("a generation");
        let note = generation.note.expect("a note");
        assert!(note.len() <= MAX_NOTE_BYTES, "{} bytes", note.len());
        assert!(
            note.starts_with("hand [31myyy") && note.ends_with('…'),
            "{note}"
        );
    }

    #[test]
    fn control_characters_in_notes_become_spaces() {
        assert_eq!(clip_note("from a\nb\tc\u{1b}[31m"), "from a b c [31m");
        // Bidirectional-text controls too: an override reverses the rest.
        assert_eq!(
            clip_note("release\u{202e} cod.lmth\u{2066}x\u{200f}\u{85}"),
            "release  cod.lmth x  "
        );
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn generation() -> impl Strategy<Value = Generation> {
            (
                1u64..1_000_000,
                any::<[u8; 8]>(),
                1u64..u64::MAX,
                0u64..4_000_000_000_000,
                proptest::option::of(".{0,300}"),
                any::<bool>(),
            )
                .prop_map(|(n, seed, bytes, millis, note, pinned)| Generation {
                    generation: n,
                    hash: ContentHash::of(&seed),
                    bytes,
                    created_at: Timestamp::from(
                        std::time::UNIX_EPOCH + std::time::Duration::from_millis(millis),
                    ),
                    note: note.map(|n| clip_note(&n)),
                    pinned,
                })
        }

        fn pointer() -> impl Strategy<Value = Pointer> {
            (
                proptest::collection::vec(generation(), 1..8),
                any::<prop::sample::Index>(),
                0u64..1000,
                0u64..4_000_000_000_000,
            )
                .prop_map(|(mut gens, pick, extra, millis)| {
                    gens.sort_by_key(|g| g.generation);
                    gens.dedup_by_key(|g| g.generation);
                    let current = gens[pick.index(gens.len())].generation;
                    let last = gens.iter().map(|g| g.generation).max().unwrap_or(1) + extra;
                    Pointer {
                        current,
                        last_generation: last,
                        checked_at: Timestamp::from(
                            std::time::UNIX_EPOCH + std::time::Duration::from_millis(millis),
                        ),
                        generations: gens,
                        commit: extra,
                        dropped: Vec::new(),
                    }
                })
        }

        proptest! {
            #[test]
            fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
                let _ = Pointer::decode(&bytes, Path::new("current"));
            }

            #[test]
            fn arbitrary_bodies_behind_a_valid_header_never_panic(body in ".{0,512}") {
                let body = format!("{body}\n");
                let text = format!("{MAGIC} {FORMAT_VERSION} {}\n{body}", ContentHash::of(body.as_bytes()));
                let _ = Pointer::decode(text.as_bytes(), Path::new("current"));
            }

            #[test]
            fn encode_then_decode_round_trips(p in pointer()) {
                let decoded = Pointer::decode(&p.encode(), Path::new("current"));
                prop_assert_eq!(decoded.ok(), Some(p));
            }

            #[test]
            fn any_single_byte_change_is_rejected(p in pointer(), at in any::<prop::sample::Index>(), flip in 1u8..=255) {
                let mut bytes = p.encode();
                let i = at.index(bytes.len());
                bytes[i] ^= flip;
                prop_assert!(Pointer::decode(&bytes, Path::new("current")).is_err());
            }
        }
    }
}
