//! Handlers of this node's endpoints: what a call looks like to them, and how its body is
//! decoded (once, from MessagePack, for a raw handler).

use std::future::Future;
use std::sync::Arc;

use futures::TryFutureExt;
use futures::future::BoxFuture;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::answer::{Answer, Answering};
use crate::discovery::NodeId;
use crate::protocol::{decode_payload, decode_request_body};
use plume::Error;

/// A call as a handler sees it.
#[derive(Debug, Clone)]
pub struct Request {
    /// The endpoint name.
    pub name: String,
    /// The method, if the caller gave one.
    pub method: Option<String>,
    /// The body.
    pub body: Value,
    /// When the caller stops waiting.
    pub deadline: std::time::Instant,
    /// The calling node.
    pub from: NodeId,
}

/// Serves calls to an endpoint.
///
/// The first poll of a handler's future runs on the link's reader (so quick handlers answer
/// without a task switch); a handler must not block. One that is not ready at once continues in
/// its own task. A handler that panics answers `GeneralError`.
pub trait Handler: Send + Sync + 'static {
    /// Answer one call.
    fn call(&self, request: Request) -> BoxFuture<'static, Result<Value, Error>>;
}

impl<F, Fut> Handler for F
where
    F: Fn(Request) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Value, Error>> + Send + 'static,
{
    fn call(&self, request: Request) -> BoxFuture<'static, Result<Value, Error>> {
        Box::pin(self(request))
    }
}

/// The body of a call to a raw endpoint ([`RawHandler`]), not yet decoded: decode it with
/// [`decode`](Self::decode) into the handler's own type.
#[derive(Debug, Clone)]
pub struct RawBody(Repr);

#[derive(Debug, Clone)]
enum Repr {
    /// A call made on this node: the body as a value.
    Value(Value),
    /// A call from another node: the whole encoded `RequestMsg` payload.
    Msgpack(bytes::Bytes),
    /// A call from another node: the encoded `RequestMsg` payload, and where its body lies in
    /// it (its head was read by walking the bytes: `crate::protocol::read_request_head`).
    Located(bytes::Bytes, std::ops::Range<usize>),
}

impl RawBody {
    /// A body given as a value (a call made on this node).
    pub(crate) fn value(v: Value) -> Self {
        Self(Repr::Value(v))
    }

    /// A body still in its encoded request (a call from another node).
    pub(crate) fn msgpack(payload: bytes::Bytes) -> Self {
        Self(Repr::Msgpack(payload))
    }

    /// A body at `body` in its encoded request (a call from another node).
    pub(crate) fn located(payload: bytes::Bytes, body: std::ops::Range<usize>) -> Self {
        Self(Repr::Located(payload, body))
    }

    /// Whether the body is still encoded.
    #[cfg(test)]
    pub(crate) fn is_msgpack(&self) -> bool {
        matches!(self.0, Repr::Msgpack(_) | Repr::Located(..))
    }

    /// Decode the body as `T`, from MessagePack straight into `T` for a call from a peer (no
    /// `serde_json::Value` on the way). A body that does not decode is a BadRequest.
    ///
    /// Consuming the body releases its bytes (a piece of the link's read buffer).
    pub fn decode<T: DeserializeOwned>(self) -> Result<T, Error> {
        match self.0 {
            Repr::Value(v) => serde_json::from_value(v).map_err(|e| e.to_string()),
            Repr::Msgpack(payload) => decode_request_body(&payload),
            Repr::Located(payload, body) => match payload.get(body) {
                Some(body) => decode_payload(body),
                None => Err("the body lies outside the request".to_owned()),
            },
        }
        .map_err(|e| Error::bad_request(format!("malformed call body: {e}")))
    }

    /// The body's own MessagePack bytes, for a handler that walks them itself: a share of the
    /// received buffer (not a copy), when the call came from another node in the usual form;
    /// `None` otherwise (a call made on this node, or a request in another form: use
    /// [`decode`](Self::decode)).
    pub fn msgpack_bytes(&self) -> Option<bytes::Bytes> {
        match &self.0 {
            Repr::Located(payload, body) if body.start <= body.end && body.end <= payload.len() => {
                Some(payload.slice(body.clone()))
            }
            _ => None,
        }
    }

    /// The body as a value (what a [`Handler`] receives).
    fn into_value(self) -> Result<Value, Error> {
        match self.0 {
            Repr::Value(v) => Ok(v),
            repr @ (Repr::Msgpack(_) | Repr::Located(..)) => Self(repr).decode(),
        }
    }
}

/// A call as a [`RawHandler`] sees it: a [`Request`] whose body is not decoded yet.
#[derive(Debug)]
#[non_exhaustive]
pub struct RawRequest {
    /// The endpoint name.
    pub name: String,
    /// The method, if the caller gave one.
    pub method: Option<String>,
    /// The body, not decoded yet.
    pub body: RawBody,
    /// When the caller stops waiting.
    pub deadline: std::time::Instant,
    /// The calling node.
    pub from: NodeId,
}

/// Serves calls to an endpoint and decodes their bodies itself ([`RawBody::decode`]), into its
/// own type: a call from another node is decoded once, from MessagePack, with no
/// `serde_json::Value` on the way. Same rules as [`Handler`]; it should decode the body before
/// its first await (until then the body holds a piece of the link's read buffer).
///
/// It answers a value, or its result encoded once ([`Encoded`](crate::Encoded)): those bytes
/// are written into the response as they are.
pub trait RawHandler: Send + Sync + 'static {
    /// Answer one call.
    fn call(&self, request: RawRequest) -> BoxFuture<'static, Result<Answer, Error>>;
}

impl<F, Fut, A> RawHandler for F
where
    F: Fn(RawRequest) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<A, Error>> + Send + 'static,
    A: Into<Answer> + 'static,
{
    fn call(&self, request: RawRequest) -> BoxFuture<'static, Result<Answer, Error>> {
        Box::pin(self(request).map_ok(Into::into))
    }
}

/// The handler of one endpoint of this node.
#[derive(Clone)]
pub(crate) enum EndpointHandler {
    /// Given the body as a value ([`Mesh::provide`]).
    Plain(Arc<dyn Handler>),
    /// Given the body undecoded ([`Mesh::provide_raw`]).
    Raw(Arc<dyn RawHandler>),
}

impl EndpointHandler {
    /// The future answering `request` (a plain handler's body is decoded first: a body that
    /// does not decode answers BadRequest).
    pub(crate) fn call(&self, request: RawRequest) -> Answering {
        match self {
            EndpointHandler::Raw(h) => Answering::Raw(h.call(request)),
            EndpointHandler::Plain(h) => Answering::Plain(match request.body.into_value() {
                Ok(body) => h.call(Request {
                    name: request.name,
                    method: request.method,
                    body,
                    deadline: request.deadline,
                    from: request.from,
                }),
                Err(e) => Box::pin(std::future::ready(Err(e))),
            }),
        }
    }
}
