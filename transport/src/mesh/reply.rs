//! The result of a call, in the form the caller wants it: a [`Value`], or JSON text made
//! straight from the MessagePack reply (no `Value` built on the way), which a gateway sends on as
//! an HTTP body.

use std::fmt;

use bytes::Bytes;

use plume::{Error, RawJson};
use serde::de::DeserializeOwned;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::reply_walk::{json_form_text, json_reply};
use crate::Answer;
use crate::protocol::{ResponseMsg, decode_payload, decode_payload_seed};

/// A form of call result: how it is made from a reply payload (an encoded [`ResponseMsg`]) and
/// from the value a handler on this node returned.
pub(crate) trait ReplyForm: Sized + Send {
    /// This form takes a result as JSON text: its requests carry the `json` hint, and a
    /// provider may answer in the JSON form of a reply (which only this form reads).
    const JSON: bool = false;
    /// Decode a reply payload: the result, or the provider's error.
    fn from_payload(payload: &[u8]) -> Result<Self, Error>;
    /// [`from_payload`](Self::from_payload) of a payload in its own buffer, which the result
    /// may keep a slice of instead of copying out of it.
    fn from_payload_bytes(payload: &Bytes) -> Result<Self, Error> {
        Self::from_payload(payload)
    }
    /// A result that never crossed a wire.
    fn from_value(value: Value) -> Result<Self, Error>;
    /// What a handler on this node answered.
    fn from_answer(answer: Answer) -> Result<Self, Error> {
        match answer {
            Answer::Value(v) => Self::from_value(v),
            Answer::Encoded(e) => {
                Self::from_value(decode_payload(e.result_bytes()).map_err(malformed)?)
            }
        }
    }
}

impl ReplyForm for Value {
    fn from_payload(payload: &[u8]) -> Result<Self, Error> {
        match decode_payload::<ResponseMsg>(payload) {
            Ok(ResponseMsg { err: Some(e), .. }) => Err(Error::from_json(e)),
            Ok(ResponseMsg { ok, .. }) => Ok(ok.unwrap_or(Value::Null)),
            Err(e) => Err(malformed(e)),
        }
    }

    fn from_value(value: Value) -> Result<Self, Error> {
        Ok(value)
    }
}

impl ReplyForm for RawJson {
    const JSON: bool = true;

    fn from_payload(payload: &[u8]) -> Result<Self, Error> {
        // The JSON text is about as long as the MessagePack (a string's header becomes its
        // quotes): one buffer of that size, so that a big answer is written without regrowing
        // (each regrowth copies all that was written).
        let capacity = payload.len() + payload.len() / 8 + 64;
        if let Some(reply) = json_reply(payload, capacity) {
            return reply;
        }
        serde_json_reply_with(payload, capacity)
    }

    /// A big text in the JSON form is kept as a slice of the reply (no copy of it); a small one
    /// is copied, so the link's read buffer it came in is not held while the HTTP answer waits.
    fn from_payload_bytes(payload: &Bytes) -> Result<Self, Error> {
        match json_form_text(payload) {
            Some(text) if text.len() >= KEEP_BY_REFERENCE => {
                Ok(RawJson::from_encoded(payload.slice(text)))
            }
            Some(text) => Ok(RawJson::from_encoded(Bytes::copy_from_slice(
                &payload[text],
            ))),
            None => Self::from_payload(payload),
        }
    }

    fn from_value(value: Value) -> Result<Self, Error> {
        Ok(RawJson::from_value(&value))
    }
}

/// From this size on, the JSON text of a reply is kept as a slice of the reply's buffer.
const KEEP_BY_REFERENCE: usize = 32 * 1024;

/// A reply payload as JSON text through serde (what [`json_reply`] leaves to it, and its
/// reference in the tests).
#[cfg(test)]
pub(super) fn serde_json_reply(payload: &[u8]) -> Result<RawJson, Error> {
    serde_json_reply_with(payload, 16)
}

fn serde_json_reply_with(payload: &[u8], capacity: usize) -> Result<RawJson, Error> {
    let seed = JsonResponseSeed { capacity };
    match decode_payload_seed(seed, payload) {
        Ok(JsonResponse { err: Some(e), .. }) => Err(Error::from_json(e)),
        Ok(JsonResponse { ok: Some(text), .. }) => Ok(RawJson::from_encoded(text.0.into())),
        Ok(JsonResponse { ok: None, .. }) => Ok(RawJson::from_encoded("null".into())),
        Err(e) => Err(malformed(e)),
    }
}

/// A result decoded into `T` straight from the MessagePack reply (no [`Value`] on the way), for
/// [`CallBuilder::send_decoded`](super::CallBuilder::send_decoded).
pub(crate) struct Decoded<T>(pub(crate) T);

/// [`ResponseMsg`] with the result decoded into `T`.
#[derive(Deserialize)]
#[serde(bound = "T: DeserializeOwned")]
struct TypedResponse<T> {
    ok: Option<T>,
    err: Option<Value>,
}

impl<T: DeserializeOwned + Send> ReplyForm for Decoded<T> {
    fn from_payload(payload: &[u8]) -> Result<Self, Error> {
        match decode_payload::<TypedResponse<T>>(payload) {
            Ok(TypedResponse { err: Some(e), .. }) => Err(Error::from_json(e)),
            Ok(TypedResponse { ok: Some(v), .. }) => Ok(Decoded(v)),
            // No result (`nil`): what `T` makes of `null`.
            Ok(TypedResponse { ok: None, .. }) => Self::from_value(Value::Null),
            Err(e) => Err(malformed(e)),
        }
    }

    fn from_value(value: Value) -> Result<Self, Error> {
        serde_json::from_value(value)
            .map(Decoded)
            .map_err(|e| malformed(e.to_string()))
    }
}

fn malformed(reason: String) -> Error {
    Error::general_error(format!("malformed reply: {reason}"))
}

/// [`ResponseMsg`] with the result kept as JSON text.
struct JsonResponse {
    ok: Option<JsonText>,
    err: Option<Value>,
}

/// Reads a [`JsonResponse`] as `#[derive(Deserialize)]` would (a map by field names, unknown
/// fields skipped, a missing one `None`; or a sequence of both), writing the result's JSON into
/// a buffer of `capacity` bytes.
struct JsonResponseSeed {
    capacity: usize,
}

/// A field of [`JsonResponse`].
#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "lowercase")]
enum Field {
    Ok,
    Err,
    /// The JSON form's key, which the walk reads (`reply_walk`): a reply that has it and did
    /// not walk is malformed, not a result of `null`.
    Json,
    #[serde(other)]
    Other,
}

impl<'de> DeserializeSeed<'de> for JsonResponseSeed {
    type Value = JsonResponse;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<JsonResponse, D::Error> {
        deserializer.deserialize_struct("JsonResponse", &["ok", "err"], self)
    }
}

impl<'de> Visitor<'de> for JsonResponseSeed {
    type Value = JsonResponse;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("struct JsonResponse")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<JsonResponse, A::Error> {
        let ok = seq
            .next_element_seed(OptionalJson(self.capacity))?
            .ok_or_else(|| de::Error::invalid_length(0, &"struct JsonResponse with 2 elements"))?;
        let err = seq
            .next_element::<Option<Value>>()?
            .ok_or_else(|| de::Error::invalid_length(1, &"struct JsonResponse with 2 elements"))?;
        Ok(JsonResponse { ok, err })
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<JsonResponse, A::Error> {
        let (mut ok, mut err) = (None, None);
        while let Some(field) = map.next_key::<Field>()? {
            match field {
                Field::Ok if ok.is_some() => return Err(de::Error::duplicate_field("ok")),
                Field::Ok => ok = Some(map.next_value_seed(OptionalJson(self.capacity))?),
                Field::Err if err.is_some() => return Err(de::Error::duplicate_field("err")),
                Field::Err => err = Some(map.next_value::<Option<Value>>()?),
                Field::Json => return Err(de::Error::custom("a JSON-form reply out of form")),
                Field::Other => {
                    map.next_value::<de::IgnoredAny>()?;
                }
            }
        }
        Ok(JsonResponse {
            ok: ok.flatten(),
            err: err.flatten(),
        })
    }
}

/// An `Option<JsonText>` whose text is written into a buffer of the given capacity.
struct OptionalJson(usize);

impl<'de> DeserializeSeed<'de> for OptionalJson {
    type Value = Option<JsonText>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_option(self)
    }
}

impl<'de> Visitor<'de> for OptionalJson {
    type Value = Option<JsonText>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("option")
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        let mut out = Vec::with_capacity(self.0);
        deserializer.deserialize_any(Writer(&mut out))?;
        Ok(Some(JsonText(out)))
    }
}

/// One value of a self-describing format (MessagePack here), written as JSON text.
///
/// It accepts exactly what `serde_json::Value` accepts (so a reply that decodes one way decodes
/// the other), and writes what serializing that `Value` writes: maps keep their order, a
/// non-finite float is `null`. Map keys must be strings.
#[derive(Debug, PartialEq, Eq, Serialize)]
pub(crate) struct JsonText(pub(crate) Vec<u8>);

impl<'de> Deserialize<'de> for JsonText {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut out = Vec::with_capacity(256);
        deserializer.deserialize_any(Writer(&mut out))?;
        Ok(JsonText(out))
    }
}

/// Writes the value it visits as JSON.
struct Writer<'a>(&'a mut Vec<u8>);

impl Writer<'_> {
    fn scalar<T: Serialize + ?Sized, E: de::Error>(self, v: &T) -> Result<(), E> {
        serde_json::to_writer(&mut *self.0, v).map_err(E::custom)
    }
}

impl<'de> DeserializeSeed<'de> for Writer<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Writer<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any valid JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.0.extend_from_slice(if v { b"true" } else { b"false" });
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.scalar(&v)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.scalar(&v)
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        // serde_json writes a non-finite float as null, as a Value holding it would be.
        self.scalar(&v)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        plume_json::write_str(self.0, v);
        Ok(())
    }

    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        self.0.extend_from_slice(b"null");
        Ok(())
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.visit_none()
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let out = self.0;
        out.push(b'[');
        let mut first = true;
        loop {
            let mark = out.len();
            if !first {
                out.push(b',');
            }
            if seq.next_element_seed(Writer(&mut *out))?.is_none() {
                out.truncate(mark);
                break;
            }
            first = false;
        }
        out.push(b']');
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let out = self.0;
        out.push(b'{');
        let mut first = true;
        loop {
            let mark = out.len();
            if !first {
                out.push(b',');
            }
            if map.next_key_seed(KeyWriter(&mut *out))?.is_none() {
                out.truncate(mark);
                break;
            }
            out.push(b':');
            map.next_value_seed(Writer(&mut *out))?;
            first = false;
        }
        out.push(b'}');
        Ok(())
    }
}

/// Writes a map key, which must be a string (as for `serde_json::Value`).
struct KeyWriter<'a>(&'a mut Vec<u8>);

impl<'de> DeserializeSeed<'de> for KeyWriter<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeyWriter<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string key")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        plume_json::write_str(self.0, v);
        Ok(())
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::protocol::encode_payload;
    use plume_json::arbitrary::value;
    use proptest::prelude::*;
    use serde_json::json;

    /// A reply payload of `ok` and `err`.
    pub(crate) fn reply(ok: Option<&Value>, err: Option<&Value>) -> bytes::Bytes {
        #[derive(Serialize)]
        struct Msg<'a> {
            ok: Option<&'a Value>,
            err: Option<&'a Value>,
        }
        encode_payload(&Msg { ok, err })
    }

    #[test]
    fn a_result_becomes_the_json_its_value_would() {
        let v =
            json!({"total": 1, "data": [{"id": "a-1", "text": "é \"q\"\n", "n": -2.5}], "z": null});
        let payload = reply(Some(&v), None);
        let raw = RawJson::from_payload(&payload).expect("decodes");
        assert_eq!(
            raw.as_bytes(),
            serde_json::to_vec(&v).expect("encodes").as_slice()
        );
        assert_eq!(Value::from_payload(&payload).expect("decodes"), v);
    }

    #[test]
    fn no_result_is_null_and_an_error_stays_an_error() {
        let raw = RawJson::from_payload(&reply(None, None)).expect("decodes");
        assert!(raw.is_null());
        let err = plume::Error::not_found("gone").to_json();
        let e = RawJson::from_payload(&reply(Some(&json!(1)), Some(&err))).expect_err("an error");
        assert_eq!(e.code(), 404);
        assert_eq!(e.message(), "gone");
    }

    #[test]
    fn non_string_keys_and_binary_are_refused_as_by_value() {
        // {1: 2} and a bin value: serde_json::Value cannot hold either.
        let int_key = encode_payload(&std::collections::BTreeMap::from([(
            "ok",
            std::collections::BTreeMap::from([(1u8, 2u8)]),
        )]));
        assert!(Value::from_payload(&int_key).is_err());
        assert!(RawJson::from_payload(&int_key).is_err());
        let bin = encode_payload(&std::collections::BTreeMap::from([(
            "ok",
            Bin(vec![1, 2, 3]),
        )]));
        assert!(Value::from_payload(&bin).is_err());
        assert!(RawJson::from_payload(&bin).is_err());
    }

    /// Serializes as a MessagePack `bin`.
    struct Bin(Vec<u8>);

    impl Serialize for Bin {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_bytes(&self.0)
        }
    }

    proptest! {
        #[test]
        fn json_text_equals_the_encoded_value(v in value()) {
            let payload = reply(Some(&v), None);
            let by_value = Value::from_payload(&payload).expect("decodes");
            let raw = RawJson::from_payload(&payload).expect("decodes");
            let text = serde_json::to_vec(&by_value).expect("encodes");
            prop_assert_eq!(raw.as_bytes(), text.as_slice());
        }

        #[test]
        fn any_bytes_decode_the_same_both_ways(
            tail in prop::collection::vec(any::<u8>(), 0..120),
            wrapped in any::<bool>(),
        ) {
            // Mostly `{"ok": <arbitrary bytes>}`, so the bytes reach the transcoder.
            let mut bytes = if wrapped { vec![0x81, 0xa2, b'o', b'k'] } else { Vec::new() };
            bytes.extend_from_slice(&tail);
            let by_value = Value::from_payload(&bytes);
            let raw = RawJson::from_payload(&bytes);
            match (by_value, raw) {
                (Ok(v), Ok(raw)) => {
                    // Duplicate keys are written twice, and a JSON reader keeps the last, as
                    // Value does: compare the texts as read back by one reader (whose float
                    // parsing is not exact, hence not against `v` itself). Under 120 bytes,
                    // nesting stays below serde_json's recursion limit.
                    let reread: Value = serde_json::from_slice(raw.as_bytes()).expect("valid JSON");
                    let text = serde_json::to_vec(&v).expect("encodes");
                    let expected: Value = serde_json::from_slice(&text).expect("valid JSON");
                    prop_assert_eq!(reread, expected);
                }
                (Err(a), Err(b)) => prop_assert_eq!(a.code(), b.code()),
                (a, b) => prop_assert!(false, "they disagree: {:?} vs {:?}", a, b),
            }
        }
    }
}
