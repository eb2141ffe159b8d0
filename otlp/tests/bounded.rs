//! The export in-process, against a collector this test runs on 127.0.0.1: a hop span made
//! with `plume::trace::hop_span` arrives with Plume's trace, span and parent ids; and while the
//! collector holds an export unanswered, ten thousand more spans close without waiting for it,
//! and only what the bounded queue holds is sent once it answers (the rest are dropped).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use plume::trace::TraceContext;
use plume_otlp::Otlp;
use prost::Message;
use tokio::sync::Notify;
use tokio::time::timeout;
use tracing_subscriber::prelude::*;

const WAIT: Duration = Duration::from_secs(10);
const QUEUE: usize = 16;

/// (trace id, span id, parent span id) in hex, per span received.
type Ids = (String, String, String);

#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<Ids>>>,
    requests: Arc<Mutex<usize>>,
    arrived: Arc<Notify>,
    release: Arc<Notify>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Records the spans, then holds the first request until the test releases it.
async fn export(State(c): State<Collector>, body: Bytes) -> Vec<u8> {
    let req = ExportTraceServiceRequest::decode(body).expect("an export request");
    let ids = req
        .resource_spans
        .into_iter()
        .flat_map(|r| r.scope_spans)
        .flat_map(|s| s.spans)
        .map(|s| (hex(&s.trace_id), hex(&s.span_id), hex(&s.parent_span_id)));
    c.spans.lock().expect("spans").extend(ids);
    let first = {
        let mut n = c.requests.lock().expect("requests");
        *n += 1;
        *n == 1
    };
    c.arrived.notify_one();
    if first {
        c.release.notified().await;
    }
    Vec::new()
}

/// One hop span of `ctx`, opened and closed.
fn hop(ctx: TraceContext) {
    let span = plume::trace::hop_span(
        ctx,
        || tracing::error_span!("serve", trace_id = %ctx.trace_id_field()),
    );
    drop(span);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_spans_keep_plumes_ids_and_a_stuck_collector_only_costs_dropped_spans() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a port");
    let addr = listener.local_addr().expect("its address");
    let collector = Collector::default();
    let app = Router::new()
        .route("/v1/traces", axum::routing::post(export))
        .with_state(collector.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.expect("collector") });

    let otlp = Otlp::builder()
        .endpoint(format!("http://{addr}/v1/traces"))
        .max_queue_size(QUEUE)
        .timeout(Duration::from_secs(60))
        .install()
        .expect("installs")
        .expect("an endpoint is set");
    let layer = otlp.layer();

    // The first span: a child of a caller's context, as a provider serves a mesh call.
    let caller = TraceContext::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        .expect("a traceparent");
    let first = caller.child();
    let spans = tokio::task::spawn_blocking({
        let layer = layer.clone();
        move || {
            let subscriber = tracing_subscriber::registry().with(layer.with_hop_filter());
            tracing::subscriber::with_default(subscriber, || hop(first));
        }
    });
    spans.await.expect("the first span");
    // Export it; the collector holds that request.
    let flushing = tokio::task::spawn_blocking({
        let otlp = otlp.clone();
        move || otlp.force_flush()
    });
    timeout(WAIT, collector.arrived.notified())
        .await
        .expect("the first export arrives");
    let got = collector.spans.lock().expect("spans").clone();
    assert_eq!(
        got,
        [(
            "4bf92f3577b34da6a3ce929d0e0e4736".to_owned(),
            first.span_id(),
            "00f067aa0ba902b7".to_owned()
        )]
    );

    // While it is held: ten thousand spans close without waiting for the export (whose timeout
    // is a minute, so a wait would fail the deadline).
    let many = tokio::task::spawn_blocking(move || {
        let subscriber = tracing_subscriber::registry().with(layer.with_hop_filter());
        tracing::subscriber::with_default(subscriber, || {
            for _ in 0..10_000 {
                hop(TraceContext::new_root());
            }
        });
    });
    timeout(WAIT, many)
        .await
        .expect("spans close while the collector is stuck")
        .expect("the spans");
    // Spans that are not hops (no hop_span) are not exported.
    tracing::subscriber::with_default(
        tracing_subscriber::registry().with(otlp.layer().with_hop_filter()),
        || drop(tracing::error_span!("other", trace_id = 1)),
    );

    collector.release.notify_one();
    timeout(WAIT, flushing)
        .await
        .expect("the flush ends once the collector answers")
        .expect("the flush")
        .expect("flushed");
    timeout(WAIT, tokio::task::spawn_blocking(move || otlp.shutdown()))
        .await
        .expect("the shutdown ends")
        .expect("the shutdown")
        .expect("shut down");
    let sent = collector.spans.lock().expect("spans").len();
    // The first span, then at most what the queue held (and one batch the worker had taken).
    assert!(
        sent > 1,
        "the queued spans are sent once the collector answers"
    );
    assert!(
        sent <= 1 + 2 * QUEUE,
        "{sent} spans sent: the queue is not bounded"
    );
}
