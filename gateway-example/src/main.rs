//! The Plume gateway demo: a gateway and two todos replicas on the loopback mesh, and a web page.
//!
//! ```text
//! gateway-example [demo] [--port 3030] [--todos-ports 3031,3032] [--restart]
//!                        [--store sql|memory] [--data-dir DIR] [--database-url URL]
//! gateway-example gateway [--host 127.0.0.1] [--port 3030]
//! gateway-example cote-gateway [--host 127.0.0.1] [--port 3030]   (a feathers-distributed fleet)
//! gateway-example todos --name todos-a [--host 127.0.0.1] [--port 3031]
//!                       [--store sql|memory] [--database-url URL]
//! gateway-example client-types [--out services.d.ts]
//! gateway-example math [--nats URL] [--env ENV]
//! gateway-example act [--nats URL] [--env ENV] [--timeout MS] '<message JSON>'
//! gateway-example echo-node --name NAME --http-port PORT
//! gateway-example workers --name NAME --configs N [--http-port PORT] [--min-members M] [--quiet] [--nats URL]
//! gateway-example mesh [--json [--wait 2s | --follow]] [--interval 1s]
//! ```
//!
//! See docs/guide.md (the gateway section) and docs/configuration.md.

// A command-line program: it tells its user what it does on stdout.
#![allow(clippy::print_stdout)]

mod api_docs;
mod cote_gateway;
mod demo;
mod echo_node;
mod gateway;
mod http;
mod mesh_view;
mod pattern;
mod runtime;
mod telemetry;
mod todos;
mod workers;

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// jemalloc instead of the system allocator: the request path allocates a lot (JSON values,
/// frames, headers), and glibc's malloc costs a third of the gateway's throughput. mimalloc is
/// as fast but asks for transparent huge pages on its arena, which made the idle gateway 15 MiB
/// larger (see docs/benchmarks.md, "Gateway idle RSS"). The `system-allocator` feature keeps
/// the system's, for heap profilers that hook malloc.
#[cfg(not(feature = "system-allocator"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's settings, read when it starts (`_RJEM_MALLOC_CONF` in the environment overrides
/// them): freed pages go back to the system on a 30 s decay curve, first lazily (`MADV_FREE`),
/// instead of jemalloc's 10 s straight back (under a load of 1 MiB answers their buffers were
/// returned and faulted back in page by page), and a background thread returns them, so memory
/// also goes back while the process is idle (without it jemalloc returns pages only while it
/// allocates). docs/benchmarks.md, "Payloads and NATS, round".
#[cfg(not(feature = "system-allocator"))]
#[allow(unsafe_code)] // the symbol jemalloc reads its settings from (a C string, NUL-terminated)
#[unsafe(export_name = "_rjem_malloc_conf")]
static MALLOC_CONF: &[u8; 65] =
    b"background_thread:true,dirty_decay_ms:30000,muzzy_decay_ms:30000\0";

/// The Plume gateway demo.
#[derive(Debug, Parser)]
#[command(
    name = "gateway-example",
    version,
    about,
    long_about = None,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    /// With no subcommand: the demo, with these options.
    #[command(flatten)]
    demo: DemoArgs,
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Start the gateway and two todos replicas as child processes (the default).
    Demo(DemoArgs),
    /// Run the gateway: users, authentication, the remote services behind a JWT, the web page.
    Gateway(GatewayArgs),
    /// Run a todos replica (REST and socket.io without authentication, distribution key `todos`).
    Todos(TodosArgs),
    /// Run a Plume gateway in front of a feathers-distributed fleet (cote discovery, see
    /// docs/cote.md): every service the Node apps publish, over REST and socket.io.
    CoteGateway(GatewayArgs),
    /// Print (or write) the TypeScript declarations of the services' types for the Feathers JS
    /// client (`feathers<ServiceTypes>()`).
    ClientTypes(ClientTypesArgs),
    /// Serve Hemera's {topic:'math', cmd:'add'|'sub'|'mul'|'div'} (numbers a, b); prints
    /// `math ready` once subscribed.
    Math(pattern::MathArgs),
    /// Act once with a Hemera message: the result on stdout, or the error object on stderr.
    Act(pattern::ActArgs),
    /// Run an echo node: join the loopback mesh, provide the stream `echo`, and serve meshage's
    /// HTTP API (`POST /api/echo/KEY`, `POST /api/broadcast/echo/KEY`) on 127.0.0.1.
    EchoNode(EchoNodeArgs),
    /// Join the loopback mesh as a member of the instance set `workers` with configurations
    /// 1..=N: each instance running here prints `start`/`tick`/`stop CFG NAME UNIX_MS` lines;
    /// `GET /instances` on 127.0.0.1 shows who runs what.
    Workers(WorkersArgs),
    /// Watch the mesh: a live view of its nodes, services, links and recent joins and losses
    /// (as a monitor node that provides nothing); `--json` prints one snapshot.
    Mesh(mesh_view::MeshArgs),
}

#[derive(Debug, Args)]
struct WorkersArgs {
    /// The node's name, in every line it prints.
    #[arg(long)]
    name: String,
    /// The number of configurations (ids 1..=N).
    #[arg(long)]
    configs: u32,
    /// The port of its JSON API on 127.0.0.1 (0: any free port; the ready line names it).
    #[arg(long, default_value_t = 0)]
    http_port: u16,
    /// Count the majority over at least this many members (2 or more: nodes started together
    /// cannot each lead alone before they have found each other).
    #[arg(long, default_value_t = 2)]
    min_members: usize,
    /// Instances do not print `tick` lines (to measure the manager's own cost).
    #[arg(long)]
    quiet: bool,
    /// Run the set on the NATS JetStream key-value store of this server (`nats://…`) instead
    /// of the mesh.
    #[arg(long)]
    nats: Option<String>,
}

#[derive(Debug, Args)]
struct ClientTypesArgs {
    /// Write the declarations to this file (a `.d.ts`) instead of standard output.
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct EchoNodeArgs {
    /// The node's name, in every reply.
    #[arg(long)]
    name: String,
    /// The port of its HTTP API on 127.0.0.1 (0: any free port; the ready line names it).
    #[arg(long)]
    http_port: u16,
}

#[derive(Debug, Args)]
struct DemoArgs {
    /// The gateway's HTTP port on 127.0.0.1.
    #[arg(long, env = "PLUME_GATEWAY_PORT", default_value_t = 3030)]
    port: u16,
    /// The HTTP ports of the replicas todos-a and todos-b on 127.0.0.1.
    #[arg(
        long,
        env = "PLUME_TODOS_PORTS",
        value_delimiter = ',',
        default_values_t = [3031, 3032]
    )]
    todos_ports: Vec<u16>,
    /// Restart a child that died, after a pause of two seconds (without it: press r + Enter,
    /// or run the command the demo prints).
    #[arg(long)]
    restart: bool,
    /// Where the replicas keep their todos: `sql`, one database both share (a SQLite file in
    /// the data directory, or the database at --database-url), or `memory`, each its own.
    #[arg(long, value_enum, default_value_t = StoreKind::Sql)]
    store: StoreKind,
    /// The directory of the shared SQLite file `todos.db`, created when missing and kept.
    /// Without it: a new temporary directory, removed when the demo stops.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// The database the replicas share instead of the SQLite file: `postgres://…` (or
    /// `sqlite://path`).
    #[arg(long, env = "PLUME_DATABASE_URL")]
    database_url: Option<String>,
}

/// Where the todos replicas keep their todos.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum StoreKind {
    /// A SQL database shared by the replicas (`plume-sql`).
    Sql,
    /// A `MemoryService` per replica.
    Memory,
}

#[derive(Debug, Args)]
struct GatewayArgs {
    /// The address to serve HTTP and socket.io on.
    #[arg(long, env = "PLUME_HOST", default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    host: IpAddr,
    /// The HTTP port.
    #[arg(long, env = "PLUME_PORT", default_value_t = 3030)]
    port: u16,
    /// Stop when standard input reaches EOF (set by the demo for its children).
    #[arg(long, hide = true)]
    watchdog: bool,
}

#[derive(Debug, Args)]
struct TodosArgs {
    /// The replica's name: stamped on every todo it stores.
    #[arg(long, env = "PLUME_REPLICA", default_value = "todos-a")]
    name: String,
    /// The address to serve HTTP and socket.io on.
    #[arg(long, env = "PLUME_HOST", default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    host: IpAddr,
    /// The HTTP port.
    #[arg(long, env = "PLUME_PORT", default_value_t = 3031)]
    port: u16,
    /// Where to keep the todos: `sql` (the database at --database-url) or `memory`.
    #[arg(long, value_enum, default_value_t = StoreKind::Sql)]
    store: StoreKind,
    /// The database of `--store sql`: `sqlite://path` (or a bare path; created when missing)
    /// or `postgres://user:password@host:port/database`.
    #[arg(long, env = "PLUME_DATABASE_URL", default_value = "sqlite://todos.db")]
    database_url: String,
    /// Stop when standard input reaches EOF (set by the demo for its children).
    #[arg(long, hide = true)]
    watchdog: bool,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let workers = runtime::workers(std::env::var_os(runtime::WORKERS_VAR).as_deref())?;
    let rt = runtime::build(workers)?;
    let workers = rt.metrics().num_workers();
    rt.block_on(async {
        let command = cli.command.unwrap_or(Cmd::Demo(cli.demo));
        let telemetry = telemetry::init(&command.service_name())?;
        tracing::info!(target: "gateway_example::runtime", "tokio runtime: {workers} worker threads");
        let result = run(command).await;
        telemetry.finish().await;
        result
    })
}

impl Cmd {
    /// The OpenTelemetry service name of this process (unless `OTEL_SERVICE_NAME` says).
    fn service_name(&self) -> String {
        match self {
            Cmd::Demo(_) => "plume-demo".into(),
            Cmd::Gateway(_) => "plume-gateway".into(),
            Cmd::Todos(args) => format!("plume-{}", args.name),
            Cmd::CoteGateway(_) => "plume-cote-gateway".into(),
            Cmd::ClientTypes(_) => "plume-client-types".into(),
            Cmd::Math(_) => "plume-math".into(),
            Cmd::Act(_) => "plume-act".into(),
            Cmd::EchoNode(args) => format!("plume-{}", args.name),
            Cmd::Workers(args) => format!("plume-{}", args.name),
            Cmd::Mesh(_) => "plume-mesh".into(),
        }
    }
}

async fn run(command: Cmd) -> anyhow::Result<()> {
    match command {
        Cmd::Demo(args) => {
            let [a, b] = <[u16; 2]>::try_from(args.todos_ports)
                .map_err(|ports| anyhow::anyhow!("--todos-ports takes two ports, got {ports:?}"))?;
            demo::run(demo::Options {
                port: args.port,
                todos_ports: [a, b],
                restart: args.restart,
                store: args.store,
                data_dir: args.data_dir,
                database_url: args.database_url,
            })
            .await
        }
        Cmd::Gateway(args) => {
            gateway::run(
                SocketAddr::new(args.host, args.port),
                stop_signal(args.watchdog),
            )
            .await
        }
        Cmd::ClientTypes(args) => {
            let text = api_docs::client_types().await?;
            match args.out {
                Some(path) => std::fs::write(&path, text)
                    .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display())),
                None => Ok(std::io::stdout().write_all(text.as_bytes())?),
            }
        }
        Cmd::Todos(args) => {
            let store = match args.store {
                StoreKind::Sql => todos::Store::Sql(args.database_url),
                StoreKind::Memory => todos::Store::Memory,
            };
            todos::run(
                &args.name,
                &store,
                SocketAddr::new(args.host, args.port),
                stop_signal(args.watchdog),
            )
            .await
        }
        Cmd::CoteGateway(args) => {
            cote_gateway::run(
                SocketAddr::new(args.host, args.port),
                stop_signal(args.watchdog),
            )
            .await
        }
        Cmd::Math(args) => pattern::math(args).await,
        Cmd::Act(args) => pattern::act(args).await,
        Cmd::EchoNode(args) => {
            echo_node::run(
                &args.name,
                SocketAddr::from((Ipv4Addr::LOCALHOST, args.http_port)),
                stop_signal(false),
            )
            .await
        }
        Cmd::Mesh(args) => mesh_view::run(args, stop_signal(false)).await,
        Cmd::Workers(args) => {
            workers::run(
                &args.name,
                args.configs,
                args.min_members,
                args.quiet,
                args.nats.as_deref(),
                SocketAddr::from((Ipv4Addr::LOCALHOST, args.http_port)),
                stop_signal(false),
            )
            .await
        }
    }
}

/// Print one line on stdout at once (the demo and the tests read these lines).
pub(crate) fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    // A closed stdout (the reader went away) must not stop the program.
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
}

/// Resolves on SIGTERM; on Ctrl-C (SIGINT) too unless `watchdog`; and, with `watchdog`, when
/// standard input reaches EOF (the demo closed it, or died). A child of the demo ignores Ctrl-C:
/// the demo stops it.
pub(crate) async fn stop_signal(watchdog: bool) {
    use tokio::signal::unix::{SignalKind, signal};
    let term = async {
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(err) => {
                tracing::warn!(%err, "cannot watch SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    let interrupt = async {
        if watchdog {
            // Ctrl-C reaches the whole process group: handle it (by ignoring it), so that the
            // children stop gracefully when the demo closes their stdin, not by SIGINT.
            while tokio::signal::ctrl_c().await.is_ok() {}
            std::future::pending::<()>().await;
        } else if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let eof = async {
        if !watchdog {
            std::future::pending::<()>().await;
        }
        stdin_eof().await;
    };
    tokio::select! {
        () = term => {}
        () = interrupt => {}
        () = eof => {}
    }
}

/// Resolves when standard input reaches EOF (or fails). The blocking read runs on a plain
/// thread, which does not hold up the runtime's shutdown as a tokio blocking task would.
async fn stdin_eof() {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let spawned = std::thread::Builder::new()
        .name("stdin-watchdog".into())
        .spawn(move || {
            use std::io::Read;
            let mut buf = [0u8; 256];
            let mut stdin = std::io::stdin().lock();
            while matches!(stdin.read(&mut buf), Ok(n) if n > 0) {}
            let _ = tx.send(());
        });
    if spawned.is_err() {
        tracing::warn!("cannot start the stdin watchdog");
        std::future::pending::<()>().await;
    }
    // A dropped sender (the thread ended) also counts as EOF.
    let _ = rx.await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_parses_as_documented() {
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from(["gateway-example"]).expect("no subcommand");
        assert!(cli.command.is_none());
        assert_eq!(
            (cli.demo.port, cli.demo.todos_ports, cli.demo.restart),
            (3030, vec![3031, 3032], false)
        );
        let cli = Cli::try_parse_from([
            "gateway-example",
            "--port",
            "4000",
            "--todos-ports",
            "4001,4002",
            "--restart",
        ])
        .expect("the demo's options without the subcommand");
        assert!(cli.command.is_none());
        assert_eq!(
            (cli.demo.port, cli.demo.todos_ports, cli.demo.restart),
            (4000, vec![4001, 4002], true)
        );
        // The demo's options belong to the demo: not before another subcommand.
        assert!(Cli::try_parse_from(["gateway-example", "--restart", "gateway"]).is_err());
        let cli = Cli::try_parse_from(["gateway-example", "demo", "--todos-ports", "4001,4002"])
            .expect("demo");
        match cli.command {
            Some(Cmd::Demo(args)) => assert_eq!(args.todos_ports, [4001, 4002]),
            other => panic!("unexpected {other:?}"),
        }
        let cli = Cli::try_parse_from(["gateway-example", "--store", "memory", "--data-dir", "d"])
            .expect("the demo's store");
        assert_eq!(
            (cli.demo.store, cli.demo.data_dir),
            (StoreKind::Memory, Some(PathBuf::from("d")))
        );
        assert!(Cli::try_parse_from(["gateway-example", "--store", "disk"]).is_err());
        let cli = Cli::try_parse_from([
            "gateway-example",
            "todos",
            "--name",
            "todos-b",
            "--port",
            "9",
            "--database-url",
            "postgres://db",
        ])
        .expect("todos");
        match cli.command {
            Some(Cmd::Todos(args)) => {
                assert_eq!((args.name.as_str(), args.port), ("todos-b", 9));
                assert_eq!(
                    (args.store, args.database_url.as_str()),
                    (StoreKind::Sql, "postgres://db")
                );
                assert!(!args.watchdog);
            }
            other => panic!("unexpected {other:?}"),
        }
        let cli = Cli::try_parse_from([
            "gateway-example",
            "echo-node",
            "--name",
            "e1",
            "--http-port",
            "4100",
        ])
        .expect("echo-node");
        match cli.command {
            Some(Cmd::EchoNode(args)) => {
                assert_eq!((args.name.as_str(), args.http_port), ("e1", 4100));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(Cli::try_parse_from(["gateway-example", "echo-node", "--name", "e1"]).is_err());
    }
}
