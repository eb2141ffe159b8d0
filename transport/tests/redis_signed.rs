//! Redis discovery with a mesh secret reads only records and notifications signed with it
//! (issue 14, item 1): a real `redis-server` on a free loopback port, a forger writing to it
//! with the plain `redis` client, and two real discovery agents.

#![cfg(feature = "redis")]

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use plume_transport::discovery::{
    Discovery, DiscoveryConfig, DiscoveryMode, LocalNode, NodeId, PeerEvent,
};
use serde_json::json;
use tokio::sync::mpsc;
use tokio::time::{Instant, timeout};

const WAIT: Duration = Duration::from_secs(10);

/// A `redis-server` killed (by PID) on drop.
struct Redis {
    child: Child,
    port: u16,
    _dir: TempDir,
}

struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Ports below the ephemeral range, reserved across test processes (shared with plume-tests).
#[path = "../../tests/src/ports.rs"]
#[allow(unreachable_pub)]
mod ports;

async fn redis_server() -> Redis {
    let port = ports::free_port();
    let dir =
        std::env::temp_dir().join(format!("plume-redis-signed-{}-{port}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let child = Command::new("redis-server")
        .args(["--save", "", "--appendonly", "no", "--bind", "127.0.0.1"])
        .args(["--port", &port.to_string(), "--dir"])
        .arg(&dir)
        .stdout(Stdio::null())
        .spawn()
        .expect(
            "redis-server is installed (apt-get install -y redis-server; scripts/test.sh does it)",
        );
    let redis = Redis {
        child,
        port,
        _dir: TempDir(dir),
    };
    // Ready once it answers PING (bounded).
    let client = redis::Client::open(redis.url()).expect("url");
    let deadline = Instant::now() + WAIT;
    loop {
        if let Ok(mut c) = client.get_multiplexed_async_connection().await
            && redis::cmd("PING")
                .query_async::<String>(&mut c)
                .await
                .is_ok()
        {
            return redis;
        }
        assert!(Instant::now() < deadline, "redis-server did not start");
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

impl Redis {
    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

fn config(url: &str, secret: &str) -> DiscoveryConfig {
    DiscoveryConfig {
        mode: DiscoveryMode::Redis { url: url.into() },
        heartbeat: Duration::from_millis(100),
        node_timeout: Duration::from_secs(5),
        secret: Some(Arc::from(secret.as_bytes())),
    }
}

fn local(env: &str, port: u16) -> LocalNode {
    LocalNode {
        node: NodeId::random(),
        environment: env.into(),
        key: "k".into(),
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
    }
}

/// A registry record or notification as a node of an older version (or a forger) writes it.
fn record(node: NodeId, addr: &str, op: Option<&str>) -> String {
    let mut v = json!({
        "node": node.to_string(), "key": "k", "addr": addr, "table_version": 1, "protocol": 1,
    });
    if let Some(op) = op {
        v["op"] = json!(op);
    }
    v.to_string()
}

/// Collect events until `done` holds for one; return them all.
async fn events_until(
    rx: &mut mpsc::Receiver<PeerEvent>,
    done: impl Fn(&PeerEvent) -> bool,
) -> Vec<PeerEvent> {
    let mut all = Vec::new();
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let ev = timeout(left, rx.recv())
            .await
            .unwrap_or_else(|_| panic!("event not seen in time; got {all:?}"))
            .expect("events");
        let last = done(&ev);
        all.push(ev);
        if last {
            return all;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsigned_or_badly_signed_records_and_notices_are_ignored_with_a_secret() {
    let server = redis_server().await;
    let url = server.url();
    let env = format!("signed-{}", std::process::id());
    let client = redis::Client::open(url.as_str()).expect("url");
    let mut forger = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    // Registry records that point at the forger: one unsigned, one signed with another secret.
    let (fake, other) = (NodeId::random(), NodeId::random());
    let _: () = redis::cmd("SET")
        .arg(format!("plume:{env}:node:{fake}"))
        .arg(record(fake, "127.0.0.1:9", None))
        .query_async(&mut forger)
        .await
        .expect("set");
    let badly = json!({ "signed": record(other, "127.0.0.1:9", None), "mac": vec![0u8; 32] });
    let _: () = redis::cmd("SET")
        .arg(format!("plume:{env}:node:{other}"))
        .arg(badly.to_string())
        .query_async(&mut forger)
        .await
        .expect("set");

    let real = local(&env, 4001);
    let (p, mut p_events) = Discovery::start(config(&url, "right"), real.clone())
        .await
        .expect("p");
    let (n, mut events) = Discovery::start(config(&url, "right"), local(&env, 4002))
        .await
        .expect("n");
    // N's first scan read every key, forged ones included, before the real peer's Up.
    let mut seen = events_until(
        &mut events,
        |e| matches!(e, PeerEvent::Up(i) if i.node == real.node),
    )
    .await;
    events_until(
        &mut p_events,
        |e| matches!(e, PeerEvent::Up(i) if i.node == n.node()),
    )
    .await;

    // Both agents listen on the channel: forged notices now would be heard.
    let channel = format!("plume:{env}:events");
    let deadline = Instant::now() + WAIT;
    loop {
        let (_, subscribers): (String, u64) = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(&channel)
            .query_async(&mut forger)
            .await
            .expect("numsub");
        if subscribers >= 2 {
            break;
        }
        assert!(Instant::now() < deadline, "agents did not subscribe");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // An unsigned notice that would move the real peer to the forger's address, one that
    // would remove it, and one that would add a node.
    for body in [
        record(real.node, "127.0.0.1:9", Some("update")),
        record(real.node, "127.0.0.1:4001", Some("leave")),
        record(fake, "127.0.0.1:9", Some("up")),
    ] {
        let _: i64 = redis::cmd("PUBLISH")
            .arg(&channel)
            .arg(body)
            .query_async(&mut forger)
            .await
            .expect("publish");
    }
    // The real peer's next announcement comes after them on the same channel.
    p.set_table_version(7);
    seen.extend(
        events_until(
            &mut events,
            |e| matches!(e, PeerEvent::Updated(i) if i.node == real.node && i.table_version == 7),
        )
        .await,
    );
    for ev in &seen {
        match ev {
            PeerEvent::Up(i) | PeerEvent::Updated(i) => {
                assert_eq!(i.node, real.node, "a forged node was read: {ev:?}");
                assert_eq!(i.addr, real.addr, "a forged address was read: {ev:?}");
            }
            PeerEvent::Down { .. } => panic!("a forged leave was read: {ev:?}"),
        }
    }
    // The agents' own signed records are in the registry, not readable as plain records.
    let value: String = redis::cmd("GET")
        .arg(format!("plume:{env}:node:{}", real.node))
        .query_async(&mut forger)
        .await
        .expect("get");
    let v: serde_json::Value = serde_json::from_str(&value).expect("json");
    assert!(
        v.get("signed").is_some() && v.get("mac").is_some(),
        "{value}"
    );
    p.leave().await;
    n.leave().await;
}
