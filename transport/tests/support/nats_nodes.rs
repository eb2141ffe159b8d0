//! Mesh nodes on a NATS server for the NATS tests, and a wait for the providers a node sees.
//! Included (`#[path]`) next to `nats_server.rs`, as the module `support`.

use std::sync::Arc;
use std::time::Duration;

use plume_transport::Mesh;
use plume_transport::discovery::{DiscoveryConfig, DiscoveryMode};
use tokio::time::timeout;

use crate::support::WAIT;

/// A node on the NATS server at `url` (heartbeat 200 ms), with the mesh secret `secret`.
pub(crate) async fn node_with(url: &str, env: &str, key: &str, secret: Option<Arc<[u8]>>) -> Mesh {
    Mesh::builder()
        .environment(env)
        .key(key)
        .discovery(DiscoveryConfig {
            mode: DiscoveryMode::Nats { url: url.into() },
            heartbeat: Duration::from_millis(200),
            node_timeout: Duration::from_secs(5),
            secret,
        })
        .start()
        .await
        .expect("node")
}

/// Wait (bounded) until `mesh` sees `n` providers of `name`.
pub(crate) async fn wait_providers(mesh: &Mesh, name: &str, n: usize) {
    let mut events = mesh.watch();
    let seen = async {
        while mesh.providers(name).len() != n {
            events.recv().await.expect("table events");
        }
    };
    timeout(WAIT, seen).await.expect("providers in time");
}
