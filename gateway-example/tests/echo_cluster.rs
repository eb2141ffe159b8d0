//! The echo cluster, multi-process: real `gateway-example echo-node` processes on the loopback
//! mesh (and on a real `nats-server`), driven through meshage's HTTP API of each node.
//!
//! Each test runs in an environment (`PLUME_ENV`) of its own, so runs never see each other.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use axum::body::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use plume_tests::child::spawn_first_line;
use plume_tests::servers::{Kind, Server};
use serde_json::{Value, json};
use tokio::process::Child;
use tokio::time::{Instant, timeout};

/// How long a node may take to start, and the cluster to agree on its members.
const WAIT: Duration = Duration::from_secs(20);
/// The keys every check sends.
const KEYS: usize = 60;

type Http = Client<HttpConnector, Full<Bytes>>;

/// One `echo-node` child, killed by PID when dropped.
struct EchoNode {
    name: String,
    port: u16,
    child: Child,
}

impl EchoNode {
    /// Start `echo-node --name NAME --http-port 0` with `vars`, and wait for its ready line.
    async fn start(name: &str, vars: &[(String, String)]) -> EchoNode {
        let (child, line) = spawn_first_line(
            env!("CARGO_BIN_EXE_gateway-example"),
            &["echo-node", "--name", name, "--http-port", "0"],
            vars,
            WAIT,
        )
        .await;
        let prefix = format!("echo-node {name} ready on http://127.0.0.1:");
        let port = line
            .strip_prefix(&prefix)
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("unexpected ready line {line:?}"));
        EchoNode {
            name: name.to_owned(),
            port,
            child,
        }
    }

    /// SIGKILL, by PID, and reap.
    async fn kill(mut self) {
        self.child.start_kill().expect("SIGKILL");
        let _ = timeout(WAIT, self.child.wait()).await.expect("exits");
    }
}

fn http() -> Http {
    Client::builder(TokioExecutor::new()).build_http()
}

/// POST `body` (raw) to `path` of the node on `port`: the status and the JSON answer.
async fn post(client: &Http, port: u16, path: &str, body: &str) -> (u16, Value) {
    let req = axum::http::Request::post(format!("http://127.0.0.1:{port}{path}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_owned())))
        .expect("a request");
    let response = timeout(WAIT, client.request(req))
        .await
        .expect("an answer in time")
        .expect("the node answers");
    let status = response.status().as_u16();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("a body")
        .to_bytes();
    let json = serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&bytes)));
    (status, json)
}

/// The names in a broadcast through the node on `port` (sorted); an error reply (a provider
/// seen but not reachable yet) is named by its message.
async fn broadcast_names(client: &Http, port: u16) -> Vec<String> {
    let (status, replies) = post(client, port, "/api/broadcast/echo/any", r#""hi""#).await;
    if status != 200 {
        return vec![replies.to_string()];
    }
    let mut names: Vec<String> = replies
        .as_array()
        .expect("an array")
        .iter()
        .map(|r| match r["node"].as_str() {
            Some(name) if r["echoed"] == json!("hi") => name.to_owned(),
            _ => r.to_string(),
        })
        .collect();
    names.sort();
    names
}

/// Wait (bounded) until every node's broadcast reaches exactly `nodes`: the cluster agrees on
/// its members.
async fn converge(client: &Http, nodes: &[&EchoNode]) {
    let mut want: Vec<String> = nodes.iter().map(|n| n.name.clone()).collect();
    want.sort();
    let deadline = Instant::now() + WAIT;
    for n in nodes {
        loop {
            let have = broadcast_names(client, n.port).await;
            if have == want {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{} sees {have:?}, want {want:?}",
                n.name
            );
            // Membership changes arrive over the mesh; ask again shortly (bounded above).
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The owner of every key, asked through every node: each must name the same owner, and
/// echo the message.
async fn owners(client: &Http, nodes: &[&EchoNode]) -> BTreeMap<String, String> {
    let mut owners = BTreeMap::new();
    for k in 0..KEYS {
        let key = format!("key-{k}");
        let mut seen = BTreeSet::new();
        for n in nodes {
            let message = json!({ "k": k });
            let (status, reply) = post(
                client,
                n.port,
                &format!("/api/echo/{key}"),
                &message.to_string(),
            )
            .await;
            assert_eq!(status, 200, "{reply}");
            assert_eq!(reply["echoed"], message);
            seen.insert(reply["node"].as_str().expect("a node").to_owned());
        }
        assert_eq!(
            seen.len(),
            1,
            "{key} has owners {seen:?} depending on the entry node"
        );
        owners.insert(key, seen.into_iter().next().expect("one owner"));
    }
    owners
}

async fn scenario(vars: Vec<(String, String)>) {
    let client = http();
    let mut nodes = Vec::new();
    for i in 0..5 {
        nodes.push(EchoNode::start(&format!("e{i}"), &vars).await);
    }
    let all: Vec<&EchoNode> = nodes.iter().collect();
    converge(&client, &all).await;

    // Every key has one owner whichever node it enters at; the keys spread over the nodes.
    let before = owners(&client, &all).await;
    let used: BTreeSet<&String> = before.values().collect();
    assert_eq!(used.len(), 5, "{KEYS} keys over 5 nodes: {before:?}");

    // Errors are Feathers errors.
    let (status, err) = post(&client, nodes[0].port, "/api/nothing/k", "{}").await;
    assert_eq!((status, err["name"].as_str()), (404, Some("NotFound")));
    let (status, err) = post(&client, nodes[0].port, "/api/echo/k", "{not json").await;
    assert_eq!((status, err["name"].as_str()), (400, Some("BadRequest")));

    // SIGKILL one node: only its keys move, each to the same new owner from every entry.
    let victim = nodes.remove(2);
    let victim_name = victim.name.clone();
    victim.kill().await;
    let left: Vec<&EchoNode> = nodes.iter().collect();
    converge(&client, &left).await;
    let after_kill = owners(&client, &left).await;
    for (key, owner) in &before {
        if *owner == victim_name {
            assert_ne!(after_kill[key], victim_name);
        } else {
            assert_eq!(
                &after_kill[key], owner,
                "{key} moved though its owner lives"
            );
        }
    }

    // A node joins: it takes its share, and no other key moves.
    nodes.push(EchoNode::start("e5", &vars).await);
    let grown: Vec<&EchoNode> = nodes.iter().collect();
    converge(&client, &grown).await;
    let after_join = owners(&client, &grown).await;
    let mut taken = 0;
    for (key, owner) in &after_kill {
        if after_join[key] != *owner {
            assert_eq!(after_join[key], "e5", "{key} moved between old nodes");
            taken += 1;
        }
    }
    // 1/5 of the keys expected (12 of 60); far outside the spread when none or half move.
    assert!((1..=30).contains(&taken), "e5 took {taken} of {KEYS} keys");

    for n in nodes {
        n.kill().await;
    }
}

fn environment(test: &str) -> (String, String) {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    (
        "PLUME_ENV".to_owned(),
        format!("echo-{test}-{}-{nanos:08x}", std::process::id()),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_echo_cluster_routes_by_key_on_the_loopback_mesh() {
    scenario(vec![environment("tcp")]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_echo_cluster_routes_by_key_on_nats() {
    let server = Server::start(Kind::Nats);
    scenario(vec![
        environment("nats"),
        ("PLUME_DISCOVERY".into(), "nats".into()),
        ("PLUME_NATS_URL".into(), server.url()),
        ("PLUME_HEARTBEAT_MS".into(), "200".into()),
        ("PLUME_NODE_TIMEOUT_MS".into(), "1000".into()),
    ])
    .await;
}
