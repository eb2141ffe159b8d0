//! A real `nats-server` on a free loopback port for the transport's NATS tests (killed by PID
//! on drop), and a client connected to it once it is ready.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::time::Instant;

/// How long a test waits for anything.
pub(crate) const WAIT: Duration = Duration::from_secs(10);

/// A `nats-server` killed (by PID) on drop.
pub(crate) struct Nats {
    child: Child,
    port: u16,
}

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Ports below the ephemeral range, reserved across test processes (shared with plume-tests).
#[path = "../../../tests/src/ports.rs"]
#[allow(unreachable_pub, dead_code)]
mod ports;

/// Start a server; FAILS (does not skip) when `nats-server` is not installed.
pub(crate) async fn nats_server() -> (Nats, async_nats::Client) {
    let port = ports::free_port();
    let child = Command::new("nats-server")
        .args(["-a", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect(
            "nats-server is installed (apt-get install -y nats-server; scripts/test.sh does it)",
        );
    let nats = Nats { child, port };
    // Ready once a client connects (bounded).
    let deadline = Instant::now() + WAIT;
    loop {
        if let Ok(c) = async_nats::connect(nats.url()).await {
            return (nats, c);
        }
        assert!(Instant::now() < deadline, "nats-server did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

impl Nats {
    pub(crate) fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}
