//! The set's membership as one node sees it: members that are up, and members that were lost
//! (not withdrawn) and still count towards the majority until the leader forgets them.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use plume_transport::NodeId;
use tokio::time::Instant;

/// At most this many members are remembered.
pub const MAX_MEMBERS: usize = 1024;

/// One node's view of the members.
#[derive(Debug)]
pub struct View {
    me: NodeId,
    live: BTreeSet<NodeId>,
    lost: BTreeMap<NodeId, Instant>,
}

impl View {
    /// A view with only `me`.
    pub fn new(me: NodeId) -> View {
        View {
            me,
            live: BTreeSet::new(),
            lost: BTreeMap::new(),
        }
    }

    fn full(&self) -> bool {
        self.live.len() + self.lost.len() >= MAX_MEMBERS
    }

    /// `node` is up (joined, or came back).
    pub fn up(&mut self, node: NodeId) {
        if node == self.me {
            return;
        }
        let known = self.lost.remove(&node).is_some();
        if known || !self.full() {
            self.live.insert(node);
        }
    }

    /// `node` left on purpose: it is no member any more.
    pub fn left(&mut self, node: NodeId) {
        self.live.remove(&node);
        self.lost.remove(&node);
    }

    /// `node` is gone without leaving: it still counts as a member.
    pub fn lost(&mut self, node: NodeId, now: Instant) {
        if self.live.remove(&node) {
            self.lost.insert(node, now);
        }
    }

    /// The members: this node, the live and the lost ones.
    pub fn members(&self) -> Vec<NodeId> {
        let mut all: BTreeSet<NodeId> = self.live.clone();
        all.extend(self.lost.keys().copied());
        all.insert(self.me);
        all.into_iter().collect()
    }

    /// The members that are up, this node included.
    pub fn live(&self) -> BTreeSet<NodeId> {
        let mut live = self.live.clone();
        live.insert(self.me);
        live
    }

    /// Take the leader's member list: members it knows that this node does not see are lost
    /// here too, and lost members it has forgotten are forgotten here.
    pub fn adopt(&mut self, members: &[NodeId], now: Instant) {
        let theirs: BTreeSet<NodeId> = members.iter().copied().collect();
        self.lost.retain(|n, _| theirs.contains(n));
        for m in theirs {
            if m != self.me && !self.live.contains(&m) && !self.full() {
                self.lost.entry(m).or_insert(now);
            }
        }
    }

    /// Forget the member lost longest ago, if that was over `after` ago (the leader does this,
    /// one member at a time, so two successive views always share a majority).
    pub fn forget_one(&mut self, after: Duration, now: Instant) -> Option<NodeId> {
        let (node, _) = self
            .lost
            .iter()
            .filter(|(_, since)| now.duration_since(**since) >= after)
            .min_by_key(|(_, since)| **since)
            .map(|(n, s)| (*n, *s))?;
        self.lost.remove(&node);
        Some(node)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn lost_members_count_until_forgotten() {
        let t0 = Instant::now();
        let mut v = View::new(NodeId(1));
        v.up(NodeId(2));
        v.up(NodeId(3));
        v.lost(NodeId(3), t0);
        assert_eq!(v.members().len(), 3);
        assert_eq!(v.live().len(), 2);
        assert_eq!(
            v.forget_one(Duration::from_secs(30), t0 + Duration::from_secs(29)),
            None
        );
        assert_eq!(
            v.forget_one(Duration::from_secs(30), t0 + Duration::from_secs(30)),
            Some(NodeId(3))
        );
        assert_eq!(v.members().len(), 2);
        // Leaving on purpose shrinks the set at once.
        v.left(NodeId(2));
        assert_eq!(v.members(), vec![NodeId(1)]);
    }

    #[tokio::test(start_paused = true)]
    async fn adopting_the_leaders_list() {
        let t0 = Instant::now();
        let mut v = View::new(NodeId(1));
        v.up(NodeId(2));
        v.lost(NodeId(2), t0);
        v.adopt(&[NodeId(1), NodeId(3)], t0);
        assert_eq!(v.members(), vec![NodeId(1), NodeId(3)]);
        assert_eq!(v.live(), [NodeId(1)].into());
    }
}
