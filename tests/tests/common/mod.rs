//! Scenarios shared by the NATS and Redis backend tests: the same flows, only the discovery
//! configuration (and the child processes' environment variables) differ.

#![allow(dead_code, unreachable_pub)]

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use plume::{App, ErrorKind, Id, MemoryService, Params};
use plume_transport::DiscoveryConfig;
use plume_transport::distribution::{Distribution, DistributionHandle};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};
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
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    g.on_event(move |ev| {
        if ev.path == "messages" && ev.event == "created" {
            seen.fetch_add(1, Ordering::SeqCst);
            let _ = tx.try_send(ev.data.clone());
        }
    });
    // Calls through the proxy land on the replicas (each has its own memory store).
    let mut made = Vec::new();
    for i in 0..6 {
        let rec = proxy
            .create(json!({"text": format!("m{i}")}), Params::new())
            .await
            .expect("create through the proxy");
        assert_eq!(rec["text"], format!("m{i}"));
        made.push(rec);
    }
    let local1 = p1
        .service("messages")
        .unwrap()
        .find(Params::new())
        .await
        .unwrap();
    let local2 = p2
        .service("messages")
        .unwrap()
        .find(Params::new())
        .await
        .unwrap();
    let n1 = local1.as_array().map_or(0, Vec::len);
    let n2 = local2.as_array().map_or(0, Vec::len);
    assert_eq!(n1 + n2, 6, "every create ran exactly once");
    assert!(n1 > 0 && n2 > 0, "both replicas served calls ({n1}, {n2})");
    // A typed error crosses with its class.
    let err = proxy
        .get(Id::Int(987_654), Params::new())
        .await
        .expect_err("no such record");
    assert_eq!(err.kind(), ErrorKind::NotFound);
    // Events: the six creates, plus one made on a provider directly, each exactly once.
    p1.service("messages")
        .unwrap()
        .create(json!({"sentinel": true}), Params::new())
        .await
        .unwrap();
    within("the sentinel event", async {
        while let Some(data) = rx.recv().await {
            if data["sentinel"] == true {
                return;
            }
        }
    })
    .await;
    // Events of one node arrive in order, but the two replicas' events interleave freely: wait
    // for the count to settle at 7, then make sure it stays there.
    within("seven events", async {
        while created.load(Ordering::SeqCst) < 7 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(created.load(Ordering::SeqCst), 7, "each event exactly once");
    d1.shutdown().await;
    d2.shutdown().await;
    dg.shutdown().await;
}

/// A `dist-node` child, killed (SIGKILL, by PID) when dropped.
pub struct Node {
    pub child: Child,
    pub lines: Lines<BufReader<ChildStdout>>,
    pub id: String,
}

impl Node {
    pub async fn start(backend: &Backend, env: &str, key: &str) -> Node {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_dist-node"));
        cmd.args(["--env", env, "--key", key])
            .env_remove("PLUME_MESH_SECRET")
            .env_remove("PLUME_ENV")
            .env_remove("PLUME_KEY")
            .env_remove("PLUME_NATS_URL")
            .env_remove("PLUME_REDIS_URL")
            .stdout(Stdio::piped())
            .stdin(Stdio::null())
            .kill_on_drop(true);
        for (k, v) in &backend.vars {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("dist-node starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let line = within("READY", lines.next_line())
            .await
            .expect("stdout readable")
            .expect("a ready line");
        let id = line
            .strip_prefix("READY ")
            .unwrap_or_else(|| panic!("unexpected line {line:?}"))
            .split_whitespace()
            .next()
            .expect("node id")
            .to_owned();
        Node { child, lines, id }
    }

    pub async fn kill(mut self) {
        let pid = self.child.id().expect("running");
        let status = std::process::Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
        let _ = within("exit", self.child.wait()).await;
    }
}

/// Two provider processes; one is killed (SIGKILL): calls keep working on the survivor and the
/// dead replica leaves the table.
pub async fn replica_loss(backend: &Backend, env: &str) {
    let (g, dg) = gateway(backend, env).await;
    let a = Node::start(backend, env, "messages").await;
    let b = Node::start(backend, env, "messages").await;
    wait_providers(&dg, "messages", 2).await;
    let proxy = g.service("messages").expect("proxy mounted");
    for _ in 0..4 {
        proxy
            .find(Params::new())
            .await
            .expect("find on either replica");
    }
    let survivor = b.id.clone();
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
