//! The `App`: services by path, hooks, events, settings and plugins.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, RwLock, Weak};

use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::events::{ListenerId, Listeners, ServiceEvent};
use crate::forward::Forward;
use crate::handle::{ServiceEntry, ServiceHandle};
use crate::hooks::{BoxFuture, HookRegistry};
use crate::registry;
use crate::routes::ServiceTable;
use crate::service::{Service, ServiceOptions};
use crate::sync;

/// A plugin: anything that configures an App. Closures `FnOnce(&App)` are plugins.
pub trait Plugin {
    /// Configure the app.
    fn configure(self, app: &App);
}

impl<F: FnOnce(&App)> Plugin for F {
    fn configure(self, app: &App) {
        self(app)
    }
}

type ServiceCallback = Arc<dyn Fn(&ServiceHandle) + Send + Sync>;
type ShutdownTask = Box<dyn FnOnce() -> BoxFuture<'static, ()> + Send>;
type SetupTask = Box<dyn FnOnce() -> BoxFuture<'static, Result<()>> + Send>;

struct AppInner {
    services: RwLock<ServiceTable>,
    hooks: HookRegistry,
    listeners: Listeners,
    settings: RwLock<Map<String, Value>>,
    /// Read on every call (the auth service, the REST layers...): `TypeId`s are hashes of
    /// our own types, so a fixed-seed foldhash, not SipHash.
    extensions: RwLock<HashMap<TypeId, Arc<dyn Any + Send + Sync>, foldhash::fast::FixedState>>,
    on_added: RwLock<Vec<ServiceCallback>>,
    on_removed: RwLock<Vec<ServiceCallback>>,
    on_shutdown: Mutex<Vec<ShutdownTask>>,
    on_setup: Mutex<Vec<SetupTask>>,
    /// The error of a failed setup, which every later `setup` returns too.
    setup_failed: Mutex<Option<Error>>,
}

/// An application: services by path, hooks, events, settings and plugins.
///
/// `App` is a cheap handle (an `Arc` inside): clone it freely.
///
/// ```
/// use plume::{async_trait, App, Params, Result, Service};
/// use serde_json::{json, Value};
///
/// struct Greeter;
///
/// #[async_trait]
/// impl Service for Greeter {
///     async fn get(&self, id: plume::Id, _params: Params) -> Result<Value> {
///         Ok(json!({ "id": id, "text": format!("hello {id}") }))
///     }
/// }
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let app = App::new();
/// app.use_service("/greetings/", Greeter);
/// let hello = app.service("greetings").unwrap().get("world", Params::new()).await?;
/// assert_eq!(hello["text"], "hello world");
/// # Ok::<_, plume::Error>(())
/// # }).unwrap();
/// ```
#[derive(Clone)]
pub struct App {
    inner: Arc<AppInner>,
}

impl fmt::Debug for App {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("App")
            .field("services", &self.services())
            .finish_non_exhaustive()
    }
}

impl Default for App {
    fn default() -> Self {
        Self::new()
    }
}

/// Normalize a service path: no leading, trailing or doubled slashes.
///
/// ```
/// assert_eq!(plume::normalize_path("/users//:id/messages/"), "users/:id/messages");
/// ```
pub fn normalize_path(path: &str) -> String {
    path.split('/')
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join("/")
}

/// The result of resolving a request path against the live service table.
#[derive(Debug, Clone)]
pub struct Lookup {
    /// The service.
    pub handle: ServiceHandle,
    /// Values of the route placeholders.
    pub route: Map<String, Value>,
    /// The id segment after the service path, if any (still percent-decoded text).
    pub id: Option<String>,
}

impl App {
    /// An empty App.
    pub fn new() -> Self {
        Self {
            inner: Arc::new(AppInner {
                services: RwLock::new(ServiceTable::default()),
                hooks: HookRegistry::default(),
                listeners: Listeners::default(),
                settings: RwLock::new(Map::new()),
                extensions: RwLock::new(HashMap::default()),
                on_added: RwLock::new(Vec::new()),
                on_removed: RwLock::new(Vec::new()),
                on_shutdown: Mutex::new(Vec::new()),
                on_setup: Mutex::new(Vec::new()),
                setup_failed: Mutex::new(None),
            }),
        }
    }

    /// An App with every `#[service(path = ...)]` of this binary mounted.
    pub fn with_registered() -> Self {
        let app = Self::new();
        app.use_registered();
        app
    }

    /// Mount a service at `path` with default options. A service already at that path is
    /// replaced (and `on_service_removed` fires for it first).
    pub fn use_service(&self, path: &str, service: impl Service) -> ServiceHandle {
        self.use_service_with(path, service, ServiceOptions::default())
    }

    /// Mount a service at `path` with options.
    pub fn use_service_with(
        &self,
        path: &str,
        service: impl Service,
        options: ServiceOptions,
    ) -> ServiceHandle {
        self.use_arc(path, Arc::new(service), options)
    }

    /// Mount a forwarding service (a proxy): calls reach it with borrowed arguments through
    /// [`Forward`](crate::Forward). For `plume-transport`'s distribution plugin; not a public API.
    #[doc(hidden)]
    pub fn use_forwarding<S: Forward>(
        &self,
        path: &str,
        service: Arc<S>,
        options: ServiceOptions,
    ) -> ServiceHandle {
        let forward: Arc<dyn Forward> = service.clone();
        self.mount(path, service, Some(forward), options)
    }

    /// Mount a boxed or shared service.
    pub fn use_arc(
        &self,
        path: &str,
        service: Arc<dyn Service>,
        options: ServiceOptions,
    ) -> ServiceHandle {
        self.mount(path, service, None, options)
    }

    fn mount(
        &self,
        path: &str,
        service: Arc<dyn Service>,
        forward: Option<Arc<dyn Forward>>,
        options: ServiceOptions,
    ) -> ServiceHandle {
        let path = normalize_path(path);
        let entry = Arc::new(ServiceEntry::new(path.clone(), service, forward, options));
        let previous = self.write_services().insert(entry.clone());
        if let Some(previous) = previous {
            self.fire(
                &self.inner.on_removed,
                &ServiceHandle::new(self.clone(), previous),
            );
        }
        let handle = ServiceHandle::new(self.clone(), entry);
        tracing::debug!(target: "plume::app", path = %path, "service mounted");
        self.fire(&self.inner.on_added, &handle);
        handle
    }

    /// Mount every `#[service(path = ...)]` linked into this binary; returns their paths.
    /// A path that already has a service keeps it.
    pub fn use_registered(&self) -> Vec<String> {
        let mut mounted = Vec::new();
        for reg in registry::registered() {
            let path = normalize_path(reg.path);
            if self.service(&path).is_some() {
                continue;
            }
            self.use_arc(&path, Arc::from((reg.make)()), ServiceOptions::default());
            mounted.push(path);
        }
        mounted
    }

    /// Unmount the service at `path`. Returns its handle, or `None` if there was none.
    pub fn unuse(&self, path: &str) -> Option<ServiceHandle> {
        let path = normalize_path(path);
        let entry = self.write_services().remove(&path)?;
        let handle = ServiceHandle::new(self.clone(), entry);
        tracing::debug!(target: "plume::app", path = %path, "service unmounted");
        self.fire(&self.inner.on_removed, &handle);
        Some(handle)
    }

    /// The service at `path` (normalized; placeholders as registered).
    pub fn service(&self, path: &str) -> Option<ServiceHandle> {
        let path = normalize_path(path);
        let entry = self.read_services().get(&path).cloned()?;
        Some(ServiceHandle::new(self.clone(), entry))
    }

    /// The service at `path`, or a NotFound error `Service '<path>' not found`.
    pub fn require(&self, path: &str) -> Result<ServiceHandle> {
        self.service(path).ok_or_else(|| {
            Error::not_found(format!("Service '{}' not found", normalize_path(path)))
        })
    }

    /// The paths of every mounted service, sorted.
    pub fn services(&self) -> Vec<String> {
        self.read_services().paths().cloned().collect()
    }

    /// Resolve a concrete request path (`users/5/messages/7`) to a service, its route
    /// placeholders and the trailing id. The longest matching service path wins, and a literal
    /// segment beats a placeholder (the first segment where two paths differ decides). The
    /// routes are radix trees (`matchit`) updated by every mount and unmount.
    pub fn lookup(&self, path: &str) -> Option<Lookup> {
        let resolved = self.read_services().resolve(path)?;
        Some(Lookup {
            handle: ServiceHandle::new(self.clone(), resolved.entry),
            route: resolved.route,
            id: resolved.id,
        })
    }

    /// The app-level hooks, which run for every service.
    pub fn hooks(&self) -> &HookRegistry {
        &self.inner.hooks
    }

    /// Listen to every event of every service (the app-wide event stream).
    pub fn on_event(&self, f: impl Fn(&ServiceEvent) + Send + Sync + 'static) -> ListenerId {
        self.inner.listeners.add(None, f)
    }

    /// Remove an app-wide listener.
    pub fn off_event(&self, id: ListenerId) -> bool {
        self.inner.listeners.remove(id)
    }

    pub(crate) fn emit_app_event(&self, event: &ServiceEvent) {
        self.inner.listeners.emit(event);
    }

    /// Call `f` whenever a service is mounted (proxies included).
    pub fn on_service_added(&self, f: impl Fn(&ServiceHandle) + Send + Sync + 'static) {
        sync::write(&self.inner.on_added).push(Arc::new(f));
    }

    /// Call `f` whenever a service is unmounted (proxies included).
    pub fn on_service_removed(&self, f: impl Fn(&ServiceHandle) + Send + Sync + 'static) {
        sync::write(&self.inner.on_removed).push(Arc::new(f));
    }

    fn fire(&self, list: &RwLock<Vec<ServiceCallback>>, handle: &ServiceHandle) {
        let callbacks: Vec<ServiceCallback> = sync::read(list).iter().cloned().collect();
        for cb in callbacks {
            cb(handle);
        }
    }

    /// Apply a plugin.
    pub fn configure(&self, plugin: impl Plugin) -> &Self {
        plugin.configure(self);
        self
    }

    /// Set a setting.
    pub fn set(&self, key: &str, value: impl Into<Value>) -> &Self {
        sync::write(&self.inner.settings).insert(key.into(), value.into());
        self
    }

    /// A setting.
    pub fn get(&self, key: &str) -> Option<Value> {
        sync::read(&self.inner.settings).get(key).cloned()
    }

    /// Store a typed extension (one per type), for plugins to share state through the App.
    pub fn insert_extension<T: Any + Send + Sync>(&self, value: T) -> Arc<T> {
        let value = Arc::new(value);
        sync::write(&self.inner.extensions).insert(TypeId::of::<T>(), value.clone());
        value
    }

    /// A typed extension stored with [`App::insert_extension`].
    pub fn extension<T: Any + Send + Sync>(&self) -> Option<Arc<T>> {
        let ext = sync::read(&self.inner.extensions)
            .get(&TypeId::of::<T>())?
            .clone();
        ext.downcast::<T>().ok()
    }

    /// The typed extension of type `T`, inserting `make()` first when there is none. The check
    /// and the insert happen under one lock, so concurrent callers share one value; `make` must
    /// not use the App's extensions (that lock is held while it runs).
    pub fn extension_or_insert_with<T: Any + Send + Sync>(
        &self,
        make: impl FnOnce() -> T,
    ) -> Arc<T> {
        let mut map = sync::write(&self.inner.extensions);
        if let Some(ext) = map.get(&TypeId::of::<T>()).cloned()
            && let Ok(value) = ext.downcast::<T>()
        {
            return value;
        }
        let value = Arc::new(make());
        map.insert(TypeId::of::<T>(), value.clone());
        value
    }

    /// Run `task` when the App is set up ([`setup`](App::setup), which `listen` and `serve`
    /// call before they serve). A plugin whose start is asynchronous (the distribution plugin,
    /// applied with [`configure`](App::configure)) registers its wait here, so that its error
    /// surfaces from `setup`, `listen` and `serve` instead of only in a log.
    pub fn on_setup<F>(&self, task: F)
    where
        F: FnOnce() -> BoxFuture<'static, Result<()>> + Send + 'static,
    {
        sync::lock(&self.inner.on_setup).push(Box::new(task));
    }

    /// Feathers' `app.setup()`: run the setup tasks of plugins, in the order they were
    /// registered, and return the first error. A task runs once; after a failure every later
    /// call returns the same error. [`listen`](App::listen) and [`serve`](App::serve) call it
    /// first and do not serve when it fails.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let app = plume::App::new();
    /// app.on_setup(|| Box::pin(async { Err(plume::Error::unavailable("no database")) }));
    /// assert_eq!(app.setup().await.unwrap_err().message(), "no database");
    /// assert_eq!(app.setup().await.unwrap_err().message(), "no database");
    /// # });
    /// ```
    pub async fn setup(&self) -> Result<()> {
        loop {
            if let Some(err) = sync::lock(&self.inner.setup_failed).clone() {
                return Err(err);
            }
            let task = {
                let mut tasks = sync::lock(&self.inner.on_setup);
                if tasks.is_empty() {
                    return Ok(());
                }
                tasks.remove(0)
            };
            if let Err(err) = task().await {
                *sync::lock(&self.inner.setup_failed) = Some(err.clone());
                return Err(err);
            }
        }
    }

    /// Run `task` when the app shuts down (tasks run in reverse order of registration).
    pub fn on_shutdown<F>(&self, task: F)
    where
        F: FnOnce() -> BoxFuture<'static, ()> + Send + 'static,
    {
        sync::lock(&self.inner.on_shutdown).push(Box::new(task));
    }

    /// Shut the app down: run the shutdown tasks of servers and plugins, last registered first.
    /// Calling it again does nothing.
    pub async fn shutdown(&self) {
        let tasks: Vec<ShutdownTask> = std::mem::take(&mut *sync::lock(&self.inner.on_shutdown));
        for task in tasks.into_iter().rev() {
            task().await;
        }
    }

    /// A weak handle on this App, for values the App itself holds (a service or an extension
    /// that needs the App would otherwise keep it alive forever).
    pub fn downgrade(&self) -> WeakApp {
        WeakApp {
            inner: Arc::downgrade(&self.inner),
        }
    }

    /// True when both handles point at the same App.
    pub fn ptr_eq(&self, other: &App) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    fn read_services(&self) -> std::sync::RwLockReadGuard<'_, ServiceTable> {
        sync::read(&self.inner.services)
    }

    fn write_services(&self) -> std::sync::RwLockWriteGuard<'_, ServiceTable> {
        sync::write(&self.inner.services)
    }
}

/// A weak handle on an [`App`], made by [`App::downgrade`].
#[derive(Clone)]
pub struct WeakApp {
    inner: Weak<AppInner>,
}

impl WeakApp {
    /// The App, if it still exists.
    pub fn upgrade(&self) -> Option<App> {
        self.inner.upgrade().map(|inner| App { inner })
    }
}

impl fmt::Debug for WeakApp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WeakApp")
            .field("alive", &(self.inner.strong_count() > 0))
            .finish()
    }
}
