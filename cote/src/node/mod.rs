//! [`CoteNode`]: a Plume App as one app of a feathers-distributed fleet.
//!
//! As a provider it runs feathers-distributed's services publisher, events publisher and
//! responder: the App's services are announced (`service` messages, sent to every services
//! subscriber when it connects and whenever a service is mounted or unmounted), their events
//! go out with their context, and RPC requests run through the App's hook chain. As a consumer
//! (`consume`) it runs the services subscriber and, per remote key, a requester and an events
//! subscriber: remote services are mounted as proxies, their events re-emitted on them.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use plume::{App, Error, HookContext, ServiceEvent};
use serde_json::{Map, Value, json};
use tokio::net::TcpListener;
use tokio::task::AbortHandle;

use crate::axon::{self, Publisher, RepHandler, Requester};
use crate::config::CoteConfig;
use crate::discovery::{Discovery, PeerEvent};
use crate::fd::{
    self, DEFAULT_EVENTS, RpcRequest, SERVICE, SERVICE_REMOVED, SERVICES, ServiceDescriptor, names,
};
use crate::hello::{Advertisement, AxonType};

mod consumer;

/// Why the node cannot start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CoteError {
    /// The settings are refused.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// A socket cannot be bound.
    #[error("cote: {0}")]
    Io(#[from] std::io::Error),
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A Plume App in a feathers-distributed fleet. Dropping the last handle stops it.
#[derive(Clone, Debug)]
pub struct CoteNode {
    inner: Arc<Inner>,
}

/// One remote key: the requester of its responders.
#[derive(Debug)]
struct RemoteKey {
    requester: Requester,
}

#[derive(Debug)]
struct Inner {
    app: plume::WeakApp,
    config: CoteConfig,
    uuid: String,
    discovery: Discovery,
    services_pub: Option<Publisher>,
    events_pub: Option<Publisher>,
    remotes: Mutex<HashMap<String, RemoteKey>>,
    /// Proxies this node mounted: local path → remote key.
    mounted: Mutex<HashMap<String, String>>,
    /// Subscriber connections by publisher iid.
    subs: Mutex<HashMap<String, AbortHandle>>,
    tasks: Mutex<Vec<AbortHandle>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for t in lock(&self.tasks).iter() {
            t.abort();
        }
        for t in lock(&self.subs).values() {
            t.abort();
        }
    }
}

impl CoteNode {
    /// Join `app` to the fleet. Logs a warning: cote has no authentication.
    pub async fn start(app: &App, config: CoteConfig) -> Result<CoteNode, CoteError> {
        config.validate()?;
        tracing::warn!(
            address = %config.address,
            "cote has no authentication: any process that can reach the discovery address can \
             call this node's services and impersonate its peers"
        );
        let discovery = Discovery::start(&config).await?;
        let host = if config.address.is_loopback() {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else {
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        };
        let uuid = uuid::Uuid::new_v4().to_string();
        let listeners = if config.provide {
            Some([
                TcpListener::bind((host, 0)).await?,
                TcpListener::bind((host, 0)).await?,
                TcpListener::bind((host, 0)).await?,
            ])
        } else {
            None
        };
        let mut ports = [0u16; 3];
        if let Some(ls) = &listeners {
            for (port, l) in ports.iter_mut().zip(ls) {
                *port = l.local_addr()?.port();
            }
        }
        let node = Arc::new_cyclic(|weak: &Weak<Inner>| {
            let mut tasks = Vec::new();
            let (services_pub, events_pub) = match listeners {
                Some([services, events, rep]) => {
                    let (s, e, r) = provider_components(weak, &config, services, events, rep);
                    tasks.push(r);
                    (Some(s), Some(e))
                }
                None => (None, None),
            };
            Inner {
                app: app.downgrade(),
                config: config.clone(),
                uuid,
                discovery: discovery.clone(),
                services_pub,
                events_pub,
                remotes: Mutex::default(),
                mounted: Mutex::default(),
                subs: Mutex::default(),
                tasks: Mutex::new(tasks),
            }
        });
        if config.provide {
            provide(&node, app, ports).await;
        }
        let watcher = tokio::spawn(watch(Arc::downgrade(&node), discovery.subscribe()));
        lock(&node.tasks).push(watcher.abort_handle());
        if config.consume {
            let ad = node.advertisement(
                names::SERVICES_SUBSCRIBER,
                SERVICES,
                AxonType::SubEmitter,
                None,
                json!({"subscribesTo": [SERVICE, SERVICE_REMOVED]}),
            );
            node.discovery.advertise(ad).await;
            for peer in node.discovery.peers() {
                node.peer_added(&peer).await;
            }
        }
        Ok(CoteNode { inner: node })
    }

    /// This app's uuid in the fleet.
    pub fn uuid(&self) -> &str {
        &self.inner.uuid
    }

    /// The paths of the remote services mounted now.
    pub fn mounted(&self) -> Vec<String> {
        let mut paths: Vec<String> = lock(&self.inner.mounted).keys().cloned().collect();
        paths.sort();
        paths
    }

    /// Datagrams the discovery dropped so far.
    pub fn dropped_hellos(&self) -> u64 {
        self.inner.discovery.dropped()
    }
}

/// The provider's sockets: the services publisher (which greets a new subscriber with every
/// descriptor), the events publisher and the responder.
fn provider_components(
    weak: &Weak<Inner>,
    config: &CoteConfig,
    services: TcpListener,
    events: TcpListener,
    rep: TcpListener,
) -> (Publisher, Publisher, AbortHandle) {
    let greet_node = weak.clone();
    let greeting: axon::Greeting = Arc::new(move || {
        greet_node
            .upgrade()
            .map(|n| {
                n.descriptors()
                    .into_iter()
                    .filter_map(|d| serde_json::to_value(d).ok())
                    .map(|d| (SERVICE.to_owned(), d))
                    .collect()
            })
            .unwrap_or_default()
    });
    let services_pub = Publisher::serve(services, Some(SERVICES.into()), greeting);
    let events_pub = Publisher::serve(events, Some(config.key.clone()), Arc::new(Vec::new));
    let handler_node = weak.clone();
    let handler: RepHandler = Arc::new(move |req| {
        let node = handler_node.upgrade();
        Box::pin(async move {
            match node {
                Some(n) => n.respond(req).await,
                None => Err(Error::unavailable("the node is shutting down")),
            }
        })
    });
    let rep = tokio::spawn(axon::serve_responder(rep, handler, config.max_frame));
    (services_pub, events_pub, rep.abort_handle())
}

/// Advertise the provider's components and follow the App's services and events.
async fn provide(node: &Arc<Inner>, app: &App, ports: [u16; 3]) {
    let key = node.config.key.clone();
    let weak = Arc::downgrade(node);
    let mut methods: Vec<Value> = fd::DEFAULT_METHODS.iter().map(|m| json!(m)).collect();
    methods.push(json!("healthcheck"));
    let ads = [
        node.advertisement(
            names::SERVICES_PUBLISHER,
            SERVICES,
            AxonType::PubEmitter,
            Some(ports[0]),
            json!({"broadcasts": [SERVICE, SERVICE_REMOVED]}),
        ),
        node.advertisement(
            names::EVENTS_PUBLISHER,
            &key,
            AxonType::PubEmitter,
            Some(ports[1]),
            json!({"broadcasts": DEFAULT_EVENTS}),
        ),
        node.advertisement(
            names::RESPONDER,
            &key,
            AxonType::Rep,
            Some(ports[2]),
            json!({"requests": methods}),
        ),
    ];
    for ad in ads {
        node.discovery.advertise(ad).await;
    }
    let events = weak.clone();
    app.on_event(move |ev| {
        if let Some(n) = events.upgrade() {
            n.publish_event(ev);
        }
    });
    let added = weak.clone();
    app.on_service_added(move |handle| {
        if let Some(n) = added.upgrade()
            && let Some(d) = n.descriptor(handle.path())
            && let (Some(p), Ok(v)) = (&n.services_pub, serde_json::to_value(&d))
        {
            p.publish(SERVICE, &v);
        }
    });
    app.on_service_removed(move |handle| {
        if let Some(n) = weak.upgrade()
            && !lock(&n.mounted).contains_key(handle.path())
            && let Some(p) = &n.services_pub
        {
            let d = ServiceDescriptor {
                uuid: n.uuid.clone(),
                short_uuid: fd::short_uuid(&n.uuid),
                key: n.config.key.clone(),
                path: handle.path().trim_matches('/').to_owned(),
                events: events_of(handle.events()),
                methods: None,
                remote_options: None,
            };
            if let Ok(v) = serde_json::to_value(&d) {
                p.publish(SERVICE_REMOVED, &v);
            }
        }
    });
}

/// The `events` of a descriptor: the custom events only. feathers-distributed lists the four
/// standard ones too, but its 3.0.0 consumer then registers the proxy with them as custom events
/// (`{...descriptor, ...customEvents}` spreads an array), and Feathers 5 publishes each standard
/// event twice to real-time clients. Node consumers subscribe to the standard events whatever
/// the list says, so leaving them out loses nothing.
fn events_of(custom: &[String]) -> Vec<String> {
    custom
        .iter()
        .filter(|e| !DEFAULT_EVENTS.contains(&e.as_str()))
        .cloned()
        .collect()
}

/// The JSON of a hook context that travels with an event (feathers-distributed sends
/// `context.toJSON()` without app and service; headers and connections stay here).
fn context_json(ctx: &HookContext) -> Value {
    let mut params = Map::new();
    params.insert("query".into(), Value::Object(ctx.params.query.clone()));
    if let Some(u) = ctx.params.user.as_deref() {
        params.insert("user".into(), u.clone());
    }
    if let Some(p) = ctx.params.provider {
        params.insert("provider".into(), json!(p.as_str()));
    }
    json!({
        "type": "around",
        "path": ctx.path,
        "method": ctx.method.as_str(),
        "event": ctx.event,
        "id": ctx.id.as_ref().map(plume::Id::to_value),
        "data": ctx.data,
        "result": ctx.dispatch.as_ref().or(ctx.result.as_ref()),
        "params": params,
    })
}

impl Inner {
    fn advertisement(
        &self,
        name: &str,
        namespace: &str,
        axon_type: AxonType,
        port: Option<u16>,
        extra: Value,
    ) -> Advertisement {
        let mut map = match extra {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        map.insert("appUuid".into(), json!(self.uuid));
        map.insert("appDistributionKey".into(), json!(self.config.key));
        Advertisement {
            kind: "service".into(),
            name: name.into(),
            key: self.config.cote_key(namespace),
            axon_type: Some(axon_type),
            port,
            namespace: Some(namespace.into()),
            extra: map,
        }
    }

    fn is_published(&self, path: &str) -> bool {
        !lock(&self.mounted).contains_key(path)
    }

    /// The descriptor of a local service, None for a proxy or an unknown path.
    fn descriptor(&self, path: &str) -> Option<ServiceDescriptor> {
        let app = self.app.upgrade()?;
        let handle = app.service(path)?;
        if !self.is_published(handle.path()) || handle.options().remote {
            return None;
        }
        Some(ServiceDescriptor {
            uuid: self.uuid.clone(),
            short_uuid: fd::short_uuid(&self.uuid),
            key: self.config.key.clone(),
            path: handle.path().trim_matches('/').to_owned(),
            events: events_of(handle.events()),
            methods: Some(
                handle
                    .methods()
                    .iter()
                    .filter(|m| handle.exposes(m))
                    .map(|m| m.as_str().to_owned())
                    .collect(),
            ),
            remote_options: None,
        })
    }

    fn descriptors(&self) -> Vec<ServiceDescriptor> {
        let Some(app) = self.app.upgrade() else {
            return Vec::new();
        };
        app.services()
            .iter()
            .filter_map(|p| self.descriptor(p))
            .collect()
    }

    fn publish_event(&self, ev: &ServiceEvent) {
        let Some(events_pub) = &self.events_pub else {
            return;
        };
        if !self.is_published(&ev.path) {
            return;
        }
        let context = ev.context.as_deref().map_or(Value::Null, context_json);
        let payload = fd::encode_event(
            ev.path.trim_matches('/'),
            &self.config.key,
            context,
            &ev.data,
        );
        events_pub.publish(&ev.event, &payload);
    }

    /// Answer one RPC request from a Node app.
    async fn respond(&self, request: Value) -> Result<Value, Error> {
        let req: RpcRequest = serde_json::from_value(request)
            .map_err(|e| Error::bad_request(format!("not a feathers-distributed request: {e}")))?;
        let app = self
            .app
            .upgrade()
            .ok_or_else(|| Error::unavailable("the app is gone"))?;
        let handle = app
            .service(&req.path)
            .filter(|h| self.is_published(h.path()) && !h.options().remote)
            .ok_or_else(|| Error::not_found(format!("Can not find service '{}'", req.path)))?;
        match req.rpc()? {
            fd::Rpc::Healthcheck => Ok(Value::Bool(true)),
            fd::Rpc::Call { method, id, data } => {
                if !handle.methods().contains(&method) {
                    return Err(Error::method_not_allowed_on(method.as_str(), &req.path));
                }
                handle.dispatch(method, id, data, req.run_params()).await
            }
        }
    }
}

async fn watch(node: Weak<Inner>, mut events: tokio::sync::broadcast::Receiver<PeerEvent>) {
    loop {
        let event = match events.recv().await {
            Ok(e) => e,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!(missed = n, "cote: discovery events missed, rescanning");
                let Some(n) = node.upgrade() else { return };
                for peer in n.discovery.peers() {
                    n.peer_added(&peer).await;
                }
                continue;
            }
            Err(_) => return,
        };
        let Some(n) = node.upgrade() else { return };
        match event {
            PeerEvent::Added(peer) => n.peer_added(&peer).await,
            PeerEvent::Removed(peer) => n.peer_removed(&peer),
        }
    }
}
