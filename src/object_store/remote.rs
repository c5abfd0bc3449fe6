//! A store on an object store: opening it (with the probe), its reads, and
//! what lies under its prefix (snapshots in use, collectable ones, names
//! that are not snapcache's).

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use super::pointer_object::{self, Read};
use super::s3::{ObjectInfo, S3Client, S3Location, S3Settings};
use super::snapshot_object;
use crate::error::{Error, Result};
use crate::hash::ContentHash;
use crate::layout::{OBJECT_LEASE, OBJECT_POINTER, OBJECT_PROBE_DIR, OBJECT_SNAPSHOTS};
use crate::pointer::{Generation, Pointer};
use crate::store::{HistoryEntry, Problem, VerifyReport};
use crate::sweep::{ForeignEntry, InGrace, Leftover, LeftoverKind};
use crate::time::Timestamp;

/// How often a reader re-reads the pointer when a snapshot vanished under
/// it (a gc elsewhere, after a newer pointer landed).
const READ_ATTEMPTS: usize = 5;

/// An open store on an object store: the client (probed) and its URL.
pub(crate) struct ObjectStore {
    client: Arc<S3Client>,
    /// `s3://bucket/prefix/`.
    url: String,
    /// How long an unreferenced snapshot object is kept (see `gc`).
    grace: Duration,
}

impl std::fmt::Debug for ObjectStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectStore")
            .field("url", &self.url)
            .field("grace", &self.grace)
            .finish_non_exhaustive()
    }
}

/// What lies under the prefix, judged against a pointer.
pub(crate) struct Scan {
    /// snapcache's objects that nothing needs any more and that are older
    /// than the grace by the server's clock: what gc deletes.
    pub collectable: Vec<Leftover>,
    /// Unreferenced snapshot objects still within the grace, and when it
    /// ends (by the later of their drop time and their write time).
    pub in_grace: Vec<InGrace>,
    /// Names that are not snapcache's: never deleted.
    pub foreign: Vec<ForeignEntry>,
}

impl ObjectStore {
    /// Opens the store at `url` (`s3://bucket/prefix`): settings from the
    /// `AWS_*` variables, then the conditional-write probe, once per open;
    /// a server that fails it is refused ([`Error::ObjectStoreUnsafe`]).
    pub(crate) fn open(
        url: &str,
        grace: Duration,
        cancel: Option<&Arc<AtomicBool>>,
    ) -> Result<ObjectStore> {
        // A test's shorter grace (SNAPCACHE_TEST_SNAPSHOT_GRACE_SECS), as on
        // the lease backend.
        let grace = crate::test_hooks::snapshot_grace().unwrap_or(grace);
        let location = S3Location::parse(url)?;
        let mut settings = S3Settings::from_env()?;
        if let Some(timeout) = crate::test_hooks::s3_request_timeout() {
            settings = settings.request_timeout(timeout);
        }
        let mut client = S3Client::new(location, settings)?;
        // Before the probe: a server that hangs must not keep Ctrl-C waiting
        // even there.
        if let Some(flag) = cancel {
            client.set_cancel_flag(Arc::clone(flag));
        }
        client.probe_conditional_writes()?;
        Ok(ObjectStore {
            url: client.location().to_string(),
            client: Arc::new(client),
            grace,
        })
    }

    pub(crate) fn client(&self) -> &Arc<S3Client> {
        &self.client
    }

    /// `s3://bucket/prefix/`.
    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// The store's root as `Store::root` shows it: `s3://bucket/prefix`
    /// (no trailing `/`).
    pub(crate) fn root_url(&self) -> &str {
        self.url.strip_suffix('/').unwrap_or(&self.url)
    }

    pub(crate) fn grace(&self) -> Duration {
        self.grace
    }

    /// The `s3://` URL of an object, for messages and reports.
    pub(crate) fn object_url(&self, key: &str) -> String {
        format!("{}{key}", self.url)
    }

    pub(crate) fn pointer_url(&self) -> String {
        self.object_url(OBJECT_POINTER)
    }

    pub(crate) fn snapshot_url(&self, hash: &ContentHash) -> String {
        self.object_url(&crate::layout::object_snapshot(hash))
    }

    pub(crate) fn load_pointer(&self) -> Result<Option<Read>> {
        pointer_object::load(&self.client, &self.pointer_url())
    }

    pub(crate) fn no_store(&self) -> Error {
        Error::NoStore {
            root: self.root_url().into(),
        }
    }

    fn require_pointer(&self) -> Result<Pointer> {
        self.load_pointer()?
            .map(|(p, _)| p)
            .ok_or_else(|| self.no_store())
    }

    /// The verified bytes of a generation's snapshot.
    pub(crate) fn read_entry(&self, entry: &Generation) -> Result<Vec<u8>> {
        snapshot_object::read_verified(&self.client, entry, &self.snapshot_url(&entry.hash))
    }

    /// The entry `pick` chooses and its verified bytes. A snapshot that is
    /// missing while the pointer moved on is looked for again through the
    /// newer pointer, as a local reader does.
    pub(crate) fn read_picked(
        &self,
        pick: &dyn Fn(&Pointer) -> Result<Generation>,
    ) -> Result<(Generation, Timestamp, Vec<u8>)> {
        let mut previous: Option<Pointer> = None;
        let mut last = None;
        for _ in 0..READ_ATTEMPTS {
            let pointer = self.require_pointer()?;
            let entry = pick(&pointer)?;
            match self.read_entry(&entry) {
                Ok(data) => {
                    tracing::debug!(generation = entry.generation, hash = %entry.hash, bytes = entry.bytes, "read snapshot object");
                    return Ok((entry, pointer.checked_at, data));
                }
                Err(e @ Error::MissingSnapshot { .. }) if previous.as_ref() != Some(&pointer) => {
                    last = Some(e);
                    previous = Some(pointer);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| self.no_store()))
    }

    /// The current generation or, when its snapshot is damaged or missing,
    /// the newest other retained one that verifies, with the damage.
    pub(crate) fn read_with_fallback(
        &self,
    ) -> Result<(Generation, Timestamp, Vec<u8>, Option<Error>)> {
        let damage = match self.read_picked(&|p| Ok(p.current_entry().clone())) {
            Ok((g, checked_at, data)) => return Ok((g, checked_at, data, None)),
            Err(e @ (Error::CorruptSnapshot { .. } | Error::MissingSnapshot { .. })) => e,
            Err(other) => return Err(other),
        };
        let pointer = self.require_pointer()?;
        for g in pointer
            .generations
            .iter()
            .rev()
            .filter(|g| g.generation != pointer.current)
        {
            if let Ok(data) = self.read_entry(g) {
                tracing::warn!(served = g.generation, current = pointer.current, error = %damage, "served a fallback generation");
                return Ok((g.clone(), pointer.checked_at, data, Some(damage)));
            }
        }
        Err(damage)
    }

    /// Who holds the lease, for `status`.
    pub(crate) fn lock_state(&self) -> Result<(crate::lock::LockState, Option<crate::LeaseView>)> {
        super::lease_object::probe(&self.client, &self.url)
    }

    /// Retained generations, oldest first.
    pub(crate) fn history(&self) -> Result<Vec<HistoryEntry>> {
        Ok(HistoryEntry::all_of(&self.require_pointer()?))
    }

    /// Checks the pointer and every retained snapshot object; lists what
    /// gc would delete and the names that are not snapcache's.
    pub(crate) fn verify(&self) -> Result<VerifyReport> {
        let mut problems = Vec::new();
        let mut verified = Vec::new();
        let pointer = match self.load_pointer() {
            Ok(Some((p, _))) => Some(p),
            Ok(None) => return Err(self.no_store()),
            Err(e) if e.is_corrupt() => {
                problems.push(Problem {
                    path: self.pointer_url().into(),
                    kind: "pointer".into(),
                    detail: e.to_string(),
                    generation: None,
                });
                None
            }
            Err(e) => return Err(e),
        };
        if let Some(p) = &pointer {
            for g in &p.generations {
                match self.read_entry(g) {
                    Ok(_) => verified.push(g.generation),
                    Err(Error::MissingSnapshot { path, .. }) => problems.push(Problem {
                        path,
                        kind: "missing".into(),
                        detail: "the snapshot object does not exist".into(),
                        generation: Some(g.generation),
                    }),
                    Err(Error::CorruptSnapshot { path, detail, .. }) => {
                        let kind = if detail.contains("hash") {
                            "hash"
                        } else {
                            "length"
                        };
                        problems.push(Problem {
                            path,
                            kind: kind.into(),
                            detail,
                            generation: Some(g.generation),
                        });
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        let scan = self.scan(pointer.as_ref())?;
        Ok(VerifyReport {
            ok: problems.is_empty(),
            verified_generations: verified,
            problems,
            reclaimable: scan.collectable,
            in_grace: scan.in_grace,
            foreign: scan.foreign,
        })
    }

    /// Lists the prefix and sorts it out against `pointer` (`None`: nothing
    /// is published, every snapshot object is unreferenced).
    ///
    /// A snapshot object is collectable when no retained generation names
    /// it, its generation did not leave retention less than the grace ago
    /// (the pointer's `dropped` list), and it was written more than the
    /// grace ago by the server's clock (a writer that just uploaded it, or
    /// a reader on another host still reading it through an older pointer,
    /// is never swept from under). Probe objects left by a crashed open are
    /// collectable by the same age rule. Every other name is foreign.
    pub(crate) fn scan(&self, pointer: Option<&Pointer>) -> Result<Scan> {
        let listed = self.client.list("")?;
        let now = self.client.server_now();
        let referenced: HashSet<ContentHash> = pointer
            .map(|p| {
                let mut hashes: HashSet<ContentHash> =
                    p.generations.iter().map(|g| g.hash).collect();
                hashes.extend(
                    p.dropped
                        .iter()
                        .filter(|d| d.dropped_at.age() < self.grace)
                        .map(|d| d.hash),
                );
                hashes
            })
            .unwrap_or_default();
        let old = |info: &ObjectInfo| match (info.last_modified, now) {
            (Some(modified), Some(now)) => now
                .duration_since(modified)
                .is_ok_and(|age| age > self.grace),
            // Without the server's word on its age, keep it.
            _ => false,
        };
        let mut scan = Scan {
            collectable: Vec::new(),
            in_grace: Vec::new(),
            foreign: Vec::new(),
        };
        let dropped_until = |hash: &ContentHash| {
            pointer.and_then(|p| {
                p.dropped
                    .iter()
                    .filter(|d| d.hash == *hash)
                    .map(|d| d.dropped_at.system_time() + self.grace)
                    .max()
            })
        };
        for info in listed {
            let key = info.key.as_str();
            if key == OBJECT_POINTER || key == OBJECT_LEASE {
                continue;
            }
            let leftover = |kind| Leftover {
                path: self.object_url(key).into(),
                kind,
                bytes: info.size,
            };
            if let Some(hash) = key
                .strip_prefix(OBJECT_SNAPSHOTS)
                .and_then(ContentHash::parse)
            {
                let retained =
                    pointer.is_some_and(|p| p.generations.iter().any(|g| g.hash == hash));
                // Without a pointer (deleted, or moved aside as the advice
                // for a damaged one says) no snapshot can be proven
                // unreferenced: the pointer kept aside may name any of
                // them. Like a local store's sweep, keep them all.
                if retained || pointer.is_none() {
                    continue;
                }
                if !referenced.contains(&hash) && old(&info) {
                    scan.collectable
                        .push(leftover(LeftoverKind::UnreferencedSnapshot));
                } else {
                    // The grace ends at the later of its drop and its write
                    // (by the server's clock, read here as this host's
                    // time for the report); unknown: a grace from now.
                    let written_until = match (info.last_modified, now) {
                        (Some(modified), Some(now)) => {
                            let age = now.duration_since(modified).unwrap_or_default();
                            std::time::SystemTime::now() + self.grace.saturating_sub(age)
                        }
                        _ => std::time::SystemTime::now() + self.grace,
                    };
                    let until =
                        dropped_until(&hash).map_or(written_until, |d| d.max(written_until));
                    scan.in_grace.push(InGrace {
                        path: self.object_url(key).into(),
                        bytes: info.size,
                        until: Timestamp::from(until),
                    });
                }
            } else if is_probe_key(key) {
                if old(&info) {
                    scan.collectable.push(leftover(LeftoverKind::TempFile));
                }
            } else {
                scan.foreign.push(ForeignEntry {
                    path: self.object_url(key).into(),
                    what: "object".into(),
                });
            }
        }
        Ok(scan)
    }

    /// Deletes collectable objects by name; one that cannot be deleted is
    /// logged and left. Returns what was deleted, and what was not.
    pub(crate) fn remove(&self, leftovers: Vec<Leftover>) -> Result<crate::sweep::Removal> {
        let mut removed = Vec::new();
        let mut not_removed = Vec::new();
        for leftover in leftovers {
            // A delete is never given up on once sent (a late one could
            // remove what another writer has uploaded since): a cancel
            // stops the deletes between two of them instead.
            if self.client.cancelled() {
                tracing::info!(
                    removed = removed.len(),
                    "deleting unreferenced objects: cancelled"
                );
                return Err(Error::Interrupted {
                    during: super::s3::INTERRUPTED_DELETING,
                });
            }
            let url = leftover.path.to_string_lossy().into_owned();
            let Some(key) = url.strip_prefix(&self.url) else {
                continue;
            };
            match self.client.delete(key) {
                // The flag set between the look above and the send.
                Err(e) if e.is_interrupted() => return Err(e),
                Ok(()) => {
                    tracing::debug!(url = %url, bytes = leftover.bytes, "deleted an unreferenced object");
                    removed.push(leftover);
                }
                Err(e) => {
                    tracing::warn!(url = %url, error = %e, "could not delete an unreferenced object; the next gc tries again");
                    not_removed.push(crate::sweep::NotRemoved {
                        path: leftover.path,
                        error: e.to_string(),
                    });
                }
            }
        }
        Ok(crate::sweep::Removal {
            removed,
            not_removed,
        })
    }

    /// Deletes every snapshot object (and probe leftover), whatever its
    /// age: what `clear` does once the pointer is gone.
    pub(crate) fn remove_all_snapshots(&self) -> Result<crate::sweep::Removal> {
        let mut all = Vec::new();
        for info in self.client.list("")? {
            let kind = if info
                .key
                .strip_prefix(OBJECT_SNAPSHOTS)
                .and_then(ContentHash::parse)
                .is_some()
            {
                LeftoverKind::UnreferencedSnapshot
            } else if is_probe_key(&info.key) {
                LeftoverKind::TempFile
            } else {
                continue;
            };
            all.push(Leftover {
                path: PathBuf::from(self.object_url(&info.key)),
                kind,
                bytes: info.size,
            });
        }
        self.remove(all)
    }
}

/// Whether `key` is a probe object snapcache writes: `.snapcache-probe/`
/// and 32 lowercase hex digits, nothing else. Any other key under that
/// directory (another user's backup, a nested store) is foreign.
fn is_probe_key(key: &str) -> bool {
    key.strip_prefix(OBJECT_PROBE_DIR).is_some_and(|name| {
        name.len() == 32 && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    })
}
