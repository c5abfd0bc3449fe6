//! The JSON grammar between tokens as a transition table, for the block
//! fast path: one table look-up per token instead of nested matches. A
//! state here also says which container it is in (`AfterArray` or
//! `AfterObject` rather than one "after a value"), so that the table alone
//! knows whether `,` leads to a value or a key and which bracket closes.

/// Where the walk is between two tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(super) enum Gap {
    /// The top-level value is expected.
    Top,
    /// After `[`: a value or `]`.
    ArrayFirst,
    /// After `,` in an array: a value.
    ArrayNext,
    /// After `{`: a key or `}`.
    ObjectFirst,
    /// After `,` in an object: a key.
    ObjectKey,
    /// After a key: `:`.
    Colon,
    /// After `:`: a value.
    ObjectValue,
    /// After a value in an array: `,` or `]`.
    AfterArray,
    /// After a value in an object: `,` or `}`.
    AfterObject,
    /// After the top-level value: nothing but whitespace.
    Done,
}

const STATES: usize = 10;

impl Gap {
    const ALL: [Gap; STATES] = [
        Gap::Top,
        Gap::ArrayFirst,
        Gap::ArrayNext,
        Gap::ObjectFirst,
        Gap::ObjectKey,
        Gap::Colon,
        Gap::ObjectValue,
        Gap::AfterArray,
        Gap::AfterObject,
        Gap::Done,
    ];

    /// The state after a complete value (a scalar, a string or a closed
    /// container) read in this one, if a value may come here.
    const fn after_value(self) -> Option<Gap> {
        match self {
            Gap::Top => Some(Gap::Done),
            Gap::ArrayFirst | Gap::ArrayNext => Some(Gap::AfterArray),
            Gap::ObjectValue => Some(Gap::AfterObject),
            _ => None,
        }
    }
}

/// What the first byte of a token is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Token {
    Quote,
    OpenObject,
    OpenArray,
    CloseObject,
    CloseArray,
    Colon,
    Comma,
    /// The first byte of a number or literal.
    Scalar,
    Other,
}

const fn token(b: u8) -> Token {
    match b {
        b'"' => Token::Quote,
        b'{' => Token::OpenObject,
        b'[' => Token::OpenArray,
        b'}' => Token::CloseObject,
        b']' => Token::CloseArray,
        b':' => Token::Colon,
        b',' => Token::Comma,
        b't' | b'f' | b'n' | b'-' | b'0'..=b'9' => Token::Scalar,
        _ => Token::Other,
    }
}

/// What a token does (packed into the table as a byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Move {
    /// Go to this state; nothing else to check (a string's body is checked
    /// by mask, structural characters are whole).
    To(Gap),
    /// Check the number or literal, then go to this state.
    Scalar(Gap),
    /// Push an array or (`false`) an object and go to `ArrayFirst` /
    /// `ObjectFirst`.
    Open { array: bool },
    /// Pop the innermost container; the state follows from the new one.
    Close,
    /// Not allowed here: left to the state machine, which says why.
    Reject,
}

const fn transition(state: Gap, t: Token) -> Move {
    let value = state.after_value();
    match (t, value) {
        (Token::Quote, Some(next)) => Move::To(next),
        (Token::Scalar, Some(next)) => Move::Scalar(next),
        (Token::OpenArray, Some(_)) => Move::Open { array: true },
        (Token::OpenObject, Some(_)) => Move::Open { array: false },
        _ => match (state, t) {
            (Gap::ObjectFirst | Gap::ObjectKey, Token::Quote) => Move::To(Gap::Colon),
            (Gap::Colon, Token::Colon) => Move::To(Gap::ObjectValue),
            (Gap::AfterArray, Token::Comma) => Move::To(Gap::ArrayNext),
            (Gap::AfterObject, Token::Comma) => Move::To(Gap::ObjectKey),
            (Gap::ArrayFirst | Gap::AfterArray, Token::CloseArray) => Move::Close,
            (Gap::ObjectFirst | Gap::AfterObject, Token::CloseObject) => Move::Close,
            _ => Move::Reject,
        },
    }
}

/// A move packed into a byte for the table: a plain `To` is the state's
/// own number (below 16), so the common case is one compare away.
pub(super) const SCALAR: u8 = 0x10;
pub(super) const OPEN_ARRAY: u8 = 0x20;
pub(super) const OPEN_OBJECT: u8 = 0x21;
pub(super) const CLOSE: u8 = 0x30;
pub(super) const REJECT: u8 = 0xFF;

const fn pack(m: Move) -> u8 {
    match m {
        Move::To(next) => next as u8,
        Move::Scalar(next) => SCALAR | next as u8,
        Move::Open { array: true } => OPEN_ARRAY,
        Move::Open { array: false } => OPEN_OBJECT,
        Move::Close => CLOSE,
        Move::Reject => REJECT,
    }
}

/// Every state's packed move for every byte, computed at compile time
/// (16 rows so that a state masked to four bits needs no bounds check).
static TABLE: [[u8; 256]; 16] = {
    let mut table = [[REJECT; 256]; 16];
    let mut s = 0;
    while s < STATES {
        let mut b = 0;
        while b < 256 {
            table[s][b] = pack(transition(Gap::ALL[s], token(b as u8)));
            b += 1;
        }
        s += 1;
    }
    table
};

/// The packed move of the token starting with `b` in the state numbered
/// `state` (a `Gap as u8`).
#[cfg(test)]
fn packed(state: u8, b: u8) -> u8 {
    TABLE[state as usize & 15][b as usize]
}

/// [`TABLE`] flattened for the block walk, with each state kept as the
/// offset of its row (`state << 8`) so that the next look-up is one OR
/// away: a plain move is the next state's offset (below [`SPECIAL`]),
/// anything else is `SPECIAL` plus its packed move.
static FLAT: [u16; 16 * 256] = {
    let mut flat = [0u16; 16 * 256];
    let mut i = 0;
    while i < 16 * 256 {
        let packed = TABLE[i >> 8][i & 255];
        flat[i] = if packed < 16 {
            (packed as u16) << 8
        } else {
            SPECIAL | packed as u16
        };
        i += 1;
    }
    flat
};

/// Flags a [`FLAT`] entry that is not a plain move.
pub(super) const SPECIAL: u16 = 0x1000;

/// The state `state` as a row offset for [`flat`].
#[inline]
pub(super) fn row(state: u8) -> usize {
    usize::from(state & 15) << 8
}

/// The [`FLAT`] entry of the token starting with `b` in the state whose
/// row offset is `row`.
#[inline]
pub(super) fn flat(row: usize, b: u8) -> u16 {
    FLAT[(row | usize::from(b)) & 0xFFF]
}

impl Gap {
    /// The state numbered `code` (a `Gap as u8`).
    pub(super) fn from_code(code: u8) -> Gap {
        Gap::ALL[code as usize % STATES]
    }
}

/// The move of the token starting with `b` in `state`.
#[cfg(test)]
fn step(state: Gap, b: u8) -> Move {
    let packed = packed(state as u8, b);
    let state_of = Gap::from_code;
    match packed {
        0..=15 => Move::To(state_of(packed)),
        OPEN_ARRAY => Move::Open { array: true },
        OPEN_OBJECT => Move::Open { array: false },
        CLOSE => Move::Close,
        REJECT => Move::Reject,
        _ => Move::Scalar(state_of(packed & 15)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_the_grammar() {
        assert_eq!(step(Gap::Top, b'"'), Move::To(Gap::Done));
        assert_eq!(step(Gap::ObjectKey, b'"'), Move::To(Gap::Colon));
        assert_eq!(
            step(Gap::ObjectKey, b'}'),
            Move::Reject,
            "no trailing comma"
        );
        assert_eq!(
            step(Gap::ArrayNext, b']'),
            Move::Reject,
            "no trailing comma"
        );
        assert_eq!(step(Gap::ArrayFirst, b']'), Move::Close);
        assert_eq!(step(Gap::AfterArray, b'}'), Move::Reject);
        assert_eq!(step(Gap::AfterObject, b','), Move::To(Gap::ObjectKey));
        assert_eq!(step(Gap::ObjectValue, b'7'), Move::Scalar(Gap::AfterObject));
        assert_eq!(step(Gap::ArrayNext, b'['), Move::Open { array: true });
        assert_eq!(step(Gap::Colon, b','), Move::Reject);
        for b in 0..=255u8 {
            assert_eq!(step(Gap::Done, b), Move::Reject, "byte {b}");
            if !b"\"{[tfn-0123456789".contains(&b) {
                assert_eq!(step(Gap::Top, b), Move::Reject, "byte {b}");
            }
        }
    }
}
