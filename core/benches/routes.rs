//! Resolving a request path to a service (`App::lookup`, what the REST server does first for
//! every request) with few and with many services mounted, flat and nested.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion};
use plume::{App, MemoryService};

/// An App with `n` flat services (`svc{i}`) and `n` nested ones (`svc{i}/:parent/items`).
fn app(n: usize) -> App {
    let app = App::new();
    for i in 0..n {
        app.use_service(
            &format!("svc{i}"),
            MemoryService::<serde_json::Value>::new(),
        );
        app.use_service(
            &format!("svc{i}/:parent/items"),
            MemoryService::<serde_json::Value>::new(),
        );
    }
    app
}

fn lookup(c: &mut Criterion) {
    let mut g = c.benchmark_group("lookup");
    for n in [1usize, 16, 128] {
        let app = app(n);
        let flat = format!("/svc{}/7", n - 1);
        let nested = format!("/svc{}/5/items/9", n / 2);
        g.bench_with_input(BenchmarkId::new("flat_get", n), &flat, |b, path| {
            b.iter(|| black_box(app.lookup(black_box(path)).is_some()));
        });
        g.bench_with_input(BenchmarkId::new("nested_get", n), &nested, |b, path| {
            b.iter(|| black_box(app.lookup(black_box(path)).is_some()));
        });
    }
    g.finish();
}

mod group {
    #![allow(missing_docs)]
    use super::lookup;

    criterion::criterion_group!(route_benches, lookup);
}

criterion::criterion_main!(group::route_benches);
