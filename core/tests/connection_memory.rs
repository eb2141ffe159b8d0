//! What Plume keeps for a logged-in real-time connection (issue 22: ≤ 16 KiB of gateway memory
//! per socket; the profile is in docs/benchmarks.md, "Where a socket's bytes are").
//!
//! The authentication and the user of a login are kept as compact JSON text, not as
//! `serde_json::Value`s: with `preserve_order` an object is an `IndexMap` (an entries vector
//! and a hash index, about 360 bytes for a two-key object before its strings), and a socket
//! keeps two of them for its whole life. A counting allocator measures the bytes a login
//! retains: a test binary of its own, with one test, so nothing else allocates meanwhile.

// The counting allocator is the one block of unsafe code here: it forwards to the system
// allocator unchanged and only adds up the sizes.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use plume::App;
use serde_json::json;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{WebSocketStream, client_async};

/// The system allocator, counting the bytes currently allocated.
struct Counting;

static ALLOCATED: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call forwards to `System` with the caller's arguments; the counter is only
// arithmetic on the sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATED.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        ALLOCATED.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: the caller's contract, passed on.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATED.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATED.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        // SAFETY: the caller's contract, passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const SOCKETS: usize = 32;

/// A websocket through the socket.io CONNECT of `/`, answering the server's pings.
async fn open(addr: SocketAddr) -> WebSocketStream<TcpStream> {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let url = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket");
    let (mut ws, _) = client_async(url, stream).await.expect("websocket");
    let mut sent_connect = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let next = tokio::time::timeout_at(deadline, ws.next()).await;
        let text = match next.expect("socket.io CONNECT answered within 10 s") {
            Some(Ok(Message::Text(t))) => t.as_str().to_owned(),
            Some(Ok(_)) => continue,
            other => panic!("websocket ended: {other:?}"),
        };
        if text.starts_with("0{") && !sent_connect {
            ws.send(Message::text("40")).await.expect("send CONNECT");
            sent_connect = true;
        } else if text.starts_with("40{") {
            return ws;
        }
    }
}

#[tokio::test]
async fn a_login_keeps_its_authentication_and_user_as_compact_text() {
    let app = App::new();
    let server = app.listen("127.0.0.1:0").await.expect("listen");
    let mut sockets = Vec::new();
    for _ in 0..SOCKETS {
        sockets.push(open(server.local_addr()).await);
    }
    let conns = app.connections();
    assert_eq!(conns.len(), SOCKETS);

    // A JWT of the demo's size and a user as the users service returns it.
    let token = format!("eyJ{}", "a".repeat(280));
    let login = |i: usize| {
        let authentication = json!({"strategy": "jwt", "accessToken": token});
        let user = json!({"id": i, "email": format!("user{i}@example.com"), "createdAt": "2026-12-03T21:00:00Z"});
        (authentication, user)
    };
    let texts: usize = (0..SOCKETS)
        .map(|i| {
            let (a, u) = login(i);
            a.to_string().len() + u.to_string().len()
        })
        .sum();
    // The values are made inside the measured span: what a login keeps of them is counted,
    // whether the values themselves or something made from them.
    let before = ALLOCATED.load(Ordering::SeqCst);
    for (i, conn) in conns.iter().enumerate() {
        let (authentication, user) = login(i);
        app.login_connection(conn, authentication, user);
    }
    let retained = ALLOCATED.load(Ordering::SeqCst) - before;

    // The JSON text of both, plus the connection's move from `anonymous` to `authenticated`
    // (a channel entry). As `Value`s the two objects cost about 700 bytes more per login.
    let per_login = retained / SOCKETS as isize;
    let bound = (texts / SOCKETS) as isize + 160;
    assert!(
        per_login <= bound,
        "a login retains {per_login} bytes; its authentication and user are {} bytes of JSON (bound {bound})",
        texts / SOCKETS
    );

    // What the calls see is the same as what was stored.
    let (authentication, user) = login(3);
    let info = app.connection(&conns[3]).expect("the connection");
    assert_eq!(info.authentication, Some(authentication));
    assert_eq!(info.user, Some(user));
    drop(sockets);
    server.shutdown().await;
}
