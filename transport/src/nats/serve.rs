//! Serving over NATS: calls to this node's endpoints (one queue group each) and to its own
//! subjects, events to and from its topics.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use async_nats::client::traits::Publisher as _;
use async_nats::message::OutboundMessage;
use async_nats::{Message, Subject, Subscriber};
use bytes::Bytes;
use futures::StreamExt;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::time::{Instant, timeout};
use tokio_util::sync::CancellationToken;

use super::srv::EndpointStats;
use super::subjects::token;
use super::{LOG, NODE_HEADER, NatsEngine};
use crate::answer::Answer;
use crate::discovery::NodeId;
use crate::engine::{Served, Sink, malformed, response};
use crate::protocol::{FrameError, Kind, caller, encode_payload};
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
        // One wait for the stop, made once (not a new registration per call), polled first.
        let stopped = stop.cancelled();
        tokio::pin!(stopped);
        loop {
            let m = tokio::select! {
                biased;
                () = &mut stopped => break,
                m = sub.next() => m,
            };
            let Some(m) = m else { return };
            self.serve_call(&sink, m, Some(&name)).await;
        }
        // Stop taking calls, but answer those NATS already handed to us.
        if sub.drain().await.is_ok() {
            let _ = timeout(self.node_timeout, async {
                while let Some(m) = sub.next().await {
                    self.serve_call(&sink, m, Some(&name)).await;
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
                "call" => self.serve_call(&sink, m, None).await,
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

    /// Serve one call (to `endpoint`, or to this node's own subject when `None`). The handler's
    /// first poll runs here (in [`Sink::serve`]): a handler that answers at once is answered
    /// from this task, with no task of its own, so the answers to the calls of one read from
    /// NATS leave together; a handler that is not ready continues in its own task, bounded by
    /// the in-flight cap.
    pub(super) async fn serve_call(
        self: &Arc<Self>,
        sink: &Weak<dyn Sink>,
        m: Message,
        endpoint: Option<&str>,
    ) {
        let from = sender(&m);
        let Message { reply, payload, .. } = m;
        let Some(reply) = reply else { return };
        // A caller of an earlier version names itself in the header; this version in the
        // payload.
        let from = match from {
            Some(node) => Ok(node),
            None => caller::read(&payload).map(|n| n.unwrap_or(NodeId(0))),
        };
        let Some(sink) = sink.upgrade() else { return };
        let serving = sink.activity().serving();
        crate::metrics::bytes_received(payload.len());
        let started = Instant::now();
        let permit = self.permits.clone().try_acquire_owned();
        let mut admit = |name: &str, _provided: bool| match endpoint {
            Some(e) if e != name => Err(Error::bad_request("the call names another endpoint")),
            _ => Ok(()),
        };
        let served = match (&permit, from) {
            (Err(_), _) => Served::Ready(Err(Error::too_many_requests(format!(
                "node {} is serving too many calls",
                self.node
            )))),
            (Ok(_), Err(reason)) => Served::Ready(Err(malformed(&FrameError::Payload {
                kind: Kind::Request,
                reason,
            }))),
            (Ok(_), Ok(from)) => match sink.serve(payload, from, &mut admit) {
                Err(e) => Served::Ready(Err(malformed(&e))),
                Ok(served) => served,
            },
        };
        match served {
            Served::Ready(result) => {
                drop(permit);
                self.answer(endpoint, started, reply, result).await;
                drop(serving);
            }
            Served::Running(running) => {
                let this = self.clone();
                let endpoint = endpoint.map(str::to_owned);
                tokio::spawn(async move {
                    let result = running.finish().await;
                    drop(permit);
                    this.answer(endpoint.as_deref(), started, reply, result)
                        .await;
                    drop(serving);
                });
            }
        }
    }

    /// Count the call in its endpoint's statistics and send its answer to `reply`.
    async fn answer(
        &self,
        endpoint: Option<&str>,
        started: Instant,
        reply: Subject,
        result: Result<Answer, Error>,
    ) {
        self.served.fetch_add(1, Ordering::Relaxed);
        if let Some(name) = endpoint {
            let count = |s: &mut EndpointStats| {
                s.requests += 1;
                s.nanos += started.elapsed().as_nanos();
                if let Err(e) = &result {
                    s.errors += 1;
                    s.last_error = e.to_string();
                }
            };
            let mut stats = lock(&self.stats);
            // Keyed by this node's endpoints (bounded); one lookup per call, and the name is
            // copied only the first time.
            match stats.get_mut(name) {
                Some(s) => count(s),
                None => {
                    let mut s = EndpointStats::default();
                    count(&mut s);
                    stats.insert(name.to_owned(), s);
                }
            }
        }
        let answer = response(result);
        crate::metrics::bytes_sent(answer.len());
        // As one message: the reply subject is moved to the connection task, not copied.
        let answer = OutboundMessage {
            subject: reply,
            reply: None,
            payload: answer,
            headers: None,
        };
        if let Err(e) = self.client.publish_message(answer).await {
            tracing::debug!(target: LOG, error = %e, "reply not sent");
        }
    }
}

/// The node that sent `m` as its header says (a caller of an earlier version), if it does.
fn sender(m: &Message) -> Option<NodeId> {
    m.headers
        .as_ref()?
        .get(NODE_HEADER)
        .map(|v| v.as_str().parse::<NodeId>().unwrap_or(NodeId(0)))
}
