//! Connections whose token expires: as Feathers v5, a real-time connection logged in with a
//! token that has an `exp` is logged out when that time passes, which removes it from every
//! channel, so it stops receiving events. A new login replaces the deadline; a logout or a
//! disconnect cancels it.
//!
//! One timer task per App serves every connection (a queue of deadlines), rather than a task
//! per logged-in connection: at 10,000 sockets a task each (its future, its timer entry and a
//! copy of the authentication) was a share of the gateway's memory per socket worth saving.
//! The task runs only while some deadline is pending.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serde_json::Value;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::ConnectionAuthenticator;
use crate::app::{App, WeakApp};
use crate::params::ConnectionId;
use crate::sync;

/// A deadline's place in the queue: when, and a ticket that tells equal times apart.
type Key = (Instant, u64);

/// The pending deadlines of an App's connections (an App extension).
#[derive(Default)]
struct Expiries {
    state: Mutex<State>,
    /// Wakes the timer task when an earlier deadline is queued.
    wake: Notify,
}

#[derive(Default)]
struct State {
    /// Each watched connection's deadline (one per open connection at most).
    by_conn: HashMap<ConnectionId, Key>,
    /// The same deadlines in time order.
    queue: BTreeMap<Key, ConnectionId>,
    next_ticket: u64,
    /// Whether the timer task is running (it stops when the queue is empty).
    running: bool,
}

impl State {
    /// Set the deadline of `conn` (replacing its earlier one); whether it is now the first.
    fn set(&mut self, conn: &ConnectionId, deadline: Instant) -> bool {
        self.remove(conn);
        let key = (deadline, self.next_ticket);
        self.next_ticket += 1;
        self.by_conn.insert(conn.clone(), key);
        self.queue.insert(key, conn.clone());
        self.queue.first_key_value().map(|(k, _)| *k) == Some(key)
    }

    fn remove(&mut self, conn: &ConnectionId) {
        if let Some(key) = self.by_conn.remove(conn) {
            self.queue.remove(&key);
        }
    }

    /// The connections due at `now`, taken out of the queue.
    fn take_due(&mut self, now: Instant) -> Vec<ConnectionId> {
        let mut due = Vec::new();
        while let Some(entry) = self.queue.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let conn = entry.remove();
            self.by_conn.remove(&conn);
            due.push(conn);
        }
        due
    }
}

fn expiries(app: &App) -> Arc<Expiries> {
    app.extension::<Expiries>()
        .unwrap_or_else(|| app.extension_or_insert_with(Expiries::default))
}

/// Set (or replace) the deadline of `conn`, logged in with `authentication`, when the App's
/// authenticator knows when that authentication expires; else cancel it.
pub(super) fn watch(app: &App, conn: &ConnectionId, authentication: &Value) {
    let at = app
        .extension::<Arc<dyn ConnectionAuthenticator>>()
        .and_then(|auth| auth.expires_at(authentication));
    let runtime = tokio::runtime::Handle::try_current().ok();
    let (Some(at), Some(runtime)) = (at, runtime) else {
        forget(app, conn);
        return;
    };
    let delay = at.duration_since(SystemTime::now()).unwrap_or_default();
    // A deadline past what the clock can hold never comes.
    let Some(deadline) = Instant::now().checked_add(delay) else {
        forget(app, conn);
        return;
    };
    let expiries = expiries(app);
    let (earliest, start) = {
        let mut state = sync::lock(&expiries.state);
        let earliest = state.set(conn, deadline);
        let start = !state.running;
        state.running = true;
        (earliest, start)
    };
    if start {
        runtime.spawn(run(app.downgrade(), expiries));
    } else if earliest {
        expiries.wake.notify_one();
    }
}

/// Cancel the deadline of `conn` (logout, disconnect, a new login without one).
pub(super) fn forget(app: &App, conn: &ConnectionId) {
    let Some(expiries) = app.extension::<Expiries>() else {
        return;
    };
    sync::lock(&expiries.state).remove(conn);
}

/// The timer task: logs out each connection at its deadline; stops when none is pending or
/// the App is gone.
async fn run(app: WeakApp, expiries: Arc<Expiries>) {
    loop {
        let woken = expiries.wake.notified();
        tokio::pin!(woken);
        // Registered before the queue is read: a deadline queued after the read wakes it.
        woken.as_mut().enable();
        let (due, next) = {
            let mut state = sync::lock(&expiries.state);
            let due = state.take_due(Instant::now());
            let next = state.queue.first_key_value().map(|((at, _), _)| *at);
            if due.is_empty() && next.is_none() {
                state.running = false;
                return;
            }
            (due, next)
        };
        if !due.is_empty() {
            let Some(app) = app.upgrade() else {
                return;
            };
            for conn in due {
                tracing::debug!(target: "plume::realtime", %conn, "token expired: logged out");
                app.logout_connection(&conn);
            }
            continue;
        }
        if let Some(next) = next {
            tokio::select! {
                () = tokio::time::sleep_until(next) => {}
                () = woken => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(id: &str) -> ConnectionId {
        ConnectionId(id.to_owned())
    }

    #[test]
    fn a_connection_has_one_deadline_and_they_come_due_in_order() {
        let mut state = State::default();
        let now = Instant::now();
        let at = |secs| now + std::time::Duration::from_secs(secs);
        assert!(state.set(&conn("a"), at(5)));
        assert!(state.set(&conn("b"), at(1)));
        assert!(!state.set(&conn("a"), at(3)));
        // The same time as "a": after it.
        assert!(!state.set(&conn("c"), at(3)));
        // "a" was replaced: one entry each.
        assert_eq!(state.queue.len(), 3);
        assert_eq!(state.by_conn.len(), 3);
        assert_eq!(state.take_due(at(0)), Vec::<ConnectionId>::new());
        assert_eq!(state.take_due(at(3)), [conn("b"), conn("a"), conn("c")]);
        assert!(state.by_conn.is_empty() && state.queue.is_empty());
    }
}
