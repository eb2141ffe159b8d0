//! feathers-distributed 3.0's messages: service publication and removal, RPC requests and
//! replies, service events with their context, and errors.
//!
//! - `service` / `service-removed` on the `services` publisher: a [`ServiceDescriptor`];
//! - an RPC request to a responder of key K: [`RpcRequest`] `{type, key, path, id?, data?,
//!   params?}`; the reply is axon's `[err or null, result]`;
//! - an event on the events publisher of key K: topic = event name, payload = the data merged
//!   over `{path, key, context}` ([`encode_event`], [`decode_event`]).

use plume::{Error, ErrorKind, Id, Method, Params, Provider};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The four standard events feathers-distributed adds to every service's list.
pub const DEFAULT_EVENTS: [&str; 4] = ["created", "updated", "patched", "removed"];
/// The standard methods feathers-distributed's responder answers by default.
pub const DEFAULT_METHODS: [&str; 6] = ["find", "get", "create", "update", "patch", "remove"];
/// The topic of a service publication.
pub const SERVICE: &str = "service";
/// The topic of a service removal.
pub const SERVICE_REMOVED: &str = "service-removed";
/// The namespace and key of the services channel, shared by every app.
pub const SERVICES: &str = "services";

/// The advertised names of feathers-distributed's components.
pub mod names {
    /// The services subscriber (one per app).
    pub const SERVICES_SUBSCRIBER: &str = "feathers services subscriber";
    /// The services publisher (one per app).
    pub const SERVICES_PUBLISHER: &str = "feathers services publisher";
    /// The events publisher of the app's key.
    pub const EVENTS_PUBLISHER: &str = "feathers services events publisher";
    /// An events subscriber, one per remote key.
    pub const EVENTS_SUBSCRIBER: &str = "feathers services events subscriber";
    /// A requester, one per remote key.
    pub const REQUESTER: &str = "feathers services requester";
    /// The responder of the app's key.
    pub const RESPONDER: &str = "feathers services responder";
}

/// A service publication (`service`) or removal (`service-removed`, without `methods`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceDescriptor {
    /// The publishing app's uuid.
    pub uuid: String,
    /// The uuid up to its first dash.
    #[serde(default)]
    pub short_uuid: String,
    /// The publishing app's distribution key.
    pub key: String,
    /// The path, without leading or trailing slashes.
    pub path: String,
    /// The events the service publishes.
    #[serde(default)]
    pub events: Vec<String>,
    /// The methods it answers (absent on a removal).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub methods: Option<Vec<String>>,
    /// Service options the publisher chose to send.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_options: Option<Value>,
}

/// The first segment of a uuid (feathers-distributed's `shortUuid`).
pub fn short_uuid(uuid: &str) -> String {
    uuid.split('-').next().unwrap_or(uuid).to_owned()
}

/// An RPC request, as a requester sends it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RpcRequest {
    /// The method name, or `healthcheck`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The target key.
    #[serde(default)]
    pub key: String,
    /// The remote path.
    #[serde(default)]
    pub path: String,
    /// The id (get, update, patch, remove).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<Value>,
    /// The data (create, update, patch, custom methods).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
    /// The caller's params (absent for healthcheck).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<Value>,
}

/// What an RPC request asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Rpc {
    /// Is the path served here.
    Healthcheck,
    /// A service method.
    Call {
        /// The method.
        method: Method,
        /// Its id (null allowed for multi patch/remove).
        id: Option<Id>,
        /// Its data.
        data: Option<Value>,
    },
}

impl RpcRequest {
    /// A request for `method` on `path` of the app with `key`.
    pub fn call(
        key: &str,
        path: &str,
        method: &Method,
        id: Option<&Id>,
        data: Option<Value>,
        params: &Params,
    ) -> Self {
        let takes_id = matches!(
            method,
            Method::Get | Method::Update | Method::Patch | Method::Remove
        );
        RpcRequest {
            kind: method.as_str().to_owned(),
            key: key.to_owned(),
            path: path.to_owned(),
            id: if takes_id {
                Some(id.map_or(Value::Null, Id::to_value))
            } else {
                None
            },
            data,
            params: Some(params_to_wire(params)),
        }
    }

    /// A healthcheck request.
    pub fn healthcheck(key: &str, path: &str) -> Self {
        RpcRequest {
            kind: "healthcheck".into(),
            key: key.to_owned(),
            path: path.to_owned(),
            id: None,
            data: None,
            params: None,
        }
    }

    /// What the request asks for: the method with its id and data, checked. An unknown shape
    /// is a BadRequest (the answer the responder sends back).
    pub fn rpc(&self) -> Result<Rpc, Error> {
        if self.kind == "healthcheck" {
            return Ok(Rpc::Healthcheck);
        }
        if self.kind.is_empty() || self.kind.len() > 128 || self.kind.contains('*') {
            return Err(Error::bad_request(format!(
                "unknown request type {:?}",
                self.kind.chars().take(64).collect::<String>()
            )));
        }
        let method = Method::from_name(&self.kind);
        let id = match &self.id {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                Id::from_value(v)
                    .ok_or_else(|| Error::bad_request("the id is not a string or a number"))?,
            ),
        };
        if matches!(method, Method::Get | Method::Update) && id.is_none() {
            return Err(Error::bad_request(format!("{} needs an id", self.kind)));
        }
        Ok(Rpc::Call {
            method,
            id,
            data: self.data.clone(),
        })
    }

    /// The params the provider runs the call with.
    pub fn run_params(&self) -> Params {
        params_from_wire(self.params.as_ref())
    }
}

/// The params a Plume node sends: query, route, provider, user, authentication without its
/// token, and the `extra` values. Headers and connections never leave the node.
pub fn params_to_wire(params: &Params) -> Value {
    let mut out = Map::new();
    out.insert("query".into(), Value::Object(params.query.clone()));
    if !params.route.is_empty() {
        out.insert("route".into(), Value::Object(params.route.clone()));
    }
    if let Some(p) = params.provider {
        out.insert("provider".into(), Value::String(p.as_str().into()));
    }
    if let Some(user) = params.user.as_deref() {
        out.insert("user".into(), user.clone());
    }
    if let Some(Value::Object(auth)) = params.authentication.as_deref() {
        let auth: Map<String, Value> = auth
            .iter()
            .filter(|(k, _)| k.as_str() != "accessToken")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        out.insert("authentication".into(), Value::Object(auth));
    }
    for (k, v) in &params.extra {
        out.entry(k.clone()).or_insert_with(|| v.clone());
    }
    Value::Object(out)
}

/// Fields of Node params that are the transport's, not the call's: they stay behind.
const NODE_ONLY: [&str; 4] = ["headers", "connection", "fromRemote", "app"];

/// The params a call from a Node app runs with (`from_remote` set). `query`, `route`,
/// `provider`, `user` and `authentication` map to their fields; other fields go to `extra`,
/// except the transport's own (headers, the socket connection).
pub fn params_from_wire(params: Option<&Value>) -> Params {
    let mut out = Params::new();
    out.from_remote = true;
    let Some(Value::Object(map)) = params else {
        return out;
    };
    for (k, v) in map {
        match (k.as_str(), v) {
            ("query", Value::Object(q)) => out.query = q.clone(),
            ("route", Value::Object(r)) => out.route = r.clone(),
            ("provider", Value::String(p)) => {
                out.provider = match p.as_str() {
                    "rest" => Some(Provider::Rest),
                    "socketio" => Some(Provider::Socketio),
                    _ => None,
                }
            }
            ("user", u) if !u.is_null() => out.user = Some(u.clone().into()),
            ("authentication", a) if !a.is_null() => out.authentication = Some(a.clone().into()),
            (k, _) if NODE_ONLY.contains(&k) => {}
            ("query" | "route" | "provider" | "user" | "authentication", _) => {}
            (k, v) => {
                out.extra.insert(k.to_owned(), v.clone());
            }
        }
    }
    out
}

/// The payload of a service event: the data object merged over `{path, key, context}` (data
/// fields win). Arrays spread into index keys and scalars into nothing, as JavaScript's
/// object spread does.
pub fn encode_event(path: &str, key: &str, context: Value, data: &Value) -> Value {
    let mut out = Map::new();
    out.insert("path".into(), Value::String(path.into()));
    out.insert("key".into(), Value::String(key.into()));
    out.insert("context".into(), context);
    match data {
        Value::Object(m) => {
            for (k, v) in m {
                out.insert(k.clone(), v.clone());
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                out.insert(i.to_string(), v.clone());
            }
        }
        _ => {}
    }
    Value::Object(out)
}

/// A received service event.
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteEvent {
    /// The publisher's path.
    pub path: String,
    /// The publisher's key.
    pub key: String,
    /// The hook context as JSON (or null).
    pub context: Value,
    /// The data, without `context` (feathers-distributed leaves `path` and `key` in; so does
    /// this, so Node and Plume gateways emit the same object).
    pub data: Value,
}

/// Split an event payload. None when it is not an object with a string `path`.
pub fn decode_event(payload: Value) -> Option<RemoteEvent> {
    let Value::Object(mut map) = payload else {
        return None;
    };
    let path = map.get("path")?.as_str()?.to_owned();
    let key = map
        .get("key")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let context = map.remove("context").unwrap_or(Value::Null);
    Some(RemoteEvent {
        path,
        key,
        context,
        data: Value::Object(map),
    })
}

/// The error value a responder sends: Feathers' `toJSON()` shape.
pub fn error_to_wire(err: &Error) -> Value {
    err.to_json()
}

/// A reply's error value as a Feathers error, as `@feathersjs/errors`' `convert` does: the
/// class named by `name` (or `className`, or `code`) keeps its class and code; anything else
/// (a plain JavaScript `Error` arrives as `{}`) is a GeneralError that keeps the value in
/// `data`.
pub fn error_from_wire(value: Value) -> Error {
    let Value::Object(map) = &value else {
        let message = match &value {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        return Error::general_error(message);
    };
    let message = map
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let kind = map
        .get("name")
        .and_then(Value::as_str)
        .and_then(ErrorKind::from_name)
        .or_else(|| {
            map.get("className")
                .and_then(Value::as_str)
                .and_then(ErrorKind::from_class_name)
        });
    match kind {
        Some(kind) => {
            let mut err = Error::new(kind, message);
            if let Some(data) = map.get("data").filter(|d| !d.is_null()) {
                err = err.with_data(data.clone());
            }
            if let Some(errors) = map.get("errors").filter(|e| !e.is_null()) {
                err = err.with_errors(errors.clone());
            }
            err
        }
        None if message.is_empty() => {
            Error::general_error("the remote service failed with an error that has no message")
                .with_data(value)
        }
        None => Error::general_error(message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn request_shapes_match_feathers_distributed() {
        let params = Params::new().with_query(json!({"done": false}));
        let get = RpcRequest::call(
            "todos",
            "todos",
            &Method::Get,
            Some(&Id::Int(3)),
            None,
            &params,
        );
        assert_eq!(
            serde_json::to_value(&get).unwrap(),
            json!({"type": "get", "key": "todos", "path": "todos", "id": 3,
                   "params": {"query": {"done": false}}})
        );
        let find = RpcRequest::call("todos", "todos", &Method::Find, None, None, &params);
        assert!(serde_json::to_value(&find).unwrap().get("id").is_none());
        assert_eq!(
            serde_json::to_value(RpcRequest::healthcheck("k", "p")).unwrap(),
            json!({"type": "healthcheck", "key": "k", "path": "p"})
        );
    }

    #[test]
    fn node_params_keep_the_call_and_drop_the_transport() {
        let p = params_from_wire(Some(&json!({
            "query": {"$limit": 2}, "provider": "socketio", "user": {"id": 1},
            "headers": {"authorization": "x"}, "connection": {"a": 1}, "tenant": "t"
        })));
        assert!(p.from_remote);
        assert_eq!(p.query["$limit"], 2);
        assert_eq!(p.provider, Some(Provider::Socketio));
        assert_eq!(p.user.as_deref(), Some(&json!({"id": 1})));
        assert_eq!(p.extra.len(), 1);
        assert_eq!(p.extra["tenant"], "t");
    }

    #[test]
    fn events_merge_like_feathers_distributed() {
        let payload = encode_event(
            "todos",
            "todos",
            json!({"method": "create"}),
            &json!({"id": 1, "path": "x"}),
        );
        assert_eq!(payload["path"], "x", "data fields win");
        let ev = decode_event(payload).unwrap();
        assert_eq!(ev.context["method"], "create");
        assert_eq!(ev.data, json!({"path": "x", "key": "todos", "id": 1}));
        assert_eq!(decode_event(json!([1])), None);
    }

    #[test]
    fn errors_keep_class_and_code_both_ways() {
        for kind in ErrorKind::ALL {
            let err = Error::new(*kind, "boom").with_data(json!({"f": 1}));
            let back = error_from_wire(error_to_wire(&err));
            assert_eq!(back.kind(), *kind);
            assert_eq!(back.code(), kind.code());
            assert_eq!(back.message(), "boom");
            assert_eq!(back.data(), Some(&json!({"f": 1})));
        }
        // A plain JavaScript Error serializes to {}.
        let plain = error_from_wire(json!({}));
        assert_eq!(plain.kind(), ErrorKind::GeneralError);
        assert_eq!(
            error_from_wire(json!("Request timed out.")).message(),
            "Request timed out."
        );
    }
}
