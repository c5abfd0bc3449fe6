//! Timestamps: stored and printed as RFC 3339 UTC with milliseconds.
//!
//! Every timestamp is kept within what RFC 3339 can print (years up to
//! 9999): a system clock or a computed deadline beyond that is clamped, so
//! formatting never fails. Timestamps written by another machine may lie in
//! its future when its clock runs ahead; [`Timestamp::known_age`] treats a
//! time more than [`CLOCK_SKEW_TOLERANCE`] ahead of this machine's clock as
//! an unknown age rather than as "just now".

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How far in the future a recorded time may lie and still count as "now".
///
/// Clocks of machines sharing a store drift a little; a time further ahead
/// than this was written by a clock that runs ahead (or was planted), so its
/// age is unknown: [`Timestamp::known_age`] returns `None` and a refresh with
/// a maximum age runs instead of being skipped.
///
/// ```
/// assert_eq!(snapcache::CLOCK_SKEW_TOLERANCE.as_secs(), 60);
/// ```
pub const CLOCK_SKEW_TOLERANCE: Duration = Duration::from_secs(60);

/// The latest time RFC 3339 can print: 9999-12-31T23:59:59.999Z.
const LATEST_MILLIS: u64 = 253_402_300_799_999;

/// A point in time, serialized as RFC 3339 UTC (`2026-11-27T15:23:48.123Z`).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub struct Timestamp(SystemTime);

impl Timestamp {
    /// The current time, truncated to whole milliseconds (what the text
    /// form keeps), so a timestamp survives a round trip through the pointer.
    pub fn now() -> Self {
        Timestamp::from(SystemTime::now())
    }

    /// The wrapped system time.
    pub fn system_time(&self) -> SystemTime {
        self.0
    }

    /// Time elapsed since this timestamp (zero if it lies in the future).
    pub fn age(&self) -> Duration {
        SystemTime::now().duration_since(self.0).unwrap_or_default()
    }

    /// Time elapsed since this timestamp, or `None` when it lies more than
    /// [`CLOCK_SKEW_TOLERANCE`] in the future (its age is unknown). A time
    /// slightly ahead, within the tolerance, has age zero.
    ///
    /// ```
    /// use snapcache::Timestamp;
    /// use std::time::{Duration, SystemTime};
    /// let hour = Duration::from_secs(3600);
    /// let past = Timestamp::from(SystemTime::now() - hour);
    /// assert!(past.known_age().is_some_and(|a| a >= hour));
    /// let ahead = Timestamp::from(SystemTime::now() + hour);
    /// assert_eq!(ahead.known_age(), None);
    /// assert!(ahead.in_future());
    /// ```
    pub fn known_age(&self) -> Option<Duration> {
        let now = SystemTime::now();
        match now.duration_since(self.0) {
            Ok(age) => Some(age),
            Err(e) if e.duration() <= CLOCK_SKEW_TOLERANCE => Some(Duration::ZERO),
            Err(_) => None,
        }
    }

    /// True when this time lies more than [`CLOCK_SKEW_TOLERANCE`] ahead of
    /// this machine's clock.
    pub fn in_future(&self) -> bool {
        self.known_age().is_none()
    }

    /// Parses RFC 3339.
    pub fn parse(s: &str) -> Option<Self> {
        humantime::parse_rfc3339(s).ok().map(Timestamp::from)
    }
}

impl From<SystemTime> for Timestamp {
    /// Truncates to whole milliseconds and clamps to the years 1970 to 9999
    /// (what the text form can hold).
    fn from(t: SystemTime) -> Self {
        let millis = t
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0)
            .min(LATEST_MILLIS);
        Timestamp(UNIX_EPOCH + Duration::from_millis(millis))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_rfc3339_millis(self.0))
    }
}

impl serde::Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Timestamp::parse(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("{s:?} is not an RFC 3339 time")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_beyond_year_9999_are_clamped_and_print() {
        let far = UNIX_EPOCH + Duration::from_secs(1_000_000_000_000);
        let t = Timestamp::from(far);
        assert_eq!(t.to_string(), "9999-12-31T23:59:59.999Z");
        assert_eq!(Timestamp::parse(&t.to_string()), Some(t));
        assert!(t.in_future());
    }

    #[test]
    fn times_before_1970_are_clamped_to_the_epoch() {
        let t = Timestamp::from(UNIX_EPOCH - Duration::from_secs(5));
        assert_eq!(t.to_string(), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn a_slightly_fast_clock_counts_as_now() {
        let ahead = Timestamp::from(SystemTime::now() + Duration::from_secs(10));
        assert_eq!(ahead.known_age(), Some(Duration::ZERO));
        assert!(!ahead.in_future());
    }
}
