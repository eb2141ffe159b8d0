//! The mesh monitor on a distributed App: the `distribution/mesh` service (its `find` is the
//! current [`MeshSnapshot`]; its `snapshot` event brings every new one to socket.io clients) and
//! the page `GET /distribution/monitor` that shows it live.
//!
//! Access: when the App has an `authentication` service, only a logged-in client (a socket.io
//! connection that logged in, or a REST call whose hooks set `params.user`: the plugin's
//! [`hooks`](super::Distribution::hooks) apply to this service too) gets the snapshot, and the
//! events go to the `authenticated` channel only. Without one, anyone may watch, but node
//! addresses are left out of what external clients get. Internal calls get everything.
//!
//! The rounds run only while someone watches: a `find` starts them (from this App's own node,
//! [`MeshMonitor::observe`]) and keeps them going for [`LEASE`]; the page calls `find` again
//! well before that.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::routing::get;
use plume::{App, Error, Method, Params, Result, Service, ServiceOptions, WeakApp, async_trait};
use serde_json::Value;
use tokio::time::Instant;

use super::Distribution;
use super::runtime::Shared;
use crate::Mesh;
use crate::monitor::{MeshMonitor, MeshSnapshot, MonitorOptions};
use crate::sync::lock;

/// The path of the monitor service.
pub const MONITOR_SERVICE_PATH: &str = "distribution/mesh";
/// The path of the monitor page.
pub const MONITOR_PAGE_PATH: &str = "/distribution/monitor";
/// The custom event that carries each new snapshot.
pub const SNAPSHOT_EVENT: &str = "snapshot";
/// How long the rounds go on after the last `find`.
pub const LEASE: Duration = Duration::from_secs(60);
/// How long a `find` waits for the first round.
const FIRST_ROUND: Duration = Duration::from_secs(3);
/// The authentication service whose presence makes the monitor require a login.
const AUTH_PATH: &str = "authentication";

const PAGE: &str = include_str!("monitor.html");

impl Distribution {
    /// Mount the mesh monitor (`distribution/mesh` and the page `/distribution/monitor`; on by
    /// default). The page is served by the routers built after the plugin starts: configure
    /// the plugin before `app.listen`.
    pub fn monitor(mut self, on: bool) -> Self {
        self.monitor = on;
        self
    }
}

/// Mount the service and the page on `app` (when the plugin's `monitor` option is on).
pub(super) fn mount(app: &App, shared: &Arc<Shared>) {
    if !shared.opts.monitor {
        return;
    }
    let state = Arc::new(Watch {
        mesh: shared.mesh.clone(),
        app: app.downgrade(),
        running: Mutex::new(None),
    });
    let handle = app.use_service_with(
        MONITOR_SERVICE_PATH,
        MeshService { state },
        ServiceOptions {
            methods: Some(vec![Method::Find]),
            events: vec![SNAPSHOT_EVENT.to_owned()],
            // Never published to the mesh.
            remote: true,
        },
    );
    for add in &shared.opts.hooks {
        add(handle.hooks());
    }
    app.publish_service(MONITOR_SERVICE_PATH, |_event, app| {
        if requires_login(app) {
            vec![plume::channels::AUTHENTICATED.to_owned()]
        } else {
            vec![
                plume::channels::ANONYMOUS.to_owned(),
                plume::channels::AUTHENTICATED.to_owned(),
            ]
        }
    });
    app.add_routes(|router| {
        router.route(
            MONITOR_PAGE_PATH,
            get(|| async {
                (
                    [
                        (CONTENT_TYPE, "text/html; charset=utf-8"),
                        (CACHE_CONTROL, "no-cache"),
                    ],
                    PAGE,
                )
            }),
        )
    });
}

fn requires_login(app: &App) -> bool {
    app.service(AUTH_PATH).is_some()
}

/// The rounds while someone watches.
struct Watch {
    mesh: Mesh,
    app: WeakApp,
    running: Mutex<Option<Running>>,
}

struct Running {
    monitor: MeshMonitor,
    until: Instant,
}

impl Watch {
    /// Start the rounds (or extend them) and return the latest snapshot, after the first round.
    async fn current(self: &Arc<Self>) -> Arc<MeshSnapshot> {
        let mut updates = {
            let mut running = lock(&self.running);
            let until = Instant::now() + LEASE;
            match running.as_mut() {
                Some(r) => {
                    r.until = until;
                    r.monitor.updates()
                }
                None => {
                    let monitor = MeshMonitor::observe(&self.mesh, MonitorOptions::default());
                    let updates = monitor.updates();
                    tokio::spawn(emit_loop(Arc::downgrade(self), monitor.updates()));
                    *running = Some(Running { monitor, until });
                    updates
                }
            }
        };
        let _ = tokio::time::timeout(FIRST_ROUND, updates.wait_for(|s| s.rounds > 0)).await;
        updates.borrow().clone()
    }
}

/// Emit each new snapshot as the service's `snapshot` event, until the lease runs out.
async fn emit_loop(
    watch: std::sync::Weak<Watch>,
    mut updates: tokio::sync::watch::Receiver<Arc<MeshSnapshot>>,
) {
    while updates.changed().await.is_ok() {
        let Some(w) = watch.upgrade() else { return };
        {
            let mut running = lock(&w.running);
            if running.as_ref().is_none_or(|r| Instant::now() >= r.until) {
                // Dropping the monitor stops its rounds.
                *running = None;
                return;
            }
        }
        let Some(app) = w.app.upgrade() else { return };
        let snapshot = updates.borrow_and_update().clone();
        let data = if requires_login(&app) {
            (*snapshot).clone()
        } else {
            (*snapshot).clone().without_addresses()
        };
        let Ok(value) = serde_json::to_value(data) else {
            continue;
        };
        if let Some(service) = app.service(MONITOR_SERVICE_PATH) {
            service.emit(SNAPSHOT_EVENT, value);
        }
    }
}

/// `distribution/mesh`: `find` is the current snapshot.
struct MeshService {
    state: Arc<Watch>,
}

#[async_trait]
impl Service for MeshService {
    async fn find(&self, params: Params) -> Result<Value> {
        let Some(app) = self.state.app.upgrade() else {
            return Err(Error::unavailable("the app has stopped"));
        };
        let external = params.provider.is_some();
        let login = requires_login(&app);
        drop(app);
        if external && login && params.user.is_none() {
            return Err(Error::not_authenticated("log in to watch the mesh"));
        }
        let snapshot = self.state.current().await;
        let snapshot = if external && !login {
            (*snapshot).clone().without_addresses()
        } else {
            (*snapshot).clone()
        };
        serde_json::to_value(snapshot).map_err(Error::internal)
    }

    fn methods(&self) -> Vec<Method> {
        vec![Method::Find]
    }
}
