//! The `authenticate`, `hash_password` and `protect` hooks.

use async_trait::async_trait;
use serde_json::Value;

use super::{AuthenticationService, password};
use crate::error::{Error, Result};
use crate::hooks::{Hook, HookContext};
use crate::params::{Method, Params};
use crate::shared::SharedValue;

/// True for a call from a client or from another node (not an internal call).
fn is_external(params: &Params) -> bool {
    params.provider.is_some() || params.from_remote
}

/// The hook made by [`authenticate`].
#[derive(Debug, Clone)]
pub struct Authenticate {
    strategies: Vec<String>,
}

/// A before hook that requires an authenticated caller (Feathers' `authenticate('jwt')`).
///
/// It reads `params.authentication`, or else the `Authorization` header (`Bearer <t>`,
/// `bearer <t>`, `JWT <t>` or a bare `<t>`; other schemes are ignored), and verifies it with
/// one of `strategies` through the App's [`AuthenticationService`]. On success it sets
/// `params.user` (the entity as clients may see it: without the fields the entity service's
/// [`protect`] hook removes, nor the password field, since `params.user` crosses the mesh with
/// every call and may be returned by a service) and `params.authentication` (`{strategy, accessToken,
/// payload}`).
///
/// Without authentication information, an external call (REST, socket.io or a mesh peer)
/// fails with NotAuthenticated `Not authenticated`; an internal call passes unchanged. A
/// malformed, expired or foreign-signed token is NotAuthenticated too.
///
/// ```
/// use plume::auth::authenticate;
/// # let app = plume::App::new();
/// # struct S; #[plume::async_trait] impl plume::Service for S {}
/// let todos = app.use_service("todos", S);
/// todos.hooks().before(authenticate(["jwt"]));
/// ```
pub fn authenticate<I, S>(strategies: I) -> Authenticate
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    Authenticate {
        strategies: strategies.into_iter().map(Into::into).collect(),
    }
}

#[async_trait]
impl Hook for Authenticate {
    async fn run(&self, ctx: &mut HookContext) -> Result<()> {
        let service = ctx.app.extension::<AuthenticationService>();
        // The usual cases: a bearer token (REST) or a connection's `{strategy: "jwt",
        // accessToken}` (socket.io) for the built-in `jwt` strategy, checked through its cache
        // without building the strategy's generic result (the same user and authentication).
        let token = self
            .jwt_token(ctx)
            .filter(|_| service.as_ref().is_some_and(|s| s.builtin_jwt()));
        let (user, authentication) = match (token, service) {
            (Some(token), Some(service)) => {
                let (user, authentication) = service.jwt_parts(token).await?;
                (user, Some(authentication))
            }
            (_, service) => {
                let Some(auth) = AuthenticationService::params_authentication(&ctx.params) else {
                    if is_external(&ctx.params) {
                        return Err(Error::not_authenticated("Not authenticated"));
                    }
                    return Ok(());
                };
                let service = service.ok_or_else(|| {
                    Error::internal("authenticate hook used without an AuthenticationService")
                })?;
                let result = service
                    .authenticate(&auth, &ctx.params, &self.strategies)
                    .await?;
                match result {
                    Value::Object(mut result) => (
                        result
                            .remove(&service.config().entity)
                            .map(|user| service.safe_entity(user).into()),
                        result.remove("authentication").map(SharedValue::from),
                    ),
                    _ => (None, None),
                }
            }
        };
        if user.is_some() {
            ctx.params.user = user;
        }
        if authentication.is_some() {
            ctx.params.authentication = authentication;
        }
        ctx.params
            .extra
            .insert("authenticated".into(), Value::Bool(true));
        Ok(())
    }
}

impl Authenticate {
    /// The token for the `jwt` strategy, when it is one of this hook's strategies: the
    /// `accessToken` of a `params.authentication` of strategy `jwt` (a string: anything else
    /// goes to the strategy, which refuses it), or else the `Authorization` header's token
    /// (not on a socket.io call, whose headers are the handshake's).
    fn jwt_token<'c>(&self, ctx: &'c HookContext) -> Option<&'c str> {
        if !self.strategies.iter().any(|s| s == "jwt") {
            return None;
        }
        if let Some(auth) = ctx.params.authentication.as_deref() {
            return match auth.get("strategy").and_then(Value::as_str) {
                Some("jwt") => auth.get("accessToken").and_then(Value::as_str),
                _ => None,
            };
        }
        if ctx.params.provider == Some(crate::params::Provider::Socketio) {
            return None;
        }
        let header = ctx.params.headers.get(http::header::AUTHORIZATION)?;
        super::authorization_token(super::visible_ascii(header)?)
    }
}

/// The hook made by [`hash_password`].
#[derive(Debug, Clone)]
pub struct HashPassword {
    field: String,
}

/// A before hook for `create`, `update` and `patch` that replaces the string in `field` of the
/// data (of each record, for an array) with its argon2 hash. Other methods, and data without
/// the field, pass unchanged. Hashing runs on the blocking pool.
///
/// ```
/// use plume::auth::hash_password;
/// use plume::Method;
/// # let app = plume::App::new();
/// # struct S; #[plume::async_trait] impl plume::Service for S {}
/// let users = app.use_service("users", S);
/// users.hooks().before_for([Method::Create, Method::Patch], hash_password("password"));
/// ```
pub fn hash_password(field: impl Into<String>) -> HashPassword {
    HashPassword {
        field: field.into(),
    }
}

#[async_trait]
impl Hook for HashPassword {
    async fn run(&self, ctx: &mut HookContext) -> Result<()> {
        if !matches!(ctx.method, Method::Create | Method::Update | Method::Patch) {
            return Ok(());
        }
        match &mut ctx.data {
            Some(Value::Array(items)) => {
                for item in items {
                    hash_field(item, &self.field).await?;
                }
            }
            Some(item) => hash_field(item, &self.field).await?,
            None => {}
        }
        Ok(())
    }
}

async fn hash_field(record: &mut Value, field: &str) -> Result<()> {
    if let Some(slot) = record.get_mut(field)
        && let Some(plain) = slot.as_str()
    {
        *slot = Value::String(password::hash(plain).await?);
    }
    Ok(())
}

/// The hook made by [`protect`].
#[derive(Debug, Clone)]
pub struct Protect {
    fields: Vec<String>,
}

/// An after hook that removes `fields` from the result of an external call: from a record,
/// from each record of an array, and from each record of a page's `data`. Internal calls keep
/// them in their result (the `local` strategy needs the hash), but get a stripped copy in
/// [`HookContext::dispatch`]: the call's events, sent to clients and peers, carry that copy,
/// and the `authenticate` hook keeps the user in that form, so the fields never leave the
/// server.
///
/// ```
/// use plume::auth::protect;
/// # let app = plume::App::new();
/// # struct S; #[plume::async_trait] impl plume::Service for S {}
/// let users = app.use_service("users", S);
/// users.hooks().after(protect(["password"]));
/// ```
pub fn protect<I, S>(fields: I) -> Protect
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    Protect {
        fields: fields.into_iter().map(Into::into).collect(),
    }
}

impl Protect {
    /// Remove the protected fields from a result (record, array or page).
    pub fn strip(&self, result: &mut Value) {
        let strip_record = |record: &mut Value| {
            if let Value::Object(map) = record {
                for field in &self.fields {
                    map.remove(field);
                }
            }
        };
        match result {
            Value::Array(items) => items.iter_mut().for_each(strip_record),
            Value::Object(map)
                if map.contains_key("total") && map.get("data").is_some_and(Value::is_array) =>
            {
                if let Some(Value::Array(items)) = map.get_mut("data") {
                    items.iter_mut().for_each(strip_record);
                }
            }
            record => strip_record(record),
        }
    }
}

#[async_trait]
impl Hook for Protect {
    async fn run(&self, ctx: &mut HookContext) -> Result<()> {
        if let Some(dispatch) = &mut ctx.dispatch {
            self.strip(dispatch);
        }
        if is_external(&ctx.params) {
            if let Some(result) = &mut ctx.result {
                self.strip(result);
            }
        } else if ctx.dispatch.is_none()
            && let Some(result) = &ctx.result
        {
            // An internal call keeps the fields in its result (the `local` strategy needs the
            // hash); what leaves the server (its events, the authenticated user) does not.
            let mut dispatch = result.clone();
            self.strip(&mut dispatch);
            ctx.dispatch = Some(dispatch);
        }
        Ok(())
    }
}
