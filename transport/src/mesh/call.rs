//! Making a call: wait (bounded) for a provider, pick one, send, retry what may be retried, keep
//! the deadline, and turn the outcome into the caller's result.

use std::sync::atomic::Ordering;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use tokio::sync::watch;
use tokio::time::{Instant, timeout_at};

use super::balance::NoPick;
use super::handler::{RawBody, RawRequest};
use super::reply::ReplyForm;
use super::table::Target;
use super::{CallOptions, LOG, Mesh};
use crate::discovery::NodeId;
use crate::engine::{Call, CallError, Counted};
use crate::protocol::{RequestMsg, encode_payload};
use plume::{Error, RawJson};

/// How long a call waits before asking again when the engine says nobody listens yet.
const NO_RESPONDERS_RETRY: Duration = Duration::from_millis(50);

/// The encoded request for `name`, with the time left until `deadline`.
fn request_payload<B: Serialize + ?Sized>(
    name: &str,
    method: Option<&str>,
    body: &B,
    deadline: Instant,
) -> bytes::Bytes {
    let left = deadline.saturating_duration_since(Instant::now());
    encode_payload(&RequestMsg {
        name: name.to_string(),
        method: method.map(str::to_string),
        body,
        timeout_ms: u64::try_from(left.as_millis()).unwrap_or(u64::MAX),
    })
}

impl Mesh {
    /// Call endpoint `name` on one of its live providers.
    ///
    /// Errors: `Unavailable` when no provider appeared before the deadline, when the mesh is
    /// shutting down, when a non-idempotent call's link died (its outcome is unknown), or at
    /// once when the link of the provider died under the call and no other provider is left;
    /// `Timeout` when a provider took the call but did not answer in time; otherwise the
    /// provider's own error, with its class.
    pub async fn call(
        &self,
        name: &str,
        method: Option<&str>,
        body: Value,
        options: CallOptions,
    ) -> Result<Value, Error> {
        self.call_with(name, method, &body, options).await
    }

    /// [`call`](Self::call) with any serializable body, encoded straight into the request frame
    /// (no `serde_json::Value` is built on the way). The provider's handler sees it as a
    /// [`Value`], as if it had been sent with `call`.
    pub async fn call_with<B: Serialize + ?Sized + Sync>(
        &self,
        name: &str,
        method: Option<&str>,
        body: &B,
        options: CallOptions,
    ) -> Result<Value, Error> {
        self.call_as(name, method, body, options).await
    }

    /// [`call_with`](Self::call_with), with the result as JSON text: a provider's MessagePack
    /// reply is written out as JSON directly, without a [`Value`] on the way (what a gateway
    /// wants for an HTTP response body). The text is what serializing the `Value` that
    /// [`call_with`](Self::call_with) returns would give.
    pub async fn call_json_with<B: Serialize + ?Sized + Sync>(
        &self,
        name: &str,
        method: Option<&str>,
        body: &B,
        options: CallOptions,
    ) -> Result<RawJson, Error> {
        self.call_as(name, method, body, options).await
    }

    async fn call_as<B: Serialize + ?Sized + Sync, R: ReplyForm>(
        &self,
        name: &str,
        method: Option<&str>,
        body: &B,
        options: CallOptions,
    ) -> Result<R, Error> {
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
            let (node, target) = match inner.pick(name) {
                Ok(picked) => picked,
                // Providers whose links are all gone are on their way out of the table, and
                // one lost under this call is gone: fail at once rather than hold the caller
                // until the deadline.
                Err(why) if why == NoPick::NoneLive || lost_provider => {
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
                    let request = RawRequest {
                        name: name.to_string(),
                        method: method.map(str::to_string),
                        body: RawBody::value(serde_json::to_value(body).map_err(|e| {
                            Error::bad_request(format!("the call body is not valid JSON: {e}"))
                        })?),
                        deadline: deadline.into_std(),
                        from: inner.node,
                    };
                    return match timeout_at(deadline, handler.call(request)).await {
                        Ok(r) => r.map(R::from_value),
                        Err(_) => Err(Error::timeout(format!("'{name}' did not answer in time"))),
                    };
                }
                Target::Remote(remote) => remote,
            };
            let call = Call {
                name,
                payload: request_payload(name, method, body, deadline),
                deadline,
                idempotent: options.idempotent,
            };
            match remote.call(call).await {
                Ok(payload) => return R::from_payload(&payload),
                Err(CallError::NotSent) => lost_provider = true,
                Err(CallError::Lost) if options.idempotent && Instant::now() < deadline => {
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
                }
                Err(e) => return Err(e.into_error(name, Some(node))),
            }
        }
    }

    /// Call `name` on one given node, whether or not it is known to provide it (a node that does
    /// not answers NotFound). Not retried; `Unavailable` when there is no link to the node.
    pub async fn call_on(
        &self,
        node: NodeId,
        name: &str,
        method: Option<&str>,
        body: Value,
        options: CallOptions,
    ) -> Result<Value, Error> {
        let inner = &self.inner;
        let deadline = Instant::now() + options.timeout.unwrap_or(inner.cfg.timeout);
        if node == inner.node {
            let Some(handler) = inner.local_handler(name) else {
                return Err(Error::not_found(format!(
                    "node {node} does not provide '{name}'"
                )));
            };
            let request = RawRequest {
                name: name.to_string(),
                method: method.map(str::to_string),
                body: RawBody::value(body),
                deadline: deadline.into_std(),
                from: inner.node,
            };
            return match timeout_at(deadline, handler.call(request)).await {
                Ok(r) => r,
                Err(_) => Err(Error::timeout(format!("'{name}' did not answer in time"))),
            };
        }
        let Some(remote) = inner.engine.direct(node) else {
            return Err(Error::unavailable(format!("no link to node {node}")));
        };
        let call = Call {
            name,
            payload: request_payload(name, method, &body, deadline),
            deadline,
            idempotent: false,
        };
        match remote.call(call).await {
            Ok(payload) => Value::from_payload(&payload),
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
