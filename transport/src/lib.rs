//! The Plume mesh: discovery, peer links, requests and events.
//!
//! A [`Mesh`] is one node. It keeps the mesh-wide service table and routes calls by endpoint
//! name to the live providers; an engine carries it between nodes: TCP peer links (nodes find
//! each other through [`discovery`] and keep one link per pair), a NATS server, or, for tests,
//! an in-process [`memory::Network`]. The [`distribution`] plugin publishes an App's services on
//! the mesh and mounts proxies for remote ones (`docs/distribution.md`).
//!
//! Layers, each using only those before it: [`protocol`] (wire types) ← the engine contract ←
//! the mesh and the engines ← the builder ← [`distribution`]. `docs/architecture.md` maps a
//! call's path through these folders; `docs/protocol.md` is the wire format.
//!
//! ## Cargo features
//!
//! | feature | default | what it adds | dependencies |
//! |---|---|---|---|
//! | `nats` | yes | the NATS engine (`PLUME_DISCOVERY=nats`, [`DiscoveryMode::Nats`]) | async-nats |
//! | `redis` | yes | Redis discovery (`PLUME_DISCOVERY=redis`, [`DiscoveryMode::Redis`]) | redis |
//!
//! The TCP peer links, loopback, multicast and seed discovery and the in-process engine are
//! always there. The configuration types do not change with the features: choosing a backend
//! whose feature is off is a [`ConfigError::FeatureDisabled`] that names the feature (from
//! [`DiscoveryConfig::from_env`], [`DiscoveryConfig::validate`], [`Discovery::start`] and the
//! distribution plugin's start), or a [`MeshError::Discovery`] from [`MeshBuilder::start`];
//! never a silent fallback to another backend. The crate needs `plume` with its `server`
//! feature (the distribution plugin's REST layers); `auth` stays the application's choice.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use plume_transport::Mesh;
//! use serde_json::json;
//!
//! let mesh = Mesh::builder().environment("dev").key("adder").start().await?;
//! mesh.respond("add", |req: plume_transport::Request| async move {
//!     let a = req.body["a"].as_i64().unwrap_or(0);
//!     let b = req.body["b"].as_i64().unwrap_or(0);
//!     Ok(json!(a + b))
//! });
//! let sum = mesh.to("add").send(&json!({"a": 1, "b": 2})).await?;
//! assert_eq!(sum, json!(3));
//! mesh.shutdown().await;
//! # Ok(()) }
//! ```

mod answer;
mod builder;
pub mod discovery;
pub mod distribution;
mod engine;
mod error;
pub mod memory;
mod mesh;
pub mod meshage;
pub mod metrics;
pub mod monitor;
#[cfg(feature = "nats")]
mod nats;
pub mod protocol;
mod sync;
mod tcp;

/// The mesh wire types, under their former name.
pub use protocol as codec;

pub use answer::{Answer, Encoded};
pub use builder::MeshBuilder;
pub use discovery::{
    ConfigError, Discovery, DiscoveryConfig, DiscoveryMode, LocalNode, NodeId, PeerEvent, PeerInfo,
};
pub use engine::Removal;
pub use mesh::{
    Balance, CallBuilder, CallOptions, Handler, Mesh, MeshError, ProviderInfo, RawBody, RawHandler,
    RawRequest, Reply, Request, Subscription, TableEvent, TableWatch, partition_owner,
};
/// Requests on a NATS client through one reply subscription (see [`NatsInbox`]).
#[cfg(feature = "nats")]
pub use nats::inbox::{InboxError, NatsInbox};
