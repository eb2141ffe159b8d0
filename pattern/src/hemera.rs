//! The node handle: `add`, `remove`, `act`, and serving one message (shared by both buses).

use std::borrow::Borrow;
use std::future::{Future, ready};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use futures::future::{BoxFuture, Either};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::bus::Bus;
use crate::envelope::new_id;
use crate::error::HemeraError;
use crate::handler::{Handler, Parent};
use crate::id::Id;
use crate::message::Message;
use crate::pattern::Pattern;
use crate::payload::Payload;
use crate::registry::{Entry, Topic, TopicOptions, Topics};
use crate::schema::Schema;

/// Options of a node.
#[derive(Debug, Clone)]
pub struct Options {
    /// The node's name, sent as `app` in errors and hops (Hemera's `name`).
    pub name: String,
    /// The deadline of an act without `timeout$` (Hemera's default: 2 s).
    pub timeout: Duration,
    /// How many messages this node serves at once; more wait (backpressure on the bus).
    pub concurrency: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            name: format!("plume-{}", new_id()),
            timeout: Duration::from_millis(2000),
            concurrency: 1024,
        }
    }
}

/// A pattern RPC node: [`add`](Self::add) patterns with handlers, [`act`](Self::act) messages.
/// Cheap to clone (one shared node).
#[derive(Clone)]
pub struct Hemera {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Hemera {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hemera")
            .field("name", &self.inner.options.name)
            .finish_non_exhaustive()
    }
}

pub(crate) struct Inner {
    pub(crate) bus: Bus,
    pub(crate) options: Options,
    /// Read by every served message, written by `add`/`remove`: a read-write lock, so that
    /// messages served at once on several threads do not wait for each other.
    topics: RwLock<Topics>,
    /// Serializes `add`/`remove` (which subscribe and unsubscribe on the bus).
    changes: tokio::sync::Mutex<()>,
    seq: AtomicU64,
    pub(crate) permits: Arc<tokio::sync::Semaphore>,
}

impl Hemera {
    pub(crate) fn with_bus(bus: Bus, options: Options) -> Hemera {
        let permits = Arc::new(tokio::sync::Semaphore::new(options.concurrency.max(1)));
        Hemera {
            inner: Arc::new(Inner {
                bus,
                options,
                topics: RwLock::new(Topics::new()),
                changes: tokio::sync::Mutex::new(()),
                seq: AtomicU64::new(0),
                permits,
            }),
        }
    }

    /// This node's name (`app` in errors).
    pub fn name(&self) -> &str {
        &self.inner.options.name
    }

    /// Serve messages matching `pattern` (a JSON object with a string `topic`; see
    /// [`Pattern`]) with `handler`. The first pattern of a topic subscribes to it, with the
    /// pattern's `pubsub$`, `queue$` and `maxMessages$`; a later pattern of the topic with other
    /// such options is an error, as in Hemera.
    pub async fn add(&self, pattern: Value, handler: impl Handler) -> Result<(), HemeraError> {
        self.add_pattern(Pattern::new(&pattern)?, handler).await
    }

    /// [`add`](Self::add) with a pattern built beforehand (for example with regex properties).
    pub async fn add_pattern(
        &self,
        pattern: Pattern,
        handler: impl Handler,
    ) -> Result<(), HemeraError> {
        let topic = pattern.topic()?.to_owned();
        let options = TopicOptions::of(pattern.source())?;
        let schema = Schema::of(pattern.source())?.map(Arc::new);
        let _changes = self.inner.changes.lock().await;
        let existing = self.topics_read().get(&topic).map(|t| t.options.clone());
        match existing {
            Some(o) if o != options => {
                return Err(HemeraError::hemera(format!(
                    "topic `{topic}` is already registered with other transport options \
                     (pubsub$, queue$, maxMessages$)"
                )));
            }
            Some(_) => {}
            None => {
                self.topics().insert(
                    topic.clone(),
                    Topic {
                        options: options.clone(),
                        entries: Vec::new(),
                    },
                );
                if let Err(e) = self.inner.bus.serve(self, &topic, &options).await {
                    self.topics().remove(&topic);
                    return Err(e);
                }
            }
        }
        let seq = self.inner.seq.fetch_add(1, Ordering::Relaxed);
        if let Some(t) = self.topics().get_mut(&topic) {
            t.insert(Entry {
                seq,
                pattern,
                handler: Arc::new(handler),
                schema,
            });
        }
        Ok(())
    }

    /// Stop serving the patterns equal to `pattern` (same matched properties); the topic is
    /// unsubscribed with its last pattern. Whether one was removed.
    pub async fn remove(&self, pattern: &Value) -> Result<bool, HemeraError> {
        let pattern = Pattern::new(pattern)?;
        let topic = pattern.topic()?.to_owned();
        let _changes = self.inner.changes.lock().await;
        let (removed, empty) = {
            let mut topics = self.topics();
            let Some(t) = topics.get_mut(&topic) else {
                return Ok(false);
            };
            let before = t.entries.len();
            t.entries.retain(|e| !e.pattern.same_props(&pattern));
            (t.entries.len() < before, t.entries.is_empty())
        };
        if empty {
            self.drop_topic(&topic).await;
        }
        Ok(removed)
    }

    /// Stop serving `topic` with all its patterns (Hemera's `remove(topic)`). Whether it was
    /// served.
    pub async fn remove_topic(&self, topic: &str) -> bool {
        let _changes = self.inner.changes.lock().await;
        let served = self.topics_read().contains_key(topic);
        if served {
            self.drop_topic(topic).await;
        }
        served
    }

    /// Unsubscribe `topic` and forget its patterns.
    pub(crate) async fn drop_topic(&self, topic: &str) {
        self.topics().remove(topic);
        self.inner.bus.unserve(topic).await;
    }

    /// Stop serving every topic.
    pub async fn close(&self) {
        let _changes = self.inner.changes.lock().await;
        let topics: Vec<String> = self.topics_read().keys().cloned().collect();
        for topic in topics {
            self.drop_topic(&topic).await;
        }
        self.inner.bus.close().await;
    }

    /// Send `message` (a JSON object: the pattern keys, the payload, and `$` options) to the
    /// most specific matching pattern on the bus; its handler's result, or its error.
    ///
    /// Options: `timeout$` (ms; default [`Options::timeout`]), `meta$`, `delegate$`, `trace$`
    /// (`traceId`/`spanId` to use), `requestId$`, `pubsub$` (publish, no reply: `Ok(null)` at
    /// once). Errors: the handler's (name, message, code, data kept), `PatternNotFound`,
    /// `TimeoutError`, `PayloadValidationError`, `HemeraError` for a bad message.
    ///
    /// The message is given as a [`Value`] or borrowed (`&Value`): either way it is encoded from
    /// where it is, not copied.
    pub async fn act(&self, message: impl Borrow<Value>) -> Result<Value, HemeraError> {
        self.act_in(None, message.borrow()).await
    }

    /// [`act`](Self::act) with a typed message and result: a result that does not decode into
    /// `T` is a `HemeraParseError`.
    pub async fn act_as<T: DeserializeOwned>(
        &self,
        message: &impl Serialize,
    ) -> Result<T, HemeraError> {
        let message = serde_json::to_value(message)
            .map_err(|e| HemeraError::hemera(format!("the message does not encode: {e}")))?;
        let value = self.act(&message).await?;
        serde_json::from_value(value)
            .map_err(|e| HemeraError::parse(format!("the result does not fit the type: {e}")))
    }

    /// Several replies to one message (`maxMessages$: N` or `-1`, or `expectedMessages$: N`;
    /// NATS only). Each reply is one element; when fewer than N came within `timeout$`, the
    /// last element is a `TimeoutError` (`maxMessages$: -1` collects until the deadline and
    /// ends without one).
    pub async fn act_many(
        &self,
        message: impl Borrow<Value>,
    ) -> Result<Vec<Result<Value, HemeraError>>, HemeraError> {
        let msg = Message::parse(message.borrow(), None, &self.inner.options)?;
        let Some(wanted) = msg.replies else {
            return Err(HemeraError::hemera(
                "act_many needs `maxMessages$` or `expectedMessages$`",
            ));
        };
        let app = &self.inner.options.name;
        self.inner.bus.request_many(&msg, wanted, app).await
    }

    /// An act's future, decided before it is made: an error at once, a publication, or the
    /// bus's request future itself (an `async fn` would keep the parsed message beside it; see
    /// `Bus::request`).
    #[inline(always)]
    pub(crate) fn act_in<'a>(
        &'a self,
        parent: Option<&Parent<'a>>,
        message: &'a Value,
    ) -> impl Future<Output = Result<Value, HemeraError>> + Send + 'a {
        let msg = match Message::parse(message, parent, &self.inner.options) {
            Ok(msg) => msg,
            Err(e) => return Either::Left(Box::pin(ready(Err(e))) as BoxFuture<'a, _>),
        };
        if msg.replies.is_some() {
            return Either::Left(Box::pin(ready(Err(HemeraError::hemera(
                "`maxMessages$`/`expectedMessages$` give several replies: use act_many",
            )))) as BoxFuture<'a, _>);
        }
        if msg.pubsub {
            return Either::Left(Box::pin(async move {
                self.inner.bus.publish(&msg).await?;
                Ok(Value::Null)
            }) as BoxFuture<'a, _>);
        }
        // (the bus's future itself: moved once, not wrapped again)
        self.inner.bus.request(msg, &self.inner.options.name)
    }

    /// The topics (a short lock; never held across an await).
    pub(crate) fn topics(&self) -> RwLockWriteGuard<'_, Topics> {
        self.inner
            .topics
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The topics, to read (a short lock; never held across an await).
    pub(crate) fn topics_read(&self) -> RwLockReadGuard<'_, Topics> {
        self.inner
            .topics
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// A message as a server receives it, from either bus.
#[derive(Debug)]
pub(crate) struct Incoming {
    /// The message without its `$` keys, as received.
    pub(crate) pattern: Payload,
    pub(crate) meta: Map<String, Value>,
    pub(crate) delegate: Map<String, Value>,
    pub(crate) trace_id: Id,
    pub(crate) span_id: Id,
    /// The caller's method string (`trace.method`), when it sent one.
    pub(crate) method: Option<String>,
}
