//! Multi-process mesh tests: real `mesh-node` child processes on loopback discovery.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use plume::ErrorKind;
use plume_tests::child::ChildNode as Node;
use plume_transport::{CallOptions, Mesh};
use serde_json::{Value, json};
use tokio::time::{Instant, timeout};

const WAIT: Duration = Duration::from_secs(15);

/// A `mesh-node` child on the echoer key of `env`.
async fn start_node(env: &str, args: &[&str]) -> Node {
    let mut all = vec!["--env", env, "--key", "echoer"];
    all.extend_from_slice(args);
    Node::start(env!("CARGO_BIN_EXE_mesh-node"), &all, &[], WAIT).await
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
    let mut want: Vec<String> = nodes.iter().map(|n| n.id().to_owned()).collect();
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
        .to("whoami")
        .send(&json!(null))
        .await
        .expect("whoami answers");
    v["node"].as_str().expect("node").to_string()
}

/// A `whoami` call finds no provider it may use: 503 Unavailable within its 1 s deadline.
async fn assert_no_whoami_provider(mesh: &Mesh) {
    let opts = CallOptions {
        timeout: Some(Duration::from_secs(1)),
        idempotent: true,
    };
    let err = mesh
        .to("whoami")
        .options(opts)
        .send(&Value::Null)
        .await
        .expect_err("no usable provider is left");
    assert_eq!(err.kind(), ErrorKind::Unavailable);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_node_is_discovered_and_called() {
    let env = unique_env("discover");
    let mesh = caller(&env, None).await;
    let a = start_node(&env, &[]).await;
    wait_providers(&mesh, "echo", &[&a]).await;
    assert_eq!(
        mesh.to("echo").send(&json!({"hi": 1})).await.expect("echo"),
        json!({"hi": 1})
    );
    let b = start_node(&env, &[]).await;
    wait_providers(&mesh, "echo", &[&a, &b]).await;
    assert_eq!(mesh.providers("whoami").len(), 2);
    mesh.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_spreads_over_processes() {
    let env = unique_env("rr");
    let mesh = caller(&env, None).await;
    let nodes = [
        start_node(&env, &[]).await,
        start_node(&env, &[]).await,
        start_node(&env, &[]).await,
    ];
    wait_providers(&mesh, "whoami", &[&nodes[0], &nodes[1], &nodes[2]]).await;
    let mut counts: HashMap<String, usize> = HashMap::new();
    for _ in 0..30 {
        *counts.entry(whoami(&mesh).await).or_default() += 1;
    }
    for n in &nodes {
        assert_eq!(counts.get(n.id()), Some(&10), "{counts:?}");
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
                match mesh.to("echo").options(opts).send(&json!({"n": 1})).await {
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
        start_node(&env, &["--delay-ms", "2"]).await,
        start_node(&env, &["--delay-ms", "2"]).await,
        start_node(&env, &["--delay-ms", "2"]).await,
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
    let a = start_node(&env, &["--delay-ms", "5"]).await;
    let b = start_node(&env, &["--delay-ms", "5"]).await;
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
    assert_eq!(a.next_line().await.as_deref(), Some("STOPPED"));
    let status = a.exit_status().await;
    assert!(status.success(), "{status:?}");
    wait_providers(&mesh, "echo", &[&b]).await;
    b.terminate().await;
    mesh.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_mesh_secret_allows_no_calls() {
    let env = unique_env("secret");
    let mesh = caller(&env, Some("right-secret")).await;
    let wrong = start_node(&env, &["--secret", "wrong-secret"]).await;
    let right = start_node(&env, &["--secret", "right-secret"]).await;
    wait_providers(&mesh, "whoami", &[&right]).await;
    for _ in 0..20 {
        assert_eq!(whoami(&mesh).await, right.id());
    }
    assert_eq!(provider_ids(&mesh, "whoami"), vec![right.id().to_owned()]);
    assert!(
        !mesh
            .linked_peers()
            .iter()
            .any(|n| n.to_string() == wrong.id())
    );
    right.terminate().await;
    assert_no_whoami_provider(&mesh).await;
    mesh.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_environments_are_invisible() {
    let env = unique_env("env");
    let mesh = caller(&env, None).await;
    let other = start_node(&format!("{env}-other"), &[]).await;
    let mine = start_node(&env, &[]).await;
    wait_providers(&mesh, "whoami", &[&mine]).await;
    for _ in 0..20 {
        assert_eq!(whoami(&mesh).await, mine.id());
    }
    assert!(
        !mesh
            .linked_peers()
            .iter()
            .any(|n| n.to_string() == other.id())
    );
    mine.terminate().await;
    assert_no_whoami_provider(&mesh).await;
    mesh.shutdown().await;
}
