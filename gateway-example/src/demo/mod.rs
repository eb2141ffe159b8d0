//! The demo: the gateway and two todos replicas as child processes of this one, on the loopback
//! mesh, kept running the way a user of a distribution demo treats them.
//!
//! A child that dies (`kill -9` on the PID the demo printed) is reported, with the command that
//! starts it again, and the others go on: the gateway fails over to the other replica, and with
//! no replica left it answers 503 Unavailable. `r` + Enter (when standard input is a terminal or
//! a pipe), or `--restart` (after a pause), starts the dead children again. Ctrl-C or SIGTERM
//! stops them all (see [`children`] for how none is left behind).
//!
//! The replicas share one store ([`Storage`]): by default a SQLite file in a temporary directory
//! the demo creates and removes when it stops, so a todo outlives the replica that created it.

mod children;
mod keys;
mod ready;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

use anyhow::Context;
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep_until};

use self::children::Proc;
use crate::StoreKind;
use crate::gateway::{DEMO_EMAIL, DEMO_PASSWORD};
use crate::say;

/// The replicas of the demo.
pub(crate) const REPLICAS: [&str; 2] = ["todos-a", "todos-b"];
/// How long `--restart` waits before it starts a dead child again.
const RESTART_PAUSE: Duration = Duration::from_secs(2);

/// The demo's command line.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    /// The gateway's HTTP port on 127.0.0.1.
    pub(crate) port: u16,
    /// The HTTP ports of todos-a and todos-b.
    pub(crate) todos_ports: [u16; 2],
    /// Restart a dead child after [`RESTART_PAUSE`].
    pub(crate) restart: bool,
    /// Where the replicas keep their todos.
    pub(crate) store: StoreKind,
    /// The directory of the shared SQLite file (else a temporary one).
    pub(crate) data_dir: Option<PathBuf>,
    /// The database the replicas share instead of the SQLite file.
    pub(crate) database_url: Option<String>,
}

/// The store of the replicas: the arguments and variables that give it to each (also in its
/// printed command), and the temporary data directory, if the demo made one.
struct Storage {
    args: Vec<&'static str>,
    env: Vec<(&'static str, String)>,
    temp: Option<tempfile::TempDir>,
}

impl Storage {
    /// Create the data directory (when needed) and say where the todos are.
    fn new(options: &Options) -> anyhow::Result<Storage> {
        let url_var = |url: String| vec![("PLUME_DATABASE_URL", url)];
        let (env, temp) = match (options.store, &options.database_url, &options.data_dir) {
            (StoreKind::Memory, _, _) => {
                say("todos in memory: each replica has its own, lost when it stops");
                let args = vec!["--store", "memory"];
                return Ok(Storage {
                    args,
                    env: Vec::new(),
                    temp: None,
                });
            }
            (StoreKind::Sql, Some(url), _) => {
                say("todos in the database of --database-url / PLUME_DATABASE_URL, shared");
                (url_var(url.clone()), None)
            }
            (StoreKind::Sql, None, Some(dir)) => {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("cannot create {}", dir.display()))?;
                let file = std::path::absolute(dir.join("todos.db"))?;
                say(&format!("todos in {} (kept), shared", file.display()));
                (url_var(file.display().to_string()), None)
            }
            (StoreKind::Sql, None, None) => {
                let temp = tempfile::Builder::new()
                    .prefix("plume-demo-")
                    .tempdir()
                    .context("cannot create a temporary directory")?;
                let file = temp.path().join("todos.db");
                say(&format!(
                    "todos in {} (removed when the demo stops), shared",
                    file.display()
                ));
                (url_var(file.display().to_string()), Some(temp))
            }
        };
        Ok(Storage {
            args: Vec::new(),
            env,
            temp,
        })
    }

    /// Remove the temporary data directory, if any.
    fn remove(self) {
        if let Some(temp) = self.temp {
            let path = temp.path().display().to_string();
            if let Err(err) = temp.close() {
                say(&format!("cannot remove {path}: {err}"));
            }
        }
    }
}

/// Run the demo until Ctrl-C or SIGTERM.
pub(crate) async fn run(options: Options) -> anyhow::Result<()> {
    let mut stop = std::pin::pin!(crate::stop_signal(false));
    let exe = std::env::current_exe().context("cannot find this executable")?;
    let isolation = isolation();
    let jwt_secret = random_hex();
    let gateway_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, options.port));
    let storage = Storage::new(&options)?;

    let mut procs: Vec<Proc> = REPLICAS
        .into_iter()
        .zip(options.todos_ports)
        .map(|(name, port)| {
            let port = port.to_string();
            let mut args = vec!["todos", "--name", name, "--port", &port];
            args.extend(&storage.args);
            let mut env = storage.env.clone();
            env.push(isolation.clone());
            Proc::new(name, exe.clone(), &args, env)
        })
        .collect();
    procs.push(Proc::new(
        "gateway",
        exe,
        &["gateway", "--port", &options.port.to_string()],
        vec![isolation, ("PLUME_JWT_SECRET", jwt_secret)],
    ));

    let started = {
        let start = async {
            for proc in &mut procs {
                proc.spawn()?;
            }
            for proc in &mut procs {
                proc.wait_listening().await?;
            }
            ready::wait_ready(gateway_addr, &REPLICAS).await
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
            supervise(&mut procs, gateway_addr, options.restart, stop.as_mut()).await;
            Ok(())
        }
    };
    say("stopping");
    children::stop_all(&mut procs).await;
    storage.remove();
    say("demo stopped");
    outcome
}

/// What woke the supervisor up.
enum Event {
    Exited(usize, std::io::Result<std::process::ExitStatus>),
    Key(Option<String>),
    RestartDue,
}

/// Until `stop`: report every child that dies, and start dead children again on `r` + Enter
/// or, with `auto_restart`, after [`RESTART_PAUSE`].
async fn supervise(
    procs: &mut [Proc],
    gateway: SocketAddr,
    auto_restart: bool,
    mut stop: Pin<&mut impl Future<Output = ()>>,
) {
    let mut keys = keys::start();
    say(&match (&keys, auto_restart) {
        (_, true) => {
            format!("a child that dies is restarted after {RESTART_PAUSE:?}; press Ctrl-C to stop")
        }
        (Some(_), false) => "press r + Enter to restart a child that died, Ctrl-C to stop".into(),
        (None, false) => "press Ctrl-C to stop".into(),
    });
    // The checks that the gateway serves a restarted child (bounded, each).
    let mut checks = JoinSet::new();
    loop {
        let due = procs.iter().filter_map(|p| p.restart_at).min();
        let event = tokio::select! {
            () = &mut stop => break,
            (i, status) = children::next_exit(procs) => Event::Exited(i, status),
            line = keys::next(&mut keys) => Event::Key(line),
            () = sleep_until(due.unwrap_or_else(Instant::now)), if due.is_some() => {
                Event::RestartDue
            }
            Some(_) = checks.join_next(), if !checks.is_empty() => continue,
        };
        let restart: Vec<usize> = match event {
            Event::Exited(i, status) => {
                let proc = &mut procs[i];
                proc.died(&status);
                if auto_restart {
                    proc.restart_at = Some(Instant::now() + RESTART_PAUSE);
                    say(&format!("restarting {} in {RESTART_PAUSE:?}", proc.name));
                }
                Vec::new()
            }
            Event::Key(None) => Vec::new(),
            Event::Key(Some(line)) => match line.as_str() {
                "r" => {
                    let dead = dead(procs);
                    if dead.is_empty() {
                        say("no child has died");
                    }
                    dead
                }
                "" => Vec::new(),
                other => {
                    say(&format!(
                        "unknown command {other:?}: r + Enter restarts the children that died"
                    ));
                    Vec::new()
                }
            },
            Event::RestartDue => {
                let now = Instant::now();
                (0..procs.len())
                    .filter(|&i| procs[i].restart_at.is_some_and(|at| at <= now))
                    .collect()
            }
        };
        for i in restart {
            tokio::select! {
                () = restart_one(&mut procs[i], gateway, &mut checks) => {}
                () = &mut stop => {
                    checks.abort_all();
                    return;
                }
            }
        }
    }
    checks.abort_all();
}

/// The children that are not running.
fn dead(procs: &[Proc]) -> Vec<usize> {
    (0..procs.len())
        .filter(|&i| procs[i].pid().is_none())
        .collect()
}

/// Start a dead child again; once it listens, check (in `checks`) that the gateway serves it.
/// A child that does not start is reported and left dead (no automatic retry).
async fn restart_one(proc: &mut Proc, gateway: SocketAddr, checks: &mut JoinSet<()>) {
    proc.restart_at = None;
    let name = proc.name;
    let started = match proc.spawn() {
        Ok(()) => proc.wait_listening().await,
        Err(err) => Err(err),
    };
    match started {
        Ok(_url) => {
            let replica = REPLICAS.into_iter().find(|r| *r == name);
            checks.spawn(ready::announce_serving(gateway, replica));
        }
        Err(err) => {
            proc.discard().await;
            say(&format!(
                "cannot restart {name}: {err:#}; start it with: {}",
                proc.command_line()
            ));
        }
    }
}

/// The variable that keeps the demo's mesh to itself (unless told otherwise), so that two demos,
/// or a demo and other Plume apps on this host, never mix: a mesh secret of its own, or, on NATS
/// (where the server, not a mesh secret, secures the traffic), an environment of its own.
fn isolation() -> (&'static str, String) {
    let on_nats = matches!(
        plume_transport::discovery::DiscoveryConfig::from_env().map(|c| c.mode),
        Ok(plume_transport::discovery::DiscoveryMode::Nats { .. })
    );
    let set = |var: &str| std::env::var(var).ok().filter(|s| !s.is_empty());
    if on_nats {
        let env = set("PLUME_ENV").unwrap_or_else(|| format!("demo-{}", &random_hex()[..12]));
        ("PLUME_ENV", env)
    } else {
        let secret = set("PLUME_MESH_SECRET").unwrap_or_else(random_hex);
        ("PLUME_MESH_SECRET", secret)
    }
}

/// 32 random bytes in hex.
fn random_hex() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
