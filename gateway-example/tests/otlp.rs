//! OpenTelemetry export (issue #19, item 2): a real gateway and a real todos replica (child
//! processes) export their spans over OTLP/HTTP to a collector this test runs on 127.0.0.1 (an
//! axum server decoding `ExportTraceServiceRequest`s with opentelemetry-proto). One REST call
//! with a known `traceparent` arrives as one trace: the gateway's `request` span (child of the
//! caller's span), its mesh `call` span, and the replica's `serve` span (child of the call),
//! over the loopback mesh and over a real nats-server. Without an endpoint nothing is sent, not
//! even to the default `127.0.0.1:4318`; a collector that never answers fails no call and is
//! logged once.

mod traced;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value;
use plume_tests::servers::{Kind, Server};
use prost::Message;
use serde_json::json;
use tokio::sync::Notify;
use tokio::time::timeout;
use traced::{Mesh, WAIT, call, secret};

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
/// The caller's span: the parent of the gateway's `request` span.
const CALLER_SPAN: &str = "00f067aa0ba902b7";
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// One span as the collector received it.
#[derive(Debug, Clone)]
struct Got {
    service: String,
    name: String,
    /// OTLP's `SpanKind` (2 server, 3 client).
    kind: i32,
    trace_id: String,
    span_id: String,
    parent: String,
}

/// The test's OTLP/HTTP collector: every request it gets (any path) is counted; export
/// requests to `/v1/traces` are decoded.
#[derive(Clone, Default)]
struct Collector {
    requests: Arc<Mutex<usize>>,
    spans: Arc<Mutex<Vec<Got>>>,
    bad: Arc<Mutex<Vec<String>>>,
    grew: Arc<Notify>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn export(State(c): State<Collector>, body: Bytes) -> (StatusCode, Vec<u8>) {
    *c.requests.lock().expect("count") += 1;
    let req = match ExportTraceServiceRequest::decode(body) {
        Ok(req) => req,
        Err(err) => {
            c.bad.lock().expect("bad").push(err.to_string());
            c.grew.notify_waiters();
            return (StatusCode::BAD_REQUEST, Vec::new());
        }
    };
    let mut got = Vec::new();
    for rs in req.resource_spans {
        let service = rs
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .find(|kv| kv.key == "service.name")
            .and_then(|kv| kv.value.as_ref()?.value.as_ref())
            .map(|v| match v {
                any_value::Value::StringValue(s) => s.clone(),
                other => format!("{other:?}"),
            })
            .unwrap_or_default();
        for span in rs.scope_spans.into_iter().flat_map(|s| s.spans) {
            got.push(Got {
                service: service.clone(),
                name: span.name,
                kind: span.kind,
                trace_id: hex(&span.trace_id),
                span_id: hex(&span.span_id),
                parent: hex(&span.parent_span_id),
            });
        }
    }
    c.spans.lock().expect("spans").extend(got);
    c.grew.notify_waiters();
    // An empty ExportTraceServiceResponse: full success.
    (StatusCode::OK, Vec::new())
}

async fn other(State(c): State<Collector>) -> StatusCode {
    *c.requests.lock().expect("count") += 1;
    c.grew.notify_waiters();
    StatusCode::NOT_FOUND
}

impl Collector {
    /// Serve on `listener` (bound by the caller: a free port, or the default 4318).
    fn serve(listener: tokio::net::TcpListener) -> Collector {
        let c = Collector::default();
        c.serve_also(listener);
        c
    }

    /// Serve on another `listener` too, into the same counts.
    fn serve_also(&self, listener: tokio::net::TcpListener) {
        let c = self.clone();
        let app = Router::new()
            .route("/v1/traces", axum::routing::post(export))
            .fallback(other)
            .with_state(c.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.expect("collector") });
    }

    fn spans_of(&self, trace_id: &str) -> Vec<Got> {
        let spans = self.spans.lock().expect("spans");
        spans
            .iter()
            .filter(|s| s.trace_id == trace_id)
            .cloned()
            .collect()
    }
}

/// A gateway and a replica with the OpenTelemetry variables `otel`, on a private loopback mesh.
async fn mesh(otel: &[(&str, String)]) -> Mesh {
    let mut vars = vec![
        ("PLUME_MESH_SECRET".to_owned(), secret()),
        ("PLUME_JWT_SECRET".to_owned(), secret()),
    ];
    vars.extend(otel.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
    Mesh::start(&vars).await
}

/// One traced read through the gateway; the gateway's own hop's span id (its `traceparent`).
async fn traced_read(port: u16, token: &str) -> String {
    let headers = [("authorization", token), ("traceparent", TRACEPARENT)];
    let res = call(port, "GET", "/todos", None, &headers).await;
    assert_eq!(res.status, 200, "{:?}", res.body);
    let answered = res.traceparent.expect("a traceparent response header");
    let prefix = format!("00-{TRACE_ID}-");
    let rest = answered
        .strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("{answered}"));
    rest[..16].to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_rest_call_is_one_exported_trace_across_the_gateway_and_the_replica() {
    one_exported_trace(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_nats_too() {
    let server = Server::start(Kind::Nats);
    one_exported_trace(&[
        ("PLUME_DISCOVERY", "nats".into()),
        ("PLUME_NATS_URL", server.url()),
        ("PLUME_ENV", format!("otlp-{}", &secret()[..12])),
    ])
    .await;
}

/// A gateway and a replica on the mesh `vars` describe, exporting to a collector of the test:
/// one traced read arrives as the chain request → call → serve.
async fn one_exported_trace(vars: &[(&str, String)]) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a port");
    let endpoint = format!("http://{}", listener.local_addr().expect("its address"));
    let collector = Collector::serve(listener);
    let mut vars = vars.to_vec();
    vars.push(("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint));
    vars.push(("OTEL_BSP_SCHEDULE_DELAY", "100".into()));
    let m = mesh(&vars).await;
    assert!(collector.spans_of(TRACE_ID).is_empty());
    let request_span = traced_read(m.port, &m.token).await;

    // Wait (woken by each export) until the three hops arrived: the gateway's request (child
    // of the caller's span), its mesh call (child of the request), the replica's serving
    // (child of the call).
    let chain = timeout(WAIT, async {
        loop {
            let grew = collector.grew.notified();
            let spans = collector.spans_of(TRACE_ID);
            let find = |service: &str, name: &str, parent: &str| {
                spans
                    .iter()
                    .find(|s| s.service == service && s.name == name && s.parent == parent)
                    .cloned()
            };
            if let Some(request) = find("plume-gateway", "request", CALLER_SPAN)
                && let Some(call) = find("plume-gateway", "call", &request.span_id)
                && let Some(serve) = find("plume-todos-a", "serve", &call.span_id)
            {
                return (request, call, serve, spans);
            }
            grew.await;
        }
    })
    .await;
    let Ok((request, call, serve, spans)) = chain else {
        panic!(
            "the trace's spans: {:#?}\nall: {:#?}\ngateway log: {:#?}",
            collector.spans_of(TRACE_ID),
            collector.spans.lock().expect("spans"),
            m.gateway.lines_with("otlp")
        );
    };
    // The gateway's span is the hop it answered in `traceparent`; kinds server, client, server.
    assert_eq!(request.span_id, request_span);
    assert_eq!(
        (request.kind, call.kind, serve.kind),
        (2, 3, 2),
        "{spans:#?}"
    );
    // Every span of the trace is one of the three: the export adds no others, and sends each once.
    assert_eq!(spans.len(), 3, "{spans:#?}");
    assert!(collector.bad.lock().expect("bad").is_empty());
    m.gateway.stop().await;
    m.replica.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_endpoint_nothing_is_sent_not_even_to_the_default_port() {
    // A collector on OTLP/HTTP's default address: an exporter with a default endpoint would
    // send here.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:4318")
        .await
        .expect("the OTLP default port 127.0.0.1:4318 is free for this test");
    let collector = Collector::serve(listener);
    // `localhost` may resolve to ::1 first: listen there too where this host has IPv6 loopback
    // (a container without it cannot be sent to there either).
    if let Ok(v6) = tokio::net::TcpListener::bind("[::1]:4318").await {
        collector.serve_also(v6);
    }
    // Every OpenTelemetry variable a user may set, but an endpoint.
    let m = mesh(&[
        ("OTEL_SERVICE_NAME", "plume-test".into()),
        ("OTEL_TRACES_EXPORTER", "otlp".into()),
        ("OTEL_BSP_SCHEDULE_DELAY", "10".into()),
    ])
    .await;
    traced_read(m.port, &m.token).await;
    let created = call(
        m.port,
        "POST",
        "/todos",
        Some(json!({"text": "untraced export"})),
        &[("authorization", &m.token), ("traceparent", TRACEPARENT)],
    )
    .await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    assert!(
        m.gateway.lines_with("OTLP").is_empty(),
        "{:#?}",
        m.gateway.lines_with("OTLP")
    );
    // The flush point: a graceful stop sends whatever an exporter has queued before it exits.
    m.gateway.stop().await;
    m.replica.stop().await;
    assert_eq!(*collector.requests.lock().expect("count"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_never_answers_fails_no_call_and_is_logged_once() {
    // It accepts connections (the kernel's backlog) but never reads or answers.
    let hole = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let endpoint = format!("http://{}", hole.local_addr().expect("its address"));
    let m = mesh(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "200".into()),
        ("OTEL_BSP_SCHEDULE_DELAY", "20".into()),
        ("OTEL_BSP_MAX_QUEUE_SIZE", "16".into()),
    ])
    .await;
    // Traced calls go on being answered while exports time out, until a second failed export
    // is logged (at debug level) after the first (a warning).
    let waited = timeout(WAIT, async {
        loop {
            let grew = m.gateway.grew.notified();
            traced_read(m.port, &m.token).await;
            if !m.gateway.lines_with("OTLP export failed again").is_empty() {
                return;
            }
            // The next call once the log changed, or at once if it did meanwhile.
            let _ = timeout(Duration::from_millis(200), grew).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "{:#?}", m.gateway.lines_with("otlp"));
    let warned = m.gateway.lines_with("OTLP export failed;");
    assert_eq!(warned.len(), 1, "{warned:#?}");
    assert!(warned[0].contains("WARN"), "{warned:#?}");
    m.gateway.stop().await;
    m.replica.stop().await;
    drop(hole);
}
