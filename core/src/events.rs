//! Service events: `created`, `updated`, `patched`, `removed` and custom ones.
//!
//! Listeners are synchronous callbacks, called in registration order on the task that made the
//! call, right after the call succeeded. They must not block: a listener that needs to do I/O
//! hands the event to a task of its own (the real-time server and the distribution plugin do).

use std::fmt;
use std::sync::{Arc, RwLock};

use serde_json::Value;

use crate::hooks::HookContext;
use crate::sync;

/// One event of one service.
#[derive(Debug, Clone)]
pub struct ServiceEvent {
    /// The service path.
    pub path: String,
    /// The event name, e.g. `created`.
    pub event: String,
    /// The event data: the record (one event per record for multi operations).
    pub data: Value,
    /// The hook context of the call that emitted it, when a call did.
    pub context: Option<Arc<HookContext>>,
}

/// The id of a registered listener, for removing it again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ListenerId(u64);

type Callback = Arc<dyn Fn(&ServiceEvent) + Send + Sync>;

/// A list of event listeners, optionally filtered by event name.
#[derive(Clone, Default)]
pub(crate) struct Listeners {
    inner: Arc<RwLock<ListenersInner>>,
}

#[derive(Default)]
struct ListenersInner {
    next: u64,
    list: Vec<(ListenerId, Option<String>, Callback)>,
}

impl fmt::Debug for Listeners {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.inner.read().map(|i| i.list.len()).unwrap_or(0);
        f.debug_struct("Listeners").field("count", &n).finish()
    }
}

impl Listeners {
    pub(crate) fn add(
        &self,
        event: Option<String>,
        f: impl Fn(&ServiceEvent) + Send + Sync + 'static,
    ) -> ListenerId {
        let mut inner = sync::write(&self.inner);
        inner.next += 1;
        let id = ListenerId(inner.next);
        inner.list.push((id, event, Arc::new(f)));
        id
    }

    pub(crate) fn remove(&self, id: ListenerId) -> bool {
        let mut inner = sync::write(&self.inner);
        let before = inner.list.len();
        inner.list.retain(|(l, _, _)| *l != id);
        inner.list.len() != before
    }

    pub(crate) fn emit(&self, event: &ServiceEvent) {
        // Clone the callbacks out so a listener may add or remove listeners.
        let callbacks: Vec<Callback> = {
            let inner = sync::read(&self.inner);
            inner
                .list
                .iter()
                .filter(|(_, name, _)| name.as_deref().is_none_or(|n| n == event.event))
                .map(|(_, _, cb)| cb.clone())
                .collect()
        };
        for cb in callbacks {
            cb(event);
        }
    }
}
