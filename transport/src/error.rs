//! Typed errors of links, handshakes and calls.
//!
//! Nothing here is classified by its text: a caller matches on variants, or asks a method such as
//! [`LinkError::is_clean_close`]. No message repeats its `source()`.
//!
//! [`CallError`] is what any engine reports for one call, and [`CallError::into_error`] is the one
//! place that turns it into a Feathers [`Error`].

use std::time::Duration;

use serde_json::json;

use crate::discovery::NodeId;
use crate::protocol::{FrameError, Kind};
use plume::Error;

/// Why a link could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum HandshakeError {
    /// The TCP connect did not finish in time.
    #[error("connect timed out")]
    ConnectTimeout,
    /// The TCP connect failed.
    #[error("connect failed")]
    Connect(#[source] std::io::Error),
    /// The whole handshake took too long.
    #[error("handshake took longer than {0:?}")]
    Timeout(Duration),
    /// Writing to the socket failed.
    #[error("write failed")]
    Write(#[source] std::io::Error),
    /// Reading from the socket failed.
    #[error("read failed")]
    Read(#[source] std::io::Error),
    /// The peer closed the connection before the handshake ended.
    #[error("connection closed during the handshake")]
    Closed,
    /// The bytes are not a frame, or a payload does not decode.
    #[error("bad frame")]
    Frame(#[from] FrameError),
    /// A frame of the wrong kind.
    #[error("expected {expected}, got {got}")]
    Unexpected {
        /// The kind the handshake needs now.
        expected: Kind,
        /// The kind that came.
        got: Kind,
    },
    /// The peer speaks another protocol version.
    #[error("unsupported protocol version {0}")]
    Protocol(u16),
    /// The peer is in another environment.
    #[error("peer is in environment '{0}'")]
    Environment(String),
    /// The peer's node id does not parse.
    #[error("bad node id '{0}'")]
    NodeId(String),
    /// The connection reached this node itself.
    #[error("connected to itself")]
    SelfLink,
    /// The dialled address belongs to another node now.
    #[error("dialled node {want} but reached {got}")]
    WrongPeer {
        /// The node that was dialled.
        want: NodeId,
        /// The node that answered.
        got: NodeId,
    },
    /// Exactly one side has a mesh secret.
    #[error("one side has a mesh secret and the other does not")]
    SecretMismatch,
    /// A handshake message does not open: the peer does not know the mesh secret, or the
    /// message was altered or replayed.
    #[error("the peer does not know the mesh secret")]
    Unauthenticated,
    /// Our hello does not fit in one handshake message.
    #[error("the hello does not fit in a handshake message")]
    Oversized,
    /// A handshake message holds no whole hello frame.
    #[error("a handshake message holds no whole hello")]
    Truncated,
    /// The Noise state could not be set up.
    #[error("encryption setup failed")]
    Crypto(#[from] crate::tcp::CryptoError),
}

/// Why an established link ended.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum LinkError {
    /// The peer closed the connection.
    #[error("peer closed the connection")]
    PeerClosed,
    /// This node closed the link (shutdown, a newer link, discovery removed the peer, a full
    /// control queue).
    #[error("closed by this node")]
    ClosedHere,
    /// Reading from the socket failed.
    #[error("read failed")]
    Read(#[source] std::io::Error),
    /// Nothing arrived for three ping intervals.
    #[error("peer silent for {0:?}")]
    Silent(Duration),
    /// The bytes are not a frame, or a payload does not decode.
    #[error("bad frame")]
    Frame(#[from] FrameError),
    /// A frame that is not allowed at this point of the link.
    #[error("unexpected {0} {1}")]
    Unexpected(Kind, &'static str),
    /// The peer went past a per-link limit.
    #[error("more {0} than the limit of {1}")]
    TooMany(&'static str, usize),
    /// A record of an encrypted link does not open: it was modified, replayed, reordered or
    /// injected.
    #[error("a record does not authenticate")]
    Crypto(#[from] crate::tcp::CryptoError),
}

impl LinkError {
    /// Whether the link ended the ordinary way (one side closed it), rather than by a fault
    /// worth a warning.
    pub(crate) fn is_clean_close(&self) -> bool {
        matches!(self, LinkError::PeerClosed | LinkError::ClosedHere)
    }
}

/// What went wrong with one call on an engine.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum CallError {
    /// The provider did not answer before the deadline.
    #[error("no answer before the deadline")]
    Timeout,
    /// The call never left this node (the connection was closing): it may go elsewhere.
    #[error("the call never left this node")]
    NotSent,
    /// The connection died with the call in flight: it may have run.
    #[error("the connection died with the call in flight")]
    Lost,
    /// Nobody listens for the call (yet, or any more): NATS only.
    #[cfg_attr(not(feature = "nats"), allow(dead_code))]
    #[error("nobody listens for the call")]
    NoResponders,
    /// Too many calls are in flight to this provider.
    #[error("too many calls in flight")]
    Busy,
    /// The transport refused to carry the call (too large, bad subject): NATS only.
    #[cfg_attr(not(feature = "nats"), allow(dead_code))]
    #[error("the transport refused the call")]
    Refused(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl CallError {
    /// The Feathers error a caller sees for a call to `name`, on `node` when known.
    pub(crate) fn into_error(self, name: &str, node: Option<NodeId>) -> Error {
        let on = node.map(|n| format!(" on node {n}")).unwrap_or_default();
        match self {
            CallError::Timeout => Error::timeout(format!("'{name}'{on} did not answer in time")),
            CallError::NotSent | CallError::NoResponders => {
                Error::unavailable(format!("no provider for '{name}'{on} is reachable"))
            }
            CallError::Lost => {
                let mut data = json!({ "outcome": "unknown" });
                if let Some(n) = node {
                    data["node"] = json!(n.to_string());
                }
                Error::unavailable(format!(
                    "the connection{on} died during a call to '{name}'; the outcome is unknown"
                ))
                .with_data(data)
            }
            CallError::Busy => {
                Error::unavailable(format!("too many calls in flight to '{name}'{on}"))
            }
            CallError::Refused(e) => {
                Error::bad_request(format!("the transport refused the call to '{name}': {e}"))
            }
        }
    }
}

/// Why a mesh could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MeshError {
    /// The listener could not be bound.
    #[error("mesh listener: {0}")]
    Listen(#[source] std::io::Error),
    /// Discovery could not start.
    #[error("mesh discovery: {0}")]
    Discovery(#[source] std::io::Error),
    /// Listening beyond loopback without a mesh secret, and without
    /// [`MeshBuilder::insecure`](crate::MeshBuilder::insecure) (`PLUME_MESH_INSECURE=1`).
    #[error(
        "refusing to listen on {0} without a mesh secret: set PLUME_MESH_SECRET, listen on \
         loopback, or allow an open mesh with PLUME_MESH_INSECURE=1"
    )]
    Insecure(std::net::SocketAddr),
}
