//! `App::enable_metrics` (feature `metrics`): after a known series of calls over REST and
//! internal ones, including errors and a path that is no service, the scraped counters,
//! histogram counts and in-flight gauges equal what was done. Real sockets on loopback, hyper's
//! client; each test is its own process under nextest (the recorder is the process's), and
//! each test file only reads the deltas of its own services.

#[path = "support/gate.rs"]
mod gate;
#[path = "support/http.rs"]
mod http_client;
#[path = "support/polling.rs"]
mod polling;
#[path = "support/prometheus.rs"]
mod prometheus;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use gate::Gate;
use plume::{App, MemoryService, Params, ServiceOptions};
use prometheus::{Sample, parse, value};
use serde_json::{Value, json};
use tokio::time::timeout;

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const DEADLINE: Duration = Duration::from_secs(10);

async fn call(server: SocketAddr, method: &str, path: &str, body: Option<&str>) -> u16 {
    http_client::send_from(LOCALHOST, server, method, path, body)
        .await
        .status
}

async fn scrape(server: SocketAddr) -> Vec<Sample> {
    let response = http_client::send_from(LOCALHOST, server, "GET", "/metrics", None).await;
    assert_eq!(response.status, 200, "{}", response.body);
    let content_type = response.headers.get(http::header::CONTENT_TYPE);
    assert!(
        content_type.is_some_and(|v| v.to_str().is_ok_and(|v| v.starts_with("text/plain"))),
        "{content_type:?}"
    );
    parse(&response.body)
}

fn calls(samples: &[Sample], path: &str, method: &str, provider: &str, outcome: &str) -> f64 {
    let labels = [
        ("path", path),
        ("method", method),
        ("provider", provider),
        ("outcome", outcome),
    ];
    value(samples, "plume_calls_total", &labels).unwrap_or(0.0)
}

fn latency_count(samples: &[Sample], path: &str, method: &str) -> f64 {
    let labels = [("path", path), ("method", method)];
    value(samples, "plume_call_duration_seconds_count", &labels).unwrap_or(0.0)
}

#[tokio::test]
async fn scraped_counters_equal_the_calls_made() {
    let app = App::new();
    app.use_service("todos", MemoryService::<Value>::new());
    app.enable_metrics().expect("the recorder installs");
    let server = app.listen("127.0.0.1:0").await.expect("listen");
    let addr = server.local_addr();

    for i in 0..3 {
        let body = json!({ "title": format!("t{i}") }).to_string();
        assert_eq!(call(addr, "POST", "/todos", Some(&body)).await, 201);
    }
    for _ in 0..2 {
        assert_eq!(call(addr, "GET", "/todos", None).await, 200);
    }
    assert_eq!(call(addr, "GET", "/todos/12345", None).await, 404);
    assert_eq!(call(addr, "GET", "/nothing-here", None).await, 404);
    assert_eq!(call(addr, "GET", "/nothing/else/42", None).await, 404);
    assert_eq!(
        call(addr, "PATCH", "/todos/0", Some(r#"{"done":true}"#)).await,
        200
    );
    app.service("todos")
        .expect("mounted")
        .find(Params::default())
        .await
        .expect("an internal find");
    // Over socket.io: a find, and a call for a path that is no service.
    let (mut socket, _connected) = polling::PollingSocket::open(&app, None).await;
    let (ack, _) = socket.call("find", &[json!("todos")]).await;
    assert_eq!(ack.first(), Some(&Value::Null), "{ack:?}");
    let (ack, _) = socket.call("find", &[json!("nowhere")]).await;
    assert_eq!(
        ack.first().map(|e| e["code"].clone()),
        Some(json!(404)),
        "{ack:?}"
    );

    let samples = scrape(addr).await;
    assert_eq!(calls(&samples, "todos", "create", "rest", "ok"), 3.0);
    assert_eq!(calls(&samples, "todos", "find", "rest", "ok"), 2.0);
    assert_eq!(calls(&samples, "todos", "find", "internal", "ok"), 1.0);
    assert_eq!(calls(&samples, "todos", "find", "socketio", "ok"), 1.0);
    assert_eq!(calls(&samples, "other", "other", "socketio", "404"), 1.0);
    assert_eq!(value(&samples, "plume_sockets_connected", &[]), Some(1.0));
    assert_eq!(calls(&samples, "todos", "get", "rest", "404"), 1.0);
    assert_eq!(calls(&samples, "todos", "get", "rest", "ok"), 0.0);
    assert_eq!(calls(&samples, "todos", "patch", "rest", "ok"), 1.0);
    assert_eq!(calls(&samples, "other", "other", "rest", "404"), 2.0);
    assert_eq!(latency_count(&samples, "todos", "create"), 3.0);
    assert_eq!(latency_count(&samples, "todos", "find"), 4.0);
    assert_eq!(latency_count(&samples, "todos", "get"), 1.0);
    let in_flight = [("path", "todos"), ("method", "find")];
    assert_eq!(
        value(&samples, "plume_calls_in_flight", &in_flight),
        Some(0.0)
    );

    // Label values are bounded: service paths and methods, never ids or other paths.
    for sample in samples.iter().filter(|s| s.name.starts_with("plume_call")) {
        let path = sample.labels.get("path").map(String::as_str);
        assert!(matches!(path, Some("todos" | "other")), "{sample:?}");
    }
    // The process gauges, read at the scrape.
    assert!(value(&samples, "process_open_fds", &[]).is_some_and(|n| n >= 3.0));
    assert!(value(&samples, "process_resident_memory_bytes", &[]).is_some_and(|n| n > 1e6));
    assert!(value(&samples, "process_cpu_seconds_total", &[]).is_some_and(|n| n >= 0.0));
    app.shutdown().await;
}

#[tokio::test]
async fn a_running_call_is_in_flight_until_it_ends() {
    let app = App::new();
    let gate = Arc::new(Gate::default());
    app.use_arc("gate", gate.clone(), ServiceOptions::new());
    app.enable_metrics().expect("the recorder installs");
    let server = app.listen("127.0.0.1:0").await.expect("listen");
    let addr = server.local_addr();
    let labels = [("path", "gate"), ("method", "find")];

    let running = tokio::spawn(call(addr, "GET", "/gate", None));
    timeout(DEADLINE, gate.started.notified())
        .await
        .expect("the call started");
    let samples = scrape(addr).await;
    assert_eq!(value(&samples, "plume_calls_in_flight", &labels), Some(1.0));
    assert_eq!(calls(&samples, "gate", "find", "rest", "ok"), 0.0);

    gate.release.notify_one();
    assert_eq!(
        timeout(DEADLINE, running)
            .await
            .expect("ends")
            .expect("joins"),
        200
    );
    let samples = scrape(addr).await;
    assert_eq!(value(&samples, "plume_calls_in_flight", &labels), Some(0.0));
    assert_eq!(calls(&samples, "gate", "find", "rest", "ok"), 1.0);
    app.shutdown().await;
}

#[tokio::test]
async fn without_enable_metrics_there_is_no_page() {
    let app = App::new();
    app.use_service("todos", MemoryService::<Value>::new());
    let server = app.listen("127.0.0.1:0").await.expect("listen");
    assert_eq!(call(server.local_addr(), "GET", "/todos", None).await, 200);
    assert_eq!(
        call(server.local_addr(), "GET", "/metrics", None).await,
        404
    );
    assert!(plume::metrics::render().is_none());
    app.shutdown().await;
}
