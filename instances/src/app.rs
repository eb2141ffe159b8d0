//! Registering an instance set on a Plume [`App`]: the set takes part over the mesh of the
//! App's distribution plugin, stops with the App, and shows in the verbose healthcheck.
//!
//! ```no_run
//! # use plume_instances::{InstanceConfig, InstanceSet, Settings};
//! # struct Workers;
//! # #[async_trait::async_trait]
//! # impl InstanceSet for Workers {
//! #     type Instance = ();
//! #     async fn get_config(&self) -> Result<Vec<InstanceConfig>, plume::Error> { Ok(vec![]) }
//! #     async fn create_instance(&self, _: &InstanceConfig, _: u64) -> Result<(), plume::Error> { Ok(()) }
//! # }
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use plume_instances::app::{AppInstancesExt, Instances};
//! use plume_transport::distribution::Distribution;
//!
//! let app = plume::App::new();
//! app.configure(Distribution::from_env()?.key("workers"));
//! app.configure(Instances::new("workers", Workers).settings(Settings::default()));
//! app.setup().await?; // (`listen` and `serve` call it): the set starts once the mesh is up
//! let manager = app.instance_set("workers").expect("registered");
//! println!("{:?}", manager.status());
//! app.shutdown().await; // leaves the set (every instance here disconnected), then the mesh
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use plume::{App, Error, Plugin};
use plume_transport::distribution::{Distribution, DistributionHandle, HealthSections};
use serde_json::{Value, json};

use crate::node::LOG;
use crate::{InstanceManager, InstanceSet, Settings};

/// The key of the instance sets in the verbose healthcheck (`GET /healthcheck?verbose=true`):
/// set name → [`Status`](crate::Status).
pub const HEALTH_SECTION: &str = "$instances";

/// The plugin: `app.configure(Instances::new("workers", set))`. Every App (every replica) that
/// registers the same name in the same mesh environment takes part in the set.
///
/// The set joins the mesh of the App's distribution plugin: at once when it has already
/// started (`Distribution::start(&app)`), otherwise in `app.setup()` (which `listen` and
/// `serve` call), after the plugin has started. A failure (no distribution plugin, a bad name,
/// bad settings, the name registered twice on this App) is the error of `app.setup()`.
/// `app.shutdown()` leaves the set before the mesh stops.
pub struct Instances<S> {
    name: String,
    set: S,
    settings: Settings,
}

impl<S> std::fmt::Debug for Instances<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Instances")
            .field("name", &self.name)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl<S: InstanceSet> Instances<S> {
    /// The set `name` with the application's `set`, default [`Settings`].
    pub fn new(name: impl Into<String>, set: S) -> Instances<S> {
        Instances {
            name: name.into(),
            set,
            settings: Settings::default(),
        }
    }

    /// Other timings.
    #[must_use]
    pub fn settings(mut self, settings: Settings) -> Instances<S> {
        self.settings = settings;
        self
    }

    /// Join the set on `handle`'s mesh and record it on `app`.
    fn join(self, app: &App, handle: &DistributionHandle) -> Result<Arc<InstanceManager>, Error> {
        let registry = Registry::of(app);
        let mut sets = registry.lock();
        if sets.contains_key(&self.name) {
            return Err(Error::conflict(format!(
                "instance set {:?} is already registered on this App",
                self.name
            )));
        }
        let manager = crate::mesh::register(handle.mesh(), &self.name, self.set, self.settings)
            .map_err(|e| Error::bad_request(e.to_string()))?;
        let manager = Arc::new(manager);
        sets.insert(self.name.clone(), Arc::clone(&manager));
        drop(sets);
        let weak = Arc::downgrade(&registry);
        HealthSections::of(app).set(HEALTH_SECTION, move || {
            weak.upgrade().map_or(Value::Null, |r| r.report())
        });
        let (stopping, name, registry) = (Arc::clone(&manager), self.name, Arc::clone(&registry));
        app.on_shutdown(move || {
            Box::pin(async move {
                stopping.shutdown().await;
                registry.lock().remove(&name);
            })
        });
        tracing::debug!(target: LOG, node = %manager.node(), "instance set registered on the App");
        Ok(manager)
    }
}

impl<S: InstanceSet> Plugin for Instances<S> {
    fn configure(self, app: &App) {
        if tokio::runtime::Handle::try_current().is_err() {
            let name = self.name.clone();
            tracing::error!(target: LOG, %name, "instance set configured outside a tokio runtime");
            app.on_setup(move || {
                Box::pin(async move {
                    Err(Error::unavailable(format!(
                        "instance set {name:?} was configured outside a tokio runtime"
                    )))
                })
            });
            return;
        }
        if let Some(handle) = DistributionHandle::of(app) {
            if let Err(e) = self.join(app, &handle) {
                tracing::error!(target: LOG, error = %e, "instance set not registered");
                app.on_setup(move || Box::pin(async move { Err(e) }));
            }
            return;
        }
        let weak = app.downgrade();
        app.on_setup(move || {
            Box::pin(async move {
                let Some(app) = weak.upgrade() else {
                    return Err(Error::unavailable("the App is gone"));
                };
                let handle = Distribution::ready(&app).await.map_err(|e| {
                    Error::unavailable(format!(
                        "instance set {:?} needs the distribution plugin: {e}",
                        self.name
                    ))
                })?;
                self.join(&app, &handle).map(|_| ())
            })
        });
    }
}

/// The instance sets registered on one App.
#[derive(Default)]
struct Registry {
    sets: Mutex<BTreeMap<String, Arc<InstanceManager>>>,
}

impl Registry {
    fn of(app: &App) -> Arc<Registry> {
        app.extension_or_insert_with(Registry::default)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Arc<InstanceManager>>> {
        self.sets.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn report(&self) -> Value {
        let sets: Vec<(String, Arc<InstanceManager>)> = self
            .lock()
            .iter()
            .map(|(k, m)| (k.clone(), Arc::clone(m)))
            .collect();
        Value::Object(
            sets.into_iter()
                .map(|(name, m)| (name, json!(m.status())))
                .collect(),
        )
    }
}

/// The instance sets of an App.
pub trait AppInstancesExt {
    /// The running member of set `name` on this App.
    fn instance_set(&self, name: &str) -> Option<Arc<InstanceManager>>;
    /// The names of the sets running on this App.
    fn instance_sets(&self) -> Vec<String>;
}

impl AppInstancesExt for App {
    fn instance_set(&self, name: &str) -> Option<Arc<InstanceManager>> {
        self.extension::<Registry>()?.lock().get(name).cloned()
    }

    fn instance_sets(&self) -> Vec<String> {
        self.extension::<Registry>()
            .map(|r| r.lock().keys().cloned().collect())
            .unwrap_or_default()
    }
}
