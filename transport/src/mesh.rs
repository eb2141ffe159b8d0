//! The mesh: endpoints, calls, events, and the peer state machine.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use futures::StreamExt;
use futures::future::BoxFuture;
use serde::Serialize;
use serde::de::{DeserializeOwned, IgnoredAny};
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, broadcast, mpsc, watch};
use tokio::time::{Instant, timeout, timeout_at};
use tokio_util::sync::CancellationToken;

use crate::codec::{
    DEFAULT_MAX_FRAME, Entry, EventMsg, Frame, Goaway, Kind, PROTOCOL_VERSION, RequestMsg,
    TableDelta, TableSnapshot, Topic, decode_payload, decode_request_body, encode_payload,
    peek_request_name,
};
use crate::discovery::{
    Discovery, DiscoveryConfig, DiscoveryMode, LocalNode, NodeId, PeerEvent, PeerInfo,
};
use crate::error::{CallError, HandshakeError};
use crate::link::{self, Link};
use crate::nats::NatsEngine;
use plume::{Error, RawJson};

use crate::reply::ReplyForm;

const LOG: &str = "plume::mesh";
/// Capacity of each watcher's and each topic's broadcast buffer.
const WATCH_CAPACITY: usize = 1024;
const TOPIC_CAPACITY: usize = 4096;

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

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

/// A call as a handler sees it.
#[derive(Debug, Clone)]
pub struct Request {
    /// The endpoint name.
    pub name: String,
    /// The method, if the caller gave one.
    pub method: Option<String>,
    /// The body.
    pub body: Value,
    /// When the caller stops waiting.
    pub deadline: std::time::Instant,
    /// The calling node.
    pub from: NodeId,
}

/// Serves calls to an endpoint.
///
/// The first poll of a handler's future runs on the link's reader (so quick handlers answer
/// without a task switch); a handler must not block. One that is not ready at once continues in
/// its own task. A handler that panics answers `GeneralError`.
pub trait Handler: Send + Sync + 'static {
    /// Answer one call.
    fn call(&self, request: Request) -> BoxFuture<'static, Result<Value, Error>>;
}

impl<F, Fut> Handler for F
where
    F: Fn(Request) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Value, Error>> + Send + 'static,
{
    fn call(&self, request: Request) -> BoxFuture<'static, Result<Value, Error>> {
        Box::pin(self(request))
    }
}

/// The body of a call to a raw endpoint ([`RawHandler`]), not yet decoded.
#[derive(Debug, Clone)]
pub(crate) enum Body {
    /// A call made on this node: the body as a value.
    Value(Value),
    /// A call from a peer (link or NATS): the whole encoded [`RequestMsg`] payload.
    Msgpack(bytes::Bytes),
}

impl Body {
    /// Decode the body as `T`, from MessagePack straight into `T` for a call from a peer (no
    /// `serde_json::Value` on the way). A body that does not decode is a BadRequest.
    ///
    /// Consuming the body releases its bytes (a piece of the link's read buffer).
    pub(crate) fn decode<T: DeserializeOwned>(self) -> Result<T, Error> {
        match self {
            Body::Value(v) => serde_json::from_value(v).map_err(|e| e.to_string()),
            Body::Msgpack(payload) => decode_request_body(&payload),
        }
        .map_err(|e| Error::bad_request(format!("malformed call body: {e}")))
    }

    /// The body as a value (what a [`Handler`] receives).
    fn into_value(self) -> Result<Value, Error> {
        match self {
            Body::Value(v) => Ok(v),
            body @ Body::Msgpack(_) => body.decode(),
        }
    }
}

/// A call as a [`RawHandler`] sees it: a [`Request`] whose body is not decoded yet.
#[derive(Debug)]
pub(crate) struct RawRequest {
    pub(crate) name: String,
    pub(crate) method: Option<String>,
    pub(crate) body: Body,
    pub(crate) deadline: std::time::Instant,
    pub(crate) from: NodeId,
}

/// Serves calls to an endpoint and decodes their bodies itself ([`Body::decode`]), into its own
/// type: a call from a peer is decoded once, from MessagePack. Same rules as [`Handler`]; it
/// should decode the body before its first await (until then the body holds a piece of the
/// link's read buffer).
pub(crate) trait RawHandler: Send + Sync + 'static {
    /// Answer one call.
    fn call(&self, request: RawRequest) -> BoxFuture<'static, Result<Value, Error>>;
}

impl<F, Fut> RawHandler for F
where
    F: Fn(RawRequest) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Value, Error>> + Send + 'static,
{
    fn call(&self, request: RawRequest) -> BoxFuture<'static, Result<Value, Error>> {
        Box::pin(self(request))
    }
}

/// The handler of one endpoint of this node.
#[derive(Clone)]
pub(crate) enum EndpointHandler {
    /// Given the body as a value ([`Mesh::provide`]).
    Plain(Arc<dyn Handler>),
    /// Given the body undecoded ([`Mesh::provide_raw`]).
    Raw(Arc<dyn RawHandler>),
}

impl EndpointHandler {
    /// The future answering `request` (a plain handler's body is decoded first: a body that
    /// does not decode answers BadRequest).
    pub(crate) fn call(&self, request: RawRequest) -> BoxFuture<'static, Result<Value, Error>> {
        match self {
            EndpointHandler::Raw(h) => h.call(request),
            EndpointHandler::Plain(h) => match request.body.into_value() {
                Ok(body) => h.call(Request {
                    name: request.name,
                    method: request.method,
                    body,
                    deadline: request.deadline,
                    from: request.from,
                }),
                Err(e) => Box::pin(std::future::ready(Err(e))),
            },
        }
    }
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
    /// `node` no longer provides `name` (withdrawn, draining, or the link died).
    Removed {
        /// Endpoint name.
        name: String,
        /// Former provider.
        node: NodeId,
    },
}

#[derive(Clone)]
enum Target {
    Local(EndpointHandler),
    Remote(Arc<Link>),
    /// A provider reached through NATS (the queue group of the endpoint).
    Nats,
}

#[derive(Clone)]
struct Route {
    node: NodeId,
    key: String,
    descriptor: Value,
    target: Target,
}

struct LocalEndpoint {
    descriptor: Value,
    handler: EndpointHandler,
}

struct TopicState {
    tx: broadcast::Sender<Value>,
    count: usize,
}

#[derive(Default)]
struct LocalState {
    endpoints: HashMap<String, LocalEndpoint>,
    version: u64,
    topics: HashMap<String, TopicState>,
}

#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) timeout: Duration,
    pub(crate) balance: Balance,
    pub(crate) max_frame: usize,
    pub(crate) write_buffer: usize,
    pub(crate) max_in_flight: usize,
    pub(crate) max_waiting: usize,
    pub(crate) ping_interval: Duration,
    pub(crate) handshake_timeout: Duration,
    pub(crate) drain_timeout: Duration,
}

struct Advert {
    info: PeerInfo,
    token: CancellationToken,
}

pub(crate) struct Inner {
    pub(crate) node: NodeId,
    pub(crate) environment: String,
    pub(crate) key: String,
    pub(crate) secret: Option<Arc<[u8]>>,
    pub(crate) cfg: Settings,
    pub(crate) shutdown: CancellationToken,
    local_addr: SocketAddr,
    local: Mutex<LocalState>,
    links: Mutex<HashMap<NodeId, Arc<Link>>>,
    routes: RwLock<HashMap<String, Vec<Route>>>,
    table_changed: watch::Sender<u64>,
    table_events: broadcast::Sender<TableEvent>,
    adverts: Mutex<HashMap<NodeId, Advert>>,
    accept_stop: CancellationToken,
    draining: AtomicBool,
    serving: AtomicUsize,
    outgoing: AtomicUsize,
    idle: Notify,
    rr: AtomicUsize,
    local_pending: AtomicUsize,
    waiting: AtomicUsize,
    discovery: Option<Discovery>,
    nats: Option<Arc<NatsEngine>>,
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
    cfg: Settings,
    defer_discovery: bool,
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
            defer_discovery: false,
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

    /// With NATS discovery: connect, but learn of no peer until
    /// [`Mesh::start_discovery`] (so a table watcher created in between misses nothing).
    pub(crate) fn defer_discovery(mut self) -> Self {
        self.defer_discovery = true;
        self
    }

    /// Bind, start discovery (unless [`peers`](Self::peers) was given) and start the node.
    ///
    /// With [`DiscoveryMode::Nats`] (and no `peers` channel), the node runs on NATS instead of
    /// peer links: it binds no listener and connects in the background (a node starts while the
    /// server is away, and reconnects for ever).
    pub async fn start(self) -> Result<Mesh, MeshError> {
        if self.peers.is_none()
            && let DiscoveryMode::Nats { url } = &self.discovery.mode
        {
            let url = url.clone();
            return self.start_nats(&url).await;
        }
        let listener = TcpListener::bind(self.listen)
            .await
            .map_err(MeshError::Listen)?;
        let local_addr = listener.local_addr().map_err(MeshError::Listen)?;
        let node = NodeId(rand::random());
        let (discovery, events) = match self.peers {
            Some(rx) => (None, rx),
            None => {
                let mut config = self.discovery;
                // One secret for beacons and links.
                if self.secret.is_some() {
                    config.secret = self.secret.clone();
                }
                let local = LocalNode {
                    node,
                    environment: self.environment.clone(),
                    key: self.key.clone(),
                    addr: local_addr,
                };
                let (d, rx) = Discovery::start(config, local)
                    .await
                    .map_err(MeshError::Discovery)?;
                (Some(d), rx)
            }
        };
        let inner = Arc::new(Inner {
            node,
            environment: self.environment,
            key: self.key,
            secret: self.secret,
            cfg: self.cfg,
            shutdown: CancellationToken::new(),
            local_addr,
            local: Mutex::new(LocalState::default()),
            links: Mutex::new(HashMap::new()),
            routes: RwLock::new(HashMap::new()),
            table_changed: watch::Sender::new(0),
            table_events: broadcast::Sender::new(WATCH_CAPACITY),
            adverts: Mutex::new(HashMap::new()),
            accept_stop: CancellationToken::new(),
            draining: AtomicBool::new(false),
            serving: AtomicUsize::new(0),
            outgoing: AtomicUsize::new(0),
            idle: Notify::new(),
            rr: AtomicUsize::new(0),
            local_pending: AtomicUsize::new(0),
            waiting: AtomicUsize::new(0),
            discovery,
            nats: None,
        });
        tokio::spawn(accept_loop(inner.clone(), listener));
        tokio::spawn(peer_loop(inner.clone(), events));
        tracing::debug!(target: LOG, node = %node, addr = %local_addr, "mesh node started");
        Ok(Mesh { inner })
    }
}

impl MeshBuilder {
    async fn start_nats(self, url: &str) -> Result<Mesh, MeshError> {
        self.discovery.validate().map_err(|e| {
            MeshError::Discovery(std::io::Error::new(std::io::ErrorKind::InvalidInput, e))
        })?;
        if self.secret.is_some() {
            tracing::warn!(target: LOG, "PLUME_MESH_SECRET is not used on NATS: secure the NATS server itself (credentials, TLS)");
        }
        let node = NodeId(rand::random());
        let engine = NatsEngine::connect(
            url,
            node,
            &self.environment,
            &self.key,
            self.discovery.heartbeat,
            self.discovery.node_timeout,
            self.cfg.max_in_flight,
        )
        .await
        .map_err(MeshError::Discovery)?;
        let inner = Arc::new(Inner {
            node,
            environment: self.environment,
            key: self.key,
            secret: self.secret,
            cfg: self.cfg,
            shutdown: CancellationToken::new(),
            local_addr: self.listen,
            local: Mutex::new(LocalState::default()),
            links: Mutex::new(HashMap::new()),
            routes: RwLock::new(HashMap::new()),
            table_changed: watch::Sender::new(0),
            table_events: broadcast::Sender::new(WATCH_CAPACITY),
            adverts: Mutex::new(HashMap::new()),
            accept_stop: CancellationToken::new(),
            draining: AtomicBool::new(false),
            serving: AtomicUsize::new(0),
            outgoing: AtomicUsize::new(0),
            idle: Notify::new(),
            rr: AtomicUsize::new(0),
            local_pending: AtomicUsize::new(0),
            waiting: AtomicUsize::new(0),
            discovery: None,
            nats: Some(engine.clone()),
        });
        if !self.defer_discovery {
            engine.start(&inner);
        }
        tracing::debug!(target: LOG, node = %node, %url, "mesh node started on NATS");
        Ok(Mesh { inner })
    }
}

async fn accept_loop(inner: Arc<Inner>, listener: TcpListener) {
    loop {
        tokio::select! {
            () = inner.accept_stop.cancelled() => break,
            () = inner.shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok((stream, addr)) => {
                    let inner = inner.clone();
                    tokio::spawn(async move {
                        if let Err(reason) = link::establish(&inner, stream, None).await {
                            let reason = &reason as &dyn std::error::Error;
                            tracing::warn!(target: LOG, node = %inner.node, %addr, reason, "refused an incoming link");
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!(target: LOG, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}

async fn peer_loop(inner: Arc<Inner>, mut events: mpsc::Receiver<PeerEvent>) {
    loop {
        let ev = tokio::select! {
            () = inner.shutdown.cancelled() => break,
            ev = events.recv() => ev,
        };
        match ev {
            None => break,
            Some(PeerEvent::Up(info) | PeerEvent::Updated(info)) => {
                if info.node == inner.node || info.protocol != PROTOCOL_VERSION {
                    continue;
                }
                let mut adverts = lock(&inner.adverts);
                if let Some(a) = adverts.get_mut(&info.node) {
                    a.info = info;
                    continue;
                }
                let token = inner.shutdown.child_token();
                let node = info.node;
                adverts.insert(
                    node,
                    Advert {
                        info,
                        token: token.clone(),
                    },
                );
                drop(adverts);
                // Lower node id dials: one connection per pair.
                if inner.node < node {
                    tokio::spawn(dial_loop(inner.clone(), node, token));
                }
            }
            Some(PeerEvent::Down { node }) => {
                let removed = lock(&inner.adverts).remove(&node);
                if let Some(a) = removed {
                    a.token.cancel();
                }
                let link = lock(&inner.links).get(&node).cloned();
                // A draining peer closes its own link once its calls are done.
                if let Some(l) = link.filter(|l| !l.draining.load(Ordering::Acquire)) {
                    tracing::debug!(target: LOG, node = %inner.node, peer = %node, "peer removed by discovery; closing its link");
                    l.closed.cancel();
                }
            }
        }
    }
}

/// Exponential backoff with jitter for redials.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    base: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    pub(crate) fn new(base: Duration, max: Duration) -> Self {
        Self {
            base,
            max,
            attempt: 0,
        }
    }

    /// The next delay: `base * 2^attempt`, capped at `max`, then scaled by a random factor in
    /// [0.75, 1.25).
    pub(crate) fn next_delay(&mut self) -> Duration {
        let exp = self
            .base
            .saturating_mul(1u32 << self.attempt.min(16))
            .min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        exp.mul_f64(0.75 + rand::random::<f64>() * 0.5)
    }

    pub(crate) fn reset(&mut self) {
        self.attempt = 0;
    }
}

async fn dial_loop(inner: Arc<Inner>, node: NodeId, token: CancellationToken) {
    let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(2));
    loop {
        if token.is_cancelled() {
            return;
        }
        let addr = match lock(&inner.adverts).get(&node) {
            Some(a) => a.info.addr,
            None => return,
        };
        let attempt = async {
            let stream = timeout(inner.cfg.handshake_timeout, TcpStream::connect(addr))
                .await
                .map_err(|_| HandshakeError::ConnectTimeout)?
                .map_err(HandshakeError::Connect)?;
            link::establish(&inner, stream, Some(node)).await
        };
        let result = tokio::select! {
            () = token.cancelled() => return,
            r = attempt => r,
        };
        match result {
            Ok(link) => {
                backoff.reset();
                tokio::select! {
                    () = link.closed.cancelled() => {}
                    () = token.cancelled() => {
                        // A draining peer closes its own link once its calls are done.
                        if !link.draining.load(Ordering::Acquire) {
                            link.closed.cancel();
                        }
                        return;
                    }
                }
            }
            Err(reason) => {
                let reason = &reason as &dyn std::error::Error;
                tracing::debug!(target: LOG, node = %inner.node, peer = %node, %addr, reason, "dial failed");
            }
        }
        let delay = backoff.next_delay();
        tokio::select! {
            () = token.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
    }
}

impl Inner {
    /// A handshaken link joins: replace any older link to the same node, queue our snapshot.
    pub(crate) fn register_link(&self, link: &Arc<Link>) {
        let old = lock(&self.links).insert(link.peer, link.clone());
        if let Some(old) = old {
            tracing::debug!(target: LOG, node = %self.node, peer = %link.peer, "a newer link replaces the old one");
            old.closed.cancel();
        }
        let local = lock(&self.local);
        let snapshot = TableSnapshot {
            version: local.version,
            entries: local
                .endpoints
                .iter()
                .map(|(name, ep)| Entry {
                    name: name.clone(),
                    descriptor: ep.descriptor.clone(),
                })
                .collect(),
            topics: local.topics.keys().cloned().collect(),
        };
        link.send_control(Frame::with(Kind::TableSnapshot, 0, &snapshot));
        link.ready.store(true, Ordering::Release);
        drop(local);
        if self.draining.load(Ordering::Acquire) {
            link.send_control(Frame::with(
                Kind::Goaway,
                0,
                &Goaway {
                    reason: "shutting down".into(),
                    ack: false,
                },
            ));
        }
    }

    pub(crate) fn link_closed(&self, link: &Arc<Link>) {
        {
            let mut links = lock(&self.links);
            if links.get(&link.peer).is_some_and(|l| Arc::ptr_eq(l, link)) {
                links.remove(&link.peer);
            }
        }
        self.remove_remote_entries(link, None);
        self.idle.notify_waiters();
    }

    fn routes_write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Vec<Route>>> {
        self.routes.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn routes_read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Vec<Route>>> {
        self.routes.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn table_bumped(&self) {
        self.table_changed.send_modify(|v| *v = v.wrapping_add(1));
    }

    pub(crate) fn add_remote_entries(&self, link: &Arc<Link>, entries: Vec<Entry>) {
        if entries.is_empty() || link.closed.is_cancelled() || link.draining.load(Ordering::Acquire)
        {
            return;
        }
        let mut routes = self.routes_write();
        for e in entries {
            let list = routes.entry(e.name.clone()).or_default();
            list.retain(|r| r.node != link.peer);
            list.push(Route {
                node: link.peer,
                key: link.key.clone(),
                descriptor: e.descriptor.clone(),
                target: Target::Remote(link.clone()),
            });
            let _ = self.table_events.send(TableEvent::Added {
                name: e.name,
                node: link.peer,
                key: link.key.clone(),
                descriptor: e.descriptor,
            });
        }
        drop(routes);
        self.table_bumped();
    }

    /// Remove this link's routes: the named ones, or all of them.
    pub(crate) fn remove_remote_entries(&self, link: &Arc<Link>, names: Option<&[String]>) {
        let mut routes = self.routes_write();
        let mut removed = Vec::new();
        let mut check = |name: &str, list: &mut Vec<Route>| {
            let before = list.len();
            list.retain(|r| !matches!(&r.target, Target::Remote(l) if Arc::ptr_eq(l, link)));
            if list.len() != before {
                removed.push(name.to_string());
            }
        };
        match names {
            Some(names) => {
                for n in names {
                    if let Some(list) = routes.get_mut(n) {
                        check(n, list);
                    }
                }
            }
            None => {
                for (n, list) in routes.iter_mut() {
                    check(n, list);
                }
            }
        }
        routes.retain(|_, l| !l.is_empty());
        drop(routes);
        if removed.is_empty() {
            return;
        }
        for name in removed {
            let _ = self.table_events.send(TableEvent::Removed {
                name,
                node: link.peer,
            });
        }
        self.table_bumped();
    }

    pub(crate) fn table_events_rx(&self) -> broadcast::Receiver<TableEvent> {
        self.table_events.subscribe()
    }

    /// NATS: `node` now provides `added` (or re-described them) and no longer `removed`.
    pub(crate) fn nats_apply(
        &self,
        node: NodeId,
        key: &str,
        added: Vec<Entry>,
        removed: &[String],
    ) {
        if added.is_empty() && removed.is_empty() {
            return;
        }
        let mut routes = self.routes_write();
        let mut events = Vec::new();
        for name in removed {
            if let Some(list) = routes.get_mut(name) {
                let before = list.len();
                list.retain(|r| r.node != node);
                if list.len() != before {
                    events.push(TableEvent::Removed {
                        name: name.clone(),
                        node,
                    });
                }
            }
        }
        for e in added {
            let list = routes.entry(e.name.clone()).or_default();
            list.retain(|r| r.node != node);
            list.push(Route {
                node,
                key: key.to_owned(),
                descriptor: e.descriptor.clone(),
                target: Target::Nats,
            });
            events.push(TableEvent::Added {
                name: e.name,
                node,
                key: key.to_owned(),
                descriptor: e.descriptor,
            });
        }
        routes.retain(|_, l| !l.is_empty());
        drop(routes);
        for ev in events {
            let _ = self.table_events.send(ev);
        }
        self.table_bumped();
    }

    /// NATS: `node` left or went silent.
    pub(crate) fn nats_remove_node(&self, node: NodeId) {
        let mut routes = self.routes_write();
        let mut removed = Vec::new();
        for (name, list) in routes.iter_mut() {
            let before = list.len();
            list.retain(|r| r.node != node);
            if list.len() != before {
                removed.push(name.clone());
            }
        }
        routes.retain(|_, l| !l.is_empty());
        drop(routes);
        if removed.is_empty() {
            return;
        }
        for name in removed {
            let _ = self.table_events.send(TableEvent::Removed { name, node });
        }
        self.table_bumped();
    }

    /// This node's service table.
    pub(crate) fn local_snapshot(&self) -> TableSnapshot {
        let local = lock(&self.local);
        TableSnapshot {
            version: local.version,
            entries: local
                .endpoints
                .iter()
                .map(|(name, ep)| Entry {
                    name: name.clone(),
                    descriptor: ep.descriptor.clone(),
                })
                .collect(),
            topics: local.topics.keys().cloned().collect(),
        }
    }

    /// The names this node provides, sorted.
    pub(crate) fn local_endpoint_names(&self) -> Vec<String> {
        let mut v: Vec<String> = lock(&self.local).endpoints.keys().cloned().collect();
        v.sort();
        v
    }

    pub(crate) fn local_handler(&self, name: &str) -> Option<EndpointHandler> {
        lock(&self.local)
            .endpoints
            .get(name)
            .map(|e| e.handler.clone())
    }

    /// Decode a request from a peer for the endpoint of this node that it names (`None` when
    /// there is none). A plain handler's body is decoded to a `Value` in one pass with the head;
    /// for a raw handler only the head is (its body is skipped), and the handler decodes the body
    /// itself. Err: the payload is not a request.
    pub(crate) fn decode_request(
        &self,
        payload: bytes::Bytes,
    ) -> Result<(RequestMsg<Body>, Option<EndpointHandler>), String> {
        let peeked = peek_request_name(&payload).map(|name| (name, self.local_handler(name)));
        if let Some((name, Some(handler @ EndpointHandler::Plain(_)))) = &peeked
            && let Ok(m) = decode_payload::<RequestMsg>(&payload)
            && m.name == *name
        {
            let req = RequestMsg {
                name: m.name,
                method: m.method,
                body: Body::Value(m.body),
                timeout_ms: m.timeout_ms,
            };
            return Ok((req, Some(handler.clone())));
        }
        // A raw handler, no handler, or a body that is not JSON (a plain handler then answers
        // BadRequest): the head only.
        let head = decode_payload::<RequestMsg<IgnoredAny>>(&payload)?;
        let handler = match peeked {
            Some((name, handler)) if name == head.name => handler,
            _ => self.local_handler(&head.name),
        };
        let req = RequestMsg {
            name: head.name,
            method: head.method,
            body: Body::Msgpack(payload),
            timeout_ms: head.timeout_ms,
        };
        Ok((req, handler))
    }

    pub(crate) fn deliver_local(&self, topic: &str, data: Value) {
        let local = lock(&self.local);
        if let Some(t) = local.topics.get(topic) {
            let _ = t.tx.send(data);
        }
    }

    /// Wait until `cond` holds (re-checked on every drain-relevant change, and every 20 ms as a
    /// safety net) or the deadline passes; true when it holds.
    async fn wait_until(&self, deadline: Instant, cond: impl Fn() -> bool) -> bool {
        loop {
            let notified = self.idle.notified();
            if cond() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            let _ = timeout_at(
                deadline.min(Instant::now() + Duration::from_millis(20)),
                notified,
            )
            .await;
        }
    }

    pub(crate) fn link_changed(&self) {
        self.idle.notify_waiters();
    }

    pub(crate) fn serving_started(&self) {
        self.serving.fetch_add(1, Ordering::AcqRel);
    }

    pub(crate) fn serving_done(&self) {
        self.serving.fetch_sub(1, Ordering::AcqRel);
        if self.draining.load(Ordering::Acquire) {
            self.idle.notify_waiters();
        }
    }

    fn send_to_ready_links(&self, frame: &Frame) {
        let links: Vec<Arc<Link>> = lock(&self.links).values().cloned().collect();
        for l in links {
            if l.ready.load(Ordering::Acquire) {
                l.send_control(frame.clone());
            }
        }
    }

    /// Pick a live provider of `name`.
    fn pick(&self, name: &str) -> Option<(NodeId, Target)> {
        let routes = self.routes_read();
        let list = routes.get(name)?;
        let live = |r: &&Route| match &r.target {
            Target::Local(_) | Target::Nats => true,
            Target::Remote(l) => !l.closed.is_cancelled() && !l.draining.load(Ordering::Acquire),
        };
        let chosen = match self.cfg.balance {
            Balance::RoundRobin => {
                let count = list.iter().filter(live).count();
                if count == 0 {
                    return None;
                }
                let n = self.rr.fetch_add(1, Ordering::Relaxed) % count;
                list.iter().filter(live).nth(n)?
            }
            Balance::LeastPending => list.iter().filter(live).min_by_key(|r| match &r.target {
                Target::Local(_) | Target::Nats => self.local_pending.load(Ordering::Relaxed),
                Target::Remote(l) => l.pending_count.load(Ordering::Relaxed),
            })?,
        };
        Some((chosen.node, chosen.target.clone()))
    }
}

struct CountGuard<'a> {
    count: &'a AtomicUsize,
    idle: Option<&'a Inner>,
}

impl Drop for CountGuard<'_> {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::AcqRel);
        if let Some(inner) = self.idle
            && inner.draining.load(Ordering::Acquire)
        {
            inner.idle.notify_waiters();
        }
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

    /// Provide (or re-describe) endpoint `name`, served by `handler`.
    pub fn provide(&self, name: &str, descriptor: Value, handler: impl Handler) {
        self.provide_endpoint(name, descriptor, EndpointHandler::Plain(Arc::new(handler)));
    }

    /// [`provide`](Self::provide) with a handler that decodes the call body itself.
    pub(crate) fn provide_raw(&self, name: &str, descriptor: Value, handler: impl RawHandler) {
        self.provide_endpoint(name, descriptor, EndpointHandler::Raw(Arc::new(handler)));
    }

    fn provide_endpoint(&self, name: &str, descriptor: Value, handler: EndpointHandler) {
        let inner = &self.inner;
        let mut local = lock(&inner.local);
        local.endpoints.insert(
            name.to_string(),
            LocalEndpoint {
                descriptor: descriptor.clone(),
                handler: handler.clone(),
            },
        );
        local.version += 1;
        let version = local.version;
        {
            let mut routes = inner.routes_write();
            let list = routes.entry(name.to_string()).or_default();
            list.retain(|r| r.node != inner.node);
            list.push(Route {
                node: inner.node,
                key: inner.key.clone(),
                descriptor: descriptor.clone(),
                target: Target::Local(handler),
            });
        }
        let delta = TableDelta {
            version,
            added: vec![Entry {
                name: name.to_string(),
                descriptor: descriptor.clone(),
            }],
            removed: Vec::new(),
        };
        inner.send_to_ready_links(&Frame::with(Kind::TableDelta, 0, &delta));
        if let Some(n) = &inner.nats {
            n.provide(name, delta);
        }
        drop(local);
        let _ = inner.table_events.send(TableEvent::Added {
            name: name.to_string(),
            node: inner.node,
            key: inner.key.clone(),
            descriptor,
        });
        inner.table_bumped();
        if let Some(d) = &inner.discovery {
            d.set_table_version(version);
        }
    }

    /// Stop providing `name`. Calls already running finish.
    pub fn withdraw(&self, name: &str) {
        let inner = &self.inner;
        let mut local = lock(&inner.local);
        if local.endpoints.remove(name).is_none() {
            return;
        }
        local.version += 1;
        let version = local.version;
        {
            let mut routes = inner.routes_write();
            if let Some(list) = routes.get_mut(name) {
                list.retain(|r| r.node != inner.node);
                if list.is_empty() {
                    routes.remove(name);
                }
            }
        }
        let delta = TableDelta {
            version,
            added: Vec::new(),
            removed: vec![name.to_string()],
        };
        inner.send_to_ready_links(&Frame::with(Kind::TableDelta, 0, &delta));
        if let Some(n) = &inner.nats {
            n.withdraw(name, delta);
        }
        drop(local);
        let _ = inner.table_events.send(TableEvent::Removed {
            name: name.to_string(),
            node: inner.node,
        });
        inner.table_bumped();
        if let Some(d) = &inner.discovery {
            d.set_table_version(version);
        }
    }

    /// The live providers of `name` (this node included when it provides it).
    pub fn providers(&self, name: &str) -> Vec<ProviderInfo> {
        self.inner
            .routes_read()
            .get(name)
            .map(|list| {
                list.iter()
                    .map(|r| ProviderInfo {
                        node: r.node,
                        key: r.key.clone(),
                        descriptor: r.descriptor.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Watch the service table. Each watcher has its own buffer of 1024 events; a watcher that
    /// falls further behind loses the oldest events (a warning is logged) and should resync
    /// with [`providers`](Self::providers).
    pub fn watch(&self) -> TableWatch {
        let rx = self.inner.table_events.subscribe();
        let stream = futures::stream::unfold(rx, |mut rx| async move {
            loop {
                match rx.recv().await {
                    Ok(ev) => return Some((ev, rx)),
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(target: LOG, missed = n, "table watcher lagged");
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        });
        TableWatch {
            stream: Box::pin(stream),
        }
    }

    /// Call endpoint `name` on one of its live providers.
    ///
    /// Errors: `Unavailable` when no provider appeared before the deadline, when the mesh is
    /// shutting down, when a non-idempotent call's link died (its outcome is unknown), or at
    /// once when the link of the provider died under the call and no other provider is left;
    /// `Timeout` when a provider took the call but did not answer in time; otherwise the
    /// provider's own error, with its class.
    pub async fn call(
        &self,
        name: &str,
        method: Option<&str>,
        body: Value,
        options: CallOptions,
    ) -> Result<Value, Error> {
        self.call_with(name, method, &body, options).await
    }

    /// [`call`](Self::call) with any serializable body, encoded straight into the request frame
    /// (no `serde_json::Value` is built on the way). The provider's handler sees it as a
    /// [`Value`], as if it had been sent with `call`.
    pub async fn call_with<B: Serialize + ?Sized + Sync>(
        &self,
        name: &str,
        method: Option<&str>,
        body: &B,
        options: CallOptions,
    ) -> Result<Value, Error> {
        self.call_as(name, method, body, options).await
    }

    /// [`call_with`](Self::call_with), with the result as JSON text: a provider's MessagePack
    /// reply is written out as JSON directly, without a [`Value`] on the way (what a gateway
    /// wants for an HTTP response body). The text is what serializing the `Value` that
    /// [`call_with`](Self::call_with) returns would give.
    pub async fn call_json_with<B: Serialize + ?Sized + Sync>(
        &self,
        name: &str,
        method: Option<&str>,
        body: &B,
        options: CallOptions,
    ) -> Result<RawJson, Error> {
        self.call_as(name, method, body, options).await
    }

    async fn call_as<B: Serialize + ?Sized + Sync, R: ReplyForm>(
        &self,
        name: &str,
        method: Option<&str>,
        body: &B,
        options: CallOptions,
    ) -> Result<R, Error> {
        let inner = &self.inner;
        if inner.draining.load(Ordering::Acquire) {
            return Err(Error::unavailable("the mesh node is shutting down"));
        }
        inner.outgoing.fetch_add(1, Ordering::AcqRel);
        let _out = CountGuard {
            count: &inner.outgoing,
            idle: Some(inner),
        };
        let deadline = Instant::now() + options.timeout.unwrap_or(inner.cfg.timeout);
        let mut changes: Option<watch::Receiver<u64>> = None;
        // Set once the link of a provider died under this call: if no provider is left then, the
        // call fails at once, as a new call to an endpoint without providers does at the proxy,
        // instead of holding the caller until a provider comes back or the deadline.
        let mut lost_provider = false;
        loop {
            let Some((node, target)) = inner.pick(name) else {
                if lost_provider {
                    return Err(Error::unavailable(format!(
                        "no provider for '{name}' is left"
                    )));
                }
                // No provider: wait (bounded) for the table to change.
                let Some(rx) = changes.as_mut() else {
                    changes = Some(inner.table_changed.subscribe());
                    continue;
                };
                if inner.waiting.fetch_add(1, Ordering::AcqRel) >= inner.cfg.max_waiting {
                    inner.waiting.fetch_sub(1, Ordering::AcqRel);
                    return Err(Error::unavailable(format!(
                        "no provider for '{name}' and too many calls are waiting"
                    )));
                }
                let waited = timeout_at(deadline, rx.changed()).await;
                inner.waiting.fetch_sub(1, Ordering::AcqRel);
                match waited {
                    Ok(Ok(())) => continue,
                    _ => return Err(Error::unavailable(format!("no provider for '{name}'"))),
                }
            };
            match target {
                Target::Local(handler) => {
                    inner.local_pending.fetch_add(1, Ordering::Relaxed);
                    let _g = CountGuard {
                        count: &inner.local_pending,
                        idle: None,
                    };
                    let request = RawRequest {
                        name: name.to_string(),
                        method: method.map(str::to_string),
                        body: Body::Value(serde_json::to_value(body).map_err(|e| {
                            Error::bad_request(format!("the call body is not valid JSON: {e}"))
                        })?),
                        deadline: deadline.into_std(),
                        from: inner.node,
                    };
                    return match timeout_at(deadline, handler.call(request)).await {
                        Ok(r) => r.map(R::from_value),
                        Err(_) => Err(Error::timeout(format!("'{name}' did not answer in time"))),
                    };
                }
                Target::Nats | Target::Remote(_) => {
                    let sent = match &target {
                        Target::Remote(link) => {
                            let left = deadline.saturating_duration_since(Instant::now());
                            let msg = RequestMsg {
                                name: name.to_string(),
                                method: method.map(str::to_string),
                                body,
                                timeout_ms: u64::try_from(left.as_millis()).unwrap_or(u64::MAX),
                            };
                            link.request(encode_payload(&msg), deadline).await
                        }
                        _ => match &inner.nats {
                            Some(engine) => {
                                engine
                                    .request(
                                        inner,
                                        name,
                                        None,
                                        method,
                                        body,
                                        deadline,
                                        options.idempotent,
                                    )
                                    .await
                            }
                            None => Err(CallError::NotSent),
                        },
                    };
                    let at = match &target {
                        Target::Remote(_) => Some(node),
                        _ => None,
                    };
                    match sent {
                        Ok(payload) => return R::from_payload(&payload),
                        Err(CallError::NotSent) => lost_provider = true,
                        Err(CallError::Lost) if options.idempotent && Instant::now() < deadline => {
                            tracing::debug!(target: LOG, %name, peer = %node, "provider lost; retrying an idempotent call");
                            lost_provider |= at.is_some();
                        }
                        Err(CallError::NoResponders) => {
                            // The table still lists a provider that NATS no longer has (or
                            // not yet): ask again shortly, within the deadline.
                            let at = deadline.min(Instant::now() + NatsEngine::retry_delay());
                            tokio::time::sleep_until(at).await;
                            if Instant::now() >= deadline {
                                return Err(CallError::NoResponders.into_error(name, None));
                            }
                        }
                        Err(e) => return Err(e.into_error(name, at)),
                    }
                }
            }
        }
    }

    /// Call `name` on one given node, whether or not it is known to provide it (a node that does
    /// not answers NotFound). Not retried; `Unavailable` when there is no link to the node.
    pub async fn call_on(
        &self,
        node: NodeId,
        name: &str,
        method: Option<&str>,
        body: Value,
        options: CallOptions,
    ) -> Result<Value, Error> {
        let inner = &self.inner;
        let deadline = Instant::now() + options.timeout.unwrap_or(inner.cfg.timeout);
        if node == inner.node {
            let Some(handler) = inner.local_handler(name) else {
                return Err(Error::not_found(format!(
                    "node {node} does not provide '{name}'"
                )));
            };
            let request = RawRequest {
                name: name.to_string(),
                method: method.map(str::to_string),
                body: Body::Value(body),
                deadline: deadline.into_std(),
                from: inner.node,
            };
            return match timeout_at(deadline, handler.call(request)).await {
                Ok(r) => r,
                Err(_) => Err(Error::timeout(format!("'{name}' did not answer in time"))),
            };
        }
        let sent = if let Some(engine) = &inner.nats {
            engine
                .request(inner, name, Some(node), method, &body, deadline, false)
                .await
        } else {
            let link = lock(&inner.links).get(&node).cloned();
            let Some(link) = link else {
                return Err(Error::unavailable(format!("no link to node {node}")));
            };
            let left = deadline.saturating_duration_since(Instant::now());
            let msg = RequestMsg {
                name: name.to_string(),
                method: method.map(str::to_string),
                body: &body,
                timeout_ms: u64::try_from(left.as_millis()).unwrap_or(u64::MAX),
            };
            link.request(encode_payload(&msg), deadline).await
        };
        match sent {
            Ok(payload) => Value::from_payload(&payload),
            Err(e) => Err(e.into_error(name, Some(node))),
        }
    }

    /// Round-trip time to `node` over its link.
    pub async fn ping(&self, node: NodeId) -> Result<Duration, Error> {
        if let Some(engine) = &self.inner.nats {
            return engine
                .ping(node, Instant::now() + self.inner.cfg.timeout)
                .await;
        }
        let link = lock(&self.inner.links).get(&node).cloned();
        match link {
            Some(l) => l.ping(Instant::now() + self.inner.cfg.timeout).await,
            None => Err(Error::unavailable(format!("no link to node {node}"))),
        }
    }

    /// With NATS discovery and a deferred start: begin discovery now (once).
    pub(crate) fn start_discovery(&self) {
        if let Some(engine) = &self.inner.nats {
            engine.start(&self.inner);
        }
    }

    /// Whether this node runs on NATS rather than peer links.
    pub fn on_nats(&self) -> bool {
        self.inner.nats.is_some()
    }

    /// The nodes this node has a link with (none on NATS).
    pub fn linked_peers(&self) -> Vec<NodeId> {
        lock(&self.inner.links).keys().copied().collect()
    }

    /// Publish `data` on `topic` to local subscribers and to every peer that subscribed to it.
    /// Events are fire-and-forget: a peer whose write queue is full misses this event (a
    /// warning is logged).
    pub fn publish(&self, topic: &str, data: Value) {
        let inner = &self.inner;
        let mut frame: Option<Frame> = None;
        {
            let links = lock(&inner.links);
            for l in links.values() {
                if !lock(&l.remote_topics).contains(topic) {
                    continue;
                }
                let f = frame
                    .get_or_insert_with(|| {
                        Frame::with(
                            Kind::Event,
                            0,
                            &EventMsg {
                                topic: topic.to_string(),
                                data: &data,
                            },
                        )
                    })
                    .clone();
                if let Err(crate::outbox::QueueError::Full) = l.out.try_send_batched(&f) {
                    tracing::warn!(target: LOG, peer = %l.peer, %topic, "write queue full; event dropped for this peer");
                }
            }
        }
        if let Some(n) = &inner.nats {
            n.publish(topic, &data);
        }
        inner.deliver_local(topic, data);
    }

    /// Receive the events published on `topic` anywhere in the mesh from now on.
    pub fn subscribe(&self, topic: &str) -> Subscription {
        let inner = &self.inner;
        let mut local = lock(&inner.local);
        let rx = match local.topics.get_mut(topic) {
            Some(t) => {
                t.count += 1;
                t.tx.subscribe()
            }
            None => {
                let (tx, rx) = broadcast::channel(TOPIC_CAPACITY);
                local
                    .topics
                    .insert(topic.to_string(), TopicState { tx, count: 1 });
                inner.send_to_ready_links(&Frame::with(
                    Kind::Subscribe,
                    0,
                    &Topic {
                        topic: topic.to_string(),
                    },
                ));
                if let Some(n) = &inner.nats {
                    n.subscribe(topic);
                }
                rx
            }
        };
        drop(local);
        let stream = futures::stream::unfold(rx, |mut rx| async move {
            loop {
                match rx.recv().await {
                    Ok(v) => return Some((v, rx)),
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(target: LOG, missed = n, "subscriber lagged; events lost");
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        });
        Subscription {
            topic: topic.to_string(),
            inner: inner.clone(),
            stream: Box::pin(stream),
        }
    }

    /// cote-style: provide `kind` with a null descriptor.
    pub fn respond(&self, kind: &str, handler: impl Handler) {
        self.provide(kind, Value::Null, handler);
    }

    /// cote-style: call `kind` with default options.
    pub async fn request(&self, kind: &str, payload: Value) -> Result<Value, Error> {
        self.call(kind, None, payload, CallOptions::default()).await
    }

    /// Drain and stop: leaving beacon and goaway, refuse new calls, let the calls in flight
    /// (both ways) finish within the drain timeout, then close every link.
    pub async fn shutdown(&self) {
        let inner = &self.inner;
        if inner.draining.swap(true, Ordering::AcqRel) {
            inner.shutdown.cancelled().await;
            return;
        }
        if let Some(engine) = &inner.nats {
            engine.leave().await;
            let drain_deadline = Instant::now() + inner.cfg.drain_timeout;
            let idle = || {
                inner.serving.load(Ordering::Acquire) == 0
                    && inner.outgoing.load(Ordering::Acquire) == 0
            };
            if !inner.wait_until(drain_deadline, idle).await {
                tracing::warn!(target: LOG, node = %inner.node, serving = inner.serving.load(Ordering::Acquire), "drain timeout passed; closing with calls in flight");
            }
            engine.close().await;
            inner.shutdown.cancel();
            tracing::debug!(target: LOG, node = %inner.node, "mesh node stopped");
            return;
        }
        // Goaway first: once a peer acknowledges it, the peer routes nothing new here, and
        // every call it sent before is already read. Then the leaving beacon.
        inner.send_to_ready_links(&Frame::with(
            Kind::Goaway,
            0,
            &Goaway {
                reason: "shutting down".into(),
                ack: false,
            },
        ));
        inner.accept_stop.cancel();
        let drain_deadline = Instant::now() + inner.cfg.drain_timeout;
        let all_acked = || {
            lock(&inner.links)
                .values()
                .all(|l| l.closed.is_cancelled() || l.goaway_acked.load(Ordering::Acquire))
        };
        let idle = || {
            inner.serving.load(Ordering::Acquire) == 0
                && inner.outgoing.load(Ordering::Acquire) == 0
        };
        let mut drained = inner.wait_until(drain_deadline, all_acked).await;
        if let Some(d) = &inner.discovery {
            d.leave().await;
        }
        drained = drained && inner.wait_until(drain_deadline, idle).await;
        if !drained {
            tracing::warn!(target: LOG, node = %inner.node, serving = inner.serving.load(Ordering::Acquire), "drain timeout passed; closing with calls in flight");
        }
        let links: Vec<Arc<Link>> = lock(&inner.links).values().cloned().collect();
        inner.shutdown.cancel();
        for l in links {
            l.join_writer(Duration::from_secs(1)).await;
        }
        tracing::debug!(target: LOG, node = %inner.node, "mesh node stopped");
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
        let inner = &self.inner;
        let mut local = lock(&inner.local);
        let last = match local.topics.get_mut(&self.topic) {
            Some(t) => {
                t.count = t.count.saturating_sub(1);
                t.count == 0
            }
            None => false,
        };
        if last {
            local.topics.remove(&self.topic);
            if let Some(n) = &inner.nats {
                n.unsubscribe(&self.topic);
            }
            inner.send_to_ready_links(&Frame::with(
                Kind::Unsubscribe,
                0,
                &Topic {
                    topic: self.topic.clone(),
                },
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn lone_node() -> (Mesh, mpsc::Sender<PeerEvent>) {
        let (tx, rx) = mpsc::channel(4);
        let mesh = Mesh::builder()
            .environment("unit")
            .peers(rx)
            .start()
            .await
            .expect("starts");
        (mesh, tx)
    }

    #[tokio::test(start_paused = true)]
    async fn no_provider_waits_until_the_deadline_then_unavailable() {
        let (mesh, _peers) = lone_node().await;
        let started = Instant::now();
        let opts = CallOptions {
            timeout: Some(Duration::from_secs(3)),
            idempotent: false,
        };
        let err = mesh
            .call("nobody", None, Value::Null, opts)
            .await
            .expect_err("no provider");
        assert_eq!(err.kind(), plume::ErrorKind::Unavailable);
        assert_eq!(started.elapsed(), Duration::from_secs(3));
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiting_call_takes_a_provider_that_appears_before_the_deadline() {
        let (mesh, _peers) = lone_node().await;
        let opts = CallOptions {
            timeout: Some(Duration::from_secs(3)),
            idempotent: false,
        };
        let call = tokio::spawn({
            let mesh = mesh.clone();
            async move { mesh.call("later", None, Value::Null, opts).await }
        });
        tokio::time::sleep(Duration::from_secs(2)).await;
        mesh.respond("later", |_r: Request| async move { Ok(Value::from(5)) });
        assert_eq!(
            call.await.expect("joined").expect("answered"),
            Value::from(5)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_local_handler_past_its_deadline_gives_timeout() {
        let (mesh, _peers) = lone_node().await;
        mesh.respond("slow", |_r: Request| async move {
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok(Value::Null)
        });
        let started = Instant::now();
        let opts = CallOptions {
            timeout: Some(Duration::from_secs(2)),
            idempotent: false,
        };
        let err = mesh
            .call("slow", None, Value::Null, opts)
            .await
            .expect_err("late");
        assert_eq!(err.kind(), plume::ErrorKind::Timeout);
        assert_eq!(started.elapsed(), Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_refuses_new_calls_and_drains_in_flight_ones() {
        let (mesh, _peers) = lone_node().await;
        mesh.respond("job", |_r: Request| async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            Ok(Value::from("done"))
        });
        let call = tokio::spawn({
            let mesh = mesh.clone();
            async move { mesh.request("job", Value::Null).await }
        });
        tokio::task::yield_now().await;
        let started = Instant::now();
        mesh.shutdown().await;
        assert!(
            started.elapsed() >= Duration::from_millis(900),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(
            call.await.expect("joined").expect("finished"),
            Value::from("done")
        );
        let err = mesh.request("job", Value::Null).await.expect_err("refused");
        assert_eq!(err.kind(), plume::ErrorKind::Unavailable);
    }

    /// A request payload with a body of raw MessagePack bytes.
    fn request_payload(name: &str, body: &[u8]) -> bytes::Bytes {
        let mut payload = vec![0x84];
        let name = [
            &[0xa0 | u8::try_from(name.len()).expect("short name")][..],
            name.as_bytes(),
        ]
        .concat();
        for (key, value) in [
            ("name", &name[..]),
            ("method", &[0xc0][..]),
            ("body", body),
            ("timeout_ms", &[5][..]),
        ] {
            payload.push(0xa0 | u8::try_from(key.len()).expect("short key"));
            payload.extend_from_slice(key.as_bytes());
            payload.extend_from_slice(value);
        }
        bytes::Bytes::from(payload)
    }

    /// A plain handler's body is decoded with the head, a raw handler's is left to it; a body
    /// that is MessagePack but not JSON (a binary string) still has a head, so the link reader
    /// serves it (the link stays up), and the call answers BadRequest.
    #[tokio::test]
    async fn requests_decode_for_the_kind_of_their_handler() {
        let (mesh, _peers) = lone_node().await;
        mesh.respond("plain", |r: Request| async move { Ok(r.body) });
        mesh.provide_raw("raw", Value::Null, |r: RawRequest| async move {
            assert!(matches!(r.body, Body::Msgpack(_)), "{:?}", r.body);
            r.body.decode::<Value>()
        });
        let inner = &mesh.inner;
        let seven = [7u8];
        let binary = [0xc4, 2, 1, 2];
        for name in ["plain", "raw"] {
            let (req, handler) = inner
                .decode_request(request_payload(name, &seven))
                .expect("a request");
            assert_eq!(
                (req.name.as_str(), req.method.as_deref(), req.timeout_ms),
                (name, None, 5)
            );
            assert_eq!(matches!(req.body, Body::Value(_)), name == "plain");
            let handler = handler.expect("provided");
            let call = |body| RawRequest {
                name: name.to_owned(),
                method: None,
                body,
                deadline: std::time::Instant::now(),
                from: NodeId(1),
            };
            assert_eq!(handler.call(call(req.body)).await, Ok(Value::from(7)));

            let (req, _) = inner
                .decode_request(request_payload(name, &binary))
                .expect("the head decodes");
            assert!(matches!(req.body, Body::Msgpack(_)));
            let err = handler.call(call(req.body)).await.expect_err("not JSON");
            assert_eq!(err.kind(), plume::ErrorKind::BadRequest);
        }
        let (req, handler) = inner
            .decode_request(request_payload("nobody", &seven))
            .expect("a request");
        assert_eq!(req.name, "nobody");
        assert!(handler.is_none());
        assert!(
            inner
                .decode_request(bytes::Bytes::from_static(b"\x84junk"))
                .is_err()
        );
    }

    #[test]
    fn backoff_doubles_with_jitter_and_caps() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let expected = [100u64, 200, 400, 800, 1600, 2000, 2000];
        for base in expected {
            let d = b.next_delay().as_secs_f64() * 1000.0;
            let base = base as f64;
            assert!(
                d >= base * 0.75 - 1e-6 && d < base * 1.25 + 1e-6,
                "{d} vs {base}"
            );
        }
        b.reset();
        let d = b.next_delay();
        assert!(d < Duration::from_millis(126));
    }
}
