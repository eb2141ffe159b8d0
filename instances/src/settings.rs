//! The timings of an instance set, and their defaults.

use std::time::Duration;

/// How long leases last and how often nodes talk. The defaults put a SIGKILLed node's instances
/// back on other nodes within about 3 s (`docs/instances.md` has the arithmetic).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// How long a vote lasts on the voter's clock; the leader lease and every per-config lease
    /// end no later than the leader's majority of votes. Default 2 s.
    pub lease: Duration,
    /// The clock-drift (and stop-time) margin taken off every lease by whoever holds it.
    /// Default 300 ms.
    pub drift: Duration,
    /// How often the leader renews its votes and every node asks the leader for its
    /// assignment. Default 400 ms.
    pub renew: Duration,
    /// How long one request may take before it counts as failed. Default 300 ms.
    pub call_timeout: Duration,
    /// How often each running instance's health is checked. Default 1 s.
    pub health_interval: Duration,
    /// A node that has not asked the leader for this long gets no new configurations and
    /// loses its own once its leases expire. Default 1.2 s (three renewals).
    pub silent_after: Duration,
    /// The leader forgets a lost member (one at a time) after this long, so the majority is
    /// counted over the members that may come back: a set of three that lost one tolerates
    /// the loss of another only once the first is forgotten. Default 10 s.
    pub forget_after: Duration,
    /// The majority is counted over at least this many members, however few are known: with
    /// 2 or more, nodes that start together and have not found each other yet cannot each lead
    /// a set of one. Default 1 (a lone node may lead).
    pub min_members: usize,
    /// After this many failed `create_instance` calls in a row for one configuration (retried
    /// after `renew`, then twice as long, …), a node gives the configuration up for
    /// `refuse_for`: it tells the leader, which moves it to another node. Default 3.
    pub create_failures: u32,
    /// How long a node that gave a configuration up refuses it. Default 30 s.
    pub refuse_for: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            lease: Duration::from_millis(2000),
            drift: Duration::from_millis(300),
            renew: Duration::from_millis(400),
            call_timeout: Duration::from_millis(300),
            health_interval: Duration::from_secs(1),
            silent_after: Duration::from_millis(1200),
            forget_after: Duration::from_secs(10),
            min_members: 1,
            create_failures: 3,
            refuse_for: Duration::from_secs(30),
        }
    }
}

impl Settings {
    /// Check the relations the safety argument needs.
    pub fn validate(&self) -> Result<(), crate::InstanceError> {
        let bad = |why: &str| Err(crate::InstanceError::Settings(why.to_owned()));
        if self.drift >= self.lease {
            return bad("drift must be shorter than lease");
        }
        if self.renew.is_zero() || self.renew * 2 > self.lease.saturating_sub(self.drift) {
            return bad("renew must be non-zero and at most half of lease - drift");
        }
        if self.call_timeout.is_zero() || self.call_timeout > self.lease {
            return bad("call_timeout must be non-zero and at most lease");
        }
        if self.min_members == 0 || self.min_members > crate::view::MAX_MEMBERS {
            return bad("min_members must be between 1 and 1024");
        }
        if self.create_failures == 0 || self.create_failures > 16 {
            return bad("create_failures must be between 1 and 16");
        }
        if self.health_interval.is_zero() {
            return bad("health_interval must be non-zero");
        }
        Ok(())
    }
}
