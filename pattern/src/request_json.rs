//! Hemera's request envelope written by hand: the fixed parts as bytes, the ids and names
//! written as they are when they need no escaping, serde only for the payload and the maps.
//! The bytes are exactly what the envelope's `Serialize` writes (property test below), which
//! stays the writer for a message with `trace$` options.

use serde::Serialize;

use crate::envelope::{TYPE_PUBSUB, TYPE_REQUEST};
use crate::wire::HemeraRequest;

impl HemeraRequest<'_> {
    /// The envelope of a message without `trace$`, as JSON bytes.
    pub(crate) fn write(&self) -> Result<Vec<u8>, serde_json::Error> {
        let m = self.msg;
        // The usual envelope is some 330 bytes: room for it and a longer payload, without a
        // reallocation (each copies all that was written).
        let named = m.topic.len() + self.method.len();
        let mut out = Vec::with_capacity(512 + 2 * named);
        out.extend_from_slice(b"{\"pattern\":");
        serde_json::to_writer(&mut out, &m.payload())?;
        out.extend_from_slice(b",\"meta\":");
        map(&mut out, &m.meta)?;
        out.extend_from_slice(b",\"delegate\":");
        map(&mut out, m.delegate)?;
        out.extend_from_slice(b",\"trace\":{\"traceId\":");
        string(&mut out, m.trace_id())?;
        out.extend_from_slice(b",\"spanId\":");
        string(&mut out, &m.span_id)?;
        if let Some(parent) = &m.parent_span_id {
            out.extend_from_slice(b",\"parentSpanId\":");
            string(&mut out, parent)?;
        }
        out.extend_from_slice(b",\"timestamp\":");
        serde_json::to_writer(&mut out, &self.timestamp)?;
        out.extend_from_slice(b",\"service\":");
        string(&mut out, m.topic)?;
        out.extend_from_slice(b",\"method\":");
        string(&mut out, self.method)?;
        out.extend_from_slice(b"},\"request\":{\"id\":");
        string(&mut out, self.id())?;
        out.extend_from_slice(b",\"type\":");
        string(&mut out, if m.pubsub { TYPE_PUBSUB } else { TYPE_REQUEST })?;
        out.extend_from_slice(b",\"service\":");
        string(&mut out, m.topic)?;
        out.extend_from_slice(b",\"method\":");
        string(&mut out, self.method)?;
        out.extend_from_slice(b"}}");
        Ok(out)
    }
}

/// A map: `{}` when empty (most are), else serde's.
fn map(
    out: &mut Vec<u8>,
    m: &serde_json::Map<String, serde_json::Value>,
) -> serde_json::Result<()> {
    if m.is_empty() {
        out.extend_from_slice(b"{}");
        Ok(())
    } else {
        m.serialize(&mut serde_json::Serializer::new(out))
    }
}

/// A JSON string: as it is when nothing in it needs escaping (ids, names), else serde's.
fn string(out: &mut Vec<u8>, s: &str) -> serde_json::Result<()> {
    if crate::scan::special(s.as_bytes()).is_none() {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
        Ok(())
    } else {
        serde_json::to_writer(out, s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handler::Parent;
    use crate::hemera::Options;
    use crate::message::Message;
    use proptest::prelude::*;
    use serde_json::{Map, Value, json};

    fn text() -> impl Strategy<Value = String> {
        prop_oneof!["[a-zA-Z0-9:,]{0,12}", ".{0,8}", "[\"\\\\\\n\u{1}é]{0,4}"]
    }

    fn leaf() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            any::<f64>().prop_map(|f| json!(f)),
            text().prop_map(Value::String),
        ]
    }

    proptest! {
        /// Whatever the message (payload, meta, delegate, ids, a parent, `requestId$`,
        /// `pubsub$`, topics and values needing escapes), the hand-written envelope is the
        /// serialized one, byte for byte.
        #[test]
        fn written_envelopes_are_the_serialized_ones(
            payload in proptest::collection::btree_map(text(), leaf(), 0..6),
            meta in proptest::collection::btree_map(text(), leaf(), 0..3),
            delegate in proptest::collection::btree_map(text(), leaf(), 0..3),
            topic in "[a-zA-Z0-9.\"\\\\é]{1,8}",
            request_id in proptest::option::of(text()),
            pubsub in any::<bool>(),
            parent in proptest::option::of((text(), text())),
        ) {
            let mut message: Map<String, Value> =
                payload.into_iter().filter(|(k, _)| !k.ends_with('$')).collect();
            message.insert("topic".into(), json!(topic));
            message.insert("meta$".into(), Value::Object(meta.into_iter().collect()));
            message.insert("delegate$".into(), Value::Object(delegate.into_iter().collect()));
            if let Some(id) = request_id {
                message.insert("requestId$".into(), json!(id));
            }
            if pubsub {
                message.insert("pubsub$".into(), json!(true));
            }
            let message = Value::Object(message);
            let parent_meta = Map::new();
            let parent = parent.as_ref().map(|(t, s)| Parent {
                meta: &parent_meta,
                trace_id: t,
                span_id: s,
            });
            let msg = Message::parse(&message, parent.as_ref(), &Options::default())
                .expect("message");
            let method = msg.method();
            let req = HemeraRequest::new(&msg, &method);
            let written = req.write().expect("writes");
            let serialized = serde_json::to_vec(&req).expect("serializes");
            prop_assert_eq!(
                String::from_utf8_lossy(&written),
                String::from_utf8_lossy(&serialized)
            );
        }
    }
}
