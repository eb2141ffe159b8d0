//! The server the official `@feathersjs/adapter-tests` suite runs against (through
//! `@feathersjs/rest-client`, see `tests/adapter/`): `people` (id `id`) and `people-customid`
//! (id `customid`), each with `name`, `age` and `created`, stored by the chosen adapter.
//!
//! Usage: `adapter-test-server --store memory|sqlite|postgres [--database-url URL] [--port P]`
//! (`--port 0`, the default, picks a free port; sqlite defaults to `sqlite::memory:`, postgres
//! needs `--database-url` or `PLUME_DATABASE_URL`). It prints
//! `plume adapter test server listening on http://127.0.0.1:PORT` once it accepts connections,
//! and exits on SIGINT/SIGTERM or when its stdin reaches EOF.
//!
//! # The adapter options header
//! The suite changes `service.options.multi` and `service.options.paginate` while it runs and
//! passes `params.adapter` and `params.paginate`, none of which a REST request carries. The JS
//! side (`tests/adapter/plume-service.js`) merges them as Feathers' `getOptions` does
//! (`{...service.options, ...params.adapter}`, then `params.paginate` if given) and sends the
//! result as the header `x-plume-adapter-options: {"multi": …, "paginate": …}`. This server,
//! and only this server, honours it: an app before hook copies the two values to
//! `params.extra["multi"]` and `params.extra["paginate"]`, the per-call overrides both adapters
//! read ([`plume::memory::Multi::for_call`], [`plume::Paginate::for_call`]).

use plume::hooks::hook_sync;
use plume::memory::Multi;
use plume::query::{FieldType, Schema};
use std::sync::Arc;

use plume::{App, Error, MemoryOptions, MemoryService, Service, ServiceOptions};
use plume_sql::{ColumnType, Database, IdGeneration, SqlService};
use serde_json::Value;

/// The header carrying the merged adapter options of one call.
const OPTIONS_HEADER: &str = "x-plume-adapter-options";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Store {
    Memory,
    Sqlite,
    Postgres,
}

struct Args {
    store: Store,
    url: Option<String>,
    port: u16,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        store: Store::Memory,
        url: std::env::var("PLUME_DATABASE_URL").ok(),
        port: 0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--store" => {
                args.store = match value()?.as_str() {
                    "memory" => Store::Memory,
                    "sqlite" => Store::Sqlite,
                    "postgres" => Store::Postgres,
                    other => return Err(format!("unknown store '{other}'")),
                }
            }
            "--database-url" => args.url = Some(value()?),
            "--port" => args.port = value()?.parse().map_err(|e| format!("--port: {e}"))?,
            other => return Err(format!("unknown argument '{other}'")),
        }
    }
    Ok(args)
}

/// One service of the suite, with id field `id`.
async fn service(
    store: Store,
    db: Option<&Database>,
    path: &str,
    id: &str,
) -> anyhow::Result<Arc<dyn Service>> {
    Ok(match (store, db) {
        (Store::Memory, _) => {
            let schema = Schema::new()
                .field(id, FieldType::Integer)
                .field("name", FieldType::String)
                .field("age", FieldType::Integer)
                .field("created", FieldType::Boolean);
            Arc::new(MemoryService::<Value>::with_options(
                MemoryOptions::new().id_field(id).schema(schema),
            ))
        }
        (_, Some(db)) => {
            let table = path.replace('-', "_");
            let service: SqlService = SqlService::builder(db, table)
                .id(id, IdGeneration::Integer)
                .column("name", ColumnType::String)
                .column("age", ColumnType::Integer)
                .column("created", ColumnType::Boolean)
                .multi(Multi::None)
                .build()?;
            service.create_table().await?;
            Arc::new(service)
        }
        (_, None) => anyhow::bail!("no database"),
    })
}

/// Copy the options header into `params.extra` (see the module docs).
fn adapter_options_hook(app: &App) {
    app.hooks().before(hook_sync(|ctx| {
        let Some(header) = ctx.params.headers.get(OPTIONS_HEADER) else {
            return Ok(());
        };
        let options: Value = header
            .to_str()
            .ok()
            .and_then(|s| serde_json::from_str(s).ok())
            .ok_or_else(|| Error::bad_request(format!("Invalid {OPTIONS_HEADER} header")))?;
        for key in ["multi", "paginate"] {
            if let Some(value) = options.get(key) {
                ctx.params.extra.insert(key.to_owned(), value.clone());
            }
        }
        Ok(())
    }));
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    plume_tests::process::init_tracing();
    let args = match parse_args() {
        Ok(args) => args,
        Err(msg) => {
            eprintln!(
                "adapter-test-server: {msg}\nusage: adapter-test-server --store memory|sqlite|postgres [--database-url URL] [--port P]"
            );
            std::process::exit(2);
        }
    };
    let db = match args.store {
        Store::Memory => None,
        Store::Sqlite => {
            Some(Database::connect(args.url.as_deref().unwrap_or("sqlite::memory:")).await?)
        }
        Store::Postgres => {
            let url = args
                .url
                .as_deref()
                .ok_or_else(|| anyhow::anyhow!("--store postgres needs --database-url"))?;
            Some(Database::connect(url).await?)
        }
    };
    let app = App::new();
    adapter_options_hook(&app);
    for (path, id) in [("people", "id"), ("people-customid", "customid")] {
        let service = service(args.store, db.as_ref(), path, id).await?;
        app.use_arc(path, service, ServiceOptions::new().events(["testing"]));
    }
    let listening = app.listen(("127.0.0.1", args.port)).await?;
    {
        use std::io::Write as _;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(
            out,
            "plume adapter test server listening on http://{}",
            listening.local_addr()
        );
        let _ = out.flush();
    }
    let stdin_closed = async {
        use tokio::io::AsyncReadExt as _;
        let mut stdin = tokio::io::stdin();
        let mut buf = [0u8; 64];
        while matches!(stdin.read(&mut buf).await, Ok(n) if n > 0) {}
    };
    tokio::select! {
        () = plume_tests::process::shutdown_signal() => {}
        () = stdin_closed => {}
    }
    app.shutdown().await;
    // Exit now: the runtime would otherwise wait for the blocking stdin read to return.
    std::process::exit(0)
}
