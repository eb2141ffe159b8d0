//! Serving one received message, from either bus, in two steps:
//! - [`Hemera::start_one`], with no await: the payload matched, its handler found and called
//!   (its future made), or the error object when there is nothing to call;
//! - [`Started::finish`]: the handler's future awaited, its error given this node's hop.
//!
//! A bus keeps one future per message in flight (boxed, moved, polled): splitting the two keeps
//! that future small (the handler's boxed future and what an error needs), where one `async fn`
//! held the whole received message, its walk and the request being built.

use std::panic::AssertUnwindSafe;
use std::task::Poll;

use futures::FutureExt;
use futures::future::BoxFuture;
use serde_json::{Value, json};

use crate::envelope::timestamp_ms;
use crate::error::HemeraError;
use crate::handler::{Matched, ReplyNext, Req};
use crate::hemera::{Hemera, Incoming};
use crate::pattern::method_of;
use crate::payload::Payload;

const LOG: &str = "plume::pattern";

/// A message matched and handed to its handler (or answered without one).
pub(crate) enum Started {
    /// Answered without a handler (no match, an undecodable payload, a schema breach): the
    /// error object.
    Done(Result<Value, Value>),
    /// The handler's future, to await.
    Running(Running),
}

/// A handler's future and what its error needs.
pub(crate) struct Running {
    fut: BoxFuture<'static, Result<Value, HemeraError>>,
    /// The caller's method string, when it sent one.
    method: Option<String>,
    /// Otherwise the payload, to make the method string from when an error needs it (its
    /// received bytes shared, not copied).
    for_errors: Option<Payload>,
}

impl Hemera {
    /// Serve one message that arrived on `topic`: the handler's result, or the error object
    /// (with this node's hop) to send back.
    pub(crate) async fn serve_one(
        &self,
        topic: &str,
        incoming: Incoming,
        next: Option<ReplyNext>,
    ) -> Result<Value, Value> {
        self.start_one(topic, incoming, next)
            .finish(self.name(), topic)
            .await
    }

    /// Match a message that arrived on `topic` and call its handler (no await).
    pub(crate) fn start_one(
        &self,
        topic: &str,
        incoming: Incoming,
        next: Option<ReplyNext>,
    ) -> Started {
        let Incoming {
            pattern,
            meta,
            delegate,
            trace_id,
            span_id,
            method,
        } = incoming;
        let app = self.name();
        // A MessagePack payload in the usual form is walked once, here, and its walk handed to
        // the handler (a typed one decodes from it); its bytes are shared, not copied.
        // A JSON payload (NATS) in the usual form is scanned the same way.
        let (bytes, json) = match pattern.msgpack_bytes() {
            Some(bytes) => (Some(bytes), false),
            None => (pattern.json_bytes(), true),
        };
        let walked = bytes.as_deref().and_then(|b| match json {
            false => crate::walk::read_props(b),
            true => crate::scan::read_props(b),
        });
        let found = match &walked {
            Some(props) => Ok(self.topics_read().get(topic).and_then(|t| t.lookup(props))),
            None => pattern
                .props()
                .map(|props| self.topics_read().get(topic).and_then(|t| t.lookup(&props))),
        };
        let handler = match found {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!(target: LOG, topic, "undecodable message: {}", e.message);
                let method = method.unwrap_or_else(|| method_of(pattern.map()));
                return Started::Done(Err(error_object(e, topic, &method, app)));
            }
        };
        let Some((handler, schema)) = handler else {
            // The method string names the pattern in errors (and is sent by Hemera callers).
            let method = method.unwrap_or_else(|| method_of(pattern.map()));
            let e = HemeraError::pattern_not_found(&method, app);
            return Started::Done(Err(error_object(e, topic, &method, app)));
        };
        // The pattern's JSON-schema rule first: a breach never reaches the handler.
        let (payload, method) = match schema {
            None => (pattern, method),
            Some(schema) => {
                let map = pattern.into_map();
                let method = method.unwrap_or_else(|| method_of(&map));
                let payload = Value::Object(map);
                if let Err(e) = schema.check(&payload) {
                    return Started::Done(Err(error_object(e, topic, &method, app)));
                }
                let Value::Object(map) = payload else {
                    let e = HemeraError::hemera("the payload is not a map");
                    return Started::Done(Err(error_object(e, topic, &method, app)));
                };
                (Payload::from_map(map), Some(method))
            }
        };
        // Kept for an error's method string (`Req` moves into the handler): the received bytes
        // are shared, not copied.
        let for_errors = method.is_none().then(|| payload.clone());
        let req = Req {
            trace_id,
            span_id,
            payload,
            meta,
            delegate,
            hemera: self.clone(),
            next,
        };
        // (a JSON-schema rule checks the payload without changing it: the walk still applies)
        let fut = match &walked {
            Some(props) => handler.call_matched(req, Matched(props)),
            None => handler.call(req),
        };
        Started::Running(Running {
            fut,
            method,
            for_errors,
        })
    }
}

impl Started {
    /// The handler's result, or its error object with this node's hop (node `app`, `topic`).
    pub(crate) async fn finish(self, app: &str, topic: &str) -> Result<Value, Value> {
        match self {
            Started::Done(outcome) => outcome,
            Started::Running(mut running) => {
                let outcome = AssertUnwindSafe(running.fut.as_mut()).catch_unwind().await;
                running.outcome(outcome, app, topic)
            }
        }
    }

    /// Poll the handler once: its outcome when it answered at once (most do), else the
    /// message still running, to [`finish`](Self::finish) (in a task of its own).
    pub(crate) async fn settle(
        self,
        app: &str,
        topic: &str,
    ) -> Result<Result<Value, Value>, Started> {
        match self {
            Started::Done(outcome) => Ok(outcome),
            Started::Running(mut running) => {
                let polled = futures::poll!(AssertUnwindSafe(running.fut.as_mut()).catch_unwind());
                match polled {
                    Poll::Ready(outcome) => Ok(running.outcome(outcome, app, topic)),
                    Poll::Pending => Err(Started::Running(running)),
                }
            }
        }
    }
}

/// What a handler's future ended with: its result, its error, or a panic.
type Ended = Result<Result<Value, HemeraError>, Box<dyn std::any::Any + Send>>;

impl Running {
    /// The outcome to send: the result, or the error object with this node's hop.
    fn outcome(self, ended: Ended, app: &str, topic: &str) -> Result<Value, Value> {
        let Running {
            method, for_errors, ..
        } = self;
        let method = || match (method, for_errors) {
            (Some(m), _) => m,
            (None, Some(p)) => method_of(p.map()),
            (None, None) => String::new(),
        };
        match ended {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(error_object(e, topic, &method(), app)),
            Err(_) => {
                let method = method();
                tracing::error!(target: LOG, topic, %method, "a handler panicked");
                let e = HemeraError::hemera("the handler failed (panic)");
                Err(error_object(e, topic, &method, app))
            }
        }
    }
}

/// The error object sent back: `e` with this node's hop appended to its `hops`.
fn error_object(e: HemeraError, topic: &str, method: &str, app: &str) -> Value {
    let hop = json!({"service": topic, "method": method, "app": app, "ts": timestamp_ms()});
    with_hop(e, hop)
}

/// The error object with `hop` appended to its `hops`.
fn with_hop(e: HemeraError, hop: Value) -> Value {
    let mut value =
        serde_json::to_value(&e).unwrap_or_else(|_| json!({"name": e.name, "message": e.message}));
    if let Some(obj) = value.as_object_mut() {
        match obj.get_mut("hops") {
            Some(Value::Array(hops)) => hops.push(hop),
            _ => {
                obj.insert("hops".into(), Value::Array(vec![hop]));
            }
        }
    }
    value
}
