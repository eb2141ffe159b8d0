//! Scenarios shared by the NATS and Redis backend tests: the same flows, only the discovery
//! configuration (and the child processes' environment variables) differ.

#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use plume::{App, ErrorKind, Id, MemoryService, Params};
use plume_tests::child::ChildNode as Node;
use plume_transport::DiscoveryConfig;
use plume_transport::distribution::{Distribution, DistributionHandle};
use serde_json::{Value, json};
use tokio::time::timeout;

pub const WAIT: Duration = Duration::from_secs(20);
pub const HEARTBEAT_MS: u64 = 200;
pub const NODE_TIMEOUT_MS: u64 = 1000;

pub fn unique_env(test: &str) -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{test}-{}-{t:08x}", std::process::id())
}

pub async fn within<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    match timeout(WAIT, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out waiting for {what}"),
    }
}

/// The discovery variables of a backend: `(PLUME_DISCOVERY, URL variable, URL)`.
#[derive(Debug, Clone)]
pub struct Backend {
    pub vars: Vec<(String, String)>,
}

impl Backend {
    pub fn new(mode: &str, url_var: &str, url: &str) -> Backend {
        Backend {
            vars: vec![
                ("PLUME_DISCOVERY".into(), mode.into()),
                (url_var.into(), url.into()),
                ("PLUME_HEARTBEAT_MS".into(), HEARTBEAT_MS.to_string()),
                ("PLUME_NODE_TIMEOUT_MS".into(), NODE_TIMEOUT_MS.to_string()),
            ],
        }
    }

    /// The configuration, read through `DiscoveryConfig::from_lookup` exactly as from the
    /// process environment.
    pub fn config(&self) -> DiscoveryConfig {
        DiscoveryConfig::from_lookup(|k| {
            self.vars
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.clone())
        })
        .expect("valid discovery variables")
    }
}

pub async fn provider(backend: &Backend, env: &str) -> (App, DistributionHandle) {
    let app = App::new();
    app.use_service("messages", MemoryService::<Value>::new());
    let d = Distribution::new()
        .discovery(backend.config())
        .environment(env)
        .key("messages")
        .remote_services(false)
        .start(&app)
        .await
        .expect("provider starts");
    (app, d)
}

pub async fn gateway(backend: &Backend, env: &str) -> (App, DistributionHandle) {
    let app = App::new();
    let d = Distribution::new()
        .discovery(backend.config())
        .environment(env)
        .key("gateway")
        .services(false)
        .timeout(Duration::from_secs(3))
        .start(&app)
        .await
        .expect("gateway starts");
    (app, d)
}

pub async fn wait_providers(d: &DistributionHandle, path: &str, n: usize) {
    within(&format!("{n} providers of {path}"), async {
        loop {
            if d.providers(path).len() == n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

/// Two provider Apps and a gateway: the gateway mounts one proxy, calls reach both replicas
/// with their results and typed errors, and every event is relayed to the gateway once.
pub async fn proxies_calls_and_events(backend: &Backend, env: &str) {
    let (p1, d1) = provider(backend, env).await;
    let (p2, d2) = provider(backend, env).await;
    let (g, dg) = gateway(backend, env).await;
    wait_providers(&dg, "messages", 2).await;
    within("proxy", dg.remote_ready("messages")).await;
    let proxy = g.service("messages").expect("proxy mounted");

    let created = Arc::new(AtomicUsize::new(0));
    let seen = created.clone();
    let (tx, mut rx) = tokio::sync::mpsc::channel(128);
    g.on_event(move |ev| {
        if ev.path == "messages" && ev.event == "created" {
            if ev.data.get("flush").is_none() {
                seen.fetch_add(1, Ordering::SeqCst);
            }
            let _ = tx.try_send(ev.data.clone());
        }
    });
    // Calls through the proxy land on the replicas (each has its own memory store). On NATS the
    // server picks a replica at random, so six calls all land on one of them 1 time in 32: keep
    // creating (at most 64 calls) until both have served one.
    let count = |p: &App| {
        let p = p.clone();
        async move {
            let found = p
                .service("messages")
                .unwrap()
                .find(Params::new())
                .await
                .unwrap();
            found.as_array().map_or(0, Vec::len)
        }
    };
    let mut made = 0;
    while made < 6 || (made < 64 && (count(&p1).await == 0 || count(&p2).await == 0)) {
        let rec = proxy
            .create(json!({"text": format!("m{made}")}), Params::new())
            .await
            .expect("create through the proxy");
        assert_eq!(rec["text"], format!("m{made}"));
        made += 1;
    }
    let (n1, n2) = (count(&p1).await, count(&p2).await);
    assert_eq!(n1 + n2, made, "every create ran exactly once");
    assert!(n1 > 0 && n2 > 0, "both replicas served calls ({n1}, {n2})");
    // A typed error crosses with its class.
    let err = proxy
        .get(Id::Int(987_654), Params::new())
        .await
        .expect_err("no such record");
    assert_eq!(err.kind(), ErrorKind::NotFound);
    // A forged call whose body is not a call body: the replica answers BadRequest.
    let err = dg
        .mesh()
        .to("svc:messages")
        .method("get")
        .send(&json!({"id": true, "params": {}}))
        .await
        .expect_err("malformed body");
    assert_eq!(err.kind(), ErrorKind::BadRequest, "{err:?}");
    // Events: the creates, plus one made on a provider directly, each exactly once. A
    // provider's events reach the gateway in the order it emitted them (one link, one
    // publisher), so a flush event made on each provider after everything else arrives after
    // every earlier event of that provider, a late duplicate included: once both flushes are
    // in, the count is final.
    p1.service("messages")
        .unwrap()
        .create(json!({"sentinel": true}), Params::new())
        .await
        .unwrap();
    for (i, p) in [&p1, &p2].into_iter().enumerate() {
        p.service("messages")
            .unwrap()
            .create(json!({"flush": i}), Params::new())
            .await
            .unwrap();
    }
    let mut flushed = std::collections::BTreeSet::new();
    within("both flush events", async {
        while flushed.len() < 2 {
            let data = rx.recv().await.expect("the listener lives");
            if let Some(i) = data["flush"].as_u64() {
                flushed.insert(i);
            }
        }
    })
    .await;
    assert_eq!(
        created.load(Ordering::SeqCst),
        made + 1,
        "each event exactly once"
    );
    d1.shutdown().await;
    d2.shutdown().await;
    dg.shutdown().await;
}

/// A `dist-node` child publishing `messages` under `key`, on `backend`.
pub async fn start_node(backend: &Backend, env: &str, key: &str) -> Node {
    let vars: Vec<(&str, &str)> = backend
        .vars
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let args = ["--env", env, "--key", key];
    Node::start(env!("CARGO_BIN_EXE_dist-node"), &args, &vars, WAIT).await
}

/// Two provider processes; one is killed (SIGKILL): calls keep working on the survivor and the
/// dead replica leaves the table.
pub async fn replica_loss(backend: &Backend, env: &str) {
    let (g, dg) = gateway(backend, env).await;
    let a = start_node(backend, env, "messages").await;
    let b = start_node(backend, env, "messages").await;
    wait_providers(&dg, "messages", 2).await;
    let proxy = g.service("messages").expect("proxy mounted");
    for _ in 0..4 {
        proxy
            .find(Params::new())
            .await
            .expect("find on either replica");
    }
    let survivor = b.id().to_owned();
    a.kill().await;
    // Calls go on while the table catches up (find is idempotent: retried on the survivor).
    for _ in 0..10 {
        proxy
            .find(Params::new())
            .await
            .expect("find after a replica died");
    }
    wait_providers(&dg, "messages", 1).await;
    assert_eq!(dg.providers("messages")[0].node.to_string(), survivor);
    proxy
        .find(Params::new())
        .await
        .expect("find on the survivor");
    drop(b);
    dg.shutdown().await;
}

/// Calls through `proxy` until one succeeds (each bounded by the proxy's timeout).
pub async fn until_a_call_succeeds(app: &App) {
    within("a successful call", async {
        loop {
            if let Some(proxy) = app.service("messages")
                && proxy.find(Params::new()).await.is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
}
