//! The accept loop of [`App::listen`](crate::App::listen): HTTP/1.1 (hyper) with a deadline on
//! each request's headers, a cap on open connections, the client address in every request, and
//! a graceful stop.
//!
//! `axum::serve` has neither a header read timeout nor a connection cap: a client that opens
//! connections and sends its headers one byte at a time (slowloris) would hold them forever.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpSocket, ToSocketAddrs};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tower::ServiceExt;

use super::header_timer::{HeaderTimer, Watch, watched};

/// The listen backlog of the sockets [`App::listen`](crate::App::listen) and
/// [`App::serve`](crate::App::serve) bind: connections the kernel completes and holds until they
/// are accepted (and while the connection cap is reached). std's and tokio's 128 overflowed when
/// a thousand socket.io clients connected at once, and the clients past it waited for a SYN
/// retransmit (a second). The kernel caps it at `net.core.somaxconn` (4096 by default).
const LISTEN_BACKLOG: u32 = 4096;

/// Bind the first address `addr` resolves to that binds, as `TcpListener::bind` does, with
/// [`LISTEN_BACKLOG`].
pub(crate) async fn bind(addr: impl ToSocketAddrs) -> io::Result<TcpListener> {
    let mut last = None;
    for addr in tokio::net::lookup_host(addr).await? {
        match bind_one(addr) {
            Ok(listener) => return Ok(listener),
            Err(err) => last = Some(err),
        }
    }
    Err(last.unwrap_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "the address resolved to no address",
        )
    }))
}

fn bind_one(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    // As tokio's `TcpListener::bind` (a restarted server rebinds at once).
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// What the accept loop needs from [`ServerOptions`](super::ServerOptions).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnLimits {
    pub(crate) header_timeout: Duration,
    pub(crate) max_connections: usize,
}

/// Serve `router` on `listener` until `stop` turns true, then let open requests finish (the
/// caller bounds that wait and aborts this future after it).
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnLimits,
    mut stop: watch::Receiver<bool>,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let mut connections = JoinSet::new();
    loop {
        // A connection is accepted only with a free slot: over the cap, new ones wait in the
        // kernel's backlog instead of costing a task and a buffer each.
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            () = stopped(&mut stop) => break,
        };
        let (stream, addr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors and the like: back off briefly, keep serving.
                    tracing::warn!(target: "plume::server", %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = stopped(&mut stop) => break,
        };
        // Reap finished connections so the set holds only open ones.
        while connections.try_join_next().is_some() {}
        let service = router
            .clone()
            .map_request(move |mut req: http::Request<_>| {
                req.extensions_mut().insert(ConnectInfo(addr));
                req
            });
        let mut stop = stop.clone();
        connections.spawn(async move {
            let _permit = permit;
            serve_connection(stream, addr, service, limits, &mut stop).await;
        });
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
}

/// Resolves once `stop` is true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

async fn serve_connection<S>(
    stream: tokio::net::TcpStream,
    addr: SocketAddr,
    service: S,
    limits: ConnLimits,
    stop: &mut watch::Receiver<bool>,
) where
    S: tower::Service<
            http::Request<hyper::body::Incoming>,
            Response = axum::response::Response,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let _ = stream.set_nodelay(true);
    // The header read timeout: hyper's, on a timer that keeps it without a tokio timer per
    // request (see header_timer.rs); the watchdog runs beside the connection.
    // Half-closed connections are served: a client that shuts its side once its request is sent
    // gets its answer (as from Node's server). Without it hyper reads ahead while each request
    // runs, to catch that end, and the read buffer still lent to the request's headers makes it
    // allocate a new 8 KiB one every request (about 2,000 instructions of the gateway's GET).
    let watch = Watch::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(HeaderTimer(watch.clone()))
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true)
        .half_close(true);
    let connection = builder
        .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service))
        .with_upgrades();
    tokio::pin!(connection);
    let served = async {
        tokio::select! {
            outcome = connection.as_mut() => outcome,
            () = stopped(stop) => {
                connection.as_mut().graceful_shutdown();
                connection.await
            }
        }
    };
    let outcome = watched(&watch, limits.header_timeout, served).await;
    if let Err(err) = outcome {
        tracing::debug!(target: "plume::server", %addr, %err, "connection closed");
    }
}
