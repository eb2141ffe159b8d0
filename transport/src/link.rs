//! One TCP link to one peer: handshake, reader, writer, pending calls.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedReadHalf;
use tokio::sync::{Semaphore, oneshot};
use tokio::task::{AbortHandle, JoinHandle};
use tokio::time::{Instant, timeout, timeout_at};
use tokio_util::sync::CancellationToken;

use crate::codec::{
    Auth, EventMsg, Frame, Goaway, Hello, Kind, PROTOCOL_VERSION, RequestMsg, TableDelta,
    TableSnapshot, Topic,
};
use crate::discovery::NodeId;
use crate::error::{CallError, HandshakeError, LinkError};
use crate::mesh::{Body, EndpointHandler, Inner, lock};
use crate::outbox::{Outbox, QueueError};
use crate::serve::{self, Served};
use plume::Error;

const LOG: &str = "plume::mesh";

/// A live link to a peer.
#[derive(Debug)]
pub(crate) struct Link {
    pub(crate) peer: NodeId,
    pub(crate) key: String,
    pub(crate) out: Arc<Outbox>,
    pending: Mutex<HashMap<u64, oneshot::Sender<bytes::Bytes>>>,
    pings: Mutex<HashMap<u64, oneshot::Sender<()>>>,
    next_id: AtomicU64,
    pub(crate) pending_count: AtomicUsize,
    permits: Semaphore,
    pub(crate) remote_topics: Mutex<HashSet<String>>,
    pub(crate) closed: CancellationToken,
    /// Our snapshot is queued: deltas and topic changes may follow.
    pub(crate) ready: AtomicBool,
    /// The peer sent goaway: route nothing new to it.
    pub(crate) draining: AtomicBool,
    gate: Mutex<()>,
    /// The peer acknowledged our goaway.
    pub(crate) goaway_acked: AtomicBool,
    serving: Mutex<HashMap<u64, AbortHandle>>,
    serving_count: AtomicUsize,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl Link {
    /// Send a call and wait for its reply: an encoded `ResponseMsg`, which the caller decodes
    /// into the form it wants (see `ReplyForm`). `payload` is an encoded [`RequestMsg`].
    pub(crate) async fn request(
        &self,
        payload: bytes::Bytes,
        deadline: Instant,
    ) -> Result<bytes::Bytes, CallError> {
        let permit = match self.permits.try_acquire() {
            Ok(p) => Ok(Ok(p)),
            Err(_) => timeout_at(deadline, self.permits.acquire()).await,
        };
        let permit = match permit {
            Ok(Ok(p)) => p,
            Ok(Err(_)) => return Err(CallError::NotSent),
            Err(_) => return Err(CallError::Busy),
        };
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        lock(&self.pending).insert(id, tx);
        self.pending_count.fetch_add(1, Ordering::Relaxed);
        let _guard = PendingGuard(&self.pending_count);
        let frame = Frame {
            kind: Kind::Request,
            id,
            payload,
        };
        loop {
            let sent = {
                // The gate orders this request against a goaway acknowledgement: a request
                // queued after the ack could reach a peer that already stopped, so it is not sent.
                let _gate = lock(&self.gate);
                if self.draining.load(Ordering::Acquire) {
                    Err(QueueError::Closed)
                } else if self.pending_count.load(Ordering::Relaxed) > 1 {
                    // Other calls are in flight: this one leaves with the next batch.
                    self.out.try_send_batched(&frame)
                } else {
                    self.out.try_send(&frame)
                }
            };
            match sent {
                Ok(()) => break,
                Err(QueueError::Closed) => {
                    lock(&self.pending).remove(&id);
                    return Err(CallError::NotSent);
                }
                Err(QueueError::Full) => {
                    if timeout_at(deadline, self.out.wait_for_space())
                        .await
                        .is_err()
                    {
                        lock(&self.pending).remove(&id);
                        return Err(CallError::Timeout);
                    }
                }
            }
        }
        let out = match timeout_at(deadline, rx).await {
            Ok(Ok(payload)) => Ok(payload),
            Ok(Err(_)) => Err(CallError::Lost),
            Err(_) => {
                lock(&self.pending).remove(&id);
                let _ = self.out.try_send(&Frame::empty(Kind::Cancel, id));
                Err(CallError::Timeout)
            }
        };
        drop(permit);
        out
    }

    /// Round-trip a ping.
    pub(crate) async fn ping(&self, deadline: Instant) -> Result<Duration, Error> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        lock(&self.pings).insert(id, tx);
        let start = Instant::now();
        let sent = timeout_at(deadline, self.out.send(&Frame::empty(Kind::Ping, id))).await;
        let res = match sent {
            Ok(Ok(())) => match timeout_at(deadline, rx).await {
                Ok(Ok(())) => Ok(start.elapsed()),
                Ok(Err(_)) => Err(Error::unavailable(format!(
                    "link to node {} lost",
                    self.peer
                ))),
                Err(_) => Err(Error::timeout(format!(
                    "node {} did not answer the ping",
                    self.peer
                ))),
            },
            Ok(Err(_)) => Err(Error::unavailable(format!(
                "link to node {} lost",
                self.peer
            ))),
            Err(_) => Err(Error::timeout(format!(
                "node {} did not take the ping",
                self.peer
            ))),
        };
        lock(&self.pings).remove(&id);
        res
    }

    /// Queue a control frame without waiting. A full queue means the peer is hopelessly behind:
    /// the link closes (it is redialled and resynchronised by a fresh snapshot).
    pub(crate) fn send_control(&self, frame: Frame) {
        if let Err(e) = self.out.try_send(&frame) {
            if e == QueueError::Full {
                tracing::warn!(target: LOG, peer = %self.peer, "write queue full for a control frame; closing the link");
            }
            self.closed.cancel();
        }
    }

    /// Wait for the writer to flush and finish (bounded).
    pub(crate) async fn join_writer(&self, limit: Duration) {
        let handle = lock(&self.writer).take();
        if let Some(h) = handle {
            let _ = timeout(limit, h).await;
        }
    }
}

struct PendingGuard<'a>(&'a AtomicUsize);

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

type HmacSha256 = Hmac<Sha256>;

/// The HMAC a prover sends: it binds the role, both node ids, both nonces and the environment.
fn auth_mac(
    secret: &[u8],
    role: &[u8],
    prover: NodeId,
    verifier: NodeId,
    verifier_nonce: &[u8],
    prover_nonce: &[u8],
    environment: &str,
) -> Result<HmacSha256, HandshakeError> {
    let mut mac = HmacSha256::new_from_slice(secret).map_err(|_| HandshakeError::Key)?;
    mac.update(b"plume-mesh-auth-v1\0");
    mac.update(role);
    mac.update(&prover.0.to_be_bytes());
    mac.update(&verifier.0.to_be_bytes());
    mac.update(verifier_nonce);
    mac.update(prover_nonce);
    mac.update(environment.as_bytes());
    Ok(mac)
}

async fn read_frame(
    rd: &mut OwnedReadHalf,
    buf: &mut BytesMut,
    max: usize,
    expected: Kind,
) -> Result<Frame, HandshakeError> {
    loop {
        if let Some(f) = Frame::decode(buf, max)? {
            if f.kind != expected {
                return Err(HandshakeError::Unexpected {
                    expected,
                    got: f.kind,
                });
            }
            return Ok(f);
        }
        buf.reserve(4096);
        let n = rd.read_buf(buf).await.map_err(HandshakeError::Read)?;
        if n == 0 {
            return Err(HandshakeError::Closed);
        }
    }
}

/// Run the handshake on a fresh connection and start the link. `expect` is the node the dialer
/// meant to reach (None on the accepting side).
pub(crate) async fn establish(
    inner: &Arc<Inner>,
    stream: TcpStream,
    expect: Option<NodeId>,
) -> Result<Arc<Link>, HandshakeError> {
    let limit = inner.cfg.handshake_timeout;
    match timeout(limit, handshake(inner, stream, expect)).await {
        Ok(r) => r,
        Err(_) => Err(HandshakeError::Timeout(limit)),
    }
}

async fn handshake(
    inner: &Arc<Inner>,
    stream: TcpStream,
    expect: Option<NodeId>,
) -> Result<Arc<Link>, HandshakeError> {
    let _ = stream.set_nodelay(true);
    let (mut rd, mut wr) = stream.into_split();
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let nonce: [u8; 32] = rand::random();
    let hello = Hello {
        protocol: PROTOCOL_VERSION,
        node: inner.node.to_string(),
        environment: inner.environment.clone(),
        key: inner.key.clone(),
        auth: inner.secret.is_some(),
        nonce: nonce.to_vec(),
    };
    let io = HandshakeError::Write;
    wr.write_all(&Frame::with(Kind::Hello, 0, &hello).to_bytes())
        .await
        .map_err(io)?;
    let max = inner.cfg.max_frame.min(64 * 1024);
    let first = read_frame(&mut rd, &mut buf, max, Kind::Hello).await?;
    let theirs: Hello = first.parse()?;
    if theirs.protocol != PROTOCOL_VERSION {
        return Err(HandshakeError::Protocol(theirs.protocol));
    }
    if theirs.environment != inner.environment {
        return Err(HandshakeError::Environment(theirs.environment));
    }
    let Ok(peer) = u128::from_str_radix(&theirs.node, 16).map(NodeId) else {
        return Err(HandshakeError::NodeId(theirs.node));
    };
    if peer == inner.node {
        return Err(HandshakeError::SelfLink);
    }
    if let Some(want) = expect
        && want != peer
    {
        return Err(HandshakeError::WrongPeer { want, got: peer });
    }
    if theirs.auth != inner.secret.is_some() {
        return Err(HandshakeError::SecretMismatch);
    }
    if let Some(secret) = &inner.secret {
        if theirs.nonce.len() != 32 {
            return Err(HandshakeError::Challenge);
        }
        let (mine, other): (&[u8], &[u8]) = if expect.is_some() {
            (b"dial", b"accept")
        } else {
            (b"accept", b"dial")
        };
        let proof = auth_mac(
            secret,
            mine,
            inner.node,
            peer,
            &theirs.nonce,
            &nonce,
            &inner.environment,
        )?
        .finalize()
        .into_bytes()
        .to_vec();
        wr.write_all(&Frame::with(Kind::Auth, 0, &Auth { mac: proof }).to_bytes())
            .await
            .map_err(io)?;
        let f = read_frame(&mut rd, &mut buf, max, Kind::Auth).await?;
        let auth: Auth = f.parse()?;
        auth_mac(
            secret,
            other,
            peer,
            inner.node,
            &nonce,
            &theirs.nonce,
            &inner.environment,
        )?
        .verify_slice(&auth.mac)
        .map_err(|_| HandshakeError::Unauthenticated)?;
    }

    let closed = inner.shutdown.child_token();
    let out = Outbox::new(wr, inner.cfg.write_buffer, closed.clone());
    let link = Arc::new(Link {
        peer,
        key: theirs.key,
        out,
        pending: Mutex::new(HashMap::new()),
        pings: Mutex::new(HashMap::new()),
        next_id: AtomicU64::new(1),
        pending_count: AtomicUsize::new(0),
        permits: Semaphore::new(inner.cfg.max_in_flight),
        remote_topics: Mutex::new(HashSet::new()),
        closed,
        ready: AtomicBool::new(false),
        draining: AtomicBool::new(false),
        gate: Mutex::new(()),
        goaway_acked: AtomicBool::new(false),
        serving: Mutex::new(HashMap::new()),
        serving_count: AtomicUsize::new(0),
        writer: Mutex::new(None),
    });
    let writer = tokio::spawn(link.out.clone().run_writer());
    *lock(&link.writer) = Some(writer);
    inner.register_link(&link);
    tokio::spawn(read_loop(inner.clone(), link.clone(), rd, buf));
    tracing::debug!(target: LOG, node = %inner.node, peer = %peer, "link up");
    Ok(link)
}

async fn read_loop(inner: Arc<Inner>, link: Arc<Link>, mut rd: OwnedReadHalf, mut buf: BytesMut) {
    let reason = run_reader(&inner, &link, &mut rd, &mut buf).await;
    let quiet = link.closed.is_cancelled() || reason.is_clean_close();
    let reason = &reason as &dyn std::error::Error;
    if quiet {
        tracing::debug!(target: LOG, node = %inner.node, peer = %link.peer, reason, "link closed");
    } else {
        tracing::warn!(target: LOG, node = %inner.node, peer = %link.peer, reason, "link closed");
    }
    link.closed.cancel();
    lock(&link.pending).clear();
    lock(&link.pings).clear();
    inner.link_closed(&link);
}

async fn run_reader(
    inner: &Arc<Inner>,
    link: &Arc<Link>,
    rd: &mut OwnedReadHalf,
    buf: &mut BytesMut,
) -> LinkError {
    let mut got_snapshot = false;
    let interval = inner.cfg.ping_interval;
    let mut tick = tokio::time::interval_at(Instant::now() + interval, interval);
    let mut last_rx = Instant::now();
    let max = inner.cfg.max_frame;
    let closed = link.closed.cancelled();
    tokio::pin!(closed);
    loop {
        {
            // The replies to the requests of this read leave in one write.
            let _cork = link.out.cork();
            loop {
                match Frame::decode(buf, max) {
                    Ok(Some(frame)) => {
                        if let Err(reason) = handle(inner, link, frame, &mut got_snapshot) {
                            return reason;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => return e.into(),
                }
            }
        }
        if buf.capacity() - buf.len() < 8 * 1024 {
            buf.reserve(64 * 1024);
        }
        tokio::select! {
            // Fixed order: no random start per wake-up, and data first.
            biased;
            r = rd.read_buf(buf) => match r {
                Ok(0) => return LinkError::PeerClosed,
                Ok(_) => last_rx = Instant::now(),
                Err(e) => return LinkError::Read(e),
            },
            () = &mut closed => return LinkError::ClosedHere,
            _ = tick.tick() => {
                if last_rx.elapsed() > interval * 3 {
                    return LinkError::Silent(last_rx.elapsed());
                }
                let _ = link.out.try_send(&Frame::empty(Kind::Ping, 0));
            }
        }
    }
}

fn handle(
    inner: &Arc<Inner>,
    link: &Arc<Link>,
    frame: Frame,
    got_snapshot: &mut bool,
) -> Result<(), LinkError> {
    if !*got_snapshot && !matches!(frame.kind, Kind::TableSnapshot | Kind::Ping | Kind::Pong) {
        return Err(LinkError::Unexpected(
            frame.kind,
            "before the table snapshot",
        ));
    }
    match frame.kind {
        Kind::Hello | Kind::Auth => {
            return Err(LinkError::Unexpected(frame.kind, "after the handshake"));
        }
        Kind::TableSnapshot => {
            if *got_snapshot {
                return Err(LinkError::Unexpected(frame.kind, "a second time"));
            }
            let snap: TableSnapshot = frame.parse()?;
            *lock(&link.remote_topics) = snap.topics.into_iter().collect();
            inner.add_remote_entries(link, snap.entries);
            *got_snapshot = true;
        }
        Kind::TableDelta => {
            let delta: TableDelta = frame.parse()?;
            inner.remove_remote_entries(link, Some(&delta.removed));
            inner.add_remote_entries(link, delta.added);
        }
        Kind::Subscribe => {
            let t: Topic = frame.parse()?;
            lock(&link.remote_topics).insert(t.topic);
        }
        Kind::Unsubscribe => {
            let t: Topic = frame.parse()?;
            lock(&link.remote_topics).remove(&t.topic);
        }
        Kind::Request => {
            let (req, handler) = inner.decode_request(frame.payload).map_err(|reason| {
                crate::codec::FrameError::Payload {
                    kind: Kind::Request,
                    reason,
                }
            })?;
            serve_request(inner, link, frame.id, req, handler);
        }
        Kind::Response => {
            // The caller decodes the reply, in its own task and into the form it wants; a
            // reply it cannot decode fails that call only.
            if let Some(tx) = lock(&link.pending).remove(&frame.id) {
                let _ = tx.send(frame.payload);
            }
        }
        Kind::Cancel => {
            let handle = lock(&link.serving).remove(&frame.id);
            if let Some(h) = handle {
                h.abort();
            }
        }
        Kind::Event => {
            let ev: EventMsg = frame.parse()?;
            inner.deliver_local(&ev.topic, ev.data);
        }
        Kind::Ping => {
            let _ = link.out.try_send(&Frame::empty(Kind::Pong, frame.id));
        }
        Kind::Pong => {
            if let Some(tx) = lock(&link.pings).remove(&frame.id) {
                let _ = tx.send(());
            }
        }
        Kind::Goaway => {
            let g: Goaway = frame.parse()?;
            if g.ack {
                link.goaway_acked.store(true, Ordering::Release);
                inner.link_changed();
            } else {
                tracing::debug!(target: LOG, node = %inner.node, peer = %link.peer, reason = %g.reason, "peer drains");
                {
                    let _gate = lock(&link.gate);
                    link.draining.store(true, Ordering::Release);
                    link.send_control(Frame::with(
                        Kind::Goaway,
                        0,
                        &Goaway {
                            reason: "ack".into(),
                            ack: true,
                        },
                    ));
                }
                inner.remove_remote_entries(link, None);
            }
        }
    }
    Ok(())
}

struct ServingGuard {
    inner: Arc<Inner>,
    link: Arc<Link>,
    id: u64,
}

impl Drop for ServingGuard {
    fn drop(&mut self) {
        lock(&self.link.serving).remove(&self.id);
        self.link.serving_count.fetch_sub(1, Ordering::AcqRel);
        self.inner.serving_done();
    }
}

/// Start serving a request from the peer with the handler of the endpoint it names.
fn serve_request(
    inner: &Arc<Inner>,
    link: &Arc<Link>,
    id: u64,
    req: RequestMsg<Body>,
    handler: Option<EndpointHandler>,
) {
    let immediate = |result: Result<serde_json::Value, Error>| {
        let frame = Frame {
            kind: Kind::Response,
            id,
            payload: serve::response(result),
        };
        if let Err(QueueError::Full) = link.out.try_send(&frame) {
            let out = link.out.clone();
            tokio::spawn(async move {
                let _ = out.send(&frame).await;
            });
        }
    };
    if handler.is_some() && link.serving_count.load(Ordering::Acquire) >= inner.cfg.max_in_flight {
        immediate(Err(Error::too_many_requests(format!(
            "node {} is serving too many calls from this peer",
            inner.node
        ))));
        return;
    }
    let running = match serve::start(inner.node, handler, req, link.peer) {
        Served::Ready(result) => {
            immediate(result);
            return;
        }
        Served::Running(running) => running,
    };
    link.serving_count.fetch_add(1, Ordering::AcqRel);
    inner.serving_started();
    let guard = ServingGuard {
        inner: inner.clone(),
        link: link.clone(),
        id,
    };
    let mut serving = lock(&link.serving);
    let task = tokio::spawn(async move {
        let frame = Frame {
            kind: Kind::Response,
            id,
            payload: serve::response(running.finish().await),
        };
        let _ = guard.link.out.send(&frame).await;
        drop(guard);
    });
    serving.insert(id, task.abort_handle());
}
