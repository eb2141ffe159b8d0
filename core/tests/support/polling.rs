//! A minimal socket.io client over engine.io v4 long-polling, driven through the App's router
//! (`tower::ServiceExt::oneshot`): enough to log in, call methods with acknowledgements and read
//! the events a connection receives, without Node. Included with `#[path]` by the tests that
//! need it.

#![allow(dead_code)]

use axum::body::Body;
use http::{Request, header};
use plume::App;
use serde_json::{Value, json};
use tower::ServiceExt;

/// One packet the server sent on a connection (socket.io level).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Packet {
    /// `"<name>"` with its arguments.
    Event(String, Vec<Value>),
    /// The acknowledgement of call `id`, with its arguments.
    Ack(u64, Vec<Value>),
    /// The connection was refused (`connect_error`), with its data.
    ConnectError(Value),
    /// Anything else (engine.io ping, socket.io connect, ...), raw.
    Other(String),
}

/// A socket.io connection over polling.
pub(crate) struct PollingSocket {
    /// One router for the whole connection: each router has its own engine.io session table.
    router: axum::Router,
    sid: String,
    next_ack: u64,
    /// Packets read but not yet taken.
    pending: std::collections::VecDeque<Packet>,
}

async fn request(
    router: &axum::Router,
    method: &str,
    uri: &str,
    auth: Option<&str>,
    body: String,
) -> String {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(auth) = auth {
        req = req.header(header::AUTHORIZATION, auth);
    }
    if method == "POST" {
        req = req.header(header::CONTENT_TYPE, "text/plain;charset=UTF-8");
    }
    let req = req.body(Body::from(body)).expect("request");
    let res = router.clone().oneshot(req).await.expect("router answers");
    let status = res.status();
    let bytes = axum::body::to_bytes(res.into_body(), 16 << 20)
        .await
        .expect("body");
    let text = String::from_utf8(bytes.to_vec()).expect("utf-8");
    assert!(status.is_success(), "{method} {uri}: {status} {text}");
    text
}

fn parse(raw: &str) -> Packet {
    let Some(rest) = raw.strip_prefix('4') else {
        return Packet::Other(raw.to_owned());
    };
    let (kind, rest) = rest.split_at(rest.len().min(1));
    let digits = rest.chars().take_while(char::is_ascii_digit).count();
    let (id, json_part) = rest.split_at(digits);
    let args = || match serde_json::from_str::<Value>(json_part) {
        Ok(Value::Array(items)) => items,
        Ok(other) => vec![other],
        Err(_) => Vec::new(),
    };
    match kind {
        "2" => {
            let mut items = args();
            let name = match items.first() {
                Some(Value::String(s)) => s.clone(),
                _ => String::new(),
            };
            if !items.is_empty() {
                items.remove(0);
            }
            Packet::Event(name, items)
        }
        "3" => Packet::Ack(id.parse().unwrap_or(0), args()),
        "4" => Packet::ConnectError(serde_json::from_str(json_part).unwrap_or(Value::Null)),
        _ => Packet::Other(raw.to_owned()),
    }
}

impl PollingSocket {
    /// Open a connection (with an optional handshake `Authorization` header) and connect to
    /// the main namespace. Returns the socket and the connect outcome packet.
    pub(crate) async fn open(app: &App, auth: Option<&str>) -> (Self, Packet) {
        let router = app.into_router();
        let open = request(
            &router,
            "GET",
            "/socket.io/?EIO=4&transport=polling",
            auth,
            String::new(),
        )
        .await;
        let handshake: Value =
            serde_json::from_str(open.strip_prefix('0').expect("engine.io open packet"))
                .expect("open json");
        let sid = handshake["sid"].as_str().expect("sid").to_owned();
        let mut socket = Self {
            router,
            sid,
            next_ack: 0,
            pending: Default::default(),
        };
        socket.post("40").await;
        let first = socket.next().await;
        (socket, first)
    }

    fn uri(&self) -> String {
        format!("/socket.io/?EIO=4&transport=polling&sid={}", self.sid)
    }

    async fn post(&self, body: &str) {
        request(&self.router, "POST", &self.uri(), None, body.to_owned()).await;
    }

    /// The next packet (one long-poll when none is buffered).
    pub(crate) async fn next(&mut self) -> Packet {
        loop {
            if let Some(p) = self.pending.pop_front() {
                return p;
            }
            let text = request(&self.router, "GET", &self.uri(), None, String::new()).await;
            for raw in text.split('\u{1e}').filter(|s| !s.is_empty()) {
                if raw == "2" {
                    // engine.io ping: answer it so the connection stays up.
                    self.post("3").await;
                    continue;
                }
                self.pending.push_back(parse(raw));
            }
        }
    }

    /// Send `event` with `args` and an acknowledgement; returns the ack id.
    pub(crate) async fn emit(&mut self, event: &str, args: &[Value]) -> u64 {
        let id = self.next_ack;
        self.next_ack += 1;
        let mut all = vec![json!(event)];
        all.extend_from_slice(args);
        self.post(&format!("42{id}{}", Value::Array(all))).await;
        id
    }

    /// Call a method and wait for its acknowledgement; every event received before it is
    /// returned too (in order).
    pub(crate) async fn call(&mut self, event: &str, args: &[Value]) -> (Vec<Value>, Vec<Packet>) {
        let id = self.emit(event, args).await;
        let mut before = Vec::new();
        loop {
            match self.next().await {
                Packet::Ack(got, args) if got == id => return (args, before),
                other => before.push(other),
            }
        }
    }

    /// Log in with the `local` strategy through the authentication service; returns the
    /// acknowledgement's arguments (`[null, result]` or `[error]`).
    pub(crate) async fn login(&mut self, email: &str, password: &str) -> Vec<Value> {
        let body = json!({"strategy": "local", "email": email, "password": password});
        let (ack, _) = self
            .call("create", &[json!("authentication"), body, json!({})])
            .await;
        ack
    }
}
