//! socket.io: a call emitted the moment the client has the CONNECT answer is answered.
//!
//! The Feathers client emits its `create authentication` as soon as it is connected. Plume
//! registers a connection's handlers in the handshake middleware, before socketioxide answers
//! the CONNECT; registered in the connect handler (a task that runs after the answer is sent),
//! a call that won the race was dropped without an acknowledgement: about one socket in a
//! thousand of the sockets benchmark hung on its login. Many raw websocket clients here each
//! emit their first call in the same instant they read the answer, on a busy runtime.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use plume::{App, MemoryService};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{WebSocketStream, client_async};

type Ws = WebSocketStream<TcpStream>;

/// The sockets of the test, and how many connect at once.
const SOCKETS: usize = 600;
const AT_ONCE: usize = 100;

/// The next text message, answering the server's pings.
async fn next_text(ws: &mut Ws) -> Result<String, String> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) if t.as_str() == "2" => {
                ws.send(Message::text("3"))
                    .await
                    .map_err(|e| e.to_string())?;
            }
            Some(Ok(Message::Text(t))) => return Ok(t.as_str().to_owned()),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e.to_string()),
            None => return Err("closed".to_owned()),
        }
    }
}

/// Connect, CONNECT to `/`, and emit `find` on `things` right when the answer is read; Ok when
/// that call is acknowledged.
async fn first_call(addr: SocketAddr) -> Result<(), String> {
    let stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let url = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket");
    let (mut ws, _) = client_async(url, stream).await.map_err(|e| e.to_string())?;
    let open = next_text(&mut ws).await?;
    if !open.starts_with("0{") {
        return Err(format!("open packet: {open}"));
    }
    ws.send(Message::text("40"))
        .await
        .map_err(|e| e.to_string())?;
    let connected = next_text(&mut ws).await?;
    if !connected.starts_with("40{") {
        return Err(format!("CONNECT answer: {connected}"));
    }
    ws.send(Message::text(r#"421["find","things",{}]"#))
        .await
        .map_err(|e| e.to_string())?;
    let answer = tokio::time::timeout(Duration::from_secs(10), next_text(&mut ws))
        .await
        .map_err(|_| "the first call was never answered".to_owned())??;
    if !answer.starts_with("431[null,") {
        return Err(format!("the first call answered {answer}"));
    }
    let _ = ws.close(None).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_emitted_right_after_the_connect_answer_is_answered() {
    let app = App::new();
    app.use_service("things", MemoryService::<serde_json::Value>::new());
    let server = app.listen("127.0.0.1:0").await.expect("listen");
    let addr = server.local_addr();

    let gate = Arc::new(Semaphore::new(AT_ONCE));
    let mut clients = Vec::new();
    for _ in 0..SOCKETS {
        let gate = gate.clone();
        clients.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await.map_err(|e| e.to_string())?;
            first_call(addr).await
        }));
    }
    let mut failures = Vec::new();
    for client in clients {
        match client.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failures.push(e),
            Err(e) => failures.push(e.to_string()),
        }
    }
    app.shutdown().await;
    assert!(
        failures.is_empty(),
        "{} of {SOCKETS} sockets failed, first: {:?}",
        failures.len(),
        failures.first()
    );
}
