//! The NATS JetStream key-value backend, for users who run NATS: the store is the authority.
//!
//! One bucket per set, `plume_instances_<set>`, whose keys expire `lease` after their last
//! write (the bucket's `max_age`, history 1):
//!
//! - `member.<node>`: each node rewrites its own every `renew` (the members are the keys alive);
//! - `leader`: taken with a create (only if absent), renewed with a compare-and-set on its
//!   revision; the leader writes the assignment, nothing else depends on it;
//! - `assign`: the leader's assignment (configuration id → node), advisory;
//! - `cfg.<id>`: the lease of one configuration, taken with a create and renewed with a
//!   compare-and-set by its holder only. Its **create revision is the fencing token** (revisions
//!   are the bucket's stream sequence: every grant of any configuration gets a larger one).
//!
//! A holder counts its lease until `sent + lease − drift`, `sent` being when its last successful
//! write left; the server expires the key `lease` after it stored it, later on any clock within
//! the drift. A holder that cannot renew stops at its own lease end; the key then expires, and
//! only then can another node create it. A holder told to move a configuration stops it first,
//! then deletes the key (compare-and-delete on its revision).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, PoisonError};

use async_nats::jetstream::kv::{Operation, Store};
use async_nats::jetstream::stream;
use bytes::Bytes;
use futures::TryStreamExt as _;
use plume_transport::NodeId;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

use crate::assign::{assign, avoid_refused};
use crate::backoff::Failures;
use crate::node::LOG;
use crate::runner::sleep_until_opt;
use crate::{InstanceConfig, InstanceError, InstanceSet, Settings};

/// The bucket of set `name`.
pub fn bucket(name: &str) -> String {
    format!("plume_instances_{name}")
}

fn check_name(name: &str) -> Result<(), InstanceError> {
    let ok = !name.is_empty()
        && name.len() <= crate::mesh::MAX_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(InstanceError::Name(name.to_owned()))
    }
}

fn nats_err(e: impl std::fmt::Display) -> InstanceError {
    InstanceError::Call(e.to_string())
}

/// A configuration id as a key (ids are free text; keys are not).
fn cfg_key(id: &str) -> String {
    let mut key = String::from("cfg.");
    for b in id.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
            key.push(char::from(b));
        } else {
            let _ = write!(key, "={b:02x}");
        }
    }
    key
}

struct Held<I> {
    config: InstanceConfig,
    /// The create revision: the fencing token.
    fencing: u64,
    /// The key's last revision (for the next compare-and-set).
    revision: u64,
    until: Instant,
    instance: I,
}

/// A member of an instance set on NATS JetStream KV (see [`register`]).
pub struct KvManager {
    node: NodeId,
    stop: watch::Sender<bool>,
    task: Mutex<Option<JoinHandle<()>>>,
    holding: Arc<Mutex<BTreeMap<String, u64>>>,
}

impl std::fmt::Debug for KvManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvManager")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

impl KvManager {
    /// This node.
    pub fn node(&self) -> NodeId {
        self.node
    }

    /// What runs here: configuration id → fencing token.
    pub fn running(&self) -> BTreeMap<String, u64> {
        self.holding
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Stop every instance here, release their keys, and leave.
    pub async fn shutdown(&self) {
        let _ = self.stop.send(true);
        let task = self
            .task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(task) = task
            && let Err(e) = task.await
        {
            tracing::warn!(target: LOG, "instance task ended badly: {e}");
        }
    }
}

impl Drop for KvManager {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// Take part in instance set `name` through the JetStream KV of `client`'s server (its bucket
/// is created when missing). Err for a bad name or settings, or when JetStream is unavailable.
pub async fn register<S: InstanceSet>(
    client: async_nats::Client,
    name: &str,
    set: S,
    settings: Settings,
) -> Result<KvManager, InstanceError> {
    check_name(name)?;
    settings.validate()?;
    let js = async_nats::jetstream::new(client);
    let store = match js.get_key_value(bucket(name)).await {
        Ok(store) => store,
        Err(_) => {
            // The bucket's stream, as `create_key_value` would make it (which first asks for
            // the account's limits in a form nats-server 2.9 does not answer).
            let b = bucket(name);
            js.get_or_create_stream(stream::Config {
                name: format!("KV_{b}"),
                subjects: vec![format!("$KV.{b}.>")],
                max_messages_per_subject: 1,
                max_age: settings.lease,
                // On disk (the server's store directory): the bucket outlives a restart of
                // the server, and its keys still expire by age.
                storage: stream::StorageType::File,
                allow_rollup: true,
                deny_delete: true,
                allow_direct: true,
                discard: stream::DiscardPolicy::New,
                ..Default::default()
            })
            .await
            .map_err(nats_err)?;
            js.get_key_value(b).await.map_err(nats_err)?
        }
    };
    let node = NodeId::random();
    let (stop, rx) = watch::channel(false);
    let holding = Arc::new(Mutex::new(BTreeMap::new()));
    let kv = KvNode {
        node,
        settings,
        store,
        set: Arc::new(set),
        held: BTreeMap::new(),
        leader_revision: None,
        holding: Arc::clone(&holding),
        failures: Failures::default(),
    };
    let task = tokio::spawn(kv.run(rx));
    Ok(KvManager {
        node,
        stop,
        task: Mutex::new(Some(task)),
        holding,
    })
}

struct KvNode<S: InstanceSet> {
    node: NodeId,
    settings: Settings,
    store: Store,
    set: Arc<S>,
    held: BTreeMap<String, Held<S::Instance>>,
    leader_revision: Option<u64>,
    holding: Arc<Mutex<BTreeMap<String, u64>>>,
    /// Configurations whose creation failed here (given up ones are listed in `member.<node>`).
    failures: Failures,
}

impl<S: InstanceSet> KvNode<S> {
    fn me(&self) -> String {
        self.node.to_string()
    }

    fn publish(&self) {
        *self.holding.lock().unwrap_or_else(PoisonError::into_inner) = self
            .held
            .iter()
            .map(|(id, h)| (id.clone(), h.fencing))
            .collect();
    }

    /// One store operation, at most `call_timeout`.
    async fn op<T, E: std::fmt::Display>(
        &self,
        fut: impl Future<Output = Result<T, E>>,
    ) -> Result<T, InstanceError> {
        match tokio::time::timeout(self.settings.call_timeout, fut).await {
            Ok(r) => r.map_err(nats_err),
            Err(_) => Err(InstanceError::Call("timed out".into())),
        }
    }

    fn lease_end(&self, sent: Instant) -> Instant {
        sent + self.settings.lease.saturating_sub(self.settings.drift)
    }

    async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(self.settings.renew);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut health = tokio::time::interval(self.settings.health_interval);
        health.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            let expiry = self.held.values().map(|h| h.until).min();
            tokio::select! {
                biased;
                _ = stop.changed() => break,
                _ = sleep_until_opt(expiry) => self.expire().await,
                _ = tick.tick() => self.round().await,
                _ = health.tick() => self.check().await,
            }
            self.expire().await;
        }
        let ids: Vec<String> = self.held.keys().cloned().collect();
        for id in ids {
            self.release(&id).await;
        }
        let _ = self
            .op(self.store.delete(format!("member.{}", self.me())))
            .await;
        self.publish();
    }

    /// Stop what is past its lease end.
    async fn expire(&mut self) {
        let now = Instant::now();
        let gone: Vec<String> = self
            .held
            .iter()
            .filter(|(_, h)| h.until <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in gone {
            if let Some(h) = self.held.remove(&id) {
                tracing::warn!(target: LOG, %id, "lease not renewed in time: stopping");
                self.set.disconnect_instance(h.instance).await;
            }
        }
        self.publish();
    }

    /// Stop an instance, then give its key back.
    async fn release(&mut self, id: &str) {
        if let Some(h) = self.held.remove(id) {
            self.set.disconnect_instance(h.instance).await;
            let released = self
                .store
                .delete_expect_revision(cfg_key(id), Some(h.revision));
            if let Err(e) = self.op(released).await {
                tracing::debug!(target: LOG, %id, "release: {e} (the key expires anyway)");
            }
        }
    }

    async fn round(&mut self) {
        // The member key carries what this node has given up (JSON list; empty: nothing).
        let refused = self.failures.refused(&self.settings);
        let body = if refused.is_empty() {
            Bytes::new()
        } else {
            Bytes::from(serde_json::to_vec(&refused).unwrap_or_default())
        };
        let beat = self.store.put(format!("member.{}", self.me()), body);
        if let Err(e) = self.op(beat).await {
            // The store is out of reach: nothing can be renewed; the leases run out.
            return tracing::debug!(target: LOG, "heartbeat: {e}");
        }
        self.renew().await;
        self.lead().await;
        self.follow().await;
        self.publish();
    }

    /// Renew every held key (compare-and-set on its revision). On a failure the round ends: an
    /// instance runs on until its lease end, counted from its last renewal.
    async fn renew(&mut self) {
        let ids: Vec<String> = self.held.keys().cloned().collect();
        for id in ids {
            let Some(revision) = self.held.get(&id).map(|h| h.revision) else {
                continue;
            };
            let sent = Instant::now();
            let update = self
                .store
                .update(cfg_key(&id), Bytes::from(self.me()), revision);
            match self.op(update).await {
                Ok(rev) => {
                    let until = self.lease_end(sent);
                    if let Some(h) = self.held.get_mut(&id) {
                        h.revision = rev;
                        h.until = until;
                    }
                }
                Err(e) => {
                    tracing::warn!(target: LOG, %id, "lease not renewed: {e}");
                    break;
                }
            }
        }
    }

    /// Take or keep the leader key; as leader, write the assignment.
    async fn lead(&mut self) {
        let me = Bytes::from(self.me());
        let taken = match self.leader_revision {
            Some(rev) => self.op(self.store.update("leader", me, rev)).await,
            None => self.op(self.store.create("leader", me)).await,
        };
        let Ok(rev) = taken else {
            self.leader_revision = None;
            return;
        };
        self.leader_revision = Some(rev);
        let configs = match tokio::time::timeout(self.settings.lease, self.set.get_config()).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return tracing::warn!(target: LOG, "get_config failed: {e}"),
            Err(_) => return tracing::warn!(target: LOG, "get_config timed out"),
        };
        match self.assignment(configs).await {
            Ok(assignment) => {
                if let Ok(body) = serde_json::to_vec(&assignment)
                    && let Err(e) = self.op(self.store.put("assign", Bytes::from(body))).await
                {
                    tracing::warn!(target: LOG, "assignment not written: {e}");
                }
            }
            Err(e) => tracing::warn!(target: LOG, "assignment: {e}"),
        }
    }

    async fn assignment(
        &self,
        configs: Vec<InstanceConfig>,
    ) -> Result<BTreeMap<String, (String, InstanceConfig)>, InstanceError> {
        let keys = self.op(self.store.keys()).await?;
        let keys: Vec<String> = self.op(keys.try_collect()).await?;
        let nodes: BTreeSet<NodeId> = keys
            .iter()
            .filter_map(|k| k.strip_prefix("member.")?.parse().ok())
            .chain(std::iter::once(self.node))
            .collect();
        let mut current = BTreeMap::new();
        let by_id: BTreeMap<String, InstanceConfig> =
            configs.into_iter().map(|c| (c.id.clone(), c)).collect();
        for id in by_id.keys() {
            if let Ok(Some(e)) = self.op(self.store.entry(cfg_key(id))).await
                && e.operation == Operation::Put
                && let Ok(node) = String::from_utf8_lossy(&e.value).parse::<NodeId>()
            {
                current.insert(id.clone(), node);
            }
        }
        let ids: BTreeSet<String> = by_id.keys().cloned().collect();
        let mut assignment = assign(&nodes, &ids, &current);
        // What members have given up (in their member keys) goes to other members.
        let mut refused: BTreeMap<NodeId, BTreeSet<String>> = BTreeMap::new();
        for node in &nodes {
            if let Ok(Some(e)) = self.op(self.store.entry(format!("member.{node}"))).await
                && !e.value.is_empty()
                && let Ok(list) = serde_json::from_slice::<Vec<String>>(&e.value)
            {
                let list: BTreeSet<String> = list.into_iter().filter(|c| ids.contains(c)).collect();
                refused.insert(*node, list);
            }
        }
        if !refused.is_empty() {
            let refused = refused.iter().map(|(n, r)| (*n, r)).collect();
            avoid_refused(&mut assignment, &nodes, &refused);
        }
        Ok(assignment
            .into_iter()
            .filter_map(|(id, node)| {
                Some((id.clone(), (node.to_string(), by_id.get(&id)?.clone())))
            })
            .collect())
    }

    /// Read the assignment: stop and release what is no longer ours, take what is.
    async fn follow(&mut self) {
        let assignment: BTreeMap<String, (String, InstanceConfig)> =
            match self.op(self.store.entry("assign")).await {
                Ok(Some(e)) if e.operation == Operation::Put => {
                    match serde_json::from_slice(&e.value) {
                        Ok(a) => a,
                        Err(e) => return tracing::warn!(target: LOG, "undecodable assignment: {e}"),
                    }
                }
                _ => return,
            };
        let me = self.me();
        let leaving: Vec<String> = self
            .held
            .iter()
            .filter(|(id, h)| {
                assignment
                    .get(*id)
                    .is_none_or(|(n, c)| *n != me || *c != h.config)
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in leaving {
            self.release(&id).await;
        }
        for (id, (node, config)) in assignment {
            if node != me
                || self.held.contains_key(&id)
                || !self.failures.may_create(&id, Instant::now())
            {
                continue;
            }
            let sent = Instant::now();
            // Only if absent: the previous holder released it, or its key expired.
            let create = self.store.create(cfg_key(&id), Bytes::from(me.clone()));
            let Ok(rev) = self.op(create).await else {
                continue;
            };
            let until = self.lease_end(sent);
            match self.set.create_instance(&config, rev).await {
                Ok(instance) => {
                    self.failures.succeeded(&id);
                    self.held.insert(
                        id,
                        Held {
                            config,
                            fencing: rev,
                            revision: rev,
                            until,
                            instance,
                        },
                    );
                }
                Err(e) => {
                    tracing::warn!(target: LOG, %id, "create_instance failed: {e}");
                    if self.failures.failed(&id, &self.settings) {
                        tracing::warn!(target: LOG, %id, "create_instance keeps failing: giving it up here, for another node");
                    }
                    let undo = self.store.delete_expect_revision(cfg_key(&id), Some(rev));
                    let _ = self.op(undo).await;
                }
            }
        }
    }

    /// Health checks: an unhealthy instance is disconnected and created again under its lease.
    async fn check(&mut self) {
        let timeout = self.settings.call_timeout;
        let mut sick = Vec::new();
        for (id, h) in &self.held {
            let verdict =
                tokio::time::timeout(timeout, self.set.healthcheck_instance(&h.instance)).await;
            if !matches!(verdict, Ok(Ok(()))) {
                tracing::warn!(target: LOG, %id, "unhealthy");
                sick.push(id.clone());
            }
        }
        for id in sick {
            let Some(h) = self.held.remove(&id) else {
                continue;
            };
            self.set.disconnect_instance(h.instance).await;
            let now = Instant::now();
            if now < h.until && self.failures.may_create(&id, now) {
                match self.set.create_instance(&h.config, h.fencing).await {
                    Ok(instance) => {
                        self.failures.succeeded(&id);
                        self.held.insert(id, Held { instance, ..h });
                        continue;
                    }
                    Err(e) => {
                        tracing::warn!(target: LOG, %id, "create_instance failed: {e}");
                        self.failures.failed(&id, &self.settings);
                    }
                }
            }
            // Not running any more: give the key back, so the set can move it.
            let released = self
                .store
                .delete_expect_revision(cfg_key(&id), Some(h.revision));
            if let Err(e) = self.op(released).await {
                tracing::debug!(target: LOG, %id, "release: {e} (the key expires anyway)");
            }
        }
        self.publish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_names() {
        assert_eq!(cfg_key("feed-1_a"), "cfg.feed-1_a");
        assert_eq!(cfg_key("a.b c"), "cfg.a=2eb=20c");
        assert!(check_name("workers").is_ok());
        assert!(check_name("a.b").is_err());
        assert_eq!(bucket("w"), "plume_instances_w");
    }
}
