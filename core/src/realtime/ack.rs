//! The acknowledgement of a socket call: `[null, result]` or the Feathers error.
//!
//! A result the service handed over as JSON text (a remote service through the distribution
//! plugin's proxy, when no hook needs it decoded: [`Reply::Json`]) goes into the ack as that
//! text, checked as JSON but not decoded into a `Value` and encoded again.

use serde_json::Value;
use socketioxide::SendError;
use socketioxide::extract::AckSender;

use crate::error::{Error, Result};
use crate::handle::Reply;
use crate::params::ConnectionId;

/// Send the outcome of call `event` on connection `conn` as its acknowledgement.
pub(super) fn send(ack: AckSender, conn: &ConnectionId, event: &str, outcome: Result<Reply>) {
    let sent = match outcome {
        Ok(Reply::Value(value)) => ack.send(&(Value::Null, value)),
        Ok(Reply::Json(raw)) => match raw.as_raw_value() {
            Ok(value) => ack.send(&(Value::Null, value)),
            Err(err) => failed(ack, conn, event, &err),
        },
        Err(err) => failed(ack, conn, event, &err),
    };
    if let Err(err) = sent {
        tracing::debug!(target: "plume::realtime", %conn, %err, "acknowledgement not sent");
    }
}

/// Acknowledge a failed call with its Feathers error (logged when it is the server's).
fn failed(
    ack: AckSender,
    conn: &ConnectionId,
    event: &str,
    err: &Error,
) -> std::result::Result<(), SendError> {
    if err.code() >= 500 {
        tracing::error!(target: "plume::realtime", %conn, %event, %err, "call failed");
    }
    ack.send(&err.to_json())
}
