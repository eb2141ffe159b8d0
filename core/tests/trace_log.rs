//! The log's event formatter (`plume::trace::log::TraceFormat`, feature `log`): a log line of a
//! traced REST request names the request's trace id although no `tracing` span is created for
//! the request (its hop span is a `trace`-level span a `debug` log does not create), a line in
//! a hop keeps the other spans it is in, and a hop span that some subscriber does create is not
//! named twice. Real sockets on loopback; one global subscriber for the whole file.

#[path = "support/http.rs"]
mod http_client;

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use plume::trace::TraceContext;
use plume::trace::log::TraceFormat;
use plume::{App, Params, Result, Service, async_trait};
use serde_json::{Value, json};
use tracing::span::{Attributes, Id};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::prelude::*;
use tracing_subscriber::{EnvFilter, Registry};

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// What the log wrote, and how many spans were created (of any name), since the start.
struct Log {
    bytes: Arc<Mutex<Vec<u8>>>,
    spans: Arc<AtomicUsize>,
}

impl Log {
    fn lines_with(&self, needle: &str) -> Vec<String> {
        let bytes = self.bytes.lock().expect("log");
        String::from_utf8_lossy(&bytes)
            .lines()
            .filter(|l| l.contains(needle))
            .map(str::to_owned)
            .collect()
    }
}

#[derive(Clone)]
struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Counts every span the subscriber creates.
struct CountSpans(Arc<AtomicUsize>);

impl<S: tracing::Subscriber> Layer<S> for CountSpans {
    fn on_new_span(&self, _: &Attributes<'_>, _: &Id, _: Context<'_, S>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// The process's subscriber: a log at `debug` (the `plume` targets and this test's) with
/// [`TraceFormat`], as the demo sets it up without an exporter, and a span counter.
fn log() -> &'static Log {
    static LOG: OnceLock<Log> = OnceLock::new();
    LOG.get_or_init(|| {
        let bytes = Arc::new(Mutex::new(Vec::new()));
        let spans = Arc::new(AtomicUsize::new(0));
        let sink = Sink(bytes.clone());
        let subscriber = Registry::default()
            .with(EnvFilter::new("plume=debug,trace_log=debug"))
            .with(
                tracing_subscriber::fmt::layer()
                    .event_format(TraceFormat::new().without_time())
                    .with_ansi(false)
                    .with_writer(move || sink.clone()),
            )
            .with(CountSpans(spans.clone()));
        tracing::subscriber::set_global_default(subscriber).expect("one global subscriber");
        Log { bytes, spans }
    })
}

/// Logs a line while it serves a find.
struct Chatty;

#[async_trait]
impl Service for Chatty {
    async fn find(&self, _params: Params) -> Result<Value> {
        tracing::debug!(target: "trace_log", answer = 42, "finding in the request");
        Ok(json!([]))
    }
}

#[tokio::test]
async fn a_log_line_of_a_request_names_its_trace_id_with_no_span_created() {
    let log = log();
    let app = App::new();
    app.use_service("chatty", Chatty);
    let server = app.listen("127.0.0.1:0").await.expect("listen");
    let trace = "5bf92f3577b34da6a3ce929d0e0e4737";
    let spans_before = log.spans.load(Ordering::SeqCst);

    let request = Request::builder()
        .uri(format!("http://{}/chatty", server.local_addr()))
        .header(
            "traceparent",
            format!("00-{trace}-00f067aa0ba902b7-01").as_str(),
        )
        .body(Full::new(Bytes::new()))
        .expect("a request");
    let response = http_client::send_request_from(LOCALHOST, request).await;
    assert_eq!(response.status, 200, "{}", response.body);

    // The service's own line and Plume's request line, each with the hop and its trace id.
    let lines = log.lines_with(trace);
    assert!(
        lines.iter().any(|l| l
            == &format!(
                "DEBUG request{{trace_id={trace}}}: trace_log: finding in the request answer=42"
            )),
        "{lines:#?}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with(&format!(
            "DEBUG request{{trace_id={trace}}}: plume::rest: request method=GET path=/chatty"
        ))),
        "{lines:#?}"
    );
    assert_eq!(
        log.spans.load(Ordering::SeqCst),
        spans_before,
        "no span for the request"
    );
    server.shutdown().await;
}

#[test]
fn a_line_in_a_hop_keeps_its_other_spans_and_names_the_hop_once() {
    let log = log();
    let ctx = TraceContext::parse("00-6bf92f3577b34da6a3ce929d0e0e4738-00f067aa0ba902b7-01")
        .expect("a traceparent");
    let trace = ctx.trace_id();
    plume::trace::sync_hop_scope("relay", ctx, || {
        let outer = tracing::debug_span!(target: "trace_log", "outer", n = 7);
        let _in = outer.enter();
        // A hop span that a subscriber creates (this one is at `debug`, so the log does): the
        // hop in front names the trace already.
        let hop = plume::trace::hop_span(
            ctx,
            || tracing::debug_span!(target: "trace_log", "serve", trace_id = %ctx.trace_id_field()),
        );
        let _hop = hop.enter();
        tracing::info!(target: "trace_log", "in a hop and a span");
    });
    let lines = log.lines_with("in a hop and a span");
    assert_eq!(
        lines,
        vec![format!(
            " INFO relay{{trace_id={trace}}}:outer{{n=7}}: trace_log: in a hop and a span"
        )]
    );

    // Outside any hop, a line is fmt's full format (no time here): its spans, with their fields.
    let span = tracing::debug_span!(target: "trace_log", "plain", trace_id = "not a hop");
    span.in_scope(|| tracing::warn!(target: "trace_log", "outside a hop"));
    assert_eq!(
        log.lines_with("outside a hop"),
        vec![" WARN plain{trace_id=\"not a hop\"}: trace_log: outside a hop".to_owned()]
    );
}
