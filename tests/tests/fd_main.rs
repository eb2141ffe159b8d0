//! feathers-distributed's `test/index.test.js` (`feathers-distributed:main`, cases 1–56 of
//! `shared/peers/feathers-distributed.md` §7) ported to Plume, multi-process: the gateway (app 0,
//! key `0`) runs in this test process; apps 1 and 2 (consumers, keys `1`, `2`) and app 3 (the
//! `no-events` provider, key `3`) are `fd-node` processes on the loopback mesh. Clients are real:
//! REST over HTTP/1.1 and the official socket.io client (Node). Each step is labelled with its
//! case number; `docs/distribution-tests.md` maps every case here.
//!
//! Plume's auth decision (docs/distribution.md, "What crosses the mesh"): tokens never cross; a
//! consumer verifies the JWT (shared secret) and forwards `params.user`. So in the distributed
//! pattern the consumer's proxy hooks authenticate when the call carries a token, and the
//! provider (the gateway's `users`) refuses an external call that arrives without a user.

mod fd;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fd::{Proc, Response, Sockets, http, start_proc, unique_env, within};
use plume::auth::{AuthConfig, AuthenticationService, authenticate, hash_password};
use plume::hooks::{Hook, HookContext, hook_sync};
use plume::{
    App, Error, Id, MemoryOptions, MemoryService, Method, Params, Result, Service, ServiceOptions,
};
use plume_transport::distribution::{Distribution, NameFilter};
use serde_json::{Value, json};

const FD_NODE: &str = env!("CARGO_BIN_EXE_fd-node");

/// The gateway's `users`: a memory service (ids from 0) with a custom method `custom(data)`
/// returning `data.name`, and the option `startId` (sent to consumers as a remote option).
struct Users {
    store: MemoryService,
}

#[plume::async_trait]
impl Service for Users {
    async fn find(&self, p: Params) -> Result<Value> {
        self.store.find(p).await
    }
    async fn get(&self, id: Id, p: Params) -> Result<Value> {
        self.store.get(id, p).await
    }
    async fn create(&self, d: Value, p: Params) -> Result<Value> {
        self.store.create(d, p).await
    }
    async fn update(&self, id: Id, d: Value, p: Params) -> Result<Value> {
        self.store.update(id, d, p).await
    }
    async fn patch(&self, id: Option<Id>, d: Value, p: Params) -> Result<Value> {
        self.store.patch(id, d, p).await
    }
    async fn remove(&self, id: Option<Id>, p: Params) -> Result<Value> {
        self.store.remove(id, p).await
    }
    async fn call(&self, method: &str, data: Value, _p: Params) -> Result<Value> {
        match method {
            "custom" => Ok(data["name"].clone()),
            other => Err(Error::method_not_allowed(other.to_owned())),
        }
    }
    fn methods(&self) -> Vec<Method> {
        let mut m = Method::STANDARD.to_vec();
        m.push(Method::Custom("custom".into()));
        m
    }
    fn options(&self) -> Value {
        let mut o = self.store.options();
        o["startId"] = json!(0);
        o
    }
}

/// The service registered at run time (case 26): `create`, `update` and the custom method
/// `custom`, with the custom event `custom`.
struct Custom;

#[plume::async_trait]
impl Service for Custom {
    async fn create(&self, d: Value, _p: Params) -> Result<Value> {
        Ok(json!({"id": 0, "name": d["name"]}))
    }
    async fn update(&self, id: Id, d: Value, _p: Params) -> Result<Value> {
        Ok(json!({"id": id.to_value(), "name": d["name"]}))
    }
    async fn call(&self, _method: &str, data: Value, _p: Params) -> Result<Value> {
        Ok(data["name"].clone())
    }
    fn methods(&self) -> Vec<Method> {
        vec![
            Method::Create,
            Method::Update,
            Method::Custom("custom".into()),
        ]
    }
}

/// The gateway's `users` before hook of the test: with `check` on, an external call needs a
/// user. A local external call is authenticated with `jwt`; a call from the mesh (`from_remote`)
/// carries the user the consumer verified (tokens never cross).
struct CheckAuth {
    on: Arc<AtomicBool>,
}

#[plume::async_trait]
impl Hook for CheckAuth {
    async fn run(&self, ctx: &mut HookContext) -> Result<()> {
        if !self.on.load(Ordering::SeqCst) || ctx.params.provider.is_none() {
            return Ok(());
        }
        if ctx.params.from_remote {
            if ctx.params.user.is_none() {
                return Err(Error::not_authenticated("Not authenticated"));
            }
            return Ok(());
        }
        authenticate(["jwt"]).run(ctx).await
    }
}

fn probe_events(probe: &Value, path: &str) -> Vec<Value> {
    probe["events"]
        .as_array()
        .map(|v| v.iter().filter(|e| e["path"] == path).cloned().collect())
        .unwrap_or_default()
}

async fn probe(port: u16) -> Value {
    let r = http(port, "GET", "/probe", None, &[]).await;
    assert_eq!(r.status, 200, "{r:?}");
    r.body
}

/// Polls a node's probe until `cond` holds (bounded).
async fn probe_until(port: u16, what: &str, cond: impl Fn(&Value) -> bool) -> Value {
    within(what, async {
        loop {
            let p = probe(port).await;
            if cond(&p) {
                return p;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

fn assert_status(r: &Response, status: u16, what: &str) {
    assert_eq!(r.status, status, "{what}: {r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feathers_distributed_main_suite() {
    if !fd::node_available() {
        assert!(
            std::env::var_os("PLUME_SKIP_NODE_TESTS").is_some(),
            "node is needed (or set PLUME_SKIP_NODE_TESTS=1)"
        );
        return;
    }
    let env = unique_env("main");
    let secret = format!("fd-{}", uuid::Uuid::new_v4().simple());

    // --- the gateway (app 0) --------------------------------------------------------------
    let gw = App::new();
    let users = gw.use_service(
        "users",
        Users {
            store: MemoryService::with_options(MemoryOptions::new().start_id(0)),
        },
    );
    let seen_params = Arc::new(Mutex::new(Vec::<Value>::new()));
    let check = Arc::new(AtomicBool::new(false));
    {
        let seen = seen_params.clone();
        users
            .hooks()
            .before(hook_sync(move |ctx| {
                seen.lock().unwrap().push(json!({
                    "method": ctx.method.to_string(),
                    "from_remote": ctx.params.from_remote,
                    "provider": ctx.params.provider.map(|p| p.as_str()),
                    "user": ctx.params.user,
                }));
                Ok(())
            }))
            .before(CheckAuth { on: check.clone() })
            .before_for(
                [Method::Create, Method::Update, Method::Patch],
                hash_password("password"),
            );
    }
    for i in 0..6 {
        users
            .create(
                json!({"email": format!("user{i}@test.com"), "password": "password", "name": format!("user{i}")}),
                Params::new(),
            )
            .await
            .expect("seed");
    }
    AuthenticationService::setup(&gw, AuthConfig::new(secret.clone()));
    gw.publish(|_, _| vec!["anonymous".to_owned(), "authenticated".to_owned()]);
    let (gw_before, gw_after) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let dist = {
        let (b, a) = (gw_before.clone(), gw_after.clone());
        Distribution::new()
            .environment(&env)
            .key("0")
            .services(["users", "custom"])
            .remote_services(["no-events"])
            .remote_service_options(|path| {
                if path == "users" {
                    vec!["startId".to_owned()]
                } else {
                    Vec::new()
                }
            })
            // `custom` relays only `created` and `custom` (feathers-distributed's service-level
            // `distributedEvents: ['created', 'custom']`).
            .distributed_events(NameFilter::predicate(|path, event| {
                path != "custom" || event == "created" || event == "custom"
            }))
            .hooks(move |h| {
                let (b, a) = (b.clone(), a.clone());
                h.before(hook_sync(move |_| {
                    b.fetch_add(1, Ordering::SeqCst);
                    Ok(())
                }))
                .after(hook_sync(move |_| {
                    a.fetch_add(1, Ordering::SeqCst);
                    Ok(())
                }));
            })
            .start(&gw)
            .await
            .expect("gateway distribution")
    };
    // Case 2: HTTP routes and middleware registered after the distribution started (#140).
    let app_mw = Arc::new(AtomicU64::new(0));
    let users_mw = Arc::new(AtomicU64::new(0));
    {
        let (app_mw, users_mw) = (app_mw.clone(), users_mw.clone());
        gw.add_routes(move |r| {
            let app_mw = app_mw.clone();
            let users_mw = users_mw.clone();
            r.route(
                "/middleware",
                axum::routing::get(move || {
                    app_mw.fetch_add(1, Ordering::SeqCst);
                    async { "middleware" }
                }),
            )
            .layer(axum::middleware::from_fn(
                move |req: axum::extract::Request, next: axum::middleware::Next| {
                    if req.uri().path().starts_with("/users") {
                        users_mw.fetch_add(1, Ordering::SeqCst);
                    }
                    next.run(req)
                },
            ))
        });
    }
    assert_eq!(dist.published(), vec!["users".to_owned()], "case 2");
    let gw_port = gw
        .listen(("127.0.0.1", 0))
        .await
        .expect("listen")
        .local_addr()
        .port();

    // --- apps 1–3 --------------------------------------------------------------------------
    let vars = [("PLUME_JWT_SECRET", secret.as_str())];
    let args1 = ["--role", "consumer", "--env", &env, "--key", "1"];
    let args2 = ["--role", "consumer", "--env", &env, "--key", "2"];
    let args3 = ["--role", "noevents", "--env", &env, "--key", "3"];
    let (app1, app2, app3) = tokio::join!(
        start_proc(FD_NODE, &args1, &vars),
        start_proc(FD_NODE, &args2, &vars),
        start_proc(FD_NODE, &args3, &[]),
    );
    let port = |p: &Proc| p.ready[0].parse::<u16>().expect("port");
    let (p1, p2) = (port(&app1), port(&app2));
    within("no-events proxy", dist.remote_ready("no-events")).await;
    let mut sio = Sockets::start();

    // Case 1: the plugin's public surface: the handle is found on the App, and shuts down
    // (checked at the end).
    assert!(
        plume_transport::distribution::DistributionHandle::of(&gw).is_some(),
        "case 1"
    );
    // Case 3: a REST `users` service on every app (apps 1 and 2 through their proxies).
    for p in [gw_port, p1, p2] {
        let r = http(p, "GET", "/users", None, &[]).await;
        assert_status(&r, 200, "case 3");
        assert_eq!(r.body.as_array().map(Vec::len), Some(6), "case 3: {r:?}");
    }
    // Case 4: a socket `users` service on every app.
    for (name, p) in [("g", gw_port), ("s1", p1), ("s2", p2)] {
        sio.connect(name, p).await;
        let list = sio.ok(name, json!(["find", "users", {}])).await;
        assert_eq!(list.as_array().map(Vec::len), Some(6), "case 4 on {name}");
    }
    // remote options travel: the proxy's options carry `startId` (waitForService's check).
    let pr1 = probe(p1).await;
    assert_eq!(pr1["services"]["users"]["options"]["startId"], 0, "{pr1}");
    assert_eq!(pr1["services"]["users"]["remote"], true);
    assert!(
        pr1["services"]["users"]["methods"]
            .as_array()
            .is_some_and(|m| m.contains(&json!("custom")))
    );

    // Case 5: healthchecks per key, over REST.
    for p in [p1, p2] {
        let r = http(p, "GET", "/distribution/healthcheck/0", None, &[]).await;
        assert_status(&r, 200, "case 5");
        assert_eq!(r.body, json!({"users": true}), "case 5");
    }
    let r = http(gw_port, "GET", "/distribution/healthcheck/3", None, &[]).await;
    assert_eq!(
        (r.status, r.body),
        (200, json!({"no-events": true})),
        "case 5"
    );
    let r = http(gw_port, "GET", "/distribution/healthcheck", None, &[]).await;
    assert_eq!(
        (r.status, r.body),
        (200, json!({"no-events": true})),
        "case 5"
    );
    let r = http(gw_port, "GET", "/distribution/healthcheck/9", None, &[]).await;
    assert_eq!(r.status, 404, "case 5: unknown key");
    assert_eq!(r.body["message"], "No app registered with key 9");

    // Case 6: the app-level route/middleware runs.
    let r = http(gw_port, "GET", "/middleware", None, &[]).await;
    assert_eq!(r.status, 200, "case 6");
    assert_eq!(app_mw.load(Ordering::SeqCst), 1, "case 6");

    // Cases 7–12: REST calls from app 1's proxy to the gateway, without auth.
    seen_params.lock().unwrap().clear();
    let r = http(p1, "GET", "/users", None, &[]).await;
    assert!(r.body.as_array().is_some_and(|a| !a.is_empty()), "case 7");
    let r = http(p1, "GET", "/users/1", None, &[]).await;
    assert_eq!(r.body["id"], 1, "case 8: {r:?}");
    let r = http(p1, "POST", "/users", Some(&json!({"name": "rest"})), &[]).await;
    assert_eq!((r.status, r.body["id"].clone()), (201, json!(6)), "case 9");
    let r = http(
        p1,
        "PUT",
        "/users/6",
        Some(&json!({"name": "updated"})),
        &[],
    )
    .await;
    assert_eq!(r.body["name"], "updated", "case 10: {r:?}");
    let r = http(
        p1,
        "PATCH",
        "/users/6",
        Some(&json!({"name": "patched"})),
        &[],
    )
    .await;
    assert_eq!(r.body["name"], "patched", "case 11: {r:?}");
    let r = http(p1, "DELETE", "/users/6", None, &[]).await;
    assert_eq!(r.body["id"], 6, "case 12: {r:?}");
    assert!(
        users.get(6, Params::new()).await.is_err(),
        "case 12: removed"
    );
    // Case 13: the `hooks` option ran on app 1's proxy (before and after, once per call).
    let pr1 = probe(p1).await;
    assert!(
        pr1["before"].as_u64() >= Some(6) && pr1["after"].as_u64() >= Some(6),
        "case 13: {pr1}"
    );
    // Case 14: the provider saw `from_remote` (and the REST provider) on those calls.
    {
        let seen = seen_params.lock().unwrap();
        let remote: Vec<_> = seen.iter().filter(|p| p["provider"] == "rest").collect();
        assert_eq!(remote.len(), 6, "case 14: {seen:?}");
        assert!(
            remote.iter().all(|p| p["from_remote"] == true),
            "case 14: {seen:?}"
        );
    }
    // Case 15: the per-service middleware of the gateway's `users` route runs.
    let before = users_mw.load(Ordering::SeqCst);
    let r = http(gw_port, "GET", "/users", None, &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(users_mw.load(Ordering::SeqCst), before + 1, "case 15");

    // Cases 16–21: socket calls on app 1's proxy, without auth.
    let found = sio.ok("s1", json!(["find", "users", {}])).await;
    assert!(found.as_array().is_some_and(|a| !a.is_empty()), "case 16");
    assert_eq!(
        sio.ok("s1", json!(["get", "users", 1, {}])).await["id"],
        1,
        "case 17"
    );
    let made = sio
        .ok("s1", json!(["create", "users", {"name": "socket"}, {}]))
        .await;
    assert_eq!(made["id"], 7, "case 18");
    let up = sio
        .ok("s1", json!(["update", "users", 7, {"name": "updated"}, {}]))
        .await;
    assert_eq!(up["name"], "updated", "case 19");
    let pa = sio
        .ok("s1", json!(["patch", "users", 7, {"name": "patched"}, {}]))
        .await;
    assert_eq!(pa["name"], "patched", "case 20");
    let rm = sio.ok("s1", json!(["remove", "users", 7, {}])).await;
    assert_eq!(rm["id"], 7, "case 21");
    assert!(
        seen_params
            .lock()
            .unwrap()
            .iter()
            .any(|p| p["provider"] == "socketio")
    );

    // Cases 22–25: events of mutations on the gateway reach app 1's and app 2's socket clients
    // and the server-side proxies, each exactly once, with their context.
    events_round(&mut sio, p1, 8, None).await;

    // Case 26: a service registered at run time appears (renamed) on apps 1 and 2 with its
    // custom method.
    gw.use_service_with(
        "custom",
        Custom,
        ServiceOptions::new()
            .methods([Method::Create, Method::Update, Method::from_name("custom")])
            .events(["custom"]),
    );
    for p in [p1, p2] {
        let pr = probe_until(p, "custom-name on a consumer", |pr| {
            pr["services"]["custom-name"]["remote"] == true
        })
        .await;
        assert!(
            pr["added"]
                .as_array()
                .is_some_and(|a| a.contains(&json!("custom-name")))
        );
        assert_eq!(
            pr["services"]["custom-name"]["methods"],
            json!(["create", "update", "custom"]),
            "case 26"
        );
        assert!(pr["services"].get("custom").is_none(), "case 26: renamed");
    }
    // Case 27: server-side custom calls through the proxies.
    for p in [p1, p2] {
        let r = http(
            p,
            "POST",
            "/probe",
            Some(&json!({"path": "custom-name", "method": "custom", "data": {"name": "server"}})),
            &[],
        )
        .await;
        assert_eq!(r.body, json!({"result": "server"}), "case 27");
    }
    // Case 28: REST custom call (a late route: no 404, §9 #3).
    for p in [p1, p2] {
        let r = http(
            p,
            "POST",
            "/custom-name",
            Some(&json!({"name": "rest"})),
            &[("X-Service-Method", "custom")],
        )
        .await;
        assert_eq!(
            (r.status, r.body.clone()),
            (200, json!("rest")),
            "case 28: {r:?}"
        );
    }
    // Case 29: socket custom call.
    for name in ["s1", "s2"] {
        let v = sio
            .ok(
                name,
                json!(["custom", "custom-name", {"name": "socket"}, {}]),
            )
            .await;
        assert_eq!(v, "socket", "case 29");
    }
    // Case 30: `created` and the custom event travel, `updated` (not distributed) does not.
    sio.clear("s1").await;
    sio.clear("s2").await;
    let custom = gw.service("custom").expect("custom");
    custom
        .create(json!({"name": "ev"}), Params::new())
        .await
        .expect("create");
    let got = sio.wait("s1", "custom-name created", 1).await;
    assert_eq!(got[0][0], json!({"id": 0, "name": "ev"}), "case 30");
    custom
        .update(0, json!({"name": "up"}), Params::new())
        .await
        .expect("update");
    custom.emit("custom", json!({"payload": true}));
    for name in ["s1", "s2"] {
        let got = sio.wait(name, "custom-name custom", 1).await;
        assert_eq!(got[0][0], json!({"payload": true}), "case 30");
        // Events of one provider arrive in order: `custom` came after `updated` would have.
        let seen = sio.seen(name).await;
        assert!(
            !seen.iter().any(|e| e[0] == "custom-name updated"),
            "case 30: {seen:?}"
        );
    }
    let pr1 = probe_until(p1, "custom event on app 1's proxy", |pr| {
        probe_events(pr, "custom-name")
            .iter()
            .any(|e| e["event"] == "custom")
    })
    .await;
    let evs = probe_events(&pr1, "custom-name");
    let ev = evs.iter().find(|e| e["event"] == "custom").expect("custom");
    assert_eq!(ev["data"], json!({"payload": true}), "case 30");
    assert_eq!(ev["context"]["path"], "custom-name", "case 30: {ev}");
    assert_eq!(ev["context"]["remote_service"], true, "case 30: {ev}");
    assert!(!evs.iter().any(|e| e["event"] == "updated"), "case 30");
    assert_eq!(
        evs.iter().filter(|e| e["event"] == "created").count(),
        1,
        "case 30"
    );

    // Cases 31–32: unknown paths are 404 NotFound, locally and on a consumer.
    for p in [gw_port, p1] {
        let r = http(p, "GET", "/xxx", None, &[]).await;
        assert_eq!(r.status, 404, "cases 31/32");
        assert_eq!(r.body["name"], "NotFound", "cases 31/32: {r:?}");
        assert_eq!(r.body["className"], "not-found");
    }
    // §9: errors keep their class across the mesh.
    let r = http(p1, "GET", "/users/999", None, &[]).await;
    assert_eq!(
        (r.status, r.body["name"].clone()),
        (404, json!("NotFound")),
        "{r:?}"
    );

    // Cases 33–36: with authentication checked, anonymous calls are 401, locally and remotely.
    check.store(true, Ordering::SeqCst);
    let e = sio.err("g", json!(["find", "users", {}])).await;
    assert_eq!(e["code"], 401, "case 33: {e}");
    let r = http(gw_port, "GET", "/users", None, &[]).await;
    assert_eq!(
        (r.status, r.body["name"].clone()),
        (401, json!("NotAuthenticated")),
        "case 34"
    );
    let e = sio.err("s1", json!(["find", "users", {}])).await;
    assert_eq!(e["code"], 401, "case 35: {e}");
    let r = http(p1, "GET", "/users", None, &[]).await;
    assert_eq!(
        (r.status, r.body["name"].clone()),
        (401, json!("NotAuthenticated")),
        "case 36"
    );

    // Case 37: REST login: local on the gateway, then JWT on apps 1 and 2 with that token (shared
    // secret; the JWT strategy reads the user through app N's `users` proxy).
    let login = http(
        gw_port,
        "POST",
        "/authentication",
        Some(&json!({"strategy": "local", "email": "user1@test.com", "password": "password"})),
        &[],
    )
    .await;
    assert_eq!(login.status, 201, "case 37: {login:?}");
    let token = login.body["accessToken"]
        .as_str()
        .expect("token")
        .to_owned();
    for p in [p1, p2] {
        let r = http(
            p,
            "POST",
            "/authentication",
            Some(&json!({"strategy": "jwt", "accessToken": token})),
            &[],
        )
        .await;
        assert_eq!(r.status, 201, "case 37: {r:?}");
        assert_eq!(r.body["user"]["email"], "user1@test.com", "case 37");
        assert!(r.body["accessToken"].is_string(), "case 37");
    }
    // Case 38: the same over socket.io.
    let g_login = sio
        .ok(
            "g",
            json!(["create", "authentication", {"strategy": "local", "email": "user1@test.com", "password": "password"}, {}]),
        )
        .await;
    assert_eq!(g_login["user"]["id"], 1, "case 38");
    for name in ["s1", "s2"] {
        let l = sio
            .ok(
                name,
                json!(["create", "authentication", {"strategy": "jwt", "accessToken": token}, {}]),
            )
            .await;
        assert_eq!(l["user"]["email"], "user1@test.com", "case 38");
    }

    // Cases 39–44: authenticated REST calls through app 1's proxy; the provider gets the user.
    let bearer = format!("Bearer {token}");
    let auth = [("Authorization", bearer.as_str())];
    seen_params.lock().unwrap().clear();
    let r = http(p1, "GET", "/users", None, &auth).await;
    assert_eq!(r.status, 200, "case 39: {r:?}");
    let r = http(p1, "GET", "/users/1", None, &auth).await;
    assert_eq!(r.body["id"], 1, "case 40");
    let r = http(
        p1,
        "POST",
        "/users",
        Some(&json!({"name": "rest-auth"})),
        &auth,
    )
    .await;
    assert_eq!(
        (r.status, r.body["id"].clone()),
        (201, json!(9)),
        "case 41: {r:?}"
    );
    let r = http(p1, "PUT", "/users/9", Some(&json!({"name": "u"})), &auth).await;
    assert_eq!(r.body["name"], "u", "case 42");
    let r = http(p1, "PATCH", "/users/9", Some(&json!({"name": "p"})), &auth).await;
    assert_eq!(r.body["name"], "p", "case 43");
    let r = http(p1, "DELETE", "/users/9", None, &auth).await;
    assert_eq!(r.body["id"], 9, "case 44");
    {
        let seen = seen_params.lock().unwrap();
        let remote: Vec<_> = seen.iter().filter(|p| p["provider"] == "rest").collect();
        assert_eq!(remote.len(), 6, "cases 39–44: {seen:?}");
        assert!(
            remote
                .iter()
                .all(|p| p["user"]["id"] == 1 && p["from_remote"] == true),
            "cases 39–44: the user crossed: {seen:?}"
        );
    }
    // Cases 45–50: authenticated socket calls through app 1's proxy.
    assert!(
        sio.ok("s1", json!(["find", "users", {}])).await.is_array(),
        "case 45"
    );
    assert_eq!(
        sio.ok("s1", json!(["get", "users", 1, {}])).await["id"],
        1,
        "case 46"
    );
    let made = sio
        .ok(
            "s1",
            json!(["create", "users", {"name": "socket-auth"}, {}]),
        )
        .await;
    assert_eq!(made["id"], 10, "case 47");
    let up = sio
        .ok("s1", json!(["update", "users", 10, {"name": "u"}, {}]))
        .await;
    assert_eq!(up["name"], "u", "case 48");
    let pa = sio
        .ok("s1", json!(["patch", "users", 10, {"name": "p"}, {}]))
        .await;
    assert_eq!(pa["name"], "p", "case 49");
    assert_eq!(
        sio.ok("s1", json!(["remove", "users", 10, {}])).await["id"],
        10,
        "case 50"
    );
    // Cases 51–54: events with auth: the context's user is the gateway's user record, without
    // its protected fields (feathers-distributed sends the password hash along; Plume never
    // lets it leave the gateway).
    let mut user1 = users.get(1, Params::new()).await.expect("user 1");
    assert!(
        user1["password"].is_string(),
        "the stored record has its hash"
    );
    if let Some(record) = user1.as_object_mut() {
        record.remove("password");
    }
    events_round(&mut sio, p1, 11, Some(user1)).await;

    // Case 55: events publishing disabled on app 3: its descriptor advertises no events (not
    // even its declared `custom`), the gateway's proxy has none, and a mutation there relays
    // nothing (checked after a healthcheck round trip on the same link).
    let providers = dist.providers("no-events");
    assert_eq!(providers.len(), 1);
    assert_eq!(providers[0].descriptor["events"], json!([]), "case 55");
    let no_events = gw.service("no-events").expect("proxy");
    assert!(
        !no_events.events().iter().any(|e| e == "custom"),
        "case 55: {:?}",
        no_events.events()
    );
    let relayed = Arc::new(AtomicU64::new(0));
    {
        let relayed = relayed.clone();
        gw.on_event(move |ev| {
            if ev.path == "no-events" {
                relayed.fetch_add(1, Ordering::SeqCst);
            }
        });
    }
    no_events
        .create(json!({"text": "quiet"}), Params::new())
        .await
        .expect("create on app 3");
    let hc = gw.service("distribution/healthcheck").expect("healthcheck");
    hc.get("3", Params::new()).await.expect("healthy");
    assert_eq!(relayed.load(Ordering::SeqCst), 0, "case 55");
    // …whereas app 1's users events do arrive (case 22 above), so the subscriber side works.

    // Case 56: unuse on the gateway removes the proxy on every consumer at once.
    assert!(gw.unuse("custom").is_some());
    assert!(gw.service("custom").is_none(), "case 56");
    for p in [p1, p2] {
        let pr = probe_until(p, "custom-name removed", |pr| {
            pr["services"].get("custom-name").is_none()
        })
        .await;
        assert!(
            pr["removed"]
                .as_array()
                .is_some_and(|a| a.contains(&json!("custom-name"))),
            "case 56: {pr}"
        );
        let r = http(
            p,
            "POST",
            "/custom-name",
            Some(&json!({"name": "x"})),
            &[("X-Service-Method", "custom")],
        )
        .await;
        assert_eq!(r.status, 404, "case 56");
    }
    // …and only that proxy: `users` is untouched on the consumers (no cascade, §9).
    let r = http(p1, "GET", "/users", None, &auth).await;
    assert_eq!(r.status, 200);

    // Case 13 (gateway side): the gateway's own proxy (`no-events`) ran the `hooks` option.
    assert!(gw_before.load(Ordering::SeqCst) >= 1 && gw_after.load(Ordering::SeqCst) >= 1);

    sio.close().await;
    dist.shutdown().await;
    gw.shutdown().await;
    drop((app1, app2, app3));
}

/// Cases 22–25 (without auth, ids from `first`) and 51–54 (with `user`): create, update, patch
/// and remove through the gateway's socket client; each event reaches the socket clients of
/// apps 1 and 2 exactly once and app 1's proxy with its context.
async fn events_round(sio: &mut Sockets, p1: u16, first: i64, user: Option<Value>) {
    let base = probe_events(&probe(p1).await, "users").len();
    for name in ["s1", "s2"] {
        sio.clear(name).await;
    }
    let id = first;
    let q = json!({"id": id});
    let made = sio
        .ok("g", json!(["create", "users", {"name": "ev"}, {}]))
        .await;
    assert_eq!(made["id"], id);
    sio.ok("g", json!(["update", "users", id, {"name": "ev-u"}, q]))
        .await;
    sio.ok("g", json!(["patch", "users", id, {"name": "ev-p"}, q]))
        .await;
    sio.ok("g", json!(["remove", "users", id, q])).await;
    for name in ["s1", "s2"] {
        sio.wait(name, "users removed", 1).await;
        let seen: Vec<_> = sio
            .seen(name)
            .await
            .into_iter()
            .filter(|e| e[0].as_str().is_some_and(|s| s.starts_with("users ")))
            // Events of earlier calls may still be arriving: keep this record's.
            .filter(|e| e[1]["id"] == id)
            .collect();
        let names: Vec<_> = seen.iter().map(|e| e[0].clone()).collect();
        assert_eq!(
            names,
            vec![
                json!("users created"),
                json!("users updated"),
                json!("users patched"),
                json!("users removed")
            ],
            "cases 22–25 on {name}: each event once, in order"
        );
    }
    let pr = probe_until(p1, "four events on app 1's proxy", |pr| {
        probe_events(pr, "users")[base..]
            .iter()
            .filter(|e| e["data"]["id"] == id)
            .count()
            >= 4
    })
    .await;
    let evs: Vec<_> = probe_events(&pr, "users")[base..]
        .iter()
        .filter(|e| e["data"]["id"] == id)
        .cloned()
        .collect();
    assert_eq!(evs.len(), 4, "no duplicates: {evs:?}");
    for (ev, (event, method)) in evs.iter().zip([
        ("created", "create"),
        ("updated", "update"),
        ("patched", "patch"),
        ("removed", "remove"),
    ]) {
        assert_eq!(ev["event"], event, "{ev}");
        let ctx = &ev["context"];
        assert_eq!(ctx["method"], method, "{ev}");
        assert_eq!(ctx["path"], "users");
        assert_eq!(ctx["result"], ev["data"], "{ev}");
        assert_eq!(ctx["remote_service"], true);
        if method != "create" {
            assert_eq!(ctx["query"], json!({"id": id}), "{ev}");
        }
        if method == "remove" {
            assert_eq!(ctx["id"], id, "{ev}");
        }
        match &user {
            Some(u) => assert_eq!(&ctx["user"], u, "cases 51–54: {ev}"),
            None => assert!(ctx["user"].is_null(), "{ev}"),
        }
    }
}
