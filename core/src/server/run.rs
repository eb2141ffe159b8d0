//! [`App::serve`]: the server as a future, in the style of `axum::serve`, with
//! [`with_graceful_shutdown`](Serve::with_graceful_shutdown).

use std::fmt;
use std::future::{Future, IntoFuture};
use std::io;

use futures::future::BoxFuture;
use tokio::net::{TcpListener, ToSocketAddrs};

use crate::app::App;

/// The future of [`App::serve`]: await it to serve until the App shuts down, or call
/// [`with_graceful_shutdown`](Self::with_graceful_shutdown) first.
#[must_use = "a server does nothing until it is awaited"]
pub struct Serve {
    app: App,
    bind: BoxFuture<'static, io::Result<TcpListener>>,
}

impl fmt::Debug for Serve {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Serve").finish_non_exhaustive()
    }
}

/// [`Serve`] with a shutdown signal, made by [`Serve::with_graceful_shutdown`].
#[must_use = "a server does nothing until it is awaited"]
pub struct WithGracefulShutdown<F> {
    serve: Serve,
    signal: F,
}

impl<F> fmt::Debug for WithGracefulShutdown<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WithGracefulShutdown")
            .finish_non_exhaustive()
    }
}

impl Serve {
    /// Serve until `signal` resolves, then shut the App down gracefully
    /// ([`App::shutdown`]: the server stops accepting, open requests finish within
    /// [`ServerOptions::shutdown_timeout`](super::ServerOptions::shutdown_timeout), and the
    /// shutdown tasks of plugins run, the distribution plugin's included).
    pub fn with_graceful_shutdown<F>(self, signal: F) -> WithGracefulShutdown<F>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        WithGracefulShutdown {
            serve: self,
            signal,
        }
    }

    async fn run(self, signal: Option<BoxFuture<'static, ()>>) -> io::Result<()> {
        self.app.setup().await.map_err(io::Error::other)?;
        let listener = self.bind.await?;
        let server = self.app.listen_on(listener)?;
        match signal {
            Some(signal) => {
                tokio::select! {
                    () = signal => self.app.shutdown().await,
                    () = server.stopped() => {}
                }
            }
            None => server.stopped().await,
        }
        Ok(())
    }
}

impl IntoFuture for Serve {
    type Output = io::Result<()>;
    type IntoFuture = BoxFuture<'static, io::Result<()>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.run(None))
    }
}

impl<F> IntoFuture for WithGracefulShutdown<F>
where
    F: Future<Output = ()> + Send + 'static,
{
    type Output = io::Result<()>;
    type IntoFuture = BoxFuture<'static, io::Result<()>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.serve.run(Some(Box::pin(self.signal))))
    }
}

/// Serving the App as a future.
impl App {
    /// Bind `addr` and serve [`into_router`](App::into_router) (REST and socket.io), as
    /// `axum::serve` does: the returned future runs the server until the App shuts down
    /// ([`App::shutdown`]), or until the signal given to
    /// [`with_graceful_shutdown`](Serve::with_graceful_shutdown) resolves. A bind failure is
    /// the `io::Error` of the bind; the App is set up first ([`App::setup`]), and a plugin that
    /// failed to start is an `io::Error` of kind `Other` whose source is its [`Error`](crate::Error). The server is the one [`listen`](App::listen) starts, with
    /// the same [`ServerOptions`](super::ServerOptions).
    ///
    /// ```no_run
    /// # async fn run() -> std::io::Result<()> {
    /// let app = plume::App::with_registered();
    /// app.serve("127.0.0.1:3030")
    ///     .with_graceful_shutdown(async { tokio::signal::ctrl_c().await.ok(); })
    ///     .await
    /// # }
    /// ```
    pub fn serve(&self, addr: impl ToSocketAddrs + Send + 'static) -> Serve {
        Serve {
            app: self.clone(),
            bind: Box::pin(super::serve::bind(addr)),
        }
    }

    /// [`serve`](App::serve) on a listener already bound (to learn the port of `127.0.0.1:0`
    /// first, for example).
    pub fn serve_on(&self, listener: TcpListener) -> Serve {
        Serve {
            app: self.clone(),
            bind: Box::pin(std::future::ready(Ok(listener))),
        }
    }
}
