//! A streaming JSON well-formedness check (RFC 8259), fed chunk by chunk.
//!
//! The payload passes through it once, as it is streamed into the temp file,
//! so validation costs no second pass and no memory beyond the nesting stack.
//! It builds nothing: it only answers "is this exactly one JSON value?" and,
//! if not, where the first error is (line and column, counted in bytes).
//! Compared with serde_json's reader-based parser (`IgnoredAny`) it runs at
//! about the same speed, but in the same pass as the write and the hash, it
//! stops a bad source at its first error, and it has no recursion limit.
//! Its verdicts are checked against serde_json's by property tests.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Container {
    Array,
    Object,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Expecting a value (start of input, after ':' or ',' in an array).
    Value,
    /// Just after '[': a value or ']'.
    ArrayFirst,
    /// Just after '{': a key or '}'.
    ObjectFirst,
    /// After ',' in an object: a key.
    Key,
    /// After a key: ':'.
    Colon,
    /// After a value: ',' or the closing bracket, or the end at top level.
    AfterValue,
    /// Inside a string; `key` tells what follows it.
    Str { key: bool },
    /// After a backslash in a string.
    Escape { key: bool },
    /// Inside `\uXXXX`, with this many hex digits still to come.
    Unicode { key: bool, left: u8 },
    /// A literal (`true`, `false`, `null`) matched up to `at`.
    Literal { word: &'static [u8], at: u8 },
    /// Inside a number, at this point of the grammar.
    Number(NumberState),
    /// After the top-level value: only whitespace may follow.
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NumberState {
    /// After '-'.
    Minus,
    /// After a leading '0'.
    Zero,
    /// In the integer digits.
    Int,
    /// After '.'.
    Dot,
    /// In the fraction digits.
    Frac,
    /// After 'e' or 'E'.
    Exp,
    /// After the exponent's sign.
    ExpSign,
    /// In the exponent digits.
    ExpDigits,
}

impl NumberState {
    /// Whether a number may end here.
    fn complete(self) -> bool {
        matches!(
            self,
            NumberState::Zero | NumberState::Int | NumberState::Frac | NumberState::ExpDigits
        )
    }
}

/// The streaming checker.
#[derive(Debug)]
pub(crate) struct JsonCheck {
    state: State,
    stack: Vec<Container>,
    /// Offset of the byte being looked at.
    offset: u64,
    /// Offset of the first byte of the current chunk.
    chunk_base: u64,
    /// 1-based line of the next byte, and the offset where that line starts.
    line: u64,
    line_start: u64,
    /// Bytes of an incomplete UTF-8 sequence carried to the next chunk.
    utf8_carry: Vec<u8>,
    error: Option<String>,
}

impl Default for JsonCheck {
    fn default() -> Self {
        JsonCheck {
            state: State::Value,
            stack: Vec::new(),
            offset: 0,
            chunk_base: 0,
            line: 1,
            line_start: 0,
            utf8_carry: Vec::new(),
            error: None,
        }
    }
}

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

impl JsonCheck {
    /// Feeds the next chunk. Returns the first error, and keeps returning it.
    pub(crate) fn feed(&mut self, chunk: &[u8]) -> Result<(), String> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        self.check_utf8(chunk)?;
        let mut i = 0;
        while i < chunk.len() {
            // Fast path: inside a string only '"', '\\' and control bytes matter.
            if let State::Str { .. } = self.state {
                i += plain_string_run(&chunk[i..]);
                if i >= chunk.len() {
                    break;
                }
            }
            // Fast path: digit runs inside a number.
            if let State::Number(NumberState::Int | NumberState::Frac | NumberState::ExpDigits) =
                self.state
            {
                let rest = &chunk[i..];
                match rest.iter().position(|b| !b.is_ascii_digit()) {
                    Some(skip) => i += skip,
                    None => break,
                }
            }
            // Fast path: indentation between tokens (pretty-printed JSON is
            // mostly spaces). Newlines go through `step`, which counts lines.
            if self.between_tokens() {
                i += blank_run(&chunk[i..]);
                if i >= chunk.len() {
                    break;
                }
            }
            self.offset_at(i as u64);
            if let Err(what) = self.step(chunk[i]) {
                return Err(self.fail(what));
            }
            i += 1;
        }
        self.chunk_base += chunk.len() as u64;
        self.offset = self.chunk_base;
        Ok(())
    }

    /// Whether whitespace may appear here (outside strings, numbers, literals).
    fn between_tokens(&self) -> bool {
        !matches!(
            self.state,
            State::Str { .. }
                | State::Escape { .. }
                | State::Unicode { .. }
                | State::Literal { .. }
                | State::Number(_)
        )
    }

    /// Sets `offset` to the position of byte `i` of the current chunk.
    fn offset_at(&mut self, i: u64) {
        self.offset = self.chunk_base + i;
    }

    /// Ends the input: it must have been exactly one complete value.
    pub(crate) fn finish(mut self) -> Result<(), String> {
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        if !self.utf8_carry.is_empty() {
            return Err(self.fail("invalid UTF-8 at the end of the input".into()));
        }
        match self.state {
            State::Done => Ok(()),
            State::AfterValue if self.stack.is_empty() => Ok(()),
            State::Number(n) if n.complete() && self.stack.is_empty() => Ok(()),
            State::Value if self.stack.is_empty() => {
                Err(self.fail("the input is empty or only whitespace".into()))
            }
            _ => Err(self.fail("unexpected end of input (an unfinished value)".into())),
        }
    }

    fn fail(&mut self, what: String) -> String {
        let column = (self.offset + 1).saturating_sub(self.line_start);
        let message = format!("{what} at line {} column {column}", self.line);
        self.error = Some(message.clone());
        message
    }

    /// Validates UTF-8 across chunk boundaries: an incomplete sequence at the
    /// end of a chunk is carried over and completed by the next one.
    fn check_utf8(&mut self, chunk: &[u8]) -> Result<(), String> {
        let mut rest = chunk;
        if let Some(&lead) = self.utf8_carry.first() {
            let len = if lead < 0xE0 {
                2
            } else if lead < 0xF0 {
                3
            } else {
                4
            };
            let take = (len - self.utf8_carry.len()).min(rest.len());
            self.utf8_carry.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if self.utf8_carry.len() < len {
                return Ok(());
            }
            if std::str::from_utf8(&self.utf8_carry).is_err() {
                return Err(self.fail("invalid UTF-8".into()));
            }
            self.utf8_carry.clear();
        }
        match std::str::from_utf8(rest) {
            Ok(_) => Ok(()),
            Err(e) if e.error_len().is_none() => {
                self.utf8_carry = rest[e.valid_up_to()..].to_vec();
                Ok(())
            }
            Err(_) => Err(self.fail("invalid UTF-8".into())),
        }
    }

    fn start_value(&mut self, b: u8) -> Result<(), String> {
        self.state = match b {
            b'"' => State::Str { key: false },
            b'{' => {
                self.stack.push(Container::Object);
                State::ObjectFirst
            }
            b'[' => {
                self.stack.push(Container::Array);
                State::ArrayFirst
            }
            b't' => State::Literal {
                word: b"true",
                at: 1,
            },
            b'f' => State::Literal {
                word: b"false",
                at: 1,
            },
            b'n' => State::Literal {
                word: b"null",
                at: 1,
            },
            b'-' => State::Number(NumberState::Minus),
            b'0' => State::Number(NumberState::Zero),
            b'1'..=b'9' => State::Number(NumberState::Int),
            _ => return Err(format!("expected a value, found {}", show(b))),
        };
        Ok(())
    }

    fn end_value(&mut self) {
        self.state = if self.stack.is_empty() {
            State::Done
        } else {
            State::AfterValue
        };
    }

    fn close(&mut self, b: u8) -> Result<(), String> {
        let expected = match self.stack.pop() {
            Some(Container::Array) => b']',
            Some(Container::Object) => b'}',
            None => return Err(format!("unexpected {}", show(b))),
        };
        if b != expected {
            return Err(format!(
                "expected '{}', found {}",
                expected as char,
                show(b)
            ));
        }
        self.end_value();
        Ok(())
    }

    #[inline]
    fn step(&mut self, b: u8) -> Result<(), String> {
        match self.state {
            State::Str { key } => match b {
                b'"' => {
                    if key {
                        self.state = State::Colon;
                    } else {
                        self.end_value();
                    }
                }
                b'\\' => self.state = State::Escape { key },
                0x00..=0x1F => return Err("control character in a string".into()),
                _ => {}
            },
            State::Escape { key } => {
                self.state = match b {
                    b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => State::Str { key },
                    b'u' => State::Unicode { key, left: 4 },
                    _ => return Err(format!("invalid escape {}", show(b))),
                }
            }
            State::Unicode { key, left } => {
                if !b.is_ascii_hexdigit() {
                    return Err(format!(
                        "invalid \\u escape: {} is not a hex digit",
                        show(b)
                    ));
                }
                self.state = if left == 1 {
                    State::Str { key }
                } else {
                    State::Unicode {
                        key,
                        left: left - 1,
                    }
                };
            }
            State::Literal { word, at } => {
                if word.get(at as usize) != Some(&b) {
                    return Err(format!(
                        "invalid literal: expected {:?}",
                        String::from_utf8_lossy(word)
                    ));
                }
                if at as usize + 1 == word.len() {
                    self.end_value();
                } else {
                    self.state = State::Literal { word, at: at + 1 };
                }
            }
            State::Number(n) => {
                use NumberState::*;
                let next = match (n, b) {
                    (Minus, b'0') => Some(Zero),
                    (Minus, b'1'..=b'9') => Some(Int),
                    (Int, b'0'..=b'9') => Some(Int),
                    (Zero | Int, b'.') => Some(Dot),
                    (Zero | Int | Frac, b'e' | b'E') => Some(Exp),
                    (Dot | Frac, b'0'..=b'9') => Some(Frac),
                    (Exp, b'+' | b'-') => Some(ExpSign),
                    (Exp | ExpSign | ExpDigits, b'0'..=b'9') => Some(ExpDigits),
                    _ => None,
                };
                match next {
                    Some(s) => self.state = State::Number(s),
                    None if n.complete() => {
                        self.end_value();
                        return self.step(b);
                    }
                    None => return Err(format!("invalid number: unexpected {}", show(b))),
                }
            }
            _ if is_ws(b) => {
                if b == b'\n' {
                    self.line += 1;
                    self.line_start = self.offset + 1;
                }
            }
            State::Value => self.start_value(b)?,
            State::ArrayFirst => {
                if b == b']' {
                    self.close(b)?;
                } else {
                    self.start_value(b)?;
                }
            }
            State::ObjectFirst | State::Key => match b {
                b'"' => self.state = State::Str { key: true },
                b'}' if self.state == State::ObjectFirst => self.close(b)?,
                _ => return Err(format!("expected a string key, found {}", show(b))),
            },
            State::Colon => {
                if b != b':' {
                    return Err(format!("expected ':', found {}", show(b)));
                }
                self.state = State::Value;
            }
            State::AfterValue => match (b, self.stack.last()) {
                (b',', Some(Container::Array)) => self.state = State::Value,
                (b',', Some(Container::Object)) => self.state = State::Key,
                (b']' | b'}', _) => self.close(b)?,
                _ => {
                    return Err(format!(
                        "expected ',' or a closing bracket, found {}",
                        show(b)
                    ));
                }
            },
            State::Done => {
                return Err(format!(
                    "trailing characters after the JSON value: {}",
                    show(b)
                ));
            }
        }
        Ok(())
    }
}

const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);

/// Whether any byte of `word` is zero (the classic SWAR test).
fn has_zero_byte(word: u64) -> bool {
    word.wrapping_sub(ONES) & !word & HIGHS != 0
}

/// Length of the leading run of string bytes that need no attention: not
/// '"', not '\\', not a control byte. Eight bytes at a time while it can.
fn plain_string_run(bytes: &[u8]) -> usize {
    let mut i = 0;
    while let Some(word) = bytes.get(i..i + 8) {
        let word = u64::from_ne_bytes([
            word[0], word[1], word[2], word[3], word[4], word[5], word[6], word[7],
        ]);
        let quote = has_zero_byte(word ^ u64::from_ne_bytes([b'"'; 8]));
        let backslash = has_zero_byte(word ^ u64::from_ne_bytes([b'\\'; 8]));
        // A byte below 0x20 (and not above 0x7F, which is UTF-8) leaves a
        // high bit after subtracting 0x20 from every byte.
        let control = word.wrapping_sub(ONES * 0x20) & !word & HIGHS != 0;
        if quote || backslash || control {
            break;
        }
        i += 8;
    }
    i + bytes[i..]
        .iter()
        .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
        .unwrap_or(bytes.len() - i)
}

/// Length of the leading run of spaces, tabs and carriage returns.
fn blank_run(bytes: &[u8]) -> usize {
    let mut i = 0;
    while bytes.get(i..i + 8).is_some_and(|w| w == b"        ") {
        i += 8;
    }
    i + bytes[i..]
        .iter()
        .position(|&b| !matches!(b, b' ' | b'\t' | b'\r'))
        .unwrap_or(bytes.len() - i)
}

fn show(b: u8) -> String {
    if b.is_ascii_graphic() {
        format!("'{}'", b as char)
    } else {
        format!("byte 0x{b:02x}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn check(input: &[u8]) -> Result<(), String> {
        let mut c = JsonCheck::default();
        c.feed(input)?;
        c.finish()
    }

    fn check_chunked(input: &[u8], size: usize) -> Result<(), String> {
        let mut c = JsonCheck::default();
        for chunk in input.chunks(size.max(1)) {
            c.feed(chunk)?;
        }
        c.finish()
    }

    /// serde_json's verdict, ignoring limits that are not about well-formedness.
    fn serde_verdict(input: &[u8]) -> Option<bool> {
        match serde_json::from_slice::<serde_json::Value>(input) {
            Ok(_) => Some(true),
            Err(e)
                if e.to_string().contains("out of range")
                    || e.to_string().contains("recursion limit") =>
            {
                None
            }
            Err(_) => Some(false),
        }
    }

    #[test]
    fn accepts_well_formed_documents() {
        for ok in [
            &b"{}"[..],
            b"[]",
            b" \n\t[1, -0, 0.5, -1.25e+10, 3E-2, true, false, null, \"a\\\"\\u00e9\\n\", {\"k\": [{}]}] \n",
            b"\"just a string\"",
            b"42",
            "{\"é\": \"日本\"}".as_bytes(),
            include_bytes!("../samples/kopi-metadata.json"),
        ] {
            assert_eq!(check(ok), Ok(()), "{:?}", String::from_utf8_lossy(ok));
        }
    }

    #[test]
    fn rejects_malformed_documents_with_a_position() {
        for (bad, needle) in [
            (&b""[..], "empty"),
            (b"   ", "empty"),
            (b"{", "end of input"),
            (b"[1,]", "expected a value"),
            (b"[1 2]", "expected ','"),
            (b"{\"a\" 1}", "expected ':'"),
            (b"{1:2}", "string key"),
            (b"{\"a\":1,}", "string key"),
            (b"[01]", "expected ','"),
            (b"[1.]", "invalid number"),
            (b"-", "end of input"),
            (b"tru", "end of input"),
            (b"nul!", "invalid literal"),
            (b"\"a\\x\"", "invalid escape"),
            (b"\"\\u12G4\"", "hex digit"),
            (b"\"tab\there\"", "control character"),
            (b"{} {}", "trailing characters"),
            (b"[1]]", "trailing characters"),
            (b"[1}", "expected ']'"),
            (b"\"\xff\"", "UTF-8"),
        ] {
            let err = check(bad).expect_err(&String::from_utf8_lossy(bad));
            assert!(
                err.contains(needle) && err.contains("line 1 column"),
                "{bad:?}: {err}"
            );
        }
        let err = check(b"{\n  \"a\": [1, 2,, 3]\n}").expect_err("double comma");
        assert!(err.ends_with("line 2 column 14"), "the second comma: {err}");
    }

    #[test]
    fn utf8_split_across_chunks_is_fine_and_broken_utf8_is_not() {
        let text = "[\"日本語のテキスト\", \"é\"]".as_bytes();
        for size in 1..8 {
            assert_eq!(check_chunked(text, size), Ok(()), "chunk size {size}");
        }
        let mut broken = text.to_vec();
        broken[3] = 0xC0;
        for size in 1..8 {
            assert!(check_chunked(&broken, size).is_err(), "chunk size {size}");
        }
    }

    fn json_value() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            (-1e300f64..1e300).prop_map(serde_json::Value::from),
            ".{0,12}".prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(6, 64, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::from),
                proptest::collection::btree_map(".{0,6}", inner, 0..6)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn every_serialized_value_is_accepted_in_any_chunking(v in json_value(), pretty in any::<bool>(), size in 1usize..64) {
            let text = if pretty { serde_json::to_vec_pretty(&v) } else { serde_json::to_vec(&v) }.unwrap();
            prop_assert_eq!(check_chunked(&text, size), Ok(()));
        }

        #[test]
        fn agrees_with_serde_json_on_mutated_documents(
            v in json_value(),
            at in any::<prop::sample::Index>(),
            byte in prop::sample::select(b"{}[]\",:\\ 0123456789-+.eEtrufalsn\x01\xc3\xa9x".to_vec()),
            kind in 0u8..3,
            size in 1usize..32,
        ) {
            let mut text = serde_json::to_vec(&v).unwrap();
            let i = at.index(text.len() + 1);
            match kind {
                0 if i < text.len() => text[i] = byte,
                1 => text.insert(i, byte),
                _ if i < text.len() => { text.remove(i); }
                _ => text.push(byte),
            }
            if let Some(expected) = serde_verdict(&text) {
                prop_assert_eq!(check_chunked(&text, size).is_ok(), expected, "{:?}", String::from_utf8_lossy(&text));
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512), size in 1usize..16) {
            let _ = check_chunked(&bytes, size);
        }
    }
}

#[cfg(test)]
mod run_tests {
    use super::*;

    #[test]
    fn plain_string_runs_stop_exactly_at_the_first_special_byte() {
        for special in [b'"', b'\\', 0x00, 0x1F, b'\n'] {
            for at in 0..24 {
                let mut bytes = "abcdéfghijklmnopqrstuvwxyz".as_bytes().to_vec();
                bytes.truncate(24);
                bytes[at] = special;
                assert_eq!(plain_string_run(&bytes), at, "special {special:#x} at {at}");
            }
        }
        assert_eq!(
            plain_string_run("ünïcödé text without specials".as_bytes()),
            "ünïcödé text without specials".len()
        );
    }

    #[test]
    fn blank_runs_count_spaces_tabs_and_returns() {
        assert_eq!(blank_run(b"                 x"), 17);
        assert_eq!(blank_run(b" \t\r \n"), 4);
        assert_eq!(blank_run(b""), 0);
        assert_eq!(blank_run(b"            "), 12);
    }
}
