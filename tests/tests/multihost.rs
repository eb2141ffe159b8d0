//! Discovery across three "hosts": network namespaces created by the test,
//! joined by veth pairs to a bridge that lives in a fourth namespace of its
//! own. Addresses (10.77.0.0/24) exist only inside those namespaces, and
//! everything is deleted at the end, even on failure (RAII guards).
//!
//! These tests need root and `ip netns`. Without them they FAIL, unless
//! `PLUME_SKIP_MULTIHOST_TESTS=1` is set: that one variable, and nothing else
//! (not `CI`, not a missing prerequisite), turns every test here into a skip.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

#[path = "common/netns.rs"]
mod netns;

use netns::{Net, prerequisites};

const HEARTBEAT_MS: u64 = 100;
const NODE_TIMEOUT_MS: u64 = 600;
/// Generous deadline for any expected line.
const DEADLINE: Duration = Duration::from_secs(10);

/// A `discovery-node` child running inside a namespace; stopped on drop.
struct Node {
    child: Child,
    lines: Receiver<String>,
    backlog: Vec<String>,
    id: String,
    name: String,
}

impl Node {
    fn start(net: &Net, host: u8, env: &[(&str, String)]) -> Node {
        let ns = net.host(host);
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &ns, env!("CARGO_BIN_EXE_discovery-node")])
            .args([
                "multihost",
                &format!("h{host}"),
                &format!("10.77.0.{host}:4100"),
            ])
            .env("PLUME_HEARTBEAT_MS", HEARTBEAT_MS.to_string())
            .env("PLUME_NODE_TIMEOUT_MS", NODE_TIMEOUT_MS.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for var in [
            "PLUME_DISCOVERY",
            "PLUME_MULTICAST_ADDR",
            "PLUME_MULTICAST_IFACE",
            "PLUME_SEEDS",
            "PLUME_DISCOVERY_LISTEN",
            "PLUME_DISCOVERY_PORT",
            "PLUME_MESH_SECRET",
        ] {
            cmd.env_remove(var);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => panic!("cannot start discovery-node: {e}"),
        };
        let stdout = child.stdout.take();
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            if let Some(out) = stdout {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            }
        });
        // `ip netns exec` execs the node itself: child.id() is the node's pid.
        let mut node = Node {
            child,
            lines: rx,
            backlog: Vec::new(),
            id: String::new(),
            name: format!("h{host}"),
        };
        let ready = node.expect(|l| l.starts_with("ready "), "ready");
        node.id = ready.split(' ').nth(1).unwrap_or_default().to_owned();
        node
    }

    /// Waits (up to `DEADLINE`) for a line matching `want` and takes it
    /// out; lines that do not match stay for later calls.
    fn expect(&mut self, want: impl Fn(&str) -> bool, what: &str) -> String {
        if let Some(pos) = self.backlog.iter().position(|l| want(l)) {
            return self.backlog.remove(pos);
        }
        let until = Instant::now() + DEADLINE;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if want(&l) => return l,
                Ok(l) => self.backlog.push(l),
                Err(RecvTimeoutError::Timeout) => {
                    panic!(
                        "{}: no {what} line within {DEADLINE:?}; saw {:?}",
                        self.name, self.backlog
                    )
                }
                Err(RecvTimeoutError::Disconnected) => {
                    panic!(
                        "{}: exited before a {what} line; saw {:?}",
                        self.name, self.backlog
                    )
                }
            }
        }
    }

    fn peer(&self) -> Peer {
        Peer {
            id: self.id.clone(),
            name: self.name.clone(),
        }
    }

    fn expect_up(&mut self, peer: &Peer) {
        let prefix = format!("up {} {} 10.77.0.", peer.id, peer.name);
        self.expect(|l| l.starts_with(&prefix), &format!("up {}", peer.name));
    }

    fn expect_down(&mut self, peer: &Peer) {
        let line = format!("down {}", peer.id);
        self.expect(|l| l == line, &format!("down {}", peer.name));
    }

    /// SIGTERM by pid (never by name), then a bounded wait, then SIGKILL.
    fn stop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let until = Instant::now() + Duration::from_secs(5);
        while Instant::now() < until {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A node's identity, as its lines show it.
struct Peer {
    id: String,
    name: String,
}

/// Every node sees the other two; taking host 3's link down drops it on
/// both sides within the node timeout, and bringing it up brings it back.
fn scenario(net: &Net, mut nodes: Vec<Node>) {
    let peers: Vec<Peer> = nodes.iter().map(Node::peer).collect();
    for (i, node) in nodes.iter_mut().enumerate() {
        for (j, peer) in peers.iter().enumerate() {
            if i != j {
                node.expect_up(peer);
            }
        }
    }

    net.link(3, false);
    let cut = Instant::now();
    nodes[0].expect_down(&peers[2]);
    nodes[1].expect_down(&peers[2]);
    nodes[2].expect_down(&peers[0]);
    nodes[2].expect_down(&peers[1]);
    // Down comes from the timeout, so not before it (less the jitter of the
    // last heartbeat heard before the cut).
    let floor = Duration::from_millis(NODE_TIMEOUT_MS - HEARTBEAT_MS * 6 / 5);
    assert!(
        cut.elapsed() >= floor,
        "dropped after {:?}, before the timeout",
        cut.elapsed()
    );

    net.link(3, true);
    nodes[0].expect_up(&peers[2]);
    nodes[1].expect_up(&peers[2]);
    nodes[2].expect_up(&peers[0]);
    nodes[2].expect_up(&peers[1]);

    // A graceful stop is seen at once (a leaving beacon).
    nodes[1].stop();
    nodes[0].expect_down(&peers[1]);
    nodes[2].expect_down(&peers[1]);
}

#[test]
fn multicast_discovery_across_namespaces() {
    if !prerequisites() {
        return;
    }
    let net = Net::new();
    let nodes = (1..=3u8)
        .map(|i| {
            Node::start(
                &net,
                i,
                &[
                    ("PLUME_DISCOVERY", "multicast".into()),
                    ("PLUME_MULTICAST_IFACE", format!("10.77.0.{i}")),
                    ("PLUME_MULTICAST_ADDR", "239.255.77.1:7391".into()),
                    ("PLUME_MESH_SECRET", "multihost-secret".into()),
                ],
            )
        })
        .collect();
    scenario(&net, nodes);
}

#[test]
fn seeds_discovery_across_namespaces() {
    if !prerequisites() {
        return;
    }
    let net = Net::new();
    // Host 1 is the seed; hosts 2 and 3 know only it.
    let nodes = (1..=3u8)
        .map(|i| {
            let mut env = vec![
                ("PLUME_DISCOVERY", "seeds".to_owned()),
                ("PLUME_DISCOVERY_LISTEN", format!("10.77.0.{i}:7946")),
            ];
            if i != 1 {
                env.push(("PLUME_SEEDS", "10.77.0.1:7946".to_owned()));
            }
            Node::start(&net, i, &env)
        })
        .collect();
    scenario(&net, nodes);
}
