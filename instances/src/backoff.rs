//! The configurations whose `create_instance` failed on this node: each is retried after
//! `renew`, then twice as long, …; after `create_failures` failures in a row it is given up
//! (refused) for `refuse_for`, and the node tells whoever assigns configurations, which moves
//! it elsewhere. Both backends use it. The map holds at most one entry per configuration this
//! node was told to run within the last `refuse_for`.

use std::collections::BTreeMap;

use tokio::time::Instant;

use crate::Settings;

/// One configuration whose creation failed here lately.
#[derive(Debug, Clone, Copy)]
struct Failing {
    /// Failures in a row.
    count: u32,
    /// Not retried before then.
    retry_at: Instant,
    /// Given up until then.
    refused_until: Option<Instant>,
    /// The last failure: a record quiet for `refuse_for` is forgotten.
    last: Instant,
}

/// The failures of one node (at most one entry per configuration granted to it, or refused).
#[derive(Debug, Default)]
pub(crate) struct Failures {
    failing: BTreeMap<String, Failing>,
}

impl Failures {
    /// A creation of `id` succeeded: it starts afresh.
    pub(crate) fn succeeded(&mut self, id: &str) {
        self.failing.remove(id);
    }

    /// Count a failed creation of `id`; true when it is given up now.
    pub(crate) fn failed(&mut self, id: &str, settings: &Settings) -> bool {
        let now = Instant::now();
        let f = self.failing.entry(id.to_owned()).or_insert(Failing {
            count: 0,
            retry_at: now,
            refused_until: None,
            last: now,
        });
        f.count = f.count.saturating_add(1);
        f.last = now;
        if f.count >= settings.create_failures {
            f.refused_until = Some(now + settings.refuse_for);
            true
        } else {
            f.retry_at = now + settings.renew * (1u32 << (f.count - 1).min(8));
            false
        }
    }

    /// Whether `id` may be created now: not given up, not waiting for its retry.
    pub(crate) fn may_create(&self, id: &str, now: Instant) -> bool {
        self.failing
            .get(id)
            .is_none_or(|f| f.refused_until.is_none() && now >= f.retry_at)
    }

    /// Forget what is over: refusals that ended, and failures quiet for `refuse_for` (so a
    /// configuration that moved away and back keeps its count meanwhile).
    pub(crate) fn prune(&mut self, settings: &Settings) {
        let now = Instant::now();
        self.failing.retain(|_, f| match f.refused_until {
            Some(u) => u > now,
            None => now.duration_since(f.last) < settings.refuse_for,
        });
    }

    /// The configurations given up now (what is over is forgotten first).
    pub(crate) fn refused(&mut self, settings: &Settings) -> Vec<String> {
        self.prune(settings);
        self.failing
            .iter()
            .filter(|(_, f)| f.refused_until.is_some())
            .map(|(id, _)| id.clone())
            .collect()
    }
}
