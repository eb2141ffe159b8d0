//! The distributed instance manager: a set of long-lived instances (workers, pollers, outbound
//! clients), each configuration running on exactly one node at a time, spread evenly over every
//! node that registers the same set — moleculer-dim's job, without Redis and without its races.
//!
//! - **Leader lease**: every member votes for one candidate at a time, for a lease on its own
//!   clock; a leader acts only while a majority of the members' votes are unexpired on its
//!   clock, minus a drift margin ([`vote`]).
//! - **Per-config leases**: each node polls the leader, which grants it configurations with
//!   fencing tokens; its grants end no later than the leader lease, so a node that cannot renew
//!   stops its instances before anyone else can be granted them, and a new leader can grant at
//!   once ([`ledger`], the runner).
//! - **Balance**: counts per node differ by at most one, with the fewest moves ([`assign`]).
//!
//! The logic is engine-free ([`Member`], over a [`Link`]); [`mesh`] carries it on a Plume
//! [`Mesh`](plume_transport::Mesh). `docs/instances.md` has the protocol, its proof sketch and
//! the default timings.
//!
//! ```no_run
//! # use plume_instances::{InstanceConfig, InstanceSet, Settings};
//! # struct Workers;
//! # #[async_trait::async_trait]
//! # impl InstanceSet for Workers {
//! #     type Instance = ();
//! #     async fn get_config(&self) -> Result<Vec<InstanceConfig>, plume::Error> { Ok(vec![]) }
//! #     async fn create_instance(&self, _: &InstanceConfig, _: u64) -> Result<(), plume::Error> { Ok(()) }
//! # }
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let mesh = plume_transport::Mesh::builder().environment("dev").key("workers").start().await?;
//! let manager = plume_instances::mesh::register(&mesh, "workers", Workers, Settings::default())?;
//! // … later: what runs here, and (on the leader) who runs what.
//! let _ = manager.status();
//! manager.shutdown().await;
//! # Ok(()) }
//! ```

pub mod app;
pub mod assign;
mod backoff;
#[doc = include_str!("../../docs/instances.md")]
pub mod guide {}
#[cfg(feature = "nats")]
pub mod kv;
pub mod ledger;
pub mod mesh;
mod node;
mod runner;
mod set;
mod settings;
pub mod view;
pub mod vote;
mod wire;

#[cfg(test)]
mod sim_tests;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use plume_transport::NodeId;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use node::{LeaderStatus, Link, Member};
pub use set::InstanceSet;
pub use settings::Settings;
pub use wire::{Answer, Grant, Grants, InstanceConfig, Message};

/// What can go wrong.
#[derive(Debug, thiserror::Error)]
pub enum InstanceError {
    /// The settings break a relation the safety argument needs.
    #[error("invalid instance settings: {0}")]
    Settings(String),
    /// A set name that cannot name an endpoint.
    #[error("invalid instance set name {0:?}")]
    Name(String),
    /// A request to another member failed.
    #[error("request to member failed: {0}")]
    Call(String),
}

/// A running member of an instance set (see [`mesh::register`]).
pub struct InstanceManager {
    member: Arc<Member>,
    holding: runner::Holding,
    stop: watch::Sender<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    on_shutdown: Mutex<Option<Box<dyn FnOnce() + Send>>>,
}

impl std::fmt::Debug for InstanceManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InstanceManager")
            .field("node", &self.member.me())
            .finish_non_exhaustive()
    }
}

/// What a member reports about itself.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Status {
    /// This node (hex).
    pub node: String,
    /// The leader it follows (hex), itself included.
    pub leader: Option<String>,
    /// The members it counts (hex).
    pub members: Vec<String>,
    /// What runs here: configuration id → fencing token.
    pub running: BTreeMap<String, u64>,
    /// On the leader: every held configuration.
    pub leading: Option<LeaderStatus>,
}

impl InstanceManager {
    /// Start a member over `link`: its election loop and its runner. The backend feeds
    /// `member` the requests of others and the membership changes.
    pub fn start<S: InstanceSet>(
        member: Arc<Member>,
        link: Arc<dyn Link>,
        set: S,
    ) -> InstanceManager {
        let set = Arc::new(set);
        let (stop, rx) = watch::channel(false);
        let holding: runner::Holding = Arc::new(Mutex::new(BTreeMap::new()));
        let elect = tokio::spawn(Arc::clone(&member).elect(
            Arc::clone(&link),
            Arc::clone(&set),
            rx.clone(),
        ));
        let run = runner::Runner::new(Arc::clone(&member), link, set, Arc::clone(&holding));
        let run = tokio::spawn(run.run(rx));
        InstanceManager {
            member,
            holding,
            stop,
            tasks: Mutex::new(vec![elect, run]),
            on_shutdown: Mutex::new(None),
        }
    }

    pub(crate) fn on_shutdown(&self, f: impl FnOnce() + Send + 'static) {
        *self
            .on_shutdown
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(Box::new(f));
    }

    /// This node's id.
    pub fn node(&self) -> NodeId {
        self.member.me()
    }

    /// The member's state.
    pub fn member(&self) -> &Arc<Member> {
        &self.member
    }

    /// What this member knows.
    pub fn status(&self) -> Status {
        Status {
            node: self.member.me().to_string(),
            leader: self.member.leader().map(|n| n.to_string()),
            members: self
                .member
                .members()
                .iter()
                .map(NodeId::to_string)
                .collect(),
            running: self
                .holding
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
            leading: self.member.leader_status(),
        }
    }

    /// Leave the set: stop taking part, disconnect every instance here, and wait for it.
    pub async fn shutdown(&self) {
        let hook = self
            .on_shutdown
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(hook) = hook {
            hook();
        }
        let _ = self.stop.send(true);
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(PoisonError::into_inner));
        for t in tasks {
            if let Err(e) = t.await {
                tracing::warn!(target: node::LOG, "instance task ended badly: {e}");
            }
        }
    }
}

impl Drop for InstanceManager {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}
