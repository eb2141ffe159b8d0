//! The leader's table of per-config leases: who holds what until when (on the leader's clock),
//! the fencing tokens, and the rule that a configuration is granted to a new node only once no
//! other node can still hold it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use plume_transport::NodeId;
use tokio::time::Instant;

use crate::assign::{assign, avoid_refused};
use crate::wire::{Grant, Grants, InstanceConfig};

/// At most this many nodes are tracked (polls from more are refused).
pub const MAX_NODES: usize = 1024;

/// One configuration held by one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Hold {
    fencing: u64,
    /// The node's lease certainly ends by then (the leader lease at the last grant).
    until: Instant,
}

#[derive(Debug, Default)]
struct NodeRecord {
    last_poll: Option<Instant>,
    seq: u64,
    holds: BTreeMap<String, Hold>,
    /// What it ran under an earlier leader (a preference, not a lease).
    had: BTreeSet<String>,
    /// What it gave up after repeated `create_instance` failures (never assigned to it).
    refused: BTreeSet<String>,
}

/// The leader's per-config lease table for one term.
#[derive(Debug)]
pub struct Ledger {
    term: u64,
    /// Grants issued in this term (the low half of every fencing token).
    issued: u64,
    started: Instant,
    silent_after: Duration,
    configs: BTreeMap<String, InstanceConfig>,
    nodes: BTreeMap<NodeId, NodeRecord>,
    /// The last assignment (configuration → node), kept so waiting grants do not bounce.
    assignment: BTreeMap<String, NodeId>,
    /// Once every live member has polled in this term (or `silent_after` has passed), for good.
    settled: bool,
}

/// Why a poll was not answered with grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Too many nodes are tracked already.
    TooManyNodes,
}

impl Ledger {
    /// A fresh table for `term`, begun at `now`: every lease of an earlier term has expired
    /// (the new leader's majority includes a voter that backed the old leader until then).
    pub fn new(term: u64, now: Instant, silent_after: Duration) -> Ledger {
        Ledger {
            term,
            issued: 0,
            started: now,
            silent_after,
            configs: BTreeMap::new(),
            nodes: BTreeMap::new(),
            assignment: BTreeMap::new(),
            settled: false,
        }
    }

    /// The term.
    pub fn term(&self) -> u64 {
        self.term
    }

    /// Replace the configurations (from `get_config`). Duplicated ids keep the first.
    pub fn set_configs(&mut self, configs: Vec<InstanceConfig>) {
        let mut map = BTreeMap::new();
        for c in configs {
            map.entry(c.id.clone()).or_insert(c);
        }
        self.configs = map;
    }

    /// The configurations.
    pub fn configs(&self) -> impl Iterator<Item = &InstanceConfig> {
        self.configs.values()
    }

    /// Who holds what now (configuration → node, fencing), for status pages.
    pub fn holders(&self, now: Instant) -> BTreeMap<String, (NodeId, u64)> {
        let mut out = BTreeMap::new();
        for (node, rec) in &self.nodes {
            for (c, h) in &rec.holds {
                if h.until > now {
                    out.insert(c.clone(), (*node, h.fencing));
                }
            }
        }
        out
    }

    fn next_fencing(&mut self) -> u64 {
        self.issued += 1;
        (self.term << 32) | (self.issued & 0xffff_ffff)
    }

    /// The configurations `from` refuses now (it failed to create them too often; its next
    /// poll says so again while it does): they are assigned to other nodes. Call before
    /// [`poll`](Ledger::poll). Unknown ids are ignored.
    pub fn set_refused(&mut self, from: NodeId, refused: &[String]) {
        if !self.nodes.contains_key(&from) && self.nodes.len() >= MAX_NODES {
            return;
        }
        let refused: BTreeSet<String> = refused
            .iter()
            .filter(|c| self.configs.contains_key(*c))
            .cloned()
            .collect();
        if refused.is_empty() && !self.nodes.contains_key(&from) {
            return;
        }
        self.nodes.entry(from).or_default().refused = refused;
    }

    /// A poll from `from` (numbered `seq`, holding `held`, having run `had` before) at `now`,
    /// while this leader's lease holds until `lease_until`; `live` are the members the
    /// membership view says are up. Answers what `from` may run now.
    #[allow(clippy::too_many_arguments)]
    pub fn poll(
        &mut self,
        from: NodeId,
        seq: u64,
        held: &[String],
        had: &[String],
        live: &BTreeSet<NodeId>,
        now: Instant,
        lease_until: Instant,
    ) -> Result<Grants, Refusal> {
        if !self.nodes.contains_key(&from) && self.nodes.len() >= MAX_NODES {
            self.prune(now);
            if self.nodes.len() >= MAX_NODES {
                return Err(Refusal::TooManyNodes);
            }
        }
        self.prune(now);
        let rec = self.nodes.entry(from).or_default();
        rec.last_poll = Some(now);
        if seq > rec.seq {
            rec.seq = seq;
            // What it no longer reports it has stopped: free at once (it applies each answer
            // before it sends its next poll, so an omitted grant is never in flight).
            let held: BTreeSet<&String> = held.iter().collect();
            rec.holds.retain(|c, _| held.contains(c));
        }
        rec.had = had
            .iter()
            .filter(|c| self.configs.contains_key(*c))
            .cloned()
            .collect();
        let settled = self.rebalance(live, now);
        let mut grants = Vec::new();
        let mine: Vec<String> = self
            .assignment
            .iter()
            .filter(|(_, n)| settled && **n == from)
            .map(|(c, _)| c.clone())
            .collect();
        for id in mine {
            let taken = self
                .nodes
                .iter()
                .any(|(n, r)| *n != from && r.holds.get(&id).is_some_and(|h| h.until > now));
            if taken {
                continue;
            }
            let Some(config) = self.configs.get(&id).cloned() else {
                continue;
            };
            let existing = self
                .nodes
                .get(&from)
                .and_then(|r| r.holds.get(&id))
                .copied();
            let fencing = match existing {
                Some(h) => h.fencing,
                None => self.next_fencing(),
            };
            if let Some(rec) = self.nodes.get_mut(&from) {
                rec.holds.insert(
                    id,
                    Hold {
                        fencing,
                        until: lease_until,
                    },
                );
            }
            grants.push(Grant { config, fencing });
        }
        Ok(Grants {
            term: self.term,
            valid_for_ms: u64::try_from(lease_until.saturating_duration_since(now).as_millis())
                .unwrap_or(u64::MAX),
            grants,
            members: Vec::new(),
        })
    }

    /// Drop expired holds and nodes silent for long with nothing held.
    fn prune(&mut self, now: Instant) {
        let forget = self.silent_after * 10;
        for rec in self.nodes.values_mut() {
            rec.holds.retain(|_, h| h.until > now);
        }
        self.nodes.retain(|_, r| {
            !r.holds.is_empty() || r.last_poll.is_some_and(|t| now.duration_since(t) < forget)
        });
    }

    /// The nodes that may be given configurations: live members that polled lately.
    fn eligible(&self, live: &BTreeSet<NodeId>, now: Instant) -> BTreeSet<NodeId> {
        live.iter()
            .filter(|n| {
                self.nodes
                    .get(n)
                    .and_then(|r| r.last_poll)
                    .is_some_and(|t| now.duration_since(t) < self.silent_after)
            })
            .copied()
            .collect()
    }

    /// Whether every live member has polled in this term (or the term's first `silent_after`
    /// is over): until then nothing is granted, so the first assignment knows what every node
    /// ran under the previous leader.
    fn settled(&mut self, live: &BTreeSet<NodeId>, now: Instant) -> bool {
        self.settled = self.settled
            || now.duration_since(self.started) >= self.silent_after
            || live
                .iter()
                .all(|n| self.nodes.get(n).is_some_and(|r| r.last_poll.is_some()));
        self.settled
    }

    fn rebalance(&mut self, live: &BTreeSet<NodeId>, now: Instant) -> bool {
        let settled = self.settled(live, now);
        // Current owners: what nodes ran under an earlier leader, then real holds, then the
        // assignment being carried out (it wins, so a decided move is not undone while the
        // old holder is still stopping).
        let mut current: BTreeMap<String, NodeId> = BTreeMap::new();
        for (node, rec) in &self.nodes {
            for c in &rec.had {
                current.insert(c.clone(), *node);
            }
        }
        for (node, rec) in &self.nodes {
            for (c, h) in &rec.holds {
                if h.until > now {
                    current.insert(c.clone(), *node);
                }
            }
        }
        if !settled {
            // Nothing is decided before every member has said what it ran.
            return false;
        }
        current.extend(self.assignment.iter().map(|(c, n)| (c.clone(), *n)));
        let ids: BTreeSet<String> = self.configs.keys().cloned().collect();
        let eligible = self.eligible(live, now);
        let mut assignment = assign(&eligible, &ids, &current);
        let refused: BTreeMap<NodeId, &BTreeSet<String>> = self
            .nodes
            .iter()
            .filter(|(n, r)| !r.refused.is_empty() && eligible.contains(*n))
            .map(|(n, r)| (*n, &r.refused))
            .collect();
        if !refused.is_empty() {
            avoid_refused(&mut assignment, &eligible, &refused);
        }
        self.assignment = assignment;
        settled
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SILENT: Duration = Duration::from_millis(1200);

    fn cfgs(n: usize) -> Vec<InstanceConfig> {
        (1..=n)
            .map(|i| InstanceConfig::new(i.to_string(), json!({ "n": i })))
            .collect()
    }

    fn ids(g: &Grants) -> Vec<String> {
        g.grants.iter().map(|g| g.config.id.clone()).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn a_moved_config_waits_until_the_old_holder_released_or_expired() {
        let t0 = Instant::now();
        let (a, b) = (NodeId(1), NodeId(2));
        let mut l = Ledger::new(1, t0, SILENT);
        l.set_configs(cfgs(2));
        let live_a: BTreeSet<NodeId> = [a].into();
        let until = t0 + Duration::from_secs(2);
        let g = l.poll(a, 1, &[], &[], &live_a, t0, until).unwrap();
        assert_eq!(ids(&g), vec!["1", "2"]);
        // B joins: one config should move, but A holds it until A says it stopped.
        let both: BTreeSet<NodeId> = [a, b].into();
        let t1 = t0 + Duration::from_millis(400);
        let g = l.poll(b, 1, &[], &[], &both, t1, until).unwrap();
        assert!(g.grants.is_empty(), "granted while A still holds: {g:?}");
        // A's next poll: it is told to keep only one.
        let g = l
            .poll(a, 2, &["1".into(), "2".into()], &[], &both, t1, until)
            .unwrap();
        assert_eq!(g.grants.len(), 1);
        let kept = ids(&g);
        // B still waits: A has not yet said it stopped the other one.
        assert!(
            l.poll(b, 2, &[], &[], &both, t1, until)
                .unwrap()
                .grants
                .is_empty()
        );
        // A reports it stopped it: B gets it, with a new, larger token.
        l.poll(a, 3, &kept, &[], &both, t1, until).unwrap();
        let g = l.poll(b, 3, &[], &[], &both, t1, until).unwrap();
        assert_eq!(g.grants.len(), 1);
        assert_ne!(ids(&g), kept);
        assert!(g.grants[0].fencing > 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_holder_frees_only_at_expiry() {
        let t0 = Instant::now();
        let (a, b) = (NodeId(1), NodeId(2));
        let both: BTreeSet<NodeId> = [a, b].into();
        let mut l = Ledger::new(1, t0, SILENT);
        l.set_configs(cfgs(4));
        let until = t0 + Duration::from_secs(2);
        // Nothing is granted before every live member has polled once.
        assert!(
            l.poll(a, 1, &[], &[], &both, t0, until)
                .unwrap()
                .grants
                .is_empty()
        );
        assert_eq!(
            l.poll(b, 1, &[], &[], &both, t0, until)
                .unwrap()
                .grants
                .len(),
            2
        );
        assert_eq!(
            l.poll(a, 2, &[], &[], &both, t0, until)
                .unwrap()
                .grants
                .len(),
            2
        );
        // A goes silent; B keeps polling.
        let mut t = t0;
        let mut last = 2;
        for seq in 3..20 {
            t += Duration::from_millis(400);
            let u = t + Duration::from_secs(2);
            let held: Vec<String> = l
                .holders(t)
                .into_iter()
                .filter(|(_, (n, _))| *n == b)
                .map(|(c, _)| c)
                .collect();
            let g = l.poll(b, seq, &held, &[], &both, t, u).unwrap();
            if g.grants.len() > last {
                // Never before A's hold (granted until `until`) has expired.
                assert!(t >= until, "granted A's config at {:?}", t - t0);
                last = g.grants.len();
            }
        }
        assert_eq!(last, 4);
    }

    #[tokio::test(start_paused = true)]
    async fn fencing_tokens_grow_across_grants_and_terms() {
        let t0 = Instant::now();
        let a = NodeId(1);
        let live: BTreeSet<NodeId> = [a].into();
        let until = t0 + Duration::from_secs(2);
        let mut l = Ledger::new(1, t0, SILENT);
        l.set_configs(cfgs(3));
        let first: Vec<u64> = l
            .poll(a, 1, &[], &[], &live, t0, until)
            .unwrap()
            .grants
            .iter()
            .map(|g| g.fencing)
            .collect();
        // Renewal keeps the token.
        let again: Vec<u64> = l
            .poll(
                a,
                2,
                &["1".into(), "2".into(), "3".into()],
                &[],
                &live,
                t0,
                until,
            )
            .unwrap()
            .grants
            .iter()
            .map(|g| g.fencing)
            .collect();
        assert_eq!(first, again);
        let mut l2 = Ledger::new(2, until, SILENT);
        l2.set_configs(cfgs(3));
        let later: Vec<u64> = l2
            .poll(a, 3, &[], &[], &live, until, until + Duration::from_secs(2))
            .unwrap()
            .grants
            .iter()
            .map(|g| g.fencing)
            .collect();
        assert!(later.iter().min() > first.iter().max());
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_leader_keeps_what_nodes_had() {
        let t0 = Instant::now();
        let (a, b) = (NodeId(1), NodeId(2));
        let both: BTreeSet<NodeId> = [a, b].into();
        let mut l = Ledger::new(5, t0, SILENT);
        l.set_configs(cfgs(4));
        let until = t0 + Duration::from_secs(2);
        let g = l
            .poll(a, 1, &[], &["1".into(), "4".into()], &both, t0, until)
            .unwrap();
        assert!(g.grants.is_empty());
        let g = l
            .poll(b, 1, &[], &["2".into(), "3".into()], &both, t0, until)
            .unwrap();
        assert_eq!(ids(&g), vec!["2", "3"]);
        let g = l
            .poll(a, 2, &[], &["1".into(), "4".into()], &both, t0, until)
            .unwrap();
        assert_eq!(ids(&g), vec!["1", "4"]);
    }
}
