//! Snapshot files: `snapshots/<hash>`, immutable once published.
//!
//! A snapshot is trusted only after its length and blake3 hash match what the
//! pointer recorded; [`read_verified`] never hands out bytes that did not.

use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;

use crate::durable::{FileKind, open_no_follow, wrong_type_of};
use crate::hash::ContentHash;

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
    // hands out regular files only.
    let file = open_no_follow(path).map_err(|e| match wrong_type_of(&e) {
        Some(wrong) => SnapshotFault::NotAFile(wrong.found),
        None if e.kind() == io::ErrorKind::NotFound => SnapshotFault::Missing,
        None => SnapshotFault::Io(e),
    })?;
    let meta = file.metadata().map_err(SnapshotFault::Io)?;
    if meta.len() != expected_len {
        return Err(SnapshotFault::Length {
            expected: expected_len,
            found: meta.len(),
        });
    }
    Ok(file)
}

/// Reads a whole snapshot into memory and verifies its length and hash.
pub(crate) fn read_verified(
    path: &Path,
    hash: &ContentHash,
    expected_len: u64,
) -> Result<Vec<u8>, SnapshotFault> {
    let file = open_checked(path, expected_len)?;
    let capacity = usize::try_from(expected_len).unwrap_or(0);
    let mut bytes = Vec::with_capacity(capacity);
    // One byte more than expected, so a file that grew after the stat shows up.
    file.take(expected_len + 1)
        .read_to_end(&mut bytes)
        .map_err(SnapshotFault::Io)?;
    if bytes.len() as u64 != expected_len {
        return Err(SnapshotFault::Length {
            expected: expected_len,
            found: bytes.len() as u64,
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

/// Opens a snapshot and verifies its length and hash by streaming it through
/// the hasher in bounded chunks, from the one open descriptor; returns that
/// descriptor rewound to the start. The caller can then copy exactly
/// `expected_len` bytes out of it (see `VerifiedSnapshot::copy_to`) without
/// holding the snapshot in memory.
pub(crate) fn open_verified(
    path: &Path,
    hash: &ContentHash,
    expected_len: u64,
) -> Result<std::fs::File, SnapshotFault> {
    let mut file = open_checked(path, expected_len)?;
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
    Ok(file)
}

/// Verifies a snapshot file by streaming it through the hasher.
pub(crate) fn verify_file(
    path: &Path,
    hash: &ContentHash,
    expected_len: u64,
) -> Result<(), SnapshotFault> {
    open_verified(path, hash, expected_len).map(drop)
}
