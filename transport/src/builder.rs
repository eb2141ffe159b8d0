//! Configuring and starting a [`Mesh`]: the one place that picks its engine.
//!
//! The builder sits above the mesh and the engines (it knows them all); the mesh itself sees
//! only the [`Engine`](crate::engine::Engine) trait.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::discovery::{ConfigError, DiscoveryConfig, DiscoveryMode, NodeId, PeerEvent};
use crate::engine::{Balance, Engine, Settings};
use crate::error::MeshError;
use crate::mesh::Mesh;
use crate::protocol::DEFAULT_MAX_FRAME;

const LOG: &str = "plume::mesh";

/// Configures and starts a [`Mesh`].
#[derive(Debug)]
pub struct MeshBuilder {
    environment: String,
    key: String,
    discovery: DiscoveryConfig,
    secret: Option<Arc<[u8]>>,
    listen: SocketAddr,
    peers: Option<mpsc::Receiver<PeerEvent>>,
    memory: Option<crate::memory::Network>,
    insecure: bool,
    cfg: Settings,
}

impl Default for MeshBuilder {
    fn default() -> Self {
        Self {
            environment: "default".into(),
            key: String::new(),
            discovery: DiscoveryConfig::default(),
            secret: None,
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            peers: None,
            memory: None,
            insecure: false,
            cfg: Settings {
                timeout: Duration::from_secs(10),
                balance: Balance::RoundRobin,
                max_frame: DEFAULT_MAX_FRAME,
                write_buffer: 4 * 1024 * 1024,
                max_in_flight: 4096,
                max_waiting: 10_000,
                ping_interval: Duration::from_secs(5),
                handshake_timeout: Duration::from_secs(5),
                drain_timeout: Duration::from_secs(10),
            },
        }
    }
}

impl MeshBuilder {
    /// A builder configured from the process environment: the discovery variables of
    /// [`DiscoveryConfig::from_env`] (`PLUME_DISCOVERY`, ..., `PLUME_MESH_SECRET`). Nothing else
    /// reads the environment: [`Mesh::builder`] and `MeshBuilder::default()` do not.
    pub fn from_env() -> Result<Self, ConfigError> {
        let discovery = DiscoveryConfig::from_env()?;
        let insecure = std::env::var("PLUME_MESH_INSECURE").is_ok_and(|v| v == "1");
        Ok(Self::default().discovery(discovery).insecure(insecure))
    }

    /// Allow listening beyond loopback without a mesh secret (default: refused, with
    /// [`MeshError::Insecure`]): anyone who reaches the port can then join the mesh and read
    /// its traffic. Logged as a warning at every start. `PLUME_MESH_INSECURE=1` through the
    /// `from_env` constructors.
    #[must_use]
    pub fn insecure(mut self, allow: bool) -> Self {
        self.insecure = allow;
        self
    }

    /// The environment (default `default`): nodes in different environments never see each other.
    #[must_use]
    pub fn environment(mut self, env: impl Into<String>) -> Self {
        self.environment = env.into();
        self
    }

    /// The replica-group key of this node.
    #[must_use]
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.key = key.into();
        self
    }

    /// Discovery settings (default: loopback).
    #[must_use]
    pub fn discovery(mut self, config: DiscoveryConfig) -> Self {
        self.discovery = config;
        self
    }

    /// Use this channel of peer events instead of discovery ("static peers"): the caller
    /// announces peers itself. Useful for tests and fixed topologies.
    #[must_use]
    pub fn peers(mut self, events: mpsc::Receiver<PeerEvent>) -> Self {
        self.peers = Some(events);
        self
    }

    /// The mesh secret (default: none, or the one of the [`discovery`](Self::discovery)
    /// settings). With a secret, links are encrypted and authenticated (Noise, keyed by the
    /// secret) and beacons are signed. [`from_env`](Self::from_env) reads `PLUME_MESH_SECRET`.
    #[must_use]
    pub fn secret<S: AsRef<[u8]>>(mut self, secret: Option<S>) -> Self {
        self.secret = secret.map(|s| Arc::from(s.as_ref().to_vec().into_boxed_slice()));
        self
    }

    /// The TCP address to listen on for links (default `127.0.0.1:0`).
    #[must_use]
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listen = addr;
        self
    }

    /// The default call timeout (10 s).
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.cfg.timeout = timeout;
        self
    }

    /// The balancing strategy.
    #[must_use]
    pub fn balance(mut self, balance: Balance) -> Self {
        self.cfg.balance = balance;
        self
    }

    /// The maximum frame length in bytes (16 MiB).
    #[must_use]
    pub fn max_frame(mut self, bytes: usize) -> Self {
        self.cfg.max_frame = bytes;
        self
    }

    /// Bytes queued per link before callers wait (4 MiB); events beyond it are dropped for
    /// that peer. A single frame always fits in an empty buffer.
    #[must_use]
    pub fn write_buffer(mut self, bytes: usize) -> Self {
        self.cfg.write_buffer = bytes.max(1024);
        self
    }

    /// Calls in flight per link, each way (4096).
    #[must_use]
    pub fn max_in_flight(mut self, calls: usize) -> Self {
        self.cfg.max_in_flight = calls.max(1);
        self
    }

    /// Keepalive ping interval (5 s); a link silent for three intervals closes.
    #[must_use]
    pub fn ping_interval(mut self, interval: Duration) -> Self {
        self.cfg.ping_interval = interval;
        self
    }

    /// How long [`Mesh::shutdown`] waits for calls in flight (10 s).
    #[must_use]
    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.cfg.drain_timeout = timeout;
        self
    }

    /// Run on an in-process [`Network`](crate::memory::Network) instead of sockets: nodes of one
    /// network reach each other through channels. For tests of everything above the wire.
    #[must_use]
    pub fn memory(mut self, network: &crate::memory::Network) -> Self {
        self.memory = Some(network.clone());
        self
    }

    /// Start the node on its engine: an in-process [`memory`](Self::memory) network when given;
    /// NATS with [`DiscoveryMode::Nats`] (and no `peers` channel); else TCP peer links, with
    /// discovery (unless [`peers`](Self::peers) was given).
    ///
    /// On NATS the node binds no listener and connects in the background (a node starts while
    /// the server is away, and reconnects for ever).
    pub async fn start(self) -> Result<Mesh, MeshError> {
        let node = NodeId(rand::random());
        let (engine, local_addr): (Arc<dyn Engine>, SocketAddr) = if let Some(net) = &self.memory {
            (net.engine(node, &self.key), self.listen)
        } else if self.peers.is_none()
            && let DiscoveryMode::Nats { url } = &self.discovery.mode
        {
            (self.nats_engine(url, node).await?, self.listen)
        } else {
            // One secret for beacons and links.
            let secret = self.secret.or_else(|| self.discovery.secret.clone());
            exposure(self.listen, secret.is_some(), self.insecure)?;
            let engine = crate::tcp::TcpEngine::bind(crate::tcp::TcpConfig {
                node,
                environment: self.environment.clone(),
                key: self.key.clone(),
                secret,
                listen: self.listen,
                discovery: self.discovery,
                peers: self.peers,
                cfg: self.cfg.clone(),
            })
            .await?;
            let addr = engine.local_addr();
            (engine, addr)
        };
        let mesh = Mesh::from_engine(
            node,
            self.environment,
            self.key,
            self.cfg,
            local_addr,
            engine,
        );
        tracing::debug!(target: LOG, node = %node, addr = %local_addr, "mesh node started");
        Ok(mesh)
    }
}

/// Whether a node may listen on `listen`: beyond loopback only with a secret, or when an open
/// mesh is allowed explicitly (then with a warning, at every start).
fn exposure(listen: SocketAddr, secret: bool, insecure: bool) -> Result<(), MeshError> {
    if secret || listen.ip().is_loopback() {
        return Ok(());
    }
    if !insecure {
        return Err(MeshError::Insecure(listen));
    }
    tracing::warn!(target: LOG, %listen, "PLUME_MESH_INSECURE: the mesh listens beyond loopback without a secret; anyone who reaches this port can join the mesh and read its traffic");
    Ok(())
}

impl MeshBuilder {
    /// The NATS engine for this node.
    #[cfg(feature = "nats")]
    async fn nats_engine(&self, url: &str, node: NodeId) -> Result<Arc<dyn Engine>, MeshError> {
        let mut discovery = self.discovery.clone();
        if self.secret.is_some() {
            discovery.secret.clone_from(&self.secret);
        }
        if discovery.secret.is_some() {
            tracing::info!(target: LOG, "NATS: announcements are signed with the mesh secret; calls and events are not, so secure the NATS server itself (credentials, TLS)");
        }
        let engine = crate::nats::NatsEngine::connect(
            url,
            node,
            &self.environment,
            &self.key,
            &discovery,
            self.cfg.max_in_flight,
        )
        .await
        .map_err(MeshError::Discovery)?;
        tracing::debug!(target: LOG, node = %node, %url, "mesh node on NATS");
        Ok(engine)
    }

    /// Without the `nats` feature, NATS is a configuration error naming the feature.
    #[cfg(not(feature = "nats"))]
    async fn nats_engine(&self, _url: &str, _node: NodeId) -> Result<Arc<dyn Engine>, MeshError> {
        Err(MeshError::Discovery(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            ConfigError::FeatureDisabled {
                mode: "nats",
                feature: "nats",
            },
        )))
    }
}

impl Mesh {
    /// A builder with the defaults.
    pub fn builder() -> MeshBuilder {
        MeshBuilder::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beyond_loopback_needs_a_secret_or_an_explicit_insecure() {
        let lo = SocketAddr::from(([127, 0, 0, 1], 0));
        let lo6 = SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, 0));
        let any = SocketAddr::from(([0, 0, 0, 0], 4000));
        let lan = SocketAddr::from(([192, 168, 1, 10], 4000));
        for addr in [lo, lo6] {
            assert!(exposure(addr, false, false).is_ok());
        }
        for addr in [any, lan] {
            assert!(matches!(
                exposure(addr, false, false),
                Err(MeshError::Insecure(a)) if a == addr
            ));
            assert!(exposure(addr, true, false).is_ok(), "with a secret");
            assert!(exposure(addr, false, true).is_ok(), "allowed explicitly");
        }
    }

    #[tokio::test]
    async fn start_refuses_an_open_mesh_beyond_loopback_before_binding() {
        // Refused before any socket exists: nothing listens on the machine's interfaces.
        let err = Mesh::builder()
            .listen(SocketAddr::from(([0, 0, 0, 0], 0)))
            .start()
            .await
            .expect_err("refused");
        assert!(matches!(err, MeshError::Insecure(_)), "{err}");
        assert!(err.to_string().contains("PLUME_MESH_INSECURE=1"), "{err}");
    }
}
