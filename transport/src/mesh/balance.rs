//! Picking one live provider of a name ([`Balance`]).

use std::sync::atomic::Ordering;

use super::ring::score;
use super::table::{Route, Target};
use super::{Balance, Inner};
use crate::discovery::NodeId;

/// Why [`Inner::pick`] found no provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum NoPick {
    /// The table lists no provider of the name.
    NoRoute,
    /// The table still lists providers, but the link of every one is gone: they are being
    /// removed, so a call should not wait for them.
    NoneLive,
}

/// A provider picked: its node, the way to it, and (a remote one, metrics on) the series that
/// counts the calls sent to it (`plume_mesh_peer_calls_total`).
pub(super) type Picked = (NodeId, Target, Option<crate::metrics::Series>);

fn picked(route: &Route) -> Picked {
    let series = match route.target {
        Target::Remote(_) => route.peer_calls.handle(&route.key),
        Target::Local(_) => None,
    };
    (route.node, route.target.clone(), series)
}

impl Inner {
    /// Pick a live provider of `name`.
    pub(super) fn pick(&self, name: &str) -> Result<Picked, NoPick> {
        let routes = self.routes_read();
        let list = match routes.get(name) {
            Some(list) if !list.is_empty() => list,
            _ => return Err(NoPick::NoRoute),
        };
        let chosen = match self.cfg.balance {
            Balance::RoundRobin => {
                let count = list.iter().filter(live).count();
                if count == 0 {
                    return Err(NoPick::NoneLive);
                }
                let n = self.rr.fetch_add(1, Ordering::Relaxed) % count;
                list.iter().filter(live).nth(n).ok_or(NoPick::NoneLive)?
            }
            Balance::LeastPending => list
                .iter()
                .filter(live)
                .min_by_key(|r| match &r.target {
                    Target::Local(_) => self.local_pending.load(Ordering::Relaxed),
                    Target::Remote(remote) => remote.pending(),
                })
                .ok_or(NoPick::NoneLive)?,
        };
        Ok(picked(chosen))
    }

    /// The owner of the partition key whose hash is `key` among the live providers of `name`
    /// (rendezvous hashing, see [`ring`](super::ring)).
    pub(super) fn pick_owner(&self, name: &str, key: u64) -> Result<Picked, NoPick> {
        let routes = self.routes_read();
        let list = match routes.get(name) {
            Some(list) if !list.is_empty() => list,
            _ => return Err(NoPick::NoRoute),
        };
        let owner = list
            .iter()
            .filter(live)
            .max_by_key(|r| score(key, r.node))
            .ok_or(NoPick::NoneLive)?;
        Ok(picked(owner))
    }

    /// Every live provider of `name`.
    pub(super) fn live_providers(&self, name: &str) -> Vec<(NodeId, Target)> {
        self.routes_read()
            .get(name)
            .map(|list| {
                list.iter()
                    .filter(live)
                    .map(|r| (r.node, r.target.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Whether new calls may go to `route`.
fn live(route: &&Route) -> bool {
    match &route.target {
        Target::Local(_) => true,
        Target::Remote(remote) => remote.is_live(),
    }
}
