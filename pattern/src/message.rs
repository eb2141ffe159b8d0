//! An act's message taken apart: its `$` options checked, its parts kept apart (the payload,
//! meta, delegate, trace ids) so that each bus encodes its own envelope from them without
//! building JSON maps first (see `crate::wire`).

use std::borrow::Cow;
use std::sync::LazyLock;
use std::time::Duration;

use serde::{Serialize, Serializer};
use serde_json::{Map, Value};

use crate::error::HemeraError;
use crate::handler::Parent;
use crate::hemera::Options;
use crate::id::Id;
use crate::pattern::{kind_of, method_of};

/// How many replies an act waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Replies {
    /// Up to N (`maxMessages$: N`, or `expectedMessages$: N`): fewer by the deadline ends with a
    /// `TimeoutError`.
    Exactly(usize),
    /// Every reply until the deadline (`maxMessages$: -1`).
    Unbounded,
}

/// The most replies `act_many` keeps (bounds its memory whatever the responders do).
pub(crate) const MAX_REPLIES: usize = 10_000;

/// One act, ready to send: its parts borrowed from the caller's message (no copy of the
/// payload; its `$` keys are skipped when it is encoded).
#[derive(Debug)]
pub(crate) struct Message<'a> {
    pub(crate) topic: &'a str,
    pub(crate) timeout: Duration,
    pub(crate) replies: Option<Replies>,
    /// `pubsub$: true`: published, no reply.
    pub(crate) pubsub: bool,
    /// The caller's message, `$` keys included (see [`payload`](Self::payload)).
    message: &'a Map<String, Value>,
    /// Whether `message` has `$` keys (most have none: then it is the payload as it is).
    has_options: bool,
    /// `meta$` over the parent's meta.
    pub(crate) meta: Cow<'a, Map<String, Value>>,
    /// `delegate$`.
    pub(crate) delegate: &'a Map<String, Value>,
    /// The trace id from `trace$` or the parent; `None` for a root act, whose trace id is its
    /// span id ([`trace_id`](Self::trace_id)).
    inherited_trace_id: Option<&'a str>,
    /// The act's span id: `trace$.spanId`, or a fresh one (kept inline: no allocation).
    pub(crate) span_id: Id,
    pub(crate) parent_span_id: Option<&'a str>,
    /// `trace$` (its keys are sent in Hemera's `trace` over the generated ones).
    pub(crate) trace_extra: &'a Map<String, Value>,
    /// `requestId$` (a fresh id otherwise, made when a NATS envelope is written).
    pub(crate) request_id: Option<&'a str>,
}

/// The empty map an absent option borrows.
static EMPTY: LazyLock<Map<String, Value>> = LazyLock::new(Map::new);

impl<'a> Message<'a> {
    /// Check `message` and take it apart, inheriting `parent`'s meta and trace.
    pub(crate) fn parse(
        message: &'a Value,
        parent: Option<&Parent<'a>>,
        options: &Options,
    ) -> Result<Message<'a>, HemeraError> {
        let Value::Object(message) = message else {
            return Err(HemeraError::hemera(format!(
                "act: the message must be a JSON object, got {}",
                kind_of(message)
            )));
        };
        // One pass over the keys finds the topic and whether there are `$` options (most
        // messages carry none: their lookups are spared), with no hashing of a key.
        let (mut topic, mut has_options) = (None, false);
        for (k, v) in message {
            if k == "topic" {
                topic = Some(v);
            } else if k.ends_with('$') {
                has_options = true;
            }
        }
        let topic = match topic {
            Some(Value::String(t)) if !t.is_empty() && !t.contains(char::is_whitespace) => t,
            _ => {
                return Err(HemeraError::hemera(
                    "act: the message needs a `topic`: a non-empty string without spaces",
                ));
            }
        };
        let own = if has_options {
            Own::of(message, options)?
        } else {
            Own::none(options)
        };
        let meta = match parent.map(|p| p.meta).filter(|m| !m.is_empty()) {
            None => Cow::Borrowed(own.meta),
            Some(inherited) if own.meta.is_empty() => Cow::Borrowed(inherited),
            Some(inherited) => {
                let mut meta = inherited.clone();
                meta.extend(own.meta.iter().map(|(k, v)| (k.clone(), v.clone())));
                Cow::Owned(meta)
            }
        };
        // (no `trace$`, the usual act: no lookups in an empty map)
        let id = |key: &str| match has_options {
            true => own.trace.get(key).and_then(Value::as_str),
            false => None,
        };
        let span_id = id("spanId").map_or_else(Id::fresh, Id::new);
        // A root act's trace is named after its span (as a Zipkin root span may be): one id
        // made per act, not two (and not copied).
        let inherited_trace_id = id("traceId").or_else(|| parent.map(|p| p.trace_id));
        let parent_span_id = id("parentSpanId").or_else(|| parent.map(|p| p.span_id));
        Ok(Message {
            topic,
            timeout: own.timeout,
            replies: own.replies,
            pubsub: own.pubsub,
            message,
            has_options,
            meta,
            delegate: own.delegate,
            inherited_trace_id,
            span_id,
            parent_span_id,
            trace_extra: own.trace,
            request_id: own.request_id,
        })
    }

    /// The payload: the message without its `$` keys (`topic` and the pattern keys included).
    pub(crate) fn payload(&self) -> Body<'a> {
        Body {
            message: self.message,
            skip_options: self.has_options,
        }
    }

    /// The act's trace id: from `trace$` or the parent, else (a root act) its span id.
    pub(crate) fn trace_id(&self) -> &str {
        self.inherited_trace_id
            .unwrap_or_else(|| self.span_id.as_str())
    }

    /// The trace id from `trace$` or the parent (`None` for a root act: its span id).
    pub(crate) fn inherited_trace_id(&self) -> Option<&'a str> {
        self.inherited_trace_id
    }

    /// The caller's message, `$` keys included (what [`method`](Self::method) is made from).
    pub(crate) fn message(&self) -> &'a Map<String, Value> {
        self.message
    }

    /// Hemera's method string of the message (`a:1,b:2,cmd:add,topic:math`).
    pub(crate) fn method(&self) -> String {
        method_of(self.message)
    }
}

/// A message's payload, serialized as a map without the message's `$` keys.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Body<'a> {
    message: &'a Map<String, Value>,
    skip_options: bool,
}

impl Body<'_> {
    /// How many entries the payload has.
    pub(crate) fn len(&self) -> usize {
        if self.skip_options {
            self.iter().count()
        } else {
            self.message.len()
        }
    }

    /// The payload's entries.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&String, &Value)> {
        let skip = self.skip_options;
        self.message
            .iter()
            .filter(move |(k, _)| !(skip && k.ends_with('$')))
    }
}

impl Serialize for Body<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if !self.skip_options {
            return self.message.serialize(s);
        }
        s.collect_map(self.iter())
    }
}

/// The `$` options of an act's message.
struct Own<'a> {
    timeout: Duration,
    pubsub: bool,
    replies: Option<Replies>,
    request_id: Option<&'a str>,
    meta: &'a Map<String, Value>,
    delegate: &'a Map<String, Value>,
    trace: &'a Map<String, Value>,
}

impl<'a> Own<'a> {
    /// A message without options.
    fn none(options: &Options) -> Own<'a> {
        Own {
            timeout: options.timeout,
            pubsub: false,
            replies: None,
            request_id: None,
            meta: &EMPTY,
            delegate: &EMPTY,
            trace: &EMPTY,
        }
    }

    /// Check the options of `message`.
    fn of(message: &'a Map<String, Value>, options: &Options) -> Result<Own<'a>, HemeraError> {
        let timeout = match message.get("timeout$") {
            None | Some(Value::Null) => options.timeout,
            Some(v) => match v.as_f64() {
                Some(ms) if (0.0..=86_400_000.0).contains(&ms) => {
                    Duration::from_secs_f64(ms / 1000.0)
                }
                _ => {
                    return Err(HemeraError::hemera(format!(
                        "act: `timeout$` must be a number of milliseconds (0 to 86400000), got {v}"
                    )));
                }
            },
        };
        let pubsub = match message.get("pubsub$") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(HemeraError::hemera("act: `pubsub$` must be a boolean")),
        };
        let replies = replies_of(message)?;
        let request_id = match message.get("requestId$") {
            None | Some(Value::Null) => None,
            Some(Value::String(id)) => Some(id.as_str()),
            Some(_) => return Err(HemeraError::hemera("act: `requestId$` must be a string")),
        };
        Ok(Own {
            timeout,
            pubsub,
            replies,
            request_id,
            meta: object_option(message, "meta$")?,
            delegate: object_option(message, "delegate$")?,
            trace: object_option(message, "trace$")?,
        })
    }
}

/// `message[key]`: an object, or empty when absent.
fn object_option<'a>(
    message: &'a Map<String, Value>,
    key: &str,
) -> Result<&'a Map<String, Value>, HemeraError> {
    match message.get(key) {
        None | Some(Value::Null) => Ok(&*EMPTY),
        Some(Value::Object(m)) => Ok(m),
        Some(other) => Err(HemeraError::hemera(format!(
            "act: `{key}` must be an object, got {}",
            kind_of(other)
        ))),
    }
}

fn replies_of(message: &Map<String, Value>) -> Result<Option<Replies>, HemeraError> {
    let count = |key: &str, allow_unbounded: bool| -> Result<Option<Replies>, HemeraError> {
        match message.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => match (v.as_i64(), allow_unbounded) {
                (Some(-1), true) => Ok(Some(Replies::Unbounded)),
                (Some(n), _) if n > 0 && (n as u64) <= MAX_REPLIES as u64 => {
                    Ok(Some(Replies::Exactly(n as usize)))
                }
                _ => Err(HemeraError::hemera(format!(
                    "act: `{key}` must be an integer from 1 to {MAX_REPLIES}{}, got {v}",
                    if allow_unbounded { " (or -1)" } else { "" }
                ))),
            },
        }
    };
    Ok(count("maxMessages$", true)?.or(count("expectedMessages$", false)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::tests::envelope_of;
    use serde_json::json;

    fn parse(v: &Value) -> Result<Message<'_>, HemeraError> {
        Message::parse(v, None, &Options::default())
    }

    #[test]
    fn builds_hemera_envelopes() {
        let v = json!({"topic": "math", "cmd": "add", "a": 1, "b": 2, "timeout$": 150,
                       "meta$": {"k": 1}, "delegate$": {"d": 2}, "requestId$": "rid-1"});
        let m = parse(&v).expect("ok");
        assert_eq!(m.timeout, Duration::from_millis(150));
        assert_eq!(m.method(), "a:1,b:2,cmd:add,topic:math");
        let env = &envelope_of(&m);
        assert_eq!(
            Value::Object(env.pattern.clone()),
            json!({"topic": "math", "cmd": "add", "a": 1, "b": 2})
        );
        assert_eq!(env.meta["k"], json!(1));
        assert_eq!(env.delegate["d"], json!(2));
        assert_eq!(env.request["id"], json!("rid-1"));
        assert_eq!(env.request["type"], json!("request"));
        assert_eq!(env.trace["service"], json!("math"));
        assert!(env.trace.get("parentSpanId").is_none());
    }

    #[test]
    fn messages_without_options_get_the_defaults() {
        let v = json!({"topic": "math", "cmd": "add", "a": 1});
        let m = parse(&v).expect("ok");
        assert_eq!(m.timeout, Options::default().timeout);
        assert_eq!((m.pubsub, m.replies), (false, None));
        let env = envelope_of(&m);
        assert_eq!(
            Value::Object(env.pattern),
            json!({"topic": "math", "cmd": "add", "a": 1})
        );
        assert!(env.meta.is_empty() && env.delegate.is_empty());
        assert_eq!(env.request["id"].as_str().map(str::len), Some(22));
        // a root act: its trace is named after its span
        assert_eq!(m.trace_id(), m.span_id);
        assert_eq!(m.span_id.len(), 22);
        assert!(m.parent_span_id.is_none());
    }

    #[test]
    fn nested_acts_inherit_meta_and_trace_without_leaking() {
        let meta = [("user".to_string(), json!("u"))].into_iter().collect();
        let parent = Parent {
            meta: &meta,
            trace_id: "T",
            span_id: "S",
        };
        let v = json!({"topic": "a", "meta$": {"x": 1}});
        let m = Message::parse(&v, Some(&parent), &Options::default()).expect("ok");
        let env = envelope_of(&m);
        assert_eq!(
            Value::Object(env.meta.clone()),
            json!({"user": "u", "x": 1})
        );
        assert_eq!(env.trace["traceId"], json!("T"));
        assert_eq!(env.trace["parentSpanId"], json!("S"));
        assert_ne!(env.trace["spanId"], json!("S"));
        // the parent is untouched: a sibling act does not see `x`
        assert_eq!(parent.meta.len(), 1);
    }

    #[test]
    fn bad_messages_are_clear_errors() {
        for (bad, needle) in [
            (json!([1]), "must be a JSON object"),
            (json!("x"), "must be a JSON object"),
            (json!({"cmd": "add"}), "needs a `topic`"),
            (json!({"topic": 3}), "needs a `topic`"),
            (
                json!({"topic": "m", "timeout$": "soon"}),
                "`timeout$` must be a number",
            ),
            (
                json!({"topic": "m", "timeout$": -5}),
                "`timeout$` must be a number",
            ),
            (
                json!({"topic": "m", "meta$": 1}),
                "`meta$` must be an object",
            ),
            (json!({"topic": "m", "maxMessages$": 0}), "`maxMessages$`"),
            (
                json!({"topic": "m", "expectedMessages$": -1}),
                "`expectedMessages$`",
            ),
            (json!({"topic": "m", "pubsub$": 1}), "`pubsub$`"),
        ] {
            let e = parse(&bad).expect_err("bad");
            assert_eq!(e.name, "HemeraError");
            assert!(e.message.contains(needle), "{bad}: {}", e.message);
        }
        assert_eq!(
            parse(&json!({"topic": "m", "maxMessages$": -1}))
                .expect("ok")
                .replies,
            Some(Replies::Unbounded)
        );
    }
}
