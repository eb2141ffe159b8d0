//! A discovery agent for the multi-host tests.
//!
//! `discovery-node <environment> <key> <dial-addr>`; the backend comes from
//! the `PLUME_*` variables (`DiscoveryConfig::from_env`). Prints one line
//! per event on stdout, flushed at once:
//!
//! ```text
//! ready <node-id> <udp-addr>
//! up <node-id> <key> <dial-addr> <table-version>
//! updated <node-id> <key> <dial-addr> <table-version>
//! down <node-id>
//! ```
//!
//! On SIGTERM or SIGINT it sends a leaving beacon and exits 0.

use std::io::Write;
use std::process::ExitCode;

use plume_transport::discovery::{Discovery, DiscoveryConfig, LocalNode, NodeId, PeerEvent};
use tokio::signal::unix::{SignalKind, signal};

fn line(s: &str) {
    let mut out = std::io::stdout().lock();
    // A closed stdout (the test went away) is no reason to stop.
    let _ = writeln!(out, "{s}");
    let _ = out.flush();
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [environment, key, addr] = args.as_slice() else {
        eprintln!("usage: discovery-node <environment> <key> <dial-addr>");
        return ExitCode::from(2);
    };
    let Ok(addr) = addr.parse() else {
        eprintln!("invalid dial address {addr:?}");
        return ExitCode::from(2);
    };
    let config = match DiscoveryConfig::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let local = LocalNode {
        node: NodeId::random(),
        environment: environment.clone(),
        key: key.clone(),
        addr,
    };
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        eprintln!("cannot install signal handlers");
        return ExitCode::from(1);
    };
    let (discovery, mut events) = match Discovery::start(config, local).await {
        Ok(d) => d,
        Err(e) => {
            eprintln!("discovery failed to start: {e}");
            return ExitCode::from(1);
        }
    };
    line(&format!(
        "ready {} {}",
        discovery.node(),
        discovery.local_addr()
    ));
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            event = events.recv() => match event {
                Some(PeerEvent::Up(p)) => line(&format!("up {} {} {} {}", p.node, p.key, p.addr, p.table_version)),
                Some(PeerEvent::Updated(p)) => {
                    line(&format!("updated {} {} {} {}", p.node, p.key, p.addr, p.table_version));
                }
                Some(PeerEvent::Down { node }) => line(&format!("down {node}")),
                None => break,
            },
        }
    }
    discovery.leave().await;
    ExitCode::SUCCESS
}
