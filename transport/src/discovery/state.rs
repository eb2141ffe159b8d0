//! The pure part of the agent: the peer table and the heartbeat schedule.
//!
//! Nothing here does I/O or reads a clock: every call is given the current
//! [`Instant`], so the timer logic is tested with paused tokio time.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::time::Instant;

use super::codec::{Body, Message};
use super::{NodeId, PeerEvent, PeerInfo};

/// Lowest heartbeat interval, as a fraction of the configured one.
pub(crate) const JITTER_MIN: f64 = 0.8;
/// Highest heartbeat interval, as a fraction of the configured one.
pub(crate) const JITTER_MAX: f64 = 1.2;

/// The delay until the next heartbeat: `heartbeat` scaled into
/// `[JITTER_MIN, JITTER_MAX)` by `unit`, a sample of `[0, 1)`.
pub(crate) fn jittered(heartbeat: Duration, unit: f64) -> Duration {
    let unit = if unit.is_finite() {
        unit.clamp(0.0, 1.0)
    } else {
        0.5
    };
    heartbeat.mul_f64(JITTER_MIN + (JITTER_MAX - JITTER_MIN) * unit)
}

/// Most peers one table holds (the Redis registry's scan reads as many): beacons of further
/// new nodes are ignored until some leave or expire, so a flood of forged node ids cannot grow
/// the table, nor the dial loops and links behind it.
pub(crate) const MAX_PEERS: usize = 10_000;

/// What a received message meant.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Handled {
    /// Ours, from another environment, or stale: dropped.
    Ignored,
    /// A beacon from a live peer.
    Beacon {
        /// The event it caused, if any.
        event: Option<PeerEvent>,
        /// The peer was unknown until now (answer it at once).
        new: bool,
    },
    /// The sender is leaving; `event` is its `Down` if we knew it.
    Left {
        /// The `Down` event, if the sender was known.
        event: Option<PeerEvent>,
    },
    /// A peer list (`seeds` mode gossip).
    Peers(Vec<SocketAddr>),
}

#[derive(Debug)]
struct Entry {
    info: PeerInfo,
    last_seen: Instant,
    seq: u64,
    src: SocketAddr,
}

/// The peers of one environment, with their liveness.
#[derive(Debug)]
pub(crate) struct PeerTable {
    local: NodeId,
    environment: String,
    timeout: Duration,
    peers: HashMap<NodeId, Entry>,
}

impl PeerTable {
    /// An empty table for node `local` in `environment`.
    pub(crate) fn new(local: NodeId, environment: String, timeout: Duration) -> Self {
        Self {
            local,
            environment,
            timeout,
            peers: HashMap::new(),
        }
    }

    /// Takes in one authenticated message received from `src` at `now`.
    pub(crate) fn on_message(&mut self, msg: Message, src: SocketAddr, now: Instant) -> Handled {
        if msg.node == self.local || msg.environment != self.environment {
            return Handled::Ignored;
        }
        let beacon = match msg.body {
            Body::Peers(list) => return Handled::Peers(list),
            Body::Beacon(b) => b,
        };
        if let Some(e) = self.peers.get(&msg.node) {
            // Duplicates, reordered and replayed datagrams.
            if msg.seq <= e.seq {
                return Handled::Ignored;
            }
        }
        if beacon.leaving {
            let event = self
                .peers
                .remove(&msg.node)
                .map(|e| PeerEvent::Down { node: e.info.node });
            return Handled::Left { event };
        }
        let info = PeerInfo {
            node: msg.node,
            key: beacon.key,
            addr: beacon.addr,
            table_version: beacon.table_version,
            protocol: beacon.protocol,
        };
        let full = self.peers.len() >= MAX_PEERS;
        match self.peers.get_mut(&msg.node) {
            Some(e) => {
                e.last_seen = now;
                e.seq = msg.seq;
                e.src = src;
                let event = (e.info != info).then(|| {
                    e.info = info.clone();
                    PeerEvent::Updated(info)
                });
                Handled::Beacon { event, new: false }
            }
            None if full => {
                tracing::debug!(node = %msg.node, %src, "peer table full; beacon of a new node ignored");
                Handled::Ignored
            }
            None => {
                self.peers.insert(
                    msg.node,
                    Entry {
                        info: info.clone(),
                        last_seen: now,
                        seq: msg.seq,
                        src,
                    },
                );
                Handled::Beacon {
                    event: Some(PeerEvent::Up(info)),
                    new: true,
                }
            }
        }
    }

    /// Removes the peers silent for the node timeout at `now`; returns their
    /// `Down` events and the addresses they were heard from.
    pub(crate) fn expire(&mut self, now: Instant) -> Vec<(PeerEvent, SocketAddr)> {
        let timeout = self.timeout;
        let dead: Vec<NodeId> = self
            .peers
            .iter()
            .filter(|(_, e)| now.saturating_duration_since(e.last_seen) >= timeout)
            .map(|(id, _)| *id)
            .collect();
        dead.into_iter()
            .filter_map(|id| self.peers.remove(&id))
            .map(|e| (PeerEvent::Down { node: e.info.node }, e.src))
            .collect()
    }

    /// When the next peer would expire, if there is one.
    pub(crate) fn next_expiry(&self) -> Option<Instant> {
        self.peers
            .values()
            .map(|e| e.last_seen + self.timeout)
            .min()
    }

    /// The live peers.
    pub(crate) fn infos(&self) -> Vec<PeerInfo> {
        self.peers.values().map(|e| e.info.clone()).collect()
    }

    /// The addresses the live peers' datagrams came from.
    pub(crate) fn sources(&self) -> Vec<SocketAddr> {
        self.peers.values().map(|e| e.src).collect()
    }

    /// Whether a live peer was heard from `addr`.
    pub(crate) fn has_source(&self, addr: SocketAddr) -> bool {
        self.peers.values().any(|e| e.src == addr)
    }

    /// Forgets every peer (after leaving).
    pub(crate) fn clear(&mut self) {
        self.peers.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::super::codec::Beacon;
    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(3);

    fn src(n: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], n))
    }

    fn beacon(node: u128, seq: u64, env: &str, table_version: u64, leaving: bool) -> Message {
        Message {
            node: NodeId(node),
            seq,
            environment: env.into(),
            body: Body::Beacon(Beacon {
                protocol: 1,
                table_version,
                key: "k".into(),
                addr: src(9000),
                leaving,
            }),
        }
    }

    fn table() -> PeerTable {
        PeerTable::new(NodeId(1), "env".into(), TIMEOUT)
    }

    #[test]
    fn jitter_stays_within_bounds() {
        let hb = Duration::from_secs(1);
        assert_eq!(jittered(hb, 0.0), Duration::from_millis(800));
        assert_eq!(jittered(hb, 0.5), Duration::from_millis(1000));
        assert!(jittered(hb, 0.999_999) < Duration::from_millis(1200));
        assert_eq!(jittered(hb, f64::NAN), hb);
        assert_eq!(jittered(hb, 7.0), Duration::from_millis(1200));
        for _ in 0..1000 {
            let d = jittered(hb, rand::random::<f64>());
            assert!(
                d >= Duration::from_millis(800) && d < Duration::from_millis(1200),
                "{d:?}"
            );
        }
    }

    #[test]
    fn the_table_is_capped_but_known_peers_keep_beating() {
        let mut t = table();
        let now = Instant::now();
        for n in 0..MAX_PEERS as u128 {
            let h = t.on_message(beacon(100 + n, 1, "env", 0, false), src(1), now);
            assert!(matches!(h, Handled::Beacon { new: true, .. }));
        }
        let h = t.on_message(beacon(1 << 100, 1, "env", 0, false), src(1), now);
        assert_eq!(h, Handled::Ignored, "a new node beyond the cap");
        let h = t.on_message(beacon(100, 2, "env", 7, false), src(1), now);
        assert!(matches!(
            h,
            Handled::Beacon {
                event: Some(PeerEvent::Updated(_)),
                new: false
            }
        ));
        // One leaves: a new node fits again.
        t.on_message(beacon(101, 2, "env", 0, true), src(1), now);
        let h = t.on_message(beacon(1 << 100, 2, "env", 0, false), src(1), now);
        assert!(matches!(h, Handled::Beacon { new: true, .. }));
    }

    #[test]
    fn up_then_updated_only_on_change() {
        let mut t = table();
        let now = Instant::now();
        let h = t.on_message(beacon(2, 1, "env", 0, false), src(1), now);
        assert!(
            matches!(h, Handled::Beacon { event: Some(PeerEvent::Up(ref p)), new: true } if p.node == NodeId(2))
        );
        let h = t.on_message(beacon(2, 2, "env", 0, false), src(1), now);
        assert_eq!(
            h,
            Handled::Beacon {
                event: None,
                new: false
            }
        );
        let h = t.on_message(beacon(2, 3, "env", 7, false), src(1), now);
        assert!(
            matches!(h, Handled::Beacon { event: Some(PeerEvent::Updated(ref p)), new: false } if p.table_version == 7)
        );
        // A replayed or reordered older datagram changes nothing.
        assert_eq!(
            t.on_message(beacon(2, 2, "env", 0, false), src(1), now),
            Handled::Ignored
        );
        assert_eq!(t.infos()[0].table_version, 7);
    }

    #[test]
    fn own_and_foreign_environment_beacons_are_ignored() {
        let mut t = table();
        let now = Instant::now();
        assert_eq!(
            t.on_message(beacon(1, 1, "env", 0, false), src(1), now),
            Handled::Ignored
        );
        assert_eq!(
            t.on_message(beacon(3, 1, "other", 0, false), src(1), now),
            Handled::Ignored
        );
        assert!(t.infos().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn expiry_after_node_timeout() {
        let mut t = table();
        let start = Instant::now();
        t.on_message(beacon(2, 1, "env", 0, false), src(1), start);
        tokio::time::advance(Duration::from_secs(1)).await;
        t.on_message(beacon(3, 1, "env", 0, false), src(2), Instant::now());
        assert_eq!(t.next_expiry(), Some(start + TIMEOUT));

        tokio::time::advance(TIMEOUT - Duration::from_secs(1) - Duration::from_millis(1)).await;
        assert!(
            t.expire(Instant::now()).is_empty(),
            "still within the timeout"
        );
        tokio::time::advance(Duration::from_millis(1)).await;
        let gone = t.expire(Instant::now());
        assert_eq!(gone, vec![(PeerEvent::Down { node: NodeId(2) }, src(1))]);
        assert_eq!(
            t.next_expiry(),
            Some(start + Duration::from_secs(1) + TIMEOUT)
        );

        // A beacon refreshes the deadline.
        tokio::time::advance(Duration::from_millis(500)).await;
        t.on_message(beacon(3, 2, "env", 0, false), src(2), Instant::now());
        tokio::time::advance(Duration::from_millis(2999)).await;
        assert!(t.expire(Instant::now()).is_empty());
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(t.expire(Instant::now()).len(), 1);
        assert_eq!(t.next_expiry(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn leaving_is_down_at_once() {
        let mut t = table();
        t.on_message(beacon(2, 1, "env", 0, false), src(1), Instant::now());
        tokio::time::advance(Duration::from_millis(10)).await;
        let h = t.on_message(beacon(2, 2, "env", 0, true), src(1), Instant::now());
        assert_eq!(
            h,
            Handled::Left {
                event: Some(PeerEvent::Down { node: NodeId(2) })
            }
        );
        assert!(t.infos().is_empty());
        // Leaving from a node we never knew: nothing to report.
        let h = t.on_message(beacon(4, 1, "env", 0, true), src(1), Instant::now());
        assert_eq!(h, Handled::Left { event: None });
    }
}
