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

    /// Parses RFC 3339: any offset (converted to UTC), any fraction of a
    /// second (kept to the millisecond), a leap second (read as :59.999).
    /// Times before 1970 are clamped to the epoch, as [`From<SystemTime>`]
    /// does: snapcache writes only UTC times from 1970 on, but a valid
    /// time of another writer must not make a whole pointer unreadable.
    ///
    /// ```
    /// use snapcache::Timestamp;
    /// let t = Timestamp::parse("2026-12-07T23:00:00+05:00").unwrap();
    /// assert_eq!(t.to_string(), "2026-12-07T18:00:00.000Z");
    /// assert_eq!(Timestamp::parse("1969-12-31T23:59:59Z").unwrap().to_string(), "1970-01-01T00:00:00.000Z");
    /// assert_eq!(Timestamp::parse("2026-02-30T00:00:00Z"), None);
    /// ```
    pub fn parse(s: &str) -> Option<Self> {
        let millis = rfc3339_millis(s.as_bytes())?;
        let millis = u64::try_from(millis.max(0)).ok()?.min(LATEST_MILLIS);
        Some(Timestamp(UNIX_EPOCH + Duration::from_millis(millis)))
    }
}

/// Milliseconds since the epoch (negative before it) of an RFC 3339
/// date-time: `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`.
fn rfc3339_millis(b: &[u8]) -> Option<i64> {
    fn digits(b: &[u8], at: usize, n: usize) -> Option<i64> {
        let part = b.get(at..at + n)?;
        part.iter().try_fold(0i64, |acc, &d| {
            d.is_ascii_digit().then(|| acc * 10 + i64::from(d - b'0'))
        })
    }
    let year = digits(b, 0, 4)?;
    let month = digits(b, 5, 2)?;
    let day = digits(b, 8, 2)?;
    let (hour, minute, second) = (digits(b, 11, 2)?, digits(b, 14, 2)?, digits(b, 17, 2)?);
    let separators = [(4, b'-'), (7, b'-'), (13, b':'), (16, b':')];
    if separators.iter().any(|&(i, c)| b.get(i) != Some(&c))
        || !matches!(b.get(10), Some(b'T' | b't' | b' '))
    {
        return None;
    }
    let leap_year = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let month_days = [
        31,
        if leap_year { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    let valid = (1..=12).contains(&month)
        && day >= 1
        && usize::try_from(month - 1).is_ok_and(|m| day <= month_days[m])
        && hour <= 23
        && minute <= 59
        && second <= 60;
    if !valid {
        return None;
    }
    let mut at = 19;
    let mut fraction_millis = 0;
    if b.get(at) == Some(&b'.') {
        at += 1;
        let start = at;
        while b.get(at).is_some_and(u8::is_ascii_digit) {
            at += 1;
        }
        if at == start {
            return None;
        }
        // The first three digits; more are truncated, as `now()` truncates.
        fraction_millis = b[start..at]
            .iter()
            .chain(std::iter::repeat(&b'0'))
            .take(3)
            .fold(0i64, |acc, &d| acc * 10 + i64::from(d - b'0'));
    }
    let offset_minutes = match b.get(at..)? {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let hours = digits(&[*h1, *h2], 0, 2)?;
            let minutes = digits(&[*m1, *m2], 0, 2)?;
            if hours > 23 || minutes > 59 {
                return None;
            }
            let total = hours * 60 + minutes;
            if *sign == b'-' { -total } else { total }
        }
        _ => return None,
    };
    // Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
    let (y, m) = if month <= 2 {
        (year - 1, month + 9)
    } else {
        (year, month - 3)
    };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let day_of_year = (153 * m + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    let days = era * 146_097 + day_of_era - 719_468;
    // A leap second (:60) is read as the last millisecond before the next
    // minute, so that it still sorts after :59.
    let (second, fraction_millis) = if second == 60 {
        (59, 999)
    } else {
        (second, fraction_millis)
    };
    let local = ((days * 24 + hour) * 60 + minute) * 60 + second;
    Some((local - offset_minutes * 60) * 1000 + fraction_millis)
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

    /// Found by a hostile audit: a pointer holding a valid RFC 3339 time
    /// with an offset, or one before 1970, was "not an RFC 3339 time" and
    /// the whole store was refused as damaged.
    #[test]
    fn rfc3339_times_with_offsets_or_before_1970_parse() {
        let cases = [
            (
                "2026-12-07T23:00:00+05:00",
                Some("2026-12-07T18:00:00.000Z"),
            ),
            (
                "2026-12-07T23:00:00-05:30",
                Some("2026-12-08T04:30:00.000Z"),
            ),
            (
                "2026-12-07t23:00:00.1234z",
                Some("2026-12-07T23:00:00.123Z"),
            ),
            (
                "2026-12-07 23:00:00.5+00:00",
                Some("2026-12-07T23:00:00.500Z"),
            ),
            ("2016-12-31T23:59:60Z", Some("2016-12-31T23:59:59.999Z")),
            ("2024-02-29T00:00:00Z", Some("2024-02-29T00:00:00.000Z")),
            ("1969-12-31T23:59:59Z", Some("1970-01-01T00:00:00.000Z")),
            ("0001-01-01T00:00:00Z", Some("1970-01-01T00:00:00.000Z")),
            (
                "1970-01-01T01:00:00+01:00",
                Some("1970-01-01T00:00:00.000Z"),
            ),
            ("9999-12-31T23:59:59.999Z", Some("9999-12-31T23:59:59.999Z")),
            (
                "9999-12-31T23:59:59-01:00",
                Some("9999-12-31T23:59:59.999Z"),
            ),
            ("2023-02-29T00:00:00Z", None),
            ("2026-13-01T00:00:00Z", None),
            ("2026-12-07T24:00:00Z", None),
            ("2026-12-07T23:00:00", None),
            ("2026-12-07T23:00:00.Z", None),
            ("2026-12-07T23:00:00+5:00", None),
            ("2026-12-07T23:00:00+24:00", None),
            ("2026-12-07T23:00:00Zjunk", None),
            ("+2026-12-07T23:00:00Z", None),
            ("", None),
        ];
        for (text, want) in cases {
            let got = Timestamp::parse(text).map(|t| t.to_string());
            assert_eq!(got.as_deref(), want, "{text:?}");
        }
        // Whatever snapcache printed reads back as the same time.
        for millis in [0, 1, 999, 1_700_000_000_123, LATEST_MILLIS] {
            let t = Timestamp(UNIX_EPOCH + Duration::from_millis(millis));
            assert_eq!(Timestamp::parse(&t.to_string()), Some(t), "{t}");
        }
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
