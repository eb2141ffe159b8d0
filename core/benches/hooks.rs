//! The hook chain overhead: one call through `ServiceHandle` with no hooks and with N hooks,
//! against calling the service directly.
//!
//! Besides the criterion groups, the bench runs the three calls *interleaved* (one of each in
//! turn) and prints their medians and the ratios, so that the ratios come from the same moment
//! on a shared machine.

use std::hint::black_box;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion};
use plume::hooks::{HookContext, Next, around, hook_sync};
use plume::{App, Params, Result, Service, async_trait};
use serde_json::{Value, json};
use tokio::runtime::Runtime;

/// A service whose `find` returns a small constant page, so the figure is the chain's cost.
struct Fixed(Value);

#[async_trait]
impl Service for Fixed {
    async fn find(&self, _params: Params) -> Result<Value> {
        Ok(self.0.clone())
    }
}

fn page() -> Value {
    json!({"total": 1, "limit": 10, "skip": 0,
           "data": [{"id": 1, "text": "Hello from todos-a", "done": false, "replica": "todos-a"}]})
}

fn runtime() -> Runtime {
    // invariant: a bench cannot run without a runtime.
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// An App with `todos` mounted and `n` hooks of each kind: `n` before and `n` after hooks (half
/// app-level, half on the service) and `n` around hooks.
fn app_with_hooks(n: usize) -> App {
    let app = App::new();
    let handle = app.use_service("todos", Fixed(page()));
    for i in 0..n {
        let registry = if i % 2 == 0 {
            app.hooks()
        } else {
            handle.hooks()
        };
        registry.before(hook_sync(|ctx: &mut HookContext| {
            ctx.params.extra.insert("seen".into(), Value::Bool(true));
            Ok(())
        }));
        registry.after(hook_sync(|ctx: &mut HookContext| {
            if ctx.result.is_none() {
                return Err(plume::Error::general_error("no result"));
            }
            Ok(())
        }));
        registry.around(around(|ctx: &mut HookContext, next: Next<'_>| {
            Box::pin(async move { next.run(ctx).await })
        }));
    }
    app
}

const HOOK_COUNTS: [usize; 3] = [0, 2, 8];

fn benches(c: &mut Criterion) {
    let rt = runtime();
    let direct: Arc<dyn Service> = Arc::new(Fixed(page()));

    let mut g = c.benchmark_group("hook_chain_find");
    g.bench_function("service_direct", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(direct.find(Params::new()).await) });
    });
    for n in HOOK_COUNTS {
        let app = app_with_hooks(n);
        let Some(handle) = app.service("todos") else {
            return;
        };
        g.bench_with_input(BenchmarkId::new("handle_hooks_each_kind", n), &n, |b, _| {
            b.to_async(&rt)
                .iter(|| async { black_box(handle.find(Params::new()).await) });
        });
    }
    // The path a REST request takes: look the service up by path on the App, then call.
    let app = app_with_hooks(0);
    g.bench_function("app_lookup_then_call", |b| {
        b.to_async(&rt).iter(|| async {
            match app.lookup("todos") {
                Some(found) => black_box(found.handle.find(Params::new()).await),
                None => Err(plume::Error::not_found("todos")),
            }
        });
    });
    g.finish();

    interleaved(&rt, &direct);
}

/// Time each variant call by call, in turn, and print medians and ratios to the direct call.
fn interleaved(rt: &Runtime, direct: &Arc<dyn Service>) {
    const ROUNDS: usize = 20_000;
    let apps: Vec<App> = HOOK_COUNTS.iter().map(|n| app_with_hooks(*n)).collect();
    let handles: Vec<_> = apps.iter().filter_map(|a| a.service("todos")).collect();
    let mut direct_ns = Vec::with_capacity(ROUNDS);
    let mut handle_ns = vec![Vec::with_capacity(ROUNDS); handles.len()];
    rt.block_on(async {
        for _ in 0..ROUNDS {
            let t = Instant::now();
            let _ = black_box(direct.find(Params::new()).await);
            direct_ns.push(t.elapsed().as_nanos());
            for (h, out) in handles.iter().zip(handle_ns.iter_mut()) {
                let t = Instant::now();
                let _ = black_box(h.find(Params::new()).await);
                out.push(t.elapsed().as_nanos());
            }
        }
    });
    let median = |v: &mut Vec<u128>| {
        v.sort_unstable();
        v[v.len() / 2]
    };
    let d = median(&mut direct_ns).max(1);
    let mut err = std::io::stderr();
    let _ = writeln!(err, "interleaved medians over {ROUNDS} rounds:");
    let _ = writeln!(err, "  service direct: {d} ns");
    for (n, v) in HOOK_COUNTS.iter().zip(handle_ns.iter_mut()) {
        let m = median(v);
        let _ = writeln!(
            err,
            "  handle, {n} hooks of each kind: {m} ns ({:.2} x direct)",
            m as f64 / d as f64
        );
    }
}

mod group {
    #![allow(missing_docs)]
    use super::{Criterion, Duration, benches};

    criterion::criterion_group! {
        name = hook_benches;
        config = Criterion::default()
            .sample_size(20)
            .warm_up_time(Duration::from_millis(300))
            .measurement_time(Duration::from_secs(1));
        targets = benches
    }
}

fn main() {
    group::hook_benches();
    Criterion::default().configure_from_args().final_summary();
}
