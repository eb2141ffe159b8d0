//! The Plume mesh: discovery, peer links, requests and events.
//!
//! This crate is being built; see `docs/protocol.md`.

pub mod discovery;

pub use discovery::{
    ConfigError, Discovery, DiscoveryConfig, DiscoveryMode, LocalNode, NodeId, PeerEvent, PeerInfo,
};
