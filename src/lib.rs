//! # snapcache
//!
//! A content-addressed, versioned snapshot store for a command-line tool's
//! metadata cache: many processes refresh it, none ever sees it half-written.
//!
//! ## Model
//!
//! *Reads are lock-free and verified; writes go through one exclusive lock.*
//! A store is a directory holding immutable snapshot files named by their
//! blake3 hash, and a small checksummed pointer, `current`, that names the
//! current generation and the retained ones. A publish streams the payload
//! into a temp file, makes it durable under its hash name, then atomically
//! swaps the pointer. A reader follows the pointer and verifies length and
//! hash, so it sees the old or the new generation, never a mix.
//!
//! ```
//! # fn main() -> Result<(), snapcache::Error> {
//! # let dir = tempfile::tempdir().map_err(|e| snapcache::Error::InvalidOption(e.to_string()))?;
//! use snapcache::{PublishOptions, Store, StoreOptions};
//!
//! let store = Store::open(StoreOptions::new(dir.path().join("metadata")))?;
//! let first = store.publish_bytes(br#"{"version":1}"#, &PublishOptions::default().note("foojay"))?;
//! let second = store.publish_bytes(br#"{"version":2}"#, &PublishOptions::default())?;
//! assert_eq!((first.generation, second.generation), (1, 2));
//!
//! store.rollback(None)?; // generation 1 is current again
//! assert_eq!(store.read_current()?.data, br#"{"version":1}"#);
//! # Ok(()) }
//! ```
//!
//! ## Embedding: the writer handle
//!
//! A program that does slow work of its own before a publish (a network
//! fetch) takes the writer lock itself with [`Store::lock_writer`], checks
//! [`Writer::is_fresh`] under it, and publishes through the [`Writer`]:
//! concurrent refreshes then fetch once. Reads carry their metadata
//! ([`Store::read_json_with_meta`], [`Store::current_generation`]); a
//! publish source's own error comes back typed ([`Error::into_source`]); a
//! lock budget carries the program's own label ([`LockBudget::labelled`]).
//! `docs/embedding.md` in the repository walks through Kopi's case.
//!
//! ```
//! # fn main() -> Result<(), snapcache::Error> {
//! # let dir = tempfile::tempdir().map_err(|e| snapcache::Error::InvalidOption(e.to_string()))?;
//! use snapcache::{PublishOptions, Store, StoreOptions};
//! use std::time::Duration;
//! let store = Store::open(StoreOptions::new(dir.path().join("metadata")))?;
//! let mut writer = store.lock_writer()?;
//! if !writer.is_fresh(Duration::from_secs(3600)) {
//!     writer.publish_json(&["temurin"], &PublishOptions::default().canonical(true))?;
//! }
//! drop(writer);
//! let read = store.read_json_with_meta::<Vec<String>>()?;
//! assert_eq!((read.value.len(), read.meta.generation), (1, 1));
//! # Ok(()) }
//! ```
//!
//! ## Crash safety
//!
//! A crash (or `kill -9`) at any point of a publish leaves the previous
//! generation current and intact; the leftovers (a temp file, an unreferenced
//! snapshot) are removed by the next write. After a power loss the same
//! holds on filesystems that honour `fsync` on files and directories.
//!
//! ## Limitations
//!
//! - Only Linux is tested. Windows and macOS builds are intended to work;
//!   directory fsync is a no-op on Windows.
//! - Readers load a whole snapshot into memory to verify it before handing
//!   it out (a cache of a few MB is the target).
//! - See `docs/limitations.md` in the repository for the full list.

mod app_dir;
mod canonical;
mod commit_record;
#[cfg(test)]
mod crash_sim;
mod durable;
mod error;
#[cfg(test)]
mod fault_tests;
mod hash;
mod hint;
mod json_check;
mod layout;
mod lock;
mod marker;
#[cfg(feature = "s3")]
pub mod object_store;
mod payload;
mod pointer;
mod read_only;
mod reread;
mod snapshot;
mod store;
mod store_root;
mod sweep;
mod test_hooks;
mod time;
mod trust;
mod verified;
mod worker_log;
mod writer;

pub use durable::RenameStats;
pub use error::{Error, IoStage, Result, SourceError};
pub use hash::ContentHash;
pub use hint::Hint;
pub use json_check::JsonCheck;
#[cfg(feature = "bench-stages")]
#[doc(hidden)]
pub use json_check::json_check_stages;
pub use lock::{
    Backend, BackendChoice, DEFAULT_LEASE_TTL, DEFAULT_LOCK_TIMEOUT, HolderInfo, LeaseView,
    LockBudget, LockObserver, LockState, LockWait, QUIET_WAIT, TimeoutSource, WaitStarted,
};
pub use payload::{PayloadFormat, PayloadSink};
pub use pointer::{FORMAT_VERSION, Generation, MAX_PINNED};
pub use store::{
    DEFAULT_KEEP, DEFAULT_SNAPSHOT_GRACE, GcOptions, GcReport, HistoryEntry, Problem,
    PublishOptions, PublishOutcome, RollbackOutcome, Snapshot, SnapshotMeta, Status, Store,
    StoreOptions, VerifyReport, Versioned,
};
pub use sweep::{ForeignEntry, InGrace, Leftover, LeftoverKind, NotRemoved};
pub use time::{CLOCK_SKEW_TOLERANCE, Timestamp};
pub use verified::VerifiedSnapshot;
pub use writer::{ClearReport, ForgetReport, PinReport, Writer};
