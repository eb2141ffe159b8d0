//! `gateway-example mesh`, multi-process: a real gateway and two todos replicas on the loopback
//! mesh, watched by `gateway-example mesh --json` (one snapshot) and `--json --follow` (one
//! line per round). The test runs in an environment (`PLUME_ENV`) of its own.

use std::collections::BTreeSet;
use std::process::Stdio;
use std::time::Duration;

use plume_tests::child::without_plume_env;
use plume_tests::servers::{Kind, Server};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};
use tokio::time::{Instant, timeout};

/// How long a process may take to start, and the monitor to see what is expected.
const WAIT: Duration = Duration::from_secs(30);
/// The node timeout of every process here.
const NODE_TIMEOUT: Duration = Duration::from_millis(2000);
/// Beyond the node timeout, for a node lost by its silence: expiry is checked once a heartbeat
/// (200 ms), and the monitor's round comes after (200 ms).
const EXPIRY_SLACK: Duration = Duration::from_millis(1000);

/// Where the processes of one test meet: their environment and the discovery variables.
struct Mesh {
    env: String,
    vars: Vec<(String, String)>,
}

fn command(mesh: &Mesh, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gateway-example"));
    cmd.args(args)
        .stdout(Stdio::piped())
        .stdin(Stdio::null())
        .kill_on_drop(true);
    without_plume_env(&mut cmd);
    cmd.envs(mesh.vars.iter().map(|(k, v)| (k, v)));
    cmd.env("PLUME_ENV", &mesh.env)
        .env("PLUME_HEARTBEAT_MS", "200")
        .env(
            "PLUME_NODE_TIMEOUT_MS",
            NODE_TIMEOUT.as_millis().to_string(),
        );
    cmd
}

/// Start `args` and wait for its first line, which must start with `ready`.
async fn start(env: &Mesh, args: &[&str], ready: &str) -> Child {
    let mut child = command(env, args).spawn().expect("the process starts");
    let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
    let line = timeout(WAIT, lines.next_line())
        .await
        .expect("the ready line in time")
        .expect("stdout readable")
        .expect("exited before it was ready");
    assert!(line.starts_with(ready), "unexpected ready line {line:?}");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    child
}

/// One `mesh --json` snapshot.
async fn snapshot(env: &Mesh) -> Value {
    let out = command(env, &["mesh", "--json", "--wait", "5s"])
        .output()
        .await
        .expect("mesh --json runs");
    assert!(out.status.success(), "mesh --json failed: {out:?}");
    serde_json::from_slice(&out.stdout).expect("one JSON snapshot")
}

/// (name, key, services) of each node.
fn nodes(snap: &Value) -> BTreeSet<(String, String, Vec<String>)> {
    snap["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|n| {
            let services = n["services"]
                .as_array()
                .expect("services")
                .iter()
                .map(|s| s.as_str().expect("a name").to_owned())
                .collect();
            (
                n["name"].as_str().expect("name").to_owned(),
                n["key"].as_str().expect("key").to_owned(),
                services,
            )
        })
        .collect()
}

fn id_of(snap: &Value, name: &str) -> String {
    snap["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .find(|n| n["name"] == name)
        .and_then(|n| n["id"].as_str())
        .expect("the node is listed")
        .to_owned()
}

/// The next snapshot line of a `--follow` monitor.
async fn next_snapshot(lines: &mut Lines<BufReader<ChildStdout>>, deadline: Instant) -> Value {
    let line = timeout(
        deadline.saturating_duration_since(Instant::now()),
        lines.next_line(),
    )
    .await
    .expect("a snapshot line in time")
    .expect("stdout readable")
    .expect("the monitor is still running");
    serde_json::from_str(&line).expect("a JSON line")
}

fn mesh(vars: &[(&str, String)]) -> Mesh {
    Mesh {
        env: format!(
            "mesh-monitor-{}-{:x}",
            std::process::id(),
            rand::random::<u64>()
        ),
        vars: vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_loopback_mesh_json_lists_exactly_the_three_processes_and_a_killed_one_leaves() {
    // Links: a killed process's links close at once.
    three_processes_and_a_kill(&mesh(&[]), 3, NODE_TIMEOUT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_nats_mesh_json_lists_exactly_the_three_processes_and_a_killed_one_leaves() {
    let nats = Server::start(Kind::Nats);
    let env = mesh(&[
        ("PLUME_DISCOVERY", "nats".to_owned()),
        ("PLUME_NATS_URL", nats.url()),
    ]);
    // No links on NATS; a killed node goes silent and expires.
    three_processes_and_a_kill(&env, 0, NODE_TIMEOUT + EXPIRY_SLACK).await;
}

/// A gateway and two replicas: `mesh --json` lists exactly them (with `links` links between
/// them); after a SIGKILL of one, `mesh --json --follow` drops it within `lost_within`.
async fn three_processes_and_a_kill(env: &Mesh, links: usize, lost_within: Duration) {
    let _gateway = start(env, &["gateway", "--port", "0"], "gateway listening on").await;
    let _a = start(
        env,
        &[
            "todos", "--name", "todos-a", "--port", "0", "--store", "memory",
        ],
        "todos todos-a listening on",
    )
    .await;
    let mut b = start(
        env,
        &[
            "todos", "--name", "todos-b", "--port", "0", "--store", "memory",
        ],
        "todos todos-b listening on",
    )
    .await;

    let todos = vec!["svc:todos".to_owned()];
    let expected: BTreeSet<(String, String, Vec<String>)> = [
        ("gateway".to_owned(), "gateway".to_owned(), Vec::new()),
        ("todos-a".to_owned(), "todos".to_owned(), todos.clone()),
        ("todos-b".to_owned(), "todos".to_owned(), todos),
    ]
    .into_iter()
    .collect();
    // Each run is a fresh monitor: ask again (bounded) until the replicas have published.
    let deadline = Instant::now() + WAIT;
    let snap = loop {
        let snap = snapshot(env).await;
        if nodes(&snap) == expected {
            break snap;
        }
        assert!(
            Instant::now() < deadline,
            "mesh --json never listed exactly the three processes; last: {snap:#}"
        );
    };
    // On links, every pair of the three is linked, each link with its round trip.
    let listed = snap["links"].as_array().expect("links");
    assert_eq!(listed.len(), links, "{snap:#}");
    assert!(listed.iter().all(|l| l["rtt_ms"].is_number()), "{snap:#}");
    assert!(snap["nodes"].as_array().expect("nodes").iter().all(|n| {
        n["addr"]
            .as_str()
            .is_some_and(|a| a.starts_with("127.0.0.1:"))
            && n["answered"] == true
    }));

    // A monitor that stays: SIGKILL todos-b, and it leaves the monitor's snapshots within
    // `lost_within`.
    let b_id = id_of(&snap, "todos-b");
    let mut follower = command(env, &["mesh", "--json", "--follow", "--interval", "200ms"])
        .spawn()
        .expect("mesh --follow starts");
    let mut lines = BufReader::new(follower.stdout.take().expect("piped")).lines();
    let deadline = Instant::now() + WAIT;
    loop {
        let s = next_snapshot(&mut lines, deadline).await;
        if s["nodes"].as_array().is_some_and(|n| n.len() == 3) {
            break;
        }
    }
    b.start_kill().expect("SIGKILL todos-b");
    let killed = Instant::now();
    let _ = timeout(WAIT, b.wait()).await.expect("todos-b exits");
    let gone_by = killed + lost_within;
    let last = loop {
        let s = next_snapshot(&mut lines, gone_by).await;
        let listed: Vec<&str> = s["nodes"]
            .as_array()
            .expect("nodes")
            .iter()
            .filter_map(|n| n["id"].as_str())
            .collect();
        if !listed.contains(&b_id.as_str()) {
            break s;
        }
    };
    let names: BTreeSet<&str> = last["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .filter_map(|n| n["name"].as_str())
        .collect();
    assert_eq!(names, BTreeSet::from(["gateway", "todos-a"]));
    assert!(
        last["events"]
            .as_array()
            .expect("events")
            .iter()
            .any(|e| e["kind"] == "loss" && e["node"] == b_id.as_str()),
        "{last:#}"
    );
    follower.start_kill().expect("SIGKILL the monitor");
    let _ = follower.wait().await;
}
