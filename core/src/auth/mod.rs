//! Authentication: the `authentication` service, the `jwt` and `local` strategies, and the
//! `authenticate`, `hash_password` and `protect` hooks, as in Feathers.
//!
//! ```
//! use plume::auth::{AuthConfig, AuthenticationService, authenticate, hash_password, protect};
//! use plume::{App, Method};
//!
//! # fn users() -> impl plume::Service { struct U; #[plume::async_trait] impl plume::Service for U {} U }
//! let app = App::new();
//! let users = app.use_service("users", users());
//! users
//!     .hooks()
//!     .before_for([Method::Find, Method::Get, Method::Patch, Method::Remove], authenticate(["jwt"]));
//! users.hooks().before_for([Method::Create, Method::Patch], hash_password("password"));
//! users.hooks().after(protect(["password"]));
//! let auth = AuthenticationService::setup(&app, AuthConfig::new("a long random secret"));
//! assert_eq!(auth.config().strategies, ["jwt", "local"]);
//! ```
//!
//! Wire behaviour (verbatim messages, token shape) follows `PROTOCOL-FEATHERS.md` §6.

mod cache;
mod config;
mod header;
mod hooks;
mod jwt;
mod limit;
pub mod password;
mod strategies;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use serde_json::{Map, Value, json};

use crate::app::{App, WeakApp};
use crate::error::{Error, Result};
use crate::handle::ServiceHandle;
use crate::hooks::hook_sync;
use crate::params::{Id, Method, Params};
#[cfg(feature = "server")]
use crate::realtime::ConnectionAuthenticator;
use crate::service::Service;
use crate::service::ServiceOptions;
use crate::shared::SharedValue;
use crate::sync;

pub use config::{
    AuthConfig, DEFAULT_ENTITY_CACHE, JwtAlgorithm, JwtOptions, LocalOptions, SECRET_ENV,
    SETTINGS_KEY,
};
pub(crate) use header::{authorization_token, visible_ascii};
pub use hooks::{Authenticate, HashPassword, Protect, authenticate, hash_password, protect};
pub use jwt::decode_unverified;
pub use limit::{DEFAULT_LOGIN_LIMIT, LoginLimit};
pub use strategies::{JwtStrategy, LocalStrategy};

/// The default path of the authentication service.
pub const DEFAULT_PATH: &str = "authentication";

/// Message when the authentication data has no `strategy`.
pub const NO_STRATEGY: &str = "Invalid authentication information (no `strategy` set)";
/// Message when the strategy is not allowed.
pub const STRATEGY_NOT_ALLOWED: &str =
    "Invalid authentication information (strategy not allowed in authStrategies)";

/// An authentication strategy: turns authentication data into an authentication result.
#[async_trait]
pub trait AuthStrategy: Send + Sync + 'static {
    /// Authenticate `data` (the request body, with `strategy`). The result is an object with
    /// `authentication` (`{strategy, ...}`), usually the entity under the entity name (`user`)
    /// and, when the strategy already has one, `accessToken`.
    async fn authenticate(
        &self,
        service: &AuthenticationService,
        data: &Map<String, Value>,
        params: &Params,
    ) -> Result<Value>;
}

struct Inner {
    app: WeakApp,
    config: AuthConfig,
    strategies: RwLock<BTreeMap<String, Arc<dyn AuthStrategy>>>,
    cache: cache::AuthCache,
    logins: limit::LoginLimiter,
    /// `jwt` is the built-in [`JwtStrategy`]: the `authenticate` hook may take its fast path.
    builtin_jwt: AtomicBool,
}

/// The authentication service (Feathers' `AuthenticationService`), mounted at
/// `authentication`.
///
/// * `create({strategy, ...})` authenticates with a strategy and returns
///   `{accessToken, authentication: {strategy, payload}, user}`; a `jwt` login returns the
///   token it was given, with `authentication.accessToken`.
/// * `remove(id, params)` is the logout: it re-authenticates the caller's token and returns the
///   jwt result; a non-null `id` must be that token. Tokens are stateless and stay valid.
///
/// It is a cheap handle (an `Arc` inside). [`setup`](Self::setup) mounts it and stores it as an
/// App extension, where the [`authenticate`] hook finds it.
#[derive(Clone)]
pub struct AuthenticationService {
    inner: Arc<Inner>,
}

impl fmt::Debug for AuthenticationService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthenticationService")
            .field("config", &self.inner.config)
            .field("strategies", &self.strategy_names())
            .finish()
    }
}

impl AuthenticationService {
    /// A service for `app` with the `jwt` and `local` strategies registered (only those listed
    /// in `config.strategies` are accepted by `create`). It is not mounted yet.
    pub fn new(app: &App, config: AuthConfig) -> Self {
        let service = Self {
            inner: Arc::new(Inner {
                app: app.downgrade(),
                config,
                strategies: RwLock::new(BTreeMap::new()),
                cache: cache::AuthCache::default(),
                logins: limit::LoginLimiter::default(),
                builtin_jwt: AtomicBool::new(false),
            }),
        };
        // A change to an entity through its service drops the cached copy at once.
        let weak = Arc::downgrade(&service.inner);
        let entity_path = crate::app::normalize_path(&service.inner.config.service);
        app.on_event(move |event| {
            if event.path != entity_path
                || !matches!(event.event.as_str(), "updated" | "patched" | "removed")
            {
                return;
            }
            if let Some(inner) = weak.upgrade() {
                inner.cache.invalidate(record_id(&event.data).as_ref());
            }
        });
        service.register("jwt", JwtStrategy);
        service.register("local", LocalStrategy);
        service.inner.builtin_jwt.store(true, Ordering::Release);
        service
    }

    /// Build the service from the App's configuration ([`AuthConfig::from_app`]) and mount it at
    /// `authentication`.
    pub fn from_app(app: &App) -> Result<Self> {
        let config = AuthConfig::from_app(app)?;
        Ok(Self::setup(app, config))
    }

    /// Build the service with this configuration and mount it at `authentication`.
    pub fn setup(app: &App, config: AuthConfig) -> Self {
        let service = Self::new(app, config);
        service.mount(app, DEFAULT_PATH);
        service
    }

    /// Mount the service at `path` (methods `create` and `remove`; its calls emit no events),
    /// store it as the App's authentication extension, and register it as the real-time
    /// server's handshake authenticator.
    pub fn mount(&self, app: &App, path: &str) -> ServiceHandle {
        app.insert_extension(self.clone());
        #[cfg(feature = "server")]
        app.set_connection_authenticator(self.clone());
        let handle = app.use_service_with(
            path,
            self.clone(),
            ServiceOptions::new().methods([Method::Create, Method::Remove]),
        );
        // The authentication service never publishes its results (they hold tokens).
        handle.hooks().before(hook_sync(|ctx| {
            ctx.event = None;
            Ok(())
        }));
        handle
    }

    /// Register (or replace) a strategy under `name`. `create` accepts it when `name` is in
    /// the configured strategies.
    pub fn register(&self, name: &str, strategy: impl AuthStrategy) -> &Self {
        if name == "jwt" {
            self.inner.builtin_jwt.store(false, Ordering::Release);
        }
        sync::write(&self.inner.strategies).insert(name.to_owned(), Arc::new(strategy));
        self
    }

    /// The names of the registered strategies.
    pub fn strategy_names(&self) -> Vec<String> {
        sync::read(&self.inner.strategies).keys().cloned().collect()
    }

    /// The configuration.
    pub fn config(&self) -> &AuthConfig {
        &self.inner.config
    }

    /// The App this service belongs to.
    pub fn app(&self) -> Result<App> {
        self.inner
            .app
            .upgrade()
            .ok_or_else(|| Error::unavailable("the application is shutting down"))
    }

    /// The entity service (`users`).
    pub fn entity_service(&self) -> Result<ServiceHandle> {
        self.app()?.require(&self.inner.config.service)
    }

    /// Load an entity by id with an internal call (hooks run; `provider` is `None`), in the
    /// form clients may see: what the entity service's hooks dispatch (without the fields its
    /// [`protect`] hook names) and without the password field. This is the user the
    /// `authenticate` hook puts into `params.user`, which crosses the mesh with every call.
    ///
    /// With [`AuthConfig::entity_cache`] set (the default), an entity loaded less than that
    /// long ago is served from memory; an `updated`, `patched` or `removed` event of the
    /// entity service drops it at once. The entity is shared with the cache (a [`SharedValue`]:
    /// a reference count, not a copy).
    pub async fn get_entity(&self, id: Id) -> Result<SharedValue> {
        // The load (a service call) is boxed: the usual way here is the cache, and this future
        // sits in every authenticated call's hook (see `future_sizes` in `handle.rs`).
        let Some(ttl) = self.inner.config.entity_cache else {
            return Box::pin(self.load_entity(id)).await.map(SharedValue::from);
        };
        let cache = &self.inner.cache;
        let now = tokio::time::Instant::now();
        if let Some(entity) = cache.entity(&id, ttl, now) {
            return Ok(entity);
        }
        let generation = cache.generation();
        let entity = SharedValue::from(Box::pin(self.load_entity(id.clone())).await?);
        cache.put_entity(&id, &entity, generation, ttl, now);
        Ok(entity)
    }

    /// [`get_entity`](Self::get_entity) without the cache.
    async fn load_entity(&self, id: Id) -> Result<Value> {
        let ctx = self
            .entity_service()?
            .dispatch_context(Method::Get, Some(id), None, Params::new())
            .await?;
        Ok(self.safe_entity(ctx.dispatch.or(ctx.result).unwrap_or(Value::Null)))
    }

    /// An entity without the password field.
    pub(crate) fn safe_entity(&self, mut entity: Value) -> Value {
        if let Value::Object(map) = &mut entity {
            map.remove(&self.inner.config.local.password_field);
        }
        entity
    }

    /// Count a costly login attempt (the `local` strategy's) against the client address of
    /// `params`, per [`AuthConfig::login_limit`]. TooManyRequests (429) when over the limit; a
    /// call without a client address is not counted.
    pub fn check_login_rate(&self, params: &Params) -> Result<()> {
        match (&self.inner.config.login_limit, params.remote_addr) {
            (Some(limit), Some(addr)) => {
                self.inner
                    .logins
                    .attempt(limit, addr.ip(), tokio::time::Instant::now())
            }
            _ => Ok(()),
        }
    }

    /// The id of an entity record (`id`, else `_id`).
    pub fn entity_id(&self, entity: &Value) -> Option<Id> {
        record_id(entity)
    }

    /// Sign a new access token with the configured options: `payload` plus `iat`, `exp`,
    /// `aud`, `iss`, `sub` (when given) and a fresh `jti`.
    pub fn create_access_token(
        &self,
        payload: Map<String, Value>,
        subject: Option<String>,
    ) -> Result<String> {
        let config = &self.inner.config;
        jwt::sign(&config.secret, &config.jwt, payload, subject, jwt::now())
    }

    /// Verify an access token (signature, algorithm, `exp`, `aud`, `iss`) and return its
    /// payload. Every failure is NotAuthenticated (401).
    ///
    /// A token that verified is remembered until it expires, so a token seen again costs a
    /// map lookup instead of a signature check.
    pub fn verify_access_token(&self, token: &str) -> Result<Map<String, Value>> {
        Ok(self.verified(token)?.payload())
    }

    /// A verified token, from the cache or checked now (and then cached until it expires).
    fn verified(&self, token: &str) -> Result<Arc<cache::Verified>> {
        let config = &self.inner.config;
        let now = jwt::now();
        if let Some(verified) = self.inner.cache.token(token, now) {
            return Ok(verified);
        }
        let payload = jwt::verify(&config.secret, &config.jwt, token)?;
        let verified = Arc::new(cache::Verified::new(token, payload, config.jwt.leeway));
        self.inner.cache.put_token(token, &verified, now);
        Ok(verified)
    }

    /// True while `jwt` is the built-in strategy (nothing replaced it).
    pub(crate) fn builtin_jwt(&self) -> bool {
        self.inner.builtin_jwt.load(Ordering::Acquire)
    }

    /// What the built-in `jwt` strategy gives for `token`: the entity (when the token has a
    /// `sub`) and `authentication` (`{strategy: "jwt", accessToken, payload}`).
    pub(crate) async fn jwt_parts(
        &self,
        token: &str,
    ) -> Result<(Option<SharedValue>, SharedValue)> {
        if token.is_empty() {
            return Err(Error::not_authenticated("No access token"));
        }
        let verified = self.verified(token)?;
        let entity = match &verified.sub {
            Some(sub) => Some(self.get_entity(sub.clone()).await?),
            None => None,
        };
        Ok((entity, verified.authentication.clone()))
    }

    /// Authenticate `data` with its `strategy`, which must be one of `allowed` and registered.
    /// Returns the strategy's result (no new token is made here).
    pub async fn authenticate(
        &self,
        data: &Value,
        params: &Params,
        allowed: &[String],
    ) -> Result<Value> {
        let Some(map) = data.as_object() else {
            return Err(Error::not_authenticated(NO_STRATEGY));
        };
        let Some(name) = map.get("strategy").and_then(Value::as_str) else {
            return Err(Error::not_authenticated(NO_STRATEGY));
        };
        let strategy = if allowed.iter().any(|a| a == name) {
            sync::read(&self.inner.strategies).get(name).cloned()
        } else {
            None
        };
        let Some(strategy) = strategy else {
            return Err(Error::not_authenticated(STRATEGY_NOT_ALLOWED));
        };
        strategy.authenticate(self, map, params).await
    }

    /// Authenticate an `Authorization` header value (as sent on a REST request or a socket.io
    /// handshake) with the configured strategies. `Ok(None)` when the header carries no usable
    /// token (an unknown scheme such as `Basic`); an invalid token is an error. The result is
    /// the full authentication result (`accessToken`, `authentication`, `user`), with the
    /// entity's password field removed.
    pub async fn authenticate_authorization(&self, header: &str) -> Result<Option<Value>> {
        let Some(auth) = parse_authorization(header) else {
            return Ok(None);
        };
        let mut result = self
            .authenticate(&auth, &Params::new(), &self.inner.config.strategies)
            .await?;
        self.strip_entity(&mut result);
        Ok(Some(result))
    }

    /// Remove the password field from the entity of an authentication result.
    fn strip_entity(&self, result: &mut Value) {
        if let Some(entity) = result.get_mut(&self.inner.config.entity) {
            *entity = self.safe_entity(std::mem::take(entity));
        }
    }

    /// The authentication information of a call: `params.authentication`, else the
    /// `Authorization` header. A socket.io call never uses the header: its handshake header was
    /// checked once when it connected, and a logout must not be undone by it.
    pub fn params_authentication(params: &Params) -> Option<Value> {
        let given = params.authentication.as_deref().cloned();
        if params.provider == Some(crate::params::Provider::Socketio) {
            return given;
        }
        given.or_else(|| {
            params
                .headers
                .get(http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(parse_authorization)
        })
    }
}

/// Parse an `Authorization` header the way Feathers' JWT strategy does: `Bearer <t>` or
/// `JWT <t>` (any case) and a bare `<t>` give `{strategy: "jwt", accessToken: t}`; any other
/// scheme (`Basic ...`) or an empty value gives `None`.
///
/// ```
/// use plume::auth::parse_authorization;
/// use serde_json::json;
///
/// let jwt = |t: &str| Some(json!({"strategy": "jwt", "accessToken": t}));
/// assert_eq!(parse_authorization("Bearer abc"), jwt("abc"));
/// assert_eq!(parse_authorization("bearer abc"), jwt("abc"));
/// assert_eq!(parse_authorization("JWT abc"), jwt("abc"));
/// assert_eq!(parse_authorization("abc"), jwt("abc"));
/// assert_eq!(parse_authorization("Basic dXNlcjpwdw=="), None);
/// ```
pub fn parse_authorization(header: &str) -> Option<Value> {
    authorization_token(header).map(|token| json!({ "strategy": "jwt", "accessToken": token }))
}

/// The id of a record: `id`, else `_id`.
fn record_id(record: &Value) -> Option<Id> {
    ["id", "_id"]
        .iter()
        .find_map(|key| record.get(key).and_then(Id::from_value))
}

/// The socket.io handshake check: a valid `Authorization` header logs the connection in with
/// `{strategy: "jwt", accessToken}` and the user (without its password); an invalid one refuses
/// the connection; another scheme is no authentication.
#[cfg(feature = "server")]
#[async_trait]
impl ConnectionAuthenticator for AuthenticationService {
    async fn authenticate_header(
        &self,
        _app: &App,
        header: &str,
    ) -> Result<Option<(Value, Value)>> {
        let Some(result) = self.authenticate_authorization(header).await? else {
            return Ok(None);
        };
        let authentication = json!({ "strategy": "jwt", "accessToken": result.get("accessToken") });
        let user = result
            .get(&self.inner.config.entity)
            .cloned()
            .unwrap_or(Value::Null);
        Ok(Some((authentication, user)))
    }

    /// The `exp` of the connection's access token (verified), if it has one.
    fn expires_at(&self, authentication: &Value) -> Option<std::time::SystemTime> {
        let token = authentication.get("accessToken")?.as_str()?;
        let exp = self.verify_access_token(token).ok()?.get("exp")?.as_u64()?;
        Some(std::time::UNIX_EPOCH + std::time::Duration::from_secs(exp))
    }
}

/// `accessToken`, `authentication`, then the other keys, as Feathers sends them.
fn in_feathers_order(result: Value) -> Value {
    let Value::Object(mut map) = result else {
        return result;
    };
    let mut ordered = Map::new();
    for key in ["accessToken", "authentication"] {
        if let Some(v) = map.remove(key) {
            ordered.insert(key.into(), v);
        }
    }
    ordered.extend(map);
    Value::Object(ordered)
}

#[async_trait]
impl Service for AuthenticationService {
    async fn create(&self, data: Value, params: Params) -> Result<Value> {
        let outcome = self.login(data, params).await;
        crate::metrics::login(outcome.as_ref().err());
        outcome
    }

    async fn remove(&self, id: Option<Id>, params: Params) -> Result<Value> {
        self.logout(id, params).await
    }

    fn methods(&self) -> Vec<Method> {
        vec![Method::Create, Method::Remove]
    }
}

impl AuthenticationService {
    /// `create`: authenticate with a strategy, then issue an access token.
    async fn login(&self, data: Value, params: Params) -> Result<Value> {
        let config = &self.inner.config;
        let mut result = self
            .authenticate(&data, &params, &config.strategies)
            .await?;
        if result.get("accessToken").is_none_or(|t| !t.is_string()) {
            let subject = result
                .get(&config.entity)
                .and_then(|e| self.entity_id(e))
                .map(|id| id.to_string());
            let payload = match params.extra.get("payload") {
                Some(Value::Object(p)) => p.clone(),
                _ => Map::new(),
            };
            let token = self.create_access_token(payload, subject)?;
            let decoded = self.verify_access_token(&token)?;
            let Value::Object(map) = &mut result else {
                return Err(Error::internal(
                    "authentication strategy returned a non-object",
                ));
            };
            map.insert("accessToken".into(), token.into());
            match map.get_mut("authentication") {
                Some(Value::Object(auth)) => {
                    auth.insert("payload".into(), Value::Object(decoded));
                }
                _ => {
                    map.insert(
                        "authentication".into(),
                        json!({ "strategy": data.get("strategy"), "payload": decoded }),
                    );
                }
            }
        }
        self.strip_entity(&mut result);
        Ok(in_feathers_order(result))
    }

    /// `remove`: end the authentication of a connection.
    async fn logout(&self, id: Option<Id>, params: Params) -> Result<Value> {
        let Some(auth) = Self::params_authentication(&params) else {
            return Err(Error::not_authenticated(NO_STRATEGY));
        };
        if let Some(id) = id {
            let token = auth.get("accessToken").and_then(Value::as_str);
            if token != Some(id.to_string().as_str()) {
                return Err(Error::not_authenticated("Invalid access token"));
            }
        }
        let jwt_only: Vec<String> = self
            .inner
            .config
            .strategies
            .iter()
            .filter(|s| *s == "jwt")
            .cloned()
            .collect();
        let mut result = self.authenticate(&auth, &params, &jwt_only).await?;
        self.strip_entity(&mut result);
        Ok(in_feathers_order(result))
    }
}
