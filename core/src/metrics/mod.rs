//! Prometheus metrics (feature `metrics`): [`App::enable_metrics`] installs the `metrics`
//! crate's Prometheus recorder for the process and answers `GET /metrics` in the Prometheus text
//! format. The exporter has no listener of its own: the App's server serves the page.
//!
//! What is recorded, by whom (the full table is in the guide, "Metrics"):
//!
//! - every service call, in the hook chain (`ServiceHandle`): [`calls::CALLS`] by path, method,
//!   provider (`rest`, `socketio`, `mesh`, `internal`) and outcome (`ok` or the error's code),
//!   [`calls::CALL_DURATION`] and [`calls::CALLS_IN_FLIGHT`] by path and method; a path that is no
//!   service is `path="other"`;
//! - logins by outcome and socket.io connections (features `auth`, `server`);
//! - the process: resident memory, CPU seconds and open file descriptors, read from `/proc` at
//!   each scrape;
//! - the mesh (crate `plume-transport`, its feature `metrics`).
//!
//! Labels are bounded: service paths from the service table and their methods, never ids,
//! users or query values. The recorder is global (the `metrics` crate has one per process): every
//! App of the process records into it once one App enabled it.

pub mod calls;
#[cfg(feature = "metrics")]
mod exporter;
#[cfg(feature = "metrics")]
mod process;
#[cfg(feature = "metrics")]
mod series;

pub(crate) use calls::CallMetrics;
#[cfg(feature = "server")]
pub(crate) use calls::unknown_path;
#[cfg(feature = "metrics")]
pub use exporter::{METRICS_PATH, MetricsError, render};

/// `plume_logins_total{outcome}`: logins (`ok`, or the error's code).
pub const LOGINS: &str = "plume_logins_total";
/// `plume_sockets_connected`: open socket.io connections.
pub const SOCKETS: &str = "plume_sockets_connected";

/// True once [`App::enable_metrics`](crate::App::enable_metrics) installed the recorder.
#[inline]
pub fn enabled() -> bool {
    #[cfg(feature = "metrics")]
    {
        exporter::installed()
    }
    #[cfg(not(feature = "metrics"))]
    {
        false
    }
}

/// Count a login under its outcome: `ok` or the error's code.
#[cfg(feature = "auth")]
#[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
pub(crate) fn login(outcome: Option<&crate::Error>) {
    #[cfg(feature = "metrics")]
    if enabled() {
        let outcome = outcome.map_or_else(|| "ok".to_owned(), |e| e.code().to_string());
        metrics::counter!(LOGINS, "outcome" => outcome).increment(1);
    }
}

/// A socket.io connection opened (`+1.0`) or closed (`-1.0`).
#[cfg(feature = "server")]
#[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
pub(crate) fn socket(delta: f64) {
    #[cfg(feature = "metrics")]
    if enabled() {
        metrics::gauge!(SOCKETS).increment(delta);
    }
}
