//! A strict JSON scanner for the usual form of Hemera's envelopes on NATS: it finds the parts a
//! reader needs (a value's byte range, an object's keys) in one pass, without serde's machinery.
//!
//! It accepts only a subset of JSON that serde_json always accepts too: strings without escapes
//! or control characters (the input is checked as UTF-8 once, up front), numbers without an
//! exponent and of at most [`MAX_DIGITS`] characters (so none is out of `f64`'s range), nesting
//! at most [`MAX_DEPTH`] deep. Anything else is refused (`None`), and the caller reads the input
//! with serde instead: both readers serve the same input (property tests in `crate::served` and
//! `crate::wire`).

use std::borrow::Cow;
use std::ops::Range;

use serde_json::Number;

use crate::payload::{Prim, Props};

/// The deepest nesting scanned (serde_json's own limit is 128).
const MAX_DEPTH: usize = 64;

/// The longest number scanned, in characters.
const MAX_DIGITS: usize = 64;

/// A cursor over JSON text.
pub(crate) struct Scan<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Scan<'a> {
    /// A scanner of `b`, or `None` when `b` is not UTF-8.
    pub(crate) fn new(b: &'a [u8]) -> Option<Self> {
        std::str::from_utf8(b).ok()?;
        Some(Scan { b, at: 0 })
    }

    /// The next byte after whitespace (not consumed).
    fn peek(&mut self) -> Option<u8> {
        while let Some(&c) = self.b.get(self.at) {
            // (one comparison for the usual byte: JSON's whitespace is all at or below ' ')
            if c > b' ' || !matches!(c, b' ' | b'\n' | b'\r' | b'\t') {
                return Some(c);
            }
            self.at += 1;
        }
        None
    }

    /// Whether the next value is an object.
    pub(crate) fn at_object(&mut self) -> bool {
        self.peek() == Some(b'{')
    }

    /// Consume `c` (after whitespace).
    fn eat(&mut self, c: u8) -> Option<()> {
        (self.peek()? == c).then(|| self.at += 1)
    }

    /// A string without escapes: its bytes between the quotes.
    pub(crate) fn string(&mut self) -> Option<&'a [u8]> {
        self.eat(b'"')?;
        let rest = self.b.get(self.at..)?;
        let len = special(rest)?;
        if rest.get(len) != Some(&b'"') {
            return None;
        }
        self.at += len + 1;
        rest.get(..len)
    }

    /// A number without an exponent.
    fn number(&mut self) -> Option<()> {
        let start = self.at;
        let digits = |s: &mut Self| {
            let from = s.at;
            while s.b.get(s.at).is_some_and(u8::is_ascii_digit) {
                s.at += 1;
            }
            s.at > from
        };
        if self.b.get(self.at) == Some(&b'-') {
            self.at += 1;
        }
        match self.b.get(self.at) {
            Some(b'0') => self.at += 1,
            Some(b'1'..=b'9') => {
                digits(self);
            }
            _ => return None,
        }
        if self.b.get(self.at) == Some(&b'.') {
            self.at += 1;
            if !digits(self) {
                return None;
            }
        }
        let end = self.b.get(self.at);
        (self.at - start <= MAX_DIGITS && !matches!(end, Some(b'e' | b'E'))).then_some(())
    }

    /// `word` (`true`, `false`, `null`).
    fn word(&mut self, word: &[u8]) -> Option<()> {
        let end = self.at + word.len();
        (self.b.get(self.at..end)? == word).then(|| self.at = end)
    }

    /// One value, skipped: its byte range.
    pub(crate) fn value(&mut self) -> Option<Range<usize>> {
        self.value_in(0)
    }

    fn value_in(&mut self, depth: usize) -> Option<Range<usize>> {
        let start = match self.peek()? {
            b'{' | b'[' if depth >= MAX_DEPTH => return None,
            b'{' => {
                let start = self.at;
                self.object_in(depth + 1, |_, s| s.value_in(depth + 1).map(drop))?;
                start
            }
            b'[' => {
                let start = self.at;
                self.at += 1;
                if self.peek()? == b']' {
                    self.at += 1;
                } else {
                    loop {
                        self.value_in(depth + 1)?;
                        match self.peek()? {
                            b',' => self.at += 1,
                            b']' => {
                                self.at += 1;
                                break;
                            }
                            _ => return None,
                        }
                    }
                }
                start
            }
            b'"' => {
                let start = self.at;
                self.string()?;
                start
            }
            b't' | b'f' | b'n' => {
                let start = self.at;
                match self.b.get(self.at) {
                    Some(b't') => self.word(b"true")?,
                    Some(b'f') => self.word(b"false")?,
                    _ => self.word(b"null")?,
                }
                start
            }
            b'-' | b'0'..=b'9' => {
                let start = self.at;
                self.number()?;
                start
            }
            _ => return None,
        };
        Some(start..self.at)
    }

    /// An object: `each` is called with every key (the scanner then at its value, which `each`
    /// must consume). Its byte range.
    pub(crate) fn object(
        &mut self,
        each: impl FnMut(&'a [u8], &mut Self) -> Option<()>,
    ) -> Option<Range<usize>> {
        self.object_in(1, each)
    }

    fn object_in(
        &mut self,
        depth: usize,
        mut each: impl FnMut(&'a [u8], &mut Self) -> Option<()>,
    ) -> Option<Range<usize>> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.peek()?;
        let start = self.at;
        self.eat(b'{')?;
        if self.peek()? == b'}' {
            self.at += 1;
            return Some(start..self.at);
        }
        loop {
            let key = self.string()?;
            self.eat(b':')?;
            each(key, self)?;
            match self.peek()? {
                b',' => self.at += 1,
                b'}' => {
                    self.at += 1;
                    return Some(start..self.at);
                }
                _ => return None,
            }
        }
    }

    /// The end of the input: nothing but whitespace left.
    pub(crate) fn end(mut self) -> Option<()> {
        self.peek().is_none().then_some(())
    }
}

/// Where the first `"`, `\\` or control character of `b` is: eight bytes at a time (each
/// tested at once by the usual bit tricks), then the rest one by one.
pub(crate) fn special(b: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGH;
    let mut at = 0;
    for chunk in b.chunks_exact(8) {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let w = u64::from_le_bytes(word);
        // A byte below 0x20 (its high bit clear), a quote, a backslash: the lowest flagged
        // byte is the first such one (a flag above it may be a borrow's, never below).
        let found = (w.wrapping_sub(ONES * 0x20) & !w & HIGH)
            | zero(w ^ (ONES * u64::from(b'"')))
            | zero(w ^ (ONES * u64::from(b'\\')));
        if found != 0 {
            return Some(at + (found.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    let rest = b.get(at..)?;
    let i = rest
        .iter()
        .position(|&c| c == b'"' || c == b'\\' || c < 0x20)?;
    Some(at + i)
}

/// The top-level properties of a JSON payload (an object of primitive values in the usual
/// form), borrowed from `b`: what serde's `Props` decoder reads, or `None` (nested values,
/// anything the scan refuses), and serde reads it.
pub(crate) fn read_props(b: &[u8]) -> Option<Props<'_>> {
    let mut s = Scan::new(b)?;
    let mut props = Vec::with_capacity(8);
    s.object(|key, s| {
        let text = b.get(s.value()?)?;
        let value = match text.first()? {
            b'"' => Prim::Str(Cow::Borrowed(text.get(1..text.len() - 1)?)),
            b'n' => Prim::Null,
            b't' => Prim::Bool(true),
            b'f' => Prim::Bool(false),
            b'{' | b'[' => return None,
            _ => Prim::Number(number(text)?),
        };
        props.push((Cow::Borrowed(key), value));
        Some(())
    })?;
    s.end()?;
    Some(Props::from_vec(props))
}

/// A scanned number as serde_json reads it (a short unsigned integer without its parser).
fn number(text: &[u8]) -> Option<Number> {
    if text.len() <= 18 && text.iter().all(u8::is_ascii_digit) {
        let n = text.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
        return Some(n.into());
    }
    std::str::from_utf8(text).ok()?.parse().ok()
}

/// `text`, the range of an object, when it has no entries.
pub(crate) fn is_empty_object(text: &[u8]) -> bool {
    text.first() == Some(&b'{')
        && text.get(1..).is_some_and(|rest| {
            rest.iter()
                .all(|c| matches!(c, b' ' | b'\n' | b'\r' | b'\t' | b'}'))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde::de::IgnoredAny;
    use serde_json::{Value, json};

    fn scan_all(b: &[u8]) -> Option<Range<usize>> {
        let mut s = Scan::new(b)?;
        let r = s.value()?;
        s.end()?;
        Some(r)
    }

    fn value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            any::<u64>().prop_map(|n| json!(n)),
            any::<f64>().prop_map(|f| json!(f)),
            ".{0,12}".prop_map(Value::String),
            "[a-zA-Z0-9:,]{0,30}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                proptest::collection::btree_map(".{0,6}", inner, 0..5)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// Whether serde would write `v` without escapes and exponents (what the scanner takes).
    fn plain(v: &Value) -> bool {
        let text = |s: &str| !s.bytes().any(|c| c == b'"' || c == b'\\' || c < 0x20);
        match v {
            Value::String(s) => text(s),
            Value::Number(n) => !n.to_string().contains(['e', 'E']),
            Value::Array(a) => a.iter().all(plain),
            Value::Object(m) => m.iter().all(|(k, v)| text(k) && plain(v)),
            _ => true,
        }
    }

    proptest! {
        /// Scanned payload properties are serde's (in order, repeated keys too); a payload of
        /// plain primitive values is scanned; garbled ones are refused or agree.
        #[test]
        fn scanned_props_are_serdes(
            entries in proptest::collection::vec((".{0,8}", value()), 0..8),
            cut in any::<prop::sample::Index>(),
            flip in any::<(prop::sample::Index, u8)>(),
        ) {
            let mut text = b"{".to_vec();
            for (i, (k, v)) in entries.iter().enumerate() {
                if i > 0 {
                    text.push(b',');
                }
                text.extend(serde_json::to_vec(k).expect("encodes"));
                text.push(b':');
                text.extend(serde_json::to_vec(v).expect("encodes"));
            }
            text.push(b'}');
            let serde = serde_json::from_slice::<Props<'_>>(&text).expect("a map");
            let primitive = entries.iter().all(|(k, v)| {
                !v.is_array() && !v.is_object() && plain(v) && plain(&json!(k))
            });
            match read_props(&text) {
                Some(scanned) => prop_assert_eq!(scanned, serde),
                None => prop_assert!(!primitive, "{}", String::from_utf8_lossy(&text)),
            }
            let (at, x) = flip;
            let i = at.index(text.len());
            text[i] ^= x;
            text.truncate(cut.index(text.len() + 1));
            if let Some(scanned) = read_props(&text) {
                let serde = serde_json::from_slice::<Props<'_>>(&text);
                prop_assert_eq!(Ok(scanned), serde.map_err(|e| e.to_string()));
            }
        }

        /// The word-at-a-time search finds what a byte-by-byte one finds.
        #[test]
        fn specials_are_found_as_one_by_one(b in proptest::collection::vec(any::<u8>(), 0..40)) {
            let naive = b.iter().position(|&c| c == b'"' || c == b'\\' || c < 0x20);
            prop_assert_eq!(special(&b), naive);
        }

        /// Any JSON text serde writes: scanned whole when it is plain, and what is scanned
        /// serde reads too.
        #[test]
        fn scanned_values_are_json(v in value(), pretty in any::<bool>()) {
            let text = if pretty {
                serde_json::to_vec_pretty(&v).expect("encodes")
            } else {
                serde_json::to_vec(&v).expect("encodes")
            };
            match scan_all(&text) {
                Some(r) => {
                    prop_assert_eq!(r, 0..text.len());
                    prop_assert!(serde_json::from_slice::<Value>(&text).is_ok());
                }
                None => prop_assert!(!plain(&v), "a plain value was refused: {}", v),
            }
        }

        /// Garbled text: refused, or serde reads it as well (and the scanned range is the
        /// whole value).
        #[test]
        fn garbled_values_are_refused_or_json(
            v in value(),
            cut in any::<prop::sample::Index>(),
            flip in any::<(prop::sample::Index, u8)>(),
        ) {
            let mut text = serde_json::to_vec(&v).expect("encodes");
            let (at, x) = flip;
            let i = at.index(text.len());
            text[i] ^= x;
            text.truncate(cut.index(text.len() + 1));
            if scan_all(&text).is_some() {
                prop_assert!(serde_json::from_slice::<Value>(&text).is_ok(), "{:?}", String::from_utf8_lossy(&text));
            }
        }
    }

    #[test]
    fn the_subset_is_strict() {
        for refused in [
            &br#""a\"b""#[..],
            b"1e5",
            b"1E-5",
            b"01",
            b"-",
            b"1.",
            b"[1,]",
            b"{\"a\":1,}",
            b"{\"a\" 1}",
            b"tru",
            b"nul",
            b"\"\x01\"",
            b"[1] 2",
            b"\"\xff\"",
        ] {
            assert!(
                scan_all(refused).is_none(),
                "{:?}",
                String::from_utf8_lossy(refused)
            );
            let _ = serde_json::from_slice::<IgnoredAny>(refused);
        }
        let deep = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        assert!(scan_all(deep.as_bytes()).is_none());
        let ok = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(scan_all(ok.as_bytes()).is_some());
        let spaced = b" {\"a\" : [ 1 , -2.5 , \"\xc3\xa9\" ] } ";
        assert_eq!(scan_all(spaced), Some(1..spaced.len() - 1));
        assert!(is_empty_object(b"{ }") && is_empty_object(b"{}"));
        assert!(!is_empty_object(b"{\"a\":1}"));
    }
}
