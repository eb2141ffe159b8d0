//! The socket.io server (socketioxide) in the Feathers socket protocol.
//!
//! - A client calls a method by emitting the method name with the path and the positional
//!   arguments, and an acknowledgement: `socket.emit("get", "todos", 1, {}, ack)`. The ack gets
//!   `[null, result]` on success and `[error]` on failure.
//! - Service events reach the connections that the publish function selects (see
//!   [`channels`](crate::channels)) as the socket.io event `"<path> <event>"` with one argument.
//! - A successful `create` on the authentication service logs the connection in: it stores the
//!   authentication and the user, leaves `anonymous` and joins `authenticated`. A successful
//!   `remove` there logs it out: it clears both and leaves every channel (the socket stays open).
//! - A handshake `Authorization` header is checked by the [`ConnectionAuthenticator`] the auth
//!   plugin registers; an invalid one refuses the connection (socket.io `connect_error`).

use std::fmt;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use futures::FutureExt;
use serde::de::{Deserialize, Deserializer, SeqAccess, Visitor};
use serde_json::{Map, Value};
use socketioxide::SocketIo;
use socketioxide::extract::{AckSender, Event, SocketRef, TryData};
use socketioxide::handler::ConnectHandler;
use socketioxide::layer::SocketIoLayer;

mod ack;
mod compact;
mod conns;
mod expiry;

pub(crate) use compact::CompactHandshakeLayer;
use conns::{Conn, Connections};

use crate::app::App;
use crate::channels::{ANONYMOUS, AUTHENTICATED};
use crate::error::{Error, Result};
use crate::handle::Reply;
use crate::params::{ConnectionId, Id, Method, Params, Provider};
use crate::sync;
use crate::trace::{self, TraceContext};

/// The default path of the authentication service.
pub const DEFAULT_AUTH_PATH: &str = "authentication";

/// Verifies the `Authorization` header of a socket.io handshake. The authentication plugin
/// implements it and registers it as an App extension:
///
/// ```
/// use std::sync::Arc;
/// use plume::realtime::ConnectionAuthenticator;
/// use plume::{async_trait, App, Result};
/// use serde_json::{json, Value};
///
/// struct Fixed;
/// #[async_trait]
/// impl ConnectionAuthenticator for Fixed {
///     async fn authenticate_header(&self, _app: &App, header: &str) -> Result<Option<(Value, Value)>> {
///         Ok((header == "Bearer good").then(|| (json!({"strategy": "jwt", "accessToken": "good"}), json!({"id": 1}))))
///     }
/// }
/// let app = App::new();
/// app.insert_extension::<Arc<dyn ConnectionAuthenticator>>(Arc::new(Fixed));
/// ```
#[async_trait]
pub trait ConnectionAuthenticator: Send + Sync + 'static {
    /// Verify a handshake `Authorization` header value (any of `Bearer t`, `bearer t`, `JWT t`
    /// or a bare `t`; an unknown scheme such as `Basic` means "no authentication").
    ///
    /// Returns `Ok(Some((authentication, user)))` when valid, `Ok(None)` when absent or ignored,
    /// and `Err` when invalid: the connection is then refused with a `connect_error` carrying
    /// the error's message.
    async fn authenticate_header(&self, app: &App, header: &str) -> Result<Option<(Value, Value)>>;

    /// When a connection's `authentication` stops being valid (a token's `exp`), or `None`
    /// when it does not expire (the default). At that time the connection is logged out and
    /// leaves every channel, as in Feathers v5.
    fn expires_at(&self, authentication: &Value) -> Option<std::time::SystemTime> {
        let _ = authentication;
        None
    }
}

/// Options of the real-time server.
#[derive(Debug, Clone)]
pub struct RealtimeOptions {
    /// The path of the authentication service (default `authentication`). Its `create` and
    /// `remove` log a connection in and out, and its events are never published.
    pub auth_path: String,
    /// The largest socket.io message accepted, in bytes (default 1 MB).
    pub max_payload: u64,
    /// The most calls one connection may have running at once (default 64); a call over it is
    /// answered at once with TooManyRequests (429).
    pub max_calls_in_flight: usize,
    /// Each websocket's read buffer, in bytes (default 1 KiB; socketioxide's is 4 KiB): zeroed
    /// at open and kept for the socket's life; a larger message takes several reads.
    pub ws_read_buffer_size: usize,
}

/// The default of [`RealtimeOptions::max_calls_in_flight`].
pub const DEFAULT_MAX_CALLS_IN_FLIGHT: usize = 64;

/// The default of [`RealtimeOptions::ws_read_buffer_size`].
pub const DEFAULT_WS_READ_BUFFER_SIZE: usize = 1024;

impl Default for RealtimeOptions {
    fn default() -> Self {
        Self {
            auth_path: DEFAULT_AUTH_PATH.to_owned(),
            max_payload: 1_000_000,
            max_calls_in_flight: DEFAULT_MAX_CALLS_IN_FLIGHT,
            ws_read_buffer_size: DEFAULT_WS_READ_BUFFER_SIZE,
        }
    }
}

/// What the server knows about one real-time connection.
#[derive(Debug, Clone, Default)]
pub struct ConnectionInfo {
    /// The connection's authentication (for a login through the authentication service:
    /// `{strategy: "jwt", accessToken}`), passed as `params.authentication` of its calls.
    pub authentication: Option<Value>,
    /// The logged-in user, passed as `params.user` of its calls.
    pub user: Option<Value>,
    /// The handshake headers, passed as `params.headers`.
    pub headers: http::HeaderMap,
    /// The client's address, when the server knows it, passed as `params.remote_addr`.
    pub remote_addr: Option<std::net::SocketAddr>,
}

/// The socket.io server of an App, created once by [`App::socketio_layer`].
pub(crate) struct RealtimeServer {
    layer: SocketIoLayer,
    io: SocketIo,
}

impl fmt::Debug for RealtimeServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RealtimeServer").finish_non_exhaustive()
    }
}

/// Real-time connections on the App.
impl App {
    /// Set the options of the real-time server (before the first [`App::into_router`]).
    pub fn set_realtime_options(&self, options: RealtimeOptions) {
        self.insert_extension(options);
    }

    /// The options of the real-time server.
    pub fn realtime_options(&self) -> RealtimeOptions {
        self.extension::<RealtimeOptions>()
            .map(|o| (*o).clone())
            .unwrap_or_default()
    }

    /// Register the handshake authenticator (the authentication plugin does this).
    pub fn set_connection_authenticator(&self, authenticator: impl ConnectionAuthenticator) {
        self.insert_extension::<Arc<dyn ConnectionAuthenticator>>(Arc::new(authenticator));
    }

    /// The ids of the open real-time connections.
    pub fn connections(&self) -> Vec<ConnectionId> {
        let conns = Connections::of(self);
        let map = sync::read(&conns.map);
        let mut ids: Vec<_> = map.keys().cloned().collect();
        ids.sort();
        ids
    }

    /// What the server knows about a connection.
    pub fn connection(&self, conn: &ConnectionId) -> Option<ConnectionInfo> {
        let conns = Connections::of(self);
        let map = sync::read(&conns.map);
        map.get(conn).map(Conn::info)
    }

    /// Log a connection in: store its authentication and user, leave `anonymous`, join
    /// `authenticated`. Does nothing for an unknown connection. When the authentication
    /// expires ([`ConnectionAuthenticator::expires_at`]), the connection is logged out then.
    pub fn login_connection(&self, conn: &ConnectionId, authentication: Value, user: Value) {
        let known = {
            let conns = Connections::of(self);
            let mut map = sync::write(&conns.map);
            match map.get_mut(conn) {
                Some(c) => {
                    c.log_in(&authentication, &user);
                    true
                }
                None => false,
            }
        };
        if known {
            self.channel(ANONYMOUS).leave(conn);
            self.channel(AUTHENTICATED).join(conn);
            expiry::watch(self, conn, &authentication);
        }
    }

    /// Log a connection out: clear its authentication and user and remove it from every
    /// channel. The connection stays open.
    pub fn logout_connection(&self, conn: &ConnectionId) {
        expiry::forget(self, conn);
        {
            let conns = Connections::of(self);
            let mut map = sync::write(&conns.map);
            if let Some(c) = map.get_mut(conn) {
                c.log_out();
            }
        }
        self.leave_all(conn);
    }

    /// The socket.io tower layer of this App (created on first use; every router of the App
    /// shares it). It serves `/socket.io/` and passes every other request on.
    pub fn socketio_layer(&self) -> SocketIoLayer {
        if let Some(server) = self.extension::<RealtimeServer>() {
            return server.layer.clone();
        }
        // Read everything build_server needs first: the extension lock is held while it runs.
        let options = self.realtime_options();
        let conns = Connections::of(self);
        self.extension_or_insert_with(|| build_server(self, options, conns))
            .layer
            .clone()
    }

    /// The socketioxide handle of this App's socket.io server, if one was created.
    pub fn socketio(&self) -> Option<SocketIo> {
        self.extension::<RealtimeServer>().map(|s| s.io.clone())
    }
}

fn build_server(app: &App, options: RealtimeOptions, conns: Arc<Connections>) -> RealtimeServer {
    let (layer, io) = SocketIo::builder()
        .max_payload(options.max_payload)
        .ws_read_buffer_size(options.ws_read_buffer_size)
        .build_layer();

    let middleware = {
        let app = app.clone();
        move |socket: SocketRef| handshake(app, socket)
    };
    io.ns("/", on_connect.with(middleware));

    let listener = {
        let app = app.clone();
        let auth_path = options.auth_path.clone();
        app.clone().on_event(move |ev| {
            if ev.path == auth_path {
                return;
            }
            let recipients = app.event_recipients(ev);
            if recipients.is_empty() {
                return;
            }
            let name = format!("{} {}", ev.path, ev.event);
            // Encoded once for every recipient: each socket's packet copies the text.
            let data = match serde_json::value::to_raw_value(&ev.data) {
                Ok(data) => data,
                Err(err) => {
                    tracing::warn!(target: "plume::realtime", event = %name, %err, "event not encoded");
                    return;
                }
            };
            let map = sync::read(&conns.map);
            for conn in recipients {
                if let Some(socket) = map.get(&conn).and_then(|c| c.socket.as_ref())
                    && let Err(err) = socket.emit(name.as_str(), &data)
                {
                    tracing::warn!(target: "plume::realtime", %conn, event = %name, %err, "event not delivered");
                }
            }
        })
    };
    {
        let app_for_shutdown = app.clone();
        let io = io.clone();
        app.on_shutdown(move || {
            Box::pin(async move {
                app_for_shutdown.off_event(listener);
                io.close().await;
            })
        });
    }
    RealtimeServer { layer, io }
}

fn conn_id(socket: &SocketRef) -> ConnectionId {
    ConnectionId(socket.id.to_string())
}

/// The handshake middleware: authenticates an `Authorization` header, registers the connection.
async fn handshake(app: App, socket: SocketRef) -> std::result::Result<(), Error> {
    let parts = socket.req_parts();
    let mut info = ConnectionInfo {
        remote_addr: parts
            .extensions
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|c| c.0),
        ..ConnectionInfo::default()
    };
    let header = parts
        .headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    if let (Some(header), Some(auth)) =
        (header, app.extension::<Arc<dyn ConnectionAuthenticator>>())
        && let Some((authentication, user)) = auth.authenticate_header(&app, &header).await?
    {
        info.authentication = Some(authentication);
        info.user = Some(user);
    }
    let conns = Connections::of(&app);
    sync::write(&conns.map).insert(conn_id(&socket), Conn::new(socket.clone(), &info));
    if let Some(authentication) = &info.authentication {
        expiry::watch(&app, &conn_id(&socket), authentication);
    }
    register(&app, &socket, info.authentication.is_some());
    Ok(())
}

/// The connect handler: everything was set up by [`handshake`] already.
async fn on_connect(socket: SocketRef) {
    tracing::debug!(target: "plume::realtime", conn = %conn_id(&socket), "connected");
}

/// Join the connection's first channel and register its message and disconnect handlers.
///
/// Called by the handshake middleware, before socketioxide answers the client's CONNECT: once
/// the client has that answer it may emit at once (the Feathers client sends its
/// `create authentication` right away), and an event that arrives before a handler is
/// registered is dropped without an acknowledgement. The connect handler runs only after the
/// answer is sent, as a task of its own, so registering there loses such calls under load.
fn register(app: &App, socket: &SocketRef, authenticated: bool) {
    let id = conn_id(socket);
    app.channel(if authenticated {
        AUTHENTICATED
    } else {
        ANONYMOUS
    })
    .join(&id);
    crate::metrics::socket(1.0);

    let on_message = {
        let app = app.clone();
        let in_flight = InFlight {
            running: Arc::new(AtomicUsize::new(0)),
            max: app.realtime_options().max_calls_in_flight,
        };
        move |socket: SocketRef,
              Event(event): Event,
              TryData(args): TryData<Args>,
              ack: AckSender| {
            let slot = in_flight.enter();
            on_message(app, socket, event, args.map(|a| a.0), ack, slot)
        }
    };
    socket.on_fallback(on_message);
    let on_disconnect = {
        let app = app.clone();
        move |socket: SocketRef| {
            let id = conn_id(&socket);
            expiry::forget(&app, &id);
            app.leave_all(&id);
            sync::write(&Connections::of(&app).map).remove(&id);
            tracing::debug!(target: "plume::realtime", conn = %id, "disconnected");
            crate::metrics::socket(-1.0);
            async {}
        }
    };
    socket.on_disconnect(on_disconnect);
}

/// Every argument of an event after its name (socketioxide decodes a tuple-like type from all
/// of them).
struct Args(Vec<Value>);

impl<'de> Deserialize<'de> for Args {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Args;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("event arguments")
            }
            fn visit_seq<S: SeqAccess<'de>>(
                self,
                mut seq: S,
            ) -> std::result::Result<Args, S::Error> {
                let mut out = Vec::new();
                while let Some(v) = seq.next_element::<Value>()? {
                    out.push(v);
                }
                Ok(Args(out))
            }
        }
        d.deserialize_tuple(usize::MAX, V)
    }
}

/// The calls one connection has running, and its cap.
#[derive(Clone)]
struct InFlight {
    running: Arc<AtomicUsize>,
    max: usize,
}

/// A running call's place in [`InFlight`]; dropping it frees the place.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl InFlight {
    /// A place for one more call, or `None` when the connection is at its cap.
    fn enter(&self) -> Option<Slot> {
        let taken = self
            .running
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .is_ok();
        taken.then(|| Slot(self.running.clone()))
    }
}

async fn on_message<E: fmt::Display>(
    app: App,
    socket: SocketRef,
    event: String,
    args: std::result::Result<Vec<Value>, E>,
    ack: AckSender,
    slot: Option<Slot>,
) {
    let id = conn_id(&socket);
    let outcome = match args {
        _ if slot.is_none() => Err(Error::too_many_requests(format!(
            "Too many calls in flight on this connection (the maximum is {})",
            app.realtime_options().max_calls_in_flight
        ))),
        Ok(args) => {
            let run = AssertUnwindSafe(run_method(&app, &id, &event, args)).catch_unwind();
            let ran = if trace::enabled() {
                // Each call starts a trace (socket.io has no per-call headers to continue one).
                let ctx = TraceContext::new_root();
                let span = trace::hop_span(
                    ctx,
                    || tracing::trace_span!("call", trace_id = %ctx.trace_id_field()),
                );
                trace::in_hop("call", ctx, span, run).await
            } else {
                run.await
            };
            ran.unwrap_or_else(|_| Err(Error::internal(format!("a '{event}' call panicked"))))
        }
        Err(err) => Err(Error::bad_request(format!("Invalid arguments: {err}"))),
    };
    drop(slot);
    ack::send(ack, &id, &event, outcome);
}

/// The position of `params.query` among a method's arguments (after the path).
fn query_position(method: &Method) -> usize {
    match method {
        Method::Find => 0,
        Method::Update | Method::Patch => 2,
        _ => 1,
    }
}

fn parse_id(value: Option<&Value>) -> Result<Option<Id>> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(v) => Id::from_value(v).map(Some).ok_or_else(|| {
            Error::bad_request(format!("Invalid id {v}: expected a string or an integer"))
        }),
    }
}

/// Run one Feathers socket call: `args` are the event's arguments (path first).
async fn run_method(
    app: &App,
    conn: &ConnectionId,
    event: &str,
    args: Vec<Value>,
) -> Result<Reply> {
    let mut args = args.into_iter();
    let path = match args.next() {
        Some(Value::String(p)) => p,
        Some(other) => other.to_string(),
        None => "undefined".to_owned(),
    };
    let Some(lookup) = app.lookup(&path).filter(|l| l.id.is_none()) else {
        let err = Error::not_found(format!("Service '{path}' not found"));
        crate::metrics::unknown_path(crate::Provider::Socketio, &err);
        return Err(err);
    };
    let method = Method::from_name(event);
    if !lookup.handle.exposes(&method) {
        return Err(Error::method_not_allowed_on(event, &path));
    }
    let rest: Vec<Value> = args.collect();
    let position = query_position(&method);
    if rest.len() > position + 1 {
        return Err(Error::bad_request(format!(
            "Too many arguments for '{event}' method"
        )));
    }
    let query = match rest.get(position) {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(map)) => map.clone(),
        Some(_) => return Err(Error::bad_request("Invalid query: expected an object")),
    };
    let (id, data) = match method {
        Method::Find => (None, None),
        Method::Get | Method::Remove => (parse_id(rest.first())?, None),
        Method::Update | Method::Patch => (parse_id(rest.first())?, rest.get(1).cloned()),
        Method::Create | Method::Custom(_) => (None, rest.first().cloned()),
    };
    let info = {
        let conns = Connections::of(app);
        let map = sync::read(&conns.map);
        map.get(conn).map(Conn::call_info).unwrap_or_default()
    };
    let params = Params {
        query,
        route: lookup.route,
        provider: Some(Provider::Socketio),
        user: info.user,
        authentication: info.authentication,
        headers: info.headers,
        remote_addr: info.remote_addr,
        connection: Some(conn.clone()),
        ..Params::default()
    };
    let auth_path = app.realtime_options().auth_path;
    let is_auth = lookup.handle.path() == auth_path;
    // (a result the service hands over as JSON text stays text unless a hook needs it: the
    // ack passes it on)
    let reply = lookup
        .handle
        .dispatch_reply(method.clone(), id, data, params)
        .await?;
    if !is_auth {
        return Ok(reply);
    }
    let result = match reply {
        Reply::Value(value) => value,
        Reply::Json(raw) => raw.to_value()?,
    };
    match method {
        Method::Create => {
            let authentication = match result.get("accessToken") {
                Some(token) => serde_json::json!({"strategy": "jwt", "accessToken": token}),
                None => result.get("authentication").cloned().unwrap_or(Value::Null),
            };
            let user = result.get("user").cloned().unwrap_or(Value::Null);
            app.login_connection(conn, authentication, user);
        }
        Method::Remove => app.logout_connection(conn),
        _ => {}
    }
    Ok(Reply::Value(result))
}
