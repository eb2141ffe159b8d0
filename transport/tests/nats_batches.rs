//! Calls in batches over NATS (docs/protocol.md, "NATS backend", "Batches"): a real
//! `nats-server` on a loopback port, two mesh nodes, and a spy (a plain `async_nats`
//! subscriber, which NATS hands a copy of every message on its subjects) that sees the batches
//! of calls and of answers go by.

#![cfg(feature = "nats")]

use std::time::Duration;

use futures::StreamExt;
use futures::future::join_all;
use plume_transport::Mesh;
use serde_json::{Value, json};
use tokio::time::timeout;

#[path = "support/nats_server.rs"]
mod support;
use support::{WAIT, nats_server};
#[path = "support/nats_nodes.rs"]
mod nodes;
use nodes::{node_with, wait_providers};

async fn node(url: &str, env: &str, key: &str) -> Mesh {
    node_with(url, env, key, None).await
}

/// A text longer than a batch takes for one answer (16 KiB): such an answer goes on its own.
fn big(body: &Value) -> Value {
    json!({"pad": "x".repeat(40 * 1024), "body": body})
}

/// Many calls at once to three endpoints of one provider, answered at once, after a wait (not
/// ready at the first poll), and with a large answer: each caller gets its own answer, and both
/// the calls and the answers that were ready at once crossed NATS in batches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_in_batches_each_get_their_own_answer() {
    const CALLS: usize = 300;
    let (server, spy) = nats_server().await;
    let env = format!("natsbatch{}", std::process::id());
    let provider = node(&server.url(), &env, "provider").await;
    provider.respond("echo", |req: plume_transport::Request| async move {
        Ok(req.body)
    });
    provider.respond("late", |req: plume_transport::Request| async move {
        // Not ready at the first poll: answered from a task of its own.
        tokio::task::yield_now().await;
        Ok(json!({"late": req.body}))
    });
    provider.respond("big", |req: plume_transport::Request| async move {
        Ok(big(&req.body))
    });
    let caller = node(&server.url(), &env, "caller").await;
    for name in ["echo", "late", "big"] {
        wait_providers(&caller, name, 1).await;
    }
    let mut batches = spy
        .subscribe(format!("plume.{env}.svcb.>"))
        .await
        .expect("subscribe");
    let mut replies = spy.subscribe("_INBOX.>").await.expect("subscribe");
    spy.flush().await.expect("flush");

    let calls = (0..CALLS).map(|i| {
        let name = ["echo", "late", "big"][i % 3];
        let caller = &caller;
        async move {
            let body = json!({"i": i, "text": format!("call {i}")});
            let got = caller.to(name).send(&body).await;
            (name, body, got)
        }
    });
    for (name, body, got) in timeout(WAIT, join_all(calls)).await.expect("in time") {
        let want = match name {
            "echo" => body.clone(),
            "late" => json!({"late": body}),
            _ => big(&body),
        };
        assert_eq!(got.expect("an answer"), want, "{name} {body}");
    }

    // What crossed NATS: batches of calls to each endpoint, and batches of the answers that
    // were ready at once (every batch starts with 0xc1, a byte MessagePack never uses).
    let mut to = std::collections::BTreeMap::<String, usize>::new();
    while let Ok(Some(m)) = timeout(Duration::from_millis(200), batches.next()).await {
        assert_eq!(&m.payload[..2], b"\xc1\x01", "a batch of calls");
        let endpoint = m.subject.rsplit('.').next().unwrap_or_default().to_owned();
        *to.entry(endpoint).or_default() += 1;
    }
    for name in ["echo", "late", "big"] {
        assert!(
            to.get(name).is_some_and(|&n| n >= 1),
            "batches of calls: {to:?}"
        );
    }
    let (mut batched, mut plain) = (0usize, 0usize);
    while let Ok(Some(m)) = timeout(Duration::from_millis(200), replies.next()).await {
        if m.payload.first() == Some(&0xc1) {
            batched += 1;
        } else {
            plain += 1;
        }
    }
    assert!(batched >= 1, "no batch of answers ({plain} plain)");
    // The late and the big answers each went on their own.
    assert!(plain >= 2 * CALLS / 3, "{plain} answers on their own");
    drop((caller, provider));
}

/// A batch that does not read gets its first call a clear error (a malformed call), not a
/// hang: a forger publishes bytes that start as a batch but are cut short.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_batch_is_answered_as_a_malformed_call() {
    let (server, forger) = nats_server().await;
    let env = format!("natsbadbatch{}", std::process::id());
    let provider = node(&server.url(), &env, "provider").await;
    provider.respond("echo", |req: plume_transport::Request| async move {
        Ok(req.body)
    });
    let caller = node(&server.url(), &env, "caller").await;
    wait_providers(&caller, "echo", 1).await;
    let reply = timeout(
        WAIT,
        forger.request(
            format!("plume.{env}.svcb.echo"),
            bytes::Bytes::from_static(b"\xc1\x01\x02ab\x05"),
        ),
    )
    .await
    .expect("in time")
    .expect("an answer");
    let answer: Value = rmp_serde::from_slice(&reply.payload).expect("a response");
    let err = answer["err"].to_string();
    assert!(err.contains("malformed call"), "{answer}");
    assert!(err.contains("malformed batch"), "{answer}");
    // The node still serves.
    assert_eq!(
        caller.to("echo").send(&json!("still")).await.expect("call"),
        json!("still")
    );
}
