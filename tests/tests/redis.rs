//! Redis discovery: a real `redis-server` on a free loopback port (see
//! `plume_tests::servers`), several Apps and processes with `PLUME_DISCOVERY=redis`; the nodes
//! still talk over their peer links.

mod common;

use std::time::Duration;

use common::{Backend, NODE_TIMEOUT_MS, gateway, provider, unique_env, wait_providers};
use plume::Params;
use plume_tests::servers::{Kind, Server};

fn backend(server: &Server) -> Backend {
    Backend::new("redis", "PLUME_REDIS_URL", &server.url())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_distribution_proxies_calls_and_relays_events_once() {
    let server = Server::start(Kind::Redis);
    common::proxies_calls_and_events(&backend(&server), &unique_env("redis-dist")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_replica_loss_keeps_calls_working() {
    let server = Server::start(Kind::Redis);
    common::replica_loss(&backend(&server), &unique_env("redis-loss")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_keeps_peers_and_nodes_register_again_when_it_returns() {
    let mut server = Server::start(Kind::Redis);
    let b = backend(&server);
    let env = unique_env("redis-outage");
    let (_p, dp) = provider(&b, &env).await;
    let (g, dg) = gateway(&b, &env).await;
    wait_providers(&dg, "messages", 1).await;
    common::until_a_call_succeeds(&g).await;

    server.kill();
    // Redis stays away for several node timeouts: the key TTLs would have expired, but the
    // nodes keep their last-known peers, and calls go on over the peer links.
    let outage = tokio::time::Instant::now() + Duration::from_millis(3 * NODE_TIMEOUT_MS);
    let proxy = g.service("messages").expect("proxy");
    while tokio::time::Instant::now() < outage {
        proxy
            .find(Params::new())
            .await
            .expect("calls work while Redis is away");
        assert_eq!(dg.providers("messages").len(), 1);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    server.restart();
    // A newcomer after the restart finds the old provider: it registered again.
    let (late, dlate) = gateway(&b, &env).await;
    wait_providers(&dlate, "messages", 1).await;
    common::until_a_call_succeeds(&late).await;
    // And the old gateway still has its provider, and sees a new one join.
    let (_p2, dp2) = provider(&b, &env).await;
    wait_providers(&dg, "messages", 2).await;
    dp.shutdown().await;
    dp2.shutdown().await;
    dg.shutdown().await;
    dlate.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_unreachable_at_start_is_not_fatal() {
    // Nothing listens on this port: the node starts, logs, and keeps retrying.
    let port = plume_tests::servers::free_port();
    let b = Backend::new(
        "redis",
        "PLUME_REDIS_URL",
        &format!("redis://127.0.0.1:{port}"),
    );
    let env = unique_env("redis-absent");
    let (_g, dg) = gateway(&b, &env).await;
    assert!(dg.providers("messages").is_empty());
    dg.shutdown().await;
}
