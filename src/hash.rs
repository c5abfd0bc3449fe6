//! Content hashes: blake3, written as 64 lowercase hex digits.

use std::fmt;

/// The blake3 hash of a snapshot's bytes; also its file name.
///
/// Parsing is strict (exactly 64 lowercase hex digits) because the hash
/// becomes a path component: anything else, such as `../../etc/passwd`, is
/// rejected before it can name a file.
///
/// ```
/// use snapcache::ContentHash;
/// let h = ContentHash::of(b"{}");
/// assert_eq!(ContentHash::parse(&h.to_hex()), Some(h));
/// assert_eq!(ContentHash::parse("../../etc/passwd"), None);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ContentHash(blake3::Hash);

impl ContentHash {
    /// Hashes a byte slice.
    pub fn of(bytes: &[u8]) -> Self {
        ContentHash(blake3::hash(bytes))
    }

    pub(crate) fn from_blake3(h: blake3::Hash) -> Self {
        ContentHash(h)
    }

    /// Parses 64 lowercase hex digits; anything else is `None`.
    pub fn parse(s: &str) -> Option<Self> {
        let ok = s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if !ok {
            return None;
        }
        blake3::Hash::from_hex(s).ok().map(ContentHash)
    }

    /// The 64-digit lowercase hex form.
    pub fn to_hex(&self) -> String {
        self.0.to_hex().to_string()
    }
}

impl fmt::Display for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ContentHash({})", self.to_hex())
    }
}

impl serde::Serialize for ContentHash {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> serde::Deserialize<'de> for ContentHash {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        ContentHash::parse(&s).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "{s:?} is not a content hash (64 lowercase hex digits)"
            ))
        })
    }
}
