//! A reply's result turned into JSON text by walking its MessagePack bytes, for the usual form
//! of a reply (what `engine::response` and rmp-serde write): a map of `ok` and `err`, the result
//! made of nil, booleans, integers, floats, strings, arrays and maps with string keys.
//!
//! The serde transcoder of [`super::reply`] visits every value through rmp-serde's generic
//! decoder; this walk reads the markers itself and checks a string's UTF-8 in the same pass
//! that looks for the bytes to escape, instead of `from_utf8`. Anything else answers `None` and the caller takes the serde
//! path, which accepts or refuses it as before: the array form of the reply, a repeated or
//! non-string key, `bin`, `ext`, the unused marker, text that is not ASCII and not UTF-8,
//! nesting deeper than [`MAX_WALK_DEPTH`], truncated bytes. What the walk writes is what the
//! serde path writes (the proptests of this module compare the two).
//!
//! A reply in the JSON form (`{"json": <text>}`, what a provider answers a request with the
//! `json` hint: docs/protocol.md, "Calls") is the provider's own JSON text, checked as UTF-8
//! and passed on as it is, as the mesh trusts a peer's MessagePack; out of form it goes to the
//! serde path, which refuses it.

use plume::{Error, RawJson};

use crate::protocol::JSON_REPLY_KEY;
use crate::protocol::head::Reader;
use crate::protocol::value::{MAX_WALK_DEPTH, read_value};
use plume_json::write_utf8;

/// The reply in `payload` as [`RawJson`] (or the provider's error), or `None`: leave it to serde.
/// `capacity` is the size of the text buffer to start with.
pub(super) fn json_reply(payload: &[u8], capacity: usize) -> Option<Result<RawJson, Error>> {
    // The JSON form: the provider's text, passed on as it is.
    if let Some(text) = json_form_text(payload) {
        return Some(Ok(RawJson::from_encoded(bytes::Bytes::copy_from_slice(
            &payload[text],
        ))));
    }
    let mut r = Reader::new(payload, 0);
    let entries = r.map_len()?;
    // (seen, its text or nil)
    let mut ok: Option<Option<Vec<u8>>> = None;
    let mut err = None;
    for _ in 0..entries {
        match r.str_bytes()? {
            // The JSON form's key out of its form (beside `ok` or `err`, repeated, not a UTF-8
            // string): serde refuses it.
            key if key == JSON_REPLY_KEY => return None,
            b"ok" if ok.is_none() => {
                ok = Some(if r.nil() {
                    None
                } else {
                    let mut out = Vec::with_capacity(capacity);
                    write_value(&mut r, &mut out, 0)?;
                    Some(out)
                });
            }
            b"err" if err.is_none() => {
                err = Some(if r.nil() {
                    None
                } else {
                    Some(read_value(&mut r, 0)?)
                });
            }
            // A repeated field: serde refuses it, with its own message.
            b"ok" | b"err" => return None,
            // Another field: serde skips it (and checks that it is well formed).
            _ => r.skip()?,
        }
    }
    if r.left() != 0 {
        // Trailing bytes: what serde makes of them is serde's to say.
        return None;
    }
    Some(match (ok.flatten(), err.flatten()) {
        (_, Some(e)) => Err(Error::from_json(e)),
        (Some(text), None) => Ok(RawJson::from_encoded(text.into())),
        (None, None) => Ok(RawJson::from_encoded("null".into())),
    })
}

/// Where the text of a reply in the JSON form lies in `payload`: a map of the one key `json`
/// and a UTF-8 string, nothing after it. `None` for any other reply.
pub(super) fn json_form_text(payload: &[u8]) -> Option<std::ops::Range<usize>> {
    let mut r = Reader::new(payload, 0);
    if r.map_len()? != 1 || r.str_bytes()? != JSON_REPLY_KEY {
        return None;
    }
    let text = r.str_bytes()?;
    let end = r.at();
    if end != payload.len() {
        return None;
    }
    std::str::from_utf8(text).ok()?;
    Some(end - text.len()..end)
}

/// Write the value at the cursor as JSON (see the module); `None`: leave it to serde.
fn write_value(r: &mut Reader<'_>, out: &mut Vec<u8>, depth: usize) -> Option<()> {
    let marker = r.peek()?;
    match marker {
        0xc0 => {
            r.byte()?;
            out.extend_from_slice(b"null");
        }
        0xc2 => {
            r.byte()?;
            out.extend_from_slice(b"false");
        }
        0xc3 => {
            r.byte()?;
            out.extend_from_slice(b"true");
        }
        0x00..=0x7f | 0xcc..=0xcf => {
            serde_json::to_writer(&mut *out, &r.uint()?).ok()?;
        }
        0xe0..=0xff | 0xd0..=0xd3 | 0xca | 0xcb => {
            // Negative integers and floats: as the `Value` walk reads them, written as
            // serde_json writes that number (a non-finite float is null).
            let value = read_value(r, depth)?;
            serde_json::to_writer(&mut *out, &value).ok()?;
        }
        0xa0..=0xbf | 0xd9..=0xdb => write_str(r, out)?,
        0x90..=0x9f | 0xdc | 0xdd => {
            if depth >= MAX_WALK_DEPTH {
                return None;
            }
            let len = match r.byte()? {
                m @ 0x90..=0x9f => u64::from(m & 0x0f),
                0xdc => r.be(2)?,
                _ => r.be(4)?,
            };
            out.push(b'[');
            for i in 0..len {
                if i > 0 {
                    out.push(b',');
                }
                write_value(r, out, depth + 1)?;
            }
            out.push(b']');
        }
        0x80..=0x8f | 0xde | 0xdf => {
            if depth >= MAX_WALK_DEPTH {
                return None;
            }
            let len = r.map_len()?;
            out.push(b'{');
            for i in 0..len {
                if i > 0 {
                    out.push(b',');
                }
                write_str(r, out)?;
                out.push(b':');
                write_value(r, out, depth + 1)?;
            }
            out.push(b'}');
        }
        // bin, ext, the unused marker: serde's to judge.
        _ => return None,
    }
    Some(())
}

/// Write the string at the cursor as a JSON string; `None` when it is not one, or not UTF-8.
fn write_str(r: &mut Reader<'_>, out: &mut Vec<u8>) -> Option<()> {
    // The UTF-8 check is the escape scan's: a word without high bits is ASCII.
    write_utf8(out, r.str_bytes()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesh::reply::tests::reply;
    use crate::mesh::reply::{ReplyForm, serde_json_reply};
    use plume_json::arbitrary::value;
    use proptest::prelude::*;
    use serde_json::json;

    /// The two paths agree: the same text, or errors with the same code and message.
    fn agree(payload: &[u8]) -> Result<bool, TestCaseError> {
        let Some(walked) = json_reply(payload, 16) else {
            return Ok(false);
        };
        match (walked, serde_json_reply(payload)) {
            (Ok(a), Ok(b)) => prop_assert_eq!(a.as_bytes(), b.as_bytes()),
            (Err(a), Err(b)) => {
                prop_assert_eq!(a.code(), b.code());
                prop_assert_eq!(a.message(), b.message());
            }
            (a, b) => prop_assert!(false, "they disagree: {:?} vs {:?}", a, b),
        }
        Ok(true)
    }

    #[test]
    fn a_page_of_todos_is_walked() {
        let page = json!({"total": 1, "limit": 10, "skip": 0, "data": [
            {"id": 1, "title": "Say \"hi\"\n", "completed": false, "n": -2.5, "é": "ü"}
        ]});
        let payload = reply(Some(&page), None);
        let Some(Ok(raw)) = json_reply(&payload, 16) else {
            panic!("the usual reply is walked");
        };
        assert_eq!(raw.as_bytes(), serde_json::to_vec(&page).expect("encodes"));
        let Some(Ok(raw)) = json_reply(&reply(None, None), 16) else {
            panic!("a nil result is walked");
        };
        assert!(raw.is_null());
        let err = plume::Error::not_found("gone").to_json();
        let Some(Err(e)) = json_reply(&reply(Some(&json!(1)), Some(&err)), 16) else {
            panic!("an error is walked");
        };
        assert_eq!((e.code(), e.message()), (404, "gone"));
    }

    /// The JSON form (`{"json": <text>}`) is read as the provider's text, passed on as it is;
    /// out of form (beside `ok` or `err`, repeated, not UTF-8, not a string) it is refused
    /// with "malformed reply", never read as a `null` result.
    #[test]
    fn the_json_form_is_passed_on_or_refused() {
        let form = |value: &[u8]| {
            let mut p = vec![0x81, 0xa4, b'j', b's', b'o', b'n'];
            p.extend_from_slice(value);
            p
        };
        let text = br#"{"id":1,"t":"\u0001"}"#;
        let mut str8 = vec![0xd9, u8::try_from(text.len()).expect("short")];
        str8.extend_from_slice(text);
        for payload in [form(&str8), {
            let mut p = vec![0x81, 0xa4, b'j', b's', b'o', b'n', 0xdb, 0, 0, 0];
            p.push(u8::try_from(text.len()).expect("short"));
            p.extend_from_slice(text);
            p
        }] {
            let raw = RawJson::from_payload(&payload).expect("the JSON form");
            assert_eq!(raw.as_bytes(), text);
        }
        let mut beside_ok = vec![0x82, 0xa2, b'o', b'k', 0x01, 0xa4, b'j', b's', b'o', b'n'];
        beside_ok.extend_from_slice(&str8);
        let mut beside_err = vec![
            0x82, 0xa3, b'e', b'r', b'r', 0xc0, 0xa4, b'j', b's', b'o', b'n',
        ];
        beside_err.extend_from_slice(&str8);
        let mut twice = form(&str8);
        twice[0] = 0x82;
        twice.extend_from_slice(&[0xa4, b'j', b's', b'o', b'n']);
        twice.extend_from_slice(&str8);
        for payload in [
            beside_ok,
            beside_err,
            twice,
            form(&[0xa2, 0xff, 0xfe]),
            form(&[0x01]),
            form(&[0xc0]),
            form(&[0xa5, b'{']),
        ] {
            assert!(json_reply(&payload, 16).is_none(), "{payload:?}");
            let e = RawJson::from_payload(&payload).expect_err("out of form");
            assert!(
                e.message().starts_with("malformed reply"),
                "{payload:?}: {e}"
            );
        }
    }

    /// A big JSON-form text is kept as a slice of the reply (the same bytes, no copy); a small
    /// one is copied out; a reply in another form is never sliced.
    #[test]
    fn a_big_json_text_is_kept_in_the_reply() {
        let payload = |text: &[u8]| {
            let mut p = vec![0x81, 0xa4, b'j', b's', b'o', b'n', 0xdb];
            p.extend_from_slice(&u32::try_from(text.len()).expect("fits").to_be_bytes());
            p.extend_from_slice(text);
            bytes::Bytes::from(p)
        };
        let inside =
            |raw: &RawJson, p: &bytes::Bytes| p.as_ptr_range().contains(&raw.as_bytes().as_ptr());
        let big = format!("\"{}\"", "é".repeat(40 * 1024));
        let p = payload(big.as_bytes());
        assert_eq!(json_form_text(&p), Some(11..p.len()));
        let raw = RawJson::from_payload_bytes(&p).expect("the JSON form");
        assert_eq!(raw.as_bytes(), big.as_bytes());
        assert!(inside(&raw, &p), "kept in the reply");
        let p = payload(b"[1,2]");
        let raw = RawJson::from_payload_bytes(&p).expect("the JSON form");
        assert_eq!(raw.as_bytes(), b"[1,2]");
        assert!(!inside(&raw, &p), "copied");
        // Not UTF-8, or trailing bytes: not sliced, refused.
        let mut bad = payload(big.as_bytes()).to_vec();
        bad[20] = 0xff;
        assert_eq!(json_form_text(&bad), None);
        assert!(RawJson::from_payload_bytes(&bytes::Bytes::from(bad)).is_err());
        let mut trailing = payload(big.as_bytes()).to_vec();
        trailing.push(0xc0);
        assert_eq!(json_form_text(&trailing), None);
        assert!(RawJson::from_payload_bytes(&bytes::Bytes::from(trailing)).is_err());
        // The usual form, however big, is written out, not sliced.
        let usual = reply(Some(&json!("x".repeat(64 * 1024))), None);
        assert_eq!(json_form_text(&usual), None);
        let raw = RawJson::from_payload_bytes(&usual).expect("the usual form");
        assert!(!inside(&raw, &usual));
    }

    #[test]
    fn what_the_walk_leaves_to_serde() {
        let cases: [&[u8]; 8] = [
            // The array form of a reply.
            &[0x92, 0x01, 0xc0],
            // A repeated `ok`.
            &[0x82, 0xa2, b'o', b'k', 0x01, 0xa2, b'o', b'k', 0x02],
            // A non-string key inside the result.
            &[0x81, 0xa2, b'o', b'k', 0x81, 0x01, 0x02],
            // A bin value.
            &[0x81, 0xa2, b'o', b'k', 0xc4, 0x01, 0x07],
            // Invalid UTF-8 in a string.
            &[0x81, 0xa2, b'o', b'k', 0xa2, 0xff, 0xfe],
            // An ext value.
            &[0x81, 0xa2, b'o', b'k', 0xd4, 0x01, 0x02],
            // Truncated.
            &[0x81, 0xa2, b'o', b'k', 0x92, 0x01],
            // Trailing bytes.
            &[0x81, 0xa2, b'o', b'k', 0x01, 0x01],
        ];
        for payload in cases {
            assert!(json_reply(payload, 16).is_none(), "{payload:?}");
        }
        let mut deep = vec![0x81, 0xa2, b'o', b'k'];
        deep.extend(std::iter::repeat_n(0x91, MAX_WALK_DEPTH + 1));
        deep.push(0x01);
        assert!(json_reply(&deep, 16).is_none());
    }

    proptest! {
        #[test]
        fn walked_replies_are_what_serde_makes_of_them(v in value(), e in any::<bool>()) {
            let err = plume::Error::bad_request("no").with_data(v.clone()).to_json();
            prop_assert!(agree(&reply(Some(&v), None))?, "the usual reply is walked");
            prop_assert!(agree(&reply(Some(&v), e.then_some(&err)))?);
            prop_assert!(agree(&reply(None, Some(&err)))?);
        }

        #[test]
        fn the_walk_accepts_nothing_serde_refuses(
            tail in prop::collection::vec(any::<u8>(), 0..120),
            wrapped in any::<bool>(),
        ) {
            // Mostly `{"ok": <arbitrary bytes>}`, so the bytes reach the walk.
            let mut bytes = if wrapped { vec![0x81, 0xa2, b'o', b'k'] } else { Vec::new() };
            bytes.extend_from_slice(&tail);
            agree(&bytes)?;
        }
    }
}
