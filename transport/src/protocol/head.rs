//! The head of an encoded [`RequestMsg`](super::RequestMsg) read by walking its MessagePack
//! bytes, and where its body lies: what a raw handler's call needs ([`RawBody`] keeps the body
//! undecoded), without decoding the head through serde with the body skipped as `IgnoredAny`
//! (which checks every string of the body as UTF-8) and then again to reach the body.
//!
//! Only the form this crate writes is read here: a map with string keys, `name` a string,
//! `method` and `traceparent` nil or a string, `timeout_ms` an unsigned integer, each key once;
//! `json`, the caller's hint that it takes the result as JSON text, is read as `true` or not.
//! Anything else answers `None`, and the caller decodes the payload with serde as before (so
//! both accept and refuse the same payloads).
//!
//! [`RawBody`]: crate::mesh::RawBody

use std::ops::Range;

use plume::trace::TraceContext;

/// The head of a request, borrowed from its payload, and the byte range of its body.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct RequestHead<'a> {
    pub(crate) name: &'a str,
    pub(crate) method: Option<&'a str>,
    pub(crate) timeout_ms: u64,
    /// The trace context its `traceparent` says (none: no `traceparent`, or one that is no
    /// trace context), read from the bytes ([`TraceContext::parse_bytes`]).
    pub(crate) trace: Option<TraceContext>,
    /// Where the body's MessagePack value lies in the payload.
    pub(crate) body: Range<usize>,
    /// The caller takes the result as JSON text (its `json` is `true`; a hint: anything else,
    /// or no `json`, reads as `false`).
    pub(crate) json: bool,
}

/// Read the head of `payload` (see the module); `None` when it is not in the usual form.
pub(crate) fn read_request_head(payload: &[u8]) -> Option<RequestHead<'_>> {
    let mut r = Reader::new(payload, 0);
    let entries = r.map_len()?;
    let (mut name, mut method, mut timeout_ms, mut traceparent, mut body) =
        (None, None, None, None, None);
    let mut json = false;
    for _ in 0..entries {
        match r.str_bytes()? {
            b"name" if name.is_none() => name = Some(r.str()?),
            b"method" if method.is_none() => method = Some(r.opt_str()?),
            b"timeout_ms" if timeout_ms.is_none() => timeout_ms = Some(r.uint()?),
            b"traceparent" if traceparent.is_none() => traceparent = Some(r.opt_traceparent()?),
            b"body" if body.is_none() => {
                let start = r.at;
                r.at = skip_values(payload, start, 1)?;
                body = Some(start..r.at);
            }
            b"json" => {
                json = r.peek() == Some(0xc3);
                r.at = skip_values(payload, r.at, 1)?;
            }
            // A repeated key (serde refuses it): the serde path says so.
            b"name" | b"method" | b"timeout_ms" | b"traceparent" | b"body" => return None,
            // An unknown key (serde ignores it).
            _ => r.at = skip_values(payload, r.at, 1)?,
        }
    }
    Some(RequestHead {
        name: name?,
        method: method.flatten(),
        timeout_ms: timeout_ms?,
        trace: traceparent.flatten(),
        body: body?,
        json,
    })
}

/// The end of the `count` MessagePack values that start at `at` in `b`; `None` when they do not
/// fit in `b` or use the reserved marker. Iterative (a count of the values still to skip), so
/// nesting costs no stack; every value takes at least one byte, so the loop ends with `b`.
pub fn skip_values(b: &[u8], mut at: usize, mut count: u64) -> Option<usize> {
    let be = |at: usize, n: usize| -> Option<u64> {
        let bytes = b.get(at..at.checked_add(n)?)?;
        Some(bytes.iter().fold(0u64, |v, &x| (v << 8) | u64::from(x)))
    };
    while count > 0 {
        let marker = *b.get(at)?;
        at += 1;
        count -= 1;
        // (bytes to skip after the marker, values nested in this one)
        let (skip, nested): (u64, u64) = match marker {
            0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => (0, 0),
            0x80..=0x8f => (0, 2 * u64::from(marker & 0x0f)),
            0x90..=0x9f => (0, u64::from(marker & 0x0f)),
            0xa0..=0xbf => (u64::from(marker & 0x1f), 0),
            0xc4 | 0xd9 => (1 + be(at, 1)?, 0),
            0xc5 | 0xda => (2 + be(at, 2)?, 0),
            0xc6 | 0xdb => (4 + be(at, 4)?, 0),
            0xc7 => (2 + be(at, 1)?, 0),
            0xc8 => (3 + be(at, 2)?, 0),
            0xc9 => (5 + be(at, 4)?, 0),
            0xcc | 0xd0 => (1, 0),
            0xcd | 0xd1 => (2, 0),
            0xca | 0xce | 0xd2 => (4, 0),
            0xcb | 0xcf | 0xd3 => (8, 0),
            0xd4 => (2, 0),
            0xd5 => (3, 0),
            0xd6 => (5, 0),
            0xd7 => (9, 0),
            0xd8 => (17, 0),
            0xdc => (2, be(at, 2)?),
            0xdd => (4, be(at, 4)?),
            0xde => (2, 2 * be(at, 2)?),
            0xdf => (4, 2 * be(at, 4)?),
            // 0xc1: never used.
            _ => return None,
        };
        at = at.checked_add(usize::try_from(skip).ok()?)?;
        if at > b.len() {
            return None;
        }
        count = count.checked_add(nested)?;
    }
    Some(at)
}

/// A cursor over MessagePack bytes, for readers that walk a payload in the usual form and leave
/// anything else to serde (this module's head, and `plume-pattern`'s mesh envelopes). Each
/// method reads one item at the cursor and moves past it, or answers `None` (the cursor is then
/// somewhere inside the item: give up on the walk).
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    /// A cursor at `at` in `b`.
    #[inline]
    pub fn new(b: &'a [u8], at: usize) -> Self {
        Self { b, at }
    }

    /// Where the cursor is.
    #[inline]
    pub fn at(&self) -> usize {
        self.at
    }

    /// How many bytes are left after the cursor.
    #[inline]
    pub fn left(&self) -> usize {
        self.b.len().saturating_sub(self.at)
    }

    /// The marker byte at the cursor, not moved past.
    #[inline]
    pub fn peek(&self) -> Option<u8> {
        self.b.get(self.at).copied()
    }

    /// Skip one value (of any kind, nested ones included).
    #[inline]
    pub fn skip(&mut self) -> Option<()> {
        self.at = skip_values(self.b, self.at, 1)?;
        Some(())
    }

    /// One byte.
    #[inline]
    pub fn byte(&mut self) -> Option<u8> {
        let x = *self.b.get(self.at)?;
        self.at += 1;
        Some(x)
    }

    /// An `n`-byte big-endian unsigned integer.
    #[inline]
    pub fn be(&mut self, n: usize) -> Option<u64> {
        let bytes = self.b.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(bytes.iter().fold(0u64, |v, &x| (v << 8) | u64::from(x)))
    }

    /// The length of a map.
    #[inline]
    pub fn map_len(&mut self) -> Option<u64> {
        match self.byte()? {
            m @ 0x80..=0x8f => Some(u64::from(m & 0x0f)),
            0xde => self.be(2),
            0xdf => self.be(4),
            _ => None,
        }
    }

    /// A string's bytes (not checked as UTF-8: keys are compared as bytes).
    #[inline]
    pub fn str_bytes(&mut self) -> Option<&'a [u8]> {
        let len = match self.byte()? {
            m @ 0xa0..=0xbf => u64::from(m & 0x1f),
            0xd9 => self.be(1)?,
            0xda => self.be(2)?,
            0xdb => self.be(4)?,
            _ => return None,
        };
        self.take(len)
    }

    /// The next `len` bytes.
    #[inline]
    fn take(&mut self, len: u64) -> Option<&'a [u8]> {
        let len = usize::try_from(len).ok()?;
        let s = self.b.get(self.at..self.at.checked_add(len)?)?;
        self.at += len;
        Some(s)
    }

    /// A `bin`'s bytes, and where they lie.
    #[inline]
    pub fn bin(&mut self) -> Option<Range<usize>> {
        let len = match self.byte()? {
            0xc4 => self.be(1)?,
            0xc5 => self.be(2)?,
            0xc6 => self.be(4)?,
            _ => return None,
        };
        let start = self.at;
        self.take(len)?;
        Some(start..self.at)
    }

    /// A string (checked as UTF-8).
    #[inline]
    pub fn str(&mut self) -> Option<&'a str> {
        std::str::from_utf8(self.str_bytes()?).ok()
    }

    /// Whether a nil is next; read when it is.
    #[inline]
    pub fn nil(&mut self) -> bool {
        let nil = self.b.get(self.at) == Some(&0xc0);
        if nil {
            self.at += 1;
        }
        nil
    }

    #[inline]
    fn opt_str(&mut self) -> Option<Option<&'a str>> {
        if self.nil() {
            return Some(None);
        }
        self.str().map(Some)
    }

    /// A nil or a string (UTF-8, as [`opt_str`](Self::opt_str) checks), read as a
    /// `traceparent`: the trace context it says, if any. A value of the usual form is checked
    /// by its parse alone (55 hex digits and dashes are UTF-8).
    #[inline]
    fn opt_traceparent(&mut self) -> Option<Option<TraceContext>> {
        if self.nil() {
            return Some(None);
        }
        let bytes = self.str_bytes()?;
        match TraceContext::parse_bytes(bytes) {
            Some(ctx) => Some(Some(ctx)),
            None => std::str::from_utf8(bytes).ok().map(|_| None),
        }
    }

    /// An unsigned integer (a non-negative fixint or `uint` 8 to 64).
    #[inline]
    pub fn uint(&mut self) -> Option<u64> {
        match self.byte()? {
            m @ 0x00..=0x7f => Some(u64::from(m)),
            0xcc => self.be(1),
            0xcd => self.be(2),
            0xce => self.be(4),
            0xcf => self.be(8),
            _ => None,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::protocol::{RequestMsg, decode_payload, encode_payload};
    use plume_json::arbitrary::value;
    use proptest::prelude::*;
    use serde_json::{Value, json};

    proptest! {
        /// Whatever the body, the head read from the bytes is the one serde decodes, and the
        /// body's range holds exactly the body.
        #[test]
        fn the_walked_head_agrees_with_serde(
            body in value(),
            name in ".{0,300}",
            method in proptest::option::of(".{0,10}"),
            timeout_ms in any::<u64>(),
            traceparent in proptest::option::of("[0-9a-f-]{0,60}"),
        ) {
            let payload = encode_payload(&RequestMsg {
                name: name.clone(),
                method: method.clone(),
                body: &body,
                timeout_ms,
                traceparent: traceparent.clone(),
            });
            let head = read_request_head(&payload).expect("our own form");
            prop_assert_eq!(head.name, name.as_str());
            prop_assert_eq!(head.method, method.as_deref());
            prop_assert_eq!(head.timeout_ms, timeout_ms);
            prop_assert_eq!(head.trace, traceparent.as_deref().and_then(TraceContext::parse));
            let back: Value = decode_payload(&payload[head.body.clone()]).expect("the body");
            prop_assert_eq!(back, body);
            prop_assert_eq!(skip_values(&payload, 0, 1), Some(payload.len()));
        }

        /// Truncated or garbled payloads never panic, and a head read from them is what serde
        /// reads too.
        #[test]
        fn garbled_payloads_are_refused_or_agree(
            body in value(),
            cut in any::<prop::sample::Index>(),
            flip in any::<(prop::sample::Index, u8)>(),
        ) {
            let payload = encode_payload(&RequestMsg {
                name: "n".into(), method: None, body: &body, timeout_ms: 5, traceparent: None,
            });
            let mut bytes = payload.to_vec();
            let (at, x) = flip;
            let i = at.index(bytes.len());
            bytes[i] ^= x;
            bytes.truncate(cut.index(bytes.len() + 1));
            if let Some(head) = read_request_head(&bytes) {
                let serde = decode_payload::<RequestMsg<serde::de::IgnoredAny>>(&bytes);
                if let Ok(m) = serde {
                    prop_assert_eq!(m.name.as_str(), head.name);
                    prop_assert_eq!(m.timeout_ms, head.timeout_ms);
                }
            }
        }
    }

    #[test]
    fn the_json_hint_is_read_and_skipped_by_serde() {
        let out = |json| {
            encode_payload(&crate::protocol::RequestOut {
                name: "n",
                method: None,
                body: &json!({"a": 1}),
                timeout_ms: 5,
                traceparent: None,
                json,
            })
        };
        let hinted = out(true);
        let head = read_request_head(&hinted).expect("our own form");
        assert!(head.json);
        assert_eq!(
            &hinted[head.body.clone()],
            &encode_payload(&json!({"a": 1}))[..]
        );
        // What a node without the hint reads: the same request, the key skipped.
        let m: RequestMsg = decode_payload(&hinted).expect("serde skips the key");
        assert_eq!(
            (m.name.as_str(), m.body, m.timeout_ms),
            ("n", json!({"a": 1}), 5)
        );
        // No hint: no key, the bytes of before.
        let plain = out(false);
        assert!(!read_request_head(&plain).expect("our own form").json);
        let before = encode_payload(&RequestMsg {
            name: "n".into(),
            method: None,
            body: json!({"a": 1}),
            timeout_ms: 5,
            traceparent: None,
        });
        assert_eq!(plain, before);
        // Anything but `true` is no hint.
        for other in [json!(false), json!(1), json!("true"), json!(null)] {
            let bytes = rmp_serde::to_vec_named(
                &json!({"name": "n", "body": 1, "timeout_ms": 1, "json": other}),
            )
            .expect("encodes");
            assert!(!read_request_head(&bytes).expect("read").json, "{other}");
        }
    }

    #[test]
    fn other_forms_are_left_to_serde() {
        // the array form of a struct, a repeated key, a missing body, a signed timeout
        let array = rmp_serde::to_vec(&RequestMsg {
            name: "n".into(),
            method: None,
            body: json!(1),
            timeout_ms: 1,
            traceparent: None,
        })
        .expect("encodes");
        assert_eq!(read_request_head(&array), None);
        let twice = rmp_serde::to_vec_named(&json!({"name": "n", "body": 1, "timeout_ms": 1}))
            .expect("encodes");
        assert!(read_request_head(&twice).is_some());
        let mut repeated = twice.clone();
        repeated[0] += 1;
        repeated.extend(rmp_serde::to_vec(&"body").expect("key"));
        repeated.push(0x01);
        assert_eq!(read_request_head(&repeated), None);
        for bad in [
            json!({"name": "n", "timeout_ms": 1}),
            json!({"name": "n", "body": 1, "timeout_ms": -1}),
            json!({"name": 3, "body": 1, "timeout_ms": 1}),
        ] {
            let bytes = rmp_serde::to_vec_named(&bad).expect("encodes");
            assert_eq!(read_request_head(&bytes), None, "{bad}");
        }
        assert_eq!(skip_values(&[0xc1], 0, 1), None);
        assert_eq!(skip_values(&[0xdf, 0xff, 0xff, 0xff, 0xff], 0, 1), None);
    }
}
