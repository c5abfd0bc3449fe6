//! A verified snapshot that is still open: its bytes are copied out on
//! demand instead of being held in memory.
//!
//! Verification streams the file through the hasher in bounded chunks from
//! the open descriptor; only when the whole file has verified does
//! [`VerifiedSnapshot::copy_to`] copy it, from the same descriptor, to a
//! writer, through one 256 KiB buffer (std's kernel copy does not serve a
//! pipe as the destination; a file or device still gets it), so memory
//! stays bounded whatever the snapshot's size.
//! [`VerifiedSnapshot::copy_to_file_with`] copies to an open file instead,
//! and into a pipe on Linux lets the kernel do it (`sendfile`). A snapshot
//! shorter than the 256 KiB verification buffer is still in it after
//! verification and is written from memory.
//!
//! The bytes copied are the bytes that verified as long as the snapshot file
//! does not change between the two passes (one held in memory has one
//! pass), and, after `sendfile` into a pipe, until the pipe's reader has
//! taken the pages it holds. Snapshot files are immutable by design:
//! published read-only under their hash, never rewritten, and the
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
        mut self,
        out: &mut W,
        mut progress: impl FnMut(u64),
    ) -> io::Result<u64> {
        // A snapshot shorter than one chunk is still in the buffer that
        // verified it: written from memory, not read again.
        if let Some(bytes) = self.held_bytes() {
            out.write_all(bytes)?;
            out.flush()?;
            progress(self.bytes);
            return Ok(self.bytes);
        }
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
        let mut buffered = io::BufWriter::with_capacity(BUFFER, &mut *out);
        let copied = self.copy_pieces(&mut progress, |file, _offset, piece| {
            // `Take` stops at the verified length; the file's position
            // follows the pieces.
            let n = io::copy(&mut file.take(piece), &mut buffered)?;
            // Written out before it is reported as written.
            buffered.flush()?;
            Ok(n)
        });
        drop(buffered);
        let copied = copied?;
        out.flush()?;
        Ok(copied)
    }

    /// [`copy_to_with`](VerifiedSnapshot::copy_to_with) into an open file
    /// (a regular file, a pipe, a terminal, a device), letting the kernel
    /// move the bytes where it can. Into a pipe on Linux that is
    /// `sendfile(2)`: the snapshot's page-cache pages are handed to the pipe
    /// instead of being read into this process and written out again, which
    /// is what `cat` pays. Elsewhere (and if the kernel refuses) it is the
    /// same copy as `copy_to_with`.
    ///
    /// Nothing is written before the whole snapshot has verified, as with
    /// every copy. A pipe then holds references to the snapshot's pages
    /// until its reader takes them: a snapshot file is never rewritten in
    /// place (see the trust check for who could), so what the reader gets
    /// is what verified.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// use snapcache::{PublishOptions, Store, StoreOptions};
    /// let store = Store::open(StoreOptions::new(dir.path().join("cache")))?;
    /// store.publish_bytes(b"[1,2,3]", &PublishOptions::default())?;
    /// let out = std::fs::File::create(dir.path().join("copy.json"))?;
    /// let n = store.open_current()?.copy_to_file_with(&out, |_| {})?;
    /// assert_eq!(n, 7);
    /// assert_eq!(std::fs::read(dir.path().join("copy.json"))?, b"[1,2,3]");
    /// # Ok(()) }
    /// ```
    pub fn copy_to_file_with(self, out: &File, progress: impl FnMut(u64)) -> io::Result<u64> {
        #[cfg(target_os = "linux")]
        if !self.held && pipe_send::is_pipe(out) {
            return pipe_send::copy(self, out, progress);
        }
        if is_non_blocking(out) {
            return self.copy_to_with(&mut Waiting(out), progress);
        }
        // As the `File` it is, so that std can let the kernel copy into a
        // file (`copy_file_range`).
        let mut out = out;
        self.copy_to_with(&mut out, progress)
    }

    /// The verified content, when it is still whole in the buffer that
    /// verified it.
    fn held_bytes(&self) -> Option<&[u8]> {
        let len = usize::try_from(self.bytes).ok()?;
        self.buf.get(..len).filter(|_| self.held)
    }

    /// Copies the verified length in pieces of at most 1 MiB, each through
    /// `piece(file, offset, len)`, which returns how many bytes it moved
    /// (fewer only at the file's end), and reports each piece to
    /// `progress`. A copy that ends short is the "became shorter" error.
    fn copy_pieces(
        &mut self,
        progress: &mut impl FnMut(u64),
        mut piece: impl FnMut(&File, u64, u64) -> io::Result<u64>,
    ) -> io::Result<u64> {
        // Not needed past verification; freed before the copy.
        self.buf = Vec::new();
        self.held = false;
        const PIECE: u64 = 1024 * 1024;
        let expected = self.bytes;
        let mut copied = 0;
        while copied < expected {
            let want = (expected - copied).min(PIECE);
            let n = piece(&self.file, copied, want)?;
            copied += n;
            progress(n);
            if n < want {
                break;
            }
        }
        if copied != expected {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "the snapshot file {} became shorter after it verified ({copied} of {expected} bytes copied); a process with the store owner's rights changed it after verification; verify the store",
                    self.path.display()
                ),
            ));
        }
        Ok(copied)
    }
}

/// A file written as if it blocked. A descriptor the program inherits may
/// have been set non-blocking by whoever shares it (a parent that polls its
/// end of the pipe): writes then fail with `EAGAIN` whenever the pipe is
/// full, and `show` stopped after 64 KiB, "Resource temporarily
/// unavailable", a cut payload sent. Clearing the flag would change it for
/// the parent too (it belongs to the shared open file); waiting until the
/// descriptor is writable changes nothing for anyone.
struct Waiting<'a>(&'a File);

impl Write for Waiting<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        loop {
            match (&mut &*self.0).write(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => wait_writable(self.0)?,
                other => return other,
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        (&mut &*self.0).flush()
    }
}

/// Whether `out` was opened (or set) non-blocking.
#[cfg(unix)]
fn is_non_blocking(out: &File) -> bool {
    rustix::fs::fcntl_getfl(out).is_ok_and(|flags| flags.contains(rustix::fs::OFlags::NONBLOCK))
}

#[cfg(not(unix))]
fn is_non_blocking(_out: &File) -> bool {
    false
}

/// Waits until `out` can take more bytes (after a write said `EAGAIN`).
#[cfg(unix)]
fn wait_writable(out: &File) -> io::Result<()> {
    use rustix::event::{PollFd, PollFlags, poll};
    let mut fds = [PollFd::new(out, PollFlags::OUT)];
    match poll(&mut fds, None) {
        Ok(_) | Err(rustix::io::Errno::INTR) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Elsewhere a file handle never says "would block": the error stands.
#[cfg(not(unix))]
fn wait_writable(_out: &File) -> io::Result<()> {
    Err(io::ErrorKind::WouldBlock.into())
}

/// The copy into a pipe with `sendfile(2)` (Linux).
#[cfg(target_os = "linux")]
mod pipe_send {
    use std::fs::File;
    use std::io;

    use rustix::io::Errno;

    use super::VerifiedSnapshot;
    use crate::durable::FileKind;

    /// Whether `out` is a pipe (or FIFO).
    pub(super) fn is_pipe(out: &File) -> bool {
        out.metadata()
            .is_ok_and(|m| FileKind::of(&m) == FileKind::Fifo)
    }

    /// Sends the verified bytes into the pipe `out`, from explicit offsets
    /// (the snapshot file's position is not used). A kernel or filesystem
    /// that refuses `sendfile` before anything moved gets the ordinary copy.
    pub(super) fn copy(
        mut snapshot: VerifiedSnapshot,
        out: &File,
        mut progress: impl FnMut(u64),
    ) -> io::Result<u64> {
        let mut refused = false;
        let result = snapshot.copy_pieces(&mut progress, |file, offset, len| {
            let mut at = offset;
            while at < offset + len {
                let want = usize::try_from(offset + len - at).unwrap_or(usize::MAX);
                match rustix::fs::sendfile(out, file, Some(&mut at), want) {
                    // The file's end: shorter than it verified.
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(Errno::INTR) => {}
                    Err(Errno::AGAIN) => super::wait_writable(out)?,
                    Err(e @ (Errno::INVAL | Errno::NOSYS | Errno::OPNOTSUPP)) if at == 0 => {
                        refused = true;
                        return Err(e.into());
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            Ok(at - offset)
        });
        if refused {
            // Nothing was sent and the file's position is still at its
            // start: the ordinary copy from there.
            return snapshot.copy_to_with(&mut super::Waiting(out), progress);
        }
        result
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

    /// What a drained pipe received, once its write end is closed.
    #[cfg(target_os = "linux")]
    type Drain = std::thread::JoinHandle<std::io::Result<Vec<u8>>>;

    /// A pipe whose other end is drained by `cat` into a buffer on a
    /// thread: what arrives, once the write end is closed.
    #[cfg(target_os = "linux")]
    fn drained_pipe() -> std::io::Result<(std::fs::File, std::process::Child, Drain)> {
        use std::process::{Command, Stdio};
        let mut cat = Command::new("cat")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let (Some(input), Some(mut output)) = (cat.stdin.take(), cat.stdout.take()) else {
            return Err(std::io::Error::other("cat without pipes"));
        };
        let drain = std::thread::spawn(move || {
            let mut all = Vec::new();
            std::io::Read::read_to_end(&mut output, &mut all).map(|_| all)
        });
        let pipe = std::fs::File::from(std::os::fd::OwnedFd::from(input));
        Ok((pipe, cat, drain))
    }

    /// Into a pipe the kernel moves the bytes (`sendfile`): exact on both
    /// sides of the chunk size and across several 1 MiB pieces, reported
    /// piece by piece; into a regular file, the same bytes.
    #[cfg(target_os = "linux")]
    #[test]
    fn copies_into_a_pipe_and_a_file_are_exact() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(StoreOptions::new(dir.path().join("s"))).expect("open");
        for len in [5usize, 256 * 1024 + 1, 3 * 1024 * 1024 + 7] {
            let payload: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
            let raw = PublishOptions::default().raw(true);
            store.publish_bytes(&payload, &raw).expect("publish");
            let (pipe, mut cat, drain) = drained_pipe().expect("cat");
            let mut pieces = Vec::new();
            let n = store
                .open_current()
                .expect("verifies")
                .copy_to_file_with(&pipe, |n| pieces.push(n))
                .expect("copy");
            drop(pipe);
            let got = drain.join().expect("drained").expect("read");
            cat.wait().expect("cat exits");
            assert_eq!(n, len as u64);
            assert!(
                got == payload,
                "{len} bytes into a pipe: {} arrived",
                got.len()
            );
            assert_eq!(pieces.iter().sum::<u64>(), len as u64, "{pieces:?}");
            assert!(pieces.iter().all(|&p| p <= 1024 * 1024), "{pieces:?}");
            let path = dir.path().join("copy");
            let file = std::fs::File::create(&path).expect("create");
            let n = store
                .open_current()
                .expect("verifies")
                .copy_to_file_with(&file, |_| {})
                .expect("copy to file");
            assert_eq!(n, len as u64);
            assert!(
                std::fs::read(&path).expect("read") == payload,
                "{len} into a file"
            );
        }
    }

    /// The pipe copy keeps the streamed copy's guarantees: a file cut short
    /// after it verified is the "became shorter" error with only what was
    /// there sent, and a file that grew is cut at the verified length.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_pipe_copy_is_exactly_the_verified_length_or_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(StoreOptions::new(dir.path().join("s"))).expect("open");
        let payload = vec![b'7'; 2_000_000];
        let raw = PublishOptions::default().raw(true);
        let outcome = store.publish_bytes(&payload, &raw).expect("publish");
        let path = dir.path().join("s/snapshots").join(outcome.hash.to_hex());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let file = || std::fs::OpenOptions::new().write(true).open(&path);

        let snapshot = store.open_current().expect("verifies");
        file().and_then(|f| f.set_len(1_500_000)).expect("truncate");
        let (pipe, mut cat, drain) = drained_pipe().expect("cat");
        let err = snapshot
            .copy_to_file_with(&pipe, |_| {})
            .expect_err("short");
        drop(pipe);
        assert_eq!(err.kind(), ErrorKind::UnexpectedEof, "{err}");
        assert!(err.to_string().contains("became shorter"), "{err}");
        assert_eq!(
            drain.join().expect("drained").expect("read").len(),
            1_500_000
        );
        cat.wait().expect("cat exits");

        file().and_then(|f| f.set_len(0)).expect("empty");
        std::fs::write(&path, &payload).expect("restore");
        let snapshot = store.open_current().expect("verifies again");
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .and_then(|mut f| std::io::Write::write_all(&mut f, b"garbage"))
            .expect("append");
        let (pipe, mut cat, drain) = drained_pipe().expect("cat");
        let n = snapshot.copy_to_file_with(&pipe, |_| {}).expect("copy");
        drop(pipe);
        assert_eq!(n, payload.len() as u64);
        assert!(
            drain.join().expect("drained").expect("read") == payload,
            "cut at the verified length"
        );
        cat.wait().expect("cat exits");
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
