//! The service table: this node's endpoints and topics, the routes to every provider, and the
//! [`Sink`] through which engines change it.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Weak};

use bytes::Bytes;
use serde_json::Value;
use tokio::sync::{broadcast, mpsc};

use super::handler::EndpointHandler;
use super::{Delivered, Inner, LOG, Mesh, ProviderInfo, Subscription, TableEvent, TableWatch};
use crate::discovery::NodeId;
use crate::engine::{Activity, Remote, Removal, Served, Sink};
use crate::protocol::{Entry, FrameError, TableDelta, TableSnapshot};
use crate::sync::{lock, read, write};
use plume::Error;
use plume::trace::TraceContext;

/// Capacity of each subscription's queue.
const TOPIC_CAPACITY: usize = 4096;

/// A subscription's queue was full: the event is lost for it (counted and logged).
fn full_queue(sent: Result<(), mpsc::error::TrySendError<Delivered>>) {
    if let Err(mpsc::error::TrySendError::Full(_)) = sent {
        crate::metrics::events_dropped("lagged", 1);
        tracing::warn!(target: LOG, "subscriber lagged; an event is lost");
    }
}

/// The changes after now, and an `Added` for every provider the table holds now. Subscribing
/// with the routes locked means every change after the snapshot is seen (changes update the
/// routes before they send their event).
fn watch_snapshot(inner: &Inner) -> (broadcast::Receiver<TableEvent>, Vec<TableEvent>) {
    let routes = inner.routes_read();
    let rx = inner.table_events.subscribe();
    let snapshot = routes
        .iter()
        .flat_map(|(name, list)| {
            list.iter().map(move |r| TableEvent::Added {
                name: name.clone(),
                node: r.node,
                key: r.key.clone(),
                descriptor: r.descriptor.clone(),
            })
        })
        .collect();
    (rx, snapshot)
}

/// What one [`TableWatch`] knows: its buffer, what it has reported (to resync after a lag),
/// and the events it has yet to give.
struct WatchState {
    rx: broadcast::Receiver<TableEvent>,
    /// Weak: a watcher does not keep the node alive (its events end with the node).
    inner: Weak<Inner>,
    /// The providers (endpoint, node) this watcher has reported and not reported gone.
    known: HashSet<(String, NodeId)>,
    /// The snapshot, or a resync's events, still to give.
    queue: VecDeque<TableEvent>,
}

impl WatchState {
    async fn next(&mut self) -> Option<TableEvent> {
        loop {
            if let Some(ev) = self.queue.pop_front() {
                self.track(&ev);
                return Some(ev);
            }
            match self.rx.recv().await {
                Ok(ev) => {
                    self.track(&ev);
                    return Some(ev);
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!(target: LOG, missed, "table watcher lagged; resyncing from the table");
                    self.resync()?;
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }

    fn track(&mut self, ev: &TableEvent) {
        match ev {
            TableEvent::Added { name, node, .. } => {
                self.known.insert((name.clone(), *node));
            }
            TableEvent::Removed { name, node, .. } => {
                self.known.remove(&(name.clone(), *node));
            }
        }
    }

    /// Read the table again: `Removed` for what is gone, `Added` for all there is. None once
    /// the node is gone.
    fn resync(&mut self) -> Option<()> {
        let inner = self.inner.upgrade()?;
        let (rx, snapshot) = watch_snapshot(&inner);
        drop(inner);
        self.rx = rx;
        let now: HashSet<(&str, NodeId)> = snapshot
            .iter()
            .filter_map(|ev| match ev {
                TableEvent::Added { name, node, .. } => Some((name.as_str(), *node)),
                TableEvent::Removed { .. } => None,
            })
            .collect();
        let mut gone: Vec<&(String, NodeId)> = self
            .known
            .iter()
            .filter(|(name, node)| !now.contains(&(name.as_str(), *node)))
            .collect();
        gone.sort();
        let removed: Vec<TableEvent> = gone
            .into_iter()
            .map(|(name, node)| TableEvent::Removed {
                name: name.clone(),
                node: *node,
                reason: Removal::NodeLost,
            })
            .collect();
        self.queue.extend(removed);
        self.queue.extend(snapshot);
        Some(())
    }
}

/// How a route reaches its provider.
#[derive(Clone)]
pub(super) enum Target {
    /// A handler on this node.
    Local(EndpointHandler),
    /// Another node, through the engine.
    Remote(Arc<dyn Remote>),
}

/// The providers of each endpoint name, read on every call. Hashed with foldhash (a random seed
/// per map) rather than SipHash: names come from peers of the mesh, not from clients.
pub(super) type Routes = HashMap<String, Vec<Route>, foldhash::fast::RandomState>;

/// One provider of a name.
#[derive(Clone)]
pub(super) struct Route {
    pub(super) node: NodeId,
    pub(super) key: String,
    pub(super) descriptor: Value,
    pub(super) target: Target,
    /// Its `plume_mesh_peer_calls_total` series (by `key`), once a call was sent to it.
    pub(super) peer_calls: crate::metrics::PeerCalls,
}

struct LocalEndpoint {
    descriptor: Value,
    handler: EndpointHandler,
}

struct TopicState {
    /// One queue per subscription, each event with the node that published it. A queue
    /// (tokio's mpsc) takes memory as events wait in it, not up front: a gateway subscribes to
    /// four topics per remote service, and a broadcast channel of 4,096 slots each made a
    /// thousand mounted services cost 1.5 GB and seconds of page clearing.
    subs: Vec<mpsc::Sender<Delivered>>,
    count: usize,
}

/// What this node provides and subscribes to.
#[derive(Default)]
pub(crate) struct LocalState {
    endpoints: HashMap<String, LocalEndpoint>,
    pub(super) version: u64,
    topics: HashMap<String, TopicState>,
}

impl LocalState {
    fn snapshot(&self) -> TableSnapshot {
        TableSnapshot {
            version: self.version,
            entries: self
                .endpoints
                .iter()
                .map(|(name, ep)| Entry {
                    name: name.clone(),
                    descriptor: ep.descriptor.clone(),
                })
                .collect(),
            topics: self.topics.keys().cloned().collect(),
        }
    }
}

/// Whether `route` goes through `via`.
fn through(route: &Route, via: &Arc<dyn Remote>) -> bool {
    matches!(&route.target, Target::Remote(r) if std::ptr::addr_eq(Arc::as_ptr(r), Arc::as_ptr(via)))
}

/// How many other nodes the routes reach (for the metric).
#[cfg_attr(not(feature = "metrics"), allow(dead_code))]
fn peers(routes: &Routes) -> usize {
    let nodes: std::collections::HashSet<NodeId> = routes
        .values()
        .flatten()
        .filter(|r| matches!(r.target, Target::Remote(_)))
        .map(|r| r.node)
        .collect();
    nodes.len()
}

impl Inner {
    fn table_bumped(&self) {
        self.table_changed.send_modify(|v| *v = v.wrapping_add(1));
    }

    pub(super) fn routes_read(&self) -> std::sync::RwLockReadGuard<'_, Routes> {
        read(&self.routes)
    }

    pub(super) fn local_handler(&self, name: &str) -> Option<EndpointHandler> {
        lock(&self.local)
            .endpoints
            .get(name)
            .map(|e| e.handler.clone())
            .or_else(|| self.builtin_handler(name))
    }

    fn deliver_local(&self, from: NodeId, topic: &str, data: Value, trace: Option<TraceContext>) {
        let mut local = lock(&self.local);
        let Some(t) = local.topics.get_mut(topic) else {
            return;
        };
        t.subs.retain(|tx| !tx.is_closed());
        let Some((last, others)) = t.subs.split_last() else {
            return;
        };
        for tx in others {
            full_queue(tx.try_send((from, data.clone(), trace)));
        }
        full_queue(last.try_send((from, data, trace)));
    }

    /// A [`Subscription`] of `topic` ended.
    pub(super) fn unsubscribed(&self, topic: &str) {
        let mut local = lock(&self.local);
        let last = match local.topics.get_mut(topic) {
            Some(t) => {
                t.count = t.count.saturating_sub(1);
                t.count == 0
            }
            None => false,
        };
        if last {
            local.topics.remove(topic);
            self.engine.unsubscribe(topic);
        }
    }

    /// Publish a change of this node's table: to the engine (with the table locked, so deltas
    /// keep their order), then to watchers.
    fn local_changed(
        &self,
        mut local: std::sync::MutexGuard<'_, LocalState>,
        name: &str,
        added: Option<Value>,
    ) {
        local.version += 1;
        let delta = TableDelta {
            version: local.version,
            added: added
                .iter()
                .map(|descriptor| Entry {
                    name: name.to_string(),
                    descriptor: descriptor.clone(),
                })
                .collect(),
            removed: if added.is_none() {
                vec![name.to_string()]
            } else {
                Vec::new()
            },
        };
        self.engine.announce(&delta);
        drop(local);
        let _ = self.table_events.send(match added {
            Some(descriptor) => TableEvent::Added {
                name: name.to_string(),
                node: self.node,
                key: self.key.clone(),
                descriptor,
            },
            None => TableEvent::Removed {
                name: name.to_string(),
                node: self.node,
                reason: Removal::Withdrawn,
            },
        });
        self.table_bumped();
    }
}

impl Sink for Inner {
    fn with_table(&self, f: &mut dyn FnMut(TableSnapshot)) {
        let local = lock(&self.local);
        f(local.snapshot());
    }

    fn provider_added(&self, via: &Arc<dyn Remote>, key: &str, entries: Vec<Entry>) {
        if entries.is_empty() || !via.is_live() {
            return;
        }
        let node = via.node();
        let mut routes = write(&self.routes);
        let added = entries.len();
        for e in entries {
            let list = routes.entry(e.name.clone()).or_default();
            list.retain(|r| r.node != node);
            list.push(Route {
                node,
                key: key.to_owned(),
                descriptor: e.descriptor.clone(),
                target: Target::Remote(via.clone()),
                peer_calls: Default::default(),
            });
            let _ = self.table_events.send(TableEvent::Added {
                name: e.name,
                node,
                key: key.to_owned(),
                descriptor: e.descriptor,
            });
        }
        crate::metrics::table(added, 0, None, || peers(&routes));
        drop(routes);
        self.table_bumped();
    }

    fn provider_removed(&self, via: &Arc<dyn Remote>, names: Option<&[String]>, why: Removal) {
        let mut routes = write(&self.routes);
        let mut removed = Vec::new();
        let mut check = |name: &str, list: &mut Vec<Route>| {
            let before = list.len();
            list.retain(|r| !through(r, via));
            if list.len() != before {
                removed.push(name.to_string());
            }
        };
        match names {
            Some(names) => {
                for n in names {
                    if let Some(list) = routes.get_mut(n) {
                        check(n, list);
                    }
                }
            }
            None => {
                for (n, list) in routes.iter_mut() {
                    check(n, list);
                }
            }
        }
        routes.retain(|_, l| !l.is_empty());
        crate::metrics::table(0, removed.len(), Some(why), || peers(&routes));
        drop(routes);
        if removed.is_empty() {
            return;
        }
        let node = via.node();
        for name in removed {
            let _ = self.table_events.send(TableEvent::Removed {
                name,
                node,
                reason: why,
            });
        }
        self.table_bumped();
    }

    fn deliver(&self, from: NodeId, topic: &str, data: Value, trace: Option<TraceContext>) {
        self.deliver_local(from, topic, data, trace);
    }

    fn serve(
        &self,
        payload: Bytes,
        from: NodeId,
        admit: &mut dyn FnMut(&str, bool) -> Result<(), Error>,
    ) -> Result<Served, FrameError> {
        self.serve_payload(payload, from, admit)
    }

    fn endpoint_names(&self) -> Vec<String> {
        let mut v: Vec<String> = lock(&self.local).endpoints.keys().cloned().collect();
        v.sort();
        v
    }

    fn activity(&self) -> &Arc<Activity> {
        &self.activity
    }
}

impl Mesh {
    /// Provide (or re-describe) endpoint `name`, served by `handler`.
    pub fn provide(&self, name: &str, descriptor: Value, handler: impl super::Handler) {
        self.provide_endpoint(name, descriptor, EndpointHandler::Plain(Arc::new(handler)));
    }

    /// [`provide`](Self::provide) with a handler that decodes the call body itself
    /// ([`RawBody::decode`](super::RawBody::decode)), into its own type: a call from another
    /// node is decoded once, straight from MessagePack.
    pub fn provide_raw(&self, name: &str, descriptor: Value, handler: impl super::RawHandler) {
        self.provide_endpoint(name, descriptor, EndpointHandler::Raw(Arc::new(handler)));
    }

    fn provide_endpoint(&self, name: &str, descriptor: Value, handler: EndpointHandler) {
        let inner = &self.inner;
        let mut local = lock(&inner.local);
        local.endpoints.insert(
            name.to_string(),
            LocalEndpoint {
                descriptor: descriptor.clone(),
                handler: handler.clone(),
            },
        );
        {
            let mut routes = write(&inner.routes);
            let list = routes.entry(name.to_string()).or_default();
            list.retain(|r| r.node != inner.node);
            list.push(Route {
                node: inner.node,
                key: inner.key.clone(),
                descriptor: descriptor.clone(),
                target: Target::Local(handler),
                peer_calls: Default::default(),
            });
        }
        inner.local_changed(local, name, Some(descriptor));
    }

    /// Stop providing `name`. Calls already running finish.
    pub fn withdraw(&self, name: &str) {
        let inner = &self.inner;
        let mut local = lock(&inner.local);
        if local.endpoints.remove(name).is_none() {
            return;
        }
        {
            let mut routes = write(&inner.routes);
            if let Some(list) = routes.get_mut(name) {
                list.retain(|r| r.node != inner.node);
                if list.is_empty() {
                    routes.remove(name);
                }
            }
        }
        inner.local_changed(local, name, None);
    }

    /// Whether `node` provides `name` with a descriptor `check` accepts (without cloning any).
    pub(crate) fn provider_has(
        &self,
        name: &str,
        node: NodeId,
        check: impl FnOnce(&Value) -> bool,
    ) -> bool {
        self.inner
            .routes_read()
            .get(name)
            .and_then(|list| list.iter().find(|r| r.node == node))
            .is_some_and(|r| check(&r.descriptor))
    }

    /// The live providers of `name` (this node included when it provides it).
    pub fn providers(&self, name: &str) -> Vec<ProviderInfo> {
        self.inner
            .routes_read()
            .get(name)
            .map(|list| {
                list.iter()
                    .map(|r| ProviderInfo {
                        node: r.node,
                        key: r.key.clone(),
                        descriptor: r.descriptor.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Watch the service table: first an [`Added`](TableEvent::Added) for every provider the
    /// table holds now (this node's own endpoints included), then every change. A change that
    /// races with the snapshot may repeat what the snapshot said; none is lost.
    ///
    /// Each watcher has its own buffer of 1024 events. A watcher that falls further behind (a
    /// peer's table of a thousand endpoints arrives at once) resyncs by itself: it reads the
    /// table again, gives a [`Removed`](TableEvent::Removed) (reason
    /// [`NodeLost`](Removal::NodeLost)) for every provider it had reported that is gone, then
    /// an `Added` for every provider the table holds, and carries on with the changes after
    /// that (a warning is logged).
    pub fn watch(&self) -> TableWatch {
        let (rx, snapshot) = watch_snapshot(&self.inner);
        let state = WatchState {
            rx,
            inner: Arc::downgrade(&self.inner),
            known: HashSet::new(),
            queue: snapshot.into(),
        };
        let events = futures::stream::unfold(state, |mut st| async move {
            let ev = st.next().await?;
            Some((ev, st))
        });
        TableWatch {
            stream: Box::pin(events),
        }
    }

    /// Publish `data` on `topic` to local subscribers and to every node that subscribed to it.
    /// Events are fire-and-forget: a peer whose write queue is full misses this event (a
    /// warning is logged). Published while a call runs in a trace ([`plume::trace::current`]),
    /// the event carries that trace to its subscribers
    /// ([`Subscription::recv_traced`](super::Subscription::recv_traced)).
    pub fn publish(&self, topic: &str, data: Value) {
        crate::metrics::event_published();
        let trace = plume::trace::current().map(|ctx| ctx.child());
        self.inner.engine.publish(topic, &data, trace);
        self.inner
            .deliver_local(self.inner.node, topic, data, trace);
    }

    /// Receive the events published on `topic` anywhere in the mesh from now on.
    pub fn subscribe(&self, topic: &str) -> Subscription {
        let inner = &self.inner;
        let mut local = lock(&inner.local);
        let (tx, rx) = mpsc::channel(TOPIC_CAPACITY);
        match local.topics.get_mut(topic) {
            Some(t) => {
                t.count += 1;
                t.subs.push(tx);
            }
            None => {
                local.topics.insert(
                    topic.to_string(),
                    TopicState {
                        subs: vec![tx],
                        count: 1,
                    },
                );
                inner.engine.subscribe(topic);
            }
        }
        drop(local);
        let stream = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|event| (event, rx))
        });
        Subscription {
            topic: topic.to_string(),
            inner: inner.clone(),
            stream: Box::pin(stream),
        }
    }
}
