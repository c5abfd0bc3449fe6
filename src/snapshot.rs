//! Snapshot files: `snapshots/<hash>`, immutable once published.
//!
//! A snapshot is trusted only after its length and blake3 hash match what the
//! pointer recorded; [`read_verified`] never hands out bytes that did not.

use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;

use crate::durable::{FileKind, fill, open_no_follow_with_metadata, wrong_type_of};
use crate::hash::ContentHash;
use crate::trust::Owner;

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
    /// Its group or others can write it, or another user owns it, so its
    /// bytes could change after they verified
    /// (`trust::refuse_untrusted_file`).
    Untrusted(Box<crate::error::Error>),
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
            SnapshotFault::Untrusted(_) => "untrusted",
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
            SnapshotFault::Untrusted(e) => match e.as_ref() {
                crate::error::Error::UntrustedPath { mode, reason, .. } => {
                    format!("mode {mode:04o}: {reason}")
                }
                other => other.to_string(),
            },
        }
    }
}

fn open_checked(
    path: &Path,
    expected_len: u64,
    owner: Owner,
) -> Result<std::fs::File, SnapshotFault> {
    // The gate never follows a link, never blocks on a FIFO or device and
    // hands out regular files only; its check on the descriptor also gives
    // the length.
    let (file, meta) = open_no_follow_with_metadata(path).map_err(|e| match wrong_type_of(&e) {
        Some(wrong) => SnapshotFault::NotAFile(wrong.found),
        None if e.kind() == io::ErrorKind::NotFound => SnapshotFault::Missing,
        None => SnapshotFault::Io(e),
    })?;
    // Before its length or bytes mean anything: a file another user can
    // write may change between the hash and the copy out.
    crate::trust::refuse_untrusted_file(path, &meta, owner)
        .map_err(|e| SnapshotFault::Untrusted(Box::new(e)))?;
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
/// The buffer is reserved at its final size and never zeroed: the read
/// goes into the reserved, not yet initialised part (`read_reserved`).
/// Zeroing it first (`vec![0; len]`) costs a `memset` of the whole size
/// whenever the allocator serves it from memory it already has, as it does
/// in a process that reads more than once (glibc raises its mmap threshold
/// after the first large free). The read is bounded at one byte more than expected,
/// which tells a file that grew after the stat.
pub(crate) fn read_verified(
    path: &Path,
    hash: &ContentHash,
    expected_len: u64,
    owner: Owner,
) -> Result<Vec<u8>, SnapshotFault> {
    let file = open_checked(path, expected_len, owner)?;
    let len = usize::try_from(expected_len).map_err(|_| {
        SnapshotFault::Io(io::Error::new(
            io::ErrorKind::OutOfMemory,
            "the snapshot is larger than this platform's address space",
        ))
    })?;
    let mut bytes = Vec::new();
    bytes
        .try_reserve_exact(len)
        .map_err(|e| SnapshotFault::Io(io::Error::new(io::ErrorKind::OutOfMemory, e)))?;
    let found = read_reserved(&file, &mut bytes, len).map_err(SnapshotFault::Io)?;
    if found != len as u64 {
        return Err(SnapshotFault::Length {
            expected: expected_len,
            found,
        });
    }
    let found = ContentHash::of(&bytes);
    if found != *hash {
        return Err(SnapshotFault::Hash { found });
    }
    Ok(bytes)
}

/// Reads the file into `bytes` (empty, `len` reserved) up to its reserved
/// size, then looks for one byte more; how many bytes the file gave, so more
/// than `len` for a file that grew after the stat (the extra byte is not
/// kept).
///
/// On Unix it reads straight into the reserved, uninitialised part
/// (`rustix`'s safe spare-capacity buffer): one `read` for the whole file
/// and one for the end, where `read_to_end` on a bounded reader starts at
/// 8 KiB and doubles (nine reads for 1 MiB; measured 6 µs of a 55 µs 1 MiB
/// read).
#[cfg(unix)]
fn read_reserved(file: &std::fs::File, bytes: &mut Vec<u8>, len: usize) -> io::Result<u64> {
    use rustix::buffer::spare_capacity;
    use rustix::io::Errno;
    while bytes.len() < bytes.capacity() {
        match rustix::io::read(file, spare_capacity(bytes)) {
            Ok(0) => return Ok(bytes.len() as u64),
            Ok(_) => {}
            Err(Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    if bytes.len() > len {
        return Ok(bytes.len() as u64);
    }
    let mut probe = [0u8; 1];
    loop {
        match rustix::io::read(file, &mut probe[..]) {
            Ok(more) => return Ok((bytes.len() + more) as u64),
            Err(Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

#[cfg(not(unix))]
fn read_reserved(file: &std::fs::File, bytes: &mut Vec<u8>, len: usize) -> io::Result<u64> {
    file.take((len as u64).saturating_add(1))
        .read_to_end(bytes)?;
    Ok(bytes.len() as u64)
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
    owner: Owner,
) -> Result<Opened, SnapshotFault> {
    let mut file = open_checked(path, expected_len, owner)?;
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
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; VERIFY_CHUNK];
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

/// Verifies a snapshot file by streaming it through the hasher.
pub(crate) fn verify_file(
    path: &Path,
    hash: &ContentHash,
    expected_len: u64,
    owner: Owner,
) -> Result<(), SnapshotFault> {
    open_verified(path, hash, expected_len, owner).map(drop)
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
    /// one byte, and several MiB (more than any single chunk of a read),
    /// in a buffer of exactly that size (the probe for one byte more never
    /// makes it grow: the read's memory stays at the snapshot's size).
    #[test]
    fn read_verified_returns_exactly_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        for len in [0usize, 1, 4096, 3 * 1024 * 1024 + 17] {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
            let path = file_with(dir.path(), &bytes);
            let read = read_verified(
                &path,
                &ContentHash::of(&bytes),
                len as u64,
                Owner::this_writer(),
            )
            .unwrap_or_else(|e| panic!("{len} bytes: {}", e.detail()));
            assert_eq!(read, bytes, "{len} bytes");
            assert_eq!(read.capacity(), len, "{len} bytes: no spare capacity");
        }
    }

    /// A file that grew or shrank after the stat gives its own count (one
    /// byte more than reserved at most, which is not kept), never more
    /// memory than reserved; every size around the boundaries.
    #[test]
    fn read_reserved_tells_a_file_that_grew_or_shrank() {
        let dir = tempfile::tempdir().expect("tempdir");
        for (reserved, actual) in [
            (0, 0),
            (0, 3),
            (5, 5),
            (5, 4),
            (5, 6),
            (5, 900),
            (1 << 20, (1 << 20) - 1),
            (1 << 20, (1 << 20) + 7),
        ] {
            let bytes: Vec<u8> = (0..actual).map(|i| (i % 253) as u8).collect();
            let path = file_with(dir.path(), &bytes);
            let file = std::fs::File::open(&path).expect("open");
            let mut read = Vec::new();
            read.try_reserve_exact(reserved).expect("reserve");
            let capacity = read.capacity();
            let found = read_reserved(&file, &mut read, reserved).expect("read");
            if actual <= reserved {
                assert_eq!(found, actual as u64, "{reserved}/{actual}");
            } else {
                let grew = found > reserved as u64 && found <= actual as u64;
                assert!(grew, "{reserved}/{actual}: {found} says it grew");
            }
            assert_eq!(&read[..], &bytes[..read.len()], "{reserved}/{actual}");
            assert_eq!(read.capacity(), capacity, "{reserved}/{actual}: no growth");
        }
    }

    #[test]
    fn read_verified_refuses_a_wrong_length_or_hash() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = file_with(dir.path(), b"[1,2,3]");
        let hash = ContentHash::of(b"[1,2,3]");
        for recorded in [6, 8, 0] {
            match read_verified(&path, &hash, recorded, Owner::this_writer()) {
                Err(SnapshotFault::Length { expected, found }) => {
                    assert_eq!((expected, found), (recorded, 7));
                }
                other => panic!("recorded {recorded}: {other:?}"),
            }
        }
        let other = ContentHash::of(b"[1,2,4]");
        match read_verified(&path, &other, 7, Owner::this_writer()) {
            Err(SnapshotFault::Hash { found }) => assert_eq!(found, hash),
            other => panic!("{other:?}"),
        }
        match read_verified(&dir.path().join("absent"), &hash, 7, Owner::this_writer()) {
            Err(SnapshotFault::Missing) => {}
            other => panic!("{other:?}"),
        }
    }
}
