//! What crosses the mesh for the distribution plugin: service descriptors, call bodies with the
//! explicit params schema, and event envelopes.

use bytes::Bytes;
use plume::{HookContext, Id, Method, Params, Provider, SharedValue};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::protocol::splice;
use crate::protocol::value::write_value;

/// The version of the descriptor format; a descriptor without it is not a Plume service.
pub(crate) const DESCRIPTOR_VERSION: u32 = 1;

/// The mesh endpoint name of a service path.
pub(crate) fn endpoint(path: &str) -> String {
    format!("svc:{path}")
}

/// The service path of a mesh endpoint name, when it names a Plume service.
pub(crate) fn path_of(name: &str) -> Option<&str> {
    name.strip_prefix("svc:")
}

/// The mesh topic of one event of one path.
pub(crate) fn topic(path: &str, event: &str) -> String {
    format!("evt:{event}@{path}")
}

/// The mesh topic on which a node announces that it stopped publishing a path (`unuse`).
pub(crate) const WITHDRAWN_TOPIC: &str = "plume.distribution.withdrawn";

/// The method name of a healthcheck call.
pub(crate) const HEALTH_METHOD: &str = "$healthcheck";

/// What a provider publishes for one service path.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceDescriptor {
    /// Format version.
    pub plume: u32,
    /// The path on the provider.
    pub path: String,
    /// The provider's key.
    pub key: String,
    /// The methods that may be called over the mesh (standard and custom).
    pub methods: Vec<String>,
    /// The custom methods that may be retried on another provider when a link dies.
    #[serde(default)]
    pub idempotent: Vec<String>,
    /// The events the provider relays (standard and custom).
    pub events: Vec<String>,
    /// The chosen service options (`remote_service_options`), shown on the proxy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_options: Option<Value>,
    /// The service's schemas for API docs (a `plume::docs::ServiceSchema`), when it describes
    /// itself and they fit in [`MAX_SCHEMA_BYTES`]. Added after format version 1 shipped: older
    /// peers ignore it, and a descriptor without it documents the service by its methods alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<Value>,
}

/// The largest schema (as JSON text) a descriptor carries; a larger one is left out (the
/// service is still published, documented by its methods' names on the consumers).
pub(crate) const MAX_SCHEMA_BYTES: usize = 256 * 1024;

impl ServiceDescriptor {
    /// Parse a descriptor from the mesh table; `None` for anything that is not one.
    pub(crate) fn parse(value: &Value) -> Option<Self> {
        let d: Self = serde_json::from_value(value.clone()).ok()?;
        (d.plume == DESCRIPTOR_VERSION).then_some(d)
    }

    /// The methods, parsed.
    pub fn method_list(&self) -> Vec<Method> {
        self.methods.iter().map(|m| Method::from_name(m)).collect()
    }

    /// The custom events (everything but the standard four).
    pub fn custom_events(&self) -> Vec<String> {
        self.events
            .iter()
            .filter(|e| !plume::STANDARD_EVENTS.contains(&e.as_str()))
            .cloned()
            .collect()
    }

    /// True when a call of `method` may be retried on another provider.
    pub fn is_idempotent(&self, method: &Method) -> bool {
        method.is_idempotent() || self.idempotent.iter().any(|m| m == method.as_str())
    }
}

/// The params that cross the mesh. Connections, sockets, headers and raw tokens never do.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(test, derive(PartialEq))]
pub(crate) struct WireParams {
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub(crate) query: Map<String, Value>,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub(crate) route: Map<String, Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) provider: Option<Provider>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) user: Option<SharedValue>,
    /// `authentication` without its `accessToken`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) authentication: Option<SharedValue>,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub(crate) extra: Map<String, Value>,
}

impl WireParams {
    /// The wire form of `params`, keeping only the `extra` keys in `extras` (the reference
    /// for [`WireParamsRef`], which the proxies send).
    #[cfg(test)]
    pub(crate) fn from_params(params: &Params, extras: &[String]) -> Self {
        let authentication = params.authentication.as_deref().map(|a| match a {
            Value::Object(map) => Value::Object(
                map.iter()
                    .filter(|(k, _)| k.as_str() != "accessToken")
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            )
            .into(),
            _ => Value::Null.into(),
        });
        Self {
            query: params.query.clone(),
            route: params.route.clone(),
            provider: params.provider,
            user: params.user.clone(),
            authentication,
            extra: params
                .extra
                .iter()
                .filter(|(k, _)| extras.iter().any(|e| e == *k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }
    }

    /// The params a provider runs the call with (`from_remote = true`).
    pub(crate) fn into_params(self) -> Params {
        let mut params = Params::new();
        params.query = self.query;
        params.route = self.route;
        params.provider = self.provider;
        params.user = self.user;
        params.authentication = self.authentication;
        params.extra = self.extra;
        params.from_remote = true;
        params
    }
}

/// The body of a remote call. A provider decodes it straight from the request frame
/// ([`RawBody::decode`](crate::RawBody::decode)).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(test, derive(PartialEq))]
pub(crate) struct CallBody {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) id: Option<Id>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) data: Option<Value>,
    #[serde(default)]
    pub(crate) params: WireParams,
}

/// The borrowed form of a [`CallBody`] that a proxy sends: serialized straight into the request
/// frame, it encodes exactly as `CallBody { id, data, params: WireParams::from_params(..) }`
/// does, without copying the params first.
#[derive(Debug, Serialize)]
pub(crate) struct CallBodyRef<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) id: Option<&'a Id>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) data: Option<&'a Value>,
    pub(crate) params: WireParamsRef<'a>,
}

/// The borrowed form of [`WireParams`] (same fields, same filtering).
#[derive(Debug, Serialize)]
pub(crate) struct WireParamsRef<'a> {
    #[serde(skip_serializing_if = "is_empty_map")]
    query: &'a Map<String, Value>,
    #[serde(skip_serializing_if = "is_empty_map")]
    route: &'a Map<String, Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    provider: Option<Provider>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<UserOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    authentication: Option<WithoutToken<'a>>,
    #[serde(skip_serializing_if = "Selected::is_empty")]
    extra: Selected<'a>,
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's skip_serializing_if passes a reference
fn is_empty_map(map: &&Map<String, Value>) -> bool {
    map.is_empty()
}

impl<'a> WireParamsRef<'a> {
    /// The wire form of `params`, keeping only the `extra` keys in `extras`.
    pub(crate) fn new(params: &'a Params, extras: &'a [String]) -> Self {
        Self {
            query: &params.query,
            route: &params.route,
            provider: params.provider,
            user: params.user.as_ref().map(UserOut),
            authentication: params.authentication.as_ref().map(WithoutToken),
            extra: Selected {
                map: &params.extra,
                keys: extras,
            },
        }
    }
}

/// The largest encoding of a user or an authentication kept with it ([`SharedValue::memo`]):
/// a larger one is encoded by serde with each call rather than kept twice.
const MAX_MEMO: usize = 16 * 1024;

/// The memo kinds of a [`SharedValue`] (one is kept per value): the user's encoding, and the
/// authentication's without its token.
const MEMO_USER: u8 = 1;
const MEMO_AUTHENTICATION: u8 = 2;

/// `user`: a value shared between calls (a cached user) is encoded once, kept with it, and
/// copied into each request (`protocol::splice`); the same bytes serde writes.
#[derive(Debug)]
struct UserOut<'a>(&'a SharedValue);

impl Serialize for UserOut<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if splice::armed()
            && let Some(bytes) = self.0.memo(MEMO_USER, user_bytes)
        {
            return splice::write(serializer, bytes);
        }
        self.0.serialize(serializer)
    }
}

/// What serde writes for a user (`None` past [`MAX_MEMO`]).
fn user_bytes(user: &Value) -> Option<Bytes> {
    let mut buf = Vec::new();
    write_value(&mut buf, user).ok()?;
    (buf.len() <= MAX_MEMO).then(|| Bytes::from(buf))
}

/// What serde writes for [`WithoutToken`] (`None` past [`MAX_MEMO`]).
fn without_token_bytes(authentication: &Value) -> Option<Bytes> {
    let Value::Object(map) = authentication else {
        return Some(Bytes::from_static(&[0xc0]));
    };
    let kept = map.iter().filter(|(k, _)| k.as_str() != "accessToken");
    let mut buf = Vec::new();
    let len = u32::try_from(kept.clone().count()).ok()?;
    rmp::encode::write_map_len(&mut buf, len).ok()?;
    for (k, v) in kept {
        rmp::encode::write_str(&mut buf, k).ok()?;
        write_value(&mut buf, v).ok()?;
    }
    (buf.len() <= MAX_MEMO).then(|| Bytes::from(buf))
}

/// `authentication` without its `accessToken` (null when it is not an object); spliced as
/// [`UserOut`] is.
#[derive(Debug)]
struct WithoutToken<'a>(&'a SharedValue);

impl Serialize for WithoutToken<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        if splice::armed()
            && let Some(bytes) = self.0.memo(MEMO_AUTHENTICATION, without_token_bytes)
        {
            return splice::write(serializer, bytes);
        }
        let Value::Object(map) = &**self.0 else {
            return serializer.serialize_unit();
        };
        let kept = map.iter().filter(|(k, _)| k.as_str() != "accessToken");
        let mut out = serializer.serialize_map(Some(kept.clone().count()))?;
        for (k, v) in kept {
            out.serialize_entry(k, v)?;
        }
        out.end()
    }
}

/// The entries of `map` whose key is in `keys`.
#[derive(Debug)]
struct Selected<'a> {
    map: &'a Map<String, Value>,
    keys: &'a [String],
}

impl Selected<'_> {
    fn entries(&self) -> impl Iterator<Item = (&String, &Value)> + Clone {
        self.map
            .iter()
            .filter(|(k, _)| self.keys.iter().any(|e| e == *k))
    }

    fn is_empty(&self) -> bool {
        self.entries().next().is_none()
    }
}

impl Serialize for Selected<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut out = serializer.serialize_map(Some(self.entries().count()))?;
        for (k, v) in self.entries() {
            out.serialize_entry(k, v)?;
        }
        out.end()
    }
}

/// The small context that travels with an event.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct EventContext {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) method: Option<Method>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) id: Option<Id>,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub(crate) query: Map<String, Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) user: Option<SharedValue>,
}

impl EventContext {
    pub(crate) fn from_hook(ctx: &HookContext) -> Self {
        Self {
            method: Some(ctx.method.clone()),
            id: ctx.id.clone(),
            query: ctx.params.query.clone(),
            user: ctx.params.user.clone(),
        }
    }
}

/// One relayed event.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct EventEnvelope {
    pub(crate) key: String,
    pub(crate) path: String,
    pub(crate) event: String,
    pub(crate) data: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) ctx: Option<EventContext>,
}

/// The message on [`WITHDRAWN_TOPIC`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Withdrawn {
    pub(crate) node: String,
    pub(crate) path: String,
}
