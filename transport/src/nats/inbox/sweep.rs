//! The inbox's deadlines, kept by one sweeper task instead of a timer per request (as a TCP
//! link's calls are, `tcp/pending.rs`).
//!
//! A request's entry holds its deadline. The sweeper sleeps until the earliest deadline it knows
//! of, ends every request whose deadline has passed with [`InboxError::TimedOut`] (its number is
//! not reused: its reply may still come), and sleeps until the earliest deadline left, or
//! without a timer while nothing waits. A request that gets its reply in time costs no timer at
//! all; one that times out ends within tokio's timer resolution (1 ms) and the sweeper's wake-up
//! of its deadline. The earliest deadline is a lower bound: a request that ended leaves it as it
//! was, and the sweep that finds nothing due sets it right.

use std::sync::Arc;

use tokio::sync::oneshot;
use tokio::time::Instant;

use super::{Calls, InboxError, Outcome, Shared};
use crate::sync::lock;

impl Calls {
    /// A request due at `deadline` was registered: whether the sweeper must wake to sleep until
    /// that earlier deadline.
    pub(super) fn due_by(&mut self, deadline: Instant) -> bool {
        let earlier = self.due.is_none_or(|due| deadline < due);
        if earlier {
            self.due = Some(deadline);
        }
        earlier
    }

    /// Take out the requests due by `now`; the next wake-up becomes the earliest deadline left
    /// (none when nothing waits).
    fn take_due(&mut self, now: Instant) -> Vec<oneshot::Sender<Outcome>> {
        let due: Vec<_> = self
            .waiting
            .extract_if(|_, w| w.deadline <= now)
            .map(|(_, w)| w.tx)
            .collect();
        self.due = self.waiting.values().map(|w| w.deadline).min();
        due
    }
}

/// End the requests due by `now`; the sweeper's next wake-up becomes the earliest deadline left.
pub(super) fn sweep(shared: &Shared, now: Instant) {
    let expired = lock(&shared.pending).take_due(now);
    for tx in expired {
        // A request dropped meanwhile: nothing to do.
        drop(tx.send(Err(InboxError::TimedOut)));
    }
}

/// The sweeper: until the inbox drops (the task is aborted), end overdue requests.
pub(super) async fn sweeping(shared: Arc<Shared>) {
    loop {
        let due = lock(&shared.pending).due;
        match due {
            // Nothing waits: no timer until a request comes.
            None => shared.sweep.notified().await,
            Some(at) => {
                tokio::select! {
                    () = tokio::time::sleep_until(at) => {}
                    // An earlier deadline came: sleep until that one instead.
                    () = shared.sweep.notified() => continue,
                }
            }
        }
        sweep(&shared, Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;
    use futures::{FutureExt, StreamExt};
    use tokio::sync::oneshot;
    use tokio::time::Instant;

    use super::super::nats_server::{WAIT, nats_server};
    use super::super::{Calls, InboxError, NatsInbox, Waiting};

    fn waiting(calls: &mut Calls, id: u64, deadline: Instant) -> oneshot::Receiver<super::Outcome> {
        let (tx, rx) = oneshot::channel();
        calls.waiting.insert(
            id,
            Waiting {
                tx,
                reply: None,
                losable: None,
                deadline,
            },
        );
        rx
    }

    /// The earliest deadline moves only for an earlier one; a sweep takes what is due and
    /// nothing else, and leaves the earliest deadline of what is left (none when nothing is).
    #[test]
    fn a_sweep_takes_what_is_due_and_keeps_the_earliest_deadline_left() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut calls = Calls::default();
        let mut rx = Vec::new();
        for (id, ms) in [(1, 300), (2, 100), (3, 200), (4, 100)] {
            rx.push(waiting(&mut calls, id, at(ms)));
            let moved = calls.due_by(at(ms));
            assert_eq!(moved, [1, 2].contains(&id), "call {id}");
        }
        assert_eq!(calls.due, Some(at(100)));
        assert!(calls.take_due(at(99)).is_empty());
        assert_eq!(calls.due, Some(at(100)));
        let due = calls.take_due(at(100));
        assert_eq!(due.len(), 2);
        assert_eq!(calls.due, Some(at(200)));
        // A request that ended (its reply came) leaves the bound as it was; the sweep that finds
        // nothing due sets it right.
        calls.waiting.remove(&3);
        assert!(calls.take_due(at(250)).is_empty());
        assert_eq!(calls.due, Some(at(300)));
        assert_eq!(calls.take_due(at(1000)).len(), 1);
        assert_eq!(calls.due, None);
        drop(due);
        assert!(rx.iter_mut().all(|r| r.try_recv().is_err()));
    }

    /// With a real nats-server and nobody answering: a request due sooner, made after one due
    /// later, ends first (the sweeper woke for its deadline), and the other still waits.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_earlier_deadline_wakes_the_sweeper() {
        let (_server, client) = nats_server().await;
        let mut sub = client.subscribe("silent").await.expect("subscribe");
        client.flush().await.expect("flush");
        let inbox = NatsInbox::new(client.clone(), 16);
        let mut later =
            Box::pin(inbox.request("silent".into(), None, Bytes::new(), Instant::now() + WAIT));
        // Polled until its request is out (registered, its deadline known to the sweeper).
        tokio::select! {
            r = &mut later => panic!("nobody answers: {r:?}"),
            m = sub.next() => assert!(m.is_some()),
        }
        let soon = inbox
            .request(
                "silent".into(),
                None,
                Bytes::new(),
                Instant::now() + Duration::from_millis(50),
            )
            .await;
        assert!(matches!(soon, Err(InboxError::TimedOut)), "{soon:?}");
        assert_eq!(inbox.pending(), 1, "the later request still waits");
        assert!(later.as_mut().now_or_never().is_none());
    }
}
