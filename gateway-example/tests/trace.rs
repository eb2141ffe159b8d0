//! Trace context across hops (issue #19, item 2): one REST call through a real gateway process
//! to a real todos replica process, with a W3C `traceparent`: the gateway answers a
//! `traceparent` of the same trace, and the trace id is in the log lines of the call on both
//! processes — over the loopback mesh and over a real nats-server. A traced create's `created`
//! event comes back to the gateway in the create's trace (the event carries it on the mesh).

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use plume_tests::child::without_plume_env;
use plume_tests::servers::{Kind, Server, free_port};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(30);
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
/// The trace of a create, whose `created` event comes back from the replica.
const CREATE_TRACE_ID: &str = "0af7651916cd43dd8448eb211c80319c";
const CREATE_TRACEPARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

/// A `gateway-example` child whose stdout (the listening line) and stderr (its log) the test
/// reads; killed by PID when dropped.
struct Node {
    _child: Child,
    log: Arc<Mutex<Vec<String>>>,
    /// Notified at each new log line.
    grew: Arc<tokio::sync::Notify>,
}

impl Node {
    async fn start(args: &[&str], vars: &[(String, String)]) -> Node {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_gateway-example"));
        cmd.args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(Stdio::null())
            .kill_on_drop(true);
        without_plume_env(&mut cmd);
        cmd.env("RUST_LOG", "debug").env("NO_COLOR", "1");
        for (k, v) in vars {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("gateway-example starts");
        let mut out = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let line = timeout(WAIT, out.next_line())
            .await
            .expect("a listening line in time")
            .expect("stdout readable")
            .expect("it exited before listening");
        assert!(line.contains(" listening on http://"), "{line}");
        tokio::spawn(async move { while let Ok(Some(_)) = out.next_line().await {} });
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut err = BufReader::new(child.stderr.take().expect("stderr")).lines();
        let sink = log.clone();
        let grew = Arc::new(tokio::sync::Notify::new());
        let wake = grew.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = err.next_line().await {
                sink.lock().expect("log").push(line);
                wake.notify_waiters();
            }
        });
        Node {
            _child: child,
            log,
            grew,
        }
    }

    /// The log lines that hold `needle`.
    fn lines_with(&self, needle: &str) -> Vec<String> {
        let log = self.log.lock().expect("log");
        log.iter().filter(|l| l.contains(needle)).cloned().collect()
    }
}

struct Answer {
    status: u16,
    traceparent: Option<String>,
    body: Value,
}

async fn call(
    port: u16,
    method: &str,
    path: &str,
    body: Option<Value>,
    headers: &[(&str, &str)],
) -> Answer {
    let mut req = axum::http::Request::builder()
        .method(method)
        .uri(format!("http://127.0.0.1:{port}{path}"))
        .header("content-type", "application/json");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let req = req.body(Full::new(Bytes::from(body))).expect("a request");
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let res = timeout(WAIT, client.request(req))
        .await
        .expect("an answer in time")
        .expect("an answer");
    let status = res.status().as_u16();
    let traceparent = res
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let bytes = res.into_body().collect().await.expect("a body").to_bytes();
    Answer {
        status,
        traceparent,
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    }
}

/// A gateway and one replica on the mesh `vars` describe; one traced read through the gateway.
async fn one_traced_read(vars: Vec<(String, String)>) {
    let (gateway_port, replica_port) = (free_port(), free_port());
    let replica = Node::start(
        &[
            "todos",
            "--name",
            "todos-a",
            "--port",
            &replica_port.to_string(),
            "--store",
            "memory",
        ],
        &vars,
    )
    .await;
    let gateway = Node::start(&["gateway", "--port", &gateway_port.to_string()], &vars).await;

    let login = json!({"strategy": "local", "email": "demo@plume.local", "password": "plume-demo"});
    let res = call(gateway_port, "POST", "/authentication", Some(login), &[]).await;
    assert_eq!(res.status, 201, "{:?}", res.body);
    let token = format!(
        "Bearer {}",
        res.body["accessToken"].as_str().expect("a token")
    );
    // Wait until the gateway routes todos to the replica (untraced reads start traces of their
    // own, with other ids).
    timeout(WAIT, async {
        while call(
            gateway_port,
            "GET",
            "/todos",
            None,
            &[("authorization", &token)],
        )
        .await
        .status
            != 200
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the gateway serves todos");
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

/// 32 random bytes in hex.
fn secret() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
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
