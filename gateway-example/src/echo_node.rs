//! `gateway-example echo-node`: the meshage README's echo node. It joins the loopback mesh,
//! provides the stream `echo` (answering `{"echoed": <the message>, "node": "<its name>"}`),
//! and serves meshage's HTTP API ([`MeshageApi`]) on 127.0.0.1. Several of them form a
//! cluster with no other configuration: a message sent to any of them with a partition key
//! reaches the one node that owns the key.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use plume_transport::meshage::MeshageApi;
use plume_transport::{DiscoveryConfig, Mesh, Request};
use serde_json::json;

/// The stream every echo node provides.
pub(crate) const STREAM: &str = "echo";

/// Join the mesh with node key `key`: its environment is `PLUME_ENV` (default `default`), its
/// discovery the `PLUME_DISCOVERY…` variables (default: loopback).
pub(crate) async fn join_mesh(key: &str, drain: Duration) -> anyhow::Result<Mesh> {
    let environment = std::env::var("PLUME_ENV")
        .ok()
        .filter(|e| !e.is_empty())
        .unwrap_or_else(|| "default".to_owned());
    Mesh::builder()
        .environment(environment)
        .key(key)
        .discovery(DiscoveryConfig::from_env()?)
        .drain_timeout(drain)
        .start()
        .await
        .context("joining the mesh")
}

/// Run the echo node `name` with its HTTP API on `http` until `stop` resolves. The mesh's
/// environment is `PLUME_ENV` (default `default`), its discovery the `PLUME_DISCOVERY…`
/// variables (default: loopback).
pub(crate) async fn run(
    name: &str,
    http: SocketAddr,
    stop: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let mesh = join_mesh("echo-node", Duration::from_secs(5)).await?;
    mesh.set_name(name);
    let me = name.to_owned();
    mesh.respond(STREAM, move |req: Request| {
        let me = me.clone();
        async move { Ok(json!({ "echoed": req.body, "node": me })) }
    });
    let listener = tokio::net::TcpListener::bind(http)
        .await
        .with_context(|| format!("binding {http}"))?;
    let addr = listener.local_addr()?;
    let router = MeshageApi::new(mesh.clone()).stream(STREAM).router();
    crate::say(&format!("echo-node {name} ready on http://{addr}"));
    let served = axum::serve(listener, router)
        .with_graceful_shutdown(stop)
        .await;
    mesh.shutdown().await;
    served.context("serving HTTP")
}
