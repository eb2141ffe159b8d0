//! Version 2 of the mesh envelopes of an act (Plume to Plume; the Hemera NATS wire is not
//! this): the request and the reply each travel as one MessagePack `bin` whose bytes are a
//! version byte (2) and the version 1 map, written by hand (`crate::pack`) instead of through
//! serde's serializer, and read back by walking them (`crate::walk`). See docs/protocol.md,
//! "Pattern acts on the mesh".
//!
//! - request: `bin(02 {payload: bin(map), meta?, delegate?, traceId, spanId})`;
//! - reply (to a version 2 request only): `bin(02 {result: v})` or `bin(02 {error: e})`.
//!
//! Only MessagePack carries them (a serializer that is not human-readable): an act to a
//! provider on the caller's own node is handed over as a value, in the version 1 form.
//! A node of the previous version refuses a version 2 request (its decoder finds a `bin` where
//! it wants a map: a `HemeraParseError` "undecodable request" to the caller); a version 1
//! request is still read, and answered in version 1.

use bytes::Bytes;
use serde::Serialize;
use serde::ser::{Error as _, Serializer};
use serde_json::Value;

use crate::error::HemeraError;
use crate::hemera::Incoming;
use crate::pack;
use crate::walk::read_mesh_request;
use crate::wire::{MeshIncoming, MeshRequest};

/// The version byte that opens a version 2 envelope's bytes.
pub(crate) const VERSION: u8 = 2;

/// The most a thread's envelope buffer keeps between acts (a larger one is let go).
const KEEP: usize = 64 * 1024;

/// Write into this thread's envelope buffer (kept from one act to the next: an act allocates
/// nothing for its envelope; the transport copies the bytes into its frame at once).
fn with_buffer<R>(f: impl FnOnce(&mut Vec<u8>) -> R) -> R {
    thread_local! {
        static BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    BUF.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => {
            buf.clear();
            let r = f(&mut buf);
            if buf.capacity() > KEEP {
                *buf = Vec::new();
            }
            r
        }
        // (not reached: writing an envelope does not write another)
        Err(_) => f(&mut Vec::new()),
    })
}

/// A request's version 2 bytes (the version byte, then the map).
pub(crate) fn write_request(out: &mut Vec<u8>, req: &MeshRequest<'_>) -> Option<()> {
    let (meta, delegate) = (!req.meta.is_empty(), !req.delegate.is_empty());
    out.push(VERSION);
    out.push(0x80 | (3 + u8::from(meta) + u8::from(delegate)));
    out.extend_from_slice(b"\xa7payload");
    // The payload's map in a `bin`: its length is known once it is written (a `bin 8` header
    // first, widened in the rare payload above 255 bytes).
    let at = out.len();
    out.extend_from_slice(&[0xc4, 0]);
    pack::write_map(out, req.payload.len(), req.payload.iter());
    let len = out.len() - at - 2;
    if let Ok(n) = u8::try_from(len) {
        out[at + 1] = n;
    } else if let Ok(n) = u16::try_from(len) {
        let [a, b] = n.to_be_bytes();
        out.splice(at..at + 2, [0xc5, a, b]);
    } else {
        let [a, b, c, d] = u32::try_from(len).ok()?.to_be_bytes();
        out.splice(at..at + 2, [0xc6, a, b, c, d]);
    }
    if meta {
        out.extend_from_slice(b"\xa4meta");
        pack::write_map(out, req.meta.len(), req.meta.iter());
    }
    if delegate {
        out.extend_from_slice(b"\xa8delegate");
        pack::write_map(out, req.delegate.len(), req.delegate.iter());
    }
    let span = req.span_id.as_bytes();
    out.extend_from_slice(b"\xa7traceId");
    id(out, req.inherited_trace_id.map_or(span, str::as_bytes));
    out.extend_from_slice(b"\xa6spanId");
    id(out, span);
    Some(())
}

/// An id as a MessagePack string: a Plume id (22 bytes) copied as one fixed-size block.
fn id(out: &mut Vec<u8>, id: &[u8]) {
    match <&[u8; 22]>::try_from(id) {
        Ok(id) => {
            let mut s = [0xa0 | 22; 23];
            s[1..].copy_from_slice(id);
            out.extend_from_slice(&s);
        }
        Err(_) => pack::str_bytes(out, id),
    }
}

/// Serialize `req` as its version 2 `bin`.
pub(crate) fn serialize_request<S: Serializer>(
    req: &MeshRequest<'_>,
    s: S,
) -> Result<S::Ok, S::Error> {
    with_buffer(|buf| match write_request(buf, req) {
        Some(()) => s.serialize_bytes(buf),
        None => Err(S::Error::custom("the act's payload is larger than 4 GiB")),
    })
}

/// Whether `body` (a request body's MessagePack) is a version 2 envelope (a `bin`).
pub(crate) fn is_compact(body: &[u8]) -> bool {
    matches!(body.first(), Some(0xc4..=0xc6))
}

/// A version 2 request read from its body (a `bin`'s MessagePack).
pub(crate) fn read_request(body: &Bytes) -> Result<Incoming, HemeraError> {
    let mut r = plume_transport::protocol::Reader::new(body, 0);
    match r.bin() {
        Some(range) => read_request_bytes(body.slice(range)),
        None => Err(HemeraError::parse(
            "undecodable request: not a MessagePack bin",
        )),
    }
}

/// A version 2 request read from its bytes (the version byte, then the map).
pub(crate) fn read_request_bytes(bytes: Bytes) -> Result<Incoming, HemeraError> {
    match bytes.first() {
        Some(&VERSION) => {}
        Some(v) => {
            return Err(HemeraError::parse(format!(
                "undecodable request: mesh envelope version {v} (this node reads versions 1 and 2)"
            )));
        }
        None => return Err(HemeraError::parse("undecodable request: empty envelope")),
    }
    let map = bytes.slice(1..);
    // The usual request is walked; serde reads any other form of the map.
    if let Some(incoming) = read_mesh_request(&map) {
        return Ok(incoming);
    }
    plume_transport::protocol::decode_payload::<MeshIncoming>(&map)
        .map_err(|e| HemeraError::parse(format!("undecodable request: {e}")))
        .and_then(MeshIncoming::into_incoming)
}

/// `b` when it is exactly one number, boolean or nil, read as serde reads it into a `Value`
/// (a non-finite float is `null`); `None` for anything else (serde reads it).
fn scalar(b: &[u8]) -> Option<Value> {
    match b {
        [n @ 0x00..=0x7f] => Some(Value::from(*n)),
        [0xc0] => Some(Value::Null),
        [0xc2] => Some(Value::Bool(false)),
        [0xc3] => Some(Value::Bool(true)),
        [0xcb, rest @ ..] => {
            let bits = u64::from_be_bytes(<[u8; 8]>::try_from(rest).ok()?);
            Some(
                serde_json::Number::from_f64(f64::from_bits(bits))
                    .map_or(Value::Null, Value::Number),
            )
        }
        _ => None,
    }
}

/// A version 2 reply: `{result: v}` or `{error: e}` in a `bin`, after the version byte.
pub(crate) struct Reply<'a>(pub(crate) &'a Result<Value, Value>);

impl Serialize for Reply<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        with_buffer(|buf| {
            buf.extend_from_slice(&[VERSION, 0x81]);
            match self.0 {
                Ok(v) => {
                    buf.extend_from_slice(b"\xa6result");
                    pack::value(buf, v);
                }
                Err(e) => {
                    buf.extend_from_slice(b"\xa5error");
                    pack::value(buf, e);
                }
            }
            s.serialize_bytes(buf)
        })
    }
}

/// What a version 2 reply's bytes hold: `(result, error)` as a version 1 reply's map gives
/// them; `None` when they are not a version 2 reply in the form [`Reply`] writes.
pub(crate) fn read_reply(b: &[u8]) -> Option<Result<(Option<Value>, Option<Value>), String>> {
    let rest = b.strip_prefix(&[VERSION, 0x81])?;
    let (is_result, value) = if let Some(v) = rest.strip_prefix(b"\xa6result") {
        (true, v)
    } else {
        (false, rest.strip_prefix(b"\xa5error")?)
    };
    Some(
        scalar(value)
            .map_or_else(
                || plume_transport::protocol::decode_payload::<Value>(value),
                Ok,
            )
            .map(|v| {
                if is_result {
                    (Some(v), None)
                } else {
                    (None, Some(v))
                }
            }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hemera::Options;
    use crate::message::Message;
    use crate::pack::tests::value;
    use proptest::prelude::*;
    use serde_json::{Map, json};

    fn map() -> impl Strategy<Value = Map<String, Value>> {
        proptest::collection::btree_map(".{0,8}", value(), 0..4)
            .prop_map(|m| m.into_iter().collect())
    }

    proptest! {
        /// A request written in version 2 and read back is what the version 1 map (through
        /// serde) gives: payload, meta, delegate and ids.
        #[test]
        fn compact_requests_read_as_the_map_form(
            payload in map(),
            meta in map(),
            delegate in map(),
            span in proptest::option::of("[a-zA-Z0-9]{1,30}"),
            trace in proptest::option::of("[a-zA-Z0-9]{1,30}"),
        ) {
            let mut msg = payload.clone();
            msg.insert("topic".into(), json!("math"));
            let mut t = Map::new();
            if let Some(s) = &span { t.insert("spanId".into(), json!(s)); }
            if let Some(s) = &trace { t.insert("traceId".into(), json!(s)); }
            msg.insert("trace$".into(), Value::Object(t));
            msg.insert("meta$".into(), Value::Object(meta));
            msg.insert("delegate$".into(), Value::Object(delegate));
            let msg = Value::Object(msg);
            let m = Message::parse(&msg, None, &Options::default()).expect("message");
            let req = MeshRequest::of_ref(&m);
            // version 2: the bin, as the transport writes it into a frame
            let packed = Bytes::from(rmp_serde::to_vec_named(&req).expect("encodes"));
            prop_assert!(is_compact(&packed));
            let compact = read_request(&packed).expect("reads");
            // version 1: the map, read by serde
            let v1 = rmp_serde::to_vec_named(&crate::wire::MapForm(&req)).expect("encodes");
            let plain: MeshIncoming = rmp_serde::from_slice(&v1).expect("decodes");
            let plain = plain.into_incoming().expect("incoming");
            prop_assert_eq!(&compact.meta, &plain.meta);
            prop_assert_eq!(&compact.delegate, &plain.delegate);
            prop_assert_eq!(compact.trace_id.as_str(), plain.trace_id.as_str());
            prop_assert_eq!(compact.span_id.as_str(), plain.span_id.as_str());
            prop_assert_eq!(compact.pattern.into_map(), plain.pattern.into_map());
        }

        /// A version 2 reply reads back as the outcome it was written from.
        #[test]
        fn compact_replies_read_back(v in value(), is_ok in any::<bool>()) {
            let outcome = if is_ok { Ok(v.clone()) } else { Err(v.clone()) };
            let packed = rmp_serde::to_vec_named(&Reply(&outcome)).expect("encodes");
            let bytes: serde_bytes_like::Buf = rmp_serde::from_slice(&packed).expect("a bin");
            let back = read_reply(&bytes.0).expect("v2").expect("decodes");
            let want = if is_ok { (Some(v), None) } else { (None, Some(v)) };
            prop_assert_eq!(back, want);
        }
    }

    #[test]
    fn large_payloads_take_wider_bin_headers() {
        for (len, marker) in [(200, 0xc4), (1_000, 0xc5), (70_000, 0xc6)] {
            let v = json!({"topic": "big", "s": "x".repeat(len)});
            let m = Message::parse(&v, None, &Options::default()).expect("message");
            let packed =
                Bytes::from(rmp_serde::to_vec_named(&MeshRequest::of_ref(&m)).expect("encodes"));
            let back = read_request(&packed).expect("reads");
            assert_eq!(Value::Object(back.pattern.into_map()), v);
            // the payload's own `bin`, after the version byte, the map's header and its key
            let inner = rmp_serde::from_slice::<serde_bytes_like::Buf>(&packed)
                .expect("a bin")
                .0;
            assert_eq!(inner.get(10), Some(&marker), "{len}");
        }
    }

    /// A request that the transport could not locate in its frame is decoded by serde
    /// (`AnyRequest`): both versions.
    #[test]
    fn serde_reads_both_versions() {
        let v = json!({"topic": "math", "a": 1, "meta$": {"m": 1}});
        let m = Message::parse(&v, None, &Options::default()).expect("message");
        let req = MeshRequest::of_ref(&m);
        for packed in [
            rmp_serde::to_vec_named(&req).expect("encodes"),
            rmp_serde::to_vec_named(&crate::wire::MapForm(&req)).expect("encodes"),
        ] {
            let any: crate::wire::AnyRequest = rmp_serde::from_slice(&packed).expect("decodes");
            let incoming = any.into_incoming().expect("incoming");
            assert_eq!(Value::Object(incoming.meta), json!({"m": 1}));
            assert_eq!(incoming.span_id.as_str(), m.span_id.as_str());
            assert_eq!(
                Value::Object(incoming.pattern.into_map()),
                json!({"topic": "math", "a": 1})
            );
        }
    }

    #[test]
    fn other_versions_are_refused_clearly() {
        // a node of version 1 reads the body as its map: a version 2 `bin` does not decode
        let v = json!({"topic": "math", "a": 1});
        let m = Message::parse(&v, None, &Options::default()).expect("message");
        let packed = rmp_serde::to_vec_named(&MeshRequest::of_ref(&m)).expect("encodes");
        // (rmp-serde reads the `bin` as a sequence of its bytes: "invalid type: integer `2`")
        let e = rmp_serde::from_slice::<MeshIncoming>(&packed).expect_err("refused");
        assert!(e.to_string().contains("integer `2`"), "{e}");
        let e = read_request_bytes(Bytes::from_static(&[3, 0x80])).expect_err("refused");
        assert_eq!(e.name, "HemeraParseError");
        assert!(e.message.contains("version 3"), "{}", e.message);
        assert!(read_request_bytes(Bytes::new()).is_err());
        assert!(read_reply(&[3, 0x81]).is_none());
    }

    /// A `bin`'s bytes, for the tests.
    mod serde_bytes_like {
        pub(super) struct Buf(pub(super) Vec<u8>);
        impl<'de> serde::Deserialize<'de> for Buf {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                crate::payload::Bin::deserialize(d).map(|b| Buf(b.0))
            }
        }
    }
}
