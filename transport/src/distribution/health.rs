//! The healthcheck service: `find` checks the local key (every proxy), `get(key)` one key.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use plume::{App, Error, Id, Params, Result, Service, async_trait};
use serde_json::{Map, Value, json};

use super::wire::{HEALTH_METHOD, endpoint};
use crate::discovery::NodeId;
use crate::mesh::Mesh;

/// What the healthcheck sees of the running plugin.
pub(crate) trait HealthView: Send + Sync {
    /// The proxies the healthcheck of `key` covers, or `None` when no app has that key.
    fn targets(&self, key: &str) -> Option<Vec<HealthTarget>>;
    /// The mesh the pings go through.
    fn mesh(&self) -> Mesh;
    /// How long a ping may take.
    fn timeout(&self) -> Duration;
    /// The key of this node's app.
    fn key(&self) -> String;
    /// The extra sections of this node's verbose answer ([`HealthSections`]).
    fn sections(&self) -> Map<String, Value>;
}

type Section = Arc<dyn Fn() -> Value + Send + Sync>;

/// Extra sections of the verbose healthcheck of this node (`?verbose=true` on its own key):
/// other plugins report their state there, next to the proxies, without the healthcheck
/// knowing them (plume-instances adds `$instances`: which node runs which configuration).
/// An App extension: [`HealthSections::of`]. Informational: a section never makes the check
/// fail.
///
/// ```
/// use plume_transport::distribution::HealthSections;
/// let app = plume::App::new();
/// HealthSections::of(&app).set("$jobs", || serde_json::json!({ "queued": 0 }));
/// assert_eq!(HealthSections::of(&app).snapshot()["$jobs"]["queued"], 0);
/// ```
#[derive(Default)]
pub struct HealthSections {
    sections: Mutex<BTreeMap<String, Section>>,
}

impl std::fmt::Debug for HealthSections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.lock().keys()).finish()
    }
}

impl HealthSections {
    /// The sections of `app` (created when missing).
    pub fn of(app: &App) -> Arc<HealthSections> {
        app.extension_or_insert_with(HealthSections::default)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Section>> {
        self.sections.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Show `report()` under `key` in the verbose answer (replacing what was there). Start
    /// the key with `$` so that it cannot be mistaken for a service path.
    pub fn set(&self, key: &str, report: impl Fn() -> Value + Send + Sync + 'static) {
        self.lock().insert(key.to_owned(), Arc::new(report));
    }

    /// Stop showing `key`; whether it was there.
    pub fn remove(&self, key: &str) -> bool {
        self.lock().remove(key).is_some()
    }

    /// Every section, reported now.
    pub fn snapshot(&self) -> Map<String, Value> {
        let sections: Vec<(String, Section)> = self
            .lock()
            .iter()
            .map(|(k, f)| (k.clone(), Arc::clone(f)))
            .collect();
        sections.into_iter().map(|(k, f)| (k, f())).collect()
    }
}

/// One proxy the healthcheck pings, and the replicas to ping.
pub(crate) struct HealthTarget {
    pub(crate) remote_path: String,
    pub(crate) replicas: Vec<(NodeId, String)>,
}

/// `GET {healthcheck_path}` → `find`; `GET {healthcheck_path}/{key}` → `get(key)`.
pub(crate) struct Health {
    pub(crate) view: Weak<dyn HealthView>,
}

fn verbose(params: &Params) -> bool {
    match params.query.get("verbose") {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s == "true" || s == "1",
        _ => false,
    }
}

impl Health {
    async fn check(&self, key: &str, params: &Params) -> Result<Value> {
        let Some(view) = self.view.upgrade() else {
            return Err(Error::unavailable("the distribution plugin has stopped"));
        };
        let Some(targets) = view.targets(key) else {
            return Err(no_app(key));
        };
        let timeout = view.timeout();
        let mesh = view.mesh();
        let sections = if verbose(params) && key == view.key() {
            view.sections()
        } else {
            Map::new()
        };
        drop(view);
        let checks = targets.into_iter().map(|t| {
            let mesh = mesh.clone();
            async move {
                let name = endpoint(&t.remote_path);
                let pings = t.replicas.iter().map(|(node, key)| {
                    let (mesh, name) = (mesh.clone(), name.clone());
                    async move {
                        let started = Instant::now();
                        let outcome = mesh
                            .to(&name)
                            .on(*node)
                            .method(HEALTH_METHOD)
                            .timeout(timeout)
                            .idempotent(true)
                            .send(&Value::Null)
                            .await;
                        let latency = started.elapsed();
                        let ok = matches!(outcome, Ok(Value::Bool(true)));
                        let mut detail = json!({
                            "node": node.to_string(),
                            "key": key,
                            "ok": ok,
                            "latency_ms": ms(latency),
                        });
                        if let Err(e) = outcome {
                            detail["error"] = e.to_json();
                        }
                        (ok, detail)
                    }
                });
                let replicas = futures::future::join_all(pings).await;
                let ok = !replicas.is_empty() && replicas.iter().all(|(ok, _)| *ok);
                (
                    t.remote_path,
                    ok,
                    replicas.into_iter().map(|(_, d)| d).collect::<Vec<_>>(),
                )
            }
        });
        let results = futures::future::join_all(checks).await;
        let detailed = verbose(params);
        let mut all_ok = true;
        let mut map = Map::new();
        for (path, ok, replicas) in results {
            all_ok &= ok;
            let entry = if detailed {
                json!({ "ok": ok, "replicas": replicas })
            } else {
                Value::Bool(ok)
            };
            map.insert(path, entry);
        }
        map.extend(sections);
        if all_ok {
            Ok(Value::Object(map))
        } else {
            Err(Error::unavailable(format!(
                "Unavailable distributed service(s) for app with key {key}"
            ))
            .with_data(Value::Object(map)))
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[async_trait]
impl Service for Health {
    async fn find(&self, params: Params) -> Result<Value> {
        let key = match self.view.upgrade() {
            Some(v) => v.key(),
            None => return Err(Error::unavailable("the distribution plugin has stopped")),
        };
        self.check(&key, &params).await
    }

    async fn get(&self, id: Id, params: Params) -> Result<Value> {
        self.check(&id.to_string(), &params).await
    }

    fn methods(&self) -> Vec<plume::Method> {
        vec![plume::Method::Find, plume::Method::Get]
    }
}

/// The healthcheck's answer for a key no app has.
pub(crate) fn no_app(key: &str) -> Error {
    Error::not_found(format!("No app registered with key {key}"))
}
