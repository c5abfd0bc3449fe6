//! Snapshot files: `snapshots/<hash>`, immutable once published.
//!
//! A snapshot is trusted only after its length and blake3 hash match what the
//! pointer recorded; [`read_verified`] never hands out bytes that did not.

use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;

use crate::durable::{FileKind, fill, fill_at, open_no_follow_with_metadata, wrong_type_of};
use crate::hash::ContentHash;
use crate::parallel_hash::{self, Side, Subtree};

/// Why a snapshot file failed verification.
#[derive(Debug)]
pub(crate) enum SnapshotFault {
    /// The file does not exist.
    Missing,
    /// It exists but is not a regular file (a directory, a symlink, a FIFO, ...).
    NotAFile(FileKind),
    /// Its length differs from the recorded one.
    Length { expected: u64, found: u64 },
    /// Its content hash differs from its name.
    Hash { found: ContentHash },
    /// It could not be read.
    Io(io::Error),
}

impl SnapshotFault {
    /// A short machine-friendly name (`verify --json` uses it as `kind`).
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            SnapshotFault::Missing => "missing",
            SnapshotFault::NotAFile(_) => "not-a-file",
            SnapshotFault::Length { .. } => "length",
            SnapshotFault::Hash { .. } => "hash",
            SnapshotFault::Io(_) => "io",
        }
    }

    pub(crate) fn detail(&self) -> String {
        match self {
            SnapshotFault::Missing => "the file is missing".into(),
            SnapshotFault::NotAFile(kind) => {
                format!("it is {}, not a regular file", kind.describe())
            }
            SnapshotFault::Length { expected, found } => {
                format!("it is {found} bytes long, the pointer recorded {expected}")
            }
            SnapshotFault::Hash { found } => {
                format!("its content hashes to {found}, not to its name (tampered or damaged)")
            }
            SnapshotFault::Io(e) => format!("it could not be read: {e}"),
        }
    }
}

fn open_checked(path: &Path, expected_len: u64) -> Result<std::fs::File, SnapshotFault> {
    // The gate never follows a link, never blocks on a FIFO or device and
    // hands out regular files only; its check on the descriptor also gives
    // the length.
    let (file, meta) = open_no_follow_with_metadata(path).map_err(|e| match wrong_type_of(&e) {
        Some(wrong) => SnapshotFault::NotAFile(wrong.found),
        None if e.kind() == io::ErrorKind::NotFound => SnapshotFault::Missing,
        None => SnapshotFault::Io(e),
    })?;
    if meta.len() != expected_len {
        return Err(SnapshotFault::Length {
            expected: expected_len,
            found: meta.len(),
        });
    }
    Ok(file)
}

/// Reads a whole snapshot into memory and verifies its length and hash.
///
/// The buffer is allocated zeroed at its final size (`calloc`: for a large
/// snapshot fresh pages that are zero already, nothing to clear) and filled
/// by reads of everything still missing, one `read` for the whole file in
/// the usual case; `read_to_end` through a `Take` would instead grow its
/// reads from 8 KiB, eight calls for 1 MiB.
pub(crate) fn read_verified(
    path: &Path,
    hash: &ContentHash,
    expected_len: u64,
) -> Result<Vec<u8>, SnapshotFault> {
    let mut file = open_checked(path, expected_len)?;
    let len = usize::try_from(expected_len).map_err(|_| {
        SnapshotFault::Io(io::Error::new(
            io::ErrorKind::OutOfMemory,
            "the snapshot is larger than this platform's address space",
        ))
    })?;
    let mut bytes = vec![0u8; len];
    if let Some(found) = read_on_two_threads(&file, &mut bytes) {
        let found = found.map_err(SnapshotFault::Io)?;
        return judge(&file, expected_len, found, hash).map(|()| bytes);
    }
    let filled = fill(&mut file, &mut bytes).map_err(SnapshotFault::Io)?;
    // One byte more than expected tells a file that grew after the stat.
    let grew = filled == len && fill(&mut file, &mut [0u8; 1]).map_err(SnapshotFault::Io)? > 0;
    if filled != len || grew {
        return Err(SnapshotFault::Length {
            expected: expected_len,
            found: filled as u64 + u64::from(grew),
        });
    }
    let found = ContentHash::of(&bytes);
    if found != *hash {
        return Err(SnapshotFault::Hash { found });
    }
    Ok(bytes)
}

/// Bytes hashed per read while verifying: bounded memory whatever the
/// snapshot's size, large enough for blake3's wide SIMD paths.
const VERIFY_CHUNK: usize = 256 * 1024;

/// A snapshot that verified, still open, with the buffer that verified it.
#[derive(Debug)]
pub(crate) struct Opened {
    /// At the start of the file when `held` is false.
    pub(crate) file: std::fs::File,
    /// The verification buffer.
    pub(crate) buf: Vec<u8>,
    /// Whether `buf` starts with the whole verified content (a snapshot
    /// shorter than one chunk): it is then copied from memory, unread again.
    pub(crate) held: bool,
}

/// Opens a snapshot and verifies its length and hash by streaming it through
/// the hasher in bounded chunks, from the one open descriptor. The caller
/// can then copy exactly `expected_len` bytes out (see
/// `VerifiedSnapshot::copy_to`) without holding the snapshot in memory: from
/// the descriptor, rewound to the start, or, for a snapshot shorter than one
/// chunk, from the buffer it was read into.
pub(crate) fn open_verified(
    path: &Path,
    hash: &ContentHash,
    expected_len: u64,
) -> Result<Opened, SnapshotFault> {
    let mut file = open_checked(path, expected_len)?;
    let short = usize::try_from(expected_len)
        .ok()
        .filter(|&len| len < VERIFY_CHUNK);
    if let Some(len) = short {
        // One byte more than expected, so a file that grew shows up.
        let mut buf = vec![0u8; len + 1];
        let read = fill(&mut file, &mut buf).map_err(SnapshotFault::Io)?;
        if read != len {
            return Err(SnapshotFault::Length {
                expected: expected_len,
                found: read as u64,
            });
        }
        let found = ContentHash::of(&buf[..len]);
        if found != *hash {
            return Err(SnapshotFault::Hash { found });
        }
        return Ok(Opened {
            file,
            buf,
            held: true,
        });
    }
    let mut buf = vec![0u8; VERIFY_CHUNK];
    if let Some(found) = stream_on_two_threads(&file, expected_len, &mut buf) {
        let found = found.map_err(SnapshotFault::Io)?;
        judge(&file, expected_len, found, hash)?;
        // Positioned reads leave the cursor where it was, except on Windows.
        file.seek(SeekFrom::Start(0)).map_err(SnapshotFault::Io)?;
        return Ok(Opened {
            file,
            buf,
            held: false,
        });
    }
    let mut hasher = blake3::Hasher::new();
    let mut read = 0u64;
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(SnapshotFault::Io(e)),
        };
        read += n as u64;
        // Stop at once on a file that grew after the stat (one byte more
        // than expected is enough to tell).
        if read > expected_len {
            break;
        }
        hasher.update(&buf[..n]);
    }
    if read != expected_len {
        return Err(SnapshotFault::Length {
            expected: expected_len,
            found: read,
        });
    }
    let found = ContentHash::from_blake3(hasher.finalize());
    if found != *hash {
        return Err(SnapshotFault::Hash { found });
    }
    file.seek(SeekFrom::Start(0)).map_err(SnapshotFault::Io)?;
    Ok(Opened {
        file,
        buf,
        held: false,
    })
}

/// The verdict on a snapshot that was read whole, in parts, at positions:
/// no byte past the expected length (a file that grew after the stat) and
/// the expected hash.
fn judge(
    file: &std::fs::File,
    expected_len: u64,
    found: blake3::Hash,
    hash: &ContentHash,
) -> Result<(), SnapshotFault> {
    if fill_at(file, &mut [0u8; 1], expected_len).map_err(SnapshotFault::Io)? > 0 {
        return Err(SnapshotFault::Length {
            expected: expected_len,
            found: expected_len + 1,
        });
    }
    let found = ContentHash::from_blake3(found);
    if found != *hash {
        return Err(SnapshotFault::Hash { found });
    }
    Ok(())
}

/// Reads a snapshot of at least `parallel_hash::TWO_THREADS_FROM` bytes
/// into `bytes` (its expected length) and hashes it, each half on its own
/// thread (see `parallel_hash`): the page faults, the copies and the hash
/// of both halves overlap. `None`: read it on one thread instead (too
/// short to split, or the file ended early: that path reports how long it
/// is).
fn read_on_two_threads(file: &std::fs::File, bytes: &mut [u8]) -> Option<io::Result<blake3::Hash>> {
    let len = bytes.len() as u64;
    if len < parallel_hash::TWO_THREADS_FROM {
        return None;
    }
    let cut = parallel_hash::cut(len)?;
    let (front, back) = bytes.split_at_mut(usize::try_from(cut).ok()?);
    let side = |buf: &mut [u8], base: u64, subtrees: Side<'_>| {
        if fill_at(file, buf, base)? < buf.len() {
            return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
        }
        subtrees
            .iter()
            .map(|s| Ok(parallel_hash::subtree_cv(*s, within(buf, base, *s)?)))
            .collect()
    };
    let hashed = parallel_hash::two_sided(
        len,
        move |subtrees| side(front, 0, subtrees),
        move |subtrees| side(back, cut, subtrees),
    )?;
    match hashed {
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => None,
        hashed => Some(hashed),
    }
}

/// Hashes a snapshot of at least `parallel_hash::TWO_THREADS_FROM` bytes in
/// bounded chunks, each half on its own thread with its own buffer (the
/// second half through `buf`). `None` as for [`read_on_two_threads`].
fn stream_on_two_threads(
    file: &std::fs::File,
    len: u64,
    buf: &mut [u8],
) -> Option<io::Result<blake3::Hash>> {
    if len < parallel_hash::TWO_THREADS_FROM {
        return None;
    }
    let side = |buf: &mut [u8], subtrees: Side<'_>| {
        subtrees
            .iter()
            .map(|s| {
                let mut hasher = parallel_hash::subtree_hasher(*s);
                let end = s.start + s.len;
                let mut at = s.start;
                while at < end {
                    let want = usize::try_from(end - at).map_or(buf.len(), |n| n.min(buf.len()));
                    let piece = &mut buf[..want];
                    if fill_at(file, piece, at)? < want {
                        return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
                    }
                    hasher.update(piece);
                    at += want as u64;
                }
                Ok(parallel_hash::HasherExt::finalize_non_root(&hasher))
            })
            .collect()
    };
    let hashed = parallel_hash::two_sided(
        len,
        move |subtrees| side(&mut vec![0u8; VERIFY_CHUNK], subtrees),
        move |subtrees| side(buf, subtrees),
    )?;
    match hashed {
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => None,
        hashed => Some(hashed),
    }
}

/// The bytes of `subtree` in `buf`, which holds the input from `base` on.
fn within(buf: &[u8], base: u64, subtree: Subtree) -> io::Result<&[u8]> {
    let at = subtree
        .start
        .checked_sub(base)
        .and_then(|a| usize::try_from(a).ok());
    let len = usize::try_from(subtree.len).ok();
    at.zip(len)
        .and_then(|(at, len)| buf.get(at..at.checked_add(len)?))
        .ok_or_else(|| io::Error::other("a hashed part lies outside its buffer"))
}

/// Verifies a snapshot file by streaming it through the hasher.
pub(crate) fn verify_file(
    path: &Path,
    hash: &ContentHash,
    expected_len: u64,
) -> Result<(), SnapshotFault> {
    open_verified(path, hash, expected_len).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_with(dir: &Path, bytes: &[u8]) -> std::path::PathBuf {
        let path = dir.join("snap");
        std::fs::write(&path, bytes).expect("write the test file");
        path
    }

    /// The exact-size read returns every byte, whatever the size: empty,
    /// one byte, and several MiB (more than any single chunk of a read).
    #[test]
    fn read_verified_returns_exactly_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        for len in [0usize, 1, 4096, 3 * 1024 * 1024 + 17] {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
            let path = file_with(dir.path(), &bytes);
            let read = read_verified(&path, &ContentHash::of(&bytes), len as u64)
                .unwrap_or_else(|e| panic!("{len} bytes: {}", e.detail()));
            assert_eq!(read, bytes, "{len} bytes");
        }
    }

    #[test]
    fn read_verified_refuses_a_wrong_length_or_hash() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = file_with(dir.path(), b"[1,2,3]");
        let hash = ContentHash::of(b"[1,2,3]");
        for recorded in [6, 8, 0] {
            match read_verified(&path, &hash, recorded) {
                Err(SnapshotFault::Length { expected, found }) => {
                    assert_eq!((expected, found), (recorded, 7));
                }
                other => panic!("recorded {recorded}: {other:?}"),
            }
        }
        let other = ContentHash::of(b"[1,2,4]");
        match read_verified(&path, &other, 7) {
            Err(SnapshotFault::Hash { found }) => assert_eq!(found, hash),
            other => panic!("{other:?}"),
        }
        match read_verified(&dir.path().join("absent"), &hash, 7) {
            Err(SnapshotFault::Missing) => {}
            other => panic!("{other:?}"),
        }
    }

    /// From `parallel_hash::TWO_THREADS_FROM` on, both halves are read and
    /// hashed on their own threads: the whole file comes back, and a byte
    /// changed anywhere (either side of the cut, at its edges) is found,
    /// by the whole read and by the streamed one.
    #[test]
    fn the_two_thread_reads_return_the_file_and_find_any_changed_byte() {
        let dir = tempfile::tempdir().expect("tempdir");
        let from = parallel_hash::TWO_THREADS_FROM as usize;
        for len in [from - 1, from, 1024 * 1024 + 3, 3 * 1024 * 1024 + 1] {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 13 % 251) as u8).collect();
            let path = file_with(dir.path(), &bytes);
            let hash = ContentHash::of(&bytes);
            let read = read_verified(&path, &hash, len as u64)
                .unwrap_or_else(|e| panic!("{len} bytes: {}", e.detail()));
            assert_eq!(read, bytes, "{len} bytes");
            let mut opened = open_verified(&path, &hash, len as u64)
                .unwrap_or_else(|e| panic!("{len} bytes: {}", e.detail()));
            let mut copied = Vec::new();
            opened.file.read_to_end(&mut copied).expect("read back");
            assert_eq!(copied, bytes, "{len} bytes: the cursor is at the start");
            let cut = parallel_hash::cut(len as u64).expect("cut") as usize;
            for at in [0, cut - 1, cut, len - 1] {
                let mut changed = bytes.clone();
                changed[at] ^= 1;
                std::fs::write(&path, &changed).expect("write");
                let whole = read_verified(&path, &hash, len as u64);
                assert!(
                    matches!(whole, Err(SnapshotFault::Hash { found }) if found == ContentHash::of(&changed)),
                    "{len} bytes, changed at {at}: {whole:?}"
                );
                let streamed = open_verified(&path, &hash, len as u64);
                assert!(
                    matches!(streamed, Err(SnapshotFault::Hash { found }) if found == ContentHash::of(&changed)),
                    "{len} bytes, changed at {at}: {streamed:?}"
                );
            }
        }
    }

    /// A file that grew past its recorded length after the stat is told
    /// apart by the byte after it, on the two-thread paths too (here the
    /// judge is called with a file longer than the length it checks).
    #[test]
    fn a_byte_past_the_recorded_length_is_a_length_fault() {
        let dir = tempfile::tempdir().expect("tempdir");
        let bytes = vec![7u8; 2 * parallel_hash::TWO_THREADS_FROM as usize];
        let path = file_with(dir.path(), &bytes);
        let file = std::fs::File::open(&path).expect("open");
        let half = bytes.len() as u64 / 2;
        let found = blake3::hash(&bytes[..half as usize]);
        let verdict = judge(&file, half, found, &ContentHash::from_blake3(found));
        assert!(
            matches!(verdict, Err(SnapshotFault::Length { expected, found }) if expected == half && found == half + 1),
            "{verdict:?}"
        );
        let mut buf = vec![0u8; VERIFY_CHUNK];
        let streamed = stream_on_two_threads(&file, half, &mut buf).expect("two threads");
        assert_eq!(streamed.expect("hash"), found);
    }
}
