//! Helpers of the feathers-distributed ports (`fd_*.rs`): child processes, hyper's HTTP/1.1
//! client for loopback REST calls, and the Node socket.io driver (`driver.mjs`, run with the
//! official `socket.io-client` installed by `npm ci` from `core/tests/socketio-client`).

#![allow(dead_code, unreachable_pub)]

#[path = "../../../core/tests/support/npm.rs"]
mod npm;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use axum::body::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::time::timeout;

pub const WAIT: Duration = Duration::from_secs(20);

pub async fn within<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    match timeout(WAIT, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out waiting for {what}"),
    }
}

/// A mesh environment no other run uses.
pub fn unique_env(test: &str) -> String {
    format!("fd-{test}-{}", uuid::Uuid::new_v4().simple())
}

/// A child process (`fd-node`, `dist-node`), killed (SIGKILL, by PID) when dropped; its stdin
/// is a pipe we hold, so it also exits if this process dies.
pub type Proc = plume_tests::child::ChildNode;

/// Start a child and wait for its `READY` line.
pub async fn start_proc(bin: &str, args: &[&str], vars: &[(&str, &str)]) -> Proc {
    Proc::start(bin, args, vars, WAIT).await
}

/// An HTTP response: status and JSON body (`Null` when empty or not JSON).
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub body: Value,
}

/// One HTTP/1.1 request to 127.0.0.1:`port` (hyper's client), JSON in and out.
pub async fn http(
    port: u16,
    method: &str,
    path: &str,
    body: Option<&Value>,
    headers: &[(&str, &str)],
) -> Response {
    within(&format!("{method} {path}"), async {
        let mut req = axum::http::Request::builder()
            .method(method)
            .uri(format!("http://127.0.0.1:{port}{path}"))
            .header("accept", "application/json");
        let body = match body {
            Some(b) => {
                req = req.header("content-type", "application/json");
                Bytes::from(b.to_string())
            }
            None => Bytes::new(),
        };
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
        let response = client
            .request(req.body(Full::new(body)).expect("a request"))
            .await
            .expect("an HTTP response");
        let status = response.status().as_u16();
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("the response body")
            .to_bytes();
        Response {
            status,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        }
    })
    .await
}

pub fn node_available() -> bool {
    std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Install the socket.io client once per lockfile content (the directory `core/tests/socket.rs`
/// uses too) and put the driver script in it; returns the script's path.
pub fn install_client() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = npm::install_locked(&root.join("core/tests/socketio-client"), "socketio-client");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fd/driver.mjs");
    let name = format!("fd-driver-{}.mjs", std::process::id());
    std::fs::copy(script, dir.join(&name)).expect("driver script");
    dir.join(name)
}

/// The Node socket.io driver: named sockets, calls with acknowledgements, recorded events.
pub struct Sockets {
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
    next: u64,
}

impl Sockets {
    pub fn start() -> Sockets {
        let script = install_client();
        let mut child = Command::new("node")
            .arg(&script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("node starts");
        let stdin = child.stdin.take().expect("stdin");
        let lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        Sockets {
            child,
            stdin,
            lines,
            next: 0,
        }
    }

    async fn request(&mut self, mut cmd: Value) -> Value {
        self.next += 1;
        cmd["id"] = json!(self.next);
        let line = format!("{cmd}\n");
        self.stdin.write_all(line.as_bytes()).await.expect("driver");
        let answer = within(&format!("driver answer to {cmd}"), self.lines.next_line())
            .await
            .expect("driver stdout")
            .expect("driver alive");
        let answer: Value = serde_json::from_str(&answer).expect("JSON answer");
        assert_eq!(answer["id"], json!(self.next));
        if let Some(e) = answer.get("error") {
            panic!("driver error on {cmd}: {e}");
        }
        answer["value"].clone()
    }

    pub async fn connect(&mut self, name: &str, port: u16) {
        self.request(
            json!({"op": "connect", "name": name, "url": format!("http://127.0.0.1:{port}")}),
        )
        .await;
    }

    /// `emit(args..., ack)`: the acknowledgement's arguments (`[error]` or `[null, result]`).
    pub async fn call(&mut self, name: &str, args: Value) -> Value {
        let ack = self
            .request(json!({"op": "call", "name": name, "args": args}))
            .await;
        assert!(ack.get("timeout").is_none(), "no ack for {args}");
        ack
    }

    /// The result of a call that must succeed.
    pub async fn ok(&mut self, name: &str, args: Value) -> Value {
        let ack = self.call(name, args.clone()).await;
        assert!(ack[0].is_null(), "{args} failed: {ack}");
        ack[1].clone()
    }

    /// The error of a call that must fail.
    pub async fn err(&mut self, name: &str, args: Value) -> Value {
        let ack = self.call(name, args.clone()).await;
        assert!(!ack[0].is_null(), "{args} succeeded: {ack}");
        ack[0].clone()
    }

    /// Waits (bounded) until `count` events named `event` arrived; returns each one's arguments.
    pub async fn wait(&mut self, name: &str, event: &str, count: usize) -> Vec<Value> {
        let got = self
            .request(
                json!({"op": "wait", "name": name, "event": event, "count": count, "ms": 10000}),
            )
            .await;
        let got = got.as_array().cloned().unwrap_or_default();
        assert!(
            got.len() >= count,
            "{count} `{event}` events on {name}, got {got:?}"
        );
        got
    }

    /// Every event seen so far on `name` (`[event, args...]`).
    pub async fn seen(&mut self, name: &str) -> Vec<Value> {
        self.request(json!({"op": "seen", "name": name}))
            .await
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    pub async fn clear(&mut self, name: &str) {
        self.request(json!({"op": "clear", "name": name})).await;
    }

    pub async fn close(mut self) {
        drop(self.stdin);
        let _ = timeout(WAIT, self.child.wait()).await;
    }
}
