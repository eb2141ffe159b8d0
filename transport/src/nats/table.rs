//! The node table over NATS: hellos, table deltas and snapshots of the other nodes, turned into
//! routes in the mesh ([`Sink`]); this node's own changes, queued as [`Ctl`] commands.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::{Semaphore, mpsc};
use tokio::time::{Duration, Instant, sleep_until};
use tokio_util::sync::CancellationToken;

use super::remote::Provider;
use super::subjects::{service_name, token};
use super::{Ctl, Delta, Hello, LOG, NatsEngine, RESULT_QUEUE};
use crate::discovery::NodeId;
use crate::engine::{Remote, Removal, Sink};
use crate::protocol::{
    PROTOCOL_VERSION, TableDelta, TableSnapshot, decode_payload, encode_payload,
};
use crate::sync::lock;

/// Peers tracked at once (as many as a beacon agent's peer table): hellos and deltas of further
/// new nodes are ignored until some go silent.
const MAX_PEERS: usize = 10_000;
/// Table snapshot requests in flight at once; a peer whose turn does not come is asked at its
/// next hello.
const MAX_FETCHES: usize = 32;
/// The shortest gap between two hellos that answer newcomers: newcomers within it share one
/// answer, sent at its end.
const ANSWER_GAP: Duration = Duration::from_millis(50);

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

impl NatsEngine {
    pub(super) async fn run(
        self: Arc<Self>,
        sink: Weak<dyn Sink>,
        mut ctl: mpsc::UnboundedReceiver<Ctl>,
    ) {
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
        let fetches = Arc::new(Semaphore::new(MAX_FETCHES));
        // The last answer to a newcomer, and the one due when newcomers came since.
        let mut answered: Option<Instant> = None;
        let mut answer_due: Option<Instant> = None;
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
                    // Also every heartbeat: a change the count below missed (a message handled
                    // with `continue`) shows here.
                    *lock(&self.known) = peers.keys().copied().collect();
                }
                () = async {
                    match answer_due {
                        Some(at) => sleep_until(at).await,
                        None => std::future::pending().await,
                    }
                }, if answer_due.is_some() => {
                    answer_due = None;
                    answered = Some(Instant::now());
                    self.say_hello(false).await;
                }
                Some(c) = ctl.recv() => self.on_ctl(&sink, c, &mut topics).await,
                Some(m) = disc.next() => {
                    let Ok(h) = serde_json::from_slice::<Hello>(&m.payload) else { continue };
                    let Ok(node) = h.node.parse::<NodeId>() else { continue };
                    if node == self.node || h.protocol != PROTOCOL_VERSION || !self.verified("hello", node, &m) {
                        continue;
                    }
                    if h.leaving {
                        if let Some(peer) = peers.remove(&node) {
                            self.peer_gone(sink.as_ref(), &peer, Removal::Withdrawn);
                        }
                        continue;
                    }
                    let fresh = !peers.contains_key(&node);
                    if fresh && peers.len() >= MAX_PEERS {
                        tracing::debug!(target: LOG, node = %self.node, peer = %node, "peer table full; hello of a new node ignored");
                        continue;
                    }
                    let peer = peers.entry(node).or_insert_with(|| self.peer(node, h.key.clone()));
                    peer.seen = Instant::now();
                    peer.key = h.key;
                    if fresh {
                        // Answer a newcomer soon, so it need not wait for our heartbeat; one
                        // answer per gap, whatever the number of newcomers.
                        let now = Instant::now();
                        match answered {
                            Some(at) if now < at + ANSWER_GAP => {
                                answer_due.get_or_insert(at + ANSWER_GAP);
                            }
                            _ => {
                                answered = Some(now);
                                self.say_hello(false).await;
                            }
                        }
                    }
                    if peer.version != h.version {
                        self.fetch(node, peer, &results_tx, &fetches);
                    }
                }
                Some(m) = table.next() => {
                    let Ok(d) = decode_payload::<Delta>(&m.payload) else { continue };
                    let Ok(node) = d.node.parse::<NodeId>() else { continue };
                    if node == self.node || !self.verified("delta", node, &m) {
                        continue;
                    }
                    if !peers.contains_key(&node) && peers.len() >= MAX_PEERS {
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
                        self.fetch(node, peer, &results_tx, &fetches);
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
            // A message adds or removes at most one peer: a changed count is a changed set.
            if self.peers_seen.swap(peers.len(), Ordering::Relaxed) != peers.len() {
                *lock(&self.known) = peers.keys().copied().collect();
            }
        }
    }

    fn fetch(
        self: &Arc<Self>,
        node: NodeId,
        peer: &mut Peer,
        results: &mpsc::Sender<(NodeId, TableSnapshot)>,
        permits: &Arc<Semaphore>,
    ) {
        if peer.fetching {
            return;
        }
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            return;
        };
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
                Ok(m) if this.verified("snapshot", node, &m) => {
                    decode_payload::<TableSnapshot>(&m.payload).ok()
                }
                Ok(_) => None,
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
            drop(permit);
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
            self.lose_calls(removed.iter());
        }
        sink.provider_added(&peer.remote, &peer.key, added);
    }

    /// `peer` left or went silent.
    fn peer_gone(&self, sink: &dyn Sink, peer: &Peer, why: Removal) {
        sink.provider_removed(&peer.remote, None, why);
        self.lose_calls(peer.names.iter());
    }

    /// The idempotent calls in flight to endpoints `names` are sent again: their provider may
    /// have been the one that left.
    fn lose_calls<'a>(&self, names: impl Iterator<Item = &'a String>) {
        let subjects: Vec<String> = names.map(|n| self.svc_subject(n)).collect();
        self.inbox.lose(&subjects);
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

    /// Take calls to endpoint `name`, one by one and in batches (once: its queue
    /// subscriptions stay until withdrawn).
    async fn serve_endpoint_of(self: &Arc<Self>, sink: &Arc<dyn Sink>, name: &str) {
        if lock(&self.endpoints).contains_key(name) {
            return;
        }
        let name = name.to_owned();
        let subjects = [self.svc_subject(&name), self.batch_subject(&name)];
        let mut subs = Vec::with_capacity(2);
        for subject in subjects {
            match self
                .client
                .queue_subscribe(subject.clone(), token(&name))
                .await
            {
                Ok(sub) => subs.push(sub),
                Err(e) => {
                    tracing::error!(target: LOG, error = %e, %subject, "cannot subscribe an endpoint");
                    break;
                }
            }
        }
        if subs.is_empty() {
            return;
        }
        let stop = CancellationToken::new();
        lock(&self.endpoints).insert(name.clone(), stop.clone());
        // The first takes calls, the second batches of them.
        for (batches, sub) in subs.into_iter().enumerate() {
            tokio::spawn(self.clone().serve_endpoint(
                Arc::downgrade(sink),
                name.clone(),
                sub,
                batches == 1,
                stop.clone(),
            ));
        }
        // The subscriptions reach the server before peers learn of them.
        let _ = self.client.flush().await;
    }

    async fn send_delta(&self, delta: TableDelta) {
        let d = Delta {
            node: self.node.to_string(),
            key: self.key.clone(),
            delta,
        };
        let payload = encode_payload(&d);
        let headers = self.announce_headers("delta", self.node, &payload);
        if let Err(e) = self
            .client
            .publish_with_headers(
                self.subject(&["table", &self.node.to_string()]),
                headers,
                payload,
            )
            .await
        {
            tracing::debug!(target: LOG, error = %e, "table delta not sent");
        }
    }
}
