//! Whole members over an in-process message layer with cuts, in paused tokio time: election,
//! expiry, rebalancing, failover, partitions, health. Every instance start and stop is logged
//! with its instant; no configuration may ever run on two nodes at the same instant.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use plume_transport::NodeId;
use serde_json::json;
use tokio::time::Instant;

use crate::{
    Answer, InstanceConfig, InstanceError, InstanceManager, InstanceSet, Link, Member, Message,
    Settings,
};

mod backoff;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The message layer: a one-way delay, and cut pairs (a call over a cut waits out its timeout).
#[derive(Default)]
struct Net {
    nodes: Mutex<HashMap<NodeId, Arc<Member>>>,
    cut: Mutex<HashSet<(NodeId, NodeId)>>,
    delay: Duration,
}

struct SimLink {
    net: Arc<Net>,
    from: NodeId,
}

#[async_trait]
impl Link for SimLink {
    async fn call(
        &self,
        to: NodeId,
        message: &Message,
        timeout: Duration,
    ) -> Result<Answer, InstanceError> {
        let target = {
            let cut = lock(&self.net.cut).contains(&(self.from, to));
            lock(&self.net.nodes).get(&to).filter(|_| !cut).cloned()
        };
        let delay = self.net.delay;
        let Some(target) = target.filter(|_| delay * 2 < timeout) else {
            tokio::time::sleep(timeout).await;
            return Err(InstanceError::Call("unreachable".into()));
        };
        tokio::time::sleep(delay).await;
        let answer = target.handle(self.from, message.clone());
        tokio::time::sleep(delay).await;
        // The way back may have been cut meanwhile.
        if lock(&self.net.cut).contains(&(to, self.from)) {
            tokio::time::sleep(timeout.saturating_sub(delay * 2)).await;
            return Err(InstanceError::Call("unreachable".into()));
        }
        Ok(answer)
    }
}

#[derive(Debug, Clone)]
struct Event {
    config: String,
    node: String,
    start: bool,
    at: Instant,
    fencing: u64,
}

/// The instance set of one simulated node: it logs every start and stop.
struct Recorder {
    node: String,
    log: Arc<Mutex<Vec<Event>>>,
    configs: Arc<Mutex<Vec<InstanceConfig>>>,
    sick: Arc<Mutex<HashSet<String>>>,
    /// (node, config): its `create_instance` fails there; every attempt is counted.
    broken: Arc<Mutex<HashMap<(String, String), usize>>>,
}

#[async_trait]
impl InstanceSet for Recorder {
    type Instance = (String, u64);

    async fn get_config(&self) -> Result<Vec<InstanceConfig>, plume::Error> {
        Ok(lock(&self.configs).clone())
    }

    async fn create_instance(
        &self,
        config: &InstanceConfig,
        fencing: u64,
    ) -> Result<Self::Instance, plume::Error> {
        if let Some(tries) = lock(&self.broken).get_mut(&(self.node.clone(), config.id.clone())) {
            *tries += 1;
            return Err(plume::Error::unavailable("broken here"));
        }
        lock(&self.log).push(Event {
            config: config.id.clone(),
            node: self.node.clone(),
            start: true,
            at: Instant::now(),
            fencing,
        });
        Ok((config.id.clone(), fencing))
    }

    async fn healthcheck_instance(&self, instance: &Self::Instance) -> Result<(), plume::Error> {
        if lock(&self.sick).remove(&instance.0) {
            return Err(plume::Error::unavailable("sick"));
        }
        Ok(())
    }

    async fn disconnect_instance(&self, instance: Self::Instance) {
        lock(&self.log).push(Event {
            config: instance.0,
            node: self.node.clone(),
            start: false,
            at: Instant::now(),
            fencing: instance.1,
        });
    }
}

struct Node {
    name: String,
    id: NodeId,
    manager: InstanceManager,
}

struct Cluster {
    net: Arc<Net>,
    log: Arc<Mutex<Vec<Event>>>,
    configs: Arc<Mutex<Vec<InstanceConfig>>>,
    sick: Arc<Mutex<HashSet<String>>>,
    broken: Arc<Mutex<HashMap<(String, String), usize>>>,
    nodes: Vec<Node>,
    next: u128,
    settings: Settings,
    /// New nodes are told of the others at once (discovery found them).
    introduce: bool,
}

impl Cluster {
    fn new(configs: usize) -> Cluster {
        Cluster {
            net: Arc::new(Net {
                delay: Duration::from_millis(5),
                ..Net::default()
            }),
            log: Arc::default(),
            configs: Arc::new(Mutex::new(
                (1..=configs)
                    .map(|i| InstanceConfig::new(i.to_string(), json!({ "n": i })))
                    .collect(),
            )),
            sick: Arc::default(),
            broken: Arc::default(),
            nodes: Vec::new(),
            next: 1,
            settings: Settings::default(),
            introduce: true,
        }
    }

    fn add(&mut self, name: &str) {
        let id = NodeId(self.next);
        self.next += 1;
        let member = Arc::new(Member::new(id, self.settings));
        for n in self.nodes.iter().filter(|_| self.introduce) {
            member.member_up(n.id);
            n.manager.member().member_up(id);
        }
        lock(&self.net.nodes).insert(id, Arc::clone(&member));
        let link = Arc::new(SimLink {
            net: Arc::clone(&self.net),
            from: id,
        });
        let set = Recorder {
            node: name.to_owned(),
            log: Arc::clone(&self.log),
            configs: Arc::clone(&self.configs),
            sick: Arc::clone(&self.sick),
            broken: Arc::clone(&self.broken),
        };
        self.nodes.push(Node {
            name: name.to_owned(),
            id,
            manager: InstanceManager::start(member, link, set),
        });
    }

    fn id(&self, name: &str) -> NodeId {
        self.nodes
            .iter()
            .find(|n| n.name == name)
            .map(|n| n.id)
            .unwrap_or(NodeId(0))
    }

    /// The node gone at once: unreachable, lost to the others, its instances dead now.
    async fn kill(&mut self, name: &str) {
        let id = self.id(name);
        lock(&self.net.nodes).remove(&id);
        let Some(pos) = self.nodes.iter().position(|n| n.id == id) else {
            return;
        };
        let node = self.nodes.remove(pos);
        for n in &self.nodes {
            n.manager.member().member_lost(id);
        }
        node.manager.shutdown().await;
    }

    fn partition(&self, a: &[&str], b: &[&str]) {
        let mut cut = lock(&self.net.cut);
        for x in a {
            for y in b {
                let (x, y) = (self.id(x), self.id(y));
                cut.insert((x, y));
                cut.insert((y, x));
            }
        }
        drop(cut);
        for x in a {
            for y in b {
                self.member(x).member_lost(self.id(y));
                self.member(y).member_lost(self.id(x));
            }
        }
    }

    fn heal(&self) {
        lock(&self.net.cut).clear();
        for x in &self.nodes {
            for y in &self.nodes {
                if x.id != y.id {
                    x.manager.member().member_up(y.id);
                }
            }
        }
    }

    fn member(&self, name: &str) -> &Arc<Member> {
        let n = self.nodes.iter().find(|n| n.name == name);
        match n {
            Some(n) => n.manager.member(),
            None => panic!("no node {name}"),
        }
    }

    fn leader(&self) -> Option<String> {
        self.nodes
            .iter()
            .find(|n| n.manager.member().is_leader())
            .map(|n| n.name.clone())
    }

    /// Who runs what now, replayed from the log; panics at the first overlap.
    fn running(&self) -> BTreeMap<String, String> {
        let mut open: BTreeMap<String, String> = BTreeMap::new();
        let mut last_stop: BTreeMap<String, (String, Instant)> = BTreeMap::new();
        for e in lock(&self.log).iter() {
            if e.start {
                if let Some(other) = open.get(&e.config) {
                    panic!(
                        "config {} started on {} at {:?} while running on {other}",
                        e.config, e.node, e.at
                    );
                }
                if let Some((node, at)) = last_stop.get(&e.config)
                    && *node != e.node
                {
                    assert!(
                        e.at > *at,
                        "config {} moved {node} → {} at one instant",
                        e.config,
                        e.node
                    );
                }
                open.insert(e.config.clone(), e.node.clone());
            } else {
                assert_eq!(
                    open.remove(&e.config).as_deref(),
                    Some(e.node.as_str()),
                    "stop of a config not running there"
                );
                last_stop.insert(e.config.clone(), (e.node.clone(), e.at));
            }
        }
        open
    }

    fn counts(&self) -> Vec<usize> {
        let mut per: BTreeMap<String, usize> = BTreeMap::new();
        for node in self.running().into_values() {
            *per.entry(node).or_default() += 1;
        }
        let mut v: Vec<usize> = per.into_values().collect();
        v.sort_unstable_by(|a, b| b.cmp(a));
        v
    }

    /// Advance time until `ok`, at most `limit`; how long it took.
    async fn wait(&self, what: &str, limit: Duration, ok: impl Fn(&Cluster) -> bool) -> Duration {
        let t0 = Instant::now();
        while !ok(self) {
            assert!(
                t0.elapsed() < limit,
                "{what}: not after {limit:?}; running {:?}",
                self.running()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        t0.elapsed()
    }

    fn starts_since(&self, t: Instant) -> Vec<Event> {
        lock(&self.log)
            .iter()
            .filter(|e| e.start && e.at > t)
            .cloned()
            .collect()
    }

    async fn shutdown(mut self) {
        for n in std::mem::take(&mut self.nodes) {
            n.manager.shutdown().await;
        }
        // Every start was matched by a disconnect.
        assert!(self.running().is_empty());
    }
}

const LIMIT: Duration = Duration::from_secs(10);
const FAILOVER: Duration = Duration::from_secs(5);

#[tokio::test(start_paused = true)]
async fn three_nodes_seven_configs_failover_and_return() {
    let mut c = Cluster::new(7);
    for n in ["a", "b", "c"] {
        c.add(n);
    }
    c.wait("3/2/2", LIMIT, |c| c.counts() == [3, 2, 2]).await;
    // Stable: a second later nothing moved.
    let t = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(c.starts_since(t).is_empty());

    let leader = c.leader().unwrap_or_default();
    c.kill(&leader).await;
    let took = c
        .wait("4/3 after the leader died", FAILOVER, |c| {
            c.counts() == [4, 3]
        })
        .await;
    assert!(took <= FAILOVER, "{took:?}");
    assert!(c.leader().is_some_and(|l| l != leader));

    // A member that is not the leader dies: its configs move, the others stay.
    let leader = c.leader().unwrap_or_default();
    let back = Instant::now();
    c.add("d");
    c.wait("3/2/2 with d", LIMIT, |c| c.counts() == [3, 2, 2])
        .await;
    // Fewest moves: 4/3 → 3/2/2 moves exactly two configurations, both to d.
    let moved = c.starts_since(back);
    assert_eq!(
        moved.len(),
        2,
        "{moved:?}\n{:#?}",
        lock(&c.log)
            .iter()
            .map(|e| format!("{} {} {} {:?}", e.config, e.node, e.start, e.at))
            .collect::<Vec<_>>()
    );
    assert!(moved.iter().all(|e| e.node == "d"));
    // The dead leader still counts (4 members, 3 up) until the leader forgets it.
    assert_eq!(c.member(&leader).members().len(), 4);
    tokio::time::sleep(Settings::default().forget_after + Duration::from_secs(1)).await;
    assert_eq!(c.member(&leader).members().len(), 3);
    let survivor = ["a", "b", "c"]
        .into_iter()
        .find(|n| *n != leader && c.nodes.iter().any(|x| x.name == *n));
    if let Some(s) = survivor {
        let t = Instant::now();
        let theirs: Vec<String> = c
            .running()
            .into_iter()
            .filter(|(_, n)| n == s)
            .map(|(c, _)| c)
            .collect();
        c.kill(s).await;
        let took = c
            .wait("4/3 after a follower died", FAILOVER, |c| {
                c.counts() == [4, 3]
            })
            .await;
        assert!(took <= FAILOVER);
        // Only the dead node's configurations started again.
        let started: Vec<String> = c.starts_since(t).into_iter().map(|e| e.config).collect();
        let mut sorted = started.clone();
        sorted.sort();
        let mut expected = theirs.clone();
        expected.sort();
        assert_eq!(sorted, expected);
    }
    c.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn fencing_tokens_grow_with_every_grant() {
    let mut c = Cluster::new(5);
    for n in ["a", "b", "c"] {
        c.add(n);
    }
    c.wait("all running", LIMIT, |c| c.running().len() == 5)
        .await;
    let leader = c.leader().unwrap_or_default();
    c.kill(&leader).await;
    c.wait("all running again", LIMIT, |c| c.running().len() == 5)
        .await;
    let log = lock(&c.log).clone();
    let starts: Vec<u64> = log.iter().filter(|e| e.start).map(|e| e.fencing).collect();
    let mut unique = starts.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(
        unique.len(),
        starts.len(),
        "a token granted twice: {starts:?}"
    );
    // Per configuration, every new start has a larger token than the one before.
    let mut last: BTreeMap<String, u64> = BTreeMap::new();
    for e in log.iter().filter(|e| e.start) {
        if let Some(prev) = last.insert(e.config.clone(), e.fencing) {
            assert!(e.fencing > prev);
        }
    }
    c.shutdown().await;
}

async fn partition_two_one(minority_is_leader: bool) {
    let mut c = Cluster::new(7);
    for n in ["a", "b", "c"] {
        c.add(n);
    }
    c.wait("3/2/2", LIMIT, |c| c.counts() == [3, 2, 2]).await;
    let leader = c.leader().unwrap_or_default();
    let names = ["a", "b", "c"];
    let lone = if minority_is_leader {
        leader.clone()
    } else {
        names
            .iter()
            .find(|n| **n != leader)
            .map(|n| (*n).to_owned())
            .unwrap_or_default()
    };
    let rest: Vec<&str> = names.iter().copied().filter(|n| *n != lone).collect();
    c.partition(&[lone.as_str()], &rest);
    let took = c
        .wait("all on the majority side", FAILOVER, |c| {
            let r = c.running();
            r.len() == 7 && r.values().all(|n| *n != lone)
        })
        .await;
    assert!(took <= FAILOVER);
    assert_eq!(c.counts(), [4, 3]);
    // The minority side runs nothing and leads nothing for as long as the cut lasts.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(c.running().values().all(|n| *n != lone));
    assert!(!c.member(&lone).is_leader());
    c.heal();
    c.wait("3/2/2 after healing", LIMIT, |c| c.counts() == [3, 2, 2])
        .await;
    c.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn partition_two_one_with_the_leader_alone() {
    partition_two_one(true).await;
}

#[tokio::test(start_paused = true)]
async fn partition_two_one_with_a_follower_alone() {
    partition_two_one(false).await;
}

#[tokio::test(start_paused = true)]
async fn an_unhealthy_instance_is_disconnected_and_created_again() {
    let mut c = Cluster::new(3);
    for n in ["a", "b"] {
        c.add(n);
    }
    c.wait("all running", LIMIT, |c| c.running().len() == 3)
        .await;
    let t = Instant::now();
    lock(&c.sick).insert("2".to_owned());
    c.wait("recreated", LIMIT, |c| !c.starts_since(t).is_empty())
        .await;
    let log = lock(&c.log).clone();
    let stops = log
        .iter()
        .filter(|e| !e.start && e.at >= t && e.config == "2")
        .count();
    assert_eq!(stops, 1);
    assert_eq!(c.running().len(), 3);
    c.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn removed_configs_stop_and_new_ones_start() {
    let mut c = Cluster::new(4);
    for n in ["a", "b"] {
        c.add(n);
    }
    c.wait("all running", LIMIT, |c| c.running().len() == 4)
        .await;
    {
        let mut cfg = lock(&c.configs);
        cfg.retain(|x| x.id != "1");
        cfg.push(InstanceConfig::new("9", json!({})));
    }
    c.wait("1 gone, 9 running", LIMIT, |c| {
        let r = c.running();
        !r.contains_key("1") && r.contains_key("9") && r.len() == 4
    })
    .await;
    assert_eq!(c.counts(), [2, 2]);
    c.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_lone_member_of_three_runs_nothing() {
    // Two members are known but lost from the start: one node alone is no majority.
    let mut c = Cluster::new(3);
    for n in ["a", "b", "c"] {
        c.add(n);
    }
    c.partition(&["a"], &["b", "c"]);
    c.kill("b").await;
    c.kill("c").await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(c.running().is_empty());
    assert!(c.leader().is_none());
    c.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn strangers_do_not_each_lead_a_set_of_one() {
    // Three nodes start before discovery has found anyone: with `min_members` 2 none leads
    // alone; once they know each other, exactly one leads and all run.
    let mut c = Cluster::new(3);
    c.settings.min_members = 2;
    c.introduce = false;
    for n in ["a", "b", "c"] {
        c.add(n);
    }
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert!(c.running().is_empty());
    assert!(c.leader().is_none());
    c.heal(); // introduces every node to every other
    c.wait("all running", LIMIT, |c| c.counts() == [1, 1, 1])
        .await;
    let leaders = c
        .nodes
        .iter()
        .filter(|n| n.manager.member().is_leader())
        .count();
    assert_eq!(leaders, 1);
    c.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_lone_node_may_lead_when_the_set_may_have_one_member() {
    let mut c = Cluster::new(2);
    c.add("a");
    let took = c
        .wait("both running", LIMIT, |c| c.running().len() == 2)
        .await;
    // It first listens for one lease, then stands.
    assert!(took >= Settings::default().lease);
    c.shutdown().await;
}
