//! The server of the Feathers conformance contract (`tests/conformance/README.md`), built with
//! Plume: `users` and `authentication` (local + jwt) and a `todos` service written with
//! `#[plume::service]` over `MemoryService`, served over REST and socket.io on 127.0.0.1.
//!
//! Usage: `conformance-server --port PORT` (or env `PORT`; 0 picks a free port). It prints
//! `plume conformance server listening on http://127.0.0.1:PORT` once it accepts connections.
//! The JWT secret is `PLUME_JWT_SECRET`, or a random one for this process (like the Node
//! reference server).
//!
//! `conformance-server --distributed --port PORT` serves the same contract with `todos` in a
//! separate process reached only through the mesh: the front process keeps `users` and
//! `authentication`, starts `conformance-server --todos-only` as a child (same binary), consumes
//! `todos` through a `Distribution` proxy guarded by `authenticate("jwt")` (the `hooks` option),
//! and prints its readiness line only once that proxy is usable. Both processes share one mesh
//! environment: `PLUME_ENV` if set, else a random one (so parallel runs never see each other).
//! The discovery backend is the `PLUME_DISCOVERY` family of variables (`Distribution::from_env`).
//! The child exits when its stdin reaches EOF (the parent holds the pipe), so it never outlives
//! the parent, even one killed with SIGKILL; the parent also kills it by PID when it exits.

use plume::auth::{AuthConfig, AuthenticationService, authenticate, hash_password, protect};
use plume::hooks::hook_sync;
use plume::memory::Multi;
use plume::query::{FieldType, Schema};
use plume::{App, Error, Id, MemoryOptions, MemoryService, Method, Params, Result, ServiceOptions};
use plume_tests::process::shutdown_signal;
use plume_transport::distribution::{Distribution, DistributionHandle};
use serde::{Deserialize, Serialize};
use serde_json::{Number, Value, json};

/// The data of `create` and `update`: exactly these four fields.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TodoData {
    text: String,
    done: bool,
    priority: Number,
    tag: String,
}

/// The data of `patch`: any subset of the four fields.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TodoPatch {
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    done: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    priority: Option<Number>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tag: Option<String>,
}

/// The argument of the custom method `stats`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StatsRequest {
    tag: String,
}

/// The result of `stats`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Stats {
    tag: String,
    total: usize,
    done: usize,
    open: usize,
}

/// The todos service: validation and `userId` here, storage and queries in the memory adapter.
struct Todos {
    store: MemoryService,
}

impl Todos {
    fn new() -> Self {
        let options = MemoryOptions::new()
            .paginate(10, 50)
            .multi(Multi::All)
            .start_id(1)
            .schema(
                Schema::new()
                    .field("id", FieldType::Integer)
                    .field("text", FieldType::String)
                    .field("done", FieldType::Boolean)
                    .field("priority", FieldType::Number)
                    .field("tag", FieldType::String)
                    .field("userId", FieldType::Integer),
            );
        Self {
            store: MemoryService::with_options(options),
        }
    }

    /// The record to store for `data`, owned by the caller.
    fn record(data: TodoData, params: &Params) -> Result<Value> {
        let mut record = serde_json::to_value(data).map_err(Error::internal)?;
        record["userId"] = user_id(params)?;
        Ok(record)
    }
}

/// The id of the authenticated user.
fn user_id(params: &Params) -> Result<Value> {
    params
        .user
        .as_deref()
        .and_then(|u| u.get("id"))
        .cloned()
        .ok_or_else(|| Error::not_authenticated("Not authenticated"))
}

fn invalid_data(e: serde_json::Error) -> Error {
    Error::bad_request(format!("Invalid data: {e}"))
}

#[plume::service(vis = pub(crate))]
impl Todos {
    async fn find(&self, params: Params) -> Result<Value> {
        self.store.find(params).await
    }

    async fn get(&self, id: Id, params: Params) -> Result<Value> {
        self.store.get(id, params).await
    }

    /// One record, or an array of them (multi create); each must be exactly `TodoData`.
    async fn create(&self, data: Value, params: Params) -> Result<Value> {
        let records = match data {
            Value::Array(items) if !items.is_empty() => items
                .into_iter()
                .map(|item| {
                    let data = serde_json::from_value(item).map_err(invalid_data)?;
                    Self::record(data, &params)
                })
                .collect::<Result<Vec<_>>>()
                .map(Value::Array)?,
            Value::Array(_) => return Err(Error::bad_request("Invalid data: empty array")),
            item => {
                let data = serde_json::from_value(item).map_err(invalid_data)?;
                Self::record(data, &params)?
            }
        };
        self.store.create(records, params).await
    }

    async fn update(&self, id: Id, data: TodoData, params: Params) -> Result<Value> {
        let record = Self::record(data, &params)?;
        self.store.update(id, record, params).await
    }

    async fn patch(&self, id: Option<Id>, data: TodoPatch, params: Params) -> Result<Value> {
        let data = serde_json::to_value(data).map_err(Error::internal)?;
        self.store.patch(id, data, params).await
    }

    async fn remove(&self, id: Option<Id>, params: Params) -> Result<Value> {
        self.store.remove(id, params).await
    }

    /// Counts over every todo with this tag.
    #[method]
    async fn stats(&self, data: StatsRequest) -> Result<Stats> {
        let mut params = Params::new().with_query(json!({ "tag": data.tag }));
        params.extra.insert("paginate".into(), Value::Bool(false));
        let all = self.store.find(params).await?;
        let list = all.as_array().map(Vec::as_slice).unwrap_or_default();
        let done = list
            .iter()
            .filter(|t| t["done"] == Value::Bool(true))
            .count();
        Ok(Stats {
            tag: data.tag,
            total: list.len(),
            done,
            open: list.len() - done,
        })
    }
}

/// `users` data: `{email, password}` (both non-empty strings) and nothing else; for `patch`, any
/// subset.
fn check_user_data(data: &Value, partial: bool) -> Result<()> {
    let Value::Object(map) = data else {
        return Err(Error::bad_request("Invalid data: an object is expected"));
    };
    for key in map.keys() {
        if key != "email" && key != "password" {
            return Err(Error::bad_request(format!(
                "Invalid data: unknown field `{key}`"
            )));
        }
    }
    for field in ["email", "password"] {
        match map.get(field) {
            Some(Value::String(s)) if !s.is_empty() => {}
            None if partial => {}
            _ => {
                return Err(Error::bad_request(format!(
                    "Invalid data: `{field}` must be a non-empty string"
                )));
            }
        }
    }
    Ok(())
}

/// Build the App of the contract.
fn build_app(secret: String) -> App {
    let app = build_front(secret);
    let todos = app.use_service("todos", Todos::new());
    todos.hooks().before(authenticate(["jwt"]));
    app
}

/// The todos provider of the distributed mode: the front process authenticated the caller (its
/// proxy runs `authenticate("jwt")`), and `params.user` crossed the mesh with the call (tokens do
/// not). A call without a user is refused here too.
fn build_todos_provider() -> App {
    let app = App::new();
    let todos = app.use_service("todos", Todos::new());
    todos.hooks().before(hook_sync(|ctx| {
        if ctx.params.user.is_some() {
            Ok(())
        } else {
            Err(Error::not_authenticated("Not authenticated"))
        }
    }));
    app
}

/// `users` and `authentication`: everything but `todos`.
fn build_front(secret: String) -> App {
    let app = App::new();

    let users_store: MemoryService = MemoryService::with_options(
        MemoryOptions::new().paginate(10, 50).start_id(1).schema(
            Schema::new()
                .field("id", FieldType::Integer)
                .field("email", FieldType::String),
        ),
    );
    let users = app.use_service_with(
        "users",
        users_store,
        ServiceOptions::new().methods([
            Method::Find,
            Method::Get,
            Method::Create,
            Method::Patch,
            Method::Remove,
        ]),
    );
    users
        .hooks()
        .before_for(
            [Method::Find, Method::Get, Method::Patch, Method::Remove],
            authenticate(["jwt"]),
        )
        .before_for(
            [Method::Create],
            hook_sync(|ctx| check_user_data(ctx.data.as_ref().unwrap_or(&Value::Null), false)),
        )
        .before_for(
            [Method::Patch],
            hook_sync(|ctx| check_user_data(ctx.data.as_ref().unwrap_or(&Value::Null), true)),
        )
        .before_for([Method::Create, Method::Patch], hash_password("password"))
        .after(protect(["password"]));

    AuthenticationService::setup(&app, AuthConfig::new(secret));
    app
}

/// How this process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Everything in this process.
    Local,
    /// `users` and `authentication` here, `todos` in a child process, through the mesh.
    Distributed,
    /// The child of `Distributed` (hidden): only `todos`, published on the mesh.
    TodosOnly,
}

struct Args {
    port: u16,
    mode: Mode,
}

fn parse_args() -> std::result::Result<Args, String> {
    let mut port = std::env::var("PORT").ok();
    let mut mode = Mode::Local;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--port" => port = Some(args.next().ok_or("--port needs a value")?),
            "--distributed" => mode = Mode::Distributed,
            "--todos-only" => mode = Mode::TodosOnly,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    let port = port.unwrap_or_else(|| "3030".into());
    let port = port.parse().map_err(|_| format!("invalid port {port:?}"))?;
    Ok(Args { port, mode })
}

/// How long the front process waits for the todos provider to be usable through the mesh.
const TODOS_READY_WITHIN: std::time::Duration = std::time::Duration::from_secs(30);

/// The mesh environment shared by the front process and its child.
fn mesh_environment() -> String {
    std::env::var("PLUME_ENV")
        .ok()
        .filter(|e| !e.is_empty())
        .unwrap_or_else(|| format!("conformance-{}", uuid::Uuid::new_v4().simple()))
}

/// The child process: publish `todos` and serve until stdin reaches EOF (the parent is gone)
/// or a signal arrives.
async fn run_todos_only() -> anyhow::Result<()> {
    let app = build_todos_provider();
    let dist = Distribution::from_env()?
        .environment(mesh_environment())
        .key("todos")
        .remote_services(false)
        .start(&app)
        .await?;
    // The handle stays registered on the App; `app.shutdown()` stops it.
    drop(dist);
    let parent_gone = async {
        use tokio::io::AsyncReadExt as _;
        let mut stdin = tokio::io::stdin();
        let mut buf = [0u8; 64];
        // EOF (0) or an error: the parent closed its end, or died.
        while let Ok(n) = stdin.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    };
    tokio::select! {
        () = parent_gone => {}
        () = shutdown_signal() => {}
    }
    app.shutdown().await;
    Ok(())
}

/// The front process of `--distributed`: start the child, mount the todos proxy.
async fn start_distributed(
    app: &App,
) -> anyhow::Result<(tokio::process::Child, DistributionHandle)> {
    let environment = mesh_environment();
    let exe = std::env::current_exe()?;
    let child = tokio::process::Command::new(exe)
        .arg("--todos-only")
        .env("PLUME_ENV", &environment)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let dist = Distribution::from_env()?
        .environment(environment)
        .key("front")
        .services(false)
        .remote_services(["todos"])
        .hooks(|h| {
            h.before(authenticate(["jwt"]));
        })
        .start(app)
        .await?;
    tokio::time::timeout(TODOS_READY_WITHIN, dist.remote_ready("todos"))
        .await
        .map_err(|_| anyhow::anyhow!("the todos provider did not appear on the mesh in time"))?;
    Ok((child, dist))
}

/// Kill the child by PID and reap it.
async fn stop_child(mut child: tokio::process::Child) {
    let _ = child.start_kill();
    let _ = child.wait().await;
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    plume_tests::process::init_tracing();
    let args = match parse_args() {
        Ok(args) => args,
        Err(msg) => {
            eprintln!("conformance-server: {msg}\nusage: conformance-server --port PORT");
            std::process::exit(2);
        }
    };
    let secret = std::env::var(plume::auth::SECRET_ENV)
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| {
            format!(
                "{}{}",
                uuid::Uuid::new_v4().simple(),
                uuid::Uuid::new_v4().simple()
            )
        });
    if args.mode == Mode::TodosOnly {
        return run_todos_only().await;
    }
    let (app, child) = if args.mode == Mode::Distributed {
        let app = build_front(secret);
        match start_distributed(&app).await {
            Ok((child, _dist)) => (app, Some(child)),
            Err(e) => {
                app.shutdown().await;
                return Err(e);
            }
        }
    } else {
        (build_app(secret), None)
    };
    let listening = match app.listen(("127.0.0.1", args.port)).await {
        Ok(l) => l,
        Err(e) => {
            if let Some(child) = child {
                stop_child(child).await;
            }
            return Err(e.into());
        }
    };
    let addr = listening.local_addr();
    {
        use std::io::Write as _;
        let mut out = std::io::stdout().lock();
        // The readiness line; a closed stdout is no reason to stop serving.
        let _ = writeln!(out, "plume conformance server listening on http://{addr}");
        let _ = out.flush();
    }
    shutdown_signal().await;
    app.shutdown().await;
    if let Some(child) = child {
        stop_child(child).await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_data_is_checked() {
        assert!(check_user_data(&json!({"email": "a", "password": "b"}), false).is_ok());
        assert!(check_user_data(&json!({"email": "a"}), false).is_err());
        assert!(check_user_data(&json!({"email": "a"}), true).is_ok());
        assert!(check_user_data(&json!({"email": "a", "password": "b", "x": 1}), false).is_err());
        assert!(check_user_data(&json!({"email": "", "password": "b"}), false).is_err());
        assert!(check_user_data(&json!([]), false).is_err());
    }

    #[tokio::test]
    async fn todos_validate_and_own_their_records() {
        let app = build_app("s".into());
        let todos = app.require("todos").unwrap_or_else(|e| panic!("{e}"));
        let user = Params::new().with_user(json!({"id": 7}));
        let t = todos
            .create(
                json!({"text": "a", "done": false, "priority": 2, "tag": "t"}),
                user.clone(),
            )
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(t["userId"], 7);
        assert_eq!(t["id"], 1);
        for bad in [
            json!({"text": "a", "done": false, "priority": 2}),
            json!({"text": "a", "done": false, "priority": 2, "tag": "t", "userId": 1}),
            json!({"text": "a", "done": "no", "priority": 2, "tag": "t"}),
        ] {
            let e = todos.create(bad, user.clone()).await.err();
            assert_eq!(e.map(|e| e.code()), Some(400));
        }
        let stats = todos
            .call("stats", json!({"tag": "t"}), user.clone())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(stats, json!({"tag": "t", "total": 1, "done": 0, "open": 1}));
    }

    #[tokio::test]
    async fn the_todos_provider_needs_the_forwarded_user() {
        let app = build_todos_provider();
        let todos = app.require("todos").unwrap_or_else(|e| panic!("{e}"));
        let mut anonymous = Params::new();
        anonymous.from_remote = true;
        let e = todos.find(anonymous).await.err();
        assert_eq!(e.map(|e| e.code()), Some(401));
        let user = Params::new().with_user(json!({"id": 3}));
        let t = todos
            .create(
                json!({"text": "a", "done": true, "priority": 1, "tag": "t"}),
                user,
            )
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(t["userId"], 3);
        assert!(app.service("users").is_none() && app.service("authentication").is_none());
        let front = build_front("s".into());
        assert!(front.service("todos").is_none() && front.service("users").is_some());
    }

    #[tokio::test]
    async fn users_and_authentication_follow_the_contract() {
        let app = build_app("s".into());
        let rest = || Params::new().with_provider(plume::Provider::Rest);
        let users = app.require("users").unwrap_or_else(|e| panic!("{e}"));
        let user = users
            .create(json!({"email": "a@b.c", "password": "pw"}), rest())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(user, json!({"email": "a@b.c", "id": 1}));
        let e = users
            .update(1, json!({"email": "x", "password": "y"}), rest())
            .await
            .err();
        assert_eq!(e.map(|e| e.code()), Some(405));
        assert_eq!(users.find(rest()).await.err().map(|e| e.code()), Some(401));
        let auth = app
            .require("authentication")
            .unwrap_or_else(|e| panic!("{e}"));
        let login = auth
            .create(
                json!({"strategy": "local", "email": "a@b.c", "password": "pw"}),
                rest(),
            )
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(login["user"], user);
        let mut params = rest();
        params.authentication =
            Some(json!({"strategy": "jwt", "accessToken": login["accessToken"]}).into());
        let todos = app.require("todos").unwrap_or_else(|e| panic!("{e}"));
        let page = todos
            .find(params.clone())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            page,
            json!({"total": 0, "limit": 10, "skip": 0, "data": []})
        );
        let e = todos.find(rest()).await.err();
        assert_eq!(
            e.map(|e| e.message().to_owned()).as_deref(),
            Some("Not authenticated")
        );
        let todo = todos
            .create(
                json!({"text": "t", "done": false, "priority": 1, "tag": "x"}),
                params,
            )
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(todo["userId"], 1);
    }
}
