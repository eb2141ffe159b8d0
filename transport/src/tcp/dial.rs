//! Dialling the peers discovery announces, with bounded cost.
//!
//! Discovery (beacons, Redis records, a static peers channel) names node ids and addresses that
//! nothing has verified yet. A flood of them naming fresh ids must not make this node dial each
//! one over and over:
//! - one dial at a time per address, and after a failed one the address backs off (40 ms
//!   doubling to 1.6 s, with jitter), whichever node id the next dial is for;
//! - at most [`MAX_DIALS`] dials in flight over all addresses;
//! - a node id that never linked is forgotten after [`UNVERIFIED_TRIES`] failed dials, and one
//!   that another node answers for at once (until discovery announces it again);
//! - at most [`MAX_ADVERTS`] announced node ids are tracked; further new ones are ignored.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use tokio::net::TcpStream;
use tokio::sync::{OwnedMutexGuard, Semaphore};
use tokio::time::{Instant, sleep_until, timeout};
use tokio_util::sync::CancellationToken;

use super::{LOG, TcpEngine};
use crate::discovery::NodeId;
use crate::engine::Sink;
use crate::error::HandshakeError;
use crate::sync::lock;

/// Announced node ids tracked at once (as many as a beacon agent's peer table).
pub(super) const MAX_ADVERTS: usize = 10_000;
/// Dials in flight at once, over all addresses.
pub(super) const MAX_DIALS: usize = 32;
/// Failed dials after which a node id that never linked is forgotten.
pub(super) const UNVERIFIED_TRIES: u32 = 3;

/// The delays between dials of one address: from 40 ms, doubling up to 1.6 s, each with a
/// random jitter of up to its own length (so 40–80 ms at first, at most 3.2 s).
pub(super) fn redial_delays() -> ExponentialBackoff {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(40))
        .with_max_delay(Duration::from_millis(1600))
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .build()
}

/// One address's turn and backoff.
#[derive(Debug)]
struct AddrSlot {
    /// No dial before this.
    next: Option<Instant>,
    delays: ExponentialBackoff,
}

impl AddrSlot {
    fn back_off(&mut self) {
        let delay = self.delays.next().unwrap_or(Duration::from_millis(1600));
        self.next = Some(Instant::now() + delay);
    }

    fn reset(&mut self) {
        self.delays = redial_delays();
        self.next = None;
    }
}

/// The bounds on dialling, shared by every dial loop of an engine.
#[derive(Debug)]
pub(super) struct Dials {
    total: Semaphore,
    addrs: Mutex<HashMap<SocketAddr, Arc<tokio::sync::Mutex<AddrSlot>>>>,
}

impl Dials {
    pub(super) fn new() -> Self {
        Self {
            total: Semaphore::new(MAX_DIALS),
            addrs: Mutex::new(HashMap::new()),
        }
    }

    /// The slot of `addr`. The map forgets the slots no dial loop holds once it is full.
    fn slot(&self, addr: SocketAddr) -> Arc<tokio::sync::Mutex<AddrSlot>> {
        let mut addrs = lock(&self.addrs);
        if addrs.len() >= MAX_ADVERTS && !addrs.contains_key(&addr) {
            addrs.retain(|_, s| Arc::strong_count(s) > 1);
        }
        addrs
            .entry(addr)
            .or_insert_with(|| {
                Arc::new(tokio::sync::Mutex::new(AddrSlot {
                    next: None,
                    delays: redial_delays(),
                }))
            })
            .clone()
    }
}

/// How one dial went, for the loop.
enum Outcome {
    /// Linked, and the link has closed since: dial again after the address's first delay.
    Closed,
    /// The dial failed; the address backs off.
    Failed,
    /// Another node answers at that address: this id is not there.
    WrongPeer,
    /// The advert moved to another address while this loop waited: dial again.
    Moved,
    /// The advert is gone or cancelled.
    Stop,
}

impl TcpEngine {
    /// Dial `node` (lower id dials: one connection per pair) until its advert is cancelled,
    /// within the bounds of [`Dials`].
    pub(super) async fn dial_loop(
        self: Arc<Self>,
        sink: Arc<dyn Sink>,
        node: NodeId,
        token: CancellationToken,
    ) {
        let mut linked = false;
        let mut failures = 0u32;
        loop {
            match self.dial_once(&sink, node, &token, &mut linked).await {
                Outcome::Stop => return,
                Outcome::Moved => {}
                Outcome::Closed => {
                    failures = 0;
                    // Redial after the first delay, like any dial after a failure.
                    let delay = redial_delays().next().unwrap_or(Duration::from_millis(40));
                    tokio::select! {
                        () = token.cancelled() => return,
                        () = tokio::time::sleep(delay) => {}
                    }
                }
                Outcome::WrongPeer => {
                    tracing::debug!(target: LOG, node = %self.node, peer = %node, "another node answers at the announced address; forgetting the id");
                    self.forget(node, &token);
                    return;
                }
                Outcome::Failed => {
                    failures += 1;
                    if !linked && failures >= UNVERIFIED_TRIES {
                        tracing::debug!(target: LOG, node = %self.node, peer = %node, failures, "never reached; forgetting the id until discovery announces it again");
                        self.forget(node, &token);
                        return;
                    }
                }
            }
        }
    }

    /// Drop the advert of `node` if it is still the one this loop dials for.
    fn forget(&self, node: NodeId, token: &CancellationToken) {
        let mut adverts = lock(&self.adverts);
        if !token.is_cancelled() && adverts.contains_key(&node) {
            adverts.remove(&node);
        }
    }

    /// One turn: wait for the address and a dial permit, dial, and when linked wait for the
    /// link to close.
    async fn dial_once(
        self: &Arc<Self>,
        sink: &Arc<dyn Sink>,
        node: NodeId,
        token: &CancellationToken,
        linked: &mut bool,
    ) -> Outcome {
        let Some(addr) = lock(&self.adverts).get(&node).map(|a| a.info.addr) else {
            return Outcome::Stop;
        };
        let slot = self.dials.slot(addr);
        let mut slot: OwnedMutexGuard<AddrSlot> = tokio::select! {
            () = token.cancelled() => return Outcome::Stop,
            g = slot.lock_owned() => g,
        };
        if let Some(at) = slot.next {
            tokio::select! {
                () = token.cancelled() => return Outcome::Stop,
                () = sleep_until(at) => {}
            }
        }
        // The advert may have moved while this loop waited.
        if lock(&self.adverts).get(&node).map(|a| a.info.addr) != Some(addr) {
            return Outcome::Moved;
        }
        let permit = tokio::select! {
            () = token.cancelled() => return Outcome::Stop,
            p = self.dials.total.acquire() => p,
        };
        let Ok(_permit) = permit else {
            return Outcome::Stop;
        };
        let attempt = async {
            let stream = timeout(self.cfg.handshake_timeout, TcpStream::connect(addr))
                .await
                .map_err(|_| HandshakeError::ConnectTimeout)?
                .map_err(HandshakeError::Connect)?;
            self.establish(sink, stream, Some(node)).await
        };
        let result = tokio::select! {
            () = token.cancelled() => return Outcome::Stop,
            r = attempt => r,
        };
        let link = match result {
            Ok(link) => link,
            Err(HandshakeError::WrongPeer { .. }) => return Outcome::WrongPeer,
            Err(reason) => {
                let reason = &reason as &dyn std::error::Error;
                tracing::debug!(target: LOG, node = %self.node, peer = %node, %addr, reason, "dial failed");
                slot.back_off();
                return Outcome::Failed;
            }
        };
        *linked = true;
        slot.reset();
        drop(_permit);
        drop(slot);
        tokio::select! {
            () = link.closed.cancelled() => {}
            () = token.cancelled() => {
                // A draining peer closes its own link once its calls are done.
                if !link.draining.load(std::sync::atomic::Ordering::Acquire) {
                    link.closed.cancel();
                }
                return Outcome::Stop;
            }
        }
        Outcome::Closed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redials_back_off_with_jitter_and_a_cap() {
        let delays: Vec<Duration> = redial_delays().take(12).collect();
        let base = [
            40u64, 80, 160, 320, 640, 1280, 1600, 1600, 1600, 1600, 1600, 1600,
        ];
        for (d, base) in delays.iter().zip(base) {
            let base = Duration::from_millis(base);
            assert!(*d >= base && *d < base * 2, "{d:?} vs {base:?}");
        }
        assert!(
            delays
                .windows(2)
                .any(|w| w[0] != w[1] && w[0] >= Duration::from_millis(1600)),
            "delays at the cap are jittered: {delays:?}"
        );
    }
}
