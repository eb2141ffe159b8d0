//! The running plugin: publishing, the table watcher, proxies, the event relay.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};

use futures::StreamExt;
use plume::hooks::{HookContext, HookType};
use plume::{App, Error, Method, Params, Result, Service, ServiceHandle, ServiceOptions};
use serde_json::{Map, Value};
use tokio::sync::{mpsc, watch};
use tokio::task::AbortHandle;

use super::Distribution;
use super::health::Health;
use super::proxy::{Proxy, ProxyState};
use super::wire::{
    CallBody, DESCRIPTOR_VERSION, EventContext, EventEnvelope, HEALTH_METHOD, ServiceDescriptor,
    WITHDRAWN_TOPIC, Withdrawn, endpoint, path_of, topic,
};
use crate::discovery::{Discovery, NodeId};
use crate::mesh::{Mesh, ProviderInfo, RawRequest, TableEvent};
use crate::sync::lock;

const LOG: &str = "plume::distribution";

/// Paths waiting to be re-examined by the table task (a local service left a path a remote
/// service could take). Overflow only delays a mount until the next table event.
const RECHECK_QUEUE: usize = 1024;

/// At most this many early withdrawal notices are remembered.
const MAX_WITHDRAWN: usize = 4096;

fn same_service(a: &Arc<dyn Service>, b: &Arc<dyn Service>) -> bool {
    std::ptr::addr_eq(Arc::as_ptr(a), Arc::as_ptr(b))
}

/// One mounted proxy.
struct Mounted {
    service: Arc<dyn Service>,
    state: Arc<ProxyState>,
    signature: (Vec<String>, Vec<String>),
    events_task: Option<AbortHandle>,
    grace_task: Option<AbortHandle>,
}

impl Mounted {
    fn stop_tasks(&mut self) {
        if let Some(t) = self.events_task.take() {
            t.abort();
        }
        if let Some(t) = self.grace_task.take() {
            t.abort();
        }
    }
}

/// A remote path this node consumes, by local path.
struct Remote {
    remote_path: String,
    providers: BTreeMap<NodeId, (String, ServiceDescriptor)>,
    /// Keys of the providers seen most recently (kept through the grace period).
    last_keys: BTreeSet<String>,
    mounted: Option<Mounted>,
    grace_epoch: u64,
}

#[derive(Default)]
struct State {
    published: HashMap<String, (Arc<dyn Service>, ServiceDescriptor)>,
    remotes: HashMap<String, Remote>,
    local_of: HashMap<String, String>,
    nodes: HashMap<NodeId, (String, HashSet<String>)>,
    withdrawn: HashSet<(NodeId, String)>,
}

/// What the table task decided under the lock, done after it.
enum Action {
    None,
    Mount {
        local: String,
        descriptor: ServiceDescriptor,
    },
    Unmount {
        local: String,
        mounted: Mounted,
    },
}

pub(crate) struct Shared {
    pub(crate) app: App,
    pub(crate) mesh: Mesh,
    pub(crate) opts: Distribution,
    node: NodeId,
    extras: Arc<[String]>,
    state: Mutex<State>,
    stopped: AtomicBool,
    changed: watch::Sender<u64>,
    recheck: mpsc::Sender<String>,
    tasks: Mutex<Vec<AbortHandle>>,
    discovery: Mutex<Option<Discovery>>,
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
                shared: Arc::downgrade(&shared),
            },
            ServiceOptions::new().methods(["find", "get"]),
        );

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

    fn bump(&self) {
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

    // ---- publishing -------------------------------------------------------------------

    fn is_healthcheck(&self, path: &str) -> bool {
        let hc = &self.opts.healthcheck_path;
        path == hc || path.starts_with(&format!("{hc}/"))
    }

    /// The descriptor of a local service, or `None` when it is not published.
    fn describe(&self, handle: &ServiceHandle) -> Option<ServiceDescriptor> {
        let path = handle.path();
        if handle.options().remote || self.is_healthcheck(path) {
            return None;
        }
        let o = &self.opts;
        let methods: Vec<String> = handle
            .methods()
            .iter()
            .filter(|m| handle.exposes(m))
            .filter(|m| m.is_standard() || o.distributed_methods.matches(path, m.as_str()))
            .map(|m| m.as_str().to_owned())
            .collect();
        let idempotent = o
            .idempotent_methods
            .iter()
            .filter(|m| methods.contains(m) && !Method::from_name(m).is_standard())
            .cloned()
            .collect();
        let events = if o.publish_events {
            handle
                .events()
                .iter()
                .filter(|e| o.distributed_events.matches(path, e))
                .cloned()
                .collect()
        } else {
            Vec::new()
        };
        let remote_options = o.remote_service_options.as_ref().map(|keys| {
            let all = handle.service().options();
            let picked: Map<String, Value> = keys(path)
                .into_iter()
                .filter_map(|k| all.get(&k).map(|v| (k, v.clone())))
                .collect();
            Value::Object(picked)
        });
        let d = ServiceDescriptor {
            plume: DESCRIPTOR_VERSION,
            path: path.to_owned(),
            key: o.key.clone(),
            methods,
            idempotent,
            events,
            remote_options,
        };
        o.services.matches(&d).then_some(d)
    }

    fn local_added(self: &Arc<Self>, handle: &ServiceHandle) {
        if self.stopped.load(Ordering::Acquire) || handle.options().remote {
            return;
        }
        let Some(descriptor) = self.describe(handle) else {
            return;
        };
        let path = handle.path().to_owned();
        let Ok(json) = serde_json::to_value(&descriptor) else {
            return;
        };
        lock(&self.state)
            .published
            .insert(path.clone(), (handle.service().clone(), descriptor));
        let weak = Arc::downgrade(self);
        let served = path.clone();
        // A raw endpoint: the call body is decoded once, from the frame, straight into a
        // `CallBody` (no `serde_json::Value` of it on the way).
        self.mesh
            .provide_raw(&endpoint(&path), json, move |req: RawRequest| {
                let weak = weak.clone();
                let path = served.clone();
                async move {
                    match weak.upgrade() {
                        Some(s) => s.serve(&path, req).await,
                        None => Err(Error::unavailable("the node is shutting down")),
                    }
                }
            });
        tracing::debug!(target: LOG, %path, "published");
    }

    fn service_removed(self: &Arc<Self>, handle: &ServiceHandle) {
        let path = handle.path().to_owned();
        if handle.options().remote {
            // One of our proxies went away (replaced, unused by the user, or by us).
            let mut st = lock(&self.state);
            let Some(r) = st.remotes.get_mut(&path) else {
                drop(st);
                let _ = self.recheck.try_send(path);
                return;
            };
            let ours = r
                .mounted
                .as_ref()
                .is_some_and(|m| same_service(&m.service, handle.service()));
            if ours {
                if let Some(mut m) = r.mounted.take() {
                    m.stop_tasks();
                }
                if r.providers.is_empty() {
                    st.remotes.remove(&path);
                }
                drop(st);
                self.bump();
            }
            // The path is free: providers that arrived meanwhile get their proxy.
            let _ = self.recheck.try_send(path);
            return;
        }
        let was_published = {
            let mut st = lock(&self.state);
            match st.published.get(&path) {
                Some((svc, _)) if same_service(svc, handle.service()) => {
                    st.published.remove(&path);
                    true
                }
                _ => false,
            }
        };
        if was_published && !self.stopped.load(Ordering::Acquire) {
            let notice = Withdrawn {
                node: self.node.to_string(),
                path: path.clone(),
            };
            if let Ok(v) = serde_json::to_value(notice) {
                self.mesh.publish(WITHDRAWN_TOPIC, v);
            }
            self.mesh.withdraw(&endpoint(&path));
            tracing::debug!(target: LOG, %path, "unpublished");
        }
        // A remote service may take the path now.
        if self.recheck.try_send(path).is_err() {
            tracing::debug!(target: LOG, "recheck queue full; the next table event remounts");
        }
    }

    /// Answer a call from a peer, after checking that the path and method are published.
    async fn serve(&self, path: &str, req: RawRequest) -> Result<Value> {
        let Some(method) = req.method.as_deref() else {
            return Err(Error::bad_request("a service call needs a method"));
        };
        let descriptor = {
            let st = lock(&self.state);
            st.published
                .get(path)
                .map(|(svc, d)| (svc.clone(), d.clone()))
        };
        let handle = self.app.service(path);
        let (handle, descriptor) = match (handle, descriptor) {
            (Some(h), Some((svc, d))) if same_service(h.service(), &svc) => (h, d),
            _ => {
                return Err(Error::not_found(format!(
                    "Service '{path}' is not published on this node"
                )));
            }
        };
        if method == HEALTH_METHOD {
            return Ok(Value::Bool(true));
        }
        let method = Method::from_name(method);
        if !descriptor.methods.iter().any(|m| m == method.as_str()) {
            return Err(Error::method_not_allowed_on(method.as_str(), path));
        }
        let body: CallBody = req.body.decode()?;
        handle
            .dispatch(method, body.id, body.data, body.params.into_params())
            .await
    }

    fn relay_local_event(&self, ev: &plume::ServiceEvent) {
        if !self.opts.publish_events || self.stopped.load(Ordering::Acquire) {
            return;
        }
        let travels = lock(&self.state)
            .published
            .get(&ev.path)
            .is_some_and(|(_, d)| d.events.contains(&ev.event));
        if !travels {
            return;
        }
        let envelope = EventEnvelope {
            key: self.opts.key.clone(),
            path: ev.path.clone(),
            event: ev.event.clone(),
            data: ev.data.clone(),
            ctx: ev.context.as_deref().map(EventContext::from_hook),
        };
        match serde_json::to_value(envelope) {
            Ok(v) => self.mesh.publish(&topic(&ev.path, &ev.event), v),
            Err(e) => tracing::warn!(target: LOG, error = %e, "event not relayed"),
        }
    }

    // ---- consuming --------------------------------------------------------------------

    fn local_path(&self, d: &ServiceDescriptor) -> String {
        match &self.opts.remote_service_path {
            Some(rename) => plume::normalize_path(&rename(d)),
            None => d.path.clone(),
        }
    }

    fn on_table(self: &Arc<Self>, ev: TableEvent) {
        let action = match ev {
            TableEvent::Added {
                name,
                node,
                key,
                descriptor,
            } => self.provider_added(&name, node, key, &descriptor),
            TableEvent::Removed { name, node, .. } => self.provider_removed(&name, node, false),
        };
        self.act(action);
    }

    fn provider_added(
        self: &Arc<Self>,
        name: &str,
        node: NodeId,
        key: String,
        descriptor: &Value,
    ) -> Action {
        if node == self.node {
            return Action::None;
        }
        let Some(remote_path) = path_of(name) else {
            return Action::None;
        };
        let Some(d) = ServiceDescriptor::parse(descriptor) else {
            return Action::None;
        };
        if d.path != remote_path {
            tracing::warn!(target: LOG, %name, "descriptor path does not match its endpoint; ignored");
            return Action::None;
        }
        let mut st = lock(&self.state);
        st.nodes
            .entry(node)
            .or_insert_with(|| (key.clone(), HashSet::new()))
            .1
            .insert(name.to_owned());
        st.withdrawn.remove(&(node, remote_path.to_owned()));
        if !self.opts.remote_services.matches(&d) {
            return Action::None;
        }
        let local = self.local_path(&d);
        if let Some(other) = st.local_of.get(remote_path)
            && *other != local
        {
            tracing::warn!(target: LOG, %remote_path, "renamed to two local paths; keeping the first");
            return Action::None;
        }
        if st
            .remotes
            .get(&local)
            .is_some_and(|r| r.remote_path != remote_path)
        {
            tracing::warn!(target: LOG, %local, %remote_path, "two remote paths map to one local path; keeping the first");
            return Action::None;
        }
        st.local_of.insert(remote_path.to_owned(), local.clone());
        let r = st.remotes.entry(local.clone()).or_insert_with(|| Remote {
            remote_path: remote_path.to_owned(),
            providers: BTreeMap::new(),
            last_keys: BTreeSet::new(),
            mounted: None,
            grace_epoch: 0,
        });
        r.providers.insert(node, (key, d));
        r.last_keys = r.providers.values().map(|(k, _)| k.clone()).collect();
        r.grace_epoch += 1;
        let merged = merge(r.remote_path.clone(), &r.providers);
        match &mut r.mounted {
            Some(m) if m.signature == signature(&merged) => {
                if let Some(t) = m.grace_task.take() {
                    t.abort();
                }
                m.state.available.store(true, Ordering::Release);
                drop(st);
                self.bump();
                Action::None
            }
            _ => Action::Mount {
                local,
                descriptor: merged,
            },
        }
    }

    fn provider_removed(self: &Arc<Self>, name: &str, node: NodeId, notice: bool) -> Action {
        if node == self.node {
            return Action::None;
        }
        let Some(remote_path) = path_of(name) else {
            return Action::None;
        };
        let mut st = lock(&self.state);
        if !notice && let Some((_, names)) = st.nodes.get_mut(&node) {
            names.remove(name);
            if names.is_empty() {
                st.nodes.remove(&node);
            }
        }
        let withdrawn = if notice {
            true
        } else {
            st.withdrawn.remove(&(node, remote_path.to_owned()))
        };
        let Some(local) = st.local_of.get(remote_path).cloned() else {
            return Action::None;
        };
        let Some(r) = st.remotes.get_mut(&local) else {
            return Action::None;
        };
        if !notice && r.providers.remove(&node).is_none() {
            return Action::None;
        }
        if !r.providers.is_empty() {
            let merged = merge(r.remote_path.clone(), &r.providers);
            r.last_keys = r.providers.values().map(|(k, _)| k.clone()).collect();
            return match &r.mounted {
                Some(m) if m.signature != signature(&merged) => Action::Mount {
                    local,
                    descriptor: merged,
                },
                _ => Action::None,
            };
        }
        if withdrawn {
            // The last provider unpublished the path on purpose: remove the proxy now.
            let mounted = r.mounted.take();
            st.remotes.remove(&local);
            st.local_of.remove(remote_path);
            return match mounted {
                Some(mounted) => Action::Unmount { local, mounted },
                None => Action::None,
            };
        }
        // The last provider is gone: answer 503 at once, remove after the grace period.
        r.grace_epoch += 1;
        let epoch = r.grace_epoch;
        let Some(m) = r.mounted.as_mut() else {
            st.remotes.remove(&local);
            st.local_of.remove(remote_path);
            return Action::None;
        };
        m.state.available.store(false, Ordering::Release);
        if let Some(t) = m.grace_task.take() {
            t.abort();
        }
        let weak = Arc::downgrade(self);
        let grace = self.opts.grace;
        let path = local.clone();
        let task = tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            if let Some(s) = weak.upgrade() {
                s.grace_over(&path, epoch);
            }
        });
        m.grace_task = Some(task.abort_handle());
        tracing::info!(target: LOG, path = %local, "last provider left; answering 503 during the grace period");
        drop(st);
        self.bump();
        Action::None
    }

    fn on_withdrawn(self: &Arc<Self>, notice: &Value) {
        let Ok(w) = serde_json::from_value::<Withdrawn>(notice.clone()) else {
            return;
        };
        let Ok(node) = w.node.parse::<NodeId>() else {
            return;
        };
        if node == self.node {
            return;
        }
        let in_grace = {
            let mut st = lock(&self.state);
            let still_provider = st
                .local_of
                .get(&w.path)
                .and_then(|l| st.remotes.get(l))
                .is_some_and(|r| r.providers.contains_key(&node));
            if still_provider {
                // The table removal has not arrived yet: remember the notice for it.
                if st.withdrawn.len() >= MAX_WITHDRAWN {
                    st.withdrawn.clear();
                }
                st.withdrawn.insert((node, w.path.clone()));
                false
            } else {
                st.local_of
                    .get(&w.path)
                    .and_then(|l| st.remotes.get(l))
                    .is_some_and(|r| r.providers.is_empty())
            }
        };
        if in_grace {
            let action = self.provider_removed(&endpoint(&w.path), node, true);
            self.act(action);
        }
    }

    fn grace_over(&self, local: &str, epoch: u64) {
        let mounted = {
            let mut st = lock(&self.state);
            let Some(r) = st.remotes.get_mut(local) else {
                return;
            };
            if r.grace_epoch != epoch || !r.providers.is_empty() {
                return;
            }
            let mounted = r.mounted.take();
            let remote_path = r.remote_path.clone();
            st.remotes.remove(local);
            st.local_of.remove(&remote_path);
            mounted
        };
        if let Some(mut m) = mounted {
            // This task is the grace task itself: do not abort it.
            m.grace_task = None;
            tracing::info!(target: LOG, path = %local, "grace period over; proxy removed");
            self.unmount(local, m);
        }
    }

    fn recheck(self: &Arc<Self>, local: &str) {
        let action = {
            let st = lock(&self.state);
            match st.remotes.get(local) {
                Some(r) if r.mounted.is_none() && !r.providers.is_empty() => Action::Mount {
                    local: local.to_owned(),
                    descriptor: merge(r.remote_path.clone(), &r.providers),
                },
                _ => Action::None,
            }
        };
        self.act(action);
    }

    fn act(self: &Arc<Self>, action: Action) {
        match action {
            Action::None => {}
            Action::Mount { local, descriptor } => self.mount(&local, descriptor),
            Action::Unmount { local, mounted } => self.unmount(&local, mounted),
        }
    }

    fn unmount(&self, local: &str, mut m: Mounted) {
        m.stop_tasks();
        if let Some(h) = self.app.service(local)
            && same_service(h.service(), &m.service)
        {
            self.app.unuse(local);
        }
        self.bump();
    }

    fn mount(self: &Arc<Self>, local: &str, descriptor: ServiceDescriptor) {
        if self.stopped.load(Ordering::Acquire) {
            return;
        }
        // A local service (or someone else's proxy) at the path wins.
        let current = self.app.service(local);
        let ours = {
            let st = lock(&self.state);
            st.remotes
                .get(local)
                .and_then(|r| r.mounted.as_ref())
                .map(|m| m.service.clone())
        };
        if let Some(h) = &current {
            let is_ours = ours.as_ref().is_some_and(|s| same_service(s, h.service()));
            if !is_ours {
                tracing::debug!(target: LOG, path = %local, "a service is already mounted here; the remote one is not mounted");
                return;
            }
        }
        let sig = signature(&descriptor);
        let proxy = Proxy::new(
            self.mesh.clone(),
            local.to_owned(),
            descriptor.clone(),
            self.opts.timeout,
            self.extras.clone(),
        );
        let state = proxy.state.clone();
        state.available.store(true, Ordering::Release);
        let service: Arc<dyn Service> = Arc::new(proxy);
        let options = ServiceOptions {
            methods: Some(descriptor.method_list()),
            events: descriptor.custom_events(),
            remote: true,
        };
        let handle = self.app.use_arc(local, service.clone(), options);
        for add in &self.opts.hooks {
            add(handle.hooks());
        }
        if !self.opts.middlewares.is_empty() {
            self.app
                .set_rest_layers(local, self.opts.middlewares.clone());
        }
        state.ready.store(true, Ordering::Release);
        let nodes: Vec<NodeId> = {
            let st = lock(&self.state);
            st.remotes
                .get(local)
                .map(|r| r.providers.keys().copied().collect())
                .unwrap_or_default()
        };
        let events_task = self.spawn_relay(local, &descriptor, &service, &state, nodes);
        let mut st = lock(&self.state);
        match st.remotes.get_mut(local) {
            Some(r) => {
                if let Some(mut old) = r.mounted.take() {
                    old.stop_tasks();
                }
                let available = !r.providers.is_empty();
                state.available.store(available, Ordering::Release);
                r.mounted = Some(Mounted {
                    service,
                    state,
                    signature: sig,
                    events_task,
                    grace_task: None,
                });
                drop(st);
                tracing::debug!(target: LOG, path = %local, remote = %descriptor.path, "proxy mounted");
                self.bump();
            }
            None => {
                // The providers left while mounting.
                drop(st);
                if let Some(t) = events_task {
                    t.abort();
                }
                if let Some(h) = self.app.service(local)
                    && same_service(h.service(), &service)
                {
                    self.app.unuse(local);
                }
            }
        }
    }

    /// Subscribe to the proxy's events and re-emit them on it.
    fn spawn_relay(
        self: &Arc<Self>,
        local: &str,
        d: &ServiceDescriptor,
        service: &Arc<dyn Service>,
        state: &Arc<ProxyState>,
        nodes: Vec<NodeId>,
    ) -> Option<AbortHandle> {
        let subs: Vec<_> = d
            .events
            .iter()
            .filter(|e| self.opts.distributed_events.matches(&d.path, e))
            .map(|e| self.mesh.subscribe(&topic(&d.path, e)))
            .collect();
        if subs.is_empty() {
            state.events_ready.store(true, Ordering::Release);
            return None;
        }
        let mut stream = futures::stream::select_all(subs);
        let (mesh, state, weak) = (self.mesh.clone(), state.clone(), Arc::downgrade(self));
        let app = self.app.clone();
        let local = local.to_owned();
        let remote_path = d.path.clone();
        let service = service.clone();
        let task = tokio::spawn(async move {
            // A ping is answered after every frame queued before it on the link, the
            // subscriptions included: once it returns, the provider sends our events.
            futures::future::join_all(nodes.into_iter().map(|n| mesh.ping(n))).await;
            state.events_ready.store(true, Ordering::Release);
            if let Some(s) = weak.upgrade() {
                s.bump();
            }
            drop(weak);
            while let Some(v) = stream.next().await {
                let Ok(env) = serde_json::from_value::<EventEnvelope>(v) else {
                    continue;
                };
                if env.path != remote_path {
                    continue;
                }
                let Some(handle) = app.service(&local) else {
                    continue;
                };
                if !same_service(handle.service(), &service) {
                    continue;
                }
                // Every relayed event gets a context on this App and the proxy's path, also
                // one emitted without a call on the provider (feathers-distributed #141).
                let context = Some(env.ctx.unwrap_or_default()).map(|c| {
                    let mut params = Params::new();
                    params.query = c.query;
                    params.user = c.user;
                    params.from_remote = true;
                    let method = c
                        .method
                        .unwrap_or_else(|| Method::Custom(env.event.clone()));
                    let mut ctx =
                        HookContext::new(app.clone(), local.clone(), method, c.id, None, params);
                    ctx.hook_type = HookType::Around;
                    ctx.result = Some(env.data.clone());
                    ctx.event = Some(env.event.clone());
                    Arc::new(ctx)
                });
                handle.emit_with_context(&env.event, env.data, context);
            }
        });
        Some(task.abort_handle())
    }

    // ---- healthcheck support ------------------------------------------------------------

    /// The proxies the healthcheck of `key` covers, or `None` when no app has that key.
    pub(crate) fn health_targets(&self, key: &str) -> Option<Vec<HealthTarget>> {
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

/// One proxy the healthcheck pings, and the replicas to ping.
pub(crate) struct HealthTarget {
    pub(crate) remote_path: String,
    pub(crate) replicas: Vec<(NodeId, String)>,
}

/// The descriptor the proxy uses: the union of what its providers publish.
fn merge(
    remote_path: String,
    providers: &BTreeMap<NodeId, (String, ServiceDescriptor)>,
) -> ServiceDescriptor {
    let mut out = ServiceDescriptor {
        plume: DESCRIPTOR_VERSION,
        path: remote_path,
        key: String::new(),
        methods: Vec::new(),
        idempotent: Vec::new(),
        events: Vec::new(),
        remote_options: None,
    };
    for (_, d) in providers.values() {
        if out.key.is_empty() {
            out.key.clone_from(&d.key);
        }
        for (src, dst) in [
            (&d.methods, &mut out.methods),
            (&d.idempotent, &mut out.idempotent),
            (&d.events, &mut out.events),
        ] {
            for m in src {
                if !dst.contains(m) {
                    dst.push(m.clone());
                }
            }
        }
        if out.remote_options.is_none() {
            out.remote_options.clone_from(&d.remote_options);
        }
    }
    out
}

fn signature(d: &ServiceDescriptor) -> (Vec<String>, Vec<String>) {
    let mut m = d.methods.clone();
    m.sort();
    let mut e = d.events.clone();
    e.sort();
    (m, e)
}

async fn table_loop(
    weak: Weak<Shared>,
    mut table: crate::mesh::TableWatch,
    mut withdrawn: crate::mesh::Subscription,
    mut recheck: mpsc::Receiver<String>,
) {
    loop {
        tokio::select! {
            ev = table.recv() => {
                let Some(ev) = ev else { break };
                let Some(s) = weak.upgrade() else { break };
                s.on_table(ev);
            }
            msg = withdrawn.recv() => {
                let Some(msg) = msg else { break };
                let Some(s) = weak.upgrade() else { break };
                s.on_withdrawn(&msg);
            }
            path = recheck.recv() => {
                let Some(path) = path else { break };
                let Some(s) = weak.upgrade() else { break };
                s.recheck(&path);
            }
        }
    }
}

/// Errors of the healthcheck, shared with `health.rs`.
pub(crate) fn no_app(key: &str) -> Error {
    Error::not_found(format!("No app registered with key {key}"))
}
