//! The running plugin's shared state: what it publishes, what it consumes and has mounted.
//! The work on it is split by job: [`publisher`](super::publisher), the
//! [`consumer`](super::consumer) state machine, [`mount`](super::mount), [`relay`](super::relay),
//! and the healthcheck's view of it ([`health`](super::health)).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use plume::{App, Method, Service, ServiceOptions};
use serde_json::Value;
use tokio::sync::{mpsc, watch};
use tokio::task::AbortHandle;

use super::Distribution;
use super::consumer::table_loop;
use super::health::{Health, HealthTarget, HealthView};
use super::proxy::ProxyState;
use super::wire::{ServiceDescriptor, WITHDRAWN_TOPIC, endpoint};
use crate::discovery::{Discovery, NodeId};
use crate::mesh::{Mesh, ProviderInfo};
use crate::sync::lock;

pub(super) const LOG: &str = "plume::distribution";

/// Paths waiting to be re-examined by the table task (a local service left a path a remote
/// service could take). Overflow only delays a mount until the next table event.
pub(super) const RECHECK_QUEUE: usize = 1024;

/// Services one peer may publish to this node: beyond them, its further paths are not mounted
/// (nor remembered), each refusal logged.
pub(super) const MAX_SERVICES_PER_PEER: usize = 1024;

/// At most this many early withdrawal notices are remembered.
pub(super) const MAX_WITHDRAWN: usize = 4096;

pub(super) fn same_service(a: &Arc<dyn Service>, b: &Arc<dyn Service>) -> bool {
    std::ptr::addr_eq(Arc::as_ptr(a), Arc::as_ptr(b))
}

/// One mounted proxy.
pub(super) struct Mounted {
    pub(super) service: Arc<dyn Service>,
    pub(super) state: Arc<ProxyState>,
    pub(super) signature: (Vec<String>, Vec<String>),
    pub(super) events_task: Option<AbortHandle>,
    pub(super) grace_task: Option<AbortHandle>,
}

impl Mounted {
    pub(super) fn stop_tasks(&mut self) {
        if let Some(t) = self.events_task.take() {
            t.abort();
        }
        if let Some(t) = self.grace_task.take() {
            t.abort();
        }
    }
}

/// A remote path this node consumes, by local path.
pub(super) struct Remote {
    pub(super) remote_path: String,
    pub(super) providers: BTreeMap<NodeId, (String, ServiceDescriptor)>,
    /// Keys of the providers seen most recently (kept through the grace period).
    pub(super) last_keys: BTreeSet<String>,
    pub(super) mounted: Option<Mounted>,
    pub(super) grace_epoch: u64,
}

#[derive(Default)]
pub(super) struct State {
    pub(super) published: HashMap<String, (Arc<dyn Service>, ServiceDescriptor)>,
    pub(super) remotes: HashMap<String, Remote>,
    pub(super) local_of: HashMap<String, String>,
    pub(super) nodes: HashMap<NodeId, (String, HashSet<String>)>,
    pub(super) withdrawn: HashSet<(NodeId, String)>,
}

/// What the table task decided under the lock, done after it.
pub(super) enum Action {
    None,
    Mount {
        local: String,
        descriptor: ServiceDescriptor,
    },
    Unmount {
        local: String,
        mounted: Mounted,
    },
    /// The last provider of `local` left: its grace period (epoch `epoch`) starts.
    StartGrace {
        local: String,
        epoch: u64,
    },
    /// Nothing to mount or unmount, but what the handle reports changed.
    Changed,
}

pub(crate) struct Shared {
    pub(crate) app: App,
    pub(crate) mesh: Mesh,
    pub(crate) opts: Distribution,
    pub(super) node: NodeId,
    pub(super) extras: Arc<[String]>,
    pub(super) state: Mutex<State>,
    pub(super) stopped: AtomicBool,
    pub(super) changed: watch::Sender<u64>,
    pub(super) recheck: mpsc::Sender<String>,
    pub(super) tasks: Mutex<Vec<AbortHandle>>,
    pub(super) discovery: Mutex<Option<Discovery>>,
}

impl Shared {
    pub(crate) fn start(app: App, mesh: Mesh, opts: Distribution) -> Arc<Self> {
        // Subscribe before anything else so no table change is missed.
        let watch_table = mesh.watch();
        let withdrawn = mesh.subscribe(WITHDRAWN_TOPIC);
        let (recheck, recheck_rx) = mpsc::channel(RECHECK_QUEUE);
        let shared = Arc::new(Self {
            node: mesh.node_id(),
            extras: opts.forward_extras.clone().into(),
            app: app.clone(),
            mesh,
            opts,
            state: Mutex::new(State::default()),
            stopped: AtomicBool::new(false),
            changed: watch::Sender::new(0),
            recheck,
            tasks: Mutex::new(Vec::new()),
            discovery: Mutex::new(None),
        });

        // The healthcheck service (never published: it is marked remote and filtered).
        app.use_service_with(
            &shared.opts.healthcheck_path,
            Health {
                view: {
                    let view: Arc<dyn HealthView> = shared.clone();
                    Arc::downgrade(&view)
                },
            },
            ServiceOptions::new().methods([Method::Find, Method::Get]),
        );
        // The mesh monitor: `distribution/mesh` and its page.
        super::monitor::mount(&app, &shared);

        let weak = Arc::downgrade(&shared);
        app.on_service_added(move |handle| {
            if let Some(s) = weak.upgrade() {
                s.local_added(handle);
            }
        });
        let weak = Arc::downgrade(&shared);
        app.on_service_removed(move |handle| {
            if let Some(s) = weak.upgrade() {
                s.service_removed(handle);
            }
        });
        let weak = Arc::downgrade(&shared);
        app.on_event(move |ev| {
            if let Some(s) = weak.upgrade() {
                s.relay_local_event(ev);
            }
        });
        for path in app.services() {
            if let Some(handle) = app.service(&path) {
                shared.local_added(&handle);
            }
        }
        let task = tokio::spawn(table_loop(
            Arc::downgrade(&shared),
            watch_table,
            withdrawn,
            recheck_rx,
        ));
        lock(&shared.tasks).push(task.abort_handle());
        shared
    }

    pub(crate) fn set_discovery(&self, agent: Discovery) {
        *lock(&self.discovery) = Some(agent);
    }

    pub(crate) fn changes(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    pub(super) fn bump(&self) {
        self.changed.send_modify(|v| *v = v.wrapping_add(1));
    }

    pub(crate) fn published(&self) -> Vec<String> {
        let mut v: Vec<String> = lock(&self.state).published.keys().cloned().collect();
        v.sort();
        v
    }

    pub(crate) fn remote_paths(&self) -> Vec<String> {
        let mut v: Vec<String> = lock(&self.state)
            .remotes
            .iter()
            .filter(|(_, r)| r.mounted.is_some())
            .map(|(p, _)| p.clone())
            .collect();
        v.sort();
        v
    }

    pub(crate) fn providers_of(&self, local: &str) -> Vec<ProviderInfo> {
        lock(&self.state)
            .remotes
            .get(local)
            .map(|r| {
                r.providers
                    .iter()
                    .map(|(node, (key, d))| ProviderInfo {
                        node: *node,
                        key: key.clone(),
                        descriptor: serde_json::to_value(d).unwrap_or(Value::Null),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    pub(crate) fn is_mounted(&self, local: &str) -> bool {
        lock(&self.state)
            .remotes
            .get(local)
            .is_some_and(|r| r.mounted.is_some())
    }

    pub(crate) fn is_available(&self, local: &str) -> bool {
        lock(&self.state).remotes.get(local).is_some_and(|r| {
            r.mounted.as_ref().is_some_and(|m| {
                m.state.available.load(Ordering::Acquire)
                    && m.state.events_ready.load(Ordering::Acquire)
            }) && !r.providers.is_empty()
        })
    }

    pub(crate) async fn shutdown(&self) {
        if self.stopped.swap(true, Ordering::AcqRel) {
            return;
        }
        for t in lock(&self.tasks).drain(..) {
            t.abort();
        }
        let published: Vec<String> = {
            let mut st = lock(&self.state);
            for r in st.remotes.values_mut() {
                if let Some(m) = r.mounted.as_mut() {
                    m.stop_tasks();
                    m.state.available.store(false, Ordering::Release);
                }
            }
            st.published.drain().map(|(p, _)| p).collect()
        };
        for p in published {
            self.mesh.withdraw(&endpoint(&p));
        }
        let agent = lock(&self.discovery).take();
        if let Some(agent) = agent {
            agent.leave().await;
        }
        self.mesh.shutdown().await;
        self.bump();
    }
}

impl HealthView for Shared {
    /// The proxies the healthcheck of `key` covers, or `None` when no app has that key.
    fn targets(&self, key: &str) -> Option<Vec<HealthTarget>> {
        let st = lock(&self.state);
        let local_key = key == self.opts.key;
        let mut known = local_key || st.nodes.values().any(|(k, _)| k == key);
        let mut targets = Vec::new();
        for r in st.remotes.values() {
            if r.mounted.is_none() {
                continue;
            }
            let covered = local_key
                || r.providers.values().any(|(k, _)| k == key)
                || (r.providers.is_empty() && r.last_keys.contains(key));
            if !covered {
                continue;
            }
            known = true;
            targets.push(HealthTarget {
                remote_path: r.remote_path.clone(),
                replicas: r
                    .providers
                    .iter()
                    .filter(|(_, (k, _))| local_key || k == key)
                    .map(|(n, (k, _))| (*n, k.clone()))
                    .collect(),
            });
        }
        known.then_some(targets)
    }

    fn mesh(&self) -> Mesh {
        self.mesh.clone()
    }

    fn timeout(&self) -> std::time::Duration {
        self.opts.timeout
    }

    fn key(&self) -> String {
        self.opts.key.clone()
    }

    fn sections(&self) -> serde_json::Map<String, serde_json::Value> {
        self.app
            .extension::<super::health::HealthSections>()
            .map(|s| s.snapshot())
            .unwrap_or_default()
    }
}
