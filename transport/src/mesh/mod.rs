//! The mesh: one node's handle, its builder, and the public types of calls and the table.
//!
//! The work is split by what it does: [`table`] keeps routes and topics (and is the
//! [`Sink`](crate::engine::Sink) engines report to), [`balance`] picks a provider, [`call`]
//! waits, retries and keeps deadlines, [`serve`] answers calls from peers, [`drain`] stops the
//! node. Which engine carries the node ([`tcp`](crate::tcp), [`nats`](crate::nats),
//! [`memory`](crate::memory)) is decided once, in [`MeshBuilder::start`].

mod balance;
mod call;
mod drain;
mod handler;
mod reply;
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
use tokio::sync::{broadcast, mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::discovery::{DiscoveryConfig, DiscoveryMode, NodeId, PeerEvent, PeerInfo};
use crate::engine::{Activity, Engine, Settings};
use crate::protocol::{DEFAULT_MAX_FRAME, PROTOCOL_VERSION};
use crate::sync::lock;

pub use handler::{Handler, RawBody, RawHandler, RawRequest, Request};
use table::{LocalState, Route};

const LOG: &str = "plume::mesh";
/// Capacity of each watcher's broadcast buffer.
const WATCH_CAPACITY: usize = 1024;

/// How a call picks among the live providers of a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Balance {
    /// Each call goes to the next provider in turn.
    #[default]
    RoundRobin,
    /// Each call goes to the provider with the fewest calls from this node in flight.
    LeastPending,
}

/// Why a mesh could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MeshError {
    /// The listener could not be bound.
    #[error("mesh listener: {0}")]
    Listen(#[source] std::io::Error),
    /// Discovery could not start.
    #[error("mesh discovery: {0}")]
    Discovery(#[source] std::io::Error),
}

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
    routes: RwLock<std::collections::HashMap<String, Vec<Route>>>,
    table_changed: watch::Sender<u64>,
    table_events: broadcast::Sender<TableEvent>,
    activity: Arc<Activity>,
    rr: AtomicUsize,
    local_pending: AtomicUsize,
    waiting: AtomicUsize,
    engine: Arc<dyn Engine>,
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

/// Configures and starts a [`Mesh`].
#[derive(Debug)]
pub struct MeshBuilder {
    environment: String,
    key: String,
    discovery: DiscoveryConfig,
    secret: Option<Arc<[u8]>>,
    listen: SocketAddr,
    peers: Option<mpsc::Receiver<PeerEvent>>,
    memory: Option<crate::memory::Network>,
    cfg: Settings,
}

impl Default for MeshBuilder {
    fn default() -> Self {
        Self {
            environment: "default".into(),
            key: String::new(),
            discovery: DiscoveryConfig::default(),
            secret: std::env::var("PLUME_MESH_SECRET")
                .ok()
                .filter(|s| !s.is_empty())
                .map(|s| Arc::from(s.into_bytes().into_boxed_slice())),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            peers: None,
            memory: None,
            cfg: Settings {
                timeout: Duration::from_secs(10),
                balance: Balance::RoundRobin,
                max_frame: DEFAULT_MAX_FRAME,
                write_buffer: 4 * 1024 * 1024,
                max_in_flight: 4096,
                max_waiting: 10_000,
                ping_interval: Duration::from_secs(5),
                handshake_timeout: Duration::from_secs(5),
                drain_timeout: Duration::from_secs(10),
            },
        }
    }
}

impl MeshBuilder {
    /// The environment (default `default`): nodes in different environments never see each other.
    #[must_use]
    pub fn environment(mut self, env: impl Into<String>) -> Self {
        self.environment = env.into();
        self
    }

    /// The replica-group key of this node.
    #[must_use]
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.key = key.into();
        self
    }

    /// Discovery settings (default: loopback).
    #[must_use]
    pub fn discovery(mut self, config: DiscoveryConfig) -> Self {
        self.discovery = config;
        self
    }

    /// Use this channel of peer events instead of discovery ("static peers"): the caller
    /// announces peers itself. Useful for tests and fixed topologies.
    #[must_use]
    pub fn peers(mut self, events: mpsc::Receiver<PeerEvent>) -> Self {
        self.peers = Some(events);
        self
    }

    /// The mesh secret (default: `PLUME_MESH_SECRET` when set). With a secret, links need a
    /// mutual HMAC challenge–response and beacons are signed.
    #[must_use]
    pub fn secret<S: AsRef<[u8]>>(mut self, secret: Option<S>) -> Self {
        self.secret = secret.map(|s| Arc::from(s.as_ref().to_vec().into_boxed_slice()));
        self
    }

    /// The TCP address to listen on for links (default `127.0.0.1:0`).
    #[must_use]
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listen = addr;
        self
    }

    /// The default call timeout (10 s).
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.cfg.timeout = timeout;
        self
    }

    /// The balancing strategy.
    #[must_use]
    pub fn balance(mut self, balance: Balance) -> Self {
        self.cfg.balance = balance;
        self
    }

    /// The maximum frame length in bytes (16 MiB).
    #[must_use]
    pub fn max_frame(mut self, bytes: usize) -> Self {
        self.cfg.max_frame = bytes;
        self
    }

    /// Bytes queued per link before callers wait (4 MiB); events beyond it are dropped for
    /// that peer. A single frame always fits in an empty buffer.
    #[must_use]
    pub fn write_buffer(mut self, bytes: usize) -> Self {
        self.cfg.write_buffer = bytes.max(1024);
        self
    }

    /// Calls in flight per link, each way (4096).
    #[must_use]
    pub fn max_in_flight(mut self, calls: usize) -> Self {
        self.cfg.max_in_flight = calls.max(1);
        self
    }

    /// Keepalive ping interval (5 s); a link silent for three intervals closes.
    #[must_use]
    pub fn ping_interval(mut self, interval: Duration) -> Self {
        self.cfg.ping_interval = interval;
        self
    }

    /// How long [`Mesh::shutdown`] waits for calls in flight (10 s).
    #[must_use]
    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.cfg.drain_timeout = timeout;
        self
    }

    /// Run on an in-process [`Network`](crate::memory::Network) instead of sockets: nodes of one
    /// network reach each other through channels. For tests of everything above the wire.
    #[must_use]
    pub fn memory(mut self, network: &crate::memory::Network) -> Self {
        self.memory = Some(network.clone());
        self
    }

    /// Start the node on its engine: an in-process [`memory`](Self::memory) network when given;
    /// NATS with [`DiscoveryMode::Nats`] (and no `peers` channel); else TCP peer links, with
    /// discovery (unless [`peers`](Self::peers) was given).
    ///
    /// On NATS the node binds no listener and connects in the background (a node starts while
    /// the server is away, and reconnects for ever).
    pub async fn start(self) -> Result<Mesh, MeshError> {
        let node = NodeId(rand::random());
        let (engine, local_addr): (Arc<dyn Engine>, SocketAddr) = if let Some(net) = &self.memory {
            (net.engine(node, &self.key), self.listen)
        } else if self.peers.is_none()
            && let DiscoveryMode::Nats { url } = &self.discovery.mode
        {
            if self.secret.is_some() {
                tracing::warn!(target: LOG, "PLUME_MESH_SECRET is not used on NATS: secure the NATS server itself (credentials, TLS)");
            }
            let engine = crate::nats::NatsEngine::connect(
                url,
                node,
                &self.environment,
                &self.key,
                &self.discovery,
                self.cfg.max_in_flight,
            )
            .await
            .map_err(MeshError::Discovery)?;
            tracing::debug!(target: LOG, node = %node, %url, "mesh node on NATS");
            (engine, self.listen)
        } else {
            let engine = crate::tcp::TcpEngine::bind(crate::tcp::TcpConfig {
                node,
                environment: self.environment.clone(),
                key: self.key.clone(),
                secret: self.secret,
                listen: self.listen,
                discovery: self.discovery,
                peers: self.peers,
                cfg: self.cfg.clone(),
            })
            .await?;
            let addr = engine.local_addr();
            (engine, addr)
        };
        let inner = Arc::new(Inner {
            node,
            environment: self.environment,
            key: self.key,
            cfg: self.cfg,
            stopped: CancellationToken::new(),
            local_addr,
            local: Mutex::new(LocalState::default()),
            routes: RwLock::new(std::collections::HashMap::new()),
            table_changed: watch::Sender::new(0),
            table_events: broadcast::Sender::new(WATCH_CAPACITY),
            activity: Arc::new(Activity::default()),
            rr: AtomicUsize::new(0),
            local_pending: AtomicUsize::new(0),
            waiting: AtomicUsize::new(0),
            engine,
        });
        let sink: Arc<dyn crate::engine::Sink> = inner.clone();
        inner.engine.clone().start(sink);
        let mesh = Mesh { inner };
        tracing::debug!(target: LOG, node = %node, addr = %local_addr, "mesh node started");
        Ok(mesh)
    }
}

impl Mesh {
    /// A builder with the defaults.
    pub fn builder() -> MeshBuilder {
        MeshBuilder::default()
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

    /// cote-style: provide `kind` with a null descriptor.
    pub fn respond(&self, kind: &str, handler: impl Handler) {
        self.provide(kind, Value::Null, handler);
    }

    /// cote-style: call `kind` with default options.
    pub async fn request(&self, kind: &str, payload: Value) -> Result<Value, plume::Error> {
        self.call(kind, None, payload, CallOptions::default()).await
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
/// Each subscription buffers up to 4096 events; one that falls further behind loses the oldest
/// ones (a warning is logged) and continues.
pub struct Subscription {
    topic: String,
    inner: Arc<Inner>,
    stream: Pin<Box<dyn Stream<Item = Value> + Send>>,
}

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
        self.stream.as_mut().poll_next(cx)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.inner.unsubscribed(&self.topic);
    }
}
