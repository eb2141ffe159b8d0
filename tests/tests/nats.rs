//! The mesh on NATS: a real `nats-server` on a free loopback port (see `plume_tests::servers`),
//! several Apps and processes with `PLUME_DISCOVERY=nats`.

mod common;

use std::time::Duration;

use common::{Backend, gateway, provider, unique_env, wait_providers, within};
use futures::StreamExt;
use plume::{Error, ErrorKind, Params};
use plume_tests::servers::{Kind, Server};
use plume_transport::{CallOptions, Mesh, Request};
use serde_json::{Value, json};

fn backend(server: &Server) -> Backend {
    Backend::new("nats", "PLUME_NATS_URL", &server.url())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_distribution_proxies_calls_and_relays_events_once() {
    let server = Server::start(Kind::Nats);
    common::proxies_calls_and_events(&backend(&server), &unique_env("nats-dist")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_replica_loss_keeps_calls_working() {
    let server = Server::start(Kind::Nats);
    common::replica_loss(&backend(&server), &unique_env("nats-loss")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_server_restart_mid_run_calls_recover() {
    let mut server = Server::start(Kind::Nats);
    let b = backend(&server);
    let env = unique_env("nats-restart");
    let (_p, dp) = provider(&b, &env).await;
    let (g, dg) = gateway(&b, &env).await;
    wait_providers(&dg, "messages", 1).await;
    common::until_a_call_succeeds(&g).await;
    server.kill();
    // While NATS is away, a call fails (bounded by its deadline); nothing crashes.
    let proxy = g.service("messages").expect("proxy");
    let err = proxy.find(Params::new()).await.expect_err("no NATS");
    assert!(
        matches!(err.kind(), ErrorKind::Unavailable | ErrorKind::Timeout),
        "{err:?}"
    );
    server.restart();
    // Same processes, same Apps: the clients reconnect, hellos flow, calls work again.
    common::until_a_call_succeeds(&g).await;
    wait_providers(&dg, "messages", 1).await;
    dp.shutdown().await;
    dg.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_environments_on_one_nats_server_are_invisible_to_each_other() {
    let server = Server::start(Kind::Nats);
    let b = backend(&server);
    let env_a = unique_env("nats-env-a");
    let env_b = unique_env("nats-env-b");
    let (_pa, dpa) = provider(&b, &env_a).await;
    let (_ga, dga) = gateway(&b, &env_a).await;
    let (gb, dgb) = gateway(&b, &env_b).await;
    wait_providers(&dga, "messages", 1).await;
    // B heard every hello A sent meanwhile, had there been any leak; it sees nothing.
    assert!(dgb.providers("messages").is_empty());
    assert!(gb.service("messages").is_none());
    let opts = CallOptions {
        timeout: Some(Duration::from_millis(300)),
        idempotent: false,
    };
    let err = dgb
        .mesh()
        .to("messages")
        .method("find")
        .options(opts)
        .send(&json!({}))
        .await
        .expect_err("no provider in B");
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    dpa.shutdown().await;
    dga.shutdown().await;
    dgb.shutdown().await;
}

async fn nats_mesh(server: &Server, env: &str, key: &str) -> Mesh {
    Mesh::builder()
        .environment(env)
        .key(key)
        .discovery(backend(server).config())
        .secret(None::<&str>)
        .start()
        .await
        .expect("mesh on NATS")
}

async fn wait_mesh_provider(mesh: &Mesh, name: &str) {
    within(name, async {
        while mesh.providers(name).is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_calls_keep_the_mesh_semantics() {
    let server = Server::start(Kind::Nats);
    let env = unique_env("nats-sem");
    let a = nats_mesh(&server, &env, "a").await;
    let b = nats_mesh(&server, &env, "b").await;
    a.respond("conflict", |_r: Request| async move {
        Err::<Value, _>(Error::conflict("taken").with_data(json!({"id": 7})))
    });
    a.respond("slow", |_r: Request| async move {
        tokio::time::sleep(Duration::from_secs(30)).await;
        Ok(Value::Null)
    });
    a.respond("add", |r: Request| async move {
        Ok(json!(
            r.body["a"].as_i64().unwrap_or(0) + r.body["b"].as_i64().unwrap_or(0)
        ))
    });
    wait_mesh_provider(&b, "add").await;
    wait_mesh_provider(&b, "slow").await;
    wait_mesh_provider(&b, "conflict").await;
    assert_eq!(
        b.to("add")
            .send(&json!({"a": 2, "b": 3}))
            .await
            .expect("sum"),
        json!(5)
    );
    b.ping(a.node_id()).await.expect("ping over NATS");
    let err = b
        .to("conflict")
        .send(&Value::Null)
        .await
        .expect_err("typed");
    assert_eq!(err.kind(), ErrorKind::Conflict);
    assert_eq!(err.data(), Some(&json!({"id": 7})));
    let short = CallOptions {
        timeout: Some(Duration::from_millis(300)),
        idempotent: false,
    };
    let err = b
        .to("slow")
        .options(short)
        .send(&Value::Null)
        .await
        .expect_err("late");
    assert_eq!(err.kind(), ErrorKind::Timeout);
    let started = std::time::Instant::now();
    let err = b
        .to("nobody")
        .options(short)
        .send(&Value::Null)
        .await
        .expect_err("no provider");
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    assert!(started.elapsed() >= Duration::from_millis(300));
    // A call to one node that does not provide the name: NotFound at once.
    let err = b
        .to("nothing-here")
        .on(a.node_id())
        .options(short)
        .send(&Value::Null)
        .await
        .expect_err("not provided");
    assert_eq!(err.kind(), ErrorKind::NotFound);
    // Events: published on one node, received once on the other.
    let mut sub = b.subscribe("ticks");
    within("subscription reaches NATS", async {
        loop {
            a.publish("ticks", json!(1));
            if let Ok(Some(v)) = tokio::time::timeout(Duration::from_millis(100), sub.recv()).await
            {
                assert_eq!(v, json!(1));
                return;
            }
        }
    })
    .await;
    // Withdrawing removes the provider from the other node's table.
    a.withdraw("add");
    within("withdrawal", async {
        while !b.providers("add").is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_service_api_shows_plume_services_to_standard_tooling() {
    let server = Server::start(Kind::Nats);
    let env = unique_env("nats-srv");
    let a = nats_mesh(&server, &env, "inventory").await;
    a.respond("stock/items", |_r: Request| async move { Ok(json!(3)) });
    let b = nats_mesh(&server, &env, "caller").await;
    wait_mesh_provider(&b, "stock/items").await;
    b.to("stock/items")
        .send(&Value::Null)
        .await
        .expect("one call");

    let client = async_nats::connect(server.url())
        .await
        .expect("plain NATS client");
    let ask = |subject: String| {
        let client = client.clone();
        async move {
            let reply = client.request(subject, "".into()).await.expect("answered");
            serde_json::from_slice::<Value>(&reply.payload).expect("JSON")
        }
    };
    let ping = ask("$SRV.PING.inventory".into()).await;
    assert_eq!(ping["type"], "io.nats.micro.v1.ping_response");
    assert_eq!(ping["id"], a.node_id().to_string());
    let info = ask(format!("$SRV.INFO.inventory.{}", a.node_id())).await;
    assert_eq!(info["type"], "io.nats.micro.v1.info_response");
    let endpoint = &info["endpoints"][0];
    assert_eq!(endpoint["metadata"]["plume.path"], "stock/items");
    assert!(
        endpoint["subject"]
            .as_str()
            .is_some_and(|s| s.ends_with(".svc.stock~2Fitems")),
        "{endpoint}"
    );
    let stats = ask("$SRV.STATS.inventory".into()).await;
    assert_eq!(stats["type"], "io.nats.micro.v1.stats_response");
    assert_eq!(stats["endpoints"][0]["num_requests"], 1);
    // $SRV.PING without a name reaches every Plume node on the server.
    let inbox = client.new_inbox();
    let mut replies = client.subscribe(inbox.clone()).await.expect("inbox");
    client
        .publish_with_reply("$SRV.PING", inbox, "".into())
        .await
        .expect("ping all");
    let mut ids = Vec::new();
    within("two pongs", async {
        while ids.len() < 2 {
            let m = replies.next().await.expect("reply");
            let v: Value = serde_json::from_slice(&m.payload).expect("JSON");
            ids.push(v["id"].as_str().unwrap_or_default().to_owned());
        }
    })
    .await;
    ids.sort();
    let mut want = vec![a.node_id().to_string(), b.node_id().to_string()];
    want.sort();
    assert_eq!(ids, want);
    a.shutdown().await;
    b.shutdown().await;
}

/// Calls answered at once are answered from the endpoint's serving task, and calls whose handler
/// waits continue in a task of their own: a waiting call must not hold up the quick calls behind
/// it on the same endpoint, and every call names its caller (the `from` entry of its payload).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_a_waiting_call_does_not_hold_up_quick_ones_and_names_its_caller() {
    let server = Server::start(Kind::Nats);
    let env = unique_env("nats-inline");
    let a = nats_mesh(&server, &env, "a").await;
    let b = nats_mesh(&server, &env, "b").await;
    let gate = std::sync::Arc::new(tokio::sync::Notify::new());
    let opened = gate.clone();
    a.respond("mixed", move |r: Request| {
        let gate = opened.clone();
        async move {
            if r.body["wait"].as_bool() == Some(true) {
                gate.notified().await;
            }
            Ok(json!({"from": r.from.to_string(), "n": r.body["n"]}))
        }
    });
    wait_mesh_provider(&b, "mixed").await;
    let slow = {
        let b = b.clone();
        tokio::spawn(async move { b.to("mixed").send(&json!({"wait": true, "n": 0})).await })
    };
    within("quick calls behind a waiting one", async {
        for n in 1..=20 {
            let v = b.to("mixed").send(&json!({"n": n})).await.expect("quick");
            assert_eq!(v, json!({"from": b.node_id().to_string(), "n": n}));
        }
    })
    .await;
    assert!(
        !slow.is_finished(),
        "the waiting call answered before its gate opened"
    );
    // `notify_one` keeps a permit when the handler has not reached its wait yet.
    gate.notify_one();
    let v = within("the waiting call", slow)
        .await
        .expect("task")
        .expect("answer");
    assert_eq!(v, json!({"from": b.node_id().to_string(), "n": 0}));
    a.shutdown().await;
    b.shutdown().await;
}
