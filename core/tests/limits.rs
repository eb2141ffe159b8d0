//! Bounded cost of outside input: the login flood (argon2 memory, the per-address rate limit),
//! slow clients (header and body deadlines), the connection cap, the socket.io calls in flight
//! per connection, and the query limits on REST and socket.io.

#[path = "support/http.rs"]
mod http_client;
#[path = "support/polling.rs"]
mod polling;
#[path = "support/users.rs"]
mod users;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use plume::auth::{AuthConfig, LoginLimit};
use plume::realtime::RealtimeOptions;
use plume::server::ServerOptions;
use plume::{App, Method, Params, Result, Service, async_trait};
use polling::{Packet, PollingSocket};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::time::timeout;
use users::{EMAIL, PASSWORD, login, users_app};

use http_client::{connect_from, read_response, request_from, send_from, send_request_from};

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// `VmRSS` or `VmHWM` of this process, in KiB.
fn proc_status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("{field} in /proc/self/status"))
}

async fn auth_app(limit: Option<LoginLimit>) -> App {
    users_app(
        AuthConfig::new("limits-secret").with_login_limit(limit),
        &[],
        Value::Null,
    )
    .await
}

/// Hundreds of concurrent bad logins from 20 addresses: each address gets its burst of checks,
/// the rest are 429 at once; argon2 memory stays at a few hashes' worth however many wait, and
/// a good login from another address still succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_flood_keeps_memory_bounded_and_a_good_login_still_succeeds() {
    const ADDRESSES: u8 = 20;
    const PER_ADDRESS: usize = 10;
    const BURST: u32 = 5;
    let app = auth_app(Some(LoginLimit {
        burst: BURST,
        interval: Duration::from_secs(600),
    }))
    .await;
    let server = app.listen("127.0.0.1:0").await.expect("listen");
    let addr = server.local_addr();
    // Warm up (the dummy hash of unknown users, the allocator's arenas), then measure.
    let (status, _) = request_from(
        IpAddr::V4(Ipv4Addr::new(127, 0, 0, 99)),
        addr,
        "POST",
        "/authentication",
        &login("nobody@example.com", "x"),
    )
    .await;
    assert_eq!(status, 401);
    let before = proc_status_kib("VmRSS:");

    // Every request is sent but its last byte, then all last bytes go out at once: the logins
    // reach the server together, as in a real flood, instead of trickling in as fast as the
    // first ones are answered.
    let mut held = Vec::new();
    for a in 0..ADDRESSES {
        let source = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + a));
        for i in 0..PER_ADDRESS {
            let email = if i % 2 == 0 {
                "a@example.com"
            } else {
                "nobody@example.com"
            };
            let body = login(email, "wrong").to_string();
            let mut stream = connect_from(source, addr).await;
            let head = format!(
                "POST /authentication HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            stream.write_all(head.as_bytes()).await.expect("write");
            stream
                .write_all(&body.as_bytes()[..body.len() - 1])
                .await
                .expect("write");
            held.push((stream, body.into_bytes()));
        }
    }
    let mut tasks = Vec::new();
    for (mut stream, body) in held {
        stream
            .write_all(&body[body.len() - 1..])
            .await
            .expect("write");
        tasks.push(tokio::spawn(
            async move { read_response(&mut stream).await },
        ));
    }
    let mut counts = std::collections::BTreeMap::new();
    for task in tasks {
        let (status, body) = timeout(Duration::from_secs(120), task)
            .await
            .expect("every login is answered in time")
            .expect("task");
        if status == 429 {
            assert_eq!(body["name"], "TooManyRequests", "{body}");
            assert_eq!(body["code"], 429);
        }
        *counts.entry(status).or_insert(0usize) += 1;
    }
    let checked = usize::from(ADDRESSES) * BURST as usize;
    let total = usize::from(ADDRESSES) * PER_ADDRESS;
    assert_eq!(
        counts,
        [(401, checked), (429, total - checked)]
            .into_iter()
            .collect(),
        "each address gets its burst of password checks, then 429"
    );
    // One hash holds 19 MiB while it runs: only one per core may run at once.
    let peak = proc_status_kib("VmHWM:");
    let grown_mib = peak.saturating_sub(before) / 1024;
    let allowed_mib = allowed_growth_mib();
    assert!(
        grown_mib <= allowed_mib,
        "peak memory grew by {grown_mib} MiB during the flood (allowed {allowed_mib} MiB)"
    );
    let (status, body) = request_from(
        LOCALHOST,
        addr,
        "POST",
        "/authentication",
        &login(EMAIL, PASSWORD),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert!(body["accessToken"].is_string());
    app.shutdown().await;
}

/// The argon2 memory one check holds while it runs, with a margin for the runtime, in MiB.
fn allowed_growth_mib() -> u64 {
    (plume::auth::password::max_running() as u64 + 2) * 20 + 64
}

/// Many password checks at once (more than any flood's burst gets through): one per core runs,
/// the others wait, so the argon2 memory stays at one working area per core.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_password_checks_hold_one_working_area_per_core() {
    use plume::auth::password;
    let phc = password::hash("right").await.expect("hash");
    let before = proc_status_kib("VmRSS:");
    let checks = (0..120).map(|_| password::verify("wrong", &phc));
    let results = timeout(Duration::from_secs(120), futures::future::join_all(checks))
        .await
        .expect("every check answers in time");
    assert!(
        results.iter().all(|r| matches!(r, Ok(false))),
        "{results:?}"
    );
    let grown_mib = proc_status_kib("VmHWM:").saturating_sub(before) / 1024;
    assert!(
        grown_mib <= allowed_growth_mib(),
        "peak memory grew by {grown_mib} MiB during 120 concurrent checks (allowed {} MiB)",
        allowed_growth_mib()
    );
}

/// A service that answers `find` with its query.
struct Things;

#[async_trait]
impl Service for Things {
    async fn find(&self, params: Params) -> Result<Value> {
        Ok(Value::Object(params.query))
    }
    async fn create(&self, data: Value, _params: Params) -> Result<Value> {
        Ok(data)
    }
    fn methods(&self) -> Vec<Method> {
        vec![Method::Find, Method::Create]
    }
}

async fn things_server(options: ServerOptions) -> (App, SocketAddr) {
    let app = App::new();
    app.use_service("things", Things);
    app.set_server_options(options);
    let server = app.listen("127.0.0.1:0").await.expect("listen");
    (app, server.local_addr())
}

/// A client that never finishes its headers loses the connection after the header timeout.
#[tokio::test(start_paused = true)]
async fn slow_headers_lose_the_connection() {
    let (app, addr) = things_server(ServerOptions {
        header_timeout: Duration::from_secs(5),
        ..ServerOptions::default()
    })
    .await;
    let mut slow = connect_from(LOCALHOST, addr).await;
    let started = tokio::time::Instant::now();
    slow.write_all(b"GET /things HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("write");
    closed_at_the_deadline(&mut slow, started, Duration::from_secs(5)).await;
    app.shutdown().await;
}

/// Wait (60 s at most, paused clock) until the server closes `conn`; it must close it
/// `deadline` after `since`, within a second.
async fn closed_at_the_deadline(
    conn: &mut tokio::net::TcpStream,
    since: tokio::time::Instant,
    deadline: Duration,
) {
    let mut rest = Vec::new();
    let closed = timeout(
        Duration::from_secs(60),
        tokio::io::AsyncReadExt::read_to_end(conn, &mut rest),
    )
    .await;
    assert!(closed.is_ok(), "the connection is still open after 60 s");
    let waited = since.elapsed();
    assert!(
        waited >= deadline && waited < deadline + Duration::from_secs(1),
        "closed after {waited:?}, not at the {deadline:?} deadline"
    );
}

/// One response on a keep-alive connection: its head (the body, per its length, is read too).
async fn read_one_response(conn: &mut tokio::net::TcpStream) -> String {
    let mut raw = Vec::new();
    loop {
        let text = String::from_utf8_lossy(&raw).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().to_owned())
                })
                .and_then(|v| v.parse().ok())
                .expect("a content length");
            if body.len() >= length {
                return head.to_owned();
            }
        }
        let mut buf = [0u8; 4096];
        let n = tokio::io::AsyncReadExt::read(conn, &mut buf)
            .await
            .expect("read");
        assert!(n > 0, "closed before the response ended");
        raw.extend_from_slice(&buf[..n]);
    }
}

/// The deadline holds for every request of a keep-alive connection: one that served requests
/// for longer than the timeout, then stalls in the middle of its next headers, is closed one
/// header timeout after that wait began.
#[tokio::test(start_paused = true)]
async fn a_keep_alive_connection_stalling_mid_headers_is_closed_on_time() {
    let (app, addr) = things_server(ServerOptions {
        header_timeout: Duration::from_secs(5),
        ..ServerOptions::default()
    })
    .await;
    let mut conn = connect_from(LOCALHOST, addr).await;
    for _ in 0..4 {
        // Each request comes 4 s after the previous answer: within the timeout.
        tokio::time::advance(Duration::from_secs(4)).await;
        conn.write_all(b"GET /things HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("write");
        let head = timeout(Duration::from_secs(1), read_one_response(&mut conn))
            .await
            .expect("answered");
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    }
    let answered = tokio::time::Instant::now();
    conn.write_all(b"GET /things HTTP/1.1\r\nHo")
        .await
        .expect("write");
    closed_at_the_deadline(&mut conn, answered, Duration::from_secs(5)).await;
    app.shutdown().await;
}

/// A body that does not arrive in time is a Feathers Timeout (408).
#[tokio::test(start_paused = true)]
async fn a_slow_body_is_a_408() {
    let (app, addr) = things_server(ServerOptions {
        body_timeout: Duration::from_secs(5),
        ..ServerOptions::default()
    })
    .await;
    let mut slow = connect_from(LOCALHOST, addr).await;
    slow.write_all(
        b"POST /things HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
          Content-Length: 100\r\nConnection: close\r\n\r\n{\"a\":",
    )
    .await
    .expect("write");
    let (status, body) = timeout(Duration::from_secs(60), read_response(&mut slow))
        .await
        .expect("an answer before 60 s");
    assert_eq!(status, 408, "{body}");
    assert_eq!(body["name"], "Timeout");
    app.shutdown().await;
}

/// Over the connection cap, a new connection waits until an open one closes.
#[tokio::test(start_paused = true)]
async fn connections_over_the_cap_wait_for_a_free_slot() {
    let (app, addr) = things_server(ServerOptions {
        max_connections: 1,
        header_timeout: Duration::from_secs(600),
        ..ServerOptions::default()
    })
    .await;
    let holder = connect_from(LOCALHOST, addr).await;
    let request = tokio::spawn(request_from(
        LOCALHOST,
        addr,
        "GET",
        "/things?a=1",
        &Value::Null,
    ));
    let request = match timeout(Duration::from_secs(30), request).await {
        Ok(answered) => panic!("answered over the cap: {answered:?}"),
        Err(_) => {
            // Still waiting: free the slot.
            drop(holder);
            request_from(LOCALHOST, addr, "GET", "/things?a=2", &Value::Null)
        }
    };
    let (status, body) = timeout(Duration::from_secs(30), request)
        .await
        .expect("answered once a slot is free");
    assert_eq!((status, body), (200, json!({"a": "2"})));
    app.shutdown().await;
}

/// Queries over a limit are 400s naming it, on REST and on socket.io.
#[tokio::test]
async fn queries_over_a_limit_are_400_on_rest_and_socketio() {
    let (app, addr) = things_server(ServerOptions::default()).await;
    let long_in: String = (0..1001).map(|i| format!("&id[$in][]={i}")).collect();
    for (query, name) in [
        (long_in.clone(), "$in"),
        ("&$limit=10001".to_owned(), "$limit"),
    ] {
        let (status, body) = request_from(
            LOCALHOST,
            addr,
            "GET",
            &format!("/things?x=1{query}"),
            &Value::Null,
        )
        .await;
        assert_eq!(status, 400, "{body}");
        assert!(
            body["message"]
                .as_str()
                .is_some_and(|m| m.starts_with(name)),
            "{body}"
        );
    }
    let (status, _) =
        request_from(LOCALHOST, addr, "GET", "/things?$limit=10000", &Value::Null).await;
    assert_eq!(status, 200);

    let (mut socket, _) = PollingSocket::open(&app, None).await;
    let mut deep = json!({"a": 1});
    for _ in 0..9 {
        deep = json!({"$or": [deep]});
    }
    for (query, name) in [
        (json!({"id": {"$nin": vec![0; 1001]}}), "$nin"),
        (deep, "$or"),
        (json!({"$and": vec![json!({}); 1001]}), "$and"),
    ] {
        let (ack, _) = socket.call("find", &[json!("things"), query]).await;
        assert_eq!(ack[0]["code"], 400, "{ack:?}");
        assert!(
            ack[0]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with(name)),
            "{ack:?}"
        );
    }
    app.shutdown().await;
}

/// A service whose `find` waits until the test lets it go.
struct Gate(Arc<tokio::sync::Semaphore>);

#[async_trait]
impl Service for Gate {
    async fn find(&self, _params: Params) -> Result<Value> {
        let _pass = self.0.acquire().await.map_err(plume::Error::internal)?;
        Ok(json!("done"))
    }
    fn methods(&self) -> Vec<Method> {
        vec![Method::Find]
    }
}

/// One connection may run `max_calls_in_flight` calls at once; one more is a 429 at once.
#[tokio::test]
async fn socketio_calls_in_flight_per_connection_are_capped() {
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let app = App::new();
    app.use_service("gate", Gate(gate.clone()));
    app.set_realtime_options(RealtimeOptions {
        max_calls_in_flight: 2,
        ..RealtimeOptions::default()
    });
    let (mut socket, _) = PollingSocket::open(&app, None).await;
    let first = socket.emit("find", &[json!("gate"), json!({})]).await;
    let second = socket.emit("find", &[json!("gate"), json!({})]).await;
    // Both are running (blocked in the service) once the gate has two waiters: wait for that
    // through the acknowledgement of the third call, which can only be the cap's refusal.
    let third = socket.emit("find", &[json!("gate"), json!({})]).await;
    let refused = timeout(Duration::from_secs(10), socket.next())
        .await
        .expect("an answer in time");
    match refused {
        Packet::Ack(id, args) => {
            assert_eq!(id, third);
            assert_eq!(args[0]["code"], 429, "{args:?}");
            assert_eq!(args[0]["name"], "TooManyRequests");
        }
        other => panic!("unexpected {other:?}"),
    }
    gate.add_permits(2);
    let mut done = Vec::new();
    while done.len() < 2 {
        if let Packet::Ack(id, args) = timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("acks in time")
        {
            assert_eq!(args, vec![Value::Null, json!("done")]);
            done.push(id);
        }
    }
    done.sort_unstable();
    assert_eq!(done, vec![first, second]);
}

/// A socket.io connection through `App::listen` knows its client's address (the login rate
/// limit of a socket.io login counts it), as a REST call does.
#[tokio::test]
async fn socketio_connections_carry_the_client_address() {
    let (app, addr) = things_server(ServerOptions::default()).await;
    let source = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 5));
    let open = send_from(
        source,
        addr,
        "GET",
        "/socket.io/?EIO=4&transport=polling",
        None,
    )
    .await;
    let handshake: Value = open
        .body
        .strip_prefix('0')
        .and_then(|json| serde_json::from_str(json).ok())
        .unwrap_or_else(|| panic!("engine.io open packet in {open:?}"));
    let sid = handshake["sid"].as_str().expect("sid");
    let connect = http::Request::post(format!(
        "http://{addr}/socket.io/?EIO=4&transport=polling&sid={sid}"
    ))
    .header(http::header::CONTENT_TYPE, "text/plain;charset=UTF-8")
    .body(http_body_util::Full::new(bytes::Bytes::from_static(b"40")))
    .expect("a valid request");
    let ok = send_request_from(source, connect).await;
    assert_eq!(ok.status, 200, "{ok:?}");
    // The socket.io connect runs on the server's tasks: wait (bounded) until it is registered.
    let conn = timeout(Duration::from_secs(10), async {
        loop {
            if let Some(conn) = app.connections().pop() {
                return conn;
            }
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the connection registers in time");
    let info = app.connection(&conn).expect("connection info");
    assert_eq!(info.remote_addr.map(|a| a.ip()), Some(source));
    app.shutdown().await;
}

/// A connection that sends nothing, and a keep-alive connection idle after its request, are
/// closed after the header timeout too: idle connections cannot fill the connection cap.
#[tokio::test(start_paused = true)]
async fn idle_connections_are_closed_after_the_header_timeout() {
    let (app, addr) = things_server(ServerOptions {
        header_timeout: Duration::from_secs(5),
        ..ServerOptions::default()
    })
    .await;
    let mut idle = connect_from(LOCALHOST, addr).await;
    let mut buf = Vec::new();
    let closed = timeout(Duration::from_secs(60), async {
        tokio::io::AsyncReadExt::read_to_end(&mut idle, &mut buf).await
    })
    .await;
    assert!(
        closed.is_ok(),
        "a silent connection is still open after 60 s"
    );
    // Keep-alive: one request, then nothing.
    let mut ka = connect_from(LOCALHOST, addr).await;
    ka.write_all(b"GET /things HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let mut first = vec![0u8; 4096];
    let n = tokio::io::AsyncReadExt::read(&mut ka, &mut first)
        .await
        .expect("read");
    assert!(String::from_utf8_lossy(&first[..n]).starts_with("HTTP/1.1 200"));
    let closed = timeout(Duration::from_secs(60), async {
        let mut rest = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut ka, &mut rest).await
    })
    .await;
    assert!(
        closed.is_ok(),
        "an idle keep-alive connection is still open after 60 s"
    );
    app.shutdown().await;
}
