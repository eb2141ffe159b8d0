//! A mesh node for multi-process tests.
//!
//! `mesh-node --env ENV --key KEY [--secret S] [--delay-ms N]` joins the mesh (loopback
//! discovery, or `PLUME_DISCOVERY*` variables), provides `echo` (answers the body after the
//! delay) and `whoami` (answers `{node, pid}`), prints `READY <node id> <addr>` once it is up,
//! and on SIGTERM shuts down gracefully, prints `STOPPED` and exits 0.

use std::io::Write;
use std::time::Duration;

use anyhow::{Context, bail};
use plume_transport::{MeshBuilder, Request};
use serde_json::json;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .event_format(plume::trace::log::TraceFormat::new())
        .with_writer(std::io::stderr)
        .init();
    let mut env = "default".to_string();
    let mut key = "mesh-node".to_string();
    let mut secret: Option<String> = None;
    let mut delay = Duration::ZERO;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--env" => env = value()?,
            "--key" => key = value()?,
            "--secret" => secret = Some(value()?),
            "--delay-ms" => delay = Duration::from_millis(value()?.parse()?),
            other => bail!("unknown argument {other}"),
        }
    }
    // The discovery variables, PLUME_MESH_SECRET and PLUME_MESH_INSECURE; `--secret` wins.
    let mut builder = MeshBuilder::from_env()?.environment(env).key(key);
    if secret.is_some() {
        builder = builder.secret(secret);
    }
    let mesh = builder
        .drain_timeout(Duration::from_secs(5))
        .start()
        .await?;
    mesh.respond("echo", move |req: Request| async move {
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        Ok(req.body)
    });
    let me = json!({"node": mesh.node_id().to_string(), "pid": std::process::id()});
    mesh.respond("whoami", move |_req: Request| {
        let me = me.clone();
        async move { Ok(me) }
    });
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "READY {} {}", mesh.node_id(), mesh.local_addr())?;
        out.flush()?;
    }
    term.recv().await;
    mesh.shutdown().await;
    let mut out = std::io::stdout().lock();
    writeln!(out, "STOPPED")?;
    out.flush()?;
    Ok(())
}
