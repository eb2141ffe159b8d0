//! An act's message taken apart: its `$` options checked, its parts kept apart (the payload,
//! meta, delegate, trace ids) so that each bus encodes its own envelope from them without
//! building JSON maps first (see `crate::wire`).

use std::time::Duration;

use serde_json::{Map, Value};

use crate::envelope::{new_id, timestamp_ms};
use crate::error::HemeraError;
use crate::handler::Parent;
use crate::hemera::Options;
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

/// One act, ready to send.
#[derive(Debug)]
pub(crate) struct Message {
    pub(crate) topic: String,
    pub(crate) timeout: Duration,
    pub(crate) replies: Option<Replies>,
    /// `pubsub$: true`: published, no reply.
    pub(crate) pubsub: bool,
    /// The message without its `$` keys: the payload the handler sees (with `topic`).
    pub(crate) pattern: Map<String, Value>,
    /// `meta$` over the parent's meta.
    pub(crate) meta: Map<String, Value>,
    /// `delegate$`.
    pub(crate) delegate: Map<String, Value>,
    pub(crate) trace_id: String,
    pub(crate) span_id: String,
    pub(crate) parent_span_id: Option<String>,
    /// The other keys of `trace$` (sent in Hemera's `trace` over the generated ones).
    pub(crate) trace_extra: Map<String, Value>,
    pub(crate) request_id: String,
    pub(crate) timestamp: f64,
}

impl Message {
    /// Check `message` and take it apart, inheriting `parent`'s meta and trace.
    pub(crate) fn parse(
        message: Value,
        parent: Option<&Parent<'_>>,
        options: &Options,
    ) -> Result<Message, HemeraError> {
        let Value::Object(mut message) = message else {
            return Err(HemeraError::hemera(format!(
                "act: the message must be a JSON object, got {}",
                kind_of(&message)
            )));
        };
        let topic = match message.get("topic") {
            Some(Value::String(t)) if !t.is_empty() && !t.contains(char::is_whitespace) => {
                t.clone()
            }
            _ => {
                return Err(HemeraError::hemera(
                    "act: the message needs a `topic`: a non-empty string without spaces",
                ));
            }
        };
        // Most messages carry no `$` option: one pass over the keys spares their lookups.
        let mut own = if message.keys().any(|k| k.ends_with('$')) {
            let own = Own::take(&mut message, options)?;
            message.retain(|k, _| !k.ends_with('$'));
            own
        } else {
            Own::none(options)
        };
        let mut meta = parent.map(|p| p.meta.clone()).unwrap_or_default();
        meta.extend(std::mem::take(&mut own.meta));
        let trace_id = own
            .id("traceId")
            .or_else(|| parent.map(|p| p.trace_id.to_owned()))
            .unwrap_or_else(new_id);
        let span_id = own.id("spanId").unwrap_or_else(new_id);
        let parent_span_id = own
            .id("parentSpanId")
            .or_else(|| parent.map(|p| p.span_id.to_owned()));
        Ok(Message {
            topic,
            timeout: own.timeout,
            replies: own.replies,
            pubsub: own.pubsub,
            pattern: message,
            meta,
            delegate: own.delegate,
            trace_id,
            span_id,
            parent_span_id,
            trace_extra: own.trace,
            request_id: own.request_id.unwrap_or_else(new_id),
            timestamp: timestamp_ms(),
        })
    }

    /// Hemera's method string of the message (`a:1,b:2,cmd:add,topic:math`).
    pub(crate) fn method(&self) -> String {
        method_of(&self.pattern)
    }
}

/// The `$` options of an act's message.
struct Own {
    timeout: Duration,
    pubsub: bool,
    replies: Option<Replies>,
    request_id: Option<String>,
    meta: Map<String, Value>,
    delegate: Map<String, Value>,
    trace: Map<String, Value>,
}

impl Own {
    /// A message without options.
    fn none(options: &Options) -> Own {
        Own {
            timeout: options.timeout,
            pubsub: false,
            replies: None,
            request_id: None,
            meta: Map::new(),
            delegate: Map::new(),
            trace: Map::new(),
        }
    }

    /// Check and take the options of `message` (its `meta$`, `delegate$` and `trace$` are
    /// moved out of it).
    fn take(message: &mut Map<String, Value>, options: &Options) -> Result<Own, HemeraError> {
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
            Some(Value::String(id)) => Some(id.clone()),
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

    /// The string `trace$` key `key`, taken out (a non-string one stays, sent as given).
    fn id(&mut self, key: &str) -> Option<String> {
        match self.trace.get(key) {
            Some(Value::String(_)) => match self.trace.shift_remove(key) {
                Some(Value::String(id)) => Some(id),
                _ => None,
            },
            _ => None,
        }
    }
}

/// `message[key]`: an object, or empty when absent.
fn object_option(
    message: &mut Map<String, Value>,
    key: &str,
) -> Result<Map<String, Value>, HemeraError> {
    match message.shift_remove(key) {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(m)) => Ok(m),
        Some(other) => Err(HemeraError::hemera(format!(
            "act: `{key}` must be an object, got {}",
            kind_of(&other)
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

    fn parse(v: Value) -> Result<Message, HemeraError> {
        Message::parse(v, None, &Options::default())
    }

    #[test]
    fn builds_hemera_envelopes() {
        let m = parse(
            json!({"topic": "math", "cmd": "add", "a": 1, "b": 2, "timeout$": 150,
                             "meta$": {"k": 1}, "delegate$": {"d": 2}, "requestId$": "rid-1"}),
        )
        .expect("ok");
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
        let m = parse(json!({"topic": "math", "cmd": "add", "a": 1})).expect("ok");
        assert_eq!(m.timeout, Options::default().timeout);
        assert_eq!((m.pubsub, m.replies), (false, None));
        let env = envelope_of(&m);
        assert_eq!(
            Value::Object(env.pattern),
            json!({"topic": "math", "cmd": "add", "a": 1})
        );
        assert!(env.meta.is_empty() && env.delegate.is_empty());
        assert_eq!(env.request["id"].as_str().map(str::len), Some(22));
        assert_ne!(m.trace_id, m.span_id);
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
        let m = Message::parse(
            json!({"topic": "a", "meta$": {"x": 1}}),
            Some(&parent),
            &Options::default(),
        )
        .expect("ok");
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
            let e = parse(bad.clone()).expect_err("bad");
            assert_eq!(e.name, "HemeraError");
            assert!(e.message.contains(needle), "{bad}: {}", e.message);
        }
        assert_eq!(
            parse(json!({"topic": "m", "maxMessages$": -1}))
                .expect("ok")
                .replies,
            Some(Replies::Unbounded)
        );
    }
}
