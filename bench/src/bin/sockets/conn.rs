//! One socket.io client as the Feathers client speaks it (engine.io 4 over a websocket, no
//! polling): open, CONNECT to `/`, `create` on `authentication` with the JWT, then listen for
//! `todos created` and answer the server's pings.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::{SinkExt, StreamExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{Notify, Semaphore, watch};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// What every connection shares with the controller.
pub(crate) struct Shared {
    /// The gateway's address.
    pub(crate) gateway: SocketAddr,
    /// The JWT every socket authenticates with.
    pub(crate) token: String,
    /// The text that starts every event's todo (`<tag>-<k>`), unique to this run.
    pub(crate) tag: String,
    /// Connections fully set up (connected, CONNECTed, authenticated).
    pub(crate) ready: AtomicUsize,
    /// Connections that failed (connect, handshake, authentication or a read).
    pub(crate) failed: AtomicUsize,
    /// Per event: the sockets that have received it.
    pub(crate) got: Vec<AtomicUsize>,
    /// Per event: copies received beyond the first.
    pub(crate) duplicates: AtomicUsize,
    /// The number of sockets (an event is complete when `got[k]` reaches it).
    pub(crate) sockets: usize,
    /// Woken when a connection is ready or fails, and when an event reaches its last socket.
    pub(crate) progress: Notify,
    /// The clock every time is measured on.
    pub(crate) base: Instant,
    /// Bounds the connections being set up at once (the listener's backlog is finite).
    pub(crate) setting_up: Semaphore,
}

/// The longest the set-up of one socket may take (connect, handshake, login).
const SET_UP_TIMEOUT: Duration = Duration::from_secs(20);

/// One arrival: the event's number and the time since [`Shared::base`], in microseconds.
pub(crate) type Arrival = (u32, u64);

/// The websocket settings of a client: a small read buffer (tungstenite zeroes the whole buffer,
/// 128 KiB by default, which for 10,000 sockets would be 1.3 GB in this process).
fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
}

type Ws = WebSocketStream<TcpStream>;

/// Run one client until `stop` turns true: answers its arrivals (first copy of each event).
pub(crate) async fn run(
    shared: Arc<Shared>,
    source: IpAddr,
    mut stop: watch::Receiver<bool>,
) -> Vec<Arrival> {
    let ws = {
        let Ok(_permit) = shared.setting_up.acquire().await else {
            return Vec::new();
        };
        let mut phase = "connect";
        let attempt = tokio::time::timeout(SET_UP_TIMEOUT, set_up(&shared, source, &mut phase));
        let outcome = tokio::select! {
            outcome = attempt => outcome.unwrap_or_else(|_| {
                Err(anyhow::anyhow!("{phase}: no answer within {SET_UP_TIMEOUT:?}"))
            }),
            _ = stop.wait_for(|stop| *stop) => return Vec::new(),
        };
        match outcome {
            Ok(ws) => ws,
            Err(err) => {
                tracing_line(&format!("socket failed to set up: {err:#}"));
                shared.failed.fetch_add(1, Ordering::AcqRel);
                shared.progress.notify_one();
                return Vec::new();
            }
        }
    };
    shared.ready.fetch_add(1, Ordering::AcqRel);
    shared.progress.notify_one();
    let mut arrivals = Vec::with_capacity(shared.got.len());
    if let Err(err) = listen(&shared, ws, &mut stop, &mut arrivals).await {
        tracing_line(&format!("socket failed while listening: {err:#}"));
        shared.failed.fetch_add(1, Ordering::AcqRel);
        shared.progress.notify_one();
    }
    arrivals
}

/// Progress and errors go to stderr (stdout carries the figures).
pub(crate) fn tracing_line(text: &str) {
    eprintln!("[sockets] {text}");
}

/// Set one socket up; `phase` names the step under way (for a timeout's message).
async fn set_up(shared: &Shared, source: IpAddr, phase: &mut &'static str) -> anyhow::Result<Ws> {
    let socket = if source.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.bind(SocketAddr::new(source, 0))?;
    let stream = socket.connect(shared.gateway).await.context("connect")?;
    stream.set_nodelay(true)?;
    *phase = "websocket handshake";
    let url = format!(
        "ws://{}/socket.io/?EIO=4&transport=websocket",
        shared.gateway
    );
    let (mut ws, _) = tokio_tungstenite::client_async_with_config(url, stream, Some(ws_config()))
        .await
        .context("websocket handshake")?;
    *phase = "waiting for the open packet";
    let open = next_text(&mut ws).await.context(*phase)?;
    if !open.starts_with("0{") {
        bail!("expected the engine.io open packet, got {open:?}");
    }
    ws.send(Message::text("40")).await?;
    *phase = "waiting for the CONNECT answer";
    let connected = next_text(&mut ws).await.context(*phase)?;
    if !connected.starts_with("40") {
        bail!("expected the socket.io CONNECT answer, got {connected:?}");
    }
    let login = serde_json::json!(["create", "authentication", {"strategy": "jwt", "accessToken": shared.token}, {}]);
    ws.send(Message::text(format!("420{login}"))).await?;
    *phase = "waiting for the login answer";
    loop {
        let answer = next_text(&mut ws).await.context(*phase)?;
        if answer.starts_with("430[null,") {
            return Ok(ws);
        } else if answer.starts_with("430") {
            bail!("authentication refused: {answer}");
        }
        // Anything else (an event before the login answer) is not ours to count yet.
    }
}

/// The next text message during the set-up, answering the server's pings on the way.
async fn next_text(ws: &mut Ws) -> anyhow::Result<String> {
    loop {
        match ws.next().await.context("the gateway closed the socket")?? {
            Message::Text(text) if text.as_str() == "2" => ws.send(Message::text("3")).await?,
            Message::Text(text) => return Ok(text.as_str().to_owned()),
            Message::Close(frame) => bail!("the gateway closed the socket: {frame:?}"),
            _ => {}
        }
    }
}

async fn listen(
    shared: &Shared,
    mut ws: Ws,
    stop: &mut watch::Receiver<bool>,
    arrivals: &mut Vec<Arrival>,
) -> anyhow::Result<()> {
    let mut seen = vec![false; shared.got.len()];
    loop {
        let message = tokio::select! {
            biased;
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    break;
                }
                continue;
            }
            message = ws.next() => message,
        };
        let at = shared.base.elapsed().as_micros() as u64;
        let Message::Text(text) = message.context("the gateway closed the socket")?? else {
            continue;
        };
        let text = text.as_str();
        if text == "2" {
            ws.send(Message::text("3")).await?;
            continue;
        }
        let Some(k) = event_number(text, &shared.tag) else {
            continue;
        };
        let Some(slot) = seen.get_mut(k) else {
            continue;
        };
        if *slot {
            shared.duplicates.fetch_add(1, Ordering::AcqRel);
            continue;
        }
        *slot = true;
        arrivals.push((k as u32, at));
        if shared.got[k].fetch_add(1, Ordering::AcqRel) + 1 == shared.sockets {
            shared.progress.notify_one();
        }
    }
    // A clean close; the gateway may already be gone.
    let _ = ws.close(None).await;
    Ok(())
}

/// The number `k` of a `todos created` event whose todo's text is `<tag>-<k>`.
fn event_number(text: &str, tag: &str) -> Option<usize> {
    let rest = text.strip_prefix("42[\"todos created\",")?;
    let at = rest.find(tag)? + tag.len();
    let digits = rest[at..].strip_prefix('-')?;
    let end = digits
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(digits.len());
    digits[..end].parse().ok()
}

#[cfg(test)]
mod tests {
    use super::event_number;

    #[test]
    fn event_numbers_come_from_this_runs_todos_only() {
        let tag = "sockets-42-7";
        let msg = r#"42["todos created",{"text":"sockets-42-7-12","done":false,"id":3}]"#;
        assert_eq!(event_number(msg, tag), Some(12));
        let other = r#"42["todos created",{"text":"sockets-41-7-12","id":3}]"#;
        assert_eq!(event_number(other, tag), None);
        let patched = r#"42["todos patched",{"text":"sockets-42-7-12","id":3}]"#;
        assert_eq!(event_number(patched, tag), None);
        assert_eq!(event_number("2", tag), None);
    }
}
