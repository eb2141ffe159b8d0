//! The mesh's metrics (feature `metrics`): recorded through the `metrics` facade once an App of
//! the process called `App::enable_metrics` (plume's feature `metrics`), served on its
//! `GET /metrics`. Without the feature every function here is an empty inline one.
//!
//! Labels are bounded: outcomes and reasons from fixed lists, and the provider's replica-group
//! key (at most [`MAX_PEER_KEYS`] distinct values per process, then `other`); never node ids or
//! topics. The guide's "Metrics" section has the table.

use crate::engine::Removal;
use crate::error::CallError;

/// `plume_mesh_calls_total{outcome}`: calls this node sent to a provider on another node.
pub const MESH_CALLS: &str = "plume_mesh_calls_total";
/// `plume_mesh_retries_total`: calls sent again after their provider was lost or unreachable.
pub const MESH_RETRIES: &str = "plume_mesh_retries_total";
/// `plume_mesh_deadline_expiries_total`: calls whose provider did not answer in time.
pub const MESH_DEADLINE_EXPIRIES: &str = "plume_mesh_deadline_expiries_total";
/// `plume_mesh_links_up`: open peer links (TCP engine).
pub const MESH_LINKS_UP: &str = "plume_mesh_links_up";
/// `plume_mesh_link_opens_total`: peer links opened (after the first, each one is a reconnect).
pub const MESH_LINK_OPENS: &str = "plume_mesh_link_opens_total";
/// `plume_mesh_peers`: other nodes that provide at least one endpoint.
pub const MESH_PEERS: &str = "plume_mesh_peers";
/// `plume_mesh_discovery_adds_total`: endpoints of other nodes that appeared.
pub const MESH_ADDS: &str = "plume_mesh_discovery_adds_total";
/// `plume_mesh_discovery_losses_total{reason}`: endpoints of other nodes that left
/// (`withdrawn` or `node_lost`).
pub const MESH_LOSSES: &str = "plume_mesh_discovery_losses_total";
/// `plume_mesh_events_published_total`: events this node published.
pub const EVENTS_PUBLISHED: &str = "plume_mesh_events_published_total";
/// `plume_mesh_events_relayed_total`: provider events the distribution relay re-emitted here.
pub const EVENTS_RELAYED: &str = "plume_mesh_events_relayed_total";
/// `plume_mesh_events_dropped_total{reason}`: events lost (`queue_full` for a peer,
/// `lagged` for a slow local subscriber).
pub const EVENTS_DROPPED: &str = "plume_mesh_events_dropped_total";
/// `plume_mesh_peer_calls_total{peer_key}`: calls this node sent to a provider on another node,
/// by the provider's replica-group key.
pub const PEER_CALLS: &str = "plume_mesh_peer_calls_total";
/// `plume_mesh_bytes_sent_total`: bytes this node sent to other nodes (TCP: every byte written
/// on its peer links; NATS: the payloads of its requests, replies and events).
pub const BYTES_SENT: &str = "plume_mesh_bytes_sent_total";
/// `plume_mesh_bytes_received_total`: bytes this node received from other nodes (as
/// [`BYTES_SENT`]).
pub const BYTES_RECEIVED: &str = "plume_mesh_bytes_received_total";
/// The most distinct `peer_key` label values of [`PEER_CALLS`] in a process; the calls to
/// providers of further keys count as `peer_key="other"`.
pub const MAX_PEER_KEYS: usize = 64;

/// Every `outcome` label value of [`MESH_CALLS`].
pub const OUTCOMES: [&str; 7] = [
    "ok",
    "timeout",
    "not_sent",
    "lost",
    "no_responders",
    "busy",
    "refused",
];

/// The `outcome` label of a mesh call.
fn outcome(result: &Result<(), &CallError>) -> &'static str {
    match result {
        Ok(()) => "ok",
        Err(CallError::Timeout) => "timeout",
        Err(CallError::NotSent) => "not_sent",
        Err(CallError::Lost) => "lost",
        Err(CallError::NoResponders) => "no_responders",
        Err(CallError::Busy) => "busy",
        Err(CallError::Refused(_)) => "refused",
    }
}

#[cfg(feature = "metrics")]
mod imp {
    use std::sync::OnceLock;

    use metrics::{Counter, counter, gauge};

    use super::*;

    /// Handles made once the recorder is there (a handle made before it would record nothing).
    fn handles<T>(cell: &'static OnceLock<T>, make: impl FnOnce() -> T) -> Option<&'static T> {
        plume::metrics::enabled().then(|| cell.get_or_init(make))
    }

    /// A call to another node ended.
    #[inline]
    pub(crate) fn call(result: Result<(), &CallError>) {
        static CALLS: OnceLock<[Counter; 7]> = OnceLock::new();
        let Some(calls) = handles(&CALLS, || {
            OUTCOMES.map(|o| counter!(MESH_CALLS, "outcome" => o))
        }) else {
            return;
        };
        let label = outcome(&result);
        if let Some(i) = OUTCOMES.iter().position(|o| *o == label) {
            calls[i].increment(1);
        }
        if matches!(result, Err(CallError::Timeout)) {
            counter!(MESH_DEADLINE_EXPIRIES).increment(1);
        }
    }

    pub(crate) fn retry() {
        if plume::metrics::enabled() {
            counter!(MESH_RETRIES).increment(1);
        }
    }

    pub(crate) fn links(up: usize, opened: bool) {
        if plume::metrics::enabled() {
            gauge!(MESH_LINKS_UP).set(up as f64);
            if opened {
                counter!(MESH_LINK_OPENS).increment(1);
            }
        }
    }

    pub(crate) fn table(
        added: usize,
        lost: usize,
        why: Option<Removal>,
        peers: impl FnOnce() -> usize,
    ) {
        if plume::metrics::enabled() {
            if added > 0 {
                counter!(MESH_ADDS).increment(added as u64);
            }
            if let Some(why) = why.filter(|_| lost > 0) {
                let reason = match why {
                    Removal::Withdrawn => "withdrawn",
                    Removal::NodeLost => "node_lost",
                };
                counter!(MESH_LOSSES, "reason" => reason).increment(lost as u64);
            }
            gauge!(MESH_PEERS).set(peers() as f64);
        }
    }

    pub(crate) fn event_published() {
        if plume::metrics::enabled() {
            counter!(EVENTS_PUBLISHED).increment(1);
        }
    }

    pub(crate) fn event_relayed() {
        if plume::metrics::enabled() {
            counter!(EVENTS_RELAYED).increment(1);
        }
    }

    pub(crate) fn events_dropped(reason: &'static str, n: u64) {
        if plume::metrics::enabled() {
            counter!(EVENTS_DROPPED, "reason" => reason).increment(n);
        }
    }

    /// A call was sent to a provider of replica-group `key`.
    pub(crate) fn peer_call(key: &str) {
        if plume::metrics::enabled() {
            peer_counter(key).increment(1);
        }
    }

    /// The `plume_mesh_peer_calls_total` series of replica-group `key` (`other` once
    /// [`MAX_PEER_KEYS`] keys have one), made on its first use.
    fn peer_counter(key: &str) -> Counter {
        use std::collections::HashMap;
        use std::sync::RwLock;
        static KEYS: OnceLock<RwLock<HashMap<String, Counter>>> = OnceLock::new();
        let keys = KEYS.get_or_init(RwLock::default);
        if let Some(c) = crate::sync::read(keys).get(key) {
            return c.clone();
        }
        let mut keys = crate::sync::write(keys);
        if keys.len() >= MAX_PEER_KEYS && !keys.contains_key(key) {
            return counter!(PEER_CALLS, "peer_key" => "other");
        }
        keys.entry(key.to_owned())
            .or_insert_with(|| counter!(PEER_CALLS, "peer_key" => key.to_owned()))
            .clone()
    }

    /// One series of a metric.
    pub(crate) type Series = Counter;

    /// A route's `plume_mesh_peer_calls_total` series, found once (not per call: no label
    /// hashed, no lock taken), when metrics are on.
    #[derive(Clone, Default)]
    pub(crate) struct PeerCalls(OnceLock<Counter>);

    impl PeerCalls {
        /// The series of a provider of replica-group `key` (what [`count`] takes), `None` while
        /// metrics are off.
        #[inline]
        pub(crate) fn handle(&self, key: &str) -> Option<Counter> {
            plume::metrics::enabled().then(|| self.0.get_or_init(|| peer_counter(key)).clone())
        }
    }

    /// Count a call sent with a series from [`PeerCalls::handle`].
    #[inline]
    pub(crate) fn count(handle: Option<Counter>) {
        if let Some(c) = handle {
            c.increment(1);
        }
    }

    /// `n` bytes sent to another node.
    #[inline]
    pub(crate) fn bytes_sent(n: usize) {
        static SENT: OnceLock<Counter> = OnceLock::new();
        if let Some(c) = handles(&SENT, || counter!(BYTES_SENT)) {
            c.increment(n as u64);
        }
    }

    /// `n` bytes received from another node.
    #[inline]
    pub(crate) fn bytes_received(n: usize) {
        static RECEIVED: OnceLock<Counter> = OnceLock::new();
        if let Some(c) = handles(&RECEIVED, || counter!(BYTES_RECEIVED)) {
            c.increment(n as u64);
        }
    }
}

#[cfg(not(feature = "metrics"))]
#[allow(clippy::missing_const_for_fn)]
mod imp {
    use super::{CallError, Removal};

    #[inline(always)]
    pub(crate) fn call(result: Result<(), &CallError>) {
        let _ = super::outcome(&result);
    }
    #[inline(always)]
    pub(crate) fn retry() {}
    #[inline(always)]
    pub(crate) fn links(_: usize, _: bool) {}
    #[inline(always)]
    pub(crate) fn table(_: usize, _: usize, _: Option<Removal>, _: impl FnOnce() -> usize) {}
    #[inline(always)]
    pub(crate) fn event_published() {}
    #[inline(always)]
    pub(crate) fn event_relayed() {}
    #[inline(always)]
    pub(crate) fn events_dropped(_: &'static str, _: u64) {}
    #[inline(always)]
    pub(crate) fn peer_call(_: &str) {}

    /// Without the feature `metrics`: nothing.
    #[derive(Clone, Default)]
    pub(crate) struct PeerCalls;

    /// Never a series without the feature `metrics`.
    pub(crate) enum Series {}

    impl PeerCalls {
        #[inline(always)]
        pub(crate) fn handle(&self, _: &str) -> Option<Series> {
            None
        }
    }

    #[inline(always)]
    pub(crate) fn count(_: Option<Series>) {}
    #[inline(always)]
    pub(crate) fn bytes_sent(_: usize) {}
    #[inline(always)]
    pub(crate) fn bytes_received(_: usize) {}
}

pub(crate) use imp::*;
