//! Publishing: this node's services on the mesh (one endpoint each, with its descriptor),
//! serving the calls other nodes make to them, and relaying their events.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use plume::{Error, Method, Result, ServiceHandle};
use serde_json::{Map, Value};

use super::call_body::read_call_body;
use super::runtime::{LOG, Shared, same_service};
use super::wire::{
    CallBody, DESCRIPTOR_VERSION, EventContext, EventEnvelope, HEALTH_METHOD, MAX_SCHEMA_BYTES,
    ServiceDescriptor, WITHDRAWN_TOPIC, Withdrawn, endpoint, topic,
};
use crate::mesh::RawRequest;
use crate::sync::lock;

impl Shared {
    pub(super) fn is_healthcheck(&self, path: &str) -> bool {
        let hc = &self.opts.healthcheck_path;
        path == hc || path.starts_with(&format!("{hc}/"))
    }

    /// The descriptor of a local service, or `None` when it is not published.
    pub(super) fn describe(&self, handle: &ServiceHandle) -> Option<ServiceDescriptor> {
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
        let schema = published_schema(path, handle, &methods);
        let d = ServiceDescriptor {
            plume: DESCRIPTOR_VERSION,
            path: path.to_owned(),
            key: o.key.clone(),
            methods,
            idempotent,
            events,
            remote_options,
            schema,
        };
        o.services.matches(&d).then_some(d)
    }

    pub(super) fn local_added(self: &Arc<Self>, handle: &ServiceHandle) {
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
        let served: Arc<str> = path.as_str().into();
        // A raw endpoint: the call body is decoded once, from the frame, straight into a
        // `CallBody` (no `serde_json::Value` of it on the way).
        self.mesh
            .provide_raw(&endpoint(&path), json, move |req: RawRequest| {
                serve(weak.clone(), served.clone(), req)
            });
        tracing::debug!(target: LOG, %path, "published");
    }

    pub(super) fn service_removed(self: &Arc<Self>, handle: &ServiceHandle) {
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

    /// What a peer's call of `path` asks for, once the path and the method are known to be
    /// published: `None` for the healthcheck, else the service, the method and the call's body.
    fn accept(
        &self,
        path: &str,
        req: RawRequest,
    ) -> Result<Option<(ServiceHandle, Method, CallBody)>> {
        let Some(name) = req.method.as_deref() else {
            return Err(Error::bad_request("a service call needs a method"));
        };
        let handle = self.app.service(path);
        // Whether the method is published, read under the lock (the descriptor is not copied).
        let published = {
            let st = lock(&self.state);
            match (&handle, st.published.get(path)) {
                (Some(h), Some((svc, d))) if same_service(h.service(), svc) => {
                    Some(d.methods.iter().any(|m| m == name))
                }
                _ => None,
            }
        };
        let (Some(handle), Some(published)) = (handle, published) else {
            return Err(Error::not_found(format!(
                "Service '{path}' is not published on this node"
            )));
        };
        if name == HEALTH_METHOD {
            return Ok(None);
        }
        if !published {
            return Err(Error::method_not_allowed_on(name, path));
        }
        let method = Method::from_name(name);
        // Walked from the bytes in the usual form (`call_body`); serde otherwise.
        let walked = req.body.msgpack_bytes().and_then(|b| read_call_body(&b));
        let body: CallBody = match walked {
            Some(body) => body,
            None => req.body.decode()?,
        };
        Ok(Some((handle, method, body)))
    }

    pub(super) fn relay_local_event(&self, ev: &plume::ServiceEvent) {
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
}

/// Answer a call from a peer to the service published at `path`, after checking that the
/// path and method are published. One async block holds the request and the service call (an
/// async function taking them by value would keep another copy in its future, which the mesh
/// boxes per call).
// Not an `async fn`: it would keep its arguments twice in its future (see above).
#[allow(clippy::manual_async_fn)]
fn serve(
    shared: Weak<Shared>,
    path: Arc<str>,
    req: RawRequest,
) -> impl Future<Output = Result<Value>> + Send + 'static {
    async move {
        let Some(shared) = shared.upgrade() else {
            return Err(Error::unavailable("the node is shutting down"));
        };
        let handle;
        let call = match shared.accept(&path, req)? {
            None => return Ok(Value::Bool(true)),
            Some((service, method, body)) => {
                handle = service;
                handle.dispatch(method, body.id, body.data, body.params.into_params())
            }
        };
        call.await
    }
}

/// The schema a descriptor carries: the service's own, limited to the published methods, when
/// it describes itself and the JSON text fits in [`MAX_SCHEMA_BYTES`].
fn published_schema(path: &str, handle: &ServiceHandle, methods: &[String]) -> Option<Value> {
    let mut schema = handle.service().schema()?;
    schema.methods.retain(|m| methods.contains(&m.name));
    let text = serde_json::to_string(&schema).ok()?;
    if text.len() > MAX_SCHEMA_BYTES {
        tracing::warn!(
            path,
            bytes = text.len(),
            max = MAX_SCHEMA_BYTES,
            "the service's schema is too large to publish; consumers document it by its methods"
        );
        return None;
    }
    serde_json::from_str(&text).ok()
}
