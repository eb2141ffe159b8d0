//! The one serving path for a call from a peer, whatever engine carried it: NotFound without a
//! handler, panics caught, the deadline kept, and the answer encoded as a response payload.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::task::Poll;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use serde_json::Value;
use tokio::time::{Instant, timeout_at};

use crate::codec::{RequestMsg, ResponseMsg, encode_payload};
use crate::discovery::NodeId;
use crate::mesh::{Body, EndpointHandler, RawRequest};
use plume::Error;

/// A call being served: answered on the first poll, or still running.
pub(crate) enum Served {
    /// The answer, ready at once.
    Ready(Result<Value, Error>),
    /// A handler that was not ready at once; [`Running::finish`] drives it to its answer.
    Running(Running),
}

/// A handler future with its deadline.
pub(crate) struct Running {
    fut: BoxFuture<'static, Result<Value, Error>>,
    deadline: Instant,
}

impl Running {
    /// The answer: the handler's, GeneralError when it panics, Timeout past the deadline.
    pub(crate) async fn finish(self) -> Result<Value, Error> {
        match timeout_at(self.deadline, AssertUnwindSafe(self.fut).catch_unwind()).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(panicked()),
            Err(_) => Err(Error::timeout(
                "the call did not finish before its deadline",
            )),
        }
    }
}

fn panicked() -> Error {
    Error::general_error("the handler panicked")
}

/// Start serving `req` (sent by `from`) on node `node` with the handler of the endpoint it names.
///
/// The handler's first poll runs here, so a quick handler answers without a task switch; a
/// handler that is not ready continues in [`Running::finish`] (it re-registers its wakers on the
/// next poll). A handler that panics answers GeneralError and never takes its caller down.
pub(crate) fn start(
    node: NodeId,
    handler: Option<EndpointHandler>,
    req: RequestMsg<Body>,
    from: NodeId,
) -> Served {
    let Some(handler) = handler else {
        return Served::Ready(Err(Error::not_found(format!(
            "node {node} does not provide '{}'",
            req.name
        ))));
    };
    let deadline = Instant::now() + Duration::from_millis(req.timeout_ms);
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
    let mut cx = std::task::Context::from_waker(futures::task::noop_waker_ref());
    match catch_unwind(AssertUnwindSafe(|| fut.as_mut().poll(&mut cx))) {
        Ok(Poll::Ready(result)) => Served::Ready(result),
        Ok(Poll::Pending) => Served::Running(Running { fut, deadline }),
        Err(_) => Served::Ready(Err(panicked())),
    }
}

/// The encoded [`ResponseMsg`] carrying `result`.
pub(crate) fn response(result: Result<Value, Error>) -> bytes::Bytes {
    let msg = match result {
        Ok(v) => ResponseMsg {
            ok: Some(v),
            err: None,
        },
        Err(e) => ResponseMsg {
            ok: None,
            err: Some(e.to_json()),
        },
    };
    encode_payload(&msg)
}
