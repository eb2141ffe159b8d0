//! Discovery on real sockets, on this host only (loopback multicast with
//! TTL 0, and `seeds` on 127.0.0.1). Every test uses its own environment so
//! parallel tests (and other processes on the shared port) stay invisible.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use plume_transport::discovery::{
    DEFAULT_PORT, Discovery, DiscoveryConfig, DiscoveryMode, LocalNode, NodeId, PeerEvent,
};
use tokio::sync::mpsc::Receiver;
use tokio::time::timeout;

const DEADLINE: Duration = Duration::from_secs(10);

fn unique_env(name: &str) -> String {
    format!("{name}-{}-{}", std::process::id(), NodeId::random())
}

fn config(secret: Option<&str>, node_timeout: Duration) -> DiscoveryConfig {
    DiscoveryConfig {
        mode: DiscoveryMode::Loopback { port: DEFAULT_PORT },
        heartbeat: Duration::from_millis(100),
        node_timeout,
        secret: secret.map(|s| Arc::from(s.as_bytes())),
    }
}

fn local(env: &str, key: &str, port: u16) -> LocalNode {
    LocalNode {
        node: NodeId::random(),
        environment: env.into(),
        key: key.into(),
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
    }
}

async fn start(config: DiscoveryConfig, local: LocalNode) -> (Discovery, Receiver<PeerEvent>) {
    Discovery::start(config, local)
        .await
        .expect("discovery starts")
}

/// Waits for `Up` events until every node of `want` has appeared.
async fn wait_up(rx: &mut Receiver<PeerEvent>, want: &[NodeId]) {
    let mut seen = BTreeSet::new();
    let want: BTreeSet<NodeId> = want.iter().copied().collect();
    timeout(DEADLINE, async {
        while !want.is_subset(&seen) {
            match rx.recv().await.expect("agent running") {
                PeerEvent::Up(p) => {
                    assert!(want.contains(&p.node), "unexpected peer {p:?}");
                    seen.insert(p.node);
                }
                other => panic!("unexpected event {other:?}"),
            }
        }
    })
    .await
    .expect("peers discovered in time");
}

/// Asserts that nothing arrives for `window`.
async fn assert_quiet(rx: &mut Receiver<PeerEvent>, window: Duration) {
    if let Ok(e) = timeout(window, rx.recv()).await {
        panic!("unexpected event {e:?}");
    }
}

#[tokio::test]
async fn three_agents_in_one_process_discover_each_other() {
    let env = unique_env("three");
    let cfg = config(None, Duration::from_secs(3));
    let (a, mut a_rx) = start(cfg.clone(), local(&env, "a", 4001)).await;
    let (b, mut b_rx) = start(cfg.clone(), local(&env, "b", 4002)).await;
    let (c, mut c_rx) = start(cfg, local(&env, "c", 4003)).await;
    wait_up(&mut a_rx, &[b.node(), c.node()]).await;
    wait_up(&mut b_rx, &[a.node(), c.node()]).await;
    wait_up(&mut c_rx, &[a.node(), b.node()]).await;

    let mut peers = a.peers();
    peers.sort_by(|x, y| x.key.cmp(&y.key));
    assert_eq!(peers.len(), 2);
    assert_eq!(
        (peers[0].key.as_str(), peers[0].addr),
        ("b", "127.0.0.1:4002".parse().expect("addr"))
    );
    assert_eq!(
        (peers[1].key.as_str(), peers[1].addr),
        ("c", "127.0.0.1:4003".parse().expect("addr"))
    );

    b.set_table_version(3);
    let e = timeout(DEADLINE, a_rx.recv())
        .await
        .expect("in time")
        .expect("running");
    match e {
        PeerEvent::Updated(p) => assert_eq!((p.node, p.table_version), (b.node(), 3)),
        other => panic!("expected Updated, got {other:?}"),
    }
    for d in [a, b, c] {
        d.leave().await;
    }
}

#[tokio::test]
async fn different_environments_are_invisible() {
    let env = unique_env("env-a");
    let other = unique_env("env-b");
    let cfg = config(None, Duration::from_secs(3));
    let (x, mut x_rx) = start(cfg.clone(), local(&other, "x", 4011)).await;
    let (a, mut a_rx) = start(cfg.clone(), local(&env, "a", 4012)).await;
    let (b, mut b_rx) = start(cfg, local(&env, "b", 4013)).await;
    wait_up(&mut a_rx, &[b.node()]).await;
    wait_up(&mut b_rx, &[a.node()]).await;
    // Several heartbeats of everyone: X never shows up, and X sees nobody.
    assert_quiet(&mut a_rx, Duration::from_millis(600)).await;
    assert_quiet(&mut x_rx, Duration::ZERO).await;
    assert!(x.peers().is_empty());
    assert_eq!(a.peers().len(), 1);
}

#[tokio::test]
async fn a_wrong_or_missing_secret_is_ignored() {
    let env = unique_env("secret");
    let t = Duration::from_secs(3);
    let (wrong, mut wrong_rx) =
        start(config(Some("other-secret"), t), local(&env, "w", 4021)).await;
    let (none, mut none_rx) = start(config(None, t), local(&env, "n", 4022)).await;
    let (a, mut a_rx) = start(config(Some("mesh-secret"), t), local(&env, "a", 4023)).await;
    let (b, mut b_rx) = start(config(Some("mesh-secret"), t), local(&env, "b", 4024)).await;
    wait_up(&mut a_rx, &[b.node()]).await;
    wait_up(&mut b_rx, &[a.node()]).await;
    // Over several heartbeats, nobody hears across: the unsigned node and
    // the wrongly signed one see neither A nor B nor each other.
    assert_quiet(&mut a_rx, Duration::from_millis(600)).await;
    assert_quiet(&mut wrong_rx, Duration::ZERO).await;
    assert_quiet(&mut none_rx, Duration::ZERO).await;
    assert!(wrong.peers().is_empty());
    assert!(none.peers().is_empty());
    assert_eq!(a.peers().len(), 1);
}

#[tokio::test]
async fn leaving_drops_the_peer_at_once() {
    let env = unique_env("leave");
    // A long node timeout: only the leaving beacon can cause the Down in time.
    let cfg = config(None, Duration::from_secs(60));
    let (a, mut a_rx) = start(cfg.clone(), local(&env, "a", 4031)).await;
    let (b, mut b_rx) = start(cfg, local(&env, "b", 4032)).await;
    wait_up(&mut a_rx, &[b.node()]).await;
    wait_up(&mut b_rx, &[a.node()]).await;
    b.leave().await;
    let e = timeout(DEADLINE, a_rx.recv())
        .await
        .expect("in time")
        .expect("running");
    assert_eq!(e, PeerEvent::Down { node: b.node() });
    assert!(a.peers().is_empty());
    assert_eq!(
        timeout(DEADLINE, b_rx.recv())
            .await
            .expect("closed in time"),
        None
    );
}

#[test]
fn a_silent_peer_expires_after_node_timeout() {
    let env = unique_env("expire");
    let cfg = DiscoveryConfig {
        heartbeat: Duration::from_millis(50),
        ..config(None, Duration::from_millis(400))
    };
    let runtime = || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime")
    };
    let (rt_a, rt_b) = (runtime(), runtime());
    let (a, mut a_rx) = rt_a.block_on(start(cfg.clone(), local(&env, "a", 4041)));
    let (b, _b_rx) = rt_b.block_on(start(cfg, local(&env, "b", 4042)));
    rt_a.block_on(wait_up(&mut a_rx, &[b.node()]));
    // B keeps beaconing: A keeps it over many node timeouts.
    rt_a.block_on(assert_quiet(&mut a_rx, Duration::from_millis(1200)));
    // B "crashes": its runtime goes away with no leaving beacon.
    rt_b.shutdown_background();
    let crashed = std::time::Instant::now();
    let e = rt_a
        .block_on(async { timeout(DEADLINE, a_rx.recv()).await })
        .expect("in time")
        .expect("running");
    assert_eq!(e, PeerEvent::Down { node: b.node() });
    // Not before the timeout (B's last beacon was at most 1.2 heartbeats earlier).
    assert!(crashed.elapsed() >= Duration::from_millis(400 - 60));
    assert!(a.peers().is_empty());
}

#[tokio::test]
async fn seeds_mode_on_loopback_introduces_nodes_through_a_seed() {
    let env = unique_env("seeds");
    let base = config(None, Duration::from_secs(3));
    let seeds_cfg = |seeds: Vec<SocketAddr>| DiscoveryConfig {
        mode: DiscoveryMode::Seeds {
            listen: "127.0.0.1:0".parse().expect("addr"),
            seeds,
        },
        ..base.clone()
    };
    let (s, mut s_rx) = start(seeds_cfg(vec![]), local(&env, "s", 4051)).await;
    let seed = s.local_addr();
    assert!(seed.ip().is_loopback() && seed.port() != 0);
    let (a, mut a_rx) = start(seeds_cfg(vec![seed]), local(&env, "a", 4052)).await;
    let (b, mut b_rx) = start(seeds_cfg(vec![seed]), local(&env, "b", 4053)).await;
    wait_up(&mut s_rx, &[a.node(), b.node()]).await;
    wait_up(&mut a_rx, &[s.node(), b.node()]).await;
    wait_up(&mut b_rx, &[s.node(), a.node()]).await;
    // The seed goes; A and B keep each other.
    s.leave().await;
    let e = timeout(DEADLINE, a_rx.recv())
        .await
        .expect("in time")
        .expect("running");
    assert_eq!(e, PeerEvent::Down { node: s.node() });
    assert_quiet(&mut a_rx, Duration::from_millis(500)).await;
    assert_eq!(
        a.peers().iter().map(|p| p.node).collect::<Vec<_>>(),
        vec![b.node()]
    );
}
