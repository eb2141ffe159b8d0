//! The gateway: local `users` and `authentication`, every remote service consumed through the
//! mesh behind `authenticate("jwt")`, the distribution healthcheck, and the web page at `/`.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::IntoResponse;
use axum::routing::get;
use plume::auth::{AuthenticationService, authenticate, hash_password, protect};
use plume::{App, MemoryOptions, MemoryService, Method, Params, Result, ServiceOptions};
use plume_transport::distribution::{Distribution, DistributionHandle};
use serde_json::json;

/// The demo user's e-mail.
pub(crate) const DEMO_EMAIL: &str = "demo@plume.local";
/// The demo user's password.
pub(crate) const DEMO_PASSWORD: &str = "plume-demo";
/// The distribution key of the gateway.
pub(crate) const KEY: &str = "gateway";
/// How long a remote service whose last replica died stays mounted, answering 503 Unavailable
/// (then 404): as long as a demo runs, so that the page says the replicas are gone, and a
/// replica started again is served at once.
const UNAVAILABLE_FOR: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);

const INDEX_HTML: &str = include_str!("../web/index.html");
const FEATHERS_JS: &[u8] = include_bytes!(concat!(
    env!("OUT_DIR"),
    "/web/node_modules/@feathersjs/client/dist/feathers.min.js"
));
const SOCKET_IO_JS: &[u8] = include_bytes!(concat!(
    env!("OUT_DIR"),
    "/web/node_modules/socket.io-client/dist/socket.io.min.js"
));

/// The App of the gateway, without the mesh: `users` (seeded with the demo user), the
/// `authentication` service (local + jwt; the secret comes from `PLUME_JWT_SECRET`) and the web
/// page routes. Remote events reach authenticated sockets through the default channels.
pub(crate) async fn gateway_app() -> Result<App> {
    let app = App::new();
    let store: MemoryService = MemoryService::with_options(MemoryOptions::new().start_id(1));
    // Clients may only read users (the demo has no sign-up); the login reads them internally.
    let users = app.use_service_with(
        "users",
        store,
        ServiceOptions::new().methods([Method::Find, Method::Get]),
    );
    users
        .hooks()
        .before_for(
            [Method::Find, Method::Get, Method::Patch, Method::Remove],
            authenticate(["jwt"]),
        )
        .before_for([Method::Create, Method::Patch], hash_password("password"))
        .after(protect(["password"]));
    AuthenticationService::from_app(&app)?;
    users
        .create(
            json!({"email": DEMO_EMAIL, "password": DEMO_PASSWORD}),
            Params::new(),
        )
        .await?;
    app.add_routes(web_routes);
    app.enable_docs(crate::api_docs::options());
    observability(&app)?;
    Ok(app)
}

/// Prometheus metrics at `GET /metrics` and W3C trace contexts (see the guide's "Metrics"), on
/// unless `PLUME_OBSERVABILITY=off`: the same binary with both off, to measure what they cost
/// (`bench/observability.sh`).
pub(crate) fn observability(app: &App) -> Result<()> {
    let off = std::env::var("PLUME_OBSERVABILITY").is_ok_and(|v| v.eq_ignore_ascii_case("off"));
    if off {
        plume::trace::set_enabled(false);
        tracing::info!("metrics and trace contexts are off (PLUME_OBSERVABILITY=off)");
        return Ok(());
    }
    app.enable_metrics().map_err(plume::Error::internal)
}

/// The web page and the Feathers browser client it loads (embedded at build time).
fn web_routes(router: axum::Router) -> axum::Router {
    router
        .route(
            "/",
            get(|| async { asset("text/html; charset=utf-8", INDEX_HTML.as_bytes()) }),
        )
        .route(
            "/vendor/feathers.min.js",
            get(|| async { asset("text/javascript; charset=utf-8", FEATHERS_JS) }),
        )
        .route(
            "/vendor/socket.io.min.js",
            get(|| async { asset("text/javascript; charset=utf-8", SOCKET_IO_JS) }),
        )
}

fn asset(content_type: &'static str, body: &'static [u8]) -> impl IntoResponse {
    (
        [(CONTENT_TYPE, content_type), (CACHE_CONTROL, "no-cache")],
        body,
    )
}

/// `GET /distribution/mounted`: `{"count":N}`, the number of remote services the gateway has
/// mounted a proxy for; with `?providers`, `{"count":N,"providers":P}`, P their providers in
/// all (what the scale curves of `bench/scale.sh` wait on; the paths are public anyway: each
/// answers on REST). A count of 0 until the plugin has started.
fn mounted_route(
    handle: Arc<OnceLock<DistributionHandle>>,
) -> impl Fn(axum::Router) -> axum::Router + Send + Sync + 'static {
    move |router| {
        let handle = handle.clone();
        router.route(
            "/distribution/mounted",
            get(move |uri: axum::http::Uri| {
                let with_providers = uri.query() == Some("providers");
                let paths = handle.get().map(DistributionHandle::remote_paths);
                let count = paths.as_ref().map_or(0, Vec::len);
                let body = match (with_providers, handle.get(), &paths) {
                    (false, _, _) => format!(r#"{{"count":{count}}}"#),
                    (true, Some(h), Some(paths)) => {
                        let providers: usize = paths.iter().map(|p| h.providers(p).len()).sum();
                        format!(r#"{{"count":{count},"providers":{providers}}}"#)
                    }
                    (true, _, _) => format!(r#"{{"count":{count},"providers":0}}"#),
                };
                async move { ([(CONTENT_TYPE, "application/json")], body) }
            }),
        )
    }
}

/// Run the gateway until `stop` resolves: serve on `addr`, consume every remote service with
/// `authenticate("jwt")` on each proxy (publishing nothing), and print
/// `gateway listening on http://<addr>` once both are up.
pub(crate) async fn run(addr: SocketAddr, stop: impl Future<Output = ()>) -> anyhow::Result<()> {
    let app = gateway_app().await?;
    let handle = Arc::new(OnceLock::new());
    app.add_routes(mounted_route(handle.clone()));
    // The plugin first: the routers `listen` builds then serve the mesh monitor's page.
    let distribution = Distribution::from_env()?
        .key(KEY)
        .services(false)
        .grace_period(UNAVAILABLE_FOR)
        .hooks(|hooks| {
            hooks.before(authenticate(["jwt"]));
        })
        .start(&app)
        .await?;
    distribution.mesh().set_name("gateway");
    // Set once: `run` starts the plugin once.
    let _ = handle.set(distribution);
    let server = app.listen(addr).await?;
    crate::say(&format!(
        "gateway listening on http://{}",
        server.local_addr()
    ));
    stop.await;
    tracing::info!("stopping the gateway");
    app.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use plume::{ErrorKind, Provider};

    #[tokio::test]
    async fn the_gateway_mounts_users_and_authentication_and_logs_the_demo_user_in() -> Result<()> {
        let app = gateway_app().await?;
        let mut services = app.services();
        services.sort();
        assert_eq!(services, ["authentication", "users"]);

        let rest = || Params::new().with_provider(Provider::Rest);
        let login = app
            .require("authentication")?
            .create(
                json!({"strategy": "local", "email": DEMO_EMAIL, "password": DEMO_PASSWORD}),
                rest(),
            )
            .await?;
        assert!(login["accessToken"].as_str().is_some_and(|t| !t.is_empty()));
        assert_eq!(login["user"], json!({"email": DEMO_EMAIL, "id": 1}));

        let err = app
            .require("authentication")?
            .create(
                json!({"strategy": "local", "email": DEMO_EMAIL, "password": "wrong"}),
                rest(),
            )
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotAuthenticated);

        // No sign-up through the gateway, and no reading users without a token.
        let users = app.require("users")?;
        let err = users.find(rest()).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotAuthenticated);
        Ok(())
    }

    #[test]
    fn the_page_and_the_feathers_client_are_embedded() {
        assert!(INDEX_HTML.contains("/vendor/feathers.min.js"));
        assert!(INDEX_HTML.contains("/vendor/socket.io.min.js"));
        // The official bundles, not stubs.
        assert!(FEATHERS_JS.len() > 50_000);
        assert!(SOCKET_IO_JS.len() > 20_000);
    }
}
