//! hyper's header read timeout for one connection, without a tokio timer per request.
//!
//! hyper asks its [`Timer`] for a new `Sleep` every time the connection starts waiting for a
//! request's headers (from its start, and after each response: an idle keep-alive connection
//! waits the same way), polls it while the headers are incomplete, and drops it once they are
//! parsed. With hyper-util's `TokioTimer` that is a boxed tokio `Sleep` registered in the
//! runtime's timer wheel and removed again on every request.
//!
//! Here the `Sleep` only records its deadline in the connection's [`Watch`] when hyper polls it,
//! and a watchdog that runs beside the connection ([`watched`], one tokio timer per
//! connection) sleeps until the armed deadline: past it, it marks the time and wakes hyper,
//! whose next poll of the `Sleep` is ready, so the connection ends with hyper's own header
//! timeout error, as before. Every deadline is `now + timeout` and only grows, so a busy
//! connection's watchdog wakes about once per timeout (finding a later deadline armed and
//! sleeping until it), not once per request. The deadline is kept to tokio's timer resolution:
//! the watchdog never sleeps past an armed deadline.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::task::AtomicWaker;
use hyper::rt::{Sleep, Timer};
use tokio::time::Instant;

/// What a connection's header deadline and its watchdog share.
#[derive(Debug)]
pub(crate) struct Watch {
    /// The origin of the nanosecond clocks below.
    base: Instant,
    /// The deadline armed by a waiting `Sleep` (nanoseconds after `base`, at least 1), or 0.
    armed: AtomicU64,
    /// Every deadline up to this one (nanoseconds after `base`) has passed: set by the watchdog.
    passed: AtomicU64,
    /// The task polling the armed `Sleep`.
    waker: AtomicWaker,
}

impl Watch {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            base: Instant::now(),
            armed: AtomicU64::new(0),
            passed: AtomicU64::new(0),
            waker: AtomicWaker::new(),
        })
    }

    fn nanos(&self, at: Instant) -> u64 {
        let n = at.saturating_duration_since(self.base).as_nanos();
        u64::try_from(n).unwrap_or(u64::MAX).max(1)
    }

    fn instant(&self, nanos: u64) -> Instant {
        self.base + Duration::from_nanos(nanos)
    }

    /// After the watchdog's timer fired: end an overdue wait, and say when to look next.
    fn next_look(&self, timeout: Duration) -> Instant {
        let now = Instant::now();
        let armed = self.armed.load(Ordering::Acquire);
        if armed != 0 && self.instant(armed) > now {
            // A later request's deadline: sleep until it.
            return self.instant(armed);
        }
        if armed != 0 {
            // Past due: hyper's next poll of the `Sleep` ends the connection.
            self.passed.store(self.nanos(now), Ordering::Release);
            self.waker.wake();
        }
        // Any deadline armed from now on is at least `now + timeout`.
        now + timeout
    }
}

/// Run `connection` with the watchdog of `watch` beside it, in the same task. `timeout` is the
/// one hyper adds to each deadline. The watchdog's timer is polled only when it has fired (or
/// was just reset): a look at its state on the connection's other wake-ups.
pub(crate) async fn watched<F: Future>(
    watch: &Watch,
    timeout: Duration,
    connection: F,
) -> F::Output {
    let mut connection = std::pin::pin!(connection);
    let mut sleep = std::pin::pin!(tokio::time::sleep(timeout));
    let mut registered = false;
    std::future::poll_fn(|cx| {
        if let Poll::Ready(out) = connection.as_mut().poll(cx) {
            return Poll::Ready(out);
        }
        if !registered || sleep.is_elapsed() {
            // Outside tokio's task budget: a `Pending` here always means the timer holds our
            // waker, so skipping the poll until it fires misses nothing.
            while Pin::new(&mut tokio::task::unconstrained(sleep.as_mut()))
                .poll(cx)
                .is_ready()
            {
                sleep.as_mut().reset(watch.next_look(timeout));
            }
            registered = true;
        }
        Poll::Pending
    })
    .await
}

/// The [`Timer`] of one connection (hyper uses it for the header read timeout only).
#[derive(Debug, Clone)]
pub(crate) struct HeaderTimer(pub(crate) Arc<Watch>);

impl Timer for HeaderTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Sleep>> {
        self.sleep_until((Instant::now() + duration).into_std())
    }

    fn sleep_until(&self, deadline: std::time::Instant) -> Pin<Box<dyn Sleep>> {
        let nanos = self.0.nanos(Instant::from_std(deadline));
        Box::pin(HeaderSleep {
            watch: self.0.clone(),
            deadline: nanos,
        })
    }

    fn now(&self) -> std::time::Instant {
        // tokio's clock, which tests may pause.
        Instant::now().into_std()
    }
}

/// A header deadline: armed in the [`Watch`] while hyper polls it.
#[derive(Debug)]
struct HeaderSleep {
    watch: Arc<Watch>,
    /// Nanoseconds after the watch's base.
    deadline: u64,
}

impl Future for HeaderSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let w = &self.watch;
        if w.passed.load(Ordering::Acquire) >= self.deadline {
            return Poll::Ready(());
        }
        w.waker.register(cx.waker());
        w.armed.store(self.deadline, Ordering::Release);
        if w.passed.load(Ordering::Acquire) >= self.deadline {
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

impl Sleep for HeaderSleep {}

impl Drop for HeaderSleep {
    fn drop(&mut self) {
        // Disarm, unless a newer deadline took the place.
        let _ = self.watch.armed.compare_exchange(
            self.deadline,
            0,
            Ordering::AcqRel,
            Ordering::Relaxed,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deadline hyper polls ends at its time (paused clock); one dropped before is disarmed.
    #[tokio::test(start_paused = true)]
    async fn an_armed_deadline_ends_on_time_and_a_dropped_one_never() {
        let watch = Watch::new();
        let timer = HeaderTimer(watch.clone());
        let timeout = Duration::from_secs(5);
        let w = watch.clone();
        let dog =
            tokio::spawn(async move { watched(&w, timeout, std::future::pending::<()>()).await });
        let t0 = Instant::now();
        // A request whose headers come in time: armed, then dropped.
        let mut early = timer.sleep_until(timer.now() + timeout);
        assert!(futures::poll!(early.as_mut()).is_pending());
        drop(early);
        assert_eq!(watch.armed.load(Ordering::Acquire), 0);
        tokio::time::advance(Duration::from_secs(3)).await;
        // The next one waits in vain.
        let late = timer.sleep_until(timer.now() + timeout);
        late.await;
        assert_eq!(t0.elapsed(), Duration::from_secs(8));
        dog.abort();
    }
}
