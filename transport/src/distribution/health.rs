//! The healthcheck service: `find` checks the local key (every proxy), `get(key)` one key.

use std::sync::Weak;
use std::time::{Duration, Instant};

use plume::{Error, Id, Params, Result, Service, async_trait};
use serde_json::{Map, Value, json};

use super::runtime::{Shared, no_app};
use super::wire::{HEALTH_METHOD, endpoint};
use crate::mesh::CallOptions;

/// `GET {healthcheck_path}` → `find`; `GET {healthcheck_path}/{key}` → `get(key)`.
pub(crate) struct Health {
    pub(crate) shared: Weak<Shared>,
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
        let Some(shared) = self.shared.upgrade() else {
            return Err(Error::unavailable("the distribution plugin has stopped"));
        };
        let Some(targets) = shared.health_targets(key) else {
            return Err(no_app(key));
        };
        let timeout = shared.opts.timeout;
        let mesh = shared.mesh.clone();
        drop(shared);
        let checks = targets.into_iter().map(|t| {
            let mesh = mesh.clone();
            async move {
                let name = endpoint(&t.remote_path);
                let pings = t.replicas.iter().map(|(node, key)| {
                    let (mesh, name) = (mesh.clone(), name.clone());
                    async move {
                        let started = Instant::now();
                        let outcome = mesh
                            .call_on(
                                *node,
                                &name,
                                Some(HEALTH_METHOD),
                                Value::Null,
                                CallOptions {
                                    timeout: Some(timeout),
                                    idempotent: true,
                                },
                            )
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
        let key = match self.shared.upgrade() {
            Some(s) => s.opts.key.clone(),
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
