//! The instance set on the NATS JetStream key-value backend, multi-process: a real
//! `nats-server -js` on a free loopback port and three `gateway-example workers --nats URL`
//! nodes (the harness: `common/workers.rs`). SIGKILL of the node running the most: its
//! configurations run elsewhere within the target, and no configuration ever ticks on two
//! nodes at once (from the printed timestamps).
//!
//! A missing nats-server FAILS the test.

use plume_tests::servers::Server;

#[path = "common/workers.rs"]
mod workers;

use workers::{Cluster, FAILOVER, SETTLE};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_backend_sigkill_of_the_busiest_node_moves_its_configs_within_the_target() {
    let server = Server::start_jetstream();
    let mut c = Cluster::new();
    c.args = vec!["--nats".to_owned(), server.url()];
    for name in ["a", "b", "c"] {
        c.start(name).await;
    }
    c.wait("3/2/2 on the KV backend", SETTLE, |c| {
        c.counts() == Some(vec![3, 2, 2])
    })
    .await;

    // The node running the most (three).
    let running = c.running();
    let busiest = (0..c.nodes.len())
        .max_by_key(|p| running.values().filter(|on| on == &&vec![*p]).count())
        .expect("three nodes");
    let mut theirs: Vec<String> = running
        .iter()
        .filter(|(_, on)| on == &&vec![busiest])
        .map(|(cfg, _)| cfg.clone())
        .collect();
    assert_eq!(theirs.len(), 3, "{running:?}");
    let mark = c.log.lines().len();
    c.kill(busiest).await;
    let took = c
        .wait("4/3 after SIGKILL of the busiest node", FAILOVER, |c| {
            c.counts() == Some(vec![4, 3])
        })
        .await;
    eprintln!("KV backend: failover after SIGKILL of the busiest node: {took:?}");
    // Only its configurations started again.
    let mut started: Vec<String> = c.starts_after(mark).into_iter().map(|l| l.config).collect();
    started.sort();
    theirs.sort();
    assert_eq!(started, theirs);

    c.stop_all().await;
    let ticks = c.assert_no_overlap();
    assert!(ticks > 50, "only {ticks} ticks");
    drop(server);
}
