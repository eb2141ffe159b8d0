//! What a websocket keeps for its life on the server (issue 22: ≤ 16 KiB of gateway memory per
//! socket; the figures are in docs/benchmarks.md, "Sockets curve").
//!
//! - The handshake request socketioxide keeps (`req_parts`) is a compact copy: hyper parses the
//!   URI and the header values as slices of the connection's read buffer (8 KiB at least), and
//!   a socket that kept those slices kept that whole buffer.
//! - The websocket read buffer is the one the options set (socketioxide's default is 4 KiB).
//!
//! Real loopback websockets against `App::listen`.

use std::net::SocketAddr;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use http::HeaderValue;
use plume::App;
use plume::ConnectionId;
use plume::realtime::{DEFAULT_WS_READ_BUFFER_SIZE, RealtimeOptions};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{WebSocketStream, client_async};

type Ws = WebSocketStream<TcpStream>;

/// The next text message (at most 10 s), answering the server's pings.
async fn next_text(ws: &mut Ws) -> String {
    let read = async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) if t.as_str() == "2" => {
                    ws.send(Message::text("3")).await.expect("pong");
                }
                Some(Ok(Message::Text(t))) => return t.as_str().to_owned(),
                Some(Ok(_)) => {}
                other => panic!("websocket ended: {other:?}"),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("a message within 10 s")
}

/// A websocket that sent `x-plume-test` in its handshake, connected to `/` (the server has
/// registered it once its CONNECT is answered).
async fn connect(addr: SocketAddr) -> Ws {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let mut req = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket")
        .into_client_request()
        .expect("request");
    req.headers_mut()
        .insert("x-plume-test", HeaderValue::from_static("compact"));
    let (mut ws, _) = client_async(req, stream).await.expect("websocket");
    assert!(next_text(&mut ws).await.starts_with("0{"), "engine.io open");
    ws.send(Message::text("40")).await.expect("send CONNECT");
    let connected = next_text(&mut ws).await;
    assert!(connected.starts_with("40{"), "CONNECT answer: {connected}");
    ws
}

#[tokio::test]
async fn a_websocket_keeps_a_compact_copy_of_its_handshake_request() {
    let app = App::new();
    let server = app.listen("127.0.0.1:0").await.expect("listen");
    let _ws = connect(server.local_addr()).await;

    let sockets = app.socketio().expect("the socket.io server").sockets();
    let [socket] = sockets.as_slice() else {
        panic!("{} sockets, expected one", sockets.len());
    };
    let parts = socket.req_parts();
    // The URI and then every header value, back to back in one buffer of their own. In
    // hyper's read buffer a header's name and `: ` come between them.
    let uri = parts.uri.to_string();
    assert!(uri.starts_with("/socket.io/?"), "{uri}");
    let mut next = parts.uri.path().as_ptr() as usize + uri.len();
    for (name, value) in &parts.headers {
        assert_eq!(
            value.as_bytes().as_ptr() as usize,
            next,
            "{name} is not in the compact copy of the handshake request"
        );
        next += value.len();
    }
    assert!(parts.headers.len() >= 5, "{:?}", parts.headers);

    // Plume's params.headers are read from that copy, not copied per connection.
    let info = app
        .connection(&ConnectionId(socket.id.to_string()))
        .expect("the connection");
    assert_eq!(info.headers.get("x-plume-test").expect("kept"), "compact");
    assert_eq!(info.headers, parts.headers);
    server.shutdown().await;
}

#[tokio::test]
async fn the_websocket_read_buffer_is_the_one_the_options_set() {
    // Smaller than socketioxide's own default (4 KiB per socket, zeroed when it opens).
    let socketioxide_default = socketioxide::SocketIoConfig::default()
        .engine_config
        .ws_read_buffer_size;
    assert!(DEFAULT_WS_READ_BUFFER_SIZE < socketioxide_default);
    let config = |app: &App| {
        let _ = app.socketio_layer();
        app.socketio()
            .expect("the socket.io server")
            .config()
            .engine_config
            .ws_read_buffer_size
    };
    let app = App::new();
    assert_eq!(config(&app), DEFAULT_WS_READ_BUFFER_SIZE);
    let app = App::new();
    app.set_realtime_options(RealtimeOptions {
        ws_read_buffer_size: 2048,
        ..RealtimeOptions::default()
    });
    assert_eq!(config(&app), 2048);
}

/// A message larger than the read buffer arrives whole (it is read in several reads).
#[tokio::test]
async fn a_message_larger_than_the_read_buffer_is_read_whole() {
    let app = App::new();
    app.use_service("notes", plume::MemoryService::<serde_json::Value>::new());
    let server = app.listen("127.0.0.1:0").await.expect("listen");
    let mut ws = connect(server.local_addr()).await;
    let text = "x".repeat(64 * DEFAULT_WS_READ_BUFFER_SIZE);
    let call = serde_json::json!(["create", "notes", {"text": text}]);
    ws.send(Message::text(format!("420{call}")))
        .await
        .expect("send");
    let answer = loop {
        let message = next_text(&mut ws).await;
        if message.starts_with("430") {
            break message;
        }
    };
    let args: serde_json::Value =
        serde_json::from_str(answer.trim_start_matches("430")).expect("ack json");
    assert_eq!(args[0], serde_json::Value::Null, "{answer:.200}");
    assert_eq!(args[1]["text"].as_str().map(str::len), Some(text.len()));
    server.shutdown().await;
}
