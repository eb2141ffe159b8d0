//! The TCP engine: one link per pair of nodes, found by discovery (or a static peers channel).
//!
//! The node with the lower id dials, the other accepts ([`handshake`]); each [`link`] has a
//! reader and a batching write buffer ([`outbox`]). See `docs/protocol.md`.

mod dial;
mod handshake;
mod link;
mod noise;
mod outbox;
mod pending;

pub(crate) use noise::CryptoError;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::{Instant, timeout};
use tokio_util::sync::CancellationToken;

use crate::discovery::{Discovery, DiscoveryConfig, LocalNode, NodeId, PeerEvent, PeerInfo};
use crate::engine::{Engine, EngineKind, Remote, Settings, Sink};
use crate::error::HandshakeError;
use crate::error::MeshError;
use crate::protocol::{EventMsg, Frame, Goaway, Kind, PROTOCOL_VERSION, TableDelta, Topic};
use crate::sync::lock;
use link::Link;
use outbox::QueueError;
use plume::trace::TraceContext;

const LOG: &str = "plume::mesh";
/// Incoming handshakes at once; a connection beyond them is closed at once (each handshake is
/// also bounded by the handshake timeout).
const MAX_HANDSHAKES: usize = 64;

/// What the TCP engine needs to start.
#[derive(Debug)]
pub(crate) struct TcpConfig {
    pub(crate) node: NodeId,
    pub(crate) environment: String,
    pub(crate) key: String,
    pub(crate) secret: Option<Arc<[u8]>>,
    pub(crate) listen: SocketAddr,
    pub(crate) discovery: DiscoveryConfig,
    /// Static peers instead of discovery.
    pub(crate) peers: Option<mpsc::Receiver<PeerEvent>>,
    pub(crate) cfg: Settings,
}

/// A peer discovery announced.
struct Advert {
    info: PeerInfo,
    token: CancellationToken,
}

/// The TCP side of a mesh node.
pub(crate) struct TcpEngine {
    node: NodeId,
    environment: String,
    key: String,
    secret: Option<Arc<[u8]>>,
    cfg: Settings,
    local_addr: SocketAddr,
    /// Cancelled on close: every link and loop ends.
    shutdown: CancellationToken,
    accept_stop: CancellationToken,
    /// Draining: new links get a goaway at once.
    draining: AtomicBool,
    /// Permits for incoming handshakes ([`MAX_HANDSHAKES`]).
    handshakes: Arc<tokio::sync::Semaphore>,
    links: Mutex<HashMap<NodeId, Arc<Link>>>,
    adverts: Mutex<HashMap<NodeId, Advert>>,
    /// The bounds on dialling announced peers ([`dial`]).
    dials: dial::Dials,
    discovery: Option<Discovery>,
    /// The listener and the peer events, until [`Engine::start`].
    startup: Mutex<Option<(TcpListener, mpsc::Receiver<PeerEvent>)>>,
    /// The sink, once started (for the drain). Weak: the mesh owns this engine.
    sink: std::sync::OnceLock<std::sync::Weak<dyn Sink>>,
}

impl std::fmt::Debug for TcpEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpEngine")
            .field("node", &self.node)
            .field("addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl TcpEngine {
    /// Bind the listener and start discovery (unless static peers were given).
    pub(crate) async fn bind(config: TcpConfig) -> Result<Arc<Self>, MeshError> {
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(MeshError::Listen)?;
        let local_addr = listener.local_addr().map_err(MeshError::Listen)?;
        let (discovery, events) = match config.peers {
            Some(rx) => (None, rx),
            None => {
                let mut discovery = config.discovery;
                // One secret for beacons and links.
                if config.secret.is_some() {
                    discovery.secret = config.secret.clone();
                }
                let local = LocalNode {
                    node: config.node,
                    environment: config.environment.clone(),
                    key: config.key.clone(),
                    addr: local_addr,
                };
                let (d, rx) = Discovery::start(discovery, local)
                    .await
                    .map_err(MeshError::Discovery)?;
                (Some(d), rx)
            }
        };
        Ok(Arc::new(Self {
            node: config.node,
            environment: config.environment,
            key: config.key,
            secret: config.secret,
            cfg: config.cfg,
            local_addr,
            shutdown: CancellationToken::new(),
            accept_stop: CancellationToken::new(),
            draining: AtomicBool::new(false),
            handshakes: Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES)),
            links: Mutex::new(HashMap::new()),
            adverts: Mutex::new(HashMap::new()),
            dials: dial::Dials::new(),
            discovery,
            startup: Mutex::new(Some((listener, events))),
            sink: std::sync::OnceLock::new(),
        }))
    }

    /// The address peers dial.
    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Run the handshake on a fresh connection and start the link. `expect` is the node the
    /// dialer meant to reach (None on the accepting side).
    async fn establish(
        self: &Arc<Self>,
        sink: &Arc<dyn Sink>,
        stream: TcpStream,
        expect: Option<NodeId>,
    ) -> Result<Arc<Link>, HandshakeError> {
        let limit = self.cfg.handshake_timeout;
        match timeout(limit, handshake::handshake(self, stream, expect)).await {
            Ok(conn) => Ok(link::start(self, sink, conn?)),
            Err(_) => Err(HandshakeError::Timeout(limit)),
        }
    }

    /// A handshaken link joins: replace any older link to the same node, queue our snapshot.
    fn register_link(&self, sink: &dyn Sink, link: &Arc<Link>) {
        let old = {
            let mut links = lock(&self.links);
            let old = links.insert(link.peer, link.clone());
            crate::metrics::links(links.len(), true);
            old
        };
        if let Some(old) = old {
            tracing::debug!(target: LOG, node = %self.node, peer = %link.peer, "a newer link replaces the old one");
            old.closed.cancel();
        }
        // With the table locked: the deltas announced from now on follow the snapshot.
        sink.with_table(&mut |snapshot| {
            link.send_control(Frame::with(Kind::TableSnapshot, 0, &snapshot));
            link.ready.store(true, Ordering::Release);
        });
        if self.draining.load(Ordering::Acquire) {
            link.send_control(goaway());
        }
    }

    /// A link ended: forget it (unless a newer one replaced it).
    fn link_closed(&self, link: &Arc<Link>) {
        let mut links = lock(&self.links);
        if links.get(&link.peer).is_some_and(|l| Arc::ptr_eq(l, link)) {
            links.remove(&link.peer);
        }
        crate::metrics::links(links.len(), false);
    }

    fn send_to_ready_links(&self, frame: &Frame) {
        let links: Vec<Arc<Link>> = lock(&self.links).values().cloned().collect();
        for l in links {
            if l.ready.load(Ordering::Acquire) {
                l.send_control(frame.clone());
            }
        }
    }

    async fn accept_loop(self: Arc<Self>, sink: Arc<dyn Sink>, listener: TcpListener) {
        loop {
            tokio::select! {
                () = self.accept_stop.cancelled() => break,
                () = self.shutdown.cancelled() => break,
                r = listener.accept() => match r {
                    Ok((stream, addr)) => {
                        let Ok(permit) = self.handshakes.clone().try_acquire_owned() else {
                            tracing::debug!(target: LOG, node = %self.node, %addr, "too many handshakes at once; connection closed");
                            continue;
                        };
                        let (engine, sink) = (self.clone(), sink.clone());
                        tokio::spawn(async move {
                            let result = engine.establish(&sink, stream, None).await;
                            drop(permit);
                            if let Err(reason) = result {
                                let reason = &reason as &dyn std::error::Error;
                                tracing::warn!(target: LOG, node = %engine.node, %addr, reason, "refused an incoming link");
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

    async fn peer_loop(
        self: Arc<Self>,
        sink: Arc<dyn Sink>,
        mut events: mpsc::Receiver<PeerEvent>,
    ) {
        loop {
            let ev = tokio::select! {
                () = self.shutdown.cancelled() => break,
                ev = events.recv() => ev,
            };
            match ev {
                None => break,
                Some(PeerEvent::Up(info) | PeerEvent::Updated(info)) => {
                    if info.node == self.node || info.protocol != PROTOCOL_VERSION {
                        continue;
                    }
                    let mut adverts = lock(&self.adverts);
                    if let Some(a) = adverts.get_mut(&info.node) {
                        a.info = info;
                        continue;
                    }
                    if adverts.len() >= dial::MAX_ADVERTS {
                        tracing::debug!(target: LOG, node = %self.node, peer = %info.node, "too many announced peers; this one is ignored");
                        continue;
                    }
                    let token = self.shutdown.child_token();
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
                    if self.node < node {
                        tokio::spawn(self.clone().dial_loop(sink.clone(), node, token));
                    }
                }
                Some(PeerEvent::Down { node }) => {
                    let removed = lock(&self.adverts).remove(&node);
                    if let Some(a) = removed {
                        a.token.cancel();
                    }
                    let link = lock(&self.links).get(&node).cloned();
                    // A draining peer closes its own link once its calls are done.
                    if let Some(l) = link.filter(|l| !l.draining.load(Ordering::Acquire)) {
                        tracing::debug!(target: LOG, node = %self.node, peer = %node, "peer removed by discovery; closing its link");
                        l.closed.cancel();
                    }
                }
            }
        }
    }
}

fn goaway() -> Frame {
    Frame::with(
        Kind::Goaway,
        0,
        &Goaway {
            reason: "shutting down".into(),
            ack: false,
        },
    )
}

impl Engine for TcpEngine {
    fn kind(&self) -> EngineKind {
        EngineKind::Tcp
    }

    fn start(self: Arc<Self>, sink: Arc<dyn Sink>) {
        let Some((listener, events)) = lock(&self.startup).take() else {
            return;
        };
        let _ = self.sink.set(Arc::downgrade(&sink));
        tokio::spawn(self.clone().accept_loop(sink.clone(), listener));
        tokio::spawn(self.peer_loop(sink, events));
    }

    fn announce(&self, delta: &TableDelta) {
        self.send_to_ready_links(&Frame::with(Kind::TableDelta, 0, delta));
        if let Some(d) = &self.discovery {
            d.set_table_version(delta.version);
        }
    }

    fn subscribe(&self, topic: &str) {
        self.send_to_ready_links(&Frame::with(
            Kind::Subscribe,
            0,
            &Topic {
                topic: topic.to_string(),
            },
        ));
    }

    fn unsubscribe(&self, topic: &str) {
        self.send_to_ready_links(&Frame::with(
            Kind::Unsubscribe,
            0,
            &Topic {
                topic: topic.to_string(),
            },
        ));
    }

    fn publish(&self, topic: &str, data: &Value, trace: Option<TraceContext>) {
        let mut frame: Option<Frame> = None;
        let links = lock(&self.links);
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
                            data,
                            traceparent: trace.map(|t| t.traceparent()),
                        },
                    )
                })
                .clone();
            if let Err(QueueError::Full) = l.out.try_send_batched(&f) {
                crate::metrics::events_dropped("queue_full", 1);
                tracing::warn!(target: LOG, peer = %l.peer, %topic, "write queue full; event dropped for this peer");
            }
        }
    }

    fn direct(&self, node: NodeId) -> Option<Arc<dyn Remote>> {
        let link = lock(&self.links).get(&node).cloned()?;
        Some(link)
    }

    fn peers(&self) -> Vec<NodeId> {
        lock(&self.links).keys().copied().collect()
    }

    fn drain(&self, deadline: Instant) -> BoxFuture<'_, bool> {
        Box::pin(async move {
            // Goaway first: once a peer acknowledges it, the peer routes nothing new here, and
            // every call it sent before is already read. Then the leaving beacon.
            self.draining.store(true, Ordering::Release);
            self.send_to_ready_links(&goaway());
            self.accept_stop.cancel();
            let all_acked = || {
                lock(&self.links)
                    .values()
                    .all(|l| l.closed.is_cancelled() || l.goaway_acked.load(Ordering::Acquire))
            };
            let acked = match self.sink.get().and_then(std::sync::Weak::upgrade) {
                Some(sink) => sink.activity().wait_until(deadline, all_acked).await,
                None => true,
            };
            if let Some(d) = &self.discovery {
                d.leave().await;
            }
            acked
        })
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let links: Vec<Arc<Link>> = lock(&self.links).values().cloned().collect();
            self.shutdown.cancel();
            for l in links {
                l.join_writer(Duration::from_secs(1)).await;
            }
        })
    }
}
