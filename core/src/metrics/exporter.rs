//! The Prometheus recorder of the process and `GET /metrics`.

use std::sync::OnceLock;
use std::time::Duration;

use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use super::calls::CALLS;
use super::series::{self, BUCKETS};
use super::{LOGINS, SOCKETS, process};
use crate::app::App;

/// The path of the metrics page.
pub const METRICS_PATH: &str = "/metrics";

/// How often histograms are drained into their buckets when nobody scrapes (keeps the samples
/// waiting for a scrape bounded).
const UPKEEP: Duration = Duration::from_secs(5);

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The recorder could not be installed: another `metrics` recorder is the process's already.
#[derive(Debug, thiserror::Error)]
#[error("cannot install the Prometheus recorder: {0}")]
pub struct MetricsError(String);

#[inline]
pub(super) fn installed() -> bool {
    HANDLE.get().is_some()
}

/// Install the recorder once per process.
fn install() -> Result<&'static PrometheusHandle, MetricsError> {
    if let Some(handle) = HANDLE.get() {
        return Ok(handle);
    }
    let duration_suffix = Matcher::Suffix("_seconds".to_owned());
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(duration_suffix, &BUCKETS)
        .map_err(|e| MetricsError(e.to_string()))?
        .build_recorder();
    let handle = recorder.handle();
    // Two Apps enabling at once: the loser's install fails, and the winner's handle serves both.
    let installed = metrics::set_global_recorder(recorder).is_ok();
    if installed {
        let _ = HANDLE.set(handle);
        describe();
        let upkeep = HANDLE.get().cloned();
        if let Some(upkeep) = upkeep {
            let spawned = std::thread::Builder::new()
                .name("plume-metrics".to_owned())
                .spawn(move || {
                    loop {
                        std::thread::sleep(UPKEEP);
                        upkeep.run_upkeep();
                    }
                });
            if let Err(err) = spawned {
                tracing::warn!(target: "plume::metrics", %err, "no upkeep thread");
            }
        }
    }
    HANDLE
        .get()
        .ok_or_else(|| MetricsError("another metrics recorder is installed".to_owned()))
}

fn describe() {
    use metrics::{describe_counter, describe_gauge};
    describe_counter!(CALLS, "Service calls by path, method, provider and outcome");
    describe_counter!(LOGINS, "Logins by outcome");
    describe_gauge!(SOCKETS, "Open socket.io connections");
    process::describe();
}

/// The metrics of the process in the Prometheus text format (the process gauges read now), or
/// `None` before [`App::enable_metrics`].
pub fn render() -> Option<String> {
    let handle = HANDLE.get()?;
    process::record();
    let mut page = handle.render();
    // The call latency and in-flight series are Plume's own (`series`), not the exporter's.
    series::render(&mut page);
    Some(page)
}

impl App {
    /// Record metrics (service calls, logins, sockets, the process and, with `plume-transport`'s
    /// feature `metrics`, the mesh) and serve them at `GET /metrics` in the Prometheus text format.
    /// Call it before [`listen`](App::listen) or [`into_router`](App::into_router). The recorder
    /// is the process's: it fails when another `metrics` recorder was installed first.
    ///
    /// ```
    /// let app = plume::App::new();
    /// app.enable_metrics()?;
    /// let text = plume::metrics::render().unwrap_or_default();
    /// assert!(text.contains("process_open_fds"));
    /// # Ok::<(), plume::metrics::MetricsError>(())
    /// ```
    pub fn enable_metrics(&self) -> Result<(), MetricsError> {
        install()?;
        self.add_routes(|router| router.route(METRICS_PATH, get(page)));
        Ok(())
    }
}

async fn page() -> axum::response::Response {
    match render() {
        Some(text) => ([(CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response(),
        None => crate::server::error_response(&crate::Error::unavailable("Metrics are off")),
    }
}
