//! What a status report shows of a live lease: its lease time, its last
//! renewal and the expiry its holder wrote.
//!
//! A waiting writer judges a lease by more than one clock (design.md,
//! *Lease*): the expiry its holder wrote, the file's modification time, and
//! how long the waiter itself has seen it unchanged. `status` never waits,
//! so it can only report the first two. When either lies in the future by
//! this machine's clock, the report says so, and that a waiting writer
//! still takes the lease over once it has seen it go unrenewed for its
//! lease time.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::time::{CLOCK_SKEW_TOLERANCE, Timestamp};

/// A live lease as `status` sees it, beside [`LockState`](crate::LockState)'s
/// holder.
///
/// ```
/// # fn main() -> snapcache::Result<()> {
/// use snapcache::{Store, StoreOptions};
/// let dir = tempfile::tempdir().map_err(|e| snapcache::Error::InvalidOption(e.to_string()))?;
/// let store = Store::open(StoreOptions::new(dir.path()))?;
/// // Nobody holds the store, so there is no lease to show.
/// assert!(store.status()?.lease.is_none());
/// # Ok(()) }
/// ```
///
/// Serialized (`serde`) with the field names below; durations as serde's
/// `{"secs", "nanos"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct LeaseView {
    /// The lease file (the lease object's URL on an object store).
    pub path: PathBuf,
    /// How long the lease may go unrenewed while its holder lives; its
    /// holder renews it every third of that. A lease of the earlier
    /// release names none and is judged by the longest there is, a day.
    pub lease_time: Duration,
    /// When it was last renewed: the file's modification time (on an object
    /// store, the object's age by the server's clock, counted back from
    /// this machine's). `None` when unknown.
    pub renewed_at: Option<Timestamp>,
    /// When it expires by its holder's clock; `None` on an object store,
    /// whose leases are judged by the server's clock alone.
    pub expires_at: Option<Timestamp>,
}

impl LeaseView {
    /// How far its expiry lies beyond one lease time from now, when that is
    /// more than [`CLOCK_SKEW_TOLERANCE`]: its holder's clock runs ahead of
    /// this machine's by at least that much, or the lease was written by
    /// hand. Waiting writers then go by its renewals instead.
    ///
    /// ```
    /// use snapcache::LeaseView;
    /// # fn check(view: &LeaseView) {
    /// if let Some(ahead) = view.expiry_ahead_by() {
    ///     eprintln!("the lease holder's clock runs {} s ahead", ahead.as_secs());
    /// }
    /// # }
    /// ```
    pub fn expiry_ahead_by(&self) -> Option<Duration> {
        let expires = self.expires_at?.system_time();
        let left = expires.duration_since(SystemTime::now()).ok()?;
        let beyond = left.checked_sub(self.lease_time)?;
        (beyond > CLOCK_SKEW_TOLERANCE).then_some(beyond)
    }

    /// True when its last renewal lies more than [`CLOCK_SKEW_TOLERANCE`]
    /// ahead of this machine's clock (a file server's clock ahead, or a
    /// `touch`): its age cannot be known here.
    ///
    /// ```
    /// # fn check(view: &snapcache::LeaseView) {
    /// let age = view.renewed_at.and_then(|t| t.known_age());
    /// assert_eq!(age.is_none() && view.renewed_at.is_some(), view.renewed_in_future());
    /// # }
    /// ```
    pub fn renewed_in_future(&self) -> bool {
        self.renewed_at.is_some_and(|t| t.in_future())
    }

    /// Whether waiting writers judge this lease by its renewals alone,
    /// because no time it carries can be trusted: its expiry or its last
    /// renewal lies in the future beyond the tolerance.
    ///
    /// ```
    /// # fn main() -> snapcache::Result<()> {
    /// # let dir = tempfile::tempdir().map_err(|e| snapcache::Error::InvalidOption(e.to_string()))?;
    /// # let store = snapcache::Store::open(snapcache::StoreOptions::new(dir.path()))?;
    /// if let Some(lease) = store.status()?.lease {
    ///     if lease.clocks_disagree() {
    ///         eprintln!("a writer takes the lease over once it goes unrenewed for {:?}", lease.lease_time);
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    pub fn clocks_disagree(&self) -> bool {
        self.expiry_ahead_by().is_some() || self.renewed_in_future()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(expires_in: Option<Duration>, renewed: SystemTime) -> LeaseView {
        LeaseView {
            path: PathBuf::from("lease"),
            lease_time: Duration::from_secs(30),
            renewed_at: Some(Timestamp::from(renewed)),
            expires_at: expires_in.map(|d| Timestamp::from(SystemTime::now() + d)),
        }
    }

    #[test]
    fn an_expiry_within_a_lease_time_and_the_tolerance_is_not_ahead() {
        let now = SystemTime::now();
        for secs in [0, 30, 89] {
            let v = view(Some(Duration::from_secs(secs)), now);
            assert_eq!(v.expiry_ahead_by(), None, "{secs} s");
            assert!(!v.clocks_disagree(), "{secs} s");
        }
        // An expired lease (a writer takes it over anyway) is not ahead.
        let mut v = view(None, now);
        v.expires_at = Some(Timestamp::from(now - Duration::from_secs(5)));
        assert_eq!(v.expiry_ahead_by(), None);
        assert_eq!(view(None, now).expiry_ahead_by(), None, "object store");
    }

    #[test]
    fn a_far_expiry_or_a_future_renewal_is_reported() {
        let now = SystemTime::now();
        let day = Duration::from_secs(86_400);
        let ahead = view(Some(day), now).expiry_ahead_by().unwrap();
        assert!(
            ahead > day - Duration::from_secs(31) && ahead <= day - Duration::from_secs(30),
            "{ahead:?}"
        );
        let v = view(
            Some(Duration::from_secs(20)),
            now + Duration::from_secs(3600),
        );
        assert!(v.renewed_in_future() && v.clocks_disagree());
        let v = view(Some(Duration::from_secs(20)), now + Duration::from_secs(30));
        assert!(!v.renewed_in_future(), "within the tolerance");
    }
}
