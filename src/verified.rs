//! A verified snapshot that is still open: its bytes are copied out on
//! demand instead of being held in memory.
//!
//! Verification streams the file through the hasher in bounded chunks from
//! the open descriptor; only when the whole file has verified does
//! [`VerifiedSnapshot::copy_to`] copy it, from the same descriptor, to a
//! writer, through one 256 KiB buffer (std's kernel copy does not serve a
//! pipe as the destination; a file or device still gets it), so memory
//! stays bounded whatever the snapshot's size. A snapshot shorter than the
//! 256 KiB verification buffer is still in it after verification and is
//! written from memory.
//!
//! The bytes copied are the bytes that verified as long as the snapshot file
//! does not change between the two passes (one held in memory has one
//! pass). Snapshot files are immutable by design: published read-only under their hash, never rewritten, and the
//! store accepts only an owner-controlled directory tree (see the trust
//! check). Only a process with the owner's rights could change one in
//! between, and it could change the data after the copy just as well. What
//! is checked anyway: the copy moves exactly the verified length; a file
//! that shrank in between is an error (after a partial copy), one that grew
//! is cut at the verified length.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::PathBuf;

use crate::hash::ContentHash;
use crate::time::Timestamp;

/// A snapshot whose length and hash verified, still open for copying.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let dir = tempfile::tempdir()?;
/// use snapcache::{PublishOptions, Store, StoreOptions};
/// let store = Store::open(StoreOptions::new(dir.path().join("cache")))?;
/// store.publish_bytes(b"[1,2,3]", &PublishOptions::default())?;
/// let snapshot = store.open_current()?;
/// assert_eq!(snapshot.bytes(), 7);
/// let mut out = Vec::new();
/// snapshot.copy_to(&mut out)?;
/// assert_eq!(out, b"[1,2,3]");
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct VerifiedSnapshot {
    /// Its generation.
    pub generation: u64,
    /// Its hash (verified).
    pub hash: ContentHash,
    /// When it was published.
    pub created_at: Timestamp,
    /// When the store was last refreshed (from the pointer it was read by).
    pub checked_at: Timestamp,
    /// Its note.
    pub note: Option<String>,
    bytes: u64,
    path: PathBuf,
    /// Rewound to the start after verification (unless `held`).
    file: File,
    /// The buffer that verified it; the copy's source when `held`.
    buf: Vec<u8>,
    /// Whether `buf` starts with the whole verified content.
    held: bool,
}

impl VerifiedSnapshot {
    pub(crate) fn new(
        entry: crate::pointer::Generation,
        checked_at: Timestamp,
        path: PathBuf,
        opened: crate::snapshot::Opened,
    ) -> VerifiedSnapshot {
        VerifiedSnapshot {
            generation: entry.generation,
            hash: entry.hash,
            created_at: entry.created_at,
            checked_at,
            note: entry.note,
            bytes: entry.bytes,
            path,
            file: opened.file,
            buf: opened.buf,
            held: opened.held,
        }
    }

    /// Its length in bytes (verified).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Copies exactly the verified bytes to `out` and returns their number.
    ///
    /// Errors come from reading the snapshot file or from `out`; a snapshot
    /// file that became shorter since it verified is an
    /// [`io::ErrorKind::UnexpectedEof`] error naming the file (some bytes
    /// may have been written by then).
    pub fn copy_to<W: Write + ?Sized>(self, out: &mut W) -> io::Result<u64> {
        self.copy_to_with(out, |_| {})
    }

    /// [`copy_to`](VerifiedSnapshot::copy_to), calling `progress` with the
    /// number of bytes after every piece of at most 1 MiB (for a progress
    /// display on a slow pipe), once it was written to `out`.
    pub fn copy_to_with<W: Write + ?Sized>(
        self,
        out: &mut W,
        mut progress: impl FnMut(u64),
    ) -> io::Result<u64> {
        let expected = self.bytes;
        // A snapshot shorter than one chunk is still in the buffer that
        // verified it: written from memory, not read again.
        if self.held {
            let len = usize::try_from(expected).unwrap_or(usize::MAX);
            if let Some(bytes) = self.buf.get(..len) {
                out.write_all(bytes)?;
                out.flush()?;
                progress(expected);
                return Ok(expected);
            }
        }
        drop(self.buf);
        const PIECE: u64 = 1024 * 1024;
        // std's `io::copy` takes no kernel shortcut from a file into a pipe
        // (measured with strace: 8 KiB reads and, through stdout's line
        // buffering, about two writes each, 3,000 system calls for 8 MiB).
        // Through a 256 KiB `BufWriter`, `io::copy` reads straight into its
        // buffer: 32 reads and about as many writes. Into a file or
        // `/dev/null` std still sees through the `BufWriter` to stdout's
        // descriptor and lets the kernel copy (`copy_file_range`,
        // `sendfile`), which the verification buffer, reused for a pipe,
        // would forgo.
        const BUFFER: usize = 256 * 1024;
        let mut copied = 0;
        let mut buffered = io::BufWriter::with_capacity(BUFFER, &mut *out);
        while copied < expected {
            // `Take` stops at the verified length.
            let piece = (expected - copied).min(PIECE);
            let n = io::copy(&mut (&self.file).take(piece), &mut buffered)?;
            copied += n;
            // Written out before it is reported as written.
            buffered.flush()?;
            progress(n);
            if n < piece {
                break;
            }
        }
        drop(buffered);
        if copied != expected {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "the snapshot file {} became shorter after it verified ({copied} of {expected} bytes copied); a process with the store owner's rights changed it after verification; verify the store",
                    self.path.display()
                ),
            ));
        }
        out.flush()?;
        Ok(copied)
    }
}

#[cfg(all(test, unix))]
mod tests {
    use crate::{PublishOptions, Store, StoreOptions};
    use std::io::ErrorKind;
    use std::os::unix::fs::PermissionsExt;

    /// Below one chunk the verified bytes are copied from memory (a change
    /// to the file after verification cannot reach the output); above it the
    /// copy streams through the same buffer, reporting pieces of at most
    /// 1 MiB that add up to the whole.
    #[test]
    fn copies_are_exact_on_both_sides_of_the_chunk_size() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(StoreOptions::new(dir.path().join("s"))).expect("open");
        for len in [1usize, 256 * 1024 - 1, 256 * 1024, 3 * 1024 * 1024 + 5] {
            let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let raw = PublishOptions::default().raw(true);
            store.publish_bytes(&payload, &raw).expect("publish");
            let snapshot = store.open_current().expect("verifies");
            let mut out = Vec::new();
            let mut pieces = Vec::new();
            let n = snapshot
                .copy_to_with(&mut out, |n| pieces.push(n))
                .expect("copy");
            assert_eq!(n, len as u64);
            assert!(out == payload, "{len} bytes, in order");
            assert_eq!(pieces.iter().sum::<u64>(), len as u64, "{len}: {pieces:?}");
            assert!(
                pieces.iter().all(|&p| p > 0 && p <= 1024 * 1024),
                "{pieces:?}"
            );
        }
        // Held in memory: overwritten after verification, the copy still
        // gives the verified bytes.
        let outcome = store
            .publish_bytes(b"[4,5,6]", &PublishOptions::default())
            .expect("publish");
        let snapshot = store.open_current().expect("verifies");
        let path = dir.path().join("s/snapshots").join(outcome.hash.to_hex());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        std::fs::write(&path, b"[6,6,6]").expect("overwrite");
        let mut out = Vec::new();
        assert_eq!(snapshot.copy_to(&mut out).expect("copy"), 7);
        assert_eq!(out, b"[4,5,6]");
    }

    #[test]
    fn a_snapshot_that_shrank_after_verifying_is_a_short_copy_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(StoreOptions::new(dir.path().join("s"))).expect("open");
        let payload = vec![b'7'; 700_000];
        let outcome = store
            .publish_bytes(&payload, &PublishOptions::default())
            .expect("publish");
        let snapshot = store.open_current().expect("verifies");
        let path = dir.path().join("s/snapshots").join(outcome.hash.to_hex());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_len(1000))
            .expect("truncate");
        let mut out = Vec::new();
        let err = snapshot.copy_to(&mut out).expect_err("short copy");
        assert_eq!(err.kind(), ErrorKind::UnexpectedEof, "{err}");
        assert!(err.to_string().contains("became shorter"), "{err}");
        assert_eq!(out.len(), 1000, "only what was there");
    }

    #[test]
    fn a_snapshot_that_grew_after_verifying_is_cut_at_the_verified_length() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(StoreOptions::new(dir.path().join("s"))).expect("open");
        let outcome = store
            .publish_bytes(b"[1,2,3]", &PublishOptions::default())
            .expect("publish");
        let snapshot = store.open_current().expect("verifies");
        let path = dir.path().join("s/snapshots").join(outcome.hash.to_hex());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .and_then(|mut f| std::io::Write::write_all(&mut f, b"garbage"))
            .expect("append");
        let mut out = Vec::new();
        assert_eq!(snapshot.copy_to(&mut out).expect("copy"), 7);
        assert_eq!(out, b"[1,2,3]");
    }
}
