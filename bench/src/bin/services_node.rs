//! One publisher of the services curve of `bench/curves.sh` (docs/benchmarks.md, "Scale
//! curves").
//!
//! Usage: `services-node NAME COUNT`. An App with `COUNT` in-memory services `svc-0` …
//! `svc-{COUNT-1}`, each holding one record, published on the mesh of `PLUME_ENV` (discovery
//! from the `PLUME_DISCOVERY…` variables; loopback by default) under the distribution key
//! `bench-services`, consuming nothing. Prints `services-node NAME published COUNT at UNIX_US`
//! once the distribution plugin has started, and stops (withdrawing them) on SIGTERM or
//! Ctrl-C. No HTTP server: the gateway reaches the services over the mesh only.

use anyhow::Context;
use plume::{App, MemoryService, Params};
use plume_bench::{now_us, say};
use plume_transport::distribution::Distribution;
use serde_json::json;
use tokio::signal::unix::{SignalKind, signal};

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// At most this many services (a bench tool, not a load generator for the registry).
const MAX_SERVICES: usize = 10_000;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(name), Some(count)) = (args.next(), args.next()) else {
        anyhow::bail!("usage: services-node NAME COUNT");
    };
    let count: usize = count.parse().context("COUNT is a number of services")?;
    anyhow::ensure!(
        (1..=MAX_SERVICES).contains(&count),
        "COUNT must be 1..={MAX_SERVICES}"
    );
    let app = App::new();
    for i in 0..count {
        let path = format!("svc-{i}");
        let store: MemoryService = MemoryService::new();
        let service = app.use_service(&path, store);
        service
            .create(json!({"text": format!("{path} on {name}")}), Params::new())
            .await?;
    }
    Distribution::from_env()?
        .key("bench-services")
        .remote_services(false)
        .start(&app)
        .await?;
    say(&format!(
        "services-node {name} published {count} at {}",
        now_us()
    ));
    let mut term = signal(SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    app.shutdown().await;
    Ok(())
}
