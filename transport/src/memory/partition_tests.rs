//! Partitioned sends and broadcasts ([`Mesh::to`] with a key, and `broadcast`), over the
//! in-process engine and under paused time.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::time::Instant;

use super::Network;
use super::tests::{crashing_provider, node, opts, providers, whoami};
use crate::{Mesh, Request, partition_owner};
use plume::ErrorKind;

/// `count` nodes `n0`, `n1`, … on `net`, each providing `name` (answering its key), all seeing
/// each other's provider.
async fn cluster(net: &Network, name: &str, count: usize) -> Vec<Mesh> {
    let mut nodes = Vec::new();
    for i in 0..count {
        let m = node(net, &format!("n{i}")).await;
        whoami(&m, name);
        nodes.push(m);
    }
    for m in &nodes {
        providers(m, name, count).await;
    }
    nodes
}

fn key_of(nodes: &[Mesh], id: crate::NodeId) -> String {
    nodes
        .iter()
        .find(|m| m.node_id() == id)
        .map(|m| m.key().to_owned())
        .expect("a node of the cluster")
}

#[tokio::test(start_paused = true)]
async fn every_node_sends_a_key_to_the_same_owner() {
    let net = Network::new();
    let nodes = cluster(&net, "shard", 4).await;
    let ids: Vec<_> = nodes.iter().map(Mesh::node_id).collect();
    let mut owners = std::collections::HashSet::new();
    for k in 0..40 {
        let key = format!("user-{k}");
        let owner = partition_owner(&key, ids.iter().copied()).expect("four nodes");
        owners.insert(owner);
        for from in &nodes {
            assert_eq!(from.owner("shard", &key), Some(owner));
            let got = from
                .to("shard")
                .key(&key)
                .send(&Value::Null)
                .await
                .expect("the owner answers");
            assert_eq!(got, json!(key_of(&nodes, owner)), "key {key}");
        }
    }
    // 40 keys over 4 nodes: each owns some.
    assert_eq!(owners.len(), 4);
}

#[tokio::test(start_paused = true)]
async fn no_provider_is_unavailable_at_once() {
    let net = Network::new();
    let lone = node(&net, "lone").await;
    let started = Instant::now();
    let err = lone
        .to("nobody")
        .key("k")
        .timeout(Duration::from_secs(30))
        .send(&Value::Null)
        .await
        .expect_err("no provider");
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    let err = lone
        .to("nobody")
        .timeout(Duration::from_secs(30))
        .broadcast(&Value::Null)
        .await
        .expect_err("no provider");
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    assert_eq!(started.elapsed(), Duration::ZERO);
    assert_eq!(lone.owner("nobody", "k"), None);
}

#[tokio::test(start_paused = true)]
async fn a_broadcast_returns_every_reply_with_its_node_and_its_own_error_within_one_deadline() {
    let net = Network::new();
    let nodes = cluster(&net, "all", 3).await;
    let failing = node(&net, "failing").await;
    failing.respond("all", |_r: Request| async move {
        Err(plume::Error::conflict("not me"))
    });
    let slow = node(&net, "slow").await;
    slow.respond("all", |_r: Request| async move {
        tokio::time::sleep(Duration::from_secs(60)).await;
        Ok(Value::Null)
    });
    providers(&nodes[0], "all", 5).await;
    let started = Instant::now();
    let mut replies = nodes[0]
        .to("all")
        .timeout(Duration::from_secs(2))
        .broadcast(&json!({"ping": 1}))
        .await
        .expect("providers");
    assert_eq!(started.elapsed(), Duration::from_secs(2));
    replies.sort_by_key(|r| r.node);
    assert_eq!(replies.len(), 5);
    let mut expected: Vec<_> = nodes.iter().chain([&failing, &slow]).collect();
    expected.sort_by_key(|m| m.node_id());
    for (reply, m) in replies.iter().zip(expected) {
        assert_eq!(reply.node, m.node_id());
        match m.key() {
            "failing" => assert_eq!(
                reply.result.as_ref().map_err(plume::Error::kind),
                Err(ErrorKind::Conflict)
            ),
            "slow" => assert_eq!(
                reply.result.as_ref().map_err(plume::Error::kind),
                Err(ErrorKind::Timeout)
            ),
            key => assert_eq!(reply.result.as_ref().ok(), Some(&json!(key))),
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_lost_owner_retries_an_idempotent_call_on_the_new_owner_and_fails_others() {
    for idempotent in [true, false] {
        let net = Network::new();
        let caller = node(&net, "caller").await;
        let survivors = [node(&net, "s0").await, node(&net, "s1").await];
        for s in &survivors {
            whoami(s, "shard");
        }
        let (crashing, taken) = crashing_provider(&net, "shard").await;
        providers(&caller, "shard", 3).await;
        // A key the crashing node owns.
        let key = (0..)
            .map(|i| format!("k{i}"))
            .find(|k| caller.owner("shard", k) == Some(crashing.node_id()))
            .expect("some key");
        let call = tokio::spawn({
            let caller = caller.clone();
            let key = key.clone();
            async move {
                caller
                    .to("shard")
                    .key(&key)
                    .options(opts(30, idempotent))
                    .send(&Value::Null)
                    .await
            }
        });
        taken.notified().await;
        net.disconnect(crashing.node_id());
        let got = call.await.expect("joined");
        if idempotent {
            let new_owner =
                partition_owner(&key, survivors.iter().map(Mesh::node_id)).expect("two");
            assert_eq!(
                got.expect("retried on the new owner"),
                json!(key_of(&survivors, new_owner))
            );
        } else {
            let err = got.expect_err("the outcome is unknown");
            assert_eq!(err.kind(), ErrorKind::Unavailable);
        }
    }
}

#[tokio::test(start_paused = true)]
async fn the_builder_reaches_a_given_node_with_a_method() {
    let net = Network::new();
    let (a, b) = (node(&net, "a").await, node(&net, "b").await);
    for m in [&a, &b] {
        let key = m.key().to_owned();
        m.respond("echo", move |r: Request| {
            let key = key.clone();
            async move { Ok(json!({ "node": key, "method": r.method, "body": r.body })) }
        });
    }
    providers(&a, "echo", 2).await;
    for (target, key) in [(&a, "a"), (&b, "b")] {
        let got = a
            .to("echo")
            .on(target.node_id())
            .method("get")
            .timeout(Duration::from_secs(1))
            .send(&[1, 2])
            .await
            .expect("answered");
        assert_eq!(got, json!({ "node": key, "method": "get", "body": [1, 2] }));
        let text = a
            .to("echo")
            .on(target.node_id())
            .send_json(&"x")
            .await
            .expect("answered");
        let parsed = text.to_value().expect("JSON text");
        assert_eq!(parsed["node"], json!(key));
    }
}
