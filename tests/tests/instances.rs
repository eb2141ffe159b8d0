//! The distributed instance manager, multi-process: real `gateway-example workers` nodes on
//! the loopback mesh, each printing `start`/`tick`/`stop CFG NAME UNIX_MS` lines for the
//! instances it runs. The test reads every line of every node and checks, from the timestamps,
//! that no configuration ever ran on two nodes at the same moment.
//!
//! Each test runs in a mesh environment (`PLUME_ENV`) of its own.

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
const SETTLE: Duration = Duration::from_secs(20);
/// The target: a SIGKILLed node's instances run again elsewhere within this.
const FAILOVER: Duration = Duration::from_secs(5);
const CONFIGS: usize = 7;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Start,
    Tick,
    Stop,
}

/// One line of one node process.
#[derive(Debug, Clone)]
struct Line {
    kind: Kind,
    config: String,
    process: usize,
    ms: u128,
}

/// Every line of every node, and a counter that moves with each.
#[derive(Clone)]
struct Log {
    lines: Arc<Mutex<Vec<Line>>>,
    changed: watch::Sender<u64>,
}

impl Log {
    fn new() -> Log {
        Log {
            lines: Arc::default(),
            changed: watch::Sender::new(0),
        }
    }

    fn lines(&self) -> Vec<Line> {
        self.lines
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn push(&self, line: Line) {
        self.lines
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(line);
        self.changed.send_modify(|n| *n += 1);
    }
}

/// One `workers` node, killed (SIGKILL, by PID) when dropped.
struct Node {
    name: String,
    process: usize,
    port: u16,
    id: String,
    child: Child,
    alive: bool,
}

fn parse(text: &str, process: usize) -> Option<Line> {
    let mut words = text.split_whitespace();
    let kind = match words.next()? {
        "start" => Kind::Start,
        "tick" => Kind::Tick,
        "stop" => Kind::Stop,
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

struct Cluster {
    env: String,
    log: Log,
    nodes: Vec<Node>,
}

impl Cluster {
    fn new() -> Cluster {
        Cluster {
            env: format!("instances-{}", uuid::Uuid::new_v4().simple()),
            log: Log::new(),
            nodes: Vec::new(),
        }
    }

    async fn start(&mut self, name: &str) {
        let mut cmd = Command::new(plume_tests::cargo_bin::gateway_example());
        cmd.args(["workers", "--name", name, "--configs"])
            .arg(CONFIGS.to_string())
            .args(["--http-port", "0", "--min-members", "2"])
            .stdout(Stdio::piped())
            .stdin(Stdio::null())
            .kill_on_drop(true);
        without_plume_env(&mut cmd);
        cmd.env("PLUME_ENV", &self.env);
        let mut child = cmd.spawn().expect("gateway-example workers starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let ready = timeout(SETTLE, lines.next_line())
            .await
            .expect("the ready line in time")
            .expect("stdout readable")
            .expect("the node exited before it was ready");
        // workers NAME ready on http://127.0.0.1:PORT node ID
        let words: Vec<&str> = ready.split_whitespace().collect();
        let port = words
            .get(4)
            .and_then(|u| u.rsplit(':').next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("unexpected ready line {ready:?}"));
        let id = words.get(6).map(|s| (*s).to_owned()).unwrap_or_default();
        let process = self.nodes.len();
        let log = self.log.clone();
        tokio::spawn(async move {
            while let Ok(Some(text)) = lines.next_line().await {
                if let Some(line) = parse(&text, process) {
                    log.push(line);
                }
            }
        });
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
    fn running(&self) -> BTreeMap<String, Vec<usize>> {
        let mut open: BTreeMap<(String, usize), bool> = BTreeMap::new();
        for l in self.log.lines() {
            match l.kind {
                Kind::Start => {
                    open.insert((l.config, l.process), true);
                }
                Kind::Stop => {
                    open.remove(&(l.config, l.process));
                }
                Kind::Tick => {}
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
    fn counts(&self) -> Option<Vec<usize>> {
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
    async fn wait(&self, what: &str, limit: Duration, ok: impl Fn(&Cluster) -> bool) -> Duration {
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
    async fn request(&self, i: usize, method: &str, path: &str) -> Value {
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
    async fn leader(&self) -> usize {
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
    async fn kill(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        node.child.start_kill().expect("SIGKILL");
        let _ = timeout(SETTLE, node.child.wait()).await.expect("exits");
        node.alive = false;
    }

    /// SIGTERM every live node (by PID) and wait for its exit.
    async fn stop_all(&mut self) {
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

    fn starts_after(&self, index: usize) -> Vec<Line> {
        self.log.lines()[index..]
            .iter()
            .filter(|l| l.kind == Kind::Start)
            .cloned()
            .collect()
    }

    /// No configuration ran on two processes at one moment: per process, a configuration runs
    /// from its `start` to its `stop` (a killed process: to its last tick); the runs of one
    /// configuration on different processes must not meet. Returns how many ticks were seen.
    fn assert_no_overlap(&self) -> usize {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_seven_configs_failover_return_health_and_no_overlap() {
    let mut c = Cluster::new();
    for name in ["a", "b", "c"] {
        c.start(name).await;
    }
    c.wait("3/2/2", SETTLE, |c| c.counts() == Some(vec![3, 2, 2]))
        .await;

    // SIGKILL the leader: all seven run on the other two, 4/3, within the target.
    let leader = c.leader().await;
    c.kill(leader).await;
    let took = c
        .wait("4/3 after the leader was killed", FAILOVER, |c| {
            c.counts() == Some(vec![4, 3])
        })
        .await;
    eprintln!("failover after SIGKILL of the leader: {took:?}");

    // A node comes back: 3/2/2 again, by the fewest moves (two configurations, both to it).
    let mark = c.log.lines().len();
    c.start("d").await;
    c.wait("3/2/2 with d", SETTLE, |c| {
        c.counts() == Some(vec![3, 2, 2])
    })
    .await;
    let moved = c.starts_after(mark);
    assert_eq!(moved.len(), 2, "{moved:?}");
    assert!(moved.iter().all(|l| l.process == 3), "{moved:?}");

    // The killed leader still counts as a member (it may come back) until the leader forgets
    // it; only then can the set of three lose another node.
    let leader = c.leader().await;
    let t0 = Instant::now();
    loop {
        let members = c.request(leader, "GET", "/instances").await["members"]
            .as_array()
            .map(Vec::len);
        if members == Some(3) {
            break;
        }
        assert!(t0.elapsed() < SETTLE, "the lost member is never forgotten");
        // Forgetting is a timer on the leader (10 s): ask again shortly, bounded above.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A follower dies: only its configurations start again, elsewhere.
    let victim = (0..c.nodes.len())
        .find(|i| c.nodes[*i].alive && *i != leader)
        .expect("a follower");
    let theirs: Vec<String> = c
        .running()
        .into_iter()
        .filter(|(_, p)| p == &[victim])
        .map(|(cfg, _)| cfg)
        .collect();
    let mark = c.log.lines().len();
    c.kill(victim).await;
    c.wait("4/3 after a follower was killed", FAILOVER, |c| {
        c.counts() == Some(vec![4, 3])
    })
    .await;
    let mut started: Vec<String> = c.starts_after(mark).into_iter().map(|l| l.config).collect();
    started.sort();
    assert_eq!(started, theirs);

    // An instance that fails its health check is disconnected (a stop line) and created again.
    let (config, process) = c
        .running()
        .into_iter()
        .map(|(cfg, p)| (cfg, p[0]))
        .next()
        .expect("something runs");
    let mark = c.log.lines().len();
    let answer = c
        .request(process, "POST", &format!("/instances/{config}/sick"))
        .await;
    assert_eq!(answer["running"], Value::Bool(true), "{answer}");
    c.wait("the sick instance recreated", SETTLE, |c| {
        let lines = c.log.lines();
        let of = |k| {
            lines[mark..]
                .iter()
                .filter(|l| l.kind == k && l.config == config)
                .count()
        };
        of(Kind::Stop) >= 1
            && of(Kind::Start) >= 1
            && c.running().get(&config).is_some_and(|p| p.len() == 1)
    })
    .await;

    // A clean stop disconnects every instance: each start of a live node has its stop.
    let survivors: Vec<usize> = c
        .nodes
        .iter()
        .filter(|n| n.alive)
        .map(|n| n.process)
        .collect();
    c.stop_all().await;
    let lines = c.log.lines();
    for p in survivors {
        let count = |k| {
            lines
                .iter()
                .filter(|l| l.process == p && l.kind == k)
                .count()
        };
        assert_eq!(count(Kind::Start), count(Kind::Stop), "process {p}");
    }
    let ticks = c.assert_no_overlap();
    assert!(ticks > 100, "only {ticks} ticks");
}
