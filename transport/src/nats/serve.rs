//! Serving over NATS: calls to this node's endpoints (one queue group each) and to its own
//! subjects, events to and from its topics.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use async_nats::{Message, Subscriber};
use bytes::Bytes;
use futures::StreamExt;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::time::{Instant, timeout};
use tokio_util::sync::CancellationToken;

use super::subjects::token;
use super::{LOG, NODE_HEADER, NatsEngine};
use crate::discovery::NodeId;
use crate::engine::{Sink, malformed, response};
use crate::protocol::encode_payload;
use crate::sync::lock;
use plume::Error;
use plume::trace::{TRACEPARENT, TraceContext};

impl NatsEngine {
    pub(super) async fn publisher(self: Arc<Self>, mut rx: mpsc::Receiver<super::QueuedEvent>) {
        loop {
            let next = tokio::select! {
                () = self.stop.cancelled() => return,
                n = rx.recv() => n,
            };
            let Some((topic, data, trace)) = next else {
                return;
            };
            let subject = self.subject(&["evt", &token(&topic)]);
            let body = Bytes::from(serde_json::to_vec(&data).unwrap_or_default());
            crate::metrics::bytes_sent(body.len());
            let mut headers = self.headers();
            if let Some(trace) = trace {
                headers.insert(TRACEPARENT, trace.traceparent().as_str());
            }
            if let Err(e) = self
                .client
                .publish_with_headers(subject, headers, body)
                .await
            {
                tracing::debug!(target: LOG, error = %e, %topic, "event not published");
            }
        }
    }

    pub(super) async fn deliver(
        self: Arc<Self>,
        sink: Weak<dyn Sink>,
        topic: String,
        mut sub: Subscriber,
        stop: CancellationToken,
    ) {
        let own = self.node.to_string();
        loop {
            let m = tokio::select! {
                () = stop.cancelled() => break,
                () = self.stop.cancelled() => break,
                m = sub.next() => m,
            };
            let Some(m) = m else { break };
            let from = m
                .headers
                .as_ref()
                .and_then(|h| h.get(NODE_HEADER))
                .map(|v| v.as_str());
            if from == Some(own.as_str()) {
                continue; // Delivered locally when published.
            }
            // Every node names itself on what it publishes; who may publish what is the
            // subscriber's business (the distribution plugin checks the providers).
            let Some(from) = from.and_then(|f| f.parse::<NodeId>().ok()) else {
                tracing::debug!(target: LOG, %topic, "ignoring an event that names no node");
                continue;
            };
            crate::metrics::bytes_received(m.payload.len());
            let Ok(data) = serde_json::from_slice::<Value>(&m.payload) else {
                tracing::debug!(target: LOG, %topic, "ignoring a malformed event");
                continue;
            };
            let trace = m
                .headers
                .as_ref()
                .and_then(|h| h.get(TRACEPARENT))
                .and_then(|v| TraceContext::parse(v.as_str()));
            let Some(sink) = sink.upgrade() else { break };
            sink.deliver(from, &topic, data, trace);
        }
        let _ = sub.unsubscribe().await;
    }

    pub(super) async fn serve_endpoint(
        self: Arc<Self>,
        sink: Weak<dyn Sink>,
        name: String,
        mut sub: Subscriber,
        stop: CancellationToken,
    ) {
        loop {
            let m = tokio::select! {
                () = stop.cancelled() => break,
                m = sub.next() => m,
            };
            let Some(m) = m else { return };
            self.clone().serve_call(sink.clone(), m, Some(name.clone()));
        }
        // Stop taking calls, but answer those NATS already handed to us.
        if sub.drain().await.is_ok() {
            let _ = timeout(self.node_timeout, async {
                while let Some(m) = sub.next().await {
                    self.clone().serve_call(sink.clone(), m, Some(name.clone()));
                }
            })
            .await;
        }
    }

    pub(super) async fn serve_own(self: Arc<Self>, sink: Weak<dyn Sink>, mut sub: Subscriber) {
        loop {
            let m = tokio::select! {
                () = self.stop.cancelled() => return,
                m = sub.next() => m,
            };
            let Some(m) = m else { return };
            let what = m.subject.rsplit('.').next().unwrap_or_default().to_owned();
            match what.as_str() {
                "call" => self.clone().serve_call(sink.clone(), m, None),
                "ping" => {
                    if let Some(reply) = m.reply {
                        let _ = self.client.publish(reply, Bytes::new()).await;
                    }
                }
                "table" => {
                    let Some(reply) = m.reply else { continue };
                    let Some(sink) = sink.upgrade() else { return };
                    let mut snap = Bytes::new();
                    sink.with_table(&mut |s| snap = encode_payload(&s));
                    let headers = self.announce_headers("snapshot", self.node, &snap);
                    let _ = self.client.publish_with_headers(reply, headers, snap).await;
                }
                _ => {}
            }
        }
    }

    /// Serve one call in its own task, bounded by the in-flight cap.
    pub(super) fn serve_call(
        self: Arc<Self>,
        sink: Weak<dyn Sink>,
        m: Message,
        endpoint: Option<String>,
    ) {
        let Some(reply) = m.reply.clone() else { return };
        let Some(sink) = sink.upgrade() else { return };
        let permit = self.permits.clone().try_acquire_owned();
        let serving = sink.activity().serving();
        crate::metrics::bytes_received(m.payload.len());
        tokio::spawn(async move {
            let started = Instant::now();
            let mut admit = |name: &str, _provided: bool| match &endpoint {
                Some(e) if e != name => Err(Error::bad_request("the call names another endpoint")),
                _ => Ok(()),
            };
            let result = match permit {
                Err(_) => Err(Error::too_many_requests(format!(
                    "node {} is serving too many calls",
                    self.node
                ))),
                Ok(_permit) => match sink.serve(m.payload.clone(), sender(&m), &mut admit) {
                    Err(e) => Err(malformed(&e)),
                    Ok(served) => served.answer().await,
                },
            };
            self.served.fetch_add(1, Ordering::Relaxed);
            if let Some(name) = &endpoint {
                let mut stats = lock(&self.stats);
                let s = stats.entry(name.clone()).or_default();
                s.requests += 1;
                s.nanos += started.elapsed().as_nanos();
                if let Err(e) = &result {
                    s.errors += 1;
                    s.last_error = e.to_string();
                }
            }
            let answer = response(result);
            crate::metrics::bytes_sent(answer.len());
            if let Err(e) = self.client.publish(reply, answer).await {
                tracing::debug!(target: LOG, error = %e, "reply not sent");
            }
            drop(serving);
        });
    }
}

/// The node that sent `m` (its header), or node 0 when it does not say.
fn sender(m: &Message) -> NodeId {
    m.headers
        .as_ref()
        .and_then(|h| h.get(NODE_HEADER))
        .and_then(|v| v.as_str().parse::<NodeId>().ok())
        .unwrap_or(NodeId(0))
}
