//! A node of the feathers-distributed test topology ported to Plume (`tests/tests/fd_main.rs`),
//! in its own process.
//!
//! - `fd-node --role consumer --env ENV --key K`: apps 1 and 2 of feathers-distributed's main
//!   test. JWT authentication only (secret `PLUME_JWT_SECRET`, shared with the gateway, whose
//!   `users` service the JWT strategy reads through the proxy); it publishes nothing and consumes
//!   everything, renaming the remote `custom` to `custom-name`. Every proxy gets the `hooks`
//!   option: a before spy, an optional `authenticate("jwt")` (only when the call carries
//!   authentication: the distributed pattern, where the provider decides), and an after spy.
//!   Every event goes to every real-time connection. It prints `READY <http port> <node id>` once
//!   the `users` proxy is usable.
//! - `fd-node --role noevents --env ENV --key K`: app 3: a local `no-events` service declaring
//!   the custom event `custom`, published with `publish_events(false)`; prints
//!   `READY <http port> <node id>`.
//!
//! Both serve a local `probe` service (never published) that reports what the process saw:
//! `find` gives `{before, after, events, added, removed, services}` (hook spy counts, every
//! service event with its context, proxies added and removed, and each mounted service's
//! methods, events, remote flag and options); `create {path, method, data}` makes a server-side
//! call on a local service or proxy and returns its result (or `{error}`).
//!
//! The process exits when its stdin reaches EOF or on SIGTERM.

use std::io::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, bail};
use plume::auth::{AuthConfig, AuthenticationService, authenticate};
use plume::hooks::{Hook, HookContext, hook_sync};
use plume::{App, Error, Id, MemoryService, Method, Params, Result, Service, ServiceOptions};
use plume_transport::distribution::Distribution;
use serde_json::{Value, json};

/// What the process observed.
#[derive(Default)]
struct Observed {
    before: u64,
    after: u64,
    events: Vec<Value>,
    added: Vec<String>,
    removed: Vec<String>,
}

type Shared = Arc<Mutex<Observed>>;

fn lock(o: &Shared) -> std::sync::MutexGuard<'_, Observed> {
    o.lock().unwrap_or_else(|e| e.into_inner())
}

/// The local `probe` service.
struct Probe {
    app: App,
    observed: Shared,
}

#[plume::async_trait]
impl Service for Probe {
    async fn find(&self, _params: Params) -> Result<Value> {
        let mut services = serde_json::Map::new();
        for path in self.app.services() {
            if let Some(s) = self.app.service(&path) {
                services.insert(
                    path.clone(),
                    json!({
                        "methods": s.methods().iter().map(|m| m.to_string()).collect::<Vec<_>>(),
                        "events": s.events(),
                        "remote": s.options().remote,
                        "options": s.service().options(),
                    }),
                );
            }
        }
        let o = lock(&self.observed);
        Ok(json!({
            "before": o.before,
            "after": o.after,
            "events": o.events,
            "added": o.added,
            "removed": o.removed,
            "services": services,
        }))
    }

    /// A server-side call: `{path, method, id?, data?}`.
    async fn create(&self, data: Value, _params: Params) -> Result<Value> {
        let path = data["path"].as_str().unwrap_or_default();
        let service = self
            .app
            .service(path)
            .ok_or_else(|| Error::not_found(format!("no service {path}")))?;
        let body = data.get("data").cloned().unwrap_or(Value::Null);
        let id = data.get("id").and_then(Id::from_value);
        let params = Params::new();
        let result = match data["method"].as_str().unwrap_or_default() {
            "find" => service.find(params).await,
            "get" => service.get(id.unwrap_or(Id::Int(0)), params).await,
            "create" => service.create(body, params).await,
            custom => service.call(custom, body, params).await,
        };
        Ok(match result {
            Ok(v) => json!({ "result": v }),
            Err(e) => json!({ "error": e.to_json() }),
        })
    }

    fn methods(&self) -> Vec<Method> {
        vec![Method::Find, Method::Create]
    }
}

/// `authenticate("jwt")` when the call carries authentication; otherwise the call goes on
/// anonymous (the provider decides).
struct OptionalJwt;

#[plume::async_trait]
impl Hook for OptionalJwt {
    async fn run(&self, ctx: &mut HookContext) -> Result<()> {
        if AuthenticationService::params_authentication(&ctx.params).is_some() {
            authenticate(["jwt"]).run(ctx).await
        } else {
            Ok(())
        }
    }
}

fn record_events(app: &App, observed: &Shared) {
    let o = observed.clone();
    app.on_event(move |ev| {
        if ev.path == "probe" {
            return;
        }
        let ctx = ev.context.as_ref().map(|c| {
            json!({
                "path": c.path,
                "method": c.method.to_string(),
                "id": c.id.as_ref().map(|i| i.to_value()),
                "data": c.data,
                "result": c.result,
                "query": c.params.query,
                "user": c.params.user,
                "event": c.event,
                "remote_service": c.app.service(&c.path).map(|s| s.options().remote),
            })
        });
        lock(&o).events.push(json!({
            "path": ev.path,
            "event": ev.event,
            "data": ev.data,
            "context": ctx,
        }));
    });
    let o = observed.clone();
    app.on_service_added(move |s| {
        if s.options().remote {
            lock(&o).added.push(s.path().to_owned());
        }
    });
    let o = observed.clone();
    app.on_service_removed(move |s| lock(&o).removed.push(s.path().to_owned()));
}

struct Args {
    role: String,
    env: String,
    key: String,
}

fn parse_args() -> anyhow::Result<Args> {
    let (mut role, mut env, mut key) = (None, None, None);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--role" => role = Some(value()?),
            "--env" => env = Some(value()?),
            "--key" => key = Some(value()?),
            other => bail!("unknown argument {other}"),
        }
    }
    Ok(Args {
        role: role.context("--role is required")?,
        env: env.context("--env is required")?,
        key: key.context("--key is required")?,
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .event_format(plume::trace::log::TraceFormat::new())
        .with_writer(std::io::stderr)
        .init();
    let args = parse_args()?;
    let app = App::new();
    let observed = Shared::default();
    record_events(&app, &observed);
    app.use_service_with(
        "probe",
        Probe {
            app: app.clone(),
            observed: observed.clone(),
        },
        ServiceOptions::new().methods([Method::Find, Method::Create]),
    );
    // Every event to every real-time connection (feathers-distributed's `channels` helper).
    app.publish(|_, _| vec!["anonymous".to_owned(), "authenticated".to_owned()]);

    let dist = Distribution::from_env()?
        .environment(&args.env)
        .key(&args.key)
        .timeout(Duration::from_secs(5));
    let dist = match args.role.as_str() {
        "consumer" => {
            let secret = std::env::var(plume::auth::SECRET_ENV).context("PLUME_JWT_SECRET")?;
            AuthenticationService::setup(&app, AuthConfig::new(secret).with_strategies(["jwt"]));
            let (b, a) = (observed.clone(), observed.clone());
            dist.services(false)
                .remote_service_path(|d| {
                    if d.path == "custom" {
                        "custom-name".to_owned()
                    } else {
                        d.path.clone()
                    }
                })
                .hooks(move |h| {
                    let (b, a) = (b.clone(), a.clone());
                    h.before(hook_sync(move |_| {
                        lock(&b).before += 1;
                        Ok(())
                    }))
                    .before(OptionalJwt)
                    .after(hook_sync(move |_| {
                        lock(&a).after += 1;
                        Ok(())
                    }));
                })
        }
        "noevents" => {
            app.use_service_with(
                "no-events",
                MemoryService::<Value>::new(),
                ServiceOptions::new().events(["custom"]),
            );
            dist.services(["no-events"])
                .remote_services(false)
                .publish_events(false)
        }
        other => bail!("unknown role {other}"),
    };
    let handle = dist.start(&app).await?;
    if args.role == "consumer" {
        tokio::time::timeout(Duration::from_secs(30), handle.remote_ready("users"))
            .await
            .context("the users proxy in time")?;
    }
    let listening = app.listen(("127.0.0.1", 0)).await?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(
            out,
            "READY {} {}",
            listening.local_addr().port(),
            handle.mesh().node_id()
        )?;
        out.flush()?;
    }
    let parent_gone = async {
        use tokio::io::AsyncReadExt as _;
        let mut stdin = tokio::io::stdin();
        let mut buf = [0u8; 64];
        while let Ok(n) = stdin.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    };
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        () = parent_gone => {}
        _ = term.recv() => {}
    }
    app.shutdown().await;
    Ok(())
}
