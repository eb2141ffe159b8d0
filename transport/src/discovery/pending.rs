//! The peer events an agent holds while its receiver is slow: bounded, and never at the cost
//! of a `Down` (a lost `Down` would leave a dead peer's links and dial loop for ever).

use std::collections::VecDeque;

use super::PeerEvent;

/// Most events held for a slow receiver.
pub(crate) const MAX_PENDING_EVENTS: usize = 4096;

/// The events waiting for the receiver, in order.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    events: VecDeque<PeerEvent>,
}

impl Pending {
    /// Queue `event`. A `Down` first drops the queued news of that node (it is moot); when the
    /// queue is full, the oldest `Up`/`Updated` makes room. `Down`s are never dropped: at most
    /// one per peer of the agent's bounded table is queued at a time (above the
    /// limit only when nothing but `Down`s is queued). Returns whether an event was dropped.
    pub(crate) fn push(&mut self, event: PeerEvent) -> bool {
        if let PeerEvent::Down { node } = &event {
            let node = *node;
            self.events.retain(|e| match e {
                PeerEvent::Up(i) | PeerEvent::Updated(i) => i.node != node,
                PeerEvent::Down { node: n } => *n != node,
            });
        }
        let mut dropped = false;
        if self.events.len() >= MAX_PENDING_EVENTS
            && let Some(at) = self
                .events
                .iter()
                .position(|e| !matches!(e, PeerEvent::Down { .. }))
        {
            self.events.remove(at);
            dropped = true;
        }
        self.events.push_back(event);
        dropped
    }

    pub(crate) fn pop_front(&mut self) -> Option<PeerEvent> {
        self.events.pop_front()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    pub(crate) fn clear(&mut self) {
        self.events.clear();
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.events.len()
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;
    use crate::discovery::{NodeId, PeerInfo};

    fn up(n: u128) -> PeerEvent {
        PeerEvent::Up(PeerInfo {
            node: NodeId(n),
            key: "k".into(),
            addr: SocketAddr::from(([127, 0, 0, 1], 1)),
            table_version: 0,
            protocol: 1,
        })
    }

    #[test]
    fn a_full_queue_drops_news_never_a_down() {
        let mut p = Pending::default();
        assert!(!p.push(PeerEvent::Down {
            node: NodeId(u128::MAX)
        }));
        for n in 0..MAX_PENDING_EVENTS as u128 * 2 {
            p.push(up(n));
        }
        assert_eq!(p.len(), MAX_PENDING_EVENTS);
        assert_eq!(
            p.pop_front(),
            Some(PeerEvent::Down {
                node: NodeId(u128::MAX)
            })
        );
        // A flood of Downs on a full queue keeps every one of them.
        let mut p = Pending::default();
        for n in 0..MAX_PENDING_EVENTS as u128 + 10 {
            p.push(PeerEvent::Down { node: NodeId(n) });
        }
        assert_eq!(p.len(), MAX_PENDING_EVENTS + 10);
    }

    #[test]
    fn a_down_replaces_the_queued_news_of_its_node() {
        let mut p = Pending::default();
        p.push(up(1));
        p.push(up(2));
        p.push(PeerEvent::Down { node: NodeId(1) });
        assert_eq!(p.pop_front(), Some(up(2)));
        assert_eq!(p.pop_front(), Some(PeerEvent::Down { node: NodeId(1) }));
        assert!(p.is_empty());
    }
}
