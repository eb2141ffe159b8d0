//! The NATS JetStream key-value backend against a real `nats-server -js` on a free loopback
//! port (started by the test, killed by PID): three members in this process, each with its own
//! connection; every start and stop is logged with its instant and no configuration may run
//! twice at once.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use plume_instances::{InstanceConfig, InstanceSet, Settings};
use plume_tests::servers::Server;
use serde_json::json;

const CONFIGS: usize = 7;
const SETTLE: Duration = Duration::from_secs(20);

#[derive(Debug, Clone)]
struct Event {
    config: String,
    node: String,
    start: bool,
    at: Instant,
    fencing: u64,
}

type Log = Arc<Mutex<Vec<Event>>>;

fn events(log: &Log) -> Vec<Event> {
    log.lock().unwrap_or_else(PoisonError::into_inner).clone()
}

/// Faults the test injects: (node, config) pairs whose creation fails there (attempts
/// counted), and configurations whose next health check fails.
#[derive(Default)]
struct Faults {
    broken: Mutex<BTreeMap<(String, String), usize>>,
    sick: Mutex<BTreeSet<String>>,
}

struct Recorder {
    node: String,
    log: Log,
    faults: Arc<Faults>,
}

#[async_trait::async_trait]
impl InstanceSet for Recorder {
    type Instance = (String, u64);

    async fn get_config(&self) -> Result<Vec<InstanceConfig>, plume::Error> {
        Ok((1..=CONFIGS)
            .map(|i| InstanceConfig::new(i.to_string(), json!({ "n": i })))
            .collect())
    }

    async fn create_instance(
        &self,
        config: &InstanceConfig,
        fencing: u64,
    ) -> Result<Self::Instance, plume::Error> {
        let key = (self.node.clone(), config.id.clone());
        if let Some(tries) = self
            .faults
            .broken
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_mut(&key)
        {
            *tries += 1;
            return Err(plume::Error::unavailable("broken here"));
        }
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Event {
                config: config.id.clone(),
                node: self.node.clone(),
                start: true,
                at: Instant::now(),
                fencing,
            });
        Ok((config.id.clone(), fencing))
    }

    async fn healthcheck_instance(&self, (config, _): &Self::Instance) -> Result<(), plume::Error> {
        let sick = self
            .faults
            .sick
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(config);
        if sick {
            Err(plume::Error::unavailable("sick"))
        } else {
            Ok(())
        }
    }

    async fn disconnect_instance(&self, (config, fencing): Self::Instance) {
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Event {
                config,
                node: self.node.clone(),
                start: false,
                at: Instant::now(),
                fencing,
            });
    }
}

/// Who runs what now (replayed); panics when a configuration starts on a node while it runs
/// on another, or a stop has no start.
fn running(log: &Log) -> BTreeMap<String, String> {
    let mut open: BTreeMap<String, String> = BTreeMap::new();
    for e in events(log) {
        if e.start {
            if let Some(other) = open.get(&e.config) {
                panic!(
                    "config {} started on {} while running on {other}",
                    e.config, e.node
                );
            }
            open.insert(e.config, e.node);
        } else {
            assert_eq!(open.remove(&e.config).as_deref(), Some(e.node.as_str()));
        }
    }
    open
}

fn counts(log: &Log) -> Vec<usize> {
    let mut per: BTreeMap<String, usize> = BTreeMap::new();
    for n in running(log).into_values() {
        *per.entry(n).or_default() += 1;
    }
    let mut v: Vec<usize> = per.into_values().collect();
    v.sort_unstable_by(|a, b| b.cmp(a));
    v
}

async fn wait(what: &str, limit: Duration, ok: impl Fn() -> bool) -> Duration {
    let t0 = Instant::now();
    while !ok() {
        assert!(t0.elapsed() < limit, "{what}: not within {limit:?}");
        // The members write to the server on their own timers; look again shortly.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    t0.elapsed()
}

async fn member(url: &str, set: &str, node: &str, log: &Log) -> plume_instances::kv::KvManager {
    member_with(url, set, node, log, &Arc::default(), Settings::default()).await
}

async fn member_with(
    url: &str,
    set: &str,
    node: &str,
    log: &Log,
    faults: &Arc<Faults>,
    settings: Settings,
) -> plume_instances::kv::KvManager {
    let client = async_nats::connect(url)
        .await
        .expect("connects to nats-server");
    let recorder = Recorder {
        node: node.to_owned(),
        log: Arc::clone(log),
        faults: Arc::clone(faults),
    };
    plume_instances::kv::register(client, set, recorder, settings)
        .await
        .expect("registers")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_share_seven_configs_and_a_leaver_hands_over() {
    let server = Server::start_jetstream();
    let log: Log = Arc::default();
    let mut nodes = Vec::new();
    for name in ["a", "b", "c"] {
        nodes.push(member(&server.url(), "kvtest", name, &log).await);
    }
    wait("3/2/2", SETTLE, || counts(&log) == [3, 2, 2]).await;
    // Every grant has its own, larger fencing token (the keys' create revisions).
    let tokens: Vec<u64> = events(&log)
        .iter()
        .filter(|e| e.start)
        .map(|e| e.fencing)
        .collect();
    let mut unique = tokens.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), tokens.len());

    // One member leaves cleanly: its configurations move, 4/3, with no overlap.
    let leaver = nodes.remove(0);
    leaver.shutdown().await;
    let took = wait("4/3", SETTLE, || counts(&log) == [4, 3]).await;
    eprintln!("a leaver's configurations moved in {took:?}");
    for n in &nodes {
        n.shutdown().await;
    }
    assert!(running(&log).is_empty(), "every start was disconnected");
    // A configuration that moved got a larger token on its new node.
    let mut last: BTreeMap<String, u64> = BTreeMap::new();
    for e in events(&log).into_iter().filter(|e| e.start) {
        if let Some(prev) = last.insert(e.config.clone(), e.fencing) {
            assert!(e.fencing > prev);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_server_every_instance_stops_before_its_lease_ends() {
    let mut server = Server::start_jetstream();
    let log: Log = Arc::default();
    let mut nodes = Vec::new();
    for name in ["a", "b"] {
        nodes.push(member(&server.url(), "outage", name, &log).await);
    }
    wait("all running", SETTLE, || running(&log).len() == CONFIGS).await;
    // The server goes away: nobody can renew, so every instance stops within one lease (the
    // key would expire on the server no earlier).
    let gone = Instant::now();
    server.kill();
    let lease = Settings::default().lease;
    wait("all stopped", lease + Duration::from_secs(1), || {
        running(&log).is_empty()
    })
    .await;
    let last_stop = events(&log)
        .iter()
        .filter(|e| !e.start)
        .map(|e| e.at)
        .max()
        .unwrap_or(gone);
    assert!(
        last_stop.duration_since(gone) < lease,
        "{:?}",
        last_stop.duration_since(gone)
    );
    // Back: everything runs again, once.
    server.restart();
    wait("all running again", SETTLE, || {
        running(&log).len() == CONFIGS
    })
    .await;
    for n in &nodes {
        n.shutdown().await;
    }
    assert!(running(&log).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_that_fails_everywhere_is_tried_a_bounded_number_of_times() {
    let server = Server::start_jetstream();
    let log: Log = Arc::default();
    let faults: Arc<Faults> = Arc::default();
    let settings = Settings {
        refuse_for: Duration::from_secs(15),
        ..Settings::default()
    };
    let mut nodes = Vec::new();
    for name in ["a", "b", "c"] {
        nodes.push(member_with(&server.url(), "failing", name, &log, &faults, settings).await);
    }
    wait("3/2/2", SETTLE, || counts(&log) == [3, 2, 2]).await;
    // One configuration breaks on every member: its health check fails, and so does every
    // creation. Each member tries it `create_failures` times (with backoff), then refuses it;
    // once all three refuse it, nobody tries it until a refusal ends.
    let bad = running(&log).into_keys().next().expect("something runs");
    {
        let mut broken = faults.broken.lock().unwrap_or_else(PoisonError::into_inner);
        for n in ["a", "b", "c"] {
            broken.insert((n.to_owned(), bad.clone()), 0);
        }
    }
    faults
        .sick
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(bad.clone());
    let limit = settings.create_failures as usize;
    let tries = || -> Vec<usize> {
        faults
            .broken
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .copied()
            .collect()
    };
    let took = wait("every member gave it up", SETTLE, || {
        tries().iter().all(|t| *t >= limit)
    })
    .await;
    eprintln!("a configuration failing everywhere was given up by all after {took:?}");
    assert_eq!(tries(), vec![limit; 3], "attempts per member");
    // The other six run meanwhile.
    let r = running(&log);
    assert_eq!(r.len(), CONFIGS - 1, "{r:?}");
    // Repaired: once the refusals end, it runs again (once).
    faults
        .broken
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clear();
    wait("all seven again", settings.refuse_for + SETTLE, || {
        running(&log).len() == CONFIGS
    })
    .await;
    for n in &nodes {
        n.shutdown().await;
    }
    assert!(running(&log).is_empty());
}
