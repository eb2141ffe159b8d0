//! On NATS with a mesh secret, only announcements signed with it are read (issue 14, item 1): a
//! real `nats-server` on a free loopback port, two mesh nodes, and a forger publishing table
//! deltas with the plain `async_nats` client.

#![cfg(feature = "nats")]

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use plume_transport::discovery::NodeId;
use plume_transport::protocol::{Entry, encode_payload};
use plume_transport::{Mesh, Request};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::time::{Instant, timeout};

#[path = "support/nats_server.rs"]
mod support;
use support::{WAIT, nats_server};
#[path = "support/nats_nodes.rs"]
mod nodes;
use nodes::{node_with, wait_providers};

async fn node(url: &str, env: &str, key: &str) -> Mesh {
    node_with(url, env, key, Some(Arc::from(&b"nats-secret"[..]))).await
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

/// A hello as the NATS engine encodes it.
#[derive(Serialize)]
struct Hello {
    node: String,
    key: String,
    version: u64,
    protocol: u16,
    leaving: bool,
}

/// A flood of hellos naming fresh node ids (issue 14, item 5; without a secret anyone on the
/// NATS server can send them, with one any holder of it) costs the node bounded work: one hello
/// of its own per 50 ms to answer the newcomers, not one each, and at most 32 table-snapshot
/// requests in flight, not one per id. The forger listens on the snapshot subjects of the ids
/// it invents and never answers, so each request stays in flight for the node timeout (5 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_fresh_node_ids_costs_bounded_answers_and_requests() {
    const FLOOD: usize = 500;
    let (server, forger) = nats_server().await;
    let env = format!("natsflood{}", std::process::id());
    let n = node_with(&server.url(), &env, "n", None).await;
    let own = n.node_id().to_string();
    let mut hellos = forger
        .subscribe(format!("plume.{env}.disc.>"))
        .await
        .expect("subscribe");
    let mut requests = forger
        .subscribe(format!("plume.{env}.node.*.table"))
        .await
        .expect("subscribe");
    forger.flush().await.expect("flush");
    // The node's first heartbeat: it is up and heard.
    timeout(WAIT, async {
        while let Some(m) = hellos.next().await {
            if sender(&m) == own {
                return;
            }
        }
    })
    .await
    .expect("the node says hello");
    for _ in 0..FLOOD {
        let id = NodeId::random().to_string();
        let hello = Hello {
            node: id.clone(),
            key: "forged".into(),
            version: 1,
            protocol: plume_transport::protocol::PROTOCOL_VERSION,
            leaving: false,
        };
        forger
            .publish(
                format!("plume.{env}.disc.forged.{id}"),
                serde_json::to_vec(&hello).expect("json").into(),
            )
            .await
            .expect("publish");
    }
    forger.flush().await.expect("flush");
    // Count for one second (every forged hello is handled within it, and unbounded, each would
    // have had its answer and its request by then).
    let until = Instant::now() + Duration::from_secs(1);
    let (mut answers, mut asked) = (0usize, 0usize);
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(until) => break,
            Some(m) = hellos.next() => answers += usize::from(sender(&m) == own),
            Some(_) = requests.next() => asked += 1,
        }
    }
    assert!(asked >= 1, "the node asks newcomers for their tables");
    assert!(asked <= 32, "{asked} snapshot requests in flight at once");
    // 20 gaps of 50 ms and 5 heartbeats of 200 ms, with room for a slow scheduler.
    assert!(answers <= 40, "{answers} hellos for {FLOOD} newcomers");
    drop(n);
}

fn sender(m: &async_nats::Message) -> String {
    m.headers
        .as_ref()
        .and_then(|h| h.get("Plume-Node"))
        .map(|v| v.as_str().to_owned())
        .unwrap_or_default()
}
