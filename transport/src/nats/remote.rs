//! Calls and pings through NATS: a [`Remote`] per provider node.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use tokio::time::Instant;

use super::inbox::InboxError;
use super::{LOG, NatsEngine};
use crate::discovery::NodeId;
use crate::engine::{Call, CallError, Counted, Remote};
use crate::protocol::caller;
use plume::Error;

impl NatsEngine {
    /// Send `call` through the queue group of its endpoint, or to `node`'s own subject when
    /// given.
    pub(super) async fn request(
        &self,
        call: Call<'_>,
        node: Option<NodeId>,
    ) -> Result<Bytes, CallError> {
        let name = call.name;
        let left = call.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(CallError::Timeout);
        }
        let (subject, batch) = match node {
            Some(n) => (self.node_subject(n, "call").into(), None),
            None => {
                let (subject, batch) = self.call_subject(name);
                (subject, Some(batch))
            }
        };
        // The call names this node in its payload (a plain NATS message, no header block to
        // write, route and parse); in a header only when the payload is not in the usual form.
        let (headers, payload) = match caller::stamp(call.payload, self.node) {
            Ok(payload) => (None, payload),
            Err(payload) => (Some(self.headers()), payload),
        };
        crate::metrics::bytes_sent(payload.len());
        // An idempotent call is sent again when a provider of the endpoint leaves meanwhile: it
        // may have been the one holding the call (`NatsInbox::lose`, from the table loop).
        let losable = call.idempotent && node.is_none();
        let sent = self
            .inbox
            .request_batchable(subject, batch, headers, payload, call.deadline, losable)
            .await;
        match sent {
            Ok(reply) => {
                crate::metrics::bytes_received(reply.payload.len());
                Ok(reply.payload)
            }
            Err(e) => Err(match e {
                InboxError::NoResponders => CallError::NoResponders,
                InboxError::TimedOut => CallError::Timeout,
                InboxError::Full(_) => CallError::Busy,
                InboxError::Lost => CallError::Lost,
                InboxError::Publish(e) if e.kind() == async_nats::PublishErrorKind::Send => {
                    CallError::NotSent
                }
                InboxError::Publish(e) => CallError::Refused(Box::new(e)),
                e @ InboxError::Closed(_) => {
                    tracing::debug!(target: LOG, error = &e as &dyn std::error::Error, %name, "NATS request failed");
                    CallError::Lost
                }
            }),
        }
    }

    /// Round trip to `node`.
    pub(crate) async fn ping(&self, node: NodeId, deadline: Instant) -> Result<Duration, Error> {
        let started = Instant::now();
        let left = deadline.saturating_duration_since(started);
        let request = async_nats::Request::new()
            .payload(Bytes::new())
            .timeout(Some(left));
        match self
            .client
            .send_request(self.node_subject(node, "ping"), request)
            .await
        {
            Ok(_) => Ok(started.elapsed()),
            Err(e) => match e.kind() {
                async_nats::RequestErrorKind::TimedOut => {
                    Err(Error::timeout(format!("node {node} did not answer a ping")))
                }
                _ => Err(Error::unavailable(format!("no route to node {node}: {e}"))),
            },
        }
    }
}

/// A node reached through NATS: its endpoints' queue groups (NATS picks the replica), or its
/// own subject (`direct`).
pub(super) struct Provider {
    pub(super) engine: Arc<NatsEngine>,
    pub(super) node: NodeId,
    pub(super) pending: AtomicUsize,
    pub(super) direct: bool,
}

impl Remote for Provider {
    fn node(&self) -> NodeId {
        self.node
    }

    fn is_live(&self) -> bool {
        true
    }

    fn pending(&self) -> usize {
        self.pending.load(Ordering::Relaxed)
    }

    fn call<'a>(&'a self, call: Call<'a>) -> BoxFuture<'a, Result<Bytes, CallError>> {
        Box::pin(async move {
            let _pending = Counted::new(&self.pending);
            let to = self.direct.then_some(self.node);
            self.engine.request(call, to).await
        })
    }

    fn reaches_the_node(&self) -> bool {
        self.direct
    }

    fn ping(&self, deadline: Instant) -> BoxFuture<'_, Result<Duration, Error>> {
        Box::pin(self.engine.ping(self.node, deadline))
    }
}
