//! Stand-in for the discovery module while it is built on its own branch: the same types, and a
//! `Discovery::start` that reports discovery as unavailable. Meshes built with
//! [`MeshBuilder::peers`](crate::MeshBuilder::peers) do not need it.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

/// A node's random 128-bit id for this run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub u128);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

/// What this node announces.
#[derive(Debug, Clone)]
pub struct LocalNode {
    /// Its id.
    pub node: NodeId,
    /// Its environment.
    pub environment: String,
    /// Its key.
    pub key: String,
    /// The mesh TCP address peers dial.
    pub addr: SocketAddr,
}

/// How beacons travel.
#[derive(Debug, Clone)]
pub enum DiscoveryMode {
    /// Multicast on the loopback interface.
    Loopback {
        /// UDP port.
        port: u16,
    },
    /// Multicast on a chosen interface.
    Multicast {
        /// Group.
        group: Ipv4Addr,
        /// UDP port.
        port: u16,
        /// Interface address.
        iface: Ipv4Addr,
    },
    /// Unicast gossip to seeds.
    Seeds {
        /// Where to listen.
        listen: SocketAddr,
        /// The seeds.
        seeds: Vec<SocketAddr>,
    },
}

/// Discovery settings.
#[derive(Debug, Clone)]
pub struct DiscoveryConfig {
    /// The backend.
    pub mode: DiscoveryMode,
    /// Beacon interval.
    pub heartbeat: Duration,
    /// Silence after which a peer is dead.
    pub node_timeout: Duration,
    /// Mesh secret for signing beacons.
    pub secret: Option<Arc<[u8]>>,
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        Self {
            mode: DiscoveryMode::Loopback { port: 47_000 },
            heartbeat: Duration::from_secs(1),
            node_timeout: Duration::from_secs(3),
            secret: None,
        }
    }
}

/// A discovered peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    /// Its id.
    pub node: NodeId,
    /// Its key.
    pub key: String,
    /// Its mesh TCP address.
    pub addr: SocketAddr,
    /// Its service-table version.
    pub table_version: u64,
    /// Its protocol version.
    pub protocol: u16,
}

/// A change in the set of peers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerEvent {
    /// A new peer.
    Up(PeerInfo),
    /// A known peer changed.
    Updated(PeerInfo),
    /// A peer left or went silent.
    Down {
        /// Which.
        node: NodeId,
    },
}

/// The discovery agent handle.
#[derive(Debug, Clone)]
pub struct Discovery;

impl Discovery {
    /// Start discovery (not available in this stand-in).
    pub async fn start(
        _config: DiscoveryConfig,
        _local: LocalNode,
    ) -> std::io::Result<(Discovery, mpsc::Receiver<PeerEvent>)> {
        Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "discovery is not built yet",
        ))
    }

    /// Announce a new service-table version.
    pub fn set_table_version(&self, _v: u64) {}

    /// Send a leaving beacon and stop.
    pub async fn leave(&self) {}

    /// The live peers.
    pub fn peers(&self) -> Vec<PeerInfo> {
        Vec::new()
    }
}
