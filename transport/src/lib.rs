//! The Plume mesh: discovery, peer links, requests and events.
//!
//! This crate is being built; see `docs/protocol.md`.
