//! The harness of the multi-process instance-set tests: real `gateway-example workers` nodes,
//! each printing `start`/`tick`/`stop CFG NAME UNIX_MS` lines for the instances it runs and
//! `leader NODE UNIX_MS` when the leader it follows changes. A [`Cluster`] reads every line of
//! every node; [`Cluster::assert_no_overlap`] checks from the timestamps that no configuration
//! ever ran on two nodes at the same moment.
//!
//! Each cluster runs in a mesh environment (`PLUME_ENV`) of its own.

#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use plume_tests::child::without_plume_env;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio::time::{Instant, timeout};

/// How long a node may take to start, and the set to settle.
pub const SETTLE: Duration = Duration::from_secs(20);
/// The target: a SIGKILLed node's instances run again elsewhere within this.
pub const FAILOVER: Duration = Duration::from_secs(5);
pub const CONFIGS: usize = 7;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Start,
    Tick,
    Stop,
    /// `leader NODE UNIX_MS`: the line's `config` is the leader's node id (`none`: nobody).
    Leader,
}

/// One line of one node process.
#[derive(Debug, Clone)]
pub struct Line {
    pub kind: Kind,
    pub config: String,
    pub process: usize,
    pub ms: u128,
}

/// Every line of every node, and a counter that moves with each.
#[derive(Clone)]
pub struct Log {
    pub lines: Arc<Mutex<Vec<Line>>>,
    pub changed: watch::Sender<u64>,
}

impl Log {
    pub fn new() -> Log {
        Log {
            lines: Arc::default(),
            changed: watch::Sender::new(0),
        }
    }

    pub fn lines(&self) -> Vec<Line> {
        self.lines
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub fn push(&self, line: Line) {
        self.lines
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(line);
        self.changed.send_modify(|n| *n += 1);
    }
}

/// One `workers` node, killed (SIGKILL, by PID) when dropped.
pub struct Node {
    pub name: String,
    pub process: usize,
    pub port: u16,
    pub id: String,
    pub child: Child,
    pub alive: bool,
}

pub fn parse(text: &str, process: usize) -> Option<Line> {
    let mut words = text.split_whitespace();
    let kind = match words.next()? {
        "start" => Kind::Start,
        "tick" => Kind::Tick,
        "stop" => Kind::Stop,
        "leader" => {
            let leader = words.next()?.to_owned();
            let ms = words.next()?.parse().ok()?;
            return Some(Line {
                kind: Kind::Leader,
                config: leader,
                process,
                ms,
            });
        }
        _ => return None,
    };
    let config = words.next()?.to_owned();
    let _name = words.next()?;
    let ms = words.next()?.parse().ok()?;
    Some(Line {
        kind,
        config,
        process,
        ms,
    })
}

pub struct Cluster {
    /// More arguments of every `workers` node (e.g. `--nats URL`).
    pub args: Vec<String>,
    pub env: String,
    pub log: Log,
    pub nodes: Vec<Node>,
}

impl Cluster {
    pub fn new() -> Cluster {
        Cluster {
            args: Vec::new(),
            env: format!("instances-{}", uuid::Uuid::new_v4().simple()),
            log: Log::new(),
            nodes: Vec::new(),
        }
    }

    /// Start node `name` on the loopback mesh.
    pub async fn start(&mut self, name: &str) {
        self.start_with(name, None, &[]).await;
    }

    /// Start node `name`, inside network namespace `netns` when given (`ip netns exec` execs
    /// the node itself, so the child's PID is the node's), with `vars` in its environment.
    pub async fn start_with(&mut self, name: &str, netns: Option<&str>, vars: &[(String, String)]) {
        let program = plume_tests::cargo_bin::gateway_example();
        let mut cmd = match netns {
            Some(ns) => {
                let mut cmd = Command::new("ip");
                cmd.args(["netns", "exec", ns]).arg(program);
                cmd
            }
            None => Command::new(program),
        };
        cmd.args(["workers", "--name", name, "--configs"])
            .arg(CONFIGS.to_string())
            .args(["--http-port", "0", "--min-members", "2"])
            .args(&self.args)
            .stdout(Stdio::piped())
            .stdin(Stdio::null())
            .kill_on_drop(true);
        without_plume_env(&mut cmd);
        cmd.env("PLUME_ENV", &self.env);
        for (k, v) in vars {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("gateway-example workers starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let process = self.nodes.len();
        // Lines that come before the ready line (an instance started as the node joined) are
        // kept in the log like every later one.
        let ready = timeout(SETTLE, async {
            loop {
                let text = lines
                    .next_line()
                    .await
                    .expect("stdout readable")
                    .expect("the node exited before it was ready");
                if text.starts_with("workers ") {
                    return text;
                }
                if let Some(line) = parse(&text, process) {
                    self.log.push(line);
                }
            }
        })
        .await
        .expect("the ready line in time");
        // workers NAME ready on http://127.0.0.1:PORT node ID
        let words: Vec<&str> = ready.split_whitespace().collect();
        let port = words
            .get(4)
            .and_then(|u| u.rsplit(':').next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("unexpected ready line {ready:?}"));
        let id = words.get(6).map(|s| (*s).to_owned()).unwrap_or_default();
        let log = self.log.clone();
        tokio::spawn(async move {
            while let Ok(Some(text)) = lines.next_line().await {
                if let Some(line) = parse(&text, process) {
                    log.push(line);
                }
            }
        });
        // Seen only through its lines (its JSON API may be in another namespace).
        self.nodes.push(Node {
            name: name.to_owned(),
            process,
            port,
            id,
            child,
            alive: true,
        });
    }

    /// The processes that run each configuration now (alive ones, from their lines).
    pub fn running(&self) -> BTreeMap<String, Vec<usize>> {
        let mut open: BTreeMap<(String, usize), bool> = BTreeMap::new();
        for l in self.log.lines() {
            match l.kind {
                Kind::Start => {
                    open.insert((l.config, l.process), true);
                }
                Kind::Stop => {
                    open.remove(&(l.config, l.process));
                }
                Kind::Tick | Kind::Leader => {}
            }
        }
        let mut out: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for (config, process) in open.into_keys() {
            if self.nodes[process].alive {
                out.entry(config).or_default().push(process);
            }
        }
        out
    }

    /// Instances per node (largest first) when every configuration runs exactly once.
    pub fn counts(&self) -> Option<Vec<usize>> {
        let running = self.running();
        if running.len() != CONFIGS || running.values().any(|p| p.len() != 1) {
            return None;
        }
        let mut per: BTreeMap<usize, usize> = BTreeMap::new();
        for p in running.values() {
            *per.entry(p[0]).or_default() += 1;
        }
        let mut v: Vec<usize> = per.into_values().collect();
        v.sort_unstable_by(|a, b| b.cmp(a));
        Some(v)
    }

    /// Wait for `ok`, re-checking on every new line, at most `limit`; how long it took.
    pub async fn wait(
        &self,
        what: &str,
        limit: Duration,
        ok: impl Fn(&Cluster) -> bool,
    ) -> Duration {
        let t0 = Instant::now();
        let mut changed = self.log.changed.subscribe();
        while !ok(self) {
            let left = limit.saturating_sub(t0.elapsed());
            assert!(
                !left.is_zero(),
                "{what}: not within {limit:?}; running {:?}",
                self.running()
            );
            let _ = timeout(left, changed.changed()).await;
        }
        t0.elapsed()
    }

    /// `method` `path` of node `i`'s JSON API (HTTP/1.0, no body): the JSON answer.
    pub async fn request(&self, i: usize, method: &str, path: &str) -> Value {
        let addr = ("127.0.0.1", self.nodes[i].port);
        let mut s = timeout(SETTLE, tokio::net::TcpStream::connect(addr))
            .await
            .expect("connects in time")
            .expect("connects");
        let req =
            format!("{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n");
        s.write_all(req.as_bytes()).await.expect("request sent");
        let mut text = String::new();
        timeout(SETTLE, s.read_to_string(&mut text))
            .await
            .expect("answer in time")
            .expect("answer read");
        let body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
        serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
    }

    /// The process that leads now, asked of a live node.
    pub async fn leader(&self) -> usize {
        let asker = self
            .nodes
            .iter()
            .position(|n| n.alive)
            .expect("a live node");
        let status = self.request(asker, "GET", "/instances").await;
        let leader = status["leader"].as_str().unwrap_or_default();
        self.nodes
            .iter()
            .position(|n| n.alive && n.id == leader)
            .unwrap_or_else(|| panic!("no live node is the leader: {status}"))
    }

    /// SIGKILL by PID, and reap.
    pub async fn kill(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        node.child.start_kill().expect("SIGKILL");
        let _ = timeout(SETTLE, node.child.wait()).await.expect("exits");
        node.alive = false;
    }

    /// SIGTERM every live node (by PID) and wait for its exit.
    pub async fn stop_all(&mut self) {
        for node in self.nodes.iter_mut().filter(|n| n.alive) {
            let pid = node.child.id().expect("running").to_string();
            let status = std::process::Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .expect("kill runs");
            assert!(status.success());
            let exit = timeout(SETTLE, node.child.wait())
                .await
                .expect("exits in time")
                .expect("exit status");
            assert!(exit.success(), "{} exited with {exit:?}", node.name);
            node.alive = false;
        }
    }

    /// The leader each live process follows now (node id, or `none`), from its lines.
    pub fn leaders(&self) -> BTreeMap<usize, String> {
        let mut out = BTreeMap::new();
        for l in self.log.lines() {
            if l.kind == Kind::Leader && self.nodes[l.process].alive {
                out.insert(l.process, l.config);
            }
        }
        out
    }

    /// The process whose node id is `id`.
    pub fn process_of(&self, id: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.id == id)
    }

    pub fn starts_after(&self, index: usize) -> Vec<Line> {
        self.log.lines()[index..]
            .iter()
            .filter(|l| l.kind == Kind::Start)
            .cloned()
            .collect()
    }

    /// No configuration ran on two processes at one moment: per process, a configuration runs
    /// from its `start` to its `stop` (a killed process: to its last tick); the runs of one
    /// configuration on different processes must not meet. Returns how many ticks were seen.
    pub fn assert_no_overlap(&self) -> usize {
        let lines = self.log.lines();
        // (config, process) → runs [from, to]
        let mut runs: BTreeMap<String, Vec<(usize, u128, u128)>> = BTreeMap::new();
        let mut open: BTreeMap<(String, usize), (u128, u128)> = BTreeMap::new();
        let mut ticks = 0;
        for l in &lines {
            let key = (l.config.clone(), l.process);
            match l.kind {
                Kind::Start => {
                    assert!(
                        open.insert(key, (l.ms, l.ms)).is_none(),
                        "started twice: {l:?}"
                    );
                }
                Kind::Tick => {
                    ticks += 1;
                    let run = open
                        .get_mut(&key)
                        .unwrap_or_else(|| panic!("a tick outside a run: {l:?}"));
                    run.1 = run.1.max(l.ms);
                }
                Kind::Leader => {}
                Kind::Stop => {
                    let (from, to) = open
                        .remove(&key)
                        .unwrap_or_else(|| panic!("a stop without a start: {l:?}"));
                    runs.entry(l.config.clone())
                        .or_default()
                        .push((l.process, from, to.max(l.ms)));
                }
            }
        }
        for ((config, process), (from, to)) in open {
            runs.entry(config).or_default().push((process, from, to));
        }
        for (config, mut list) in runs {
            list.sort_by_key(|r| r.1);
            for pair in list.windows(2) {
                let ((pa, _, a_to), (pb, b_from, _)) = (pair[0], pair[1]);
                if pa != pb {
                    assert!(
                        b_from > a_to,
                        "config {config} ran on process {pa} until {a_to} and on {pb} from {b_from}"
                    );
                }
            }
        }
        ticks
    }
}
