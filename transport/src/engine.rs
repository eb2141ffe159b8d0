//! The contract between the mesh and the engines that carry it.
//!
//! The [`Mesh`](crate::Mesh) keeps the service table, picks providers, retries and drains; an
//! [`Engine`] moves table deltas, events and calls between nodes (TCP peer links in
//! [`tcp`](crate::tcp), NATS in [`nats`](crate::nats), channels in [`memory`](crate::memory)).
//!
//! - mesh → engine: [`Engine`] (announce a table delta, subscribe, publish, drain, close) and,
//!   per provider, [`Remote`] (call it, ping it, is it live);
//! - engine → mesh: [`Sink`] (a provider appeared or left, an event arrived, serve a call).
//!
//! Neither side names the other's types: engines see only this module and the wire types of
//! [`protocol`](crate::protocol).

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt;
use futures::future::BoxFuture;
use serde_json::Value;
use tokio::sync::Notify;
use tokio::time::{Instant, timeout_at};

use crate::answer::{Answer, Answering, Encoded};
use crate::discovery::NodeId;
use crate::protocol::{Entry, FrameError, ResponseMsg, TableDelta, TableSnapshot, encode_payload};
use plume::Error;
use plume::trace::TraceContext;

pub(crate) use crate::error::CallError;

/// Settings shared by the mesh and its engine.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// The default call timeout.
    pub(crate) timeout: Duration,
    /// How a call picks among providers.
    pub(crate) balance: Balance,
    /// The maximum frame length.
    pub(crate) max_frame: usize,
    /// Bytes queued per link before callers wait.
    pub(crate) write_buffer: usize,
    /// Calls in flight per link (or per node, on NATS), each way.
    pub(crate) max_in_flight: usize,
    /// Calls waiting for a provider to appear, at most.
    pub(crate) max_waiting: usize,
    /// Keepalive ping interval of a link.
    pub(crate) ping_interval: Duration,
    /// How long a link's handshake may take.
    pub(crate) handshake_timeout: Duration,
    /// How long shutdown waits for calls in flight.
    pub(crate) drain_timeout: Duration,
}

/// How a call picks among the live providers of a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Balance {
    /// Each call goes to the next provider in turn.
    #[default]
    RoundRobin,
    /// Each call goes to the provider with the fewest calls from this node in flight.
    LeastPending,
}

/// Which engine carries a mesh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EngineKind {
    /// TCP peer links.
    Tcp,
    /// A NATS server.
    Nats,
    /// In-process channels.
    Memory,
}

/// Why a provider left the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Removal {
    /// The node withdrew the endpoint (or is draining, and routes nothing new to it).
    Withdrawn,
    /// The node is gone: its link died, or it fell silent.
    NodeLost,
}

/// One call handed to a [`Remote`]. (`name` and `idempotent` are read by the NATS engine only.)
#[derive(Debug)]
#[cfg_attr(not(feature = "nats"), allow(dead_code))]
pub(crate) struct Call<'a> {
    /// The endpoint name.
    pub(crate) name: &'a str,
    /// The encoded request (`RequestMsg`).
    pub(crate) payload: Bytes,
    /// When the caller stops waiting.
    pub(crate) deadline: Instant,
    /// The call may run twice.
    pub(crate) idempotent: bool,
}

/// A way to reach one provider node, made by an engine and kept in the mesh's route table.
pub(crate) trait Remote: Send + Sync + 'static {
    /// The node.
    fn node(&self) -> NodeId;
    /// Whether new calls may go to it (not closed, not draining).
    fn is_live(&self) -> bool;
    /// Calls from this node in flight to it (for [`Balance::LeastPending`](crate::Balance)).
    fn pending(&self) -> usize;
    /// Send a call; the reply is an encoded `ResponseMsg`, which the caller decodes into the
    /// form it wants.
    fn call<'a>(&'a self, call: Call<'a>) -> BoxFuture<'a, Result<Bytes, CallError>>;
    /// Round-trip time.
    fn ping(&self, deadline: Instant) -> BoxFuture<'_, Result<Duration, Error>>;
    /// Whether a call sent here reaches [`node`](Self::node) itself (a peer link does), rather
    /// than whichever provider of the endpoint the engine picks (NATS's queue groups). Calls
    /// by partition key and broadcasts need the node itself, through [`Engine::direct`]
    /// otherwise.
    fn reaches_the_node(&self) -> bool {
        true
    }
}

/// What an engine does for the mesh.
pub(crate) trait Engine: Send + Sync + 'static {
    /// Which engine this is.
    fn kind(&self) -> EngineKind;
    /// Begin: learn of peers and report them to `sink` (called once).
    fn start(self: Arc<Self>, sink: Arc<dyn Sink>);
    /// This node's table changed. Called with the mesh's table locked, so deltas are announced
    /// in order and after any snapshot taken with [`Sink::with_table`].
    fn announce(&self, delta: &TableDelta);
    /// This node has its first subscriber of `topic` (called with the table locked).
    fn subscribe(&self, topic: &str);
    /// This node's last subscriber of `topic` left (called with the table locked).
    fn unsubscribe(&self, topic: &str);
    /// Send an event to the other nodes that subscribed to `topic` (fire and forget), with the
    /// trace context of the call that published it, if any.
    fn publish(&self, topic: &str, data: &Value, trace: Option<TraceContext>);
    /// A way to reach `node` itself, for [`CallBuilder::on`](crate::CallBuilder::on) and pings.
    fn direct(&self, node: NodeId) -> Option<Arc<dyn Remote>>;
    /// The nodes this node has a link with.
    fn peers(&self) -> Vec<NodeId>;
    /// Every other node this node knows of, linked or not (the mesh monitor's list): on NATS,
    /// the nodes whose hellos it hears; elsewhere its links.
    fn known_nodes(&self) -> Vec<NodeId> {
        self.peers()
    }
    /// Stop taking new calls: tell the peers, and wait (until `deadline`) until they route
    /// nothing new here. True when they all confirmed.
    fn drain(&self, deadline: Instant) -> BoxFuture<'_, bool>;
    /// Close every connection, after flushing what is queued (bounded).
    fn close(&self) -> BoxFuture<'_, ()>;
}

/// What an engine reports to the mesh.
pub(crate) trait Sink: Send + Sync + 'static {
    /// Run `f` with this node's table, with the table locked: every delta announced after `f`
    /// returns is newer than the snapshot `f` saw.
    fn with_table(&self, f: &mut dyn FnMut(TableSnapshot));
    /// The node behind `via` provides `entries` (or re-describes them).
    fn provider_added(&self, via: &Arc<dyn Remote>, key: &str, entries: Vec<Entry>);
    /// The node behind `via` no longer provides `names` (all its endpoints when `None`).
    fn provider_removed(&self, via: &Arc<dyn Remote>, names: Option<&[String]>, why: Removal);
    /// An event arrived from node `from` (the link's peer; on NATS, the node the message
    /// names), in the trace of the call that published it when it says one.
    fn deliver(&self, from: NodeId, topic: &str, data: Value, trace: Option<TraceContext>);
    /// Serve a call from node `from`: `payload` is an encoded `RequestMsg`. `admit` sees the
    /// endpoint name and whether this node provides it, and may refuse the call (the refusal is
    /// the answer). Err: the payload is not a request (`FrameError::Payload`).
    fn serve(
        &self,
        payload: Bytes,
        from: NodeId,
        admit: &mut dyn FnMut(&str, bool) -> Result<(), Error>,
    ) -> Result<Served, FrameError>;
    /// The names of the endpoints this node provides, sorted (for NATS's `$SRV INFO`).
    #[cfg_attr(not(feature = "nats"), allow(dead_code))]
    fn endpoint_names(&self) -> Vec<String>;
    /// Calls being served, for the drain.
    fn activity(&self) -> &Arc<Activity>;
}

/// A call being served: answered on the first poll, or still running.
pub(crate) enum Served {
    /// The answer, ready at once.
    Ready(Result<Answer, Error>),
    /// A handler that was not ready at once; [`Running::finish`] drives it to its answer.
    Running(Running),
}

/// A handler future with its deadline.
pub(crate) struct Running {
    pub(crate) fut: Answering,
    pub(crate) deadline: Instant,
    /// The caller takes the result as JSON text: a value whose text is at most this many
    /// bytes is answered in the JSON form (0: never).
    pub(crate) json_max: usize,
}

impl Running {
    /// The answer: the handler's (in the JSON form when the caller asked for it),
    /// GeneralError when it panics, Timeout past the deadline.
    pub(crate) async fn finish(self) -> Result<Answer, Error> {
        match timeout_at(self.deadline, AssertUnwindSafe(self.fut).catch_unwind()).await {
            Ok(Ok(r)) if self.json_max > 0 => crate::answer::in_json_form(r, self.json_max),
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(panicked()),
            Err(_) => Err(Error::timeout(
                "the call did not finish before its deadline",
            )),
        }
    }
}

/// The answer to a call whose payload is not a request.
pub(crate) fn malformed(e: &FrameError) -> Error {
    let reason = match e {
        FrameError::Payload { reason, .. } => reason.as_str(),
        _ => "not a request",
    };
    Error::bad_request(format!("malformed call: {reason}"))
}

/// The answer of a handler that panicked.
pub(crate) fn panicked() -> Error {
    Error::general_error("the handler panicked")
}

/// The encoded [`ResponseMsg`] carrying `result`.
pub(crate) fn response(result: Result<Answer, Error>) -> Bytes {
    let msg = match result {
        // Encoded by the handler: its bytes are the response.
        Ok(Answer::Encoded(e)) => return e.into_response(),
        // Written directly (the bytes serde would write; see `protocol::value`).
        Ok(Answer::Value(v)) => match Encoded::of_value(&v) {
            Ok(e) => return e.into_response(),
            Err(_) => ResponseMsg {
                ok: Some(v),
                err: None,
            },
        },
        Err(e) => ResponseMsg {
            ok: None,
            err: Some(e.to_json()),
        },
    };
    encode_payload(&msg)
}

/// Counts one call in a counter while it lives (pending calls, for balancing).
#[derive(Debug)]
pub(crate) struct Counted<'a>(&'a AtomicUsize);

impl<'a> Counted<'a> {
    /// Count one more in `counter` until the guard drops.
    pub(crate) fn new(counter: &'a AtomicUsize) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        Self(counter)
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Calls in flight through this node, both ways, and the signal the drain waits on.
#[derive(Debug, Default)]
pub(crate) struct Activity {
    serving: AtomicUsize,
    outgoing: AtomicUsize,
    draining: AtomicBool,
    changed: Notify,
}

/// Counts one outgoing call while it lives (see [`Activity`]).
#[derive(Debug)]
pub(crate) struct Busy<'a>(&'a Activity);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.outgoing.fetch_sub(1, Ordering::AcqRel);
        self.0.ended();
    }
}

/// Counts one call being served while it lives (see [`Activity`]).
#[derive(Debug)]
pub(crate) struct Serving(Arc<Activity>);

impl Drop for Serving {
    fn drop(&mut self) {
        self.0.serving.fetch_sub(1, Ordering::AcqRel);
        self.0.ended();
    }
}

impl Activity {
    /// From now on every ended call wakes the drain.
    pub(crate) fn start_draining(&self) -> bool {
        self.draining.swap(true, Ordering::AcqRel)
    }

    /// Whether the node is draining.
    pub(crate) fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    fn ended(&self) {
        // Only a drain waits for calls to end: no wake-up cost on the hot path otherwise.
        if self.draining.load(Ordering::Acquire) {
            self.changed.notify_waiters();
        }
    }

    /// Count a call being served until the guard drops.
    pub(crate) fn serving(self: &Arc<Self>) -> Serving {
        self.serving.fetch_add(1, Ordering::AcqRel);
        Serving(self.clone())
    }

    /// Count a call this node makes until the guard drops.
    pub(crate) fn outgoing(&self) -> Busy<'_> {
        self.outgoing.fetch_add(1, Ordering::AcqRel);
        Busy(self)
    }

    /// No call is in flight either way.
    pub(crate) fn is_idle(&self) -> bool {
        self.serving.load(Ordering::Acquire) == 0 && self.outgoing.load(Ordering::Acquire) == 0
    }

    /// Calls being served.
    pub(crate) fn serving_count(&self) -> usize {
        self.serving.load(Ordering::Acquire)
    }

    /// Something the drain waits for changed (a call ended, a peer confirmed a goaway).
    pub(crate) fn notify(&self) {
        self.changed.notify_waiters();
    }

    /// Wait until `cond` holds (re-checked on every [`notify`](Self::notify), and every 20 ms
    /// as a safety net) or the deadline passes; true when it holds.
    pub(crate) async fn wait_until(&self, deadline: Instant, cond: impl Fn() -> bool) -> bool {
        loop {
            let notified = self.changed.notified();
            if cond() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            let _ = timeout_at(
                deadline.min(Instant::now() + Duration::from_millis(20)),
                notified,
            )
            .await;
        }
    }
}
