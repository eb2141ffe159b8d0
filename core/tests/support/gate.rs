//! A service whose `find` starts, says so, and answers only once released. Included with
//! `#[path]`.

use plume::{Params, Result, Service, async_trait};
use serde_json::{Value, json};
use tokio::sync::Notify;

/// `find` notifies `started`, then waits for `release` and answers `["done"]`.
#[derive(Default)]
pub(crate) struct Gate {
    pub(crate) started: Notify,
    pub(crate) release: Notify,
}

#[async_trait]
impl Service for Gate {
    async fn find(&self, _params: Params) -> Result<Value> {
        self.started.notify_one();
        self.release.notified().await;
        Ok(json!(["done"]))
    }
}
