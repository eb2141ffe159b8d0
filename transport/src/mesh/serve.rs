//! Serving a call from another node: decode it once (for the kind of handler of its endpoint),
//! then the one path every engine shares: NotFound without a handler, panics caught, the
//! first poll inline, the deadline kept.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use serde::de::IgnoredAny;
use tokio::time::Instant;

use super::handler::{EndpointHandler, RawBody, RawRequest};
use super::{Inner, LOG};
use crate::answer::Answering;
use crate::discovery::NodeId;
use crate::engine::{Running, Served, panicked};
use crate::protocol::{
    FrameError, Kind, RequestMsg, decode_payload, peek_request_name, read_request_head,
};
use plume::Error;
use plume::trace::TraceContext;

/// The longest JSON text answered in the JSON form (a longer result is answered as
/// MessagePack): a quarter of NATS's default `max_payload`, so that a reply whose MessagePack
/// fits an engine's limit still fits it as JSON, where JSON is larger (up to about 2.5 × for
/// numbers).
pub(crate) const JSON_FORM_MAX: usize = 256 * 1024;

/// A request from a peer, decoded for the kind of handler of its endpoint.
#[derive(Debug)]
pub(super) struct Incoming {
    pub(super) name: String,
    pub(super) method: Option<String>,
    pub(super) body: RawBody,
    pub(super) timeout_ms: u64,
    /// The caller's trace context (read from the request's `traceparent` where it was decoded,
    /// with no `String` of it made): none when the request has none or one that does not parse.
    pub(super) trace: Option<TraceContext>,
    /// The caller takes the result as JSON text (its `json` hint, read where the head is
    /// walked: a raw handler's request; elsewhere the answer stays MessagePack, which such a
    /// caller reads too).
    pub(super) json: bool,
}

/// The trace context a request's `traceparent` says, if any.
fn trace_of(traceparent: Option<&str>) -> Option<TraceContext> {
    traceparent.and_then(TraceContext::parse)
}

impl Inner {
    /// Serve `payload` from node `from` ([`Sink::serve`](crate::engine::Sink::serve)).
    pub(super) fn serve_payload(
        &self,
        payload: Bytes,
        from: NodeId,
        admit: &mut dyn FnMut(&str, bool) -> Result<(), Error>,
    ) -> Result<Served, FrameError> {
        let (req, handler) =
            self.decode_request(payload)
                .map_err(|reason| FrameError::Payload {
                    kind: Kind::Request,
                    reason,
                })?;
        if let Err(e) = admit(&req.name, handler.is_some()) {
            return Ok(Served::Ready(Err(e)));
        }
        // The JSON form's bound: well under the frame limit (and NATS's usual 1 MiB).
        let json_max = JSON_FORM_MAX.min(self.cfg.max_frame / 4);
        Ok(start(self.node, handler, req, from, json_max))
    }

    /// Decode a request from a peer for the endpoint of this node that it names (`None` when
    /// there is none). A plain handler's body is decoded to a `Value` in one pass with the head;
    /// for a raw handler only the head is read (by walking the bytes when the request is in the
    /// usual form, `read_request_head`; its body is located, not decoded), and the handler
    /// decodes the body itself. Err: the payload is not a request.
    pub(super) fn decode_request(
        &self,
        payload: Bytes,
    ) -> Result<(Incoming, Option<EndpointHandler>), String> {
        let peeked = peek_request_name(&payload).map(|name| (name, self.local_handler(name)));
        if let Some((name, Some(handler @ EndpointHandler::Plain(_)))) = &peeked
            && let Ok(m) = decode_payload::<RequestMsg>(&payload)
            && m.name == *name
        {
            let req = Incoming {
                trace: trace_of(m.traceparent.as_deref()),
                name: m.name,
                method: m.method,
                body: RawBody::value(m.body),
                timeout_ms: m.timeout_ms,
                json: false,
            };
            return Ok((req, Some(handler.clone())));
        }
        // A raw handler: its head read from the bytes in one walk, the body located (not
        // decoded, nor its strings checked: the handler decodes it, once).
        if let Some((name, Some(handler @ EndpointHandler::Raw(_)))) = &peeked
            && let Some(head) = read_request_head(&payload)
            && head.name == *name
        {
            let handler = handler.clone();
            let (body, timeout_ms, json) = (head.body.clone(), head.timeout_ms, head.json);
            let (name, method, trace) = (
                head.name.to_owned(),
                head.method.map(str::to_owned),
                head.trace,
            );
            let req = Incoming {
                name,
                method,
                body: RawBody::located(payload, body),
                timeout_ms,
                trace,
                json,
            };
            return Ok((req, Some(handler)));
        }
        // A raw handler's request in another form, no handler, or a body that is not JSON (a
        // plain handler then answers BadRequest): the head only.
        let head = decode_payload::<RequestMsg<IgnoredAny>>(&payload)?;
        let handler = match peeked {
            Some((name, handler)) if name == head.name => handler,
            _ => self.local_handler(&head.name),
        };
        let req = Incoming {
            trace: trace_of(head.traceparent.as_deref()),
            name: head.name,
            method: head.method,
            body: RawBody::msgpack(payload),
            timeout_ms: head.timeout_ms,
            json: false,
        };
        Ok((req, handler))
    }
}

/// Start serving `req` (sent by `from`) on node `node` with the handler of the endpoint it names.
///
/// The handler's first poll runs here, so a quick handler answers without a task switch; a
/// handler that is not ready continues in [`Running::finish`] (it re-registers its wakers on the
/// next poll). A handler that panics answers GeneralError and never takes its caller down.
pub(super) fn start(
    node: NodeId,
    handler: Option<EndpointHandler>,
    req: Incoming,
    from: NodeId,
    json_max: usize,
) -> Served {
    let Some(handler) = handler else {
        return Served::Ready(Err(Error::not_found(format!(
            "node {node} does not provide '{}'",
            req.name
        ))));
    };
    let deadline = Instant::now() + Duration::from_millis(req.timeout_ms);
    let json_max = if req.json { json_max } else { 0 };
    // The provider's hop is a child of the caller's (whose span id is the caller's `call`).
    let trace = req.trace.map(|caller| caller.child());
    let request = RawRequest {
        name: req.name,
        method: req.method,
        body: req.body,
        deadline: deadline.into_std(),
        from,
    };
    let Ok(mut fut) = catch_unwind(AssertUnwindSafe(|| handler.call(request))) else {
        return Served::Ready(Err(panicked()));
    };
    if let Some(ctx) = trace {
        // The provider's side of the caller's trace: its span joins the trace, and calls it
        // makes carry it on.
        // The span only when a subscriber wants it (an OTLP exporter): a `trace`-level span.
        let span = plume::trace::hop_span(
            ctx,
            || tracing::trace_span!("serve", trace_id = %ctx.trace_id_field()),
        );
        // Logged in the hop (its line names the trace id), checked first: no scope to set up
        // when the line is filtered out.
        if tracing::enabled!(target: LOG, tracing::Level::DEBUG) {
            plume::trace::sync_hop_scope("serve", ctx, || {
                tracing::debug!(target: LOG, parent: &span, peer = %from, "serving a call");
            });
        }
        fut = Answering::Raw(Box::pin(plume::trace::in_hop("serve", ctx, span, fut)));
    }
    let mut cx = std::task::Context::from_waker(futures::task::noop_waker_ref());
    match catch_unwind(AssertUnwindSafe(|| {
        std::pin::Pin::new(&mut fut).poll(&mut cx)
    })) {
        Ok(Poll::Ready(result)) if json_max > 0 => {
            Served::Ready(crate::answer::in_json_form(result, json_max))
        }
        Ok(Poll::Ready(result)) => Served::Ready(result),
        Ok(Poll::Pending) => Served::Running(Running {
            fut,
            deadline,
            json_max,
        }),
        Err(_) => Served::Ready(Err(panicked())),
    }
}
