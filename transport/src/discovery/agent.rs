//! The agent task: beacons out, datagrams in, timers, events.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, sleep_until};

use super::codec::{self, Beacon, Body, MAX_DATAGRAM, MAX_LIST, Message};
use super::net::{Fanout, Transport};
use super::state::{Handled, PeerTable, jittered};
use super::{LocalNode, PROTOCOL_VERSION, PeerEvent, Shared};

/// Most addresses remembered as gossip candidates.
const MAX_CANDIDATES: usize = 1024;

/// A request from the handle.
#[derive(Debug)]
pub(crate) enum Command {
    /// Send a leaving beacon, stop, then acknowledge.
    Leave(oneshot::Sender<()>),
}

/// Everything the agent task owns.
#[derive(Debug)]
pub(crate) struct Agent<T> {
    pub(crate) transport: T,
    pub(crate) fanout: Fanout,
    pub(crate) loopback_only: bool,
    pub(crate) secret: Option<Arc<[u8]>>,
    pub(crate) local: LocalNode,
    pub(crate) heartbeat: Duration,
    pub(crate) node_timeout: Duration,
    pub(crate) shared: Arc<Shared>,
    pub(crate) table: PeerTable,
    pub(crate) seq: u64,
    pub(crate) pending: super::pending::Pending,
    /// `seeds` mode: addresses heard of (peer lists, expired peers) that
    /// we beacon to until they expire.
    pub(crate) candidates: HashMap<SocketAddr, Instant>,
    /// Addresses our own datagrams came back from.
    pub(crate) self_addrs: HashSet<SocketAddr>,
}

impl<T: Transport> Agent<T> {
    pub(crate) async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        events: mpsc::Sender<PeerEvent>,
    ) {
        let shared = self.shared.clone();
        let mut events = Some(events);
        let mut buf = vec![0u8; MAX_DATAGRAM];
        // At once, so a new node is found without waiting for a heartbeat;
        // the peers answer it directly.
        self.send_beacon_all(false).await;
        let mut next_beat = Instant::now() + jittered(self.heartbeat, rand::random());
        loop {
            let expiry = self.table.next_expiry();
            let mut receiver_gone = false;
            tokio::select! {
                command = commands.recv() => {
                    // A closed channel means every handle is gone: leave too.
                    self.leave().await;
                    if let Some(Command::Leave(ack)) = command {
                        let _ = ack.send(());
                    }
                    return;
                }
                () = sleep_until(next_beat) => {
                    self.on_heartbeat().await;
                    next_beat = Instant::now() + jittered(self.heartbeat, rand::random());
                }
                () = shared.table_changed.notified() => {
                    self.send_beacon_all(false).await;
                }
                () = sleep_until(expiry.unwrap_or(next_beat)), if expiry.is_some() => {
                    self.expire(Instant::now());
                }
                received = self.transport.recv(&mut buf) => match received {
                    Ok((n, src)) => self.on_datagram(&buf[..n], src).await,
                    Err(e) => {
                        tracing::debug!(error = %e, "discovery receive failed");
                        // Do not spin on a persistent error.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                },
                permit = async {
                    match &events {
                        Some(tx) => tx.reserve().await,
                        None => std::future::pending().await,
                    }
                }, if !self.pending.is_empty() => match permit {
                    Ok(permit) => {
                        if let Some(event) = self.pending.pop_front() {
                            permit.send(event);
                        }
                    }
                    Err(_) => {
                        // The receiver is gone; peers() still works.
                        receiver_gone = true;
                    }
                },
            }
            if receiver_gone {
                events = None;
            }
            if events.is_none() {
                self.pending.clear();
            }
        }
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    fn message(&mut self, body: Body) -> Option<Vec<u8>> {
        let msg = Message {
            node: self.local.node,
            seq: self.next_seq(),
            environment: self.local.environment.clone(),
            body,
        };
        match codec::encode(&msg, self.secret.as_deref()) {
            Ok(b) => Some(b),
            Err(e) => {
                // invariant: start() checked the string lengths; log, never panic.
                tracing::error!(error = %e, "cannot encode a beacon");
                None
            }
        }
    }

    fn beacon(&mut self, leaving: bool) -> Option<Vec<u8>> {
        let body = Body::Beacon(Beacon {
            protocol: PROTOCOL_VERSION,
            table_version: self.shared.table_version.load(Ordering::Acquire),
            key: self.local.key.clone(),
            addr: self.local.addr,
            leaving,
        });
        self.message(body)
    }

    async fn send(&self, bytes: &[u8], to: SocketAddr) {
        if self.loopback_only
            && !to.ip().is_loopback()
            && !matches!(self.fanout, Fanout::Group(g) if g == to)
        {
            // The network rule: loopback mode never sends elsewhere.
            return;
        }
        if let Err(e) = self.transport.send_to(bytes, to).await {
            tracing::debug!(error = %e, %to, "discovery send failed");
        }
    }

    /// Where a beacon for everyone goes.
    fn targets(&self) -> Vec<SocketAddr> {
        match &self.fanout {
            Fanout::Group(g) => vec![*g],
            Fanout::Gossip { seeds } => {
                let mut out: Vec<SocketAddr> = Vec::new();
                let all = seeds
                    .iter()
                    .copied()
                    .chain(self.table.sources())
                    .chain(self.candidates.keys().copied());
                for a in all {
                    if !self.self_addrs.contains(&a) && !out.contains(&a) {
                        out.push(a);
                    }
                }
                out
            }
        }
    }

    async fn send_beacon_all(&mut self, leaving: bool) {
        let Some(bytes) = self.beacon(leaving) else {
            return;
        };
        for to in self.targets() {
            self.send(&bytes, to).await;
        }
    }

    async fn on_heartbeat(&mut self) {
        let now = Instant::now();
        self.candidates.retain(|_, until| *until > now);
        self.send_beacon_all(false).await;
        if let Fanout::Gossip { .. } = self.fanout {
            // Anti-entropy: our peer list to one random target.
            let targets = self.targets();
            if !targets.is_empty() {
                let to = targets[rand::random_range(0..targets.len())];
                self.send_peer_list(to).await;
            }
        }
    }

    async fn send_peer_list(&mut self, to: SocketAddr) {
        let mut list: Vec<SocketAddr> = self
            .table
            .sources()
            .into_iter()
            .filter(|a| *a != to)
            .collect();
        if list.len() > MAX_LIST {
            // A random subset: over a few rounds everyone hears of everyone.
            for i in 0..MAX_LIST {
                let j = rand::random_range(i..list.len());
                list.swap(i, j);
            }
            list.truncate(MAX_LIST);
        }
        if let Some(bytes) = self.message(Body::Peers(list)) {
            self.send(&bytes, to).await;
        }
    }

    fn push_event(&mut self, event: PeerEvent) {
        match &event {
            PeerEvent::Up(p) => {
                tracing::debug!(node = %p.node, key = %p.key, addr = %p.addr, "peer up")
            }
            PeerEvent::Updated(p) => {
                tracing::debug!(node = %p.node, table_version = p.table_version, "peer updated");
            }
            PeerEvent::Down { node } => tracing::debug!(%node, "peer down"),
        }
        if self.pending.push(event) {
            tracing::error!(
                "discovery event receiver is not keeping up; dropping the oldest news (never a Down)"
            );
        }
        self.publish_peers();
    }

    fn publish_peers(&self) {
        let infos = self.table.infos();
        *crate::sync::lock(&self.shared.peers) = infos;
    }

    fn expire(&mut self, now: Instant) {
        for (event, src) in self.table.expire(now) {
            if let Fanout::Gossip { .. } = self.fanout {
                // Keep knocking for a while, so a healed partition rejoins
                // even without a seed.
                self.add_candidate(src, now);
            }
            self.push_event(event);
        }
    }

    fn add_candidate(&mut self, addr: SocketAddr, now: Instant) -> bool {
        if self.candidates.len() >= MAX_CANDIDATES && !self.candidates.contains_key(&addr) {
            return false;
        }
        self.candidates
            .insert(addr, now + self.node_timeout * 3)
            .is_none()
    }

    async fn on_datagram(&mut self, buf: &[u8], src: SocketAddr) {
        if self.loopback_only && !src.ip().is_loopback() {
            return;
        }
        let msg = match codec::decode(buf, self.secret.as_deref()) {
            Ok(m) => m,
            Err(e) => {
                tracing::trace!(error = %e, %src, "ignored a discovery datagram");
                return;
            }
        };
        if msg.node == self.local.node {
            if let Fanout::Gossip { .. } = self.fanout {
                self.self_addrs.insert(src);
                self.candidates.remove(&src);
            }
            return;
        }
        let now = Instant::now();
        let gossip = matches!(self.fanout, Fanout::Gossip { .. });
        match self.table.on_message(msg, src, now) {
            Handled::Ignored => {}
            Handled::Beacon { event, new } => {
                if let Some(event) = event {
                    self.push_event(event);
                }
                if new {
                    // Answer a newcomer at once, so it need not wait a
                    // heartbeat to learn of us.
                    if let Some(bytes) = self.beacon(false) {
                        self.send(&bytes, src).await;
                    }
                    if gossip {
                        self.candidates.remove(&src);
                        self.send_peer_list(src).await;
                    }
                }
            }
            Handled::Left { event } => {
                if let Some(event) = event {
                    self.push_event(event);
                }
                self.candidates.remove(&src);
            }
            Handled::Peers(list) if gossip => {
                for addr in list {
                    if self.self_addrs.contains(&addr) || self.table.has_source(addr) {
                        continue;
                    }
                    if self.add_candidate(addr, now)
                        && let Some(bytes) = self.beacon(false)
                    {
                        self.send(&bytes, addr).await;
                    }
                }
            }
            Handled::Peers(_) => {}
        }
    }

    async fn leave(&mut self) {
        self.send_beacon_all(true).await;
        self.table.clear();
        self.candidates.clear();
        self.publish_peers();
    }
}
