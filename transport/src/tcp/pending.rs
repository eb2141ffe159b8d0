//! A link's calls in flight and their deadlines, kept by one sweeper per link instead of a timer
//! per call.
//!
//! A call puts its reply channel and its deadline in the map; the link's reader takes the entry
//! when the reply comes. The sweeper task sleeps until the earliest deadline it knows of, then
//! ends every call whose deadline has passed with [`Expired`] (the caller's `Timeout`) and sleeps
//! until the earliest deadline left. A call never waits past its deadline by more than tokio's
//! timer resolution (1 ms) and the sweeper's wake-up; a call that ends earlier (its reply came)
//! costs no timer at all. The earliest deadline is a lower bound: a call that ended leaves it
//! stale, which costs one early wake-up and a scan of the calls then in flight. With nothing in
//! flight after a sweep, the sweeper parks without a timer until a call comes.

use std::collections::HashMap;
use std::sync::Mutex;

use bytes::Bytes;
use tokio::sync::{Notify, oneshot};
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;

use crate::sync::lock;

/// A call's deadline passed before its reply came.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Expired;

/// What a waiting call receives: the encoded reply, or [`Expired`].
pub(crate) type Reply = Result<Bytes, Expired>;

#[derive(Debug)]
struct Entry {
    tx: oneshot::Sender<Reply>,
    deadline: Instant,
}

#[derive(Debug, Default)]
struct State {
    /// By call id: our own counter, so a fixed-seed foldhash (a multiply and a fold a lookup).
    calls: HashMap<u64, Entry, foldhash::fast::FixedState>,
    /// When the sweeper wakes next; `None`: it is parked (no timer) until a call comes.
    due: Option<Instant>,
}

/// A link's calls in flight.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    state: Mutex<State>,
    /// Wakes the sweeper for a deadline earlier than the one it sleeps until.
    wake: Notify,
}

impl Pending {
    /// Register call `id`, due at `deadline`; its reply (or [`Expired`]) comes on the receiver.
    pub(crate) fn insert(&self, id: u64, deadline: Instant) -> oneshot::Receiver<Reply> {
        let (tx, rx) = oneshot::channel();
        let earlier = {
            let mut s = lock(&self.state);
            s.calls.insert(id, Entry { tx, deadline });
            // Calls of one timeout come in deadline order: only the first after a quiet spell
            // (or a shorter timeout) moves the sweeper.
            let earlier = s.due.is_none_or(|due| deadline < due);
            if earlier {
                s.due = Some(deadline);
            }
            earlier
        };
        if earlier {
            self.wake.notify_one();
        }
        rx
    }

    /// Take call `id`'s reply channel (its reply came), if it is still waiting.
    pub(crate) fn take(&self, id: u64) -> Option<oneshot::Sender<Reply>> {
        lock(&self.state).calls.remove(&id).map(|e| e.tx)
    }

    /// Forget call `id` (it was not sent).
    pub(crate) fn remove(&self, id: u64) {
        drop(self.take(id));
    }

    /// Drop every call (the link closed: each caller sees its channel closed).
    pub(crate) fn clear(&self) {
        lock(&self.state).calls.clear();
    }

    /// How many calls are in the map.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        lock(&self.state).calls.len()
    }

    /// Whether the sweeper is parked without a timer.
    #[cfg(test)]
    pub(crate) fn parked(&self) -> bool {
        lock(&self.state).due.is_none()
    }

    /// End the calls due by `now` with [`Expired`]; returns their ids. The sweeper's next
    /// wake-up becomes the earliest deadline left (none when nothing is in flight).
    fn sweep(&self, now: Instant) -> Vec<u64> {
        let mut ended = Vec::new();
        {
            let mut s = lock(&self.state);
            let mut next: Option<Instant> = None;
            let mut ids = Vec::new();
            for (&id, e) in &s.calls {
                if e.deadline <= now {
                    ids.push(id);
                } else {
                    next = Some(next.map_or(e.deadline, |n| n.min(e.deadline)));
                }
            }
            for id in ids {
                if let Some(e) = s.calls.remove(&id) {
                    ended.push((id, e.tx));
                }
            }
            s.due = next;
        }
        ended
            .into_iter()
            .map(|(id, tx)| {
                let _ = tx.send(Err(Expired));
                id
            })
            .collect()
    }

    /// The sweeper: until `closed`, end overdue calls, calling `expired` with each one's id.
    pub(crate) async fn run_sweeper(&self, closed: &CancellationToken, expired: impl Fn(u64)) {
        loop {
            let due = lock(&self.state).due;
            let woken = self.wake.notified();
            match due {
                None => tokio::select! {
                    () = woken => {}
                    () = closed.cancelled() => return,
                },
                Some(at) => tokio::select! {
                    () = sleep_until(at) => {
                        for id in self.sweep(Instant::now()) {
                            expired(id);
                        }
                    }
                    () = woken => {}
                    () = closed.cancelled() => return,
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    fn start() -> (Arc<Pending>, CancellationToken, Arc<Mutex<Vec<u64>>>) {
        let pending = Arc::new(Pending::default());
        let closed = CancellationToken::new();
        let expired = Arc::new(Mutex::new(Vec::new()));
        let (p, c, e) = (pending.clone(), closed.clone(), expired.clone());
        tokio::spawn(async move {
            p.run_sweeper(&c, |id| lock(&e).push(id)).await;
        });
        (pending, closed, expired)
    }

    #[tokio::test(start_paused = true)]
    async fn overdue_calls_end_expired_at_their_deadline_and_leave_nothing() {
        let (pending, closed, expired) = start();
        let t0 = Instant::now();
        let long = pending.insert(1, t0 + Duration::from_secs(10));
        let short = pending.insert(2, t0 + Duration::from_secs(2));
        let answered = pending.insert(3, t0 + Duration::from_secs(1));
        // Call 3's reply comes: no timeout for it.
        pending
            .take(3)
            .expect("waiting")
            .send(Ok(Bytes::from_static(b"r")))
            .expect("sent");
        assert_eq!(answered.await.expect("reply"), Ok(Bytes::from_static(b"r")));
        assert_eq!(short.await.expect("ended"), Err(Expired));
        assert_eq!(t0.elapsed(), Duration::from_secs(2));
        assert_eq!(long.await.expect("ended"), Err(Expired));
        assert_eq!(t0.elapsed(), Duration::from_secs(10));
        assert_eq!(*lock(&expired), [2, 1]);
        assert_eq!(pending.len(), 0);
        // Nothing in flight after the sweep: no timer until a call comes.
        tokio::task::yield_now().await;
        assert!(pending.parked());
        closed.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn a_shorter_deadline_wakes_the_sweeper_early_and_a_parked_one_wakes_again() {
        let (pending, closed, _expired) = start();
        let t0 = Instant::now();
        let long = pending.insert(1, t0 + Duration::from_secs(30));
        tokio::task::yield_now().await;
        // The sweeper sleeps until 30 s; a 1 s call comes after it.
        let short = pending.insert(2, t0 + Duration::from_millis(1000));
        assert_eq!(short.await.expect("ended"), Err(Expired));
        assert_eq!(t0.elapsed(), Duration::from_millis(1000));
        assert_eq!(long.await.expect("ended"), Err(Expired));
        assert_eq!(t0.elapsed(), Duration::from_secs(30));
        tokio::task::yield_now().await;
        assert!(pending.parked());
        // Parked: a new call wakes it, and it keeps that call's deadline too.
        let t1 = Instant::now();
        let late = pending.insert(3, t1 + Duration::from_secs(5));
        assert_eq!(late.await.expect("ended"), Err(Expired));
        assert_eq!(t1.elapsed(), Duration::from_secs(5));
        assert_eq!(pending.len(), 0);
        closed.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn calls_that_end_in_time_leave_a_stale_wake_up_and_nothing_else() {
        let (pending, closed, expired) = start();
        let t0 = Instant::now();
        for id in 0..100 {
            let rx = pending.insert(id, t0 + Duration::from_secs(10));
            pending
                .take(id)
                .expect("waiting")
                .send(Ok(Bytes::new()))
                .expect("sent");
            assert_eq!(rx.await.expect("reply"), Ok(Bytes::new()));
        }
        assert!(!pending.parked());
        // The sweeper wakes once at the stale deadline, finds nothing, parks.
        tokio::time::sleep(Duration::from_secs(11)).await;
        assert!(pending.parked());
        assert!(lock(&expired).is_empty());
        // A closed link drops its calls: the caller sees the channel closed (Lost).
        let rx = pending.insert(7, Instant::now() + Duration::from_secs(1));
        pending.clear();
        assert!(rx.await.is_err());
        closed.cancel();
    }
}
