//! Stopping a node: refuse new calls, let the engine tell its peers, let the calls in flight
//! (both ways) finish within the drain timeout, then close.

use tokio::time::Instant;

use super::{LOG, Mesh};

impl Mesh {
    /// Drain and stop: goaway and leaving beacon (or their NATS equivalents), refuse new calls,
    /// let the calls in flight (both ways) finish within the drain timeout, then close every
    /// connection.
    pub async fn shutdown(&self) {
        let inner = &self.inner;
        if inner.activity.start_draining() {
            inner.stopped.cancelled().await;
            return;
        }
        let deadline = Instant::now() + inner.cfg.drain_timeout;
        let activity = &inner.activity;
        let mut drained = inner.engine.drain(deadline).await;
        drained = drained && activity.wait_until(deadline, || activity.is_idle()).await;
        if !drained {
            tracing::warn!(target: LOG, node = %inner.node, serving = activity.serving_count(), "drain timeout passed; closing with calls in flight");
        }
        inner.engine.close().await;
        inner.stopped.cancel();
        tracing::debug!(target: LOG, node = %inner.node, "mesh node stopped");
    }
}
