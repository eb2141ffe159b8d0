//! Carrying out the consumer's [`Action`]s: mounting a proxy for a remote service, or taking it
//! down.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use plume::{Service, ServiceOptions};

use super::consumer::signature;
use super::proxy::Proxy;
use super::runtime::{Action, LOG, Mounted, Shared, same_service};
use super::wire::ServiceDescriptor;
use crate::discovery::NodeId;
use crate::sync::lock;

impl Shared {
    pub(super) fn act(self: &Arc<Self>, action: Action) {
        match action {
            Action::None => {}
            Action::Mount { local, descriptor } => self.mount(&local, descriptor),
            Action::Unmount { local, mounted } => self.unmount(&local, mounted),
            Action::StartGrace { local, epoch } => self.start_grace(local, epoch),
            Action::Changed => self.bump(),
        }
    }

    /// Answer 503 during the grace period of `local`, then remove the proxy (unless a provider
    /// came back, which starts a new epoch).
    fn start_grace(self: &Arc<Self>, local: String, epoch: u64) {
        if self.stopped.load(Ordering::Acquire) {
            return;
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
        {
            let mut st = lock(&self.state);
            match st.remotes.get_mut(&local).and_then(|r| r.mounted.as_mut()) {
                Some(m) => m.grace_task = Some(task.abort_handle()),
                None => task.abort(),
            }
        }
        tracing::info!(target: LOG, path = %local, "last provider left; answering 503 during the grace period");
        self.bump();
    }

    pub(super) fn unmount(&self, local: &str, mut m: Mounted) {
        m.stop_tasks();
        if let Some(h) = self.app.service(local)
            && same_service(h.service(), &m.service)
        {
            self.app.unuse(local);
        }
        self.bump();
    }

    pub(super) fn mount(self: &Arc<Self>, local: &str, descriptor: ServiceDescriptor) {
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
            self.opts
                .partitioned
                .iter()
                .find(|(path, _)| path == local)
                .map(|(_, field)| Arc::from(field.as_str())),
        );
        let state = proxy.state.clone();
        state.available.store(true, Ordering::Release);
        let proxy = Arc::new(proxy);
        let service: Arc<dyn Service> = proxy.clone();
        let options = ServiceOptions {
            methods: Some(descriptor.method_list()),
            events: descriptor.custom_events(),
            remote: true,
        };
        let handle = self.app.use_forwarding(local, proxy, options);
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
}
