//! The call builder: one entry point for every form of call ([`Mesh::to`]).

use std::time::Duration;

use futures::TryFutureExt;
use futures::future::{Either, join_all};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::time::{Instant, sleep_until};
use tracing::Instrument;

use super::call::{NO_RESPONDERS_RETRY, call_local, next_hop, request_payload};
use super::reply::{Decoded, ReplyForm};
use super::ring::key_hash;
use super::table::Target;
use super::{CallOptions, Mesh};
use crate::discovery::NodeId;
use crate::engine::{Call, CallError, Remote};
use plume::{Error, RawJson};

/// A call being set up: made by [`Mesh::to`], sent by [`send`](Self::send),
/// [`send_json`](Self::send_json) or [`broadcast`](Self::broadcast).
///
/// Which provider takes the call:
/// - by default, the one the mesh's [`Balance`](crate::Balance) picks (waiting, within the
///   deadline, for one to appear);
/// - with [`key`](Self::key), the owner of the partition key among the live providers
///   (rendezvous hashing: the same owner whichever node sends it; `Unavailable` at once when
///   there is no provider);
/// - with [`on`](Self::on), the given node;
/// - with [`broadcast`](Self::broadcast), every live provider.
///
/// The builder holds only borrows and copies: setting it up allocates nothing.
///
/// ```
/// # async fn demo(mesh: plume_transport::Mesh) -> Result<(), plume::Error> {
/// use std::time::Duration;
/// use serde_json::json;
/// // To a provider the balance picks, with a deadline:
/// let sum = mesh.to("add").timeout(Duration::from_secs(2)).send(&json!([1, 2])).await?;
/// // To the owner of partition key "cart-42", which may be retried on a new owner:
/// let cart = mesh.to("carts").key("cart-42").idempotent(true).send(&json!({})).await?;
/// // To every provider, each reply with its node:
/// for reply in mesh.to("carts").broadcast(&json!({"op": "count"})).await? {
///     println!("{}: {:?}", reply.node, reply.result);
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy)]
#[must_use = "a call builder does nothing until it is sent"]
pub struct CallBuilder<'a> {
    mesh: &'a Mesh,
    name: &'a str,
    method: Option<&'a str>,
    options: CallOptions,
    key: Option<&'a str>,
    node: Option<NodeId>,
    wait: bool,
}

/// One provider's answer to a [`broadcast`](CallBuilder::broadcast).
#[derive(Debug)]
pub struct Reply {
    /// The provider.
    pub node: NodeId,
    /// Its answer, or its own error (`Timeout` when it did not answer before the deadline).
    pub result: Result<Value, Error>,
}

impl Mesh {
    /// Set up a call to endpoint `name`: the one call entry point (see [`CallBuilder`]).
    pub fn to<'a>(&'a self, name: &'a str) -> CallBuilder<'a> {
        CallBuilder {
            mesh: self,
            name,
            method: None,
            options: CallOptions::default(),
            key: None,
            node: None,
            wait: true,
        }
    }

    /// The node that owns partition key `key` of `name` now (this node included), by the
    /// rendezvous hashing of [`CallBuilder::key`]; None when `name` has no live provider.
    pub fn owner(&self, name: &str, key: &str) -> Option<NodeId> {
        self.inner
            .pick_owner(name, key_hash(key))
            .ok()
            .map(|(node, ..)| node)
    }
}

impl<'a> CallBuilder<'a> {
    /// The method within the endpoint (a Feathers service method, say).
    pub fn method(mut self, method: &'a str) -> Self {
        self.method = Some(method);
        self
    }

    /// How long the call may take in all (waiting for a provider included); the mesh's default
    /// otherwise. A broadcast collects the replies within this one deadline.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.options.timeout = Some(timeout);
        self
    }

    /// The call may run twice: when a link dies with it in flight, it is retried on another
    /// provider (with [`key`](Self::key): on the key's new owner) within the deadline. Without
    /// it, such a call fails with `Unavailable` (its outcome is unknown).
    pub fn idempotent(mut self, idempotent: bool) -> Self {
        self.options.idempotent = idempotent;
        self
    }

    /// Timeout and idempotency at once.
    pub fn options(mut self, options: CallOptions) -> Self {
        self.options = options;
        self
    }

    /// Whether a call to an endpoint the table lists no provider of waits (within the
    /// deadline) for one to appear: yes by default. `false` fails such a call at once with
    /// `Unavailable`, as a caller that tracks the providers itself wants (a gateway's proxy:
    /// the table may lose the last provider a moment before the proxy hears of it).
    pub fn wait_for_provider(mut self, wait: bool) -> Self {
        self.wait = wait;
        self
    }

    /// Send to the owner of partition key `key` among the live providers.
    pub fn key(mut self, key: &'a str) -> Self {
        self.key = Some(key);
        self
    }

    /// Send to `node` itself, whether or not it is known to provide the endpoint (a node that
    /// does not answers `NotFound`). Not retried. Takes precedence over [`key`](Self::key).
    pub fn on(mut self, node: NodeId) -> Self {
        self.node = Some(node);
        self
    }

    /// Send `body` (anything serializable, encoded straight into the request frame) and wait
    /// for the answer.
    ///
    /// Errors: `Unavailable` when no provider appeared before the deadline (at once with a
    /// key), when the mesh is shutting down, when a non-idempotent call's link died (its
    /// outcome is unknown), or at once when the provider's link died under the call and none
    /// is left; `Timeout` when a provider took the call but did not answer in time; otherwise
    /// the provider's own error, with its class.
    pub fn send<B: Serialize + ?Sized + Sync>(
        self,
        body: &B,
    ) -> impl Future<Output = Result<Value, Error>> {
        self.send_as(body)
    }

    /// [`send`](Self::send), with the result as JSON text, without a [`Value`] on the way
    /// (what a gateway wants for an HTTP response body). The request asks the provider for its
    /// JSON (the `json` hint: docs/protocol.md, "Calls"); a provider of this version answers a
    /// raw handler's value as its JSON text, which is passed on as it is (checked as UTF-8),
    /// and any other reply, MessagePack, is written out as JSON here.
    pub fn send_json<B: Serialize + ?Sized + Sync>(
        self,
        body: &B,
    ) -> impl Future<Output = Result<RawJson, Error>> {
        self.send_as(body)
    }

    /// [`send`](Self::send), with the result decoded into `T` (serde) straight from the
    /// provider's MessagePack reply, without a [`Value`] on the way. A result that does not
    /// decode into `T` is a `GeneralError` ("malformed reply"); a provider's error is returned
    /// as by `send`.
    ///
    /// (A plain function, as `send` is: its future is the mesh's own, without this builder.)
    pub fn send_decoded<T, B>(self, body: &B) -> impl Future<Output = Result<T, Error>>
    where
        T: DeserializeOwned + Send,
        B: Serialize + ?Sized + Sync,
    {
        self.send_as::<B, Decoded<T>>(body).map_ok(|d| d.0)
    }

    /// The call's future: the mesh's own, without this builder kept beside it (`send` and
    /// `send_json` are plain functions for the same reason: an async function keeps its
    /// arguments in its future, and a gateway's proxy boxes and moves that future per call).
    fn send_as<B: Serialize + ?Sized + Sync, R: ReplyForm>(
        self,
        body: &B,
    ) -> impl Future<Output = Result<R, Error>> {
        let CallBuilder {
            mesh,
            name,
            method,
            options,
            key,
            node,
            wait,
        } = self;
        match node {
            Some(node) => Either::Left(mesh.call_node_as(node, name, method, body, options)),
            None => {
                let how = super::call::Pick {
                    key: key.map(key_hash),
                    wait,
                };
                Either::Right(mesh.call_as(name, method, body, options, how))
            }
        }
    }

    /// Send `body` to every live provider of the endpoint, and collect every reply (each with
    /// its node and its own error) within the one deadline. Replies come in no given order.
    ///
    /// Err (`Unavailable`) at once when the endpoint has no live provider, or the mesh is
    /// shutting down. A [`key`](Self::key) or [`on`](Self::on) is ignored.
    pub async fn broadcast<B: Serialize + ?Sized + Sync>(
        self,
        body: &B,
    ) -> Result<Vec<Reply>, Error> {
        let CallBuilder {
            mesh,
            name,
            method,
            options,
            ..
        } = self;
        let inner = &mesh.inner;
        if inner.activity.is_draining() {
            return Err(Error::unavailable("the mesh node is shutting down"));
        }
        let _out = inner.activity.outgoing();
        let deadline = Instant::now() + options.timeout.unwrap_or(inner.cfg.timeout);
        let providers = inner.live_providers(name);
        if providers.is_empty() {
            return Err(Error::unavailable(format!("no provider for '{name}'")));
        }
        // One encoding for every remote provider.
        let (hop, span) = next_hop(name);
        let payload = request_payload(name, method, body, deadline, hop, false);
        let calls = providers.into_iter().map(|(node, target)| {
            let payload = payload.clone();
            async move {
                let result = match target {
                    Target::Local(handler) => {
                        call_local(node, &handler, name, method, body, deadline).await
                    }
                    Target::Remote(remote) => match inner.addressed(node, remote) {
                        Ok(remote) => {
                            call_remote(&*remote, node, name, payload, deadline, options).await
                        }
                        Err(e) => Err(e),
                    },
                };
                Reply { node, result }
            }
        });
        Ok(join_all(calls).instrument(span).await)
    }
}

/// One provider's share of a broadcast: asked again shortly while the engine knows nobody on
/// its subject yet (a provider announced before it listens), within the deadline.
///
/// Every engine's [`Remote::call`] keeps the call's deadline itself (a peer link's wait for
/// the reply, NATS's request timeout), as for a single send: no timer of its own here, so a
/// broadcast arms one timer per provider, not two.
async fn call_remote(
    remote: &dyn Remote,
    node: NodeId,
    name: &str,
    payload: bytes::Bytes,
    deadline: Instant,
    options: CallOptions,
) -> Result<Value, Error> {
    loop {
        let call = Call {
            name,
            payload: payload.clone(),
            deadline,
            idempotent: options.idempotent,
        };
        match remote.call(call).await {
            Ok(reply) => return Value::from_payload(&reply),
            Err(CallError::NoResponders) if Instant::now() < deadline => {
                sleep_until(deadline.min(Instant::now() + NO_RESPONDERS_RETRY)).await;
            }
            Err(e) => return Err(e.into_error(name, Some(node))),
        }
    }
}
