//! The distribution plugin: publish local services on the mesh, mount a proxy for every remote
//! service, relay events, and answer a healthcheck.
//!
//! Configuring is synchronous and starting is not (the mesh binds a socket and starts
//! discovery), so the plugin has two entry points:
//!
//! - [`Distribution::start`]`(&app).await` starts everything and returns a
//!   [`DistributionHandle`] (or the error). This is the recommended form.
//! - `app.configure(Distribution::new()...)` spawns the same start on the current tokio runtime,
//!   as Feathers' `app.configure(distribution(..))`. A failed start is the error of
//!   `app.setup()`, `app.listen(..)` and `app.serve(..)`, and `app.distribution().await`
//!   ([`AppDistributionExt`]) returns the handle or the error.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use plume::{App, MemoryService};
//! use plume_transport::distribution::Distribution;
//!
//! let app = App::new();
//! app.use_service("todos", MemoryService::<serde_json::Value>::new());
//! let dist = Distribution::new().key("todos-service").environment("dev").start(&app).await?;
//! // ... `todos` is now published; remote services appear as proxies in `app`.
//! dist.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! See `docs/distribution.md` for every option and its default.

mod app_ext;
mod call_body;
mod consumer;
mod decoded;
mod handle;
mod health;
mod merge;
mod monitor;
mod mount;
mod options;
mod proxy;
mod publisher;
mod relay;
mod runtime;
mod wire;

#[cfg(test)]
mod tests;

use std::convert::Infallible;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use plume::hooks::HookRegistry;
use plume::server::{RestLayer, RestService};
use plume::{App, Plugin};
use tokio::sync::{mpsc, watch};
use tower::Layer;

use crate::builder::MeshBuilder;
use crate::discovery::{ConfigError, Discovery, DiscoveryConfig, DiscoveryMode, LocalNode};
use crate::mesh::{Mesh, MeshError};

pub use app_ext::AppDistributionExt;
pub use handle::DistributionHandle;
pub use health::HealthSections;
pub use monitor::{LEASE, MONITOR_PAGE_PATH, MONITOR_SERVICE_PATH, SNAPSHOT_EVENT};
pub use options::{NameFilter, OptionKeys, PathRename, ProxyHooks, ServiceFilter};
pub use wire::ServiceDescriptor;

use runtime::Shared;

/// The default request deadline.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// The default grace period of a proxy whose last provider left.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(30);
/// The default healthcheck path.
pub const DEFAULT_HEALTHCHECK_PATH: &str = "distribution/healthcheck";
/// Peer events buffered between discovery and the mesh.
const PEER_EVENTS: usize = 256;
/// The default key.
pub const DEFAULT_KEY: &str = "default";
/// The default environment.
pub const DEFAULT_ENVIRONMENT: &str = "default";

/// Why the distribution plugin could not start.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum DistributionError {
    /// A configuration value (from the builder or the environment) is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The mesh could not start.
    #[error("the mesh could not start: {0}")]
    Mesh(Arc<MeshError>),
    /// Discovery could not start.
    #[error("discovery could not start: {0}")]
    Discovery(Arc<std::io::Error>),
    /// `configure` ran outside a tokio runtime, so the plugin could not start.
    #[error("Distribution was configured outside a tokio runtime; use Distribution::start")]
    NoRuntime,
    /// [`Distribution::ready`] was called on an App without the plugin.
    #[error("the Distribution plugin is not configured on this app")]
    NotConfigured,
}

/// The distribution plugin and its options. See the [module docs](self).
pub struct Distribution {
    pub(crate) services: ServiceFilter,
    pub(crate) remote_services: ServiceFilter,
    pub(crate) remote_service_path: Option<PathRename>,
    pub(crate) remote_service_options: Option<OptionKeys>,
    pub(crate) hooks: Vec<ProxyHooks>,
    pub(crate) middlewares: Vec<RestLayer>,
    pub(crate) timeout: Duration,
    pub(crate) grace: Duration,
    pub(crate) distributed_events: NameFilter,
    pub(crate) publish_events: bool,
    pub(crate) distributed_methods: NameFilter,
    pub(crate) idempotent_methods: Vec<String>,
    pub(crate) forward_extras: Vec<String>,
    /// Local paths of remote services mounted partitioned, with the data field that keys a
    /// `create`.
    pub(crate) partitioned: Vec<(String, String)>,
    pub(crate) key: String,
    pub(crate) environment: String,
    pub(crate) healthcheck_path: String,
    /// Mount the mesh monitor ([`Distribution::monitor`]).
    pub(crate) monitor: bool,
    discovery: DiscoveryConfig,
    heartbeat: Option<Duration>,
    node_timeout: Option<Duration>,
    mesh_secret: Option<Option<Arc<[u8]>>>,
    listen: SocketAddr,
    advertise: Option<SocketAddr>,
    /// `PLUME_MESH_INSECURE=1`: see [`MeshBuilder::insecure`].
    insecure: bool,
    customize: Option<Box<dyn FnOnce(MeshBuilder) -> MeshBuilder + Send + Sync>>,
}

impl fmt::Debug for Distribution {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Distribution")
            .field("services", &self.services)
            .field("remote_services", &self.remote_services)
            .field("timeout", &self.timeout)
            .field("grace", &self.grace)
            .field("distributed_events", &self.distributed_events)
            .field("publish_events", &self.publish_events)
            .field("distributed_methods", &self.distributed_methods)
            .field("key", &self.key)
            .field("environment", &self.environment)
            .field("healthcheck_path", &self.healthcheck_path)
            .field("discovery", &self.discovery)
            .finish_non_exhaustive()
    }
}

impl Default for Distribution {
    fn default() -> Self {
        Self::new()
    }
}

fn invalid(var: &'static str, value: &str, reason: &str) -> ConfigError {
    ConfigError::Invalid {
        var,
        value: value.to_owned(),
        reason: reason.to_owned(),
    }
}

fn parse_ms(var: &'static str, value: Option<String>) -> Result<Option<Duration>, ConfigError> {
    let Some(v) = value else { return Ok(None) };
    match v.trim().parse::<u64>() {
        Ok(0) => Err(invalid(var, &v, "must be positive")),
        Ok(ms) => Ok(Some(Duration::from_millis(ms))),
        Err(_) => Err(invalid(var, &v, "expected a whole number of milliseconds")),
    }
}

fn parse_addr(var: &'static str, value: Option<String>) -> Result<Option<SocketAddr>, ConfigError> {
    let Some(v) = value else { return Ok(None) };
    v.trim()
        .parse()
        .map(Some)
        .map_err(|_| invalid(var, &v, "expected ip:port"))
}

fn parse_name(var: &'static str, value: Option<String>) -> Result<Option<String>, ConfigError> {
    let Some(v) = value else { return Ok(None) };
    if v.trim().is_empty() {
        return Err(invalid(var, &v, "empty"));
    }
    if v.len() > 255 {
        return Err(invalid(var, &v, "longer than 255 bytes"));
    }
    Ok(Some(v))
}

impl Distribution {
    /// The plugin with every default: publish every local service, consume every remote one,
    /// key and environment `default`, loopback discovery, 10 s timeout, 30 s grace.
    pub fn new() -> Self {
        Self {
            services: ServiceFilter::All,
            remote_services: ServiceFilter::All,
            remote_service_path: None,
            remote_service_options: None,
            hooks: Vec::new(),
            middlewares: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
            grace: DEFAULT_GRACE,
            distributed_events: NameFilter::All,
            publish_events: true,
            distributed_methods: NameFilter::All,
            idempotent_methods: Vec::new(),
            forward_extras: Vec::new(),
            partitioned: Vec::new(),
            key: DEFAULT_KEY.to_owned(),
            environment: DEFAULT_ENVIRONMENT.to_owned(),
            healthcheck_path: DEFAULT_HEALTHCHECK_PATH.to_owned(),
            monitor: true,
            discovery: DiscoveryConfig::default(),
            heartbeat: None,
            node_timeout: None,
            mesh_secret: None,
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            advertise: None,
            insecure: false,
            customize: None,
        }
    }

    /// The plugin configured from the process environment: `PLUME_ENV`, `PLUME_KEY`, the
    /// discovery variables (`PLUME_DISCOVERY`, ..., `PLUME_MESH_SECRET`, `PLUME_HEARTBEAT_MS`,
    /// `PLUME_NODE_TIMEOUT_MS`), `PLUME_LISTEN`, `PLUME_ADVERTISE` and `PLUME_TIMEOUT_MS`.
    /// Unset variables keep their defaults; an invalid value is an error naming the variable.
    pub fn from_env() -> Result<Self, DistributionError> {
        Self::from_lookup(|k| std::env::var_os(k).map(|v| v.to_string_lossy().into_owned()))
    }

    /// Like [`from_env`](Self::from_env), reading variables through `get`.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, DistributionError> {
        let discovery = DiscoveryConfig::from_lookup(&get)?;
        let mut d = Self::new();
        if let Some(env) = parse_name("PLUME_ENV", get("PLUME_ENV"))? {
            d.environment = env;
        }
        if let Some(key) = parse_name("PLUME_KEY", get("PLUME_KEY"))? {
            d.key = key;
        }
        if let Some(listen) = parse_addr("PLUME_LISTEN", get("PLUME_LISTEN"))? {
            d.listen = listen;
        }
        d.advertise = parse_addr("PLUME_ADVERTISE", get("PLUME_ADVERTISE"))?;
        if let Some(t) = parse_ms("PLUME_TIMEOUT_MS", get("PLUME_TIMEOUT_MS"))? {
            d.timeout = t;
        }
        d.mesh_secret = Some(discovery.secret.clone());
        d.discovery = discovery;
        d.insecure = get("PLUME_MESH_INSECURE").is_some_and(|v| v == "1");
        Ok(d)
    }

    /// Which local services to publish (default: all). Enforced by the responder too: a path
    /// that is not published is refused, whatever a peer sends.
    #[must_use]
    pub fn services(mut self, filter: impl Into<ServiceFilter>) -> Self {
        self.services = filter.into();
        self
    }

    /// Which remote services to consume (default: all).
    #[must_use]
    pub fn remote_services(mut self, filter: impl Into<ServiceFilter>) -> Self {
        self.remote_services = filter.into();
        self
    }

    /// The local path of a remote service (default: the same path).
    #[must_use]
    pub fn remote_service_path(
        mut self,
        rename: impl Fn(&ServiceDescriptor) -> String + Send + Sync + 'static,
    ) -> Self {
        self.remote_service_path = Some(Arc::new(rename));
        self
    }

    /// Which keys of a local service's [`options`](plume::Service::options) travel with its
    /// descriptor; the proxy's `options()` returns them. Given the local path.
    #[must_use]
    pub fn remote_service_options(
        mut self,
        keys: impl Fn(&str) -> Vec<String> + Send + Sync + 'static,
    ) -> Self {
        self.remote_service_options = Some(Arc::new(keys));
        self
    }

    /// Hooks added to every proxy, e.g. `|h| { h.before(authenticate("jwt")); }`. They are in
    /// place before the proxy answers its first call.
    #[must_use]
    pub fn hooks(mut self, add: impl Fn(&HookRegistry) + Send + Sync + 'static) -> Self {
        self.hooks.push(Arc::new(add));
        self
    }

    /// A tower layer around every proxy's REST routes (the first added is the outermost). Any
    /// layer [`RestLayer::new`] accepts fits, e.g. `axum::middleware::from_fn(..)`.
    #[must_use]
    pub fn middleware<L>(mut self, layer: L) -> Self
    where
        L: Layer<RestService> + Send + Sync + 'static,
        L::Service: tower::Service<
                axum::extract::Request,
                Response = axum::response::Response,
                Error = Infallible,
            > + Clone
            + Send
            + Sync
            + 'static,
        <L::Service as tower::Service<axum::extract::Request>>::Future: Send + 'static,
    {
        self.middlewares.push(RestLayer::new(layer));
        self
    }

    /// The request deadline (default 10 s). Per call: `params.extra["timeout"]` in ms.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How long a proxy whose last provider left keeps answering 503 before it is removed
    /// (default 30 s).
    #[must_use]
    pub fn grace_period(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// Which events travel (default: every event a service declares). Applies to what this
    /// node publishes and to what it subscribes to.
    #[must_use]
    pub fn distributed_events(mut self, filter: impl Into<NameFilter>) -> Self {
        self.distributed_events = filter.into();
        self
    }

    /// The off switch for publishing this node's events (default on).
    #[must_use]
    pub fn publish_events(mut self, on: bool) -> Self {
        self.publish_events = on;
        self
    }

    /// Which custom methods travel (default: every custom method a service exposes). A
    /// custom method that does not travel answers MethodNotAllowed at once, on the proxy and
    /// on the provider.
    #[must_use]
    pub fn distributed_methods(mut self, filter: impl Into<NameFilter>) -> Self {
        self.distributed_methods = filter.into();
        self
    }

    /// Custom methods that are safe to run twice: they are retried on another provider when a
    /// link dies (find, get and update always are).
    #[must_use]
    pub fn idempotent_methods<I, S>(mut self, methods: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.idempotent_methods = methods.into_iter().map(Into::into).collect();
        self
    }

    /// Keys of `params.extra` that cross the mesh with a call (default: none).
    #[must_use]
    pub fn forward_extras<I, S>(mut self, keys: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.forward_extras = keys.into_iter().map(Into::into).collect();
        self
    }

    /// Mount the remote service at local `path` partitioned: each replica holds its own
    /// records, and the proxy routes by id with rendezvous hashing over the live replicas
    /// (see `Mesh::to(..).key(..)`). `get`, `update`, `patch` and `remove` with an id go to
    /// the replica that owns the id; `create` goes to the owner of the value of `create_key`
    /// in the data (use the id field, e.g. `"id"`, so that a record lives where its id is
    /// routed; data without it goes to any replica); `find`, and `patch`/`remove` without an
    /// id, ask every replica, and `find` merges their pages (`$sort`, `$skip`, `$limit` and
    /// `total` right over the union, as long as `$skip + $limit` stays within the replicas'
    /// `paginate.max`).
    ///
    /// ```
    /// use plume_transport::distribution::Distribution;
    /// let d = Distribution::new().partitioned("todos", "id");
    /// ```
    #[must_use]
    pub fn partitioned(mut self, path: &str, create_key: &str) -> Self {
        let path = plume::normalize_path(path);
        self.partitioned.retain(|(p, _)| *p != path);
        self.partitioned.push((path, create_key.to_owned()));
        self
    }

    /// This node's key: its replica group (default `default`).
    #[must_use]
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.key = key.into();
        self
    }

    /// The environment: nodes of other environments are invisible (default `default`).
    #[must_use]
    pub fn environment(mut self, environment: impl Into<String>) -> Self {
        self.environment = environment.into();
        self
    }

    /// The healthcheck service path (default `distribution/healthcheck`).
    #[must_use]
    pub fn healthcheck_path(mut self, path: &str) -> Self {
        self.healthcheck_path = plume::normalize_path(path);
        self
    }

    /// The discovery heartbeat (default 1 s).
    #[must_use]
    pub fn heartbeat(mut self, every: Duration) -> Self {
        self.heartbeat = Some(every);
        self
    }

    /// How long a silent node stays alive (default 3 s).
    #[must_use]
    pub fn node_timeout(mut self, after: Duration) -> Self {
        self.node_timeout = Some(after);
        self
    }

    /// The discovery mode and settings (default loopback). `heartbeat` and `node_timeout`,
    /// when set, override the ones in `config`.
    #[must_use]
    pub fn discovery(mut self, config: DiscoveryConfig) -> Self {
        self.discovery = config;
        self
    }

    /// The mesh secret (default: `PLUME_MESH_SECRET` when set). Signs beacons and
    /// authenticates links.
    #[must_use]
    pub fn mesh_secret<S: AsRef<[u8]>>(mut self, secret: Option<S>) -> Self {
        self.mesh_secret = Some(secret.map(|s| Arc::from(s.as_ref().to_vec().into_boxed_slice())));
        self
    }

    /// The TCP address the mesh listens on (default `127.0.0.1:0`).
    #[must_use]
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listen = addr;
        self
    }

    /// The address peers should dial, when it differs from the listen address (behind NAT or in
    /// a container). Default: the bound listen address.
    #[must_use]
    pub fn advertise(mut self, addr: SocketAddr) -> Self {
        self.advertise = Some(addr);
        self
    }

    /// Adjust the mesh builder after the plugin applied its options (for example static peers
    /// in tests, or the balancing strategy).
    #[must_use]
    pub fn customize_mesh(
        mut self,
        f: impl FnOnce(MeshBuilder) -> MeshBuilder + Send + Sync + 'static,
    ) -> Self {
        self.customize = Some(Box::new(f));
        self
    }

    /// Start the mesh, publish the app's services, mount proxies as remote services appear,
    /// and mount the healthcheck service. The app's `shutdown()` stops it too.
    pub async fn start(mut self, app: &App) -> Result<DistributionHandle, DistributionError> {
        let mut discovery = self.discovery.clone();
        if let Some(h) = self.heartbeat {
            discovery.heartbeat = h;
        }
        if let Some(t) = self.node_timeout {
            discovery.node_timeout = t;
        }
        if let Some(secret) = &self.mesh_secret {
            discovery.secret.clone_from(secret);
        }
        discovery.validate()?;
        // The plugin runs discovery itself and feeds the mesh through its peer channel, so that
        // the table watcher exists before any peer can learn of this node: nothing is missed.
        let (peer_tx, peer_rx) = mpsc::channel(PEER_EVENTS);
        let on_nats = matches!(discovery.mode, DiscoveryMode::Nats { .. });
        let mut builder = Mesh::builder()
            .environment(self.environment.clone())
            .key(self.key.clone())
            .listen(self.listen)
            .timeout(self.timeout)
            .insecure(self.insecure)
            .secret(discovery.secret.clone());
        builder = if on_nats {
            // On NATS the mesh runs discovery itself; the table watcher starts with a
            // snapshot, so what it learns before the watcher exists is not missed.
            builder.discovery(discovery.clone())
        } else {
            builder.peers(peer_rx)
        };
        if let Some(f) = self.customize.take() {
            builder = f(builder);
        }
        let mesh = builder
            .start()
            .await
            .map_err(|e| DistributionError::Mesh(Arc::new(e)))?;
        if on_nats {
            let shared = Shared::start(app.clone(), mesh, self);
            let handle = DistributionHandle { shared };
            app.insert_extension(handle.clone());
            let on_stop = handle.clone();
            app.on_shutdown(move || Box::pin(async move { on_stop.shutdown().await }));
            return Ok(handle);
        }
        let info = mesh.peer_info();
        let local = LocalNode {
            node: info.node,
            environment: self.environment.clone(),
            key: self.key.clone(),
            addr: self.advertise.unwrap_or(info.addr),
        };
        let shared = Shared::start(app.clone(), mesh, self);
        let (agent, mut events) = match Discovery::start(discovery, local).await {
            Ok(started) => started,
            Err(e) => {
                shared.shutdown().await;
                return Err(DistributionError::Discovery(Arc::new(e)));
            }
        };
        tokio::spawn(async move {
            while let Some(ev) = events.recv().await {
                if peer_tx.send(ev).await.is_err() {
                    break;
                }
            }
        });
        shared.set_discovery(agent);
        let handle = DistributionHandle { shared };
        app.insert_extension(handle.clone());
        let on_stop = handle.clone();
        app.on_shutdown(move || Box::pin(async move { on_stop.shutdown().await }));
        Ok(handle)
    }

    /// Wait for a plugin added with `app.configure(...)` to start; its handle or the error.
    pub async fn ready(app: &App) -> Result<DistributionHandle, DistributionError> {
        let Some(pending) = app.extension::<Pending>() else {
            return Err(DistributionError::NotConfigured);
        };
        let mut rx = pending.0.clone();
        let outcome = rx
            .wait_for(Option::is_some)
            .await
            .map_err(|_| DistributionError::NotConfigured)?;
        match &*outcome {
            Some(r) => r.clone(),
            None => Err(DistributionError::NotConfigured),
        }
    }
}

/// The outcome of a start spawned by `configure`.
struct Pending(watch::Receiver<Option<Result<DistributionHandle, DistributionError>>>);

impl Plugin for Distribution {
    /// Spawn [`Distribution::start`] on the current tokio runtime. A failed start is the error
    /// of `app.setup()`, `app.listen(..)` and `app.serve(..)` (the plugin registers its wait
    /// with `App::on_setup`); [`Distribution::ready`] or `app.distribution()`
    /// ([`AppDistributionExt`]) waits for the handle.
    fn configure(self, app: &App) {
        let (tx, rx) = watch::channel(None);
        app.on_setup(app_ext::setup_task(rx.clone()));
        app.insert_extension(Pending(rx));
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                let app = app.clone();
                rt.spawn(async move {
                    let outcome = self.start(&app).await;
                    if let Err(e) = &outcome {
                        tracing::error!(target: "plume::distribution", error = %e, "distribution failed to start");
                    }
                    let _ = tx.send(Some(outcome));
                });
            }
            Err(_) => {
                tracing::error!(target: "plume::distribution", "Distribution configured outside a tokio runtime");
                let _ = tx.send(Some(Err(DistributionError::NoRuntime)));
            }
        }
    }
}
