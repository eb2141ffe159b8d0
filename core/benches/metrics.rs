//! Metrics (feature `metrics`): a scrape of `/metrics` (`plume::metrics::render`) with 100
//! mounted services that were each called (every method's handles exist), and one service call
//! measured against the same call with metrics off (a second App's handle in the same process
//! cannot be "off", so the baseline is the call without `enable_metrics`, run first).
//!
//! Target (issue 19): a scrape with 100 services in ≤ 5 ms.

use std::hint::black_box;

use criterion::Criterion;
use plume::{App, MemoryService, Params};

const SERVICES: usize = 100;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
}

fn metrics(c: &mut Criterion) {
    let rt = runtime();
    let app = App::new();
    for i in 0..SERVICES {
        app.use_service(
            &format!("svc{i}"),
            MemoryService::<serde_json::Value>::new(),
        );
    }
    let first = app.service("svc0").expect("mounted");
    c.bench_function("call/find_metrics_off", |b| {
        b.iter(|| rt.block_on(first.find(Params::default())).expect("find"));
    });

    app.enable_metrics().expect("the recorder installs");
    rt.block_on(async {
        for i in 0..SERVICES {
            let handle = app.service(&format!("svc{i}")).expect("mounted");
            handle.find(Params::default()).await.expect("find");
            let _ = handle.get(1, Params::default()).await; // a 404: an error series too
        }
    });
    c.bench_function("call/find_metrics_on", |b| {
        b.iter(|| rt.block_on(first.find(Params::default())).expect("find"));
    });
    c.bench_function("scrape/100_services", |b| {
        b.iter(|| black_box(plume::metrics::render().expect("enabled").len()));
    });
}

mod group {
    #![allow(missing_docs)]
    use super::metrics;

    criterion::criterion_group!(metrics_benches, metrics);
}

criterion::criterion_main!(group::metrics_benches);
