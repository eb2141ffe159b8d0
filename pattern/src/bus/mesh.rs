//! The same API on the Plume mesh: a topic is the endpoint `hemera.<topic>` (its providers
//! share the load, as a NATS queue group does), and a `pubsub$` topic is the mesh event topic of
//! that name (every subscriber gets every message).
//!
//! Both ends are Plume, so the envelopes are the compact ones of [`crate::wire`]: the request
//! is decoded once, from MessagePack, straight into its parts (a raw endpoint), and the reply is
//! `{result}` or `{error}`.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use plume::ErrorKind;
use plume_transport::{CallOptions, Mesh, RawRequest};
use serde_json::Value;

use super::{LOG, Serving};
use crate::compact;
use crate::error::HemeraError;
use crate::hemera::{Hemera, Incoming, Inner};
use crate::message::Message;
use crate::outcome::MeshOutcome;
use crate::pattern::method_of;
use crate::registry::TopicOptions;
use crate::serve::Started;
use crate::walk::read_mesh_request;
use crate::wire::{AnyRequest, MeshIncoming, MeshRequest, mesh_reply};

/// The mesh endpoint (and event topic) of a Hemera topic.
pub(crate) fn endpoint(topic: &str) -> String {
    // Made on every act: two copies into one allocation (no `format!` machinery).
    const PREFIX: &str = "hemera.";
    let mut name = String::with_capacity(PREFIX.len() + topic.len());
    name.push_str(PREFIX);
    name.push_str(topic);
    name
}

/// A served topic's state, shared by its calls.
struct Provided {
    node: Weak<Inner>,
    topic: String,
    mesh: Mesh,
    /// Messages served (counted only with `maxMessages$`).
    served: AtomicU64,
    max: Option<u64>,
}

/// An act's endpoint name, made before its future and kept in it: shared from this thread's
/// last one when the topic is the same (the usual case: no allocation per act, and no UTF-8
/// check of a name written into a buffer), made once per change of topic otherwise.
struct EndpointName(Arc<str>);

impl EndpointName {
    fn of(topic: &str) -> EndpointName {
        thread_local! {
            static LAST: std::cell::RefCell<Option<Arc<str>>> = const { std::cell::RefCell::new(None) };
        }
        const PREFIX_LEN: usize = "hemera.".len();
        let made = || -> Arc<str> { Arc::from(endpoint(topic)) };
        LAST.with(|last| match last.try_borrow_mut() {
            Ok(mut last) => match &*last {
                // (every name here starts with `hemera.`: the same length and ending is the
                // same name)
                Some(name) if name.len() == PREFIX_LEN + topic.len() && name.ends_with(topic) => {
                    EndpointName(Arc::clone(name))
                }
                _ => {
                    let name = made();
                    *last = Some(Arc::clone(&name));
                    EndpointName(name)
                }
            },
            // (not reached: nothing here makes another name)
            Err(_) => EndpointName(made()),
        })
    }

    fn as_str(&self) -> &str {
        &self.0
    }
}

impl Provided {
    /// A decoded call served (up to its handler's first await), with its node and its count.
    fn start(
        &self,
        decoded: Result<Incoming, HemeraError>,
    ) -> Result<(Hemera, Started, u64), plume::Error> {
        let Some(inner) = self.node.upgrade() else {
            return Err(plume::Error::unavailable("the pattern node is closed"));
        };
        let node = Hemera { inner };
        // Counted only for a topic with `maxMessages$`.
        let n = match self.max {
            Some(_) => self.served.fetch_add(1, Ordering::Relaxed) + 1,
            None => 0,
        };
        if self.max.is_some_and(|m| n > m) {
            return Err(plume::Error::unavailable("maxMessages$ reached"));
        }
        let started = match decoded {
            Ok(incoming) => node.start_one(&self.topic, incoming, None),
            Err(e) => {
                tracing::warn!(target: LOG, topic = %self.topic, "{}", e.message);
                Started::Done(Err(serde_json::to_value(&e).unwrap_or(Value::Null)))
            }
        };
        Ok((node, started, n))
    }
}

pub(super) fn serve(mesh: &Mesh, node: &Hemera, topic: &str, options: &TopicOptions) -> Serving {
    let name = endpoint(topic);
    let weak = Arc::downgrade(&node.inner);
    if options.pubsub {
        let mut sub = mesh.subscribe(&name);
        let topic = topic.to_owned();
        let task = tokio::spawn(async move {
            while let Some(body) = sub.recv().await {
                let Some(inner) = weak.upgrade() else { break };
                let node = Hemera { inner };
                let decoded = serde_json::from_value::<MeshIncoming>(body)
                    .map_err(|e| format!("undecodable message: {e}"))
                    .and_then(|req| req.into_incoming().map_err(|e| e.message));
                let outcome = match decoded {
                    Ok(incoming) => node.serve_one(&topic, incoming, None).await,
                    Err(e) => Err(Value::from(e)),
                };
                if let Err(e) = outcome {
                    tracing::warn!(target: LOG, %topic, "pubsub message failed: {e}");
                }
            }
        });
        return Serving {
            task: Some(task),
            endpoint: None,
        };
    }
    // What each call's future needs, shared (one reference count per call).
    let provided = Arc::new(Provided {
        node: weak,
        topic: topic.to_owned(),
        mesh: mesh.clone(),
        served: AtomicU64::new(0),
        max: options.max_messages,
    });
    mesh.provide_raw(&name, Value::Null, move |req: RawRequest| {
        // Decoded before the first await: the body holds a piece of the link's read buffer.
        // The usual request is walked (its payload a share of the received bytes); serde
        // decodes any other form.
        // A version 2 request (a `bin`, `crate::compact`) is answered in version 2.
        let bytes = req.body.msgpack_bytes();
        let v2 = bytes.as_deref().is_some_and(compact::is_compact);
        let walked = match &bytes {
            Some(b) if v2 => Some(compact::read_request(b)),
            Some(b) => read_mesh_request(b).map(Ok),
            None => None,
        };
        let decoded = match walked {
            Some(incoming) => incoming,
            None => req
                .body
                .decode::<AnyRequest>()
                .map_err(|e| HemeraError::parse(format!("undecodable request: {}", e.message())))
                .and_then(AnyRequest::into_incoming),
        };
        // Matched and handed to its handler here, on the link's reader: the future kept per
        // call holds only the handler's future and what an error needs.
        let served = provided.start(decoded);
        let p = Arc::clone(&provided);
        async move {
            let (node, started, n) = served?;
            let topic = &*p.topic;
            let outcome = started.finish(node.name(), topic).await;
            if p.max.is_some_and(|m| n == m) {
                node.topics().remove(topic);
                p.mesh.withdraw(&endpoint(topic));
            }
            mesh_reply(&outcome, v2)
        }
    });
    Serving {
        task: None,
        endpoint: Some(name),
    }
}

/// Send an act and wait for its outcome.
///
/// A plain function that takes the message apart before the future is made: the future (kept
/// per act in flight, moved by `join_all` into its task) holds the request and the mesh
/// call, not the whole [`Message`], and no copy of its arguments (an `async fn` keeps each of
/// its arguments beside the futures it awaits).
// (inlined: its future is then made where it is kept, not moved there)
#[inline(always)]
pub(super) fn request<'a>(
    mesh: &'a Mesh,
    msg: Message<'a>,
    app: &'a str,
) -> impl Future<Output = Result<Value, HemeraError>> + Send + 'a {
    let (name, timeout, message) = (EndpointName::of(msg.topic), msg.timeout, msg.message());
    let body = MeshRequest::of(msg);
    async move {
        let options = CallOptions {
            timeout: Some(timeout),
            idempotent: false,
        };
        match mesh
            .to(name.as_str())
            .options(options)
            .send_decoded::<MeshOutcome, _>(&body)
            .await
        {
            Ok(reply) => reply.into_result(),
            // No provider within the deadline, or one that did not answer in time: Hemera's
            // caller sees a timeout in both cases.
            Err(e) if matches!(e.kind(), ErrorKind::Timeout | ErrorKind::Unavailable) => {
                Err(HemeraError::timeout(&method_of(message), app)
                    .with("cause", Value::from(e.message())))
            }
            // The provider's node no longer serves the topic (removed under the call).
            Err(e) if e.kind() == ErrorKind::NotFound => {
                Err(HemeraError::pattern_not_found(&method_of(message), app)
                    .with("isServer", Value::Bool(false))
                    .with("cause", Value::from(e.message())))
            }
            Err(e) => Err(HemeraError::from(e)),
        }
    }
}

/// Fan out to the `pubsub$` subscribers, and hand one copy to a provider of the topic's
/// endpoint when there is one (as a NATS queue group gets one copy); nobody waits for it.
pub(super) fn publish(mesh: &Mesh, msg: &Message<'_>) {
    let name = endpoint(msg.topic);
    let Ok(body) = serde_json::to_value(MeshRequest::of_ref(msg)) else {
        tracing::warn!(target: LOG, topic = %msg.topic, "pubsub message does not encode");
        return;
    };
    mesh.publish(&name, body.clone());
    if !mesh.providers(&name).is_empty() {
        let mesh = mesh.clone();
        tokio::spawn(async move {
            if let Err(e) = mesh.to(&name).send(&body).await {
                tracing::debug!(target: LOG, %name, "pubsub call: {e}");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::{EndpointName, endpoint};
    use proptest::prelude::*;

    proptest! {
        /// The shared name is the endpoint's name, whatever topic came before.
        #[test]
        fn endpoint_names_are_the_endpoints(topics in proptest::collection::vec(".{0,40}", 1..6)) {
            for topic in &topics {
                let name = EndpointName::of(topic);
                prop_assert_eq!(name.as_str(), endpoint(topic));
            }
        }
    }
}
