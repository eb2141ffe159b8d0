//! The gateway demo survives what its users do to it (issue #21): the real launcher
//! (`gateway-example` with no subcommand, on free loopback ports) and its three real child
//! processes. Replicas are killed with SIGKILL by the PIDs the launcher prints; the launcher must
//! report each death, the gateway must fail over with no failed read, answer 503 with no replica
//! left, serve restarted replicas again (restarted by `r` + Enter on the launcher's stdin, or by
//! `--restart`), and SIGINT / SIGTERM / SIGKILL of the launcher must leave no child behind.
//! The replicas share one SQLite file in a directory the launcher creates (and removes when it
//! stops): a todo outlives the replica that created it.
//!
//! The launcher binary is built by `cargo build -p gateway-example` (a no-op when it is fresh),
//! since a test of this crate cannot depend on another crate's binary.

mod fd;
/// The private PostgreSQL server of the SQL adapter's tests.
#[allow(dead_code)]
#[path = "../../sql/tests/common/postgres.rs"]
mod postgres;
/// The Prometheus text format reader of core's tests.
#[path = "../../core/tests/support/prometheus.rs"]
mod prometheus;

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use fd::{Response, http, within};
use plume_tests::child::without_plume_env;
use plume_tests::servers::free_port;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::watch;
use tokio::time::timeout;

/// How long the demo may take to start (three processes, the mesh, a login and finds).
const START: Duration = Duration::from_secs(60);
/// How long one expected line of the launcher may take.
const LINE: Duration = Duration::from_secs(20);
/// With every replica gone, the gateway answers 503 within this.
const UNAVAILABLE_WITHIN: Duration = Duration::from_secs(2);

/// The `gateway-example` binary, built once per test process.
fn launcher_bin() -> &'static PathBuf {
    plume_tests::cargo_bin::gateway_example()
}

/// How dead children come back.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Restart {
    /// `r` + Enter on the launcher's stdin (a pipe).
    Key,
    /// `--restart`, with stdin at `/dev/null` (end of input at once).
    Auto,
}

/// The launcher: its stdout read line by line (every line kept), its children's PIDs from its
/// `started <name> (pid N) on <url>` lines. Killed (SIGKILL) if the test fails midway.
struct Launcher {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Lines<BufReader<ChildStdout>>,
    seen: Vec<String>,
    /// Every child started: (name, pid), in order.
    started: Vec<(String, u32)>,
    port: u16,
    todos_ports: [u16; 2],
}

impl Launcher {
    async fn start(restart: Restart) -> Launcher {
        Launcher::start_with(restart, &[], &[]).await
    }

    /// With `env` set on the launcher (and so on its children), and these extra arguments.
    async fn start_with(restart: Restart, env: &[(&str, String)], args: &[&str]) -> Launcher {
        let (port, todos_ports) = (free_port(), [free_port(), free_port()]);
        let mut cmd = Command::new(launcher_bin());
        cmd.args(["--port", &port.to_string(), "--todos-ports"])
            .arg(format!("{},{}", todos_ports[0], todos_ports[1]))
            .args(args)
            .stdout(Stdio::piped())
            .kill_on_drop(true);
        match restart {
            Restart::Key => cmd.stdin(Stdio::piped()),
            Restart::Auto => cmd.arg("--restart").stdin(Stdio::null()),
        };
        // The demo picks a mesh secret of its own; nothing of the test's environment leaks in.
        without_plume_env(&mut cmd);
        cmd.envs(env.iter().map(|(k, v)| (k, v)));
        let mut child = cmd.spawn().expect("the launcher starts");
        let stdin = child.stdin.take();
        let lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let mut launcher = Launcher {
            child,
            stdin,
            lines,
            seen: Vec::new(),
            started: Vec::new(),
            port,
            todos_ports,
        };
        let ready = format!("gateway ready on http://127.0.0.1:{port}");
        launcher.wait_line(0, START, |l| l == ready).await;
        for name in ["todos-a", "todos-b", "gateway"] {
            launcher.pid(name);
        }
        launcher
    }

    /// The first line from `seen[from..]` on that matches, reading more (within `deadline`).
    async fn wait_line(
        &mut self,
        from: usize,
        deadline: Duration,
        matches: impl Fn(&str) -> bool,
    ) -> String {
        if let Some(line) = self.seen.iter().skip(from).find(|l| matches(l)) {
            return line.clone();
        }
        let read = async {
            loop {
                let line = self
                    .lines
                    .next_line()
                    .await
                    .expect("launcher stdout")
                    .unwrap_or_else(|| panic!("the launcher ended; it printed {:#?}", self.seen));
                eprintln!("[launcher] {line}");
                if let Some(rest) = line.strip_prefix("started ") {
                    let (name, rest) = rest.split_once(" (pid ").expect("started NAME (pid N)");
                    let (pid, _) = rest.split_once(')').expect("(pid N)");
                    self.started
                        .push((name.to_owned(), pid.parse().expect("a pid")));
                }
                self.seen.push(line.clone());
                if matches(&line) {
                    return line;
                }
            }
        };
        match timeout(deadline, read).await {
            Ok(line) => line,
            Err(_) => panic!("no such line within {deadline:?}; seen {:#?}", self.seen),
        }
    }

    /// The PID of the latest start of `name`.
    fn pid(&self, name: &str) -> u32 {
        self.started
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, pid)| *pid)
            .unwrap_or_else(|| panic!("no pid printed for {name}: {:#?}", self.seen))
    }

    /// SIGKILL a child by the PID the launcher printed; wait for the launcher's report of it
    /// and return the restart command it printed.
    async fn kill_child(&mut self, name: &str) -> String {
        let pid = self.pid(name);
        let mark = self.seen.len();
        signal(pid, "-KILL");
        let prefix = format!("{name} (pid {pid}) died: signal 9; restart it with: ");
        let line = self.wait_line(mark, LINE, |l| l.starts_with(&prefix)).await;
        line[prefix.len()..].to_owned()
    }

    /// The shared SQLite file the launcher said it made, in a directory of its own.
    fn data_file(&self) -> String {
        let line = self
            .seen
            .iter()
            .find_map(|l| l.strip_prefix("todos in "))
            .and_then(|rest| rest.strip_suffix(" (removed when the demo stops), shared"))
            .unwrap_or_else(|| panic!("no data file printed: {:#?}", self.seen));
        line.to_owned()
    }

    fn running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }
}

/// Send `sig` to `pid` with kill(1).
fn signal(pid: u32, sig: &str) {
    let status = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill {sig} {pid}");
}

/// Send `sig` to the process group `pgid` with kill(1).
fn signal_group(pgid: u32, sig: &str) {
    let status = std::process::Command::new("kill")
        .args([sig, "--", &format!("-{pgid}")])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill {sig} -{pgid}");
}

/// Whether `pid` is a live process (a zombie has exited: not alive).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
    })
}

/// Log in as the demo user through the gateway; the access token.
async fn login(port: u16) -> String {
    let body = json!({"strategy": "local", "email": "demo@plume.local", "password": "plume-demo"});
    let res = http(port, "POST", "/authentication", Some(&body), &[]).await;
    assert_eq!(res.status, 201, "{:?}", res.body);
    res.body["accessToken"]
        .as_str()
        .expect("accessToken")
        .to_owned()
}

/// How many replicas of `todos` the gateway's healthcheck lists.
async fn todos_replicas(port: u16) -> usize {
    let res = http(
        port,
        "GET",
        "/distribution/healthcheck?verbose=true",
        None,
        &[],
    )
    .await;
    let map = if res.status == 200 {
        &res.body
    } else {
        &res.body["data"]
    };
    map["todos"]["replicas"]
        .as_array()
        .unwrap_or_else(|| panic!("a healthcheck with todos: {res:?}"))
        .len()
}

/// Wait until the healthcheck lists `n` replicas of `todos`.
async fn wait_replicas(port: u16, n: usize) {
    within(&format!("{n} todos replicas"), async {
        while todos_replicas(port).await != n {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

/// Wait until a `find` through the gateway is answered by `replica`; every answer is a 200.
async fn wait_answer_from(port: u16, token: &str, replica: &str) {
    within(&format!("an answer from {replica}"), async {
        loop {
            let page = get(port, "/todos", token).await;
            assert_eq!(page.status, 200, "{page:?}");
            if page.body["replica"] == replica {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

/// A printed restart command run by hand with `sh -c`, in a process group of its own (stopped
/// by signalling the group), without the test's `PLUME_*` variables.
struct ByHand {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl ByHand {
    /// Start it and wait for its `listening on` line.
    async fn start(command: &str) -> ByHand {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", command])
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .kill_on_drop(true);
        without_plume_env(&mut cmd);
        let mut child = cmd.spawn().expect("sh starts");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let line = within("the command's listening line", lines.next_line())
            .await
            .expect("stdout")
            .unwrap_or_else(|| panic!("{command} ended at once"));
        assert!(line.contains(" listening on "), "{line}");
        ByHand { child, lines }
    }

    /// SIGTERM to its group; wait for `sh` to exit and for every process of it to close stdout.
    async fn stop(mut self) {
        let group = self.child.id().expect("running");
        signal_group(group, "-TERM");
        within("sh exits", self.child.wait()).await.expect("status");
        while within("the command's output ends", self.lines.next_line())
            .await
            .expect("stdout")
            .is_some()
        {}
    }
}

async fn get(port: u16, path: &str, token: &str) -> Response {
    let auth = format!("Bearer {token}");
    http(port, "GET", path, None, &[("Authorization", &auth)]).await
}

/// Reads (find, and get of todos-b's welcome todo) through the gateway in a loop, until stopped:
/// every failure is recorded. Every read is a 200 (the replicas share one store); once `a_dead`
/// is set, every find must be answered by todos-b.
struct Reader {
    stop: Arc<AtomicBool>,
    a_dead: Arc<AtomicBool>,
    done: watch::Receiver<usize>,
    task: tokio::task::JoinHandle<Vec<String>>,
}

impl Reader {
    fn start(port: u16, token: String) -> Reader {
        let (stop, a_dead) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicBool::new(false)),
        );
        let (tx, done) = watch::channel(0);
        let task = tokio::spawn({
            let (stop, a_dead) = (stop.clone(), a_dead.clone());
            async move {
                let mut failures = Vec::new();
                // Bounded: the test stops it long before.
                for n in 1..=20_000 {
                    if stop.load(Ordering::Acquire) {
                        break;
                    }
                    let only_b = a_dead.load(Ordering::Acquire);
                    let find = get(port, "/todos", &token).await;
                    let replica = find.body["replica"].as_str().unwrap_or_default();
                    if find.status != 200 || (only_b && replica != "todos-b") {
                        failures.push(format!("find (a dead: {only_b}): {find:?}"));
                    }
                    let one = get(port, "/todos/todos-b-1", &token).await;
                    if one.status != 200 {
                        failures.push(format!("get (a dead: {only_b}): {one:?}"));
                    }
                    tx.send_replace(n);
                }
                failures
            }
        });
        Reader {
            stop,
            a_dead,
            done,
            task,
        }
    }

    /// Wait until it has done `n` more rounds.
    async fn rounds(&mut self, n: usize) {
        let target = *self.done.borrow() + n;
        within(
            "reads through the gateway",
            self.done.wait_for(|d| *d >= target),
        )
        .await
        .expect("the reader runs");
    }

    async fn finish(self) -> Vec<String> {
        self.stop.store(true, Ordering::Release);
        within("the reader stops", self.task).await.expect("join")
    }
}

/// Stop the launcher with `sig`: it exits cleanly, every child it ever started is gone, and so
/// is its temporary data directory.
async fn stop(demo: Launcher, sig: &str) {
    let data_file = PathBuf::from(demo.data_file());
    assert!(data_file.is_file(), "{data_file:?} while the demo runs");
    stop_launcher(demo, sig).await;
    let dir = data_file.parent().expect("a directory");
    assert!(!dir.exists(), "{dir:?} is left behind");
}

/// Stop the launcher with `sig`: it exits cleanly, and every child it ever started is gone.
async fn stop_launcher(mut demo: Launcher, sig: &str) {
    signal(demo.child.id().expect("running"), sig);
    let status = within("the launcher stops", demo.child.wait())
        .await
        .expect("exit status");
    assert!(status.success(), "{status:?}");
    demo.wait_line(0, LINE, |l| l == "demo stopped").await;
    let left: Vec<_> = demo.started.iter().filter(|(_, pid)| alive(*pid)).collect();
    assert!(left.is_empty(), "still running: {left:?}");
}

/// The shared store: a todo created through the gateway is still there, through the other
/// replica, once the replica that created it is killed with SIGKILL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_todo_outlives_the_replica_that_created_it() {
    let mut demo = Launcher::start(Restart::Key).await;
    outlives_its_replica(&mut demo).await;
    stop(demo, "-TERM").await;
}

/// The same over PostgreSQL (a private server), chosen by `PLUME_DATABASE_URL`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_postgresql_a_todo_outlives_the_replica_that_created_it() {
    let pg = tokio::task::spawn_blocking(postgres::PgServer::start)
        .await
        .expect("join")
        .expect("a private PostgreSQL server starts");
    let url = pg.url();
    let mut demo =
        Launcher::start_with(Restart::Key, &[("PLUME_DATABASE_URL", url.clone())], &[]).await;
    let said = "todos in the database of --database-url / PLUME_DATABASE_URL, shared";
    demo.wait_line(0, LINE, |l| l == said).await;
    let command = outlives_its_replica(&mut demo).await;
    assert!(
        command.contains(&format!("PLUME_DATABASE_URL={url} ")),
        "{command}"
    );
    signal(demo.child.id().expect("running"), "-TERM");
    within("the launcher stops", demo.child.wait())
        .await
        .expect("exit status");
    drop(pg);
}

/// `--store memory`: each replica its own todos, so the one left does not have the killed one's
/// welcome todo; the printed command passes `--store memory` on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_store_memory_each_replica_keeps_its_own_todos() {
    let mut demo = Launcher::start_with(Restart::Key, &[], &["--store", "memory"]).await;
    let said = "todos in memory: each replica has its own, lost when it stops";
    demo.wait_line(0, LINE, |l| l == said).await;
    let token = login(demo.port).await;
    let command = demo.kill_child("todos-a").await;
    let a_port = demo.todos_ports[0];
    let tail = format!(" todos --name todos-a --port {a_port} --store memory");
    assert!(command.ends_with(&tail), "{command}");
    assert!(!command.contains("PLUME_DATABASE_URL"), "{command}");
    wait_replicas(demo.port, 1).await;
    let gone = get(demo.port, "/todos/todos-a-1", &token).await;
    assert_eq!(gone.status, 404, "{gone:?}");
    let mine = get(demo.port, "/todos/todos-b-1", &token).await;
    assert_eq!(mine.status, 200, "{mine:?}");
    stop_launcher(demo, "-TERM").await;
}

/// `--data-dir`: the SQLite file is made there (the directory too) and kept when the demo stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_data_dir_the_sqlite_file_is_kept() {
    let parent = tempfile::tempdir().expect("a temporary directory");
    let dir = parent.path().join("data");
    let dir_arg = dir.to_str().expect("a UTF-8 path");
    let demo = Launcher::start_with(Restart::Key, &[], &["--data-dir", dir_arg]).await;
    let file = dir.join("todos.db");
    let said = format!("todos in {} (kept), shared", file.display());
    assert!(demo.seen.contains(&said), "{:#?}", demo.seen);
    stop_launcher(demo, "-TERM").await;
    assert!(file.is_file(), "{file:?} is kept");
}

/// Create a todo through the gateway, SIGKILL the replica that created it, and find it through
/// the other one; the command the launcher printed to restart the killed replica.
async fn outlives_its_replica(demo: &mut Launcher) -> String {
    let (port, token) = (demo.port, login(demo.port).await);
    let auth = format!("Bearer {token}");
    let body = json!({"text": "outlive my replica"});
    let created = http(
        port,
        "POST",
        "/todos",
        Some(&body),
        &[("Authorization", &auth)],
    )
    .await;
    assert_eq!(created.status, 201, "{created:?}");
    let creator = created.body["replica"]
        .as_str()
        .expect("replica")
        .to_owned();
    let other = if creator == "todos-a" {
        "todos-b"
    } else {
        "todos-a"
    };
    let path = format!("/todos/{}", created.body["id"].as_str().expect("an id"));

    let command = demo.kill_child(&creator).await;
    wait_replicas(port, 1).await;
    let got = get(port, &path, &token).await;
    assert_eq!(got.status, 200, "{got:?}");
    assert_eq!(
        (
            &got.body["text"],
            &got.body["replica"],
            &got.body["answeredBy"]
        ),
        (&body["text"], &json!(creator), &json!(other)),
        "{got:?}"
    );
    let page = get(port, "/todos", &token).await;
    assert_eq!(page.body["replica"], other, "{page:?}");
    let listed = page.body["data"].as_array().expect("a page");
    assert!(listed.iter().any(|t| t["text"] == body["text"]), "{page:?}");
    command
}

/// The whole scenario, restarted by a key press: start, fail over under reads, lose every
/// replica (503), `r` + Enter brings both back, SIGINT stops everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_replicas_fail_over_and_r_enter_restarts_them() {
    let mut demo = Launcher::start(Restart::Key).await;
    let port = demo.port;
    let token = login(port).await;
    let page = get(port, "/todos", &token).await;
    assert_eq!(page.status, 200, "{page:?}");

    // One replica killed under reads: the other answers them all.
    let mut reader = Reader::start(port, token.clone());
    reader.rounds(10).await;
    let command = demo.kill_child("todos-a").await;
    reader.a_dead.store(true, Ordering::Release);
    reader.rounds(30).await;
    let failures = reader.finish().await;
    assert!(failures.is_empty(), "failed reads: {failures:#?}");
    let a_port = demo.todos_ports[0];
    assert!(
        command.contains("PLUME_MESH_SECRET=")
            && command.contains(&format!("PLUME_DATABASE_URL={} ", demo.data_file()))
            && command.ends_with(&format!(" todos --name todos-a --port {a_port}")),
        "{command}"
    );
    assert!(demo.running(), "the launcher goes on");
    for name in ["gateway", "todos-b"] {
        assert!(alive(demo.pid(name)), "{name} goes on");
    }

    // The printed command, run by hand, brings todos-a back into the demo's mesh; stopped
    // again (SIGTERM), it leaves.
    let by_hand = ByHand::start(&command).await;
    wait_answer_from(port, &token, "todos-a").await;
    by_hand.stop().await;
    wait_replicas(port, 1).await;

    // Every replica gone: the gateway answers a clean 503 at once (a call that arrives before
    // the proxy hears of the loss fails as soon as the mesh finds no live link), its
    // healthcheck soon lists no replica, and the demo keeps running.
    demo.kill_child("todos-b").await;
    for path in ["/todos", "/todos/todos-b-1"] {
        let res = timeout(UNAVAILABLE_WITHIN, get(port, path, &token))
            .await
            .unwrap_or_else(|_| panic!("GET {path}: no answer within {UNAVAILABLE_WITHIN:?}"));
        assert_eq!(res.status, 503, "{res:?}");
        assert_eq!(res.body["name"], "Unavailable", "{res:?}");
    }
    timeout(UNAVAILABLE_WITHIN, wait_replicas(port, 0))
        .await
        .unwrap_or_else(|_| panic!("the healthcheck still lists todos replicas"));
    assert!(demo.running(), "the launcher goes on");
    assert!(alive(demo.pid("gateway")), "the gateway goes on");

    // r + Enter: both come back, and the gateway serves them again at once.
    let mark = demo.seen.len();
    let dead = (demo.pid("todos-a"), demo.pid("todos-b"));
    let stdin = demo.stdin.as_mut().expect("a pipe");
    stdin.write_all(b"r\n").await.expect("r + Enter");
    stdin.flush().await.expect("flush");
    for name in ["todos-a", "todos-b"] {
        let again = format!("gateway serves {name} again");
        demo.wait_line(mark, LINE, |l| l == again).await;
    }
    assert_ne!((demo.pid("todos-a"), demo.pid("todos-b")), dead);
    let page = get(port, "/todos", &token).await;
    assert_eq!(page.status, 200, "{page:?}");

    stop(demo, "-INT").await;
}

/// `--restart`, with no standard input (end of input at once, as in CI): each killed replica is
/// started again after the pause and served again; SIGTERM stops everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_restart_killed_replicas_come_back_on_their_own() {
    let mut demo = Launcher::start(Restart::Auto).await;
    let token = login(demo.port).await;
    for name in ["todos-a", "todos-b", "gateway"] {
        let old = demo.pid(name);
        let mark = demo.seen.len();
        demo.kill_child(name).await;
        let pause = format!("restarting {name} in 2s");
        demo.wait_line(mark, LINE, |l| l == pause).await;
        let again = if name == "gateway" {
            "gateway serves todos again".to_owned()
        } else {
            format!("gateway serves {name} again")
        };
        demo.wait_line(mark, LINE, |l| l == again).await;
        assert_ne!(demo.pid(name), old, "{name} runs again");
        // The JWT secret survives a restart of the gateway: the token is still good.
        let page = get(demo.port, "/todos", &token).await;
        assert_eq!(page.status, 200, "{page:?}");
    }
    assert!(demo.running(), "the launcher goes on");
    stop(demo, "-TERM").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_launcher_killed_by_sigkill_leaves_no_child_behind() {
    let mut demo = Launcher::start(Restart::Key).await;
    let children: Vec<u32> = demo.started.iter().map(|(_, pid)| *pid).collect();
    let data_file = PathBuf::from(demo.data_file());
    signal(demo.child.id().expect("running"), "-KILL");
    within("the launcher dies", demo.child.wait())
        .await
        .expect("exit status");
    // Its children see their stdin close and stop on their own: wait for that (bounded).
    within("the children stop", async {
        while children.iter().any(|pid| alive(*pid)) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    // Killed, it could not remove its data directory: the test does.
    let dir = data_file.parent().expect("a directory");
    std::fs::remove_dir_all(dir).expect("the data directory is there");
}

/// `GET /metrics` of the process on `port`, parsed.
async fn scrape(port: u16) -> Vec<prometheus::Sample> {
    use http_body_util::{BodyExt, Empty};
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<axum::body::Bytes>>();
    let uri = format!("http://127.0.0.1:{port}/metrics");
    let response = within("a scrape", client.get(uri.parse().expect("a uri")))
        .await
        .expect("an answer");
    assert_eq!(response.status(), 200);
    let body = within("the scrape's body", response.into_body().collect())
        .await
        .expect("a body")
        .to_bytes();
    prometheus::parse(std::str::from_utf8(&body).expect("text"))
}

/// The change of one series between two scrapes (a series not there yet counts as 0).
fn delta(
    before: &[prometheus::Sample],
    after: &[prometheus::Sample],
    name: &str,
    labels: &[(&str, &str)],
) -> f64 {
    let at = |s| prometheus::value(s, name, labels).unwrap_or(0.0);
    at(after) - at(before)
}

fn rest_calls<'a>(method: &'a str, outcome: &'a str) -> [(&'a str, &'a str); 4] {
    [
        ("path", "todos"),
        ("method", method),
        ("provider", "rest"),
        ("outcome", outcome),
    ]
}

/// Issue #19: after a known series of calls through the demo's gateway — reads, errors, a
/// failed login, an unknown path and a read retried across a replica's SIGKILL — the counters
/// and histogram counts the gateway and a replica serve at `GET /metrics` changed by exactly
/// what was done (calls per peer key and bytes on the mesh included).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_the_calls_made_through_the_gateway() {
    let mut demo = Launcher::start_with(Restart::Key, &[], &["--store", "memory"]).await;
    let port = demo.port;
    let b_port = demo.todos_ports[1];
    let token = login(port).await;
    let gateway_0 = scrape(port).await;
    let b_0 = scrape(b_port).await;

    for _ in 0..4 {
        assert_eq!(get(port, "/todos", &token).await.status, 200);
    }
    assert_eq!(get(port, "/todos/no-such-todo", &token).await.status, 404);
    assert_eq!(http(port, "GET", "/todos", None, &[]).await.status, 401);
    assert_eq!(get(port, "/no/such/path", &token).await.status, 404);
    let wrong = json!({"strategy": "local", "email": "demo@plume.local", "password": "wrong"});
    let res = http(port, "POST", "/authentication", Some(&wrong), &[]).await;
    assert_eq!(res.status, 401, "{res:?}");

    // A read held by a frozen replica (SIGSTOP) when it is killed: the gateway retries it on
    // the other one. Reads go round robin: the ones todos-b answers at once are counted too.
    let a_pid = demo.pid("todos-a");
    signal(a_pid, "-STOP");
    let mut answered_at_once = 0.0;
    // The wait yields the held read's task, to be awaited after the kill.
    #[allow(clippy::async_yields_async)]
    let held = within("a read held by the frozen replica", async {
        loop {
            let read = tokio::spawn({
                let token = token.clone();
                async move { get(port, "/todos", &token).await }
            });
            let in_flight = [("path", "todos"), ("method", "find")];
            loop {
                if read.is_finished() {
                    break;
                }
                let now = scrape(port).await;
                if prometheus::value(&now, "plume_calls_in_flight", &in_flight) == Some(1.0) {
                    // In flight at the gateway, and not at todos-b (a read that todos-b is slow
                    // to answer on a loaded machine is not the held one): todos-b's count is
                    // read after the gateway's, and the gateway's again after it, so a read
                    // still on its way to todos-b would have to stay in transit across both.
                    let at_b = scrape(b_port).await;
                    let busy_b = prometheus::value(&at_b, "plume_calls_in_flight", &in_flight);
                    let again = scrape(port).await;
                    if busy_b.unwrap_or(0.0) == 0.0
                        && !read.is_finished()
                        && prometheus::value(&again, "plume_calls_in_flight", &in_flight)
                            == Some(1.0)
                    {
                        return read;
                    }
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            assert_eq!(read.await.expect("joins").status, 200);
            answered_at_once += 1.0;
        }
    })
    .await;
    demo.kill_child("todos-a").await;
    let retried = within("the held read", held).await.expect("joins");
    assert_eq!(retried.status, 200, "{retried:?}");
    assert_eq!(retried.body["replica"], "todos-b", "{retried:?}");
    // Three more reads, all answered by todos-b.
    for _ in 0..3 {
        assert_eq!(get(port, "/todos", &token).await.status, 200);
    }

    let gateway_1 = scrape(port).await;
    let b_1 = scrape(b_port).await;
    let finds_ok = 4.0 + answered_at_once + 1.0 + 3.0;
    let d = |labels: &[(&str, &str)], name: &str| delta(&gateway_0, &gateway_1, name, labels);
    assert_eq!(d(&rest_calls("find", "ok"), "plume_calls_total"), finds_ok);
    assert_eq!(d(&rest_calls("get", "404"), "plume_calls_total"), 1.0);
    assert_eq!(d(&rest_calls("find", "401"), "plume_calls_total"), 1.0);
    let unknown = [("path", "other"), ("method", "other"), ("provider", "rest")];
    assert_eq!(
        d(
            &[unknown.as_slice(), &[("outcome", "404")]].concat(),
            "plume_calls_total"
        ),
        1.0
    );
    let find = [("path", "todos"), ("method", "find")];
    assert_eq!(
        d(&find, "plume_call_duration_seconds_count"),
        finds_ok + 1.0
    );
    assert_eq!(
        d(
            &[("path", "todos"), ("method", "get")],
            "plume_call_duration_seconds_count"
        ),
        1.0
    );
    assert_eq!(d(&[("outcome", "401")], "plume_logins_total"), 1.0);
    assert_eq!(d(&[("outcome", "ok")], "plume_logins_total"), 0.0);
    // The mesh: every proxied call that reached a provider, the one lost with todos-a and its
    // retry, and todos-a's endpoints gone with it.
    assert_eq!(d(&[("outcome", "lost")], "plume_mesh_calls_total"), 1.0);
    assert_eq!(d(&[], "plume_mesh_retries_total"), 1.0);
    assert_eq!(
        d(&[("outcome", "ok")], "plume_mesh_calls_total"),
        finds_ok + 1.0
    );
    assert!(
        d(
            &[("reason", "node_lost")],
            "plume_mesh_discovery_losses_total"
        ) >= 1.0
    );
    assert_eq!(
        prometheus::value(&gateway_1, "plume_mesh_links_up", &[]),
        Some(1.0)
    );
    // Every attempt sent to a provider counts once by its replica-group key, whatever its
    // outcome: as many as the mesh calls of every outcome.
    let attempts: f64 = plume_transport::metrics::OUTCOMES
        .iter()
        .map(|o| d(&[("outcome", o)], "plume_mesh_calls_total"))
        .sum();
    assert_eq!(
        d(&[("peer_key", "todos")], "plume_mesh_peer_calls_total"),
        attempts
    );
    assert!(attempts >= finds_ok + 2.0, "{attempts}");
    // The bytes of those calls went out and their answers came back.
    assert!(d(&[], "plume_mesh_bytes_sent_total") > 0.0);
    assert!(d(&[], "plume_mesh_bytes_received_total") > 0.0);
    assert!(delta(&b_0, &b_1, "plume_mesh_bytes_received_total", &[]) > 0.0);
    // todos-b served its share over the mesh: at least the retried read and the last three.
    let b_finds = [
        ("path", "todos"),
        ("method", "find"),
        ("provider", "mesh"),
        ("outcome", "ok"),
    ];
    let served_by_b = delta(&b_0, &b_1, "plume_calls_total", &b_finds);
    assert!(
        (4.0..=finds_ok).contains(&served_by_b),
        "todos-b served {served_by_b} of {finds_ok}"
    );
    assert!(prometheus::value(&b_1, "process_resident_memory_bytes", &[]).is_some_and(|b| b > 1e6));

    stop_launcher(demo, "-INT").await;
}
