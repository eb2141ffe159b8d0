//! A Plume todos replica (`gateway-example todos` with `PLUME_DISCOVERY=cote`) in a real
//! feathers-distributed 3.0.0 fleet (Feathers 5.0.50, from `tests/cote/package-lock.json`).
//!
//! cote broadcasts, so every process of a test runs in a loopback-only network namespace the
//! test creates (and deletes in a drop guard). Needs root, `ip netns`, node and npm: a missing
//! prerequisite fails the test.

use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::time::{Instant, timeout_at};

#[path = "../../core/tests/support/npm.rs"]
mod npm;

/// How long a fleet may take to find itself (hellos every 500 ms, publication delays).
const JOIN: Duration = Duration::from_secs(30);

/// The cote timers of the Plume processes (the Node ones are in `tests/cote/fleet.mjs`).
const COTE_TIMERS: [(&str, &str); 3] = [
    ("COTE_HELLO_INTERVAL", "500"),
    ("COTE_CHECK_INTERVAL", "1000"),
    ("COTE_NODE_TIMEOUT", "1500"),
];

fn run_ip(args: &[&str]) {
    let out = std::process::Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("`ip` runs (these tests need iproute2 and root): {e}"));
    assert!(
        out.status.success(),
        "ip {args:?}: {} (these tests need root and `ip netns`)",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A loopback-only network namespace, deleted when dropped.
struct Netns(String);

impl Netns {
    fn new() -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "cote-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        run_ip(&["netns", "add", &name]);
        let ns = Netns(name);
        run_ip(&["-n", &ns.0, "link", "set", "lo", "up"]);
        ns
    }

    /// A command run inside the namespace.
    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.0, program]);
        cmd
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.0])
            .status();
    }
}

/// The Node scripts with the pinned packages: a fresh directory holding `tests/cote/*.mjs` and
/// a link to the installed `node_modules`.
fn node_dir() -> tempfile::TempDir {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/cote");
    let installed = npm::install_locked(&src, "cote");
    let dir = tempfile::tempdir().expect("a temp dir");
    for entry in std::fs::read_dir(&src).expect("tests/cote") {
        let path = entry.expect("an entry").path();
        if path.extension().is_some_and(|e| e == "mjs") {
            std::fs::copy(&path, dir.path().join(path.file_name().expect("a name")))
                .expect("copy a script");
        }
    }
    std::os::unix::fs::symlink(
        installed.join("node_modules"),
        dir.path().join("node_modules"),
    )
    .expect("link node_modules");
    dir
}

/// A process in the namespace: its stdout read line by line (and kept for failure messages),
/// killed (SIGKILL, by PID) when dropped.
struct Proc {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Lines<BufReader<ChildStdout>>,
    seen: Vec<String>,
}

impl Proc {
    fn spawn(mut cmd: Command, name: &str) -> Proc {
        cmd.stdout(Stdio::piped())
            .stdin(Stdio::piped())
            .kill_on_drop(true);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("PLUME_") {
                cmd.env_remove(key);
            }
        }
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("{name} starts: {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        Proc {
            name: name.to_owned(),
            stdin: child.stdin.take(),
            child,
            lines: BufReader::new(stdout).lines(),
            seen: Vec::new(),
        }
    }

    /// Wait (until `within`) for a line starting with `prefix` (or find it among those read).
    async fn wait_for(&mut self, prefix: &str, within: Duration) -> String {
        if let Some(line) = self.seen.iter().find(|l| l.starts_with(prefix)) {
            return line.clone();
        }
        let deadline = Instant::now() + within;
        loop {
            match timeout_at(deadline, self.lines.next_line()).await {
                Ok(Ok(Some(line))) => {
                    self.seen.push(line.clone());
                    if line.starts_with(prefix) {
                        return line;
                    }
                }
                Ok(_) => panic!(
                    "{} exited before printing {prefix:?}; it printed {:?}",
                    self.name, self.seen
                ),
                Err(_) => panic!(
                    "{} did not print {prefix:?} within {within:?}; it printed {:?}",
                    self.name, self.seen
                ),
            }
        }
    }

    async fn say(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("piped stdin");
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .expect("write to stdin");
        stdin.flush().await.expect("flush stdin");
    }

    fn sigkill(&self) {
        let pid = self.child.id().expect("running").to_string();
        let status = std::process::Command::new("kill")
            .args(["-KILL", &pid])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -KILL {pid}");
    }
}

/// A Node script of `tests/cote`, in the namespace.
fn node(ns: &Netns, dir: &Path, script: &str, env: &[(&str, &str)]) -> Proc {
    let mut cmd = ns.command("node");
    cmd.arg(dir.join(script)).current_dir(dir);
    for (k, v) in env {
        cmd.env(k, v);
    }
    Proc::spawn(cmd, script)
}

/// `replica.mjs` on 3034, named `node-1`, key `todos`, once it has published `todos`.
async fn node_replica(ns: &Netns, dir: &Path) -> Proc {
    let mut p = node(
        ns,
        dir,
        "replica.mjs",
        &[("PORT", "3034"), ("NAME", "node-1")],
    );
    p.wait_for("LISTENING", JOIN).await;
    // feathers-distributed installs a service's event listeners when it first publishes it.
    p.wait_for("PUBLISHED todos", JOIN).await;
    p
}

/// `gateway-example todos --store memory` with `PLUME_DISCOVERY=cote`, in the namespace.
async fn plume_replica(ns: &Netns, name: &str, port: u16) -> Proc {
    let mut cmd = ns.command(env!("CARGO_BIN_EXE_gateway-example"));
    let port_arg = port.to_string();
    cmd.args([
        "todos", "--name", name, "--port", &port_arg, "--store", "memory",
    ])
    .env("PLUME_DISCOVERY", "cote")
    .envs(COTE_TIMERS);
    let mut p = Proc::spawn(cmd, name);
    p.wait_for(&format!("todos {name} listening"), JOIN).await;
    p
}

/// Run `scenario.mjs` (with `env`) against the gateway on `port` and expect `SCENARIO OK`.
async fn scenario(ns: &Netns, dir: &Path, port: u16, expect_replicas: &str, env: &[(&str, &str)]) {
    let mut cmd = ns.command("node");
    cmd.arg(dir.join("scenario.mjs"))
        .arg(format!("http://127.0.0.1:{port}"))
        .current_dir(dir)
        .env("EXPECT_REPLICAS", expect_replicas)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let out = tokio::time::timeout(JOIN * 2, cmd.output())
        .await
        .expect("the scenario ends in time")
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("SCENARIO OK"),
        "the scenario failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_gateway_serves_a_plume_replica() {
    let dir = node_dir();
    let ns = Netns::new();
    let _replica = plume_replica(&ns, "todos-r", 3033).await;
    let mut gateway = node(&ns, dir.path(), "gateway.mjs", &[("PORT", "3030")]);
    gateway.wait_for("LISTENING", JOIN).await;
    gateway.wait_for("SERVICE todos", JOIN).await;
    scenario(
        &ns,
        dir.path(),
        3030,
        "todos-r",
        &[("HEALTHCHECK", "todos")],
    )
    .await;
}

/// A Plume replica `todos-r`, then a Node gateway on 3030 (with `gateway_env`) that mounts its
/// `todos`, then a Node replica `node-1` of the same key. The gateway mounts the first
/// descriptor it hears, the Plume replica's: a Node replica's lists the standard events, which
/// makes feathers-distributed 3.0.0 emit each of them twice (docs/cote.md, "Limits").
async fn mixed_fleet(ns: &Netns, dir: &Path, gateway_env: &[(&str, &str)]) -> [Proc; 3] {
    let plume = plume_replica(ns, "todos-r", 3033).await;
    let mut env = vec![("PORT", "3030")];
    env.extend_from_slice(gateway_env);
    let mut gateway = node(ns, dir, "gateway.mjs", &env);
    gateway.wait_for("SERVICE todos", JOIN).await;
    let node_replica = node_replica(ns, dir).await;
    [plume, gateway, node_replica]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_and_a_plume_replica_share_the_calls_of_a_node_gateway() {
    let dir = node_dir();
    let ns = Netns::new();
    let mut fleet = mixed_fleet(&ns, dir.path(), &[]).await;
    // Events published before the gateway's subscriber connects are lost (cote keeps none).
    fleet[2].wait_for("EVENTS SUBSCRIBER", JOIN).await;
    scenario(
        &ns,
        dir.path(),
        3030,
        "todos-r,node-1",
        &[("HEALTHCHECK", "todos")],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_gateway_recovers_when_a_plume_replica_is_killed_under_load() {
    let dir = node_dir();
    let ns = Netns::new();
    let fleet = mixed_fleet(&ns, dir.path(), &[("FD_TIMEOUT", "2000")]).await;
    let failed = kill_under_load(&ns, dir.path(), &fleet[0], "create").await;
    // Only the calls in flight on the dead replica (or sent before the gateway saw its link
    // close) may fail: a few per load loop, not a stream.
    assert!(failed <= 40, "{failed} calls failed after the kill");
}

/// Load the gateway on 3030 with `method` calls (`load.mjs`) until both replicas answered,
/// SIGKILL `victim`, and wait until `node-1` alone answers 20 calls in a row: the number of
/// calls that failed meanwhile.
async fn kill_under_load(ns: &Netns, dir: &Path, victim: &Proc, method: &str) -> usize {
    let mut cmd = ns.command("node");
    cmd.arg(dir.join("load.mjs"))
        .args(["http://127.0.0.1:3030", "node-1", method])
        .current_dir(dir);
    let mut load = Proc::spawn(cmd, "load.mjs");
    load.wait_for("BOTH", JOIN).await;
    victim.sigkill();
    load.say("killed").await;
    let recovered = load.wait_for("RECOVERED", JOIN).await;
    recovered
        .trim_start_matches("RECOVERED ")
        .parse()
        .expect("a count")
}

/// `gateway-example cote-gateway` on `port`, in the namespace, waiting until it mounts `todos`.
async fn plume_gateway(ns: &Netns, port: u16) -> Proc {
    let mut cmd = ns.command(env!("CARGO_BIN_EXE_gateway-example"));
    let port_arg = port.to_string();
    cmd.args(["cote-gateway", "--port", &port_arg])
        .envs(COTE_TIMERS);
    let mut p = Proc::spawn(cmd, "cote-gateway");
    p.wait_for("SERVICE todos", JOIN).await;
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plume_gateway_serves_a_node_replica() {
    let dir = node_dir();
    let ns = Netns::new();
    let mut node_replica = node_replica(&ns, dir.path()).await;
    let _gateway = plume_gateway(&ns, 3030).await;
    node_replica.wait_for("EVENTS SUBSCRIBER", JOIN).await;
    scenario(&ns, dir.path(), 3030, "node-1", &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_and_a_plume_replica_share_the_calls_of_a_plume_gateway() {
    let dir = node_dir();
    let ns = Netns::new();
    let _plume = plume_replica(&ns, "todos-r", 3033).await;
    let mut node_replica = node_replica(&ns, dir.path()).await;
    let _gateway = plume_gateway(&ns, 3030).await;
    node_replica.wait_for("EVENTS SUBSCRIBER", JOIN).await;
    scenario(&ns, dir.path(), 3030, "todos-r,node-1", &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plume_gateway_loses_no_idempotent_call_when_a_plume_replica_is_killed() {
    let dir = node_dir();
    let ns = Netns::new();
    let plume = plume_replica(&ns, "todos-r", 3033).await;
    let _node_replica = node_replica(&ns, dir.path()).await;
    let _gateway = plume_gateway(&ns, 3030).await;
    let failed = kill_under_load(&ns, dir.path(), &plume, "find").await;
    assert_eq!(failed, 0, "finds failed after the kill");
}
