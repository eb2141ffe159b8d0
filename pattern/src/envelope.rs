//! Hemera 7's JSON envelopes: the request a caller sends on the topic's subject, and the
//! response a server sends to the reply subject (described in `docs/hemera.md`).
//!
//! Request: `{"pattern":{…},"meta":{…},"delegate":{…},"trace":{traceId,spanId,parentSpanId?,
//! timestamp,service,method},"request":{id,type,service,method}}`.
//! Response: `{"meta":{…},"trace":<echoed>,"request":<echoed>,"result":…,"error":null|{…}}`.

use std::sync::OnceLock;
use std::time::Instant;

use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::HemeraError;
use crate::pattern::kind_of;

/// `request.type` of a call that expects a reply.
pub const TYPE_REQUEST: &str = "request";
/// `request.type` of a fire-and-forget message (`pubsub$`).
pub const TYPE_PUBSUB: &str = "pubsub";

/// A request envelope as it travels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestEnvelope {
    /// The message without its `$` keys: the payload the handler sees (with `topic`).
    pub pattern: Map<String, Value>,
    /// `meta$`: passed to the handler and to every nested act.
    #[serde(default)]
    pub meta: Map<String, Value>,
    /// `delegate$`: passed to the handler of this call only.
    #[serde(default)]
    pub delegate: Map<String, Value>,
    /// Trace ids, echoed unchanged in the response.
    #[serde(default)]
    pub trace: Map<String, Value>,
    /// `{id, type, service, method}`, echoed unchanged in the response.
    pub request: Map<String, Value>,
}

impl RequestEnvelope {
    /// `request.type` (`request` or `pubsub`).
    pub fn kind(&self) -> &str {
        self.request
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or(TYPE_REQUEST)
    }

    /// A string field of `trace` (`traceId`, `spanId`, `method`, …).
    pub fn trace_str(&self, key: &str) -> Option<&str> {
        self.trace.get(key).and_then(Value::as_str)
    }
}

/// A response envelope as it travels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ResponseEnvelope {
    /// The server's meta (the request's).
    #[serde(default)]
    pub meta: Map<String, Value>,
    /// The request's `trace`, echoed.
    #[serde(default)]
    pub trace: Map<String, Value>,
    /// The request's `request`, echoed.
    #[serde(default)]
    pub request: Map<String, Value>,
    /// The handler's result (absent on error).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// The error object, `null` on success.
    #[serde(default)]
    pub error: Option<Value>,
}

impl ResponseEnvelope {
    /// The envelope as a JSON value, its parts moved (no copy).
    pub fn into_value(self) -> Value {
        let mut object = Map::new();
        object.insert("meta".into(), Value::Object(self.meta));
        object.insert("trace".into(), Value::Object(self.trace));
        object.insert("request".into(), Value::Object(self.request));
        if let Some(result) = self.result {
            object.insert("result".into(), result);
        }
        object.insert("error".into(), self.error.unwrap_or(Value::Null));
        Value::Object(object)
    }

    /// The outcome the caller sees: the error when there is one, else the result (`null` when
    /// the server sent none).
    pub fn outcome(self) -> Result<Value, HemeraError> {
        outcome_of(self.result, self.error)
    }
}

/// The error when there is one (not `null`), else the result (`null` when none was sent).
pub(crate) fn outcome_of(
    result: Option<Value>,
    error: Option<Value>,
) -> Result<Value, HemeraError> {
    match error {
        Some(e) if !e.is_null() => Err(HemeraError::from_wire(e)),
        _ => Ok(result.unwrap_or(Value::Null)),
    }
}

/// Decode a request envelope, checking what a server needs: a JSON object with an object
/// `pattern` and an object `request` with a string `type`. The error names what is wrong.
pub fn decode_request(body: &[u8]) -> Result<RequestEnvelope, HemeraError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| HemeraError::parse(format!("the request is not JSON: {e}")))?;
    request_from_value(value)
}

/// [`decode_request`] of an already parsed value (a mesh call body).
pub fn request_from_value(value: Value) -> Result<RequestEnvelope, HemeraError> {
    let Value::Object(mut object) = value else {
        return Err(HemeraError::parse(format!(
            "the request must be a JSON object, got {}",
            kind_of(&value)
        )));
    };
    let pattern = take_object(&mut object, "pattern", true)?;
    let request = take_object(&mut object, "request", true)?;
    match request.get("type") {
        Some(Value::String(_)) => {}
        _ => {
            return Err(HemeraError::parse(
                "the request envelope's `request.type` must be a string",
            ));
        }
    }
    Ok(RequestEnvelope {
        pattern,
        meta: take_object(&mut object, "meta", false)?,
        delegate: take_object(&mut object, "delegate", false)?,
        trace: take_object(&mut object, "trace", false)?,
        request,
    })
}

/// Decode a response envelope: a JSON object; a reply that is not one is a parse error.
pub fn decode_response(body: &[u8]) -> Result<ResponseEnvelope, HemeraError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| HemeraError::parse(format!("the reply is not JSON: {e}")))?;
    response_from_value(value)
}

/// [`decode_response`] of an already parsed value.
pub fn response_from_value(value: Value) -> Result<ResponseEnvelope, HemeraError> {
    let Value::Object(mut object) = value else {
        return Err(HemeraError::parse(format!(
            "the reply must be a JSON object, got {}",
            kind_of(&value)
        )));
    };
    Ok(ResponseEnvelope {
        meta: take_object(&mut object, "meta", false)?,
        trace: take_object(&mut object, "trace", false)?,
        request: take_object(&mut object, "request", false)?,
        result: object.remove("result"),
        error: object.remove("error"),
    })
}

/// `object[key]` as an object: required or `{}` when absent or null.
fn take_object(
    object: &mut Map<String, Value>,
    key: &str,
    required: bool,
) -> Result<Map<String, Value>, HemeraError> {
    match object.remove(key) {
        Some(Value::Object(m)) => Ok(m),
        None | Some(Value::Null) if !required => Ok(Map::new()),
        None => Err(HemeraError::parse(format!(
            "the envelope has no `{key}` object"
        ))),
        Some(other) => Err(HemeraError::parse(format!(
            "the envelope's `{key}` must be an object, got {}",
            kind_of(&other)
        ))),
    }
}

/// A fresh id like NUID's: 22 upper-case alphanumeric characters.
///
/// Drawn from a per-thread [`SmallRng`](rand::rngs::SmallRng) seeded once from the OS-seeded
/// thread RNG (two `u64` draws per id, 55 bits of each written as 11 base-32 digits): ids only need to
/// be unique, not unpredictable, and this is called three times per act.
pub fn new_id() -> String {
    let id = new_id_bytes();
    // (ASCII digits and letters: not reached otherwise)
    std::str::from_utf8(&id).unwrap_or_default().to_owned()
}

/// [`new_id`] as its 22 ASCII bytes (no allocation).
pub(crate) fn new_id_bytes() -> [u8; 22] {
    use rand::SeedableRng;
    use rand::rngs::SmallRng;
    use std::cell::RefCell;

    thread_local! {
        static RNG: RefCell<SmallRng> = RefCell::new(SmallRng::from_rng(&mut rand::rng()));
    }
    let (hi, lo): (u64, u64) = RNG.with(|r| {
        let mut r = r.borrow_mut();
        (r.random(), r.random())
    });
    id_of(hi, lo)
}

/// The digits of an id.
const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// Every pair of digits, by the 10 bits that make it (the low 5 bits the first digit).
static DIGIT_PAIRS: [[u8; 2]; 1024] = {
    let mut pairs = [[0u8; 2]; 1024];
    let mut i = 0;
    while i < 1024 {
        pairs[i] = [ALPHABET[i & 31], ALPHABET[i >> 5]];
        i += 1;
    }
    pairs
};

/// The id of two draws: 11 base-32 digits of the low 55 bits of each (digit `i` of a draw is
/// its bits `5i..5i+5`), written two digits at a time.
fn id_of(hi: u64, lo: u64) -> [u8; 22] {
    let mut id = [0u8; 22];
    for (half, bits) in id.chunks_exact_mut(11).zip([hi, lo]) {
        for (j, pair) in half.chunks_exact_mut(2).enumerate() {
            pair.copy_from_slice(&DIGIT_PAIRS[((bits >> (10 * j)) & 1023) as usize]);
        }
        half[10] = ALPHABET[((bits >> 50) & 31) as usize];
    }
    id
}

/// Milliseconds since this process first asked (Hemera's `process.hrtime()` in ms: monotonic and
/// process-relative, used only by the caller to compute a duration).
pub fn timestamp_ms() -> f64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn hemera_request_parses_and_round_trips() {
        let raw = br#"{"pattern":{"topic":"math","cmd":"add","a":1,"b":2},"meta":{},"delegate":{},
 "trace":{"spanId":"S","traceId":"T","timestamp":8344889.436596,"service":"math","method":"a:1,b:2,cmd:add,topic:math"},
 "request":{"id":"R","type":"request","service":"math","method":"a:1,b:2,cmd:add,topic:math"}}"#;
        let env = decode_request(raw).expect("parses");
        assert_eq!(env.kind(), "request");
        assert_eq!(env.trace_str("traceId"), Some("T"));
        assert_eq!(env.pattern["a"], json!(1));
        let again = serde_json::to_vec(&env).expect("encodes");
        assert_eq!(decode_request(&again).expect("parses"), env);
    }

    #[test]
    fn minimal_request_is_accepted() {
        let env = decode_request(br#"{"pattern":{"topic":"math"},"request":{"type":"request"}}"#)
            .expect("parses");
        assert!(env.meta.is_empty() && env.trace.is_empty());
    }

    #[test]
    fn broken_requests_name_the_problem() {
        for (body, needle) in [
            (&b"nope"[..], "not JSON"),
            (b"[1]", "must be a JSON object"),
            (br#"{"pattern":{"topic":"m"}}"#, "no `request`"),
            (br#"{"pattern":{"topic":"m"},"request":{}}"#, "request.type"),
            (
                br#"{"pattern":1,"request":{"type":"request"}}"#,
                "`pattern` must be",
            ),
            (
                br#"{"pattern":{},"request":{"type":"request"},"meta":[]}"#,
                "`meta` must be",
            ),
        ] {
            let e = decode_request(body).expect_err("broken");
            assert_eq!(e.name, "HemeraParseError");
            assert!(e.message.contains(needle), "{} lacks {needle}", e.message);
        }
    }

    #[test]
    fn responses_give_result_or_error() {
        let ok = decode_response(br#"{"result":3}"#).expect("parses");
        assert_eq!(ok.outcome(), Ok(json!(3)));
        let none = decode_response(br#"{"meta":{},"error":null}"#).expect("parses");
        assert_eq!(none.outcome(), Ok(Value::Null));
        let err =
            decode_response(br#"{"error":{"name":"E","message":"m","code":4},"result":null}"#)
                .expect("parses")
                .outcome()
                .expect_err("error");
        assert_eq!((err.name.as_str(), err.code()), ("E", Some(&json!(4))));
        let odd = decode_response(br#"{"error":"text"}"#)
            .expect("parses")
            .outcome();
        assert_eq!(odd.expect_err("error").name, "HemeraError");
        assert!(decode_response(b"3").is_err());
    }

    #[test]
    fn into_value_is_the_serialized_envelope() {
        let env = decode_response(
            br#"{"meta":{"a":1},"trace":{"t":"x"},"request":{"id":"r"},"result":[1]}"#,
        )
        .expect("parses");
        let value = env.clone().into_value();
        assert_eq!(value, serde_json::to_value(&env).expect("encodes"));
        let none = ResponseEnvelope::default().into_value();
        assert_eq!(
            none,
            serde_json::to_value(ResponseEnvelope::default()).expect("encodes")
        );
    }

    #[test]
    fn ids_look_like_nuids() {
        let id = new_id();
        assert_eq!(id.len(), 22);
        assert!(
            id.chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
        );
        let many: std::collections::HashSet<String> = (0..10_000).map(|_| new_id()).collect();
        assert_eq!(many.len(), 10_000, "ids repeat");
        // every position takes many values (no constant digit from a short draw)
        for i in 0..22 {
            let distinct: std::collections::HashSet<u8> =
                many.iter().map(|id| id.as_bytes()[i]).collect();
            assert!(
                distinct.len() > 20,
                "position {i}: {} values",
                distinct.len()
            );
        }
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            "[a-z]{0,6}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::btree_map("[a-z]{1,5}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// Any bytes: the decoders answer (Ok or a parse error), never panic.
        #[test]
        fn decoders_never_panic_on_bytes(body in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode_request(&body);
            let _ = decode_response(&body);
        }

        /// Any JSON value: a request decodes exactly when it is an object with object `pattern`
        /// and `request` (with a string `type`) and object-or-absent `meta`/`delegate`/`trace`.
        #[test]
        fn decoder_accepts_exactly_well_formed_requests(v in json_value()) {
            let body = serde_json::to_vec(&v).expect("encodes");
            let ok = v.as_object().is_some_and(|o| {
                let obj = |k: &str, req: bool| match o.get(k) {
                    Some(Value::Object(_)) => true,
                    None | Some(Value::Null) => !req,
                    _ => false,
                };
                obj("pattern", true) && obj("request", true) && obj("meta", false)
                    && obj("delegate", false) && obj("trace", false)
                    && o["request"].get("type").is_some_and(Value::is_string)
            });
            prop_assert_eq!(decode_request(&body).is_ok(), ok);
        }

        /// A well-formed request survives encode → decode unchanged.
        #[test]
        fn requests_round_trip(pattern in proptest::collection::btree_map("[a-z]{1,5}", json_value(), 0..4),
                               meta in proptest::collection::btree_map("[a-z]{1,5}", json_value(), 0..3)) {
            let mut request = Map::new();
            request.insert("type".into(), json!("request"));
            request.insert("id".into(), json!(new_id()));
            let env = RequestEnvelope {
                pattern: pattern.into_iter().collect(),
                meta: meta.into_iter().collect(),
                delegate: Map::new(),
                trace: Map::new(),
                request,
            };
            let body = serde_json::to_vec(&env).expect("encodes");
            prop_assert_eq!(decode_request(&body).expect("decodes"), env);
        }
    }

    proptest::proptest! {
        /// Two digits at a time: the digits one at a time (5 bits each, low bits first).
        #[test]
        fn ids_are_their_digits(hi: u64, lo: u64) {
            let mut want = [0u8; 22];
            for (half, bits) in want.chunks_exact_mut(11).zip([hi, lo]) {
                for (i, digit) in half.iter_mut().enumerate() {
                    *digit = super::ALPHABET[((bits >> (5 * i)) & 31) as usize];
                }
            }
            proptest::prop_assert_eq!(super::id_of(hi, lo), want);
        }
    }
}
