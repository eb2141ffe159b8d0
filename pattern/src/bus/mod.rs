//! What carries the envelopes: a NATS connection (Hemera's wire: subject = topic, queue group
//! `queue.<topic>`) or a Plume [`Mesh`](plume_transport::Mesh) (endpoint `hemera.<topic>`).
//! Both serve a topic, send a request and wait for its reply, and publish.

mod mesh;
mod nats;

use futures::future::{BoxFuture, Either};
use plume_transport::{Mesh, NatsInbox};
use serde_json::Value;
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Mutex, MutexGuard, PoisonError};
use tokio::task::JoinHandle;

use crate::error::HemeraError;
use crate::hemera::Hemera;
use crate::message::{Message, Replies};
use crate::registry::TopicOptions;

pub(crate) use nats::ReplyNext;

const LOG: &str = "plume::pattern";
/// Acts on NATS waiting for their replies, at most (beyond: refused at once).
const MAX_ACTS_IN_FLIGHT: usize = 1 << 16;

/// The carrier of one node.
pub(crate) struct Bus {
    kind: Kind,
    /// The subscription (or endpoint) of each served topic.
    serving: Mutex<HashMap<String, Serving>>,
}

enum Kind {
    /// The connection, and the inbox its acts' replies come through.
    Nats(async_nats::Client, Box<NatsInbox>),
    Mesh(Mesh),
}

/// A served topic: its receiving task (aborted when dropped) and, on the mesh, its endpoint.
struct Serving {
    task: Option<JoinHandle<()>>,
    endpoint: Option<String>,
}

impl Drop for Serving {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

impl Bus {
    pub(crate) fn nats(client: async_nats::Client) -> Bus {
        Bus {
            kind: Kind::Nats(
                client.clone(),
                Box::new(NatsInbox::new(client, MAX_ACTS_IN_FLIGHT)),
            ),
            serving: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn mesh(mesh: Mesh) -> Bus {
        Bus {
            kind: Kind::Mesh(mesh),
            serving: Mutex::new(HashMap::new()),
        }
    }

    fn serving(&self) -> MutexGuard<'_, HashMap<String, Serving>> {
        self.serving.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Start receiving `topic`'s messages for `node`.
    pub(crate) async fn serve(
        &self,
        node: &Hemera,
        topic: &str,
        options: &TopicOptions,
    ) -> Result<(), HemeraError> {
        let serving = match &self.kind {
            Kind::Nats(client, _) => nats::serve(client, node, topic, options).await?,
            Kind::Mesh(m) => mesh::serve(m, node, topic, options),
        };
        self.serving().insert(topic.to_owned(), serving);
        Ok(())
    }

    /// Stop receiving `topic`.
    pub(crate) async fn unserve(&self, topic: &str) {
        let serving = self.serving().remove(topic);
        if let (
            Kind::Mesh(m),
            Some(Serving {
                endpoint: Some(name),
                ..
            }),
        ) = (&self.kind, &serving)
        {
            m.withdraw(name);
        }
        drop(serving);
        if let Kind::Nats(client, _) = &self.kind
            && let Err(e) = nats::round_trip(client).await
        {
            tracing::warn!(target: LOG, topic, "unsubscribe not confirmed: {}", e.message);
        }
    }

    /// Flush what is queued.
    pub(crate) async fn close(&self) {
        if let Kind::Nats(client, _) = &self.kind
            && let Err(e) = client.flush().await
        {
            tracing::warn!(target: LOG, "NATS flush at close failed: {e}");
        }
    }

    /// Send an act and wait (until its timeout) for the reply's outcome.
    ///
    /// Not an `async fn` (which would keep `msg` in its future beside the bus's): the mesh
    /// takes the message apart before its future is made (`mesh::request`), and the NATS
    /// request is boxed, so that an act's future on the mesh (kept per act in flight) is not
    /// as large as the NATS client's.
    ///
    /// The boxed side is for the caller's other outcomes too (`Hemera::act_in`): an act's
    /// future is this one, not wrapped again.
    #[inline(always)]
    pub(crate) fn request<'a>(
        &'a self,
        msg: Message<'a>,
        app: &'a str,
    ) -> Either<
        BoxFuture<'a, Result<Value, HemeraError>>,
        impl Future<Output = Result<Value, HemeraError>> + Send + 'a,
    > {
        match &self.kind {
            Kind::Nats(_, inbox) => {
                Either::Left(Box::pin(
                    async move { nats::request(inbox, &msg, app).await },
                ))
            }
            Kind::Mesh(m) => Either::Right(mesh::request(m, msg, app)),
        }
    }

    /// Send an act and collect several replies (NATS only).
    pub(crate) async fn request_many(
        &self,
        msg: &Message<'_>,
        replies: Replies,
        app: &str,
    ) -> Result<Vec<Result<Value, HemeraError>>, HemeraError> {
        match &self.kind {
            Kind::Nats(client, _) => nats::request_many(client, msg, replies, app).await,
            Kind::Mesh(_) => Err(HemeraError::hemera(
                "`maxMessages$`/`expectedMessages$` need the NATS bus: a mesh call has one reply",
            )),
        }
    }

    /// Send a streaming handler's intermediate reply (NATS only: a mesh call has one reply).
    pub(crate) async fn reply_next(
        &self,
        next: &ReplyNext,
        value: Value,
    ) -> Result<(), HemeraError> {
        match &self.kind {
            Kind::Nats(client, _) => nats::reply_next(client, next, value).await,
            Kind::Mesh(_) => Err(HemeraError::hemera(
                "reply_next needs a NATS message that asks for a reply",
            )),
        }
    }

    /// Publish a `pubsub$` message (no reply).
    pub(crate) async fn publish(&self, msg: &Message<'_>) -> Result<(), HemeraError> {
        match &self.kind {
            Kind::Nats(client, _) => Box::pin(nats::publish(client, msg)).await,
            Kind::Mesh(m) => {
                mesh::publish(m, msg);
                Ok(())
            }
        }
    }
}

impl Drop for Bus {
    /// A node dropped without `close` stops serving: its tasks end with their handles, and its
    /// mesh endpoints are withdrawn.
    fn drop(&mut self) {
        if let Kind::Mesh(m) = &self.kind {
            for serving in self.serving().values() {
                if let Some(name) = &serving.endpoint {
                    m.withdraw(name);
                }
            }
        }
    }
}
