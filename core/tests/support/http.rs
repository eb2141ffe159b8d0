//! HTTP on real TCP against a server of the test: whole requests go through hyper's client
//! (`hyper-util`), from a chosen loopback source address (the server counts login attempts per
//! client address). Included with `#[path]`.
//!
//! The tests of the server's limits also need what no client sends: a request whose headers
//! or body never finish, a connection held open without a request. For those,
//! [`connect_from`] gives the bare socket and [`read_response`] reads the one answer the
//! server then sends before it closes the connection.

#![allow(dead_code)]

use std::net::{IpAddr, SocketAddr};

use bytes::Bytes;
use http::{Request, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpSocket, TcpStream};

/// A response: its status, its headers and its body as text.
#[derive(Debug)]
pub(crate) struct Response {
    pub(crate) status: u16,
    pub(crate) headers: http::HeaderMap,
    pub(crate) body: String,
}

impl Response {
    /// The body as JSON (`Null` when empty or not JSON).
    pub(crate) fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

/// Send `method path` (with a JSON body when `body` is `Some`) to `server` from `source`, on a
/// connection of its own.
pub(crate) async fn send_from(
    source: IpAddr,
    server: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> Response {
    let mut request = Request::builder()
        .method(method)
        .uri(format!("http://{server}{path}"));
    if body.is_some() {
        request = request.header(header::CONTENT_TYPE, "application/json");
    }
    let request = request
        .body(Full::new(Bytes::from(body.unwrap_or("").to_owned())))
        .expect("a valid request");
    send_request_from(source, request).await
}

/// Send `request` (its URI names the server) from `source`, on a connection of its own.
pub(crate) async fn send_request_from(source: IpAddr, request: Request<Full<Bytes>>) -> Response {
    let mut connector = HttpConnector::new();
    connector.set_local_address(Some(source));
    let client = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build::<_, Full<Bytes>>(connector);
    let response = client.request(request).await.expect("a response");
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("the body").to_bytes();
    Response {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// Send `method path` with a JSON body from `source`; returns the status and the JSON body
/// (`Null` when empty).
pub(crate) async fn request_from(
    source: IpAddr,
    server: SocketAddr,
    method: &str,
    path: &str,
    body: &Value,
) -> (u16, Value) {
    let body = (!body.is_null()).then(|| body.to_string());
    let response = send_from(source, server, method, path, body.as_deref()).await;
    (response.status, response.json())
}

/// A bare connection to `server` from `source` (any port), for requests no client sends.
pub(crate) async fn connect_from(source: IpAddr, server: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::new(source, 0))
        .expect("bind the source address");
    socket.connect(server).await.expect("connect")
}

/// Read the one response to a request written on a bare connection (the request said
/// `Connection: close`, so the server closes the connection after it).
pub(crate) async fn read_response(stream: &mut TcpStream) -> (u16, Value) {
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.expect("read");
    parse_response(&raw)
}

/// The status and JSON body of a raw response.
pub(crate) fn parse_response(raw: &[u8]) -> (u16, Value) {
    let text = String::from_utf8_lossy(raw);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}
