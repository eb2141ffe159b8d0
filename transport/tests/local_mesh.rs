//! In-process multi-node tests on 127.0.0.1 with static peers (no discovery).

use std::collections::HashMap;
use std::time::Duration;

use plume::ErrorKind;
use plume_transport::discovery::PeerEvent;
use plume_transport::{
    Balance, CallOptions, Mesh, MeshBuilder, NodeId, Removal, Request, TableEvent,
};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::time::{Instant, timeout};

const WAIT: Duration = Duration::from_secs(10);

struct Node {
    mesh: Mesh,
    peers: mpsc::Sender<PeerEvent>,
}

async fn start(builder: MeshBuilder) -> Node {
    let (tx, rx) = mpsc::channel(64);
    let mesh = builder.peers(rx).start().await.expect("mesh starts");
    Node { mesh, peers: tx }
}

/// Start nodes from builders and announce every node to every other.
async fn cluster(builders: Vec<MeshBuilder>) -> Vec<Node> {
    let mut nodes = Vec::new();
    for b in builders {
        nodes.push(start(b).await);
    }
    for a in &nodes {
        for b in &nodes {
            if a.mesh.node_id() != b.mesh.node_id() {
                a.peers
                    .send(PeerEvent::Up(b.mesh.peer_info()))
                    .await
                    .expect("announce");
            }
        }
    }
    nodes
}

fn env(name: &str) -> MeshBuilder {
    Mesh::builder()
        .environment(format!("local-{name}-{}", std::process::id()))
        .key("test")
}

/// Wait (bounded) until `mesh` sees `n` providers of `name`, driven by table events.
async fn wait_providers(mesh: &Mesh, name: &str, n: usize) {
    wait_until(mesh, |m| m.providers(name).len() == n).await;
}

/// Wait (bounded) until `cond` holds, re-checking on every table event.
async fn wait_until(mesh: &Mesh, cond: impl Fn(&Mesh) -> bool) {
    let mut watch = mesh.watch();
    let deadline = Instant::now() + WAIT;
    while !cond(mesh) {
        let left = deadline.saturating_duration_since(Instant::now());
        match timeout(left, watch.recv()).await {
            Ok(Some(_)) => {}
            _ => panic!("condition not reached in time"),
        }
    }
}

fn whoami(
    mesh: &Mesh,
) -> impl Fn(Request) -> futures::future::Ready<Result<Value, plume::Error>> + use<> {
    let me = mesh.node_id().to_string();
    move |_req| futures::future::ready(Ok(json!(me.clone())))
}

#[tokio::test]
async fn calls_cross_the_link_and_errors_keep_their_class() {
    let nodes = cluster(vec![env("call"), env("call")]).await;
    let (a, b) = (&nodes[0].mesh, &nodes[1].mesh);
    a.provide(
        "echo",
        json!({"methods": ["get"]}),
        |req: Request| async move {
            Ok(json!({"method": req.method, "body": req.body, "from": req.from.to_string()}))
        },
    );
    a.respond("fail", |_req: Request| async move {
        Err(plume::Error::conflict("taken").with_data(json!({"id": 7})))
    });
    wait_providers(b, "echo", 1).await;
    wait_providers(b, "fail", 1).await;

    let got = b
        .to("echo")
        .method("get")
        .send(&json!({"x": [1, 2.5, "s"]}))
        .await;
    assert_eq!(
        got.expect("echo answers"),
        json!({"method": "get", "body": {"x": [1, 2.5, "s"]}, "from": b.node_id().to_string()})
    );
    let err = b
        .to("fail")
        .send(&json!(null))
        .await
        .expect_err("fail fails");
    assert_eq!(err.kind(), ErrorKind::Conflict);
    assert_eq!(err.message(), "taken");
    assert_eq!(err.data(), Some(&json!({"id": 7})));

    let providers = b.providers("echo");
    assert_eq!(providers.len(), 1);
    assert_eq!(providers[0].node, a.node_id());
    assert_eq!(providers[0].key, "test");
    assert_eq!(providers[0].descriptor, json!({"methods": ["get"]}));

    // A name the node does not provide gets an immediate NotFound reply.
    let started = Instant::now();
    let err = b
        .to("nothing-here")
        .on(a.node_id())
        .send(&json!(1))
        .await
        .expect_err("not provided");
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert!(started.elapsed() < Duration::from_secs(5));

    let rtt = b.ping(a.node_id()).await.expect("ping");
    assert!(rtt < WAIT);
    let err = b.ping(NodeId(1)).await.expect_err("no such node");
    assert_eq!(err.kind(), ErrorKind::Unavailable);
}

#[tokio::test]
async fn a_result_comes_as_json_text_from_a_peer_and_from_this_node() {
    let nodes = cluster(vec![env("json"), env("json")]).await;
    let (a, b) = (&nodes[0].mesh, &nodes[1].mesh);
    let answer = json!({"z": 1, "a": [true, null, -2.5, "é\"\n"], "m": {"k": {}}});
    let handler = |answer: Value| {
        move |req: Request| {
            let answer = answer.clone();
            async move {
                match req.body {
                    Value::Null => Ok(Value::Null),
                    Value::Bool(true) => Err(plume::Error::conflict("taken")),
                    _ => Ok(answer),
                }
            }
        }
    };
    // "remote" lives on a only (b calls it over the link); "local" on b only.
    a.respond("remote", handler(answer.clone()));
    b.respond("local", handler(answer.clone()));
    wait_providers(b, "remote", 1).await;
    let expected = serde_json::to_vec(&answer).expect("encodes");
    for name in ["remote", "local"] {
        let raw = b.to(name).send_json(&json!(1)).await.expect("answers");
        assert_eq!(raw.as_bytes(), expected.as_slice(), "{name}");
        let value = b.to(name).send(&json!(1)).await.expect("answers");
        assert_eq!(value, answer, "{name}");
        let null = b.to(name).send_json(&Value::Null).await.expect("answers");
        assert!(null.is_null(), "{name}");
        let err = b.to(name).send_json(&true).await.expect_err("fails");
        assert_eq!((err.kind(), err.message()), (ErrorKind::Conflict, "taken"));
    }
}

#[tokio::test]
async fn watch_sees_remote_provide_and_withdraw() {
    let nodes = cluster(vec![env("watch"), env("watch")]).await;
    let (a, b) = (&nodes[0].mesh, &nodes[1].mesh);
    let mut watch = b.watch();
    a.provide("thing", json!({"v": 1}), whoami(a));
    let ev = timeout(WAIT, watch.recv())
        .await
        .expect("in time")
        .expect("event");
    assert_eq!(
        ev,
        TableEvent::Added {
            name: "thing".into(),
            node: a.node_id(),
            key: "test".into(),
            descriptor: json!({"v": 1})
        }
    );
    a.withdraw("thing");
    let ev = timeout(WAIT, watch.recv())
        .await
        .expect("in time")
        .expect("event");
    assert_eq!(
        ev,
        TableEvent::Removed {
            name: "thing".into(),
            node: a.node_id(),
            reason: Removal::Withdrawn,
        }
    );
    assert!(b.providers("thing").is_empty());
}

#[tokio::test]
async fn a_call_waits_for_a_provider_that_appears() {
    let nodes = cluster(vec![env("late"), env("late")]).await;
    let (a, b) = (nodes[0].mesh.clone(), nodes[1].mesh.clone());
    let mut watch = b.watch();
    let call = tokio::spawn({
        let b = b.clone();
        async move {
            b.to("late")
                .options(CallOptions {
                    timeout: Some(WAIT),
                    idempotent: false,
                })
                .send(&json!(null))
                .await
        }
    });
    // The call is waiting; now the provider appears on the other node.
    a.provide("late", Value::Null, whoami(&a));
    let seen = timeout(WAIT, async {
        while let Some(ev) = watch.recv().await {
            if matches!(&ev, TableEvent::Added { name, node, .. } if name == "late" && *node == a.node_id())
            {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(
        seen,
        Ok(true),
        "b's table shows a as the provider of late in time"
    );
    let got = timeout(WAIT, call).await.expect("in time").expect("joined");
    assert_eq!(got.expect("answered"), json!(a.node_id().to_string()));
}

#[tokio::test]
async fn a_slow_provider_gives_timeout_408() {
    let nodes = cluster(vec![env("slow"), env("slow")]).await;
    let (a, b) = (&nodes[0].mesh, &nodes[1].mesh);
    a.respond("slow", |_req: Request| async move {
        futures::future::pending::<()>().await;
        Ok(Value::Null)
    });
    wait_providers(b, "slow", 1).await;
    let err = b
        .to("slow")
        .options(CallOptions {
            timeout: Some(Duration::from_millis(300)),
            idempotent: true,
        })
        .send(&json!(null))
        .await
        .expect_err("times out");
    assert_eq!(err.kind(), ErrorKind::Timeout);
    assert_eq!(err.code(), 408);
}

#[tokio::test]
async fn round_robin_spreads_calls_evenly() {
    let nodes = cluster(vec![env("rr"), env("rr"), env("rr"), env("rr")]).await;
    for n in &nodes[..3] {
        n.mesh.respond("whoami", whoami(&n.mesh));
    }
    let caller = &nodes[3].mesh;
    wait_providers(caller, "whoami", 3).await;
    let mut counts: HashMap<String, usize> = HashMap::new();
    for _ in 0..30 {
        let who = caller
            .to("whoami")
            .send(&json!(null))
            .await
            .expect("answers");
        *counts
            .entry(who.as_str().expect("a string").to_string())
            .or_default() += 1;
    }
    assert_eq!(counts.len(), 3, "{counts:?}");
    assert!(counts.values().all(|c| *c == 10), "{counts:?}");
}

#[tokio::test]
async fn least_pending_avoids_a_busy_provider() {
    let mut builders = vec![env("lp"), env("lp")];
    builders.push(env("lp").balance(Balance::LeastPending));
    let nodes = cluster(builders).await;
    let (busy, free, caller) = (&nodes[0].mesh, &nodes[1].mesh, nodes[2].mesh.clone());
    let (hold_tx, hold_rx) = tokio::sync::watch::channel(false);
    let (entered_tx, mut entered_rx) = mpsc::channel::<()>(16);
    busy.respond("work", move |_req: Request| {
        let mut hold = hold_rx.clone();
        let entered = entered_tx.clone();
        async move {
            let _ = entered.send(()).await;
            let _ = hold.wait_for(|v| *v).await;
            Ok(json!("busy"))
        }
    });
    wait_providers(&caller, "work", 1).await;
    // One call parks on the busy provider.
    let parked = tokio::spawn({
        let caller = caller.clone();
        async move { caller.to("work").send(&json!(null)).await }
    });
    timeout(WAIT, entered_rx.recv())
        .await
        .expect("busy provider entered");
    free.respond("work", |_req: Request| async move { Ok(json!("free")) });
    wait_providers(&caller, "work", 2).await;
    for _ in 0..10 {
        assert_eq!(
            caller.to("work").send(&json!(null)).await.expect("answers"),
            json!("free")
        );
    }
    hold_tx.send(true).expect("release");
    assert_eq!(
        parked.await.expect("joined").expect("answers"),
        json!("busy")
    );
}

#[tokio::test]
async fn a_dead_link_retries_idempotent_calls_and_fails_others_as_unknown() {
    let nodes = cluster(vec![env("dead"), env("dead"), env("dead")]).await;
    let (a, b, c) = (&nodes[0].mesh, &nodes[1].mesh, nodes[2].mesh.clone());
    let (entered_tx, mut entered_rx) = mpsc::channel::<()>(16);
    a.respond("op", move |_req: Request| {
        let entered = entered_tx.clone();
        async move {
            let _ = entered.send(()).await;
            futures::future::pending::<()>().await;
            Ok(json!("a"))
        }
    });
    wait_providers(&c, "op", 1).await;
    for idempotent in [true, false] {
        let call = tokio::spawn({
            let c = c.clone();
            async move {
                c.to("op")
                    .options(CallOptions {
                        timeout: Some(WAIT),
                        idempotent,
                    })
                    .send(&json!(null))
                    .await
            }
        });
        timeout(WAIT, entered_rx.recv())
            .await
            .expect("a took the call");
        if idempotent {
            b.respond("op", whoami(b));
            wait_providers(&c, "op", 2).await;
        }
        // The link between `a` and `c` dies: discovery on each side reports the other gone.
        nodes[2]
            .peers
            .send(PeerEvent::Down { node: a.node_id() })
            .await
            .expect("down");
        nodes[0]
            .peers
            .send(PeerEvent::Down { node: c.node_id() })
            .await
            .expect("down");
        let got = timeout(WAIT, call).await.expect("in time").expect("joined");
        if idempotent {
            assert_eq!(got.expect("retried on b"), json!(b.node_id().to_string()));
            // `a` comes back, and only `a` provides `op` for the next round.
            b.withdraw("op");
            nodes[2]
                .peers
                .send(PeerEvent::Up(a.peer_info()))
                .await
                .expect("up");
            nodes[0]
                .peers
                .send(PeerEvent::Up(c.peer_info()))
                .await
                .expect("up");
            let a_id = a.node_id();
            wait_until(&c, |m| {
                m.providers("op").iter().map(|p| p.node).collect::<Vec<_>>() == [a_id]
            })
            .await;
        } else {
            let err = got.expect_err("outcome unknown");
            assert_eq!(err.kind(), ErrorKind::Unavailable);
            assert!(err.message().contains("outcome is unknown"), "{err}");
        }
    }
}

#[tokio::test]
async fn a_call_whose_last_provider_dies_fails_at_once_instead_of_waiting() {
    let nodes = cluster(vec![env("last"), env("last")]).await;
    let (a, c) = (&nodes[0].mesh, nodes[1].mesh.clone());
    let (entered_tx, mut entered_rx) = mpsc::channel::<()>(16);
    a.respond("op", move |_req: Request| {
        let entered = entered_tx.clone();
        async move {
            let _ = entered.send(()).await;
            futures::future::pending::<()>().await;
            Ok(json!("a"))
        }
    });
    wait_providers(&c, "op", 1).await;
    let call = tokio::spawn({
        let c = c.clone();
        async move {
            // A deadline far beyond the wait below: only failing at once passes.
            let options = CallOptions {
                timeout: Some(WAIT * 20),
                idempotent: true,
            };
            c.to("op").options(options).send(&json!(null)).await
        }
    });
    timeout(WAIT, entered_rx.recv())
        .await
        .expect("a took the call");
    nodes[1]
        .peers
        .send(PeerEvent::Down { node: a.node_id() })
        .await
        .expect("down");
    nodes[0]
        .peers
        .send(PeerEvent::Down { node: c.node_id() })
        .await
        .expect("down");
    let err = timeout(WAIT, call)
        .await
        .expect("failed before the call's deadline")
        .expect("joined")
        .expect_err("no provider is left");
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    assert!(err.message().contains("is left"), "{err}");
}

#[tokio::test]
async fn a_wrong_secret_means_no_link_and_no_calls() {
    let nodes = cluster(vec![
        env("secret").secret(Some("right")),
        env("secret").secret(Some("wrong")),
        env("secret").secret(Some("right")),
        env("secret").secret(None::<&str>),
    ])
    .await;
    let (a, wrong, right, none) = (
        &nodes[0].mesh,
        &nodes[1].mesh,
        &nodes[2].mesh,
        &nodes[3].mesh,
    );
    a.respond("guarded", whoami(a));
    wait_providers(right, "guarded", 1).await;
    assert_eq!(
        right
            .to("guarded")
            .send(&json!(null))
            .await
            .expect("same secret"),
        json!(a.node_id().to_string())
    );
    for other in [wrong, none] {
        let err = other
            .to("guarded")
            .options(CallOptions {
                timeout: Some(Duration::from_millis(500)),
                idempotent: false,
            })
            .send(&json!(null))
            .await
            .expect_err("no link");
        assert_eq!(err.kind(), ErrorKind::Unavailable);
        assert!(!other.linked_peers().contains(&a.node_id()));
    }
}

#[tokio::test]
async fn different_environments_never_link() {
    let nodes = cluster(vec![env("env-a"), env("env-b")]).await;
    let (a, b) = (&nodes[0].mesh, &nodes[1].mesh);
    a.respond("x", whoami(a));
    let err = b
        .to("x")
        .options(CallOptions {
            timeout: Some(Duration::from_millis(500)),
            idempotent: false,
        })
        .send(&json!(null))
        .await
        .expect_err("invisible");
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    assert!(b.linked_peers().is_empty());
}

#[tokio::test]
async fn events_reach_subscribers_only_after_subscribe() {
    let nodes = cluster(vec![env("pub"), env("pub"), env("pub")]).await;
    let (publisher, sub_node, other) = (&nodes[0].mesh, &nodes[1].mesh, &nodes[2].mesh);
    // `sync` lets a node prove the publisher has read everything it sent before.
    publisher.respond("sync", |_req: Request| async move { Ok(Value::Null) });
    wait_providers(sub_node, "sync", 1).await;
    wait_providers(other, "sync", 1).await;

    let mut sub = sub_node.subscribe("ticks");
    sub_node.to("sync").send(&json!(null)).await.expect("sync");
    let mut local = publisher.subscribe("ticks");
    for i in 0..100 {
        publisher.publish("ticks", json!({"n": i}));
    }
    publisher.publish("other-topic", json!("ignored"));
    for i in 0..100 {
        let got = timeout(WAIT, sub.recv())
            .await
            .expect("in time")
            .expect("event");
        assert_eq!(got, json!({"n": i}));
        assert_eq!(local.recv().await.expect("local event"), json!({"n": i}));
    }
    drop(sub);
    sub_node.to("sync").send(&json!(null)).await.expect("sync");
    // After unsubscribing, a new subscription elsewhere sees only new events.
    let mut late = other.subscribe("ticks");
    other.to("sync").send(&json!(null)).await.expect("sync");
    publisher.publish("ticks", json!("after"));
    assert_eq!(
        timeout(WAIT, late.recv()).await.expect("in time"),
        Some(json!("after"))
    );
}

#[tokio::test]
async fn graceful_shutdown_finishes_calls_in_flight() {
    let nodes = cluster(vec![env("drain"), env("drain"), env("drain")]).await;
    let (a, b, c) = (
        nodes[0].mesh.clone(),
        nodes[1].mesh.clone(),
        nodes[2].mesh.clone(),
    );
    let (entered_tx, mut entered_rx) = mpsc::channel::<()>(64);
    let (release_tx, release_rx) = tokio::sync::watch::channel(false);
    a.respond("job", move |_req: Request| {
        let entered = entered_tx.clone();
        let mut release = release_rx.clone();
        async move {
            let _ = entered.send(()).await;
            let _ = release.wait_for(|v| *v).await;
            Ok(json!("done-a"))
        }
    });
    b.respond("job", whoami(&b));
    wait_providers(&c, "job", 2).await;
    // Calls to `a` in flight: round-robin sends every other one there.
    let mut calls = Vec::new();
    for _ in 0..10 {
        let c = c.clone();
        calls.push(tokio::spawn(
            async move { c.to("job").send(&json!(null)).await },
        ));
    }
    for _ in 0..5 {
        timeout(WAIT, entered_rx.recv())
            .await
            .expect("a took a call");
    }
    let shutdown = tokio::spawn({
        let a = a.clone();
        async move { a.shutdown().await }
    });
    // `c` sees `a` draining, then `a`'s calls are released.
    let deadline = Instant::now() + WAIT;
    let mut watch = c.watch();
    while c.providers("job").len() != 1 {
        let left = deadline.saturating_duration_since(Instant::now());
        timeout(left, watch.recv())
            .await
            .expect("a leaves the table");
    }
    assert_eq!(
        a.to("job")
            .send(&json!(null))
            .await
            .expect_err("refused")
            .kind(),
        ErrorKind::Unavailable
    );
    release_tx.send(true).expect("release");
    let mut from_a = 0;
    for call in calls {
        let got = call.await.expect("joined").expect("no failed call");
        if got == json!("done-a") {
            from_a += 1;
        }
    }
    assert_eq!(from_a, 5);
    timeout(WAIT, shutdown)
        .await
        .expect("shutdown finishes")
        .expect("joined");
    for _ in 0..10 {
        assert_eq!(
            c.to("job").send(&json!(null)).await.expect("b answers"),
            json!(b.node_id().to_string())
        );
    }
}

#[tokio::test]
async fn malformed_and_oversized_frames_close_the_connection() {
    let node = start(env("garbage").max_frame(1024)).await;
    let cases: [&[u8]; 4] = [
        b"GET / HTTP/1.1\r\n\r\n",
        &[0xff, 0xff, 0xff, 0xff, 1, 1],
        &[0, 0, 0, 12, 1, 99, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        // A well-formed frame of the wrong kind where hello is expected.
        &[0, 0, 0, 10, 1, 11, 0, 0, 0, 0, 0, 0, 0, 0],
    ];
    for bytes in cases {
        let mut s = tokio::net::TcpStream::connect(node.mesh.local_addr())
            .await
            .expect("connect");
        s.write_all(bytes).await.expect("write");
        let mut sink = Vec::new();
        // The node sends its hello and then closes: read to EOF.
        timeout(WAIT, s.read_to_end(&mut sink))
            .await
            .expect("closed in time")
            .expect("read");
    }
    // The node is still fine.
    node.mesh
        .respond("ok", |_req: Request| async move { Ok(json!(true)) });
    assert_eq!(
        node.mesh
            .to("ok")
            .send(&json!(null))
            .await
            .expect("local call"),
        json!(true)
    );
}

/// A TCP forwarder whose connections the test can cut.
struct Proxy {
    addr: std::net::SocketAddr,
    conns: mpsc::Receiver<tokio::task::JoinHandle<()>>,
}

async fn proxy(target: std::net::SocketAddr) -> Proxy {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, conns) = mpsc::channel(16);
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let task = tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
            if tx.send(task).await.is_err() {
                break;
            }
        }
    });
    Proxy { addr, conns }
}

#[tokio::test]
async fn a_cut_link_is_redialled_while_the_peer_is_advertised() {
    let a = start(env("redial")).await;
    let b = start(env("redial")).await;
    let (dialer, target) = if a.mesh.node_id() < b.mesh.node_id() {
        (&a, &b)
    } else {
        (&b, &a)
    };
    target.mesh.respond("here", whoami(&target.mesh));
    let mut proxy = proxy(target.mesh.local_addr()).await;
    let mut info = target.mesh.peer_info();
    info.addr = proxy.addr;
    dialer
        .peers
        .send(PeerEvent::Up(info))
        .await
        .expect("announce");
    wait_providers(&dialer.mesh, "here", 1).await;
    let first = timeout(WAIT, proxy.conns.recv())
        .await
        .expect("in time")
        .expect("a connection");

    // Cut the connection: the link dies, the peer is still advertised, so it is redialled.
    first.abort();
    let target_id = target.mesh.node_id();
    wait_until(&dialer.mesh, |m| m.providers("here").is_empty()).await;
    let second = timeout(WAIT, proxy.conns.recv())
        .await
        .expect("redialled in time");
    assert!(second.is_some());
    wait_providers(&dialer.mesh, "here", 1).await;
    assert_eq!(
        dialer
            .mesh
            .to("here")
            .send(&json!(null))
            .await
            .expect("answers again"),
        json!(target_id.to_string())
    );

    // Once discovery removes the peer, the link closes and nothing is redialled.
    dialer
        .peers
        .send(PeerEvent::Down { node: target_id })
        .await
        .expect("down");
    wait_until(&dialer.mesh, |m| m.providers("here").is_empty()).await;
    assert!(!dialer.mesh.linked_peers().contains(&target_id));
}

#[tokio::test]
async fn a_panicking_handler_answers_general_error_and_the_link_survives() {
    let nodes = cluster(vec![env("panic"), env("panic")]).await;
    let (a, b) = (&nodes[0].mesh, &nodes[1].mesh);
    a.respond("boom-now", |_req: Request| async move {
        if true {
            panic!("at once");
        }
        Ok(Value::Null)
    });
    a.respond("boom-later", |_req: Request| async move {
        tokio::task::yield_now().await;
        if true {
            panic!("after a yield");
        }
        Ok(Value::Null)
    });
    a.respond("fine", whoami(a));
    wait_providers(b, "boom-now", 1).await;
    wait_providers(b, "boom-later", 1).await;
    wait_providers(b, "fine", 1).await;
    for name in ["boom-now", "boom-later"] {
        let err = b.to(name).send(&json!(null)).await.expect_err("panicked");
        assert_eq!(err.kind(), ErrorKind::GeneralError, "{name}");
    }
    assert_eq!(
        b.to("fine").send(&json!(null)).await.expect("link alive"),
        json!(a.node_id().to_string())
    );
}

/// The next removal `watch` reports (additions, such as the snapshot, are skipped).
async fn next_removal(watch: &mut plume_transport::TableWatch) -> TableEvent {
    loop {
        match timeout(WAIT, watch.recv()).await {
            Ok(Some(TableEvent::Added { .. })) => {}
            Ok(Some(removal)) => return removal,
            other => panic!("no removal in time: {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_removal_says_whether_the_provider_withdrew_or_was_lost() {
    let nodes = cluster(vec![env("why"), env("why"), env("why")]).await;
    let (a, b, c) = (&nodes[0], &nodes[1].mesh, &nodes[2].mesh);
    a.mesh.respond("x", whoami(&a.mesh));
    a.mesh.respond("y", whoami(&a.mesh));
    c.respond("x", whoami(c));
    wait_providers(b, "x", 2).await;
    wait_providers(b, "y", 1).await;
    let mut watch = b.watch();

    a.mesh.withdraw("x");
    assert_eq!(
        next_removal(&mut watch).await,
        TableEvent::Removed {
            name: "x".into(),
            node: a.mesh.node_id(),
            reason: Removal::Withdrawn,
        }
    );
    // A draining node withdraws what it provides.
    c.shutdown().await;
    assert_eq!(
        next_removal(&mut watch).await,
        TableEvent::Removed {
            name: "x".into(),
            node: c.node_id(),
            reason: Removal::Withdrawn,
        }
    );
    // A node discovery no longer sees is lost, with its endpoints.
    nodes[1]
        .peers
        .send(PeerEvent::Down {
            node: a.mesh.node_id(),
        })
        .await
        .expect("down");
    assert_eq!(
        next_removal(&mut watch).await,
        TableEvent::Removed {
            name: "y".into(),
            node: a.mesh.node_id(),
            reason: Removal::NodeLost,
        }
    );
}
