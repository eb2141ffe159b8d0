//! The object-safe `Service` trait the App stores, the options a service is mounted with, and
//! [`dispatch`], which calls a method by [`Method`].

use async_trait::async_trait;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::hooks::BoxFuture;
use crate::params::{Id, IntoMethods, Method, Params};

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
}

/// Options for mounting a service, as Feathers' `app.use(path, service, options)`.
#[derive(Debug, Clone, Default)]
pub struct ServiceOptions {
    /// The methods clients may call. `None` means every method the service offers.
    pub methods: Option<Vec<Method>>,
    /// Custom events, besides those the service declares.
    pub events: Vec<String>,
    /// True for a proxy of a remote service: the distribution plugin never republishes it, and
    /// its calls emit no event of their own (the provider's events reach it through the
    /// plugin's relay), unless a hook sets `ctx.event`.
    pub remote: bool,
}

impl ServiceOptions {
    /// Default options.
    pub fn new() -> Self {
        Self::default()
    }

    /// Expose only these methods to clients: a [`Method`] or an array, slice or `Vec` of them
    /// ([`IntoMethods`]), e.g. `[Method::Find, Method::Get]`.
    #[must_use]
    pub fn methods(mut self, methods: impl IntoMethods) -> Self {
        self.methods = Some(methods.into_methods());
        self
    }

    /// Declare extra custom events.
    #[must_use]
    pub fn events<I, S>(mut self, events: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.events.extend(events.into_iter().map(Into::into));
        self
    }

    /// Mark the service as a proxy of a remote service.
    #[must_use]
    pub fn remote(mut self, remote: bool) -> Self {
        self.remote = remote;
        self
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
///
/// It hands back the method's own boxed future (an `async` method does nothing until it is
/// polled), so a caller that awaits it holds a pointer, not a copy of the arguments.
pub fn dispatch<'a>(
    service: &'a dyn Service,
    method: &'a Method,
    id: Option<Id>,
    data: Option<Value>,
    params: Params,
) -> BoxFuture<'a, Result<Value>> {
    let data = data.unwrap_or(Value::Null);
    match method {
        Method::Find => service.find(params),
        Method::Get => match id {
            Some(id) => service.get(id, params),
            None => failed(id_missing(method)),
        },
        Method::Create => service.create(data, params),
        Method::Update => match id {
            Some(id) => service.update(id, data, params),
            None => failed(id_missing(method)),
        },
        Method::Patch => service.patch(id, data, params),
        Method::Remove => service.remove(id, params),
        Method::Custom(name) => service.call(name, data, params),
    }
}

/// A call that fails without reaching the service.
fn failed<'a>(err: Error) -> BoxFuture<'a, Result<Value>> {
    Box::pin(std::future::ready(Err(err)))
}

/// The error of a `get` or `update` call without an id.
pub(crate) fn id_missing(method: &Method) -> Error {
    Error::bad_request(format!("An id must be provided to the '{method}' method"))
}
