//! An App that publishes services through the distribution plugin, for multi-process tests.
//!
//! `dist-node --env ENV --key KEY [--path PATH]...` mounts a memory service at each PATH
//! (default `messages`) seeded with one record, starts `Distribution::from_env()` with that
//! environment and key (consuming nothing), prints `READY <node id> <seed id>` once it is up,
//! and on SIGTERM shuts down gracefully, prints `STOPPED` and exits 0.

use std::io::Write;

use anyhow::{Context, bail};
use plume::{App, MemoryService, Params};
use plume_transport::distribution::Distribution;
use serde_json::{Value, json};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .event_format(plume::trace::log::TraceFormat::new())
        .with_writer(std::io::stderr)
        .init();
    let mut env = None;
    let mut key = None;
    let mut paths = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--env" => env = Some(value()?),
            "--key" => key = Some(value()?),
            "--path" => paths.push(value()?),
            other => bail!("unknown argument {other}"),
        }
    }
    if paths.is_empty() {
        paths.push("messages".to_owned());
    }
    let app = App::new();
    let mut seed = Value::Null;
    for path in &paths {
        let handle = app.use_service(path, MemoryService::<Value>::new());
        let record = handle
            .create(json!({"text": format!("seed of {path}")}), Params::new())
            .await?;
        seed = record["id"].clone();
    }
    let mut dist = Distribution::from_env()?.remote_services(false);
    if let Some(env) = env {
        dist = dist.environment(env);
    }
    if let Some(key) = key {
        dist = dist.key(key);
    }
    let handle = dist.start(&app).await?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "READY {} {seed}", handle.mesh().node_id())?;
        out.flush()?;
    }
    term.recv().await;
    app.shutdown().await;
    let mut out = std::io::stdout().lock();
    writeln!(out, "STOPPED")?;
    out.flush()?;
    Ok(())
}
