//! Security over the mesh (issue 14): protected fields never cross it, and the query limits
//! hold for calls that arrive over it as they do for REST and socket.io.

use std::time::Duration;

use plume::auth::{AuthConfig, AuthenticationService, authenticate, hash_password, protect};
use plume::{
    App, MemoryOptions, MemoryService, Method, Params, Provider, Result, Service, async_trait,
};
use plume_transport::distribution::{Distribution, DistributionHandle};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(15);

struct WhoAmI;

#[async_trait]
impl Service for WhoAmI {
    async fn find(&self, params: Params) -> Result<Value> {
        Ok(json!({"user": params.user}))
    }
    fn methods(&self) -> Vec<Method> {
        vec![Method::Find]
    }
}

fn env() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("protected-{}-{t:08x}", std::process::id())
}

async fn start(app: &App, env: &str, key: &str) -> DistributionHandle {
    Distribution::new()
        .environment(env)
        .key(key)
        .start(app)
        .await
        .expect("distribution starts")
}

fn assert_clean(what: &str, value: &Value) {
    let text = value.to_string();
    assert!(
        !text.contains("password") && !text.contains("resetToken") && !text.contains("$argon2"),
        "{what} leaks a protected field: {text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn params_user_and_events_cross_the_mesh_without_protected_fields() {
    let env = env();
    let gateway = App::new();
    let users = gateway.use_service(
        "users",
        MemoryService::<Value>::with_options(MemoryOptions::new().start_id(1)),
    );
    users
        .hooks()
        .before_for(
            [Method::Find, Method::Get, Method::Patch, Method::Remove],
            authenticate(["jwt"]),
        )
        .before_for([Method::Create, Method::Patch], hash_password("password"))
        .after(protect(["password", "resetToken"]));
    AuthenticationService::setup(&gateway, AuthConfig::new("mesh-protected-secret"));
    users
        .create(
            json!({"email": "a@example.com", "password": "pw", "resetToken": "r-1"}),
            Params::new(),
        )
        .await
        .expect("user");

    let provider = App::new();
    provider.use_service("whoami", WhoAmI);
    let dp = start(&provider, &env, "provider").await;
    let dg = start(&gateway, &env, "gateway").await;
    timeout(WAIT, dg.remote_ready("whoami"))
        .await
        .expect("whoami proxy on the gateway");
    timeout(WAIT, dp.remote_ready("users"))
        .await
        .expect("users proxy on the provider");
    let proxy = gateway.service("whoami").expect("proxy");
    proxy.hooks().before(authenticate(["jwt"]));

    // A client logs in on the gateway, then calls whoami with its token: the provider sees
    // the user, without its protected fields.
    let login = gateway
        .service("authentication")
        .expect("auth")
        .create(
            json!({"strategy": "local", "email": "a@example.com", "password": "pw"}),
            Params::new().with_provider(Provider::Rest),
        )
        .await
        .expect("login");
    let token = login["accessToken"].as_str().expect("token").to_owned();
    let mut params = Params::new().with_provider(Provider::Rest);
    params.authentication = Some(json!({"strategy": "jwt", "accessToken": token}).into());
    let seen = proxy.find(params).await.expect("whoami through the mesh");
    assert_eq!(seen["user"]["email"], "a@example.com", "{seen}");
    assert_clean("params.user on the remote provider", &seen);

    // An internal patch on the gateway: its event reaches the provider's users proxy clean.
    let (tx, mut rx) = mpsc::channel(16);
    provider.on_event(move |ev| {
        if ev.path == "users" && ev.event == "patched" {
            let context_user = ev.context.as_ref().and_then(|c| c.params.user.clone());
            let _ = tx.try_send((ev.data.clone(), context_user));
        }
    });
    users
        .patch(Some(1.into()), json!({"name": "Ann"}), Params::new())
        .await
        .expect("internal patch");
    let (data, context_user) = timeout(WAIT, rx.recv())
        .await
        .expect("the patched event in time")
        .expect("event");
    assert_eq!(data["name"], "Ann");
    assert_clean("the relayed users patched event", &data);
    assert_clean("the relayed event's context", &json!(context_user));

    dp.shutdown().await;
    dg.shutdown().await;
}

/// A peer's call whose query is over a limit is a 400 naming it, before any hook or service
/// runs on the provider; the same query within the limits is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_over_a_limit_are_400_over_the_mesh() {
    let env = env();
    let provider = App::new();
    provider.use_service("messages", MemoryService::<Value>::new());
    let dp = start(&provider, &env, "provider").await;
    let caller = App::new();
    let dc = start(&caller, &env, "caller").await;
    timeout(WAIT, dc.remote_ready("messages"))
        .await
        .expect("messages proxy");
    let mesh = dc.mesh();
    let call = move |query: Value| async move {
        let body = json!({"params": {"query": query}});
        mesh.to("svc:messages").method("find").send(&body).await
    };
    let mut deep = json!({"a": 1});
    for _ in 0..9 {
        deep = json!({"$or": [deep]});
    }
    for (query, name) in [
        (json!({"id": {"$in": vec![0; 1001]}}), "$in"),
        (deep, "$or"),
        (json!({"$limit": 10_001}), "$limit"),
    ] {
        let err = call(query).await.expect_err("over a limit");
        assert_eq!(err.kind(), plume::ErrorKind::BadRequest, "{err:?}");
        assert!(err.message().starts_with(name), "{err:?}");
    }
    let ok = call(json!({"id": {"$in": vec![0; 1000]}, "$limit": 10_000}))
        .await
        .expect("within the limits");
    assert_eq!(ok, json!([]));
    dp.shutdown().await;
    dc.shutdown().await;
}
