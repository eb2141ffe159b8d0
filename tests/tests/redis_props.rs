//! Property test of the Redis discovery decoders (registry records and notices), through a real
//! `redis-server` and the public `Discovery` API: whatever a stranger writes into the
//! environment's registry keys (`plume:{env}:node:*`) and publishes on its notification channel
//! (`plume:{env}:events`), the agent keeps working: a valid record written next to the garbage
//! is found by the next registry scan, and a valid `leave` notice published after the garbage
//! notices is applied. The inputs come from proptest strategies: broken records (each field of
//! the wrong type or out of range), JSON nested past serde_json's depth limit, long strings and
//! arbitrary bytes.

mod common;

use common::{Backend, WAIT, unique_env};
use plume_tests::servers::{Kind, Server};
use plume_transport::discovery::{Discovery, LocalNode, NodeId, PROTOCOL_VERSION, PeerEvent};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use serde_json::{Value, json};

/// A JSON value of any type, small.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,24}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A record or notice with each field valid, of a wrong type, or out of range.
fn near_record() -> impl Strategy<Value = Vec<u8>> {
    let node = prop_oneof![
        "[0-9a-f]{32}".prop_map(Value::from),
        ".{0,40}".prop_map(Value::from),
        any_json(),
    ];
    let addr = prop_oneof![
        Just(json!("127.0.0.1:1")),
        Just(json!("[::1]:70000")),
        "[0-9.:\\[\\]a-f]{0,30}".prop_map(Value::from),
        any_json(),
    ];
    let number = prop_oneof![
        any::<u64>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        Just(json!(1e300)),
        any_json(),
    ];
    let op = prop_oneof![
        prop::sample::select(vec!["up", "update", "leave", ""]).prop_map(Value::from),
        any_json(),
    ];
    (node, ".{0,16}", addr, number.clone(), number, op).prop_map(
        |(node, key, addr, version, protocol, op)| {
            json!({"op": op, "node": node, "key": key, "addr": addr,
                   "table_version": version, "protocol": protocol})
            .to_string()
            .into_bytes()
        },
    )
}

/// JSON nested `depth` arrays deep (serde_json refuses more than 128).
fn deep() -> impl Strategy<Value = Vec<u8>> {
    (1usize..4096).prop_map(|depth| {
        let mut s = "[".repeat(depth);
        s.push_str(&"]".repeat(depth));
        s.into_bytes()
    })
}

/// Any payload a stranger could write.
fn payload() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => near_record(),
        2 => any_json().prop_map(|v| v.to_string().into_bytes()),
        1 => deep(),
        1 => (1usize..256 * 1024).prop_map(|n| format!("{{\"node\":\"{}\"}}", "x".repeat(n)).into_bytes()),
        2 => prop::collection::vec(any::<u8>(), 0..512),
    ]
}

fn record(node: NodeId) -> String {
    json!({"node": node.to_string(), "key": "valid", "addr": "127.0.0.1:9",
           "table_version": 1, "protocol": PROTOCOL_VERSION})
    .to_string()
}

/// Wait (bounded) until `pred` holds for the agent's peers, draining its events meanwhile.
async fn until_peers(
    discovery: &Discovery,
    events: &mut tokio::sync::mpsc::Receiver<PeerEvent>,
    what: &str,
    pred: impl Fn(&[NodeId]) -> bool,
) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let peers: Vec<NodeId> = discovery.peers().iter().map(|p| p.node).collect();
        if pred(&peers) {
            return;
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(left, events.recv()).await {
            Ok(Some(_)) => {}
            Ok(None) => panic!("the discovery agent stopped while waiting for {what}"),
            Err(_) => panic!("timed out waiting for {what}; peers: {peers:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_in_the_registry_and_on_the_channel_never_stops_discovery() {
    let server = Server::start(Kind::Redis);
    let backend = Backend::new("redis", "PLUME_REDIS_URL", &server.url());
    let env = unique_env("redis-garbage");
    let local = LocalNode {
        node: NodeId::random(),
        environment: env.clone(),
        key: "watcher".into(),
        addr: "127.0.0.1:1".parse().expect("addr"),
    };
    let (discovery, mut events) = Discovery::start(backend.config(), local)
        .await
        .expect("the agent starts");

    let client = redis::Client::open(server.url()).expect("redis url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis connection");
    let mut runner = TestRunner::deterministic();
    let strategy = payload();
    for i in 0..200u32 {
        let value = strategy
            .new_tree(&mut runner)
            .expect("a generated payload")
            .current();
        // The garbage keys outlive the test's waits (a minute), as a node's own key would.
        let _: () = redis::cmd("SET")
            .arg(format!("plume:{env}:node:garbage-{i}"))
            .arg(&value)
            .arg("PX")
            .arg(60_000)
            .query_async(&mut conn)
            .await
            .expect("SET");
        let _: i64 = redis::cmd("PUBLISH")
            .arg(format!("plume:{env}:events"))
            .arg(&value)
            .query_async(&mut conn)
            .await
            .expect("PUBLISH");
    }

    // A valid record written without a notice: only a registry scan, which reads every
    // garbage value too, can find it.
    let valid = NodeId::random();
    let _: () = redis::cmd("SET")
        .arg(format!("plume:{env}:node:{valid}"))
        .arg(record(valid))
        .arg("PX")
        .arg(60_000)
        .query_async(&mut conn)
        .await
        .expect("SET");
    until_peers(
        &discovery,
        &mut events,
        "the scan to find the valid record",
        |p| p.contains(&valid),
    )
    .await;
    // A valid notice after the garbage notices is applied.
    let mut leave: Value = serde_json::from_str(&record(valid)).expect("json");
    leave["op"] = json!("leave");
    let _: () = redis::cmd("DEL")
        .arg(format!("plume:{env}:node:{valid}"))
        .query_async(&mut conn)
        .await
        .map(|_: i64| ())
        .expect("DEL");
    let _: i64 = redis::cmd("PUBLISH")
        .arg(format!("plume:{env}:events"))
        .arg(leave.to_string())
        .query_async(&mut conn)
        .await
        .expect("PUBLISH");
    until_peers(&discovery, &mut events, "the leave notice", |p| {
        !p.contains(&valid)
    })
    .await;
    discovery.leave().await;
}
