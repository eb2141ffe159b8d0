//! The in-process engine: the nodes of one [`Network`] reach each other through channels, with
//! no socket, so everything above the wire (routing, balancing, retries, deadlines, draining)
//! runs in unit tests under paused time, the way tarpc tests over its in-memory transport.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use plume_transport::{Mesh, Request, memory::Network};
//! use serde_json::json;
//!
//! let net = Network::new();
//! let a = Mesh::builder().memory(&net).start().await?;
//! let b = Mesh::builder().memory(&net).start().await?;
//! a.respond("add", |req: Request| async move {
//!     Ok(json!(req.body["a"].as_i64().unwrap_or(0) + req.body["b"].as_i64().unwrap_or(0)))
//! });
//! assert_eq!(b.to("add").send(&json!({"a": 1, "b": 2})).await?, json!(3));
//! # Ok(()) }
//! ```
//!
//! Each node has an inbox that one task reads in order, as a link's reader would: table
//! snapshots and deltas, events, calls, pings, goaways. [`Network::disconnect`] takes a node off
//! the network at once, as a crash would.

#[cfg(test)]
mod partition_tests;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, timeout_at};
use tokio_util::sync::CancellationToken;

use crate::discovery::NodeId;
use crate::engine::{
    Call, CallError, Counted, Engine, EngineKind, Remote, Removal, Served, Sink, response,
};
use crate::protocol::{TableDelta, TableSnapshot};
use crate::sync::lock;
use plume::Error;
use plume::trace::TraceContext;

/// What one node sends another.
enum Msg {
    /// The sender's whole table: the first thing a node hears of another.
    Table {
        from: NodeId,
        key: String,
        table: TableSnapshot,
    },
    /// The sender wants our table.
    Hello {
        from: NodeId,
    },
    /// A change of the sender's table.
    Delta {
        from: NodeId,
        delta: TableDelta,
    },
    Event {
        from: NodeId,
        topic: String,
        data: Value,
        trace: Option<TraceContext>,
    },
    Request {
        from: NodeId,
        payload: Bytes,
        reply: oneshot::Sender<Bytes>,
    },
    Ping {
        reply: oneshot::Sender<()>,
    },
    /// The sender drains: route nothing new to it.
    Goaway {
        from: NodeId,
        ack: oneshot::Sender<()>,
    },
    /// The node left the network.
    Gone {
        node: NodeId,
    },
}

struct Member {
    /// Unbounded on purpose: table messages are sent with a table locked (no waiting) and must
    /// not be lost; the network lives in one process, for tests.
    inbox: mpsc::UnboundedSender<Msg>,
    /// Topics this node subscribes to.
    topics: HashSet<String>,
    /// Nodes that have this node's table: its deltas go to them.
    ready: HashSet<NodeId>,
    /// Cancelled when the node leaves: its reader and the calls it serves stop.
    stop: CancellationToken,
}

/// An in-process network of mesh nodes (see the [module docs](self)). Cheap to clone.
#[derive(Clone, Default)]
pub struct Network {
    members: Arc<Mutex<HashMap<NodeId, Member>>>,
}

impl std::fmt::Debug for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let nodes: Vec<NodeId> = lock(&self.members).keys().copied().collect();
        f.debug_struct("Network").field("nodes", &nodes).finish()
    }
}

impl Network {
    /// An empty network.
    pub fn new() -> Self {
        Self::default()
    }

    /// Take `node` off the network at once, as if it crashed: its calls in flight are lost,
    /// and the other nodes drop its routes.
    pub fn disconnect(&self, node: NodeId) {
        let mut members = lock(&self.members);
        let Some(member) = members.remove(&node) else {
            return;
        };
        member.stop.cancel();
        for m in members.values_mut() {
            m.ready.remove(&node);
            let _ = m.inbox.send(Msg::Gone { node });
        }
    }

    /// The engine of a new node (it joins when the mesh starts it).
    pub(crate) fn engine(&self, node: NodeId, key: &str) -> Arc<dyn Engine> {
        Arc::new(MemoryEngine {
            network: self.clone(),
            node,
            key: key.to_owned(),
        })
    }

    /// Send `msg` to `to`; false when `to` is not on the network.
    fn send(&self, to: NodeId, msg: Msg) -> bool {
        lock(&self.members)
            .get(&to)
            .is_some_and(|m| m.inbox.send(msg).is_ok())
    }
}

struct MemoryEngine {
    network: Network,
    node: NodeId,
    key: String,
}

/// Another node as a route sees it.
struct Peer {
    network: Network,
    node: NodeId,
    from: NodeId,
    pending: AtomicUsize,
    live: AtomicBool,
}

impl Peer {
    fn new(network: &Network, from: NodeId, node: NodeId) -> Arc<Self> {
        Arc::new(Self {
            network: network.clone(),
            node,
            from,
            pending: AtomicUsize::new(0),
            live: AtomicBool::new(true),
        })
    }

    async fn request(&self, payload: Bytes, deadline: Instant) -> Result<Bytes, CallError> {
        let (reply, rx) = oneshot::channel();
        let sent = self.network.send(
            self.node,
            Msg::Request {
                from: self.from,
                payload,
                reply,
            },
        );
        if !sent {
            return Err(CallError::NotSent);
        }
        match timeout_at(deadline, rx).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(_)) => Err(CallError::Lost),
            Err(_) => Err(CallError::Timeout),
        }
    }
}

impl Remote for Peer {
    fn node(&self) -> NodeId {
        self.node
    }

    fn is_live(&self) -> bool {
        self.live.load(Ordering::Acquire)
    }

    fn pending(&self) -> usize {
        self.pending.load(Ordering::Relaxed)
    }

    fn call<'a>(&'a self, call: Call<'a>) -> BoxFuture<'a, Result<Bytes, CallError>> {
        Box::pin(async move {
            let _pending = Counted::new(&self.pending);
            self.request(call.payload, call.deadline).await
        })
    }

    fn ping(&self, deadline: Instant) -> BoxFuture<'_, Result<Duration, Error>> {
        Box::pin(async move {
            let started = Instant::now();
            let (reply, rx) = oneshot::channel();
            if !self.network.send(self.node, Msg::Ping { reply }) {
                return Err(Error::unavailable(format!("node {} is gone", self.node)));
            }
            match timeout_at(deadline, rx).await {
                Ok(Ok(())) => Ok(started.elapsed()),
                Ok(Err(_)) => Err(Error::unavailable(format!("node {} is gone", self.node))),
                Err(_) => Err(Error::timeout(format!(
                    "node {} did not answer the ping",
                    self.node
                ))),
            }
        })
    }
}

impl MemoryEngine {
    /// Send our table to `to`, with our table locked, and from then on our deltas.
    fn send_table(&self, sink: &dyn Sink, to: NodeId) {
        sink.with_table(&mut |table| {
            let mut members = lock(&self.network.members);
            let Some(to_member) = members.get(&to) else {
                return;
            };
            let msg = Msg::Table {
                from: self.node,
                key: self.key.clone(),
                table,
            };
            if to_member.inbox.send(msg).is_ok()
                && let Some(me) = members.get_mut(&self.node)
            {
                me.ready.insert(to);
            }
        });
    }

    /// Our inbox's reader: the other nodes' messages, in order.
    async fn read(
        self: Arc<Self>,
        sink: Arc<dyn Sink>,
        mut inbox: mpsc::UnboundedReceiver<Msg>,
        stop: CancellationToken,
    ) {
        let mut peers: HashMap<NodeId, (Arc<Peer>, String)> = HashMap::new();
        loop {
            let msg = tokio::select! {
                () = stop.cancelled() => return,
                m = inbox.recv() => m,
            };
            let Some(msg) = msg else { return };
            match msg {
                Msg::Hello { from } => self.send_table(sink.as_ref(), from),
                Msg::Table { from, key, table } => {
                    let (peer, _) = peers.entry(from).or_insert_with(|| {
                        (Peer::new(&self.network, self.node, from), key.clone())
                    });
                    let via: Arc<dyn Remote> = peer.clone();
                    sink.provider_added(&via, &key, table.entries);
                }
                Msg::Delta { from, delta } => {
                    let Some((peer, key)) = peers.get(&from) else {
                        continue;
                    };
                    let via: Arc<dyn Remote> = peer.clone();
                    sink.provider_removed(&via, Some(&delta.removed), Removal::Withdrawn);
                    if peer.is_live() {
                        sink.provider_added(&via, key, delta.added);
                    }
                }
                Msg::Event {
                    from,
                    topic,
                    data,
                    trace,
                } => sink.deliver(from, &topic, data, trace),
                Msg::Request {
                    from,
                    payload,
                    reply,
                } => self.serve(sink.as_ref(), from, payload, reply, &stop),
                Msg::Ping { reply } => {
                    let _ = reply.send(());
                }
                Msg::Goaway { from, ack } => {
                    if let Some((peer, _)) = peers.get(&from) {
                        peer.live.store(false, Ordering::Release);
                        let via: Arc<dyn Remote> = peer.clone();
                        sink.provider_removed(&via, None, Removal::Withdrawn);
                    }
                    let _ = ack.send(());
                }
                Msg::Gone { node } => {
                    if let Some((peer, _)) = peers.remove(&node) {
                        peer.live.store(false, Ordering::Release);
                        let via: Arc<dyn Remote> = peer;
                        sink.provider_removed(&via, None, Removal::NodeLost);
                    }
                }
            }
        }
    }

    fn serve(
        &self,
        sink: &dyn Sink,
        from: NodeId,
        payload: Bytes,
        reply: oneshot::Sender<Bytes>,
        stop: &CancellationToken,
    ) {
        let served = match sink.serve(payload, from, &mut |_, _| Ok(())) {
            Ok(served) => served,
            Err(e) => Served::Ready(Err(crate::engine::malformed(&e))),
        };
        match served {
            Served::Ready(result) => {
                let _ = reply.send(response(result));
            }
            Served::Running(running) => {
                let serving = sink.activity().serving();
                let stop = stop.clone();
                tokio::spawn(async move {
                    tokio::select! {
                        // The node crashed: the caller sees its call lost.
                        () = stop.cancelled() => {}
                        result = running.finish() => {
                            let _ = reply.send(response(result));
                        }
                    }
                    drop(serving);
                });
            }
        }
    }

    fn others(&self) -> Vec<NodeId> {
        lock(&self.network.members)
            .keys()
            .copied()
            .filter(|n| *n != self.node)
            .collect()
    }
}

impl Engine for MemoryEngine {
    fn kind(&self) -> EngineKind {
        EngineKind::Memory
    }

    fn start(self: Arc<Self>, sink: Arc<dyn Sink>) {
        // Unbounded on purpose: see `Member::inbox`.
        #[allow(clippy::disallowed_methods)]
        let (tx, rx) = mpsc::unbounded_channel();
        let stop = CancellationToken::new();
        let others = {
            let mut members = lock(&self.network.members);
            members.insert(
                self.node,
                Member {
                    inbox: tx,
                    topics: HashSet::new(),
                    ready: HashSet::new(),
                    stop: stop.clone(),
                },
            );
            let others: Vec<NodeId> = members
                .keys()
                .copied()
                .filter(|n| *n != self.node)
                .collect();
            for n in &others {
                if let Some(m) = members.get(n) {
                    let _ = m.inbox.send(Msg::Hello { from: self.node });
                }
            }
            others
        };
        for n in others {
            self.send_table(sink.as_ref(), n);
        }
        tokio::spawn(self.clone().read(sink, rx, stop));
    }

    fn announce(&self, delta: &TableDelta) {
        let members = lock(&self.network.members);
        let Some(me) = members.get(&self.node) else {
            return;
        };
        for to in &me.ready {
            if let Some(m) = members.get(to) {
                let _ = m.inbox.send(Msg::Delta {
                    from: self.node,
                    delta: delta.clone(),
                });
            }
        }
    }

    fn subscribe(&self, topic: &str) {
        if let Some(me) = lock(&self.network.members).get_mut(&self.node) {
            me.topics.insert(topic.to_owned());
        }
    }

    fn unsubscribe(&self, topic: &str) {
        if let Some(me) = lock(&self.network.members).get_mut(&self.node) {
            me.topics.remove(topic);
        }
    }

    fn publish(&self, topic: &str, data: &Value, trace: Option<TraceContext>) {
        let members = lock(&self.network.members);
        for (node, m) in members.iter() {
            if *node != self.node && m.topics.contains(topic) {
                let _ = m.inbox.send(Msg::Event {
                    from: self.node,
                    topic: topic.to_owned(),
                    data: data.clone(),
                    trace,
                });
            }
        }
    }

    fn direct(&self, node: NodeId) -> Option<Arc<dyn Remote>> {
        if !lock(&self.network.members).contains_key(&node) {
            return None;
        }
        Some(Peer::new(&self.network, self.node, node))
    }

    fn peers(&self) -> Vec<NodeId> {
        self.others()
    }

    fn drain(&self, deadline: Instant) -> BoxFuture<'_, bool> {
        Box::pin(async move {
            let mut acks = Vec::new();
            for node in self.others() {
                let (ack, rx) = oneshot::channel();
                if self.network.send(
                    node,
                    Msg::Goaway {
                        from: self.node,
                        ack,
                    },
                ) {
                    acks.push(rx);
                }
            }
            let all = futures::future::join_all(acks);
            timeout_at(deadline, all).await.is_ok()
        })
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move { self.network.disconnect(self.node) })
    }
}
