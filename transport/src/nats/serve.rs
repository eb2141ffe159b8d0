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
use tokio::sync::{OwnedSemaphorePermit, TryAcquireError, mpsc};
use tokio::time::{Instant, timeout};
use tokio_util::sync::CancellationToken;

use super::batch::{self, Batch, Writer};
use super::srv::EndpointStats;
use super::subjects::token;
use super::{LOG, NODE_HEADER, NatsEngine};
use crate::answer::Answer;
use crate::discovery::NodeId;
use crate::engine::{Running, Served, Serving, Sink, malformed, response};
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

    /// Serve the calls to endpoint `name` that `sub` takes: one call a message, or (`batches`)
    /// a batch of them ([`super::batch`]).
    pub(super) async fn serve_endpoint(
        self: Arc<Self>,
        sink: Weak<dyn Sink>,
        name: String,
        mut sub: Subscriber,
        batches: bool,
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
            self.serve_message(&sink, m, &name, batches).await;
        }
        // Stop taking calls, but answer those NATS already handed to us.
        if sub.drain().await.is_ok() {
            let _ = timeout(self.node_timeout, async {
                while let Some(m) = sub.next().await {
                    self.serve_message(&sink, m, &name, batches).await;
                }
            })
            .await;
        }
    }

    async fn serve_message(
        self: &Arc<Self>,
        sink: &Weak<dyn Sink>,
        m: Message,
        name: &str,
        batches: bool,
    ) {
        if batches {
            self.serve_batch(sink, m, name).await;
        } else {
            self.serve_call(sink, m, Some(name)).await;
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
        let Some(sink) = sink.upgrade() else { return };
        match self.start_call(&sink, payload, from, endpoint) {
            Started::Ready(ready) => self.answer(ready, endpoint, reply).await,
            Started::Running(running) => self.finish(running, endpoint, reply),
        }
    }

    /// Serve a batch of calls to `endpoint` ([`super::batch`]): the answers ready at once go
    /// back together to the batch's reply subject, a late or large one on its own to its
    /// call's. A batch that does not read is answered as a malformed call on its reply subject
    /// (its first call's).
    pub(super) async fn serve_batch(
        self: &Arc<Self>,
        sink: &Weak<dyn Sink>,
        m: Message,
        endpoint: &str,
    ) {
        let Message { reply, payload, .. } = m;
        let Some(reply) = reply else { return };
        let Some(sink) = sink.upgrade() else { return };
        let calls = match Batch::calls(&payload) {
            Ok(calls) => calls,
            Err(e) => {
                tracing::debug!(target: LOG, error = %e, %endpoint, "malformed batch of calls");
                let answer = response(Err(Error::bad_request(format!("malformed call: {e}"))));
                self.send(reply, answer).await;
                return;
            }
        };
        let limit = batch::limit(self.client.max_payload());
        let mut answers = Writer::answers(calls.entries.len() * 256);
        for (tag, payload) in calls.entries {
            let alone = || Subject::from(batch::reply_subject(&calls.prefix, tag));
            match self.start_call(&sink, payload, None, Some(endpoint)) {
                Started::Ready(ready) => {
                    let answer = self.answered(ready, Some(endpoint));
                    if answer.len() > batch::ENTRY_MAX {
                        self.send(alone(), answer).await;
                        continue;
                    }
                    if answers.count() > 0
                        && (answers.len() + answer.len() + 12 > limit
                            || answers.count() >= batch::MAX_ENTRIES)
                    {
                        let full = std::mem::replace(&mut answers, Writer::answers(limit));
                        self.send(reply.clone(), full.finish()).await;
                    }
                    let _ = answers.push(tag, &answer);
                }
                Started::Running(running) => self.finish(running, Some(endpoint), alone()),
            }
        }
        if answers.count() > 0 {
            self.send(reply, answers.finish()).await;
        }
    }

    /// Admit and start one call (the handler's first poll runs here). `from` is the caller
    /// named in a header (an earlier version); otherwise the payload names it.
    fn start_call(
        self: &Arc<Self>,
        sink: &Arc<dyn Sink>,
        payload: Bytes,
        from: Option<NodeId>,
        endpoint: Option<&str>,
    ) -> Started {
        // A caller of an earlier version names itself in the header; this version in the
        // payload.
        let from = match from {
            Some(node) => Ok(node),
            None => caller::read(&payload).map(|n| n.unwrap_or(NodeId(0))),
        };
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
                Started::Ready(Ready {
                    started,
                    result,
                    _serving: serving,
                })
            }
            Served::Running(running) => Started::Running(Late {
                running,
                permit,
                serving,
                started,
            }),
        }
    }

    /// Let a call that was not ready at once run to its answer in a task of its own (bounded
    /// by the in-flight cap), the answer sent to `reply`.
    fn finish(self: &Arc<Self>, late: Late, endpoint: Option<&str>, reply: Subject) {
        let this = self.clone();
        let endpoint = endpoint.map(str::to_owned);
        tokio::spawn(async move {
            let Late {
                running,
                permit,
                serving,
                started,
            } = late;
            let result = running.finish().await;
            drop(permit);
            let answer = this.account(endpoint.as_deref(), started, result);
            this.send(reply, answer).await;
            drop(serving);
        });
    }

    /// Count a call to `endpoint` answered at once and encode its answer.
    fn answered(&self, ready: Ready, endpoint: Option<&str>) -> Bytes {
        self.account(endpoint, ready.started, ready.result)
    }

    /// Answer a call to `endpoint` answered at once.
    async fn answer(&self, ready: Ready, endpoint: Option<&str>, reply: Subject) {
        let answer = self.answered(ready, endpoint);
        self.send(reply, answer).await;
    }

    /// Count the call in its endpoint's statistics and encode its answer.
    fn account(
        &self,
        endpoint: Option<&str>,
        started: Instant,
        result: Result<Answer, Error>,
    ) -> Bytes {
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
        response(result)
    }

    /// Send `answer` (a call's, or a batch's) to `reply`.
    async fn send(&self, reply: Subject, answer: Bytes) {
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

/// What happens to a call once started: answered at once, or still running.
pub(super) enum Started {
    Ready(Ready),
    Running(Late),
}

/// A call that was not ready at once (see [`NatsEngine::finish`]).
pub(super) struct Late {
    running: Running,
    permit: Result<OwnedSemaphorePermit, TryAcquireError>,
    serving: Serving,
    started: Instant,
}

/// A call answered at once, not yet counted.
pub(super) struct Ready {
    started: Instant,
    result: Result<Answer, Error>,
    /// The call counts as served (for the drain) until its answer is sent.
    _serving: Serving,
}

/// The node that sent `m` as its header says (a caller of an earlier version), if it does.
fn sender(m: &Message) -> Option<NodeId> {
    m.headers
        .as_ref()?
        .get(NODE_HEADER)
        .map(|v| v.as_str().parse::<NodeId>().unwrap_or(NodeId(0)))
}
