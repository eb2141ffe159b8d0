//! The NATS engine: the mesh on a NATS server instead of peer links.
//!
//! Subjects (every Plume subject starts with `plume.{env}`, the environment as one escaped
//! token, so environments never see each other):
//! - `plume.{env}.disc.{key}.{node}`: hellos (heartbeats, and `leaving`);
//! - `plume.{env}.table.{node}`: service-table deltas;
//! - `plume.{env}.node.{node}.{table|call|ping}`: a node's own request subjects;
//! - `plume.{env}.svc.{endpoint}`: calls, one queue group per endpoint (NATS balances replicas);
//! - `plume.{env}.svcb.{endpoint}`: batches of calls, the same way ([`batch`]);
//! - `plume.{env}.evt.{topic}`: events;
//! - `$SRV.{PING|INFO|STATS}[.{name}[.{id}]]`: the NATS service API, for standard tooling
//!   ([`srv`]).
//!
//! See `docs/protocol.md`, "NATS backend".

mod batch;
pub(crate) mod inbox;
#[cfg(test)]
mod props;
mod remote;
mod serve;
mod srv;
mod subjects;
mod table;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

use async_nats::{HeaderMap, ServerAddr, Subject};
use backon::{BackoffBuilder, ExponentialBuilder};
use bytes::Bytes;
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::{Semaphore, mpsc};
use tokio::time::{Instant, timeout};
use tokio_util::sync::CancellationToken;

use crate::discovery::{DiscoveryConfig, NodeId, signed};
use crate::engine::{Engine, EngineKind, Remote, Sink};
use crate::protocol::{PROTOCOL_VERSION, TableDelta};
use plume::trace::TraceContext;

/// An event waiting for the publisher task: its topic, data and trace context.
type QueuedEvent = (String, Value, Option<TraceContext>);
use crate::sync::lock;
use remote::Provider;
use srv::EndpointStats;
use subjects::token;

const LOG: &str = "plume::nats";
/// The header naming the sending node.
const NODE_HEADER: &str = "Plume-Node";
/// With a mesh secret: the HMAC of an announcement (hello, table delta, table snapshot), hex.
const MAC_HEADER: &str = "Plume-Mac";
/// Events queued for the NATS connection before new ones are dropped.
const EVENT_QUEUE: usize = 4096;
/// Snapshot answers queued for the engine loop.
const RESULT_QUEUE: usize = 256;
/// Calls waiting for their replies, at most (beyond: refused as busy at once).
const MAX_CALLS: usize = 1 << 16;
/// Call subjects kept (one per endpoint called), at most.
const CALL_SUBJECTS: usize = 1024;

/// A hello: a node's heartbeat.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Hello {
    node: String,
    key: String,
    version: u64,
    protocol: u16,
    leaving: bool,
}

/// A table delta with its sender.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Delta {
    node: String,
    key: String,
    #[serde(flatten)]
    delta: TableDelta,
}

/// Commands to the engine loop, in order.
#[derive(Debug)]
enum Ctl {
    Announce(TableDelta),
    Subscribe(String),
    Unsubscribe(String),
    Hello,
}

/// The NATS side of a mesh node.
pub(crate) struct NatsEngine {
    /// Itself, for the [`Remote`]s it hands out.
    this: Weak<NatsEngine>,
    client: async_nats::Client,
    /// Calls, their replies through one subscription.
    inbox: inbox::NatsInbox,
    prefix: String,
    node: NodeId,
    /// `node` as text, as the header every message carries names it.
    node_name: String,
    key: String,
    environment: String,
    heartbeat: Duration,
    node_timeout: Duration,
    /// The mesh secret: announcements are signed with it, and unsigned ones ignored.
    secret: Option<Arc<[u8]>>,
    /// Control commands: rare and issued from synchronous API calls that cannot wait, and the
    /// loop must see every one of them in order, so this channel is unbounded.
    ctl: mpsc::UnboundedSender<Ctl>,
    ctl_rx: Mutex<Option<mpsc::UnboundedReceiver<Ctl>>>,
    events: mpsc::Sender<QueuedEvent>,
    events_rx: Mutex<Option<mpsc::Receiver<QueuedEvent>>>,
    started: SystemTime,
    stats: Mutex<HashMap<String, EndpointStats>>,
    /// The subjects of the endpoints called, and their batch subjects (see
    /// [`NatsEngine::call_subject`]).
    call_subjects: Mutex<HashMap<String, (Subject, Subject), foldhash::fast::FixedState>>,
    endpoints: Mutex<HashMap<String, CancellationToken>>,
    permits: Arc<Semaphore>,
    served: AtomicU64,
    stop: CancellationToken,
    version: AtomicU64,
    peers_seen: AtomicUsize,
    /// The nodes the engine loop tracks (for the mesh monitor), updated when they change.
    known: Mutex<Vec<NodeId>>,
}

impl std::fmt::Debug for NatsEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsEngine")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// The wait before reconnection attempt `attempts`: from 35 ms, doubling up to 700 ms, each with
/// a random jitter of up to its own length (so nodes that lost one server do not all come back
/// at the same instant).
fn reconnect_delay(attempts: usize) -> Duration {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(35))
        .with_max_delay(Duration::from_millis(700))
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .build()
        .nth(attempts.min(16))
        .unwrap_or(Duration::from_millis(700))
}

/// Parse a comma-separated list of server URLs.
fn servers(url: &str) -> std::io::Result<Vec<ServerAddr>> {
    url.split(',')
        .map(|u| {
            u.trim().parse::<ServerAddr>().map_err(|e| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!("PLUME_NATS_URL: {e}"),
                )
            })
        })
        .collect()
}

impl NatsEngine {
    /// Connect (in the background: a node starts even while NATS is away, and every
    /// disconnection is retried for ever).
    pub(crate) async fn connect(
        url: &str,
        node: NodeId,
        environment: &str,
        key: &str,
        discovery: &DiscoveryConfig,
        max_in_flight: usize,
    ) -> std::io::Result<Arc<Self>> {
        discovery
            .validate()
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        let (heartbeat, node_timeout) = (discovery.heartbeat, discovery.node_timeout);
        let secret = discovery.secret.clone();
        let addrs = servers(url)?;
        let (conn_tx, mut conn_rx) = mpsc::channel::<async_nats::Event>(16);
        let client = async_nats::ConnectOptions::new()
            .name(format!("plume {key} {node}"))
            .retry_on_initial_connect()
            .max_reconnects(None)
            .connection_timeout(node_timeout)
            .reconnect_delay_callback(reconnect_delay)
            .event_callback(move |event| {
                let tx = conn_tx.clone();
                async move {
                    let _ = tx.try_send(event);
                }
            })
            .connect(addrs)
            .await
            .map_err(|e| std::io::Error::other(format!("NATS: {e}")))?;
        // Unbounded on purpose: see the `ctl` field.
        #[allow(clippy::disallowed_methods)]
        let (ctl, ctl_rx) = mpsc::unbounded_channel();
        let (events, events_rx) = mpsc::channel(EVENT_QUEUE);
        let engine = Arc::new_cyclic(|this| Self {
            this: this.clone(),
            inbox: inbox::NatsInbox::reusing_replies(client.clone(), MAX_CALLS).batching(true),
            client,
            prefix: format!("plume.{}", token(environment)),
            node,
            node_name: node.to_string(),
            key: key.to_owned(),
            environment: environment.to_owned(),
            heartbeat,
            node_timeout,
            secret,
            ctl,
            ctl_rx: Mutex::new(Some(ctl_rx)),
            events,
            events_rx: Mutex::new(Some(events_rx)),
            started: SystemTime::now(),
            stats: Mutex::new(HashMap::new()),
            call_subjects: Mutex::new(HashMap::default()),
            endpoints: Mutex::new(HashMap::new()),
            permits: Arc::new(Semaphore::new(max_in_flight)),
            served: AtomicU64::new(0),
            stop: CancellationToken::new(),
            version: AtomicU64::new(0),
            peers_seen: AtomicUsize::new(0),
            known: Mutex::new(Vec::new()),
        });
        // Connection events: log outages once, and say hello again on every reconnection.
        let weak = Arc::downgrade(&engine);
        tokio::spawn(async move {
            while let Some(event) = conn_rx.recv().await {
                let Some(engine) = weak.upgrade() else { return };
                match event {
                    async_nats::Event::Connected => {
                        tracing::info!(target: LOG, node = %engine.node, "connected to NATS");
                        let _ = engine.ctl.send(Ctl::Hello);
                    }
                    async_nats::Event::Disconnected => {
                        tracing::warn!(target: LOG, node = %engine.node, "NATS connection lost; reconnecting");
                    }
                    other => tracing::debug!(target: LOG, event = %other, "NATS event"),
                }
            }
        });
        Ok(engine)
    }

    fn subject(&self, parts: &[&str]) -> String {
        let mut s = self.prefix.clone();
        for p in parts {
            s.push('.');
            s.push_str(p);
        }
        s
    }

    /// The subject of a call to endpoint `name`'s queue group, and of a batch of calls to it:
    /// made once per endpoint and kept (a clone is a reference count; the map is cleared when
    /// it reaches its bound).
    fn call_subject(&self, name: &str) -> (Subject, Subject) {
        let mut kept = lock(&self.call_subjects);
        if let Some(subjects) = kept.get(name) {
            return subjects.clone();
        }
        if kept.len() >= CALL_SUBJECTS {
            kept.clear();
        }
        let subjects = (
            Subject::from(self.svc_subject(name)),
            Subject::from(self.batch_subject(name)),
        );
        kept.insert(name.to_owned(), subjects.clone());
        subjects
    }

    /// The subject of endpoint `name`'s queue group (built in one string).
    fn svc_subject(&self, name: &str) -> String {
        self.endpoint_subject("svc", name)
    }

    /// The subject of the queue group taking batches of calls to endpoint `name`.
    fn batch_subject(&self, name: &str) -> String {
        self.endpoint_subject("svcb", name)
    }

    fn endpoint_subject(&self, what: &str, name: &str) -> String {
        let mut s = String::with_capacity(self.prefix.len() + what.len() + 2 + name.len() + 8);
        s.push_str(&self.prefix);
        s.push('.');
        s.push_str(what);
        s.push('.');
        subjects::push_token(&mut s, name);
        s
    }

    fn node_subject(&self, node: NodeId, what: &str) -> String {
        self.subject(&["node", &node.to_string(), what])
    }

    fn headers(&self) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(NODE_HEADER, self.node_name.as_str());
        h
    }

    /// The headers of an announcement `what` by `node`: signed when there is a secret.
    fn announce_headers(&self, what: &str, node: NodeId, payload: &[u8]) -> HeaderMap {
        let mut h = self.headers();
        if let Some(secret) = &self.secret {
            let label = format!("nats-{what}:{node}");
            let tag = signed::tag(secret, &label, &self.environment, payload);
            h.insert(MAC_HEADER, tag.as_str());
        }
        h
    }

    /// Whether an announcement `what` by `node` may be read: signed with our secret when we
    /// have one, unsigned when we have none.
    fn verified(&self, what: &str, node: NodeId, m: &async_nats::Message) -> bool {
        let tag = m
            .headers
            .as_ref()
            .and_then(|h| h.get(MAC_HEADER))
            .map(|v| v.as_str());
        let ok = match (&self.secret, tag) {
            (None, None) => true,
            (None, Some(_)) | (Some(_), None) => false,
            (Some(secret), Some(tag)) => {
                let label = format!("nats-{what}:{node}");
                signed::check(secret, &label, &self.environment, &m.payload, tag)
            }
        };
        if !ok {
            tracing::debug!(target: LOG, node = %self.node, peer = %node, what, "ignoring an unsigned or badly signed announcement");
        }
        ok
    }

    fn hello(&self, leaving: bool) -> (String, Bytes) {
        let hello = Hello {
            node: self.node.to_string(),
            key: self.key.clone(),
            version: self.version.load(Ordering::Acquire),
            protocol: PROTOCOL_VERSION,
            leaving,
        };
        (
            self.subject(&["disc", &token(&self.key), &self.node.to_string()]),
            Bytes::from(serde_json::to_vec(&hello).unwrap_or_default()),
        )
    }

    async fn say_hello(&self, leaving: bool) {
        let (subject, body) = self.hello(leaving);
        let headers = self.announce_headers("hello", self.node, &body);
        if let Err(e) = self
            .client
            .publish_with_headers(subject, headers, body)
            .await
        {
            tracing::debug!(target: LOG, error = %e, "hello not sent");
        }
    }

    /// Start the loop and the serving tasks.
    fn start_loops(self: &Arc<Self>, sink: &Arc<dyn Sink>) {
        let Some(ctl_rx) = lock(&self.ctl_rx).take() else {
            return;
        };
        let events_rx = lock(&self.events_rx).take();
        let weak = Arc::downgrade(sink);
        tokio::spawn(self.clone().run(weak, ctl_rx));
        if let Some(rx) = events_rx {
            tokio::spawn(self.clone().publisher(rx));
        }
    }

    /// Drain: say we leave, stop taking calls (other replicas get them), and return; the mesh
    /// then waits for the calls in flight and calls [`Engine::close`].
    async fn leave(&self) {
        self.say_hello(true).await;
        let stops: Vec<CancellationToken> = lock(&self.endpoints).drain().map(|(_, t)| t).collect();
        for s in stops {
            s.cancel();
        }
        let _ = timeout(self.heartbeat, self.client.flush()).await;
    }

    /// Close the connection after flushing what is queued.
    async fn shut(&self) {
        self.stop.cancel();
        let _ = timeout(Duration::from_secs(1), self.client.flush()).await;
        if let Err(e) = timeout(Duration::from_secs(1), self.client.drain()).await {
            tracing::debug!(target: LOG, error = %e, "NATS drain timed out");
        }
    }
}

impl Engine for NatsEngine {
    fn kind(&self) -> EngineKind {
        EngineKind::Nats
    }

    fn start(self: Arc<Self>, sink: Arc<dyn Sink>) {
        self.start_loops(&sink);
    }

    fn announce(&self, delta: &TableDelta) {
        self.version.store(delta.version, Ordering::Release);
        let _ = self.ctl.send(Ctl::Announce(delta.clone()));
    }

    fn subscribe(&self, topic: &str) {
        let _ = self.ctl.send(Ctl::Subscribe(topic.to_owned()));
    }

    fn unsubscribe(&self, topic: &str) {
        let _ = self.ctl.send(Ctl::Unsubscribe(topic.to_owned()));
    }

    fn publish(&self, topic: &str, data: &Value, trace: Option<TraceContext>) {
        if let Err(mpsc::error::TrySendError::Full(_)) =
            self.events
                .try_send((topic.to_owned(), data.clone(), trace))
        {
            tracing::warn!(target: LOG, %topic, "NATS event queue full; event dropped");
        }
    }

    fn direct(&self, node: NodeId) -> Option<Arc<dyn Remote>> {
        let engine = self.this.upgrade()?;
        Some(Arc::new(Provider {
            engine,
            node,
            pending: AtomicUsize::new(0),
            direct: true,
        }))
    }

    fn peers(&self) -> Vec<NodeId> {
        Vec::new()
    }

    fn known_nodes(&self) -> Vec<NodeId> {
        lock(&self.known).clone()
    }

    fn drain(&self, _deadline: Instant) -> BoxFuture<'_, bool> {
        Box::pin(async move {
            self.leave().await;
            true
        })
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(self.shut())
    }
}
