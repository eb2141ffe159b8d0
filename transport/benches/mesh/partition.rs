//! Partitioned sends and broadcasts (issue 16's targets): five server processes and this one
//! in an environment of their own. Endpoint `keyed` is provided by all six (so a key may be
//! owned here), `all` by the five servers only.
//!
//! One loop interleaves, so that every measure sees the same load: the raw TCP round trip, a
//! send by key entering at its owner (this node: a local call), a send by key entering at a
//! non-owner (one hop to the owner), a broadcast to the five servers, and one send to one of
//! them.

use std::io::Write;
use std::time::{Duration, Instant};

use plume_transport::{Mesh, Request};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::runtime::Runtime;

use super::{Server, payload, raw_message, start_server_in};

/// Servers in the cluster.
const SERVERS: usize = 5;
/// Samples of each measure.
const N: usize = 5_000;

fn p50(mut ns: Vec<u128>) -> f64 {
    ns.sort_unstable();
    ns[ns.len() / 2] as f64 / 1000.0
}

/// Start the cluster, measure, and print the p50s and the targets' verdicts on stderr.
pub(crate) fn report(rt: &Runtime) {
    let env = format!("bench-partition-{}", std::process::id());
    let servers: Vec<Server> = (0..SERVERS).map(|_| start_server_in(&env)).collect();
    rt.block_on(async {
        let mesh = Mesh::builder()
            .environment(&env)
            .key("bench-client")
            .secret(super::secret())
            .start()
            .await
            .expect("mesh");
        mesh.respond("keyed", |req: Request| async move { Ok(req.body) });
        let mut watch = mesh.watch();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while mesh.providers("keyed").len() != SERVERS + 1 || mesh.providers("all").len() != SERVERS
        {
            tokio::time::timeout_at(deadline, watch.recv())
                .await
                .expect("the cluster forms");
        }
        let key_owned_by = |here: bool| {
            (0..)
                .map(|i| format!("key-{i}"))
                .find(|k| (mesh.owner("keyed", k) == Some(mesh.node_id())) == here)
                .expect("some key")
        };
        let (at_owner, elsewhere) = (key_owned_by(true), key_owned_by(false));
        let mut raw = TcpStream::connect(("127.0.0.1", servers[0].raw_port))
            .await
            .expect("connect");
        raw.set_nodelay(true).expect("nodelay");
        let (msg, mut back, body) = (raw_message(), [0u8; 4 + super::MSG], payload());
        let mut samples: [Vec<u128>; 5] = Default::default();
        for _ in 0..N {
            let t = Instant::now();
            raw.write_all(&msg).await.expect("write");
            raw.read_exact(&mut back).await.expect("read");
            samples[0].push(t.elapsed().as_nanos());
            let t = Instant::now();
            let _: Value = mesh.to("keyed").key(&at_owner).send(&body).await.expect("owner");
            samples[1].push(t.elapsed().as_nanos());
            let t = Instant::now();
            let _: Value = mesh.to("keyed").key(&elsewhere).send(&body).await.expect("hop");
            samples[2].push(t.elapsed().as_nanos());
            let t = Instant::now();
            let replies = mesh.to("all").broadcast(&body).await.expect("broadcast");
            samples[3].push(t.elapsed().as_nanos());
            assert!(replies.len() == SERVERS && replies.iter().all(|r| r.result.is_ok()));
            let t = Instant::now();
            let _: Value = mesh.to("all").key(&elsewhere).send(&body).await.expect("send");
            samples[4].push(t.elapsed().as_nanos());
        }
        let [raw_ns, owner_ns, hop_ns, broadcast_ns, send_ns] = samples;
        let (raw, owner, hop, all, one) = (
            p50(raw_ns),
            p50(owner_ns),
            p50(hop_ns),
            p50(broadcast_ns),
            p50(send_ns),
        );
        let _ = writeln!(
            std::io::stderr(),
            "partition ({N} each, p50): raw TCP {raw:.1} us; send by key at the owner {owner:.1} us, \
             at a non-owner {hop:.1} us (target <= owner + 1.3 x raw = {:.1}: {}); \
             broadcast to {SERVERS} {all:.1} us, one send {one:.1} us (target <= 2 x send = {:.1}: {})",
            owner + 1.3 * raw,
            if hop <= owner + 1.3 * raw { "met" } else { "MISSED" },
            2.0 * one,
            if all <= 2.0 * one { "met" } else { "MISSED" },
        );
        mesh.shutdown().await;
    });
    drop(servers);
}
