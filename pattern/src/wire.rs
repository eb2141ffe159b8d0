//! The envelopes as each bus encodes them: written straight from an act's parts ([`Message`])
//! without building JSON maps first, and read straight into what the receiver uses.
//!
//! - **NATS**: Hemera's envelopes ([`crate::envelope`]), what nats-hemera 7 sends and expects.
//!   The caller reads only `result` and `error` of a reply (the echoed `meta`, `trace` and
//!   `request` are skipped, not decoded).
//! - **Mesh** (Plume to Plume, no Hemera on the other side): a compact request
//!   `{pattern, meta?, delegate?, traceId, spanId}` and a reply `{result}` or `{error}`, which the
//!   caller reads straight from its MessagePack (`crate::outcome`).

use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use bytes::Bytes;
use plume_transport::{Answer, Encoded};

use crate::envelope::{
    TYPE_PUBSUB, TYPE_REQUEST, decode_response, new_id_bytes, outcome_of, timestamp_ms,
};
use crate::error::HemeraError;
use crate::hemera::Incoming;
use crate::id::Id;
use crate::message::{Body, Message};
use crate::payload::{Bin, Payload};
use crate::scan::Scan;

/// Hemera's request envelope of an act (NATS), encoded from its parts; `method` is the
/// message's method string (`Message::method`), computed once by the sender.
pub(crate) struct HemeraRequest<'a> {
    pub(crate) msg: &'a Message<'a>,
    pub(crate) method: &'a str,
    /// `trace.timestamp`.
    pub(crate) timestamp: f64,
    /// `request.id` when the message has no `requestId$`.
    fresh_id: Option<[u8; 22]>,
}

impl<'a> HemeraRequest<'a> {
    /// The envelope of `msg`, stamped now.
    pub(crate) fn new(msg: &'a Message<'a>, method: &'a str) -> Self {
        HemeraRequest {
            msg,
            method,
            timestamp: timestamp_ms(),
            fresh_id: msg.request_id.is_none().then(new_id_bytes),
        }
    }

    /// `request.id`: `requestId$`, or a fresh id.
    pub(crate) fn id(&self) -> &str {
        match (self.msg.request_id, &self.fresh_id) {
            (Some(id), _) => id,
            // (ASCII: the fallback is not reached)
            (None, Some(id)) => std::str::from_utf8(id).unwrap_or_default(),
            (None, None) => "",
        }
    }

    /// The envelope as JSON bytes: written by hand in the usual case (no `trace$`), by its
    /// `Serialize` otherwise; the same bytes either way.
    pub(crate) fn to_vec(&self) -> Result<Vec<u8>, HemeraError> {
        let written = if self.msg.trace_extra.is_empty() {
            self.write()
        } else {
            serde_json::to_vec(self)
        };
        written.map_err(|e| HemeraError::hemera(format!("the message does not encode: {e}")))
    }
}

impl Serialize for HemeraRequest<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let m = self.msg;
        let mut map = s.serialize_map(Some(5))?;
        map.serialize_entry("pattern", &m.payload())?;
        map.serialize_entry("meta", &*m.meta)?;
        map.serialize_entry("delegate", m.delegate)?;
        map.serialize_entry(
            "trace",
            &Trace {
                msg: m,
                method: self.method,
                timestamp: self.timestamp,
            },
        )?;
        map.serialize_entry(
            "request",
            &RequestPart {
                id: self.id(),
                kind: if m.pubsub { TYPE_PUBSUB } else { TYPE_REQUEST },
                service: m.topic,
                method: self.method,
            },
        )?;
        map.end()
    }
}

/// The keys of `trace` that an act generates (a `trace$` key of the same name replaces one).
const TRACE_KEYS: [&str; 6] = [
    "traceId",
    "spanId",
    "parentSpanId",
    "timestamp",
    "service",
    "method",
];

/// `trace`: the generated ids, timestamp, service and method, each replaced by the `trace$`
/// key of its name when there is one, then the other `trace$` keys.
struct Trace<'a> {
    msg: &'a Message<'a>,
    method: &'a str,
    timestamp: f64,
}

impl Serialize for Trace<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        fn put<M: SerializeMap, T: Serialize + ?Sized>(
            map: &mut M,
            own: &Map<String, Value>,
            key: &'static str,
            generated: &T,
        ) -> Result<(), M::Error> {
            match own.get(key) {
                Some(v) => map.serialize_entry(key, v),
                None => map.serialize_entry(key, generated),
            }
        }
        let (m, own) = (self.msg, self.msg.trace_extra);
        let mut map = s.serialize_map(None)?;
        put(&mut map, own, "traceId", m.trace_id())?;
        put(&mut map, own, "spanId", &m.span_id)?;
        if m.parent_span_id.is_some() || own.contains_key("parentSpanId") {
            put(&mut map, own, "parentSpanId", &m.parent_span_id)?;
        }
        put(&mut map, own, "timestamp", &self.timestamp)?;
        put(&mut map, own, "service", m.topic)?;
        put(&mut map, own, "method", self.method)?;
        for (k, v) in own {
            if !TRACE_KEYS.contains(&k.as_str()) {
                map.serialize_entry(k, v)?;
            }
        }
        map.end()
    }
}

/// `request`: `{id, type, service, method}`.
#[derive(Serialize)]
struct RequestPart<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    service: &'a str,
    method: &'a str,
}

/// What a caller reads of a Hemera response: `result` and `error` (the rest is skipped).
#[derive(Deserialize)]
struct Outcome {
    #[serde(default)]
    result: Option<Value>,
    #[serde(default)]
    error: Option<Value>,
}

/// The outcome of a Hemera response body: its error when there is one, else its result.
pub(crate) fn decode_outcome(body: &[u8]) -> Result<Value, HemeraError> {
    // The usual response: scanned once for `result` and `error`, only those parsed.
    scan_outcome(body).unwrap_or_else(|| serde_outcome(body))
}

/// [`decode_outcome`] by serde, for any form.
fn serde_outcome(body: &[u8]) -> Result<Value, HemeraError> {
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        // Not an object: the full decoder says what it is instead.
        return decode_response(body).and_then(|r| r.outcome());
    }
    let outcome: Outcome = serde_json::from_slice(body)
        .map_err(|e| HemeraError::parse(format!("the reply is not a Hemera response: {e}")))?;
    outcome_of(outcome.result, outcome.error)
}

/// [`decode_outcome`] of a response in the usual form (`crate::scan`: no escapes in its
/// strings, `result` and `error` once each): `None` for any other form, which serde reads.
fn scan_outcome(body: &[u8]) -> Option<Result<Value, HemeraError>> {
    let mut s = Scan::new(body)?;
    let (mut result, mut error) = (None, None);
    s.object(|key, s| {
        let slot = match key {
            b"result" => &mut result,
            b"error" => &mut error,
            _ => return s.value().map(drop),
        };
        if slot.is_some() {
            return None;
        }
        *slot = Some(s.value()?);
        Some(())
    })?;
    s.end()?;
    // As serde reads `Option<Value>`: `null` is none.
    let parse = |part: Option<std::ops::Range<usize>>| match part {
        None => Some(None),
        Some(r) => match body.get(r)? {
            // (the usual `"error":null` of a result, without serde: the scan read it whole)
            b"null" => Some(None),
            text => serde_json::from_slice::<Option<Value>>(text).ok(),
        },
    };
    Some(outcome_of(parse(result)?, parse(error)?))
}

/// An act on the mesh as the caller writes it: the payload (the message without its `$` keys)
/// as MessagePack bytes in one `bin`, which the responder keeps undecoded until its handler
/// decodes them (see `crate::payload`), then what the handler sees of its caller:
/// `{payload, meta?, delegate?, traceId, spanId}` (`meta` and `delegate` only when not empty).
///
/// It owns what it needs of its [`Message`] (the span id, a merged meta), so that a caller's
/// future keeps this and not the whole message while it waits (see `crate::bus::mesh`).
#[derive(Debug)]
pub(crate) struct MeshRequest<'a> {
    /// The payload, written (as a `bin`) when the request is encoded: see [`Packed`].
    pub(crate) payload: Body<'a>,
    pub(crate) meta: Meta<'a>,
    pub(crate) delegate: &'a Map<String, Value>,
    /// The trace id, when it is not the span id (a root act's trace id is its span id).
    pub(crate) inherited_trace_id: Option<&'a str>,
    pub(crate) span_id: Id,
}

/// A payload serialized as the `bin` of its MessagePack map (`crate::pack`), written into a
/// buffer of this thread that is kept from one request to the next: a request allocates
/// nothing for its payload (the transport copies the bytes into its frame at once).
struct Packed<'a>(Body<'a>);

/// The most a thread's payload buffer keeps between requests (a larger one is let go).
const KEEP_PACKED: usize = 64 * 1024;

impl Serialize for Packed<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        thread_local! {
            static PACKED: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        let write = |out: &mut Vec<u8>| {
            crate::pack::write_map(out, self.0.len(), self.0.iter());
        };
        PACKED.with(|cell| match cell.try_borrow_mut() {
            Ok(mut buf) => {
                buf.clear();
                write(&mut buf);
                let written = s.serialize_bytes(&buf);
                if buf.capacity() > KEEP_PACKED {
                    *buf = Vec::new();
                }
                written
            }
            // (not reached: nothing in writing a payload encodes another request)
            Err(_) => {
                let mut buf = Vec::new();
                write(&mut buf);
                s.serialize_bytes(&buf)
            }
        })
    }
}

/// A request's `meta`: the caller's own (borrowed), or one merged over a parent's (boxed: it
/// is rare, and a reference is all most requests carry).
#[derive(Debug)]
pub(crate) enum Meta<'a> {
    Borrowed(&'a Map<String, Value>),
    Owned(Box<Map<String, Value>>),
}

impl std::ops::Deref for Meta<'_> {
    type Target = Map<String, Value>;
    fn deref(&self) -> &Map<String, Value> {
        match self {
            Meta::Borrowed(m) => m,
            Meta::Owned(m) => m,
        }
    }
}

impl<'a> MeshRequest<'a> {
    /// The mesh request of `msg`, taking what it owns: its payload encoded, the rest borrowed
    /// from the caller's message.
    pub(crate) fn of(msg: Message<'a>) -> Self {
        let payload = msg.payload();
        let inherited_trace_id = msg.inherited_trace_id();
        let meta = match msg.meta {
            std::borrow::Cow::Borrowed(m) => Meta::Borrowed(m),
            std::borrow::Cow::Owned(m) => Meta::Owned(Box::new(m)),
        };
        MeshRequest {
            payload,
            meta,
            delegate: msg.delegate,
            inherited_trace_id,
            span_id: msg.span_id,
        }
    }

    /// [`of`](Self::of) a message that is kept (its span id copied).
    pub(crate) fn of_ref<'m>(msg: &'m Message<'a>) -> MeshRequest<'m> {
        MeshRequest {
            payload: msg.payload(),
            meta: Meta::Borrowed(&msg.meta),
            delegate: msg.delegate,
            inherited_trace_id: msg.inherited_trace_id(),
            span_id: msg.span_id.clone(),
        }
    }

    /// The act's trace id.
    #[cfg(test)]
    pub(crate) fn trace_id(&self) -> &str {
        self.inherited_trace_id
            .unwrap_or_else(|| self.span_id.as_str())
    }
}

impl Serialize for MeshRequest<'_> {
    /// In MessagePack (to another node): the version 2 envelope (`crate::compact`); as a
    /// value (to a provider on this node): the version 1 map ([`MapForm`]).
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            self.serialize_map_form(s)
        } else {
            crate::compact::serialize_request(self, s)
        }
    }
}

/// A request in the version 1 form, `{payload, meta?, delegate?, traceId, spanId}`, whatever
/// the serializer (what the previous version sends over the wire).
#[cfg(test)]
pub(crate) struct MapForm<'r, 'a>(pub(crate) &'r MeshRequest<'a>);

#[cfg(test)]
impl Serialize for MapForm<'_, '_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize_map_form(s)
    }
}

impl MeshRequest<'_> {
    fn serialize_map_form<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let (meta, delegate) = (!self.meta.is_empty(), !self.delegate.is_empty());
        let len = 3 + usize::from(meta) + usize::from(delegate);
        let mut st = s.serialize_struct("MeshRequest", len)?;
        st.serialize_field("payload", &Packed(self.payload))?;
        if meta {
            st.serialize_field("meta", &*self.meta)?;
        } else {
            st.skip_field("meta")?;
        }
        if delegate {
            st.serialize_field("delegate", self.delegate)?;
        } else {
            st.skip_field("delegate")?;
        }
        // (the span id read once: a root act's trace id is the same string)
        let span = self.span_id.as_str();
        st.serialize_field("traceId", self.inherited_trace_id.unwrap_or(span))?;
        st.serialize_field("spanId", span)?;
        st.end()
    }
}

/// An act on the mesh as the responder reads it ([`MeshRequest`]).
#[derive(Debug, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct MeshIncoming {
    #[serde(default)]
    pub(crate) payload: Option<Bin>,
    /// The payload as a map: what callers of the previous version send instead of `payload`.
    #[serde(default)]
    pub(crate) pattern: Option<Map<String, Value>>,
    #[serde(default)]
    pub(crate) meta: Map<String, Value>,
    #[serde(default)]
    pub(crate) delegate: Map<String, Value>,
    #[serde(default)]
    pub(crate) trace_id: Id,
    #[serde(default)]
    pub(crate) span_id: Id,
}

impl MeshIncoming {
    /// What the server takes from it: the payload stays in its MessagePack bytes. A request
    /// with neither `payload` nor `pattern` is a parse error.
    pub(crate) fn into_incoming(self) -> Result<Incoming, HemeraError> {
        let pattern = match (self.payload, self.pattern) {
            (Some(bytes), _) => Payload::msgpack(Bytes::from(bytes.0)),
            (None, Some(map)) => Payload::from_map(map),
            (None, None) => {
                return Err(HemeraError::parse(
                    "undecodable request: it has neither `payload` nor `pattern`",
                ));
            }
        };
        Ok(Incoming {
            pattern,
            meta: self.meta,
            delegate: self.delegate,
            trace_id: self.trace_id,
            span_id: self.span_id,
            method: None,
        })
    }
}

/// A request body as serde reads it, in either version: the map of version 1
/// ([`MeshIncoming`]) or the `bin` of version 2 (`crate::compact`).
pub(crate) enum AnyRequest {
    Map(MeshIncoming),
    Compact(Result<Incoming, HemeraError>),
}

impl AnyRequest {
    pub(crate) fn into_incoming(self) -> Result<Incoming, HemeraError> {
        match self {
            AnyRequest::Map(m) => m.into_incoming(),
            AnyRequest::Compact(c) => c,
        }
    }
}

impl<'de> Deserialize<'de> for AnyRequest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::{MapAccess, Visitor, value::MapAccessDeserializer};
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = AnyRequest;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a mesh request (a map, or a version 2 bin)")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<AnyRequest, A::Error> {
                MeshIncoming::deserialize(MapAccessDeserializer::new(map)).map(AnyRequest::Map)
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<AnyRequest, E> {
                Ok(AnyRequest::Compact(crate::compact::read_request_bytes(
                    Bytes::copy_from_slice(v),
                )))
            }
        }
        d.deserialize_any(V)
    }
}

/// A mesh reply, `{"result": v}` or `{"error": e}`, encoded straight into the response (no map
/// built for it).
/// To a version 2 request (`compact`), the reply is version 2's (`crate::compact::Reply`).
pub(crate) fn mesh_reply(
    outcome: &Result<Value, Value>,
    compact: bool,
) -> Result<Answer, plume::Error> {
    if compact {
        Encoded::new(&crate::compact::Reply(outcome)).map(Answer::Encoded)
    } else {
        Encoded::new(&MeshReply(outcome)).map(Answer::Encoded)
    }
}

/// `{"result": v}` or `{"error": e}`.
struct MeshReply<'a>(&'a Result<Value, Value>);

impl Serialize for MeshReply<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(1))?;
        match self.0 {
            Ok(v) => map.serialize_entry("result", v)?,
            Err(e) => map.serialize_entry("error", e)?,
        }
        map.end()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::envelope::{RequestEnvelope, decode_request};
    use crate::handler::Parent;
    use crate::hemera::Options;
    use proptest::prelude::*;
    use serde_json::json;

    fn message(v: &Value) -> Message<'_> {
        Message::parse(v, None, &Options::default()).expect("message")
    }

    /// The Hemera envelope of `msg`, as a server decodes it.
    pub(crate) fn envelope_of(msg: &Message<'_>) -> RequestEnvelope {
        let body = HemeraRequest::new(msg, &msg.method())
            .to_vec()
            .expect("encodes");
        decode_request(&body).expect("decodes")
    }

    #[test]
    fn hemera_request_has_every_part() {
        let v = json!({"topic": "math", "cmd": "add", "a": 1, "b": 2,
                       "meta$": {"k": 1}, "delegate$": {"d": 2}, "requestId$": "R"});
        let m = message(&v);
        let env = envelope_of(&m);
        assert_eq!(
            Value::Object(env.pattern),
            json!({"topic": "math", "cmd": "add", "a": 1, "b": 2})
        );
        assert_eq!(Value::Object(env.meta), json!({"k": 1}));
        assert_eq!(Value::Object(env.delegate), json!({"d": 2}));
        assert_eq!(
            Value::Object(env.request),
            json!({"id": "R", "type": "request", "service": "math",
                   "method": "a:1,b:2,cmd:add,topic:math"})
        );
        let keys: Vec<&str> = env.trace.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            ["traceId", "spanId", "timestamp", "service", "method"]
        );
        assert_eq!(env.trace["traceId"], json!(m.trace_id()));
        assert_eq!(env.trace["method"], json!("a:1,b:2,cmd:add,topic:math"));
        assert!(env.trace["timestamp"].is_f64());
    }

    #[test]
    fn trace_options_replace_generated_keys_once() {
        let parent = Parent {
            meta: &Map::new(),
            trace_id: "T",
            span_id: "S",
        };
        let v = json!({"topic": "t", "pubsub$": true,
                       "trace$": {"spanId": "MINE", "service": 7, "extra": true}});
        let m = Message::parse(&v, Some(&parent), &Options::default()).expect("message");
        let env = envelope_of(&m);
        assert_eq!(env.kind(), "pubsub");
        assert_eq!(
            Value::Object(env.trace.clone()),
            json!({"traceId": "T", "spanId": "MINE", "parentSpanId": "S",
                   "timestamp": env.trace["timestamp"], "service": 7, "method": "topic:t",
                   "extra": true})
        );
        let keys: Vec<&str> = env.trace.keys().map(String::as_str).collect();
        assert_eq!(keys.len(), 7, "no key twice: {keys:?}");
    }

    fn leaf() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            (-5i64..5).prop_map(|n| json!(n)),
            "[a-z]{0,4}".prop_map(Value::String),
        ]
    }

    proptest! {
        /// Whatever the message, its `$` options and the parent, the Hemera envelope written
        /// from the parts is the one Hemera expects: the payload without `$` keys, the meta merged
        /// over the parent's, each `trace$` key sent once and winning over the generated one,
        /// the trace id and parent span inherited, `request` naming the method.
        #[test]
        fn hemera_envelopes_from_parts_are_exact(
            payload in proptest::collection::btree_map("[a-z]{1,4}", leaf(), 0..5),
            meta in proptest::collection::btree_map("[a-z]{1,3}", leaf(), 0..3),
            parent_meta in proptest::collection::btree_map("[a-z]{1,3}", leaf(), 0..3),
            trace in proptest::collection::btree_map(
                prop_oneof![Just("traceId"), Just("spanId"), Just("parentSpanId"),
                            Just("service"), Just("timestamp"), Just("extra")],
                prop_oneof!["[A-Z]{1,4}".prop_map(Value::String), (0i64..9).prop_map(|n| json!(n))],
                0..4),
            with_parent in any::<bool>(),
        ) {
            let mut message: Map<String, Value> = payload.into_iter().collect();
            message.insert("topic".into(), json!("t"));
            let pattern = message.clone();
            let meta: Map<String, Value> = meta.into_iter().collect();
            let trace: Map<String, Value> =
                trace.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
            message.insert("meta$".into(), Value::Object(meta.clone()));
            message.insert("trace$".into(), Value::Object(trace.clone()));
            message.insert("timeout$".into(), json!(100));
            let parent_meta: Map<String, Value> = parent_meta.into_iter().collect();
            let parent = Parent { meta: &parent_meta, trace_id: "PT", span_id: "PS" };
            let message = Value::Object(message);
            let msg = Message::parse(
                &message,
                with_parent.then_some(&parent),
                &Options::default(),
            )
            .expect("message");
            let env = envelope_of(&msg);

            prop_assert_eq!(&env.pattern, &pattern);
            let mut want_meta = if with_parent { parent_meta.clone() } else { Map::new() };
            want_meta.extend(meta);
            prop_assert_eq!(&env.meta, &want_meta);
            let method = crate::pattern::method_of(&pattern);
            prop_assert_eq!(
                Value::Object(env.request.clone()),
                json!({"id": env.request["id"], "type": "request", "service": "t", "method": method})
            );
            for (k, v) in &trace {
                prop_assert_eq!(&env.trace[k], v, "trace$ key {}", k);
            }
            let generated = |k: &str, want: Value| -> Result<(), TestCaseError> {
                if !trace.contains_key(k) {
                    prop_assert_eq!(&env.trace[k], &want, "generated {}", k);
                }
                Ok(())
            };
            generated("service", json!("t"))?;
            generated("method", json!(method))?;
            if with_parent {
                generated("traceId", json!("PT"))?;
                generated("parentSpanId", json!("PS"))?;
            } else {
                prop_assert_eq!(
                    env.trace.contains_key("parentSpanId"),
                    trace.contains_key("parentSpanId")
                );
            }
            let mut keys: Vec<&str> = env.trace.keys().map(String::as_str).collect();
            keys.sort_unstable();
            let mut want: Vec<&str> = ["traceId", "spanId", "timestamp", "service", "method"]
                .into_iter()
                .chain(trace.keys().map(String::as_str))
                .chain((with_parent || trace.contains_key("parentSpanId")).then_some("parentSpanId"))
                .collect();
            want.sort_unstable();
            want.dedup();
            prop_assert_eq!(keys, want);
        }
    }

    #[test]
    fn outcomes_of_hemera_replies() {
        let full = br#"{"meta":{"a":1},"trace":{"traceId":"T"},"request":{"id":"R"},"result":3,"error":null}"#;
        assert_eq!(decode_outcome(full), Ok(json!(3)));
        assert_eq!(decode_outcome(br#" {"error":null}"#), Ok(Value::Null));
        let e = decode_outcome(br#"{"result":null,"error":{"name":"E","message":"m","code":1}}"#)
            .expect_err("error");
        assert_eq!((e.name.as_str(), e.code()), ("E", Some(&json!(1))));
        for bad in [&b"[1]"[..], b"3", b"nope", b"{\"result\":", b""] {
            let e = decode_outcome(bad).expect_err("bad reply");
            assert_eq!(
                e.name,
                "HemeraParseError",
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let odd = decode_outcome(br#"{"error":"text"}"#).expect_err("error");
        assert_eq!(odd.name, "HemeraError");
    }

    /// A response as Hemera writes it: the request's parts echoed, then a result or an error.
    fn response() -> impl Strategy<Value = Vec<u8>> {
        let value = leaf().prop_recursive(2, 12, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
                proptest::collection::btree_map("[a-z$]{1,4}", inner, 0..3)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        });
        (
            value.clone(),
            prop_oneof![Just(None), value.prop_map(Some)],
            "[0-9A-Z]{22}",
        )
            .prop_map(|(result, error, id)| {
                let mut r = json!({"meta": {"k": 1}, "trace": {"traceId": id, "spanId": id,
                    "timestamp": 12.5, "service": "math", "method": "a:1,topic:math"},
                    "request": {"id": id, "type": "request"}, "result": result});
                if let Some(e) = error {
                    r["error"] = e;
                }
                serde_json::to_vec(&r).expect("encodes")
            })
    }

    proptest! {
        /// The usual response is scanned, with serde's outcome; a garbled one is refused by
        /// the scan or read as serde reads it.
        #[test]
        fn scanned_outcomes_are_serde_outcomes(
            body in response(),
            cut in any::<prop::sample::Index>(),
            flip in any::<(prop::sample::Index, u8)>(),
        ) {
            let scanned = scan_outcome(&body);
            prop_assert!(scanned.is_some(), "{}", String::from_utf8_lossy(&body));
            prop_assert_eq!(scanned, Some(serde_outcome(&body)));
            let mut body = body;
            let (at, x) = flip;
            let i = at.index(body.len());
            body[i] ^= x;
            body.truncate(cut.index(body.len() + 1));
            if let Some(scanned) = scan_outcome(&body) {
                prop_assert_eq!(scanned, serde_outcome(&body));
            }
        }
    }

    /// A mesh request as the previous version's derived `Serialize` wrote it: the wire that
    /// [`MeshRequest`]'s own `Serialize` keeps.
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct DerivedRequest<'a> {
        payload: Bin,
        #[serde(skip_serializing_if = "is_empty")]
        meta: &'a Map<String, Value>,
        #[serde(skip_serializing_if = "is_empty")]
        delegate: &'a Map<String, Value>,
        trace_id: &'a str,
        span_id: &'a str,
    }

    fn is_empty(map: &&Map<String, Value>) -> bool {
        map.is_empty()
    }

    proptest! {
        /// Whatever the message (meta, delegate, `trace$` ids, a parent or not), the request
        /// written by hand is byte for byte the derived one, in MessagePack (a call to another
        /// node) and as a JSON value (a call on this node); taking the message apart (`of`) and
        /// borrowing it (`of_ref`) write the same.
        #[test]
        fn written_mesh_requests_are_the_derived_ones(
            payload in proptest::collection::btree_map("[a-z]{1,4}", leaf(), 0..4),
            meta in proptest::collection::btree_map("[a-z]{1,3}", leaf(), 0..3),
            parent_meta in proptest::collection::btree_map("[a-z]{1,3}", leaf(), 0..3),
            delegate in proptest::collection::btree_map("[a-z]{1,3}", leaf(), 0..3),
            trace in proptest::collection::btree_map(
                prop_oneof![Just("traceId"), Just("spanId")], "[A-Z0-9]{1,30}", 0..3),
            with_parent in any::<bool>(),
        ) {
            let mut message: Map<String, Value> = payload.into_iter().collect();
            message.insert("topic".into(), json!("t"));
            let pattern = Value::Object(message.clone());
            let map = |m: std::collections::BTreeMap<String, Value>| -> Map<String, Value> {
                m.into_iter().collect()
            };
            if !meta.is_empty() {
                message.insert("meta$".into(), Value::Object(map(meta)));
            }
            if !delegate.is_empty() {
                message.insert("delegate$".into(), Value::Object(map(delegate)));
            }
            if !trace.is_empty() {
                let trace: Map<String, Value> =
                    trace.into_iter().map(|(k, v)| (k.to_owned(), json!(v))).collect();
                message.insert("trace$".into(), Value::Object(trace));
            }
            let message = Value::Object(message);
            let parent_meta = map(parent_meta);
            let parent = Parent { meta: &parent_meta, trace_id: "PT", span_id: "PS" };
            let parse = || {
                Message::parse(&message, with_parent.then_some(&parent), &Options::default())
                    .expect("message")
            };
            let msg = parse();
            let mut packed = Vec::new();
            crate::pack::write_map(&mut packed, msg.payload().len(), msg.payload().iter());
            let derived = DerivedRequest {
                payload: Bin(packed),
                meta: &msg.meta,
                delegate: msg.delegate,
                trace_id: msg.trace_id(),
                span_id: &msg.span_id,
            };
            let want = rmp_serde::to_vec_named(&derived).expect("encodes");
            let want_json = serde_json::to_value(&derived).expect("encodes");
            let borrowed = MeshRequest::of_ref(&msg);
            prop_assert_eq!(&rmp_serde::to_vec_named(&MapForm(&borrowed)).expect("encodes"), &want);
            prop_assert_eq!(&serde_json::to_value(&borrowed).expect("encodes"), &want_json);
            // (a second parse: its fresh span id differs unless `trace$` gives one)
            let owned = MeshRequest::of(parse());
            let mut want_owned = serde_json::to_value(&derived).expect("encodes");
            want_owned["spanId"] = json!(owned.span_id.as_str());
            if msg.trace_id() == msg.span_id.as_str() {
                want_owned["traceId"] = json!(owned.trace_id());
            }
            prop_assert_eq!(&serde_json::to_value(&owned).expect("encodes"), &want_owned);
            let back: MeshIncoming =
                rmp_serde::from_slice(&rmp_serde::to_vec_named(&MapForm(&owned)).expect("encodes"))
                    .expect("decodes");
            let incoming = back.into_incoming().expect("a payload");
            prop_assert_eq!(&incoming.span_id, owned.span_id.as_str());
            prop_assert_eq!(&incoming.trace_id, owned.trace_id());
            prop_assert_eq!(&Value::Object(incoming.meta), &Value::Object((*owned.meta).clone()));
            prop_assert_eq!(Value::Object(incoming.pattern.into_map()), pattern);
        }
    }

    #[test]
    fn mesh_requests_carry_the_payload_as_msgpack_and_skip_empty_parts() {
        let v = json!({"topic": "math", "cmd": "add", "a": 1, "delegate$": {"d": 1},
                       "timeout$": 5});
        let m = message(&v);
        let req = MeshRequest::of_ref(&m);
        // what a remote responder of version 2 reads: the request in MessagePack, a `bin`
        let compact = bytes::Bytes::from(rmp_serde::to_vec_named(&req).expect("encodes"));
        assert!(crate::compact::is_compact(&compact));
        let read = crate::compact::read_request(&compact).expect("reads");
        assert_eq!(read.delegate, *json!({"d": 1}).as_object().expect("object"));
        assert_eq!(
            (&*read.trace_id, &*read.span_id),
            (m.trace_id(), &*m.span_id)
        );
        // and one of version 1: the map
        let packed = rmp_serde::to_vec_named(&MapForm(&req)).expect("encodes");
        let back: MeshIncoming = rmp_serde::from_slice(&packed).expect("decodes");
        assert_eq!(back.delegate, *json!({"d": 1}).as_object().expect("object"));
        assert!(back.meta.is_empty());
        assert_eq!(
            (&*back.trace_id, &*back.span_id),
            (m.trace_id(), &*m.span_id)
        );
        let incoming = back.into_incoming().expect("a payload");
        assert_eq!(
            Value::Object(incoming.pattern.into_map()),
            json!({"topic": "math", "cmd": "add", "a": 1})
        );
        // a call made on this node hands the request over as a JSON value
        let value = serde_json::to_value(&req).expect("encodes");
        assert!(value.get("meta").is_none(), "{value}");
        let back: MeshIncoming = serde_json::from_value(value).expect("decodes");
        assert_eq!(
            Value::Object(back.into_incoming().expect("a payload").pattern.into_map()),
            json!({"topic": "math", "cmd": "add", "a": 1})
        );
        // the previous version's requests carry the payload as a map: still served
        let old: MeshIncoming =
            serde_json::from_value(json!({"pattern": {"topic": "t"}, "traceId": "T"}))
                .expect("decodes");
        let old = old.into_incoming().expect("a payload");
        assert_eq!(Value::Object(old.pattern.into_map()), json!({"topic": "t"}));
        let none: MeshIncoming = serde_json::from_value(json!({"meta": {}})).expect("decodes");
        assert_eq!(
            none.into_incoming().expect_err("no payload").name,
            "HemeraParseError"
        );
    }
}
