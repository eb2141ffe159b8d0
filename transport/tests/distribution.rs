//! In-process multi-App tests of the distribution plugin: several Apps, each with its own mesh
//! node on loopback discovery, in an environment of their own.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use plume::hooks::{HookContext, hook_sync};
use plume::{
    App, Error, ErrorKind, Id, MemoryService, Method, Params, Result, Service, ServiceOptions,
    async_trait,
};
use plume_transport::distribution::{
    AppDistributionExt, Distribution, DistributionHandle, ServiceFilter,
};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(10);

fn env(name: &str) -> String {
    format!("dist-{name}-{}-{:08x}", std::process::id(), rand_u32())
}

fn rand_u32() -> u32 {
    // Unique enough per test run: address of a fresh allocation mixed with the time.
    let b = Box::new(0u8);
    let addr = std::ptr::addr_of!(*b) as usize as u64;
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or(0);
    ((addr ^ t.rotate_left(17)) & 0xffff_ffff) as u32
}

async fn within<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    match timeout(WAIT, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out waiting for {what}"),
    }
}

async fn start(app: &App, d: Distribution) -> DistributionHandle {
    d.start(app).await.expect("distribution starts")
}

fn todos() -> MemoryService<Value> {
    MemoryService::new()
}

/// A service that records the params of every call and answers with them.
#[derive(Clone, Default)]
struct Recorder {
    seen: Arc<Mutex<Vec<Params>>>,
}

#[async_trait]
impl Service for Recorder {
    async fn find(&self, params: Params) -> Result<Value> {
        self.seen.lock().unwrap().push(params);
        Ok(json!([]))
    }
    async fn get(&self, id: Id, _params: Params) -> Result<Value> {
        match id {
            Id::Int(409) => Err(Error::conflict("taken").with_data(json!({"id": 409}))),
            Id::Int(500) => Err(Error::internal("database exploded")),
            other => Ok(json!({"id": other})),
        }
    }
    async fn call(&self, method: &str, data: Value, _params: Params) -> Result<Value> {
        match method {
            "echo" => Ok(json!({"echo": data})),
            "secret" => Ok(json!("should never be reachable remotely")),
            _ => Err(Error::method_not_allowed(method.to_owned())),
        }
    }
    fn methods(&self) -> Vec<Method> {
        let mut m = Method::STANDARD.to_vec();
        m.push(Method::Custom("echo".into()));
        m.push(Method::Custom("secret".into()));
        m
    }
    fn events(&self) -> Vec<String> {
        vec!["archived".into()]
    }
    fn options(&self) -> Value {
        json!({"startId": 6, "internal": "do not send"})
    }
}

/// Collect the paths passed to on_service_added / on_service_removed.
fn lifecycle(app: &App) -> (mpsc::Receiver<String>, mpsc::Receiver<String>) {
    let (atx, arx) = mpsc::channel(256);
    let (rtx, rrx) = mpsc::channel(256);
    app.on_service_added(move |h| {
        let _ = atx.try_send(h.path().to_owned());
    });
    app.on_service_removed(move |h| {
        let _ = rtx.try_send(h.path().to_owned());
    });
    (arx, rrx)
}

async fn wait_path(rx: &mut mpsc::Receiver<String>, path: &str) {
    within(path, async {
        while let Some(p) = rx.recv().await {
            if p == path {
                return;
            }
        }
        panic!("lifecycle channel closed");
    })
    .await;
}

async fn wait_paths(rx: &mut mpsc::Receiver<String>, paths: &[&str]) {
    let mut missing: Vec<&str> = paths.to_vec();
    within("paths", async {
        while !missing.is_empty() {
            let p = rx.recv().await.expect("lifecycle channel open");
            missing.retain(|m| *m != p);
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxies_mount_forward_every_method_and_keep_error_classes() {
    let e = env("methods");
    let provider = App::new();
    provider.use_service("todos", todos());
    let recorder = Recorder::default();
    provider.use_service("recorder", recorder.clone());
    let from_remote = Arc::new(Mutex::new(Vec::new()));
    let seen = from_remote.clone();
    provider
        .service("todos")
        .unwrap()
        .hooks()
        .before(hook_sync(move |ctx: &mut HookContext| {
            seen.lock().unwrap().push(ctx.params.from_remote);
            Ok(())
        }));
    let p = start(
        &provider,
        Distribution::new()
            .environment(&e)
            .key("svc")
            .remote_services(false)
            .forward_extras(["tenant"]),
    )
    .await;

    let gateway = App::new();
    let (mut added, _removed) = lifecycle(&gateway);
    let g = start(
        &gateway,
        Distribution::new()
            .environment(&e)
            .key("gw")
            .services(false)
            .forward_extras(["tenant"]),
    )
    .await;
    wait_paths(&mut added, &["todos", "recorder"]).await;
    within("todos ready", g.remote_ready("todos")).await;
    within("recorder ready", g.remote_ready("recorder")).await;

    let proxy = gateway.service("todos").expect("proxy mounted");
    assert!(proxy.options().remote, "a proxy is marked remote");
    let created = proxy
        .create(json!({"title": "a"}), Params::new())
        .await
        .expect("create");
    let id = Id::from_value(&created["id"]).expect("id");
    assert_eq!(
        proxy.get(id.clone(), Params::new()).await.expect("get")["title"],
        "a"
    );
    // Nothing on a proxy reads a result (the plugin adds no after or around hook), so REST sends
    // a reply's JSON text as it came (`Forward::forward_json`); it is what the value encodes to.
    let hooks = format!("{:?}", proxy.hooks());
    assert!(
        hooks.contains("around: 0") && hooks.contains("after: 0"),
        "{hooks}"
    );
    let uri = format!("/todos/{id}");
    let response = tower::ServiceExt::oneshot(
        gateway.clone().into_router(),
        http::Request::get(uri.as_str())
            .body(axum::body::Body::empty())
            .expect("request"),
    )
    .await
    .expect("infallible");
    assert_eq!(response.status(), http::StatusCode::OK);
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("body");
    assert_eq!(
        body.as_ref(),
        serde_json::to_vec(&created).expect("encodes").as_slice()
    );
    let found = proxy
        .find(Params::new().with_query(json!({"title": "a"})))
        .await
        .expect("find");
    assert_eq!(found.as_array().map(Vec::len), Some(1));
    let updated = proxy
        .update(id.clone(), json!({"title": "b"}), Params::new())
        .await
        .expect("update");
    assert_eq!(updated["title"], "b");
    let patched = proxy
        .patch(Some(id.clone()), json!({"done": true}), Params::new())
        .await
        .expect("patch");
    assert_eq!(patched["done"], true);
    let removed = proxy
        .remove(Some(id.clone()), Params::new())
        .await
        .expect("remove");
    assert_eq!(removed["id"], created["id"]);
    assert!(from_remote.lock().unwrap().iter().all(|f| *f));
    assert_eq!(
        from_remote.lock().unwrap().len(),
        7,
        "six calls and the REST get"
    );
    // The record is gone on the provider itself.
    let err = provider
        .service("todos")
        .unwrap()
        .get(id, Params::new())
        .await
        .expect_err("removed");
    assert_eq!(err.kind(), ErrorKind::NotFound);

    // Errors keep their class, message and data; a 5xx cause is not sent.
    let rec = gateway.service("recorder").expect("recorder proxy");
    let err = rec.get(409, Params::new()).await.expect_err("conflict");
    assert_eq!(err.kind(), ErrorKind::Conflict);
    assert_eq!(err.message(), "taken");
    assert_eq!(err.data(), Some(&json!({"id": 409})));
    let err = rec.get(500, Params::new()).await.expect_err("internal");
    assert_eq!(err.kind(), ErrorKind::GeneralError);
    assert!(!err.message().contains("exploded"));
    let err = rec
        .get(999_999, Params::new())
        .await
        .map(|v| v["id"].clone());
    assert_eq!(err.expect("get"), json!(999_999));
    let err = proxy
        .get(424_242, Params::new())
        .await
        .expect_err("missing record");
    assert_eq!(err.kind(), ErrorKind::NotFound);

    // Custom methods cross; the params schema is explicit.
    assert_eq!(
        rec.call("echo", json!({"x": 1}), Params::new())
            .await
            .expect("echo"),
        json!({"echo": {"x": 1}})
    );
    let mut params = Params::new()
        .with_query(json!({"q": 1}))
        .with_provider(plume::Provider::Rest)
        .with_user(json!({"id": 7, "email": "a@b"}));
    params.authentication = Some(
        json!({"strategy": "jwt", "accessToken": "SECRET-TOKEN", "payload": {"sub": "7"}}).into(),
    );
    params
        .headers
        .insert("authorization", "Bearer SECRET-TOKEN".parse().unwrap());
    params.route.insert("userId".into(), json!("5"));
    params.extra.insert("tenant".into(), json!("acme"));
    params.extra.insert("private".into(), json!("stays here"));
    rec.find(params).await.expect("find with params");
    let got = recorder.seen.lock().unwrap().pop().expect("recorded");
    assert_eq!(got.query.get("q"), Some(&json!(1)));
    assert_eq!(got.route.get("userId"), Some(&json!("5")));
    assert_eq!(got.provider, Some(plume::Provider::Rest));
    assert_eq!(got.user.as_deref(), Some(&json!({"id": 7, "email": "a@b"})));
    assert_eq!(
        got.authentication.as_deref(),
        Some(&json!({"strategy": "jwt", "payload": {"sub": "7"}}))
    );
    assert!(got.headers.is_empty(), "headers never cross");
    assert!(got.connection.is_none());
    assert!(got.from_remote);
    assert_eq!(got.extra.get("tenant"), Some(&json!("acme")));
    assert!(!got.extra.contains_key("private"));

    // Proxies never republish: the gateway publishes nothing, the provider sees one provider.
    assert!(g.published().is_empty());
    assert_eq!(p.mesh().providers("svc:todos").len(), 1);
    assert_eq!(g.providers("todos").len(), 1);
    assert_eq!(g.providers("todos")[0].key, "svc");

    gateway.shutdown().await;
    provider.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unexposed_paths_and_methods_are_refused_by_the_provider() {
    let e = env("exposure");
    let provider = App::new();
    provider.use_service("public", Recorder::default());
    provider.use_service("internal", Recorder::default());
    provider.use_service_with(
        "readonly",
        Recorder::default(),
        ServiceOptions::new().methods([Method::Find, Method::Get]),
    );
    let p = start(
        &provider,
        Distribution::new()
            .environment(&e)
            .key("svc")
            .services(["public", "readonly"])
            .distributed_methods(["echo"]),
    )
    .await;
    let consumer = App::new();
    let c = start(&consumer, Distribution::new().environment(&e).key("c")).await;
    within("public", c.remote_ready("public")).await;
    within("readonly", c.remote_ready("readonly")).await;
    assert!(consumer.service("internal").is_none(), "not published");

    let node = c.providers("public")[0].node;
    let mesh = c.mesh();
    let body = json!({"params": {}});
    let opts = plume_transport::CallOptions::default();
    // A peer that forges a call to an unpublished path gets NotFound at once.
    let err = mesh
        .to("svc:internal")
        .method("find")
        .on(node)
        .options(opts)
        .send(&body)
        .await
        .expect_err("internal refused");
    assert_eq!(err.kind(), ErrorKind::NotFound);
    // A method the service does not expose: MethodNotAllowed.
    let err = mesh
        .to("svc:readonly")
        .method("remove")
        .on(node)
        .options(opts)
        .send(&json!({"id": 1, "params": {}}))
        .await
        .expect_err("remove refused");
    assert_eq!(err.kind(), ErrorKind::MethodNotAllowed);
    // A custom method that is not distributed: MethodNotAllowed from the provider...
    let err = mesh
        .to("svc:public")
        .method("secret")
        .on(node)
        .options(opts)
        .send(&body)
        .await
        .expect_err("secret refused");
    assert_eq!(err.kind(), ErrorKind::MethodNotAllowed);
    // A body that is not a call body: BadRequest from the provider (the link stays up: the calls
    // below go through it), and the same for a call the provider makes to itself.
    for bad in [
        json!({"id": true, "params": {}}),
        json!({"params": "none"}),
        json!(7),
    ] {
        let err = mesh
            .to("svc:public")
            .method("get")
            .on(node)
            .options(opts)
            .send(&bad)
            .await
            .expect_err("malformed body");
        assert_eq!(err.kind(), ErrorKind::BadRequest, "{bad}");
        assert!(err.message().contains("malformed call body"), "{err:?}");
        let own = p.mesh();
        let err = own
            .to("svc:public")
            .method("get")
            .on(own.node_id())
            .options(opts)
            .send(&bad)
            .await
            .expect_err("malformed body, local");
        assert_eq!(err.kind(), ErrorKind::BadRequest);
    }
    // ... and from the proxy, never a timeout.
    let public = consumer.service("public").unwrap();
    assert!(!public.methods().contains(&Method::Custom("secret".into())));
    let err = public
        .call("secret", json!({}), Params::new())
        .await
        .expect_err("secret refused");
    assert_eq!(err.kind(), ErrorKind::MethodNotAllowed);
    assert_eq!(
        public
            .call("echo", json!(1), Params::new())
            .await
            .expect("echo"),
        json!({"echo": 1})
    );
    let err = consumer
        .service("readonly")
        .unwrap()
        .remove(Some(Id::Int(1)), Params::new())
        .await
        .expect_err("remove on proxy");
    assert_eq!(err.kind(), ErrorKind::MethodNotAllowed);

    consumer.shutdown().await;
    provider.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_relayed_exactly_once_without_echo() {
    let e = env("events");
    // a provides `alpha` and consumes `beta`; b provides `beta` and consumes `alpha`.
    let a = App::new();
    a.use_service("alpha", todos());
    let b = App::new();
    b.use_service("beta", Recorder::default());
    let da = start(&a, Distribution::new().environment(&e).key("a")).await;
    let db = start(
        &b,
        Distribution::new()
            .environment(&e)
            .key("b")
            .distributed_events(["created", "archived"]),
    )
    .await;
    within("alpha on b", db.remote_ready("alpha")).await;
    within("beta on a", da.remote_ready("beta")).await;

    let count = |app: &App, path: &'static str, event: &'static str| {
        let n = Arc::new(AtomicUsize::new(0));
        let m = n.clone();
        app.on_event(move |ev| {
            if ev.path == path && ev.event == event {
                m.fetch_add(1, Ordering::SeqCst);
            }
        });
        n
    };
    let a_created = count(&a, "alpha", "created");
    let b_created = count(&b, "alpha", "created");
    let b_patched = count(&b, "alpha", "patched");
    let (ctx_tx, mut ctx_rx) = mpsc::channel(256);
    // Registered after the counters: app-wide listeners run in registration order.
    b.on_event(move |ev| {
        if ev.path == "alpha" && ev.event == "created" {
            let _ = ctx_tx.try_send((ev.data.clone(), ev.context.clone()));
        }
    });

    let local = a.service("alpha").unwrap();
    for i in 0..3 {
        local
            .create(json!({"n": i}), Params::new().with_query(json!({"tag": i})))
            .await
            .unwrap();
    }
    let remote = b.service("alpha").unwrap();
    for i in 3..5 {
        remote.create(json!({"n": i}), Params::new()).await.unwrap();
    }
    local
        .patch(Some(Id::Int(0)), json!({"x": 1}), Params::new())
        .await
        .ok();
    // Events of one topic arrive in order: the sentinel is the last `created`.
    local
        .create(json!({"sentinel": true}), Params::new())
        .await
        .unwrap();
    let mut contexts = Vec::new();
    within("sentinel", async {
        while let Some((data, ctx)) = ctx_rx.recv().await {
            let done = data["sentinel"] == true;
            contexts.push((data, ctx));
            if done {
                return;
            }
        }
    })
    .await;
    assert_eq!(
        b_created.load(Ordering::SeqCst),
        6,
        "each event exactly once"
    );
    assert_eq!(contexts.len(), 6);
    assert_eq!(
        a_created.load(Ordering::SeqCst),
        6,
        "no echo back to the provider"
    );
    assert_eq!(
        b_patched.load(Ordering::SeqCst),
        0,
        "patched is not distributed to b"
    );
    let (data, ctx) = &contexts[1];
    assert_eq!(data["n"], 1);
    let ctx = ctx.as_ref().expect("context travels");
    assert_eq!(ctx.method, Method::Create);
    assert_eq!(ctx.path, "alpha");
    assert_eq!(ctx.params.query.get("tag"), Some(&json!(1)));
    assert_eq!(ctx.event.as_deref(), Some("created"));
    assert!(ctx.app.ptr_eq(&b));

    // Custom events cross too, with their data intact (arrays and scalars are not merged).
    let beta_on_a = a.service("beta").unwrap();
    let (custom_tx, mut custom_rx) = mpsc::channel(256);
    beta_on_a.on("archived", move |ev| {
        let _ = custom_tx.try_send(ev.data.clone());
    });
    b.service("beta")
        .unwrap()
        .emit("archived", json!([1, 2, 3]));
    let got = within("archived", custom_rx.recv()).await;
    assert_eq!(got, Some(json!([1, 2, 3])));

    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_one_keys_last_replica_leaves_other_keys_alone() {
    let e = env("keys");
    let pa = App::new();
    pa.use_service("shared", Recorder::default());
    pa.use_service("only-a", Recorder::default());
    let pb = App::new();
    pb.use_service("shared", Recorder::default());
    pb.use_service("only-b", Recorder::default());
    let no_consume = || Distribution::new().environment(&e).remote_services(false);
    let _a = start(&pa, no_consume().key("a")).await;
    let _b = start(&pb, no_consume().key("b")).await;
    let g1 = App::new();
    let (_added, mut removed1) = lifecycle(&g1);
    let d1 = start(&g1, Distribution::new().environment(&e).key("g")).await;
    let g2 = App::new();
    let d2 = start(&g2, Distribution::new().environment(&e).key("g")).await;
    for d in [&d1, &d2] {
        for p in ["shared", "only-a", "only-b"] {
            within(p, d.remote_ready(p)).await;
        }
    }
    within("two providers", async {
        while d1.providers("shared").len() < 2 {
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    let mut keys: Vec<String> = d1.providers("shared").into_iter().map(|p| p.key).collect();
    keys.sort();
    assert_eq!(keys, ["a", "b"], "two keys provide one path");

    // A consumer dropping its proxy does not cascade to other consumers.
    g1.unuse("only-b");
    wait_path(&mut removed1, "only-b").await;
    assert!(g2.service("only-b").is_some());
    g2.service("only-b")
        .unwrap()
        .get(1, Params::new())
        .await
        .expect("g2's proxy still works");

    // Key a's only node leaves.
    pa.shutdown().await;
    within("only-a in grace", async {
        while d2.remote_ready("only-a").now_or_never_ready() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    let err = g2
        .service("only-a")
        .expect("still mounted during grace")
        .get(1, Params::new())
        .await
        .expect_err("503");
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    // Other keys' proxies are untouched, and `shared` is served by key b.
    for _ in 0..4 {
        g2.service("shared")
            .unwrap()
            .get(1, Params::new())
            .await
            .expect("shared still served");
    }
    assert_eq!(d2.providers("shared").len(), 1);
    g2.service("only-b")
        .unwrap()
        .get(2, Params::new())
        .await
        .expect("only-b untouched");

    for app in [g1, g2, pb] {
        app.shutdown().await;
    }
}

/// Polls a future once: true while it is still pending.
trait NowOrNever {
    fn now_or_never_ready(self) -> bool;
}

impl<F: std::future::Future> NowOrNever for F {
    fn now_or_never_ready(self) -> bool {
        futures::FutureExt::now_or_never(self).is_some()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unuse_removes_the_proxy_on_every_consumer_at_once() {
    let e = env("unuse");
    let provider = App::new();
    provider.use_service("custom", Recorder::default());
    let _p = start(
        &provider,
        Distribution::new()
            .environment(&e)
            .key("p")
            .remote_services(false),
    )
    .await;
    let mut consumers = Vec::new();
    for _ in 0..2 {
        let app = App::new();
        let (_a, removed) = lifecycle(&app);
        let d = start(
            &app,
            Distribution::new()
                .environment(&e)
                .key("c")
                .grace_period(Duration::from_secs(3600)),
        )
        .await;
        within("custom", d.remote_ready("custom")).await;
        consumers.push((app, d, removed));
    }
    provider.unuse("custom");
    for (app, d, removed) in &mut consumers {
        // No grace period for an explicit unuse (the grace is an hour here).
        wait_path(removed, "custom").await;
        within("gone", d.remote_gone("custom")).await;
        assert!(app.service("custom").is_none());
    }
    // Publishing again mounts it again.
    provider.use_service("custom", Recorder::default());
    for (_, d, _) in &consumers {
        within("custom again", d.remote_ready("custom")).await;
    }
    for (app, _, _) in consumers {
        app.shutdown().await;
    }
    provider.shutdown().await;
}

/// `find` and `create` hang on this replica, and count the calls that entered.
#[derive(Clone, Default)]
struct Hanging {
    entered: Arc<AtomicUsize>,
}

#[async_trait]
impl Service for Hanging {
    async fn find(&self, _params: Params) -> Result<Value> {
        self.entered.fetch_add(1, Ordering::SeqCst);
        std::future::pending().await
    }
    async fn create(&self, _data: Value, _params: Params) -> Result<Value> {
        self.entered.fetch_add(1, Ordering::SeqCst);
        std::future::pending().await
    }
}

/// Start calls one by one until one of them hangs on the sick replica; the others finish.
async fn until_one_hangs<F, Fut>(
    entered: &AtomicUsize,
    call: F,
) -> (tokio::task::JoinHandle<Result<Value>>, usize)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<Value>> + Send + 'static,
{
    let mut finished = 0;
    within("a call on the sick replica", async {
        loop {
            let before = entered.load(Ordering::SeqCst);
            let h = tokio::spawn(call());
            loop {
                if entered.load(Ordering::SeqCst) > before {
                    return (h, finished);
                }
                if h.is_finished() {
                    h.await.expect("join").expect("the healthy replica answers");
                    finished += 1;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dying_replica_fails_fast_and_idempotent_calls_retry() {
    let e = env("replica");
    let sick = App::new();
    let hanging = Hanging::default();
    sick.use_service("messages", hanging.clone());
    let healthy = App::new();
    healthy.use_service("messages", todos());
    let base = || {
        Distribution::new()
            .environment(&e)
            .key("messages")
            .remote_services(false)
    };
    let _s = start(
        &sick,
        base().customize_mesh(|b| b.drain_timeout(Duration::from_millis(200))),
    )
    .await;
    let _h = start(&healthy, base()).await;
    let consumer = App::new();
    let c = start(
        &consumer,
        Distribution::new()
            .environment(&e)
            .key("app")
            .timeout(Duration::from_secs(8)),
    )
    .await;
    within("two replicas", async {
        while c.providers("messages").len() < 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    let proxy = consumer.service("messages").unwrap();
    let p = proxy.clone();
    let (find, _) = until_one_hangs(&hanging.entered, move || {
        let p = p.clone();
        async move { p.find(Params::new()).await }
    })
    .await;
    let p = proxy.clone();
    let (create, _) = until_one_hangs(&hanging.entered, move || {
        let p = p.clone();
        async move { p.create(json!({"a": 1}), Params::new()).await }
    })
    .await;
    assert_eq!(hanging.entered.load(Ordering::SeqCst), 2);
    let started = tokio::time::Instant::now();
    sick.shutdown().await;
    let found = within("find", find).await.expect("join");
    assert!(
        found.is_ok(),
        "find retried on the healthy replica: {found:?}"
    );
    let err = within("create", create)
        .await
        .expect("join")
        .expect_err("the create's outcome is unknown");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    // Far below the 8 s call timeout: nothing waited for a deadline.
    assert!(started.elapsed() < Duration::from_secs(5));
    // Later calls go to the healthy replica only.
    for _ in 0..4 {
        proxy.find(Params::new()).await.expect("healthy replica");
    }
    consumer.shutdown().await;
    healthy.shutdown().await;
}

#[tokio::test]
async fn the_proxy_answers_503_during_the_grace_period_then_is_removed() {
    let e = env("grace");
    let provider = App::new();
    provider.use_service("todos", todos());
    let _p = start(
        &provider,
        Distribution::new()
            .environment(&e)
            .key("p")
            .remote_services(false),
    )
    .await;
    let consumer = App::new();
    let (_a, mut removed) = lifecycle(&consumer);
    let c = start(
        &consumer,
        Distribution::new()
            .environment(&e)
            .key("c")
            .grace_period(Duration::from_secs(30)),
    )
    .await;
    within("todos", c.remote_ready("todos")).await;
    provider.shutdown().await;
    within("grace", async {
        while c.remote_ready("todos").now_or_never_ready() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    tokio::time::pause();
    let proxy = consumer.service("todos").expect("mounted during grace");
    let err = proxy.find(Params::new()).await.expect_err("503 at once");
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    tokio::time::advance(Duration::from_secs(28)).await;
    assert!(
        consumer.service("todos").is_some(),
        "still there before the grace ends"
    );
    tokio::time::advance(Duration::from_secs(3)).await;
    wait_path(&mut removed, "todos").await;
    assert!(consumer.service("todos").is_none());
    assert!(c.remote_paths().is_empty());
    consumer.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_returning_within_the_grace_period_revives_the_proxy() {
    let e = env("revive");
    let first = App::new();
    first.use_service("todos", todos());
    let base = || {
        Distribution::new()
            .environment(&e)
            .key("p")
            .remote_services(false)
    };
    let _f = start(&first, base()).await;
    let consumer = App::new();
    let (mut added, mut removed) = lifecycle(&consumer);
    let c = start(&consumer, Distribution::new().environment(&e).key("c")).await;
    within("todos", c.remote_ready("todos")).await;
    wait_path(&mut added, "todos").await;
    first.shutdown().await;
    within("grace", async {
        while c.remote_ready("todos").now_or_never_ready() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    let second = App::new();
    second.use_service("todos", todos());
    let _s = start(&second, base()).await;
    within("revived", c.remote_ready("todos")).await;
    consumer
        .service("todos")
        .unwrap()
        .find(Params::new())
        .await
        .expect("served by the new provider");
    assert!(removed.try_recv().is_err(), "never unmounted");
    consumer.shutdown().await;
    second.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthcheck_reports_per_key_and_per_replica() {
    let e = env("health");
    let svc = App::new();
    svc.use_service("todos", todos());
    let auth = App::new();
    auth.use_service("users", todos());
    let base = || Distribution::new().environment(&e).remote_services(false);
    let _s = start(&svc, base().key("svc")).await;
    let _a = start(&auth, base().key("auth")).await;
    let gw = App::new();
    let g = start(
        &gw,
        Distribution::new()
            .environment(&e)
            .key("gw")
            .services(false),
    )
    .await;
    within("todos", g.remote_ready("todos")).await;
    within("users", g.remote_ready("users")).await;
    let hc = gw
        .service("distribution/healthcheck")
        .expect("healthcheck service");
    assert!(
        g.published().is_empty(),
        "the healthcheck is never published"
    );

    assert_eq!(
        hc.find(Params::new()).await.expect("all"),
        json!({"todos": true, "users": true})
    );
    assert_eq!(
        hc.get("svc", Params::new()).await.expect("svc"),
        json!({"todos": true})
    );
    // Through the App's path lookup, as REST resolves GET /distribution/healthcheck/auth.
    let lookup = gw.lookup("/distribution/healthcheck/auth").expect("lookup");
    assert_eq!(lookup.id.as_deref(), Some("auth"));
    assert_eq!(
        lookup
            .handle
            .get("auth", Params::new())
            .await
            .expect("auth"),
        json!({"users": true})
    );
    let err = hc
        .get("nope", Params::new())
        .await
        .expect_err("unknown key");
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert_eq!(err.message(), "No app registered with key nope");
    let verbose = hc
        .get("svc", Params::new().with_query(json!({"verbose": "true"})))
        .await
        .expect("verbose");
    let replicas = verbose["todos"]["replicas"].as_array().expect("replicas");
    assert_eq!(replicas.len(), 1);
    assert_eq!(replicas[0]["ok"], true);
    assert_eq!(replicas[0]["key"], "svc");
    assert_eq!(
        replicas[0]["node"],
        g.providers("todos")[0].node.to_string()
    );
    assert!(replicas[0]["latency_ms"].as_f64().is_some());

    auth.shutdown().await;
    within("users in grace", async {
        while g.remote_ready("users").now_or_never_ready() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    let err = hc.get("auth", Params::new()).await.expect_err("503");
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    assert_eq!(err.data(), Some(&json!({"users": false})));
    let err = hc.find(Params::new()).await.expect_err("503 for all");
    assert_eq!(err.data(), Some(&json!({"todos": true, "users": false})));
    assert_eq!(
        hc.get("svc", Params::new()).await.expect("svc"),
        json!({"todos": true})
    );

    gw.shutdown().await;
    svc.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renamed_paths_remote_options_hooks_and_the_configure_form() {
    let e = env("options");
    let provider = App::new();
    provider.use_service("custom", Recorder::default());
    provider.use_service("users", Recorder::default());
    provider.configure(
        Distribution::new()
            .environment(&e)
            .key("p")
            .remote_services(false)
            .remote_service_options(|path| {
                if path == "users" {
                    vec!["startId".into()]
                } else {
                    Vec::new()
                }
            }),
    );
    let _p = provider.distribution().await.expect("started by configure");
    within("setup", provider.setup())
        .await
        .expect("a started plugin sets up");

    let consumer = App::new();
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let c = start(
        &consumer,
        Distribution::new()
            .environment(&e)
            .key("c")
            .remote_services(ServiceFilter::predicate(|d| d.key == "p"))
            .remote_service_path(|d| {
                if d.path == "custom" {
                    "custom-name".into()
                } else {
                    d.path.clone()
                }
            })
            .hooks(move |h| {
                let counted = counted.clone();
                h.before(hook_sync(move |_ctx: &mut HookContext| {
                    counted.fetch_add(1, Ordering::SeqCst);
                    Ok(())
                }));
            }),
    )
    .await;
    within("custom-name", c.remote_ready("custom-name")).await;
    within("users", c.remote_ready("users")).await;
    assert!(consumer.service("custom").is_none());
    let renamed = consumer.service("custom-name").unwrap();
    assert_eq!(
        renamed
            .call("echo", json!("hi"), Params::new())
            .await
            .expect("echo"),
        json!({"echo": "hi"})
    );
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "the hooks option runs on proxies"
    );
    let users = consumer.service("users").unwrap();
    assert_eq!(users.service().options(), json!({"startId": 6}));
    assert_eq!(renamed.service().options(), json!({}));
    assert_eq!(
        DistributionHandle::of(&consumer).map(|h| h.key().to_owned()),
        Some("c".to_owned())
    );
    consumer.shutdown().await;
    provider.shutdown().await;
}

#[test]
fn from_env_is_strict_and_names_the_variable() {
    let vars = |pairs: &'static [(&'static str, &'static str)]| {
        move |k: &str| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| (*v).to_owned())
        }
    };
    let d = Distribution::from_lookup(vars(&[
        ("PLUME_ENV", "staging"),
        ("PLUME_KEY", "todos"),
        ("PLUME_TIMEOUT_MS", "2500"),
        ("PLUME_LISTEN", "127.0.0.1:7000"),
        ("PLUME_HEARTBEAT_MS", "500"),
    ]))
    .expect("valid");
    let dbg = format!("{d:?}");
    assert!(
        dbg.contains("staging") && dbg.contains("todos") && dbg.contains("2.5s"),
        "{dbg}"
    );
    for (pairs, var) in [
        (&[("PLUME_TIMEOUT_MS", "soon")][..], "PLUME_TIMEOUT_MS"),
        (&[("PLUME_TIMEOUT_MS", "0")][..], "PLUME_TIMEOUT_MS"),
        (&[("PLUME_LISTEN", "localhost")][..], "PLUME_LISTEN"),
        (&[("PLUME_ADVERTISE", "1.2.3.4")][..], "PLUME_ADVERTISE"),
        (&[("PLUME_KEY", "")][..], "PLUME_KEY"),
        (&[("PLUME_ENV", " ")][..], "PLUME_ENV"),
        (
            &[("PLUME_DISCOVERY", "carrier-pigeon")][..],
            "PLUME_DISCOVERY",
        ),
        (
            &[("PLUME_NODE_TIMEOUT_MS", "x")][..],
            "PLUME_NODE_TIMEOUT_MS",
        ),
    ] {
        let leaked: &'static [(&'static str, &'static str)] =
            Box::leak(pairs.to_vec().into_boxed_slice());
        let err = Distribution::from_lookup(vars(leaked)).expect_err(var);
        assert!(err.to_string().contains(var), "{err} should name {var}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn middlewares_wrap_every_proxys_rest_routes() {
    use axum::middleware::{Next, from_fn};
    use tower::ServiceExt;

    let e = env("middleware");
    let provider = App::new();
    provider.use_service("todos", todos());
    let _p = start(&provider, Distribution::new().environment(&e).key("p")).await;

    let consumer = App::new();
    consumer.use_service("local", todos());
    let tag = from_fn(|req: axum::extract::Request, next: Next| async move {
        let mut res = next.run(req).await;
        res.headers_mut()
            .insert("x-proxy", http::HeaderValue::from_static("yes"));
        res
    });
    let c = start(
        &consumer,
        Distribution::new().environment(&e).key("c").middleware(tag),
    )
    .await;
    within("todos", c.remote_ready("todos")).await;
    assert_eq!(c.middlewares().len(), 1);

    let router = consumer.into_router();
    let get = |uri: &'static str| {
        let router = router.clone();
        async move {
            let req = http::Request::builder()
                .uri(uri)
                .body(axum::body::Body::empty())
                .expect("request");
            router.oneshot(req).await.expect("infallible")
        }
    };
    let proxied = get("/todos").await;
    assert_eq!(proxied.status(), http::StatusCode::OK);
    assert_eq!(
        proxied.headers().get("x-proxy").map(|v| v.as_bytes()),
        Some(&b"yes"[..])
    );
    // Local services are not wrapped.
    let local = get("/local").await;
    assert_eq!(local.status(), http::StatusCode::OK);
    assert!(local.headers().get("x-proxy").is_none());
}

/// `app.configure(Distribution..)` whose start fails: the error surfaces from `app.setup()`,
/// `app.listen(..)`, `app.serve(..)` and `app.distribution()`, not only in the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_plugin_that_fails_to_start_fails_setup_listen_and_serve() {
    let taken = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = taken.local_addr().expect("addr");
    let app = App::new();
    app.configure(
        Distribution::new()
            .environment(env("setup-fails"))
            .listen(addr),
    );
    let err = within("the plugin's start", app.distribution())
        .await
        .expect_err("the mesh port is taken");
    assert!(
        err.to_string().contains("the mesh could not start"),
        "{err}"
    );

    let err = within("setup", app.setup()).await.expect_err("setup fails");
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    assert!(
        err.message()
            .starts_with("the distribution plugin did not start: the mesh could not start"),
        "{}",
        err.message()
    );
    let err = within("listen", app.listen("127.0.0.1:0"))
        .await
        .expect_err("listen does not serve a broken app");
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    let err = within("serve", app.serve("127.0.0.1:0").into_future())
        .await
        .expect_err("serve does not serve a broken app");
    assert_eq!(err.kind(), std::io::ErrorKind::Other);
    assert!(err.to_string().contains("did not start"), "{err}");
    drop(taken);
}
