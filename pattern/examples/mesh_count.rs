//! A bounded run of the two mesh benchmarks of `benches/pattern.rs`, for instruction counts
//! (`valgrind --tool=callgrind`): two mesh nodes in this process (loopback TCP, tokio with 2
//! workers, as the bench), then `BATCHES` rounds of 64 calls in flight of one kind:
//!
//! - `act`: the pattern act `{topic:'math',cmd:'add',a:1,b:2}` to a typed handler;
//! - `request`: the plain mesh call (`mesh.to("plain.add").send`) of `{a:1,b:2}`.
//!
//! `cargo run --release -p plume-pattern --example mesh_count -- act 200`. The cost per call is
//! the difference of two runs with different batch counts (the setup cancels out), divided by
//! 64 × the difference of the batch counts: see docs/benchmarks.md, "Instruction counts".

// A measuring tool: it reports on stdout, and a failure ends it.
#![allow(clippy::print_stdout, clippy::expect_used, clippy::unwrap_used)]

use std::time::Duration;

use futures::future::join_all;
use mesh_pair::mesh_pair;
use serde_json::{Value, json};

#[path = "../benches/support/mesh_pair.rs"]
mod mesh_pair;

fn main() {
    let mut args = std::env::args().skip(1);
    let kind = args.next().unwrap_or_default();
    let batches: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(0);
    assert!(
        kind == "act" || kind == "request" || kind == "sizes",
        "usage: mesh_count act|request|sizes BATCHES"
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        // Under valgrind everything is some 50 times slower: a generous deadline to meet.
        let (a, b, _responder, caller) = mesh_pair(Duration::from_secs(120)).await;
        let msg = json!({"topic": "math", "cmd": "add", "a": 1, "b": 2});
        let body = json!({"a": 1, "b": 2});
        if kind == "sizes" {
            // The futures each call keeps (and `join_all` moves into its task): bytes.
            let act = caller.act(&msg);
            let request = b.to("plain.add").send(&body);
            println!(
                "future bytes: act {}, request {}",
                std::mem::size_of_val(&act),
                std::mem::size_of_val(&request)
            );
            return;
        }
        // One warm-up batch (links, buffers, pools), then the counted ones.
        for _ in 0..=batches {
            if kind == "act" {
                let all = join_all((0..64).map(|_| caller.act(&msg))).await;
                assert!(all.iter().all(|r| r == &Ok(json!(3.0))), "{all:?}");
            } else {
                let all = join_all((0..64).map(|_| b.to("plain.add").send(&body))).await;
                assert!(
                    all.iter()
                        .all(|r: &Result<Value, _>| r.as_ref().ok() == Some(&json!(3.0))),
                    "{all:?}"
                );
            }
        }
        println!("{kind}: {batches} batches of 64 done");
        a.shutdown().await;
        b.shutdown().await;
    });
}
