//! The monitor's loop: every round asks each node present for its node info (and pings it),
//! turns the answers into a [`MeshSnapshot`](super::MeshSnapshot), and publishes it.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use tokio::sync::watch;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

use super::snapshot::{MeshSnapshot, Probe, State};
use super::{MAX_EVENTS, MAX_NODES, MonitorOptions};
use crate::discovery::NodeId;
use crate::engine::Removal;
use crate::mesh::{Mesh, TableEvent};

/// Node-info calls in flight at once in a round.
const CONCURRENCY: usize = 32;
/// How long the loop waits after a table change before a round (changes come in bursts).
const DEBOUNCE: Duration = Duration::from_millis(50);

pub(super) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Run rounds on `mesh` until `stop`; `include_self`: list the observing node too.
pub(super) async fn run(
    mesh: Mesh,
    include_self: bool,
    options: MonitorOptions,
    tx: watch::Sender<Arc<MeshSnapshot>>,
    stop: CancellationToken,
) {
    let mut table = mesh.watch();
    // The providers the table names, with their keys: the nodes a NATS mesh has (it has no
    // links to list); bounded like the node list.
    let mut providers: HashMap<NodeId, (String, HashSet<String>)> = HashMap::new();
    let mut state = State::new(MAX_EVENTS);
    let observer = mesh.node_id().to_string();
    loop {
        let probes = round(&mesh, include_self, &options, &providers).await;
        state.apply(probes, now_ms());
        let snapshot = state.snapshot(&observer, mesh.environment(), now_ms());
        tx.send_replace(Arc::new(snapshot));
        // Until the next round: the interval, or a table change (then a short debounce).
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(options.interval) => {}
            ev = table.recv() => match ev {
                None => return,
                Some(ev) => {
                    take(&mut providers, ev);
                    tokio::select! {
                        () = stop.cancelled() => return,
                        () = tokio::time::sleep(DEBOUNCE) => {}
                    }
                }
            },
        }
    }
}

/// Note a table change in `providers`.
fn take(providers: &mut HashMap<NodeId, (String, HashSet<String>)>, ev: TableEvent) {
    match ev {
        TableEvent::Added {
            name, node, key, ..
        } => {
            if let Some((_, names)) = providers.get_mut(&node) {
                if names.len() < MAX_NODES {
                    names.insert(name);
                }
            } else if providers.len() < MAX_NODES {
                providers.insert(node, (key, HashSet::from([name])));
            }
        }
        TableEvent::Removed { name, node, reason } => {
            let gone = reason == Removal::NodeLost
                || providers.get_mut(&node).is_some_and(|(_, names)| {
                    names.remove(&name);
                    names.is_empty()
                });
            if gone {
                providers.remove(&node);
            }
        }
    }
}

/// One round: every node present, asked concurrently.
async fn round(
    mesh: &Mesh,
    include_self: bool,
    options: &MonitorOptions,
    providers: &HashMap<NodeId, (String, HashSet<String>)>,
) -> Vec<Probe> {
    let me = mesh.node_id();
    let mut nodes: Vec<NodeId> = mesh.known_nodes();
    nodes.extend(providers.keys().copied());
    if include_self {
        nodes.push(me);
    }
    nodes.sort();
    nodes.dedup();
    nodes.retain(|n| include_self || *n != me);
    nodes.truncate(MAX_NODES);
    let wait = options.timeout;
    futures::stream::iter(nodes)
        .map(|node| async move {
            let info = mesh.node_info_of(node, wait).await;
            if let Err(e) = &info {
                tracing::debug!(target: "plume::monitor", %node, error = %e, "no node info");
            }
            let rtt = if node == me {
                None
            } else {
                timeout(wait, mesh.ping(node))
                    .await
                    .ok()
                    .and_then(Result::ok)
            };
            Probe {
                node,
                info: info.ok(),
                key_hint: providers.get(&node).map(|(k, _)| k.clone()),
                rtt_ms: rtt.map(|d| d.as_secs_f64() * 1000.0),
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await
}
