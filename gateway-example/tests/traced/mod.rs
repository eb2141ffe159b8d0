//! What the trace tests share (`trace.rs`, `otlp.rs`): a `gateway-example` child whose log the
//! test reads, a REST call that reports the answer's `traceparent`, and a gateway with one
//! todos replica on a private loopback mesh.

// Each test file uses a part of it; `pub` is for the test files that include it.
#![allow(dead_code, unreachable_pub)]

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use plume_tests::child::without_plume_env;
use plume_tests::servers::free_port;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::Notify;
use tokio::time::timeout;

pub const WAIT: Duration = Duration::from_secs(30);

/// A `gateway-example` child started with `--watchdog` (it stops gracefully when its stdin
/// closes: [`Node::stop`]) and `RUST_LOG=debug`, its log (stderr) read as it comes, and only
/// the `PLUME_*` and `OTEL_*` variables the test gives; killed by PID when dropped.
pub struct Node {
    child: Child,
    stdin: Option<ChildStdin>,
    log: Arc<Mutex<Vec<String>>>,
    /// Notified at each new log line.
    pub grew: Arc<Notify>,
}

impl Node {
    pub async fn start(args: &[&str], vars: &[(String, String)]) -> Node {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_gateway-example"));
        cmd.args(args)
            .arg("--watchdog")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(Stdio::piped())
            .kill_on_drop(true);
        without_plume_env(&mut cmd);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("OTEL_") {
                cmd.env_remove(key);
            }
        }
        cmd.env("RUST_LOG", "debug").env("NO_COLOR", "1");
        for (k, v) in vars {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("gateway-example starts");
        let stdin = child.stdin.take();
        let log = Arc::new(Mutex::new(Vec::new()));
        let grew = Arc::new(Notify::new());
        let mut err = BufReader::new(child.stderr.take().expect("stderr")).lines();
        let (sink, wake) = (log.clone(), grew.clone());
        tokio::spawn(async move {
            while let Ok(Some(line)) = err.next_line().await {
                sink.lock().expect("log").push(line);
                wake.notify_waiters();
            }
        });
        let mut out = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let line = timeout(WAIT, out.next_line())
            .await
            .expect("a listening line in time")
            .expect("stdout readable");
        let Some(line) = line else {
            panic!(
                "it exited before listening: {:#?}",
                log.lock().expect("log")
            );
        };
        assert!(line.contains(" listening on http://"), "{line}");
        tokio::spawn(async move { while let Ok(Some(_)) = out.next_line().await {} });
        Node {
            child,
            stdin,
            log,
            grew,
        }
    }

    /// The log lines that hold `needle`.
    pub fn lines_with(&self, needle: &str) -> Vec<String> {
        let log = self.log.lock().expect("log");
        log.iter().filter(|l| l.contains(needle)).cloned().collect()
    }

    /// Close its stdin and wait for it to exit with success (a graceful stop).
    pub async fn stop(mut self) {
        drop(self.stdin.take());
        let status = timeout(WAIT, self.child.wait())
            .await
            .expect("it stops in time")
            .expect("an exit status");
        assert!(status.success(), "{status:?}");
    }
}

pub struct Answer {
    pub status: u16,
    pub traceparent: Option<String>,
    pub body: Value,
}

/// A REST call to 127.0.0.1:`port`.
pub async fn call(
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

/// 32 random bytes in hex.
pub fn secret() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A gateway and a todos replica (`todos-a`, memory store) on the mesh `vars` describe.
pub struct Mesh {
    pub replica: Node,
    pub gateway: Node,
    /// The gateway's HTTP port.
    pub port: u16,
    /// `Bearer <access token>` of the demo user.
    pub token: String,
}

impl Mesh {
    /// Start both, log in, and wait until the gateway routes todos to the replica (untraced
    /// reads: they start traces of their own, with other ids).
    pub async fn start(vars: &[(String, String)]) -> Mesh {
        let (port, replica_port) = (free_port(), free_port());
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
            vars,
        )
        .await;
        let gateway = Node::start(&["gateway", "--port", &port.to_string()], vars).await;
        let login =
            json!({"strategy": "local", "email": "demo@plume.local", "password": "plume-demo"});
        let res = call(port, "POST", "/authentication", Some(login), &[]).await;
        assert_eq!(res.status, 201, "{:?}", res.body);
        let token = format!(
            "Bearer {}",
            res.body["accessToken"].as_str().expect("a token")
        );
        timeout(WAIT, async {
            while call(port, "GET", "/todos", None, &[("authorization", &token)])
                .await
                .status
                != 200
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await
        .expect("the gateway serves todos");
        Mesh {
            replica,
            gateway,
            port,
            token,
        }
    }
}
