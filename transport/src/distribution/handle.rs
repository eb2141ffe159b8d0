//! The handle of a running plugin: what it publishes and consumes, and how to stop it.

use std::fmt;
use std::sync::Arc;

use plume::App;
use plume::server::RestLayer;

use super::runtime::Shared;
use crate::mesh::{Mesh, ProviderInfo};

/// A running distribution plugin. Cheap to clone.
#[derive(Clone)]
pub struct DistributionHandle {
    pub(super) shared: Arc<Shared>,
}

impl fmt::Debug for DistributionHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DistributionHandle")
            .field("node", &self.shared.mesh.node_id())
            .field("key", &self.shared.opts.key)
            .finish_non_exhaustive()
    }
}

impl DistributionHandle {
    /// The handle of the plugin running on `app`, if any.
    pub fn of(app: &App) -> Option<DistributionHandle> {
        app.extension::<DistributionHandle>().map(|h| (*h).clone())
    }

    /// The mesh node.
    pub fn mesh(&self) -> &Mesh {
        &self.shared.mesh
    }

    /// This node's key.
    pub fn key(&self) -> &str {
        &self.shared.opts.key
    }

    /// The local paths this node publishes.
    pub fn published(&self) -> Vec<String> {
        self.shared.published()
    }

    /// The local paths of the mounted proxies.
    pub fn remote_paths(&self) -> Vec<String> {
        self.shared.remote_paths()
    }

    /// The live providers of the proxy at `local_path`.
    pub fn providers(&self, local_path: &str) -> Vec<ProviderInfo> {
        self.shared.providers_of(&plume::normalize_path(local_path))
    }

    /// The middlewares given with [`Distribution::middleware`](super::Distribution::middleware); every proxy's REST routes run
    /// through them.
    pub fn middlewares(&self) -> &[RestLayer] {
        &self.shared.opts.middlewares
    }

    /// Wait until a proxy is mounted at `local_path` with at least one provider (unbounded:
    /// wrap it in a timeout).
    pub async fn remote_ready(&self, local_path: &str) {
        let path = plume::normalize_path(local_path);
        let mut rx = self.shared.changes();
        loop {
            if self.shared.is_available(&path) {
                return;
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    }

    /// Wait until no proxy is mounted at `local_path` (unbounded: wrap it in a timeout).
    pub async fn remote_gone(&self, local_path: &str) {
        let path = plume::normalize_path(local_path);
        let mut rx = self.shared.changes();
        loop {
            if !self.shared.is_mounted(&path) {
                return;
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    }

    /// Stop: withdraw every published service, stop relaying, and shut the mesh down
    /// (draining calls in flight). Proxies stay mounted and answer 503. Calling it again does
    /// nothing.
    pub async fn shutdown(&self) {
        self.shared.shutdown().await;
    }
}
