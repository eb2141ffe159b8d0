//! Real `nats-server` and `redis-server` processes on free loopback ports, behind RAII guards:
//! each runs in a temporary directory of its own, is killed by PID when the guard drops, and
//! is ready once its port accepts connections (waited for with a deadline, never a fixed sleep).

use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a server may take to accept connections.
const READY_WITHIN: Duration = Duration::from_secs(10);

/// Which server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `nats-server -a 127.0.0.1 -p N`.
    Nats,
    /// `redis-server --save '' --appendonly no --bind 127.0.0.1 --port N`.
    Redis,
}

/// A running server, killed (SIGKILL by PID) and its directory removed when dropped.
#[derive(Debug)]
pub struct Server {
    kind: Kind,
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
    /// nats-server with JetStream (`-js`, its store in `dir`).
    jetstream: bool,
}

#[path = "ports.rs"]
pub mod ports;
pub use ports::free_port;

/// Whether the binary for `kind` is installed (`scripts/test.sh` installs both).
pub fn available(kind: Kind) -> bool {
    let bin = match kind {
        Kind::Nats => "nats-server",
        Kind::Redis => "redis-server",
    };
    Command::new("sh")
        .args(["-c", &format!("command -v {bin}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl Server {
    /// Start a server on a free loopback port and wait until it accepts connections.
    pub fn start(kind: Kind) -> Server {
        Server::launch(kind, false)
    }

    fn launch(kind: Kind, jetstream: bool) -> Server {
        assert!(
            available(kind),
            "{kind:?} server not installed: apt-get install -y nats-server redis-server (scripts/test.sh does it)"
        );
        let dir = std::env::temp_dir().join(format!(
            "plume-{kind:?}-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let mut server = Server {
            kind,
            port: free_port(),
            dir,
            child: None,
            jetstream,
        };
        server.spawn();
        server
    }

    /// A `nats-server -js` (JetStream, its store in a temporary directory) on a free loopback
    /// port, killed (by PID) when dropped.
    ///
    /// # Panics
    /// When nats-server is not installed or does not start: a test failure.
    pub fn start_jetstream() -> Server {
        Server::launch(Kind::Nats, true)
    }

    fn spawn(&mut self) {
        let port = self.port.to_string();
        let mut cmd = match self.kind {
            Kind::Nats => {
                let mut c = Command::new("nats-server");
                c.args(["-a", "127.0.0.1", "-p", &port]);
                if self.jetstream {
                    c.arg("-js").arg("-sd").arg(&self.dir);
                }
                c
            }
            Kind::Redis => {
                let mut c = Command::new("redis-server");
                c.args([
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--bind",
                    "127.0.0.1",
                    "--port",
                    &port,
                    "--dir",
                ]);
                c.arg(&self.dir);
                c
            }
        };
        let child = cmd
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("server starts");
        self.child = Some(child);
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return;
            }
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                panic!("{:?} server exited at start: {status}", self.kind);
            }
            assert!(
                Instant::now() < deadline,
                "{:?} server not ready on {addr} in time",
                self.kind
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Its port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its URL: `nats://127.0.0.1:N` or `redis://127.0.0.1:N`.
    pub fn url(&self) -> String {
        match self.kind {
            Kind::Nats => format!("nats://127.0.0.1:{}", self.port),
            Kind::Redis => format!("redis://127.0.0.1:{}", self.port),
        }
    }

    /// Kill the server (SIGKILL by PID) and wait for it to exit.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start it again on the same port (after [`kill`](Self::kill)).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
