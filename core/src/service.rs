//! The object-safe `Service` trait the App stores.

use async_trait::async_trait;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::params::{Id, Method, Params};

/// A Feathers service: JSON in, JSON out.
///
/// Every method has a default body that answers `MethodNotAllowed`, so a service implements only
/// what it offers. Most users write services with [`#[service]`](crate::service), which implements
/// this trait from typed methods; implementing it by hand is for adapters and proxies.
///
/// ```
/// use plume::{async_trait, Params, Result, Service};
/// use serde_json::{json, Value};
///
/// struct Hello;
///
/// #[async_trait]
/// impl Service for Hello {
///     async fn find(&self, _params: Params) -> Result<Value> {
///         Ok(json!(["hello"]))
///     }
///     fn methods(&self) -> Vec<plume::Method> {
///         vec![plume::Method::Find]
///     }
/// }
/// ```
#[async_trait]
pub trait Service: Send + Sync + 'static {
    /// `find(params)`: records matching `params.query`.
    async fn find(&self, params: Params) -> Result<Value> {
        let _ = params;
        Err(not_offered(&Method::Find))
    }

    /// `get(id, params)`: one record.
    async fn get(&self, id: Id, params: Params) -> Result<Value> {
        let _ = (id, params);
        Err(not_offered(&Method::Get))
    }

    /// `create(data, params)`: a new record (or several, for an array).
    async fn create(&self, data: Value, params: Params) -> Result<Value> {
        let _ = (data, params);
        Err(not_offered(&Method::Create))
    }

    /// `update(id, data, params)`: replace one record.
    async fn update(&self, id: Id, data: Value, params: Params) -> Result<Value> {
        let _ = (id, data, params);
        Err(not_offered(&Method::Update))
    }

    /// `patch(id, data, params)`: merge into one record, or into every record matching the
    /// query when `id` is `None`.
    async fn patch(&self, id: Option<Id>, data: Value, params: Params) -> Result<Value> {
        let _ = (id, data, params);
        Err(not_offered(&Method::Patch))
    }

    /// `remove(id, params)`: remove one record, or every record matching the query when `id` is
    /// `None`.
    async fn remove(&self, id: Option<Id>, params: Params) -> Result<Value> {
        let _ = (id, params);
        Err(not_offered(&Method::Remove))
    }

    /// A custom method `name(data, params)`.
    async fn call(&self, method: &str, data: Value, params: Params) -> Result<Value> {
        let _ = (data, params);
        Err(not_offered(&Method::Custom(method.to_owned())))
    }

    /// The methods this service offers (standard and custom). The default is the six standard
    /// ones; the App exposes only these to clients.
    fn methods(&self) -> Vec<Method> {
        Method::STANDARD.to_vec()
    }

    /// The custom events this service emits, besides the standard four.
    fn events(&self) -> Vec<String> {
        Vec::new()
    }

    /// Options that describe this service (for example `{"id": "id", "paginate": ...}`); the
    /// distribution plugin can send chosen keys along with a remote service's descriptor.
    fn options(&self) -> Value {
        Value::Null
    }

    /// The JSON Schemas of this service's ids, data and results, for its API documentation
    /// ([`App::openapi`](crate::App::openapi)). `#[service]` implements it from the methods'
    /// types; the default, `None`, describes the service by its methods' names alone.
    fn schema(&self) -> Option<crate::docs::ServiceSchema> {
        None
    }

    /// Serve a call from borrowed arguments, without the App copying the hook context's `data`
    /// and `params` (headers and user included) first. A service that only reads its
    /// arguments (the distribution plugin's proxies, which serialize them onto the mesh)
    /// returns `Some`; the default, `None`, has the App call the method with owned copies,
    /// which every other service needs.
    ///
    /// The arguments are those the method named by `method` takes, as [`dispatch`] passes
    /// them: `id` is present for `get` and `update` (the App answers a call without one), may
    /// be present for `patch` and `remove`, and is `None` otherwise; `data` is present (`null`
    /// when the call had none) for `create`, `update`, `patch` and custom methods, and `None`
    /// otherwise.
    fn dispatch_borrowed<'a>(
        &'a self,
        method: &'a Method,
        id: Option<&'a Id>,
        data: Option<&'a Value>,
        params: &'a Params,
    ) -> Option<futures::future::BoxFuture<'a, Result<Value>>> {
        let _ = (method, id, data, params);
        None
    }

    /// Like [`dispatch_borrowed`](Self::dispatch_borrowed), for a service whose results arrive
    /// already encoded as JSON text (the distribution plugin's proxies receive them from the
    /// mesh). When no hook of the call needs the result as a [`Value`] (no around or after
    /// hook, no event), the REST server sends these bytes as the response body without
    /// decoding them; otherwise the App calls [`dispatch_borrowed`](Self::dispatch_borrowed)
    /// or the method instead. The default, `None`, means the service has no such path.
    ///
    /// The arguments are those of [`dispatch_borrowed`](Self::dispatch_borrowed).
    fn dispatch_json<'a>(
        &'a self,
        method: &'a Method,
        id: Option<&'a Id>,
        data: Option<&'a Value>,
        params: &'a Params,
    ) -> Option<futures::future::BoxFuture<'a, Result<RawJson>>> {
        let _ = (method, id, data, params);
        None
    }
}

/// One JSON value, already encoded as text: the result of [`Service::dispatch_json`].
///
/// ```
/// use plume::RawJson;
///
/// let raw = RawJson::from_encoded(r#"{"id":1}"#.into());
/// assert_eq!(raw.to_value()?, serde_json::json!({"id": 1}));
/// assert!(!raw.is_null());
/// # Ok::<(), plume::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct RawJson(bytes::Bytes);

impl RawJson {
    /// Wrap bytes that hold exactly one JSON value. They are not checked here: whoever makes a
    /// `RawJson` vouches for them, since the REST server sends them as they are
    /// ([`to_value`](Self::to_value) still fails cleanly on bad text).
    pub fn from_encoded(bytes: bytes::Bytes) -> Self {
        Self(bytes)
    }

    /// Encode a value.
    pub fn from_value(value: &Value) -> Self {
        // invariant: a serde_json::Value always serializes (its map keys are strings).
        Self(
            serde_json::to_vec(value)
                .unwrap_or_else(|_| b"null".to_vec())
                .into(),
        )
    }

    /// The JSON text.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The JSON text, without a copy.
    pub fn into_bytes(self) -> bytes::Bytes {
        self.0
    }

    /// True for `null` (a REST response without a body).
    pub fn is_null(&self) -> bool {
        self.0.trim_ascii() == b"null"
    }

    /// Decode the value.
    pub fn to_value(&self) -> Result<Value> {
        serde_json::from_slice(&self.0)
            .map_err(|e| Error::general_error(format!("a result is not valid JSON: {e}")))
    }
}

impl std::fmt::Debug for RawJson {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("RawJson")
            .field(&String::from_utf8_lossy(&self.0))
            .finish()
    }
}

/// The error of a default method body. The App rewrites it with the service path when it knows
/// the path.
fn not_offered(method: &Method) -> Error {
    Error::method_not_allowed(format!("Method '{method}' not allowed"))
}

/// Call a method of a service by [`Method`], with the arguments each method takes.
///
/// `id` is required for get and update; `data` for create, update, patch and custom methods.
pub async fn dispatch(
    service: &dyn Service,
    method: &Method,
    id: Option<Id>,
    data: Option<Value>,
    params: Params,
) -> Result<Value> {
    let id_required = |id: Option<Id>| id.ok_or_else(|| id_missing(method));
    match method {
        Method::Find => service.find(params).await,
        Method::Get => service.get(id_required(id)?, params).await,
        Method::Create => service.create(data.unwrap_or(Value::Null), params).await,
        Method::Update => {
            let id = id_required(id)?;
            service
                .update(id, data.unwrap_or(Value::Null), params)
                .await
        }
        Method::Patch => service.patch(id, data.unwrap_or(Value::Null), params).await,
        Method::Remove => service.remove(id, params).await,
        Method::Custom(name) => {
            service
                .call(name, data.unwrap_or(Value::Null), params)
                .await
        }
    }
}

/// The error of a `get` or `update` call without an id.
fn id_missing(method: &Method) -> Error {
    Error::bad_request(format!("An id must be provided to the '{method}' method"))
}

/// `null`, the data of a call that needs data and came without any.
static NULL: Value = Value::Null;

/// The arguments `method` takes, from those of a call, as [`dispatch`] passes them (see
/// [`Service::dispatch_borrowed`]).
pub(crate) fn method_args<'a>(
    method: &Method,
    id: Option<&'a Id>,
    data: Option<&'a Value>,
) -> Result<(Option<&'a Id>, Option<&'a Value>)> {
    let data = || Some(data.unwrap_or(&NULL));
    match method {
        Method::Find => Ok((None, None)),
        Method::Get => id
            .map(|id| (Some(id), None))
            .ok_or_else(|| id_missing(method)),
        Method::Update => id
            .map(|id| (Some(id), data()))
            .ok_or_else(|| id_missing(method)),
        Method::Remove => Ok((id, None)),
        Method::Patch => Ok((id, data())),
        Method::Create | Method::Custom(_) => Ok((None, data())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn method_args_are_what_dispatch_passes() {
        let id = Id::Int(1);
        let data = json!({"a": 1});
        let (some_id, some_data) = (Some(&id), Some(&data));
        let custom = Method::Custom("run".into());
        assert_eq!(
            method_args(&Method::Find, some_id, some_data).ok(),
            Some((None, None))
        );
        assert_eq!(
            method_args(&Method::Get, some_id, some_data).ok(),
            Some((some_id, None))
        );
        assert_eq!(
            method_args(&Method::Remove, None, some_data).ok(),
            Some((None, None))
        );
        assert_eq!(
            method_args(&Method::Patch, None, None).ok(),
            Some((None, Some(&NULL)))
        );
        assert_eq!(
            method_args(&Method::Update, some_id, some_data).ok(),
            Some((some_id, some_data))
        );
        assert_eq!(
            method_args(&Method::Create, some_id, None).ok(),
            Some((None, Some(&NULL)))
        );
        assert_eq!(
            method_args(&custom, some_id, some_data).ok(),
            Some((None, some_data))
        );
        for method in [Method::Get, Method::Update] {
            let e = method_args(&method, None, some_data)
                .err()
                .map(|e| e.message().to_owned());
            assert_eq!(
                e,
                Some(format!("An id must be provided to the '{method}' method"))
            );
        }
    }
}
