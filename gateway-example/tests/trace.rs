//! Trace context across hops (issue #19, item 2): one REST call through a real gateway process
//! to a real todos replica process, with a W3C `traceparent`: the gateway answers a
//! `traceparent` of the same trace, and the trace id is in the log lines of the call on both
//! processes — over the loopback mesh and over a real nats-server. A traced create's `created`
//! event comes back to the gateway in the create's trace (the event carries it on the mesh).

mod traced;

use plume_tests::servers::{Kind, Server};
use serde_json::json;
use tokio::time::timeout;
use traced::{Mesh, Node, WAIT, call, secret};

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
/// The trace of a create, whose `created` event comes back from the replica.
const CREATE_TRACE_ID: &str = "0af7651916cd43dd8448eb211c80319c";
const CREATE_TRACEPARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

/// A gateway and one replica on the mesh `vars` describe; one traced read through the gateway.
async fn one_traced_read(vars: Vec<(String, String)>) {
    let Mesh {
        replica,
        gateway,
        port: gateway_port,
        token,
    } = Mesh::start(&vars).await;
    assert!(gateway.lines_with(TRACE_ID).is_empty() && replica.lines_with(TRACE_ID).is_empty());

    let headers = [
        ("authorization", token.as_str()),
        ("traceparent", TRACEPARENT),
    ];
    let res = call(gateway_port, "GET", "/todos", None, &headers).await;
    assert_eq!(res.status, 200, "{:?}", res.body);
    let answered = res.traceparent.expect("a traceparent response header");
    assert!(
        answered.starts_with(&format!("00-{TRACE_ID}-")),
        "{answered}"
    );
    assert_ne!(
        answered, TRACEPARENT,
        "the gateway's hop has a span id of its own"
    );

    // Both processes log the call under the trace id: the gateway's request line and the
    // replica's serving line (the log is read as it comes: wait for it).
    both_logged(&gateway, &replica, TRACE_ID, "request", "serving a call").await;
    // Every log line of the replica that names a trace names this one or another whole trace.
    for line in replica.lines_with(TRACE_ID) {
        assert!(line.contains(&format!("trace_id={TRACE_ID}")), "{line}");
    }

    // A traced create: the replica serves it in the trace and publishes its `created` event with
    // it; the gateway relays the event to its clients in the same trace.
    let headers = [
        ("authorization", token.as_str()),
        ("traceparent", CREATE_TRACEPARENT),
    ];
    let res = call(
        gateway_port,
        "POST",
        "/todos",
        Some(json!({"text": "traced"})),
        &headers,
    )
    .await;
    assert_eq!(res.status, 201, "{:?}", res.body);
    both_logged(
        &gateway,
        &replica,
        CREATE_TRACE_ID,
        "relaying an event",
        "serving a call",
    )
    .await;
    let relayed = gateway.lines_with("relaying an event");
    assert!(
        relayed.iter().any(
            |l| l.contains(&format!("relay{{trace_id={CREATE_TRACE_ID}}}"))
                && l.contains("event=created")
        ),
        "{relayed:#?}"
    );
}

/// Wait (bounded, woken by each new log line) until the gateway logged a line with `trace_id`
/// and `on_gateway`, and the replica one with `trace_id` and `on_replica`.
async fn both_logged(
    gateway: &Node,
    replica: &Node,
    trace_id: &str,
    on_gateway: &str,
    on_replica: &str,
) {
    let logged =
        |node: &Node, needle: &str| node.lines_with(trace_id).iter().any(|l| l.contains(needle));
    let waited = timeout(WAIT, async {
        loop {
            // Registered before the check: a line pushed after it wakes the wait.
            let (g, r) = (gateway.grew.notified(), replica.grew.notified());
            if logged(gateway, on_gateway) && logged(replica, on_replica) {
                return;
            }
            tokio::select! {
                () = g => {}
                () = r => {}
            }
        }
    })
    .await;
    assert!(
        waited.is_ok(),
        "trace {trace_id} in both logs; gateway: {:#?}\nreplica: {:#?}",
        gateway.lines_with("trace_id"),
        replica.lines_with("trace_id")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_rest_call_has_one_trace_id_on_the_gateway_and_the_replica() {
    one_traced_read(vec![
        ("PLUME_MESH_SECRET".into(), secret()),
        ("PLUME_JWT_SECRET".into(), secret()),
    ])
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_nats_too() {
    let server = Server::start(Kind::Nats);
    one_traced_read(vec![
        ("PLUME_DISCOVERY".into(), "nats".into()),
        ("PLUME_NATS_URL".into(), server.url()),
        ("PLUME_ENV".into(), format!("trace-{}", &secret()[..12])),
        ("PLUME_JWT_SECRET".into(), secret()),
    ])
    .await;
}
