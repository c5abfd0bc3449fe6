//! The lease object, `<prefix>/lease`: the run-once promise of a refresh
//! across hosts (only one writer fetches at a time).
//!
//! # Protocol
//!
//! - **Acquire**: create the object with `If-None-Match: *`, holding a
//!   [`LeaseBody::Held`] record (a random lease id, the holder: host, pid,
//!   command, since; the lease time). When it exists and is released,
//!   expired or held by a dead process on this host, replace it with
//!   `If-Match: <the ETag read>`: among writers racing for it exactly one
//!   put succeeds.
//! - **Expiry by the server's clock**: a lease is expired when the server's
//!   `Date` is more than the lease time (plus one second, the grain of
//!   `Last-Modified`) past the object's `Last-Modified`, both set by the
//!   server: no host's wall clock is trusted. A server that sends neither
//!   is judged by this host's monotonic clock instead: the same ETag seen
//!   unchanged for longer than that.
//! - **Renew**: a background thread rewrites the record with `If-Match`
//!   every third of the lease time. A renewal that gets 412 means the lease
//!   expired and was taken over: the holder is told ([`LeaseHold::lost`]).
//! - **Release**: the holder writes a [`LeaseBody::Released`] record with
//!   `If-Match` on its last ETag: never an unconditional delete, which could
//!   remove the lease of a writer that took over.
//!
//! The lease is not the fence: the pointer's conditional put is (see
//! [`super::pointer_object`]). A holder stalled past its lease that resumes
//! cannot overwrite a newer pointer; it only loses the run-once promise.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

use super::s3::{ETag, Object, PutOutcome, S3Client};
use crate::error::{Error, Result};
use crate::layout::OBJECT_LEASE;
use crate::lock::{AcquireOptions, Backend, HolderInfo, LeaseView, LockState, Wait, WaitStarted};
use crate::time::Timestamp;

/// The grain of `Last-Modified` and `Date` (whole seconds): ages judged
/// with them are off by up to this much.
const SERVER_CLOCK_GRAIN: Duration = Duration::from_secs(1);
/// The most bytes of a lease object read (a record is a few hundred).
const MAX_LEASE_BYTES: u64 = 16 * 1024;
/// Polling a remote lease: from 50 ms, doubling to 500 ms (each look is a
/// request; a local lock polls at 1-2 ms).
const POLL_FIRST: Duration = Duration::from_millis(50);
/// The least time a look's read of the lease gets, whatever is left of the
/// lock budget.
const LOOK_READ_FLOOR: Duration = Duration::from_secs(2);
const POLL_MAX: Duration = Duration::from_millis(500);

/// The content of the lease object.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub(crate) enum LeaseBody {
    /// Somebody holds it.
    Held {
        lease_id: String,
        holder: HolderInfo,
        /// The lease time the holder renews within, in milliseconds.
        ttl_ms: u64,
    },
    /// Its last holder let it go.
    Released {
        lease_id: String,
        released_at: Timestamp,
    },
}

impl LeaseBody {
    fn encode(&self) -> Vec<u8> {
        // Plain strings, numbers and timestamps: serializing cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    fn decode(bytes: &[u8]) -> Option<LeaseBody> {
        serde_json::from_slice(bytes).ok()
    }
}

/// What one look at the lease found.
enum Look {
    /// Ours now, with this ETag.
    Got(ETag),
    /// Held by someone else (who, when the record says).
    Busy(Option<HolderInfo>),
}

/// A held lease: renewed in the background, released on drop.
pub(crate) struct LeaseHold {
    client: Arc<S3Client>,
    lease_id: String,
    shared: Arc<Shared>,
    renewer: Option<JoinHandle<()>>,
    /// The client's count of writes without an answer when this lease was
    /// taken: one more by the drop means a write of this hold may still
    /// land (the count is the client's, shared by every handle of a store,
    /// so a hold compares against its own start).
    unsettled_at_start: u64,
}

/// How long a drop waits for the renewer to end before it lets it go (a
/// renewal in flight ends with its answer or the request timeout; its late
/// landing is harmless, since its condition then fails).
const RENEWER_JOIN_WAIT: Duration = Duration::from_secs(2);

struct Shared {
    etag: Mutex<ETag>,
    stop: AtomicBool,
    lost: AtomicBool,
}

impl std::fmt::Debug for LeaseHold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseHold")
            .field("lease_id", &self.lease_id)
            .field("lost", &self.lost())
            .finish_non_exhaustive()
    }
}

impl LeaseHold {
    /// True once a renewal found the lease taken over (it expired while
    /// this holder stalled).
    pub(crate) fn lost(&self) -> bool {
        self.shared.lost.load(Ordering::Relaxed)
    }
}

impl Drop for LeaseHold {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(renewer) = self.renewer.take() {
            renewer.thread().unpark();
            let until = Instant::now() + RENEWER_JOIN_WAIT;
            while !renewer.is_finished() && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(10));
            }
            if renewer.is_finished() {
                let _ = renewer.join();
            } else {
                tracing::debug!(lease_id = %self.lease_id, "a lease renewal is still waiting for its answer; not waited for");
            }
        }
        if self.lost() {
            return;
        }
        // A write of this process got no answer and may still land: left
        // to expire, so that no writer takes over at once and then has it
        // land under it (a late delete of a snapshot it had just
        // committed).
        if self.client.unsettled_writes() > self.unsettled_at_start {
            tracing::warn!(lease_id = %self.lease_id, "a write got no answer: the object-store lease is left to expire instead of being released");
            return;
        }
        let Ok(etag) = self.shared.etag.lock().map(|e| e.clone()) else {
            return;
        };
        let released = LeaseBody::Released {
            lease_id: self.lease_id.clone(),
            released_at: Timestamp::now(),
        };
        // Conditional: after an expiry the lease may be someone else's, and
        // so a release given up on (Ctrl-C) that lands late changes
        // nothing: its condition fails then.
        match self
            .client
            .put_if_match_briefly(OBJECT_LEASE, &released.encode(), &etag)
        {
            Ok(PutOutcome::Written(_)) => {
                tracing::debug!(lease_id = %self.lease_id, "object-store lease released")
            }
            Ok(other) => {
                tracing::info!(lease_id = %self.lease_id, outcome = ?other, "the object-store lease was no longer ours to release")
            }
            Err(e) => {
                tracing::warn!(lease_id = %self.lease_id, error = %e, "could not release the object-store lease; it expires on its own")
            }
        }
    }
}

/// Takes the lease of the store at `client`'s location, waiting per
/// `options` (the same budget, observer and cancel flag as a local lock).
pub(crate) fn acquire(
    client: &Arc<S3Client>,
    url: &str,
    options: &AcquireOptions<'_>,
) -> Result<(LeaseHold, std::time::Duration)> {
    let mut wait = Wait::start(options.budget.wait.budget(), POLL_FIRST, POLL_MAX);
    let lease_id = random_id();
    let ttl = options.lease_ttl;
    let me = HolderInfo::this_process(options.purpose, Backend::ObjectStore);
    let body = LeaseBody::Held {
        lease_id: lease_id.clone(),
        holder: me,
        ttl_ms: u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX),
    }
    .encode();
    let mut seen: Option<(ETag, Instant)> = None;
    loop {
        // The read of a look ends with the lock budget (but has at least
        // LOOK_READ_FLOOR, so that a budget of 0, "try once", still gets one
        // whole try): a server that does not answer must not keep a waiter
        // a request timeout past its budget.
        let by = wait
            .remaining()
            .map(|left| Instant::now() + left.max(LOOK_READ_FLOOR));
        let holder = match look(client, &lease_id, &body, ttl, &mut seen, by)? {
            Look::Got(etag) => {
                let waited = wait.elapsed();
                tracing::info!(backend = "object-store", waited_ms = waited.as_millis() as u64, url = %url, "lock_acquired");
                if let Some(o) = options.observer {
                    o.acquired(waited, Backend::ObjectStore, wait.contended());
                }
                let hold = start_renewing(client, lease_id, body, etag, ttl);
                return Ok((hold, waited));
            }
            Look::Busy(holder) => holder,
        };
        let elapsed = wait.elapsed();
        if wait.deadline_passed() {
            tracing::warn!(waited_ms = elapsed.as_millis() as u64, holder_pid = holder.as_ref().map(|h| h.pid), url = %url, "lock_timeout");
            if let Some(o) = options.observer {
                o.timed_out(elapsed);
            }
            return Err(Error::LockTimeout {
                path: lease_url(url).into(),
                waited: elapsed,
                budget: options.budget.wait.budget().unwrap_or_default(),
                budget_source: options.budget.source.clone(),
                holder: holder.map(Box::new),
                // The server's clock judges this lease: no holder's clock to doubt.
                lease: None,
            });
        }
        if options.cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
            return Err(Error::Interrupted {
                during: "waiting for the writer lock",
            });
        }
        if wait.contention_begins(elapsed) {
            tracing::info!(holder_pid = holder.as_ref().map(|h| h.pid), holder_host = holder.as_ref().map(|h| h.host.as_str()), budget = %options.budget, backend = "object-store", "lock_contended");
            if let Some(o) = options.observer {
                o.wait_started(&WaitStarted {
                    lock_path: lease_url(url).into(),
                    holder,
                    budget: options.budget.clone(),
                });
            }
        } else {
            wait.report_progress(elapsed, options.observer);
        }
        wait.back_off();
    }
}

/// The URL of the lease object, for messages.
fn lease_url(url: &str) -> String {
    format!("{url}{OBJECT_LEASE}")
}

/// One attempt: create the lease, or take over one that is free.
fn look(
    client: &S3Client,
    lease_id: &str,
    body: &[u8],
    ttl: Duration,
    seen: &mut Option<(ETag, Instant)>,
    by: Option<Instant>,
) -> Result<Look> {
    let Some(object) = client.get_at_most_by(OBJECT_LEASE, MAX_LEASE_BYTES, by)? else {
        return match client.put_if_absent(OBJECT_LEASE, body)? {
            PutOutcome::Written(etag) => Ok(Look::Got(etag)),
            PutOutcome::ConditionFailed => Ok(Look::Busy(None)),
            PutOutcome::Indeterminate { .. } => is_ours(client, lease_id),
        };
    };
    let (free, holder, why) = match LeaseBody::decode(&object.data) {
        Some(LeaseBody::Released { .. }) => (true, None, "released"),
        Some(LeaseBody::Held { holder, ttl_ms, .. }) => {
            let theirs = recorded_lease_time(ttl_ms);
            if holder.is_dead_local_process() {
                (
                    true,
                    Some(holder),
                    "its holder is a dead process on this host",
                )
            } else if expired(&object, theirs, seen) {
                (true, Some(holder), "expired (by the server's clock)")
            } else {
                (false, Some(holder), "")
            }
        }
        // Not a record of ours (damaged, or from a newer release): taken
        // over once it is one of our lease times old.
        None if expired(&object, ttl, seen) => (true, None, "unreadable and old"),
        None => (false, None, ""),
    };
    if !free {
        return Ok(Look::Busy(holder));
    }
    match client.put_if_match(OBJECT_LEASE, body, &object.etag)? {
        PutOutcome::Written(etag) => {
            if why != "released" {
                tracing::warn!(
                    old_holder = holder.as_ref().map(|h| h.describe()),
                    why,
                    "lock_takeover"
                );
            }
            Ok(Look::Got(etag))
        }
        PutOutcome::ConditionFailed => Ok(Look::Busy(holder)),
        PutOutcome::Indeterminate { .. } => is_ours(client, lease_id),
    }
}

/// After a put whose outcome is unknown: the lease is ours if it carries
/// our id.
fn is_ours(client: &S3Client, lease_id: &str) -> Result<Look> {
    // Never given up on: a lease that landed and is not known to be ours
    // would never be released.
    let Some(object) = client.get_to_settle(OBJECT_LEASE, MAX_LEASE_BYTES)? else {
        return Ok(Look::Busy(None));
    };
    Ok(match LeaseBody::decode(&object.data) {
        Some(LeaseBody::Held {
            lease_id: id,
            holder,
            ..
        }) => {
            if id == lease_id {
                Look::Got(object.etag)
            } else {
                Look::Busy(Some(holder))
            }
        }
        _ => Look::Busy(None),
    })
}

/// Whether `object` was last written more than `ttl` ago, by the server's
/// clock (its `Date` against the object's `Last-Modified`); without those
/// headers, whether this host has seen the same ETag for longer than `ttl`.
fn expired(object: &Object, ttl: Duration, seen: &mut Option<(ETag, Instant)>) -> bool {
    let limit = ttl.saturating_add(SERVER_CLOCK_GRAIN);
    if let (Some(modified), Some(now)) = (object.last_modified, object.server_date) {
        return now.duration_since(modified).is_ok_and(|age| age > limit);
    }
    match seen {
        Some((etag, since)) if *etag == object.etag => since.elapsed() > limit,
        _ => {
            *seen = Some((object.etag.clone(), Instant::now()));
            false
        }
    }
}

/// Who holds the lease right now, for `status`; never waits.
pub(crate) fn probe(client: &S3Client, url: &str) -> Result<(LockState, Option<LeaseView>)> {
    let Some(object) = client.get_at_most(OBJECT_LEASE, MAX_LEASE_BYTES)? else {
        return Ok((LockState::Free, None));
    };
    let age = match (object.last_modified, object.server_date) {
        (Some(modified), Some(now)) => now.duration_since(modified).ok(),
        _ => None,
    };
    Ok(match LeaseBody::decode(&object.data) {
        Some(LeaseBody::Released { .. }) => (LockState::Free, None),
        Some(LeaseBody::Held { holder, ttl_ms, .. }) => {
            let lease_time = recorded_lease_time(ttl_ms);
            let limit = lease_time.saturating_add(SERVER_CLOCK_GRAIN);
            if age.is_some_and(|a| a > limit) || holder.is_dead_local_process() {
                (LockState::Free, None)
            } else {
                // The server's clock judges this lease: its age by that
                // clock, counted back from ours, is when it was renewed.
                let renewed_at = age
                    .and_then(|a| SystemTime::now().checked_sub(a))
                    .map(Timestamp::from);
                let view = LeaseView {
                    path: lease_url(url).into(),
                    lease_time,
                    renewed_at,
                    expires_at: None,
                };
                (LockState::Held(Some(holder)), Some(view))
            }
        }
        None => (
            LockState::UnreadableLease {
                path: lease_url(url).into(),
                age,
                takeover_after: crate::lock::DEFAULT_LEASE_TTL,
            },
            None,
        ),
    })
}

/// Starts the renewer: every third of the lease time, the record is
/// rewritten with `If-Match` on the last ETag.
fn start_renewing(
    client: &Arc<S3Client>,
    lease_id: String,
    body: Vec<u8>,
    etag: ETag,
    ttl: Duration,
) -> LeaseHold {
    let shared = Arc::new(Shared {
        etag: Mutex::new(etag),
        stop: AtomicBool::new(false),
        lost: AtomicBool::new(false),
    });
    let every = ttl / 3;
    let renewer = {
        let client = Arc::clone(client);
        let shared = Arc::clone(&shared);
        let lease_id = lease_id.clone();
        std::thread::Builder::new()
            .name("snapcache-object-lease".into())
            .spawn(move || renew_loop(&client, &shared, &lease_id, &body, every))
            .map_err(|e| tracing::warn!(error = %e, "could not start the lease renewer; the lease expires after one lease time"))
            .ok()
    };
    LeaseHold {
        client: Arc::clone(client),
        lease_id,
        shared,
        renewer,
        unsettled_at_start: client.unsettled_writes(),
    }
}

fn renew_loop(client: &S3Client, shared: &Shared, lease_id: &str, body: &[u8], every: Duration) {
    let mut next = Instant::now() + every;
    loop {
        while Instant::now() < next {
            if shared.stop.load(Ordering::Relaxed) {
                return;
            }
            std::thread::park_timeout(next.saturating_duration_since(Instant::now()));
        }
        if shared.stop.load(Ordering::Relaxed) {
            return;
        }
        next = Instant::now() + every;
        let Ok(etag) = shared.etag.lock().map(|e| e.clone()) else {
            return;
        };
        // Never given up on for a signal: after Ctrl-C this process may still
        // wait for a write it sent (a delete), and the lease must stay held
        // until that has its answer, or another writer takes over and the
        // delete lands under it (found by a review). The drop does not wait
        // long for a renewal in flight.
        let outcome = match client.put_if_match(OBJECT_LEASE, body, &etag) {
            Ok(PutOutcome::Written(new)) => Some(new),
            Ok(PutOutcome::ConditionFailed) => None,
            Ok(PutOutcome::Indeterminate { .. }) => match is_ours(client, lease_id) {
                Ok(Look::Got(new)) => Some(new),
                Ok(Look::Busy(_)) => None,
                Err(e) => {
                    tracing::warn!(error = %e, "could not renew the object-store lease; retrying");
                    continue;
                }
            },
            Err(e) => {
                tracing::warn!(error = %e, "could not renew the object-store lease; retrying");
                continue;
            }
        };
        match outcome {
            Some(new) => {
                if let Ok(mut slot) = shared.etag.lock() {
                    *slot = new;
                }
            }
            None => {
                shared.lost.store(true, Ordering::Relaxed);
                tracing::warn!(
                    lease_id,
                    "the object-store lease was taken over (it expired while this writer stalled); the pointer's conditional put still fences this writer"
                );
                return;
            }
        }
    }
}

/// A lease id no other writer picks.
fn random_id() -> String {
    let mut hasher = blake3::Hasher::new();
    hasher.update(&std::process::id().to_le_bytes());
    hasher.update(format!("{:?}", SystemTime::now()).as_bytes());
    hasher.update(format!("{:?}", std::thread::current().id()).as_bytes());
    if let Ok(t) = tempfile::Builder::new().rand_bytes(16).tempfile() {
        hasher.update(t.path().as_os_str().as_encoded_bytes());
    }
    hasher.finalize().to_hex()[..32].to_string()
}

/// The lease time a lease record states, held to what any writer can set
/// (300 ms to a day, as a local lease): a record from anyone who can
/// write the bucket claiming `u64::MAX` ms would otherwise lock every
/// writer out for ever.
fn recorded_lease_time(ttl_ms: u64) -> Duration {
    Duration::from_millis(ttl_ms).clamp(crate::lock::MIN_LEASE_TTL, crate::lock::MAX_LEASE_TTL)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recorded_lease_time_is_held_to_what_a_writer_can_set() {
        assert_eq!(recorded_lease_time(u64::MAX), crate::lock::MAX_LEASE_TTL);
        assert_eq!(recorded_lease_time(0), crate::lock::MIN_LEASE_TTL);
        assert_eq!(recorded_lease_time(30_000), Duration::from_secs(30));
    }

    fn object(modified: u64, date: u64) -> Object {
        let at = |s| Some(SystemTime::UNIX_EPOCH + Duration::from_secs(s));
        Object {
            data: Vec::new(),
            etag: ETag::new("e1"),
            last_modified: at(modified),
            server_date: at(date),
        }
    }

    #[test]
    fn expiry_is_judged_by_the_server_clock_with_a_grain_of_margin() {
        let ttl = Duration::from_secs(30);
        let mut seen = None;
        assert!(
            !expired(&object(1000, 1031), ttl, &mut seen),
            "within ttl + grain"
        );
        assert!(expired(&object(1000, 1032), ttl, &mut seen));
        // A server date before the write (impossible) is not expiry.
        assert!(!expired(&object(1000, 900), ttl, &mut seen));
    }

    #[test]
    fn without_server_dates_the_same_etag_must_stay_unchanged_for_a_lease_time() {
        let mut o = object(0, 0);
        o.last_modified = None;
        let mut seen = None;
        let ttl = Duration::from_millis(1);
        assert!(!expired(&o, ttl, &mut seen), "first sight starts the clock");
        std::thread::sleep(SERVER_CLOCK_GRAIN + Duration::from_millis(20));
        assert!(expired(&o, ttl, &mut seen));
        o.etag = ETag::new("e2");
        assert!(!expired(&o, ttl, &mut seen), "a renewal restarts it");
    }

    #[test]
    fn records_round_trip_and_foreign_bytes_are_unreadable() {
        let held = LeaseBody::Held {
            lease_id: "id".into(),
            holder: HolderInfo::this_process("test", Backend::ObjectStore),
            ttl_ms: 30_000,
        };
        assert!(matches!(
            LeaseBody::decode(&held.encode()),
            Some(LeaseBody::Held { ttl_ms: 30_000, .. })
        ));
        assert!(LeaseBody::decode(b"not a lease").is_none());
        assert_ne!(random_id(), random_id());
    }
}
