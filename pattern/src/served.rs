//! A Hemera request as a NATS server reads it, and the response it writes back, without
//! building JSON maps: the request's `pattern` (the payload) stays in its JSON bytes (see
//! `crate::payload`), and its `meta`, `trace` and `request` are echoed in the response as the
//! raw JSON they came as (found by one scan, `crate::scan`), all shared with the received message's
//! buffer rather than copied.
//!
//! A request the fast reader refuses (not the shape this crate and Hemera send, or a repeated
//! key) goes through [`decode_request`], which accepts what Hemera accepts and names what is
//! wrong otherwise: both readers serve the same requests.

use bytes::Bytes;
use std::ops::Range;

use serde_json::{Map, Value};

use crate::envelope::{RequestEnvelope, decode_request};
use crate::error::HemeraError;
use crate::hemera::Incoming;
use crate::id::Id;
use crate::payload::Payload;
use crate::scan::{Scan, is_empty_object};

/// The parts of a request a response echoes, as JSON text (`{}` when the request had none).
#[derive(Debug, Clone)]
pub(crate) struct Echo {
    meta: Bytes,
    trace: Bytes,
    request: Bytes,
}

const EMPTY: &[u8] = b"{}";

/// Read a request envelope received in `body`: what the server serves, and what its response
/// echoes. A request that is not a Hemera request is a `HemeraParseError` naming the problem.
pub(crate) fn read_request(body: &Bytes) -> Result<(Incoming, Echo), HemeraError> {
    match read_fast(body) {
        Some(read) => Ok(read),
        None => decode_request(body).map(from_envelope),
    }
}

/// The fast reader: `None` for anything but a well-formed request in the usual form (see
/// `crate::scan`: no escapes in strings, no repeated keys among those read), in one scan.
fn read_fast(body: &Bytes) -> Option<(Incoming, Echo)> {
    let mut s = Scan::new(body)?;
    let mut parts: [Option<Range<usize>>; 5] = Default::default();
    // `request.type`, and the ids a server reads of `trace` (a non-string one counts as
    // absent), read on the way.
    let mut kind: Option<Range<usize>> = None;
    let mut ids: [Option<Option<Range<usize>>>; 3] = Default::default();
    s.object(|key, s| {
        let slot = match key {
            b"pattern" => 0,
            b"meta" => 1,
            b"delegate" => 2,
            b"trace" => 3,
            b"request" => 4,
            _ => return s.value().map(drop),
        };
        if parts.get(slot)?.is_some() {
            return None;
        }
        let range = match slot {
            3 if s.at_object() => s.object(|key, s| {
                let id = match key {
                    b"traceId" => 0,
                    b"spanId" => 1,
                    b"method" => 2,
                    _ => return s.value().map(drop),
                };
                let value = s.value()?;
                let string = body.get(value.clone())?.first() == Some(&b'"');
                let id = ids.get_mut(id)?;
                if id.is_some() {
                    return None;
                }
                *id = Some(string.then(|| value.start + 1..value.end - 1));
                Some(())
            }),
            4 if s.at_object() => s.object(|key, s| {
                let value = s.value()?;
                if key == b"type" {
                    if kind.is_some() {
                        return None;
                    }
                    kind = Some(value);
                }
                Some(())
            }),
            _ => s.value(),
        };
        *parts.get_mut(slot)? = Some(range?);
        Some(())
    })?;
    s.end()?;
    let [pattern, meta, delegate, trace, request] = parts;
    let text = |r: Option<Range<usize>>| r.and_then(|r| body.get(r));
    // `pattern` and `request` must be objects; the others objects, null or absent.
    let pattern = object(text(pattern))??;
    let request = object(text(request))??;
    let (meta, delegate, trace) = (
        object(text(meta))?,
        object(text(delegate))?,
        object(text(trace))?,
    );
    // `request.type` must be a string.
    if text(kind).is_none_or(|k| k.first() != Some(&b'"')) {
        return None;
    }
    let map = |text: Option<&[u8]>| match text {
        None => Some(Map::new()),
        Some(text) if is_empty_object(text) => Some(Map::new()),
        Some(text) => serde_json::from_slice::<Map<String, Value>>(text).ok(),
    };
    // (the scan checked the body as UTF-8, and a string's range is within its quotes)
    let text_of = |id: &Option<Option<Range<usize>>>| {
        let range = id.clone().flatten()?;
        std::str::from_utf8(body.get(range)?).ok()
    };
    let incoming = Incoming {
        pattern: Payload::json(share(body, pattern)),
        meta: map(meta)?,
        delegate: map(delegate)?,
        // (the ids kept inline when short, as they are: no `String` on the way)
        trace_id: text_of(&ids[0]).map(Id::new).unwrap_or_default(),
        span_id: text_of(&ids[1]).map(Id::new).unwrap_or_default(),
        method: text_of(&ids[2]).map(str::to_owned),
    };
    let echo = |part: Option<&[u8]>| part.map_or(Bytes::from_static(EMPTY), |p| share(body, p));
    let echo = Echo {
        meta: echo(meta),
        trace: echo(trace),
        request: share(body, request),
    };
    Some((incoming, echo))
}

/// A part of a request that must be an object: its text, `Some(None)` when absent or null,
/// `None` when it is something else.
fn object(part: Option<&[u8]>) -> Option<Option<&[u8]>> {
    match part {
        None | Some(b"null") => Some(None),
        Some(text) if text.first() == Some(&b'{') => Some(Some(text)),
        Some(_) => None,
    }
}

/// A request decoded by [`decode_request`], taken apart as the fast reader does.
fn from_envelope(env: RequestEnvelope) -> (Incoming, Echo) {
    let RequestEnvelope {
        pattern,
        meta,
        delegate,
        trace,
        request,
    } = env;
    let text = |key: &str| trace.get(key).and_then(Value::as_str).map(str::to_owned);
    let json = |map: &Map<String, Value>| {
        serde_json::to_vec(map).map_or(Bytes::from_static(EMPTY), Bytes::from)
    };
    let incoming = Incoming {
        pattern: Payload::from_map(pattern),
        meta: meta.clone(),
        delegate,
        trace_id: text("traceId").map(Id::from).unwrap_or_default(),
        span_id: text("spanId").map(Id::from).unwrap_or_default(),
        method: text("method"),
    };
    let echo = Echo {
        meta: json(&meta),
        trace: json(&trace),
        request: json(&request),
    };
    (incoming, echo)
}

/// `part` (text borrowed from `body`) as a piece of `body`'s buffer, shared rather than copied
/// (copied if it were not `body`'s).
fn share(body: &Bytes, part: &[u8]) -> Bytes {
    let (start, end) = (body.as_ptr() as usize, body.as_ptr() as usize + body.len());
    let at = part.as_ptr() as usize;
    if at >= start && at + part.len() <= end {
        body.slice(at - start..at - start + part.len())
    } else {
        Bytes::copy_from_slice(part)
    }
}

impl Echo {
    /// The echo of a request that did not decode: Hemera's shape (`request.id` empty, `trace`
    /// empty).
    pub(crate) fn undecodable() -> Echo {
        Echo {
            meta: Bytes::from_static(EMPTY),
            trace: Bytes::from_static(EMPTY),
            request: Bytes::from_static(br#"{"type":"request","id":""}"#),
        }
    }

    /// The response: `{meta, trace, request}` echoed, then `result` and `error: null`, or
    /// `error` alone (Hemera's response envelope).
    pub(crate) fn response(&self, outcome: &Result<Value, Value>) -> Result<Vec<u8>, HemeraError> {
        let parts = self.meta.len() + self.trace.len() + self.request.len();
        let mut out = Vec::with_capacity(parts + 64);
        out.extend_from_slice(b"{\"meta\":");
        out.extend_from_slice(&self.meta);
        out.extend_from_slice(b",\"trace\":");
        out.extend_from_slice(&self.trace);
        out.extend_from_slice(b",\"request\":");
        out.extend_from_slice(&self.request);
        let written = match outcome {
            Ok(result) => {
                out.extend_from_slice(b",\"result\":");
                serde_json::to_writer(&mut out, result).map(|()| &b",\"error\":null}"[..])
            }
            Err(error) => {
                out.extend_from_slice(b",\"error\":");
                serde_json::to_writer(&mut out, error).map(|()| &b"}"[..])
            }
        };
        let end =
            written.map_err(|e| HemeraError::hemera(format!("reply does not encode: {e}")))?;
        out.extend_from_slice(end);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::{ResponseEnvelope, decode_response};
    use proptest::prelude::*;
    use serde_json::json;

    fn read(body: &[u8]) -> Result<(Incoming, Echo), HemeraError> {
        read_request(&Bytes::copy_from_slice(body))
    }

    const HEMERA: &[u8] = br#"{"pattern":{"topic":"math","cmd":"add","a":1,"b":2},"meta":{"m":1},"delegate":{},
 "trace":{"spanId":"S","traceId":"T","timestamp":8344889.436596,"service":"math","method":"a:1,b:2,cmd:add,topic:math"},
 "request":{"id":"R","type":"request","service":"math","method":"a:1,b:2,cmd:add,topic:math"}}"#;

    #[test]
    fn a_hemera_request_is_read_without_copies_and_echoed_unchanged() {
        let body = Bytes::from_static(HEMERA);
        let (incoming, echo) = read_fast(&body).expect("the fast reader takes it");
        assert_eq!((&*incoming.trace_id, &*incoming.span_id), ("T", "S"));
        assert_eq!(
            incoming.method.as_deref(),
            Some("a:1,b:2,cmd:add,topic:math")
        );
        assert_eq!(Value::Object(incoming.meta.clone()), json!({"m": 1}));
        assert_eq!(
            Value::Object(incoming.pattern.into_map()),
            json!({"topic": "math", "cmd": "add", "a": 1, "b": 2})
        );
        // the echoed parts are pieces of the received buffer
        let within = |b: &Bytes| {
            let at = b.as_ptr() as usize - body.as_ptr() as usize;
            at + b.len() <= body.len()
        };
        assert!(within(&echo.trace) && within(&echo.request) && within(&echo.meta));
        let response = echo.response(&Ok(json!(3))).expect("encodes");
        let env = decode_request(HEMERA).expect("decodes");
        let want = ResponseEnvelope {
            meta: env.meta,
            trace: env.trace,
            request: env.request,
            result: Some(json!(3)),
            error: Some(Value::Null),
        };
        assert_eq!(decode_response(&response).expect("a response"), want);
        let failed = echo.response(&Err(json!({"name": "E"}))).expect("encodes");
        let failed: Value = serde_json::from_slice(&failed).expect("JSON");
        assert_eq!(failed["error"], json!({"name": "E"}));
        assert!(failed.get("result").is_none());
    }

    #[test]
    fn both_readers_take_what_hemera_sends_and_refuse_the_rest_alike() {
        // repeated keys and nulls: the fast reader steps aside, the full decoder serves them
        let odd = br#"{"pattern":{"topic":"m","cmd":"a","cmd":"b"},"meta":null,
            "request":{"type":"request","id":"R"},"request":{"type":"request","id":"R2"}}"#;
        let (incoming, echo) = read(odd).expect("served");
        assert_eq!(incoming.pattern.map()["cmd"], json!("b"));
        let response: Value =
            serde_json::from_slice(&echo.response(&Ok(Value::Null)).expect("encodes"))
                .expect("JSON");
        assert_eq!(response["request"]["id"], json!("R2"));
        assert_eq!(response["meta"], json!({}));
        for (body, needle) in [
            (&b"nope"[..], "not JSON"),
            (b"[1]", "must be a JSON object"),
            (br#"{"pattern":{"topic":"m"}}"#, "no `request`"),
            (br#"{"pattern":{"topic":"m"},"request":{}}"#, "request.type"),
            (
                br#"{"pattern":{"topic":"m"},"request":{"type":1}}"#,
                "request.type",
            ),
            (
                br#"{"pattern":1,"request":{"type":"request"}}"#,
                "`pattern` must be",
            ),
            (
                br#"{"pattern":{},"request":{"type":"request"},"meta":[]}"#,
                "`meta` must be",
            ),
        ] {
            let e = read(body).expect_err("broken");
            assert_eq!(e.name, "HemeraParseError");
            assert!(e.message.contains(needle), "{} lacks {needle}", e.message);
        }
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            (-9i64..9).prop_map(|n| json!(n)),
            "[a-z\"\\\\]{0,4}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
                proptest::collection::btree_map("[a-z]{1,4}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn object() -> impl Strategy<Value = Value> {
        proptest::collection::btree_map("[a-z]{1,3}|traceId|spanId|method|type", json_value(), 0..4)
            .prop_map(|m| Value::Object(m.into_iter().collect()))
    }

    /// A request part: absent, an object (mostly), or any value.
    fn part() -> impl Strategy<Value = Option<Value>> {
        prop_oneof![
            1 => Just(None),
            4 => object().prop_map(Some),
            1 => json_value().prop_map(Some),
        ]
    }

    /// What the fast reader read of `body` is what the full decoder reads, and the response
    /// echoes the decoded parts.
    fn agrees(body: &Bytes, read: (Incoming, Echo)) -> Result<(), TestCaseError> {
        let (incoming, echo) = read;
        let env = decode_request(body);
        prop_assert!(
            env.is_ok(),
            "the full decoder refuses what the fast reader took: {:?}",
            env
        );
        let Ok(env) = env else { return Ok(()) };
        prop_assert_eq!(incoming.pattern.map(), &env.pattern);
        prop_assert_eq!(&incoming.meta, &env.meta);
        prop_assert_eq!(&incoming.delegate, &env.delegate);
        prop_assert_eq!(
            incoming.trace_id.as_str(),
            env.trace_str("traceId").unwrap_or("")
        );
        prop_assert_eq!(
            incoming.span_id.as_str(),
            env.trace_str("spanId").unwrap_or("")
        );
        prop_assert_eq!(incoming.method.as_deref(), env.trace_str("method"));
        let response =
            decode_response(&echo.response(&Ok(json!(1))).expect("encodes")).expect("a response");
        prop_assert_eq!(response.meta, env.meta);
        prop_assert_eq!(response.trace, env.trace);
        prop_assert_eq!(response.request, env.request);
        Ok(())
    }

    /// A request as Hemera and this crate write it, with a payload of primitive values.
    fn usual_request() -> impl Strategy<Value = Vec<u8>> {
        let prim = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            (-1e6f64..1e6).prop_map(|f| json!(f)),
            "[a-zA-Z0-9 :,.]{0,24}".prop_map(Value::String),
        ];
        (
            proptest::collection::btree_map("[a-zA-Z]{1,8}", prim.clone(), 0..6),
            proptest::collection::btree_map("[a-z]{1,4}", prim, 0..3),
            "[0-9A-Z]{22}",
            "[0-9A-Z]{22}",
            any::<bool>(),
        )
            .prop_map(|(payload, meta, trace, span, pretty)| {
                let mut pattern: Map<String, Value> = payload.into_iter().collect();
                pattern.insert("topic".into(), json!("math"));
                let method = crate::pattern::method_of(&pattern);
                let request = json!({
                    "pattern": pattern,
                    "meta": meta.into_iter().collect::<Map<String, Value>>(),
                    "delegate": {},
                    "trace": {"traceId": trace, "spanId": span, "timestamp": 8344889.436596,
                              "service": "math", "method": method},
                    "request": {"id": span, "type": "request", "service": "math", "method": method},
                });
                if pretty {
                    serde_json::to_vec_pretty(&request).expect("encodes")
                } else {
                    serde_json::to_vec(&request).expect("encodes")
                }
            })
    }

    proptest! {
        /// Whatever the request, the fast reader (when it takes it) reads what the full decoder
        /// reads, and the response echoes the decoded parts.
        #[test]
        fn the_fast_reader_agrees_with_the_full_decoder(
            parts in proptest::collection::vec(part(), 5),
            kind in prop_oneof![Just(None), json_value().prop_map(Some),
                                "[a-z]{1,3}".prop_map(|s| Some(json!(s)))],
        ) {
            let mut request = Map::new();
            for (key, part) in ["pattern", "meta", "delegate", "trace", "request"].iter().zip(parts) {
                if let Some(part) = part {
                    request.insert((*key).to_owned(), part);
                }
            }
            if let (Some(Value::Object(r)), Some(kind)) = (request.get_mut("request"), kind) {
                r.insert("type".into(), kind);
            }
            let body = Bytes::from(serde_json::to_vec(&request).expect("encodes"));
            let full = decode_request(&body);
            let read = read_request(&body);
            prop_assert_eq!(read.is_ok(), full.is_ok(), "{:?}", full);
            if let (Ok((incoming, echo)), Ok(env)) = (read, full) {
                prop_assert_eq!(incoming.pattern.map(), &env.pattern);
                prop_assert_eq!(&incoming.meta, &env.meta);
                prop_assert_eq!(&incoming.delegate, &env.delegate);
                prop_assert_eq!(incoming.trace_id.as_str(), env.trace_str("traceId").unwrap_or(""));
                prop_assert_eq!(incoming.span_id.as_str(), env.trace_str("spanId").unwrap_or(""));
                prop_assert_eq!(incoming.method.as_deref(), env.trace_str("method"));
                let response = decode_response(&echo.response(&Ok(json!(1))).expect("encodes"))
                    .expect("a response");
                prop_assert_eq!(response.meta, env.meta);
                prop_assert_eq!(response.trace, env.trace);
                prop_assert_eq!(response.request, env.request);
            }
        }

        /// The usual request is taken by the fast reader, and read as the full decoder reads it.
        #[test]
        fn usual_requests_are_read_fast(body in usual_request()) {
            let body = Bytes::from(body);
            let read = read_fast(&body);
            prop_assert!(read.is_some(), "{}", String::from_utf8_lossy(&body));
            if let Some(read) = read {
                agrees(&body, read)?;
            }
        }

        /// A garbled request (a byte changed, the end cut off) is refused by the fast reader,
        /// or read as the full decoder reads it.
        #[test]
        fn garbled_requests_are_refused_or_agree(
            body in usual_request(),
            cut in any::<prop::sample::Index>(),
            flip in any::<(prop::sample::Index, u8)>(),
        ) {
            let mut body = body;
            let (at, x) = flip;
            let i = at.index(body.len());
            body[i] ^= x;
            body.truncate(cut.index(body.len() + 1));
            let body = Bytes::from(body);
            if let Some(read) = read_fast(&body) {
                agrees(&body, read)?;
            }
        }
    }
}
