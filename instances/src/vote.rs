//! The leader lease: every member is a voter that grants its vote to one candidate at a time,
//! for a lease measured on the voter's own clock; a candidate is leader while a majority of the
//! members' grants are unexpired on *its* clock, which starts each grant before the request left
//! and subtracts a clock-drift margin, so it always stops believing in a grant before the voter
//! does. `docs/instances.md` has the proof sketch.

use std::collections::BTreeMap;
use std::time::Duration;

use plume_transport::NodeId;
use tokio::time::Instant;

/// What a voter has promised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Promise {
    candidate: NodeId,
    term: u64,
    expires: Instant,
    /// The floor before this promise (restored when the promise is given back unused).
    before: Option<(NodeId, u64)>,
}

/// One member's vote.
#[derive(Debug)]
pub struct Voter {
    lease: Duration,
    promise: Option<Promise>,
    /// The last promise not given back: a different candidate needs a higher term.
    floor: Option<(NodeId, u64)>,
    /// The highest term this voter has seen (asked for or granted).
    seen: u64,
}

/// A voter's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Ballot {
    /// Whether the vote was granted.
    pub granted: bool,
    /// The highest term the voter has seen: a refused candidate retries above it.
    pub term: u64,
}

impl Voter {
    /// A voter whose grants last `lease` on its own clock.
    pub fn new(lease: Duration) -> Voter {
        Voter {
            lease,
            promise: None,
            floor: None,
            seen: 0,
        }
    }

    /// Asked by `candidate` for term `term` at `now`.
    ///
    /// While a promise is unexpired only its candidate gets the vote (a renewal, at a term no
    /// lower). Otherwise the vote goes to the candidate of the last promise not given back (at
    /// a term no lower), or to anyone above that promise's term; so every leader's term is
    /// above the term of any earlier leader that shares a voter with it.
    pub fn ask(&mut self, candidate: NodeId, term: u64, now: Instant) -> Ballot {
        let live = self.promise.filter(|p| now < p.expires);
        let granted = match (live, self.floor) {
            (Some(p), _) => p.candidate == candidate && term >= p.term,
            (None, None) => true,
            (None, Some((c, t))) => (c == candidate && term >= t) || term > t,
        };
        if granted {
            let before = match self.promise {
                Some(p) if p.candidate == candidate && p.term == term => p.before,
                _ => self.floor,
            };
            self.promise = Some(Promise {
                candidate,
                term,
                expires: now + self.lease,
                before,
            });
            self.floor = Some((candidate, term));
        }
        self.seen = self.seen.max(term);
        Ballot {
            granted,
            term: self.seen,
        }
    }

    /// A candidate that did not win gives back its unused vote (it never acted on it).
    pub fn release(&mut self, candidate: NodeId, term: u64, now: Instant) {
        if let Some(p) = &mut self.promise
            && p.candidate == candidate
            && p.term == term
            && now < p.expires
        {
            p.expires = now;
            self.floor = p.before;
        }
    }

    /// The candidate this voter currently backs (its promise is unexpired at `now`).
    pub fn backing(&self, now: Instant) -> Option<(NodeId, u64)> {
        self.promise
            .filter(|p| now < p.expires)
            .map(|p| (p.candidate, p.term))
    }

    /// The highest term seen.
    pub fn seen(&self) -> u64 {
        self.seen
    }
}

/// A candidate's (or leader's) count of the grants it holds.
#[derive(Debug)]
pub struct Lease {
    /// The term it runs for.
    pub term: u64,
    lease: Duration,
    drift: Duration,
    /// Per voter: until when its grant certainly holds, on this node's clock.
    grants: BTreeMap<NodeId, Instant>,
    /// The majority is counted over at least this many members.
    min_members: usize,
}

impl Lease {
    /// A lease in `term`, counting grants of `lease` minus `drift`.
    pub fn new(term: u64, lease: Duration, drift: Duration) -> Lease {
        Lease {
            term,
            lease,
            drift,
            grants: BTreeMap::new(),
            min_members: 1,
        }
    }

    /// Count the majority over at least `n` members, however few are known (so that nodes
    /// that have not found each other yet cannot each lead a set of their own).
    pub fn min_members(mut self, n: usize) -> Lease {
        self.min_members = n;
        self
    }

    /// `voter` granted a request that left this node at `sent`.
    pub fn granted(&mut self, voter: NodeId, sent: Instant) {
        let until = sent + self.lease.saturating_sub(self.drift);
        let e = self.grants.entry(voter).or_insert(until);
        *e = (*e).max(until);
    }

    /// Until when a majority of `members` certainly back this node (None: not now).
    ///
    /// The majority is of `members` (the set's members as this node knows them), counting only
    /// grants of members; the answer is the `k`-th latest expiry, `k = n / 2 + 1` where `n` is
    /// the number of members, or [`min_members`](Self::min_members) if larger.
    pub fn holds_until(&self, members: &[NodeId], now: Instant) -> Option<Instant> {
        let need = members.len().max(self.min_members) / 2 + 1;
        let mut expiries: Vec<Instant> = members
            .iter()
            .filter_map(|m| self.grants.get(m).copied())
            .filter(|until| *until > now)
            .collect();
        if expiries.len() < need {
            return None;
        }
        expiries.sort_unstable_by(|a, b| b.cmp(a));
        expiries.get(need - 1).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: Duration = Duration::from_millis(2000);
    const DRIFT: Duration = Duration::from_millis(200);

    #[tokio::test(start_paused = true)]
    async fn one_promise_at_a_time_until_it_expires() {
        let mut v = Voter::new(LEASE);
        let t0 = Instant::now();
        assert!(v.ask(NodeId(1), 1, t0).granted);
        // Another candidate, even with a higher term, waits for the promise to expire.
        assert!(!v.ask(NodeId(2), 5, t0 + LEASE / 2).granted);
        // The holder renews at its term (a higher term seen does not stop it).
        assert!(v.ask(NodeId(1), 1, t0 + LEASE / 2).granted);
        assert!(!v.ask(NodeId(2), 5, t0 + LEASE).granted);
        // Expired: a higher term than the promise wins, an equal one does not.
        let later = t0 + LEASE / 2 + LEASE;
        assert!(!v.ask(NodeId(2), 1, later).granted);
        let b = v.ask(NodeId(2), 6, later);
        assert!(b.granted);
        assert_eq!(v.backing(later), Some((NodeId(2), 6)));
    }

    #[tokio::test(start_paused = true)]
    async fn released_votes_are_free_at_once() {
        let mut v = Voter::new(LEASE);
        let t0 = Instant::now();
        assert!(v.ask(NodeId(1), 3, t0).granted);
        v.release(NodeId(2), 3, t0); // not the holder: no effect
        assert_eq!(v.backing(t0), Some((NodeId(1), 3)));
        v.release(NodeId(1), 3, t0);
        assert_eq!(v.backing(t0), None);
        assert!(v.ask(NodeId(2), 4, t0).granted);
    }

    #[tokio::test(start_paused = true)]
    async fn a_released_candidacy_does_not_lock_out_the_leader_it_followed() {
        let mut v = Voter::new(LEASE);
        let t0 = Instant::now();
        // Backs leader 1 in term 3; later (cut off) stands itself in term 9 and gives it back.
        assert!(v.ask(NodeId(1), 3, t0).granted);
        let t1 = t0 + LEASE;
        assert!(v.ask(NodeId(2), 9, t1).granted);
        v.release(NodeId(2), 9, t1);
        // Leader 1 renews in its term 3 again; a stranger below term 3 is refused.
        assert!(!v.ask(NodeId(5), 3, t1).granted);
        assert!(v.ask(NodeId(1), 3, t1).granted);
        // An expired (not released) promise keeps its floor: a different candidate needs more.
        let t2 = t1 + LEASE;
        assert!(!v.ask(NodeId(5), 3, t2).granted);
        assert!(v.ask(NodeId(5), 4, t2).granted);
    }

    #[tokio::test(start_paused = true)]
    async fn a_majority_of_unexpired_grants() {
        let members = [NodeId(1), NodeId(2), NodeId(3)];
        let t0 = Instant::now();
        let mut l = Lease::new(1, LEASE, DRIFT);
        l.granted(NodeId(1), t0);
        assert_eq!(l.holds_until(&members, t0), None);
        l.granted(NodeId(2), t0 + Duration::from_millis(100));
        // Two of three: until the earlier of the two, minus the drift.
        assert_eq!(l.holds_until(&members, t0), Some(t0 + LEASE - DRIFT));
        // A grant from a non-member does not count.
        let mut lone = Lease::new(1, LEASE, DRIFT);
        lone.granted(NodeId(1), t0);
        lone.granted(NodeId(9), t0);
        assert_eq!(lone.holds_until(&members, t0), None);
        // Past the expiry the lease is gone.
        assert_eq!(l.holds_until(&members, t0 + LEASE), None);
        // Alone, a node leads only when the set may have one member.
        let mut solo = Lease::new(1, LEASE, DRIFT);
        solo.granted(NodeId(1), t0);
        assert!(solo.holds_until(&[NodeId(1)], t0).is_some());
        let mut solo = Lease::new(1, LEASE, DRIFT).min_members(3);
        solo.granted(NodeId(1), t0);
        assert_eq!(solo.holds_until(&[NodeId(1)], t0), None);
        solo.granted(NodeId(2), t0);
        assert!(solo.holds_until(&[NodeId(1), NodeId(2)], t0).is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn the_leader_stops_believing_before_any_voter_frees() {
        // The voter receives the request `delay` after it left: its promise outlives the
        // candidate's view by at least `drift + delay`.
        let members = [NodeId(1), NodeId(2), NodeId(3)];
        let t0 = Instant::now();
        let delay = Duration::from_millis(50);
        let mut voters: Vec<Voter> = (0..3).map(|_| Voter::new(LEASE)).collect();
        let mut l = Lease::new(1, LEASE, DRIFT);
        for (i, v) in voters.iter_mut().enumerate() {
            assert!(v.ask(NodeId(1), 1, t0 + delay).granted);
            l.granted(members[i], t0);
        }
        let until = l.holds_until(&members, t0).unwrap_or(t0);
        for v in &voters {
            assert!(v.backing(until).is_some());
            assert!(v.backing(until + DRIFT).is_some());
        }
    }
}
