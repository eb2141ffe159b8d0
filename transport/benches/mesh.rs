//! Mesh benchmarks: two processes on loopback (this one and a copy of it started as a server).
//!
//! Each run measures its own floor, a raw-TCP ping-pong of 100-byte length-prefixed messages
//! without any framework, beside the mesh: one request at a time, 64 in flight, and pub/sub
//! throughput. It also compares JSON and MessagePack payload encoding, and times the whole frame
//! codec (encode and decode of a request frame).

use std::io::{BufRead, Write};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use criterion::{BenchmarkId, Criterion, Throughput};
use plume_transport::codec::{Frame, Kind, RequestMsg};
use plume_transport::{Mesh, Request};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;

#[path = "mesh/partition.rs"]
mod partition;

const SERVER_VAR: &str = "PLUME_BENCH_SERVER_ENV";
const MSG: usize = 100;
const WINDOW: u64 = 2000;

/// Worker threads per process (`PLUME_BENCH_WORKERS`, default 1: two processes on two cores).
fn workers() -> usize {
    std::env::var("PLUME_BENCH_WORKERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
}

/// The mesh secret of both nodes (`PLUME_BENCH_MESH_SECRET`, default none): with one, the
/// mesh benchmarks run over encrypted links (`docs/benchmarks.md`, "Encrypted links").
fn secret() -> Option<String> {
    std::env::var("PLUME_BENCH_MESH_SECRET")
        .ok()
        .filter(|s| !s.is_empty())
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers())
        .enable_all()
        .build()
        .expect("runtime")
}

/// Server mode: a raw echo listener and a mesh node with `echo` and `burst`.
fn server(env: String) {
    let rt = runtime();
    rt.block_on(async move {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let _ = s.set_nodelay(true);
                tokio::spawn(async move {
                    let mut buf = [0u8; 4 + MSG];
                    while s.read_exact(&mut buf).await.is_ok() {
                        if s.write_all(&buf).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        let mesh = Mesh::builder()
            .environment(env)
            .key("bench-server")
            .secret(secret())
            .start()
            .await
            .expect("mesh");
        mesh.respond("echo", |req: Request| async move { Ok(req.body) });
        // The partition benchmark's endpoints (partition.rs).
        mesh.respond("keyed", |req: Request| async move { Ok(req.body) });
        mesh.respond("all", |req: Request| async move { Ok(req.body) });
        let publisher = mesh.clone();
        mesh.respond("burst", move |req: Request| {
            let n = req.body["n"].as_u64().unwrap_or(0);
            for i in 0..n {
                publisher.publish(
                    "ticks",
                    json!({"n": i, "pad": "0123456789abcdef0123456789abcdef"}),
                );
            }
            async move { Ok(Value::from(n)) }
        });
        {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "READY {port} {}", mesh.node_id());
            let _ = out.flush();
        }
        // Exit when the parent closes our stdin.
        tokio::task::spawn_blocking(|| {
            let mut line = String::new();
            while std::io::stdin()
                .read_line(&mut line)
                .map(|n| n > 0)
                .unwrap_or(false)
            {}
        })
        .await
        .ok();
    });
}

struct Server {
    child: Child,
    raw_port: u16,
    node: String,
    env: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server() -> Server {
    start_server_in(&format!("bench-{}", std::process::id()))
}

/// A server process in environment `env`.
fn start_server_in(env: &str) -> Server {
    let env = env.to_owned();
    let mut child = Command::new(std::env::current_exe().expect("exe"))
        .env(SERVER_VAR, &env)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("server starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    std::io::BufReader::new(stdout)
        .read_line(&mut line)
        .expect("ready line");
    let mut parts = line.split_whitespace().skip(1);
    let raw_port = parts.next().and_then(|p| p.parse().ok()).expect("port");
    let node = parts.next().expect("node").to_string();
    Server {
        child,
        raw_port,
        node,
        env,
    }
}

async fn connect_mesh(server: &Server) -> Mesh {
    let mesh = Mesh::builder()
        .environment(&server.env)
        .key("bench-client")
        .secret(secret())
        .start()
        .await
        .expect("mesh");
    let mut watch = mesh.watch();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !mesh
        .providers("burst")
        .iter()
        .any(|p| p.node.to_string() == server.node)
    {
        tokio::time::timeout_at(deadline, watch.recv())
            .await
            .expect("server discovered");
    }
    mesh
}

fn raw_message() -> [u8; 4 + MSG] {
    let mut m = [7u8; 4 + MSG];
    m[..4].copy_from_slice(&(MSG as u32).to_be_bytes());
    m
}

fn payload() -> Value {
    // About 100 bytes on the wire, like the raw floor.
    json!({"id": 42, "text": "the quick brown fox jumps over the lazy dog", "tags": ["a", "b"]})
}

/// p50 of single round trips, raw, mesh ping and mesh call in turn, so that all three see the
/// same machine load.
async fn interleaved_p50(mesh: Mesh, mut raw: TcpStream) -> TcpStream {
    const N: usize = 20_000;
    let msg = raw_message();
    let mut back = [0u8; 4 + MSG];
    let body = payload();
    let mut raw_ns = Vec::with_capacity(N);
    let mut mesh_ns = Vec::with_capacity(N);
    let mut ping_ns = Vec::with_capacity(N);
    let peer = mesh.linked_peers()[0];
    for _ in 0..N {
        let t = Instant::now();
        mesh.ping(peer).await.expect("ping");
        ping_ns.push(t.elapsed().as_nanos());
        let t = Instant::now();
        raw.write_all(&msg).await.expect("write");
        raw.read_exact(&mut back).await.expect("read");
        raw_ns.push(t.elapsed().as_nanos());
        let t = Instant::now();
        mesh.to("echo").send(&body).await.expect("echo");
        mesh_ns.push(t.elapsed().as_nanos());
    }
    raw_ns.sort_unstable();
    ping_ns.sort_unstable();
    let _ = writeln!(
        std::io::stderr(),
        "interleaved mesh ping (a ping frame and its pong: no payload, no handler): p50 {:.1} us",
        ping_ns[N / 2] as f64 / 1000.0
    );
    mesh_ns.sort_unstable();
    let (r, m) = (
        raw_ns[N / 2] as f64 / 1000.0,
        mesh_ns[N / 2] as f64 / 1000.0,
    );
    let (r99, m99) = (
        raw_ns[N * 99 / 100] as f64 / 1000.0,
        mesh_ns[N * 99 / 100] as f64 / 1000.0,
    );
    let _ = writeln!(
        std::io::stderr(),
        "interleaved 1-in-flight ({N} each): p50 raw {r:.1} us, mesh {m:.1} us, ratio {:.2}; p99 raw {r99:.1} us, mesh {m99:.1} us",
        m / r
    );
    raw
}

fn benches(c: &mut Criterion) {
    let rt = runtime();
    partition::report(&rt);
    let server = start_server();
    let mesh = rt.block_on(connect_mesh(&server));
    let raw_addr = format!("127.0.0.1:{}", server.raw_port);

    let mut g = c.benchmark_group("round_trip_1_in_flight");
    g.throughput(Throughput::Elements(1));
    let mut raw = Some(rt.block_on(async {
        let s = TcpStream::connect(&raw_addr).await.expect("connect");
        s.set_nodelay(true).expect("nodelay");
        s
    }));
    let stream = raw.take().expect("raw stream");
    raw = Some(
        rt.block_on(rt.spawn(interleaved_p50(mesh.clone(), stream)))
            .expect("joined"),
    );
    // Both loops run in a runtime task (on a worker thread), as a server's calls would.
    g.bench_function("raw_tcp_floor", |b| {
        b.iter_custom(|iters| {
            let mut stream = raw.take().expect("raw stream");
            let (stream, elapsed) = rt
                .block_on(rt.spawn(async move {
                    let msg = raw_message();
                    let mut back = [0u8; 4 + MSG];
                    let start = Instant::now();
                    for _ in 0..iters {
                        stream.write_all(&msg).await.expect("write");
                        stream.read_exact(&mut back).await.expect("read");
                    }
                    (stream, start.elapsed())
                }))
                .expect("joined");
            raw = Some(stream);
            elapsed
        });
    });
    g.bench_function("mesh_request", |b| {
        b.iter_custom(|iters| {
            let mesh = mesh.clone();
            rt.block_on(rt.spawn(async move {
                let body = payload();
                let start = Instant::now();
                for _ in 0..iters {
                    mesh.to("echo").send(&body).await.expect("echo");
                }
                start.elapsed()
            }))
            .expect("joined")
        });
    });
    g.finish();

    let mut g = c.benchmark_group("throughput_64_in_flight");
    g.throughput(Throughput::Elements(1));
    g.bench_function("raw_tcp_floor", |b| {
        let msg = raw_message();
        b.iter_custom(|iters| {
            let raw = raw.as_mut().expect("raw stream");
            rt.block_on(async {
                let mut back = [0u8; 4 + MSG];
                let start = Instant::now();
                let first = iters.min(64);
                for _ in 0..first {
                    raw.write_all(&msg).await.expect("write");
                }
                for i in 0..iters {
                    raw.read_exact(&mut back).await.expect("read");
                    if i + 64 < iters {
                        raw.write_all(&msg).await.expect("write");
                    }
                }
                start.elapsed()
            })
        });
    });
    g.bench_function("mesh_request", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let mesh = mesh.clone();
            async move {
                let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
                let start = Instant::now();
                let tasks: Vec<_> = (0..64)
                    .map(|_| {
                        let (mesh, next) = (mesh.clone(), next.clone());
                        tokio::spawn(async move {
                            let body = payload();
                            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < iters {
                                mesh.to("echo").send(&body).await.expect("echo");
                            }
                        })
                    })
                    .collect();
                for t in tasks {
                    t.await.expect("joined");
                }
                start.elapsed()
            }
        });
    });
    g.finish();

    let mut g = c.benchmark_group("pubsub");
    g.throughput(Throughput::Elements(1));
    let mut sub = mesh.subscribe("ticks");
    // The server reads our subscribe frame before this request on the same link.
    rt.block_on(mesh.to("burst").send(&json!({"n": 0})))
        .expect("sync");
    g.bench_function(BenchmarkId::new("events", WINDOW), |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                let mut left = iters;
                while left > 0 {
                    let n = left.min(WINDOW);
                    mesh.to("burst")
                        .send(&json!({"n": n}))
                        .await
                        .expect("burst");
                    for _ in 0..n {
                        sub.recv().await.expect("event");
                    }
                    left -= n;
                }
                start.elapsed()
            })
        });
    });
    g.finish();

    rt.block_on(mesh.shutdown());
    drop(server);

    let mut g = c.benchmark_group("payload_encoding");
    let msg = RequestMsg {
        name: "messages".to_string(),
        method: Some("create".to_string()),
        body: json!({"id": 42, "text": "the quick brown fox", "user": {"id": 7, "name": "ann", "roles": ["admin", "dev"]}, "ratio": 0.25, "tags": ["a", "b", "c"]}),
        timeout_ms: 10_000,
        traceparent: None,
    };
    g.bench_function("json", |b| {
        b.iter(|| {
            let bytes = serde_json::to_vec(&msg).expect("encode");
            let back: RequestMsg = serde_json::from_slice(&bytes).expect("decode");
            back
        });
    });
    g.bench_function("msgpack", |b| {
        b.iter(|| {
            let bytes = rmp_serde::to_vec_named(&msg).expect("encode");
            let back: RequestMsg = rmp_serde::from_slice(&bytes).expect("decode");
            back
        });
    });
    g.finish();

    // The whole frame path of one request: payload encode, header, wire bytes, then the
    // receiver's frame decode and payload parse.
    let mut g = c.benchmark_group("frame_codec");
    g.bench_function("request_frame_encode_decode", |b| {
        let mut wire = BytesMut::with_capacity(4096);
        b.iter(|| {
            Frame::with(Kind::Request, 7, &msg).encode_into(&mut wire);
            Frame::decode(&mut wire, 1 << 20)
                .ok()
                .flatten()
                .and_then(|frame| frame.parse::<RequestMsg>().ok())
        });
    });
    g.finish();
    let json_len = serde_json::to_vec(&msg).map(|v| v.len()).unwrap_or(0);
    let mp_len = rmp_serde::to_vec_named(&msg).map(|v| v.len()).unwrap_or(0);
    let _ = writeln!(
        std::io::stderr(),
        "payload sizes: json {json_len} B, msgpack {mp_len} B"
    );
}

mod group {
    #![allow(missing_docs)]
    use super::{Criterion, Duration, benches};

    criterion::criterion_group! {
        name = mesh_benches;
        config = Criterion::default()
            .sample_size(20)
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(2));
        targets = benches
    }
}

fn main() {
    if let Ok(env) = std::env::var(SERVER_VAR) {
        server(env);
        return;
    }
    group::mesh_benches();
    Criterion::default().configure_from_args().final_summary();
}
