//! The mesh monitor (cote's Monitor, done better): a live, read-only picture of the mesh — its
//! nodes (id, name, key, environment, address, uptime, first seen), their services, the links
//! between them with round-trip times, and the recent joins and losses.
//!
//! Every node answers the built-in node-info endpoint ([`NODE_INFO`]; `docs/protocol.md`, "Node
//! info"), which is in no table: it is reached only by a call addressed to the node. A monitor
//! asks each node present for it once a round (and pings it), and publishes a
//! [`MeshSnapshot`].
//!
//! - [`MeshMonitor::join`] starts a node of its own that provides nothing and subscribes to
//!   nothing: no node lists it as a provider, so no call is ever routed to it. It is not listed
//!   in its own snapshots (nor in any other monitor's).
//! - [`MeshMonitor::observe`] runs the rounds on a node that already exists (the gateway's
//!   `distribution/mesh`), which is listed too.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use plume_transport::monitor::{MeshMonitor, MonitorOptions};
//! use plume_transport::MeshBuilder;
//! let monitor = MeshMonitor::join(MeshBuilder::from_env()?, MonitorOptions::default()).await?;
//! let snapshot = monitor.settle(std::time::Duration::from_secs(2)).await;
//! println!("{}", serde_json::to_string_pretty(&*snapshot)?);
//! monitor.shutdown().await;
//! # Ok(()) }
//! ```

mod poll;
mod snapshot;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};

pub use crate::mesh::{LinkInfo, MAX_REPORTED_LINKS, NODE_INFO, NodeInfo};
pub use snapshot::{ChangeKind, LinkView, MeshChange, MeshSnapshot, NodeView};

use crate::{Mesh, MeshBuilder, MeshError};

/// The key of a monitor's own node.
pub const MONITOR_KEY: &str = "plume-monitor";
/// Most nodes a monitor lists (and asks in one round).
pub const MAX_NODES: usize = 1024;
/// Most recent joins and losses a snapshot keeps.
pub const MAX_EVENTS: usize = 64;
/// Rounds with the same nodes and services after which [`MeshMonitor::settle`] returns.
const SETTLED_ROUNDS: u64 = 3;

/// How a monitor polls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MonitorOptions {
    /// Time between rounds (a table change starts one sooner).
    pub interval: Duration,
    /// How long a node has to answer its node-info call and its ping.
    pub timeout: Duration,
}

impl Default for MonitorOptions {
    /// A round every second; one second to answer.
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
        }
    }
}

/// A running monitor: its latest [`MeshSnapshot`], and a stream of new ones. Dropping it
/// stops the rounds (and, for [`join`](Self::join), [`shutdown`](Self::shutdown) also stops
/// its node).
#[derive(Debug)]
pub struct MeshMonitor {
    mesh: Mesh,
    own_node: bool,
    snapshots: watch::Receiver<Arc<MeshSnapshot>>,
    _stop: DropGuard,
}

impl MeshMonitor {
    /// Start a monitor node from `builder` (its key is set to [`MONITOR_KEY`]): it joins
    /// discovery and links like any node, but provides and subscribes to nothing.
    pub async fn join(builder: MeshBuilder, options: MonitorOptions) -> Result<Self, MeshError> {
        let mesh = builder.key(MONITOR_KEY).start().await?;
        mesh.mark_monitor();
        mesh.set_name("monitor");
        Ok(Self::start(mesh, false, options))
    }

    /// Run the rounds on an existing node (it is listed in the snapshots too).
    pub fn observe(mesh: &Mesh, options: MonitorOptions) -> Self {
        Self::start(mesh.clone(), true, options)
    }

    fn start(mesh: Mesh, include_self: bool, options: MonitorOptions) -> Self {
        let (tx, rx) = watch::channel(Arc::new(MeshSnapshot {
            observer: mesh.node_id().to_string(),
            environment: mesh.environment().to_owned(),
            ..MeshSnapshot::default()
        }));
        let stop = CancellationToken::new();
        tokio::spawn(poll::run(
            mesh.clone(),
            include_self,
            options,
            tx,
            stop.clone(),
        ));
        Self {
            mesh,
            own_node: !include_self,
            snapshots: rx,
            _stop: stop.drop_guard(),
        }
    }

    /// The node the monitor runs on.
    pub fn mesh(&self) -> &Mesh {
        &self.mesh
    }

    /// The latest snapshot (empty, with `rounds: 0`, before the first round).
    pub fn snapshot(&self) -> Arc<MeshSnapshot> {
        self.snapshots.borrow().clone()
    }

    /// A receiver that sees every new snapshot (one per round).
    pub fn updates(&self) -> watch::Receiver<Arc<MeshSnapshot>> {
        self.snapshots.clone()
    }

    /// Wait until the picture is stable — at least one node listed and the same nodes and
    /// services for three rounds in a row — or `wait` has passed; the latest snapshot.
    pub async fn settle(&self, wait: Duration) -> Arc<MeshSnapshot> {
        let deadline = Instant::now() + wait;
        let mut rx = self.snapshots.clone();
        let mut last_shape = None;
        let mut same = 0u64;
        loop {
            let snap = rx.borrow_and_update().clone();
            if snap.rounds > 0 {
                let shape = snap.shape();
                if last_shape.as_ref() == Some(&shape) {
                    same += 1;
                } else {
                    same = 1;
                    last_shape = Some(shape);
                }
                if same >= SETTLED_ROUNDS && !snap.nodes.is_empty() {
                    return snap;
                }
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => return self.snapshot(),
            }
        }
    }

    /// Stop the rounds; a monitor node of its own ([`join`](Self::join)) leaves the mesh.
    pub async fn shutdown(self) {
        let Self { mesh, own_node, .. } = self;
        if own_node {
            mesh.shutdown().await;
        }
    }
}
