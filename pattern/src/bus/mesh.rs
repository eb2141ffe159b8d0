//! The same envelopes on the Plume mesh: a topic is the endpoint `hemera.<topic>` (its
//! providers share the load, as a NATS queue group does), and a `pubsub$` topic is the mesh
//! event topic of that name (every subscriber gets every message).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use plume::ErrorKind;
use plume_transport::{CallOptions, Mesh, Request};
use serde_json::Value;

use super::{LOG, Serving, undecodable_reply};
use crate::envelope::{RequestEnvelope, ResponseEnvelope, request_from_value, response_from_value};
use crate::error::HemeraError;
use crate::hemera::{Hemera, Inner};
use crate::registry::TopicOptions;

/// The mesh endpoint (and event topic) of a Hemera topic.
pub(crate) fn endpoint(topic: &str) -> String {
    format!("hemera.{topic}")
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
                let response = answer(&node, &topic, body).await;
                if let Some(e) = response.error {
                    tracing::warn!(target: LOG, %topic, "pubsub message failed: {e}");
                }
            }
        });
        return Serving {
            task: Some(task),
            endpoint: None,
        };
    }
    let served = Arc::new(AtomicU64::new(0));
    let max = options.max_messages;
    let (topic_owned, mesh_owned) = (topic.to_owned(), mesh.clone());
    mesh.respond(&name, move |req: Request| {
        let (weak, topic, mesh, served): (Weak<Inner>, _, _, _) = (
            weak.clone(),
            topic_owned.clone(),
            mesh_owned.clone(),
            Arc::clone(&served),
        );
        async move {
            let Some(inner) = weak.upgrade() else {
                return Err(plume::Error::unavailable("the pattern node is closed"));
            };
            let node = Hemera { inner };
            let n = served.fetch_add(1, Ordering::Relaxed) + 1;
            if max.is_some_and(|m| n > m) {
                return Err(plume::Error::unavailable("maxMessages$ reached"));
            }
            let response = answer(&node, &topic, req.body).await;
            if max.is_some_and(|m| n == m) {
                node.topics().remove(&topic);
                mesh.withdraw(&endpoint(&topic));
            }
            Ok(response.into_value())
        }
    });
    Serving {
        task: None,
        endpoint: Some(name),
    }
}

async fn answer(node: &Hemera, topic: &str, body: Value) -> ResponseEnvelope {
    match request_from_value(body) {
        Ok(env) => node.serve_one(topic, env, None).await,
        Err(e) => {
            tracing::warn!(target: LOG, topic, "undecodable request: {}", e.message);
            undecodable_reply(e)
        }
    }
}

pub(super) async fn request(
    mesh: &Mesh,
    topic: &str,
    env: &RequestEnvelope,
    timeout: Duration,
    method: &str,
    app: &str,
) -> Result<ResponseEnvelope, HemeraError> {
    let options = CallOptions {
        timeout: Some(timeout),
        idempotent: false,
    };
    match mesh.to(&endpoint(topic)).options(options).send(env).await {
        Ok(reply) => response_from_value(reply),
        // No provider within the deadline, or one that did not answer in time: Hemera's
        // caller sees a timeout in both cases.
        Err(e) if matches!(e.kind(), ErrorKind::Timeout | ErrorKind::Unavailable) => {
            Err(HemeraError::timeout(method, app).with("cause", Value::from(e.message())))
        }
        // The provider's node no longer serves the topic (removed under the call).
        Err(e) if e.kind() == ErrorKind::NotFound => {
            Err(HemeraError::pattern_not_found(method, app)
                .with("isServer", Value::Bool(false))
                .with("cause", Value::from(e.message())))
        }
        Err(e) => Err(HemeraError::from(e)),
    }
}

/// Fan out to the `pubsub$` subscribers, and hand one copy to a provider of the topic's
/// endpoint when there is one (as a NATS queue group gets one copy); nobody waits for it.
pub(super) fn publish(mesh: &Mesh, topic: &str, env: &RequestEnvelope) {
    let name = endpoint(topic);
    let Ok(body) = serde_json::to_value(env) else {
        tracing::warn!(target: LOG, topic, "pubsub message does not encode");
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
