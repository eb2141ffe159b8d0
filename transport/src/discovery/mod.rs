//! Discovery: one agent per process finds the other nodes of its
//! environment and tells the mesh when they come, change and go.
//!
//! Backends ([`DiscoveryMode`]): `loopback` (the default: UDP multicast on
//! the loopback interface with TTL 0, so every process on this host and
//! nothing beyond it), `multicast` (opt-in, on a named interface) and
//! `seeds` (unicast gossip). The beacon format is in `docs/protocol.md`,
//! "Beacons"; the variables in `docs/configuration.md`, "Discovery".
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use plume_transport::discovery::{Discovery, DiscoveryConfig, LocalNode, NodeId, PeerEvent};
//! let local = LocalNode {
//!     node: NodeId::random(),
//!     environment: "default".into(),
//!     key: "todos".into(),
//!     addr: "127.0.0.1:4100".parse().unwrap(),
//! };
//! let (discovery, mut events) = Discovery::start(DiscoveryConfig::default(), local).await?;
//! while let Some(event) = events.recv().await {
//!     if let PeerEvent::Up(peer) = event {
//!         println!("{} at {}", peer.key, peer.addr);
//!     }
//! }
//! discovery.leave().await;
//! # Ok(()) }
//! ```

mod agent;
mod codec;
mod config;
mod net;
mod pending;
#[cfg(feature = "redis")]
mod redis;
#[cfg_attr(not(all(feature = "redis", feature = "nats")), allow(dead_code))]
pub(crate) mod signed;
mod state;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, mpsc, oneshot};

pub use config::{
    ConfigError, DEFAULT_GROUP, DEFAULT_HEARTBEAT, DEFAULT_NATS_URL, DEFAULT_NODE_TIMEOUT,
    DEFAULT_PORT, DEFAULT_REDIS_URL, DEFAULT_SEEDS_LISTEN, DiscoveryConfig, DiscoveryMode,
};

/// The mesh protocol version this build advertises in its beacons.
pub const PROTOCOL_VERSION: u16 = 1;

/// Capacity of the event channel returned by [`Discovery::start`].
const EVENT_CHANNEL: usize = 256;

/// A node's identity: random, 128 bits, new for every run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub u128);

impl NodeId {
    /// A fresh random id.
    pub fn random() -> Self {
        Self(rand::random())
    }
}

impl fmt::Display for NodeId {
    /// 32 lowercase hex digits.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

/// A string that is not 32 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a node id is 32 hex digits, got {0:?}")]
pub struct ParseNodeIdError(String);

impl FromStr for NodeId {
    type Err = ParseNodeIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != 32 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ParseNodeIdError(s.to_owned()));
        }
        u128::from_str_radix(s, 16)
            .map(NodeId)
            .map_err(|_| ParseNodeIdError(s.to_owned()))
    }
}

/// This node, as its beacons describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalNode {
    /// Its id.
    pub node: NodeId,
    /// Its environment: nodes of other environments are invisible (at most
    /// 255 bytes).
    pub environment: String,
    /// Its key (replica group; at most 255 bytes).
    pub key: String,
    /// The TCP address peers dial for the mesh link.
    pub addr: SocketAddr,
}

/// A live peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    /// Its id.
    pub node: NodeId,
    /// Its key.
    pub key: String,
    /// The TCP address to dial.
    pub addr: SocketAddr,
    /// Its service-table version: a change means its services changed.
    pub table_version: u64,
    /// The mesh protocol version it speaks.
    pub protocol: u16,
}

/// A change in the set of live peers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerEvent {
    /// A new peer.
    Up(PeerInfo),
    /// A known peer's key, address, table version or protocol changed.
    Updated(PeerInfo),
    /// The peer left, or was silent for the node timeout.
    Down {
        /// Its id.
        node: NodeId,
    },
}

/// State shared between the handles and the agent task.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    peers: Mutex<Vec<PeerInfo>>,
    table_version: AtomicU64,
    table_changed: Notify,
}

#[derive(Debug)]
struct Handle {
    shared: Arc<Shared>,
    commands: mpsc::Sender<agent::Command>,
    local_addr: SocketAddr,
    node: NodeId,
}

/// The handle of the discovery agent (a cheap clone). When the last clone
/// is dropped, the agent sends a leaving beacon and stops.
#[derive(Debug, Clone)]
pub struct Discovery {
    inner: Arc<Handle>,
}

impl Discovery {
    /// Opens the sockets of `config.mode` and starts the agent, which sends
    /// a first beacon at once. Returns the handle and the event stream
    /// (bounded; events wait in the agent while the receiver is slow).
    ///
    /// Fails with `InvalidInput` for an invalid configuration or an
    /// environment or key longer than 255 bytes, and with the socket error
    /// if the sockets cannot be set up.
    pub async fn start(
        config: DiscoveryConfig,
        local: LocalNode,
    ) -> io::Result<(Discovery, mpsc::Receiver<PeerEvent>)> {
        // Refuses, among others, a mode whose Cargo feature is off.
        config
            .validate()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        match &config.mode {
            #[cfg(feature = "redis")]
            DiscoveryMode::Redis { url } => return Self::start_redis(&config, url, local),
            DiscoveryMode::Nats { .. } => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "NATS discovery is part of the NATS mesh engine: start a Mesh with this configuration",
                ));
            }
            _ => {}
        }
        let opened = net::open(&config.mode)?;
        Self::start_with(
            config,
            local,
            opened.udp,
            opened.fanout,
            opened.loopback_only,
            opened.local_addr,
        )
    }

    #[cfg(feature = "redis")]
    fn start_redis(
        config: &DiscoveryConfig,
        url: &str,
        local: LocalNode,
    ) -> io::Result<(Discovery, mpsc::Receiver<PeerEvent>)> {
        let shared = Arc::new(Shared::default());
        let (cmd_tx, cmd_rx) = mpsc::channel(4);
        let (event_tx, event_rx) = mpsc::channel(EVENT_CHANNEL);
        let node = local.node;
        let local_addr = local.addr;
        let agent = redis::RedisAgent::new(
            url,
            local,
            (config.heartbeat, config.node_timeout),
            config.secret.clone(),
            shared.clone(),
        )?;
        tracing::debug!(%node, "redis discovery starting");
        tokio::spawn(agent.run(cmd_rx, event_tx));
        Ok(Self::handle(shared, cmd_tx, local_addr, node, event_rx))
    }

    /// The handle of a started agent, with its peer events.
    fn handle(
        shared: Arc<Shared>,
        commands: mpsc::Sender<agent::Command>,
        local_addr: SocketAddr,
        node: NodeId,
        events: mpsc::Receiver<PeerEvent>,
    ) -> (Discovery, mpsc::Receiver<PeerEvent>) {
        let handle = Handle {
            shared,
            commands,
            local_addr,
            node,
        };
        (
            Discovery {
                inner: Arc::new(handle),
            },
            events,
        )
    }

    fn start_with<T: net::Transport>(
        config: DiscoveryConfig,
        local: LocalNode,
        transport: T,
        fanout: net::Fanout,
        loopback_only: bool,
        local_addr: SocketAddr,
    ) -> io::Result<(Discovery, mpsc::Receiver<PeerEvent>)> {
        config
            .validate()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        if local.environment.len() > 255 || local.key.len() > 255 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the environment and the key must be at most 255 bytes",
            ));
        }
        let shared = Arc::new(Shared::default());
        let (cmd_tx, cmd_rx) = mpsc::channel(4);
        let (event_tx, event_rx) = mpsc::channel(EVENT_CHANNEL);
        let node = local.node;
        tracing::debug!(%node, mode = ?config.mode, %local_addr, "discovery starting");
        let agent = agent::Agent {
            transport,
            fanout,
            loopback_only,
            secret: config.secret.clone(),
            table: state::PeerTable::new(node, local.environment.clone(), config.node_timeout),
            local,
            heartbeat: config.heartbeat,
            node_timeout: config.node_timeout,
            shared: shared.clone(),
            seq: 0,
            pending: pending::Pending::default(),
            candidates: HashMap::new(),
            self_addrs: HashSet::new(),
        };
        tokio::spawn(agent.run(cmd_rx, event_tx));
        Ok(Self::handle(shared, cmd_tx, local_addr, node, event_rx))
    }

    /// Sets the service-table version the beacons carry, and sends a beacon
    /// promptly so peers learn of the change.
    pub fn set_table_version(&self, v: u64) {
        let old = self.inner.shared.table_version.swap(v, Ordering::AcqRel);
        if old != v {
            self.inner.shared.table_changed.notify_one();
        }
    }

    /// Sends a `leaving` beacon (peers drop this node at once) and stops
    /// beaconing. Later calls do nothing.
    pub async fn leave(&self) {
        let (tx, rx) = oneshot::channel();
        if self
            .inner
            .commands
            .send(agent::Command::Leave(tx))
            .await
            .is_ok()
        {
            let _ = rx.await;
        }
    }

    /// The live peers.
    pub fn peers(&self) -> Vec<PeerInfo> {
        crate::sync::lock(&self.inner.shared.peers).clone()
    }

    /// This node's id.
    pub fn node(&self) -> NodeId {
        self.inner.node
    }

    /// The local UDP address this agent sends from (in `seeds` mode, the
    /// address others can list as a seed; in `redis` mode, the advertised mesh address).
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr
    }
}

#[cfg(test)]
mod tests;
