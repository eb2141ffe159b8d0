//! Routing, balancing, retries, deadlines and draining of the mesh, over the in-process engine
//! and under paused time.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::Network;
use crate::{Balance, CallOptions, Mesh, Removal, Request, TableEvent};
use plume::ErrorKind;

pub(super) async fn node(net: &Network, key: &str) -> Mesh {
    node_with(net, key, Balance::RoundRobin).await
}

async fn node_with(net: &Network, key: &str, balance: Balance) -> Mesh {
    Mesh::builder()
        .environment("unit")
        .key(key)
        .memory(net)
        .balance(balance)
        .drain_timeout(Duration::from_secs(30))
        .start()
        .await
        .expect("an in-process node starts")
}

/// Wait until `mesh` sees `count` providers of `name`.
pub(super) async fn providers(mesh: &Mesh, name: &str, count: usize) {
    let mut watch = mesh.watch();
    while mesh.providers(name).len() != count {
        tokio::time::timeout(Duration::from_secs(5), watch.next())
            .await
            .expect("the table changes in time");
    }
}

pub(super) fn opts(timeout: u64, idempotent: bool) -> CallOptions {
    CallOptions {
        timeout: Some(Duration::from_secs(timeout)),
        idempotent,
    }
}

/// A call of `name` with a null body from `mesh`, on a task of its own.
fn spawn_call(
    mesh: &Mesh,
    name: &'static str,
    options: CallOptions,
) -> tokio::task::JoinHandle<Result<Value, plume::Error>> {
    let mesh = mesh.clone();
    tokio::spawn(async move { mesh.to(name).options(options).send(&Value::Null).await })
}

/// A handler answering with its node's key.
pub(super) fn whoami(mesh: &Mesh, name: &str) {
    let key = mesh.key().to_owned();
    mesh.respond(name, move |_r: Request| {
        let key = key.clone();
        async move { Ok(json!(key)) }
    });
}

#[tokio::test(start_paused = true)]
async fn calls_route_to_the_provider_and_errors_keep_their_class() {
    let net = Network::new();
    let (a, b) = (node(&net, "a").await, node(&net, "b").await);
    a.respond("echo", |r: Request| async move {
        Ok(json!({ "body": r.body, "method": r.method }))
    });
    a.respond("refuse", |_r: Request| async move {
        Err(plume::Error::conflict("taken"))
    });
    providers(&b, "echo", 1).await;
    let got = b
        .to("echo")
        .method("get")
        .options(opts(5, false))
        .send(&json!([1, 2]))
        .await
        .expect("answered");
    assert_eq!(got, json!({ "body": [1, 2], "method": "get" }));
    let err = b
        .to("refuse")
        .send(&Value::Null)
        .await
        .expect_err("refused");
    assert_eq!(err.kind(), ErrorKind::Conflict);
    // `.on(node)` reaches the named node; one that does not provide the name answers NotFound.
    let got = b
        .to("echo")
        .on(a.node_id())
        .options(opts(5, false))
        .send(&json!(1))
        .await
        .expect("answered");
    assert_eq!(got["body"], json!(1));
    let err = a
        .to("echo")
        .on(b.node_id())
        .options(opts(5, false))
        .send(&Value::Null)
        .await
        .expect_err("b provides nothing");
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert!(b.ping(a.node_id()).await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn a_call_waits_for_a_provider_until_its_deadline() {
    let net = Network::new();
    let (a, b) = (node(&net, "a").await, node(&net, "b").await);
    let started = Instant::now();
    let err = b
        .to("later")
        .options(opts(3, false))
        .send(&Value::Null)
        .await
        .expect_err("nobody provides it");
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    assert_eq!(started.elapsed(), Duration::from_secs(3));

    let call = spawn_call(&b, "later", opts(3, false));
    tokio::time::sleep(Duration::from_secs(2)).await;
    whoami(&a, "later");
    assert_eq!(call.await.expect("joined").expect("answered"), json!("a"));
}

#[tokio::test(start_paused = true)]
async fn round_robin_spreads_calls_evenly() {
    let net = Network::new();
    let caller = node(&net, "caller").await;
    let mut replicas = Vec::new();
    for key in ["r1", "r2", "r3"] {
        let m = node(&net, key).await;
        whoami(&m, "svc");
        replicas.push(m);
    }
    providers(&caller, "svc", 3).await;
    let mut counts: HashMap<String, usize> = HashMap::new();
    for _ in 0..30 {
        let who = caller.to("svc").send(&Value::Null).await.expect("answered");
        *counts
            .entry(who.as_str().unwrap_or_default().to_owned())
            .or_default() += 1;
    }
    assert_eq!(counts.len(), 3, "{counts:?}");
    assert!(counts.values().all(|c| *c == 10), "{counts:?}");
}

#[tokio::test(start_paused = true)]
async fn least_pending_avoids_a_busy_provider() {
    let net = Network::new();
    let caller = node_with(&net, "caller", Balance::LeastPending).await;
    let (busy, idle) = (node(&net, "busy").await, node(&net, "idle").await);
    busy.respond("svc", |_r: Request| async move {
        tokio::time::sleep(Duration::from_secs(60)).await;
        Ok(json!("busy"))
    });
    whoami(&idle, "svc");
    providers(&caller, "svc", 2).await;
    // Whichever takes the first call: once a call hangs on `busy`, every other goes to `idle`.
    let mut hanging = Vec::new();
    let mut answers = 0;
    while answers < 10 {
        let call = spawn_call(&caller, "svc", opts(120, false));
        tokio::time::sleep(Duration::from_millis(10)).await;
        if call.is_finished() {
            let who = call.await.expect("joined").expect("answered");
            assert_eq!(who, json!("idle"));
            answers += 1;
        } else {
            hanging.push(call);
        }
    }
    assert_eq!(
        hanging.len(),
        1,
        "only the first call may go to the busy provider"
    );
}

#[tokio::test(start_paused = true)]
async fn a_slow_provider_gives_timeout_at_the_deadline() {
    let net = Network::new();
    let (a, b) = (node(&net, "a").await, node(&net, "b").await);
    let seen = Arc::new(std::sync::Mutex::new(None));
    a.respond("slow", {
        let seen = seen.clone();
        move |r: Request| {
            *seen.lock().expect("unpoisoned") = Some(r.deadline);
            async move {
                tokio::time::sleep(Duration::from_secs(60)).await;
                Ok(Value::Null)
            }
        }
    });
    providers(&b, "slow", 1).await;
    let started = Instant::now();
    let err = b
        .to("slow")
        .options(opts(2, false))
        .send(&Value::Null)
        .await
        .expect_err("late");
    assert_eq!(err.kind(), ErrorKind::Timeout);
    assert_eq!(started.elapsed(), Duration::from_secs(2));
    // The handler was told when its caller stops waiting.
    let deadline = seen.lock().expect("unpoisoned").expect("called");
    let left = deadline.saturating_duration_since(started.into_std());
    assert!(
        left <= Duration::from_secs(2) && left > Duration::from_millis(1900),
        "{left:?}"
    );
}

/// A provider that takes a call and then crashes (leaves the network with it in flight).
pub(super) async fn crashing_provider(
    net: &Network,
    name: &str,
) -> (Mesh, Arc<tokio::sync::Notify>) {
    let m = node(net, "crashing").await;
    let taken = Arc::new(tokio::sync::Notify::new());
    m.respond(name, {
        let taken = taken.clone();
        move |_r: Request| {
            taken.notify_one();
            async move {
                std::future::pending::<()>().await;
                Ok(Value::Null)
            }
        }
    });
    (m, taken)
}

#[tokio::test(start_paused = true)]
async fn a_lost_provider_retries_idempotent_calls_and_fails_others_as_unknown() {
    for idempotent in [true, false] {
        let net = Network::new();
        let caller = node(&net, "caller").await;
        let (crashing, taken) = crashing_provider(&net, "job").await;
        providers(&caller, "job", 1).await;
        let call = spawn_call(&caller, "job", opts(30, idempotent));
        taken.notified().await;
        // A survivor appears, then the provider holding the call dies.
        let survivor = node(&net, "survivor").await;
        whoami(&survivor, "job");
        providers(&caller, "job", 2).await;
        net.disconnect(crashing.node_id());
        let got = call.await.expect("joined");
        if idempotent {
            assert_eq!(got.expect("retried on the survivor"), json!("survivor"));
        } else {
            let err = got.expect_err("the outcome is unknown");
            assert_eq!(err.kind(), ErrorKind::Unavailable);
            assert_eq!(
                err.data().and_then(|d| d.get("outcome")),
                Some(&json!("unknown"))
            );
        }
    }
}

#[tokio::test(start_paused = true)]
async fn an_idempotent_call_fails_at_once_when_no_provider_is_left() {
    let net = Network::new();
    let caller = node(&net, "caller").await;
    let (crashing, taken) = crashing_provider(&net, "job").await;
    providers(&caller, "job", 1).await;
    let started = Instant::now();
    let call = spawn_call(&caller, "job", opts(30, true));
    taken.notified().await;
    net.disconnect(crashing.node_id());
    let err = call
        .await
        .expect("joined")
        .expect_err("no provider is left");
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(start_paused = true)]
async fn shutdown_finishes_calls_in_flight_and_peers_route_elsewhere() {
    let net = Network::new();
    let caller = node(&net, "caller").await;
    let (leaving, staying) = (node(&net, "leaving").await, node(&net, "staying").await);
    let started_calls = Arc::new(AtomicUsize::new(0));
    for m in [&leaving, &staying] {
        let key = m.key().to_owned();
        let started_calls = started_calls.clone();
        m.respond("job", move |_r: Request| {
            started_calls.fetch_add(1, Ordering::SeqCst);
            let key = key.clone();
            async move {
                tokio::time::sleep(Duration::from_secs(1)).await;
                Ok(json!(key))
            }
        });
    }
    providers(&caller, "job", 2).await;
    // One call in flight on each provider.
    let calls: Vec<_> = (0..2)
        .map(|_| spawn_call(&caller, "job", opts(30, false)))
        .collect();
    while started_calls.load(Ordering::SeqCst) < 2 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let mut removed = caller.watch();
    let shutdown_started = Instant::now();
    leaving.shutdown().await;
    // Shutdown waited for its call, and that call got its answer.
    assert!(shutdown_started.elapsed() >= Duration::from_millis(900));
    let mut answers: Vec<Value> = Vec::new();
    for c in calls {
        answers.push(c.await.expect("joined").expect("finished"));
    }
    answers.sort_by_key(Value::to_string);
    assert_eq!(answers, [json!("leaving"), json!("staying")]);
    // The caller dropped the drained node's route (withdrawn, not lost), and routes new calls
    // to the other one.
    let removal = loop {
        match removed.next().await.expect("the table changed") {
            TableEvent::Added { .. } => {}
            removal => break removal,
        }
    };
    assert_eq!(
        removal,
        TableEvent::Removed {
            name: "job".into(),
            node: leaving.node_id(),
            reason: Removal::Withdrawn,
        }
    );
    assert_eq!(caller.providers("job").len(), 1);
    for _ in 0..3 {
        assert_eq!(
            caller.to("job").send(&Value::Null).await.expect("answered"),
            json!("staying")
        );
    }
    // A drained node takes no new call of its own.
    let err = leaving
        .to("job")
        .send(&Value::Null)
        .await
        .expect_err("stopped");
    assert_eq!(err.kind(), ErrorKind::Unavailable);
}

#[tokio::test(start_paused = true)]
async fn events_reach_subscribers_on_other_nodes_only_while_subscribed() {
    let net = Network::new();
    let (a, b) = (node(&net, "a").await, node(&net, "b").await);
    let mut sub = b.subscribe("news");
    a.publish("news", json!(1));
    assert_eq!(sub.recv().await, Some(json!(1)));
    drop(sub);
    let mut other = b.subscribe("other");
    a.publish("news", json!(2));
    a.publish("other", json!(3));
    assert_eq!(other.recv().await, Some(json!(3)));
}

#[tokio::test(start_paused = true)]
async fn a_watch_starts_with_the_table_and_says_why_a_provider_left() {
    let net = Network::new();
    let (a, b, c) = (
        node(&net, "a").await,
        node(&net, "b").await,
        node(&net, "c").await,
    );
    whoami(&a, "svc");
    whoami(&b, "svc");
    whoami(&c, "svc");
    providers(&c, "svc", 3).await;
    let mut watch = c.watch();
    let mut snapshot = Vec::new();
    for _ in 0..3 {
        match watch.next().await.expect("the snapshot") {
            TableEvent::Added { name, node, .. } => snapshot.push((name, node)),
            other => panic!("the snapshot holds additions only: {other:?}"),
        }
    }
    snapshot.sort();
    let mut want: Vec<_> = [&a, &b, &c]
        .iter()
        .map(|m| ("svc".to_owned(), m.node_id()))
        .collect();
    want.sort();
    assert_eq!(snapshot, want);

    a.withdraw("svc");
    assert_eq!(
        watch.next().await,
        Some(TableEvent::Removed {
            name: "svc".into(),
            node: a.node_id(),
            reason: Removal::Withdrawn,
        })
    );
    net.disconnect(b.node_id());
    assert_eq!(
        watch.next().await,
        Some(TableEvent::Removed {
            name: "svc".into(),
            node: b.node_id(),
            reason: Removal::NodeLost,
        })
    );
}
