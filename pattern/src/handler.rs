//! Handlers of added patterns: what a message looks like to them ([`Req`]), and typed handlers
//! that decode the payload into their own type ([`typed`]).

use std::borrow::Borrow;
use std::future::Future;
use std::marker::PhantomData;

use futures::future::BoxFuture;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::error::HemeraError;
use crate::payload::{Payload, Props};
use crate::{Hemera, Id};

/// A message as a handler sees it.
#[derive(Clone)]
pub struct Req {
    /// The message without its `$` options, kept in the bytes it arrived in until asked for
    /// ([`pattern`](Self::pattern), [`payload`](Self::payload)).
    pub(crate) payload: Payload,
    /// The caller's `meta$` (and its parents'): passed on to every nested [`act`](Self::act).
    pub meta: Map<String, Value>,
    /// The caller's `delegate$`, for this call only (not passed on).
    pub delegate: Map<String, Value>,
    /// The trace id of the call tree this message belongs to.
    pub trace_id: Id,
    /// The span id of the act that sent this message.
    pub span_id: Id,
    pub(crate) hemera: Hemera,
    /// Sends one more reply before the handler's result (NATS, with a reply subject only).
    pub(crate) next: Option<ReplyNext>,
}

impl std::fmt::Debug for Req {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Req")
            .field("pattern", self.pattern())
            .field("meta", &self.meta)
            .field("delegate", &self.delegate)
            .field("trace_id", &self.trace_id)
            .field("span_id", &self.span_id)
            .field("streams", &self.next.is_some())
            .finish_non_exhaustive()
    }
}

/// Where a streaming handler's intermediate replies go (see [`Req::reply_next`]).
pub(crate) use crate::bus::ReplyNext;

impl Req {
    /// The message without its `$` options: the payload, `topic` and the other pattern keys
    /// included. Built from the received bytes on the first call (a handler that only uses
    /// [`payload`](Self::payload), or a [`typed`] one, never builds it).
    pub fn pattern(&self) -> &Map<String, Value> {
        self.payload.map()
    }

    /// [`pattern`](Self::pattern), moved out.
    pub fn into_pattern(self) -> Map<String, Value> {
        self.payload.into_map()
    }

    /// The payload decoded into `T` (serde), straight from the received bytes: a payload that
    /// does not fit is a `PayloadValidationError` naming the field.
    pub fn payload<T: DeserializeOwned>(&self) -> Result<T, HemeraError> {
        self.payload.decode()
    }

    /// Send one reply now, before the handler's own result (Hemera's `this.reply.next(v)`): a
    /// caller acting with `maxMessages$`/`expectedMessages$` gets each of them, then the
    /// result. Only on NATS, for a message with a reply subject; otherwise a `HemeraError`.
    pub async fn reply_next(&self, value: Value) -> Result<(), HemeraError> {
        match &self.next {
            Some(next) => self.hemera.inner.bus.reply_next(next, value).await,
            None => Err(HemeraError::hemera(
                "reply_next needs a NATS message that asks for a reply",
            )),
        }
    }

    /// A nested act: it carries this message's `meta` (merged under the nested message's own
    /// `meta$`) and trace id; its span's parent is this message's span. `delegate$` is not
    /// passed on.
    pub async fn act(&self, message: impl Borrow<Value>) -> Result<Value, HemeraError> {
        let parent = Parent {
            meta: &self.meta,
            trace_id: &self.trace_id,
            span_id: &self.span_id,
        };
        self.hemera.act_in(Some(&parent), message.borrow()).await
    }
}

/// What a nested act inherits from the message whose handler makes it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Parent<'a> {
    pub(crate) meta: &'a Map<String, Value>,
    pub(crate) trace_id: &'a str,
    pub(crate) span_id: &'a str,
}

/// Serves the messages of an added pattern.
///
/// Any `Fn(Req) -> impl Future<Output = Result<Value, HemeraError>>` is a handler; [`typed`]
/// makes one that takes a typed payload.
pub trait Handler: Send + Sync + 'static {
    /// Answer one message.
    fn call(&self, req: Req) -> BoxFuture<'static, Result<Value, HemeraError>>;

    /// Answer one message whose payload matching has walked already (a typed handler decodes
    /// from that walk instead of reading the payload again). Not for implementors: the default
    /// is [`call`](Self::call).
    #[doc(hidden)]
    fn call_matched(
        &self,
        req: Req,
        matched: Matched<'_>,
    ) -> BoxFuture<'static, Result<Value, HemeraError>> {
        let _ = matched;
        self.call(req)
    }
}

/// The properties matching walked in a served payload (see [`Handler::call_matched`]).
#[doc(hidden)]
#[derive(Debug, Clone, Copy)]
pub struct Matched<'a>(pub(crate) &'a Props<'a>);

impl<F, Fut> Handler for F
where
    F: Fn(Req) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Value, HemeraError>> + Send + 'static,
{
    fn call(&self, req: Req) -> BoxFuture<'static, Result<Value, HemeraError>> {
        Box::pin(self(req))
    }
}

/// A handler taking the payload as `T` and answering any serializable `R`: a payload that does
/// not decode into `T` is answered with a `PayloadValidationError` naming the field, and the
/// handler is not called.
///
/// ```
/// use plume_pattern::{HemeraError, Req, typed};
/// use serde::Deserialize;
///
/// #[derive(Deserialize)]
/// struct Add { a: f64, b: f64 }
///
/// let handler = typed(|p: Add, _req: Req| async move { Ok::<_, HemeraError>(p.a + p.b) });
/// # let _ = handler;
/// ```
pub fn typed<T, R, F, Fut>(f: F) -> Typed<T, F>
where
    T: DeserializeOwned + Send + 'static,
    R: Serialize + Send + 'static,
    F: Fn(T, Req) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<R, HemeraError>> + Send + 'static,
{
    Typed { f, _t: PhantomData }
}

/// A handler with a typed payload, from [`typed`].
pub struct Typed<T, F> {
    f: F,
    _t: PhantomData<fn() -> T>,
}

impl<T, F> std::fmt::Debug for Typed<T, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Typed").finish_non_exhaustive()
    }
}

impl<T, R, F, Fut> Handler for Typed<T, F>
where
    T: DeserializeOwned + Send + 'static,
    R: Serialize + Send + 'static,
    F: Fn(T, Req) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<R, HemeraError>> + Send + 'static,
{
    fn call(&self, req: Req) -> BoxFuture<'static, Result<Value, HemeraError>> {
        let payload = match req.payload.decode::<T>() {
            Ok(p) => p,
            Err(e) => return Box::pin(async move { Err(e) }),
        };
        self.answer(payload, req)
    }

    fn call_matched(
        &self,
        req: Req,
        matched: Matched<'_>,
    ) -> BoxFuture<'static, Result<Value, HemeraError>> {
        // Decoded from matching's walk; anything it leaves goes the usual way (same answer).
        match crate::view::decode::<T>(matched.0) {
            Some(payload) => self.answer(payload, req),
            None => self.call(req),
        }
    }
}

impl<T, R, F, Fut> Typed<T, F>
where
    T: DeserializeOwned + Send + 'static,
    R: Serialize + Send + 'static,
    F: Fn(T, Req) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<R, HemeraError>> + Send + 'static,
{
    /// The handler's answer to `payload`, as a value.
    fn answer(&self, payload: T, req: Req) -> BoxFuture<'static, Result<Value, HemeraError>> {
        let fut = (self.f)(payload, req);
        Box::pin(async move {
            let out = fut.await?;
            serde_json::to_value(out).map_err(|e| {
                HemeraError::hemera(format!("the handler's result does not encode: {e}"))
            })
        })
    }
}
