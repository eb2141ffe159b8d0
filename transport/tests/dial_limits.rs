//! Announcements of peers cost bounded dials (issue 14, item 5): a flood of node ids that
//! nothing verified, sent through a static peers channel as a forged beacon or Redis record
//! would arrive, and real listeners on loopback that count the node's dials.
//!
//! The listeners never complete a handshake: a dial holds its connection until the node's
//! handshake timeout (5 s), so each accepted connection is one dial. Each test waits for the
//! first dial, then counts what else comes in a window of a few hundred milliseconds to a
//! second and a half: without the bounds, hundreds come at once.

use std::net::SocketAddr;
use std::time::Duration;

use plume_transport::Mesh;
use plume_transport::discovery::{NodeId, PeerEvent, PeerInfo};
use plume_transport::protocol::PROTOCOL_VERSION;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::{Instant, timeout, timeout_at};

const WAIT: Duration = Duration::from_secs(10);
/// `dial::MAX_DIALS`.
const MAX_DIALS: usize = 32;
/// `dial::UNVERIFIED_TRIES`.
const UNVERIFIED_TRIES: usize = 3;
/// `dial::MAX_ADVERTS`.
const MAX_ADVERTS: u128 = 10_000;

/// A node fed by a static peers channel.
async fn node(name: &str) -> (Mesh, mpsc::Sender<PeerEvent>) {
    let (tx, rx) = mpsc::channel(4096);
    let mesh = Mesh::builder()
        .environment(format!("dials-{name}-{}", std::process::id()))
        .key("k")
        .peers(rx)
        .start()
        .await
        .expect("node");
    (mesh, tx)
}

/// Announce node id `id` (above any random id: the node dials it) at `addr`.
async fn announce(tx: &mpsc::Sender<PeerEvent>, id: u128, addr: SocketAddr) {
    tx.send(PeerEvent::Up(PeerInfo {
        node: NodeId(u128::MAX - id),
        key: "forged".into(),
        addr,
        table_version: 1,
        protocol: PROTOCOL_VERSION,
    }))
    .await
    .expect("announce");
}

/// Accept on `listener` until `until`; the connections, kept open.
async fn accept_until(listener: &TcpListener, until: Instant, held: &mut Vec<TcpStream>) {
    while let Ok(accepted) = timeout_at(until, listener.accept()).await {
        held.push(accepted.expect("accept").0);
    }
}

#[tokio::test]
async fn fresh_ids_at_one_address_are_dialled_one_at_a_time() {
    let (_node, tx) = node("one-address").await;
    let silent = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = silent.local_addr().expect("addr");
    for id in 0..500 {
        announce(&tx, id, addr).await;
    }
    let first = timeout(WAIT, silent.accept())
        .await
        .expect("the node dials")
        .expect("accept");
    let mut held = vec![first.0];
    // Unbounded, every id would have its own dial in flight by now.
    accept_until(&silent, Instant::now() + Duration::from_secs(1), &mut held).await;
    assert_eq!(held.len(), 1, "dials in flight to one address");
}

#[tokio::test]
async fn dials_in_flight_over_all_addresses_are_capped() {
    let (_node, tx) = node("all-addresses").await;
    let mut listeners = Vec::new();
    for id in 0..100 {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        announce(&tx, id, l.local_addr().expect("addr")).await;
        listeners.push(l);
    }
    let (count_tx, mut count_rx) = mpsc::channel(256);
    let until = Instant::now() + Duration::from_secs(2);
    for l in listeners {
        let count_tx = count_tx.clone();
        tokio::spawn(async move {
            let mut held = Vec::new();
            accept_until(&l, until, &mut held).await;
            let _ = count_tx.send(held.len()).await;
            // Hold the connections until every listener has counted.
            tokio::time::sleep_until(until + Duration::from_secs(1)).await;
        });
    }
    drop(count_tx);
    let mut total = 0;
    while let Some(n) = count_rx.recv().await {
        assert!(n <= 1, "one dial at a time per address");
        total += n;
    }
    assert!(total >= 1, "the node dials");
    assert!(
        total <= MAX_DIALS,
        "{total} dials in flight at once, more than {MAX_DIALS}"
    );
}

#[tokio::test]
async fn an_id_never_reached_is_forgotten_after_a_few_dials() {
    let (_node, tx) = node("forget").await;
    let closing = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    announce(&tx, 0, closing.local_addr().expect("addr")).await;
    // Each connection is closed at once: the dial fails, the address backs off (40 ms, 80 ms,
    // 160 ms, each plus up to as much jitter), and the id is forgotten after the last try.
    for _ in 0..UNVERIFIED_TRIES {
        let (conn, _) = timeout(WAIT, closing.accept())
            .await
            .expect("the node dials")
            .expect("accept");
        drop(conn);
    }
    // Not forgotten, it would dial again within 640 ms (the next delay is 320–640 ms).
    let mut more = Vec::new();
    accept_until(
        &closing,
        Instant::now() + Duration::from_millis(1500),
        &mut more,
    )
    .await;
    assert!(
        more.is_empty(),
        "{} more dials of a forgotten id",
        more.len()
    );
}

#[tokio::test]
async fn announced_ids_beyond_the_cap_are_ignored() {
    let (_node, tx) = node("cap").await;
    let silent = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    for id in 0..MAX_ADVERTS {
        announce(&tx, id, silent.local_addr().expect("addr")).await;
    }
    let first = timeout(WAIT, silent.accept())
        .await
        .expect("the node dials")
        .expect("accept");
    // One more id, alone at its address: tracked, it would be dialled at once (its address is
    // free and dials in flight are far from their cap).
    let other = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    announce(&tx, MAX_ADVERTS, other.local_addr().expect("addr")).await;
    // Then one id leaves and another comes, alone at a third address: the node handles its
    // announcements in order, so once it dials this one it has handled the one before.
    tx.send(PeerEvent::Down {
        node: NodeId(u128::MAX),
    })
    .await
    .expect("down");
    let sentinel = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    announce(&tx, MAX_ADVERTS + 1, sentinel.local_addr().expect("addr")).await;
    let _dialled = timeout(WAIT, sentinel.accept())
        .await
        .expect("an id within the cap is dialled")
        .expect("accept");
    let mut held = Vec::new();
    accept_until(
        &other,
        Instant::now() + Duration::from_millis(300),
        &mut held,
    )
    .await;
    assert!(held.is_empty(), "an id past the cap was dialled");
    drop(first);
}
