//! The mesh monitor on a distributed App (`distribution/mesh`): two Apps on loopback discovery,
//! in an environment of their own. Who may see what, and the live `snapshot` events.

use std::time::Duration;

use plume::{App, ErrorKind, MemoryService, Params, Provider};
use plume_transport::NodeId;
use plume_transport::distribution::{Distribution, MONITOR_SERVICE_PATH, SNAPSHOT_EVENT};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::time::{Instant, timeout};

const WAIT: Duration = Duration::from_secs(15);

fn env() -> String {
    format!("monitor-svc-{}-{}", std::process::id(), NodeId::random())
}

async fn distributed(app: &App, env: &str, key: &str) {
    Distribution::new()
        .environment(env)
        .key(key)
        .start(app)
        .await
        .expect("distribution starts")
        .mesh()
        .set_name(key);
}

fn names(snapshot: &Value) -> Vec<String> {
    let mut v: Vec<String> = snapshot["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|n| n["name"].as_str().expect("name").to_owned())
        .collect();
    v.sort();
    v
}

/// `find` on the monitor (as `params` says) until both nodes are listed (bounded).
async fn both(app: &App, params: impl Fn() -> Params) -> Value {
    let service = app.service(MONITOR_SERVICE_PATH).expect("mounted");
    let deadline = Instant::now() + WAIT;
    loop {
        let snap = service.find(params()).await.expect("find answers");
        if names(&snap) == ["front", "todos"] {
            return snap;
        }
        assert!(Instant::now() < deadline, "never both nodes: {snap:#}");
        // Each find waits for a round of its own: no busy loop.
        let mut rx = app_events(app);
        let _ = timeout(Duration::from_secs(2), rx.recv()).await;
    }
}

/// The monitor's `snapshot` events on `app`.
fn app_events(app: &App) -> mpsc::Receiver<Value> {
    let (tx, rx) = mpsc::channel(64);
    app.on_event(move |ev| {
        if ev.path == MONITOR_SERVICE_PATH && ev.event == SNAPSHOT_EVENT {
            let _ = tx.try_send(ev.data.clone());
        }
    });
    rx
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_authentication_anonymous_clients_see_no_addresses() {
    let env = env();
    let front = App::new();
    let back = App::new();
    back.use_service("todos", MemoryService::<Value>::new());
    distributed(&front, &env, "front").await;
    distributed(&back, &env, "todos").await;

    let rest = || Params::new().with_provider(Provider::Rest);
    let snap = both(&front, rest).await;
    let nodes = snap["nodes"].as_array().expect("nodes");
    assert!(nodes.iter().all(|n| n["addr"].is_null()), "{snap:#}");
    let todos = nodes.iter().find(|n| n["name"] == "todos").expect("todos");
    assert_eq!(todos["services"], serde_json::json!(["svc:todos"]));
    // The monitor service itself is never published to the mesh.
    assert!(
        !nodes
            .iter()
            .any(|n| n["services"].to_string().contains("distribution/mesh")),
        "{snap:#}"
    );

    // An internal call sees the addresses.
    let snap = both(&front, Params::new).await;
    assert!(
        snap["nodes"]
            .as_array()
            .expect("nodes")
            .iter()
            .all(|n| n["addr"]
                .as_str()
                .is_some_and(|a| a.starts_with("127.0.0.1:"))),
        "{snap:#}"
    );

    // While watched, every round is a `snapshot` event, without addresses here too.
    let mut events = app_events(&front);
    let ev = timeout(WAIT, events.recv())
        .await
        .expect("a snapshot event in time")
        .expect("an event");
    assert_eq!(names(&ev), ["front", "todos"]);
    assert!(
        ev["nodes"]
            .as_array()
            .expect("nodes")
            .iter()
            .all(|n| n["addr"].is_null())
    );
    front.shutdown().await;
    back.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_authentication_only_logged_in_clients_see_the_mesh() {
    let env = env();
    let front = App::new();
    // Any service at `authentication` makes the monitor require a login.
    front.use_service("authentication", MemoryService::<Value>::new());
    let back = App::new();
    back.use_service("todos", MemoryService::<Value>::new());
    distributed(&front, &env, "front").await;
    distributed(&back, &env, "todos").await;

    let service = front.service(MONITOR_SERVICE_PATH).expect("mounted");
    for provider in [Provider::Rest, Provider::Socketio] {
        let err = service
            .find(Params::new().with_provider(provider))
            .await
            .expect_err("no login");
        assert_eq!(err.kind(), ErrorKind::NotAuthenticated);
    }
    let user = || {
        Params::new()
            .with_provider(Provider::Socketio)
            .with_user(serde_json::json!({"id": 1}))
    };
    let snap = both(&front, user).await;
    assert!(
        snap["nodes"]
            .as_array()
            .expect("nodes")
            .iter()
            .all(|n| n["addr"].as_str().is_some()),
        "a logged-in client sees the addresses: {snap:#}"
    );
    front.shutdown().await;
    back.shutdown().await;
}

#[tokio::test]
async fn the_monitor_can_be_turned_off() {
    let app = App::new();
    Distribution::new()
        .environment(env())
        .monitor(false)
        .start(&app)
        .await
        .expect("starts");
    assert!(app.service(MONITOR_SERVICE_PATH).is_none());
    app.shutdown().await;
}
