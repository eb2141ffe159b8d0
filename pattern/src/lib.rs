//! Hemera-style pattern RPC for Plume.
//!
//! A node [`add`](Hemera::add)s patterns (JSON objects such as `{"topic": "math", "cmd":
//! "add"}`) with handlers, and [`act`](Hemera::act)s messages: a message reaches the handler of
//! the most specific pattern whose every property it has (see [`pattern`] for the rules).
//!
//! Two buses carry the messages:
//! - **NATS**, wire-compatible with nats-hemera 7 ([`Hemera::nats`], [`Hemera::connect`]): the
//!   subject is the topic, servers join the queue group `queue.<topic>`, and the request and
//!   response are Hemera's JSON envelopes, so Plume and Node Hemera services call each other
//!   and share the load of one topic;
//! - the **Plume mesh** ([`Hemera::mesh`]): the topic is the endpoint `hemera.<topic>`.
//!
//! `docs/hemera.md` maps every Hemera feature to this crate.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use plume_pattern::{Hemera, HemeraError, Options, Req, typed};
//! use serde::Deserialize;
//! use serde_json::json;
//!
//! #[derive(Deserialize)]
//! struct Add { a: f64, b: f64 }
//!
//! let node = Hemera::connect("nats://127.0.0.1:4222", Options::default()).await?;
//! node.add(json!({"topic": "math", "cmd": "add"}),
//!          typed(|p: Add, _req: Req| async move { Ok::<_, HemeraError>(p.a + p.b) })).await?;
//! let sum = node.act(json!({"topic": "math", "cmd": "add", "a": 1, "b": 2, "timeout$": 500})).await?;
//! assert_eq!(sum, json!(3.0));
//! # Ok(()) }
//! ```

mod bus;
mod compact;
pub mod envelope;
mod error;
mod handler;
mod hemera;
mod id;
mod message;
mod outcome;
mod pack;
pub mod pattern;
mod payload;
mod registry;
mod request_json;
mod scan;
mod schema;
mod serve;
mod served;
mod view;
mod walk;
mod wire;

#[doc = include_str!("../../docs/hemera.md")]
pub mod guide {}

pub use error::{
    HEMERA_ERROR, HemeraError, PARSE_ERROR, PATTERN_NOT_FOUND, PAYLOAD_VALIDATION_ERROR,
    TIMEOUT_ERROR,
};
#[doc(hidden)]
pub use handler::Matched;
pub use handler::{Handler, Req, Typed, typed};
pub use hemera::{Hemera, Options};
pub use id::Id;
pub use pattern::Pattern;

impl Hemera {
    /// A node on an open NATS connection (Hemera's wire format).
    pub fn nats(client: async_nats::Client, options: Options) -> Hemera {
        Hemera::with_bus(bus::Bus::nats(client), options)
    }

    /// Connect to the NATS server at `url` and make a node on it.
    pub async fn connect(url: &str, options: Options) -> Result<Hemera, HemeraError> {
        let client = async_nats::connect(url)
            .await
            .map_err(|e| HemeraError::hemera(format!("cannot connect to NATS at {url}: {e}")))?;
        Ok(Hemera::nats(client, options))
    }

    /// A node on a Plume mesh node (TCP links, or whatever carries the mesh).
    pub fn mesh(mesh: plume_transport::Mesh, options: Options) -> Hemera {
        Hemera::with_bus(bus::Bus::mesh(mesh), options)
    }
}
