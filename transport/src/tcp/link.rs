//! One TCP link to one peer: its reader, its pending calls, serving the peer's calls.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use futures::future::BoxFuture;
use tokio::io::AsyncReadExt;
use tokio::net::tcp::OwnedReadHalf;
use tokio::sync::{Semaphore, oneshot};
use tokio::task::{AbortHandle, JoinHandle};
use tokio::time::{Instant, timeout, timeout_at};
use tokio_util::sync::CancellationToken;

use super::TcpEngine;
use super::handshake::Handshaken;
use super::noise::Opener;
use super::outbox::{Outbox, QueueError};
use super::pending::{Expired, Pending};
use crate::discovery::NodeId;
use crate::engine::{Call, CallError, Counted, Remote, Removal, Served, Sink, response};
use crate::error::LinkError;
use crate::protocol::{
    EventMsg, Frame, FrameError, Goaway, HEADER_LEN, Kind, TableDelta, TableSnapshot, Topic,
};
use crate::sync::lock;
use plume::Error;
use plume::trace::TraceContext;

const LOG: &str = "plume::mesh";
/// Most topics a peer may subscribe to on one link; beyond them the link closes.
pub(crate) const MAX_REMOTE_TOPICS: usize = 4096;

/// A live link to a peer.
#[derive(Debug)]
pub(crate) struct Link {
    pub(crate) peer: NodeId,
    pub(crate) key: String,
    pub(crate) out: Arc<Outbox>,
    /// Our calls in flight by id, with their deadlines (kept by the link's sweeper).
    pending: Pending,
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
    /// The peer's calls we serve, by the peer's ids (foldhash with a random seed).
    serving: Mutex<HashMap<u64, AbortHandle, foldhash::fast::RandomState>>,
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
        let rx = self.pending.insert(id, deadline);
        let _guard = Counted::new(&self.pending_count);
        let frame = Frame {
            kind: Kind::Request,
            id,
            payload,
        };
        let need = HEADER_LEN + frame.payload.len();
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
                    self.pending.remove(id);
                    return Err(CallError::NotSent);
                }
                Err(QueueError::Full) => {
                    if timeout_at(deadline, self.out.wait_for_room(need))
                        .await
                        .is_err()
                    {
                        self.pending.remove(id);
                        return Err(CallError::Timeout);
                    }
                }
            }
        }
        // No timer of its own: the link's sweeper ends the call at its deadline (and tells
        // the peer to cancel it).
        let out = match rx.await {
            Ok(Ok(payload)) => Ok(payload),
            Ok(Err(Expired)) => Err(CallError::Timeout),
            Err(_) => Err(CallError::Lost),
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

/// Start a link over a handshaken connection: its writer and its reader.
pub(super) fn start(engine: &Arc<TcpEngine>, sink: &Arc<dyn Sink>, conn: Handshaken) -> Arc<Link> {
    let Handshaken {
        peer,
        key,
        rd,
        wr,
        buf,
        plain,
        cipher,
    } = conn;
    let (sealer, opener) = cipher.unzip();
    let closed = engine.shutdown.child_token();
    let out = Outbox::new(wr, engine.cfg.write_buffer, closed.clone(), sealer);
    let link = Arc::new(Link {
        peer,
        key,
        out,
        pending: Pending::default(),
        pings: Mutex::new(HashMap::new()),
        next_id: AtomicU64::new(1),
        pending_count: AtomicUsize::new(0),
        permits: Semaphore::new(engine.cfg.max_in_flight),
        remote_topics: Mutex::new(HashSet::new()),
        closed,
        ready: AtomicBool::new(false),
        draining: AtomicBool::new(false),
        gate: Mutex::new(()),
        goaway_acked: AtomicBool::new(false),
        serving: Mutex::new(HashMap::default()),
        serving_count: AtomicUsize::new(0),
        writer: Mutex::new(None),
    });
    let writer = tokio::spawn(link.out.clone().run_writer());
    tokio::spawn(sweep(link.clone()));
    *lock(&link.writer) = Some(writer);
    engine.register_link(sink.as_ref(), &link);
    let incoming = Incoming {
        rd,
        opener,
        raw: buf,
        plain,
    };
    tokio::spawn(read_loop(
        engine.clone(),
        sink.clone(),
        link.clone(),
        incoming,
    ));
    tracing::debug!(target: LOG, node = %engine.node, peer = %peer, "link up");
    link
}

/// The link's sweeper: ends its overdue calls with a timeout and cancels them at the peer,
/// until the link closes.
async fn sweep(link: Arc<Link>) {
    link.pending
        .run_sweeper(&link.closed, |id| {
            let _ = link.out.try_send(&Frame::empty(Kind::Cancel, id));
        })
        .await;
}

async fn read_loop(
    engine: Arc<TcpEngine>,
    sink: Arc<dyn Sink>,
    link: Arc<Link>,
    mut incoming: Incoming,
) {
    let via: Arc<dyn Remote> = link.clone();
    let reader = Reader {
        engine: &engine,
        sink: &sink,
        link: &link,
        via: &via,
    };
    let reason = reader.run(&mut incoming).await;
    let quiet = link.closed.is_cancelled() || reason.is_clean_close();
    let reason = &reason as &dyn std::error::Error;
    if quiet {
        tracing::debug!(target: LOG, node = %engine.node, peer = %link.peer, reason, "link closed");
    } else {
        tracing::warn!(target: LOG, node = %engine.node, peer = %link.peer, reason, "link closed");
    }
    link.closed.cancel();
    link.pending.clear();
    lock(&link.pings).clear();
    engine.link_closed(&link);
    sink.provider_removed(&via, None, Removal::NodeLost);
    sink.activity().notify();
}

/// The read side of a link: the socket and, on an encrypted link, what opens its records.
struct Incoming {
    rd: OwnedReadHalf,
    opener: Option<Opener>,
    /// Bytes read and not yet opened (encrypted links) or decoded (plain links).
    raw: BytesMut,
    /// Frames opened during the handshake, decoded first.
    plain: BytesMut,
}

impl Incoming {
    /// Move what was read into `buf` as plaintext frames.
    fn open(&mut self, buf: &mut BytesMut) -> Result<(), LinkError> {
        match &mut self.opener {
            None => {
                if buf.is_empty() {
                    std::mem::swap(buf, &mut self.raw);
                } else {
                    buf.extend_from_slice(&self.raw.split());
                }
            }
            Some(opener) => opener.open(&mut self.raw, buf)?,
        }
        Ok(())
    }

    /// Read from the socket once; 0 when the peer closed.
    async fn read(&mut self, buf: &mut BytesMut) -> std::io::Result<usize> {
        let into = if self.opener.is_some() {
            &mut self.raw
        } else {
            buf
        };
        if into.capacity() - into.len() < 8 * 1024 {
            into.reserve(64 * 1024);
        }
        self.rd.read_buf(into).await
    }
}

/// What a link's reader works with.
struct Reader<'a> {
    engine: &'a Arc<TcpEngine>,
    sink: &'a Arc<dyn Sink>,
    link: &'a Arc<Link>,
    /// The link as the route table knows it.
    via: &'a Arc<dyn Remote>,
}

impl Reader<'_> {
    async fn run(&self, incoming: &mut Incoming) -> LinkError {
        let link = self.link;
        let mut plain = std::mem::take(&mut incoming.plain);
        plain.reserve(64 * 1024);
        let buf = &mut plain;
        let mut got_snapshot = false;
        let interval = self.engine.cfg.ping_interval;
        let mut tick = tokio::time::interval_at(Instant::now() + interval, interval);
        let mut last_rx = Instant::now();
        let max = self.engine.cfg.max_frame;
        let closed = link.closed.cancelled();
        tokio::pin!(closed);
        loop {
            if let Err(e) = incoming.open(buf) {
                return e;
            }
            {
                // The replies to the requests of this read leave in one write.
                let _cork = link.out.cork();
                loop {
                    match Frame::decode(buf, max) {
                        Ok(Some(frame)) => {
                            if let Err(reason) = self.handle(frame, &mut got_snapshot) {
                                return reason;
                            }
                        }
                        Ok(None) => break,
                        Err(e) => return e.into(),
                    }
                }
            }
            tokio::select! {
                // Fixed order: no random start per wake-up, and data first.
                biased;
                r = incoming.read(buf) => match r {
                    Ok(0) => return LinkError::PeerClosed,
                    Ok(n) => {
                        crate::metrics::bytes_received(n);
                        last_rx = Instant::now();
                    }
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

    fn handle(&self, frame: Frame, got_snapshot: &mut bool) -> Result<(), LinkError> {
        let (link, sink) = (self.link, self.sink);
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
                if snap.topics.len() > MAX_REMOTE_TOPICS {
                    return Err(LinkError::TooMany("subscribed topics", MAX_REMOTE_TOPICS));
                }
                *lock(&link.remote_topics) = snap.topics.into_iter().collect();
                self.added(snap.entries);
                *got_snapshot = true;
            }
            Kind::TableDelta => {
                let delta: TableDelta = frame.parse()?;
                sink.provider_removed(self.via, Some(&delta.removed), Removal::Withdrawn);
                self.added(delta.added);
            }
            Kind::Subscribe => {
                let t: Topic = frame.parse()?;
                let mut topics = lock(&link.remote_topics);
                if topics.len() >= MAX_REMOTE_TOPICS && !topics.contains(&t.topic) {
                    return Err(LinkError::TooMany("subscribed topics", MAX_REMOTE_TOPICS));
                }
                topics.insert(t.topic);
            }
            Kind::Unsubscribe => {
                let t: Topic = frame.parse()?;
                lock(&link.remote_topics).remove(&t.topic);
            }
            Kind::Request => self.serve(frame)?,
            Kind::Response => {
                // The caller decodes the reply, in its own task and into the form it wants; a
                // reply it cannot decode fails that call only.
                if let Some(tx) = link.pending.take(frame.id) {
                    let _ = tx.send(Ok(frame.payload));
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
                let trace = ev.traceparent.as_deref().and_then(TraceContext::parse);
                sink.deliver(link.peer, &ev.topic, ev.data, trace);
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
                    sink.activity().notify();
                } else {
                    tracing::debug!(target: LOG, node = %self.engine.node, peer = %link.peer, reason = %g.reason, "peer drains");
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
                    sink.provider_removed(self.via, None, Removal::Withdrawn);
                }
            }
        }
        Ok(())
    }

    /// The peer provides `entries` (unless the link is closing or the peer draining).
    fn added(&self, entries: Vec<crate::protocol::Entry>) {
        let link = self.link;
        if entries.is_empty() || link.closed.is_cancelled() || link.draining.load(Ordering::Acquire)
        {
            return;
        }
        self.sink.provider_added(self.via, &link.key, entries);
    }

    /// Serve a request from the peer; its answer goes back on the link.
    fn serve(&self, frame: Frame) -> Result<(), FrameError> {
        let (engine, link, id) = (self.engine, self.link, frame.id);
        let immediate = |result: Result<crate::Answer, Error>| {
            let frame = Frame {
                kind: Kind::Response,
                id,
                payload: response(result),
            };
            if let Err(QueueError::Full) = link.out.try_send(&frame) {
                let out = link.out.clone();
                tokio::spawn(async move {
                    let _ = out.send(&frame).await;
                });
            }
        };
        let mut admit = |_: &str, provided: bool| {
            if provided && link.serving_count.load(Ordering::Acquire) >= engine.cfg.max_in_flight {
                return Err(Error::too_many_requests(format!(
                    "node {} is serving too many calls from this peer",
                    engine.node
                )));
            }
            Ok(())
        };
        let served = self.sink.serve(frame.payload, link.peer, &mut admit)?;
        let running = match served {
            Served::Ready(result) => {
                immediate(result);
                return Ok(());
            }
            Served::Running(running) => running,
        };
        link.serving_count.fetch_add(1, Ordering::AcqRel);
        let guard = ServingGuard {
            _serving: self.sink.activity().serving(),
            link: link.clone(),
            id,
        };
        let mut serving = lock(&link.serving);
        let task = tokio::spawn(async move {
            let frame = Frame {
                kind: Kind::Response,
                id,
                payload: response(running.finish().await),
            };
            let _ = guard.link.out.send(&frame).await;
            drop(guard);
        });
        serving.insert(id, task.abort_handle());
        Ok(())
    }
}

struct ServingGuard {
    _serving: crate::engine::Serving,
    link: Arc<Link>,
    id: u64,
}

impl Drop for ServingGuard {
    fn drop(&mut self) {
        lock(&self.link.serving).remove(&self.id);
        self.link.serving_count.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Remote for Link {
    fn node(&self) -> NodeId {
        self.peer
    }

    fn is_live(&self) -> bool {
        !self.closed.is_cancelled() && !self.draining.load(Ordering::Acquire)
    }

    fn pending(&self) -> usize {
        self.pending_count.load(Ordering::Relaxed)
    }

    fn call<'a>(&'a self, call: Call<'a>) -> BoxFuture<'a, Result<bytes::Bytes, CallError>> {
        Box::pin(self.request(call.payload, call.deadline))
    }

    fn ping(&self, deadline: Instant) -> BoxFuture<'_, Result<Duration, Error>> {
        Box::pin(Link::ping(self, deadline))
    }
}
