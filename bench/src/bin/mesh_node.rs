//! One node of the nodes curve of `bench/curves.sh` (docs/benchmarks.md, "Scale curves").
//!
//! Usage: `mesh-node NAME EXPECT`. Joins the mesh of `PLUME_ENV` with the discovery of the
//! `PLUME_DISCOVERY…` variables (loopback by default, or NATS), provides the endpoint
//! `bench-node`, and watches the mesh's service table. It prints
//!
//! * `mesh-node NAME up` once it has joined;
//! * `mesh-node NAME sees all EXPECT at UNIX_US` the first time the table holds `EXPECT` other
//!   nodes providing `bench-node` (the time it saw the last one, Unix µs);
//! * `mesh-node NAME lost a node at UNIX_US` when it sees fewer again (a flap: the bench fails
//!   the point).
//!
//! It stops (leaving the mesh) on SIGTERM or Ctrl-C. Loopback or a NATS server only.

use std::collections::HashSet;
use std::time::Duration;

use anyhow::Context;
use plume_bench::{now_us, say};
use plume_transport::{DiscoveryConfig, Mesh, Request, TableEvent};
use serde_json::json;
use tokio::signal::unix::{SignalKind, signal};

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// The endpoint every node provides: a node sees another once it knows it provides this.
const ENDPOINT: &str = "bench-node";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(name), Some(expect)) = (args.next(), args.next()) else {
        anyhow::bail!("usage: mesh-node NAME EXPECT");
    };
    let expect: usize = expect
        .parse()
        .context("EXPECT is a number of other nodes")?;
    let environment = std::env::var("PLUME_ENV").unwrap_or_else(|_| "default".to_owned());
    let mesh = Mesh::builder()
        .environment(environment)
        .key("bench-node")
        .discovery(DiscoveryConfig::from_env()?)
        .drain_timeout(Duration::from_secs(1))
        .start()
        .await
        .context("joining the mesh")?;
    let me = mesh.node_id();
    mesh.respond(ENDPOINT, |_req: Request| async { Ok(json!(true)) });
    say(&format!("mesh-node {name} up"));

    let mut term = signal(SignalKind::terminate())?;
    let mut watch = mesh.watch();
    let mut seen = HashSet::new();
    let mut complete = false;
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
            event = watch.recv() => {
                match event {
                    Some(TableEvent::Added { name: n, node, .. }) if n == ENDPOINT && node != me => {
                        seen.insert(node);
                    }
                    Some(TableEvent::Removed { name: n, node, .. }) if n == ENDPOINT => {
                        seen.remove(&node);
                    }
                    Some(_) => continue,
                    None => break,
                }
                if !complete && seen.len() >= expect {
                    complete = true;
                    say(&format!("mesh-node {name} sees all {expect} at {}", now_us()));
                } else if complete && seen.len() < expect {
                    complete = false;
                    say(&format!("mesh-node {name} lost a node at {}", now_us()));
                }
            }
        }
    }
    mesh.shutdown().await;
    Ok(())
}
