//! axon's sockets over AMP frames: the responder and publisher (servers), the requester and
//! subscriber (clients, one TCP connection per discovered server).
//!
//! - request `[j:<request>, s:<msgId>]`, reply `[j:<err or null>, j:<result>, s:<msgId>]`;
//! - event `[s:message::<namespace>::<topic>, j:<data>]`, from the publisher to every
//!   connected subscriber.
//!
//! Unlike axon: every write queue is bounded, a frame has a size limit, a dropped connection
//! fails its pending requests at once (503) instead of leaving them to their timeout, and a
//! request without a `type` gets a BadRequest instead of silence.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use plume::Error;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore, mpsc, oneshot};
use tokio::time::{Instant, timeout_at};

use crate::amp::{self, Arg, FrameDecoder};
use crate::fd::{error_from_wire, error_to_wire};

/// Frames queued per connection before writers wait (or, for events, drop).
const QUEUE: usize = 1024;
/// Requests served at once per connection.
const MAX_IN_FLIGHT: usize = 256;
/// Connections a responder or publisher keeps at once; more are closed at once.
const MAX_CONNECTIONS: usize = 1024;

/// Accept the next connection, closing those over the `open` limit (bounded cost per connection
/// attempt) and pausing briefly after an accept error (out of descriptors) instead of spinning.
async fn accept(
    listener: &TcpListener,
    open: &Arc<Semaphore>,
) -> (TcpStream, SocketAddr, tokio::sync::OwnedSemaphorePermit) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => match open.clone().try_acquire_owned() {
                Ok(permit) => {
                    let _ = stream.set_nodelay(true);
                    return (stream, peer, permit);
                }
                Err(_) => tracing::warn!(%peer, "cote: too many connections, one refused"),
            },
            Err(e) => {
                tracing::warn!(error = %e, "cote: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Write queued frames to a socket until the queue closes or a write fails.
fn spawn_writer(mut write: OwnedWriteHalf, mut rx: mpsc::Receiver<Bytes>) {
    tokio::spawn(async move {
        while let Some(frame) = rx.recv().await {
            if write.write_all(&frame).await.is_err() {
                return;
            }
        }
        let _ = write.shutdown().await;
    });
}

/// Read frames until the stream ends or breaks; each frame's arguments go to `on_frame`.
async fn read_frames(
    mut read: OwnedReadHalf,
    max_frame: usize,
    peer: SocketAddr,
    mut on_frame: impl FnMut(Vec<Arg>),
) {
    let mut dec = FrameDecoder::new(max_frame);
    loop {
        loop {
            match dec.next_frame() {
                Ok(Some(raw)) => match amp::decode_args(raw) {
                    Ok(args) => on_frame(args),
                    Err(e) => tracing::debug!(%peer, error = %e, "cote: frame dropped"),
                },
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(%peer, error = %e, "cote: bad AMP stream, closing");
                    return;
                }
            }
        }
        dec.buffer().reserve(16 * 1024);
        match read.read_buf(dec.buffer()).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// What a responder does with a request: the result, or the error value to send.
pub type RepHandler = Arc<dyn Fn(Value) -> BoxFuture<'static, Result<Value, Error>> + Send + Sync>;

/// Serve axon requests on `listener` until the task is aborted.
pub async fn serve_responder(listener: TcpListener, handler: RepHandler, max_frame: usize) {
    let open = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (stream, peer, permit) = accept(&listener, &open).await;
        let handler = handler.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let (read, write) = stream.into_split();
            let (tx, rx) = mpsc::channel::<Bytes>(QUEUE);
            spawn_writer(write, rx);
            let limit = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
            read_frames(read, max_frame, peer, move |mut args| {
                let Some(Arg::Str(id)) = args.pop() else {
                    tracing::debug!(%peer, "cote: request without a message id dropped");
                    return;
                };
                let request = match args.into_iter().next() {
                    Some(Arg::Json(v)) => v,
                    _ => Value::Null,
                };
                let (handler, tx, limit) = (handler.clone(), tx.clone(), limit.clone());
                tokio::spawn(async move {
                    let Ok(_permit) = limit.acquire_owned().await else {
                        return;
                    };
                    let result = if request.get("type").and_then(Value::as_str).is_some() {
                        handler(request).await
                    } else {
                        Err(Error::bad_request("a cote request needs a string type"))
                    };
                    let args = match result {
                        Ok(v) => [Arg::Json(Value::Null), Arg::Json(v), Arg::Str(id)],
                        Err(e) => [
                            Arg::Json(error_to_wire(&e)),
                            Arg::Json(Value::Null),
                            Arg::Str(id),
                        ],
                    };
                    if let Ok(frame) = amp::encode_args(&args) {
                        let _ = tx.send(frame).await;
                    }
                });
            })
            .await;
        });
    }
}

/// A publisher: every event goes to every connected subscriber.
#[derive(Clone)]
pub struct Publisher {
    namespace: Option<String>,
    subs: Arc<Mutex<Vec<(u64, mpsc::Sender<Bytes>)>>>,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("namespace", &self.namespace)
            .field("subscribers", &lock(&self.subs).len())
            .finish()
    }
}

/// Frames a new subscriber receives first (the services publisher's descriptors).
pub type Greeting = Arc<dyn Fn() -> Vec<(String, Value)> + Send + Sync>;

impl Publisher {
    /// A publisher accepting subscribers on `listener`; each new one first gets `greeting`.
    pub fn serve(listener: TcpListener, namespace: Option<String>, greeting: Greeting) -> Self {
        let publisher = Publisher {
            namespace,
            subs: Arc::default(),
        };
        let p = publisher.clone();
        tokio::spawn(async move {
            let open = Arc::new(Semaphore::new(MAX_CONNECTIONS));
            for id in 0u64.. {
                let (stream, peer, permit) = accept(&listener, &open).await;
                let (read, write) = stream.into_split();
                let (tx, rx) = mpsc::channel::<Bytes>(QUEUE);
                spawn_writer(write, rx);
                for (topic, data) in greeting() {
                    if let Some(frame) = p.frame(&topic, &data) {
                        let _ = tx.try_send(frame);
                    }
                }
                lock(&p.subs).push((id, tx));
                // Subscribers send nothing; reading tells when they leave (dropping their
                // queue ends the writer).
                let subs = p.subs.clone();
                tokio::spawn(async move {
                    read_frames(read, 1024, peer, |_| {}).await;
                    lock(&subs).retain(|(i, _)| *i != id);
                    drop(permit);
                });
            }
        });
        publisher
    }

    fn frame(&self, topic: &str, data: &Value) -> Option<Bytes> {
        let topic = match &self.namespace {
            Some(ns) => format!("message::{ns}::{topic}"),
            None => format!("message::{topic}"),
        };
        amp::encode_args(&[Arg::Str(topic), Arg::Json(data.clone())]).ok()
    }

    /// Send an event to every subscriber (fire and forget: a subscriber whose queue is full
    /// misses it, with a log).
    pub fn publish(&self, topic: &str, data: &Value) {
        let Some(frame) = self.frame(topic, data) else {
            return;
        };
        lock(&self.subs).retain(|(_, tx)| match tx.try_send(frame.clone()) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!(topic, "cote: a slow subscriber missed an event");
                true
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        });
    }

    /// Subscribers connected now.
    pub fn subscribers(&self) -> usize {
        lock(&self.subs).len()
    }
}

/// What a pending request learns: its reply, or that its connection died first.
enum Outcome {
    Reply(Result<Value, Error>),
    Lost,
}

/// One requester connection to a responder.
struct ReqConn {
    iid: String,
    tx: mpsc::Sender<Bytes>,
    pending: Mutex<HashMap<String, oneshot::Sender<Outcome>>>,
    alive: AtomicBool,
}

impl ReqConn {
    /// The connection is dead: no new request goes to it, and every pending one learns so.
    fn fail_all(&self) {
        self.alive.store(false, Ordering::Release);
        let pending: Vec<_> = lock(&self.pending).drain().collect();
        for (_, tx) in pending {
            let _ = tx.send(Outcome::Lost);
        }
    }
}

fn lost() -> Error {
    Error::unavailable("the connection to the feathers-distributed responder was lost")
}

fn timed_out() -> Error {
    Error::timeout("Request timed out.")
}

/// A requester: requests round-robin over its live responder connections.
#[derive(Clone)]
pub struct Requester {
    inner: Arc<ReqInner>,
}

struct ReqInner {
    conns: Mutex<Vec<Arc<ReqConn>>>,
    next: AtomicUsize,
    counter: AtomicU64,
    prefix: String,
    ready: Notify,
    waiting: AtomicUsize,
    max_waiting: usize,
    max_frame: usize,
}

impl std::fmt::Debug for Requester {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Requester")
            .field("connections", &self.connections())
            .finish()
    }
}

impl Requester {
    /// A requester with no connection yet.
    pub fn new(max_waiting: usize, max_frame: usize) -> Self {
        Requester {
            inner: Arc::new(ReqInner {
                conns: Mutex::default(),
                next: AtomicUsize::new(0),
                counter: AtomicU64::new(0),
                prefix: std::process::id().to_string(),
                ready: Notify::new(),
                waiting: AtomicUsize::new(0),
                max_waiting,
                max_frame,
            }),
        }
    }

    /// Live connections.
    pub fn connections(&self) -> usize {
        lock(&self.inner.conns)
            .iter()
            .filter(|c| c.alive.load(Ordering::Acquire))
            .count()
    }

    /// Connect to the responder `iid` at `addr`; `on_close` runs when the connection ends.
    pub async fn connect(
        &self,
        iid: String,
        addr: SocketAddr,
        on_close: impl FnOnce() + Send + 'static,
    ) -> std::io::Result<()> {
        if lock(&self.inner.conns).iter().any(|c| c.iid == iid) {
            return Ok(());
        }
        let stream = TcpStream::connect(addr).await?;
        let _ = stream.set_nodelay(true);
        let (read, write) = stream.into_split();
        let (tx, rx) = mpsc::channel::<Bytes>(QUEUE);
        spawn_writer(write, rx);
        let conn = Arc::new(ReqConn {
            iid,
            tx,
            pending: Mutex::default(),
            alive: AtomicBool::new(true),
        });
        lock(&self.inner.conns).push(conn.clone());
        self.inner.ready.notify_waiters();
        let inner = self.inner.clone();
        let max_frame = self.inner.max_frame;
        tokio::spawn(async move {
            let c = conn.clone();
            read_frames(read, max_frame, addr, move |mut args| {
                let Some(Arg::Str(id)) = args.pop() else {
                    return;
                };
                let Some(tx) = lock(&c.pending).remove(&id) else {
                    tracing::debug!(id, "cote: a late reply dropped");
                    return;
                };
                let mut args = args.into_iter();
                let err = args.next();
                let result = match err {
                    Some(Arg::Json(Value::Null)) | None => match args.next() {
                        Some(Arg::Json(v)) => Ok(v),
                        Some(Arg::Str(s)) => Ok(Value::String(s)),
                        _ => Ok(Value::Null),
                    },
                    Some(Arg::Json(e)) => Err(error_from_wire(e)),
                    Some(Arg::Str(s)) => Err(error_from_wire(Value::String(s))),
                    Some(Arg::Raw(_)) => Err(Error::general_error("a binary error reply")),
                };
                let _ = tx.send(Outcome::Reply(result));
            })
            .await;
            conn.fail_all();
            lock(&inner.conns).retain(|c| !Arc::ptr_eq(c, &conn));
            on_close();
        });
        Ok(())
    }

    /// Close the connection to `iid` (its responder is gone).
    pub fn disconnect(&self, iid: &str) {
        let gone: Vec<_> = {
            let mut conns = lock(&self.inner.conns);
            let (gone, kept) = conns.drain(..).partition(|c| c.iid == iid);
            *conns = kept;
            gone
        };
        for c in gone {
            c.fail_all();
        }
    }

    fn pick(&self) -> Option<Arc<ReqConn>> {
        let conns = lock(&self.inner.conns);
        let live: Vec<&Arc<ReqConn>> = conns
            .iter()
            .filter(|c| c.alive.load(Ordering::Acquire))
            .collect();
        if live.is_empty() {
            return None;
        }
        let n = self.inner.next.fetch_add(1, Ordering::Relaxed);
        Some(live[n % live.len()].clone())
    }

    /// Send `request` to one responder and wait for its reply until `timeout`. With no
    /// responder connected the call waits (bounded in number) for one. When the responder's
    /// connection dies before it answers, the call fails with `Unavailable`, or, when `retry`
    /// (an idempotent call), goes to another responder while the deadline allows.
    pub async fn send(
        &self,
        request: &Value,
        timeout: Duration,
        retry: bool,
    ) -> Result<Value, Error> {
        let deadline = Instant::now() + timeout;
        loop {
            let conn = self.connection(deadline).await?;
            match self.send_on(&conn, request, deadline).await? {
                Outcome::Reply(result) => return result,
                Outcome::Lost if retry => {
                    tracing::debug!(iid = conn.iid, "cote: responder lost, retrying elsewhere");
                }
                Outcome::Lost => return Err(lost()),
            }
        }
    }

    /// A live connection, waiting (until `deadline`) for one.
    async fn connection(&self, deadline: Instant) -> Result<Arc<ReqConn>, Error> {
        loop {
            let notified = self.inner.ready.notified();
            if let Some(c) = self.pick() {
                return Ok(c);
            }
            if self.inner.waiting.fetch_add(1, Ordering::AcqRel) >= self.inner.max_waiting {
                self.inner.waiting.fetch_sub(1, Ordering::AcqRel);
                return Err(Error::unavailable(
                    "too many calls are waiting for a feathers-distributed responder",
                ));
            }
            let woke = timeout_at(deadline, notified).await;
            self.inner.waiting.fetch_sub(1, Ordering::AcqRel);
            if woke.is_err() {
                return Err(timed_out());
            }
        }
    }

    async fn send_on(
        &self,
        conn: &ReqConn,
        request: &Value,
        deadline: Instant,
    ) -> Result<Outcome, Error> {
        let n = self.inner.counter.fetch_add(1, Ordering::Relaxed);
        let id = format!("{}:{n}", self.inner.prefix);
        let frame = amp::encode_args(&[Arg::Json(request.clone()), Arg::Str(id.clone())])
            .map_err(Error::internal)?;
        let (tx, rx) = oneshot::channel();
        lock(&conn.pending).insert(id.clone(), tx);
        // fail_all marks the connection dead before it drains: a request registered after the
        // drain sees the mark here.
        if !conn.alive.load(Ordering::Acquire) {
            lock(&conn.pending).remove(&id);
            return Ok(Outcome::Lost);
        }
        match timeout_at(deadline, conn.tx.send(frame)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => {
                lock(&conn.pending).remove(&id);
                return Ok(Outcome::Lost);
            }
            Err(_) => {
                lock(&conn.pending).remove(&id);
                return Err(timed_out());
            }
        }
        match timeout_at(deadline, rx).await {
            Ok(Ok(outcome)) => Ok(outcome),
            Ok(Err(_)) => Ok(Outcome::Lost),
            Err(_) => {
                lock(&conn.pending).remove(&id);
                Err(timed_out())
            }
        }
    }
}

/// Connect a subscriber to the publisher at `addr`: every event (topic without its
/// `message::<namespace>::` prefix, data) goes to `on_event`; `on_close` runs at the end.
pub async fn subscribe(
    addr: SocketAddr,
    namespace: Option<String>,
    max_frame: usize,
    on_event: impl Fn(&str, Value) + Send + Sync + 'static,
    on_close: impl FnOnce() + Send + 'static,
) -> std::io::Result<tokio::task::AbortHandle> {
    let stream = TcpStream::connect(addr).await?;
    let _ = stream.set_nodelay(true);
    let (read, write) = stream.into_split();
    let task = tokio::spawn(async move {
        // Keep the write half open while reading: closing it ends the subscription.
        let _write = write;
        let prefix = match &namespace {
            Some(ns) => format!("message::{ns}::"),
            None => "message::".to_owned(),
        };
        read_frames(read, max_frame, addr, |args| {
            let mut args = args.into_iter();
            let (Some(Arg::Str(topic)), Some(Arg::Json(data))) = (args.next(), args.next()) else {
                tracing::debug!(%addr, "cote: an event frame of another shape dropped");
                return;
            };
            match topic.strip_prefix(&prefix) {
                Some(t) => on_event(t, data),
                None => tracing::debug!(%addr, topic, "cote: an event of another namespace"),
            }
        })
        .await;
        on_close();
    });
    Ok(task.abort_handle())
}
