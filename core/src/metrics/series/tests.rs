//! Plume's own call series against the exporter's: the same latencies recorded through a
//! Prometheus recorder of the `metrics` facade (set up as `App::enable_metrics` sets it up) and
//! into a [`CallSeries`] render the same lines (the sums within float rounding).

use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use proptest::prelude::*;

use super::*;

/// The page the exporter writes for one path and method after these latencies, with `running`
/// calls in flight.
fn exporter_page(path: &str, method: &str, latencies: &[Duration], running: i64) -> String {
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), &BUCKETS)
        .expect("buckets")
        .build_recorder();
    let handle = recorder.handle();
    metrics::with_local_recorder(&recorder, || {
        metrics::describe_histogram!(CALL_DURATION, metrics::Unit::Seconds, DURATION_HELP);
        metrics::describe_gauge!(CALLS_IN_FLIGHT, IN_FLIGHT_HELP);
        let both = [("path", path.to_owned()), ("method", method.to_owned())];
        let gauge = metrics::gauge!(CALLS_IN_FLIGHT, &both);
        #[allow(clippy::cast_precision_loss)]
        gauge.set(running as f64);
        let histogram = metrics::histogram!(CALL_DURATION, &both);
        for latency in latencies {
            histogram.record(latency.as_secs_f64());
        }
    });
    handle.render()
}

fn own_page(path: &str, method: &str, latencies: &[Duration], running: i64) -> String {
    let series = Arc::new(CallSeries::new(path, method));
    for latency in latencies {
        series.enter();
        series.record(*latency);
        series.leave();
    }
    for _ in 0..running {
        series.enter();
    }
    let mut page = String::new();
    render_series(&mut page, &[series]);
    page
}

/// Both pages' lines, the `_sum` lines compared by value.
fn same_pages(ours: &str, theirs: &str) -> Result<(), TestCaseError> {
    let (a, b): (Vec<&str>, Vec<&str>) = (ours.lines().collect(), theirs.lines().collect());
    prop_assert_eq!(a.len(), b.len(), "ours:\n{}\ntheirs:\n{}", ours, theirs);
    for (x, y) in a.iter().zip(&b) {
        if x.contains("_sum{") {
            let value = |line: &str| -> f64 {
                line.rsplit(' ')
                    .next()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(f64::NAN)
            };
            let (vx, vy) = (value(x), value(y));
            prop_assert!(
                (vx - vy).abs() <= 1e-9 * vy.abs().max(1.0),
                "{} vs {}",
                x,
                y
            );
            prop_assert_eq!(x.split(' ').next(), y.split(' ').next());
        } else {
            prop_assert_eq!(x, y);
        }
    }
    Ok(())
}

/// Latencies around the bucket bounds and anywhere up to a minute.
fn latency() -> impl Strategy<Value = Duration> {
    prop_oneof![
        (0..BOUNDS_NANOS.len(), -2i64..=2)
            .prop_map(|(i, d)| { Duration::from_nanos(BOUNDS_NANOS[i].saturating_add_signed(d)) }),
        (0u64..60_000_000_000).prop_map(Duration::from_nanos),
        (0u64..20_000_000).prop_map(Duration::from_nanos),
    ]
}

proptest! {
    #[test]
    fn the_page_is_the_exporters(
        latencies in proptest::collection::vec(latency(), 1..40),
        running in 0i64..5,
        path in "[a-z/]{1,12}|we\"ird\\\\pa\nth",
    ) {
        let ours = own_page(&path, "find", &latencies, running);
        let theirs = exporter_page(&path, "find", &latencies, running);
        same_pages(&ours, &theirs)?;
    }
}

#[test]
fn a_bound_falls_in_its_own_bucket() {
    let latencies = [Duration::from_micros(100), Duration::from_secs(10)];
    let ours = own_page("todos", "get", &latencies, 0);
    assert!(ours.contains("le=\"0.0001\"} 1\n"), "{ours}");
    assert!(ours.contains("le=\"2.5\"} 1\n"), "{ours}");
    assert!(ours.contains("le=\"10\"} 2\n"), "{ours}");
    same_pages(&ours, &exporter_page("todos", "get", &latencies, 0)).expect("the same page");
}

#[test]
fn no_series_no_lines() {
    let mut page = String::new();
    render_series(&mut page, &[]);
    assert!(page.is_empty());
}

#[test]
fn the_same_path_and_method_is_one_series() {
    let a = series("series-test", "find");
    let b = series("series-test", "find");
    let c = series("series-test", "get");
    assert!(Arc::ptr_eq(&a, &b));
    assert!(!Arc::ptr_eq(&a, &c));
}
