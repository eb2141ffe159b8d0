//! The agent on an in-memory network, under paused tokio time.

use std::time::Duration;

use tokio::sync::mpsc::Receiver;
use tokio::time::Instant;

use super::net::mem::{GROUP, Hub};
use super::net::{Fanout, Transport};
use super::*;

const HB: Duration = Duration::from_secs(1);
const TIMEOUT: Duration = Duration::from_secs(3);

fn config(secret: Option<&[u8]>) -> DiscoveryConfig {
    DiscoveryConfig {
        mode: DiscoveryMode::Loopback { port: DEFAULT_PORT },
        heartbeat: HB,
        node_timeout: TIMEOUT,
        secret: secret.map(Arc::from),
    }
}

fn addr(n: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 1000 + n))
}

fn local(n: u16, env: &str) -> LocalNode {
    LocalNode {
        node: NodeId(u128::from(n)),
        environment: env.into(),
        key: format!("key{n}"),
        addr: SocketAddr::from(([127, 0, 0, 1], 2000 + n)),
    }
}

fn start(
    hub: &Hub,
    n: u16,
    env: &str,
    fanout: Fanout,
    secret: Option<&[u8]>,
) -> (Discovery, Receiver<PeerEvent>) {
    Discovery::start_with(
        config(secret),
        local(n, env),
        hub.join(addr(n)),
        fanout,
        false,
        addr(n),
    )
    .expect("start")
}

fn group(hub: &Hub, n: u16) -> (Discovery, Receiver<PeerEvent>) {
    start(hub, n, "env", Fanout::Group(GROUP), None)
}

/// The next event, failing after a (virtual) minute.
async fn next(rx: &mut Receiver<PeerEvent>) -> PeerEvent {
    tokio::time::timeout(Duration::from_secs(60), rx.recv())
        .await
        .expect("an event within a minute")
        .expect("agent running")
}

fn up_of(e: &PeerEvent) -> u128 {
    match e {
        PeerEvent::Up(p) => p.node.0,
        other => panic!("expected Up, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_new_node_is_found_without_waiting_for_a_heartbeat() {
    let hub = Hub::default();
    let (_a, mut a_rx) = group(&hub, 1);
    tokio::time::sleep(Duration::from_secs(10)).await;
    let t0 = Instant::now();
    let (_b, mut b_rx) = group(&hub, 2);
    // A hears B's first beacon; B hears A's immediate answer.
    assert_eq!(up_of(&next(&mut a_rx).await), 2);
    let e = next(&mut b_rx).await;
    assert_eq!(
        e,
        PeerEvent::Up(PeerInfo {
            node: NodeId(1),
            key: "key1".into(),
            addr: local(1, "env").addr,
            table_version: 0,
            protocol: PROTOCOL_VERSION,
        })
    );
    assert_eq!(Instant::now() - t0, Duration::ZERO, "no timer was needed");
}

#[tokio::test(start_paused = true)]
async fn heartbeats_are_jittered_within_bounds() {
    let hub = Hub::default();
    let mut sniffer = hub.join(addr(99));
    let (_a, _a_rx) = group(&hub, 1);
    let mut times = Vec::new();
    let mut buf = vec![0u8; codec::MAX_DATAGRAM];
    while times.len() < 40 {
        let (n, _) = sniffer.recv(&mut buf).await.expect("recv");
        let msg = codec::decode(&buf[..n], None).expect("a beacon");
        assert_eq!(msg.node, NodeId(1));
        times.push(Instant::now());
    }
    let gaps: Vec<Duration> = times.windows(2).map(|w| w[1] - w[0]).collect();
    for g in &gaps {
        // Drawn from [0.8, 1.2) s; tokio's timer rounds up to the millisecond.
        assert!(
            *g >= HB.mul_f64(0.8) && *g <= HB.mul_f64(1.2),
            "gap {g:?} out of [0.8, 1.2] s"
        );
    }
    let min = gaps.iter().min().expect("gaps");
    let max = gaps.iter().max().expect("gaps");
    assert!(max > min, "the intervals are jittered, not fixed");
}

#[tokio::test(start_paused = true)]
async fn a_silent_peer_is_down_after_node_timeout_and_rejoins() {
    let hub = Hub::default();
    let (a, mut a_rx) = group(&hub, 1);
    let (_b, mut b_rx) = group(&hub, 2);
    assert_eq!(up_of(&next(&mut a_rx).await), 2);
    assert_eq!(up_of(&next(&mut b_rx).await), 1);
    tokio::time::sleep(Duration::from_millis(5500)).await;
    assert_eq!(a.peers().len(), 1, "heartbeats keep B alive");

    hub.cut(addr(2), true);
    let cut = Instant::now();
    assert_eq!(next(&mut a_rx).await, PeerEvent::Down { node: NodeId(2) });
    let took = Instant::now() - cut;
    // B's last beacon came at most 1.2 heartbeats before the cut.
    assert!(
        took <= TIMEOUT && took >= TIMEOUT - HB.mul_f64(1.2),
        "down after {took:?}"
    );
    assert!(a.peers().is_empty());

    hub.cut(addr(2), false);
    let healed = Instant::now();
    assert_eq!(up_of(&next(&mut a_rx).await), 2);
    assert!(Instant::now() - healed < HB.mul_f64(1.2));
}

#[tokio::test(start_paused = true)]
async fn leave_is_down_at_once() {
    let hub = Hub::default();
    let (a, mut a_rx) = group(&hub, 1);
    let (b, mut b_rx) = group(&hub, 2);
    assert_eq!(up_of(&next(&mut a_rx).await), 2);
    assert_eq!(up_of(&next(&mut b_rx).await), 1);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let t0 = Instant::now();
    b.leave().await;
    assert_eq!(next(&mut a_rx).await, PeerEvent::Down { node: NodeId(2) });
    assert_eq!(Instant::now() - t0, Duration::ZERO);
    assert!(a.peers().is_empty());
    assert!(b.peers().is_empty());
    // B stopped: its event stream ends, and a second leave is a no-op.
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(60), b_rx.recv())
            .await
            .expect("closed"),
        None
    );
    b.leave().await;
    // And B stays gone.
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(a.peers().is_empty());
}

#[tokio::test(start_paused = true)]
async fn dropping_every_handle_leaves() {
    let hub = Hub::default();
    let (_a, mut a_rx) = group(&hub, 1);
    let (b, _b_rx) = group(&hub, 2);
    assert_eq!(up_of(&next(&mut a_rx).await), 2);
    let b2 = b.clone();
    drop(b);
    let t0 = Instant::now();
    drop(b2);
    assert_eq!(next(&mut a_rx).await, PeerEvent::Down { node: NodeId(2) });
    assert_eq!(Instant::now() - t0, Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn a_table_version_change_is_announced_at_once() {
    let hub = Hub::default();
    let (a, mut a_rx) = group(&hub, 1);
    let (b, _b_rx) = group(&hub, 2);
    assert_eq!(up_of(&next(&mut a_rx).await), 2);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t0 = Instant::now();
    b.set_table_version(7);
    match next(&mut a_rx).await {
        PeerEvent::Updated(p) => assert_eq!((p.node, p.table_version), (NodeId(2), 7)),
        other => panic!("expected Updated, got {other:?}"),
    }
    assert_eq!(Instant::now() - t0, Duration::ZERO);
    assert_eq!(a.peers()[0].table_version, 7);
    // Unchanged beacons produce no event.
    assert!(
        tokio::time::timeout(Duration::from_secs(10), a_rx.recv())
            .await
            .is_err()
    );
}

#[tokio::test(start_paused = true)]
async fn environments_and_secrets_partition_the_network() {
    let hub = Hub::default();
    let (a, mut a_rx) = start(&hub, 1, "env", Fanout::Group(GROUP), Some(b"s1"));
    let (_b, _) = start(&hub, 2, "other", Fanout::Group(GROUP), Some(b"s1"));
    let (_c, _) = start(&hub, 3, "env", Fanout::Group(GROUP), Some(b"s2"));
    let (_d, _) = start(&hub, 4, "env", Fanout::Group(GROUP), None);
    let (_e, _) = start(&hub, 5, "env", Fanout::Group(GROUP), Some(b"s1"));
    assert_eq!(up_of(&next(&mut a_rx).await), 5);
    // Many heartbeats later, still only E.
    assert!(
        tokio::time::timeout(Duration::from_secs(30), a_rx.recv())
            .await
            .is_err()
    );
    let peers: Vec<NodeId> = a.peers().into_iter().map(|p| p.node).collect();
    assert_eq!(peers, vec![NodeId(5)]);
}

#[tokio::test(start_paused = true)]
async fn seeds_gossip_introduces_nodes_that_only_know_a_seed() {
    let hub = Hub::default();
    let seeds = Fanout::Gossip {
        seeds: vec![addr(1)],
    };
    let (_s, mut s_rx) = start(&hub, 1, "env", Fanout::Gossip { seeds: vec![] }, None);
    let (a, mut a_rx) = start(&hub, 2, "env", seeds.clone(), None);
    assert_eq!(up_of(&next(&mut s_rx).await), 2);
    assert_eq!(up_of(&next(&mut a_rx).await), 1);
    let t0 = Instant::now();
    let (b, mut b_rx) = start(&hub, 3, "env", seeds, None);
    let mut a_saw: Vec<u128> = Vec::new();
    while !a_saw.contains(&3) {
        a_saw.push(up_of(&next(&mut a_rx).await));
    }
    let mut b_saw = vec![up_of(&next(&mut b_rx).await), up_of(&next(&mut b_rx).await)];
    b_saw.sort();
    assert_eq!(b_saw, vec![1, 2]);
    assert_eq!(
        Instant::now() - t0,
        Duration::ZERO,
        "introduced by the seed's answer, not a timer"
    );

    // Without the seed, A and B keep each other alive by direct beacons.
    hub.cut(addr(1), true);
    assert_eq!(next(&mut a_rx).await, PeerEvent::Down { node: NodeId(1) });
    tokio::time::sleep(Duration::from_secs(20)).await;
    assert_eq!(a.peers().len(), 1);
    assert_eq!(b.peers().len(), 1);

    // A partition between A and B heals without any seed.
    hub.cut(addr(3), true);
    assert_eq!(next(&mut a_rx).await, PeerEvent::Down { node: NodeId(3) });
    hub.cut(addr(3), false);
    assert_eq!(up_of(&next(&mut a_rx).await), 3);
}

#[test]
fn node_id_text_form() {
    let id = NodeId(0xabc);
    assert_eq!(id.to_string(), "00000000000000000000000000000abc");
    assert_eq!("00000000000000000000000000000ABC".parse::<NodeId>(), Ok(id));
    assert!("abc".parse::<NodeId>().is_err());
    assert!(
        "+0000000000000000000000000000abc"
            .parse::<NodeId>()
            .is_err()
    );
    assert!(
        "0000000000000000000000000000000g"
            .parse::<NodeId>()
            .is_err()
    );
    let r = NodeId::random();
    assert_eq!(r.to_string().parse::<NodeId>(), Ok(r));
    assert_ne!(NodeId::random(), NodeId::random());
}

#[tokio::test]
async fn overlong_strings_are_refused_at_start() {
    let hub = Hub::default();
    let mut l = local(1, "env");
    l.key = "k".repeat(256);
    let e = Discovery::start_with(
        config(None),
        l,
        hub.join(addr(1)),
        Fanout::Group(GROUP),
        false,
        addr(1),
    )
    .expect_err("refused");
    assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
}
