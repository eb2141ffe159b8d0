//! Ids, methods and call parameters.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::shared::SharedValue;

/// A record id: an integer or a string, as Feathers allows.
///
/// Ids that arrive in a URL are strings; [`Id::matches`] compares `Int(5)` and `Str("5")` as
/// equal, the way Feathers adapters do.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Id {
    /// An integer id.
    Int(i64),
    /// A string id.
    Str(String),
}

impl Id {
    /// True when both ids denote the same record (`5` and `"5"` do).
    pub fn matches(&self, other: &Id) -> bool {
        match (self, other) {
            (Id::Int(a), Id::Int(b)) => a == b,
            (Id::Str(a), Id::Str(b)) => a == b,
            (Id::Int(a), Id::Str(b)) | (Id::Str(b), Id::Int(a)) => *b == a.to_string(),
        }
    }

    /// True when this id denotes the JSON value `value` (a number or a string).
    pub fn matches_value(&self, value: &Value) -> bool {
        Id::from_value(value).is_some_and(|v| self.matches(&v))
    }

    /// The id in a JSON value: an integer or a string; anything else is not an id.
    pub fn from_value(value: &Value) -> Option<Id> {
        match value {
            Value::Number(n) => n.as_i64().map(Id::Int),
            Value::String(s) => Some(Id::Str(s.clone())),
            _ => None,
        }
    }

    /// The id as a JSON value.
    pub fn to_value(&self) -> Value {
        match self {
            Id::Int(i) => Value::from(*i),
            Id::Str(s) => Value::from(s.clone()),
        }
    }

    /// Parse a URL segment: digits (without a leading `+` or zero padding) give an integer id,
    /// anything else a string id.
    pub fn parse_segment(segment: &str) -> Id {
        match segment.parse::<i64>() {
            Ok(i) if i.to_string() == segment => Id::Int(i),
            _ => Id::Str(segment.to_owned()),
        }
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Id::Int(i) => write!(f, "{i}"),
            Id::Str(s) => f.write_str(s),
        }
    }
}

impl From<i64> for Id {
    fn from(v: i64) -> Self {
        Id::Int(v)
    }
}
impl From<i32> for Id {
    fn from(v: i32) -> Self {
        Id::Int(v.into())
    }
}
impl From<u32> for Id {
    fn from(v: u32) -> Self {
        Id::Int(v.into())
    }
}
impl From<&str> for Id {
    fn from(v: &str) -> Self {
        Id::Str(v.to_owned())
    }
}
impl From<String> for Id {
    fn from(v: String) -> Self {
        Id::Str(v)
    }
}
impl From<&Id> for Id {
    fn from(v: &Id) -> Self {
        v.clone()
    }
}

/// What [`ServiceHandle::patch`](crate::ServiceHandle::patch) and
/// [`remove`](crate::ServiceHandle::remove) take as their id: any id (`5`, `"abc"`, an [`Id`]
/// or `&Id`, as `get` and `update` take), or `None`, Feathers' `null` id, for every record
/// matching `params.query` (a multi patch or remove; the service decides whether it allows
/// one).
///
/// ```
/// use plume::{Id, IntoNullableId};
///
/// assert_eq!(5.into_nullable_id(), Some(Id::Int(5)));
/// assert_eq!("a".into_nullable_id(), Some(Id::from("a")));
/// assert_eq!(None.into_nullable_id(), None);
/// ```
pub trait IntoNullableId {
    /// The id, or `None` for Feathers' `null`.
    fn into_nullable_id(self) -> Option<Id>;
}

macro_rules! nullable_ids {
    ($($t:ty),*) => {
        $(
            impl IntoNullableId for $t {
                fn into_nullable_id(self) -> Option<Id> {
                    Some(Id::from(self))
                }
            }
        )*
    };
}

nullable_ids!(Id, &Id, i64, i32, u32, &str, String);

impl IntoNullableId for Option<Id> {
    fn into_nullable_id(self) -> Option<Id> {
        self
    }
}

/// A service method: one of the six standard ones, or a custom one by name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Method {
    /// `find(params)`
    Find,
    /// `get(id, params)`
    Get,
    /// `create(data, params)`
    Create,
    /// `update(id, data, params)`
    Update,
    /// `patch(id?, data, params)`
    Patch,
    /// `remove(id?, params)`
    Remove,
    /// A custom method `name(data, params)`.
    Custom(String),
}

impl Method {
    /// The six standard methods.
    pub const STANDARD: [Method; 6] = [
        Method::Find,
        Method::Get,
        Method::Create,
        Method::Update,
        Method::Patch,
        Method::Remove,
    ];

    /// The method's name.
    pub fn as_str(&self) -> &str {
        match self {
            Method::Find => "find",
            Method::Get => "get",
            Method::Create => "create",
            Method::Update => "update",
            Method::Patch => "patch",
            Method::Remove => "remove",
            Method::Custom(name) => name,
        }
    }

    /// The method of this name (a name that is not standard is custom).
    pub fn from_name(name: &str) -> Method {
        match name {
            "find" => Method::Find,
            "get" => Method::Get,
            "create" => Method::Create,
            "update" => Method::Update,
            "patch" => Method::Patch,
            "remove" => Method::Remove,
            other => Method::Custom(other.to_owned()),
        }
    }

    /// True for the six standard methods.
    pub fn is_standard(&self) -> bool {
        !matches!(self, Method::Custom(_))
    }

    /// The event a successful call emits: `created`, `updated`, `patched`, `removed`.
    pub fn event(&self) -> Option<&'static str> {
        match self {
            Method::Create => Some("created"),
            Method::Update => Some("updated"),
            Method::Patch => Some("patched"),
            Method::Remove => Some("removed"),
            _ => None,
        }
    }

    /// True when running the call twice has the effect of running it once (`find`, `get`,
    /// `update`): such calls may be retried on another provider.
    pub fn is_idempotent(&self) -> bool {
        matches!(self, Method::Find | Method::Get | Method::Update)
    }
}

/// A set of methods: one [`Method`], or an array, slice or `Vec` of them. The hooks registered
/// with a `*_for` method of [`HookRegistry`](crate::hooks::HookRegistry) take it, and so does
/// [`ServiceOptions::methods`](crate::ServiceOptions::methods). Methods are values, not names, so a typo
/// does not compile; a custom method is `Method::Custom("name".into())` (or
/// [`Method::from_name`]).
///
/// ```
/// use plume::hooks::hook_sync;
/// use plume::{App, MemoryService, Method};
///
/// let app = App::new();
/// let todos = app.use_service("todos", MemoryService::<serde_json::Value>::new());
/// todos.hooks().before_for([Method::Create, Method::Patch], hook_sync(|_ctx| Ok(())));
/// todos.hooks().after_for(Method::Find, hook_sync(|_ctx| Ok(())));
/// ```
pub trait IntoMethods {
    /// The methods.
    fn into_methods(self) -> Vec<Method>;
}

impl IntoMethods for Method {
    fn into_methods(self) -> Vec<Method> {
        vec![self]
    }
}

impl<const N: usize> IntoMethods for [Method; N] {
    fn into_methods(self) -> Vec<Method> {
        self.into()
    }
}

impl IntoMethods for &[Method] {
    fn into_methods(self) -> Vec<Method> {
        self.to_vec()
    }
}

impl IntoMethods for Vec<Method> {
    fn into_methods(self) -> Vec<Method> {
        self
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Method {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Method::from_name(s))
    }
}

impl Serialize for Method {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Method {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        Ok(Method::from_name(&name))
    }
}

/// Where a call came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Provider {
    /// The REST server.
    Rest,
    /// The socket.io server.
    Socketio,
}

impl Provider {
    /// `"rest"` or `"socketio"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Rest => "rest",
            Provider::Socketio => "socketio",
        }
    }
}

/// The parameters of a service call.
///
/// `provider` is `None` for internal calls. Hooks use `extra` to pass data along the chain.
#[derive(Debug, Clone, Default)]
pub struct Params {
    /// The query, e.g. `{"done": false, "$limit": 10}`.
    pub query: Map<String, Value>,
    /// Values of route placeholders, e.g. `{"userId": "5"}` for `users/:userId/messages`.
    pub route: Map<String, Value>,
    /// The transport that made the call, or `None` for an internal call.
    pub provider: Option<Provider>,
    /// The authenticated user, set by authentication. Shared, not copied, between the calls
    /// that carry it (see [`SharedValue`]): read it with `params.user.as_deref()` (an
    /// `Option<&Value>`), set it with `params.user = Some(value.into())`.
    pub user: Option<SharedValue>,
    /// The authentication information (`{strategy, accessToken, payload}`), set by
    /// authentication. Shared as `user` is.
    pub authentication: Option<SharedValue>,
    /// Request headers (REST) or handshake headers (socket.io).
    pub headers: http::HeaderMap,
    /// True when the call came over the mesh from another node.
    pub from_remote: bool,
    /// The real-time connection that made the call, when there is one.
    pub connection: Option<ConnectionId>,
    /// The address of the client that made the call (REST and socket.io, when the server knows
    /// it: `App::listen` (feature `server`) does, and so does an axum server started with
    /// `into_make_service_with_connect_info`). It never crosses the mesh. The login rate limit
    /// is counted per address.
    pub remote_addr: Option<std::net::SocketAddr>,
    /// Free-form values for hooks.
    pub extra: Map<String, Value>,
}

impl Params {
    /// Empty params for an internal call.
    pub fn new() -> Self {
        Self::default()
    }

    /// Params with this query (a JSON object; anything else gives an empty query).
    #[must_use]
    pub fn with_query(mut self, query: Value) -> Self {
        self.query = match query {
            Value::Object(map) => map,
            _ => Map::new(),
        };
        self
    }

    /// Params that come from this provider.
    #[must_use]
    pub fn with_provider(mut self, provider: Provider) -> Self {
        self.provider = Some(provider);
        self
    }

    /// Params carrying this authenticated user (a `Value` or a [`SharedValue`]).
    #[must_use]
    pub fn with_user(mut self, user: impl Into<SharedValue>) -> Self {
        self.user = Some(user.into());
        self
    }
}

/// The id of a real-time connection (a socket.io socket id).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ConnectionId(pub String);

impl fmt::Display for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ids_match_across_representations() {
        assert!(Id::Int(5).matches(&Id::Str("5".into())));
        assert!(!Id::Int(5).matches(&Id::Str("05".into())));
        assert!(Id::Str("a".into()).matches_value(&json!("a")));
        assert!(!Id::Int(1).matches_value(&json!(true)));
        assert_eq!(Id::parse_segment("12"), Id::Int(12));
        assert_eq!(Id::parse_segment("012"), Id::Str("012".into()));
        assert_eq!(Id::parse_segment("abc"), Id::Str("abc".into()));
        assert_eq!(serde_json::to_value(Id::Int(3)).ok(), Some(json!(3)));
    }

    #[test]
    fn methods_round_trip_by_name() {
        for m in Method::STANDARD {
            assert_eq!(Method::from_name(m.as_str()), m);
        }
        assert_eq!(Method::from_name("stats"), Method::Custom("stats".into()));
        assert_eq!(Method::Patch.event(), Some("patched"));
        assert!(Method::Get.is_idempotent() && !Method::Create.is_idempotent());
    }
}
