//! The one error type of the library.
//!
//! Every message says what failed, names the path involved and what the user
//! can do next. The CLI maps errors to exit codes through the predicates
//! ([`Error::is_lock_timeout`], [`Error::is_payload_rejected`], ...), never by
//! matching message text.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use crate::lock::{HolderInfo, TimeoutSource};

/// An error returned by a payload source (the closure given to
/// [`Store::publish_with`](crate::Store::publish_with) or
/// [`Writer::publish_with`](crate::Writer::publish_with)): any error type,
/// boxed, so a closure can use `?` on I/O, JSON and its own errors alike.
/// It comes back unchanged in [`Error::SourceFailed`].
pub type SourceError = Box<dyn std::error::Error + Send + Sync>;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in a snapcache operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No store (no `current` pointer) exists at the root yet.
    #[error(
        "no snapshot has been published in the store at {root} yet; publish one first, or open the store that holds the data"
    )]
    NoStore {
        /// The store root.
        root: PathBuf,
    },

    /// The directory is not a snapcache store: it exists, is not empty and
    /// carries no store marker, and some of its entries are not snapcache's.
    /// Nothing in it was read, created or removed.
    #[error("{}", not_a_store_message(.root, .found))]
    NotAStore {
        /// The directory.
        root: PathBuf,
        /// One or two of the entries that snapcache did not create (relative
        /// to `root`); empty when `root` is not a directory at all.
        found: Vec<String>,
    },

    /// The `current` pointer exists but cannot be trusted. A pointer that
    /// only looked damaged because a writer was replacing it has already
    /// been re-read for about a second; this one stayed damaged.
    #[error("{}", corrupt_pointer_message(path, detail))]
    CorruptPointer {
        /// Path of the pointer file.
        path: PathBuf,
        /// What is wrong with it.
        detail: String,
    },

    /// The pointer was written by a newer (or unknown) format version.
    #[error(
        "the store file {path} has format version {found}, but this program's snapcache reads only version {supported}; upgrade the program, or give this one a separate store directory"
    )]
    UnsupportedVersion {
        /// Path of the pointer file.
        path: PathBuf,
        /// Version found in the file.
        found: u32,
        /// Version this build understands.
        supported: u32,
    },

    /// A snapshot does not match what the pointer says about it.
    #[error(
        "snapshot {path} of generation {generation} is damaged ({detail}); no unverified bytes were returned. Check which retained generations are intact, then roll back to one of them or publish a new generation"
    )]
    CorruptSnapshot {
        /// Path of the snapshot file.
        path: PathBuf,
        /// Generation that references it.
        generation: u64,
        /// What is wrong with it.
        detail: String,
    },

    /// A snapshot that a retained generation references is missing.
    #[error(
        "snapshot {path} of generation {generation} is missing; check which retained generations are intact, then roll back to one of them or publish a new generation"
    )]
    MissingSnapshot {
        /// Path where the snapshot should be.
        path: PathBuf,
        /// Generation that references it.
        generation: u64,
    },

    /// The payload was refused before anything was published.
    #[error("payload rejected: {reason}; the store was not changed")]
    PayloadRejected {
        /// Why (for JSON, with the first error position).
        reason: String,
    },

    /// The payload source (a reader, a closure, a `--exec` command) failed.
    ///
    /// The source's own error is kept as it was returned, not stringified:
    /// reach it with [`Error::downcast_source`], [`Error::into_source`] or
    /// [`std::error::Error::source`], so an embedding program keeps its own
    /// error (and exit code) through a publish.
    #[error(
        "the payload source failed (nothing was published; the current generation is unchanged): {source}"
    )]
    SourceFailed {
        /// What the source returned.
        #[source]
        source: SourceError,
    },

    /// The writer lock could not be acquired within the budget.
    #[error("{}", lock_timeout_message(.path, *.waited, .budget, .budget_source, .holder.as_deref(), .lease.as_deref()))]
    LockTimeout {
        /// Path of the lock.
        path: PathBuf,
        /// How long this process waited.
        waited: Duration,
        /// The budget it had (`None` only for "try once").
        budget: Duration,
        /// Where the budget came from.
        budget_source: TimeoutSource,
        /// Who held the lock when we gave up, when known.
        holder: Option<Box<HolderInfo>>,
        /// The times of the live lease that kept it, when one did (on
        /// either backend: advisory writers back off from a live lease
        /// too); the message says when they cannot be trusted.
        lease: Option<Box<crate::LeaseView>>,
    },

    /// The lease expired while this writer stalled and another took over.
    #[error(
        "lost the writer lease {path} (it expired while this writer was stalled and another writer took over); this writer stopped before changing anything more: nothing was published, and nothing still referenced was removed. Retry the command"
    )]
    LeaseLost {
        /// The lease file.
        path: PathBuf,
    },

    /// The advisory lock file was removed or replaced while this writer
    /// held it (by a temp-file cleaner, a script, a restore), so another
    /// writer may have locked the file there now and run at the same time.
    /// Checked right before the commit and before each file a cleanup
    /// removes: nothing was published.
    #[error(
        "the writer lock file {path} was removed or replaced while this writer held it, so another writer may have been writing at the same time; this writer stopped before changing anything more: nothing was published, and nothing still referenced was removed. Something deletes files in the store (a temp-file cleaner such as systemd-tmpfiles or tmpwatch, or a script): exclude the store from it, then retry"
    )]
    LockFileReplaced {
        /// The lock file.
        path: PathBuf,
    },

    /// Another writer committed first (lease backend): this writer's
    /// commit record was already taken, so its pointer was not written.
    #[error("{}", commit_conflict_message(path, *generation))]
    CommitConflict {
        /// The commit record the other writer created.
        path: PathBuf,
        /// The current generation that writer committed (0 when it cleared
        /// the store, or its record could not be read).
        generation: u64,
    },

    /// The operation was interrupted (Ctrl-C, SIGTERM, or a cancel flag).
    #[error("{}", interrupted_message(during))]
    Interrupted {
        /// What was going on.
        during: &'static str,
    },

    /// A verified snapshot is not of the type the caller asked `read_json` for.
    #[error(
        "generation {generation} ({path}) is intact but is not the JSON the caller expected: {detail}; it was probably written by another version of the program, refresh it"
    )]
    UnexpectedShape {
        /// The snapshot file.
        path: PathBuf,
        /// Its generation.
        generation: u64,
        /// The deserialization error.
        detail: String,
    },

    /// A generation number that is not retained was asked for.
    #[error(
        "generation {generation} is not retained in the store at {root} (retained: {available}); choose one of the retained generations"
    )]
    NoSuchGeneration {
        /// The store root.
        root: PathBuf,
        /// Requested generation.
        generation: u64,
        /// Retained generations, formatted for the message.
        available: String,
    },

    /// Forgetting the current generation was asked for.
    #[error(
        "cannot forget generation {generation} of the store at {root}: it is the current generation; publish or roll back to another generation first"
    )]
    ForgetCurrent {
        /// The store root.
        root: PathBuf,
        /// The current generation.
        generation: u64,
    },

    /// Forgetting a pinned generation was asked for.
    #[error(
        "cannot forget generation {generation} of the store at {root}: it is pinned, which keeps it until it is unpinned; unpin it first if it may go. Nothing was changed"
    )]
    ForgetPinned {
        /// The store root.
        root: PathBuf,
        /// The pinned generation.
        generation: u64,
    },

    /// Pinning more generations than a store retains was asked for.
    #[error(
        "cannot pin generation {generation} of the store at {root}: {limit} generations are pinned already, the most a store retains besides its current one; unpin one first. Nothing was changed"
    )]
    PinLimit {
        /// The store root.
        root: PathBuf,
        /// The first generation that did not fit.
        generation: u64,
        /// The most generations that can be pinned ([`MAX_PINNED`](crate::MAX_PINNED)).
        limit: usize,
    },

    /// Rollback was asked for, but nothing earlier is retained.
    #[error(
        "cannot roll back: generation {current} is the oldest retained generation in {root}; nothing older is retained to roll back to"
    )]
    NothingToRollBack {
        /// The store root.
        root: PathBuf,
        /// The current generation.
        current: u64,
    },

    /// Every generation number has been handed out: the store's counter is
    /// at its maximum (only a planted or damaged pointer gets there).
    #[error(
        "the store pointer {path} has handed out every generation number (last generation {last}); nothing was published and the store is unchanged. Start a fresh history: clear the store (which removes every generation; copy any snapshot you need first) and publish again"
    )]
    GenerationsExhausted {
        /// Path of the pointer file.
        path: PathBuf,
        /// The last generation number handed out.
        last: u64,
    },

    /// The pointer's commit counter is at its end, 2^63, the highest number
    /// a commit record's name carries (only an edited or damaged pointer
    /// gets there). Moving the pointer aside does not help on the lease
    /// backend, whose newest commit record holds the same counter; clearing
    /// the store does.
    #[error(
        "the store pointer {path} has numbered every commit it can (its commit counter is at its maximum, {last}; commits are numbered up to 2^63), which no store reaches by publishing: the pointer was edited or damaged. Nothing was published and the store is unchanged; reads still work. Start a fresh history: clear the store (which removes every generation; copy any snapshot you need first) and publish again"
    )]
    CommitsExhausted {
        /// Path of the pointer file.
        path: PathBuf,
        /// The commit counter.
        last: u64,
    },

    /// Options given by the caller are invalid.
    #[error("invalid option: {0}")]
    InvalidOption(String),

    /// A store name holds the wrong kind of file: a FIFO, socket, device,
    /// directory or symbolic link where snapcache keeps a regular file (or
    /// anything but a directory where it keeps one). Nothing was read from
    /// it or written through it, and no open of it could block.
    #[error(
        "{path} is {found}, not {expected} (what the store keeps under that name); nothing was read from it or written through it. The store did not make it: look at what it is (ls -l), then remove it, or use another store directory"
    )]
    UnexpectedFileType {
        /// The path.
        path: PathBuf,
        /// What was found there ("a FIFO (named pipe)", ...).
        found: &'static str,
        /// What belongs there ("a regular file" or "a directory").
        expected: &'static str,
    },

    /// A store directory or file is not controlled by the store's owner
    /// alone (like OpenSSH's `StrictModes`), or a writer is not the owner.
    /// Nothing was read or changed.
    #[error("{}", untrusted_message(.path, *.owner_uid, .owner_name.as_deref(), *.mode, .reason))]
    UntrustedPath {
        /// The path that failed the check.
        path: PathBuf,
        /// Its owner's uid.
        owner_uid: u32,
        /// Its owner's user name, when known.
        owner_name: Option<String>,
        /// Its permission bits (`0o7777` part of the mode).
        mode: u32,
        /// Why it is not trusted and what to do about it.
        reason: String,
    },

    /// A reader found a store that belongs to another user (not root),
    /// whom the caller has not said it trusts: what the store serves is
    /// whatever that user put there. Nothing was read.
    #[error("{}", owner_not_trusted_message(.path, *.owner_uid, .owner_name.as_deref(), *.reader_uid))]
    OwnerNotTrusted {
        /// The store root.
        path: PathBuf,
        /// Its owner's uid.
        owner_uid: u32,
        /// Its owner's user name, when known.
        owner_name: Option<String>,
        /// The uid this process reads as.
        reader_uid: u32,
    },

    /// The store location is an object-store URL (`s3://...`), but this
    /// build of the library has no object-store support (its cargo feature
    /// `s3` is off). Nothing was sent anywhere.
    #[error(
        "the store {url} is on an object store, but this build has no object-store support (the snapcache library's cargo feature `s3` is off); nothing was read or written: use a local directory, or a build with that feature"
    )]
    ObjectStoreUnsupported {
        /// The location given.
        url: String,
    },

    /// Other writers kept committing to the object store while this writer
    /// tried to: every conditional put of its pointer found a newer one, and
    /// the lock budget ran out before one of its rebased commits landed.
    #[error(
        "other writers committed to {url} {attempts} times while this writer tried to commit (last seen: generation {generation}); nothing was published within the lock budget ({budget:.1} s): retry later, or allow a longer wait"
    )]
    ObjectStoreConflict {
        /// The pointer object.
        url: String,
        /// How many of this writer's conditional puts lost.
        attempts: u32,
        /// The current generation of the newest pointer seen.
        generation: u64,
        /// The lock budget, in seconds.
        budget: f64,
    },

    /// An object-store location or its settings (URL, endpoint, region,
    /// credentials) are not usable. Nothing was sent to the server.
    #[error("invalid object-store setting: {detail}; nothing was sent to the server")]
    ObjectStoreConfig {
        /// What is wrong and how to fix it.
        detail: String,
    },

    /// A request to the object store failed or got an answer the client
    /// cannot use (a transport error, an unexpected HTTP status, a malformed
    /// listing).
    #[error("{}", object_request_message(.operation, .url, *.status, .detail))]
    ObjectStoreRequest {
        /// What was being done ("put", "get", "list", ...).
        operation: &'static str,
        /// The object or bucket URL, without any signature.
        url: String,
        /// The HTTP status, when the server answered.
        status: Option<u16>,
        /// What went wrong (the transport error or the server's error text).
        detail: String,
    },

    /// The object store does not honour conditional writes (`If-None-Match`,
    /// `If-Match`), so its writes could not serve as commits: it was refused.
    #[error(
        "the object store at {url} cannot be used safely: {detail}. Its conditional writes (If-None-Match: *, If-Match) are what makes a commit atomic, so it was refused and nothing was published; use a server that enforces them (Amazon S3, Ceph RGW, ...)"
    )]
    ObjectStoreUnsafe {
        /// The bucket (and prefix) URL probed.
        url: String,
        /// What the probe saw.
        detail: String,
    },

    /// An I/O operation failed.
    ///
    /// Only errors of a write say what became of the current generation
    /// (see [`IoStage`]); a read changes nothing and says nothing about it.
    #[error("{}", io_message(.action, .path, .source, *.stage))]
    #[non_exhaustive]
    Io {
        /// What we were doing ("create the temp file", ...).
        action: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
        /// Whether it happened during a write, and then whether before or
        /// after the write's commit point.
        stage: IoStage,
    },
}

/// Where an [`Error::Io`] happened, which is what says whether the failed
/// operation changed the current generation.
///
/// ```
/// # fn main() -> Result<(), snapcache::Error> {
/// # let dir = tempfile::tempdir().map_err(|e| snapcache::Error::InvalidOption(e.to_string()))?;
/// // A store root whose name is too long for the filesystem: nothing can start.
/// let root = dir.path().join("a".repeat(300));
/// let store = snapcache::Store::open(snapcache::StoreOptions::new(root))?;
/// let read = store.read_current().unwrap_err();
/// assert!(matches!(read, snapcache::Error::Io { stage: snapcache::IoStage::Read, .. }), "{read}");
/// assert!(!read.to_string().contains("current generation"));
/// let write = store.publish_bytes(b"[2]", &Default::default()).unwrap_err();
/// assert!(matches!(write, snapcache::Error::Io { stage: snapcache::IoStage::BeforeCommit, .. }));
/// assert!(write.to_string().contains("the current generation is unchanged"));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum IoStage {
    /// Not during a write (a read, a check, a listing): the operation
    /// changed nothing, and the message makes no claim about generations.
    Read,
    /// During a write, before its commit point: the current generation is
    /// unchanged (the message says so).
    BeforeCommit,
    /// During a write, at or after its commit point (making the new pointer
    /// durable): the change may already be current, so the store must be
    /// read again before deciding to retry (the message says so).
    AfterCommit,
}

impl Error {
    /// Wraps an I/O error with what we were doing and the path involved.
    ///
    /// An error from the store's open gate saying the file is of the wrong
    /// kind becomes [`Error::UnexpectedFileType`], whatever the action.
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        if let Some(wrong) = crate::durable::wrong_type_of(&source) {
            return Error::UnexpectedFileType {
                path: path.into(),
                found: wrong.found.describe(),
                expected: wrong.expected.describe(),
            };
        }
        Error::Io {
            action,
            path: path.into(),
            source,
            stage: IoStage::Read,
        }
    }

    /// The error as a write reports it: an I/O error not otherwise placed
    /// happened before the write's commit point. Applied where a write
    /// operation hands its error to the caller.
    pub(crate) fn in_write(self) -> Self {
        match self {
            Error::Io {
                action,
                path,
                source,
                stage: IoStage::Read,
            } => Error::Io {
                action,
                path,
                source,
                stage: IoStage::BeforeCommit,
            },
            other => other,
        }
    }

    /// The file or directory the error is about, for the variants that
    /// name one.
    pub(crate) fn path(&self) -> Option<&std::path::Path> {
        match self {
            Error::CorruptPointer { path, .. }
            | Error::UnsupportedVersion { path, .. }
            | Error::CorruptSnapshot { path, .. }
            | Error::MissingSnapshot { path, .. }
            | Error::UnexpectedFileType { path, .. }
            | Error::UntrustedPath { path, .. }
            | Error::OwnerNotTrusted { path, .. }
            | Error::Io { path, .. } => Some(path),
            _ => None,
        }
    }

    /// Whether this is an I/O error of a write that had not reached its
    /// commit point.
    pub(crate) fn is_io_before_commit(&self) -> bool {
        matches!(self, Error::Io { stage, .. } if *stage != IoStage::AfterCommit)
    }

    /// The error as a write reports it when its commit point was passed.
    pub(crate) fn after_commit(self) -> Self {
        match self {
            Error::Io {
                action,
                path,
                source,
                ..
            } => Error::Io {
                action,
                path,
                source,
                stage: IoStage::AfterCommit,
            },
            other => other,
        }
    }

    /// The payload source failed ([`Error::SourceFailed`]); its own error
    /// is in [`Error::downcast_source`].
    pub fn is_source_failed(&self) -> bool {
        matches!(self, Error::SourceFailed { .. })
    }

    /// The payload source's own error, when it is an `E`.
    ///
    /// ```
    /// # fn main() -> Result<(), snapcache::Error> {
    /// # let dir = tempfile::tempdir().map_err(|e| snapcache::Error::InvalidOption(e.to_string()))?;
    /// # let store = snapcache::Store::open(snapcache::StoreOptions::new(dir.path()))?;
    /// #[derive(Debug)]
    /// struct Upstream(u16);
    /// impl std::fmt::Display for Upstream {
    ///     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
    ///         write!(f, "upstream answered {}", self.0)
    ///     }
    /// }
    /// impl std::error::Error for Upstream {}
    ///
    /// let err = store
    ///     .publish_with(&Default::default(), |_sink| Err(Upstream(503).into()))
    ///     .unwrap_err();
    /// assert_eq!(err.downcast_source::<Upstream>().map(|u| u.0), Some(503));
    /// # Ok(()) }
    /// ```
    pub fn downcast_source<E: std::error::Error + 'static>(&self) -> Option<&E> {
        match self {
            Error::SourceFailed { source } => source.downcast_ref::<E>(),
            _ => None,
        }
    }

    /// Takes the payload source's own error out, when it is an `E`;
    /// otherwise gives the error back unchanged. This is how an embedding
    /// program gets *its* error back by value (with its exit code).
    ///
    /// ```
    /// # fn main() -> Result<(), snapcache::Error> {
    /// # let dir = tempfile::tempdir().map_err(|e| snapcache::Error::InvalidOption(e.to_string()))?;
    /// # let store = snapcache::Store::open(snapcache::StoreOptions::new(dir.path()))?;
    /// #[derive(Debug, PartialEq)]
    /// enum AppError { Network(String), Cache(String) }
    /// impl std::fmt::Display for AppError {
    ///     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result { write!(f, "{self:?}") }
    /// }
    /// impl std::error::Error for AppError {}
    /// impl From<snapcache::Error> for AppError {
    ///     fn from(e: snapcache::Error) -> Self {
    ///         // The app's own error comes back as it was; the rest is the cache's.
    ///         e.into_source::<AppError>().unwrap_or_else(|e| AppError::Cache(e.to_string()))
    ///     }
    /// }
    ///
    /// let publish = || -> Result<_, AppError> {
    ///     Ok(store.publish_with(&Default::default(), |_sink| {
    ///         Err(AppError::Network("connection reset".into()).into())
    ///     })?)
    /// };
    /// assert_eq!(publish().unwrap_err(), AppError::Network("connection reset".into()));
    /// # Ok(()) }
    /// ```
    pub fn into_source<E: std::error::Error + 'static>(self) -> Result<E, Error> {
        match self {
            Error::SourceFailed { source } => match source.downcast::<E>() {
                Ok(mine) => Ok(*mine),
                Err(source) => Err(Error::SourceFailed { source }),
            },
            other => Err(other),
        }
    }

    /// Another writer committed first; nothing was published (see
    /// [`Error::CommitConflict`] and [`Error::ObjectStoreConflict`]).
    pub fn is_commit_conflict(&self) -> bool {
        matches!(
            self,
            Error::CommitConflict { .. } | Error::ObjectStoreConflict { .. }
        )
    }

    /// The writer lock was not acquired in time (CLI exit code 75).
    pub fn is_lock_timeout(&self) -> bool {
        matches!(self, Error::LockTimeout { .. })
    }

    /// The payload was refused (CLI exit code 65).
    pub fn is_payload_rejected(&self) -> bool {
        matches!(self, Error::PayloadRejected { .. })
    }

    /// The operation was interrupted by a signal or cancel flag (CLI exit code 130).
    pub fn is_interrupted(&self) -> bool {
        matches!(self, Error::Interrupted { .. })
    }

    /// A store directory or file failed the ownership and permission check,
    /// or a writer is not the store's owner (CLI exit code 1).
    pub fn is_untrusted(&self) -> bool {
        matches!(
            self,
            Error::UntrustedPath { .. } | Error::OwnerNotTrusted { .. }
        )
    }

    /// A FIFO, socket, device, link or directory sits at a store name
    /// (CLI exit code 1).
    pub fn is_unexpected_file_type(&self) -> bool {
        matches!(self, Error::UnexpectedFileType { .. })
    }

    /// The object store does not enforce conditional writes and was refused.
    pub fn is_object_store_unsafe(&self) -> bool {
        matches!(self, Error::ObjectStoreUnsafe { .. })
    }

    /// The directory is not a snapcache store (CLI exit code 1).
    pub fn is_not_a_store(&self) -> bool {
        matches!(self, Error::NotAStore { .. })
    }

    /// A pin is in the way: forgetting a pinned generation, or pinning more
    /// than [`MAX_PINNED`](crate::MAX_PINNED) (CLI exit code 1). Nothing
    /// was changed.
    pub fn is_pinned(&self) -> bool {
        matches!(self, Error::ForgetPinned { .. } | Error::PinLimit { .. })
    }

    /// The store's contents cannot be read by this version: damaged
    /// (pointer or snapshot), or of a newer format
    /// ([`Error::UnsupportedVersion`]: match it first when the advice
    /// should differ, since upgrading is the fix then, not a rollback).
    ///
    /// ```
    /// use snapcache::Error;
    /// let newer = Error::UnsupportedVersion { path: "/c/current".into(), found: 2, supported: 1 };
    /// assert!(newer.is_corrupt());
    /// ```
    pub fn is_corrupt(&self) -> bool {
        matches!(
            self,
            Error::CorruptPointer { .. }
                | Error::UnsupportedVersion { .. }
                | Error::CorruptSnapshot { .. }
                | Error::MissingSnapshot { .. }
        )
    }
}

fn commit_conflict_message(path: &std::path::Path, generation: u64) -> String {
    let what = if generation == 0 {
        "another writer committed first (it cleared the store, or its record cannot be read)"
            .to_string()
    } else {
        format!("another writer committed generation {generation}")
    };
    format!(
        "{what} (commit record {}) after this writer read the store; nothing was published: read the store again, and publish again if this content is still wanted",
        path.display()
    )
}

fn not_a_store_message(root: &std::path::Path, found: &[String]) -> String {
    let why = if found.is_empty() {
        "it is not a directory".to_string()
    } else {
        let names: Vec<String> = found.iter().map(|n| format!("{n:?}")).collect();
        format!(
            "it has no store marker and holds entries snapcache did not create ({})",
            names.join(", ")
        )
    };
    format!(
        "{} is not a snapcache store: {why}; nothing in it was read or changed. Use an empty or new directory for the store",
        root.display()
    )
}

fn object_request_message(operation: &str, url: &str, status: Option<u16>, detail: &str) -> String {
    let hint = match status {
        None => "check that the endpoint URL is right and the server is reachable, then retry",
        Some(401 | 403) => {
            "check the access key, secret key (and session token) and that they may use the bucket"
        }
        Some(404) => "check that the bucket exists and the URL names it",
        Some(301 | 307 | 308) => {
            "the bucket lives at another endpoint or region: set the endpoint and region it redirects to"
        }
        Some(500..=599) => "the server failed; retry later",
        Some(_) => "check the server's message above and retry",
    };
    let answer = match status {
        Some(code) => format!("HTTP {code}"),
        None => "no answer".to_string(),
    };
    format!("failed to {operation} {url} ({answer}: {detail}); {hint}")
}

/// Whether `err` is an open-file limit: this process's (`EMFILE`, the limit
/// `ulimit -n` sets) or the whole system's (`ENFILE`). `std` gives these no
/// `ErrorKind` of their own yet.
fn is_open_file_limit(err: &io::Error) -> bool {
    #[cfg(unix)]
    {
        use rustix::io::Errno;
        let raw = err.raw_os_error();
        raw == Some(Errno::MFILE.raw_os_error()) || raw == Some(Errno::NFILE.raw_os_error())
    }
    #[cfg(windows)]
    {
        err.raw_os_error() == Some(4) // ERROR_TOO_MANY_OPEN_FILES
    }
    #[cfg(not(any(unix, windows)))]
    {
        let _ = err;
        false
    }
}

/// `ENAMETOOLONG` (std's `InvalidFilename` kind is newer than this crate's
/// minimum Rust).
fn is_name_too_long(err: &io::Error) -> bool {
    #[cfg(unix)]
    {
        err.raw_os_error() == Some(rustix::io::Errno::NAMETOOLONG.raw_os_error())
    }
    #[cfg(windows)]
    {
        err.raw_os_error() == Some(206) // ERROR_FILENAME_EXCED_RANGE
    }
    #[cfg(not(any(unix, windows)))]
    {
        let _ = err;
        false
    }
}

fn io_message(action: &str, path: &std::path::Path, err: &io::Error, stage: IoStage) -> String {
    let hint = match err.kind() {
        _ if is_open_file_limit(err) => {
            "too many files are open, in this process (its open-file limit, e.g. `ulimit -n`) or in the whole system: raise the limit or close files, then retry"
        }
        io::ErrorKind::PermissionDenied => {
            "check the permissions of the store (it is owner-only by design) or use another store directory"
        }
        // Inodes run out as blocks do, with the same error: `df -h` alone
        // showed free space and made the message look wrong.
        io::ErrorKind::StorageFull => {
            "the filesystem has no free space or no free inodes left (see `df -h` and `df -i`): free some and retry; removing the store's unreferenced snapshots helps only if it has some"
        }
        io::ErrorKind::QuotaExceeded => {
            "this user's disk quota on that filesystem is used up: remove some of this user's files there or have the quota raised, then retry"
        }
        // A forced advisory backend where flock fails: the lease backend
        // needs no advisory lock, so "another filesystem" would be too much.
        io::ErrorKind::Unsupported if action.contains("lock the writer lock") => {
            "the filesystem does not support advisory locks: use the lease backend (the automatic backend choice falls back to it when advisory locks fail), or a store on another filesystem"
        }
        // What `durable::mode_refused` reports (FAT, fusefat), and links
        // a filesystem does not have.
        io::ErrorKind::Unsupported => {
            "the filesystem lacks something a store needs: use a store directory on another filesystem"
        }
        _ if is_name_too_long(err) => {
            "a name in the path is too long for the filesystem (most allow 255 bytes a name and 4096 a path): use a shorter store path"
        }
        io::ErrorKind::FileTooLarge => {
            "the file would grow past what this process may write (its file-size limit, e.g. `ulimit -f`) or what the filesystem allows: raise the limit, or use a store on another filesystem"
        }
        io::ErrorKind::ReadOnlyFilesystem => {
            "the store is on a read-only filesystem: reads still work, writes need a store on a writable filesystem"
        }
        io::ErrorKind::NotFound => "check that the path exists",
        io::ErrorKind::NotADirectory => {
            "a part of the path is a file, not a directory: check the path, or use another store directory"
        }
        // A rename between two of the store's directories: something is
        // mounted inside the store (or it was assembled from several).
        io::ErrorKind::CrossesDevices => {
            "the store's directories are on different filesystems (something is mounted inside the store?), and a store must lie on one filesystem: remove that mount, or use another store directory"
        }
        _ => "check the path and retry",
    };
    // Only a write has a generation to speak of; a read never changed one.
    let outcome = match stage {
        IoStage::Read => "",
        IoStage::BeforeCommit => "; the current generation is unchanged",
        IoStage::AfterCommit => {
            "; the change was already committed and may be current (only making it durable failed): read the store again before retrying"
        }
    };
    format!(
        "failed to {action} {}: {err}; {hint}{outcome}",
        path.display()
    )
}

fn corrupt_pointer_message(path: &std::path::Path, detail: &str) -> String {
    // A commit record (lease backend, `commits/<n>`) is not the pointer:
    // readers pass over it, and moving it aside is the whole fix. Advice to
    // start a new history there lost the history and fixed nothing.
    let record = path.parent().and_then(|d| d.file_name()) == Some(crate::layout::COMMITS.as_ref());
    if record {
        return format!(
            "the commit record {} is damaged ({detail}); nothing was read from it. The pointer and the snapshots are untouched, and readers still serve the pointer's generation, but no write can commit after this record: move it aside (keep it), and writes work again with the history kept",
            path.display()
        );
    }
    format!(
        "the store pointer {} is damaged ({detail}); nothing was read from it. This is not a replace in progress, which clears on a re-read within about a second. The snapshots are untouched, but which of them are intact cannot be checked without the pointer: restore it from a backup of the store; if there is none, copy the snapshots you may need, then move the damaged pointer aside (keep it) and publish again, which starts a new history",
        path.display()
    )
}

fn interrupted_message(during: &str) -> String {
    #[cfg(feature = "s3")]
    if during == crate::object_store::s3::INTERRUPTED_DURING
        || during == crate::object_store::s3::INTERRUPTED_DELETING
    {
        // Any operation on an object store, reads too, and possibly after
        // a change of this operation was committed (gc's, clear's cleanup):
        // only what holds in every case is said.
        return format!(
            "interrupted while {during}. Reads and uploads of snapshots are given up on; a write of the pointer or a delete is never given up on once sent, and the lease goes on being renewed meanwhile, so the store is as it was or as this operation had already committed it (its status shows which). An uploaded snapshot that nothing names is removed by a later gc; what an interrupted clear had not yet deleted, by the next clear"
        );
    }
    // A waiter never held the lock: nothing of it to release.
    if during.starts_with("waiting") {
        format!("interrupted while {during}; nothing was published, and the lock was never taken")
    } else {
        format!("interrupted while {during}; nothing was published and the lock was released")
    }
}

fn owner_not_trusted_message(
    path: &std::path::Path,
    owner_uid: u32,
    owner_name: Option<&str>,
    reader_uid: u32,
) -> String {
    let owner = match owner_name {
        Some(name) => format!("uid {owner_uid} ({name})"),
        None => format!("uid {owner_uid}"),
    };
    format!(
        "refusing to read {}: it belongs to {owner} and this process runs as uid {reader_uid}, and a store of another user (not root) serves whatever that user put there; nothing was read. Read it only if you trust that user (then allow stores of that owner), or use a store of your own",
        path.display()
    )
}

fn untrusted_message(
    path: &std::path::Path,
    owner_uid: u32,
    owner_name: Option<&str>,
    mode: u32,
    reason: &str,
) -> String {
    let owner = match owner_name {
        Some(name) => format!("uid {owner_uid} ({name})"),
        None => format!("uid {owner_uid}"),
    };
    format!(
        "refusing to use {} (owner {owner}, mode {mode:04o}): {reason}; nothing was read or changed",
        path.display()
    )
}

/// A length of time in the unit that suits it: `90 s`, `5 min`, `3 h`,
/// `26326 days`.
fn rough_span(d: Duration) -> String {
    match d.as_secs() {
        s @ 0..120 => format!("{s} s"),
        s @ 120..7_200 => format!("{} min", s / 60),
        s @ 7_200..172_800 => format!("{} h", s / 3_600),
        s => format!("{} days", s / 86_400),
    }
}

fn lock_timeout_message(
    path: &std::path::Path,
    waited: Duration,
    budget: &Duration,
    source: &TimeoutSource,
    holder: Option<&HolderInfo>,
    lease: Option<&crate::LeaseView>,
) -> String {
    let who = match holder {
        Some(h) => format!("held by {}", h.describe()),
        None => "held by another process".to_string(),
    };
    // A lease whose times lie ahead of this clock may have no holder at
    // all: only a wait longer than its lease time can tell, so say so.
    let clocks = match lease.filter(|l| l.clocks_disagree()) {
        None => String::new(),
        Some(l) => {
            let which = match l.expiry_ahead_by() {
                Some(ahead) => format!(
                    "its expiry lies {} beyond its lease time (the holder's clock runs ahead of this machine's, or the lease was written by hand)",
                    rough_span(ahead)
                ),
                None => "its last renewal lies in the future by this machine's clock".to_string(),
            };
            format!(
                ". The lease's times cannot be trusted: {which}; a writer that sees the lease go unrenewed for its lease time ({} s) takes it over, so a wait longer than that ends it if its holder is gone",
                l.lease_time.as_secs_f64()
            )
        }
    };
    format!(
        "gave up waiting for the writer lock {} after {:.1} s (budget {} from {source}); the lock is {who}{clocks}. Retry once that writer is done, or allow a longer wait through {source}",
        path.display(),
        waited.as_secs_f64(),
        crate::lock::format_budget(*budget),
    )
}

#[cfg(test)]
mod lock_timeout_tests {
    use super::*;
    use std::time::SystemTime;

    fn timeout_behind(lease: crate::LeaseView) -> String {
        Error::LockTimeout {
            path: "/c/lease".into(),
            waited: Duration::from_secs(1),
            budget: Duration::from_secs(1),
            budget_source: TimeoutSource::Default,
            holder: None,
            lease: Some(Box::new(lease)),
        }
        .to_string()
    }

    fn lease(expires_in: Duration, renewed: SystemTime) -> crate::LeaseView {
        crate::LeaseView {
            path: "/c/lease".into(),
            lease_time: Duration::from_secs(30),
            renewed_at: Some(crate::Timestamp::from(renewed)),
            expires_at: Some(crate::Timestamp::from(SystemTime::now() + expires_in)),
        }
    }

    #[test]
    fn an_expiry_hours_or_years_ahead_is_named_in_a_unit_that_fits() {
        let now = SystemTime::now();
        let hours = timeout_behind(lease(Duration::from_secs(3 * 3600 + 40), now));
        assert!(
            hours.contains("its expiry lies 3 h beyond its lease time"),
            "{hours}"
        );
        let years = timeout_behind(lease(Duration::from_secs(400 * 86_400), now));
        assert!(years.contains("its expiry lies 399 days beyond"), "{years}");
        assert!(
            years.contains(
                "a writer that sees the lease go unrenewed for its lease time (30 s) takes it over"
            ),
            "{years}"
        );
    }

    #[test]
    fn believable_times_add_nothing_and_a_future_renewal_is_named() {
        let now = SystemTime::now();
        let plain = timeout_behind(lease(Duration::from_secs(20), now));
        assert!(!plain.contains("cannot be trusted"), "{plain}");
        let renewed = timeout_behind(lease(
            Duration::from_secs(20),
            now + Duration::from_secs(3600),
        ));
        assert!(
            renewed.contains(
                "The lease's times cannot be trusted: its last renewal lies in the future"
            ),
            "{renewed}"
        );
    }

    #[test]
    fn spans_pick_their_unit() {
        for (secs, text) in [
            (0, "0 s"),
            (119, "119 s"),
            (120, "2 min"),
            (7_199, "119 min"),
            (7_200, "2 h"),
            (172_799, "47 h"),
            (172_800, "2 days"),
        ] {
            assert_eq!(rough_span(Duration::from_secs(secs)), text);
        }
    }
}
