//! Serving an App: REST (axum) and socket.io (socketioxide) on one router.
//!
//! [`App::into_router`] gives an axum [`Router`] whose **fallback** is Plume's REST handler: it
//! resolves every request path against the App's live service table, so a service mounted after
//! the server started is routable at once. Routes you add yourself (with `.route(..)`, `.merge(..)`
//! or `.nest_service(..)`, or through [`App::add_routes`] so that [`App::listen`] includes them)
//! are tried first; do not set another fallback. `/socket.io` and every path under it are routes
//! of the socket.io service (do not add routes there).
//!
//! [`App::serve`] runs the server as a future, as `axum::serve` does, until a shutdown signal:
//!
//! ```no_run
//! # async fn run() -> std::io::Result<()> {
//! let app = plume::App::new();
//! app.serve("127.0.0.1:3030")
//!     .with_graceful_shutdown(async { tokio::signal::ctrl_c().await.ok(); })
//!     .await?; // a bind failure is an io::Error
//! # Ok(()) }
//! ```
//!
//! [`App::listen`] starts it in the background and hands back a [`Listening`]:
//!
//! ```no_run
//! # async fn run() -> plume::Result<()> {
//! let app = plume::App::new();
//! let server = app.listen("127.0.0.1:3030").await?;
//! println!("listening on {}", server.local_addr());
//! app.shutdown().await; // stops the server gracefully
//! # Ok(()) }
//! ```

mod header_timer;
mod layers;
mod query;
mod rest;
mod run;
mod serve;

use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use axum::Router;
use tokio::net::ToSocketAddrs;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tower_http::cors::CorsLayer;

use crate::app::App;
use crate::error::{Error, Result};
use crate::sync;

pub use layers::{RestLayer, RestService};
pub use query::parse_query;
pub use rest::{SERVICE_METHOD_HEADER, error_response};
pub use run::{Serve, WithGracefulShutdown};

/// Options of the HTTP server.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// The largest request body accepted, in bytes (default 1 MiB). A larger one is answered
    /// with a BadRequest (400) whose `data` is `{limit}`.
    pub body_limit: usize,
    /// A CORS layer for every route, or `None` (the default) for no CORS headers.
    pub cors: Option<CorsLayer>,
    /// Serve socket.io on `/socket.io/` (default true).
    pub socketio: bool,
    /// How long a graceful shutdown waits for open requests before it aborts them (default 10 s).
    pub shutdown_timeout: Duration,
    /// How long [`App::listen`] waits for a request's headers, from the connection's start or
    /// the end of its previous request (default 10 s). A client that is slower loses the
    /// connection (slowloris).
    pub header_timeout: Duration,
    /// How long the REST handler waits for a request body (default 30 s); a slower body is a
    /// Timeout (408).
    pub body_timeout: Duration,
    /// The most connections [`App::listen`] keeps open at once (default 4,096); more wait in
    /// the kernel's accept queue until one closes.
    pub max_connections: usize,
}

/// The default of [`ServerOptions::header_timeout`].
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// The default of [`ServerOptions::body_timeout`].
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// The default of [`ServerOptions::max_connections`].
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            body_limit: 1024 * 1024,
            cors: None,
            socketio: true,
            shutdown_timeout: Duration::from_secs(10),
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            body_timeout: DEFAULT_BODY_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

/// The paths socket.io answers (engineioxide's `/socket.io` and everything under it).
const SOCKETIO_PATHS: [&str; 3] = ["/socket.io", "/socket.io/", "/socket.io/{*rest}"];

type RouteFn = Arc<dyn Fn(Router) -> Router + Send + Sync>;

#[derive(Default)]
struct ExtraRoutes {
    list: RwLock<Vec<RouteFn>>,
}

/// A running server started by [`App::listen`].
pub struct Listening {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: Arc<Mutex<Option<JoinHandle<()>>>>,
    /// True once the accept loop and every connection ended (dropped when it was aborted).
    done: watch::Receiver<bool>,
    timeout: Duration,
}

impl fmt::Debug for Listening {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Listening")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Listening {
    /// The bound address (useful after binding port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stop accepting connections and wait (up to the shutdown timeout) for open requests.
    pub async fn shutdown(&self) {
        stop_server(&self.stop, &self.task, self.timeout).await;
    }

    /// Resolves once the server has stopped (by [`shutdown`](Self::shutdown) or the App's).
    pub async fn stopped(&self) {
        let _ = self.done.clone().wait_for(|done| *done).await;
    }
}

async fn stop_server(
    stop: &watch::Sender<bool>,
    task: &Mutex<Option<JoinHandle<()>>>,
    timeout: Duration,
) {
    let _ = stop.send(true);
    let handle = sync::lock(task).take();
    if let Some(mut handle) = handle
        && tokio::time::timeout(timeout, &mut handle).await.is_err()
    {
        tracing::warn!(target: "plume::server", "graceful shutdown timed out; aborting");
        handle.abort();
    }
}

/// Serving the App over HTTP.
impl App {
    /// Set the HTTP server options (read by [`into_router`](App::into_router) and
    /// [`listen`](App::listen)).
    pub fn set_server_options(&self, options: ServerOptions) {
        self.insert_extension(options);
    }

    /// The HTTP server options.
    pub fn server_options(&self) -> ServerOptions {
        self.extension::<ServerOptions>()
            .map(|o| (*o).clone())
            .unwrap_or_default()
    }

    /// Add routes to every router this App builds (for plugins: a healthcheck, static files).
    /// They are tried before Plume's fallback.
    pub fn add_routes(&self, f: impl Fn(Router) -> Router + Send + Sync + 'static) {
        sync::write(&self.extension_or_insert_with(ExtraRoutes::default).list).push(Arc::new(f));
    }

    /// The REST router alone: only the fallback handler, no socket.io, no extra routes and no
    /// CORS.
    pub fn rest_router(&self) -> Router {
        let options = self.server_options();
        Router::new()
            .fallback(rest::fallback)
            .with_state(rest::RestState {
                app: self.clone(),
                body_limit: options.body_limit,
                body_timeout: options.body_timeout,
            })
    }

    /// The App as an axum router: the routes added with [`add_routes`](App::add_routes), REST as
    /// the fallback, socket.io routed on `/socket.io` and the paths under it, and the CORS layer,
    /// per [`ServerOptions`]. Merge your own routes into it as you like; the fallback is Plume's.
    pub fn into_router(&self) -> Router {
        let options = self.server_options();
        let mut router = self.rest_router();
        if let Some(extra) = self.extension::<ExtraRoutes>() {
            let list = sync::read(&extra.list).clone();
            for f in list {
                router = f(router);
            }
        }
        if options.socketio {
            // socket.io is routed, not layered: a layer on the router would wrap every route, and
            // axum clones each layer's service for every request (REST paid about 2,000
            // instructions a request for a socket.io service it never used). Its paths are all
            // that engineioxide answers, so its inner service (REST) is never reached there.
            // The compaction runs first: socketioxide keeps the parts of the request that opens
            // a session for the socket's whole life (see realtime/compact.rs).
            let socketio = tower::ServiceBuilder::new()
                .layer(crate::realtime::CompactHandshakeLayer)
                .layer(self.socketio_layer())
                .service(self.rest_router());
            for path in SOCKETIO_PATHS {
                router = router.route_service(path, socketio.clone());
            }
        }
        if let Some(cors) = options.cors {
            router = router.layer(cors);
        }
        router
    }

    /// Bind `addr` and serve [`into_router`](App::into_router) until the App shuts down (or the
    /// returned handle's [`shutdown`](Listening::shutdown) is called).
    ///
    /// Each connection gets [`ServerOptions::header_timeout`] to send each request's headers,
    /// at most [`ServerOptions::max_connections`] are open at once, and every request carries
    /// its client address (`axum::extract::ConnectInfo<SocketAddr>`, and `params.remote_addr`
    /// of its calls).
    ///
    /// It sets the App up first ([`App::setup`]): a plugin that failed to start is its error.
    pub async fn listen(&self, addr: impl ToSocketAddrs) -> Result<Listening> {
        self.setup().await?;
        let listener = serve::bind(addr)
            .await
            .map_err(|e| Error::unavailable(format!("cannot bind: {e}")))?;
        self.listen_on(listener)
            .map_err(|e| Error::unavailable(format!("cannot bind: {e}")))
    }

    /// [`listen`](App::listen) on a listener already bound.
    pub fn listen_on(&self, listener: tokio::net::TcpListener) -> std::io::Result<Listening> {
        let local = listener.local_addr()?;
        let options = self.server_options();
        let router = self.into_router();
        let (stop, stopped) = watch::channel(false);
        let (done_tx, done) = watch::channel(false);
        let limits = serve::ConnLimits {
            header_timeout: options.header_timeout,
            max_connections: options.max_connections,
        };
        let task = tokio::spawn(async move {
            serve::serve(listener, router, limits, stopped).await;
            let _ = done_tx.send(true);
        });
        let task = Arc::new(Mutex::new(Some(task)));
        tracing::info!(target: "plume::server", addr = %local, "listening");
        {
            let stop = stop.clone();
            let task = task.clone();
            let app = self.clone();
            let timeout = options.shutdown_timeout;
            self.on_shutdown(move || {
                Box::pin(async move {
                    // Close socket.io first: long-polling requests would hold the server open.
                    if let Some(io) = app.socketio() {
                        io.close().await;
                    }
                    stop_server(&stop, &task, timeout).await;
                })
            });
        }
        Ok(Listening {
            addr: local,
            stop,
            task,
            done,
            timeout: options.shutdown_timeout,
        })
    }
}
