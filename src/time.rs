//! Timestamps: stored and printed as RFC 3339 UTC with milliseconds.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A point in time, serialized as RFC 3339 UTC (`2026-11-27T15:23:48.123Z`).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub struct Timestamp(SystemTime);

impl Timestamp {
    /// The current time, truncated to whole milliseconds (what the text
    /// form keeps), so a timestamp survives a round trip through the pointer.
    pub fn now() -> Self {
        let since_epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let millis = Duration::from_millis(since_epoch.as_millis() as u64);
        Timestamp(UNIX_EPOCH + millis)
    }

    /// The wrapped system time.
    pub fn system_time(&self) -> SystemTime {
        self.0
    }

    /// Time elapsed since this timestamp (zero if it lies in the future).
    pub fn age(&self) -> Duration {
        SystemTime::now().duration_since(self.0).unwrap_or_default()
    }

    /// Parses RFC 3339.
    pub fn parse(s: &str) -> Option<Self> {
        humantime::parse_rfc3339(s).ok().map(Timestamp)
    }
}

impl From<SystemTime> for Timestamp {
    fn from(t: SystemTime) -> Self {
        Timestamp(t)
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
