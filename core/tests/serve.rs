//! `App::serve`: the server as a future, its graceful shutdown, and a bind failure as an
//! `io::Error`. Real sockets on loopback, hyper's client.

#[path = "support/gate.rs"]
mod gate;
#[path = "support/http.rs"]
mod http_client;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use gate::Gate;
use plume::{App, ServiceOptions};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::time::timeout;

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const DEADLINE: Duration = Duration::from_secs(10);

async fn bound() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    (listener, addr)
}

#[tokio::test]
async fn a_bind_failure_is_the_io_error() {
    let (_taken, addr) = bound().await;
    let err = timeout(DEADLINE, App::new().serve(addr))
        .await
        .expect("the bind fails at once")
        .expect_err("the port is taken");
    assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
}

#[tokio::test]
async fn the_signal_stops_the_server_after_the_open_request() {
    let app = App::new();
    let gate = Arc::new(Gate::default());
    app.use_arc("gate", gate.clone(), ServiceOptions::new());
    let (listener, addr) = bound().await;
    let (signal, signalled) = oneshot::channel::<()>();
    let server = tokio::spawn(
        app.serve_on(listener)
            .with_graceful_shutdown(async {
                let _ = signalled.await;
            })
            .into_future(),
    );

    // A request in flight when the signal comes...
    let request = tokio::spawn(http_client::send_from(
        LOCALHOST, addr, "GET", "/gate", None,
    ));
    timeout(DEADLINE, gate.started.notified())
        .await
        .expect("the request reaches the service");
    signal.send(()).expect("the server waits for the signal");
    // ...holds the server open (the request is not answered yet)...
    tokio::task::yield_now().await;
    assert!(
        !server.is_finished(),
        "the server waits for the open request"
    );
    // ...and is answered once the service returns.
    gate.release.notify_one();
    let response = timeout(DEADLINE, request)
        .await
        .expect("answered in time")
        .expect("task");
    assert_eq!((response.status, response.json()), (200, json!(["done"])));
    timeout(DEADLINE, server)
        .await
        .expect("the server stops in time")
        .expect("task")
        .expect("served without an error");
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "the listener is closed"
    );
}

#[tokio::test]
async fn app_shutdown_ends_a_serve_without_a_signal() {
    let app = App::new();
    app.use_service("gate", Gate::default());
    let (listener, addr) = bound().await;
    let server = tokio::spawn(app.serve_on(listener).into_future());
    let response = http_client::send_from(LOCALHOST, addr, "GET", "/nothing", None).await;
    assert_eq!(response.status, 404);
    assert!(!server.is_finished());
    timeout(DEADLINE, app.shutdown())
        .await
        .expect("shutdown in time");
    timeout(DEADLINE, server)
        .await
        .expect("serve returns once the App shut down")
        .expect("task")
        .expect("served without an error");
}

/// A client may shut its side of the connection once its request is sent (HTTP/1.1 allows a
/// half-closed connection): the request still runs and is answered, as Node's HTTP server does.
#[tokio::test]
async fn a_half_closed_connection_gets_its_answer() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let app = App::new();
    let gate = Arc::new(Gate::default());
    app.use_arc("gate", gate.clone(), ServiceOptions::new());
    let (listener, addr) = bound().await;
    let server = tokio::spawn(app.serve_on(listener).into_future());

    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(b"GET /gate HTTP/1.1\r\nhost: plume\r\n\r\n")
        .await
        .expect("send the request");
    // The end of the client's side arrives with the request, before the service runs.
    stream.shutdown().await.expect("half-close");
    timeout(DEADLINE, gate.started.notified())
        .await
        .expect("the request reaches the service");
    gate.release.notify_one();
    let mut response = Vec::new();
    timeout(DEADLINE, stream.read_to_end(&mut response))
        .await
        .expect("answered in time")
        .expect("read the answer");
    let response = String::from_utf8_lossy(&response);
    assert!(
        response.starts_with("HTTP/1.1 200 OK\r\n"),
        "answered: {response:?}"
    );
    assert!(response.ends_with("[\"done\"]"), "answered: {response:?}");
    server.abort();
}

/// `listen` binds with a backlog big enough for a crowd: a thousand socket.io clients
/// connecting at once overflowed std's and tokio's 128, and those past it waited for a SYN
/// retransmit (a second). The kernel's view of the listening socket (`ss`, iproute2: its
/// `Send-Q` is the backlog) is read, for the server made by `listen` and by `serve`.
#[tokio::test]
async fn listen_and_serve_bind_with_a_backlog_of_4096() {
    // The kernel caps a backlog at `net.core.somaxconn` (4096 by default since Linux 5.4).
    let somaxconn: u64 = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .expect("read somaxconn")
        .trim()
        .parse()
        .expect("a number");
    let expected = somaxconn.min(4096);
    let app = App::new();
    let listening = app.listen("127.0.0.1:0").await.expect("listen");
    assert_eq!(backlog(listening.local_addr().port()), expected, "listen");

    // `serve` binds the address itself: a free port, learnt from a listener closed first.
    let port = {
        let (taken, addr) = bound().await;
        drop(taken);
        addr.port()
    };
    let server = tokio::spawn(App::new().serve(("127.0.0.1", port)).into_future());
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "serve listens in time"
        );
        tokio::task::yield_now().await;
    }
    assert_eq!(backlog(port), expected, "serve");
    server.abort();
}

/// The backlog of the socket listening on 127.0.0.1:`port`, as `ss -ltn` reports it.
fn backlog(port: u16) -> u64 {
    let out = std::process::Command::new("ss")
        .args(["-Hltn", &format!("sport = :{port}")])
        .output()
        .expect("ss (iproute2) runs");
    assert!(out.status.success(), "ss: {out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    // State, Recv-Q, Send-Q (the backlog), local address, peer address.
    let fields: Vec<&str> = text.split_whitespace().collect();
    assert_eq!(
        fields.first(),
        Some(&"LISTEN"),
        "one listening socket: {text}"
    );
    fields
        .get(2)
        .and_then(|q| q.parse().ok())
        .unwrap_or_else(|| panic!("no backlog in {text}"))
}
