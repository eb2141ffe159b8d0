//! Connections whose token expires: as Feathers v5, a real-time connection logged in with a
//! token that has an `exp` is logged out when that time passes, which removes it from every
//! channel, so it stops receiving events. A new login replaces the timer; a logout or a
//! disconnect cancels it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serde_json::Value;
use tokio::task::AbortHandle;

use super::ConnectionAuthenticator;
use crate::app::App;
use crate::params::ConnectionId;
use crate::sync;

/// The expiry timer of each logged-in connection (an App extension; one entry per open
/// connection at most).
#[derive(Default)]
struct Expiries {
    timers: Mutex<HashMap<ConnectionId, AbortHandle>>,
}

fn expiries(app: &App) -> Arc<Expiries> {
    app.extension::<Expiries>()
        .unwrap_or_else(|| app.extension_or_insert_with(Expiries::default))
}

/// Start (or restart) the expiry timer of `conn`, logged in with `authentication`, when the
/// App's authenticator knows when that authentication expires.
pub(super) fn watch(app: &App, conn: &ConnectionId, authentication: &Value) {
    forget(app, conn);
    let Some(authenticator) = app.extension::<Arc<dyn ConnectionAuthenticator>>() else {
        return;
    };
    let Some(at) = authenticator.expires_at(authentication) else {
        return;
    };
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let delay = at.duration_since(SystemTime::now()).unwrap_or_default();
    let weak = app.downgrade();
    let (id, expected) = (conn.clone(), authentication.clone());
    let task = runtime.spawn(async move {
        tokio::time::sleep(delay).await;
        let Some(app) = weak.upgrade() else {
            return;
        };
        // Only if the connection is still logged in with that same authentication.
        let same = app
            .connection(&id)
            .is_some_and(|c| c.authentication.as_ref() == Some(&expected));
        if same {
            tracing::debug!(target: "plume::realtime", conn = %id, "token expired: logged out");
            sync::lock(&expiries(&app).timers).remove(&id);
            app.logout_connection(&id);
        }
    });
    sync::lock(&expiries(app).timers).insert(conn.clone(), task.abort_handle());
}

/// Cancel the expiry timer of `conn` (logout, disconnect, a new login).
pub(super) fn forget(app: &App, conn: &ConnectionId) {
    let timer = sync::lock(&expiries(app).timers).remove(conn);
    if let Some(timer) = timer {
        timer.abort();
    }
}
