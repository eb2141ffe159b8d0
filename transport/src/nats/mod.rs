//! The NATS engine: the mesh on a NATS server instead of peer links.
//!
//! Subjects (every Plume subject starts with `plume.{env}`, the environment as one escaped
//! token, so environments never see each other):
//! - `plume.{env}.disc.{key}.{node}`: hellos (heartbeats, and `leaving`);
//! - `plume.{env}.table.{node}`: service-table deltas;
//! - `plume.{env}.node.{node}.{table|call|ping}`: a node's own request subjects;
//! - `plume.{env}.svc.{endpoint}`: calls, one queue group per endpoint (NATS balances replicas);
//! - `plume.{env}.evt.{topic}`: events;
//! - `$SRV.{PING|INFO|STATS}[.{name}[.{id}]]`: the NATS service API, for standard tooling
//!   ([`srv`]).
//!
//! See `docs/protocol.md`, "NATS backend".

mod srv;
mod subjects;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

use async_nats::{HeaderMap, Message, ServerAddr, Subscriber};
use bytes::Bytes;
use futures::StreamExt;
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::{Semaphore, broadcast, mpsc};
use tokio::time::{Instant, timeout};
use tokio_util::sync::CancellationToken;

use crate::discovery::{DiscoveryConfig, NodeId};
use crate::engine::{
    Call, CallError, Counted, Engine, EngineKind, Remote, Removal, Sink, response,
};
use crate::protocol::{
    PROTOCOL_VERSION, TableDelta, TableSnapshot, decode_payload, encode_payload,
};
use crate::sync::lock;
use plume::Error;
use srv::EndpointStats;
use subjects::{service_name, token};

const LOG: &str = "plume::nats";
/// The header naming the sending node.
const NODE_HEADER: &str = "Plume-Node";
/// Events queued for the NATS connection before new ones are dropped.
const EVENT_QUEUE: usize = 4096;
/// Snapshot answers queued for the engine loop.
const RESULT_QUEUE: usize = 256;
/// Removal notices kept for idempotent calls in flight.
const REMOVED_CAPACITY: usize = 256;

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
    prefix: String,
    node: NodeId,
    key: String,
    environment: String,
    heartbeat: Duration,
    node_timeout: Duration,
    /// Control commands: rare and issued from synchronous API calls that cannot wait, and the
    /// loop must see every one of them in order, so this channel is unbounded.
    ctl: mpsc::UnboundedSender<Ctl>,
    ctl_rx: Mutex<Option<mpsc::UnboundedReceiver<Ctl>>>,
    events: mpsc::Sender<(String, Value)>,
    events_rx: Mutex<Option<mpsc::Receiver<(String, Value)>>>,
    started: SystemTime,
    stats: Mutex<HashMap<String, EndpointStats>>,
    endpoints: Mutex<HashMap<String, CancellationToken>>,
    permits: Arc<Semaphore>,
    served: AtomicU64,
    stop: CancellationToken,
    version: AtomicU64,
    peers_seen: AtomicUsize,
    /// The names of endpoints whose provider left: an idempotent call in flight to one of them
    /// is sent again.
    removed: broadcast::Sender<String>,
}

impl std::fmt::Debug for NatsEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsEngine")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
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
        let addrs = servers(url)?;
        let (conn_tx, mut conn_rx) = mpsc::channel::<async_nats::Event>(16);
        let client = async_nats::ConnectOptions::new()
            .name(format!("plume {key} {node}"))
            .retry_on_initial_connect()
            .max_reconnects(None)
            .connection_timeout(node_timeout)
            .reconnect_delay_callback(|attempts| {
                Duration::from_millis((50u64 << attempts.min(5)).min(1000))
            })
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
            client,
            prefix: format!("plume.{}", token(environment)),
            node,
            key: key.to_owned(),
            environment: environment.to_owned(),
            heartbeat,
            node_timeout,
            ctl,
            ctl_rx: Mutex::new(Some(ctl_rx)),
            events,
            events_rx: Mutex::new(Some(events_rx)),
            started: SystemTime::now(),
            stats: Mutex::new(HashMap::new()),
            endpoints: Mutex::new(HashMap::new()),
            permits: Arc::new(Semaphore::new(max_in_flight)),
            served: AtomicU64::new(0),
            stop: CancellationToken::new(),
            version: AtomicU64::new(0),
            peers_seen: AtomicUsize::new(0),
            removed: broadcast::Sender::new(REMOVED_CAPACITY),
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

    fn svc_subject(&self, name: &str) -> String {
        self.subject(&["svc", &token(name)])
    }

    fn node_subject(&self, node: NodeId, what: &str) -> String {
        self.subject(&["node", &node.to_string(), what])
    }

    fn headers(&self) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(NODE_HEADER, self.node.to_string().as_str());
        h
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
        if let Err(e) = self.client.publish(subject, body).await {
            tracing::debug!(target: LOG, error = %e, "hello not sent");
        }
    }

    /// Send `call` through the queue group of its endpoint, or to `node`'s own subject when
    /// given.
    async fn request(&self, call: Call<'_>, node: Option<NodeId>) -> Result<Bytes, CallError> {
        let name = call.name;
        let left = call.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(CallError::Timeout);
        }
        let subject = match node {
            Some(n) => self.node_subject(n, "call"),
            None => self.svc_subject(name),
        };
        let request = async_nats::Request::new()
            .payload(call.payload)
            .headers(self.headers())
            .timeout(Some(left));
        // An idempotent call is sent again when a provider of the endpoint leaves meanwhile: it
        // may have been the one holding the call.
        let mut removals = self.removed.subscribe();
        let idempotent = call.idempotent;
        let removed = async {
            if !idempotent || node.is_some() {
                return std::future::pending().await;
            }
            loop {
                match removals.recv().await {
                    Ok(n) if n == name => return,
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => {
                        return std::future::pending().await;
                    }
                }
            }
        };
        let sent = tokio::select! {
            r = self.client.send_request(subject, request) => r,
            () = removed => return Err(CallError::Lost),
        };
        match sent {
            Ok(reply) => Ok(reply.payload),
            Err(e) => Err(match e.kind() {
                async_nats::RequestErrorKind::NoResponders => CallError::NoResponders,
                async_nats::RequestErrorKind::TimedOut => CallError::Timeout,
                async_nats::RequestErrorKind::MaxPayloadExceeded
                | async_nats::RequestErrorKind::InvalidSubject => CallError::Refused(Box::new(e)),
                async_nats::RequestErrorKind::Other => {
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

    async fn publisher(self: Arc<Self>, mut rx: mpsc::Receiver<(String, Value)>) {
        loop {
            let next = tokio::select! {
                () = self.stop.cancelled() => return,
                n = rx.recv() => n,
            };
            let Some((topic, data)) = next else { return };
            let subject = self.subject(&["evt", &token(&topic)]);
            let body = Bytes::from(serde_json::to_vec(&data).unwrap_or_default());
            if let Err(e) = self
                .client
                .publish_with_headers(subject, self.headers(), body)
                .await
            {
                tracing::debug!(target: LOG, error = %e, %topic, "event not published");
            }
        }
    }

    async fn run(self: Arc<Self>, sink: Weak<dyn Sink>, mut ctl: mpsc::UnboundedReceiver<Ctl>) {
        let subscribed = async {
            let disc = self.client.subscribe(self.subject(&["disc", ">"])).await?;
            let table = self.client.subscribe(self.subject(&["table", "*"])).await?;
            let own = self
                .client
                .subscribe(self.subject(&["node", &self.node.to_string(), "*"]))
                .await?;
            let name = service_name(&self.key);
            let id = self.node.to_string();
            let mut srv = Vec::new();
            for verb in ["PING", "INFO", "STATS"] {
                for s in [
                    format!("$SRV.{verb}"),
                    format!("$SRV.{verb}.{name}"),
                    format!("$SRV.{verb}.{name}.{id}"),
                ] {
                    srv.push(self.client.subscribe(s).await?);
                }
            }
            Ok::<_, async_nats::SubscribeError>((disc, table, own, srv))
        };
        let (mut disc, mut table, own, srv) = match subscribed.await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(target: LOG, error = %e, "cannot subscribe on NATS; this node stays alone");
                return;
            }
        };
        tokio::spawn(self.clone().serve_own(sink.clone(), own));
        tokio::spawn(
            self.clone()
                .serve_srv(sink.clone(), futures::stream::select_all(srv)),
        );
        let mut peers: HashMap<NodeId, Peer> = HashMap::new();
        let (results_tx, mut results) = mpsc::channel::<(NodeId, TableSnapshot)>(RESULT_QUEUE);
        let mut topics: HashMap<String, CancellationToken> = HashMap::new();
        let _ = self.client.flush().await;
        self.say_hello(false).await;
        let mut tick = tokio::time::interval(self.heartbeat);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let Some(sink) = sink.upgrade() else { return };
            tokio::select! {
                () = self.stop.cancelled() => return,
                _ = tick.tick() => {
                    self.say_hello(false).await;
                    let now = Instant::now();
                    let dead: Vec<NodeId> = peers
                        .iter()
                        .filter(|(_, p)| now.duration_since(p.seen) > self.node_timeout)
                        .map(|(n, _)| *n)
                        .collect();
                    for node in dead {
                        tracing::debug!(target: LOG, node = %self.node, peer = %node, "peer silent for the node timeout");
                        if let Some(peer) = peers.remove(&node) {
                            self.peer_gone(sink.as_ref(), &peer, Removal::NodeLost);
                        }
                    }
                }
                Some(c) = ctl.recv() => self.on_ctl(&sink, c, &mut topics).await,
                Some(m) = disc.next() => {
                    let Ok(h) = serde_json::from_slice::<Hello>(&m.payload) else { continue };
                    let Ok(node) = h.node.parse::<NodeId>() else { continue };
                    if node == self.node || h.protocol != PROTOCOL_VERSION {
                        continue;
                    }
                    if h.leaving {
                        if let Some(peer) = peers.remove(&node) {
                            self.peer_gone(sink.as_ref(), &peer, Removal::Withdrawn);
                        }
                        continue;
                    }
                    let fresh = !peers.contains_key(&node);
                    let peer = peers.entry(node).or_insert_with(|| self.peer(node, h.key.clone()));
                    peer.seen = Instant::now();
                    peer.key = h.key;
                    if fresh {
                        // Answer a newcomer at once, so it need not wait for our heartbeat.
                        self.say_hello(false).await;
                    }
                    if peer.version != h.version {
                        self.fetch(node, peer, &results_tx);
                    }
                }
                Some(m) = table.next() => {
                    let Ok(d) = decode_payload::<Delta>(&m.payload) else { continue };
                    let Ok(node) = d.node.parse::<NodeId>() else { continue };
                    if node == self.node {
                        continue;
                    }
                    let peer = peers.entry(node).or_insert_with(|| self.peer(node, d.key.clone()));
                    peer.seen = Instant::now();
                    if !peer.fetching && d.delta.version == peer.version + 1 {
                        peer.version = d.delta.version;
                        for n in &d.delta.removed {
                            peer.names.remove(n);
                        }
                        for e in &d.delta.added {
                            peer.names.insert(e.name.clone());
                        }
                        self.apply(sink.as_ref(), peer, d.delta.added, &d.delta.removed);
                    } else if d.delta.version > peer.version {
                        self.fetch(node, peer, &results_tx);
                    }
                }
                Some((node, snap)) = results.recv() => {
                    let Some(peer) = peers.get_mut(&node) else { continue };
                    peer.fetching = false;
                    if snap.version < peer.version {
                        continue;
                    }
                    peer.version = snap.version;
                    let names: HashSet<String> = snap.entries.iter().map(|e| e.name.clone()).collect();
                    let removed: Vec<String> = peer.names.difference(&names).cloned().collect();
                    peer.names = names;
                    self.apply(sink.as_ref(), peer, snap.entries, &removed);
                }
            }
            self.peers_seen.store(peers.len(), Ordering::Relaxed);
        }
    }

    fn fetch(
        self: &Arc<Self>,
        node: NodeId,
        peer: &mut Peer,
        results: &mpsc::Sender<(NodeId, TableSnapshot)>,
    ) {
        if peer.fetching {
            return;
        }
        peer.fetching = true;
        let this = self.clone();
        let results = results.clone();
        tokio::spawn(async move {
            let request = async_nats::Request::new()
                .payload(Bytes::new())
                .timeout(Some(this.node_timeout));
            let snap = match this
                .client
                .send_request(this.node_subject(node, "table"), request)
                .await
            {
                Ok(m) => decode_payload::<TableSnapshot>(&m.payload).ok(),
                Err(e) => {
                    tracing::debug!(target: LOG, peer = %node, error = %e, "table snapshot request failed");
                    None
                }
            };
            // On failure, an impossible version clears `fetching`; the next hello asks again.
            let snap = snap.unwrap_or(TableSnapshot {
                version: 0,
                entries: Vec::new(),
                topics: Vec::new(),
            });
            let _ = results.send((node, snap)).await;
        });
    }

    /// `peer` now provides `added` (or re-described them) and no longer `removed`.
    fn apply(
        &self,
        sink: &dyn Sink,
        peer: &Peer,
        added: Vec<crate::protocol::Entry>,
        removed: &[String],
    ) {
        if !removed.is_empty() {
            sink.provider_removed(&peer.remote, Some(removed), Removal::Withdrawn);
            for name in removed {
                let _ = self.removed.send(name.clone());
            }
        }
        sink.provider_added(&peer.remote, &peer.key, added);
    }

    /// `peer` left or went silent.
    fn peer_gone(&self, sink: &dyn Sink, peer: &Peer, why: Removal) {
        sink.provider_removed(&peer.remote, None, why);
        for name in &peer.names {
            let _ = self.removed.send(name.clone());
        }
    }

    fn peer(self: &Arc<Self>, node: NodeId, key: String) -> Peer {
        Peer {
            key,
            version: 0,
            seen: Instant::now(),
            names: HashSet::new(),
            fetching: false,
            remote: Arc::new(Provider {
                engine: self.clone(),
                node,
                pending: AtomicUsize::new(0),
                direct: false,
            }),
        }
    }

    async fn on_ctl(
        self: &Arc<Self>,
        sink: &Arc<dyn Sink>,
        ctl: Ctl,
        topics: &mut HashMap<String, CancellationToken>,
    ) {
        match ctl {
            Ctl::Hello => self.say_hello(false).await,
            Ctl::Announce(delta) => {
                for e in &delta.added {
                    self.serve_endpoint_of(sink, &e.name).await;
                }
                for name in &delta.removed {
                    if let Some(stop) = lock(&self.endpoints).remove(name) {
                        stop.cancel();
                    }
                }
                self.send_delta(delta).await;
            }
            Ctl::Subscribe(topic) => {
                if topics.contains_key(&topic) {
                    return;
                }
                let subject = self.subject(&["evt", &token(&topic)]);
                match self.client.subscribe(subject).await {
                    Ok(sub) => {
                        let stop = CancellationToken::new();
                        topics.insert(topic.clone(), stop.clone());
                        tokio::spawn(self.clone().deliver(Arc::downgrade(sink), topic, sub, stop));
                        let _ = self.client.flush().await;
                    }
                    Err(e) => {
                        tracing::error!(target: LOG, error = %e, %topic, "cannot subscribe a topic")
                    }
                }
            }
            Ctl::Unsubscribe(topic) => {
                // A later subscribe of the same topic may already be queued; the mesh only
                // sends Unsubscribe for the last local subscriber.
                if let Some(stop) = topics.remove(&topic) {
                    stop.cancel();
                }
            }
        }
    }

    /// Take calls to endpoint `name` (once: its queue subscription stays until withdrawn).
    async fn serve_endpoint_of(self: &Arc<Self>, sink: &Arc<dyn Sink>, name: &str) {
        if lock(&self.endpoints).contains_key(name) {
            return;
        }
        let name = name.to_owned();
        let subject = self.svc_subject(&name);
        match self
            .client
            .queue_subscribe(subject.clone(), token(&name))
            .await
        {
            Ok(sub) => {
                let stop = CancellationToken::new();
                lock(&self.endpoints).insert(name.clone(), stop.clone());
                tokio::spawn(self.clone().serve_endpoint(
                    Arc::downgrade(sink),
                    name.clone(),
                    sub,
                    stop,
                ));
                // The subscription reaches the server before peers learn of it.
                let _ = self.client.flush().await;
            }
            Err(e) => {
                tracing::error!(target: LOG, error = %e, %subject, "cannot subscribe an endpoint")
            }
        }
    }

    async fn send_delta(&self, delta: TableDelta) {
        let d = Delta {
            node: self.node.to_string(),
            key: self.key.clone(),
            delta,
        };
        if let Err(e) = self
            .client
            .publish(
                self.subject(&["table", &self.node.to_string()]),
                encode_payload(&d),
            )
            .await
        {
            tracing::debug!(target: LOG, error = %e, "table delta not sent");
        }
    }

    async fn deliver(
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
            let from_self = m
                .headers
                .as_ref()
                .and_then(|h| h.get(NODE_HEADER))
                .is_some_and(|v| v.as_str() == own);
            if from_self {
                continue; // Delivered locally when published.
            }
            let Ok(data) = serde_json::from_slice::<Value>(&m.payload) else {
                tracing::debug!(target: LOG, %topic, "ignoring a malformed event");
                continue;
            };
            let Some(sink) = sink.upgrade() else { break };
            sink.deliver(&topic, data);
        }
        let _ = sub.unsubscribe().await;
    }

    async fn serve_endpoint(
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

    async fn serve_own(self: Arc<Self>, sink: Weak<dyn Sink>, mut sub: Subscriber) {
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
                    let _ = self.client.publish(reply, snap).await;
                }
                _ => {}
            }
        }
    }

    /// Serve one call in its own task, bounded by the in-flight cap.
    fn serve_call(self: Arc<Self>, sink: Weak<dyn Sink>, m: Message, endpoint: Option<String>) {
        let Some(reply) = m.reply.clone() else { return };
        let Some(sink) = sink.upgrade() else { return };
        let permit = self.permits.clone().try_acquire_owned();
        let serving = sink.activity().serving();
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
                    Err(e) => Err(Error::bad_request(format!("malformed call: {e}"))),
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
            if let Err(e) = self.client.publish(reply, response(result)).await {
                tracing::debug!(target: LOG, error = %e, "reply not sent");
            }
            drop(serving);
        });
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

/// A peer as the engine loop knows it.
struct Peer {
    key: String,
    version: u64,
    seen: Instant,
    names: HashSet<String>,
    fetching: bool,
    /// Its routes in the mesh's table.
    remote: Arc<dyn Remote>,
}

/// A node reached through NATS: its endpoints' queue groups (NATS picks the replica), or its
/// own subject (`direct`).
struct Provider {
    engine: Arc<NatsEngine>,
    node: NodeId,
    pending: AtomicUsize,
    direct: bool,
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

    fn ping(&self, deadline: Instant) -> BoxFuture<'_, Result<Duration, Error>> {
        Box::pin(self.engine.ping(self.node, deadline))
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

    fn publish(&self, topic: &str, data: &Value) {
        if let Err(mpsc::error::TrySendError::Full(_)) =
            self.events.try_send((topic.to_owned(), data.clone()))
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

/// The node that sent `m` (its header), or node 0 when it does not say.
fn sender(m: &Message) -> NodeId {
    m.headers
        .as_ref()
        .and_then(|h| h.get(NODE_HEADER))
        .and_then(|v| v.as_str().parse::<NodeId>().ok())
        .unwrap_or(NodeId(0))
}
