//! The added patterns of one node, by topic, and the lookup of a message's handler.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::error::HemeraError;
use crate::handler::Handler;
use crate::pattern::Pattern;
use crate::payload::Props;
use crate::schema::Schema;

/// How a topic is subscribed (from the `$` keys of its patterns), as Hemera: one subscription
/// per topic, shared by every pattern of the topic, with the options of the first.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct TopicOptions {
    /// `pubsub$: true`: every subscriber gets every message (no queue group).
    pub(crate) pubsub: bool,
    /// `queue$`: the queue group (default `queue.<topic>`).
    pub(crate) queue: Option<String>,
    /// `maxMessages$`: unsubscribe (and drop the topic's patterns) after this many messages.
    pub(crate) max_messages: Option<u64>,
}

impl TopicOptions {
    /// The options of an added pattern's `$` keys; a wrong type is an error naming the key.
    pub(crate) fn of(source: &Map<String, Value>) -> Result<TopicOptions, HemeraError> {
        let pubsub = match source.get("pubsub$") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(HemeraError::hemera("`pubsub$` must be a boolean")),
        };
        let queue = match source.get("queue$") {
            None | Some(Value::Null) => None,
            Some(Value::String(q)) if !q.is_empty() => Some(q.clone()),
            Some(_) => return Err(HemeraError::hemera("`queue$` must be a non-empty string")),
        };
        let max_messages = match source.get("maxMessages$") {
            None | Some(Value::Null) => None,
            Some(v) => match v.as_u64() {
                Some(n) if n > 0 => Some(n),
                _ => {
                    return Err(HemeraError::hemera(
                        "`maxMessages$` of a pattern must be a positive integer",
                    ));
                }
            },
        };
        Ok(TopicOptions {
            pubsub,
            queue,
            max_messages,
        })
    }

    /// The queue group on NATS (`None` for `pubsub$`).
    pub(crate) fn group(&self, topic: &str) -> Option<String> {
        if self.pubsub {
            None
        } else {
            Some(
                self.queue
                    .clone()
                    .unwrap_or_else(|| format!("queue.{topic}")),
            )
        }
    }
}

/// One added pattern.
pub(crate) struct Entry {
    pub(crate) seq: u64,
    pub(crate) pattern: Pattern,
    pub(crate) handler: Arc<dyn Handler>,
    /// The pattern's JSON-schema rule (`properties` or `schema`), compiled at `add`.
    pub(crate) schema: Option<Arc<Schema>>,
}

/// The patterns of one topic, in order of preference.
pub(crate) struct Topic {
    pub(crate) options: TopicOptions,
    pub(crate) entries: Vec<Entry>,
}

impl Topic {
    pub(crate) fn insert(&mut self, entry: Entry) {
        let at = self.entries.partition_point(|e| {
            e.pattern
                .specificity_cmp(&entry.pattern)
                .then(e.seq.cmp(&entry.seq))
                .is_lt()
        });
        self.entries.insert(at, entry);
    }

    /// The handler (and rule) of the most specific pattern `message` matches.
    pub(crate) fn lookup(
        &self,
        message: &Props<'_>,
    ) -> Option<(Arc<dyn Handler>, Option<Arc<Schema>>)> {
        self.entries
            .iter()
            .find(|e| e.pattern.matches_props(message))
            .map(|e| (Arc::clone(&e.handler), e.schema.clone()))
    }
}

/// Every topic of a node.
pub(crate) type Topics = HashMap<String, Topic>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handler::Req;
    use regex::Regex;
    use serde_json::json;

    fn handler(n: i64) -> Arc<dyn Handler> {
        Arc::new(move |_r: Req| async move { Ok(json!(n)) })
    }

    fn winner(topic: &Topic, message: Value) -> Option<u64> {
        let m = message.as_object().cloned().unwrap_or_default();
        topic
            .entries
            .iter()
            .find(|e| e.pattern.matches_props(&Props::of_map(&m)))
            .map(|e| e.seq)
    }

    fn topic_of(patterns: &[Pattern]) -> Topic {
        let mut t = Topic {
            options: TopicOptions::default(),
            entries: Vec::new(),
        };
        for (seq, p) in patterns.iter().enumerate() {
            t.insert(Entry {
                seq: seq as u64,
                pattern: p.clone(),
                handler: handler(seq as i64),
                schema: None,
            });
        }
        t
    }

    fn p(v: Value) -> Pattern {
        Pattern::new(&v).expect("pattern")
    }

    #[test]
    fn most_specific_wins_whatever_the_order() {
        let general = p(json!({"topic": "math"}));
        let add = p(json!({"topic": "math", "cmd": "add"}));
        let add_int = p(json!({"topic": "math", "cmd": "add", "type": "int"}));
        for order in [
            vec![general.clone(), add.clone(), add_int.clone()],
            vec![add_int.clone(), add.clone(), general.clone()],
            vec![add.clone(), general.clone(), add_int.clone()],
        ] {
            let t = topic_of(&order);
            let pick = |m: Value| winner(&t, m).map(|seq| order[seq as usize].to_string());
            assert_eq!(
                pick(json!({"topic": "math", "cmd": "add", "type": "int", "a": 1})).as_deref(),
                Some("cmd:add,topic:math,type:int")
            );
            assert_eq!(
                pick(json!({"topic": "math", "cmd": "add"})).as_deref(),
                Some("cmd:add,topic:math")
            );
            assert_eq!(
                pick(json!({"topic": "math", "cmd": "sub"})).as_deref(),
                Some("topic:math")
            );
        }
    }

    #[test]
    fn ties_go_to_the_first_added_and_equality_beats_regex() {
        let a = p(json!({"topic": "m", "x": 1}));
        let b = p(json!({"topic": "m", "y": 2}));
        let t = topic_of(&[a.clone(), b.clone()]);
        assert_eq!(winner(&t, json!({"topic": "m", "x": 1, "y": 2})), Some(0));
        let t = topic_of(&[b, a]);
        assert_eq!(winner(&t, json!({"topic": "m", "x": 1, "y": 2})), Some(0));

        let re = p(json!({"topic": "m"}))
            .regex("cmd", Regex::new("^a").expect("re"))
            .expect("regex");
        let eq = p(json!({"topic": "m", "cmd": "add"}));
        let t = topic_of(&[re, eq]);
        assert_eq!(winner(&t, json!({"topic": "m", "cmd": "add"})), Some(1));
        assert_eq!(winner(&t, json!({"topic": "m", "cmd": "abs"})), Some(0));
        assert_eq!(winner(&t, json!({"topic": "m", "cmd": "sub"})), None);
    }

    #[test]
    fn topic_options_are_checked() {
        let o = |v: Value| TopicOptions::of(v.as_object().expect("object"));
        assert_eq!(
            o(json!({"queue$": "g"})).expect("ok").group("t").as_deref(),
            Some("g")
        );
        assert_eq!(
            o(json!({})).expect("ok").group("t").as_deref(),
            Some("queue.t")
        );
        assert_eq!(o(json!({"pubsub$": true})).expect("ok").group("t"), None);
        assert!(o(json!({"pubsub$": "yes"})).is_err());
        assert!(o(json!({"maxMessages$": -1})).is_err());
        assert!(o(json!({"queue$": 3})).is_err());
    }
}
