//! The durable-write gate: every create, write, fsync, rename and unlink that
//! changes a store passes through [`Durable`].
//!
//! # Why one gate
//!
//! The crash story of the store rests on the order of a handful of syscalls
//! (write, fsync the file, rename, fsync the directory). Keeping them in one
//! module makes the order reviewable in one place, lets tests record every
//! operation of a publish (to enumerate the states a power loss may leave) or
//! fail any one of them (fault injection), and keeps the platform differences
//! (directory fsync, rename retries on Windows) small and isolated.
//!
//! # Crash safety
//!
//! [`Durable::replace_file`] is the whole durable rewrite of a small file:
//! temp file in `tmp/`, write, fsync, rename over the destination, fsync the
//! destination's directory. Without the file fsync a crash after the rename
//! could leave the new name pointing at empty or partial data; without the
//! directory fsync the rename itself may be lost (the old file reappears).
//! `tempfile` does neither on its own.

use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One file operation, as seen by a [`FsHook`] just before it runs.
// The fields are read by the test hooks (operation recorder, fault injection).
#[cfg_attr(not(test), allow(dead_code))]
#[derive(Debug, Clone, Copy)]
pub(crate) enum Op<'a> {
    /// A new temp file at this path (create-new semantics).
    Create(&'a Path),
    /// Bytes appended to a temp file.
    Write(&'a Path, &'a [u8]),
    /// `fsync` of a file.
    SyncFile(&'a Path),
    /// Atomic rename; replaces the destination.
    Rename(&'a Path, &'a Path),
    /// `fsync` of a directory (makes renames and unlinks in it durable).
    SyncDir(&'a Path),
    /// Unlink of a file.
    Remove(&'a Path),
    /// Hard link of an existing file under a new name (fails if it exists).
    Link(&'a Path, &'a Path),
}

/// Observes (and may fail) file operations; used by tests only.
pub(crate) trait FsHook: Send + Sync {
    /// Called before `op` runs; an error is returned to the caller instead.
    fn before(&self, op: &Op<'_>) -> io::Result<()>;
}

/// How renames are retried on transient failures.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RetryPolicy {
    pub first_delay: Duration,
    pub max_delay: Duration,
    pub max_attempts: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            first_delay: Duration::from_millis(50),
            max_delay: Duration::from_secs(1),
            max_attempts: 10,
        }
    }
}

/// What retrying a rename cost.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RenameStats {
    /// Rename attempts made (1 when the first one succeeded).
    pub attempts: u32,
    /// Total time slept between attempts.
    pub waited: Duration,
}

impl RenameStats {
    pub(crate) fn add(&mut self, other: RenameStats) {
        self.attempts += other.attempts;
        self.waited += other.waited;
    }
}

/// Runs `op` until it succeeds, fails for good, or the budget is spent.
///
/// Delays start at `policy.first_delay`, double, and are capped at
/// `policy.max_delay`; a delay that would end past `budget` is not taken.
pub(crate) fn retry_transient(
    policy: RetryPolicy,
    budget: Option<Duration>,
    mut op: impl FnMut() -> io::Result<()>,
    is_transient: impl Fn(&io::Error) -> bool,
    mut sleep: impl FnMut(Duration),
) -> (io::Result<()>, RenameStats) {
    let mut stats = RenameStats::default();
    let mut delay = policy.first_delay;
    loop {
        stats.attempts += 1;
        let err = match op() {
            Ok(()) => return (Ok(()), stats),
            Err(e) => e,
        };
        let within_budget = budget.is_none_or(|b| stats.waited + delay <= b);
        if !is_transient(&err) || stats.attempts >= policy.max_attempts || !within_budget {
            return (Err(err), stats);
        }
        sleep(delay);
        stats.waited += delay;
        delay = (delay * 2).min(policy.max_delay);
    }
}

/// Windows reports a file that another process holds open (an indexer, an
/// antivirus scanner, a reader) as a sharing violation or access denied; both
/// usually clear within a second. Elsewhere a rename failure is final.
fn is_transient_rename_error(err: &io::Error) -> bool {
    #[cfg(windows)]
    {
        matches!(err.raw_os_error(), Some(32) | Some(5))
    }
    #[cfg(not(windows))]
    {
        let _ = err;
        false
    }
}

/// A temp file in a store's `tmp/`, removed on drop unless persisted.
pub(crate) struct TempFile {
    inner: tempfile::NamedTempFile,
}

impl TempFile {
    pub(crate) fn path(&self) -> &Path {
        self.inner.path()
    }
}

impl fmt::Debug for TempFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TempFile")
            .field("path", &self.path())
            .finish()
    }
}

/// The gate itself. Cheap to clone.
#[derive(Clone, Default)]
pub(crate) struct Durable {
    hook: Option<Arc<dyn FsHook>>,
    retry: RetryPolicy,
}

impl fmt::Debug for Durable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Durable")
            .field("hooked", &self.hook.is_some())
            .finish()
    }
}

impl Durable {
    #[cfg(test)]
    pub(crate) fn with_hook(hook: Arc<dyn FsHook>) -> Self {
        Durable {
            hook: Some(hook),
            retry: RetryPolicy::default(),
        }
    }

    fn before(&self, op: Op<'_>) -> io::Result<()> {
        match &self.hook {
            Some(h) => h.before(&op),
            None => Ok(()),
        }
    }

    /// Creates a directory inside the store (its parent exists) with
    /// owner-only permissions; the root and the directories above it are
    /// made by `store_root::create`.
    ///
    /// Inside the store a symlink or file in its place is an error: the
    /// store must never be redirected outside itself. The store root itself
    /// may be a symlink (`follow_link`): the user chose where it lives.
    pub(crate) fn create_dir(&self, dir: &Path, follow_link: bool) -> io::Result<()> {
        let found = || {
            if follow_link {
                fs::metadata(dir)
            } else {
                fs::symlink_metadata(dir)
            }
        };
        let not_a_dir = || {
            io::Error::new(
                io::ErrorKind::AlreadyExists,
                "exists but is not a directory (a file or a symlink); remove it so the store can recreate it",
            )
        };
        match found() {
            Ok(m) if m.is_dir() => return Ok(()),
            Ok(_) => return Err(not_a_dir()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        match self.make_dir(dir) {
            // Another writer of the store made it meanwhile (two first
            // refreshes at once): the same directory, judged the same way.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => match found() {
                Ok(m) if m.is_dir() => Ok(()),
                _ => Err(not_a_dir()),
            },
            other => other,
        }
    }

    /// Makes the one directory `dir` (its parent exists), exactly `0700`
    /// whatever the umask (a umask of `0177` would otherwise leave a
    /// directory its owner cannot enter), and makes its entry durable.
    /// `AlreadyExists` when something is there already, even a link.
    pub(crate) fn make_dir(&self, dir: &Path) -> io::Result<()> {
        // Only Unix sets a mode on the builder.
        #[cfg_attr(not(unix), allow(unused_mut))]
        let mut builder = fs::DirBuilder::new();
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(dir)?;
        // On the directory just made, opened without following a link: by
        // path, a link another user swapped in between the mkdir and the
        // chmod (in a parent others can write) made root chmod the file it
        // pointed at. A swapped-in directory is theirs, and is judged later.
        #[cfg(unix)]
        {
            use rustix::fs::{Mode, OFlags};
            let fd = rustix::fs::open(
                dir,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )?;
            if let Err(e) = rustix::fs::fchmod(&fd, Mode::from_raw_mode(0o700)) {
                // Not left half made: each retry got one directory further
                // before. rmdir removes it only while it is empty, and the
                // directory just made is.
                let _ = fs::remove_dir(dir);
                return Err(mode_refused(e.into()));
            }
        }
        // A new directory's own entry must survive a power loss too, or a
        // later durable write inside it could vanish with it.
        match dir.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => self.sync_dir(parent),
            _ => Ok(()),
        }
    }

    /// Creates a new temp file (owner-only, unpredictable name, create-new).
    pub(crate) fn create_temp(&self, dir: &Path) -> io::Result<TempFile> {
        let inner = tempfile::Builder::new()
            .prefix(&crate::layout::temp_prefix(crate::lock::this_temp_owner()))
            .rand_bytes(16)
            .tempfile_in(dir)?;
        // tempfile creates with O_EXCL (never through a planted link) and
        // mode 0600 minus the umask; make it exactly 0600 whatever the umask.
        // On failure `inner` removes the file as it is dropped.
        set_owner_only(inner.as_file()).map_err(mode_refused)?;
        self.before(Op::Create(inner.path()))?;
        Ok(TempFile { inner })
    }

    /// Appends bytes to a temp file.
    pub(crate) fn write(&self, temp: &mut TempFile, data: &[u8]) -> io::Result<()> {
        self.before(Op::Write(temp.inner.path(), data))?;
        temp.inner.as_file_mut().write_all(data)
    }

    /// Flushes a temp file's data and metadata to stable storage.
    pub(crate) fn sync_file(&self, temp: &TempFile) -> io::Result<()> {
        self.before(Op::SyncFile(temp.inner.path()))?;
        temp.inner.as_file().sync_all()
    }

    /// Makes a temp file read-only (snapshots are immutable once published).
    pub(crate) fn make_read_only(&self, temp: &TempFile) -> io::Result<()> {
        let file = temp.inner.as_file();
        // A temp file is exactly 0600 (`create_temp`), so read-only is
        // 0400: set at once, without reading the mode back first.
        #[cfg(unix)]
        {
            rustix::fs::fchmod(file, rustix::fs::Mode::RUSR)?;
            Ok(())
        }
        #[cfg(not(unix))]
        {
            let mut perms = file.metadata()?.permissions();
            perms.set_readonly(true);
            file.set_permissions(perms)
        }
    }

    /// Renames a temp file over `dest`, retrying transient failures within
    /// `budget`. On failure the temp file is removed.
    pub(crate) fn persist(
        &self,
        temp: TempFile,
        dest: &Path,
        budget: Option<Duration>,
    ) -> (io::Result<()>, RenameStats) {
        let path = temp.inner.into_temp_path();
        let (result, stats) = self.rename_with_retry(&path, dest, budget);
        if result.is_ok() {
            // The name now belongs to `dest`; nothing is left to clean up.
            let _ = path.keep();
        }
        (result, stats)
    }

    fn rename_with_retry(
        &self,
        from: &Path,
        to: &Path,
        budget: Option<Duration>,
    ) -> (io::Result<()>, RenameStats) {
        retry_transient(
            self.retry,
            budget,
            || {
                self.before(Op::Rename(from, to))?;
                // Replacing a read-only snapshot (a repair) on Windows needs
                // its attribute cleared first.
                crate::read_only::retry_read_only(
                    to,
                    || fs::rename(from, to),
                    crate::read_only::clear_read_only,
                )
            },
            is_transient_rename_error,
            std::thread::sleep,
        )
    }

    /// Makes renames and unlinks in `dir` durable.
    pub(crate) fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.before(Op::SyncDir(dir))?;
        sync_dir_impl(dir)
    }

    /// Unlinks a file; a file that is already gone is fine.
    pub(crate) fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.before(Op::Remove(path))?;
        // A snapshot is read-only: on Windows that blocks the delete until
        // the attribute is cleared (see `read_only`).
        let remove = || fs::remove_file(path);
        match crate::read_only::retry_read_only(path, remove, crate::read_only::clear_read_only) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }

    /// Hard-links a temp file under `dest`; fails with `AlreadyExists` if
    /// `dest` exists (atomically, on local filesystems, NFS and SMB). The
    /// temp file stays; [`Durable::discard`] removes it.
    pub(crate) fn link(&self, temp: &TempFile, dest: &Path) -> io::Result<()> {
        self.before(Op::Link(temp.path(), dest))?;
        fs::hard_link(temp.path(), dest)
    }

    /// Removes a temp file that is no longer needed (after [`Durable::link`]).
    pub(crate) fn discard(&self, temp: TempFile) -> io::Result<()> {
        self.before(Op::Remove(temp.path()))?;
        match temp.inner.close() {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }

    /// The whole durable rewrite of a small file: temp in `tmp_dir`, write,
    /// fsync, rename over `dest`, fsync `dest`'s directory.
    ///
    /// With `durable == false` the two fsyncs are skipped (for descriptive
    /// files such as the lock holder record, whose loss is harmless).
    pub(crate) fn replace_file(
        &self,
        tmp_dir: &Path,
        dest: &Path,
        bytes: &[u8],
        durable: bool,
        budget: Option<Duration>,
    ) -> Result<RenameStats, ReplaceError> {
        let before = |path: &Path| {
            let path = path.to_path_buf();
            move |source| ReplaceError {
                path,
                source,
                replaced: false,
            }
        };
        let mut temp = self.create_temp(tmp_dir).map_err(before(tmp_dir))?;
        let temp_path = temp.path().to_path_buf();
        self.write(&mut temp, bytes).map_err(before(&temp_path))?;
        if durable {
            self.sync_file(&temp).map_err(before(&temp_path))?;
        }
        let (result, stats) = self.persist(temp, dest, budget);
        result.map_err(before(dest))?;
        if durable {
            let parent = dest.parent().unwrap_or(Path::new("."));
            self.sync_dir(parent).map_err(|source| ReplaceError {
                path: parent.to_path_buf(),
                source,
                replaced: true,
            })?;
        }
        Ok(stats)
    }
}

/// A failed [`Durable::replace_file`]: the path and error of the step that
/// failed, and whether `dest` had already been replaced (only its
/// directory's fsync failed), which a commit needs to know to say whether
/// it happened.
#[derive(Debug)]
pub(crate) struct ReplaceError {
    pub path: PathBuf,
    pub source: io::Error,
    pub replaced: bool,
}

impl From<ReplaceError> for (PathBuf, io::Error) {
    fn from(e: ReplaceError) -> Self {
        (e.path, e.source)
    }
}

#[cfg(unix)]
fn sync_dir_impl(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    // O_DIRECTORY: something planted in a directory's place (a FIFO) fails
    // at once instead of blocking the open.
    let flags = rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::NONBLOCK;
    fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags.bits() as i32)
        .open(dir)?
        .sync_all()
}

/// Windows cannot open a directory as a `File` without extra flags and makes
/// renames durable through NTFS's journal; this is untested there.
#[cfg(not(unix))]
fn sync_dir_impl(_dir: &Path) -> io::Result<()> {
    Ok(())
}

// ------------------------------------------------------------ the open gate
//
// Every open of a file inside a store goes through `open_no_follow` (read) or
// `open_read_write` (read-write, creating); every file snapcache creates
// there goes through `Durable::create_temp` or `create_exclusive`. The rules:
//
// - never follow a symlink at the final component (O_NOFOLLOW);
// - never block: an lstat first, so a FIFO or a device is not even opened,
//   and O_NONBLOCK on the open, so one swapped in after the lstat cannot
//   block it either (O_NONBLOCK has no effect on regular files);
// - the type is checked again on the opened descriptor (fstat) before any
//   byte is read: only regular files pass;
// - creation is exclusive (O_EXCL, which also refuses a planted link) and the
//   mode is set to exactly 0600 on the descriptor, whatever the umask.

/// One version of one file: its device and inode, size, and modification
/// and change times to the nanosecond. Two looks that give the same
/// `FileId` saw the same bytes, unless the file was rewritten in place,
/// to the same size, within one tick of the filesystem's clock: snapcache
/// never rewrites a store file in place (it renames a new one over it,
/// which is a new inode with a new change time). `None` where the platform
/// gives no inode (Windows): nothing is then taken as already seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileId {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl FileId {
    /// The identity of an lstat/fstat result.
    #[cfg(unix)]
    pub(crate) fn of(meta: &fs::Metadata) -> Option<FileId> {
        use std::os::unix::fs::MetadataExt;
        Some(FileId {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        })
    }

    /// The identity of an lstat/fstat result.
    #[cfg(not(unix))]
    pub(crate) fn of(_meta: &fs::Metadata) -> Option<FileId> {
        None
    }

    /// The identity of a `rustix` stat, as [`FileId::of`] gives it for the
    /// same file. (The field types differ between platforms' `stat`: the
    /// casts are no-ops on Linux.)
    #[cfg(unix)]
    #[allow(clippy::unnecessary_cast)]
    pub(crate) fn of_stat(st: &rustix::fs::Stat) -> FileId {
        FileId {
            dev: st.st_dev as u64,
            ino: st.st_ino as u64,
            size: st.st_size as u64,
            mtime: (st.st_mtime as i64, st.st_mtime_nsec as i64),
            ctime: (st.st_ctime as i64, st.st_ctime_nsec as i64),
        }
    }
}

/// What was found at a store name, judged without following a link.
// Windows has no FIFOs, sockets or device files in a directory: those kinds
// are Unix's only.
#[cfg_attr(windows, allow(dead_code))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FileKind {
    Regular,
    Directory,
    Symlink,
    Fifo,
    Socket,
    CharDevice,
    BlockDevice,
    Unknown,
}

impl FileKind {
    /// The kind of an lstat/fstat result.
    pub(crate) fn of(meta: &fs::Metadata) -> FileKind {
        let t = meta.file_type();
        if t.is_file() {
            return FileKind::Regular;
        }
        if t.is_dir() {
            return FileKind::Directory;
        }
        if t.is_symlink() {
            return FileKind::Symlink;
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::FileTypeExt;
            if t.is_fifo() {
                return FileKind::Fifo;
            }
            if t.is_socket() {
                return FileKind::Socket;
            }
            if t.is_char_device() {
                return FileKind::CharDevice;
            }
            if t.is_block_device() {
                return FileKind::BlockDevice;
            }
        }
        FileKind::Unknown
    }

    /// `a FIFO (named pipe)`, for messages.
    pub(crate) fn describe(self) -> &'static str {
        match self {
            FileKind::Regular => "a regular file",
            FileKind::Directory => "a directory",
            FileKind::Symlink => "a symbolic link",
            FileKind::Fifo => "a FIFO (named pipe)",
            FileKind::Socket => "a Unix socket",
            FileKind::CharDevice => "a character device",
            FileKind::BlockDevice => "a block device",
            FileKind::Unknown => "a special file of unknown type",
        }
    }
}

/// Carried inside an `io::Error` when a store name holds the wrong kind of
/// file; `Error::io` turns it into `Error::UnexpectedFileType`, so every
/// caller reports the path and the kind, whatever it was doing.
#[derive(Debug)]
pub(crate) struct WrongFileType {
    pub found: FileKind,
    pub expected: FileKind,
}

impl fmt::Display for WrongFileType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "it is {}, not {}",
            self.found.describe(),
            self.expected.describe()
        )
    }
}

impl std::error::Error for WrongFileType {}

/// An error saying that a store name holds `found` where `expected` belongs.
pub(crate) fn wrong_type(found: FileKind, expected: FileKind) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        WrongFileType { found, expected },
    )
}

/// The wrong-type payload of an error from the gate, if that is what it is.
pub(crate) fn wrong_type_of(err: &io::Error) -> Option<&WrongFileType> {
    err.get_ref()?.downcast_ref::<WrongFileType>()
}

fn require_regular(meta: &fs::Metadata) -> io::Result<()> {
    match FileKind::of(meta) {
        FileKind::Regular => Ok(()),
        found => Err(wrong_type(found, FileKind::Regular)),
    }
}

/// An open that failed although the lstat saw a regular file: the name was
/// swapped in between (O_NOFOLLOW refuses a link with ELOOP). Reports what is
/// there now when it is not a regular file.
fn explain_open_error(path: &Path, err: io::Error) -> io::Error {
    if err.kind() == io::ErrorKind::NotFound {
        return err;
    }
    match fs::symlink_metadata(path) {
        Ok(meta) if !meta.is_file() => wrong_type(FileKind::of(&meta), FileKind::Regular),
        _ => err,
    }
}

fn no_follow_options(options: &mut fs::OpenOptions) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // std adds O_CLOEXEC itself.
        let flags = rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK;
        options.custom_flags(flags.bits() as i32);
    }
    #[cfg(not(unix))]
    {
        // Windows: the lstat before the open refuses a link (a reparse
        // point); FIFOs and devices cannot appear under a store name.
        let _ = options;
    }
}

/// Opens a store file for reading: never follows a symlink at its final
/// component (so a planted link cannot make snapcache read outside the
/// store), never blocks (a FIFO or device is refused before it is opened),
/// and hands out only a regular file (checked on the descriptor).
///
/// A wrong kind of file is an error carrying [`WrongFileType`].
pub(crate) fn open_no_follow(path: &Path) -> io::Result<File> {
    open_no_follow_with_metadata(path).map(|(file, _)| file)
}

/// [`open_no_follow`], also returning the metadata of the opened file (the
/// gate's own check on the descriptor), so that a caller needing its length
/// does not ask again.
pub(crate) fn open_no_follow_with_metadata(path: &Path) -> io::Result<(File, fs::Metadata)> {
    require_regular(&fs::symlink_metadata(path)?)?;
    let mut options = fs::OpenOptions::new();
    options.read(true);
    no_follow_options(&mut options);
    let file = options
        .open(path)
        .map_err(|e| explain_open_error(path, e))?;
    let meta = file.metadata()?;
    require_regular(&meta)?;
    Ok((file, meta))
}

/// Reads into `buf` until it is full or the file ends; how much was read.
pub(crate) fn fill(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Opens (or, with `create`, creates) a store file for reading and
/// writing, with the rules of [`open_no_follow`]. A file this call creates
/// is created exclusively and made 0600, whatever the umask.
pub(crate) fn open_read_write(path: &Path, create: bool) -> io::Result<File> {
    for _ in 0..3 {
        match fs::symlink_metadata(path) {
            Ok(meta) => {
                require_regular(&meta)?;
                let mut options = fs::OpenOptions::new();
                options.read(true).write(true);
                no_follow_options(&mut options);
                let file = match options.open(path) {
                    // Removed between the lstat and the open: look again.
                    Err(e) if e.kind() == io::ErrorKind::NotFound && create => continue,
                    other => other.map_err(|e| explain_open_error(path, e))?,
                };
                require_regular(&file.metadata()?)?;
                return Ok(file);
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound && create => {
                match create_exclusive(path, true) {
                    Ok(file) => return Ok(file),
                    // Another process created it meanwhile: open theirs.
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                    Err(e) => return Err(e),
                }
            }
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::other(
        "the file kept appearing and disappearing while it was opened; retry",
    ))
}

/// Creates a new store file exclusively (create-new: fails when anything,
/// a planted link included, has the name), never blocking, mode exactly
/// 0600. `read`: also open it for reading.
pub(crate) fn create_exclusive(path: &Path, read: bool) -> io::Result<File> {
    let mut options = fs::OpenOptions::new();
    options.read(read).write(true).create_new(true);
    no_follow_options(&mut options);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let file = options.open(path)?;
    if let Err(e) = set_owner_only(&file) {
        // Not left behind: an empty lease file of a create that failed
        // here made every later writer wait its whole budget for a holder
        // that never existed (FAT, fusefat, bindfs refuse the chmod).
        remove_if_same(path, &file);
        return Err(mode_refused(e));
    }
    Ok(file)
}

/// Removes `path` if it is still the file `file` is open on: another
/// process may have put something else there since the create.
fn remove_if_same(path: &Path, file: &File) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let same = match (file.metadata(), fs::symlink_metadata(path)) {
            (Ok(open), Ok(named)) => open.dev() == named.dev() && open.ino() == named.ino(),
            _ => false,
        };
        if same {
            let _ = fs::remove_file(path);
        }
    }
    #[cfg(not(unix))]
    {
        // No inode to compare; Windows refuses no mode change anyway.
        let _ = (path, file);
    }
}

/// The error of a mode change refused on a file or directory snapcache has
/// just made: not the store's permissions (the user owns what it made) but
/// a filesystem that keeps no Unix modes, where no store can keep its files
/// owner-only.
fn mode_refused(e: io::Error) -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        format!(
            "the filesystem refused to make what snapcache just created owner-only ({e}); FAT, exFAT and some FUSE filesystems keep no Unix modes, and a store cannot live on one"
        ),
    )
}

/// Sets a file snapcache just created to mode 0600 (owner read/write), on
/// the descriptor: the umask must not decide who can read a store file.
pub(crate) fn set_owner_only(file: &File) -> io::Result<()> {
    #[cfg(unix)]
    {
        rustix::fs::fchmod(file, rustix::fs::Mode::RUSR | rustix::fs::Mode::WUSR)?;
    }
    #[cfg(not(unix))]
    {
        // Windows has no mode bits; the file inherits the directory's ACL.
        let _ = file;
    }
    Ok(())
}

/// Time left until `deadline`, if there is one.
pub(crate) fn remaining(deadline: Option<Instant>) -> Option<Duration> {
    deadline.map(|d| d.saturating_duration_since(Instant::now()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `fill` stops at the end of the file and reports how much it read, so
    /// a file shorter than the buffer (it shrank after the stat) and one with
    /// a byte left over (it grew) are both told.
    #[test]
    fn fill_reports_short_files_and_leftover_bytes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        std::fs::write(&path, b"abcde").expect("write the test file");
        let mut file = std::fs::File::open(&path).expect("open");
        let mut buf = [0u8; 8];
        assert_eq!(fill(&mut file, &mut buf).expect("fill"), 5);
        assert_eq!(&buf[..5], b"abcde");
        let mut file = std::fs::File::open(&path).expect("open");
        let mut buf = [0u8; 4];
        assert_eq!(fill(&mut file, &mut buf).expect("fill"), 4);
        assert_eq!(
            fill(&mut file, &mut [0u8; 1]).expect("probe"),
            1,
            "one byte left"
        );
        assert_eq!(
            fill(&mut file, &mut [0u8; 1]).expect("probe"),
            0,
            "then the end"
        );
    }
    use std::cell::RefCell;

    fn transient() -> io::Error {
        io::Error::new(
            io::ErrorKind::PermissionDenied,
            "sharing violation (injected)",
        )
    }

    fn run(failures: u32, budget: Option<Duration>) -> (io::Result<()>, RenameStats, Vec<u64>) {
        let delays = RefCell::new(Vec::new());
        let mut left = failures;
        let (result, stats) = retry_transient(
            RetryPolicy::default(),
            budget,
            || {
                if left > 0 {
                    left -= 1;
                    Err(transient())
                } else {
                    Ok(())
                }
            },
            |_| true,
            |d| delays.borrow_mut().push(d.as_millis() as u64),
        );
        (result, stats, delays.into_inner())
    }

    #[test]
    fn first_try_success_makes_one_attempt_and_no_wait() {
        let (result, stats, delays) = run(0, None);
        assert!(result.is_ok());
        assert_eq!(
            stats,
            RenameStats {
                attempts: 1,
                waited: Duration::ZERO
            }
        );
        assert!(delays.is_empty());
    }

    #[test]
    fn delays_double_from_50_ms_and_cap_at_1_s() {
        let (result, stats, delays) = run(8, None);
        assert!(result.is_ok(), "succeeds after transient failures");
        assert_eq!(stats.attempts, 9);
        assert_eq!(delays, vec![50, 100, 200, 400, 800, 1000, 1000, 1000]);
        assert_eq!(stats.waited, Duration::from_millis(delays.iter().sum()));
    }

    #[test]
    fn total_delay_never_passes_the_budget() {
        let budget = Duration::from_millis(500);
        let (result, stats, delays) = run(100, Some(budget));
        assert!(result.is_err(), "gives up when the budget is spent");
        assert_eq!(
            delays,
            vec![50, 100, 200],
            "the 400 ms step would end at 750 ms"
        );
        assert!(stats.waited <= budget);
        assert_eq!(stats.attempts, 4);
    }

    #[test]
    fn gives_up_after_max_attempts_without_budget() {
        let (result, stats, _) = run(100, None);
        assert!(result.is_err());
        assert_eq!(stats.attempts, RetryPolicy::default().max_attempts);
    }

    #[test]
    fn permanent_errors_are_not_retried() {
        let (result, stats) = retry_transient(
            RetryPolicy::default(),
            None,
            || Err(io::Error::new(io::ErrorKind::NotFound, "gone")),
            |_| false,
            |_| panic!("must not sleep"),
        );
        assert!(result.is_err());
        assert_eq!(stats.attempts, 1);
    }
}

#[cfg(test)]
mod temp_name_tests {
    use super::*;

    #[test]
    fn temp_names_are_unpredictable_and_owner_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let durable = Durable::default();
        let a = durable.create_temp(dir.path()).expect("temp a");
        let b = durable.create_temp(dir.path()).expect("temp b");
        let prefix = crate::layout::temp_prefix(crate::lock::this_temp_owner());
        for t in [&a, &b] {
            let name = t.path().file_name().and_then(|n| n.to_str()).expect("name");
            let random = name.strip_prefix(&prefix).expect("pid-tagged prefix");
            assert_eq!(random.len(), 16, "16 random characters: {name}");
            assert!(random.chars().all(|c| c.is_ascii_alphanumeric()), "{name}");
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let mode = fs::metadata(t.path()).expect("meta").permissions().mode() & 0o777;
                assert_eq!(mode, 0o600, "{name}");
            }
        }
        assert_ne!(a.path(), b.path());
    }
}

#[cfg(all(test, unix))]
// Helpers below fail loudly by design: a panic is a failed test.
#[allow(clippy::expect_used)]
mod gate_tests {
    use super::*;
    use std::os::unix::fs::{PermissionsExt, symlink};

    fn mkfifo(path: &Path) {
        let made = std::process::Command::new("mkfifo")
            .arg(path)
            .status()
            .expect("run mkfifo");
        assert!(made.success());
    }

    fn kind_of_refusal(result: io::Result<File>) -> FileKind {
        let err = result.expect_err("refused");
        wrong_type_of(&err)
            .unwrap_or_else(|| panic!("a wrong-type error, not {err}"))
            .found
    }

    #[test]
    fn the_gate_refuses_every_non_regular_kind_without_blocking() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fifo = dir.path().join("fifo");
        mkfifo(&fifo);
        let sock = dir.path().join("sock");
        let _listener = std::os::unix::net::UnixListener::bind(&sock).expect("bind");
        let sub = dir.path().join("dir");
        fs::create_dir(&sub).expect("dir");
        let target = dir.path().join("target");
        fs::write(&target, b"outside").expect("target");
        let link = dir.path().join("link");
        symlink(&target, &link).expect("link");
        let cases = [
            (&fifo, FileKind::Fifo),
            (&sock, FileKind::Socket),
            (&sub, FileKind::Directory),
            (&link, FileKind::Symlink),
        ];
        for (path, expected) in cases {
            assert_eq!(kind_of_refusal(open_no_follow(path)), expected, "{path:?}");
            assert_eq!(
                kind_of_refusal(open_read_write(path, true)),
                expected,
                "{path:?}"
            );
        }
        assert_eq!(fs::read(&target).expect("target"), b"outside");
        let err =
            crate::error::Error::io("open", &fifo, wrong_type(FileKind::Fifo, FileKind::Regular));
        assert!(err.is_unexpected_file_type(), "{err}");
        assert!(err.to_string().contains("a FIFO (named pipe)"), "{err}");
    }

    #[test]
    fn exclusive_creation_never_goes_through_a_planted_link_and_is_0600() {
        let dir = tempfile::tempdir().expect("tempdir");
        let victim = dir.path().join("victim");
        fs::write(&victim, b"precious").expect("victim");
        let planted = dir.path().join("planted");
        symlink(&victim, &planted).expect("link");
        let err = create_exclusive(&planted, false).expect_err("refused");
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&victim).expect("victim"), b"precious");

        let fresh = dir.path().join("fresh");
        let file = open_read_write(&fresh, true).expect("created");
        drop(file);
        let mode = fs::metadata(&fresh).expect("meta").permissions().mode() & 0o7777;
        assert_eq!(mode, 0o600);
        // An existing regular file is opened, not recreated.
        fs::write(&fresh, b"kept").expect("write");
        drop(open_read_write(&fresh, true).expect("opened"));
        assert_eq!(fs::read(&fresh).expect("read"), b"kept");
    }
}
