//! W3C trace context on REST: a request's `traceparent` is continued (same trace, a span of
//! this hop), a missing or malformed one starts a trace, and every answer says `traceparent`;
//! the service runs with the context as `plume::trace::current()`. Real sockets on loopback.

#[path = "support/http.rs"]
mod http_client;
#[path = "support/polling.rs"]
mod polling;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use plume::trace::TraceContext;
use plume::{App, Params, Result, Service, async_trait};
use serde_json::{Value, json};

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// Answers the trace context it runs in.
struct Traced;

#[async_trait]
impl Service for Traced {
    async fn find(&self, _params: Params) -> Result<Value> {
        Ok(json!(plume::trace::current().map(|c| c.traceparent())))
    }
}

async fn get(server: SocketAddr, traceparent: Option<&str>) -> (Option<String>, Value) {
    let mut request = Request::builder().uri(format!("http://{server}/traced"));
    if let Some(value) = traceparent {
        request = request.header("traceparent", value);
    }
    let request = request.body(Full::new(Bytes::new())).expect("a request");
    let response = http_client::send_request_from(LOCALHOST, request).await;
    assert_eq!(response.status, 200, "{}", response.body);
    let header = response
        .headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    (header, response.json())
}

#[tokio::test]
async fn a_request_continues_or_starts_a_trace_and_answers_traceparent() {
    let app = App::new();
    app.use_service("traced", Traced);
    let server = app.listen("127.0.0.1:0").await.expect("listen");
    let addr = server.local_addr();

    let (answered, seen) = get(addr, Some(PARENT)).await;
    let answered = answered.expect("a traceparent header");
    let hop = TraceContext::parse(&answered).expect("a valid traceparent");
    assert_eq!(hop.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_ne!(hop.span_id(), "00f067aa0ba902b7", "this hop's own span");
    assert_eq!(
        seen,
        json!(answered),
        "the service runs in the answered context"
    );

    for header in [
        None,
        Some("00-zz-00f067aa0ba902b7-01"),
        Some("not a traceparent"),
    ] {
        let (answered, seen) = get(addr, header).await;
        let answered = answered.expect("a traceparent header");
        let root = TraceContext::parse(&answered).expect("a valid traceparent");
        assert_ne!(
            root.trace_id(),
            hop.trace_id(),
            "a new trace for {header:?}"
        );
        assert_eq!(seen, json!(answered));
    }
    // A 404 is traced too.
    let response = http_client::send_from(LOCALHOST, addr, "GET", "/nothing", None).await;
    assert_eq!(response.status, 404);
    assert!(response.headers.contains_key("traceparent"));
    app.shutdown().await;
}

#[tokio::test]
async fn each_socketio_call_runs_in_a_trace_of_its_own() {
    let app = App::new();
    app.use_service("traced", Traced);
    let (mut socket, _connected) = polling::PollingSocket::open(&app, None).await;
    let mut seen = Vec::new();
    for _ in 0..2 {
        let (ack, _) = socket.call("find", &[json!("traced")]).await;
        assert_eq!(ack.first(), Some(&Value::Null), "{ack:?}");
        let traceparent = ack.get(1).and_then(Value::as_str).expect("a traceparent");
        seen.push(
            TraceContext::parse(traceparent)
                .expect("a valid one")
                .trace_id(),
        );
    }
    assert_ne!(seen[0], seen[1]);
}
