//! Canonical JSON: equal content, equal bytes.
//!
//! A cache model full of `HashMap`s serializes its keys in a different order
//! in every process, so the same content hashes differently each time and
//! content addressing never finds it unchanged. [`write`] serializes any
//! `Serialize` value in one canonical form instead:
//!
//! - **Object keys sorted by their UTF-16 code units** (as RFC 8785 JCS does;
//!   this differs from a byte-wise sort only for keys mixing characters above
//!   U+FFFF with ones in U+E000..U+FFFF). Struct fields are object keys too.
//!   A key that occurs twice in one object is an error.
//! - **No insignificant whitespace** (or, with `pretty`, serde_json's pretty
//!   layout: 2-space indent, `": "` after keys, `{}` and `[]` when empty).
//! - **Strings escaped as serde_json (and RFC 8785) escape them**: `"`, `\`
//!   and control characters only, `\b \t \n \f \r` short, the rest `\u00xx`
//!   in lowercase hex; everything else, non-ASCII included, verbatim.
//! - **Floating-point numbers formatted as RFC 8785 says** (ECMAScript's
//!   `Number.prototype.toString`): shortest round-trip digits, `1.0` as `1`,
//!   `1e21` and up and below `1e-6` in exponent form with a sign
//!   (`1e+21`, `5e-324`), `-0` as `0`.
//!
//! This is RFC 8785 except in two places, both outside I-JSON (RFC 7493),
//! the range RFC 8785 is defined on:
//! - **Integers** (Rust's integer types) are written exactly, as serde_json
//!   writes them. Within ±2^53 that is the RFC 8785 form; beyond it RFC 8785
//!   would first round the number to a double (so 2^53 + 1 would be written
//!   as 9007199254740992), which loses the value: this writer keeps it.
//! - **NaN and ±infinity** are written as `null`, as serde_json writes them
//!   (RFC 8785 rejects them), so a value publishes canonically whenever it
//!   publishes at all.
//!
//! # Memory
//!
//! Arrays stream straight through. An object cannot be written before its
//! keys are sorted, so each object's entries are buffered, already
//! serialized, in one byte buffer until the object ends; a nested object is
//! serialized into its parent's buffer once it is complete. Peak memory is
//! therefore about the serialized size of the largest top-level object, up
//! to twice that while the outermost one is copied out: for a cache whose
//! root is an object, about two copies of the output, never a
//! `serde_json::Value` tree (which takes several times the output's size).

use std::fmt;
use std::io::{self, Write};
use std::ops::Range;

use serde::Serialize;
use serde::ser::{self, Impossible};

/// Writes `value` as canonical JSON (see the module docs) into `out`.
///
/// `pretty` selects serde_json's pretty layout (2-space indent) instead of
/// the compact one; keys are sorted either way.
pub(crate) fn write<W: Write, T: Serialize + ?Sized>(
    out: W,
    value: &T,
    pretty: bool,
) -> Result<(), CanonicalError> {
    let mut ser = Canonical {
        out,
        pretty,
        depth: 0,
    };
    value.serialize(&mut ser)
}

/// [`write`] into a new byte vector.
#[cfg(test)]
pub(crate) fn to_vec<T: Serialize + ?Sized>(
    value: &T,
    pretty: bool,
) -> Result<Vec<u8>, CanonicalError> {
    let mut out = Vec::new();
    write(&mut out, value, pretty)?;
    Ok(out)
}

/// Why a value could not be written canonically.
#[derive(Debug)]
pub(crate) enum CanonicalError {
    /// The output failed.
    Io(io::Error),
    /// The value cannot be canonical JSON (a non-string key, a duplicate
    /// key, or an error from its own `Serialize` impl).
    Value(String),
}

impl fmt::Display for CanonicalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CanonicalError::Io(e) => write!(f, "writing canonical JSON failed: {e}"),
            CanonicalError::Value(m) => write!(f, "cannot write the value as canonical JSON: {m}"),
        }
    }
}

impl std::error::Error for CanonicalError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CanonicalError::Io(e) => Some(e),
            CanonicalError::Value(_) => None,
        }
    }
}

impl ser::Error for CanonicalError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        CanonicalError::Value(msg.to_string())
    }
}

impl From<io::Error> for CanonicalError {
    fn from(e: io::Error) -> Self {
        CanonicalError::Io(e)
    }
}

/// The serializer: `depth` is the nesting level of the value being written
/// (for the pretty layout's indentation).
struct Canonical<W> {
    out: W,
    pretty: bool,
    depth: usize,
}

impl<W: Write> Canonical<W> {
    fn raw(&mut self, bytes: &[u8]) -> Result<(), CanonicalError> {
        Ok(self.out.write_all(bytes)?)
    }

    /// In the pretty layout, a line break and the indentation of `depth`.
    fn newline(&mut self, depth: usize) -> Result<(), CanonicalError> {
        if self.pretty {
            self.raw(b"\n")?;
            for _ in 0..depth {
                self.raw(b"  ")?;
            }
        }
        Ok(())
    }

    fn string(&mut self, s: &str) -> Result<(), CanonicalError> {
        // serde_json's escaping is RFC 8785's (see the module docs).
        serde_json::to_writer(&mut self.out, s).map_err(|e| CanonicalError::Io(e.into()))
    }

    fn colon(&mut self) -> Result<(), CanonicalError> {
        self.raw(if self.pretty { b": " } else { b":" })
    }

    /// Opens `{"variant":` for an externally tagged enum variant.
    fn open_variant(&mut self, variant: &str) -> Result<(), CanonicalError> {
        self.raw(b"{")?;
        self.newline(self.depth + 1)?;
        self.string(variant)?;
        self.colon()?;
        self.depth += 1;
        Ok(())
    }

    fn close_variant(&mut self) -> Result<(), CanonicalError> {
        self.depth -= 1;
        self.newline(self.depth)?;
        self.raw(b"}")
    }

    fn seq(&mut self, variant: bool) -> Result<Seq<'_, W>, CanonicalError> {
        self.raw(b"[")?;
        Ok(Seq {
            ser: self,
            first: true,
            variant,
        })
    }

    fn object(&mut self, variant: bool) -> Object<'_, W> {
        Object {
            ser: self,
            arena: Vec::new(),
            entries: Vec::new(),
            key: None,
            variant,
        }
    }
}

impl<'a, W: Write> ser::Serializer for &'a mut Canonical<W> {
    type Ok = ();
    type Error = CanonicalError;
    type SerializeSeq = Seq<'a, W>;
    type SerializeTuple = Seq<'a, W>;
    type SerializeTupleStruct = Seq<'a, W>;
    type SerializeTupleVariant = Seq<'a, W>;
    type SerializeMap = Object<'a, W>;
    type SerializeStruct = Object<'a, W>;
    type SerializeStructVariant = Object<'a, W>;

    fn serialize_bool(self, v: bool) -> Result<(), CanonicalError> {
        self.raw(if v { b"true" } else { b"false" })
    }
    fn serialize_i8(self, v: i8) -> Result<(), CanonicalError> {
        self.serialize_i64(v.into())
    }
    fn serialize_i16(self, v: i16) -> Result<(), CanonicalError> {
        self.serialize_i64(v.into())
    }
    fn serialize_i32(self, v: i32) -> Result<(), CanonicalError> {
        self.serialize_i64(v.into())
    }
    fn serialize_i64(self, v: i64) -> Result<(), CanonicalError> {
        Ok(write!(self.out, "{v}")?)
    }
    fn serialize_i128(self, v: i128) -> Result<(), CanonicalError> {
        Ok(write!(self.out, "{v}")?)
    }
    fn serialize_u8(self, v: u8) -> Result<(), CanonicalError> {
        self.serialize_u64(v.into())
    }
    fn serialize_u16(self, v: u16) -> Result<(), CanonicalError> {
        self.serialize_u64(v.into())
    }
    fn serialize_u32(self, v: u32) -> Result<(), CanonicalError> {
        self.serialize_u64(v.into())
    }
    fn serialize_u64(self, v: u64) -> Result<(), CanonicalError> {
        Ok(write!(self.out, "{v}")?)
    }
    fn serialize_u128(self, v: u128) -> Result<(), CanonicalError> {
        Ok(write!(self.out, "{v}")?)
    }
    fn serialize_f32(self, v: f32) -> Result<(), CanonicalError> {
        // RFC 8785 numbers are doubles; an f32 is the double it converts to
        // exactly (serde_json::to_value does the same).
        self.serialize_f64(v.into())
    }
    fn serialize_f64(self, v: f64) -> Result<(), CanonicalError> {
        match es_number(v) {
            Some(text) => self.raw(text.as_bytes()),
            None => self.raw(b"null"),
        }
    }
    fn serialize_char(self, v: char) -> Result<(), CanonicalError> {
        self.string(v.encode_utf8(&mut [0; 4]))
    }
    fn serialize_str(self, v: &str) -> Result<(), CanonicalError> {
        self.string(v)
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<(), CanonicalError> {
        // As serde_json: an array of numbers.
        let mut seq = self.seq(false)?;
        for b in v {
            ser::SerializeSeq::serialize_element(&mut seq, b)?;
        }
        ser::SerializeSeq::end(seq)
    }
    fn serialize_none(self) -> Result<(), CanonicalError> {
        self.raw(b"null")
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), CanonicalError> {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<(), CanonicalError> {
        self.raw(b"null")
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result<(), CanonicalError> {
        self.raw(b"null")
    }
    fn serialize_unit_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
    ) -> Result<(), CanonicalError> {
        self.string(variant)
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<(), CanonicalError> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<(), CanonicalError> {
        self.open_variant(variant)?;
        value.serialize(&mut *self)?;
        self.close_variant()
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Seq<'a, W>, CanonicalError> {
        self.seq(false)
    }
    fn serialize_tuple(self, _: usize) -> Result<Seq<'a, W>, CanonicalError> {
        self.seq(false)
    }
    fn serialize_tuple_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Seq<'a, W>, CanonicalError> {
        self.seq(false)
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        _: usize,
    ) -> Result<Seq<'a, W>, CanonicalError> {
        self.open_variant(variant)?;
        self.seq(true)
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Object<'a, W>, CanonicalError> {
        Ok(self.object(false))
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Object<'a, W>, CanonicalError> {
        Ok(self.object(false))
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        _: usize,
    ) -> Result<Object<'a, W>, CanonicalError> {
        self.open_variant(variant)?;
        Ok(self.object(true))
    }
}

/// An array being written: elements go straight to the output.
struct Seq<'a, W> {
    ser: &'a mut Canonical<W>,
    first: bool,
    /// Inside `{"variant":`, closed at the end.
    variant: bool,
}

impl<W: Write> Seq<'_, W> {
    fn element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), CanonicalError> {
        if !self.first {
            self.ser.raw(b",")?;
        }
        self.first = false;
        self.ser.newline(self.ser.depth + 1)?;
        self.ser.depth += 1;
        let result = value.serialize(&mut *self.ser);
        self.ser.depth -= 1;
        result
    }

    fn finish(self) -> Result<(), CanonicalError> {
        if !self.first {
            self.ser.newline(self.ser.depth)?;
        }
        self.ser.raw(b"]")?;
        if self.variant {
            self.ser.close_variant()?;
        }
        Ok(())
    }
}

impl<W: Write> ser::SerializeSeq for Seq<'_, W> {
    type Ok = ();
    type Error = CanonicalError;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), CanonicalError> {
        self.element(v)
    }
    fn end(self) -> Result<(), CanonicalError> {
        self.finish()
    }
}

impl<W: Write> ser::SerializeTuple for Seq<'_, W> {
    type Ok = ();
    type Error = CanonicalError;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), CanonicalError> {
        self.element(v)
    }
    fn end(self) -> Result<(), CanonicalError> {
        self.finish()
    }
}

impl<W: Write> ser::SerializeTupleStruct for Seq<'_, W> {
    type Ok = ();
    type Error = CanonicalError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), CanonicalError> {
        self.element(v)
    }
    fn end(self) -> Result<(), CanonicalError> {
        self.finish()
    }
}

impl<W: Write> ser::SerializeTupleVariant for Seq<'_, W> {
    type Ok = ();
    type Error = CanonicalError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), CanonicalError> {
        self.element(v)
    }
    fn end(self) -> Result<(), CanonicalError> {
        self.finish()
    }
}

/// An object being written: each entry's value is serialized into `arena`
/// (at the indentation it will have), and the entries are written sorted by
/// key once the object ends.
struct Object<'a, W> {
    ser: &'a mut Canonical<W>,
    arena: Vec<u8>,
    entries: Vec<(String, Range<usize>)>,
    /// The key of `serialize_key`, waiting for its value.
    key: Option<String>,
    /// Inside `{"variant":`, closed at the end.
    variant: bool,
}

impl<W: Write> Object<'_, W> {
    fn entry<T: Serialize + ?Sized>(
        &mut self,
        key: String,
        value: &T,
    ) -> Result<(), CanonicalError> {
        let start = self.arena.len();
        let mut nested = Canonical {
            out: &mut self.arena,
            pretty: self.ser.pretty,
            depth: self.ser.depth + 1,
        };
        value.serialize(&mut nested)?;
        self.entries.push((key, start..self.arena.len()));
        Ok(())
    }

    fn finish(mut self) -> Result<(), CanonicalError> {
        self.entries
            .sort_by(|(a, _), (b, _)| a.encode_utf16().cmp(b.encode_utf16()));
        if let Some(pair) = self.entries.windows(2).find(|w| w[0].0 == w[1].0) {
            return Err(CanonicalError::Value(format!(
                "the key {:?} occurs twice in one object",
                pair[0].0
            )));
        }
        self.ser.raw(b"{")?;
        for (i, (key, range)) in self.entries.iter().enumerate() {
            if i > 0 {
                self.ser.raw(b",")?;
            }
            self.ser.newline(self.ser.depth + 1)?;
            self.ser.string(key)?;
            self.ser.colon()?;
            self.ser.raw(&self.arena[range.clone()])?;
        }
        if !self.entries.is_empty() {
            self.ser.newline(self.ser.depth)?;
        }
        self.ser.raw(b"}")?;
        if self.variant {
            self.ser.close_variant()?;
        }
        Ok(())
    }
}

impl<W: Write> ser::SerializeMap for Object<'_, W> {
    type Ok = ();
    type Error = CanonicalError;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), CanonicalError> {
        self.key = Some(key.serialize(KeyText)?);
        Ok(())
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), CanonicalError> {
        let key = self
            .key
            .take()
            .ok_or_else(|| CanonicalError::Value("a map value came without its key".into()))?;
        self.entry(key, v)
    }
    fn end(self) -> Result<(), CanonicalError> {
        self.finish()
    }
}

impl<W: Write> ser::SerializeStruct for Object<'_, W> {
    type Ok = ();
    type Error = CanonicalError;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        v: &T,
    ) -> Result<(), CanonicalError> {
        self.entry(key.to_owned(), v)
    }
    fn end(self) -> Result<(), CanonicalError> {
        self.finish()
    }
}

impl<W: Write> ser::SerializeStructVariant for Object<'_, W> {
    type Ok = ();
    type Error = CanonicalError;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        v: &T,
    ) -> Result<(), CanonicalError> {
        self.entry(key.to_owned(), v)
    }
    fn end(self) -> Result<(), CanonicalError> {
        self.finish()
    }
}

/// Turns a map key into the object key's text, accepting what serde_json
/// accepts: strings, chars, integers, bools, finite floats, unit variants and
/// newtypes of those.
struct KeyText;

fn not_a_key(kind: &str) -> CanonicalError {
    CanonicalError::Value(format!(
        "a map key must be a string, number, bool or char to be a JSON object key, not {kind}"
    ))
}

impl ser::Serializer for KeyText {
    type Ok = String;
    type Error = CanonicalError;
    type SerializeSeq = Impossible<String, CanonicalError>;
    type SerializeTuple = Impossible<String, CanonicalError>;
    type SerializeTupleStruct = Impossible<String, CanonicalError>;
    type SerializeTupleVariant = Impossible<String, CanonicalError>;
    type SerializeMap = Impossible<String, CanonicalError>;
    type SerializeStruct = Impossible<String, CanonicalError>;
    type SerializeStructVariant = Impossible<String, CanonicalError>;

    fn serialize_bool(self, v: bool) -> Result<String, CanonicalError> {
        Ok(v.to_string())
    }
    fn serialize_i8(self, v: i8) -> Result<String, CanonicalError> {
        Ok(v.to_string())
    }
    fn serialize_i16(self, v: i16) -> Result<String, CanonicalError> {
        Ok(v.to_string())
    }
    fn serialize_i32(self, v: i32) -> Result<String, CanonicalError> {
        Ok(v.to_string())
    }
    fn serialize_i64(self, v: i64) -> Result<String, CanonicalError> {
        Ok(v.to_string())
    }
    fn serialize_i128(self, v: i128) -> Result<String, CanonicalError> {
        Ok(v.to_string())
    }
    fn serialize_u8(self, v: u8) -> Result<String, CanonicalError> {
        Ok(v.to_string())
    }
    fn serialize_u16(self, v: u16) -> Result<String, CanonicalError> {
        Ok(v.to_string())
    }
    fn serialize_u32(self, v: u32) -> Result<String, CanonicalError> {
        Ok(v.to_string())
    }
    fn serialize_u64(self, v: u64) -> Result<String, CanonicalError> {
        Ok(v.to_string())
    }
    fn serialize_u128(self, v: u128) -> Result<String, CanonicalError> {
        Ok(v.to_string())
    }
    fn serialize_f32(self, v: f32) -> Result<String, CanonicalError> {
        self.serialize_f64(v.into())
    }
    fn serialize_f64(self, v: f64) -> Result<String, CanonicalError> {
        es_number(v).ok_or_else(|| not_a_key("a NaN or infinite float"))
    }
    fn serialize_char(self, v: char) -> Result<String, CanonicalError> {
        Ok(v.to_string())
    }
    fn serialize_str(self, v: &str) -> Result<String, CanonicalError> {
        Ok(v.to_owned())
    }
    fn serialize_bytes(self, _: &[u8]) -> Result<String, CanonicalError> {
        Err(not_a_key("bytes"))
    }
    fn serialize_none(self) -> Result<String, CanonicalError> {
        Err(not_a_key("None"))
    }
    fn serialize_some<T: Serialize + ?Sized>(self, _: &T) -> Result<String, CanonicalError> {
        Err(not_a_key("an Option"))
    }
    fn serialize_unit(self) -> Result<String, CanonicalError> {
        Err(not_a_key("()"))
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result<String, CanonicalError> {
        Err(not_a_key("a unit struct"))
    }
    fn serialize_unit_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
    ) -> Result<String, CanonicalError> {
        Ok(variant.to_owned())
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<String, CanonicalError> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<String, CanonicalError> {
        Err(not_a_key("an enum variant with data"))
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, CanonicalError> {
        Err(not_a_key("a sequence"))
    }
    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, CanonicalError> {
        Err(not_a_key("a tuple"))
    }
    fn serialize_tuple_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleStruct, CanonicalError> {
        Err(not_a_key("a tuple struct"))
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, CanonicalError> {
        Err(not_a_key("an enum variant with data"))
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, CanonicalError> {
        Err(not_a_key("a map"))
    }
    fn serialize_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStruct, CanonicalError> {
        Err(not_a_key("a struct"))
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, CanonicalError> {
        Err(not_a_key("an enum variant with data"))
    }
}

/// A double as ECMAScript's `Number.prototype.toString` writes it (the
/// RFC 8785 number form); `None` for NaN and the infinities.
fn es_number(v: f64) -> Option<String> {
    if !v.is_finite() {
        return None;
    }
    if v == 0.0 {
        return Some("0".into()); // -0 too
    }
    // ECMAScript wants the fewest digits that round-trip and, of those, the
    // ones closest to the value, ties to even. Rust's `{:e}` finds the
    // fewest (k), but on an exact tie between two k-digit candidates it can
    // round up (1424953923781206.25 gives ...6.3, ECMAScript ...6.2); its
    // exact mode with k digits rounds the true value half-to-even.
    let shortest = format!("{:e}", v.abs());
    let k = shortest
        .split_once('e')?
        .0
        .chars()
        .filter(|c| *c != '.')
        .count();
    let sci = format!("{:.*e}", k - 1, v.abs());
    let (mantissa, exponent) = sci.split_once('e')?;
    let exponent: i32 = exponent.parse().ok()?;
    let mut digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    while digits.len() > 1 && digits.ends_with('0') {
        digits.pop();
    }
    let k = digits.len() as i32;
    // The value is 0.<digits> x 10^n.
    let n = exponent + 1;
    let mut out = String::with_capacity(digits.len() + 8);
    if v < 0.0 {
        out.push('-');
    }
    if k <= n && n <= 21 {
        out.push_str(&digits);
        out.extend(std::iter::repeat_n('0', (n - k) as usize));
    } else if 0 < n && n <= 21 {
        out.push_str(&digits[..n as usize]);
        out.push('.');
        out.push_str(&digits[n as usize..]);
    } else if -6 < n && n <= 0 {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', (-n) as usize));
        out.push_str(&digits);
    } else {
        out.push_str(&digits[..1]);
        if k > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        let e = n - 1;
        out.push('e');
        out.push(if e < 0 { '-' } else { '+' });
        out.push_str(&e.unsigned_abs().to_string());
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap};

    use proptest::prelude::*;
    use serde_json::Value;

    use super::*;
    use crate::json_check::JsonCheck;

    fn text(v: &impl Serialize, pretty: bool) -> String {
        String::from_utf8(to_vec(v, pretty).expect("canonical")).expect("utf-8")
    }

    /// RFC 8785 Appendix B: IEEE 754 bit patterns and their JCS form.
    #[test]
    fn numbers_match_rfc_8785_appendix_b() {
        let cases: &[(u64, &str)] = &[
            (0x0000000000000000, "0"),
            (0x8000000000000000, "0"),
            (0x0000000000000001, "5e-324"),
            (0x8000000000000001, "-5e-324"),
            (0x7fefffffffffffff, "1.7976931348623157e+308"),
            (0xffefffffffffffff, "-1.7976931348623157e+308"),
            (0x4340000000000000, "9007199254740992"),
            (0xc340000000000000, "-9007199254740992"),
            (0x4430000000000000, "295147905179352830000"),
            (0x44b52d02c7e14af5, "9.999999999999997e+22"),
            (0x44b52d02c7e14af6, "1e+23"),
            (0x44b52d02c7e14af7, "1.0000000000000001e+23"),
            (0x444b1ae4d6e2ef4e, "999999999999999700000"),
            (0x444b1ae4d6e2ef4f, "999999999999999900000"),
            (0x444b1ae4d6e2ef50, "1e+21"),
            (0x3eb0c6f7a0b5ed8c, "9.999999999999997e-7"),
            (0x3eb0c6f7a0b5ed8d, "0.000001"),
            (0x41b3de4355555553, "333333333.3333332"),
            (0x41b3de4355555554, "333333333.33333325"),
            (0x41b3de4355555555, "333333333.3333333"),
            (0x41b3de4355555556, "333333333.3333334"),
            (0x41b3de4355555557, "333333333.33333343"),
            (0xbecbf647612f3696, "-0.0000033333333333333333"),
            (0x43143ff3c1cb0959, "1424953923781206.2"),
        ];
        for (bits, want) in cases {
            let v = f64::from_bits(*bits);
            assert_eq!(es_number(v).as_deref(), Some(*want), "bits {bits:#018x}");
            assert_eq!(text(&v, false), *want);
        }
        assert_eq!(es_number(f64::NAN), None);
        assert_eq!(es_number(f64::INFINITY), None);
        assert_eq!(
            text(&f64::NEG_INFINITY, false),
            "null",
            "as serde_json writes it"
        );
        assert_eq!(text(&1.0f64, false), "1");
        assert_eq!(text(&100.5f64, false), "100.5");
    }

    /// The example of RFC 8785 section 3.2.3: keys sorted by UTF-16 code
    /// units, which puts U+1F600 (a surrogate pair, 0xD83D) before U+FB33
    /// although its UTF-8 bytes sort after.
    #[test]
    fn keys_sort_by_utf16_code_units() {
        let mut map = HashMap::new();
        for (k, v) in [
            ("\u{20ac}", "Euro Sign"),
            ("\r", "Carriage Return"),
            ("\u{fb33}", "Hebrew Letter Dalet With Dagesh"),
            ("1", "One"),
            ("\u{1f600}", "Emoji: Grinning Face"),
            ("\u{0080}", "Control"),
            ("\u{00f6}", "Latin Small Letter O With Diaeresis"),
        ] {
            map.insert(k, v);
        }
        assert_eq!(
            text(&map, false),
            "{\"\\r\":\"Carriage Return\",\"1\":\"One\",\"\u{0080}\":\"Control\",\"\u{00f6}\":\"Latin Small Letter O With Diaeresis\",\"\u{20ac}\":\"Euro Sign\",\"\u{1f600}\":\"Emoji: Grinning Face\",\"\u{fb33}\":\"Hebrew Letter Dalet With Dagesh\"}",
        );
    }

    #[derive(Serialize)]
    struct Shapes {
        zeta: u8,
        alpha: Option<Vec<u8>>,
        unit: Kind,
        newtype: Kind,
        tuple: Kind,
        record: Kind,
        empty_map: BTreeMap<String, u8>,
        empty_list: Vec<u8>,
        #[serde(with = "serde_bytes_like")]
        bytes: Vec<u8>,
        ch: char,
    }

    mod serde_bytes_like {
        pub fn serialize<S: serde::Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
            s.serialize_bytes(v)
        }
    }

    #[derive(Serialize)]
    enum Kind {
        Unit,
        New(i32),
        Pair(u8, String),
        Record { y: bool, x: () },
    }

    fn shapes() -> Shapes {
        Shapes {
            zeta: 1,
            alpha: Some(vec![1, 2]),
            unit: Kind::Unit,
            newtype: Kind::New(-3),
            tuple: Kind::Pair(4, "a\"b\\\n\u{1}".into()),
            record: Kind::Record { y: true, x: () },
            empty_map: BTreeMap::new(),
            empty_list: vec![],
            bytes: vec![7, 8],
            ch: 'é',
        }
    }

    /// Every serde shape in both layouts equals serde_json's output with the
    /// keys sorted (serde_json's `Value` keeps a BTreeMap: with ASCII keys
    /// its order is the canonical one), and pretty is serde_json's layout.
    #[test]
    fn every_serde_shape_matches_serde_json_with_sorted_keys() {
        let value = serde_json::to_value(shapes()).expect("to_value");
        assert_eq!(
            text(&shapes(), false),
            serde_json::to_string(&value).expect("json")
        );
        assert_eq!(
            text(&shapes(), true),
            serde_json::to_string_pretty(&value).expect("json")
        );
        assert!(text(&shapes(), false).starts_with("{\"alpha\":[1,2],\"bytes\":[7,8],"));
    }

    #[test]
    fn integers_are_exact_beyond_2_pow_53() {
        assert_eq!(
            text(&(u64::MAX, i64::MIN), false),
            format!("[{},{}]", u64::MAX, i64::MIN)
        );
        assert_eq!(text(&u128::MAX, false), u128::MAX.to_string());
    }

    #[test]
    fn duplicate_and_non_string_keys_are_errors() {
        struct Twice;
        impl Serialize for Twice {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                use serde::ser::SerializeMap;
                let mut m = s.serialize_map(None)?;
                m.serialize_entry("a", &1)?;
                m.serialize_entry("a", &2)?;
                m.end()
            }
        }
        let err = to_vec(&Twice, false).expect_err("duplicate");
        assert!(err.to_string().contains("\"a\" occurs twice"), "{err}");
        let mut by_list = BTreeMap::new();
        by_list.insert(vec![1u8], 1);
        let err = to_vec(&by_list, false).expect_err("list key");
        assert!(err.to_string().contains("not a sequence"), "{err}");
        let mut by_number = BTreeMap::new();
        by_number.insert(10u32, "x");
        by_number.insert(9u32, "y");
        assert_eq!(text(&by_number, false), r#"{"10":"x","9":"y"}"#);
    }

    #[test]
    fn output_errors_are_reported() {
        struct Full;
        impl Write for Full {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::new(io::ErrorKind::StorageFull, "disk full"))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let err = write(Full, &shapes(), false).expect_err("full");
        assert!(matches!(err, CanonicalError::Io(ref e) if e.kind() == io::ErrorKind::StorageFull));
    }

    /// Numbers compared by value: canonical form writes the double 1.0 as
    /// `1`, which reads back as an integer.
    fn same_json(a: &Value, b: &Value) -> bool {
        match (a, b) {
            (Value::Number(x), Value::Number(y)) => {
                if let (Some(x), Some(y)) = (x.as_i64(), y.as_i64()) {
                    x == y
                } else if let (Some(x), Some(y)) = (x.as_u64(), y.as_u64()) {
                    x == y
                } else {
                    x.as_f64() == y.as_f64()
                }
            }
            (Value::Array(x), Value::Array(y)) => {
                x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same_json(x, y))
            }
            (Value::Object(x), Value::Object(y)) => {
                x.len() == y.len()
                    && x.iter()
                        .all(|(k, v)| y.get(k).is_some_and(|w| same_json(v, w)))
            }
            _ => a == b,
        }
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            (-1e7f64..1e7).prop_map(Value::from),
            ".{0,12}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
                prop::collection::btree_map(".{0,6}", inner, 0..8)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn check_with_json_check(bytes: &[u8]) -> Result<(), String> {
        let mut check = JsonCheck::default();
        check.feed(bytes)?;
        check.finish()
    }

    proptest! {
        /// (a) and (c): the output is well-formed (the store's own checker),
        /// parses back to the input, and is a fixed point.
        #[test]
        fn output_is_valid_json_that_reads_back_to_the_input(value in json_value(), pretty in any::<bool>()) {
            let bytes = to_vec(&value, pretty).expect("canonical");
            prop_assert_eq!(check_with_json_check(&bytes), Ok(()));
            let back: Value = serde_json::from_slice(&bytes).expect("parses");
            prop_assert!(same_json(&value, &back), "{} -> {}", value, String::from_utf8_lossy(&bytes));
            prop_assert_eq!(to_vec(&back, pretty).expect("again"), bytes);
        }

        /// (b): two HashMaps with the same content, filled in different
        /// orders (and each with its own random hasher seed), give the same
        /// bytes.
        #[test]
        fn equal_hashmaps_give_equal_bytes(
            entries in prop::collection::btree_map(".{0,8}", json_value(), 0..24),
            seed in any::<u64>(),
        ) {
            let mut forward: HashMap<String, HashMap<String, Value>> = HashMap::new();
            let mut backward: HashMap<String, HashMap<String, Value>> = HashMap::new();
            let list: Vec<_> = entries.into_iter().collect();
            let mut shuffled = list.clone();
            // A seeded rotation and reversal: a different insertion order.
            if !shuffled.is_empty() {
                let at = (seed as usize) % shuffled.len();
                shuffled.rotate_left(at);
            }
            shuffled.reverse();
            for (k, v) in &list {
                forward.entry(k.clone()).or_default().insert(k.repeat(2), v.clone());
            }
            for (k, v) in &shuffled {
                backward.entry(k.clone()).or_default().insert(k.repeat(2), v.clone());
            }
            for pretty in [false, true] {
                prop_assert_eq!(to_vec(&forward, pretty).expect("a"), to_vec(&backward, pretty).expect("b"));
            }
        }

        /// Numbers read back as the same double (the shortest round trip).
        #[test]
        fn floats_round_trip(v in any::<f64>()) {
            if let Some(text) = es_number(v) {
                let back: f64 = text.parse().expect("parses");
                prop_assert_eq!(back, if v == 0.0 { 0.0 } else { v });
                let json: Value = serde_json::from_str(&text).expect("json number");
                prop_assert_eq!(json.as_f64(), Some(back));
            }
        }
    }
}
