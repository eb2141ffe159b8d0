//! The sockets on loopback: hello discovery (two instances hear each other; malformed hellos
//! and a flood are dropped, the table stays bounded; silent components time out) and axon
//! req/rep (replies, errors, bad frames).

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use plume::{Error, ErrorKind};
use plume_cote::amp::{self, Arg};
use plume_cote::axon::{self, RepHandler, Requester};
use plume_cote::discovery::{Discovery, PeerEvent};
use plume_cote::hello::{Advertisement, AxonType, Hello};
use plume_cote::{ConfigError, CoteConfig};
use serde_json::{Map, Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(10);

/// A discovery port no other test (or cote on this host) uses: a free UDP port.
fn free_udp_port() -> u16 {
    let s = std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    s.local_addr().expect("addr").port()
}

fn config(port: u16) -> CoteConfig {
    CoteConfig {
        port,
        hello_interval: Duration::from_millis(100),
        check_interval: Duration::from_millis(100),
        node_timeout: Duration::from_millis(300),
        max_peers: 8,
        ..CoteConfig::default()
    }
}

fn ad(name: &str) -> Advertisement {
    Advertisement {
        kind: "service".into(),
        name: name.into(),
        key: "$$k".into(),
        axon_type: Some(AxonType::Rep),
        port: Some(1),
        namespace: Some("k".into()),
        extra: Map::new(),
    }
}

async fn next_added(rx: &mut tokio::sync::broadcast::Receiver<PeerEvent>) -> String {
    loop {
        match timeout(WAIT, rx.recv()).await.expect("an event in time") {
            Ok(PeerEvent::Added(p)) => return p.advertisement.name,
            Ok(PeerEvent::Removed(_)) => {}
            Err(e) => panic!("{e}"),
        }
    }
}

#[tokio::test]
async fn two_nodes_hear_each_other_on_the_loopback_broadcast_address() {
    let port = free_udp_port();
    let a = Discovery::start(&config(port)).await.expect("a starts");
    let b = Discovery::start(&config(port)).await.expect("b starts");
    let mut events = b.subscribe();
    a.advertise(ad("from-a")).await;
    assert_eq!(next_added(&mut events).await, "from-a");
    // a stops advertising: b drops it after its node timeout.
    drop(a);
    loop {
        match timeout(WAIT, events.recv()).await.expect("removal in time") {
            Ok(PeerEvent::Removed(p)) => {
                assert_eq!(p.advertisement.name, "from-a");
                break;
            }
            Ok(PeerEvent::Added(_)) => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert!(b.peers().is_empty());
}

#[tokio::test]
async fn a_redialled_component_is_announced_again_at_its_next_hello() {
    let port = free_udp_port();
    let a = Discovery::start(&config(port)).await.expect("a starts");
    let b = Discovery::start(&config(port)).await.expect("b starts");
    let mut events = b.subscribe();
    let iid = a.advertise(ad("from-a")).await;
    assert_eq!(next_added(&mut events).await, "from-a");
    // Its link dropped (cote's clients would never reconnect): the next hello re-announces it.
    b.redial(&iid);
    assert_eq!(next_added(&mut events).await, "from-a");
    assert_eq!(b.peers().len(), 1);
}

#[tokio::test]
async fn bad_hellos_and_a_flood_are_dropped_and_the_table_stays_bounded() {
    let port = free_udp_port();
    let d = Discovery::start(&config(port)).await.expect("starts");
    let mut events = d.subscribe();
    let sender = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .expect("bind");
    let to = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let bad: [&[u8]; 4] = [
        b"not json",
        br#"{"event":"promotion","pid":"p","iid":"i","data":{}}"#,
        br#"[1,2,3]"#,
        br#"{"event":"hello","pid":"p","iid":"","data":{"advertisement":{"key":"$$"}}}"#,
    ];
    for datagram in bad {
        sender.send_to(datagram, to).await.expect("send");
    }
    // A flood of distinct components: only max_peers (8) are kept.
    for i in 0..40 {
        let hello = Hello::new("p", &format!("iid-{i}"), "h", ad(&format!("n{i}")));
        sender.send_to(&hello.encode(), to).await.expect("send");
    }
    for _ in 0..8 {
        next_added(&mut events).await;
    }
    assert_eq!(d.peers().len(), 8);
    // The 8 fall silent and time out; a marker hello sent after that is received after every
    // datagram before it (one receive loop, in order): then every drop is counted.
    let mut removed = 0;
    while removed < 8 {
        if let Ok(PeerEvent::Removed(_)) = timeout(WAIT, events.recv()).await.expect("in time") {
            removed += 1;
        }
    }
    let marker = Hello::new("p", "marker", "h", ad("marker"));
    sender.send_to(&marker.encode(), to).await.expect("send");
    assert_eq!(next_added(&mut events).await, "marker");
    assert_eq!(d.dropped(), 4 + 32);
    assert_eq!(d.peers().len(), 1);
}

#[test]
fn a_lan_address_needs_an_opt_in() {
    let lan = CoteConfig {
        address: Ipv4Addr::new(10, 0, 0, 255),
        ..CoteConfig::default()
    };
    assert_eq!(
        lan.validate(),
        Err(ConfigError::NotLoopback(Ipv4Addr::new(10, 0, 0, 255)))
    );
}

async fn responder(handler: RepHandler) -> SocketAddr {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(axon::serve_responder(listener, handler, 4096));
    addr
}

#[tokio::test]
async fn requests_get_replies_and_errors_keep_their_class() {
    let handler: RepHandler = Arc::new(|req: Value| {
        Box::pin(async move {
            match req["type"].as_str() {
                Some("add") => Ok(json!(req["a"].as_i64().unwrap_or(0) + 1)),
                _ => Err(Error::not_found("no such type").with_data(json!({"t": req["type"]}))),
            }
        })
    });
    let addr = responder(handler).await;
    let requester = Requester::new(16, 4096);
    requester
        .connect("r1".into(), addr, || {})
        .await
        .expect("connects");
    let sum = requester
        .send(&json!({"type": "add", "a": 41}), WAIT, false)
        .await
        .expect("a reply");
    assert_eq!(sum, json!(42));
    let err = requester
        .send(&json!({"type": "other"}), WAIT, false)
        .await
        .expect_err("an error");
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert_eq!(err.data(), Some(&json!({"t": "other"})));
    // cote drops a request without a type and never answers; here it is a BadRequest.
    let err = requester
        .send(&json!({"a": 1}), WAIT, false)
        .await
        .expect_err("an error");
    assert_eq!(err.kind(), ErrorKind::BadRequest);
}

#[tokio::test]
async fn a_bad_frame_closes_the_connection_and_nothing_else() {
    let handler: RepHandler = Arc::new(|_req: Value| Box::pin(async { Ok(json!(true)) }));
    let addr = responder(handler).await;
    // A length over the 4096-byte limit: refused at the header, the connection closes.
    let mut bad = TcpStream::connect(addr).await.expect("connect");
    bad.write_all(&[0x11, 0x7f, 0xff, 0xff, 0xff])
        .await
        .expect("write");
    let mut buf = [0u8; 16];
    let n = timeout(WAIT, bad.read(&mut buf))
        .await
        .expect("closed in time")
        .unwrap_or(0);
    assert_eq!(n, 0, "the responder closes a stream with a bad frame");
    // A bad version too.
    let mut bad = TcpStream::connect(addr).await.expect("connect");
    bad.write_all(&[0x52, 0, 0, 0, 0]).await.expect("write");
    let n = timeout(WAIT, bad.read(&mut buf))
        .await
        .expect("closed in time")
        .unwrap_or(0);
    assert_eq!(n, 0);
    // A good client is still served.
    let mut good = TcpStream::connect(addr).await.expect("connect");
    let frame = amp::encode_args(&[Arg::Json(json!({"type": "x"})), Arg::Str("1:0".into())])
        .expect("a frame");
    good.write_all(&frame).await.expect("write");
    let mut dec = amp::FrameDecoder::new(4096);
    let reply = timeout(WAIT, async {
        loop {
            if let Some(f) = dec.next_frame().expect("a good frame") {
                return amp::decode_args(f).expect("args");
            }
            let n = good.read_buf(dec.buffer()).await.expect("read");
            assert!(n > 0, "closed");
        }
    })
    .await
    .expect("a reply in time");
    assert_eq!(
        reply,
        vec![
            Arg::Json(Value::Null),
            Arg::Json(json!(true)),
            Arg::Str("1:0".into())
        ]
    );
}
