//! What one peer can make a node hold is bounded (issue 14, item 5): a raw peer on a real
//! loopback socket speaks the link protocol by hand and goes past a limit; the node closes the
//! link.

use std::time::Duration;

use bytes::BytesMut;
use plume_transport::Mesh;
use plume_transport::discovery::{NodeId, PeerEvent};
use plume_transport::protocol::{
    Entry, Frame, Hello, Kind, PROTOCOL_VERSION, TableSnapshot, Topic,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::{Instant, timeout};

const WAIT: Duration = Duration::from_secs(10);
/// `MAX_REMOTE_TOPICS` of the link.
const MAX_TOPICS: usize = 4096;

/// A node, and a raw peer linked to it (both hellos and snapshots exchanged but ours).
async fn raw_peer(name: &str) -> (Mesh, mpsc::Sender<PeerEvent>, TcpStream) {
    let env = format!("limits-{name}-{}", std::process::id());
    let (tx, rx) = mpsc::channel(8);
    let node = Mesh::builder()
        .environment(&env)
        .key("k")
        .peers(rx)
        .start()
        .await
        .expect("node");
    let mut conn = TcpStream::connect(node.local_addr()).await.expect("dial");
    let hello = Hello {
        protocol: PROTOCOL_VERSION,
        node: NodeId::random().to_string(),
        environment: env,
        key: "raw".into(),
        auth: false,
        nonce: vec![0; 32],
    };
    conn.write_all(&Frame::with(Kind::Hello, 0, &hello).to_bytes())
        .await
        .expect("hello");
    // Their hello and their snapshot.
    let mut buf = BytesMut::new();
    let mut kinds = Vec::new();
    while kinds.len() < 2 {
        match Frame::decode(&mut buf, 1 << 24).expect("frames") {
            Some(f) => kinds.push(f.kind),
            None => {
                let n = timeout(WAIT, conn.read_buf(&mut buf))
                    .await
                    .expect("the node answers")
                    .expect("read");
                assert!(n > 0, "closed during the handshake");
            }
        }
    }
    assert_eq!(kinds, [Kind::Hello, Kind::TableSnapshot]);
    (node, tx, conn)
}

fn snapshot(topics: Vec<String>) -> Vec<u8> {
    Frame::with(
        Kind::TableSnapshot,
        0,
        &TableSnapshot {
            version: 1,
            entries: Vec::new(),
            topics,
        },
    )
    .to_bytes()
    .to_vec()
}

fn subscribe(topic: String) -> Vec<u8> {
    Frame::with(Kind::Subscribe, 0, &Topic { topic })
        .to_bytes()
        .to_vec()
}

/// Whether the node closes the link within the wait (true), or still answers a ping (false).
async fn closed_by_node(conn: &mut TcpStream) -> bool {
    conn.write_all(&Frame::empty(Kind::Ping, 77).to_bytes())
        .await
        .ok();
    let mut buf = BytesMut::new();
    loop {
        while let Ok(Some(f)) = Frame::decode(&mut buf, 1 << 24) {
            if f.kind == Kind::Pong && f.id == 77 {
                return false;
            }
        }
        match timeout(WAIT, conn.read_buf(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {}
            Err(_) => panic!("neither closed nor answered"),
        }
    }
}

#[tokio::test]
async fn topics_up_to_the_limit_keep_the_link() {
    let (_node, _peers, mut conn) = raw_peer("topics-ok").await;
    let mut bytes = snapshot((0..MAX_TOPICS - 1).map(|i| format!("t{i}")).collect());
    bytes.extend(subscribe("last".into()));
    bytes.extend(subscribe("t0".into()));
    conn.write_all(&bytes).await.expect("write");
    assert!(!closed_by_node(&mut conn).await);
}

#[tokio::test]
async fn a_snapshot_with_too_many_topics_closes_the_link() {
    let (_node, _peers, mut conn) = raw_peer("topics-snapshot").await;
    conn.write_all(&snapshot(
        (0..=MAX_TOPICS).map(|i| format!("t{i}")).collect(),
    ))
    .await
    .expect("write");
    assert!(closed_by_node(&mut conn).await);
}

#[tokio::test]
async fn subscribing_past_the_limit_closes_the_link() {
    let (_node, _peers, mut conn) = raw_peer("topics-subscribe").await;
    let mut bytes = snapshot(Vec::new());
    for i in 0..=MAX_TOPICS {
        bytes.extend(subscribe(format!("t{i}")));
    }
    conn.write_all(&bytes).await.expect("write");
    assert!(closed_by_node(&mut conn).await);
}

/// A peer that takes a call and never answers it: the call ends with the Feathers timeout at its
/// deadline (kept by the link's sweeper, no timer per call), the peer is told to cancel it, and
/// the link stays up.
#[tokio::test]
async fn a_call_the_peer_never_answers_times_out_and_is_cancelled() {
    let (node, _peers, mut conn) = raw_peer("deadline").await;
    let entry = Entry {
        name: "silent".into(),
        descriptor: serde_json::Value::Null,
    };
    let snap = Frame::with(
        Kind::TableSnapshot,
        0,
        &TableSnapshot {
            version: 1,
            entries: vec![entry],
            topics: Vec::new(),
        },
    );
    conn.write_all(&snap.to_bytes()).await.expect("write");
    let deadline = Duration::from_millis(300);
    let started = Instant::now();
    // The call waits for the route (within its deadline), then for a reply that never comes.
    let body = serde_json::json!(1);
    let call = node.to("silent").timeout(deadline).send(&body);
    let peer = async {
        let mut buf = BytesMut::new();
        let mut request = None;
        loop {
            while let Some(f) = Frame::decode(&mut buf, 1 << 24).expect("frames") {
                match f.kind {
                    Kind::Request => request = Some(f.id),
                    Kind::Cancel => return (request, f.id),
                    _ => {}
                }
            }
            let n = timeout(WAIT, conn.read_buf(&mut buf))
                .await
                .expect("the node writes")
                .expect("read");
            assert!(n > 0, "the node closed the link");
        }
    };
    let (got, (request, cancelled)) = tokio::join!(call, peer);
    let err = got.expect_err("no answer");
    assert_eq!(err.kind(), plume::ErrorKind::Timeout, "{err}");
    assert!(started.elapsed() >= deadline);
    assert_eq!(
        request,
        Some(cancelled),
        "the call that timed out is cancelled"
    );
    assert!(!closed_by_node(&mut conn).await);
}
