//! The distributed instance manager, multi-process: real `gateway-example workers` nodes on
//! the loopback mesh (the harness: `common/workers.rs`). The test reads every line of every
//! node and checks, from the timestamps, that no configuration ever ran on two nodes at the
//! same moment.

use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;

#[path = "common/workers.rs"]
mod workers;

use workers::{Cluster, FAILOVER, Kind, SETTLE};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_seven_configs_failover_return_health_and_no_overlap() {
    let mut c = Cluster::new();
    for name in ["a", "b", "c"] {
        c.start(name).await;
    }
    c.wait("3/2/2", SETTLE, |c| c.counts() == Some(vec![3, 2, 2]))
        .await;

    // The verbose healthcheck of each node shows the set (`$instances`): the node, its leader,
    // what runs there; together, all seven once. The leader's also shows who runs what.
    let mut shown = 0;
    for i in 0..3 {
        let health = c
            .request(i, "GET", "/distribution/healthcheck?verbose=true")
            .await;
        let set = &health["$instances"]["workers"];
        assert_eq!(
            set["node"].as_str(),
            Some(c.nodes[i].id.as_str()),
            "{health}"
        );
        shown += set["running"].as_object().map_or(0, serde_json::Map::len);
        if set["leader"] == set["node"] {
            let held = set["leading"]["holders"]
                .as_object()
                .map(serde_json::Map::len);
            assert_eq!(held, Some(7), "{health}");
        }
    }
    assert_eq!(shown, 7);

    // SIGKILL the leader: all seven run on the other two, 4/3, within the target.
    let leader = c.leader().await;
    c.kill(leader).await;
    let took = c
        .wait("4/3 after the leader was killed", FAILOVER, |c| {
            c.counts() == Some(vec![4, 3])
        })
        .await;
    eprintln!("failover after SIGKILL of the leader: {took:?}");

    // A node comes back: 3/2/2 again, by the fewest moves (two configurations, both to it).
    let mark = c.log.lines().len();
    c.start("d").await;
    c.wait("3/2/2 with d", SETTLE, |c| {
        c.counts() == Some(vec![3, 2, 2])
    })
    .await;
    let moved = c.starts_after(mark);
    assert_eq!(moved.len(), 2, "{moved:?}");
    assert!(moved.iter().all(|l| l.process == 3), "{moved:?}");

    // The killed leader still counts as a member (it may come back) until the leader forgets
    // it; only then can the set of three lose another node.
    let leader = c.leader().await;
    let t0 = Instant::now();
    loop {
        let members = c.request(leader, "GET", "/instances").await["members"]
            .as_array()
            .map(Vec::len);
        if members == Some(3) {
            break;
        }
        assert!(t0.elapsed() < SETTLE, "the lost member is never forgotten");
        // Forgetting is a timer on the leader (10 s): ask again shortly, bounded above.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A follower dies: only its configurations start again, elsewhere.
    let victim = (0..c.nodes.len())
        .find(|i| c.nodes[*i].alive && *i != leader)
        .expect("a follower");
    let theirs: Vec<String> = c
        .running()
        .into_iter()
        .filter(|(_, p)| p == &[victim])
        .map(|(cfg, _)| cfg)
        .collect();
    let mark = c.log.lines().len();
    c.kill(victim).await;
    c.wait("4/3 after a follower was killed", FAILOVER, |c| {
        c.counts() == Some(vec![4, 3])
    })
    .await;
    let mut started: Vec<String> = c.starts_after(mark).into_iter().map(|l| l.config).collect();
    started.sort();
    assert_eq!(started, theirs);

    // An instance that fails its health check is disconnected (a stop line) and created again.
    let (config, process) = c
        .running()
        .into_iter()
        .map(|(cfg, p)| (cfg, p[0]))
        .next()
        .expect("something runs");
    let mark = c.log.lines().len();
    let answer = c
        .request(process, "POST", &format!("/instances/{config}/sick"))
        .await;
    assert_eq!(answer["running"], Value::Bool(true), "{answer}");
    c.wait("the sick instance recreated", SETTLE, |c| {
        let lines = c.log.lines();
        let of = |k| {
            lines[mark..]
                .iter()
                .filter(|l| l.kind == k && l.config == config)
                .count()
        };
        of(Kind::Stop) >= 1
            && of(Kind::Start) >= 1
            && c.running().get(&config).is_some_and(|p| p.len() == 1)
    })
    .await;

    // A clean stop disconnects every instance: each start of a live node has its stop.
    let survivors: Vec<usize> = c
        .nodes
        .iter()
        .filter(|n| n.alive)
        .map(|n| n.process)
        .collect();
    c.stop_all().await;
    let lines = c.log.lines();
    for p in survivors {
        let count = |k| {
            lines
                .iter()
                .filter(|l| l.process == p && l.kind == k)
                .count()
        };
        assert_eq!(count(Kind::Start), count(Kind::Stop), "process {p}");
    }
    let ticks = c.assert_no_overlap();
    assert!(ticks > 100, "only {ticks} ticks");
}
