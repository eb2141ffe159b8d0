//! `plume::trace::set_enabled(false)` (the demo's `PLUME_OBSERVABILITY=off`): a REST request
//! neither continues nor starts a trace and answers no `traceparent`, and a socket.io call runs
//! in no trace. Its own test binary: the switch is the process's. Real sockets on loopback.

#[path = "support/http.rs"]
mod http_client;
#[path = "support/polling.rs"]
mod polling;

use std::net::{IpAddr, Ipv4Addr};

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use plume::{App, Params, Result, Service, async_trait};
use serde_json::{Value, json};

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// Answers the trace context it runs in.
struct Traced;

#[async_trait]
impl Service for Traced {
    async fn find(&self, _params: Params) -> Result<Value> {
        Ok(json!({ "trace": plume::trace::current().map(|c| c.traceparent()) }))
    }
}

#[tokio::test]
async fn with_trace_contexts_off_nothing_is_traced() {
    assert!(plume::trace::enabled(), "on by default");
    plume::trace::set_enabled(false);
    let app = App::new();
    app.use_service("traced", Traced);
    let server = app.listen("127.0.0.1:0").await.expect("listen");

    let request = Request::builder()
        .uri(format!("http://{}/traced", server.local_addr()))
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .body(Full::new(Bytes::new()))
        .expect("a request");
    let response = http_client::send_request_from(LOCALHOST, request).await;
    assert_eq!(response.status, 200, "{}", response.body);
    assert!(!response.headers.contains_key("traceparent"));
    assert_eq!(
        response.json(),
        json!({ "trace": null }),
        "the service runs in no trace"
    );

    let (mut socket, _connected) = polling::PollingSocket::open(&app, None).await;
    let (ack, _) = socket.call("find", &[json!("traced")]).await;
    assert_eq!(ack, vec![Value::Null, json!({ "trace": null })], "{ack:?}");
    app.shutdown().await;
}
