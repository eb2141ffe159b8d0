//! Pattern RPC against nats-hemera, same run, same `nats-server`, one responder each:
//! - `nats/act_1_in_flight`: one Plume act at a time (Plume responder, Plume caller);
//! - `nats/act_64_in_flight`: batches of 64 acts at once, each batch joined before the next;
//! - `nats/act_64_window`: 64 acts in flight at every moment (a new one as soon as one ends), the
//!   shape of nats-hemera's own 64-in-flight figure (tests/hemera/bench.js);
//!   `nats/act_64_window_on_worker` the same from a task on the runtime's workers;
//! - `nats/raw_request_1_in_flight`: a plain async-nats request to a subscriber that echoes it
//!   (no Hemera envelope, no pattern node): the floor that the client and server set;
//!   `nats/raw_request_64_window` the same with 64 in flight at every moment;
//! - `mesh/pattern_act_64` vs `mesh/request_64`: the pattern act on the TCP mesh against the
//!   mesh's plain call (`mesh.to(name).send`), 64 in flight each, polled on the bench's thread;
//! - `mesh/pattern_act_64_on_worker` vs `mesh/request_64_on_worker`: the same, each batch in a
//!   task on the runtime's workers (as a service's handler calls).
//!
//! Before criterion runs, the Node figures (a nats-hemera 7.0.2 responder and caller, from
//! tests/hemera) and the load average are printed. Needs `nats-server`, `node` and `npm`.
//! `cargo bench -p plume-pattern --bench pattern`; the figures are in docs/benchmarks.md.

// A benchmark report: its figures go to stdout.
#![allow(clippy::print_stdout)]

#[allow(unreachable_pub, dead_code)]
#[path = "../../tests/src/servers.rs"]
mod servers;

#[path = "support/raw_nats.rs"]
mod raw_nats;

#[path = "../../core/tests/support/npm.rs"]
mod npm;

#[path = "support/mesh_pair.rs"]
mod mesh_pair;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use criterion::{Criterion, Throughput};
use futures::future::join_all;
use futures::stream::{FuturesUnordered, StreamExt};
use mesh_pair::{Add, mesh_pair};
use plume_pattern::{Hemera, HemeraError, Options, Req, typed};
use raw_nats::raw_nats_pair;
use serde_json::{Value, json};
use servers::{Kind, Server};

/// jemalloc, as in Plume's own binaries (gateway-example, whose `math` command serves these
/// patterns): the system allocator's free lists were a tenth of this process's samples.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg").unwrap_or_default()
}

/// nats-hemera's figures: a Node responder (server.js) and the Node caller (bench.js).
fn node_figures(url: &str) -> String {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/hemera");
    let dir = npm::install_locked(&src, "hemera");
    for script in ["server.js", "bench.js"] {
        std::fs::copy(src.join(script), dir.join(script)).expect("copy");
    }
    let mut responder = Command::new("node")
        .args(["server.js", url, "node-bench"])
        .current_dir(&dir)
        .stdout(Stdio::piped())
        .spawn()
        .expect("node runs");
    let mut lines = BufReader::new(responder.stdout.take().expect("stdout")).lines();
    assert_eq!(lines.next().and_then(Result::ok).as_deref(), Some("READY"));
    let out = Command::new("node")
        .args(["bench.js", url])
        .current_dir(&dir)
        .output()
        .expect("node runs");
    let _ = responder.kill();
    let _ = responder.wait();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

async fn plume_pair(url: &str) -> (Hemera, Hemera) {
    let responder = Hemera::connect(url, Options::default())
        .await
        .expect("NATS");
    responder
        .add(
            json!({"topic": "pmath", "cmd": "add"}),
            typed(|p: Add, _r: Req| async move { Ok::<_, HemeraError>(p.a + p.b) }),
        )
        .await
        .expect("add");
    let caller = Hemera::connect(url, Options::default())
        .await
        .expect("NATS");
    (responder, caller)
}

/// Time `batch` run in a task spawned on `rt`'s workers (one spawn and one join per batch); the
/// batch answers whether every call succeeded.
fn on_worker<F, Fut>(b: &mut criterion::Bencher<'_>, rt: &tokio::runtime::Runtime, batch: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool> + Send + 'static,
{
    b.to_async(rt).iter(|| {
        let task = rt.spawn(batch());
        async move { assert!(task.await.expect("the batch's task")) }
    })
}

/// Run `total` calls of `call`, keeping 64 in flight until the last ones (a new call starts as
/// soon as one ends); the time they took. Every call must succeed.
async fn window_of_64<F, Fut, T, E>(total: u64, call: F) -> Duration
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
    E: std::fmt::Debug,
{
    let start = std::time::Instant::now();
    let mut running = FuturesUnordered::new();
    let mut started = 0;
    while started < total.min(64) {
        running.push(call());
        started += 1;
    }
    while let Some(outcome) = running.next().await {
        if let Err(e) = outcome {
            panic!("a call of the window failed: {e:?}");
        }
        if started < total {
            running.push(call());
            started += 1;
        }
    }
    start.elapsed()
}

fn main() {
    let server = Server::start(Kind::Nats);
    let url = server.url();
    println!("load average before: {}", load_average().trim());
    println!(
        "nats-hemera 7.0.2 (Node responder + Node caller): {}",
        node_figures(&url)
    );
    println!("load average after Node: {}", load_average().trim());

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (_responder, caller) = rt.block_on(plume_pair(&url));
    let msg = json!({"topic": "pmath", "cmd": "add", "a": 1, "b": 2});
    let mut c = Criterion::default()
        .sample_size(30)
        .measurement_time(Duration::from_secs(5))
        .configure_from_args();

    let mut nats = c.benchmark_group("nats");
    nats.bench_function("act_1_in_flight", |b| {
        b.to_async(&rt).iter(|| async {
            assert_eq!(caller.act(&msg).await, Ok(json!(3.0)));
        })
    });
    nats.throughput(Throughput::Elements(64));
    nats.bench_function("act_64_in_flight", |b| {
        b.to_async(&rt).iter(|| async {
            let all = join_all((0..64).map(|_| caller.act(&msg))).await;
            assert!(all.iter().all(Result::is_ok));
        })
    });
    // 64 in flight at every moment, as nats-hemera's bench.js keeps them (a new act starts as
    // soon as one ends), where `act_64_in_flight` above joins batches of 64 and lets the
    // pipeline drain at the end of each: this one is the target's measure (same shape as Node's).
    nats.bench_function("act_64_window", |b| {
        b.to_async(&rt)
            .iter_custom(|iters| window_of_64(iters * 64, || caller.act(&msg)))
    });
    // The same window from a task on the runtime's workers (as a service's handler acts).
    let (ncaller, nmsg) = (caller.clone(), std::sync::Arc::new(msg.clone()));
    nats.bench_function("act_64_window_on_worker", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let (caller, msg) = (ncaller.clone(), std::sync::Arc::clone(&nmsg));
            let task =
                rt.spawn(async move { window_of_64(iters * 64, || caller.act(&*msg)).await });
            async move { task.await.expect("the window's task") }
        })
    });
    // The floor under both: a plain async-nats request to a subscriber that answers at once
    // (same server, same process layout, no Hemera envelope).
    let raw = rt.block_on(raw_nats_pair(&url, Duration::from_secs(10)));
    nats.throughput(Throughput::Elements(1));
    nats.bench_function("raw_request_1_in_flight", |b| {
        b.to_async(&rt).iter(|| async {
            let reply = raw.request("raw.echo", "3".into()).await.expect("reply");
            assert_eq!(&reply.payload[..], b"3");
        })
    });
    // The floor of the window: plain async-nats requests, 64 in flight at every moment.
    nats.throughput(Throughput::Elements(64));
    nats.bench_function("raw_request_64_window", |b| {
        b.to_async(&rt)
            .iter_custom(|iters| window_of_64(iters * 64, || raw.request("raw.echo", "3".into())))
    });
    nats.finish();

    let (ma, mb, _mr, mcaller) = rt.block_on(mesh_pair(Duration::from_secs(15)));
    let mmsg = json!({"topic": "math", "cmd": "add", "a": 1, "b": 2});
    let body = json!({"a": 1, "b": 2});
    let mut mesh = c.benchmark_group("mesh");
    mesh.throughput(Throughput::Elements(64));
    mesh.bench_function("pattern_act_64", |b| {
        b.to_async(&rt).iter(|| async {
            let all = join_all((0..64).map(|_| mcaller.act(&mmsg))).await;
            assert!(all.iter().all(Result::is_ok));
        })
    });
    mesh.bench_function("request_64", |b| {
        b.to_async(&rt).iter(|| async {
            let all = join_all((0..64).map(|_| mb.to("plain.add").send(&body))).await;
            assert!(all.iter().all(|r: &Result<Value, _>| r.is_ok()));
        })
    });
    // The same two batches from a task on the runtime's workers, as a service's handler calls
    // (above, the batch is polled on the bench's own thread, which then does all the callers'
    // work alone: see docs/benchmarks.md, seventh round). Both kinds the same way: one spawn
    // and one join per batch of 64.
    let (wcaller, wmsg) = (mcaller.clone(), std::sync::Arc::new(mmsg.clone()));
    mesh.bench_function("pattern_act_64_on_worker", |b| {
        on_worker(b, &rt, || {
            let (caller, msg) = (wcaller.clone(), std::sync::Arc::clone(&wmsg));
            async move {
                let all = join_all((0..64).map(|_| caller.act(&*msg))).await;
                all.iter().all(Result::is_ok)
            }
        })
    });
    let (wmesh, wbody) = (mb.clone(), std::sync::Arc::new(body.clone()));
    mesh.bench_function("request_64_on_worker", |b| {
        on_worker(b, &rt, || {
            let (m, body) = (wmesh.clone(), std::sync::Arc::clone(&wbody));
            async move {
                let all = join_all((0..64).map(|_| m.to("plain.add").send(&*body))).await;
                all.iter().all(|r: &Result<Value, _>| r.is_ok())
            }
        })
    });
    mesh.finish();
    println!("load average after: {}", load_average().trim());
    rt.block_on(async {
        ma.shutdown().await;
        mb.shutdown().await;
    });
    c.final_summary();
}
