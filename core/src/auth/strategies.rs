//! The `jwt` and `local` strategies.

use async_trait::async_trait;
use serde_json::{Map, Value, json};

use super::{AuthStrategy, AuthenticationService, password};
use crate::error::{Error, ErrorKind, Result};
use crate::params::{Method, Params};

/// The `jwt` strategy: `{strategy: "jwt", accessToken}`.
///
/// It verifies the token, loads the entity named by `sub` with an internal `get` (a missing
/// entity is the service's NotFound, as in Feathers) and returns the same token:
/// `{accessToken, authentication: {strategy: "jwt", accessToken, payload}, user}`.
#[derive(Debug, Clone, Copy, Default)]
pub struct JwtStrategy;

#[async_trait]
impl AuthStrategy for JwtStrategy {
    async fn authenticate(
        &self,
        service: &AuthenticationService,
        data: &Map<String, Value>,
        _params: &Params,
    ) -> Result<Value> {
        let Some(token) = data.get("accessToken").and_then(Value::as_str) else {
            return Err(Error::not_authenticated("No access token"));
        };
        let (entity, authentication) = service.jwt_parts(token).await?;
        let mut result = Map::new();
        result.insert("accessToken".into(), Value::String(token.into()));
        result.insert("authentication".into(), authentication.into_value());
        if let Some(entity) = entity {
            result.insert(service.config().entity.clone(), entity.into_value());
        }
        Ok(Value::Object(result))
    }
}

/// The `local` strategy: `{strategy: "local", email, password}` (field names configurable).
///
/// It finds the entity by user name with an internal `find` (`$limit: 1`) and checks the
/// password against the argon2 hash stored in the entity. A missing field, an unknown user or
/// a wrong password are all NotAuthenticated `Invalid login`. Each attempt counts against the
/// client address's login rate limit ([`AuthConfig::login_limit`](super::AuthConfig::login_limit)),
/// checked before any hashing: over it, TooManyRequests (429).
#[derive(Debug, Clone, Copy, Default)]
pub struct LocalStrategy;

/// The first record of a `find` result (an array or a page).
fn first_record(found: Value) -> Option<Value> {
    match found {
        Value::Array(mut items) if !items.is_empty() => Some(items.swap_remove(0)),
        Value::Object(mut page) => match page.remove("data") {
            Some(Value::Array(mut items)) if !items.is_empty() => Some(items.swap_remove(0)),
            _ => None,
        },
        _ => None,
    }
}

fn invalid_login() -> Error {
    Error::not_authenticated("Invalid login")
}

#[async_trait]
impl AuthStrategy for LocalStrategy {
    async fn authenticate(
        &self,
        service: &AuthenticationService,
        data: &Map<String, Value>,
        params: &Params,
    ) -> Result<Value> {
        service.check_login_rate(params)?;
        let options = &service.config().local;
        let username = data.get(&options.username_field).and_then(Value::as_str);
        let plain = data.get(&options.password_field).and_then(Value::as_str);
        let (Some(username), Some(plain)) = (username, plain) else {
            return Err(invalid_login());
        };
        let query = json!({ options.username_field.clone(): username, "$limit": 1 });
        let found = service
            .entity_service()?
            .dispatch_context(Method::Find, None, None, Params::new().with_query(query))
            .await?;
        // The stored entity (with the hash) to check, and the form clients may see to return.
        let entity = found.result.and_then(first_record);
        let visible = found.dispatch.and_then(first_record);
        // Equality on the user name must hold even if the entity service ignores the query.
        let entity = entity
            .filter(|e| e.get(&options.username_field).and_then(Value::as_str) == Some(username));
        let hash = entity
            .as_ref()
            .and_then(|e| e.get(&options.password_field))
            .and_then(Value::as_str)
            .map(str::to_owned);
        let (Some(entity), Some(hash)) = (entity, hash) else {
            // Spend the time a real check takes, so a response time does not tell whether the
            // user exists.
            let _ = password::verify(plain, password::dummy_hash().await?).await;
            return Err(invalid_login());
        };
        match password::verify(plain, &hash).await {
            Ok(true) => {}
            Ok(false) => return Err(invalid_login()),
            Err(err) if err.kind() == ErrorKind::BadRequest => {
                // The stored value is not a PHC hash string.
                tracing::warn!(target: "plume::auth", "stored password is not an argon2 hash");
                return Err(invalid_login());
            }
            Err(err) => return Err(err),
        }
        let mut result = Map::new();
        result.insert("authentication".into(), json!({ "strategy": "local" }));
        let entity = service.safe_entity(visible.unwrap_or(entity));
        result.insert(service.config().entity.clone(), entity);
        Ok(Value::Object(result))
    }
}
