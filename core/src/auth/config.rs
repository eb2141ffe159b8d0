//! Authentication configuration.

use std::fmt;
use std::time::Duration;

use serde_json::{Map, Value};

use crate::app::App;
use crate::error::{Error, Result};

/// The environment variable that holds the JWT secret.
pub const SECRET_ENV: &str = "PLUME_JWT_SECRET";

/// The app setting that holds the authentication configuration (Feathers' `authentication`).
pub const SETTINGS_KEY: &str = "authentication";

/// The default of [`AuthConfig::entity_cache`].
pub const DEFAULT_ENTITY_CACHE: Duration = Duration::from_secs(5);

/// The signing algorithm of access tokens. Only the HMAC family is supported: the key is the
/// configured secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum JwtAlgorithm {
    /// HMAC with SHA-256 (the default, as Feathers).
    #[default]
    HS256,
    /// HMAC with SHA-384.
    HS384,
    /// HMAC with SHA-512.
    HS512,
}

impl JwtAlgorithm {
    /// The JOSE name: `HS256`, `HS384` or `HS512`.
    pub fn as_str(self) -> &'static str {
        match self {
            JwtAlgorithm::HS256 => "HS256",
            JwtAlgorithm::HS384 => "HS384",
            JwtAlgorithm::HS512 => "HS512",
        }
    }

    /// The algorithm of this JOSE name.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "HS256" => Some(JwtAlgorithm::HS256),
            "HS384" => Some(JwtAlgorithm::HS384),
            "HS512" => Some(JwtAlgorithm::HS512),
            _ => None,
        }
    }

    pub(crate) fn to_jsonwebtoken(self) -> jsonwebtoken::Algorithm {
        match self {
            JwtAlgorithm::HS256 => jsonwebtoken::Algorithm::HS256,
            JwtAlgorithm::HS384 => jsonwebtoken::Algorithm::HS384,
            JwtAlgorithm::HS512 => jsonwebtoken::Algorithm::HS512,
        }
    }
}

/// Options of the access tokens (Feathers' `jwtOptions`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtOptions {
    /// The `typ` header, `access` by default; `None` leaves it out.
    pub typ: Option<String>,
    /// The signing algorithm.
    pub algorithm: JwtAlgorithm,
    /// The `aud` claim, issued and required; `None` issues none and checks none.
    pub audience: Option<String>,
    /// The `iss` claim, issued and required; `None` issues none and checks none.
    pub issuer: Option<String>,
    /// Lifetime in seconds: `exp = iat + expires_in`.
    pub expires_in: u64,
    /// Clock tolerance in seconds when checking `exp` (0, as Feathers).
    pub leeway: u64,
}

impl Default for JwtOptions {
    fn default() -> Self {
        Self {
            typ: Some("access".into()),
            algorithm: JwtAlgorithm::HS256,
            audience: Some("https://yourdomain.com".into()),
            issuer: Some("feathers".into()),
            expires_in: 86_400,
            leeway: 0,
        }
    }
}

/// Options of the `local` strategy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalOptions {
    /// The field of the login data and of the entity that holds the user name (`email`).
    pub username_field: String,
    /// The field that holds the password (plain in the login data, hashed in the entity).
    pub password_field: String,
}

impl Default for LocalOptions {
    fn default() -> Self {
        Self {
            username_field: "email".into(),
            password_field: "password".into(),
        }
    }
}

/// The authentication configuration.
///
/// Build it with [`AuthConfig::new`] and the `with_*` methods, or read it from the App's
/// `authentication` setting and the `PLUME_JWT_SECRET` variable with [`AuthConfig::from_app`].
#[derive(Clone, PartialEq, Eq)]
pub struct AuthConfig {
    /// The HMAC secret that signs and verifies tokens.
    pub secret: String,
    /// The entity name (`user`): the key of the entity in results.
    pub entity: String,
    /// The path of the entity service (`users`).
    pub service: String,
    /// The strategies `create` accepts (`["jwt", "local"]`).
    pub strategies: Vec<String>,
    /// Access token options.
    pub jwt: JwtOptions,
    /// Options of the `local` strategy.
    pub local: LocalOptions,
    /// How long the `jwt` strategy may reuse an entity it loaded for a token's `sub` (default
    /// 5 s; `None` loads it on every request, as Feathers does). An `updated`, `patched` or
    /// `removed` event of the entity service drops the cached copy at once; the time bounds
    /// changes made behind the service's back (another process writing the same database).
    /// Setting key `entityCache`: milliseconds, `0` or `false` to turn it off.
    pub entity_cache: Option<Duration>,
    /// The rate limit of `local` logins per client address (default
    /// [`DEFAULT_LOGIN_LIMIT`](super::DEFAULT_LOGIN_LIMIT): 20 at once, then one every 3 s;
    /// `None` turns it off). Calls without a client address (internal calls, mesh calls) are
    /// not counted. Setting key `loginLimit`: `{burst, intervalMs}`, or `false` to turn it off.
    pub login_limit: Option<super::LoginLimit>,
}

impl fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthConfig")
            .field("secret", &"<redacted>")
            .field("entity", &self.entity)
            .field("service", &self.service)
            .field("strategies", &self.strategies)
            .field("jwt", &self.jwt)
            .field("local", &self.local)
            .field("entity_cache", &self.entity_cache)
            .field("login_limit", &self.login_limit)
            .finish()
    }
}

impl AuthConfig {
    /// The defaults of a generated Feathers app, with this secret: entity `user` in service
    /// `users`, strategies `jwt` and `local`, HS256 tokens with `typ: access`, audience
    /// `https://yourdomain.com`, issuer `feathers`, one day of validity, login by `email` and
    /// `password`.
    pub fn new(secret: impl Into<String>) -> Self {
        Self {
            secret: secret.into(),
            entity: "user".into(),
            service: "users".into(),
            strategies: vec!["jwt".into(), "local".into()],
            jwt: JwtOptions::default(),
            local: LocalOptions::default(),
            entity_cache: Some(DEFAULT_ENTITY_CACHE),
            login_limit: Some(super::DEFAULT_LOGIN_LIMIT),
        }
    }

    /// Set how long an entity loaded for a token may be reused (`None`: never).
    #[must_use]
    pub fn with_entity_cache(mut self, ttl: Option<Duration>) -> Self {
        self.entity_cache = ttl;
        self
    }

    /// Set the login rate limit per client address (`None`: no limit).
    #[must_use]
    pub fn with_login_limit(mut self, limit: Option<super::LoginLimit>) -> Self {
        self.login_limit = limit;
        self
    }

    /// Set the entity service path.
    #[must_use]
    pub fn with_service(mut self, service: impl Into<String>) -> Self {
        self.service = service.into();
        self
    }

    /// Set the allowed strategies.
    #[must_use]
    pub fn with_strategies<I, S>(mut self, strategies: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.strategies = strategies.into_iter().map(Into::into).collect();
        self
    }

    /// Set the token options.
    #[must_use]
    pub fn with_jwt(mut self, jwt: JwtOptions) -> Self {
        self.jwt = jwt;
        self
    }

    /// Read the configuration from the App's `authentication` setting (Feathers' shape:
    /// `{secret, entity, service, authStrategies, jwtOptions: {header: {typ}, audience, issuer,
    /// algorithm, expiresIn}, local: {usernameField, passwordField}}`; every key optional) over
    /// the defaults of [`AuthConfig::new`].
    ///
    /// The secret is `PLUME_JWT_SECRET` when that variable is set and not empty, else the
    /// setting's `secret`. Without either, a release build fails, and a debug build uses a
    /// random secret for this process only and logs a warning (tokens die with the process).
    pub fn from_app(app: &App) -> Result<Self> {
        let settings = app.get(SETTINGS_KEY).unwrap_or(Value::Null);
        let env_secret = std::env::var(SECRET_ENV).ok().filter(|s| !s.is_empty());
        Self::from_settings(&settings, env_secret)
    }

    /// Like [`from_app`](Self::from_app), from a settings value and an optional secret that
    /// takes precedence over the one in the settings.
    pub fn from_settings(settings: &Value, secret: Option<String>) -> Result<Self> {
        let empty = Map::new();
        let map = match settings {
            Value::Object(map) => map,
            Value::Null => &empty,
            _ => {
                return Err(config_error(
                    "the `authentication` setting must be an object",
                ));
            }
        };
        let secret = match secret.or_else(|| str_field(map, "secret")) {
            Some(secret) => secret,
            None => dev_secret()?,
        };
        let mut config = Self::new(secret);
        if let Some(entity) = str_field(map, "entity") {
            config.entity = entity;
        }
        if let Some(service) = str_field(map, "service") {
            config.service = crate::app::normalize_path(&service);
        }
        if let Some(list) = map.get("authStrategies") {
            let list = list
                .as_array()
                .ok_or_else(|| config_error("`authStrategies` must be an array of strings"))?;
            config.strategies = list
                .iter()
                .map(|s| {
                    s.as_str()
                        .map(str::to_owned)
                        .ok_or_else(|| config_error("`authStrategies` must be an array of strings"))
                })
                .collect::<Result<_>>()?;
        }
        if let Some(jwt) = map.get("jwtOptions") {
            config.jwt = parse_jwt_options(jwt)?;
        }
        match map.get("entityCache") {
            None | Some(Value::Null) => {}
            Some(Value::Bool(false)) => config.entity_cache = None,
            Some(Value::Number(n)) if n.as_u64() == Some(0) => config.entity_cache = None,
            Some(Value::Number(n)) if n.as_u64().is_some() => {
                config.entity_cache = n.as_u64().map(Duration::from_millis);
            }
            Some(_) => {
                return Err(config_error(
                    "`entityCache` must be milliseconds (0 or false to turn it off)",
                ));
            }
        }
        match map.get("loginLimit") {
            None | Some(Value::Null) => {}
            Some(Value::Bool(false)) => config.login_limit = None,
            Some(Value::Object(limit)) => {
                let number = |key: &str, default: u64| match limit.get(key) {
                    None => Ok(default),
                    Some(v) => v.as_u64().filter(|n| *n > 0).ok_or_else(|| {
                        config_error(&format!("`loginLimit.{key}` must be a positive integer"))
                    }),
                };
                let default = super::DEFAULT_LOGIN_LIMIT;
                let burst = number("burst", u64::from(default.burst))?;
                let default_ms = u64::try_from(default.interval.as_millis()).unwrap_or(u64::MAX);
                let interval = number("intervalMs", default_ms)?;
                config.login_limit = Some(super::LoginLimit {
                    burst: u32::try_from(burst)
                        .map_err(|_| config_error("`loginLimit.burst` is too large"))?,
                    interval: Duration::from_millis(interval),
                });
            }
            Some(_) => {
                return Err(config_error(
                    "`loginLimit` must be {burst, intervalMs} or false",
                ));
            }
        }
        if let Some(Value::Object(local)) = map.get("local") {
            if let Some(field) = str_field(local, "usernameField") {
                config.local.username_field = field;
            }
            if let Some(field) = str_field(local, "passwordField") {
                config.local.password_field = field;
            }
        }
        Ok(config)
    }
}

/// `jwtOptions` merges over the defaults key by key (unlike Feathers' shallow merge, a missing
/// key keeps its default; an explicit `null` removes `audience`, `issuer` or `typ`).
fn parse_jwt_options(value: &Value) -> Result<JwtOptions> {
    let map = value
        .as_object()
        .ok_or_else(|| config_error("`jwtOptions` must be an object"))?;
    let mut jwt = JwtOptions::default();
    if let Some(header) = map.get("header") {
        match header.get("typ") {
            Some(Value::String(typ)) => jwt.typ = Some(typ.clone()),
            Some(Value::Null) => jwt.typ = None,
            Some(_) => return Err(config_error("`jwtOptions.header.typ` must be a string")),
            None => {}
        }
    }
    let optional = |key: &str, current: Option<String>| -> Result<Option<String>> {
        match map.get(key) {
            None => Ok(current),
            Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.is_empty() => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(config_error(&format!(
                "`jwtOptions.{key}` must be a string"
            ))),
        }
    };
    jwt.audience = optional("audience", jwt.audience)?;
    jwt.issuer = optional("issuer", jwt.issuer)?;
    if let Some(alg) = map.get("algorithm") {
        jwt.algorithm = alg
            .as_str()
            .and_then(JwtAlgorithm::from_name)
            .ok_or_else(|| {
                config_error("`jwtOptions.algorithm` must be one of HS256, HS384, HS512")
            })?;
    }
    if let Some(exp) = map.get("expiresIn") {
        jwt.expires_in = parse_duration(exp)
            .ok_or_else(|| config_error("`jwtOptions.expiresIn` must be seconds or like \"1d\""))?;
    }
    Ok(jwt)
}

/// Seconds, or a string like `"1d"`, `"12h"`, `"30m"`, `"45s"`, `"3600"`.
fn parse_duration(value: &Value) -> Option<u64> {
    match value {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => {
            let s = s.trim();
            let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
            let (digits, unit) = s.split_at(split);
            let n: u64 = digits.parse().ok()?;
            let factor = match unit.trim() {
                "" | "s" => 1,
                "m" => 60,
                "h" => 3_600,
                "d" => 86_400,
                "w" => 604_800,
                _ => return None,
            };
            n.checked_mul(factor)
        }
        _ => None,
    }
}

fn str_field(map: &Map<String, Value>, key: &str) -> Option<String> {
    map.get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

fn config_error(message: &str) -> Error {
    Error::general_error(format!("authentication configuration: {message}"))
}

#[cfg(debug_assertions)]
fn dev_secret() -> Result<String> {
    tracing::warn!(
        target: "plume::auth",
        "no JWT secret configured (set {SECRET_ENV}); using a random development secret for this \
         process only. Release builds refuse to start without a secret."
    );
    Ok(format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    ))
}

#[cfg(not(debug_assertions))]
fn dev_secret() -> Result<String> {
    Err(config_error(&format!(
        "no JWT secret: set {SECRET_ENV} or the `authentication.secret` setting"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_match_a_generated_feathers_app() {
        let c = AuthConfig::new("s");
        assert_eq!(c.entity, "user");
        assert_eq!(c.service, "users");
        assert_eq!(c.strategies, vec!["jwt", "local"]);
        assert_eq!(c.jwt.typ.as_deref(), Some("access"));
        assert_eq!(c.jwt.audience.as_deref(), Some("https://yourdomain.com"));
        assert_eq!(c.jwt.issuer.as_deref(), Some("feathers"));
        assert_eq!(c.jwt.expires_in, 86_400);
        assert_eq!(c.local.username_field, "email");
        assert!(!format!("{c:?}").contains("\"s\""), "secret is redacted");
    }

    #[test]
    fn settings_in_feathers_shape_are_read() {
        let settings = json!({
            "secret": "from-settings",
            "service": "/accounts/",
            "authStrategies": ["local"],
            "jwtOptions": {"header": {"typ": "x"}, "issuer": null, "algorithm": "HS512", "expiresIn": "2h"},
            "local": {"usernameField": "login"}
        });
        let c = AuthConfig::from_settings(&settings, None).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.secret, "from-settings");
        assert_eq!(c.service, "accounts");
        assert_eq!(c.strategies, vec!["local"]);
        assert_eq!(c.jwt.typ.as_deref(), Some("x"));
        assert_eq!(c.jwt.issuer, None);
        assert_eq!(c.jwt.audience.as_deref(), Some("https://yourdomain.com"));
        assert_eq!(c.jwt.algorithm, JwtAlgorithm::HS512);
        assert_eq!(c.jwt.expires_in, 7_200);
        assert_eq!(c.local.username_field, "login");
        assert_eq!(c.local.password_field, "password");
        let env = AuthConfig::from_settings(&settings, Some("env".into()));
        assert_eq!(env.map(|c| c.secret).ok().as_deref(), Some("env"));
    }

    #[test]
    fn bad_settings_are_errors() {
        for bad in [
            json!("x"),
            json!({"secret": "s", "authStrategies": "jwt"}),
            json!({"secret": "s", "jwtOptions": {"algorithm": "RS256"}}),
            json!({"secret": "s", "jwtOptions": {"expiresIn": "1y"}}),
        ] {
            assert!(AuthConfig::from_settings(&bad, None).is_err(), "{bad}");
        }
    }

    #[cfg(debug_assertions)]
    #[test]
    fn debug_builds_fall_back_to_a_random_secret() {
        let a = AuthConfig::from_settings(&Value::Null, None).map(|c| c.secret);
        let b = AuthConfig::from_settings(&Value::Null, None).map(|c| c.secret);
        assert!(a.as_ref().is_ok_and(|s| s.len() == 64));
        assert_ne!(a.ok(), b.ok());
    }
}
