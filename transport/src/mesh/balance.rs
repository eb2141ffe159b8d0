//! Picking one live provider of a name ([`Balance`]).

use std::sync::atomic::Ordering;

use super::table::Target;
use super::{Balance, Inner};
use crate::discovery::NodeId;

impl Inner {
    /// Pick a live provider of `name`.
    pub(super) fn pick(&self, name: &str) -> Option<(NodeId, Target)> {
        let routes = self.routes_read();
        let list = routes.get(name)?;
        let live = |r: &&super::Route| match &r.target {
            Target::Local(_) => true,
            Target::Remote(remote) => remote.is_live(),
        };
        let chosen = match self.cfg.balance {
            Balance::RoundRobin => {
                let count = list.iter().filter(live).count();
                if count == 0 {
                    return None;
                }
                let n = self.rr.fetch_add(1, Ordering::Relaxed) % count;
                list.iter().filter(live).nth(n)?
            }
            Balance::LeastPending => list.iter().filter(live).min_by_key(|r| match &r.target {
                Target::Local(_) => self.local_pending.load(Ordering::Relaxed),
                Target::Remote(remote) => remote.pending(),
            })?,
        };
        Some((chosen.node, chosen.target.clone()))
    }
}
