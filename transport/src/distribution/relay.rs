//! The event relay of a mounted proxy: events of the remote service, re-emitted on this node.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures::StreamExt;
use plume::hooks::{HookContext, HookType};
use plume::{Method, Params, Service};
use tokio::task::AbortHandle;

use super::proxy::ProxyState;
use super::runtime::{LOG, Shared, same_service};
use super::wire::{EventEnvelope, ServiceDescriptor, endpoint, topic};
use crate::discovery::NodeId;

impl Shared {
    /// Subscribe to the proxy's events and re-emit them on it.
    pub(super) fn spawn_relay(
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
            .map(|e| {
                // Each event with the node that published it.
                let sub = self.mesh.subscribe(&topic(&d.path, e));
                futures::stream::unfold(sub, |mut sub| async move {
                    sub.recv_traced().await.map(|event| (event, sub))
                })
                .boxed()
            })
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
            let name = endpoint(&remote_path);
            while let Some((from, v, trace)) = stream.next().await {
                let Ok(env) = serde_json::from_value::<EventEnvelope>(v) else {
                    continue;
                };
                if env.path != remote_path {
                    continue;
                }
                // Only a provider of the path publishes its events, and only those it
                // announced: anything else is a peer injecting events on a foreign topic.
                if !mesh.provider_has(&name, from, |d| announces_event(d, &env.event)) {
                    tracing::warn!(target: LOG, path = %remote_path, event = %env.event, peer = %from, "an event from a node that does not provide it; dropped");
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
                crate::metrics::event_relayed();
                let Some(trace) = trace else {
                    handle.emit_with_context(&env.event, env.data, context);
                    continue;
                };
                // Published in a traced call: re-emitted in its trace, as the hop `relay` (its
                // log lines name the trace id; no span).
                plume::trace::sync_hop_scope("relay", trace, || {
                    tracing::debug!(target: LOG, path = %local, event = %env.event, peer = %from, "relaying an event");
                    handle.emit_with_context(&env.event, env.data, context);
                });
            }
        });
        Some(task.abort_handle())
    }
}

/// Whether descriptor `d` (as published on the mesh) lists `event` among its events.
fn announces_event(d: &serde_json::Value, event: &str) -> bool {
    d.get("events")
        .and_then(serde_json::Value::as_array)
        .is_some_and(|events| events.iter().any(|e| e.as_str() == Some(event)))
}
