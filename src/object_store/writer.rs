//! The writer handle's operations on a store on an object store: publish,
//! rollback, forget, gc and clear, each committed with a conditional put of
//! the pointer and, on a conflict, decided again on the newer pointer.
//!
//! # Conflicts
//!
//! The lease keeps writers apart in the common case; the conditional put of
//! the pointer is what makes that safe when it does not (a holder stalled
//! past its lease, a lease taken over from a host whose clock or network
//! hiccupped). A put that finds a newer pointer (412, or a server error
//! after which the pointer is not ours) writes nothing. The writer reads the
//! newer pointer and:
//! - a publish whose content is already current there reports *unchanged*
//!   (another writer just published the same content, so the refresh is
//!   done); one the newer pointer makes fresh enough for its `max_age`
//!   reports *skipped*; any other publish is rebased: its generation is the
//!   newer pointer's last generation + 1, retention is applied to the newer
//!   pointer's list, and the put is tried again;
//! - rollback, forget and gc apply their change again to the newer pointer
//!   (a rollback target or a forgotten number no longer retained is an
//!   error, as it would have been on a fresh start).
//!
//! Retries stop when the lock budget runs out ([`Error::ObjectStoreConflict`]).
//! Generation numbers stay unique and increasing: each is the last one of
//! the pointer it replaces + 1, and only one put can replace each pointer.

use std::io::Read;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::pointer_object::{self, Put};
use super::remote::ObjectStore;
use super::s3::ETag;
use super::snapshot_object;
use crate::durable::RenameStats;
use crate::error::{Error, Result};
use crate::lock::{AcquireOptions, BackendChoice, WriterLock};
use crate::pointer::{self, Generation, MAX_KEEP, Pointer};
use crate::store::{GcOptions, GcReport, PublishOptions, PublishOutcome, RollbackOutcome, Store};
use crate::sweep::LeftoverKind;
use crate::time::Timestamp;
use crate::writer::{ClearReport, ForgetReport, Staged, Take, Writer};

/// What a writer handle on an object store keeps besides the pointer.
pub(crate) struct ObjectState {
    pub store: Arc<ObjectStore>,
    /// The ETag of the pointer this handle last read or committed (`None`:
    /// there was none, the next commit creates it).
    pub etag: Option<ETag>,
    /// The `max_age` of the `Store` publish this handle serves: a conflict
    /// with a pointer that fresh ends the publish as skipped.
    pub max_age: Option<Duration>,
}

/// Takes the lease and reads the pointer. Without `how.create`, a prefix
/// with no pointer and no snapshot objects is [`Error::NoStore`] and gets
/// no lease object (a mistyped URL is not made a store).
pub(crate) fn take_writer<'s>(
    store: &'s Store,
    object: &Arc<ObjectStore>,
    how: Take,
) -> Result<Writer<'s>> {
    let options = store.options();
    if !how.create
        && object.load_pointer().ok().flatten().is_none()
        && object
            .client()
            .list(crate::layout::OBJECT_SNAPSHOTS)?
            .is_empty()
    {
        return Err(object.no_store());
    }
    let purpose = options
        .purpose_value()
        .map_or_else(crate::store::command_line, str::to_string);
    let budget = options.lock_budget_value().clone();
    let started = Instant::now();
    let (lease, waited) = super::lease_object::acquire(
        object.client(),
        object.url(),
        &AcquireOptions {
            budget: budget.clone(),
            backend: BackendChoice::Auto,
            lease_ttl: options.lease_ttl_value(),
            observer: options.observer_ref(),
            cancel: options.cancel_flag_ref().map(|c| c.as_ref()),
            purpose: &purpose,
        },
    )?;
    let lock = WriterLock::object_store(
        Some(lease),
        store.layout().clone(),
        waited,
        started,
        budget.wait.budget(),
    );
    let (pointer, etag, reread) = match object.load_pointer() {
        Ok(Some((p, e))) => (Some(p), Some(e), false),
        Ok(None) => (None, None, false),
        Err(e) if e.is_corrupt() => {
            tracing::warn!(error = %e, "the store pointer is damaged: the writer handle can only clear the store");
            (None, None, true)
        }
        Err(e) => return Err(e),
    };
    let writer = Writer {
        store,
        lock,
        pointer,
        reread,
        sweep_due: false,
        object: Some(ObjectState {
            store: Arc::clone(object),
            etag,
            max_age: None,
        }),
    };
    if how.sweep && !reread {
        let scan = object.scan(writer.pointer.as_ref())?;
        object.remove(scan.collectable)?;
    }
    Ok(writer)
}

impl Writer<'_> {
    fn object(&self) -> Result<Arc<ObjectStore>> {
        self.object
            .as_ref()
            .map(|o| Arc::clone(&o.store))
            .ok_or_else(|| Error::InvalidOption("not a store on an object store".into()))
    }

    fn object_etag(&self) -> Option<ETag> {
        self.object.as_ref().and_then(|o| o.etag.clone())
    }

    /// Reads the pointer and its ETag again.
    pub(crate) fn reload_object_pointer(&mut self) -> Result<()> {
        let object = self.object()?;
        let (pointer, etag) = match object.load_pointer()? {
            Some((p, e)) => (Some(p), Some(e)),
            None => (None, None),
        };
        self.pointer = pointer;
        if let Some(state) = self.object.as_mut() {
            state.etag = etag;
        }
        Ok(())
    }

    /// Sets the `max_age` a conflict is judged by (the `Store` wrappers).
    pub(crate) fn set_object_max_age(&mut self, max_age: Option<Duration>) {
        if let Some(state) = self.object.as_mut() {
            state.max_age = max_age;
        }
    }

    /// One conditional put of `next` over the pointer this handle read.
    fn put_pointer(&mut self, object: &ObjectStore, next: &mut Pointer) -> Result<bool> {
        let base = self.object_etag();
        // Checked, as on a local store: an edited pointer at the counter's
        // end wrapped it to 0 (and overflowed in a debug build).
        let commit = self.pointer.as_ref().map_or(0, |p| p.commit);
        next.commit = commit
            .checked_add(1)
            .filter(|n| *n <= crate::layout::MAX_RECORD_NUMBER)
            .ok_or_else(|| Error::CommitsExhausted {
                path: object.pointer_url().into(),
                last: commit,
            })?;
        // The grace of dropped snapshots is measured here; entries past it
        // are forgotten (gc's age rule still guards their objects).
        let grace = object.grace();
        next.dropped.retain(|d| d.dropped_at.age() < grace);
        match pointer_object::put(object.client(), next, base.as_ref(), &object.pointer_url())? {
            Put::Committed(etag) => {
                self.pointer = Some(next.clone());
                if let Some(state) = self.object.as_mut() {
                    state.etag = Some(etag);
                }
                Ok(true)
            }
            Put::Conflict => Ok(false),
        }
    }

    /// After a lost put: reads the newer pointer, or fails when the lock
    /// budget is spent. Waits a little first, more after each loss, so that
    /// writers that keep colliding spread out.
    fn after_conflict(&mut self, object: &ObjectStore, attempts: u32) -> Result<()> {
        self.reload_object_pointer()?;
        let generation = self.pointer.as_ref().map_or(0, |p| p.current);
        tracing::info!(attempts, generation, url = %object.pointer_url(), "commit_conflict: another writer committed first; rebasing");
        if self.lock.deadline().is_some_and(|d| Instant::now() >= d) {
            return Err(Error::ObjectStoreConflict {
                url: object.pointer_url(),
                attempts,
                generation,
                budget: self
                    .store
                    .options()
                    .lock_budget_value()
                    .wait
                    .budget()
                    .unwrap_or_default()
                    .as_secs_f64(),
            });
        }
        if self
            .store
            .options()
            .cancel_flag_ref()
            .is_some_and(|c| c.load(std::sync::atomic::Ordering::Relaxed))
        {
            return Err(Error::Interrupted {
                during: "committing to the object store",
            });
        }
        let spread = Duration::from_millis(u64::from(attempts.min(10)) * 20 + jitter_ms());
        let sleep =
            crate::durable::remaining(self.lock.deadline()).map_or(spread, |left| left.min(spread));
        std::thread::sleep(sleep);
        Ok(())
    }

    /// Applies `change` to the pointer and commits it; on a conflict, again
    /// on the newer pointer. `change` returns `None` when there is nothing
    /// to write.
    fn commit_change<R>(
        &mut self,
        mut change: impl FnMut(&mut Pointer) -> Result<Option<R>>,
    ) -> Result<Option<R>> {
        let object = self.object()?;
        let mut attempts = 0;
        loop {
            let mut next = self.pointer()?.ok_or_else(|| object.no_store())?;
            let Some(result) = change(&mut next)? else {
                return Ok(None);
            };
            if self.put_pointer(&object, &mut next)? {
                return Ok(Some(result));
            }
            attempts += 1;
            self.after_conflict(&object, attempts)?;
        }
    }

    // ------------------------------------------------------------ publish

    pub(crate) fn publish_object<T>(
        &mut self,
        staged: Staged<T>,
        options: &PublishOptions,
    ) -> Result<(PublishOutcome, T)> {
        let object = self.object()?;
        let Staged {
            temp,
            hash,
            bytes,
            value,
            ..
        } = staged;
        let data = read_staged(&temp, bytes)?;
        drop(temp);
        snapshot_object::upload(object.client(), &hash, &data, object.grace())?;
        // The bytes are kept until the commit: after a conflict the snapshot
        // is uploaded again before the retry (a cheap create-only put when
        // it is still there), because the newer pointer may come from a
        // `clear` that deleted it while this writer was stalled; a rebased
        // pointer must never name a deleted snapshot.
        let max_age = self.object.as_ref().and_then(|o| o.max_age);
        let note = options.note.as_deref().map(pointer::clip_note);
        let mut attempts = 0;
        loop {
            let base = self.pointer()?;
            let now = Timestamp::now();
            let changed = base.as_ref().is_none_or(|p| p.current_entry().hash != hash);
            let mut next = match base {
                Some(mut p) if !changed => {
                    p.checked_at = now;
                    p
                }
                base => {
                    let mut next = base.unwrap_or(Pointer {
                        current: 0,
                        last_generation: 0,
                        checked_at: now,
                        generations: Vec::new(),
                        commit: 0,
                        dropped: Vec::new(),
                    });
                    let generation = next.last_generation.checked_add(1).ok_or_else(|| {
                        Error::GenerationsExhausted {
                            path: object.pointer_url().into(),
                            last: next.last_generation,
                        }
                    })?;
                    next.generations.push(Generation {
                        generation,
                        hash,
                        bytes,
                        created_at: now,
                        note: note.clone(),
                        pinned: false,
                    });
                    next.current = generation;
                    next.last_generation = generation;
                    next.checked_at = now;
                    next.apply_retention(self.store.options().keep_count());
                    next
                }
            };
            if attempts > 0 && changed {
                snapshot_object::upload(object.client(), &hash, &data, object.grace())?;
            }
            if self.put_pointer(&object, &mut next)? {
                drop(data);
                let entry = next.current_entry();
                if changed {
                    tracing::info!(generation = entry.generation, hash = %hash, bytes, attempts, backend = "object-store", "published");
                } else {
                    tracing::info!(generation = entry.generation, hash = %hash, bytes, "refresh unchanged: content equals the current snapshot");
                }
                let outcome = self.outcome(entry, changed, false, RenameStats::default());
                return Ok((outcome, value));
            }
            attempts += 1;
            self.after_conflict(&object, attempts)?;
            // The newer pointer may have made this publish needless.
            if let Some(theirs) = &self.pointer {
                let entry = theirs.current_entry();
                if entry.hash == hash {
                    tracing::info!(generation = entry.generation, hash = %hash, "refresh unchanged: another writer committed this content first");
                    let outcome = self.outcome(entry, false, false, RenameStats::default());
                    return Ok((outcome, value));
                }
                if let Some(age) = max_age.filter(|a| self.is_fresh(*a)) {
                    tracing::info!(
                        generation = entry.generation,
                        max_age_secs = age.as_secs_f64(),
                        "refresh skipped: another writer refreshed first"
                    );
                    let outcome = self.outcome(entry, false, true, RenameStats::default());
                    return Ok((outcome, value));
                }
            }
        }
    }

    // ------------------------------------------------- rollback, gc, clear

    pub(crate) fn rollback_object(&mut self, to: Option<u64>) -> Result<RollbackOutcome> {
        let object = self.object()?;
        let root = self.store.root().to_path_buf();
        let outcome = self.commit_change(|p| {
            let previous = p.current;
            let target = match to {
                Some(n) => p.find(n).cloned().ok_or_else(|| Error::NoSuchGeneration {
                    root: root.clone(),
                    generation: n,
                    available: p.retained_list(),
                })?,
                None => p
                    .generations
                    .iter()
                    .rev()
                    .find(|g| g.generation < previous)
                    .cloned()
                    .ok_or_else(|| Error::NothingToRollBack {
                        root: root.clone(),
                        current: previous,
                    })?,
            };
            object.read_entry(&target)?;
            p.current = target.generation;
            Ok(Some(RollbackOutcome {
                generation: target.generation,
                hash: target.hash,
                previous,
            }))
        })?;
        let outcome = outcome.ok_or_else(|| object.no_store())?;
        tracing::info!(generation = outcome.generation, previous = outcome.previous, hash = %outcome.hash, "rolled back");
        Ok(outcome)
    }

    pub(crate) fn forget_object(&mut self, generations: &[u64]) -> Result<ForgetReport> {
        let object = self.object()?;
        let root = self.store.root().to_path_buf();
        let forgotten = self
            .commit_change(|p| {
                for &n in generations {
                    if n == p.current {
                        return Err(Error::ForgetCurrent {
                            root: root.clone(),
                            generation: n,
                        });
                    }
                    match p.find(n) {
                        None => {
                            return Err(Error::NoSuchGeneration {
                                root: root.clone(),
                                generation: n,
                                available: p.retained_list(),
                            });
                        }
                        Some(g) if g.pinned => {
                            return Err(Error::ForgetPinned {
                                root: root.clone(),
                                generation: n,
                            });
                        }
                        Some(_) => {}
                    }
                }
                let forgotten = p.forget(generations);
                Ok((!forgotten.is_empty()).then_some(forgotten))
            })?
            .unwrap_or_default();
        // Their objects stay for the grace (the `dropped` list); gc deletes
        // them once it has passed and they are old enough.
        let scan = object.scan(self.pointer.as_ref())?;
        let removed = object.remove(
            scan.collectable
                .into_iter()
                .filter(|l| l.kind == LeftoverKind::UnreferencedSnapshot)
                .collect(),
        )?;
        let report = ForgetReport {
            forgotten,
            removed_snapshots: removed.removed.len(),
            freed_bytes: removed.removed.iter().map(|l| l.bytes).sum(),
            not_removed: removed.not_removed,
        };
        tracing::info!(forgotten = ?report.forgotten, removed_snapshots = report.removed_snapshots, bytes = report.freed_bytes, "forgot generations");
        Ok(report)
    }

    /// Sets or clears pin marks (see `Writer::pin`), committed like any
    /// pointer change; `changed` is what this call changed.
    pub(crate) fn set_pinned_object(
        &mut self,
        generations: &[u64],
        pin: bool,
    ) -> Result<(bool, Pointer)> {
        let root = self.store.root().to_path_buf();
        let changed = self.commit_change(|p| {
            if let Some(&n) = generations.iter().find(|&&n| p.find(n).is_none()) {
                return Err(Error::NoSuchGeneration {
                    root: root.clone(),
                    generation: n,
                    available: p.retained_list(),
                });
            }
            let changed = p.set_pinned(generations, pin);
            if pin && p.pinned().len() > pointer::MAX_PINNED {
                let before = p.pinned().len() - changed.len();
                let generation = changed
                    .get(pointer::MAX_PINNED.saturating_sub(before))
                    .copied()
                    .unwrap_or_default();
                return Err(Error::PinLimit {
                    root: root.clone(),
                    generation,
                    limit: pointer::MAX_PINNED,
                });
            }
            Ok((!changed.is_empty()).then_some(()))
        })?;
        let pointer = self.pointer()?.ok_or_else(|| self.store.no_store())?;
        Ok((changed.is_some(), pointer))
    }

    pub(crate) fn gc_object(&mut self, options: &GcOptions) -> Result<GcReport> {
        let object = self.object()?;
        let mut dropped = Vec::new();
        if self.pointer()?.is_some() {
            let change = |p: &mut Pointer| {
                let before: Vec<u64> = p.generations.iter().map(|g| g.generation).collect();
                if let Some(keep) = options.keep {
                    p.apply_retention(keep.clamp(1, MAX_KEEP));
                }
                if let Some(age) = options.older_than {
                    if let Some(cutoff) = std::time::SystemTime::now().checked_sub(age) {
                        p.drop_older_than(cutoff);
                    }
                }
                let gone: Vec<u64> = before
                    .into_iter()
                    .filter(|n| p.find(*n).is_none())
                    .collect();
                Ok(gone)
            };
            if options.dry_run {
                if let Some(mut p) = self.pointer.clone() {
                    dropped = change(&mut p)?;
                }
            } else {
                dropped = self
                    .commit_change(|p| change(p).map(|gone| (!gone.is_empty()).then_some(gone)))?
                    .unwrap_or_default();
            }
        }
        let collectable = object.scan(self.pointer.as_ref())?.collectable;
        let removal = if options.dry_run {
            crate::sweep::Removal {
                removed: collectable,
                not_removed: Vec::new(),
            }
        } else {
            object.remove(collectable)?
        };
        Ok(GcReport::of(
            &removal.removed,
            removal.not_removed,
            dropped,
            options.dry_run,
        ))
    }

    pub(crate) fn clear_object(&mut self) -> Result<ClearReport> {
        let object = self.object()?;
        let (previous, damaged) = match self.pointer() {
            Ok(pointer) => (pointer.map(|p| p.current), false),
            Err(e) if e.is_corrupt() => (None, true),
            Err(e) => return Err(e),
        };
        // The pointer first: from here on every reader sees "nothing
        // published". S3 has no conditional delete; the lease keeps other
        // writers out meanwhile.
        object.client().delete(crate::layout::OBJECT_POINTER)?;
        self.pointer = None;
        self.reread = false;
        if let Some(state) = self.object.as_mut() {
            state.etag = None;
        }
        let removal = object.remove_all_snapshots()?;
        Ok(ClearReport::of(
            previous,
            damaged,
            &removal.removed,
            removal.not_removed,
        ))
    }
}

/// The staged payload's bytes, for the upload: the one copy in memory a
/// publish to an object store holds (the client sends a buffer).
fn read_staged(temp: &crate::durable::TempFile, bytes: u64) -> Result<Vec<u8>> {
    let path = temp.path();
    let mut data = Vec::with_capacity(usize::try_from(bytes).unwrap_or(0));
    std::fs::File::open(path)
        .and_then(|f| f.take(bytes).read_to_end(&mut data))
        .map_err(|e| Error::io("read the staged payload", path, e))?;
    if data.len() as u64 != bytes {
        return Err(Error::io(
            "read the staged payload",
            path,
            std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the temp file is shorter than what was written to it",
            ),
        ));
    }
    Ok(data)
}

/// A few milliseconds of spread between colliding writers.
fn jitter_ms() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    u64::from((nanos ^ std::process::id()) % 20)
}

/// A writer handle that holds no lease: as if every writer's lease had been
/// taken over while it stalled, so writers race straight to the pointer's
/// conditional put (what the fence must survive).
#[cfg(test)]
pub(crate) fn take_unleased<'s>(store: &'s Store) -> Result<Writer<'s>> {
    let object = store
        .object_store()
        .ok_or_else(|| Error::InvalidOption("not an object store".into()))?;
    let (pointer, etag) = match object.load_pointer()? {
        Some((p, e)) => (Some(p), Some(e)),
        None => (None, None),
    };
    Ok(Writer {
        store,
        lock: WriterLock::object_store(
            None,
            store.layout().clone(),
            Duration::ZERO,
            Instant::now(),
            store.options().lock_budget_value().wait.budget(),
        ),
        pointer,
        reread: false,
        sweep_due: false,
        object: Some(ObjectState {
            store: Arc::clone(object),
            etag,
            max_age: None,
        }),
    })
}
