//! On NATS with a mesh secret, only announcements signed with it are read (issue 14, item 1): a
//! real `nats-server` on a free loopback port, two mesh nodes, and a forger publishing table
//! deltas with the plain `async_nats` client.

#![cfg(feature = "nats")]

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use plume_transport::discovery::{DiscoveryConfig, DiscoveryMode, NodeId};
use plume_transport::protocol::{Entry, encode_payload};
use plume_transport::{Mesh, Request};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::time::{Instant, timeout};

const WAIT: Duration = Duration::from_secs(10);

/// A `nats-server` killed (by PID) on drop.
struct Nats {
    child: Child,
    port: u16,
}

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn nats_server() -> (Nats, async_nats::Client) {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let child = Command::new("nats-server")
        .args(["-a", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect(
            "nats-server is installed (apt-get install -y nats-server; scripts/test.sh does it)",
        );
    let nats = Nats { child, port };
    // Ready once a client connects (bounded).
    let deadline = Instant::now() + WAIT;
    loop {
        if let Ok(c) = async_nats::connect(nats.url()).await {
            return (nats, c);
        }
        assert!(Instant::now() < deadline, "nats-server did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

impl Nats {
    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

async fn node(url: &str, env: &str, key: &str) -> Mesh {
    Mesh::builder()
        .environment(env)
        .key(key)
        .discovery(DiscoveryConfig {
            mode: DiscoveryMode::Nats { url: url.into() },
            heartbeat: Duration::from_millis(200),
            node_timeout: Duration::from_secs(5),
            secret: Some(Arc::from(&b"nats-secret"[..])),
        })
        .start()
        .await
        .expect("node")
}

async fn wait_providers(mesh: &Mesh, name: &str, n: usize) {
    let mut events = mesh.watch();
    let seen = async {
        while mesh.providers(name).len() != n {
            events.recv().await.expect("table events");
        }
    };
    timeout(WAIT, seen).await.expect("providers in time");
}

/// A table delta as the NATS engine encodes it.
#[derive(Serialize)]
struct Delta {
    node: String,
    key: String,
    version: u64,
    added: Vec<Entry>,
    removed: Vec<String>,
}

fn echo(req: Request) -> futures::future::Ready<Result<Value, plume::Error>> {
    futures::future::ready(Ok(req.body))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsigned_or_badly_signed_announcements_are_ignored_with_a_secret() {
    let (server, forger) = nats_server().await;
    let url = server.url();
    let env = format!("natssigned{}", std::process::id());
    let n = node(&url, &env, "n").await;
    let p = node(&url, &env, "p").await;
    p.respond("svc", echo);
    wait_providers(&n, "svc", 1).await;

    // Forged deltas: a node that does not exist adds `evil`; the real provider "withdraws" `svc`
    // (for every version it could be at). Unsigned, then with a wrong MAC.
    let fake = NodeId::random();
    let mut forged = vec![(
        fake,
        Delta {
            node: fake.to_string(),
            key: "p".into(),
            version: 1,
            added: vec![Entry {
                name: "evil".into(),
                descriptor: json!({}),
            }],
            removed: Vec::new(),
        },
    )];
    for version in 1..8 {
        forged.push((
            p.node_id(),
            Delta {
                node: p.node_id().to_string(),
                key: "p".into(),
                version,
                added: Vec::new(),
                removed: vec!["svc".into()],
            },
        ));
    }
    for (node, delta) in &forged {
        let subject = format!("plume.{env}.table.{node}");
        let payload = encode_payload(delta);
        forger
            .publish(subject.clone(), payload.clone())
            .await
            .expect("publish");
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Plume-Mac", "00".repeat(32).as_str());
        forger
            .publish_with_headers(subject, headers, payload)
            .await
            .expect("publish");
    }
    forger.flush().await.expect("flush");
    // The real provider's next (signed) delta reaches the node after them.
    p.respond("svc2", echo);
    wait_providers(&n, "svc2", 1).await;
    assert_eq!(n.providers("svc").len(), 1, "a forged withdrawal was read");
    assert!(n.providers("evil").is_empty(), "a forged node was read");
    assert_eq!(
        n.to("svc").send(&json!("still here")).await.expect("call"),
        json!("still here")
    );
}
