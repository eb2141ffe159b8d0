//! Consuming: the state machine that turns table events and withdrawal notices into
//! [`Action`]s (mount a proxy, unmount one) under the state lock; [`mount`](super::mount) carries
//! them out after it.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;
use std::sync::Weak;
use std::sync::atomic::Ordering;

use serde_json::Value;
use tokio::sync::mpsc;

use super::runtime::{Action, LOG, MAX_WITHDRAWN, Remote, Shared};
use super::wire::{DESCRIPTOR_VERSION, ServiceDescriptor, Withdrawn, endpoint, path_of};
use crate::discovery::NodeId;
use crate::mesh::TableEvent;
use crate::sync::lock;

impl Shared {
    pub(super) fn local_path(&self, d: &ServiceDescriptor) -> String {
        match &self.opts.remote_service_path {
            Some(rename) => plume::normalize_path(&rename(d)),
            None => d.path.clone(),
        }
    }

    pub(super) fn on_table(self: &Arc<Self>, ev: TableEvent) {
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

    pub(super) fn provider_added(
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

    pub(super) fn provider_removed(
        self: &Arc<Self>,
        name: &str,
        node: NodeId,
        notice: bool,
    ) -> Action {
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

    pub(super) fn on_withdrawn(self: &Arc<Self>, notice: &Value) {
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

    pub(super) fn grace_over(&self, local: &str, epoch: u64) {
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

    pub(super) fn recheck(self: &Arc<Self>, local: &str) {
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
}

/// The descriptor the proxy uses: the union of what its providers publish.
pub(super) fn merge(
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

pub(super) fn signature(d: &ServiceDescriptor) -> (Vec<String>, Vec<String>) {
    let mut m = d.methods.clone();
    m.sort();
    let mut e = d.events.clone();
    e.sort();
    (m, e)
}

pub(super) async fn table_loop(
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
