//! The mesh's metrics (feature `metrics`): recorded through the `metrics` facade once an App of
//! the process called `App::enable_metrics` (plume's feature `metrics`), served on its
//! `GET /metrics`. Without the feature every function here is an empty inline one.
//!
//! Labels are bounded: outcomes and reasons from fixed lists, never node ids, names or topics.
//! The guide's "Metrics" section has the table.

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

    const OUTCOMES: [&str; 7] = [
        "ok",
        "timeout",
        "not_sent",
        "lost",
        "no_responders",
        "busy",
        "refused",
    ];

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
}

pub(crate) use imp::*;
