//! A served message's payload, kept in the bytes it arrived in — MessagePack on the mesh, JSON on
//! NATS — until someone needs it:
//! - matching reads only the top-level primitive properties, borrowed from the bytes ([`Props`]);
//! - a typed handler decodes the bytes straight into its type ([`Payload::decode`]);
//! - the JSON map ([`Payload::map`], what `Req::pattern` gives) is built on first use only.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;
use std::sync::OnceLock;

use bytes::Bytes;
use serde::de::{self, DeserializeOwned, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::{Map, Number, Value};

use crate::error::HemeraError;

const LOG: &str = "plume::pattern";

/// The deepest nesting a MessagePack payload may have (the mesh's own limit).
const MAX_DEPTH: usize = plume_transport::protocol::MAX_PAYLOAD_DEPTH;

/// The payload of a served message: the message without its `$` keys (`topic` and the other
/// pattern keys included).
pub(crate) struct Payload {
    repr: Repr,
    /// The payload as a JSON map, built on first use (set at once for [`Repr::Map`]).
    map: OnceLock<Map<String, Value>>,
}

#[derive(Clone)]
enum Repr {
    /// Already a map: the payload is in `Payload::map`.
    Map,
    /// A MessagePack map (a mesh request).
    Msgpack(Bytes),
    /// A JSON object, checked to be valid JSON (a NATS request).
    Json(Bytes),
}

impl Clone for Payload {
    fn clone(&self) -> Self {
        let map = OnceLock::new();
        if let Some(m) = self.map.get() {
            let _ = map.set(m.clone());
        }
        Payload {
            repr: self.repr.clone(),
            map,
        }
    }
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.map(), f)
    }
}

impl Payload {
    /// A payload that is a map already.
    pub(crate) fn from_map(map: Map<String, Value>) -> Payload {
        Payload {
            repr: Repr::Map,
            map: OnceLock::from(map),
        }
    }

    /// A payload in MessagePack: a map, or [`props`](Self::props) says what is wrong.
    pub(crate) fn msgpack(bytes: Bytes) -> Payload {
        Payload {
            repr: Repr::Msgpack(bytes),
            map: OnceLock::new(),
        }
    }

    /// A payload in JSON: `bytes` must be valid JSON (the caller parsed it as a raw value).
    pub(crate) fn json(bytes: Bytes) -> Payload {
        Payload {
            repr: Repr::Json(bytes),
            map: OnceLock::new(),
        }
    }

    /// The payload as a JSON map (decoded on first use). A payload that does not decode into one
    /// gives an empty map (and a warning): [`props`](Self::props) refuses such a payload before
    /// any handler sees it.
    pub(crate) fn map(&self) -> &Map<String, Value> {
        self.map.get_or_init(|| {
            let decoded = match &self.repr {
                Repr::Msgpack(bytes) => {
                    let mut de = rmp_serde::Deserializer::from_read_ref(bytes.as_ref());
                    de.set_max_depth(MAX_DEPTH);
                    Map::deserialize(&mut de).map_err(|e| e.to_string())
                }
                Repr::Json(bytes) => serde_json::from_slice(bytes).map_err(|e| e.to_string()),
                // Set when made: not reached.
                Repr::Map => Ok(Map::new()),
            };
            decoded.unwrap_or_else(|e| {
                tracing::warn!(target: LOG, "payload does not decode: {e}");
                Map::new()
            })
        })
    }

    /// The payload's MessagePack bytes (a shared handle, not a copy), when it is in MessagePack.
    pub(crate) fn msgpack_bytes(&self) -> Option<Bytes> {
        match &self.repr {
            Repr::Msgpack(bytes) => Some(bytes.clone()),
            _ => None,
        }
    }

    /// The payload's JSON bytes (a shared handle, not a copy), when it is in JSON.
    pub(crate) fn json_bytes(&self) -> Option<Bytes> {
        match &self.repr {
            Repr::Json(bytes) => Some(bytes.clone()),
            _ => None,
        }
    }

    /// The payload as a JSON map, moved out.
    pub(crate) fn into_map(mut self) -> Map<String, Value> {
        self.map();
        self.map.take().unwrap_or_default()
    }

    /// The top-level properties that matching reads, borrowed from the payload; an error when
    /// the payload is not a map.
    pub(crate) fn props(&self) -> Result<Props<'_>, HemeraError> {
        let decoded = match &self.repr {
            Repr::Map => {
                return Ok(Props(
                    self.map()
                        .iter()
                        .map(|(k, v)| (Cow::Borrowed(k.as_bytes()), Prim::of(v)))
                        .collect(),
                ));
            }
            Repr::Msgpack(bytes) => {
                // The usual payload (primitive properties) is walked; serde reads the rest.
                if let Some(props) = crate::walk::read_props(bytes) {
                    return Ok(props);
                }
                let mut de = rmp_serde::Deserializer::from_read_ref(bytes.as_ref());
                de.set_max_depth(MAX_DEPTH);
                Props::deserialize(&mut de).map_err(|e| e.to_string())
            }
            Repr::Json(bytes) => serde_json::from_slice(bytes).map_err(|e| e.to_string()),
        };
        decoded.map_err(|e| HemeraError::parse(format!("the payload is not a map: {e}")))
    }

    /// The payload decoded into `T` (serde), straight from its bytes: a payload that does not
    /// fit is a `PayloadValidationError` naming the field.
    ///
    /// When the bytes do not decode into `T`, the JSON map is decoded instead: the error then
    /// reads as serde's (the MessagePack decoder only says "wrong marker"), and a payload is
    /// accepted exactly when its JSON map is, whatever the bytes' format.
    pub(crate) fn decode<T: DeserializeOwned>(&self) -> Result<T, HemeraError> {
        let direct = match &self.repr {
            Repr::Msgpack(bytes) => {
                // The usual payload is walked (as matching walked it) and decoded from there;
                // serde reads the rest from the bytes.
                match crate::walk::read_props(bytes).and_then(|p| crate::view::decode::<T>(&p)) {
                    Some(value) => Some(value),
                    None => {
                        let mut de = rmp_serde::Deserializer::from_read_ref(bytes.as_ref());
                        de.set_max_depth(MAX_DEPTH);
                        T::deserialize(&mut de).ok()
                    }
                }
            }
            Repr::Json(bytes) => serde_json::from_slice(bytes).ok(),
            Repr::Map => None,
        };
        match direct {
            Some(value) => Ok(value),
            None => serde_path_to_error::deserialize(self.map()).map_err(|e| {
                let field = e.path().to_string();
                HemeraError::payload_validation(&field, e.into_inner().to_string())
            }),
        }
    }
}

/// The payload's top-level properties, their primitive values borrowed (compound values are
/// only marked as such): what a pattern is matched against. Keys and strings are kept as the
/// bytes of valid UTF-8 (checked when read): matching compares them as bytes.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Props<'a>(Vec<(Cow<'a, [u8]>, Prim<'a>)>);

impl<'a> Props<'a> {
    /// The properties, in their order (repeated keys included).
    pub(crate) fn entries(&self) -> &[(Cow<'a, [u8]>, Prim<'a>)] {
        &self.0
    }

    /// The properties in `entries`, in their order.
    pub(crate) fn from_vec(entries: Vec<(Cow<'a, [u8]>, Prim<'a>)>) -> Props<'a> {
        Props(entries)
    }

    /// The value of `key` (the last one, as a JSON map keeps, when a key repeats).
    pub(crate) fn get(&self, key: &str) -> Option<&Prim<'a>> {
        let key = key.as_bytes();
        self.0
            .iter()
            .rev()
            .find(|(k, _)| **k == *key)
            .map(|(_, v)| v)
    }

    /// The properties of `map`, borrowed.
    #[cfg(test)]
    pub(crate) fn of_map(map: &'a Map<String, Value>) -> Props<'a> {
        Props(
            map.iter()
                .map(|(k, v)| (Cow::Borrowed(k.as_bytes()), Prim::of(v)))
                .collect(),
        )
    }
}

/// A top-level value as matching sees it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Prim<'a> {
    Null,
    Bool(bool),
    Number(Number),
    /// A string, as the bytes of valid UTF-8.
    Str(Cow<'a, [u8]>),
    /// An object, an array (or, in MessagePack, binary data): never matched.
    Compound,
}

impl<'a> Prim<'a> {
    fn of(v: &'a Value) -> Prim<'a> {
        match v {
            Value::Null => Prim::Null,
            Value::Bool(b) => Prim::Bool(*b),
            Value::Number(n) => Prim::Number(n.clone()),
            Value::String(s) => Prim::Str(Cow::Borrowed(s.as_bytes())),
            Value::Array(_) | Value::Object(_) => Prim::Compound,
        }
    }

    /// Strict equality with a pattern's value, as JavaScript's `===` (numbers by value).
    pub(crate) fn equals(&self, want: &Value) -> bool {
        match (self, want) {
            (Prim::Null, Value::Null) => true,
            (Prim::Bool(a), Value::Bool(b)) => a == b,
            (Prim::Number(a), Value::Number(b)) => a == b || a.as_f64() == b.as_f64(),
            (Prim::Str(a), Value::String(b)) => **a == *b.as_bytes(),
            _ => false,
        }
    }

    /// The string, for a regex property.
    pub(crate) fn as_str(&self) -> Option<&str> {
        match self {
            Prim::Str(s) => std::str::from_utf8(s).ok(),
            _ => None,
        }
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Props<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct PropsVisitor<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for PropsVisitor<'a> {
            type Value = Props<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Props<'a>, A::Error> {
                let mut props = Vec::with_capacity(map.size_hint().unwrap_or(4).min(64));
                while let Some(key) = map.next_key::<Text<'a>>()? {
                    props.push((key.0, map.next_value::<Prim<'a>>()?));
                }
                Ok(Props(props))
            }
        }
        d.deserialize_map(PropsVisitor(PhantomData))
    }
}

/// A string (as its bytes), borrowed from the input when it can be.
struct Text<'a>(Cow<'a, [u8]>);

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct TextVisitor<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for TextVisitor<'a> {
            type Value = Text<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Text<'a>, E> {
                Ok(Text(Cow::Borrowed(v.as_bytes())))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Text<'a>, E> {
                Ok(Text(Cow::Owned(v.as_bytes().to_vec())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Text<'a>, E> {
                Ok(Text(Cow::Owned(v.into_bytes())))
            }
        }
        d.deserialize_str(TextVisitor(PhantomData))
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Prim<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct PrimVisitor<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for PrimVisitor<'a> {
            type Value = Prim<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a value")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Prim<'a>, E> {
                Ok(Prim::Null)
            }
            fn visit_none<E: de::Error>(self) -> Result<Prim<'a>, E> {
                Ok(Prim::Null)
            }
            fn visit_some<D2: Deserializer<'de>>(self, d: D2) -> Result<Prim<'a>, D2::Error> {
                Prim::deserialize(d)
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Prim<'a>, E> {
                Ok(Prim::Bool(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Prim<'a>, E> {
                Ok(Prim::Number(v.into()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Prim<'a>, E> {
                Ok(Prim::Number(v.into()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Prim<'a>, E> {
                // NaN and the infinities are no JSON number: they equal nothing.
                Ok(Number::from_f64(v).map_or(Prim::Compound, Prim::Number))
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Prim<'a>, E> {
                Ok(Prim::Str(Cow::Borrowed(v.as_bytes())))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Prim<'a>, E> {
                Ok(Prim::Str(Cow::Owned(v.as_bytes().to_vec())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Prim<'a>, E> {
                Ok(Prim::Str(Cow::Owned(v.into_bytes())))
            }
            fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<Prim<'a>, E> {
                Ok(Prim::Compound)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Prim<'a>, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Prim::Compound)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Prim<'a>, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Prim::Compound)
            }
        }
        d.deserialize_any(PrimVisitor(PhantomData))
    }
}

/// Bytes carried as one MessagePack `bin` (a payload inside a mesh request). Decodes from
/// `bin` and from an array of bytes (what a JSON value of the request holds).
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct Bin(pub(crate) Vec<u8>);

impl Serialize for Bin {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Bin {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct BinVisitor;
        impl<'de> Visitor<'de> for BinVisitor {
            type Value = Bin;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Bin, E> {
                Ok(Bin(v.to_vec()))
            }
            fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Bin, E> {
                Ok(Bin(v))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Bin, A::Error> {
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
                while let Some(b) = seq.next_element::<u8>()? {
                    out.push(b);
                }
                Ok(Bin(out))
            }
        }
        d.deserialize_byte_buf(BinVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn msgpack(v: &Value) -> Payload {
        Payload::msgpack(Bytes::from(rmp_serde::to_vec(v).expect("encodes")))
    }

    fn json_bytes(v: &Value) -> Payload {
        Payload::json(Bytes::from(serde_json::to_vec(v).expect("encodes")))
    }

    #[derive(Debug, Deserialize, PartialEq)]
    struct Add {
        a: f64,
        b: f64,
        #[serde(default)]
        op: Option<Op>,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(rename_all = "lowercase")]
    enum Op {
        Sum,
    }

    #[test]
    fn every_form_gives_the_same_map_props_and_typed_payload() {
        let v = json!({"topic": "math", "cmd": "add", "a": 1, "b": 2.5, "op": "sum",
                       "n": null, "t": true, "list": [1, {"x": 2}], "obj": {"y": [3]}});
        let map = v.as_object().cloned().expect("object");
        for p in [msgpack(&v), json_bytes(&v), Payload::from_map(map.clone())] {
            assert_eq!(p.map(), &map);
            let props = p.props().expect("a map");
            assert_eq!(props.get("cmd"), Some(&Prim::Str(b"add"[..].into())));
            assert!(props.get("a").expect("a").equals(&json!(1.0)));
            assert!(props.get("a").expect("a").equals(&json!(1)));
            assert!(!props.get("a").expect("a").equals(&json!("1")));
            assert_eq!(props.get("n"), Some(&Prim::Null));
            assert_eq!(props.get("t"), Some(&Prim::Bool(true)));
            assert_eq!(props.get("list"), Some(&Prim::Compound));
            assert_eq!(props.get("obj"), Some(&Prim::Compound));
            assert_eq!(props.get("nope"), None);
            assert_eq!(
                p.decode::<Add>(),
                Ok(Add {
                    a: 1.0,
                    b: 2.5,
                    op: Some(Op::Sum)
                })
            );
            assert_eq!(p.clone().into_map(), map);
        }
    }

    #[test]
    fn a_payload_that_does_not_fit_names_the_field_in_every_form() {
        let v = json!({"topic": "math", "a": "x", "b": 2});
        for p in [
            msgpack(&v),
            json_bytes(&v),
            Payload::from_map(v.as_object().cloned().expect("object")),
        ] {
            let e = p.decode::<Add>().expect_err("a is a string");
            assert_eq!(e.name, "PayloadValidationError");
            assert_eq!(e.props["field"], json!("a"));
            assert!(e.message.contains("invalid type"), "{}", e.message);
            assert!(!e.message.contains("line 1"), "{}", e.message);
        }
    }

    #[test]
    fn payloads_that_are_not_maps_are_refused() {
        for p in [
            msgpack(&json!([1, 2])),
            msgpack(&json!("x")),
            Payload::msgpack(Bytes::from_static(&[0xc1])),
            Payload::msgpack(Bytes::new()),
            json_bytes(&json!(3)),
        ] {
            let e = p.props().expect_err("not a map");
            assert_eq!(e.name, "HemeraParseError");
            // and the map falls back to empty instead of failing later
            assert!(p.map().is_empty());
        }
    }

    #[test]
    fn repeated_keys_match_the_last_as_a_json_map_keeps() {
        let p = Payload::json(Bytes::from_static(br#"{"cmd":"a","cmd":"b"}"#));
        let props = p.props().expect("map");
        assert_eq!(props.get("cmd").and_then(Prim::as_str), Some("b"));
        assert_eq!(p.map()["cmd"], json!("b"));
    }

    #[test]
    fn bin_round_trips_through_msgpack_and_json_values() {
        let bin = Bin(vec![0, 1, 255]);
        let packed = rmp_serde::to_vec(&bin).expect("encodes");
        assert_eq!(packed[0], 0xc4, "a MessagePack bin");
        assert_eq!(rmp_serde::from_slice::<Bin>(&packed).expect("decodes"), bin);
        let value = serde_json::to_value(&bin).expect("encodes");
        assert_eq!(serde_json::from_value::<Bin>(value).expect("decodes"), bin);
    }
}
