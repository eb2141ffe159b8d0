//! The consumer side of a [`CoteNode`](super::CoteNode): connections to the components it
//! hears, remote services mounted as proxies, their events re-emitted.

use std::net::SocketAddr;
use std::sync::Arc;

use futures::future::BoxFuture;
use plume::{HookContext, HookType, Method, ServiceOptions};
use serde_json::Value;

use super::{Inner, RemoteKey, lock};
use crate::axon::{self, Requester};
use crate::discovery::Peer;
use crate::fd::{
    self, DEFAULT_EVENTS, SERVICE, SERVICE_REMOVED, SERVICES, ServiceDescriptor, names,
};
use crate::hello::AxonType;
use crate::proxy::CoteProxy;

impl Inner {
    /// A component was heard: connect the consumer side to it when it is one of ours to use.
    pub(super) fn peer_added<'a>(self: &'a Arc<Self>, peer: &'a Peer) -> BoxFuture<'a, ()> {
        Box::pin(self.peer_added_inner(peer))
    }

    async fn peer_added_inner(self: &Arc<Self>, peer: &Peer) {
        if !self.config.consume {
            return;
        }
        let ad = &peer.advertisement;
        let Some(port) = ad.port else { return };
        let addr = SocketAddr::new(peer.address, port);
        let ns = ad.namespace.clone().unwrap_or_default();
        if ad.extra.get("appUuid").and_then(Value::as_str) == Some(self.uuid.as_str()) {
            return;
        }
        let services_key = self.config.cote_key(SERVICES);
        if ad.axon_type == Some(AxonType::PubEmitter) && ad.key == services_key && ns == SERVICES {
            self.subscribe_services(peer, addr).await;
            return;
        }
        let requester = {
            let remotes = lock(&self.remotes);
            remotes
                .get(&ns)
                .filter(|_| ad.key == self.config.cote_key(&ns))
                .map(|r| r.requester.clone())
        };
        let Some(requester) = requester else { return };
        match ad.axon_type {
            Some(AxonType::Rep) => {
                let discovery = self.discovery.clone();
                let iid = peer.iid.clone();
                let again = iid.clone();
                if let Err(e) = requester
                    .connect(iid, addr, move || discovery.redial(&again))
                    .await
                {
                    tracing::warn!(%addr, error = %e, "cote: cannot connect to a responder");
                    self.discovery.redial(&peer.iid);
                }
            }
            Some(AxonType::PubEmitter) => self.subscribe_events(peer, addr, ns).await,
            _ => {}
        }
    }

    async fn subscribe_services(self: &Arc<Self>, peer: &Peer, addr: SocketAddr) {
        let weak = Arc::downgrade(self);
        let on_event = move |topic: &str, data: Value| {
            let Some(n) = weak.upgrade() else { return };
            let Ok(d) = serde_json::from_value::<ServiceDescriptor>(data) else {
                tracing::debug!(topic, "cote: a service message of another shape dropped");
                return;
            };
            match topic {
                SERVICE => {
                    tokio::spawn(async move { n.remote_service(d).await });
                }
                SERVICE_REMOVED => n.remote_service_removed(&d),
                other => tracing::debug!(topic = other, "cote: unknown services topic"),
            }
        };
        self.subscribe_to(peer, addr, SERVICES.into(), on_event)
            .await;
    }

    async fn subscribe_events(self: &Arc<Self>, peer: &Peer, addr: SocketAddr, key: String) {
        let weak = Arc::downgrade(self);
        let on_event = move |topic: &str, data: Value| {
            if let Some(n) = weak.upgrade() {
                n.remote_event(topic, data);
            }
        };
        self.subscribe_to(peer, addr, key, on_event).await;
    }

    async fn subscribe_to(
        self: &Arc<Self>,
        peer: &Peer,
        addr: SocketAddr,
        namespace: String,
        on_event: impl Fn(&str, Value) + Send + Sync + 'static,
    ) {
        if lock(&self.subs)
            .get(&peer.iid)
            .is_some_and(|h| !h.is_finished())
        {
            return;
        }
        let weak = Arc::downgrade(self);
        let iid = peer.iid.clone();
        let max = self.config.max_frame;
        let on_close = move || {
            if let Some(n) = weak.upgrade() {
                lock(&n.subs).remove(&iid);
                n.discovery.redial(&iid);
            }
        };
        match axon::subscribe(addr, Some(namespace), max, on_event, on_close).await {
            Ok(handle) => {
                lock(&self.subs).insert(peer.iid.clone(), handle);
            }
            Err(e) => {
                tracing::warn!(%addr, error = %e, "cote: cannot connect to a publisher");
                self.discovery.redial(&peer.iid);
            }
        }
    }

    /// A `service` message: know the key, mount the proxy.
    async fn remote_service(self: &Arc<Self>, d: ServiceDescriptor) {
        if d.uuid == self.uuid {
            return;
        }
        let (requester, new_key) = {
            let mut remotes = lock(&self.remotes);
            let new_key = !remotes.contains_key(&d.key);
            let entry = remotes.entry(d.key.clone()).or_insert_with(|| RemoteKey {
                requester: Requester::new(self.config.max_waiting, self.config.max_frame),
            });
            (entry.requester.clone(), new_key)
        };
        if new_key {
            for peer in self.discovery.peers() {
                self.peer_added(&peer).await;
            }
        }
        let Some(app) = self.app.upgrade() else {
            return;
        };
        let path = plume::normalize_path(&d.path);
        if app.service(&path).is_some() {
            return;
        }
        let methods: Vec<Method> = d
            .methods
            .clone()
            .unwrap_or_else(|| {
                fd::DEFAULT_METHODS
                    .iter()
                    .map(|m| (*m).to_owned())
                    .collect()
            })
            .iter()
            .map(|m| Method::from_name(m))
            .collect();
        let custom_events: Vec<String> = d
            .events
            .iter()
            .filter(|e| !DEFAULT_EVENTS.contains(&e.as_str()))
            .cloned()
            .collect();
        let proxy = CoteProxy {
            requester,
            key: d.key.clone(),
            path: d.path.clone(),
            methods,
            events: custom_events.clone(),
            timeout: self.config.request_timeout,
        };
        lock(&self.mounted).insert(path.clone(), d.key.clone());
        let mut options = ServiceOptions::new().events(custom_events);
        options.remote = true;
        app.use_service_with(&path, proxy, options);
        tracing::info!(
            path,
            key = d.key,
            "cote: mounted a feathers-distributed service"
        );
    }

    fn remote_service_removed(&self, d: &ServiceDescriptor) {
        let path = plume::normalize_path(&d.path);
        let ours = lock(&self.mounted).get(&path) == Some(&d.key);
        if ours {
            self.unmount(&path);
        }
    }

    fn unmount(&self, path: &str) {
        if let Some(app) = self.app.upgrade() {
            app.unuse(path);
        }
        lock(&self.mounted).remove(path);
        tracing::info!(path, "cote: unmounted a feathers-distributed service");
    }

    fn remote_event(&self, event: &str, payload: Value) {
        let Some(ev) = fd::decode_event(payload) else {
            tracing::debug!(event, "cote: an event without a path dropped");
            return;
        };
        let path = plume::normalize_path(&ev.path);
        if lock(&self.mounted).get(&path) != Some(&ev.key) {
            return;
        }
        let Some(app) = self.app.upgrade() else {
            return;
        };
        let Some(handle) = app.service(&path) else {
            return;
        };
        let mut params = plume::Params::new();
        params.from_remote = true;
        if let Some(Value::Object(q)) = ev.context.pointer("/params/query") {
            params.query = q.clone();
        }
        let method = ev
            .context
            .get("method")
            .and_then(Value::as_str)
            .map_or_else(|| Method::Custom(event.to_owned()), Method::from_name);
        let id = ev.context.get("id").and_then(plume::Id::from_value);
        let mut ctx = HookContext::new(app.clone(), path, method, id, None, params);
        ctx.hook_type = HookType::Around;
        ctx.result = Some(ev.data.clone());
        ctx.event = Some(event.to_owned());
        handle.emit_with_context(event, ev.data, Some(Arc::new(ctx)));
    }

    /// A component fell silent: close what this node had with it; when it was the services
    /// publisher of the last app of a key, unmount that key's proxies (as feathers-distributed).
    pub(super) fn peer_removed(&self, peer: &Peer) {
        if let Some(h) = lock(&self.subs).remove(&peer.iid) {
            h.abort();
        }
        let ad = &peer.advertisement;
        let ns = ad.namespace.clone().unwrap_or_default();
        if ad.axon_type == Some(AxonType::Rep)
            && let Some(r) = lock(&self.remotes).get(&ns)
        {
            r.requester.disconnect(&peer.iid);
        }
        if ad.name != names::SERVICES_PUBLISHER {
            return;
        }
        let Some(key) = ad.extra.get("appDistributionKey").and_then(Value::as_str) else {
            return;
        };
        // Another app of the key still announces its services publisher: keep the proxies.
        let others = self.discovery.peers().iter().any(|p| {
            p.iid != peer.iid
                && p.advertisement.name == names::SERVICES_PUBLISHER
                && p.advertisement
                    .extra
                    .get("appDistributionKey")
                    .and_then(Value::as_str)
                    == Some(key)
        });
        let last = !others && lock(&self.remotes).remove(key).is_some();
        if last {
            let paths: Vec<String> = lock(&self.mounted)
                .iter()
                .filter(|(_, k)| k.as_str() == key)
                .map(|(p, _)| p.clone())
                .collect();
            for p in paths {
                self.unmount(&p);
            }
        }
    }
}
