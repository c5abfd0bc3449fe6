//! A streaming JSON well-formedness check (RFC 8259), fed chunk by chunk.
//!
//! The payload passes through it once, as it is streamed into the temp file,
//! so validation costs no second pass and no memory beyond the nesting stack.
//! It builds nothing: it only answers "is this exactly one JSON value?" and,
//! if not, where the first error is (line and column, counted in bytes).
//! It stops a bad source at its first error and has no recursion limit.
//!
//! Speed comes from the block fast path (`blocks`): each whole 64-byte
//! block of the chunk is classified into bitmasks with SIMD compares
//! (`block`), string spans follow from the quotes, and only the bytes that
//! start a token are visited, one grammar-table look-up each (`gap`); a
//! number or literal is checked from its first byte, in its common short
//! forms on one eight-byte word (`short_scalar`). What is left of a chunk after its last whole block goes through a
//! second fast path (`tokens`: whitespace runs and whole strings scanned
//! eight bytes at a time over `u64` words, numbers, literals and keys in
//! tight loops). Anything neither can finish inside the current chunk (a
//! token cut by the chunk's end) or does not like (every error) is handed,
//! from a clean point before it, to the byte-at-a-time state machine
//! (`step`), which is the reference: errors therefore read the same,
//! position included, whatever the chunking.
//! UTF-8 is validated per chunk: its all-ASCII prefix by one OR per 16
//! bytes (`block::ascii_prefix`), the rest with `std::str::from_utf8`. Its verdicts
//! are checked against serde_json's by property tests, whole, pretty and
//! chunked down to single bytes. `snapcache-bench` reports its GB/s next to
//! serde_json's `from_slice::<IgnoredAny>` (docs/performance.md).

mod block;
mod gap;

use block::BLOCK;
use gap::Gap;

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
    /// Inside `\uXXXX`, with this many hex digits still to come: `code`
    /// holds those read so far, `low` says it is the second half of a
    /// surrogate pair (which must be a low surrogate).
    Unicode {
        key: bool,
        left: u8,
        code: u16,
        low: bool,
    },
    /// After the `\uXXXX` of a high surrogate: the `\` (`u` false) or the
    /// `u` (`u` true) of its low half's escape must come next. serde_json
    /// refuses a lone surrogate in a string (it cannot be UTF-8), and so
    /// would any program reading the published JSON into strings.
    Surrogate { key: bool, u: bool },
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

impl Gap {
    /// The state machine's state for this one (the stack says the rest).
    fn state(self) -> State {
        match self {
            Gap::Top | Gap::ArrayNext | Gap::ObjectValue => State::Value,
            Gap::ArrayFirst => State::ArrayFirst,
            Gap::ObjectFirst => State::ObjectFirst,
            Gap::ObjectKey => State::Key,
            Gap::Colon => State::Colon,
            Gap::AfterArray | Gap::AfterObject => State::AfterValue,
            Gap::Done => State::Done,
        }
    }
}

impl Gap {
    /// A state from which a string's opening quote leads to this one: not
    /// always the one it came from (`ObjectKey` for `ObjectFirst`,
    /// `ArrayNext` for `ArrayFirst`), but `step` treats a quote the same
    /// way in both.
    /// (A table look-up, not a jump table: it runs for most blocks.)
    fn before_string(code: u8) -> u8 {
        const BEFORE: [u8; 16] = {
            let mut before = [0u8; 16];
            let mut s = 0;
            while s < 16 {
                before[s] = s as u8;
                s += 1;
            }
            before[Gap::Colon as usize] = Gap::ObjectKey as u8;
            before[Gap::AfterArray as usize] = Gap::ArrayNext as u8;
            before[Gap::AfterObject as usize] = Gap::ObjectValue as u8;
            before[Gap::Done as usize] = Gap::Top as u8;
            before
        };
        BEFORE[usize::from(code & 15)]
    }
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

/// The streaming JSON check that publishes run by default, for callers
/// that want to check bytes the same way themselves: feed the document in
/// chunks of any size, then [`finish`](JsonCheck::finish). Memory stays
/// bounded by the nesting depth (one byte per level), whatever the size;
/// there is no nesting limit. Errors name the line and column (in bytes).
/// It accepts what serde_json accepts into a `serde_json::Value` (beyond
/// that, numbers out of f64's range and nesting deeper than serde_json's
/// limit): a `\u` escape of a UTF-16 surrogate only as half of a pair.
///
/// ```
/// use snapcache::JsonCheck;
/// let mut check = JsonCheck::default();
/// check.feed(br#"{"packages": [1, 2"#)?;
/// check.feed(br#", 3]}"#)?;
/// check.finish()?;
///
/// let mut bad = JsonCheck::default();
/// let err = bad.feed(b"[1,]").expect_err("trailing comma");
/// assert!(err.contains("line 1 column 4"), "{err}");
/// # Ok::<(), String>(())
/// ```
#[derive(Debug)]
pub struct JsonCheck {
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
    /// Offset of the carried sequence's lead byte.
    utf8_carry_at: u64,
    error: Option<String>,
    /// Offset before which the block fast path is not tried again (it
    /// declined a block there, which the state machine must go through).
    blocks_from: u64,
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
            utf8_carry_at: 0,
            error: None,
            blocks_from: 0,
        }
    }
}

/// Where a chunk's UTF-8 went wrong.
#[derive(Debug, Clone, Copy)]
struct BadUtf8 {
    /// Offset of the lead byte of the invalid sequence.
    at: u64,
    /// How much of the chunk to check for structure first (through that
    /// lead byte, when it is in this chunk).
    check_first: usize,
}

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

impl JsonCheck {
    /// Feeds the next chunk. Returns the first error, and keeps returning it.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<(), String> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        // The first error in byte order wins, whatever the chunking: the
        // structure is checked up to and including the lead byte of an
        // invalid UTF-8 sequence before that sequence is reported.
        let utf8 = self.check_utf8(chunk);
        let upto = match utf8 {
            Ok(()) => chunk.len(),
            Err(bad) => bad.check_first,
        };
        self.structure(&chunk[..upto])?;
        if let Err(bad) = utf8 {
            self.offset = bad.at;
            return Err(self.fail("invalid UTF-8".into()));
        }
        Ok(())
    }

    /// Checks the structure of `chunk` (its UTF-8 is checked apart).
    fn structure(&mut self, chunk: &[u8]) -> Result<(), String> {
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
            // Fast path: whole tokens between tokens; it stops at the end of
            // the chunk or at a token it leaves to `step` (one cut by the
            // chunk's end, and every error, so errors read the same).
            if self.between_tokens() {
                i = self.blocks(chunk, i);
                i = self.tokens(chunk, i);
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
                | State::Surrogate { .. }
                | State::Literal { .. }
                | State::Number(_)
        )
    }

    /// Sets `offset` to the position of byte `i` of the current chunk.
    fn offset_at(&mut self, i: u64) {
        self.offset = self.chunk_base + i;
    }

    /// Ends the input: it must have been exactly one complete value.
    pub fn finish(mut self) -> Result<(), String> {
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
    fn check_utf8(&mut self, chunk: &[u8]) -> Result<(), BadUtf8> {
        let mut rest = chunk;
        let mut rest_at = 0;
        // Complete a sequence carried from the previous chunk, a byte at a
        // time, so that a bad continuation byte is caught where it is.
        while !self.utf8_carry.is_empty() {
            let Some((&b, tail)) = rest.split_first() else {
                return Ok(());
            };
            self.utf8_carry.push(b);
            rest = tail;
            rest_at += 1;
            match std::str::from_utf8(&self.utf8_carry) {
                Ok(_) => self.utf8_carry.clear(),
                Err(e) if e.error_len().is_none() => {}
                // Its lead byte, in an earlier chunk, is where it went wrong.
                Err(_) => {
                    return Err(BadUtf8 {
                        at: self.utf8_carry_at,
                        check_first: 0,
                    });
                }
            }
        }
        // An ASCII prefix is valid as it is; `from_utf8` checks the rest.
        let ascii = block::ascii_prefix(rest);
        let (rest, rest_at) = (&rest[ascii..], rest_at + ascii);
        match std::str::from_utf8(rest) {
            Ok(_) => Ok(()),
            Err(e) if e.error_len().is_none() => {
                self.utf8_carry = rest[e.valid_up_to()..].to_vec();
                self.utf8_carry_at = self.chunk_base + (rest_at + e.valid_up_to()) as u64;
                Ok(())
            }
            Err(e) => {
                let lead = rest_at + e.valid_up_to();
                Err(BadUtf8 {
                    at: self.chunk_base + lead as u64,
                    check_first: lead + 1,
                })
            }
        }
    }

    /// The fast path, from a state between tokens: whitespace runs and whole
    /// tokens found entirely in `chunk`, scanned with tight loops instead of
    /// one `step` per byte. Returns where it stopped: the end of the chunk,
    /// or the first byte of a token it declined, with `self.state` being the
    /// state before that byte, so that `step` goes on from there exactly as
    /// if it had seen every byte. It declines a token cut by the end of the
    /// chunk and anything `step` would reject; it never accepts anything
    /// `step` would not (the property tests compare both with serde_json).
    fn tokens(&mut self, chunk: &[u8], mut i: usize) -> usize {
        // The state lives in a local (a register) while the loop runs.
        let mut state = self.state;
        let stopped = loop {
            i = self.whitespace(chunk, i);
            let Some(&b) = chunk.get(i) else {
                break i;
            };
            let next = match state {
                State::Value => self.value(chunk, i, b, &mut state),
                State::ArrayFirst if b == b']' => self.close_fast(i, b, &mut state),
                State::ArrayFirst => self.value(chunk, i, b, &mut state),
                State::ObjectFirst | State::Key if b == b'"' => {
                    // A key, and (the usual case) its colon right after it.
                    string_end(chunk, i + 1).map(|end| {
                        if chunk.get(end) == Some(&b':') {
                            state = State::Value;
                            end + 1
                        } else {
                            state = State::Colon;
                            end
                        }
                    })
                }
                State::ObjectFirst if b == b'}' => self.close_fast(i, b, &mut state),
                State::Colon if b == b':' => {
                    state = State::Value;
                    Some(i + 1)
                }
                State::AfterValue => match (b, self.stack.last()) {
                    (b',', Some(Container::Array)) => {
                        state = State::Value;
                        Some(i + 1)
                    }
                    (b',', Some(Container::Object)) => {
                        state = State::Key;
                        Some(i + 1)
                    }
                    (b']' | b'}', _) => self.close_fast(i, b, &mut state),
                    _ => None,
                },
                _ => None,
            };
            match next {
                Some(n) => i = n,
                None => break i,
            }
        };
        self.state = state;
        stopped
    }

    /// The block fast path, from a state between tokens at `start`: whole
    /// 64-byte blocks of `chunk` are classified into bitmasks (`block`),
    /// then only the bytes that start a token are visited, found with
    /// `trailing_zeros` on the masks, each with one look-up in the grammar
    /// table (`gap`): whitespace and string bodies are never looked at one
    /// by one. String bodies are checked by mask (no control byte inside,
    /// every escape valid); numbers and literals are checked from their
    /// first byte (`scalar_token`: the short forms on one eight-byte word,
    /// the rest as in `tokens`), and the rest of their bytes masked off.
    /// The table is walked with the state kept as its row's offset, so a
    /// plain token (a quote, `:`, `,`, a scalar's first byte) costs one
    /// load, one OR and one compare; brackets and scalars take the branch
    /// out of that loop.
    ///
    /// Returns a clean point: an index with `self.state`, the stack and the
    /// line count exactly as `step` would have left them there, so that
    /// `tokens` and `step` go on from it. It stops at the last block that
    /// fits in the chunk (a string still open there is handed back from its
    /// opening quote), and before a block or token that holds anything
    /// unusual (every error): the reference state machine then finds the
    /// error and its exact position, whatever the chunking.
    #[inline(never)]
    fn blocks(&mut self, chunk: &[u8], start: usize) -> usize {
        if chunk.len().saturating_sub(start) < BLOCK
            || self.chunk_base + (start as u64) < self.blocks_from
        {
            return start;
        }
        let Some(gap) = self.gap() else {
            return start;
        };
        // A `Gap as u8`, for the table.
        let mut gap = gap as u8;
        let mut line = self.line;
        let mut line_start = self.line_start;
        let mut pos = start;
        // Carried from one block to the next: inside a string (all ones or
        // zero), the first byte escaped.
        let mut in_string = 0u64;
        let mut escape_carry = false;
        // The string still open at the end of the last block, and the state
        // before it: where to hand back if the blocks stop inside it.
        let mut string_at = start;
        let mut before_string = gap;
        // The end of the last number or literal, which may lie in the next block.
        let mut scalar_end = start;
        let stop = 'blocks: loop {
            let Some(block) = chunk.get(pos..).and_then(<[u8]>::first_chunk::<BLOCK>) else {
                break None;
            };
            let block::Spans {
                classes: c,
                quotes,
                inside,
                escaped,
                escape_out,
            } = block::spans(block, in_string, escape_carry);
            // A control byte in a string, or one that is not whitespace.
            let mut unusual = c.control & (inside | !c.whitespace);
            if escaped != 0 || c.backslash != 0 {
                unusual |= c.backslash & !inside;
                if !escapes_valid(chunk, pos, escaped & inside) {
                    unusual = u64::MAX;
                }
            }
            if unusual != 0 {
                self.blocks_from = self.chunk_base + (pos + BLOCK) as u64;
                break None;
            }
            // Token starts: every byte outside strings that is not
            // whitespace, and every opening quote; the rest of a number or
            // literal is masked off once it has been scanned.
            let strings = inside | quotes;
            let openings = quotes & inside;
            let mut starts = (!(c.whitespace | strings) | openings) & beyond(scalar_end, pos);
            // The state as its table row's offset while the tokens are walked.
            let mut row = gap::row(gap);
            while starts != 0 {
                let bit = starts.trailing_zeros() as usize & (BLOCK - 1);
                let b = block[bit];
                let next = gap::flat(row, b);
                if next < gap::SPECIAL {
                    row = usize::from(next);
                    starts &= starts - 1;
                    continue;
                }
                starts &= starts - 1;
                let at = pos + bit;
                // Scalars first: they are the most common of these.
                let packed = (next & 0xFF) as u8;
                let state = if packed < gap::OPEN_ARRAY {
                    match scalar_token(chunk, at, b) {
                        Some(end) => {
                            scalar_end = end;
                            starts &= beyond(end, pos);
                            packed & 15
                        }
                        None => break 'blocks Some((bit, at, (row >> 8) as u8, c.newline)),
                    }
                } else if packed == gap::OPEN_ARRAY {
                    self.stack.push(Container::Array);
                    Gap::ArrayFirst as u8
                } else if packed == gap::OPEN_OBJECT {
                    self.stack.push(Container::Object);
                    Gap::ObjectFirst as u8
                } else if packed == gap::CLOSE {
                    self.stack.pop();
                    match self.stack.last() {
                        Some(Container::Array) => Gap::AfterArray as u8,
                        Some(Container::Object) => Gap::AfterObject as u8,
                        None => Gap::Done as u8,
                    }
                } else {
                    break 'blocks Some((bit, at, (row >> 8) as u8, c.newline));
                };
                row = gap::row(state);
            }
            gap = (row >> 8) as u8;
            if c.newline != 0 {
                line += u64::from(c.newline.count_ones());
                line_start =
                    self.chunk_base + (pos + BLOCK - c.newline.leading_zeros() as usize) as u64;
            }
            in_string = ((inside as i64) >> 63) as u64;
            if in_string != 0 && openings != 0 {
                // The block ends inside the string its last token opened.
                string_at = pos + 63 - openings.leading_zeros() as usize;
                before_string = Gap::before_string(gap);
            }
            escape_carry = escape_out;
            pos += BLOCK;
        };
        let (at, gap) = match stop {
            // Hand this token to `step`, with the lines before it counted.
            Some((bit, at, before, newline)) => {
                let earlier = newline & ((1u64 << bit) - 1);
                if earlier != 0 {
                    line += u64::from(earlier.count_ones());
                    line_start =
                        self.chunk_base + (pos + BLOCK - earlier.leading_zeros() as usize) as u64;
                }
                self.blocks_from = self.chunk_base + (pos + BLOCK) as u64;
                (at, before)
            }
            // No line feed inside a string: the line count holds at its quote.
            None if in_string != 0 => (string_at, before_string),
            None => (pos.max(scalar_end), gap),
        };
        self.state = Gap::from_code(gap).state();
        self.line = line;
        self.line_start = line_start;
        at
    }

    /// The current state as a [`Gap`], if it is between tokens.
    fn gap(&self) -> Option<Gap> {
        let top = self.stack.last();
        Some(match (self.state, top) {
            (State::Value, None) => Gap::Top,
            (State::Value, Some(Container::Array)) => Gap::ArrayNext,
            (State::Value, Some(Container::Object)) => Gap::ObjectValue,
            (State::ArrayFirst, _) => Gap::ArrayFirst,
            (State::ObjectFirst, _) => Gap::ObjectFirst,
            (State::Key, _) => Gap::ObjectKey,
            (State::Colon, _) => Gap::Colon,
            (State::AfterValue, Some(Container::Array)) => Gap::AfterArray,
            (State::AfterValue, Some(Container::Object)) => Gap::AfterObject,
            (State::Done, _) => Gap::Done,
            _ => return None,
        })
    }

    /// Skips whitespace from `i`, counting lines; returns the next index.
    #[inline]
    fn whitespace(&mut self, chunk: &[u8], mut i: usize) -> usize {
        loop {
            match chunk.get(i) {
                Some(b' ') => i += 1 + leading_spaces(chunk, i + 1),
                Some(b'\n') => {
                    self.line += 1;
                    self.line_start = self.chunk_base + i as u64 + 1;
                    i += 1;
                }
                Some(b'\t' | b'\r') => i += 1,
                _ => return i,
            }
        }
    }

    /// A whole value starting with `b` at `i`: containers are opened,
    /// scalars scanned to their end. `None` (state untouched) to decline.
    #[inline]
    fn value(&mut self, chunk: &[u8], i: usize, b: u8, state: &mut State) -> Option<usize> {
        let end = match b {
            b'"' => string_end(chunk, i + 1)?,
            b'{' => {
                self.stack.push(Container::Object);
                *state = State::ObjectFirst;
                return Some(i + 1);
            }
            b'[' => {
                self.stack.push(Container::Array);
                *state = State::ArrayFirst;
                return Some(i + 1);
            }
            b't' => literal_end(chunk, i, b"true")?,
            b'f' => literal_end(chunk, i, b"false")?,
            b'n' => literal_end(chunk, i, b"null")?,
            b'-' | b'0'..=b'9' => number_end(chunk, i)?,
            _ => return None,
        };
        *state = self.after_value();
        Some(end)
    }

    /// Closes the innermost container with `b` at `i`, if it matches.
    #[inline]
    fn close_fast(&mut self, i: usize, b: u8, state: &mut State) -> Option<usize> {
        let expected = match self.stack.last()? {
            Container::Array => b']',
            Container::Object => b'}',
        };
        if b != expected {
            return None;
        }
        self.stack.pop();
        *state = self.after_value();
        Some(i + 1)
    }

    /// The state after a complete value.
    #[inline]
    fn after_value(&self) -> State {
        if self.stack.is_empty() {
            State::Done
        } else {
            State::AfterValue
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
                    b'u' => State::Unicode {
                        key,
                        left: 4,
                        code: 0,
                        low: false,
                    },
                    _ => return Err(format!("invalid escape {}", show(b))),
                }
            }
            State::Unicode {
                key,
                left,
                code,
                low,
            } => {
                let Some(digit) = char::from(b).to_digit(16) else {
                    return Err(format!(
                        "invalid \\u escape: {} is not a hex digit",
                        show(b)
                    ));
                };
                // At most four digits: the shifts never lose one.
                let code = code << 4 | digit as u16;
                self.state = if left > 1 {
                    State::Unicode {
                        key,
                        left: left - 1,
                        code,
                        low,
                    }
                } else {
                    match (low, code) {
                        (false, 0xD800..=0xDBFF) => State::Surrogate { key, u: false },
                        (false, 0xDC00..=0xDFFF) => {
                            return Err(format!(
                                "lone low surrogate \\u{code:04X} in a string (it may only follow a high surrogate, \\uD800 to \\uDBFF)"
                            ));
                        }
                        (false, _) | (true, 0xDC00..=0xDFFF) => State::Str { key },
                        (true, _) => {
                            return Err(format!(
                                "unpaired high surrogate in a string: \\u{code:04X} is not a low surrogate (\\uDC00 to \\uDFFF)"
                            ));
                        }
                    }
                };
            }
            State::Surrogate { key, u } => {
                self.state = match (u, b) {
                    (false, b'\\') => State::Surrogate { key, u: true },
                    (true, b'u') => State::Unicode {
                        key,
                        left: 4,
                        code: 0,
                        low: true,
                    },
                    _ => {
                        return Err(
                            "unpaired high surrogate in a string: the \\u escape of a low surrogate (\\uDC00 to \\uDFFF) must follow it"
                                .into(),
                        );
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

/// The JSON check's first stages alone, over the whole 64-byte blocks of
/// `bytes`, for `snapcache-bench` (feature `bench-stages`; not an API):
/// with `visit` false, what [`JsonCheck`]'s block walk does before it looks
/// at any token (the classification, the string spans and the mask of
/// token starts); with `visit` true, that and a load of every token's first
/// byte, which is the least any check that steps from token to token does.
/// Against the whole check they tell what its walk over the tokens costs.
/// Returns a number that depends on every byte, so that nothing is skipped.
///
/// ```
/// let doc = format!("[{}1]", "1, ".repeat(40));
/// let classified = snapcache::json_check_stages(doc.as_bytes(), false);
/// let visited = snapcache::json_check_stages(doc.as_bytes(), true);
/// assert!(visited > classified, "visiting adds each token's first byte");
/// ```
#[cfg(feature = "bench-stages")]
pub fn json_check_stages(bytes: &[u8], visit: bool) -> u64 {
    let mut in_string = 0u64;
    let mut escape_carry = false;
    let mut sum = 0u64;
    for block in bytes.chunks_exact(BLOCK) {
        let Some(block) = block.first_chunk::<BLOCK>() else {
            break;
        };
        let block::Spans {
            classes: c,
            quotes,
            inside,
            escape_out,
            ..
        } = block::spans(block, in_string, escape_carry);
        let unusual = c.control & (inside | !c.whitespace);
        let strings = inside | quotes;
        let mut starts = !(c.whitespace | strings) | (quotes & inside);
        sum = sum.wrapping_add(u64::from(starts.count_ones()) ^ unusual);
        if visit {
            while starts != 0 {
                let bit = starts.trailing_zeros() as usize & (BLOCK - 1);
                starts &= starts - 1;
                sum = sum.wrapping_add(u64::from(block[bit]));
            }
        }
        in_string = ((inside as i64) >> 63) as u64;
        escape_carry = escape_out;
    }
    sum
}

const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);

const SPACES: u64 = ONES * b' ' as u64;

/// The 8 bytes at `i`, if the slice has them.
#[inline]
fn word_at(bytes: &[u8], i: usize) -> Option<u64> {
    bytes
        .get(i..)
        .and_then(<[u8]>::first_chunk::<8>)
        .map(|w| u64::from_le_bytes(*w))
}

/// The high bit of every byte of `word` that a string cannot hold as is:
/// '"', '\\' or a control byte. The lowest bit set is exact (the
/// borrows of the SWAR tests only ever flag bytes above a true hit).
#[inline]
fn special_bytes(word: u64) -> u64 {
    let quote = word ^ (ONES * b'"' as u64);
    let backslash = word ^ (ONES * b'\\' as u64);
    let quote = quote.wrapping_sub(ONES) & !quote;
    let backslash = backslash.wrapping_sub(ONES) & !backslash;
    // A byte below 0x20 (and not above 0x7F, which is UTF-8) leaves a
    // high bit after subtracting 0x20 from every byte.
    let control = word.wrapping_sub(ONES * 0x20) & !word;
    (quote | backslash | control) & HIGHS
}

/// Length of the leading run of string bytes that need no attention: not
/// '"', not '\\', not a control byte. Eight bytes at a time while it can.
#[inline]
fn plain_string_run(bytes: &[u8]) -> usize {
    let mut i = 0;
    while let Some(word) = word_at(bytes, i) {
        let special = special_bytes(word);
        if special != 0 {
            return i + (special.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    i + bytes[i..]
        .iter()
        .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
        .unwrap_or(bytes.len() - i)
}

/// The index just after the closing quote of a string whose body starts at
/// `i`, or `None` if the string does not end in `bytes` or holds a control
/// byte or a bad escape (left to `step`, which says what is wrong).
#[inline]
fn string_end(bytes: &[u8], mut i: usize) -> Option<usize> {
    loop {
        i += plain_string_run(bytes.get(i..)?);
        match *bytes.get(i)? {
            b'"' => return Some(i + 1),
            b'\\' => match *bytes.get(i + 1)? {
                b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => i += 2,
                b'u' => {
                    let hex = bytes.get(i + 2..i + 6)?;
                    if !hex.iter().all(u8::is_ascii_hexdigit) || is_surrogate(hex) {
                        return None;
                    }
                    i += 6;
                }
                _ => return None,
            },
            _ => return None,
        }
    }
}

/// The bits of the block at `pos` from index `end` on (all of them if
/// `end` is before the block, none if after it).
#[inline]
fn beyond(end: usize, pos: usize) -> u64 {
    match end.saturating_sub(pos) {
        skip @ 0..BLOCK => u64::MAX << skip,
        _ => 0,
    }
}

/// Whether a byte cannot continue a number or literal: whitespace, a
/// structural character or a quote (which `step` then judges).
#[inline]
fn ends_scalar(b: u8) -> bool {
    matches!(
        b,
        b' ' | b'\t' | b'\n' | b'\r' | b'{' | b'}' | b'[' | b']' | b':' | b',' | b'"'
    )
}

/// The end of the number or literal starting with `b` at `i`, if it is
/// whole in `bytes` and followed by a byte that ends it (anything else,
/// `1x` or `truex`, is left to `step`).
#[inline]
fn scalar_token(bytes: &[u8], i: usize, b: u8) -> Option<usize> {
    if let Some(end) = short_scalar(bytes, i) {
        return Some(end);
    }
    let end = match b {
        b't' => literal_end(bytes, i, b"true")?,
        b'f' => literal_end(bytes, i, b"false")?,
        b'n' => literal_end(bytes, i, b"null")?,
        _ => number_end(bytes, i)?,
    };
    ends_scalar(*bytes.get(end)?).then_some(end)
}

/// Whether a byte ends a number or literal, as [`ends_scalar`] says, as
/// a table (one load instead of a chain of compares).
static ENDS_SCALAR: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = matches!(
            b as u8,
            b' ' | b'\t' | b'\n' | b'\r' | b'{' | b'}' | b'[' | b']' | b':' | b',' | b'"'
        );
        b += 1;
    }
    table
};

/// The end of the number or literal at `i` in its common short forms,
/// found on one eight-byte word: `true`, `false`, `null`, or up to seven
/// digits with no leading zero, followed by a byte that ends it. `None`
/// means "not sure" (longer numbers, signs, fractions, exponents, the end
/// of the chunk, errors): `scalar_token` then scans it byte by byte.
#[inline]
fn short_scalar(bytes: &[u8], i: usize) -> Option<usize> {
    let word = word_at(bytes, i)?;
    let byte = |n: usize| (word >> (8 * (n & 7))) as u8;
    // A digit is a byte whose XOR with '0' is at most 9: adding 0x76 to
    // that (its high bit cleared first, so that no byte carries into the
    // next) sets the high bit of every byte above 9.
    let x = word ^ (ONES * u64::from(b'0'));
    let not_digit = ((x & !HIGHS).wrapping_add(ONES * 0x76) | x) & HIGHS;
    let digits = (not_digit.trailing_zeros() / 8) as usize;
    let number = (1..8).contains(&digits)
        & ((byte(0) != b'0') | (digits == 1))
        & ENDS_SCALAR[usize::from(byte(digits))];
    if number {
        return Some(i + digits);
    }
    let four = word & 0xFFFF_FFFF;
    let literal4 = (four == u64::from(u32::from_le_bytes(*b"true")))
        | (four == u64::from(u32::from_le_bytes(*b"null")));
    if literal4 & ENDS_SCALAR[usize::from(byte(4))] {
        return Some(i + 4);
    }
    let five = word & 0xFF_FFFF_FFFF;
    let false5 = five == u64::from_le_bytes(*b"false\0\0\0");
    (false5 & ENDS_SCALAR[usize::from(byte(5))]).then_some(i + 5)
}

/// Whether every escaped byte of the block at `pos` (bits of `escaped`)
/// makes a valid escape: one of `"\/bfnrt`, or `u` and four hex digits,
/// which must be in `bytes` (a `\u` cut by the chunk's end is left to
/// `step`, like any invalid escape, and so is a surrogate's, whose pairing
/// `step` checks).
fn escapes_valid(bytes: &[u8], pos: usize, mut escaped: u64) -> bool {
    while escaped != 0 {
        let at = pos + escaped.trailing_zeros() as usize;
        escaped &= escaped - 1;
        match bytes.get(at) {
            Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => {}
            Some(b'u') => match bytes.get(at + 1..at + 5) {
                Some(hex) if hex.iter().all(u8::is_ascii_hexdigit) && !is_surrogate(hex) => {}
                _ => return false,
            },
            _ => return false,
        }
    }
    true
}

/// Whether the four hex digits of a `\u` escape name a UTF-16 surrogate
/// (`D800` to `DFFF`). The fast paths leave those to `step`, which checks
/// that they come in pairs; they are rare.
#[inline]
fn is_surrogate(hex: &[u8]) -> bool {
    matches!(hex.first(), Some(b'd' | b'D'))
        && matches!(hex.get(1), Some(b'8'..=b'9' | b'a'..=b'f' | b'A'..=b'F'))
}

/// The index after `word` at `i`, if it is there in full.
#[inline]
fn literal_end(bytes: &[u8], i: usize, word: &[u8]) -> Option<usize> {
    let end = i + word.len();
    (bytes.get(i..end)? == word).then_some(end)
}

/// Number of ASCII digits at `i`.
#[inline]
fn digits(bytes: &[u8], i: usize) -> usize {
    let rest = bytes.get(i..).unwrap_or_default();
    rest.iter()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(rest.len())
}

/// The index after a number starting at `i` (RFC 8259 grammar), or `None`
/// when it is malformed or may go on past the end of `bytes`.
#[inline]
fn number_end(bytes: &[u8], mut i: usize) -> Option<usize> {
    if bytes.get(i) == Some(&b'-') {
        i += 1;
    }
    match *bytes.get(i)? {
        b'0' => i += 1,
        b'1'..=b'9' => i += 1 + digits(bytes, i + 1),
        _ => return None,
    }
    if *bytes.get(i)? == b'.' {
        let n = digits(bytes, i + 1);
        if n == 0 {
            return None;
        }
        i += 1 + n;
    }
    if matches!(*bytes.get(i)?, b'e' | b'E') {
        i += 1;
        if matches!(*bytes.get(i)?, b'+' | b'-') {
            i += 1;
        }
        let n = digits(bytes, i);
        if n == 0 {
            return None;
        }
        i += n;
    }
    // The byte after the number must be in this chunk (else the number may
    // go on) and must end it (else `step` reports the error).
    match *bytes.get(i)? {
        b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-' => None,
        _ => Some(i),
    }
}

/// Number of spaces at `i`, eight at a time.
#[inline]
fn leading_spaces(bytes: &[u8], i: usize) -> usize {
    let mut n = 0;
    while let Some(word) = word_at(bytes, i + n) {
        let other = word ^ SPACES;
        if other != 0 {
            return n + (other.trailing_zeros() / 8) as usize;
        }
        n += 8;
    }
    let rest = bytes.get(i + n..).unwrap_or_default();
    n + rest.iter().position(|&b| b != b' ').unwrap_or(rest.len())
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

    /// The visiting stage loads exactly the token starts the block walk
    /// visits: every byte outside strings that is not whitespace, and every
    /// opening quote (so `visit − classify` is the sum of those bytes).
    #[cfg(feature = "bench-stages")]
    #[test]
    fn the_visiting_stage_loads_every_token_start_and_nothing_else() {
        let doc =
            br#"{"name": "temurin \"lts\"", "versions": [17, 21, true, null], "x": {"y": -1.5e3}}"#;
        let mut bytes = doc.repeat(4);
        bytes.truncate(bytes.len() / 64 * 64);
        let mut expected = 0u64;
        let (mut in_string, mut escaped) = (false, false);
        for &b in &bytes {
            if in_string {
                match (escaped, b) {
                    (true, _) => escaped = false,
                    (false, b'\\') => escaped = true,
                    (false, b'"') => in_string = false,
                    _ => {}
                }
            } else if b == b'"' {
                in_string = true;
                expected += u64::from(b);
            } else if !is_ws(b) {
                expected += u64::from(b);
            }
        }
        let classified = json_check_stages(&bytes, false);
        let visited = json_check_stages(&bytes, true);
        assert_eq!(visited.wrapping_sub(classified), expected);
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
        // A 4-byte lead followed by a quote: the UTF-8 error at the lead
        // byte comes first, not the structural one after the quote.
        let cut = b"[\"ab\xF0\"x]";
        let whole = check(cut).expect_err("invalid");
        assert!(
            whole.starts_with("invalid UTF-8 at line 1 column 5"),
            "{whole}"
        );
        for size in 1..8 {
            assert_eq!(
                check_chunked(cut, size),
                Err(whole.clone()),
                "chunk size {size}"
            );
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

        /// Whole documents (the fast path sees every token) and pretty ones
        /// (whitespace runs, newlines): same verdicts as serde_json, and the
        /// same error, position included, in one chunk as byte by byte.
        #[test]
        fn whole_and_pretty_documents_agree_with_serde_json_and_with_small_chunks(
            v in json_value(),
            pretty in any::<bool>(),
            at in any::<prop::sample::Index>(),
            byte in prop::sample::select(b"{}[]\",:\\ \n\t0123456789-+.eEtrufalsn\x01\xc3\xa9\xe0\xf0\x9f\x80x".to_vec()),
            kind in 0u8..4,
            size in 1usize..9,
        ) {
            let mut text = if pretty { serde_json::to_vec_pretty(&v) } else { serde_json::to_vec(&v) }.unwrap();
            let i = at.index(text.len() + 1);
            match kind {
                0 if i < text.len() => text[i] = byte,
                1 => text.insert(i, byte),
                2 if i < text.len() => { text.remove(i); }
                _ => {}
            }
            let whole = check(&text);
            if let Some(expected) = serde_verdict(&text) {
                prop_assert_eq!(whole.is_ok(), expected, "{:?}", String::from_utf8_lossy(&text));
            }
            prop_assert_eq!(&whole, &check_chunked(&text, size), "{:?}", String::from_utf8_lossy(&text));
        }

        /// Strings made of plain characters and escapes, surrogates among
        /// them in any order (serialized JSON never has one, so the tests
        /// above cannot make them): the same verdict as serde_json, in any
        /// chunking.
        #[test]
        fn strings_of_escapes_agree_with_serde_json(
            pieces in proptest::collection::vec(prop::sample::select(vec![
                "a", "\u{e9}", "\\\\", "\\n", "\\u0041", "\\ud83d", "\\udbff", "\\ude00", "\\udc00", "\\u", "\\",
            ]), 0..12),
            key in any::<bool>(),
            size in 1usize..80,
        ) {
            let body: String = pieces.concat();
            let doc = if key {
                format!("{{\"{body}\": [\"{body}\"]}}")
            } else {
                format!("[\"{}\", \"{body}\"]", "z".repeat(60))
            };
            if let Some(expected) = serde_verdict(doc.as_bytes()) {
                prop_assert_eq!(check_chunked(doc.as_bytes(), size).is_ok(), expected, "{}", doc);
                prop_assert_eq!(check(doc.as_bytes()).is_ok(), expected, "{}", doc);
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512), size in 1usize..16) {
            let _ = check_chunked(&bytes, size);
        }
    }
    /// A `\u` escape of a UTF-16 surrogate must be half of a pair: a high
    /// one (`D800`–`DBFF`) followed at once by the escape of a low one
    /// (`DC00`–`DFFF`). serde_json refuses anything else in a string, and so
    /// would a program reading the published JSON into strings. Checked
    /// whole, in every chunk size, as a key and as a value, and padded so
    /// that the escape falls on every position of a 64-byte block (the
    /// block path leaves surrogate escapes to the state machine).
    #[test]
    fn surrogate_escapes_come_in_pairs_as_serde_json_requires() {
        let cases: &[(&str, bool)] = &[
            (r"\ud83d\ude00", true),
            (r"\uD83D\uDE00", true),
            (r"a\udbff\udfffb", true),
            (r"\ud7ff\ue000", true),
            (r"\ud807", false),
            (r"\udc00", false),
            (r"\ude00\ud83d", false),
            (r"\ud83d\ud83d\ude00", false),
            (r"\ud83d\u0041", false),
            (r"\ud83d\n", false),
            (r"\ud83dx", false),
            (r"\ud83d\\ude00", false),
            (r"\\ud83d", true),
        ];
        for &(body, ok) in cases {
            for doc in [
                format!("\"{body}\""),
                format!("{{\"{body}\": 1}}"),
                format!("[\"x\", \"{body}\"]"),
            ] {
                let bytes = doc.as_bytes();
                assert_eq!(serde_verdict(bytes), Some(ok), "serde_json on {doc}");
                assert_eq!(check(bytes).is_ok(), ok, "{doc}: {:?}", check(bytes));
                for size in 1..=bytes.len() {
                    assert_eq!(
                        check_chunked(bytes, size).is_ok(),
                        ok,
                        "{doc} in chunks of {size}"
                    );
                }
                for pad in 0..70 {
                    let padded = format!("[{}{doc}, \"{}\"]", " ".repeat(pad), "y".repeat(80));
                    let bytes = padded.as_bytes();
                    assert_eq!(serde_verdict(bytes), Some(ok), "serde_json on {padded}");
                    assert_eq!(check(bytes).is_ok(), ok, "{padded}: {:?}", check(bytes));
                    assert_eq!(check_chunked(bytes, 64).is_ok(), ok, "{padded} in blocks");
                }
            }
        }
        assert!(
            check(br#""\ud807""#)
                .expect_err("lone")
                .contains("unpaired high surrogate"),
            "the error says what is wrong"
        );
        assert!(
            check(br#""\udc00""#)
                .expect_err("lone")
                .contains("lone low surrogate \\uDC00"),
            "and names the escape"
        );
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
    fn space_runs_stop_at_the_first_other_byte() {
        assert_eq!(leading_spaces(b"                 x", 0), 17);
        assert_eq!(leading_spaces(b"x                 x", 1), 17);
        assert_eq!(leading_spaces(b" \t\r \n", 0), 1);
        assert_eq!(leading_spaces(b"", 0), 0);
        assert_eq!(leading_spaces(b"            ", 0), 12);
        assert_eq!(leading_spaces(b"  ", 5), 0);
    }

    #[test]
    fn numbers_end_exactly_or_are_left_to_the_state_machine() {
        assert_eq!(number_end(b"123,", 0), Some(3));
        assert_eq!(number_end(b"-0.5e+10]", 0), Some(8));
        assert_eq!(number_end(b"0 ", 0), Some(1));
        assert_eq!(number_end(b"123", 0), None, "may go on in the next chunk");
        assert_eq!(number_end(b"01,", 0), None);
        assert_eq!(number_end(b"1.,", 0), None);
        assert_eq!(number_end(b"1e,", 0), None);
        assert_eq!(number_end(b"-,", 0), None);
    }

    #[test]
    fn short_scalars_end_exactly_or_are_left_to_the_full_scan() {
        for (text, end) in [
            (&b"7,      "[..], Some(1)),
            (b"25]     ", Some(2)),
            (b"1234567 ", Some(7)),
            (b"0}      ", Some(1)),
            (b"true,   ", Some(4)),
            (b"null}   ", Some(4)),
            (b"false]  ", Some(5)),
            (b"false\"  ", Some(5)),
            (b"12345678,", None),
            (b"01,     ", None),
            (b"1.5,    ", None),
            (b"1e5,    ", None),
            (b"-1,     ", None),
            (b"1x      ", None),
            (b"truex   ", None),
            (b"fals,   ", None),
            (b"nul     ", None),
            (b"12", None),
        ] {
            assert_eq!(
                short_scalar(text, 0),
                end,
                "{:?}",
                String::from_utf8_lossy(text)
            );
            if let Some(end) = end {
                assert_eq!(scalar_token(text, 0, text[0]), Some(end));
            }
        }
    }

    #[test]
    fn strings_end_after_their_quote_or_are_left_to_the_state_machine() {
        assert_eq!(string_end(b"\"abc\",", 1), Some(5));
        assert_eq!(string_end(b"\"a\\\"b\\u00e9\"", 1), Some(12));
        assert_eq!(string_end(b"\"abc", 1), None);
        assert_eq!(string_end(b"\"a\\x\"", 1), None);
        assert_eq!(string_end(b"\"a\\u12\"", 1), None);
        assert_eq!(string_end(b"\"a\tb\"", 1), None);
    }
}

/// The block fast path (64-byte blocks) against the byte-by-byte state
/// machine (1-byte chunks never hold a whole block) and serde_json, with
/// the interesting bytes placed at every offset around block and chunk
/// edges.
#[cfg(test)]
mod block_tests {
    use super::*;
    use proptest::prelude::*;

    fn check_chunked(input: &[u8], size: usize) -> Result<(), String> {
        let mut c = JsonCheck::default();
        for chunk in input.chunks(size.max(1)) {
            c.feed(chunk)?;
        }
        c.finish()
    }

    fn serde_accepts(input: &[u8]) -> bool {
        serde_json::from_slice::<serde_json::Value>(input).is_ok()
    }

    /// Same verdict and error, position included, in one chunk, in chunks
    /// that cut blocks anywhere, and byte by byte; the verdict is serde_json's.
    fn agree(text: &[u8]) {
        let reference = check_chunked(text, 1);
        assert_eq!(
            reference.is_ok(),
            serde_accepts(text),
            "{:?}: {reference:?}",
            String::from_utf8_lossy(text)
        );
        for size in [text.len(), 63, 64, 65, 100, 127, 128, 129, 200] {
            assert_eq!(
                check_chunked(text, size),
                reference,
                "chunks of {size}: {:?}",
                String::from_utf8_lossy(text)
            );
        }
    }

    const TRICKY: &[&str] = &[
        r#""plain""#,
        r#""q\"uote""#,
        r#""back\\slash\\""#,
        r#""\\\"""#,
        r#""esc\u00e9\uD83D\uDE00x""#,
        "\"é日本語😀\"",
        r#""\/\b\f\n\r\t""#,
        "-12.5e+3",
        "0",
        "true",
        "false",
        "null",
        "{}",
        "[]",
        r#"{"k": [1, {"x": "y"}]}"#,
    ];

    #[test]
    fn tokens_straddling_blocks_and_chunks_are_accepted() {
        for token in TRICKY {
            for pad in 0..140 {
                let text = format!("[{}{token}, {token},\n  {token}]", " ".repeat(pad));
                agree(text.as_bytes());
            }
        }
    }

    #[test]
    fn errors_straddling_blocks_and_chunks_read_the_same() {
        let broken = [
            "\"a\u{1}b\"",
            "\"tab\there\"",
            "\"line\nfeed\"",
            r#""bad \x escape""#,
            r#""\u12G4""#,
            r#""\u12""#,
            r#""\ud807""#,
            r#""\udc00 low""#,
            r#""\ud83d\u0041""#,
            "\"unterminated",
            "tru",
            "truex",
            "nul",
            "1x",
            "01",
            "1.",
            "-",
            "1e+",
            "\\",
            "\u{1}",
            "'single'",
            "[1,]",
            "{\"a\" 1}",
            "{\"a\":1,}",
            "{1:2}",
            "]",
            "}",
            "[}",
        ];
        for token in broken {
            for pad in 0..140 {
                let text = format!("[\"x\", {}{token}, 2]", " ".repeat(pad));
                agree(text.as_bytes());
                let text = format!("[\"x\",\n{}{token}", " ".repeat(pad));
                agree(text.as_bytes());
            }
        }
        // Invalid UTF-8 inside and outside strings, at every offset, also
        // around the 256-byte steps of the ASCII test.
        for pad in (0..140).chain(250..262).chain(505..518) {
            for bad in [
                &b"\xff"[..],
                b"\xc3",
                b"\xe6\x97",
                b"\xc3\x28",
                b"\xed\xa0\x80",
            ] {
                let mut text = format!("[\"{}", "a".repeat(pad)).into_bytes();
                text.extend_from_slice(bad);
                text.extend_from_slice(b"\", 1]");
                agree(&text);
            }
        }
    }

    #[test]
    fn deep_nesting_has_no_limit_and_stays_bounded() {
        let depth = 1_000_000;
        let mut text = vec![b'['; depth];
        text.extend(std::iter::repeat_n(b']', depth));
        let mut c = JsonCheck::default();
        for chunk in text.chunks(256 * 1024) {
            assert_eq!(c.feed(chunk), Ok(()));
        }
        // One byte per open container, not a copy of the document.
        assert!(c.stack.capacity() <= 2 * depth, "{}", c.stack.capacity());
        assert_eq!(c.finish(), Ok(()));

        let mut unclosed = vec![b'['; depth];
        unclosed.extend(std::iter::repeat_n(b']', depth - 1));
        let err = check_chunked(&unclosed, 256 * 1024).expect_err("one bracket short");
        assert!(err.contains("end of input"), "{err}");

        let mut mismatched = br#"{"k": "#.to_vec();
        mismatched.extend(std::iter::repeat_n(b'[', depth));
        mismatched.extend(std::iter::repeat_n(b']', depth));
        mismatched.push(b']');
        let err = check_chunked(&mismatched, 256 * 1024).expect_err("] closes {");
        assert!(
            err.contains(&format!(
                "expected '}}', found ']' at line 1 column {}",
                2 * depth + 7
            )),
            "{err}"
        );
    }

    fn json_value() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            (-1e300f64..1e300).prop_map(serde_json::Value::from),
            "(.|\\\\|\"){0,40}".prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(6, 96, 8, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..8).prop_map(serde_json::Value::from),
                proptest::collection::btree_map("(.|\\\\){0,10}", inner, 0..8)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// Documents of several blocks, mutated anywhere: the block path
        /// (whole document, large chunks) reports exactly what the state
        /// machine reports byte by byte, and agrees with serde_json.
        #[test]
        fn multi_block_documents_agree_with_the_state_machine_and_serde_json(
            values in proptest::collection::vec(json_value(), 1..6),
            pretty in any::<bool>(),
            edits in proptest::collection::vec(
                (any::<prop::sample::Index>(),
                 prop::sample::select(b"{}[]\",:\\ \n\t\r0123456789-+.eEtrufalsnu\x01\x1f\xc3\xa9\xe0\xf0\x9f\x80x".to_vec()),
                 0u8..4),
                0..3),
            size in 1usize..300,
        ) {
            let v = serde_json::Value::from(values);
            let mut text = if pretty { serde_json::to_vec_pretty(&v) } else { serde_json::to_vec(&v) }.unwrap();
            for (at, byte, kind) in edits {
                let i = at.index(text.len() + 1);
                match kind {
                    0 if i < text.len() => text[i] = byte,
                    1 => text.insert(i, byte),
                    2 if i < text.len() => { text.remove(i); }
                    _ => {}
                }
            }
            let reference = check_chunked(&text, 1);
            let verdict = serde_json::from_slice::<serde_json::Value>(&text)
                .map_err(|e| e.to_string());
            let limited = verdict.as_ref().is_err_and(|e| e.contains("out of range") || e.contains("recursion limit"));
            if !limited {
                prop_assert_eq!(reference.is_ok(), verdict.is_ok(), "{:?}", String::from_utf8_lossy(&text));
            }
            prop_assert_eq!(&check_chunked(&text, text.len()), &reference, "{:?}", String::from_utf8_lossy(&text));
            prop_assert_eq!(&check_chunked(&text, size), &reference, "{:?}", String::from_utf8_lossy(&text));
        }
    }
}
