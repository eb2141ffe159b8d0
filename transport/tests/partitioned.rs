//! A remote service mounted partitioned: two replicas with stores of their own behind a
//! gateway, on real loopback links. Every record is reachable through the gateway, whichever
//! replica holds it, and a `find` pages over the union.

use std::time::Duration;

use plume::{App, ErrorKind, Id, MemoryOptions, MemoryService, Paginate, Params};
use plume_transport::distribution::{Distribution, DistributionHandle};
use plume_transport::partition_owner;
use serde_json::{Value, json};
use tokio::time::{Instant, timeout};

const WAIT: Duration = Duration::from_secs(10);

fn env() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("partitioned-{}-{t:08x}", std::process::id())
}

fn store() -> MemoryService<Value> {
    MemoryService::with_options(MemoryOptions {
        paginate: Some(Paginate {
            default: 5,
            max: 100,
        }),
        ..MemoryOptions::default()
    })
}

async fn replica(env: &str) -> (App, DistributionHandle) {
    let app = App::new();
    app.use_service("todos", store());
    let d = Distribution::new()
        .environment(env)
        .key("todos")
        .remote_services(false)
        .start(&app)
        .await
        .expect("a replica starts");
    (app, d)
}

fn query(pairs: Value) -> Params {
    let mut p = Params::new();
    if let Value::Object(map) = pairs {
        p.query = map;
    }
    p
}

/// The ranks of a page's records, in order.
fn ranks_of(page: &Value) -> Vec<i64> {
    page["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|r| r["rank"].as_i64().expect("rank"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_service_routes_by_id_and_merges_finds() {
    let e = env();
    let (a, da) = replica(&e).await;
    let (b, db) = replica(&e).await;
    let gateway = App::new();
    let g = Distribution::new()
        .environment(&e)
        .key("gw")
        .services(false)
        .partitioned("todos", "id")
        .start(&gateway)
        .await
        .expect("the gateway starts");
    // Both replicas provide the service before the test routes by id.
    let deadline = Instant::now() + WAIT;
    g.remote_ready("todos").await;
    while g.providers("todos").len() != 2 {
        assert!(Instant::now() < deadline, "the gateway sees both replicas");
        let mut watch = g.mesh().watch();
        let _ = timeout(Duration::from_millis(200), watch.recv()).await;
    }
    let todos = gateway.service("todos").expect("the proxy");
    let replicas = [
        (da.mesh().node_id(), a.service("todos").expect("a's store")),
        (db.mesh().node_id(), b.service("todos").expect("b's store")),
    ];
    let nodes = [replicas[0].0, replicas[1].0];

    // Each create lands on the owner of its id, and only there.
    for i in 0..20 {
        let id = format!("t{i:02}");
        todos
            .create(
                json!({"id": id, "rank": 20 - i, "done": i % 3 == 0}),
                Params::new(),
            )
            .await
            .expect("created");
        let owner = partition_owner(&id, nodes).expect("two nodes");
        for (node, store) in &replicas {
            let got = store.get(Id::from(id.as_str()), Params::new()).await;
            assert_eq!(got.is_ok(), *node == owner, "{id} on its owner only");
        }
    }
    let counts: Vec<u64> = futures::future::join_all(replicas.iter().map(|(_, s)| async {
        s.find(query(json!({"$limit": 0}))).await.expect("count")["total"]
            .as_u64()
            .expect("a total")
    }))
    .await;
    assert!(
        counts.iter().all(|c| *c > 0),
        "both replicas hold some: {counts:?}"
    );

    // get, patch, remove by id reach the owner.
    for i in 0..20 {
        let id = Id::from(format!("t{i:02}").as_str());
        let got = todos.get(id.clone(), Params::new()).await.expect("found");
        assert_eq!(got["rank"], json!(20 - i));
    }
    let patched = todos
        .patch(Some(Id::from("t05")), json!({"done": true}), Params::new())
        .await
        .expect("patched");
    assert_eq!(patched["done"], json!(true));
    todos
        .remove(Some(Id::from("t07")), Params::new())
        .await
        .expect("removed");
    let err = todos
        .get(Id::from("t07"), Params::new())
        .await
        .expect_err("gone");
    assert_eq!(err.kind(), ErrorKind::NotFound);

    // find pages over the union: 19 records, sorted by rank, a window in the middle.
    let page = todos
        .find(query(
            json!({"$sort": {"rank": 1}, "$skip": 3, "$limit": 4}),
        ))
        .await
        .expect("a page");
    let ranks = ranks_of(&page);
    assert_eq!(page["total"], json!(19));
    assert_eq!(
        (page["skip"].clone(), page["limit"].clone()),
        (json!(3), json!(4))
    );
    // Ranks 1..=20 without 13 (t07), ascending: the 4th to the 7th.
    assert_eq!(ranks, [4, 5, 6, 7]);
    // Without $limit: the replicas' page size (5), still over the union.
    let page = todos
        .find(query(
            json!({"$sort": {"rank": -1}, "$skip": 2, "done": false}),
        ))
        .await
        .expect("a page");
    let all_not_done: Vec<i64> = (1..=20)
        .rev()
        .filter(|r| {
            let i = 20 - r;
            i != 7 && !(i % 3 == 0 || i == 5)
        })
        .collect();
    let ranks = ranks_of(&page);
    assert_eq!(page["total"], json!(all_not_done.len()));
    assert_eq!(ranks, all_not_done[2..7]);
}
