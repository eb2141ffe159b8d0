//! The mesh monitor on real loopback sockets: discovery by loopback multicast (TTL 0), TCP
//! links. Every test has its own environment, so parallel tests stay invisible to each other.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use plume_transport::discovery::{DEFAULT_PORT, DiscoveryConfig, DiscoveryMode};
use plume_transport::monitor::{
    ChangeKind, MONITOR_KEY, MeshMonitor, MeshSnapshot, MonitorOptions,
};
use plume_transport::{Mesh, MeshBuilder, NodeId, Request, TableEvent};
use serde_json::{Value, json};
use tokio::time::{Instant, timeout};

const DEADLINE: Duration = Duration::from_secs(15);

fn builder(env: &str, key: &str) -> MeshBuilder {
    Mesh::builder()
        .environment(env)
        .key(key)
        .discovery(DiscoveryConfig {
            mode: DiscoveryMode::Loopback { port: DEFAULT_PORT },
            heartbeat: Duration::from_millis(100),
            node_timeout: Duration::from_millis(1500),
            secret: None,
        })
}

fn options() -> MonitorOptions {
    MonitorOptions {
        interval: Duration::from_millis(100),
        timeout: Duration::from_secs(1),
    }
}

/// A node providing `work`, which answers with the node's id.
async fn worker(env: &str, key: &str) -> Mesh {
    let mesh = builder(env, key).start().await.expect("node starts");
    let me = mesh.node_id().to_string();
    mesh.provide("work", json!({}), move |_req: Request| {
        let me = me.clone();
        async move { Ok(Value::String(me)) }
    });
    mesh
}

/// Wait (bounded) for a snapshot that satisfies `cond`.
async fn wait_snapshot(
    monitor: &MeshMonitor,
    what: &str,
    cond: impl Fn(&MeshSnapshot) -> bool,
) -> Arc<MeshSnapshot> {
    let mut rx = monitor.updates();
    let deadline = Instant::now() + DEADLINE;
    loop {
        let snap = rx.borrow_and_update().clone();
        if cond(&snap) {
            return snap;
        }
        match timeout(
            deadline.saturating_duration_since(Instant::now()),
            rx.changed(),
        )
        .await
        {
            Ok(Ok(())) => {}
            _ => panic!("no snapshot with {what} in time; last: {snap:#?}"),
        }
    }
}

fn ids(snap: &MeshSnapshot) -> BTreeSet<String> {
    snap.nodes.iter().map(|n| n.id.clone()).collect()
}

/// Wait (bounded) until `cond` holds on `mesh`, re-checked every 20 ms.
async fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !cond() {
        assert!(Instant::now() < deadline, "{what} not reached in time");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_monitor_sees_nodes_services_links_and_losses_and_is_never_a_provider() {
    let env = format!("monitor-{}-{}", std::process::id(), NodeId::random());
    let a = worker(&env, "alpha").await;
    let b = worker(&env, "beta").await;
    a.set_name("node-a");
    let mut a_table = a.watch();
    let monitor = MeshMonitor::join(builder(&env, "ignored"), options())
        .await
        .expect("monitor starts");
    let mon = monitor.mesh().node_id();
    assert_eq!(monitor.mesh().key(), MONITOR_KEY);

    let expected: BTreeSet<String> = [a.node_id(), b.node_id()]
        .iter()
        .map(ToString::to_string)
        .collect();
    let snap = wait_snapshot(&monitor, "both nodes, their link and its round trip", |s| {
        ids(s) == expected && s.links.len() == 1 && s.links[0].rtt_ms.is_some()
    })
    .await;
    let node_a = snap
        .nodes
        .iter()
        .find(|n| n.key == "alpha")
        .expect("a listed");
    assert_eq!(node_a.id, a.node_id().to_string());
    assert_eq!(node_a.name, "node-a");
    assert_eq!(node_a.environment, env);
    assert_eq!(
        node_a.addr.as_deref(),
        Some(a.local_addr().to_string().as_str())
    );
    assert_eq!(node_a.services, ["work"]);
    assert!(node_a.uptime_ms.is_some() && node_a.rtt_ms.is_some() && node_a.answered);
    let joins: BTreeSet<&str> = snap
        .events
        .iter()
        .filter(|e| e.kind == ChangeKind::Join)
        .map(|e| e.node.as_str())
        .collect();
    assert_eq!(joins.len(), 2);

    // The monitor is a linked peer of both nodes (it is in the mesh), yet provides nothing.
    wait_until("both nodes linked to the monitor", || {
        a.linked_peers().contains(&mon) && b.linked_peers().contains(&mon)
    })
    .await;
    let info = a
        .node_info_of(mon, Duration::from_secs(2))
        .await
        .expect("the monitor answers node info");
    assert!(info.monitor && info.services.is_empty(), "{info:?}");
    for n in [&a, &b] {
        let providers: BTreeSet<String> = n
            .providers("work")
            .iter()
            .map(|p| p.node.to_string())
            .collect();
        assert_eq!(providers, expected, "the monitor is not a provider");
    }
    // Calls routed while the monitor is up go to the two workers only (one the monitor took
    // would fail: it has no `work` handler).
    let mut answered = BTreeSet::new();
    for _ in 0..40 {
        for n in [&a, &b] {
            let who = n.to("work").send(&json!(null)).await.expect("work answers");
            answered.insert(who.as_str().expect("an id").to_owned());
        }
    }
    assert_eq!(answered, expected);
    // No table event on `a` ever named the monitor.
    while let Ok(Some(ev)) = timeout(Duration::from_millis(50), a_table.recv()).await {
        let node = match ev {
            TableEvent::Added { node, .. } | TableEvent::Removed { node, .. } => node,
        };
        assert_ne!(node, mon, "a table event of the monitor: {ev:?}");
    }

    // `b` stops: it leaves the snapshot, with a loss.
    let b_id = b.node_id().to_string();
    b.shutdown().await;
    let snap = wait_snapshot(&monitor, "b lost", |s| {
        !ids(s).contains(&b_id)
            && s.events
                .iter()
                .any(|e| e.kind == ChangeKind::Loss && e.node == b_id)
    })
    .await;
    assert_eq!(ids(&snap).len(), 1);
    assert!(snap.links.is_empty());
    monitor.shutdown().await;
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observing_from_a_node_lists_that_node_too() {
    let env = format!("monitor-obs-{}-{}", std::process::id(), NodeId::random());
    let a = worker(&env, "alpha").await;
    let b = worker(&env, "beta").await;
    let monitor = MeshMonitor::observe(&a, options());
    let expected: BTreeSet<String> = [a.node_id(), b.node_id()]
        .iter()
        .map(ToString::to_string)
        .collect();
    let snap = wait_snapshot(&monitor, "both nodes", |s| ids(s) == expected).await;
    assert_eq!(snap.observer, a.node_id().to_string());
    let me = snap
        .nodes
        .iter()
        .find(|n| n.id == a.node_id().to_string())
        .expect("the observer is listed");
    assert_eq!(me.rtt_ms, None, "no ping to itself");
    // Settling returns once three rounds agree.
    let settled = monitor.settle(DEADLINE).await;
    assert_eq!(ids(&settled), expected);
    monitor.shutdown().await;
    b.shutdown().await;
    a.shutdown().await;
}
