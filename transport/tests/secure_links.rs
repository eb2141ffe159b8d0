//! Links with a mesh secret are encrypted and authenticated end to end (issue 14, item 1): two
//! real nodes on loopback whose dial is redirected to a relay that forwards, records, tampers
//! with and replays the bytes.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use plume_transport::discovery::PeerEvent;
use plume_transport::protocol::{Frame, Kind, RequestMsg};
use plume_transport::{CallOptions, Mesh, MeshBuilder, Request};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(10);
const MARKER: &str = "known-plaintext-payload-7f3a9c";

/// A relay between a dialer and the node it meant to reach: it records everything, and can
/// flip a bit or inject bytes.
struct Relay {
    addr: std::net::SocketAddr,
    /// Dialer to acceptor, and back.
    up: Arc<Mutex<Vec<u8>>>,
    down: Arc<Mutex<Vec<u8>>>,
    /// Flip one bit of the next chunk, whichever way it goes.
    flip: Arc<AtomicBool>,
    /// Bytes to send to the accepting node as if the dialer sent them.
    inject: watch::Sender<Vec<u8>>,
    /// Connections relayed so far.
    conns: watch::Receiver<usize>,
}

impl Relay {
    async fn start(target: std::net::SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind relay");
        let addr = listener.local_addr().expect("addr");
        let up = Arc::new(Mutex::new(Vec::new()));
        let down = Arc::new(Mutex::new(Vec::new()));
        let flip = Arc::new(AtomicBool::new(false));
        let (inject, rx) = watch::channel(Vec::new());
        let (count, conns) = watch::channel(0);
        let (u, d, f) = (up.clone(), down.clone(), flip.clone());
        tokio::spawn(async move {
            // One relayed connection at a time, for as long as the test runs.
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(target).await else {
                    return;
                };
                count.send_modify(|n| *n += 1);
                let mut rx = rx.clone();
                rx.mark_unchanged();
                pipe(client, server, (u.clone(), d.clone()), f.clone(), rx).await;
            }
        });
        Relay {
            addr,
            up,
            down,
            flip,
            inject,
            conns,
        }
    }

    fn seen(&self) -> Vec<u8> {
        let mut all = self.up.lock().expect("lock").clone();
        all.extend_from_slice(&self.down.lock().expect("lock"));
        all
    }

    /// Wait until the relay carries its `n`th connection (the dialer redialled).
    async fn wait_conns(&mut self, n: usize) {
        timeout(WAIT, self.conns.wait_for(|c| *c >= n))
            .await
            .expect("the dialer redials in time")
            .expect("relay runs");
    }
}

type Log = Arc<Mutex<Vec<u8>>>;

async fn pipe(
    client: TcpStream,
    server: TcpStream,
    (up, down): (Log, Log),
    flip: Arc<AtomicBool>,
    mut inject: watch::Receiver<Vec<u8>>,
) {
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let (mut a, mut b) = (vec![0u8; 65536], vec![0u8; 65536]);
    loop {
        tokio::select! {
            r = cr.read(&mut a) => {
                let Ok(n @ 1..) = r else { return };
                up.lock().expect("lock").extend_from_slice(&a[..n]);
                if flip.swap(false, Ordering::SeqCst) {
                    a[n / 2] ^= 0x10;
                }
                if sw.write_all(&a[..n]).await.is_err() { return; }
            }
            r = sr.read(&mut b) => {
                let Ok(n @ 1..) = r else { return };
                down.lock().expect("lock").extend_from_slice(&b[..n]);
                if flip.swap(false, Ordering::SeqCst) {
                    b[n / 2] ^= 0x10;
                }
                if cw.write_all(&b[..n]).await.is_err() { return; }
            }
            changed = inject.changed() => {
                if changed.is_err() { return; }
                let bytes = inject.borrow_and_update().clone();
                if sw.write_all(&bytes).await.is_err() { return; }
            }
        }
    }
}

struct Pair {
    a: Mesh,
    b: Mesh,
    relay: Relay,
    /// Calls of `count` served, on either node.
    served: Arc<AtomicUsize>,
}

fn builder(name: &str, secret: Option<&str>) -> MeshBuilder {
    Mesh::builder()
        .environment(format!("secure-{name}-{}", std::process::id()))
        .key("test")
        .secret(secret)
        .ping_interval(Duration::from_secs(30))
}

/// Two nodes linked through a relay: the dialer (lower node id) is told the relay's address.
async fn pair(name: &str, secret: Option<&str>) -> Pair {
    let (ta, ra) = mpsc::channel(8);
    let (tb, rb) = mpsc::channel(8);
    let a = builder(name, secret).peers(ra).start().await.expect("a");
    let b = builder(name, secret).peers(rb).start().await.expect("b");
    let (dialer, acceptor, to_dialer, to_acceptor) = if a.node_id() < b.node_id() {
        (&a, &b, &ta, &tb)
    } else {
        (&b, &a, &tb, &ta)
    };
    let relay = Relay::start(acceptor.local_addr()).await;
    let mut redirected = acceptor.peer_info();
    redirected.addr = relay.addr;
    to_dialer
        .send(PeerEvent::Up(redirected))
        .await
        .expect("announce");
    to_acceptor
        .send(PeerEvent::Up(dialer.peer_info()))
        .await
        .expect("announce");
    let served = Arc::new(AtomicUsize::new(0));
    for m in [&a, &b] {
        let served = served.clone();
        m.respond("count", move |req: Request| {
            served.fetch_add(1, Ordering::SeqCst);
            futures::future::ready(Ok::<Value, plume::Error>(req.body))
        });
    }
    for m in [&a, &b] {
        wait_providers(m, 2).await;
    }
    Pair {
        a,
        b,
        relay,
        served,
    }
}

/// Wait (bounded) until `mesh` sees `n` providers of `count`, on its table events.
async fn wait_providers(mesh: &Mesh, n: usize) {
    let mut events = mesh.watch();
    let seen = async {
        while mesh.providers("count").len() != n {
            events.recv().await.expect("table events");
        }
    };
    timeout(WAIT, seen).await.expect("providers in time");
}

/// Call `count` on the other node of the pair.
async fn call_other(from: &Mesh, other: &Mesh, body: Value) -> Result<Value, plume::Error> {
    from.to("count")
        .on(other.node_id())
        .options(CallOptions {
            timeout: Some(Duration::from_secs(2)),
            idempotent: false,
        })
        .send(&body)
        .await
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn a_relay_sees_no_plaintext_of_a_known_payload() {
    let p = pair("plain-text", Some("relay-secret")).await;
    let body = json!({ "text": MARKER, "more": [MARKER, MARKER] });
    for _ in 0..20 {
        assert_eq!(
            call_other(&p.a, &p.b, body.clone()).await.expect("a to b"),
            body
        );
        assert_eq!(
            call_other(&p.b, &p.a, body.clone()).await.expect("b to a"),
            body
        );
    }
    let seen = p.relay.seen();
    assert!(
        seen.len() > 40 * MARKER.len(),
        "the relay carried the calls"
    );
    assert!(!contains(&seen, MARKER.as_bytes()), "plaintext on the wire");
    assert!(!contains(&seen, b"count"), "an endpoint name on the wire");
    assert!(
        !contains(&seen, p.a.environment().as_bytes()),
        "the hello on the wire"
    );
}

#[tokio::test]
async fn without_a_secret_the_wire_format_is_unchanged_and_readable() {
    // The control for the test above: the same run without a secret shows the marker, in
    // ordinary frames.
    let p = pair("clear", None).await;
    let body = json!({ "text": MARKER });
    assert_eq!(
        call_other(&p.a, &p.b, body.clone()).await.expect("call"),
        body
    );
    let up = p.relay.up.lock().expect("lock").clone();
    assert!(contains(&p.relay.seen(), MARKER.as_bytes()));
    let mut buf = bytes::BytesMut::from(&up[..]);
    let hello = Frame::decode(&mut buf, 1 << 20)
        .expect("a frame")
        .expect("whole");
    assert_eq!(
        hello.kind,
        Kind::Hello,
        "a link without a secret starts with a hello frame"
    );
}

#[tokio::test]
async fn a_flipped_byte_closes_the_link() {
    let mut p = pair("flip", Some("flip-secret")).await;
    assert!(call_other(&p.a, &p.b, json!(1)).await.is_ok());
    let before = p.served.load(Ordering::SeqCst);
    p.relay.flip.store(true, Ordering::SeqCst);
    let err = call_other(&p.a, &p.b, json!(2))
        .await
        .expect_err("the tampered call fails");
    assert_eq!(err.kind(), plume::ErrorKind::Unavailable, "{err}");
    // The link closed: the dialer dials again, through the relay.
    p.relay.wait_conns(2).await;
    assert_eq!(
        p.served.load(Ordering::SeqCst),
        before,
        "the tampered call was not served"
    );
}

#[tokio::test]
async fn frames_injected_by_a_relay_get_no_call_through() {
    let mut p = pair("inject", Some("inject-secret")).await;
    assert!(call_other(&p.a, &p.b, json!(1)).await.is_ok());
    let before = p.served.load(Ordering::SeqCst);
    // The attack of a relay without the secret: a well-formed request frame, in the clear.
    let frame = Frame::with(
        Kind::Request,
        4242,
        &RequestMsg {
            name: "count".into(),
            method: None,
            body: json!("injected"),
            timeout_ms: 1000,
            traceparent: None,
        },
    );
    p.relay.inject.send_replace(frame.to_bytes().to_vec());
    // The accepting node closes the link: the dialer dials again, through the relay.
    p.relay.wait_conns(2).await;
    assert_eq!(
        p.served.load(Ordering::SeqCst),
        before,
        "the injected call was not served"
    );
}

#[tokio::test]
async fn a_replayed_handshake_and_call_get_nothing_served() {
    let p = pair("replay", Some("replay-secret")).await;
    assert!(call_other(&p.a, &p.b, json!("once")).await.is_ok());
    assert!(call_other(&p.b, &p.a, json!("once")).await.is_ok());
    let served = p.served.load(Ordering::SeqCst);
    assert_eq!(served, 2);
    // Replay everything the dialer sent (handshake and calls) to the accepting node directly.
    let recorded = p.relay.up.lock().expect("lock").clone();
    let acceptor = if p.a.node_id() < p.b.node_id() {
        &p.b
    } else {
        &p.a
    };
    let mut conn = TcpStream::connect(acceptor.local_addr())
        .await
        .expect("dial");
    conn.write_all(&recorded).await.expect("replay");
    // The node answers the (replayed) first handshake message with one message, then closes on
    // the first record, which does not open under the new keys.
    let mut back = Vec::new();
    timeout(WAIT, conn.read_to_end(&mut back))
        .await
        .expect("the node closes the replayed connection")
        .ok();
    assert!(back.len() > 2, "the handshake answer");
    let len = usize::from(u16::from_be_bytes([back[0], back[1]]));
    assert_eq!(
        back.len(),
        2 + len,
        "nothing but the handshake answer came back"
    );
    // The real link was not replaced by the replayed one: calls go on, nothing more was served.
    assert!(call_other(&p.a, &p.b, json!("again")).await.is_ok());
    assert_eq!(p.served.load(Ordering::SeqCst), served + 1);
    assert_eq!(*p.relay.conns.borrow(), 1, "the real link never dropped");
}

/// A node with a secret and no peers.
async fn lone(name: &str) -> (Mesh, mpsc::Sender<PeerEvent>) {
    let (tx, rx) = mpsc::channel(8);
    let mesh = builder(name, Some("lone-secret"))
        .peers(rx)
        .start()
        .await
        .expect("starts");
    (mesh, tx)
}

#[tokio::test]
async fn a_secured_node_says_nothing_to_a_stranger() {
    let (node, _peers) = lone("stranger").await;
    let mut conn = TcpStream::connect(node.local_addr()).await.expect("dial");
    // A record of the size of a first handshake message, not made with the secret.
    let mut junk = vec![0u8, 200];
    junk.extend([7u8; 200]);
    conn.write_all(&junk).await.expect("write");
    let mut back = Vec::new();
    // Closed (a reset counts too), and not one byte came back.
    let _closed = timeout(WAIT, conn.read_to_end(&mut back))
        .await
        .expect("the node closes the connection");
    assert!(back.is_empty(), "the node answered a stranger: {back:?}");
}

#[tokio::test]
async fn handshakes_at_once_are_capped() {
    let (node, _peers) = lone("cap").await;
    let addr = node.local_addr();
    // 64 connections that never say anything hold every handshake slot.
    let mut idle = Vec::new();
    for _ in 0..64 {
        idle.push(TcpStream::connect(addr).await.expect("dial"));
    }
    let mut extra = TcpStream::connect(addr).await.expect("dial");
    let mut b = [0u8; 1];
    let n = timeout(WAIT, extra.read(&mut b))
        .await
        .expect("the connection beyond the cap is closed at once")
        .unwrap_or(0);
    assert_eq!(n, 0);
    // The others are still waiting for their handshake (their timeout has not passed).
    for c in &idle {
        let r = c.try_read(&mut b);
        assert!(
            matches!(&r, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
            "{r:?}"
        );
    }
}
