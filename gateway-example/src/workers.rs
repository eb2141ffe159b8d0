//! `gateway-example workers`: a member of the instance set `workers` (plume-instances) on the
//! loopback mesh, with configurations `1..=N`. Each instance running here prints
//! `start CFG NAME UNIX_MS`, then `tick CFG NAME UNIX_MS` every 100 ms, then
//! `stop CFG NAME UNIX_MS` once it has stopped (no tick follows); the node prints
//! `leader NODE UNIX_MS` whenever the leader it follows changes. A small JSON API on 127.0.0.1
//! (or `--host`) shows what this node knows (`GET /instances`, and the verbose healthcheck)
//! and makes an instance fail its next health check (`POST /instances/{id}/sick`).

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
use plume::{App, WeakApp};
use plume_instances::app::{AppInstancesExt, Instances};
use plume_instances::kv::KvManager;
use plume_instances::{InstanceConfig, InstanceManager, InstanceSet, Settings};
use plume_transport::distribution::Distribution;
use serde_json::{Value, json};
use tokio::task::JoinHandle;

/// The set's name on the mesh.
pub(crate) const SET: &str = "workers";
/// How often a running instance ticks.
const TICK: Duration = Duration::from_millis(100);
/// How long connecting to NATS (`--nats`) may take.
const NATS_CONNECT: Duration = Duration::from_secs(10);

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
    app: WeakApp,
    /// The NATS JetStream KV backend's member, when the node runs on it (`--nats`).
    kv: Option<Arc<KvManager>>,
    sick: Arc<Mutex<HashSet<String>>>,
}

impl Api {
    fn manager(&self) -> Option<Arc<InstanceManager>> {
        self.app.upgrade()?.instance_set(SET)
    }

    /// What this node knows: the mesh member's status, or (KV) its node and what runs here.
    fn status(&self) -> Value {
        match &self.kv {
            Some(kv) => json!({
                "backend": "kv",
                "node": kv.node().to_string(),
                "running": kv.running(),
            }),
            None => json!(self.manager().map(|m| m.status())),
        }
    }

    fn runs(&self, id: &str) -> bool {
        match &self.kv {
            Some(kv) => kv.running().contains_key(id),
            None => self
                .manager()
                .is_some_and(|m| m.status().running.contains_key(id)),
        }
    }
}

fn json_body(value: &Value) -> impl IntoResponse + use<> {
    ([(CONTENT_TYPE, "application/json")], value.to_string())
}

async fn status(State(api): State<Api>) -> impl IntoResponse {
    json_body(&api.status())
}

async fn make_sick(State(api): State<Api>, Path(id): Path<String>) -> impl IntoResponse {
    let running = api.runs(&id);
    if running {
        api.sick
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id.clone());
    }
    json_body(&json!({ "id": id, "running": running }))
}

/// Print `leader NODE UNIX_MS` whenever the leader this node follows changes (`none` when it
/// follows nobody), checked every tick, until the manager is dropped.
fn print_leader_changes(manager: &Arc<InstanceManager>) {
    let weak = Arc::downgrade(manager);
    tokio::spawn(async move {
        let mut last: Option<Option<String>> = None;
        let mut every = tokio::time::interval(TICK);
        loop {
            every.tick().await;
            let Some(manager) = weak.upgrade() else {
                return;
            };
            let leader = manager.member().leader().map(|n| n.to_string());
            if last.as_ref() != Some(&leader) {
                let shown = leader.as_deref().unwrap_or("none");
                crate::say(&format!("leader {shown} {}", unix_ms()));
                last = Some(leader);
            }
        }
    });
}

/// Run the worker node `name` with configurations `1..=configs`, its JSON API on `http`, until
/// `stop` resolves; then every instance here is stopped (a `stop` line each).
///
/// An App with the distribution plugin (its mesh from the `PLUME_*` variables: environment,
/// discovery, `PLUME_LISTEN`, the mesh secret) and the instance set registered on it
/// ([`Instances`]); its REST server adds the healthcheck (`GET
/// /distribution/healthcheck?verbose=true` shows the set) to the JSON API.
///
/// With `nats` (a server URL), the set runs on the NATS JetStream key-value backend of that
/// server instead of the mesh (no distribution plugin; no `leader` lines).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn run(
    name: &str,
    configs: u32,
    min_members: usize,
    quiet: bool,
    nats: Option<&str>,
    http: SocketAddr,
    stop: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
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
    let app = App::new();
    let (kv, set) = match nats {
        Some(url) => {
            let client = tokio::time::timeout(NATS_CONNECT, async_nats::connect(url))
                .await
                .with_context(|| format!("connecting to {url}: timed out"))?
                .with_context(|| format!("connecting to {url}"))?;
            let kv = plume_instances::kv::register(client, SET, set, settings).await?;
            (Some(Arc::new(kv)), None)
        }
        None => (None, Some(set)),
    };
    let api = Api {
        app: app.downgrade(),
        kv: kv.clone(),
        sick,
    };
    app.add_routes(move |router| {
        router.merge(
            Router::new()
                .route("/instances", get(status))
                .route("/instances/{id}/sick", post(make_sick))
                .with_state(api.clone()),
        )
    });
    let Some(set) = set else {
        let Some(kv) = kv else {
            anyhow::bail!("neither backend started");
        };
        let server = app
            .listen(http)
            .await
            .with_context(|| format!("serving on {http}"))?;
        crate::say(&format!(
            "workers {name} ready on http://{} node {}",
            server.local_addr(),
            kv.node()
        ));
        stop.await;
        app.shutdown().await;
        kv.shutdown().await;
        return Ok(());
    };
    Distribution::from_env()?
        .key(SET)
        .services(false)
        .remote_services(false)
        .customize_mesh(|mesh| mesh.drain_timeout(Duration::from_secs(2)))
        .start(&app)
        .await
        .context("joining the mesh")?;
    app.configure(Instances::new(SET, set).settings(settings));
    let server = app
        .listen(http)
        .await
        .with_context(|| format!("serving on {http}"))?;
    let manager = app
        .instance_set(SET)
        .context("the instance set did not start")?;
    // The ready line first: the leader task prints at once, and the ready line must be the
    // first line a supervisor reads.
    crate::say(&format!(
        "workers {name} ready on http://{} node {}",
        server.local_addr(),
        manager.node()
    ));
    print_leader_changes(&manager);
    drop(manager);
    stop.await;
    // The server first, then the set (every instance here stopped), then the mesh.
    app.shutdown().await;
    Ok(())
}
