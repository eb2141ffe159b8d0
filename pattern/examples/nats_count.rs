//! A bounded run of the NATS benchmarks of `benches/pattern.rs`, for instruction counts
//! (`valgrind --tool=callgrind`) and syscall counts (`strace -c -f`): a real `nats-server`
//! (tests/src/servers.rs, a child process, not counted), then a Plume responder and a Plume
//! caller on two NATS connections in this process (tokio with 2 workers, as the bench), then
//! `BATCHES` rounds of one kind:
//!
//! - `act`: 64 pattern acts `{topic:'pmath',cmd:'add',a:1,b:2}` in flight, to a typed handler;
//! - `act1`: 64 such acts one after the other (one in flight);
//! - `raw`: 64 plain async-nats requests in flight to a subscriber that echoes them (no Hemera
//!   envelope, no pattern node: the floor that the client sets);
//! - `raw1`: 64 such requests one after the other.
//!
//! `cargo run --release -p plume-pattern --example nats_count -- act 200`. The cost per call is
//! the difference of two runs with different batch counts (the setup cancels out), divided by
//! 64 × the difference of the batch counts: see docs/benchmarks.md.

// A measuring tool: it reports on stdout, and a failure ends it.
#![allow(clippy::print_stdout, clippy::expect_used, clippy::unwrap_used)]

#[allow(unreachable_pub, dead_code)]
#[path = "../../tests/src/servers.rs"]
mod servers;

#[path = "../benches/support/raw_nats.rs"]
mod raw_nats;

use std::time::Duration;

use futures::future::join_all;
use plume_pattern::{Hemera, HemeraError, Options, Req, typed};
use raw_nats::raw_nats_pair;
use serde::Deserialize;
use serde_json::json;
use servers::{Kind, Server};

/// The typed payload of the `add` pattern (as the bench's).
#[derive(Deserialize)]
struct Add {
    a: f64,
    b: f64,
}

fn main() {
    let mut args = std::env::args().skip(1);
    let kind = args.next().unwrap_or_default();
    let batches: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(0);
    assert!(
        ["act", "act1", "raw", "raw1"].contains(&kind.as_str()),
        "usage: nats_count act|act1|raw|raw1 BATCHES"
    );
    let server = Server::start(Kind::Nats);
    let url = server.url();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let options = || Options {
            timeout: Duration::from_secs(60),
            ..Options::default()
        };
        let responder = Hemera::connect(&url, options()).await.expect("NATS");
        responder
            .add(
                json!({"topic": "pmath", "cmd": "add"}),
                typed(|p: Add, _r: Req| async move { Ok::<_, HemeraError>(p.a + p.b) }),
            )
            .await
            .expect("add");
        let caller = Hemera::connect(&url, options()).await.expect("NATS");
        let raw = if kind.starts_with("raw") {
            Some(raw_nats_pair(&url, Duration::from_secs(120)).await)
        } else {
            None
        };
        let msg = json!({"topic": "pmath", "cmd": "add", "a": 1, "b": 2});
        // One warm-up batch (connections, buffers), then the counted ones.
        for _ in 0..=batches {
            match (kind.as_str(), &raw) {
                ("act", _) => {
                    let all = join_all((0..64).map(|_| caller.act(&msg))).await;
                    assert!(all.iter().all(|r| r == &Ok(json!(3.0))), "{all:?}");
                }
                ("act1", _) => {
                    for _ in 0..64 {
                        assert_eq!(caller.act(&msg).await, Ok(json!(3.0)));
                    }
                }
                ("raw1", Some(raw)) => {
                    for _ in 0..64 {
                        let reply = raw.request("raw.echo", "3".into()).await.expect("reply");
                        assert_eq!(&reply.payload[..], b"3");
                    }
                }
                (_, Some(raw)) => {
                    let all = join_all((0..64).map(|_| raw.request("raw.echo", "3".into()))).await;
                    assert!(
                        all.iter()
                            .all(|r| r.as_ref().is_ok_and(|m| &m.payload[..] == b"3")),
                        "raw replies"
                    );
                }
                _ => unreachable!("checked above"),
            }
        }
        println!("{kind}: {batches} batches of 64 done");
        caller.close().await;
        responder.close().await;
    });
    drop(server);
}
