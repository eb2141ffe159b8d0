//! The demo: the gateway and two todos replicas as child processes of this one, on the loopback
//! mesh.
//!
//! Children are started with `--watchdog`: they stop when their standard input reaches EOF. The
//! demo holds the write ends, so when it stops (Ctrl-C, SIGTERM) it closes them, waits a bounded
//! time and then kills any child still running by its PID; and when the demo itself dies, even by
//! SIGKILL, the operating system closes the pipes and the children stop on their own.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::time::{Instant, timeout};

use crate::gateway::{DEMO_EMAIL, DEMO_PASSWORD};
use crate::{http, say, todos};

/// How long a child may take to print its ready line.
const START_DEADLINE: Duration = Duration::from_secs(30);
/// How long the gateway may take to answer a logged-in `find` from every replica.
const READY_DEADLINE: Duration = Duration::from_secs(30);
/// The pause between two readiness probes (bounded by `READY_DEADLINE`).
const PROBE_INTERVAL: Duration = Duration::from_millis(100);
/// How long one probe request may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a child may take to stop after its stdin closed, before it is killed.
const STOP_DEADLINE: Duration = Duration::from_secs(10);

/// The replicas of the demo.
pub(crate) const REPLICAS: [&str; 2] = ["todos-a", "todos-b"];

/// One child process.
struct Proc {
    name: &'static str,
    child: Child,
    pid: u32,
    /// The write end of the child's stdin: closing it stops the child.
    stdin: Option<ChildStdin>,
    lines: Option<Lines<BufReader<ChildStdout>>>,
}

/// Run the demo until Ctrl-C or SIGTERM (or a child exits on its own, which is an error).
pub(crate) async fn run(port: u16, todos_ports: [u16; 2]) -> anyhow::Result<()> {
    let mut stop = std::pin::pin!(crate::stop_signal(false));
    let exe = std::env::current_exe().context("cannot find this executable")?;
    let jwt_secret = random_hex();
    // Keep the demo's mesh to itself (unless told otherwise), so that two demos, or a demo and
    // other Plume apps on this host, never mix: sign the mesh with a secret of its own, or, on
    // NATS (where the server, not a mesh secret, secures the traffic), use an environment of its
    // own.
    let on_nats = matches!(
        plume_transport::discovery::DiscoveryConfig::from_env().map(|c| c.mode),
        Ok(plume_transport::discovery::DiscoveryMode::Nats { .. })
    );
    let isolation = if on_nats {
        let env = std::env::var("PLUME_ENV")
            .ok()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| format!("demo-{}", &random_hex()[..12]));
        ("PLUME_ENV", env)
    } else {
        let secret = std::env::var("PLUME_MESH_SECRET")
            .ok()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(random_hex);
        ("PLUME_MESH_SECRET", secret)
    };
    let gateway_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));

    let mut procs: Vec<Proc> = Vec::new();
    let started = {
        let start = async {
            for (name, port) in REPLICAS.into_iter().zip(todos_ports) {
                let proc = spawn(
                    &exe,
                    name,
                    &["todos", "--name", name, "--port", &port.to_string()],
                    &[(isolation.0, &isolation.1)],
                )?;
                procs.push(proc);
            }
            let gateway = spawn(
                &exe,
                "gateway",
                &["gateway", "--port", &port.to_string()],
                &[
                    (isolation.0, &isolation.1),
                    ("PLUME_JWT_SECRET", &jwt_secret),
                ],
            )?;
            procs.push(gateway);
            for proc in &mut procs {
                let url = wait_listening(proc).await?;
                say(&format!(
                    "started {} (pid {}) on {url}",
                    proc.name, proc.pid
                ));
            }
            wait_ready(gateway_addr, &REPLICAS).await
        };
        tokio::select! {
            outcome = start => Some(outcome),
            () = &mut stop => None,
        }
    };
    let outcome = match started {
        None => Ok(()),
        Some(Err(err)) => Err(err),
        Some(Ok(())) => {
            say(&format!("gateway ready on http://{gateway_addr}"));
            say(&format!("log in as {DEMO_EMAIL} / {DEMO_PASSWORD}"));
            say("press Ctrl-C to stop");
            let exited = async {
                let waits = procs.iter_mut().map(|p| {
                    let name = p.name;
                    Box::pin(async move { (name, p.child.wait().await) })
                });
                futures::future::select_all(waits).await.0
            };
            tokio::select! {
                () = &mut stop => Ok(()),
                (name, status) = exited => Err(unexpected_exit(name, status)),
            }
        }
    };
    say("stopping");
    stop_all(&mut procs).await;
    say("demo stopped");
    outcome
}

fn unexpected_exit(name: &str, status: std::io::Result<ExitStatus>) -> anyhow::Error {
    match status {
        Ok(status) => anyhow::anyhow!("{name} exited unexpectedly ({status})"),
        Err(err) => anyhow::anyhow!("cannot watch {name}: {err}"),
    }
}

/// 32 random bytes in hex.
fn random_hex() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn spawn(
    exe: &Path,
    name: &'static str,
    args: &[&str],
    env: &[(&str, &str)],
) -> anyhow::Result<Proc> {
    let mut command = Command::new(exe);
    command
        .args(args)
        .arg("--watchdog")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        // Should this task be dropped without `stop_all` (a panic), the child is killed too.
        .kill_on_drop(true);
    for (key, value) in env {
        command.env(key, value);
    }
    let mut child = command
        .spawn()
        .with_context(|| format!("cannot start {name}"))?;
    let pid = child.id().context("a child that just started has a pid")?;
    let stdin = child.stdin.take();
    let lines = child.stdout.take().map(|out| BufReader::new(out).lines());
    Ok(Proc {
        name,
        child,
        pid,
        stdin,
        lines,
    })
}

/// Wait for the child's `... listening on <url>` line; then forward its later output.
async fn wait_listening(proc: &mut Proc) -> anyhow::Result<String> {
    let name = proc.name;
    let mut lines = proc
        .lines
        .take()
        .with_context(|| format!("{name} has no stdout"))?;
    let url = timeout(START_DEADLINE, async {
        loop {
            match lines.next_line().await? {
                Some(line) => match line.split_once(" listening on ") {
                    Some((_, url)) => return anyhow::Ok(url.to_owned()),
                    None => say(&format!("[{name}] {line}")),
                },
                None => bail!("{name} exited before it was ready"),
            }
        }
    })
    .await
    .with_context(|| format!("{name} was not listening within {START_DEADLINE:?}"))??;
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            say(&format!("[{name}] {line}"));
        }
    });
    Ok(url)
}

/// Wait until a logged-in `find` on `todos` through the gateway works and every replica has
/// answered one.
async fn wait_ready(gateway: SocketAddr, replicas: &[&str]) -> anyhow::Result<()> {
    let deadline = Instant::now() + READY_DEADLINE;
    let mut token: Option<String> = None;
    let mut answered = BTreeSet::new();
    loop {
        let last_error = match timeout(PROBE_TIMEOUT, probe(gateway, &mut token)).await {
            Ok(Ok(replica)) => {
                answered.insert(replica);
                None
            }
            Ok(Err(err)) => Some(format!("{err:#}")),
            Err(_) => Some(format!("no answer within {PROBE_TIMEOUT:?}")),
        };
        if replicas.iter().all(|r| answered.contains(*r)) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "the gateway did not answer a logged-in find from every replica within \
                 {READY_DEADLINE:?} (replicas that answered: {answered:?}; last error: {})",
                last_error.as_deref().unwrap_or("none")
            );
        }
        tokio::time::sleep(PROBE_INTERVAL).await;
    }
}

/// Log in (once) and `find` todos through the gateway; return the replica that answered.
async fn probe(gateway: SocketAddr, token: &mut Option<String>) -> anyhow::Result<String> {
    let access = match token {
        Some(t) => t.clone(),
        None => {
            let login =
                json!({"strategy": "local", "email": DEMO_EMAIL, "password": DEMO_PASSWORD});
            let (status, body) =
                http::request(gateway, "POST", "/authentication", None, Some(&login)).await?;
            if status != 201 {
                bail!("login answered {status}: {body}");
            }
            let access = body["accessToken"]
                .as_str()
                .context("the login result has no accessToken")?
                .to_owned();
            token.insert(access).clone()
        }
    };
    let path = format!("/{}", todos::PATH);
    let (status, body) = http::request(gateway, "GET", &path, Some(&access), None).await?;
    if status != 200 {
        bail!("find answered {status}: {body}");
    }
    match &body["replica"] {
        Value::String(replica) => Ok(replica.clone()),
        _ => bail!("the find result names no replica: {body}"),
    }
}

/// Close every child's stdin, wait for each to exit (bounded), kill the stragglers by PID.
async fn stop_all(procs: &mut [Proc]) {
    for proc in procs.iter_mut() {
        drop(proc.stdin.take());
    }
    for proc in procs.iter_mut() {
        match timeout(STOP_DEADLINE, proc.child.wait()).await {
            Ok(Ok(status)) => say(&format!(
                "{} (pid {}) stopped: {status}",
                proc.name, proc.pid
            )),
            Ok(Err(err)) => say(&format!("{} (pid {}): {err}", proc.name, proc.pid)),
            Err(_) => {
                // `Child::kill` sends SIGKILL to this PID and reaps it.
                let killed = proc.child.kill().await;
                say(&format!(
                    "{} (pid {}) did not stop within {STOP_DEADLINE:?}: killed ({killed:?})",
                    proc.name, proc.pid
                ));
            }
        }
    }
}
