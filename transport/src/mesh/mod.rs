//! The mesh: one node's handle, its builder, and the public types of calls and the table.
//!
//! The work is split by what it does: [`table`] keeps routes and topics (and is the
//! [`Sink`](crate::engine::Sink) engines report to), [`balance`] picks a provider, [`call`]
//! waits, retries and keeps deadlines, [`request`] is the call builder (every form of call, the
//! broadcast included), [`ring`] says who owns a partition key, [`serve`] answers calls from peers, [`drain`] stops the
//! node. Which engine carries the node ([`tcp`](crate::tcp), [`nats`](crate::nats),
//! [`memory`](crate::memory)) is decided once, by the [`MeshBuilder`](crate::MeshBuilder); the
//! mesh sees only the [`Engine`](crate::engine::Engine) trait.

mod balance;
mod call;
mod drain;
mod handler;
mod info;
mod reply;
mod reply_walk;
mod request;
mod ring;
mod serve;
mod table;
#[cfg(test)]
mod tests;

use std::fmt;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use futures::StreamExt;
use serde_json::Value;
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

use crate::discovery::{NodeId, PeerInfo};
use crate::engine::{Activity, Engine, Settings};
use crate::protocol::PROTOCOL_VERSION;
use crate::sync::lock;
use plume::trace::TraceContext;

pub use crate::engine::Balance;
pub use crate::error::MeshError;
pub use handler::{Handler, RawBody, RawHandler, RawRequest, Request};
pub use info::{LinkInfo, MAX_REPORTED_LINKS, NODE_INFO, NodeInfo};
pub use request::{CallBuilder, Reply};
pub use ring::partition_owner;
use table::LocalState;

const LOG: &str = "plume::mesh";
/// Capacity of each watcher's broadcast buffer.
const WATCH_CAPACITY: usize = 1024;

/// Options of one call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CallOptions {
    /// How long the call may take in all (waiting for a provider included); the mesh default
    /// when `None`.
    pub timeout: Option<Duration>,
    /// The call may run twice: when a link dies with it in flight, it is retried on another
    /// provider within the deadline.
    pub idempotent: bool,
}

/// One provider of a name.
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderInfo {
    /// The node.
    pub node: NodeId,
    /// Its key.
    pub key: String,
    /// The descriptor it published.
    pub descriptor: Value,
}

/// A change in the mesh-wide service table.
#[derive(Debug, Clone, PartialEq)]
pub enum TableEvent {
    /// `node` now provides `name` (or changed its descriptor).
    Added {
        /// Endpoint name.
        name: String,
        /// Provider.
        node: NodeId,
        /// Provider key.
        key: String,
        /// Descriptor.
        descriptor: Value,
    },
    /// `node` no longer provides `name`.
    Removed {
        /// Endpoint name.
        name: String,
        /// Former provider.
        node: NodeId,
        /// Whether the node withdrew it (or drains), or the node is gone.
        reason: crate::engine::Removal,
    },
}

pub(crate) struct Inner {
    pub(crate) node: NodeId,
    pub(crate) environment: String,
    pub(crate) key: String,
    pub(crate) cfg: Settings,
    /// Cancelled once the node has stopped.
    stopped: CancellationToken,
    local_addr: SocketAddr,
    local: Mutex<LocalState>,
    routes: RwLock<table::Routes>,
    table_changed: watch::Sender<u64>,
    table_events: broadcast::Sender<TableEvent>,
    activity: Arc<Activity>,
    rr: AtomicUsize,
    local_pending: AtomicUsize,
    waiting: AtomicUsize,
    engine: Arc<dyn Engine>,
    /// What the node-info endpoint reports ([`info`]).
    facts: info::Facts,
}

impl fmt::Debug for Inner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mesh")
            .field("node", &self.node)
            .field("environment", &self.environment)
            .field("key", &self.key)
            .field("addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

/// A node of the Plume mesh. Cheap to clone; every clone is the same node.
///
/// Background tasks keep the node alive until [`Mesh::shutdown`].
#[derive(Debug, Clone)]
pub struct Mesh {
    inner: Arc<Inner>,
}

impl Mesh {
    /// A node carried by `engine`, which it starts.
    pub(crate) fn from_engine(
        node: NodeId,
        environment: String,
        key: String,
        cfg: Settings,
        local_addr: SocketAddr,
        engine: Arc<dyn Engine>,
    ) -> Mesh {
        let inner = Arc::new(Inner {
            node,
            environment,
            key,
            cfg,
            stopped: CancellationToken::new(),
            local_addr,
            local: Mutex::new(LocalState::default()),
            routes: RwLock::new(table::Routes::default()),
            table_changed: watch::Sender::new(0),
            table_events: broadcast::Sender::new(WATCH_CAPACITY),
            activity: Arc::new(Activity::default()),
            rr: AtomicUsize::new(0),
            local_pending: AtomicUsize::new(0),
            waiting: AtomicUsize::new(0),
            engine,
            facts: info::Facts::default(),
        });
        info::install(&inner);
        let sink: Arc<dyn crate::engine::Sink> = inner.clone();
        inner.engine.clone().start(sink);
        Mesh { inner }
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.inner.node
    }

    /// The address peers dial.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr
    }

    /// This node's environment.
    pub fn environment(&self) -> &str {
        &self.inner.environment
    }

    /// This node's key.
    pub fn key(&self) -> &str {
        &self.inner.key
    }

    /// The `PeerInfo` a static-peers channel should announce for this node.
    pub fn peer_info(&self) -> PeerInfo {
        let version = lock(&self.inner.local).version;
        PeerInfo {
            node: self.inner.node,
            key: self.inner.key.clone(),
            addr: self.inner.local_addr,
            table_version: version,
            protocol: PROTOCOL_VERSION,
        }
    }

    /// Whether this node runs on NATS rather than peer links.
    pub fn on_nats(&self) -> bool {
        self.inner.engine.kind() == crate::engine::EngineKind::Nats
    }

    /// The nodes this node has a link with (none on NATS).
    pub fn linked_peers(&self) -> Vec<NodeId> {
        self.inner.engine.peers()
    }

    /// cote-style: provide `kind` with a null descriptor (call it with
    /// [`to(kind).send(&payload)`](Self::to)).
    pub fn respond(&self, kind: &str, handler: impl Handler) {
        self.provide(kind, Value::Null, handler);
    }
}

/// A stream of [`TableEvent`]s from [`Mesh::watch`].
pub struct TableWatch {
    stream: Pin<Box<dyn Stream<Item = TableEvent> + Send>>,
}

impl fmt::Debug for TableWatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TableWatch").finish_non_exhaustive()
    }
}

impl TableWatch {
    /// The next event (None once the mesh is gone).
    pub async fn recv(&mut self) -> Option<TableEvent> {
        self.stream.next().await
    }
}

impl Stream for TableWatch {
    type Item = TableEvent;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<TableEvent>> {
        self.stream.as_mut().poll_next(cx)
    }
}

/// Events of one topic, from [`Mesh::subscribe`]. Dropping it unsubscribes.
///
/// Each subscription queues up to 4096 events (taking memory only for those waiting); while its
/// queue is full, new events are lost for it (a warning is logged, `lagged` in the metrics), and
/// it continues with the events after.
pub struct Subscription {
    topic: String,
    inner: Arc<Inner>,
    stream: Pin<Box<dyn Stream<Item = Delivered> + Send>>,
}

/// An event as a subscription receives it: the node that published it, its data, and the trace
/// context of the call that published it, when it ran in one.
pub(crate) type Delivered = (NodeId, Value, Option<TraceContext>);

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl Subscription {
    /// The next event.
    pub async fn recv(&mut self) -> Option<Value> {
        self.stream.next().await.map(|(_, data, _)| data)
    }

    /// The next event, with the node that published it: the peer whose link it came on (on
    /// NATS, the node its message names), or this node. What a node may publish is the
    /// subscriber's to check (the distribution plugin relays a service's events only from its
    /// providers).
    ///
    /// ```
    /// # async fn demo(mesh: plume_transport::Mesh, trusted: plume_transport::discovery::NodeId) {
    /// let mut prices = mesh.subscribe("prices");
    /// while let Some((from, price)) = prices.recv_from().await {
    ///     if from == trusted {
    ///         println!("{price}");
    ///     }
    /// }
    /// # }
    /// ```
    pub async fn recv_from(&mut self) -> Option<(NodeId, Value)> {
        self.stream.next().await.map(|(from, data, _)| (from, data))
    }

    /// The next event, with the node that published it and the W3C trace context of the call
    /// it was published in (`None` when it ran in no trace, or its publisher is a node of an
    /// earlier version): the span of this hop, a child of that call's. Code that handles the
    /// event in [`plume::trace::scope`] joins the publisher's trace.
    pub async fn recv_traced(&mut self) -> Option<(NodeId, Value, Option<TraceContext>)> {
        self.stream.next().await
    }

    /// The topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }
}

impl Stream for Subscription {
    type Item = Value;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Value>> {
        self.stream
            .as_mut()
            .poll_next(cx)
            .map(|event| event.map(|(_, data, _)| data))
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.inner.unsubscribed(&self.topic);
    }
}
