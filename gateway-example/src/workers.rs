//! `gateway-example workers`: a member of the instance set `workers` (plume-instances) on the
//! loopback mesh, with configurations `1..=N`. Each instance running here prints
//! `start CFG NAME UNIX_MS`, then `tick CFG NAME UNIX_MS` every 100 ms, then
//! `stop CFG NAME UNIX_MS` once it has stopped (no tick follows). A small JSON API on 127.0.0.1
//! shows what this node knows (`GET /instances`) and makes an instance fail its next health
//! check (`POST /instances/{id}/sick`).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use plume_instances::{InstanceConfig, InstanceManager, InstanceSet, Settings};
use serde_json::{Value, json};
use tokio::task::JoinHandle;

/// The set's name on the mesh.
pub(crate) const SET: &str = "workers";
/// How often a running instance ticks.
const TICK: Duration = Duration::from_millis(100);

fn unix_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

/// The example's instances: a task that ticks.
struct Workers {
    name: String,
    configs: u32,
    /// Configurations whose next health check fails.
    sick: Arc<Mutex<HashSet<String>>>,
    /// No `tick` lines.
    quiet: bool,
}

/// One running instance.
struct Worker {
    id: String,
    task: JoinHandle<()>,
}

#[async_trait::async_trait]
impl InstanceSet for Workers {
    type Instance = Worker;

    async fn get_config(&self) -> Result<Vec<InstanceConfig>, plume::Error> {
        Ok((1..=self.configs)
            .map(|i| InstanceConfig::new(i.to_string(), json!({ "n": i })))
            .collect())
    }

    async fn create_instance(
        &self,
        config: &InstanceConfig,
        fencing: u64,
    ) -> Result<Worker, plume::Error> {
        let (id, name, quiet) = (config.id.clone(), self.name.clone(), self.quiet);
        crate::say(&format!(
            "start {id} {name} {} fencing {fencing}",
            unix_ms()
        ));
        let task = tokio::spawn({
            let id = id.clone();
            async move {
                let mut every = tokio::time::interval(TICK);
                loop {
                    every.tick().await;
                    if !quiet {
                        crate::say(&format!("tick {id} {name} {}", unix_ms()));
                    }
                }
            }
        });
        Ok(Worker { id, task })
    }

    async fn healthcheck_instance(&self, worker: &Worker) -> Result<(), plume::Error> {
        let sick = self
            .sick
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&worker.id);
        if sick || worker.task.is_finished() {
            return Err(plume::Error::unavailable(format!(
                "worker {} is sick",
                worker.id
            )));
        }
        Ok(())
    }

    async fn disconnect_instance(&self, worker: Worker) {
        worker.task.abort();
        // Wait until it has really stopped: no tick may follow the stop line.
        let _ = worker.task.await;
        crate::say(&format!("stop {} {} {}", worker.id, self.name, unix_ms()));
    }
}

#[derive(Clone)]
struct Api {
    manager: Arc<InstanceManager>,
    sick: Arc<Mutex<HashSet<String>>>,
}

fn json_body(value: &Value) -> impl IntoResponse + use<> {
    ([(CONTENT_TYPE, "application/json")], value.to_string())
}

async fn status(State(api): State<Api>) -> impl IntoResponse {
    json_body(&json!(api.manager.status()))
}

async fn make_sick(State(api): State<Api>, Path(id): Path<String>) -> impl IntoResponse {
    let running = api.manager.status().running.contains_key(&id);
    if running {
        api.sick
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id.clone());
    }
    json_body(&json!({ "id": id, "running": running }))
}

/// Run the worker node `name` with configurations `1..=configs`, its JSON API on `http`, until
/// `stop` resolves; then every instance here is stopped (a `stop` line each).
pub(crate) async fn run(
    name: &str,
    configs: u32,
    min_members: usize,
    quiet: bool,
    http: SocketAddr,
    stop: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let mesh = crate::echo_node::join_mesh("workers", Duration::from_secs(2)).await?;
    let sick = Arc::new(Mutex::new(HashSet::new()));
    let set = Workers {
        name: name.to_owned(),
        configs,
        sick: Arc::clone(&sick),
        quiet,
    };
    let settings = Settings {
        min_members,
        ..Settings::default()
    };
    let manager = Arc::new(plume_instances::mesh::register(&mesh, SET, set, settings)?);
    let listener = tokio::net::TcpListener::bind(http)
        .await
        .with_context(|| format!("binding {http}"))?;
    let addr = listener.local_addr()?;
    let router = Router::new()
        .route("/instances", get(status))
        .route("/instances/{id}/sick", post(make_sick))
        .with_state(Api {
            manager: Arc::clone(&manager),
            sick,
        });
    crate::say(&format!(
        "workers {name} ready on http://{addr} node {}",
        manager.node()
    ));
    let served = axum::serve(listener, router)
        .with_graceful_shutdown(stop)
        .await;
    manager.shutdown().await;
    mesh.shutdown().await;
    served.context("serving HTTP")
}
