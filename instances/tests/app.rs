//! An instance set registered on the App (`app.configure(Instances::new(..))`): three Apps in
//! one process, each with its distribution plugin on the loopback mesh (real sockets), share
//! the set `workers`; the verbose healthcheck shows it; the App's shutdown leaves the set.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use plume::{App, Params};
use plume_instances::app::{AppInstancesExt, HEALTH_SECTION, Instances};
use plume_instances::{InstanceConfig, InstanceSet, Settings};
use plume_transport::distribution::Distribution;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::time::{Instant, timeout};

const CONFIGS: u32 = 7;
const SETTLE: Duration = Duration::from_secs(20);

/// What runs where: configuration → the Apps (0, 1, 2) that run it; a counter moves on each
/// change.
#[derive(Clone)]
struct Running {
    map: Arc<Mutex<BTreeMap<String, Vec<usize>>>>,
    changed: watch::Sender<u64>,
    /// (config, app) pairs that were disconnected.
    stopped: Arc<Mutex<Vec<(String, usize)>>>,
    /// Starts of a configuration that was running on another App at that moment.
    overlaps: Arc<Mutex<Vec<String>>>,
}

impl Running {
    fn new() -> Running {
        Running {
            map: Arc::default(),
            changed: watch::Sender::new(0),
            stopped: Arc::default(),
            overlaps: Arc::default(),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut BTreeMap<String, Vec<usize>>) -> T) -> T {
        let out = f(&mut self.map.lock().unwrap_or_else(PoisonError::into_inner));
        self.changed.send_modify(|n| *n += 1);
        out
    }

    /// Instances per App (largest first) when every configuration runs exactly once.
    fn counts(&self) -> Option<Vec<usize>> {
        let map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        if map.len() != CONFIGS as usize || map.values().any(|a| a.len() != 1) {
            return None;
        }
        let mut per: BTreeMap<usize, usize> = BTreeMap::new();
        for a in map.values() {
            *per.entry(a[0]).or_default() += 1;
        }
        let mut v: Vec<usize> = per.into_values().collect();
        v.sort_unstable_by(|a, b| b.cmp(a));
        Some(v)
    }

    /// Wait (at most `SETTLE`) for `ok`, re-checking on every change.
    async fn wait(&self, what: &str, ok: impl Fn(&Running) -> bool) {
        let t0 = Instant::now();
        let mut rx = self.changed.subscribe();
        while !ok(self) {
            let left = SETTLE.saturating_sub(t0.elapsed());
            assert!(!left.is_zero(), "{what}: not within {SETTLE:?}");
            let _ = timeout(left, rx.changed()).await;
        }
    }
}

struct Workers {
    app: usize,
    running: Running,
}

#[async_trait::async_trait]
impl InstanceSet for Workers {
    type Instance = String;

    async fn get_config(&self) -> Result<Vec<InstanceConfig>, plume::Error> {
        Ok((1..=CONFIGS)
            .map(|i| InstanceConfig::new(i.to_string(), json!({ "n": i })))
            .collect())
    }

    async fn create_instance(&self, c: &InstanceConfig, _: u64) -> Result<String, plume::Error> {
        let (id, app) = (c.id.clone(), self.app);
        let overlap = self.running.with(|m| {
            let on = m.entry(id.clone()).or_default();
            let overlap = !on.is_empty();
            on.push(app);
            overlap
        });
        if overlap {
            // Another App running it now: two at once.
            self.running
                .overlaps
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(format!("config {id} on App {app}"));
        }
        Ok(id)
    }

    async fn disconnect_instance(&self, id: String) {
        let app = self.app;
        self.running
            .stopped
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((id.clone(), app));
        self.running.with(|m| {
            if let Some(on) = m.get_mut(&id) {
                on.retain(|a| *a != app);
                if on.is_empty() {
                    m.remove(&id);
                }
            }
        });
    }
}

fn env() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("instances-app-{}-{t:08x}", std::process::id())
}

fn settings() -> Settings {
    Settings {
        min_members: 2,
        ..Settings::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_apps_share_a_set_registered_on_the_app() {
    let env = env();
    let running = Running::new();
    let mut apps = Vec::new();
    for i in 0..3 {
        let app = App::new();
        let workers = Workers {
            app: i,
            running: running.clone(),
        };
        let distribution = Distribution::new().environment(&env).key("workers");
        if i == 0 {
            // The plugin before the distribution: the set starts in `setup`.
            app.configure(Instances::new("workers", workers).settings(settings()));
            app.configure(distribution);
            assert!(app.instance_set("workers").is_none(), "not before setup");
            app.setup().await.expect("setup starts the set");
        } else {
            // The distribution already started: the set starts at once.
            distribution.start(&app).await.expect("distribution starts");
            app.configure(Instances::new("workers", workers).settings(settings()));
            app.setup().await.expect("setup");
        }
        assert_eq!(app.instance_sets(), vec!["workers".to_owned()]);
        apps.push(app);
    }
    running
        .wait("3/2/2", |r| r.counts() == Some(vec![3, 2, 2]))
        .await;

    // The verbose healthcheck of each App shows the set: its node, leader, what runs there.
    // A node records what it holds once `create_instance` has returned, a moment after the test's
    // own record: the healthchecks are asked again (within SETTLE) until they show all seven.
    let t0 = Instant::now();
    loop {
        let shown = healthchecks_show(&apps).await;
        if shown == CONFIGS as usize {
            break;
        }
        assert!(
            t0.elapsed() < SETTLE,
            "the healthchecks show {shown} running, not {CONFIGS}, after {SETTLE:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The same name twice on one App: the error of setup.
    let again = Workers {
        app: 9,
        running: Running::new(),
    };
    apps[1].configure(Instances::new("workers", again));
    let err = apps[1].setup().await.expect_err("registered twice");
    assert!(err.message().contains("already registered"), "{err:?}");

    // The App's shutdown leaves the set: its instances are disconnected, the other two take
    // them over (4/3).
    let gone = 2;
    let theirs = running.with(|m| m.values().filter(|a| a == &&vec![gone]).count());
    apps[gone].shutdown().await;
    assert!(apps[gone].instance_set("workers").is_none());
    let stopped = running
        .stopped
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .filter(|(_, a)| *a == gone)
        .count();
    assert_eq!(stopped, theirs, "every instance of the App disconnected");
    running
        .wait("4/3", |r| r.counts() == Some(vec![4, 3]))
        .await;
    for app in &apps[..2] {
        app.shutdown().await;
    }
    assert!(
        running
            .map
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_empty()
    );
    let overlaps = running
        .overlaps
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    assert!(overlaps.is_empty(), "two at once: {overlaps:?}");
}

#[tokio::test]
async fn without_a_distribution_setup_fails() {
    let app = App::new();
    app.configure(Instances::new(
        "workers",
        Workers {
            app: 0,
            running: Running::new(),
        },
    ));
    let err = app.setup().await.expect_err("no distribution plugin");
    assert!(
        err.message().contains("needs the distribution plugin"),
        "{err:?}"
    );
}

/// The number of configurations the verbose healthchecks of `apps` show running, after checking
/// each shows its node and a leader, and that a plain healthcheck has no section.
async fn healthchecks_show(apps: &[App]) -> usize {
    let mut shown = 0;
    for app in apps {
        let health = app
            .service("distribution/healthcheck")
            .expect("healthcheck mounted")
            .find(Params::new().with_query(json!({ "verbose": "true" })))
            .await
            .expect("healthy");
        let set = &health[HEALTH_SECTION]["workers"];
        let node = app
            .instance_set("workers")
            .expect("registered")
            .node()
            .to_string();
        assert_eq!(set["node"], Value::String(node), "{health}");
        assert!(set["leader"].is_string(), "{health}");
        shown += set["running"].as_object().map_or(0, serde_json::Map::len);
        // Not verbose: no section.
        let plain = app
            .service("distribution/healthcheck")
            .expect("healthcheck mounted")
            .find(Params::new())
            .await
            .expect("healthy");
        assert!(plain.get(HEALTH_SECTION).is_none(), "{plain}");
    }
    shown
}
