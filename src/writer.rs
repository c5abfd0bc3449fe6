//! The writer handle: the store's writer lock, held by the caller.
//!
//! # Why a handle
//!
//! An embedding program (Kopi) refreshes its cache by fetching metadata
//! over the network for seconds, then saving it. If the lock were taken only
//! inside a publish, concurrent refreshers would all fetch (the staleness
//! check would come after the fetch), or the program would need a second
//! lock of its own around ours: two lock files, two holder records, two
//! backends, a timeout spent twice. [`Store::lock_writer`] hands the lock to
//! the caller instead: it checks [`Writer::is_fresh`] *under the lock*,
//! fetches only when stale, and publishes through the handle. Dropping the
//! handle releases the lock.
//!
//! Everything that changes a store goes through a handle: the `Store`
//! methods `publish_*`, `rollback`, `gc`, `forget`, `pin`, `unpin` and
//! `clear` take one for the length of the call.
//!
//! # What the handle knows
//!
//! Under the lock nobody else changes the pointer, so the handle keeps the
//! pointer it read when it was taken and the ones it committed since. After
//! an operation that failed part-way it reads the pointer again before the
//! next one. A pointer that was damaged when the handle was taken does not
//! stop the handle from being taken: [`Writer::clear`] works on it (that is
//! the way out), every other operation reports the damage.

use std::collections::HashSet;
use std::io::{self, Read, Write};
use std::time::Duration;

use serde::Serialize;

use crate::durable::RenameStats;
use crate::error::{Error, Result, SourceError};
use crate::hash::ContentHash;
use crate::lock::{Backend, WriterLock};
use crate::payload::{PayloadFormat, PayloadSink};
use crate::pointer::{self, Generation, MAX_KEEP, MAX_PINNED, Pointer};
use crate::snapshot;
use crate::store::{
    GcOptions, GcReport, PublishOptions, PublishOutcome, RollbackOutcome, SnapshotMeta, Store,
    fault_error,
};
use crate::sweep::{self, Leftover, LeftoverKind, NotRemoved};
use crate::time::Timestamp;

/// The store's writer lock, held until this handle is dropped, and the
/// operations that change the store.
///
/// Taken with [`Store::lock_writer`]. While it is held, no other process or
/// thread can publish, roll back, collect or clear this store (they wait,
/// within their lock budget); readers are never blocked. Several operations
/// on one handle are fine: each publish that changes the content is a new
/// generation.
///
/// The run-once refresh, as Kopi does it: look under the lock, fetch only
/// when stale, publish.
///
/// ```
/// # fn main() -> Result<(), snapcache::Error> {
/// # let dir = tempfile::tempdir().map_err(|e| snapcache::Error::InvalidOption(e.to_string()))?;
/// use snapcache::{PublishOptions, Store, StoreOptions};
/// use std::time::Duration;
///
/// let store = Store::open(StoreOptions::new(dir.path().join("cache")))?;
/// let max_age = Duration::from_secs(3600);
/// let mut writer = store.lock_writer()?; // held until `writer` is dropped
/// if !writer.is_fresh(max_age) {
///     let fetched = vec!["temurin", "corretto"]; // a slow network fetch, under the lock
///     let outcome = writer.publish_json(&fetched, &PublishOptions::default())?;
///     assert_eq!(outcome.generation, 1);
/// }
/// assert!(writer.is_fresh(max_age));
/// drop(writer); // releases the lock
/// assert_eq!(store.read_json::<Vec<String>>()?, ["temurin", "corretto"]);
/// # Ok(()) }
/// ```
#[must_use = "the writer lock is released as soon as the handle is dropped"]
pub struct Writer<'s> {
    pub(crate) store: &'s Store,
    pub(crate) lock: WriterLock,
    /// The pointer as this handle last read or committed it.
    pub(crate) pointer: Option<Pointer>,
    /// Read the pointer again before using it: it was damaged when the
    /// handle was taken, or an operation failed part-way.
    pub(crate) reread: bool,
    /// Leftovers are to be swept before (or, by a publish, while) the next
    /// operation: the handle was taken for a write, or its last publish
    /// left snapshots out of retention (see [`Writer::stage`]).
    pub(crate) sweep_due: bool,
    /// A store on an object store: the pointer's ETag and the rest of what
    /// its conditional commits need (see `crate::object_store`).
    #[cfg(feature = "s3")]
    pub(crate) object: Option<crate::object_store::ObjectState>,
}

impl std::fmt::Debug for Writer<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("root", &self.store.root())
            .field("backend", &self.lock.backend())
            .field("generation", &self.generation())
            .finish_non_exhaustive()
    }
}

/// How a handle is taken (the `Store` wrappers differ from `lock_writer`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Take {
    /// May make a store where there is none (only what publishes).
    pub create: bool,
    /// Sweep leftovers of crashed writers (all but `gc`, which sweeps
    /// itself and reports what it removed): on the local backends with the
    /// handle's first operation (a publish sweeps while it stages its
    /// payload), on an object store now.
    pub sweep: bool,
}

/// A payload streamed into a temp file, hashed and checked, not yet
/// published.
pub(crate) struct Staged<T> {
    pub temp: crate::durable::TempFile,
    pub hash: crate::hash::ContentHash,
    pub bytes: u64,
    /// The temp file was fsynced already.
    pub synced: bool,
    /// What the source returned.
    pub value: T,
}

/// A publish committed on the local backends: what the handle keeps of it.
struct Committed<T> {
    outcome: PublishOutcome,
    /// The pointer as committed.
    pointer: Pointer,
    /// Snapshots left retention: the handle's next write sweeps them.
    sweep_due: bool,
    /// What the source returned.
    value: T,
}

impl<'s> Writer<'s> {
    /// Takes the writer lock and reads the pointer; sweeps leftovers when
    /// asked. A damaged pointer is noted, not fatal (see the module docs).
    pub(crate) fn take(store: &'s Store, how: Take) -> Result<Writer<'s>> {
        // Everything a write does reports its I/O errors as a write's
        // (`in_write`): taking the lock and reading the pointer here, the
        // operations through `guarded`.
        Self::take_unplaced(store, how).map_err(Error::in_write)
    }

    fn take_unplaced(store: &'s Store, how: Take) -> Result<Writer<'s>> {
        #[cfg(feature = "s3")]
        if let Some(object) = store.object_store() {
            return crate::object_store::take_writer(store, object, how);
        }
        let lock = store.lock_for_write(how.create)?;
        let (pointer, reread) = match store.try_load_newest_pointer(&lock) {
            Ok(pointer) => (pointer, false),
            Err(e) if e.is_corrupt() => {
                tracing::warn!(error = %e, "the store pointer is damaged: the writer handle can only clear the store");
                (None, true)
            }
            Err(e) => return Err(e),
        };
        Ok(Writer {
            store,
            lock,
            pointer,
            reread,
            // Not now: a publish sweeps on a second thread while it stages
            // its payload, off the path of the write itself.
            sweep_due: how.sweep,
            #[cfg(feature = "s3")]
            object: None,
        })
    }

    /// The store this handle writes.
    pub fn store(&self) -> &'s Store {
        self.store
    }

    /// The current generation (`None` when nothing is published), as of
    /// this handle's last operation. Under the lock it cannot change behind
    /// the handle's back.
    pub fn generation(&self) -> Option<u64> {
        self.pointer.as_ref().map(|p| p.current)
    }

    /// What the pointer says about the current generation, with the time of
    /// the last successful refresh; `None` when nothing is published (or the
    /// pointer is damaged).
    pub fn current(&self) -> Option<SnapshotMeta> {
        self.pointer.as_ref().map(SnapshotMeta::current_of)
    }

    /// When the store was last refreshed successfully (a publish, changed
    /// or not); `None` when nothing is published.
    pub fn last_checked_at(&self) -> Option<Timestamp> {
        self.pointer.as_ref().map(|p| p.checked_at)
    }

    /// True when the last successful refresh is younger than `max_age`:
    /// another process refreshed while this one waited for the lock, so a
    /// fetch can be skipped. False when nothing is published, and when the
    /// last refresh lies in the future beyond
    /// [`CLOCK_SKEW_TOLERANCE`](crate::CLOCK_SKEW_TOLERANCE) (a writer's
    /// clock ran ahead: its age is unknown, so refresh rather than trust it).
    pub fn is_fresh(&self, max_age: Duration) -> bool {
        let Some(checked_at) = self.last_checked_at() else {
            return false;
        };
        // (A `created_at` in the future alone does not force refreshes: once
        // a correct clock re-checked, `checked_at` is right, and an unchanged
        // refresh does not rewrite `created_at`.)
        match checked_at.known_age() {
            Some(age) => age < max_age,
            None => {
                tracing::warn!(checked_at = %checked_at, tolerance_secs = crate::time::CLOCK_SKEW_TOLERANCE.as_secs(), "the last refresh lies in the future (a writer's clock ran ahead): its age is unknown, refreshing");
                false
            }
        }
    }

    /// How long taking the lock waited.
    pub fn waited(&self) -> Duration {
        self.lock.waited
    }

    /// The lock backend in use.
    pub fn backend(&self) -> Backend {
        self.lock.backend()
    }

    /// The outcome of a refresh skipped because the store is fresh, for the
    /// `max_age` of the `Store` wrappers.
    pub(crate) fn skip_if_fresh(&self, max_age: Duration) -> Option<PublishOutcome> {
        if !self.is_fresh(max_age) {
            return None;
        }
        let entry = self.pointer.as_ref()?.current_entry();
        tracing::info!(generation = entry.generation, hash = %entry.hash, "refresh skipped: last refresh is younger than max-age");
        Some(self.outcome(entry, false, true, RenameStats::default()))
    }

    // ------------------------------------------------------------ publish

    /// Publishes what `source` writes into the sink, and returns what
    /// `source` returned with the outcome. Content equal to the current
    /// snapshot makes no new generation (`changed == false`) but counts as
    /// a refresh (`last_checked_at` moves).
    ///
    /// `source` may fail with any error type (`?` boxes it); the error comes
    /// back unchanged inside [`Error::SourceFailed`], so the caller gets its
    /// own error (and exit code) back with [`Error::into_source`]. Nothing is
    /// published then.
    ///
    /// `options.max_age` is refused here ([`Error::InvalidOption`]): on a
    /// handle the caller decides with [`Writer::is_fresh`] before fetching.
    ///
    /// ```
    /// # fn main() -> Result<(), snapcache::Error> {
    /// # let dir = tempfile::tempdir().map_err(|e| snapcache::Error::InvalidOption(e.to_string()))?;
    /// # let store = snapcache::Store::open(snapcache::StoreOptions::new(dir.path()))?;
    /// use std::io::Write;
    ///
    /// #[derive(Debug)]
    /// enum FetchError { Http(u16) }
    /// impl std::fmt::Display for FetchError {
    ///     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
    ///         let FetchError::Http(code) = self;
    ///         write!(f, "the metadata server answered {code}")
    ///     }
    /// }
    /// impl std::error::Error for FetchError {}
    ///
    /// let mut writer = store.lock_writer()?;
    /// // The source returns a value: here, how many packages it streamed.
    /// let (outcome, packages) = writer.publish_with(&Default::default(), |sink| {
    ///     sink.write_all(br#"[{"id":"temurin-21"},{"id":"corretto-21"}]"#)?;
    ///     Ok(2)
    /// })?;
    /// assert_eq!((outcome.generation, packages), (1, 2));
    ///
    /// // A failing source publishes nothing, and its error comes back typed.
    /// let err = writer
    ///     .publish_with(&Default::default(), |_sink| -> Result<(), _> {
    ///         Err(FetchError::Http(503).into())
    ///     })
    ///     .unwrap_err();
    /// match err.into_source::<FetchError>() {
    ///     Ok(FetchError::Http(code)) => assert_eq!(code, 503),
    ///     Err(other) => panic!("not the source's error: {other}"),
    /// }
    /// assert_eq!(writer.generation(), Some(1));
    /// # Ok(()) }
    /// ```
    pub fn publish_with<T>(
        &mut self,
        options: &PublishOptions,
        source: impl FnOnce(&mut PayloadSink<'_>) -> std::result::Result<T, SourceError>,
    ) -> Result<(PublishOutcome, T)> {
        if options.max_age.is_some() {
            return Err(Error::InvalidOption(
                "max_age is checked by the Store's publish methods; on a writer handle, ask is_fresh(max_age) before fetching and publishing".into(),
            ));
        }
        self.guarded(|w| w.publish_unguarded(options, None, source))
    }

    /// Serializes `value` as JSON (streamed into the temp file) and publishes it.
    ///
    /// ```
    /// # fn main() -> Result<(), snapcache::Error> {
    /// # let dir = tempfile::tempdir().map_err(|e| snapcache::Error::InvalidOption(e.to_string()))?;
    /// # let store = snapcache::Store::open(snapcache::StoreOptions::new(dir.path()))?;
    /// let mut writer = store.lock_writer()?;
    /// let first = writer.publish_json(&[1, 2], &Default::default())?;
    /// let again = writer.publish_json(&[1, 2], &Default::default())?;
    /// let second = writer.publish_json(&[1, 2, 3], &Default::default())?;
    /// assert_eq!((first.generation, again.changed, second.generation), (1, false, 2));
    /// # Ok(()) }
    /// ```
    pub fn publish_json<T: Serialize + ?Sized>(
        &mut self,
        value: &T,
        options: &PublishOptions,
    ) -> Result<PublishOutcome> {
        self.publish_with(&json_options(options), json_source(value, options))
            .map(|(o, ())| o)
    }

    /// Publishes a byte slice.
    ///
    /// The JSON check (unless `options.format` is raw) runs on a second
    /// thread over the slice itself, from the start, while the bytes are
    /// written, hashed and fsynced: no copy of the payload is made.
    pub fn publish_bytes(
        &mut self,
        bytes: &[u8],
        options: &PublishOptions,
    ) -> Result<PublishOutcome> {
        if options.max_age.is_some() {
            return self
                .publish_with(options, bytes_source(bytes))
                .map(|(o, ())| o);
        }
        self.guarded(|w| w.publish_unguarded(options, Some(bytes), bytes_source(bytes)))
            .map(|(o, ())| o)
    }

    /// Publishes the bytes read from `reader` (streamed, bounded memory).
    pub fn publish_reader(
        &mut self,
        reader: impl Read,
        options: &PublishOptions,
    ) -> Result<PublishOutcome> {
        self.publish_with(options, reader_source(reader))
            .map(|(o, ())| o)
    }

    /// A publish; `slice`: the whole payload is this slice, which `source`
    /// writes (then the JSON check reads the slice, see [`Writer::stage`]).
    fn publish_unguarded<T>(
        &mut self,
        options: &PublishOptions,
        slice: Option<&[u8]>,
        source: impl FnOnce(&mut PayloadSink<'_>) -> std::result::Result<T, SourceError>,
    ) -> Result<(PublishOutcome, T)> {
        #[cfg(feature = "s3")]
        if self.object.is_some() {
            // Staged under the system temp dir: there is no store directory.
            let alongside = Alongside {
                sweep: None,
                slice,
                current: None,
            };
            let staged = self.stage(&std::env::temp_dir(), options, alongside, source, Ok)?;
            return self.publish_object(staged, options);
        }
        let pointer = self.pointer()?;
        let store = self.store;
        // The sweep runs alongside the staging and, unless it could remove
        // the snapshot being published, the commit; should either fail, the
        // next operation sweeps again.
        let alongside = Alongside {
            sweep: self.sweep_due.then_some(pointer.as_ref()),
            slice,
            current: pointer.as_ref().map(|p| p.current_entry().hash),
        };
        let committed = self
            .stage(
                &store.layout().tmp_dir(),
                options,
                alongside,
                source,
                |staged| self.commit_staged(pointer.clone(), staged, options),
            )
            .map_err(|e| self.cause_of(e))?;
        self.sweep_due = committed.sweep_due;
        self.pointer = Some(committed.pointer);
        Ok((committed.outcome, committed.value))
    }

    /// What to report for a publish that failed before its commit: when
    /// the lock turns out to be lost (its lock file removed, its lease
    /// taken over), that, rather than the I/O error it caused (the other
    /// writer's sweep removed this one's temp file: "No such file or
    /// directory").
    fn cause_of(&self, e: Error) -> Error {
        if !e.is_io_before_commit() {
            return e;
        }
        match self.lock.check_held() {
            Err(lost) => lost,
            Ok(()) => e,
        }
    }

    /// Commits a staged payload on the local backends: the snapshot renamed
    /// into `snapshots/`, then the pointer (a new generation, or the
    /// current one checked again when the content is equal).
    fn commit_staged<T>(
        &self,
        pointer: Option<Pointer>,
        staged: Staged<T>,
        options: &PublishOptions,
    ) -> Result<Committed<T>> {
        let store = self.store;
        let Staged {
            temp,
            hash,
            bytes,
            synced,
            value,
        } = staged;
        let now = Timestamp::now();
        let mut rename = RenameStats::default();
        let pointer = match pointer {
            Some(mut p) if p.current_entry().hash == hash => {
                // Same content: no new generation. The snapshot is
                // re-committed only if it was found damaged (a refresh
                // repairs it).
                rename.add(store.commit_snapshot(
                    temp,
                    &hash,
                    bytes,
                    synced,
                    self.lock.deadline(),
                )?);
                p.checked_at = now;
                rename.add(store.commit_pointer(&self.lock, &mut p)?);
                let entry = p.current_entry();
                tracing::info!(generation = entry.generation, hash = %hash, bytes, "refresh unchanged: content equals the current snapshot");
                let outcome = self.outcome(entry, false, false, rename);
                return Ok(Committed {
                    outcome,
                    pointer: p,
                    sweep_due: false,
                    value,
                });
            }
            other => other,
        };

        let mut next = pointer.unwrap_or_else(|| Pointer {
            current: 0,
            last_generation: 0,
            checked_at: now,
            generations: Vec::new(),
            // After a clear on the lease backend, numbering goes on past
            // its record.
            commit: crate::commit_record::base_without_pointer(store.layout()),
            dropped: Vec::new(),
        });
        // Checked before anything is committed: an exhausted counter leaves
        // the store as it was (the temp file goes with `temp`).
        let generation =
            next.last_generation
                .checked_add(1)
                .ok_or_else(|| Error::GenerationsExhausted {
                    path: store.layout().current(),
                    last: next.last_generation,
                })?;
        // The commit counter likewise (only an edited pointer is at its
        // end), before the snapshot is renamed into place.
        crate::commit_record::next_commit(store.layout(), next.commit)?;
        rename.add(store.commit_snapshot(temp, &hash, bytes, synced, self.lock.deadline())?);
        next.generations.push(Generation {
            generation,
            hash,
            bytes,
            created_at: now,
            note: options.note.as_deref().map(pointer::clip_note),
            pinned: false,
        });
        next.current = generation;
        next.last_generation = generation;
        next.checked_at = now;
        let before: Vec<ContentHash> = next.generations.iter().map(|g| g.hash).collect();
        next.apply_retention(store.options().keep_count());
        rename.add(store.commit_pointer(&self.lock, &mut next)?);
        tracing::info!(generation, hash = %hash, bytes, backend = %self.lock.backend(), "published");
        // The snapshots whose generations just left retention stay where
        // they are: unlinking one costs about as much as a fifth of the
        // publish (more the larger the file), so the next write's sweep
        // removes them on its second thread while it stages its own
        // payload (`stage`), or `gc` does. The lease backend keeps them for
        // its grace period anyway.
        let referenced: HashSet<ContentHash> = next.generations.iter().map(|g| g.hash).collect();
        let sweep_due =
            before.iter().any(|h| !referenced.contains(h)) && self.lock.backend() != Backend::Lease;
        if sweep_due {
            tracing::debug!(
                generation,
                "snapshots left retention; the next write's sweep removes them"
            );
        }
        let outcome = self.outcome(next.current_entry(), true, false, rename);
        Ok(Committed {
            outcome,
            pointer: next,
            sweep_due,
            value,
        })
    }

    /// Streams the payload into a temp file in `tmp` through the payload
    /// sink (hashing, the JSON check, the cancel flag), then hands it to
    /// `commit`: what every backend publishes from. What runs alongside, on
    /// scoped threads, is in `alongside`.
    ///
    /// The sweep (`alongside.sweep`, with the pointer the handle works
    /// from) removes temp files of crashed writers and snapshots no
    /// generation of that pointer references (among them those that left
    /// retention at the last publish). It spares this staging's own temp
    /// file. It first lists what it will remove and tells this thread; once
    /// the payload is staged, the commit waits for that list (listing
    /// `tmp/` and `snapshots/` is quick) and, when the new snapshot's name
    /// is not on it, goes on while the sweep unlinks: nothing the commit
    /// creates afterwards (the snapshot, the pointer's temp file) can be
    /// among what was listed. When the name is on it (equal content
    /// published again after it left retention) the sweep is over before
    /// the commit, which would otherwise lose its snapshot to it. Either
    /// way the sweep is over when `stage` returns, with the lock still
    /// held. Its scan failing (a directory that cannot be listed) fails the
    /// publish before anything is committed, as it fails a write
    /// elsewhere; a leftover it cannot remove is logged and left, as
    /// always.
    ///
    /// With `alongside.slice` (the whole payload, which `source` writes),
    /// the JSON check reads that slice on its own thread from the start,
    /// instead of copies of the written bytes sent in batches; its verdict
    /// is awaited after the temp file's fsync, as in the streamed check. A
    /// raw slice of `HASH_ALONGSIDE_FROM` bytes or more is hashed on its own
    /// thread the same way, and the sink only writes it.
    pub(crate) fn stage<T, R>(
        &self,
        tmp: &std::path::Path,
        options: &PublishOptions,
        alongside: Alongside<'_, '_>,
        source: impl FnOnce(&mut PayloadSink<'_>) -> std::result::Result<T, SourceError>,
        commit: impl FnOnce(Staged<T>) -> Result<R>,
    ) -> Result<R> {
        let store = self.store;
        let temp = store
            .durable()
            .create_temp(tmp)
            .map_err(|e| Error::io("create a temp file in", tmp, e))?;
        let slice = alongside
            .slice
            .filter(|_| options.format == PayloadFormat::Json);
        let hash_slice = alongside
            .slice
            .filter(|s| options.format == PayloadFormat::Raw && s.len() >= HASH_ALONGSIDE_FROM);
        if alongside.sweep.is_none() && slice.is_none() && hash_slice.is_none() {
            let early = Early {
                sync: false,
                current: alongside.current,
            };
            return commit(self.stage_into(temp, options, None, None, early, source)?);
        }
        let own = temp.path().to_path_buf();
        let lock = &self.lock;
        // The workers log through the caller's subscriber, scoped or global.
        let dispatch = crate::worker_log::callers();
        // The file names of the snapshots the sweep is about to remove.
        let (listed, doomed) = std::sync::mpsc::sync_channel::<HashSet<std::ffi::OsString>>(1);
        let sweep = |pointer: Option<&Pointer>, listed: std::sync::mpsc::SyncSender<_>| {
            crate::worker_log::with(dispatch.as_ref(), || {
                store.sweep_leftovers(lock, pointer, Some(&own), move |found| {
                    let names = found
                        .iter()
                        .filter(|l| l.kind == sweep::LeftoverKind::UnreferencedSnapshot)
                        .filter_map(|l| l.path.file_name().map(ToOwned::to_owned))
                        .collect();
                    // The receiver is gone only when the staging ended.
                    let _ = listed.send(names);
                })
            })
        };
        std::thread::scope(|scope| {
            let mut swept = None;
            let sweeper = alongside.sweep.and_then(|pointer| {
                let on_thread = listed.clone();
                let spawned = std::thread::Builder::new()
                    .name("snapcache-sweep".into())
                    .spawn_scoped(scope, move || sweep(pointer, on_thread));
                // No thread to be had: sweep first, as on one core.
                spawned
                    .map_err(|_| swept = Some(sweep(pointer, listed.clone())))
                    .ok()
            });
            // Only the sweep may send: its list never comes if it failed.
            drop(listed);
            if let Some(Err(e)) = swept {
                return Err(e);
            }
            let checker = slice.map(|bytes| {
                std::thread::Builder::new()
                    .name("snapcache-json-check".into())
                    .spawn_scoped(scope, move || check_slice(bytes))
                    .map_err(|_| bytes)
            });
            let verdict = checker.map(|checker| -> Verdict<'_> {
                match checker {
                    Ok(handle) => Box::new(move || {
                        handle
                            .join()
                            .unwrap_or_else(|_| Err("the JSON check failed unexpectedly".into()))
                    }),
                    // No thread: check after the write instead.
                    Err(bytes) => Box::new(move || check_slice(bytes)),
                }
            });
            // A raw slice is hashed on its own thread while it is written.
            let hashed = hash_slice.and_then(|bytes| {
                let worker = std::thread::Builder::new()
                    .name("snapcache-hash".into())
                    .spawn_scoped(scope, move || ContentHash::of(bytes))
                    .ok()?;
                Some(Hashed {
                    len: bytes.len() as u64,
                    hash: Box::new(move || {
                        // It only hashes memory; should it ever panic, hash here.
                        worker.join().unwrap_or_else(|_| ContentHash::of(bytes))
                    }),
                })
            });
            let raw = PublishOptions {
                format: PayloadFormat::Raw,
                ..options.clone()
            };
            // With a sweep running, the temp file's fsync goes before the
            // join, so that the sweep's unlinks overlap it too.
            let early = Early {
                sync: sweeper.is_some(),
                current: alongside.current,
            };
            let staged = match verdict {
                Some(verdict) => self.stage_into(temp, &raw, Some(verdict), hashed, early, source),
                None => self.stage_into(temp, options, None, hashed, early, source),
            };
            let Some(worker) = sweeper else {
                return commit(staged?);
            };
            let join = |worker: std::thread::ScopedJoinHandle<'_, Result<Vec<Leftover>>>| {
                worker.join().unwrap_or_else(|_| {
                    // It only lists and unlinks; should it ever panic, what
                    // it did not remove waits for the next sweep.
                    tracing::warn!(
                        "the sweep of leftovers stopped unexpectedly; the next write sweeps again"
                    );
                    Ok(Vec::new())
                })
            };
            let spared = staged.as_ref().ok().is_some_and(|staged| {
                let name = store.layout().snapshot(&staged.hash);
                doomed
                    .recv()
                    .is_ok_and(|doomed| name.file_name().is_none_or(|n| !doomed.contains(n)))
            });
            if !spared {
                let swept = join(worker);
                let staged = staged?;
                swept?;
                return commit(staged);
            }
            let committed = staged.and_then(commit);
            if let Err(e) = join(worker) {
                // Its scan succeeded, and after it the sweep only logs what
                // it cannot remove: not expected, and not the publish's.
                tracing::warn!(error = %e, "the sweep of leftovers failed after its scan");
            }
            committed
        })
    }

    /// [`Writer::stage`] into the temp file `temp`; `verdict`: the JSON
    /// check of the payload runs elsewhere (the sink then checks nothing),
    /// and this gives its verdict.
    fn stage_into<T>(
        &self,
        mut temp: crate::durable::TempFile,
        options: &PublishOptions,
        verdict: Option<Verdict<'_>>,
        hashed: Option<Hashed<'_>>,
        early: Early,
        source: impl FnOnce(&mut PayloadSink<'_>) -> std::result::Result<T, SourceError>,
    ) -> Result<Staged<T>> {
        let store = self.store;
        let temp_path = temp.path().to_path_buf();
        let mut sink = PayloadSink::new(
            store.durable(),
            &mut temp,
            options.format,
            store.options().cancel_flag_ref().cloned(),
            hashed.is_none(),
            options.max_bytes,
        );
        let source_result = source(&mut sink);
        if let Some((limit, offered)) = sink.exceeded_limit() {
            // The bytes offered, not those kept: a first chunk past the
            // limit is refused whole, and "stopped after 0 bytes" of a
            // 100 KB file read as if it had been empty.
            return Err(Error::PayloadRejected {
                reason: format!(
                    "{} {limit} bytes set for it (it was stopped at {offered} bytes read, and nothing was published); raise the limit if it is meant to be this large",
                    crate::payload::OVER_LIMIT
                ),
            });
        }
        if let Some(e) = sink.write_error.take() {
            return Err(Error::io(
                "write the payload to the temp file",
                &temp_path,
                e,
            ));
        }
        if sink.cancelled() {
            return Err(Error::Interrupted {
                during: "reading the payload",
            });
        }
        // A JSON error found mid-stream is why the source was stopped: then
        // the rejection below is reported; a source that failed on its own
        // is reported as such.
        let value = match source_result {
            Ok(value) => Some(value),
            Err(source) if !sink.rejected_early() => return Err(Error::SourceFailed { source }),
            Err(_) => None,
        };
        let (hash, bytes, json) = sink
            .finish()
            .map_err(|reason| Error::PayloadRejected { reason })?;
        let hash = match (hash, hashed) {
            (Some(hash), _) => hash,
            // The slice hashed alongside is what the source wrote.
            (None, Some(slice)) if slice.len == bytes => (slice.hash)(),
            _ => {
                return Err(Error::PayloadRejected {
                    reason: "the payload's length changed while it was written".into(),
                });
            }
        };
        let verdict: Option<Verdict<'_>> = match (json, verdict) {
            (Some(streamed), _) => Some(Box::new(move || streamed.wait())),
            (None, Some(slice)) => {
                Some(Box::new(move || slice().map_err(crate::payload::not_json)))
            }
            (None, None) => None,
        };
        // The check usually finishes after the write: fsync the temp file
        // meanwhile instead of after it (and likewise while a sweep runs).
        // Not when the content is the current snapshot's: it is not renamed
        // into place then (unless that snapshot is damaged, and then
        // `commit_snapshot` fsyncs it first).
        let synced = (verdict.is_some() || early.sync) && early.current != Some(hash);
        if synced {
            store
                .durable()
                .sync_file(&temp)
                .map_err(|e| Error::io("fsync the temp file", &temp_path, e))?;
        }
        if let Some(verdict) = verdict {
            verdict().map_err(|reason| Error::PayloadRejected { reason })?;
        }
        // Only a JSON rejection leaves no value, and it was returned above;
        // should the check ever disagree, refuse rather than guess.
        let value = value.ok_or_else(|| Error::PayloadRejected {
            reason: "the payload was refused while it was being written".into(),
        })?;
        Ok(Staged {
            temp,
            hash,
            bytes,
            synced,
            value,
        })
    }

    // ------------------------------------------------- rollback, gc, clear

    /// Makes an earlier retained generation current (the one before the
    /// current one, or `to`). Generation numbers do not change.
    ///
    /// ```
    /// # fn main() -> Result<(), snapcache::Error> {
    /// # let dir = tempfile::tempdir().map_err(|e| snapcache::Error::InvalidOption(e.to_string()))?;
    /// # let store = snapcache::Store::open(snapcache::StoreOptions::new(dir.path()))?;
    /// let mut writer = store.lock_writer()?;
    /// writer.publish_bytes(b"[1]", &Default::default())?;
    /// writer.publish_bytes(b"[2]", &Default::default())?;
    /// let back = writer.rollback(None)?;
    /// assert_eq!((back.previous, back.generation, writer.generation()), (2, 1, Some(1)));
    /// # Ok(()) }
    /// ```
    pub fn rollback(&mut self, to: Option<u64>) -> Result<RollbackOutcome> {
        self.guarded(|w| w.rollback_unguarded(to))
    }

    fn rollback_unguarded(&mut self, to: Option<u64>) -> Result<RollbackOutcome> {
        #[cfg(feature = "s3")]
        if self.object.is_some() {
            return self.rollback_object(to);
        }
        self.sweep_if_due()?;
        let store = self.store;
        let mut pointer = self.pointer()?.ok_or_else(|| store.no_store())?;
        let previous = pointer.current;
        let target = match to {
            Some(n) => pointer
                .find(n)
                .cloned()
                .ok_or_else(|| Error::NoSuchGeneration {
                    root: store.root().to_path_buf(),
                    generation: n,
                    available: pointer.retained_list(),
                })?,
            None => pointer
                .generations
                .iter()
                .rev()
                .find(|g| g.generation < previous)
                .cloned()
                .ok_or_else(|| Error::NothingToRollBack {
                    root: store.root().to_path_buf(),
                    current: previous,
                })?,
        };
        let path = store.layout().snapshot(&target.hash);
        snapshot::verify_file(
            &path,
            &target.hash,
            target.bytes,
            crate::trust::Owner::this_writer(),
        )
        .map_err(|fault| fault_error(path, target.generation, fault))?;
        pointer.current = target.generation;
        store.commit_pointer(&self.lock, &mut pointer)?;
        tracing::info!(generation = target.generation, previous, hash = %target.hash, "rolled back");
        self.pointer = Some(pointer);
        Ok(RollbackOutcome {
            generation: target.generation,
            hash: target.hash,
            previous,
        })
    }

    /// Removes leftovers (temp files, snapshots no retained generation
    /// references, among them those that left retention at the last
    /// publish), optionally shrinking retention first, and reports all it
    /// removed (the handle's own sweep is then not needed).
    pub fn gc(&mut self, options: &GcOptions) -> Result<GcReport> {
        self.guarded(|w| w.gc_unguarded(options))
    }

    fn gc_unguarded(&mut self, options: &GcOptions) -> Result<GcReport> {
        #[cfg(feature = "s3")]
        if self.object.is_some() {
            return self.gc_object(options);
        }
        let store = self.store;
        let mut pointer = self.pointer()?;
        let mut dropped = Vec::new();
        if let Some(p) = pointer.as_mut() {
            let before: Vec<u64> = p.generations.iter().map(|g| g.generation).collect();
            if let Some(keep) = options.keep {
                p.apply_retention(keep.clamp(1, MAX_KEEP));
            }
            if let Some(age) = options.older_than {
                // A cutoff before the epoch (or unrepresentable) drops nothing.
                if let Some(cutoff) = std::time::SystemTime::now().checked_sub(age) {
                    p.drop_older_than(cutoff);
                }
            }
            dropped = before
                .into_iter()
                .filter(|n| p.find(*n).is_none())
                .collect();
            if !dropped.is_empty() && !options.dry_run {
                store.commit_pointer(&self.lock, p)?;
                self.pointer = Some(p.clone());
            }
        }
        let leftovers = store.leftovers(&self.lock, pointer.as_ref())?;
        let removal = if options.dry_run {
            sweep::Removal {
                removed: leftovers,
                not_removed: Vec::new(),
            }
        } else {
            // Everything the handle's sweep would remove, it removes.
            self.sweep_due = false;
            let removal = sweep::remove(store.durable(), leftovers, &|| {
                self.lock.check_held().is_ok()
            });
            self.lock.check_held()?;
            removal
        };
        Ok(GcReport::of(
            &removal.removed,
            removal.not_removed,
            dropped,
            options.dry_run,
        ))
    }

    /// Drops the listed generations from the store's history. Their
    /// snapshots are removed at once, unless a retained generation still
    /// references the same content; on the lease backend they are kept for
    /// the grace period first, like snapshots that leave retention. The
    /// current generation cannot be forgotten ([`Error::ForgetCurrent`]),
    /// nor a pinned one ([`Error::ForgetPinned`]: unpin it first); a number
    /// that is not retained is [`Error::NoSuchGeneration`]. Nothing changes
    /// unless every number is valid.
    ///
    /// ```
    /// # fn main() -> Result<(), snapcache::Error> {
    /// # let dir = tempfile::tempdir().map_err(|e| snapcache::Error::InvalidOption(e.to_string()))?;
    /// # let store = snapcache::Store::open(snapcache::StoreOptions::new(dir.path()))?;
    /// let mut writer = store.lock_writer()?;
    /// writer.publish_bytes(b"[1]", &Default::default())?;
    /// writer.publish_bytes(b"[2]", &Default::default())?;
    /// let report = writer.forget(&[1])?;
    /// assert_eq!((report.forgotten, report.removed_snapshots), (vec![1], 1));
    /// assert!(writer.forget(&[2]).is_err(), "2 is current");
    /// # Ok(()) }
    /// ```
    pub fn forget(&mut self, generations: &[u64]) -> Result<ForgetReport> {
        self.guarded(|w| w.forget_unguarded(generations))
    }

    fn forget_unguarded(&mut self, generations: &[u64]) -> Result<ForgetReport> {
        #[cfg(feature = "s3")]
        if self.object.is_some() {
            return self.forget_object(generations);
        }
        self.sweep_if_due()?;
        let store = self.store;
        let mut pointer = self.pointer()?.ok_or_else(|| store.no_store())?;
        for &n in generations {
            if n == pointer.current {
                return Err(Error::ForgetCurrent {
                    root: store.root().to_path_buf(),
                    generation: n,
                });
            }
            match pointer.find(n) {
                None => {
                    return Err(Error::NoSuchGeneration {
                        root: store.root().to_path_buf(),
                        generation: n,
                        available: pointer.retained_list(),
                    });
                }
                Some(g) if g.pinned => {
                    return Err(Error::ForgetPinned {
                        root: store.root().to_path_buf(),
                        generation: n,
                    });
                }
                Some(_) => {}
            }
        }
        let forgotten = pointer.forget(generations);
        if !forgotten.is_empty() {
            store.commit_pointer(&self.lock, &mut pointer)?;
            self.pointer = Some(pointer.clone());
        }
        // Removal by name, through the same rule as gc: only snapshots no
        // retained (or, on the lease backend, recently dropped) generation
        // references.
        let leftovers = store.leftovers(&self.lock, Some(&pointer))?;
        let snapshots = leftovers
            .into_iter()
            .filter(|l| l.kind == LeftoverKind::UnreferencedSnapshot)
            .collect();
        let removal = sweep::remove(store.durable(), snapshots, &|| {
            self.lock.check_held().is_ok()
        });
        self.lock.check_held()?;
        let report = ForgetReport {
            forgotten,
            removed_snapshots: removal.removed.len(),
            freed_bytes: removal.removed.iter().map(|l| l.bytes).sum(),
            not_removed: removal.not_removed,
        };
        tracing::info!(
            forgotten = ?report.forgotten,
            removed_snapshots = report.removed_snapshots,
            bytes = report.freed_bytes,
            "forgot generations"
        );
        Ok(report)
    }

    /// Pins the listed retained generations: retention (every publish's
    /// `keep`, [`GcOptions::keep()`]) and [`GcOptions::older_than()`] keep them,
    /// and [`Writer::forget`] refuses them, until they are unpinned. The
    /// current generation may be pinned: it then stays after newer
    /// publishes push it out of `keep`. [`Writer::clear`] removes pinned
    /// generations like any other (it is explicit).
    ///
    /// Pins count inside retention's bound: at most
    /// [`MAX_PINNED`](crate::MAX_PINNED) generations are pinned
    /// ([`Error::PinLimit`]), and the unpinned ones get the room the pins
    /// leave. A number that is not retained is [`Error::NoSuchGeneration`].
    /// Nothing changes unless every number is valid; pinning a pinned
    /// generation changes nothing and succeeds (`changed` is false).
    ///
    /// ```
    /// # fn main() -> Result<(), snapcache::Error> {
    /// # let dir = tempfile::tempdir().map_err(|e| snapcache::Error::InvalidOption(e.to_string()))?;
    /// use snapcache::{Store, StoreOptions};
    ///
    /// let store = Store::open(StoreOptions::new(dir.path()).keep(1))?;
    /// let mut writer = store.lock_writer()?;
    /// writer.publish_bytes(b"[1]", &Default::default())?;
    /// assert!(writer.pin(&[1])?.changed);
    /// assert!(!writer.pin(&[1])?.changed, "already pinned");
    /// for n in 2..=4 {
    ///     writer.publish_bytes(format!("[{n}]").as_bytes(), &Default::default())?;
    /// }
    /// // keep 1: the current generation, the newest other, and the pin.
    /// let kept: Vec<u64> = store.history()?.iter().map(|e| e.generation).collect();
    /// assert_eq!(kept, [1, 3, 4]);
    /// assert_eq!(writer.unpin(&[1])?.pinned, Vec::<u64>::new());
    /// # Ok(()) }
    /// ```
    pub fn pin(&mut self, generations: &[u64]) -> Result<PinReport> {
        self.guarded(|w| w.set_pinned_unguarded(generations, true))
    }

    /// Unpins the listed retained generations: they are subject to
    /// retention and collection again from the next publish or `gc` on.
    /// A number that is not retained is [`Error::NoSuchGeneration`];
    /// unpinning one that is not pinned changes nothing and succeeds.
    ///
    /// ```
    /// # fn main() -> Result<(), snapcache::Error> {
    /// # let dir = tempfile::tempdir().map_err(|e| snapcache::Error::InvalidOption(e.to_string()))?;
    /// # let store = snapcache::Store::open(snapcache::StoreOptions::new(dir.path()))?;
    /// let mut writer = store.lock_writer()?;
    /// writer.publish_bytes(b"[1]", &Default::default())?;
    /// writer.pin(&[1])?;
    /// let report = writer.unpin(&[1])?;
    /// assert!(report.changed && report.pinned.is_empty());
    /// assert!(!writer.unpin(&[1])?.changed, "not pinned any more");
    /// # Ok(()) }
    /// ```
    pub fn unpin(&mut self, generations: &[u64]) -> Result<PinReport> {
        self.guarded(|w| w.set_pinned_unguarded(generations, false))
    }

    fn set_pinned_unguarded(&mut self, generations: &[u64], pin: bool) -> Result<PinReport> {
        let store = self.store;
        #[cfg(feature = "s3")]
        if self.object.is_some() {
            let (changed, pointer) = self.set_pinned_object(generations, pin)?;
            return Ok(pin_report(generations, changed, &pointer, pin));
        }
        self.sweep_if_due()?;
        let mut pointer = self.pointer()?.ok_or_else(|| store.no_store())?;
        if let Some(&n) = generations.iter().find(|&&n| pointer.find(n).is_none()) {
            return Err(Error::NoSuchGeneration {
                root: store.root().to_path_buf(),
                generation: n,
                available: pointer.retained_list(),
            });
        }
        let changed = pointer.set_pinned(generations, pin);
        if pin && pointer.pinned().len() > MAX_PINNED {
            // The first one past the limit, in pointer order.
            let before = pointer.pinned().len() - changed.len();
            let generation = changed
                .get(MAX_PINNED.saturating_sub(before))
                .copied()
                .unwrap_or_default();
            return Err(Error::PinLimit {
                root: store.root().to_path_buf(),
                generation,
                limit: MAX_PINNED,
            });
        }
        if !changed.is_empty() {
            store.commit_pointer(&self.lock, &mut pointer)?;
            self.pointer = Some(pointer.clone());
        }
        Ok(pin_report(generations, !changed.is_empty(), &pointer, pin))
    }

    /// Empties the store: the pointer and every snapshot are removed; the
    /// lock, the marker and the directories stay, so the store is still a
    /// store (and this handle still holds its lock). Readers see "nothing
    /// published" ([`Error::NoStore`]) from then on, never a partial state:
    /// the pointer goes first (durably), the snapshots after it.
    ///
    /// The next publish starts again at generation 1, as in a new store
    /// (nothing of the old history is kept to continue from). A damaged
    /// pointer does not stop a clear: it is removed by name like any pointer.
    ///
    /// ```
    /// # fn main() -> Result<(), snapcache::Error> {
    /// # let dir = tempfile::tempdir().map_err(|e| snapcache::Error::InvalidOption(e.to_string()))?;
    /// # let store = snapcache::Store::open(snapcache::StoreOptions::new(dir.path()))?;
    /// let mut writer = store.lock_writer()?;
    /// writer.publish_bytes(b"[1]", &Default::default())?;
    /// writer.publish_bytes(b"[2]", &Default::default())?;
    /// let cleared = writer.clear()?;
    /// assert_eq!((cleared.previous_generation, cleared.removed_snapshots), (Some(2), 2));
    /// assert!(store.current_generation()?.is_none());
    /// assert_eq!(writer.publish_bytes(b"[3]", &Default::default())?.generation, 1);
    /// # Ok(()) }
    /// ```
    pub fn clear(&mut self) -> Result<ClearReport> {
        self.guarded(Writer::clear_unguarded)
    }

    fn clear_unguarded(&mut self) -> Result<ClearReport> {
        #[cfg(feature = "s3")]
        if self.object.is_some() {
            return self.clear_object();
        }
        let store = self.store;
        let (read, damaged) = match self.pointer() {
            Ok(pointer) => (pointer, false),
            Err(e) if e.is_corrupt() => {
                tracing::info!(error = %e, "clearing a store whose pointer is damaged");
                (None, true)
            }
            Err(e) => return Err(e),
        };
        let previous = read.as_ref().map(|p| p.current);
        self.lock.check_held()?;
        // 0. The commit records. Lease backend: the clear is a commit of
        //    its own (a record saying "cleared"), so that a writer stalled
        //    across it finds its record's name taken and cannot bring the
        //    removed history back; the numbering goes on after it.
        //    Advisory backend: no writer can be stalled across the clear;
        //    records (left by lease writers) are removed, since they would
        //    otherwise be taken for commits newer than the next pointer.
        let base = read.as_ref().map_or_else(
            || crate::commit_record::base_without_pointer(store.layout()),
            |p| p.commit,
        );
        let by_record =
            self.lock.backend() == Backend::Lease && crate::commit_record::has_next_commit(base);
        if by_record {
            crate::test_hooks::stall_before_commit();
            crate::commit_record::commit_cleared(store.layout(), store.durable(), base)?;
        } else {
            // Also the lease backend's way out of an edited pointer whose
            // commit counter is at its end: no record can be numbered after
            // it, so the numbering starts again with the records gone.
            if self.lock.backend() == Backend::Lease {
                tracing::warn!(
                    commit = base,
                    "the commit counter is at its end: clearing by removing the commit records"
                );
            }
            crate::commit_record::remove_all(store.layout(), store.durable())?;
        }
        // 1. The pointer, durably: from here on every reader sees "nothing
        //    published", and a crash leaves a store with nothing published.
        let current = store.layout().current();
        store.durable().remove_file(&current).map_err(|e| {
            let error = Error::io("remove the store pointer", &current, e);
            // On the lease backend the "cleared" record above is the
            // commit: readers already follow it to "nothing published".
            if by_record {
                error.after_commit()
            } else {
                error
            }
        })?;
        let root = store.root().to_path_buf();
        // Removed: what fails from here on fails after the commit point.
        store
            .durable()
            .sync_dir(&root)
            .map_err(|e| Error::io("fsync the directory", &root, e).after_commit())?;
        self.pointer = None;
        self.reread = false;
        // 2. The snapshots, by name (and temp files): nothing references
        //    them now. One that cannot be removed is logged and left; a
        //    crash here leaves unreferenced snapshots that the next clear
        //    removes (a writer's sweep spares them while no pointer exists).
        let spare_live_writers =
            (self.lock.backend() == Backend::Lease).then_some(store.options().lease_ttl_value());
        let leftovers = sweep::leftovers(store.layout(), Some(&HashSet::new()), spare_live_writers)
            .map_err(Error::after_commit)?;
        let removal = sweep::remove(store.durable(), leftovers, &|| {
            self.lock.check_held().is_ok()
        });
        self.lock.check_held().map_err(Error::after_commit)?;
        self.sweep_due = false;
        Ok(ClearReport::of(
            previous,
            damaged,
            &removal.removed,
            removal.not_removed,
        ))
    }

    // ------------------------------------------------------------ helpers

    /// The sweep of leftovers, when due, for an operation that stages no
    /// payload to overlap it with (rollback, forget, pin, unpin).
    fn sweep_if_due(&mut self) -> Result<()> {
        if self.sweep_due {
            let pointer = self.pointer()?;
            self.store
                .sweep_leftovers(&self.lock, pointer.as_ref(), None, |_| ())?;
            self.sweep_due = false;
        }
        Ok(())
    }

    /// The pointer, read again first when the handle's copy is in doubt.
    pub(crate) fn pointer(&mut self) -> Result<Option<Pointer>> {
        #[cfg(feature = "s3")]
        if self.object.is_some() {
            if self.reread {
                self.reload_object_pointer()?;
                self.reread = false;
            }
            return Ok(self.pointer.clone());
        }
        if self.reread {
            self.pointer = self.store.try_load_newest_pointer(&self.lock)?;
            self.reread = false;
        }
        Ok(self.pointer.clone())
    }

    /// Runs an operation; after a failure the pointer is read again before
    /// the next one (the failure may have come after a commit, e.g. in the
    /// directory fsync).
    fn guarded<R>(&mut self, op: impl FnOnce(&mut Self) -> Result<R>) -> Result<R> {
        let result = op(self);
        if result.is_err() {
            self.reread = true;
        }
        result.map_err(Error::in_write)
    }

    pub(crate) fn outcome(
        &self,
        entry: &Generation,
        changed: bool,
        skipped: bool,
        rename: RenameStats,
    ) -> PublishOutcome {
        PublishOutcome {
            generation: entry.generation,
            hash: entry.hash,
            bytes: entry.bytes,
            changed,
            skipped,
            waited_ms: self.lock.waited.as_millis() as u64,
            backend: self.lock.backend(),
            rename_attempts: rename.attempts,
            rename_wait_ms: rename.waited.as_millis() as u64,
        }
    }
}

/// What runs alongside a staging (see [`Writer::stage`]).
#[derive(Clone, Copy, Default)]
pub(crate) struct Alongside<'p, 's> {
    /// Sweep leftovers against this pointer (`Some(None)`: no pointer).
    pub sweep: Option<Option<&'p Pointer>>,
    /// The whole payload, when the source writes exactly this slice.
    pub slice: Option<&'s [u8]>,
    /// The hash of the current snapshot, whose content is not fsynced again.
    pub current: Option<ContentHash>,
}

/// What [`Writer::stage`] tells the staging about the temp file's fsync.
#[derive(Clone, Copy)]
struct Early {
    /// fsync it before returning (something runs alongside until then).
    sync: bool,
    /// The current snapshot's hash: content equal to it is not fsynced.
    current: Option<ContentHash>,
}

/// The hash of a payload slice, computed on a thread of its own while the
/// slice is written.
struct Hashed<'a> {
    /// The slice's length: what the sink must have written.
    len: u64,
    /// Waits for the hash.
    hash: Box<dyn FnOnce() -> ContentHash + 'a>,
}

/// Raw payload slices at least this long are hashed on a thread of their
/// own while they are written (the JSON check's thread does not hash: it
/// checks). Below it, starting the thread costs more than it saves.
const HASH_ALONGSIDE_FROM: usize = 512 * 1024;

/// A JSON check's verdict still to come (the error: why the payload is not
/// JSON).
type Verdict<'a> = Box<dyn FnOnce() -> std::result::Result<(), String> + 'a>;

/// The JSON check of a whole payload held in memory.
fn check_slice(bytes: &[u8]) -> std::result::Result<(), String> {
    let mut check = crate::json_check::JsonCheck::default();
    check.feed(bytes)?;
    check.finish()
}

/// What [`Writer::forget`] dropped and removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ForgetReport {
    /// The generations dropped, oldest first.
    pub forgotten: Vec<u64>,
    /// Snapshot files removed.
    pub removed_snapshots: usize,
    /// Bytes freed.
    pub freed_bytes: u64,
    /// Snapshots that were to be removed but could not be, and why (left
    /// in place).
    pub not_removed: Vec<NotRemoved>,
}

/// What [`Writer::pin`] or [`Writer::unpin`] did.
///
/// ```
/// # fn main() -> Result<(), snapcache::Error> {
/// # let dir = tempfile::tempdir().map_err(|e| snapcache::Error::InvalidOption(e.to_string()))?;
/// # let store = snapcache::Store::open(snapcache::StoreOptions::new(dir.path()))?;
/// store.publish_bytes(b"[1]", &Default::default())?;
/// store.publish_bytes(b"[2]", &Default::default())?;
/// let report = store.pin(&[2, 1])?;
/// assert_eq!((report.generations, report.changed, report.pinned), (vec![1, 2], true, vec![1, 2]));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PinReport {
    /// The generations asked for, oldest first.
    pub generations: Vec<u64>,
    /// Whether any mark changed (false: every one already was as asked,
    /// and the store was not written).
    pub changed: bool,
    /// Every pinned generation of the store afterwards, oldest first.
    pub pinned: Vec<u64>,
}

/// What [`Writer::clear`] removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClearReport {
    /// The generation that was current before (`None`: nothing was
    /// published, or the pointer was damaged).
    pub previous_generation: Option<u64>,
    /// The pointer (or, on the lease backend, the newest commit record)
    /// could not be read as one: which generation was current is unknown,
    /// not "none". The clear went ahead all the same, since it is the way
    /// out of a damaged history.
    pub pointer_damaged: bool,
    /// Snapshot files removed.
    pub removed_snapshots: usize,
    /// Temp files removed.
    pub removed_temp_files: usize,
    /// Bytes freed.
    pub freed_bytes: u64,
    /// Files that were to be removed but could not be, and why (left in
    /// place, unreferenced: a later gc or clear removes them once it can).
    pub not_removed: Vec<NotRemoved>,
}

impl ClearReport {
    /// The report of a clear that found `previous` current and removed
    /// `removed`; logs it. Both backends build their report here so the
    /// counts and the `cleared` event cannot drift apart.
    pub(crate) fn of(
        previous: Option<u64>,
        pointer_damaged: bool,
        removed: &[Leftover],
        not_removed: Vec<NotRemoved>,
    ) -> Self {
        let count = |kind| removed.iter().filter(|l| l.kind == kind).count();
        let report = ClearReport {
            previous_generation: previous,
            pointer_damaged,
            removed_snapshots: count(LeftoverKind::UnreferencedSnapshot),
            removed_temp_files: count(LeftoverKind::TempFile),
            freed_bytes: removed.iter().map(|l| l.bytes).sum(),
            not_removed,
        };
        tracing::info!(
            previous_generation = report.previous_generation,
            pointer_damaged = report.pointer_damaged,
            removed_snapshots = report.removed_snapshots,
            bytes = report.freed_bytes,
            not_removed = report.not_removed.len(),
            "cleared"
        );
        report
    }
}

/// What a pin or unpin reports, from the pointer it left.
fn pin_report(generations: &[u64], changed: bool, pointer: &Pointer, pin: bool) -> PinReport {
    let mut asked = generations.to_vec();
    asked.sort_unstable();
    asked.dedup();
    let report = PinReport {
        generations: asked,
        changed,
        pinned: pointer.pinned(),
    };
    tracing::info!(
        generations = ?report.generations,
        pin,
        changed = report.changed,
        pinned = ?report.pinned,
        "set pin marks"
    );
    report
}

/// The options of a `publish_json`: the bytes skip the JSON check whatever
/// `options.format` says when serde_json wrote them (well-formed by
/// construction; a serializer error fails the publish instead). The
/// canonical writer is snapcache's own code: its output is still checked.
pub(crate) fn json_options(options: &PublishOptions) -> PublishOptions {
    if options.canonical {
        return options.clone();
    }
    PublishOptions {
        format: crate::payload::PayloadFormat::Raw,
        ..options.clone()
    }
}

/// The payload of `publish_json`: `value` serialized straight into the sink.
pub(crate) fn json_source<'v, T: Serialize + ?Sized>(
    value: &'v T,
    options: &PublishOptions,
) -> impl FnOnce(&mut PayloadSink<'_>) -> std::result::Result<(), SourceError> + 'v {
    let (canonical, pretty) = (options.canonical, options.pretty);
    move |sink| {
        let mut writer = io::BufWriter::with_capacity(64 * 1024, sink);
        if canonical {
            crate::canonical::write(&mut writer, value, pretty)?;
        } else if pretty {
            serde_json::to_writer_pretty(&mut writer, value)?;
        } else {
            serde_json::to_writer(&mut writer, value)?;
        }
        writer.flush()?;
        Ok(())
    }
}

/// The payload of `publish_bytes`.
pub(crate) fn bytes_source(
    bytes: &[u8],
) -> impl FnOnce(&mut PayloadSink<'_>) -> std::result::Result<(), SourceError> + '_ {
    move |sink| Ok(sink.write_all(bytes)?)
}

/// The payload of `publish_reader`.
pub(crate) fn reader_source(
    reader: impl Read,
) -> impl FnOnce(&mut PayloadSink<'_>) -> std::result::Result<(), SourceError> {
    move |sink| {
        // Large reads: fewer write syscalls and checker batches than
        // io::copy's 8 KiB. Our own loop rather than io::copy, which
        // retries `Interrupted` at once and for ever: a read that keeps
        // failing with EINTR (a blocked socket read when Ctrl-C lands,
        // without SA_RESTART) would spin with the lock held and never see
        // the cancel flag.
        let mut reader = reader;
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                    if sink.cancelled() {
                        return Err(e.into());
                    }
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            // A reader claiming more than the buffer (a broken `Read`
            // impl) is its error, not a panic here.
            let chunk = buf.get(..n).ok_or_else(|| {
                io::Error::other(format!(
                    "the payload reader claimed {n} bytes from a buffer of {}",
                    buf.len()
                ))
            })?;
            sink.write_all(chunk)?;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::Arc;
    use std::sync::Mutex;

    use super::*;
    use crate::durable::{Durable, FsHook, Op};
    use crate::lock::{LockBudget, LockWait, TimeoutSource};
    use crate::store::StoreOptions;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(StoreOptions::new(dir.path().join("s"))).expect("open");
        (dir, store)
    }

    fn try_once(store: &Store, label: &'static str) -> Store {
        Store::open(
            StoreOptions::new(store.root())
                .lock_budget(LockBudget::labelled(LockWait::TryOnce, label)),
        )
        .expect("open")
    }

    #[test]
    fn the_handle_holds_the_lock_until_dropped_and_the_timeout_names_the_label() {
        let (_dir, store) = store();
        let writer = store.lock_writer().expect("lock");
        let other = try_once(&store, "KOPI_LOCK_TIMEOUT");
        let err = other
            .publish_bytes(b"[1]", &PublishOptions::default())
            .expect_err("the lock is held by the handle");
        assert!(err.is_lock_timeout(), "{err}");
        assert!(
            matches!(&err, Error::LockTimeout { budget_source: TimeoutSource::Label(l), .. } if l == "KOPI_LOCK_TIMEOUT"),
            "{err:?}"
        );
        assert!(
            err.to_string().contains("from KOPI_LOCK_TIMEOUT"),
            "the message names the caller's label: {err}"
        );
        drop(writer);
        let outcome = other
            .publish_bytes(b"[1]", &PublishOptions::default())
            .expect("free after the drop");
        assert_eq!(outcome.generation, 1);
    }

    #[test]
    fn a_lease_outlives_a_fetch_longer_than_the_lease_time_under_the_handle() {
        let (_dir, plain) = store();
        let lease = |wait| {
            Store::open(
                StoreOptions::new(plain.root())
                    .lock_backend(crate::lock::BackendChoice::Lease)
                    // Long enough that a loaded machine (two test runs on
                    // two cores) still renews in time: 300 ms once was not.
                    .lease_ttl(Duration::from_millis(1_000))
                    .lock_budget(LockBudget::labelled(wait, "test")),
            )
            .expect("open")
        };
        let holder = lease(LockWait::For(Duration::from_secs(10)));
        let mut writer = holder.lock_writer().expect("lock");
        assert_eq!(writer.backend(), Backend::Lease);
        // A "fetch" of more than three lease times: the lease is renewed
        // in the background, so nobody takes it over meanwhile.
        std::thread::sleep(Duration::from_millis(3_200));
        let err = lease(LockWait::TryOnce)
            .publish_bytes(b"[0]", &PublishOptions::default())
            .expect_err("still held");
        assert!(err.is_lock_timeout(), "{err}");
        let outcome = writer
            .publish_bytes(b"[1]", &PublishOptions::default())
            .expect("the lease is still ours");
        assert_eq!(outcome.generation, 1);
    }

    /// A raw slice from `HASH_ALONGSIDE_FROM` on is hashed on its own thread
    /// while it is written: the same hash as streamed, the bytes read back.
    #[test]
    fn a_large_raw_slice_hashed_alongside_is_published_under_its_own_hash() {
        let (_dir, store) = store();
        let raw = PublishOptions::default().raw(true);
        for len in [
            HASH_ALONGSIDE_FROM - 1,
            HASH_ALONGSIDE_FROM,
            3 * 1024 * 1024 + 5,
        ] {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 11 % 253) as u8).collect();
            let sliced = store.publish_bytes(&bytes, &raw).expect("publish");
            assert_eq!(sliced.hash, ContentHash::of(&bytes), "len {len}");
            assert_eq!(store.read_current().expect("read").data, bytes, "len {len}");
            let mut other = bytes.clone();
            other[len / 2] ^= 1;
            let streamed = store.publish_reader(&other[..], &raw).expect("publish");
            assert_eq!(streamed.hash, ContentHash::of(&other), "len {len}");
            let again = store.publish_bytes(&other, &raw).expect("publish");
            assert!(!again.changed && again.hash == streamed.hash, "len {len}");
        }
        assert!(store.verify().expect("verify").ok);
    }

    #[test]
    fn several_publishes_on_one_handle_are_generations_and_refreshes() {
        let (_dir, store) = store();
        let mut writer = store.lock_writer().expect("lock");
        assert_eq!(
            (writer.generation(), writer.last_checked_at()),
            (None, None)
        );
        assert!(!writer.is_fresh(Duration::from_secs(3600)));
        let first = writer
            .publish_bytes(b"[1]", &PublishOptions::default())
            .expect("1");
        let checked = writer.last_checked_at().expect("checked");
        std::thread::sleep(Duration::from_millis(5));
        let same = writer
            .publish_bytes(b"[1]", &PublishOptions::default())
            .expect("same");
        let second = writer
            .publish_bytes(b"[2]", &PublishOptions::default())
            .expect("2");
        assert_eq!(
            (first.generation, same.generation, second.generation),
            (1, 1, 2)
        );
        assert!(first.changed && !same.changed && second.changed);
        assert!(writer.last_checked_at().expect("checked") > checked);
        assert!(writer.is_fresh(Duration::from_secs(3600)));
        assert!(!writer.is_fresh(Duration::ZERO));
        let current = writer.current().expect("current");
        assert_eq!((current.generation, current.bytes), (2, 3));
        drop(writer);
        assert_eq!(store.read_current().expect("read").data, b"[2]");
        assert_eq!(store.history().expect("history").len(), 2);
    }

    #[test]
    fn a_source_returns_its_value_or_its_own_error_and_max_age_is_refused() {
        #[derive(Debug, PartialEq)]
        struct Upstream(u16);
        impl std::fmt::Display for Upstream {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "upstream answered {}", self.0)
            }
        }
        impl std::error::Error for Upstream {}

        let (_dir, store) = store();
        let mut writer = store.lock_writer().expect("lock");
        let (outcome, n) = writer
            .publish_with(&PublishOptions::default(), |sink| {
                sink.write_all(b"[1,2,3]")?;
                Ok(3usize)
            })
            .expect("publish");
        assert_eq!((outcome.generation, n), (1, 3));
        let err = writer
            .publish_with(
                &PublishOptions::default(),
                |sink| -> std::result::Result<(), _> {
                    sink.write_all(b"[4,")?;
                    Err(Upstream(503).into())
                },
            )
            .expect_err("the source failed");
        assert!(err.is_source_failed());
        assert_eq!(err.downcast_source::<Upstream>(), Some(&Upstream(503)));
        let chained = std::error::Error::source(&err)
            .and_then(|s| s.downcast_ref::<Upstream>())
            .map(|u| u.0);
        assert_eq!(chained, Some(503), "std's source() reaches it too");
        assert_eq!(err.into_source::<Upstream>().expect("typed"), Upstream(503));
        let other = writer
            .publish_with(
                &PublishOptions::default(),
                |_| -> std::result::Result<(), _> { Err("plain text".into()) },
            )
            .expect_err("failed");
        let back = other
            .into_source::<Upstream>()
            .expect_err("not an Upstream");
        assert!(back.is_source_failed(), "given back unchanged: {back}");
        let refused = writer
            .publish_bytes(
                b"[5]",
                &PublishOptions::default().max_age(Duration::from_secs(1)),
            )
            .expect_err("max_age on a handle");
        assert!(matches!(refused, Error::InvalidOption(_)), "{refused}");
        assert_eq!(writer.generation(), Some(1));
        drop(writer);
        assert_eq!(store.read_current().expect("read").data, b"[1,2,3]");
    }

    #[test]
    fn rollback_gc_and_clear_through_the_handle() {
        let (_dir, store) = store();
        let mut writer = store.lock_writer().expect("lock");
        for n in 1..=4 {
            writer
                .publish_json(&[n], &PublishOptions::default())
                .expect("publish");
        }
        let back = writer.rollback(Some(2)).expect("rollback");
        assert_eq!((back.previous, back.generation), (4, 2));
        assert_eq!(writer.generation(), Some(2));
        let report = writer.gc(&GcOptions::default().keep(1)).expect("gc");
        // keep 1 besides the current one (2): the newest other, 4, stays.
        assert_eq!(report.dropped_generations, vec![1, 3]);
        assert_eq!(report.removed_snapshots, 2);
        // Foreign entries in snapshots/ are not the store's to remove.
        let foreign = store.root().join("snapshots").join("notes.txt");
        std::fs::write(&foreign, b"mine").expect("plant");
        let cleared = writer.clear().expect("clear");
        assert_eq!(cleared.previous_generation, Some(2));
        assert_eq!(cleared.removed_snapshots, 2);
        assert_eq!(writer.generation(), None);
        assert!(foreign.exists(), "a foreign file survives clear");
        for kept in ["lock", "snapcache-store", "snapshots", "tmp"] {
            assert!(store.root().join(kept).exists(), "{kept} is kept");
        }
        assert!(!store.root().join("current").exists());
        assert!(matches!(store.read_current(), Err(Error::NoStore { .. })));
        assert_eq!(store.current_generation().expect("pointer query"), None);
        let again = writer
            .publish_json(&[9], &PublishOptions::default())
            .expect("publish");
        assert_eq!(again.generation, 1, "numbering restarts after clear");
        drop(writer);
        assert_eq!(store.history().expect("history").len(), 1);
    }

    #[test]
    fn clear_works_on_a_damaged_pointer_that_blocks_everything_else() {
        let (_dir, store) = store();
        store
            .publish_bytes(b"[1]", &PublishOptions::default())
            .expect("publish");
        std::fs::write(
            store.root().join("current"),
            b"snapcache-pointer 1 garbage\n{}\n",
        )
        .expect("damage");
        let mut writer = store
            .lock_writer()
            .expect("a damaged pointer does not stop the handle");
        let err = writer
            .publish_bytes(b"[2]", &PublishOptions::default())
            .expect_err("publishing over a damaged pointer");
        assert!(matches!(err, Error::CorruptPointer { .. }), "{err}");
        let cleared = writer.clear().expect("clear");
        assert_eq!(
            (
                cleared.previous_generation,
                cleared.pointer_damaged,
                cleared.removed_snapshots
            ),
            (None, true, 1)
        );
        let outcome = writer
            .publish_bytes(b"[2]", &PublishOptions::default())
            .expect("publish");
        assert_eq!(outcome.generation, 1);
        drop(writer);
        assert_eq!(store.read_current().expect("read").data, b"[2]");
        assert!(store.verify().expect("verify").ok);
    }

    #[test]
    fn clear_on_a_missing_store_creates_nothing() {
        let (_dir, store) = store();
        let err = store.clear().expect_err("no store");
        assert!(matches!(err, Error::NoStore { .. }), "{err}");
        assert!(!store.root().exists());
    }

    fn snapshot_names(store: &Store) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(store.root().join("snapshots"))
            .expect("list")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_snapshot_that_left_retention_waits_for_the_next_write_and_is_no_problem() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(StoreOptions::new(dir.path().join("s")).keep(1)).expect("open");
        for n in 1..=3 {
            store
                .publish_bytes(format!("[{n}]").as_bytes(), &PublishOptions::default())
                .expect("publish");
        }
        let first = ContentHash::of(b"[1]").to_string();
        // Generation 1 left retention with the third publish: its snapshot
        // is still there, listed as reclaimable, and verify is ok.
        assert!(snapshot_names(&store).contains(&first));
        let report = store.verify().expect("verify");
        assert!(report.ok && report.problems.is_empty(), "{report:?}");
        assert_eq!(report.verified_generations, vec![2, 3]);
        assert_eq!(report.reclaimable.len(), 1, "{report:?}");
        assert!(report.reclaimable[0].path.ends_with(&first));
        // The next write's sweep removes it (and a crashed writer's temp
        // file), never its own temp file.
        let crashed = store.root().join("tmp").join(".snapcache-1.0-crashed");
        std::fs::write(&crashed, b"[").expect("plant");
        store
            .publish_bytes(b"[4]", &PublishOptions::default())
            .expect("publish");
        let names = snapshot_names(&store);
        assert!(!names.contains(&first), "{names:?}");
        assert_eq!(names.len(), 3, "3 and 4 retained, 2 awaiting: {names:?}");
        assert!(
            !crashed.exists(),
            "the crashed writer's temp file was swept"
        );
        assert_eq!(store.read_current().expect("read").data, b"[4]");
        assert!(store.verify().expect("verify").ok);
    }

    #[test]
    fn many_publishes_on_one_handle_leave_at_most_one_publish_worth_behind() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(StoreOptions::new(dir.path().join("s")).keep(1)).expect("open");
        let mut writer = store.lock_writer().expect("lock");
        for n in 1..=20 {
            writer
                .publish_bytes(format!("[{n}]").as_bytes(), &PublishOptions::default())
                .expect("publish");
            let names = snapshot_names(&store);
            // Two retained, at most one that left retention with this
            // publish (each publish sweeps what the one before it dropped).
            assert!(names.len() <= 3, "after publish {n}: {names:?}");
        }
        // An operation without a payload sweeps first, as a write.
        writer.pin(&[20]).expect("pin");
        assert_eq!(snapshot_names(&store).len(), 2);
        drop(writer);
        assert!(store.verify().expect("verify").reclaimable.is_empty());
    }

    #[test]
    fn content_published_again_after_it_left_retention_is_a_whole_snapshot() {
        // The sweep of the fourth publish removes the snapshot named like
        // the payload being staged ([1] left retention, awaiting removal);
        // it is joined before the rename, so the snapshot then published is
        // the new one, not a name the sweep unlinks after the commit.
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(StoreOptions::new(dir.path().join("s")).keep(1)).expect("open");
        for round in 0..5 {
            for payload in [&b"[1]"[..], b"[2]", b"[3]"] {
                let outcome = store
                    .publish_bytes(payload, &PublishOptions::default())
                    .expect("publish");
                assert!(outcome.changed, "round {round}");
                assert_eq!(store.read_current().expect("read").data, payload);
                let report = store.verify().expect("verify");
                assert!(report.ok, "round {round}: {report:?}");
            }
        }
        let back = store.rollback(None).expect("rollback");
        assert_eq!(store.read_current().expect("read").data, b"[2]", "{back:?}");
    }

    #[test]
    fn publish_bytes_checks_the_slice_with_the_verdicts_and_messages_of_the_streamed_check() {
        let (_dir, store) = store();
        let big = |tail: &str| {
            let mut doc = String::from("[");
            for n in 0..60_000 {
                doc.push_str(&format!("{{\"n\": {n}, \"s\": \"x\\u00e9\"}},\n"));
            }
            doc.push_str(tail);
            doc.into_bytes()
        };
        let cases: Vec<Vec<u8>> = vec![
            b"[1, 2".to_vec(),
            b"{\"a\": tru}".to_vec(),
            b"[1] [2]".to_vec(),
            b"\"\xff\"".to_vec(),
            big("1]"),
            big("1,]"),
            big("\"unterminated]"),
        ];
        assert!(
            cases[4].len() > 2 * 256 * 1024,
            "past several streamed batches"
        );
        for (i, payload) in cases.iter().enumerate() {
            let sliced = store.publish_bytes(payload, &PublishOptions::default());
            let streamed = store.publish_reader(&payload[..], &PublishOptions::default());
            match (&sliced, &streamed) {
                (Ok(a), Ok(b)) => assert_eq!(a.hash, b.hash, "case {i}"),
                (Err(a), Err(b)) => {
                    assert!(matches!(a, Error::PayloadRejected { .. }), "case {i}: {a}");
                    assert_eq!(a.to_string(), b.to_string(), "case {i}");
                }
                _ => panic!("case {i}: slice {sliced:?}, stream {streamed:?}"),
            }
        }
        assert_eq!(
            store.history().expect("history").len(),
            1,
            "only case 4 is JSON"
        );
        assert_eq!(store.read_current().expect("read").data, cases[4]);
        let tmp = std::fs::read_dir(store.root().join("tmp"))
            .expect("list")
            .count();
        assert_eq!(tmp, 0, "the rejected payloads' temp files are gone");
        // Raw takes any bytes; max_age still skips through the Store call.
        let raw = store
            .publish_bytes(b"[1, 2", &PublishOptions::default().raw(true))
            .expect("raw");
        let skipped = store
            .publish_bytes(
                b"[3]",
                &PublishOptions::default().max_age(Duration::from_secs(3600)),
            )
            .expect("fresh");
        assert!(raw.changed && skipped.skipped && !skipped.changed);
        assert_eq!(store.read_current().expect("read").data, b"[1, 2");
    }

    /// Records every operation, and makes each unlink wait first: a sweep
    /// still unlinking shows in the log after what the publish did
    /// meanwhile.
    #[derive(Default)]
    struct SlowRemovals(crate::crash_sim::Recorder);

    impl FsHook for SlowRemovals {
        fn before(&self, op: &Op<'_>) -> io::Result<()> {
            if matches!(op, Op::Remove(_)) {
                std::thread::sleep(Duration::from_millis(150));
            }
            self.0.before(op)
        }
    }

    #[test]
    fn the_sweep_overlaps_the_commit_but_never_takes_the_published_snapshot_and_unchanged_content_is_not_fsynced()
     {
        use crate::crash_sim::{Rec, Recorder};
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("s");
        let plain = Store::open(StoreOptions::new(&root).keep(1)).expect("open");
        let tmp = plain.layout().tmp_dir();
        let temp_syncs = |log: &[Rec]| {
            log.iter()
                .filter(|r| matches!(r, Rec::SyncFile(p) if p.starts_with(&tmp)))
                .count()
        };
        let snapshot_of = |payload: &str| {
            plain
                .layout()
                .snapshot(&ContentHash::of(payload.as_bytes()))
        };
        for raw in [false, true] {
            for n in 1..=3 {
                plain
                    .publish_bytes(
                        format!("[{n}, {raw}]").as_bytes(),
                        &PublishOptions::default(),
                    )
                    .expect("publish");
            }
            // [1, raw] left retention and awaits removal.
            let dropped = snapshot_of(&format!("[1, {raw}]"));
            assert!(dropped.exists());
            let slow = Arc::new(SlowRemovals::default());
            let store = plain.clone().with_durable(Durable::with_hook(slow.clone()));
            let payload = format!("[4, {raw}]");
            store
                .publish_bytes(payload.as_bytes(), &PublishOptions::default().raw(raw))
                .expect("publish");
            let log = slow.0.log();
            let snapshot = snapshot_of(&payload);
            let at = |want: &dyn Fn(&Rec) -> bool| log.iter().position(want);
            let removed = at(&|r| matches!(r, Rec::Remove(p) if *p == dropped));
            let synced = at(&|r| matches!(r, Rec::SyncFile(p) if p.starts_with(&tmp)));
            let renamed = at(&|r| matches!(r, Rec::Rename(_, to) if *to == snapshot));
            let (Some(removed), Some(synced), Some(renamed)) = (removed, synced, renamed) else {
                panic!("raw {raw}: {log:?}");
            };
            // The commit went on while the sweep was unlinking, and the
            // sweep was over before the publish returned.
            assert!(synced < renamed && renamed < removed, "raw {raw}: {log:?}");
            assert!(!dropped.exists());
            // The payload's temp file and the pointer's: one fsync each.
            assert_eq!(temp_syncs(&log), 2, "raw {raw}: {log:?}");
            // [2, raw] left retention now; published again, its snapshot is
            // removed by the sweep before the new one is renamed into place
            // under the same name, not after.
            let again = format!("[2, {raw}]");
            let doomed = snapshot_of(&again);
            let slow = Arc::new(SlowRemovals::default());
            let store = plain.clone().with_durable(Durable::with_hook(slow.clone()));
            store
                .publish_bytes(again.as_bytes(), &PublishOptions::default().raw(raw))
                .expect("publish");
            let log = slow.0.log();
            let removed = at_in(&log, |r| matches!(r, Rec::Remove(p) if *p == doomed));
            let renamed = at_in(&log, |r| matches!(r, Rec::Rename(_, to) if *to == doomed));
            assert!(
                removed.zip(renamed).is_some_and(|(d, r)| d < r),
                "raw {raw}: {log:?}"
            );
            assert_eq!(plain.read_current().expect("read").data, again.as_bytes());
            assert!(plain.verify().expect("verify").problems.is_empty());
            plain
                .publish_bytes(payload.as_bytes(), &PublishOptions::default().raw(raw))
                .expect("publish");
            // The same content again: only the pointer is written and fsynced.
            let recorder = Arc::new(Recorder::default());
            let store = plain
                .clone()
                .with_durable(Durable::with_hook(recorder.clone()));
            let again = store
                .publish_bytes(payload.as_bytes(), &PublishOptions::default().raw(raw))
                .expect("publish");
            assert!(!again.changed);
            let log = recorder.log();
            assert_eq!(temp_syncs(&log), 1, "raw {raw}: {log:?}");
            assert!(
                !log.iter()
                    .any(|r| matches!(r, Rec::Rename(_, to) if *to == snapshot))
            );
            // A damaged current snapshot is rewritten, fsynced first.
            // Writable by its owner only: one that others can write is
            // refused as untrusted before its bytes are looked at.
            #[cfg(unix)]
            std::fs::set_permissions(
                &snapshot,
                std::os::unix::fs::PermissionsExt::from_mode(0o600),
            )
            .expect("chmod");
            #[cfg(not(unix))]
            {
                let mut perms = std::fs::metadata(&snapshot).expect("meta").permissions();
                #[allow(clippy::permissions_set_readonly_false)]
                perms.set_readonly(false);
                std::fs::set_permissions(&snapshot, perms).expect("chmod");
            }
            std::fs::write(&snapshot, b"[9, 9, 9]").expect("damage");
            let recorder = Arc::new(Recorder::default());
            let store = plain
                .clone()
                .with_durable(Durable::with_hook(recorder.clone()));
            store
                .publish_bytes(payload.as_bytes(), &PublishOptions::default().raw(raw))
                .expect("repair");
            let log = recorder.log();
            let synced = at_in(
                &log,
                |r| matches!(r, Rec::SyncFile(p) if p.starts_with(&tmp)),
            );
            let renamed = at_in(&log, |r| matches!(r, Rec::Rename(_, to) if *to == snapshot));
            assert!(
                synced.zip(renamed).is_some_and(|(s, r)| s < r),
                "raw {raw}: {log:?}"
            );
            assert_eq!(plain.read_current().expect("read").data, payload.as_bytes());
        }
    }

    fn at_in(
        log: &[crate::crash_sim::Rec],
        want: impl Fn(&crate::crash_sim::Rec) -> bool,
    ) -> Option<usize> {
        log.iter().position(want)
    }

    /// Fails the operations `pick` selects, once each, recording all.
    struct Faults {
        pick: Box<dyn Fn(&Op<'_>) -> bool + Send + Sync>,
        fired: Mutex<usize>,
        limit: usize,
    }

    impl FsHook for Faults {
        fn before(&self, op: &Op<'_>) -> io::Result<()> {
            let mut fired = self.fired.lock().expect("lock");
            if *fired < self.limit && (self.pick)(op) {
                *fired += 1;
                return Err(io::Error::other(format!("injected failure: {op:?}")));
            }
            Ok(())
        }
    }

    fn hooked(
        store: &Store,
        limit: usize,
        pick: impl Fn(&Op<'_>) -> bool + Send + Sync + 'static,
    ) -> Store {
        store
            .clone()
            .with_durable(Durable::with_hook(Arc::new(Faults {
                pick: Box::new(pick),
                fired: Mutex::new(0),
                limit,
            })))
    }

    #[test]
    fn after_a_failure_past_the_commit_the_handle_reads_the_pointer_again() {
        let (_dir, plain) = store();
        plain
            .publish_bytes(b"[1]", &PublishOptions::default())
            .expect("publish");
        let root = plain.root().to_path_buf();
        // The pointer rename lands, then the root's fsync fails once.
        let store = hooked(
            &plain,
            1,
            move |op| matches!(op, Op::SyncDir(d) if *d == root),
        );
        let mut writer = store.lock_writer().expect("lock");
        let err = writer
            .publish_bytes(b"[2]", &PublishOptions::default())
            .expect_err("the fsync failed");
        assert!(matches!(err, Error::Io { .. }), "{err}");
        // Generation 2 is on disk; a handle that trusted its old copy would
        // hand out number 2 a second time.
        let next = writer
            .publish_bytes(b"[3]", &PublishOptions::default())
            .expect("publish");
        assert_eq!(next.generation, 3);
        drop(writer);
        let numbers: Vec<u64> = plain
            .history()
            .expect("history")
            .iter()
            .map(|e| e.generation)
            .collect();
        assert_eq!(numbers, vec![1, 2, 3]);
    }

    #[test]
    fn a_clear_that_fails_leaves_the_old_state_or_nothing_published() {
        // Every removal in turn fails: before the pointer is gone the store
        // reads as before; after, it reads as "nothing published". Never a
        // pointer naming a snapshot that is gone.
        for fail_at in 0..4 {
            let (_dir, plain) = store();
            plain
                .publish_bytes(b"[1]", &PublishOptions::default())
                .expect("publish");
            plain
                .publish_bytes(b"[2]", &PublishOptions::default())
                .expect("publish");
            let seen = Arc::new(Mutex::new(0usize));
            let counter = seen.clone();
            let store = hooked(&plain, 1, move |op| {
                let mut n = counter.lock().expect("lock");
                let removal = matches!(op, Op::Remove(_) | Op::SyncDir(_));
                if removal {
                    *n += 1;
                }
                removal && *n == fail_at + 1
            });
            let result = store.clear();
            match plain.read_current() {
                Ok(s) => {
                    assert!(result.is_err(), "cleared, yet readable");
                    assert_eq!(s.data, b"[2]", "fail_at {fail_at}");
                }
                Err(Error::NoStore { .. }) => {}
                Err(e) => panic!("fail_at {fail_at}: a partial state: {e}"),
            }
            // Clearing again completes it.
            plain.clear().expect("clear again");
            assert!(matches!(plain.read_current(), Err(Error::NoStore { .. })));
            let left = std::fs::read_dir(plain.root().join("snapshots"))
                .expect("list")
                .count();
            assert_eq!(
                left, 0,
                "fail_at {fail_at}: the second clear removed the rest"
            );
        }
    }

    #[test]
    fn publish_json_skips_the_check_of_what_serde_json_wrote_but_not_of_canonical_output() {
        // serde_json's output is well-formed by construction (a serializer
        // error fails the publish instead), so it is not checked again...
        for options in [
            PublishOptions::default(),
            PublishOptions::default().pretty(true),
        ] {
            assert_eq!(json_options(&options).format, PayloadFormat::Raw);
        }
        // ...but the canonical writer is snapcache's own code: still checked.
        let canonical = PublishOptions::default().canonical(true);
        assert_eq!(json_options(&canonical).format, PayloadFormat::Json);
        // And the bytes it publishes are still JSON (the option only skips the check).
        let (_dir, store) = store();
        store
            .publish_json(
                &serde_json::json!({"packages": [1, 2]}),
                &PublishOptions::default(),
            )
            .expect("publish_json");
        let read = store.read_current().expect("read");
        let value: serde_json::Value = serde_json::from_slice(&read.data).expect("JSON");
        assert_eq!(value["packages"][1], 2);
    }
}
