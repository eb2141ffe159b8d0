//! Multi-process mesh tests: real `mesh-node` child processes on loopback discovery.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use plume::ErrorKind;
use plume_transport::{CallOptions, Mesh};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};
use tokio::time::{Instant, timeout};

const WAIT: Duration = Duration::from_secs(15);

/// A `mesh-node` child, killed (SIGKILL, by PID) when dropped.
struct Node {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
    id: String,
}

impl Node {
    async fn start(env: &str, args: &[&str]) -> Node {
        let mut child = Command::new(env!("CARGO_BIN_EXE_mesh-node"))
            .args(["--env", env, "--key", "echoer"])
            .args(args)
            .env_remove("PLUME_MESH_SECRET")
            .stdout(Stdio::piped())
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("mesh-node starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let line = timeout(WAIT, lines.next_line())
            .await
            .expect("ready in time")
            .expect("stdout readable")
            .expect("a ready line");
        let id = line
            .strip_prefix("READY ")
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("unexpected line {line:?}"))
            .to_string();
        Node { child, lines, id }
    }

    fn pid(&self) -> u32 {
        self.child.id().expect("running")
    }

    fn signal(&self, sig: &str) {
        let status = std::process::Command::new("kill")
            .args([sig, &self.pid().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
    }

    /// SIGTERM, then wait for `STOPPED` and a zero exit.
    async fn terminate(mut self) {
        self.signal("-TERM");
        let line = timeout(WAIT, self.lines.next_line())
            .await
            .expect("stops in time");
        assert_eq!(line.expect("stdout").as_deref(), Some("STOPPED"));
        let status = timeout(WAIT, self.child.wait())
            .await
            .expect("exits")
            .expect("status");
        assert!(status.success(), "{status:?}");
    }
}

fn unique_env(test: &str) -> String {
    format!("mp-{test}-{}", std::process::id())
}

async fn caller(env: &str, secret: Option<&str>) -> Mesh {
    Mesh::builder()
        .environment(env)
        .key("caller")
        .secret(secret)
        .start()
        .await
        .expect("caller joins")
}

fn provider_ids(mesh: &Mesh, name: &str) -> Vec<String> {
    let mut ids: Vec<String> = mesh
        .providers(name)
        .iter()
        .map(|p| p.node.to_string())
        .collect();
    ids.sort();
    ids
}

/// Wait (bounded, driven by table events) until the providers of `name` are exactly `nodes`.
async fn wait_providers(mesh: &Mesh, name: &str, nodes: &[&Node]) {
    let mut want: Vec<String> = nodes.iter().map(|n| n.id.clone()).collect();
    want.sort();
    let mut watch = mesh.watch();
    let deadline = Instant::now() + WAIT;
    while provider_ids(mesh, name) != want {
        let left = deadline.saturating_duration_since(Instant::now());
        if !matches!(timeout(left, watch.recv()).await, Ok(Some(_))) {
            panic!(
                "providers of {name}: want {want:?}, have {:?}",
                provider_ids(mesh, name)
            );
        }
    }
}

async fn whoami(mesh: &Mesh) -> String {
    let v = mesh
        .request("whoami", json!(null))
        .await
        .expect("whoami answers");
    v["node"].as_str().expect("node").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_node_is_discovered_and_called() {
    let env = unique_env("discover");
    let mesh = caller(&env, None).await;
    let a = Node::start(&env, &[]).await;
    wait_providers(&mesh, "echo", &[&a]).await;
    assert_eq!(
        mesh.request("echo", json!({"hi": 1})).await.expect("echo"),
        json!({"hi": 1})
    );
    let b = Node::start(&env, &[]).await;
    wait_providers(&mesh, "echo", &[&a, &b]).await;
    assert_eq!(mesh.providers("whoami").len(), 2);
    mesh.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_spreads_over_processes() {
    let env = unique_env("rr");
    let mesh = caller(&env, None).await;
    let nodes = [
        Node::start(&env, &[]).await,
        Node::start(&env, &[]).await,
        Node::start(&env, &[]).await,
    ];
    wait_providers(&mesh, "whoami", &[&nodes[0], &nodes[1], &nodes[2]]).await;
    let mut counts: HashMap<String, usize> = HashMap::new();
    for _ in 0..30 {
        *counts.entry(whoami(&mesh).await).or_default() += 1;
    }
    for n in &nodes {
        assert_eq!(counts.get(&n.id), Some(&10), "{counts:?}");
    }
    mesh.shutdown().await;
}

/// Run `total` echo calls, `concurrency` at a time; call `midway` once after `total / 3`
/// answers. Returns the failures.
async fn load(
    mesh: &Mesh,
    total: usize,
    concurrency: usize,
    idempotent: bool,
    midway: impl FnOnce(),
) -> Vec<plume::Error> {
    let done = Arc::new(AtomicUsize::new(0));
    let next = Arc::new(AtomicUsize::new(0));
    let third = Arc::new(tokio::sync::Notify::new());
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (mesh, done, next, third) = (mesh.clone(), done.clone(), next.clone(), third.clone());
        workers.push(tokio::spawn(async move {
            let mut failures = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < total {
                let opts = CallOptions {
                    timeout: Some(Duration::from_secs(10)),
                    idempotent,
                };
                match mesh.call("echo", None, json!({"n": 1}), opts).await {
                    Ok(v) => assert_eq!(v, json!({"n": 1})),
                    Err(e) => failures.push(e),
                }
                if done.fetch_add(1, Ordering::Relaxed) + 1 == total / 3 {
                    third.notify_one();
                }
            }
            failures
        }));
    }
    timeout(WAIT, third.notified())
        .await
        .expect("a third of the load done in time");
    midway();
    let mut failures = Vec::new();
    for w in workers {
        failures.extend(
            timeout(WAIT * 2, w)
                .await
                .expect("load finishes")
                .expect("joined"),
        );
    }
    failures
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_a_responder_loses_no_idempotent_call() {
    let env = unique_env("kill");
    let mesh = caller(&env, None).await;
    let nodes = [
        Node::start(&env, &["--delay-ms", "2"]).await,
        Node::start(&env, &["--delay-ms", "2"]).await,
        Node::start(&env, &["--delay-ms", "2"]).await,
    ];
    wait_providers(&mesh, "echo", &[&nodes[0], &nodes[1], &nodes[2]]).await;
    let failures = load(&mesh, 3000, 16, true, || nodes[0].signal("-KILL")).await;
    assert!(
        failures.is_empty(),
        "{} failed: {:?}",
        failures.len(),
        failures.first()
    );
    // The dead node leaves the table (link closed at once; discovery confirms).
    wait_providers(&mesh, "echo", &[&nodes[1], &nodes[2]]).await;
    mesh.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_fails_no_call() {
    let env = unique_env("drain");
    let mesh = caller(&env, None).await;
    let a = Node::start(&env, &["--delay-ms", "5"]).await;
    let b = Node::start(&env, &["--delay-ms", "5"]).await;
    wait_providers(&mesh, "echo", &[&a, &b]).await;
    let pid = a.pid();
    // Non-idempotent calls: none may fail while `a` drains.
    let failures = load(&mesh, 1500, 8, false, || {
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
    })
    .await;
    assert!(
        failures.is_empty(),
        "{} failed: {:?}",
        failures.len(),
        failures.first()
    );
    let mut a = a;
    let line = timeout(WAIT, a.lines.next_line())
        .await
        .expect("stops in time");
    assert_eq!(line.expect("stdout").as_deref(), Some("STOPPED"));
    let status = timeout(WAIT, a.child.wait())
        .await
        .expect("exits")
        .expect("status");
    assert!(status.success(), "{status:?}");
    wait_providers(&mesh, "echo", &[&b]).await;
    b.terminate().await;
    mesh.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_mesh_secret_allows_no_calls() {
    let env = unique_env("secret");
    let mesh = caller(&env, Some("right-secret")).await;
    let wrong = Node::start(&env, &["--secret", "wrong-secret"]).await;
    let right = Node::start(&env, &["--secret", "right-secret"]).await;
    wait_providers(&mesh, "whoami", &[&right]).await;
    for _ in 0..20 {
        assert_eq!(whoami(&mesh).await, right.id);
    }
    assert_eq!(provider_ids(&mesh, "whoami"), vec![right.id.clone()]);
    assert!(
        !mesh
            .linked_peers()
            .iter()
            .any(|n| n.to_string() == wrong.id)
    );
    right.terminate().await;
    let err = mesh
        .call(
            "whoami",
            None,
            Value::Null,
            CallOptions {
                timeout: Some(Duration::from_secs(1)),
                idempotent: true,
            },
        )
        .await
        .expect_err("only the wrong-secret node is left");
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    mesh.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_environments_are_invisible() {
    let env = unique_env("env");
    let mesh = caller(&env, None).await;
    let other = Node::start(&format!("{env}-other"), &[]).await;
    let mine = Node::start(&env, &[]).await;
    wait_providers(&mesh, "whoami", &[&mine]).await;
    for _ in 0..20 {
        assert_eq!(whoami(&mesh).await, mine.id);
    }
    assert!(
        !mesh
            .linked_peers()
            .iter()
            .any(|n| n.to_string() == other.id)
    );
    mine.terminate().await;
    let err = mesh
        .call(
            "whoami",
            None,
            Value::Null,
            CallOptions {
                timeout: Some(Duration::from_secs(1)),
                idempotent: true,
            },
        )
        .await
        .expect_err("only the other environment's node is left");
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    mesh.shutdown().await;
}
