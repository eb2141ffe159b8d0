//! The per-method call series kept by Plume itself, not by the exporter: the latency histogram
//! ([`CALL_DURATION`]) as fixed buckets of atomic counters and the in-flight gauge
//! ([`CALLS_IN_FLIGHT`]) as an atomic integer, both read at a scrape and written in the
//! exporter's text format (its own formatting functions) after the exporter's page.
//!
//! Why: through the `metrics` facade, the Prometheus exporter's histogram stores every sample
//! with a timestamp of its own (a clock read and a push into a lock-free bucket list per call,
//! drained into buckets later) and its gauge is an `f64` changed by a compare-and-swap loop
//! each way. Here a call costs one bucket `fetch_add`, one sum `fetch_add` and an integer
//! increment and decrement. The page shows the same names, types, labels and buckets.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use metrics::{Key, Label};
use metrics_exporter_prometheus::LabelSet;
use metrics_exporter_prometheus::formatting::{
    write_help_line, write_metric_line, write_type_line,
};

use super::calls::{CALL_DURATION, CALLS_IN_FLIGHT};

/// The latency buckets, in seconds: 100 µs to 10 s.
pub(crate) const BUCKETS: [f64; 15] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    10.0,
];

/// [`BUCKETS`] in nanoseconds (rounded: the bounds are whole microseconds): a latency falls in
/// the first bucket whose bound it does not exceed (`le`), compared as an integer.
const BOUNDS_NANOS: [u64; BUCKETS.len()] = {
    let mut nanos = [0u64; BUCKETS.len()];
    let mut i = 0;
    while i < BUCKETS.len() {
        // Positive and at most 10 s: the cast neither wraps nor truncates.
        nanos[i] = (BUCKETS[i] * 1e9).round() as u64;
        i += 1;
    }
    nanos
};

/// The help text of [`CALL_DURATION`].
const DURATION_HELP: &str = "Service call latency";
/// The help text of [`CALLS_IN_FLIGHT`].
const IN_FLIGHT_HELP: &str = "Service calls running now";

/// The series of one path and method: its latency histogram and in-flight gauge.
#[derive(Debug)]
pub(crate) struct CallSeries {
    path: String,
    method: String,
    /// Calls per bucket (not cumulative), the last one for those above the last bound.
    buckets: [AtomicU64; BOUNDS_NANOS.len() + 1],
    /// The sum of the latencies, in nanoseconds (584 years of them fit).
    sum_nanos: AtomicU64,
    in_flight: AtomicI64,
}

impl CallSeries {
    fn new(path: &str, method: &str) -> Self {
        Self {
            path: path.to_owned(),
            method: method.to_owned(),
            buckets: Default::default(),
            sum_nanos: AtomicU64::new(0),
            in_flight: AtomicI64::new(0),
        }
    }

    /// A call started.
    #[inline]
    pub(crate) fn enter(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    /// A call ended (finished or dropped).
    #[inline]
    pub(crate) fn leave(&self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    /// Record one call's latency.
    #[inline]
    pub(crate) fn record(&self, latency: Duration) {
        let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        let bucket = BOUNDS_NANOS.partition_point(|&bound| bound < nanos);
        if let Some(count) = self.buckets.get(bucket) {
            count.fetch_add(1, Ordering::Relaxed);
        }
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// The bucket counts, cumulative, as the page shows them (`le` each bound, then `+Inf`),
    /// and the sum in seconds.
    fn snapshot(&self) -> ([u64; BOUNDS_NANOS.len() + 1], f64) {
        let mut cumulative = [0u64; BOUNDS_NANOS.len() + 1];
        let mut total = 0u64;
        for (out, count) in cumulative.iter_mut().zip(&self.buckets) {
            total += count.load(Ordering::Relaxed);
            *out = total;
        }
        // Nanoseconds to seconds as an f64: exact up to 2^53 ns (104 days of summed latency).
        #[allow(clippy::cast_precision_loss)]
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        (cumulative, sum)
    }

    fn labels(&self) -> LabelSet {
        let key = Key::from_parts(
            CALL_DURATION,
            vec![
                Label::new("path", self.path.clone()),
                Label::new("method", self.method.clone()),
            ],
        );
        LabelSet::from_key_and_global(&key, &indexmap::IndexMap::new())
    }
}

/// Every series made in this process, one per path and method (a service mounted again on the
/// same path finds its series here, as the exporter's registry would). Bounded by the
/// services' paths and methods, the only label values.
static SERIES: Mutex<Vec<Arc<CallSeries>>> = Mutex::new(Vec::new());

/// The series of `path` and `method`, made on first use.
pub(crate) fn series(path: &str, method: &str) -> Arc<CallSeries> {
    let mut all = crate::sync::lock(&SERIES);
    if let Some(found) = all.iter().find(|s| s.path == path && s.method == method) {
        return found.clone();
    }
    let made = Arc::new(CallSeries::new(path, method));
    all.push(made.clone());
    made
}

/// Append the gauge and the histogram of every series to `page` in the Prometheus text format,
/// as the exporter writes its own (nothing for a metric without series).
pub(crate) fn render(page: &mut String) {
    let all: Vec<Arc<CallSeries>> = crate::sync::lock(&SERIES).clone();
    render_series(page, &all);
}

/// [`render`] for these series.
fn render_series(page: &mut String, all: &[Arc<CallSeries>]) {
    if all.is_empty() {
        return;
    }
    let labels: Vec<LabelSet> = all.iter().map(|s| s.labels()).collect();

    write_help_line(page, CALLS_IN_FLIGHT, None, None, IN_FLIGHT_HELP);
    write_type_line(page, CALLS_IN_FLIGHT, None, None, "gauge");
    for (s, labels) in all.iter().zip(&labels) {
        // The exporter's gauges are f64s: an integer prints the same way.
        let value = s.in_flight.load(Ordering::Relaxed);
        write_metric_line::<&str, i64>(page, CALLS_IN_FLIGHT, None, labels, None, value, None);
    }
    page.push('\n');

    write_help_line(page, CALL_DURATION, None, None, DURATION_HELP);
    write_type_line(page, CALL_DURATION, None, None, "histogram");
    for (s, labels) in all.iter().zip(&labels) {
        let (cumulative, sum) = s.snapshot();
        for (le, count) in BUCKETS.iter().zip(&cumulative) {
            let le = Some(("le", *le));
            write_metric_line(page, CALL_DURATION, Some("bucket"), labels, le, count, None);
        }
        let count = cumulative[BOUNDS_NANOS.len()];
        let inf = Some(("le", "+Inf"));
        write_metric_line(
            page,
            CALL_DURATION,
            Some("bucket"),
            labels,
            inf,
            count,
            None,
        );
        write_metric_line::<&str, f64>(page, CALL_DURATION, Some("sum"), labels, None, sum, None);
        write_metric_line::<&str, u64>(
            page,
            CALL_DURATION,
            Some("count"),
            labels,
            None,
            count,
            None,
        );
    }
    page.push('\n');
}

#[cfg(test)]
mod tests;
