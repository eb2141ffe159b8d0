//! `PLUME_WORKERS`: the number of tokio worker threads of a real `gateway-example gateway`
//! process (as its runtime counts them), and the refusal of a bad value before anything
//! starts.

use std::process::Stdio;
use std::time::Duration;

use plume_tests::child::without_plume_env;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(20);
const BIN: &str = env!("CARGO_BIN_EXE_gateway-example");

/// The worker threads a gateway started with `PLUME_WORKERS=workers` (unset when `None`)
/// reports on stderr (its runtime's own count, logged at start).
async fn gateway_workers(workers: Option<&str>) -> usize {
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("a UDP port");
    let discovery_port = udp.local_addr().expect("its address").port().to_string();
    drop(udp);
    let mut cmd = Command::new(BIN);
    without_plume_env(&mut cmd)
        .args(["gateway", "--port", "0"])
        .env("PLUME_ENV", format!("workers-test-{}", std::process::id()))
        .env("PLUME_DISCOVERY", "loopback")
        .env("PLUME_DISCOVERY_PORT", discovery_port)
        .env("PLUME_JWT_SECRET", "workers-test-secret")
        .env("RUST_LOG", "warn,gateway_example::runtime=info")
        // The count must come from PLUME_WORKERS, not from tokio's own variable.
        .env("TOKIO_WORKER_THREADS", "5")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(w) = workers {
        cmd.env("PLUME_WORKERS", w);
    }
    let mut child = cmd.spawn().expect("the gateway starts");
    let mut lines = BufReader::new(child.stderr.take().expect("piped stderr")).lines();
    timeout(WAIT, async {
        while let Some(line) = lines.next_line().await.expect("stderr readable") {
            if let Some((_, rest)) = line.split_once("tokio runtime: ") {
                return rest
                    .split(' ')
                    .next()
                    .and_then(|n| n.parse().ok())
                    .unwrap_or_else(|| panic!("no count in {line:?}"));
            }
        }
        panic!("the gateway exited without its runtime line")
    })
    .await
    .expect("the runtime line in time")
}

#[tokio::test]
async fn plume_workers_sets_the_worker_threads() {
    for (var, want) in [(Some("1"), 1), (Some("3"), 3), (None, 5)] {
        // Unset: tokio's default, which reads TOKIO_WORKER_THREADS (5 here).
        assert_eq!(gateway_workers(var).await, want, "PLUME_WORKERS={var:?}");
    }
}

#[tokio::test]
async fn a_bad_plume_workers_is_refused_before_starting() {
    for bad in ["0", "many", "-2"] {
        let mut cmd = Command::new(BIN);
        without_plume_env(&mut cmd)
            .args(["gateway", "--port", "0"])
            .env("PLUME_WORKERS", bad)
            .kill_on_drop(true);
        let out = timeout(WAIT, cmd.output())
            .await
            .expect("an exit in time")
            .expect("the binary runs");
        assert!(!out.status.success(), "PLUME_WORKERS={bad} started");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!(
                "PLUME_WORKERS must be a number of worker threads from 1 to 1024, not {bad:?}"
            )),
            "PLUME_WORKERS={bad}: {err}"
        );
    }
}
