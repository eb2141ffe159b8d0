//! Making a call: wait (bounded) for a provider, pick one, send, retry what may be retried, keep
//! the deadline, and turn the outcome into the caller's result.

use std::sync::atomic::Ordering;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::watch;
use tokio::time::{Instant, timeout_at};

use super::balance::NoPick;
use std::sync::Arc;

use super::handler::{EndpointHandler, RawBody, RawRequest};
use super::reply::ReplyForm;
use super::table::Target;
use super::{CallOptions, Inner, LOG, Mesh};
use crate::discovery::NodeId;
use crate::engine::{Call, CallError, Counted, Remote};
use crate::protocol::{RequestOut, TraceparentText, encode_payload_in};
use plume::Error;
use plume::trace::TraceContext;
use tracing::Instrument;

/// How long a call waits before asking again when the engine says nobody listens yet.
pub(super) const NO_RESPONDERS_RETRY: Duration = Duration::from_millis(50);

/// The next hop of the caller's trace for one outgoing call (when the caller runs in a trace),
/// and its `call` span: a `trace`-level span that only an exporter (`plume-otlp`) wants, sent
/// as the client span whose id the provider's `serve` span names as its parent.
pub(super) fn next_hop(name: &str) -> (Option<TraceContext>, tracing::Span) {
    let Some(hop) = plume::trace::current().map(|ctx| ctx.child()) else {
        return (None, tracing::Span::none());
    };
    let span = plume::trace::hop_span(
        hop,
        || tracing::trace_span!(target: LOG, "call", trace_id = %hop.trace_id_field(), otel.kind = "client", endpoint = name),
    );
    (Some(hop), span)
}

/// The encoded request for `name`, with the time left until `deadline`, in the trace `hop`
/// ([`next_hop`]); `json`: the caller takes the result as JSON text.
pub(super) fn request_payload<B: Serialize + ?Sized>(
    name: &str,
    method: Option<&str>,
    body: &B,
    deadline: Instant,
    hop: Option<TraceContext>,
    json: bool,
) -> bytes::Bytes {
    let left = deadline.saturating_duration_since(Instant::now());
    // A request with a `traceparent` (its key, value and markers: 69 bytes) starts in a larger
    // buffer than the usual 256 bytes, which it would outgrow (a copy) at its last field.
    let capacity = if hop.is_some() { 384 } else { 256 };
    encode_payload_in(
        &RequestOut {
            name,
            method,
            body,
            timeout_ms: u64::try_from(left.as_millis()).unwrap_or(u64::MAX),
            traceparent: hop.as_ref().map(TraceparentText::new),
            json,
        },
        capacity,
    )
}

/// How [`Mesh::call_as`] picks its provider.
#[derive(Debug, Clone, Copy)]
pub(super) struct Pick {
    /// The hash of the partition key: the call goes to its owner (and never waits).
    pub(super) key: Option<u64>,
    /// With no provider in the table, wait (within the deadline) for one to appear.
    pub(super) wait: bool,
}

impl Mesh {
    /// The call of a [`CallBuilder`](super::CallBuilder) without a node: to the owner of the
    /// partition key whose hash is `how.key` when given, else to a provider the balance picks.
    pub(super) async fn call_as<B: Serialize + ?Sized + Sync, R: ReplyForm>(
        &self,
        name: &str,
        method: Option<&str>,
        body: &B,
        options: CallOptions,
        how: Pick,
    ) -> Result<R, Error> {
        let Pick { key, wait } = how;
        let inner = &self.inner;
        if inner.activity.is_draining() {
            return Err(Error::unavailable("the mesh node is shutting down"));
        }
        let _out = inner.activity.outgoing();
        let deadline = Instant::now() + options.timeout.unwrap_or(inner.cfg.timeout);
        let mut changes: Option<watch::Receiver<u64>> = None;
        // Set once the provider of this call was lost under it: if no provider is left then,
        // the call fails at once, as a new call to an endpoint without providers does at the
        // proxy, instead of holding the caller until a provider comes back or the deadline.
        let mut lost_provider = false;
        loop {
            let picked = match key {
                Some(key) => inner.pick_owner(name, key),
                None => inner.pick(name),
            };
            let (node, target, peer_calls) = match picked {
                Ok(picked) => picked,
                // Providers whose links are all gone are on their way out of the table, and
                // one lost under this call is gone: fail at once rather than hold the caller
                // until the deadline. A partitioned call does not wait either: its owner is
                // one of the providers there are now. Nor does a caller that asked not to.
                Err(why) if why == NoPick::NoneLive || lost_provider || key.is_some() || !wait => {
                    return Err(Error::unavailable(format!(
                        "no provider for '{name}' is left"
                    )));
                }
                Err(_) => {
                    // No provider: wait (bounded) for the table to change.
                    let Some(rx) = changes.as_mut() else {
                        changes = Some(inner.table_changed.subscribe());
                        continue;
                    };
                    if inner.waiting.fetch_add(1, Ordering::AcqRel) >= inner.cfg.max_waiting {
                        inner.waiting.fetch_sub(1, Ordering::AcqRel);
                        return Err(Error::unavailable(format!(
                            "no provider for '{name}' and too many calls are waiting"
                        )));
                    }
                    let waited = timeout_at(deadline, rx.changed()).await;
                    inner.waiting.fetch_sub(1, Ordering::AcqRel);
                    match waited {
                        Ok(Ok(())) => continue,
                        _ => return Err(Error::unavailable(format!("no provider for '{name}'"))),
                    }
                }
            };
            let remote = match target {
                Target::Local(handler) => {
                    let _pending = Counted::new(&inner.local_pending);
                    return call_local(inner.node, &handler, name, method, body, deadline).await;
                }
                // A partitioned call goes to the owner itself, not to whichever provider
                // the engine would pick (NATS's queue groups).
                Target::Remote(remote) if key.is_some() => inner.addressed(node, remote)?,
                Target::Remote(remote) => remote,
            };
            let (hop, span) = next_hop(name);
            let call = Call {
                name,
                payload: request_payload(name, method, body, deadline, hop, R::JSON),
                deadline,
                idempotent: options.idempotent,
            };
            crate::metrics::count(peer_calls);
            let sent = remote.call(call).instrument(span).await;
            crate::metrics::call(sent.as_ref().map(|_| ()));
            match sent {
                Ok(payload) => return R::from_payload_bytes(&payload),
                Err(CallError::NotSent) => {
                    crate::metrics::retry();
                    lost_provider = true;
                }
                Err(CallError::Lost) if options.idempotent && Instant::now() < deadline => {
                    crate::metrics::retry();
                    tracing::debug!(target: LOG, %name, peer = %node, "provider lost; retrying an idempotent call");
                    // Only a provider that is gone now counts as lost (a route that stays
                    // may take the retry).
                    lost_provider |= !remote.is_live();
                }
                Err(CallError::NoResponders) => {
                    // The table still lists a provider the engine cannot reach (yet, or any
                    // more): ask again shortly, within the deadline.
                    let at = deadline.min(Instant::now() + NO_RESPONDERS_RETRY);
                    tokio::time::sleep_until(at).await;
                    if Instant::now() >= deadline {
                        return Err(Error::unavailable(format!("no provider for '{name}'")));
                    }
                    crate::metrics::retry();
                }
                Err(e) => return Err(e.into_error(name, Some(node))),
            }
        }
    }

    /// The call of a [`CallBuilder`](super::CallBuilder) to one given node. Not retried.
    pub(super) async fn call_node_as<B: Serialize + ?Sized + Sync, R: ReplyForm>(
        &self,
        node: NodeId,
        name: &str,
        method: Option<&str>,
        body: &B,
        options: CallOptions,
    ) -> Result<R, Error> {
        let inner = &self.inner;
        let deadline = Instant::now() + options.timeout.unwrap_or(inner.cfg.timeout);
        if node == inner.node {
            let Some(handler) = inner.local_handler(name) else {
                return Err(Error::not_found(format!(
                    "node {node} does not provide '{name}'"
                )));
            };
            return call_local(inner.node, &handler, name, method, body, deadline).await;
        }
        let Some(remote) = inner.engine.direct(node) else {
            return Err(Error::unavailable(format!("no link to node {node}")));
        };
        let (hop, span) = next_hop(name);
        let call = Call {
            name,
            payload: request_payload(name, method, body, deadline, hop, R::JSON),
            deadline,
            idempotent: false,
        };
        inner.count_peer_call(name, node);
        let sent = remote.call(call).instrument(span).await;
        crate::metrics::call(sent.as_ref().map(|_| ()));
        match sent {
            Ok(payload) => R::from_payload_bytes(&payload),
            Err(e) => Err(e.into_error(name, Some(node))),
        }
    }

    /// Round-trip time to `node`.
    pub async fn ping(&self, node: NodeId) -> Result<Duration, Error> {
        let Some(remote) = self.inner.engine.direct(node) else {
            return Err(Error::unavailable(format!("no link to node {node}")));
        };
        remote.ping(Instant::now() + self.inner.cfg.timeout).await
    }
}

impl Inner {
    /// Count a call (one attempt) sent to `node`'s `name` under its replica-group key
    /// (`plume_mesh_peer_calls_total`), when metrics are on.
    fn count_peer_call(&self, name: &str, node: NodeId) {
        if !plume::metrics::enabled() {
            return;
        }
        let routes = self.routes_read();
        if let Some(route) = routes
            .get(name)
            .and_then(|l| l.iter().find(|r| r.node == node))
        {
            crate::metrics::peer_call(&route.key);
        }
    }

    /// The way to `node` itself: its route's `remote` when that reaches the node (a peer
    /// link), else the engine's direct way (the node's own subject on NATS).
    pub(super) fn addressed(
        &self,
        node: NodeId,
        remote: Arc<dyn Remote>,
    ) -> Result<Arc<dyn Remote>, Error> {
        if remote.reaches_the_node() {
            return Ok(remote);
        }
        self.engine
            .direct(node)
            .ok_or_else(|| Error::unavailable(format!("no route to node {node}")))
    }
}

/// Run the handler of `name` on this node (`from`), within `deadline`.
pub(super) async fn call_local<B: Serialize + ?Sized + Sync, R: ReplyForm>(
    from: NodeId,
    handler: &EndpointHandler,
    name: &str,
    method: Option<&str>,
    body: &B,
    deadline: Instant,
) -> Result<R, Error> {
    let request = RawRequest {
        name: name.to_string(),
        method: method.map(str::to_string),
        body: RawBody::value(
            serde_json::to_value(body)
                .map_err(|e| Error::bad_request(format!("the call body is not valid JSON: {e}")))?,
        ),
        deadline: deadline.into_std(),
        from,
    };
    match timeout_at(deadline, handler.call(request)).await {
        Ok(r) => r.and_then(R::from_answer),
        Err(_) => Err(Error::timeout(format!("'{name}' did not answer in time"))),
    }
}
