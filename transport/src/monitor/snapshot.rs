//! The monitor's picture of the mesh: the [`MeshSnapshot`] it publishes (its JSON is the
//! format of `gateway-example mesh --json` and of the gateway's `distribution/mesh`), and the
//! pure [`State`] that turns each round of node-info answers into it. No I/O, no clock: the
//! caller gives the time.

use std::collections::{BTreeMap, HashMap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::discovery::NodeId;
use crate::mesh::NodeInfo;

/// One node of the mesh, as the monitor sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeView {
    /// Its id (32 hex digits).
    pub id: String,
    /// Its name (empty when it did not answer the node-info call).
    pub name: String,
    /// Its key.
    pub key: String,
    /// Its environment.
    pub environment: String,
    /// Its mesh address (`None` when unknown, or hidden from an anonymous client).
    pub addr: Option<String>,
    /// How long it has been up, in milliseconds, at the last answer.
    pub uptime_ms: Option<u64>,
    /// When the monitor first saw it (Unix milliseconds).
    pub first_seen_ms: u64,
    /// The round trip of a ping from the observing node, in milliseconds.
    pub rtt_ms: Option<f64>,
    /// The endpoints it provides, sorted (a Feathers service `todos` is `svc:todos`).
    pub services: Vec<String>,
    /// Whether it answered the last node-info call (an older build answers `NotFound`).
    pub answered: bool,
}

/// A link between two listed nodes (each pair once, `from` the lower id).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinkView {
    /// One end.
    pub from: String,
    /// The other end.
    pub to: String,
    /// The round trip of a ping over it, in milliseconds, as an end measured it.
    pub rtt_ms: Option<f64>,
}

/// A node joined or was lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    /// A node appeared.
    Join,
    /// A node left or died.
    Loss,
}

/// One entry of the recent joins and losses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MeshChange {
    /// When the monitor noticed it (Unix milliseconds).
    pub at_ms: u64,
    /// Join or loss.
    pub kind: ChangeKind,
    /// The node's id.
    pub node: String,
    /// Its name.
    pub name: String,
    /// Its key.
    pub key: String,
}

/// What the monitor knows of the mesh at one moment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct MeshSnapshot {
    /// The node that made this snapshot.
    pub observer: String,
    /// Its environment.
    pub environment: String,
    /// When (Unix milliseconds).
    pub taken_at_ms: u64,
    /// Completed rounds of node-info calls so far.
    pub rounds: u64,
    /// The nodes (monitors excluded), sorted by key, name and id.
    pub nodes: Vec<NodeView>,
    /// The links between listed nodes, sorted.
    pub links: Vec<LinkView>,
    /// The recent joins and losses, oldest first (at most the monitor's bound).
    pub events: Vec<MeshChange>,
}

impl MeshSnapshot {
    /// The same snapshot without node addresses (for a client that is not logged in).
    #[must_use]
    pub fn without_addresses(mut self) -> Self {
        for n in &mut self.nodes {
            n.addr = None;
        }
        self
    }

    /// The nodes and their services, without the figures that change every round (uptime,
    /// round trips, times): two snapshots of an unchanged mesh have the same shape.
    pub fn shape(&self) -> Vec<(String, String, Vec<String>)> {
        self.nodes
            .iter()
            .map(|n| (n.id.clone(), n.key.clone(), n.services.clone()))
            .collect()
    }
}

/// What one round learned of one node.
#[derive(Debug, Clone)]
pub(crate) struct Probe {
    pub(crate) node: NodeId,
    /// Its answer to the node-info call.
    pub(crate) info: Option<NodeInfo>,
    /// Its key, when the table says (a provider's).
    pub(crate) key_hint: Option<String>,
    /// The round trip of a ping to it.
    pub(crate) rtt_ms: Option<f64>,
}

/// The monitor's state between rounds.
#[derive(Debug)]
pub(crate) struct State {
    nodes: HashMap<NodeId, NodeView>,
    links: Vec<LinkView>,
    events: VecDeque<MeshChange>,
    max_events: usize,
    rounds: u64,
}

impl State {
    pub(crate) fn new(max_events: usize) -> Self {
        Self {
            nodes: HashMap::new(),
            links: Vec::new(),
            events: VecDeque::new(),
            max_events,
            rounds: 0,
        }
    }

    fn push_event(&mut self, change: MeshChange) {
        if self.max_events == 0 {
            return;
        }
        while self.events.len() >= self.max_events {
            self.events.pop_front();
        }
        self.events.push_back(change);
    }

    /// Take in one round: `probes` are every node present now (monitors included: they are
    /// dropped here); a listed node missing from them is lost.
    pub(crate) fn apply(&mut self, probes: Vec<Probe>, now_ms: u64) {
        self.rounds += 1;
        let mut present: HashMap<NodeId, NodeView> = HashMap::new();
        let mut links: BTreeMap<(String, String), Option<f64>> = BTreeMap::new();
        let mut reported: Vec<(String, Vec<crate::mesh::LinkInfo>)> = Vec::new();
        for p in probes {
            if p.info.as_ref().is_some_and(|i| i.monitor) {
                continue;
            }
            let old = self.nodes.remove(&p.node);
            let first_seen_ms = old.as_ref().map_or(now_ms, |o| o.first_seen_ms);
            let view = match p.info {
                Some(info) => {
                    reported.push((info.node.clone(), info.links));
                    NodeView {
                        id: p.node.to_string(),
                        name: info.name,
                        key: info.key,
                        environment: info.environment,
                        addr: Some(info.addr),
                        uptime_ms: Some(info.uptime_ms),
                        first_seen_ms,
                        rtt_ms: p.rtt_ms,
                        services: info.services,
                        answered: true,
                    }
                }
                // No answer this round: keep what the node said before.
                None => match old.clone() {
                    Some(mut o) => {
                        o.answered = false;
                        o.rtt_ms = p.rtt_ms;
                        o
                    }
                    None => NodeView {
                        id: p.node.to_string(),
                        name: String::new(),
                        key: p.key_hint.clone().unwrap_or_default(),
                        environment: String::new(),
                        addr: None,
                        uptime_ms: None,
                        first_seen_ms,
                        rtt_ms: p.rtt_ms,
                        services: Vec::new(),
                        answered: false,
                    },
                },
            };
            if old.is_none() {
                self.push_event(change(ChangeKind::Join, &view, now_ms));
            }
            present.insert(p.node, view);
        }
        let lost: Vec<NodeView> = self.nodes.drain().map(|(_, v)| v).collect();
        for view in lost {
            self.push_event(change(ChangeKind::Loss, &view, now_ms));
        }
        self.nodes = present;
        let listed: std::collections::HashSet<&str> =
            self.nodes.values().map(|n| n.id.as_str()).collect();
        for (from, reported_links) in &reported {
            for l in reported_links {
                if !listed.contains(l.node.as_str()) || !listed.contains(from.as_str()) {
                    continue;
                }
                let pair = if *from < l.node {
                    (from.clone(), l.node.clone())
                } else {
                    (l.node.clone(), from.clone())
                };
                let rtt = links.entry(pair).or_insert(None);
                if rtt.is_none() {
                    *rtt = l.rtt_ms;
                }
            }
        }
        self.links = links
            .into_iter()
            .map(|((from, to), rtt_ms)| LinkView { from, to, rtt_ms })
            .collect();
    }

    /// The snapshot of the state now.
    pub(crate) fn snapshot(&self, observer: &str, environment: &str, now_ms: u64) -> MeshSnapshot {
        let mut nodes: Vec<NodeView> = self.nodes.values().cloned().collect();
        nodes.sort_by(|a, b| (&a.key, &a.name, &a.id).cmp(&(&b.key, &b.name, &b.id)));
        MeshSnapshot {
            observer: observer.to_owned(),
            environment: environment.to_owned(),
            taken_at_ms: now_ms,
            rounds: self.rounds,
            nodes,
            links: self.links.clone(),
            events: self.events.iter().cloned().collect(),
        }
    }
}

fn change(kind: ChangeKind, view: &NodeView, at_ms: u64) -> MeshChange {
    MeshChange {
        at_ms,
        kind,
        node: view.id.clone(),
        name: view.name.clone(),
        key: view.key.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesh::LinkInfo;

    fn info(node: u128, key: &str, links: &[(u128, f64)], monitor: bool) -> NodeInfo {
        NodeInfo {
            node: NodeId(node).to_string(),
            name: format!("n{node}"),
            key: key.into(),
            environment: "default".into(),
            addr: "127.0.0.1:1".into(),
            uptime_ms: 5,
            protocol: 1,
            monitor,
            services: vec![format!("svc:{key}")],
            links: links
                .iter()
                .map(|(n, rtt)| LinkInfo {
                    node: NodeId(*n).to_string(),
                    rtt_ms: Some(*rtt),
                })
                .collect(),
        }
    }

    fn probe(node: u128, info: Option<NodeInfo>) -> Probe {
        Probe {
            node: NodeId(node),
            info,
            key_hint: Some("hinted".into()),
            rtt_ms: Some(0.5),
        }
    }

    #[test]
    fn joins_losses_links_and_monitors() {
        let mut s = State::new(3);
        s.apply(
            vec![
                probe(1, Some(info(1, "a", &[(2, 0.2), (9, 0.1)], false))),
                probe(2, Some(info(2, "b", &[(1, 0.3)], false))),
                probe(9, Some(info(9, "m", &[], true))),
            ],
            100,
        );
        let snap = s.snapshot("x", "default", 100);
        let keys: Vec<&str> = snap.nodes.iter().map(|n| n.key.as_str()).collect();
        assert_eq!(keys, ["a", "b"], "the monitor is not listed");
        // One link per pair, and none to the monitor.
        assert_eq!(snap.links.len(), 1);
        assert_eq!(snap.links[0].rtt_ms, Some(0.2));
        assert_eq!(snap.events.len(), 2);

        // Node 2 gives no answer: kept, not answered. Node 3 is new and silent: listed with the
        // table's key. Then node 1 is gone.
        s.apply(
            vec![
                probe(1, Some(info(1, "a", &[], false))),
                probe(2, None),
                probe(3, None),
            ],
            200,
        );
        let snap = s.snapshot("x", "default", 200);
        let n2 = snap.nodes.iter().find(|n| n.key == "b").unwrap();
        assert!(!n2.answered);
        assert_eq!(n2.first_seen_ms, 100);
        assert!(snap.nodes.iter().any(|n| n.key == "hinted" && !n.answered));
        s.apply(vec![probe(2, None), probe(3, None)], 300);
        let snap = s.snapshot("x", "default", 300);
        assert_eq!(snap.nodes.len(), 2);
        // Bounded: the oldest join fell out.
        assert_eq!(snap.events.len(), 3);
        let last = snap.events.last().unwrap();
        assert_eq!((last.kind, last.key.as_str()), (ChangeKind::Loss, "a"));
        assert_eq!(snap.rounds, 3);
        assert!(snap.links.is_empty());
        assert!(
            snap.clone()
                .without_addresses()
                .nodes
                .iter()
                .all(|n| n.addr.is_none())
        );
    }
}
