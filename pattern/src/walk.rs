//! A served mesh act read by walking its MessagePack bytes instead of decoding them through
//! serde: the request envelope ([`read_mesh_request`]: the payload kept as a share of the received
//! buffer, no copy) and the payload's top-level properties that matching reads ([`read_props`]:
//! keys and strings borrowed, no serde machinery).
//!
//! Only the usual form is read here (what this crate writes, with primitive properties); for
//! anything else each reader answers `None` and the caller decodes with serde as before, so both
//! paths accept and refuse the same input (property tests below).

use std::borrow::Cow;

use bytes::Bytes;
use plume_transport::protocol::Reader;
use serde_json::{Map, Number};

use crate::hemera::Incoming;
use crate::id::Id;
use crate::payload::{Payload, Prim, Props};

/// A mesh request ([`MeshRequest`](crate::wire::MeshRequest)) read from `body`, its encoded
/// bytes: `Some` when it is a map of `payload` (a `bin`), `traceId` and `spanId` (strings), and
/// `meta`/`delegate` only when empty, each key once; `None` for any other form (serde's
/// decoder then says what it makes of it).
pub(crate) fn read_mesh_request(body: &Bytes) -> Option<Incoming> {
    let mut r = Reader::new(body, 0);
    let entries = r.map_len()?;
    let (mut payload, mut trace_id, mut span_id) = (None, None, None);
    let (mut meta, mut delegate) = (false, false);
    for _ in 0..entries {
        match r.str_bytes()? {
            b"payload" if payload.is_none() => payload = Some(r.bin()?),
            b"traceId" if trace_id.is_none() => trace_id = Some(r.str()?),
            b"spanId" if span_id.is_none() => span_id = Some(r.str()?),
            // An empty map (the caller leaves out empty ones): anything in it goes to serde.
            b"meta" if !meta && r.map_len()? == 0 => meta = true,
            b"delegate" if !delegate && r.map_len()? == 0 => delegate = true,
            // A repeated key, `pattern` (a previous version's form), an unknown key.
            _ => return None,
        }
    }
    Some(Incoming {
        pattern: Payload::msgpack(body.slice(payload?)),
        meta: Map::new(),
        delegate: Map::new(),
        trace_id: Id::new(trace_id.unwrap_or_default()),
        span_id: Id::new(span_id.unwrap_or_default()),
        method: None,
    })
}

/// The top-level properties of a MessagePack payload, borrowed from `b`: `Some` when it is a
/// map with string keys and primitive values (nil, booleans, numbers, valid UTF-8 strings);
/// `None` otherwise (nested values, binary data, extensions: serde's `Props` decoder reads
/// those). Bytes after the map are ignored, as serde's decoder does.
pub(crate) fn read_props(b: &[u8]) -> Option<Props<'_>> {
    let mut r = Reader::new(b, 0);
    let entries = r.map_len()?;
    let mut props = Vec::with_capacity(usize::try_from(entries.min(64)).ok()?);
    for _ in 0..entries {
        let key = utf8(r.str_bytes()?)?;
        let value = match r.peek()? {
            0x00..=0x7f | 0xcc..=0xcf => Prim::Number(r.uint()?.into()),
            0xe0..=0xff => Prim::Number(i64::from(r.byte()? as i8).into()),
            m @ 0xd0..=0xd3 => {
                r.byte()?;
                let bytes = 1usize << (m - 0xd0);
                let raw = r.be(bytes)?;
                // Sign-extend the `bytes`-byte two's complement value.
                let shift = 64 - 8 * bytes as u32;
                Prim::Number((((raw << shift) as i64) >> shift).into())
            }
            0xca => {
                r.byte()?;
                let v = f64::from(f32::from_bits(u32::try_from(r.be(4)?).ok()?));
                Number::from_f64(v).map_or(Prim::Compound, Prim::Number)
            }
            0xcb => {
                r.byte()?;
                Number::from_f64(f64::from_bits(r.be(8)?)).map_or(Prim::Compound, Prim::Number)
            }
            0xc0 => {
                r.byte()?;
                Prim::Null
            }
            0xc2 | 0xc3 => Prim::Bool(r.byte()? == 0xc3),
            0xa0..=0xbf | 0xd9..=0xdb => Prim::Str(Cow::Borrowed(utf8(r.str_bytes()?)?)),
            _ => return None,
        };
        props.push((Cow::Borrowed(key), value));
    }
    Some(Props::from_vec(props))
}

/// `b` when it is valid UTF-8 (checked as ASCII first: a short key costs a few instructions,
/// where `from_utf8` costs a call).
fn utf8(b: &[u8]) -> Option<&[u8]> {
    (b.is_ascii() || std::str::from_utf8(b).is_ok()).then_some(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::MeshIncoming;
    use proptest::prelude::*;
    use serde::Deserialize;
    use serde_json::{Value, json};

    const MAX_DEPTH: usize = plume_transport::protocol::MAX_PAYLOAD_DEPTH;

    use plume_json::arbitrary::leaf;

    fn value() -> impl Strategy<Value = Value> {
        leaf().prop_recursive(3, 24, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                proptest::collection::btree_map(".{0,6}", inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// A payload: mostly primitive properties, sometimes nested ones.
    fn payload() -> impl Strategy<Value = Value> {
        proptest::collection::vec((".{0,12}", prop_oneof![4 => leaf(), 1 => value()]), 0..8)
            .prop_map(|kv| Value::Object(kv.into_iter().collect()))
    }

    /// What serde's decoder makes of `b` as props.
    fn serde_props(b: &[u8]) -> Result<Props<'_>, String> {
        let mut de = rmp_serde::Deserializer::from_read_ref(b);
        de.set_max_depth(MAX_DEPTH);
        Props::deserialize(&mut de).map_err(|e| e.to_string())
    }

    /// What serde's decoder makes of `b` as a mesh request.
    fn serde_request(b: &Bytes) -> Option<(Value, Value, Value, String, String)> {
        let req = rmp_serde::from_slice::<MeshIncoming>(b).ok()?;
        let inc = req.into_incoming().ok()?;
        Some(parts(inc))
    }

    fn parts(inc: Incoming) -> (Value, Value, Value, String, String) {
        (
            Value::Object(inc.pattern.into_map()),
            Value::Object(inc.meta),
            Value::Object(inc.delegate),
            inc.trace_id.into(),
            inc.span_id.into(),
        )
    }

    /// A request as a caller writes it (the transport encodes bodies with `write_named`).
    fn request(payload: &Value, meta: &Value, trace: &str, span: &str) -> Bytes {
        let mut body = json!({
            "payload": serde_bytes(payload),
            "traceId": trace,
            "spanId": span,
        });
        if meta.as_object().is_some_and(|m| !m.is_empty()) {
            body["meta"] = meta.clone();
        }
        let mut out = Vec::new();
        rmp_serde::encode::write_named(&mut out, &Envelope(&body)).expect("encodes");
        Bytes::from(out)
    }

    /// The payload's MessagePack, marked to be written as a `bin`.
    fn serde_bytes(payload: &Value) -> Value {
        json!({"$bin": rmp_serde::to_vec_named(payload).expect("encodes")})
    }

    /// Writes a JSON value as MessagePack, with `{"$bin": [bytes]}` as a `bin`.
    struct Envelope<'a>(&'a Value);

    impl serde::Serialize for Envelope<'_> {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            use serde::ser::SerializeMap;
            match self.0 {
                Value::Object(m) if m.len() == 1 && m.contains_key("$bin") => {
                    let bytes: Vec<u8> = m["$bin"]
                        .as_array()
                        .map(|a| {
                            a.iter()
                                .filter_map(Value::as_u64)
                                .map(|b| b as u8)
                                .collect()
                        })
                        .unwrap_or_default();
                    s.serialize_bytes(&bytes)
                }
                Value::Object(m) => {
                    let mut map = s.serialize_map(Some(m.len()))?;
                    for (k, v) in m {
                        map.serialize_entry(k, &Envelope(v))?;
                    }
                    map.end()
                }
                other => other.serialize(s),
            }
        }
    }

    proptest! {
        /// Whatever the payload, the walked props are serde's (in order, repeated keys too),
        /// or the walk leaves the payload to serde.
        #[test]
        fn walked_props_agree_with_serde(payload in payload()) {
            let bytes = rmp_serde::to_vec_named(&payload).expect("encodes");
            let serde = serde_props(&bytes).expect("a map");
            let primitive = payload.as_object().is_some_and(|m| {
                m.values().all(|v| !v.is_array() && !v.is_object())
            });
            match read_props(&bytes) {
                Some(walked) => prop_assert_eq!(walked, serde),
                None => prop_assert!(!primitive, "a primitive payload was not walked"),
            }
        }

        /// Truncated or garbled payloads never panic; walked props are serde's.
        #[test]
        fn garbled_props_are_refused_or_agree(
            payload in payload(),
            cut in any::<prop::sample::Index>(),
            flip in any::<(prop::sample::Index, u8)>(),
        ) {
            let mut bytes = rmp_serde::to_vec_named(&payload).expect("encodes");
            let (at, x) = flip;
            if !bytes.is_empty() {
                let i = at.index(bytes.len());
                bytes[i] ^= x;
            }
            bytes.truncate(cut.index(bytes.len() + 1));
            if let Some(walked) = read_props(&bytes) {
                prop_assert_eq!(Ok(walked), serde_props(&bytes));
            }
        }

        /// A request as callers write it is walked, and gives what serde decodes.
        #[test]
        fn walked_requests_agree_with_serde(
            payload in payload(),
            meta in proptest::collection::btree_map("[a-z]{1,3}", leaf(), 0..3),
            trace in ".{0,30}",
            span in "[A-Z0-9]{22}",
        ) {
            let meta = Value::Object(meta.into_iter().collect());
            let bytes = request(&payload, &meta, &trace, &span);
            let serde = serde_request(&bytes).expect("serde decodes it");
            match read_mesh_request(&bytes) {
                Some(walked) => prop_assert_eq!(parts(walked), serde),
                None => prop_assert!(
                    meta.as_object().is_some_and(|m| !m.is_empty()),
                    "a request without meta was not walked"
                ),
            }
        }

        /// Truncated or garbled requests never panic; a walked one is what serde decodes.
        #[test]
        fn garbled_requests_are_refused_or_agree(
            payload in payload(),
            cut in any::<prop::sample::Index>(),
            flip in any::<(prop::sample::Index, u8)>(),
        ) {
            let mut bytes = request(&payload, &json!({}), "T", "S").to_vec();
            let (at, x) = flip;
            let i = at.index(bytes.len());
            bytes[i] ^= x;
            bytes.truncate(cut.index(bytes.len() + 1));
            let bytes = Bytes::from(bytes);
            if let Some(walked) = read_mesh_request(&bytes) {
                let walked = parts(walked);
                prop_assert_eq!(Some(walked), serde_request(&bytes));
            }
        }
    }

    #[test]
    fn other_forms_are_left_to_serde() {
        // the previous version's `pattern`, a repeated key, an unknown key, a non-empty meta, a
        // payload that is not a `bin`, a number as trace id
        for other in [
            json!({"pattern": {"topic": "t"}, "traceId": "T", "spanId": "S"}),
            json!({"payload": serde_bytes(&json!({"topic": "t"})), "x": 1}),
            json!({"payload": serde_bytes(&json!({"topic": "t"})), "meta": {"k": 1}}),
            json!({"payload": [1, 2], "spanId": "S"}),
            json!({"payload": serde_bytes(&json!({"topic": "t"})), "traceId": 5}),
            json!([1]),
        ] {
            let mut out = Vec::new();
            rmp_serde::encode::write_named(&mut out, &Envelope(&other)).expect("encodes");
            assert!(read_mesh_request(&Bytes::from(out)).is_none(), "{other}");
        }
        let mut twice = Vec::new();
        rmp_serde::encode::write_named(
            &mut twice,
            &Envelope(&json!({"payload": serde_bytes(&json!({"topic": "t"}))})),
        )
        .expect("encodes");
        assert!(read_mesh_request(&Bytes::from(twice.clone())).is_some());
        twice[0] += 1;
        twice.extend(rmp_serde::to_vec(&"payload").expect("key"));
        twice.extend([0xc4, 0]);
        assert!(read_mesh_request(&Bytes::from(twice)).is_none());
        // nested, binary and extension values: serde reads them
        for other in [json!({"a": [1]}), json!({"a": {"b": 1}})] {
            let bytes = rmp_serde::to_vec_named(&other).expect("encodes");
            assert!(read_props(&bytes).is_none(), "{other}");
        }
        assert!(read_props(&[0x81, 0xa1, b'a', 0xc4, 0]).is_none());
        assert!(read_props(&[0x81, 0xa1, b'a', 0xd4, 1, 2]).is_none());
        // invalid UTF-8 in a key or a string
        assert!(read_props(&[0x81, 0xa1, 0xff, 0xc0]).is_none());
        assert!(read_props(&[0x81, 0xa1, b'a', 0xa1, 0xff]).is_none());
    }
}
