//! The proxy: a `plume::Service` that forwards every call over the mesh.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::future::BoxFuture;
use plume::{Error, Forward, Id, Method, Params, RawJson, Result, Service, async_trait};
use serde_json::{Map, Value};

use super::merge::find_merged;

use super::wire::{CallBodyRef, ServiceDescriptor, WireParamsRef, endpoint};
use crate::mesh::{CallBuilder, CallOptions, Mesh};

/// State shared between a proxy and the plugin.
#[derive(Debug, Default)]
pub(crate) struct ProxyState {
    /// Hooks are in place: calls may go through.
    pub(crate) ready: AtomicBool,
    /// At least one provider is live (false during the grace period).
    pub(crate) available: AtomicBool,
    /// The providers known at mount time have registered the event subscriptions.
    pub(crate) events_ready: AtomicBool,
}

/// A remote service, mounted locally.
pub(crate) struct Proxy {
    pub(crate) mesh: Mesh,
    pub(crate) local_path: String,
    pub(crate) name: String,
    pub(crate) descriptor: ServiceDescriptor,
    pub(crate) timeout: Duration,
    pub(crate) extras: Arc<[String]>,
    pub(crate) state: Arc<ProxyState>,
    /// Mounted partitioned: the data field that keys a `create`.
    pub(crate) partition: Option<Arc<str>>,
}

impl Proxy {
    pub(crate) fn new(
        mesh: Mesh,
        local_path: String,
        descriptor: ServiceDescriptor,
        timeout: Duration,
        extras: Arc<[String]>,
        partition: Option<Arc<str>>,
    ) -> Self {
        Self {
            mesh,
            local_path,
            name: endpoint(&descriptor.path),
            descriptor,
            timeout,
            extras,
            state: Arc::new(ProxyState::default()),
            partition,
        }
    }

    async fn forward(
        &self,
        method: &Method,
        id: Option<&Id>,
        data: Option<&Value>,
        params: &Params,
    ) -> Result<Value> {
        if let Some(field) = &self.partition {
            // Boxed: the usual call, not partitioned, keeps a small future (the App boxes and
            // moves it per call).
            return Box::pin(self.forward_partitioned(field, method, id, data, params)).await;
        }
        let (body, options) = self.prepare(method, id, data, params)?;
        self.call(method, options).send(&body).await
    }

    /// A call to a partitioned service: by id to its owner, `find` and calls without an id to
    /// every replica (see [`Distribution::partitioned`](super::Distribution::partitioned)).
    async fn forward_partitioned(
        &self,
        field: &str,
        method: &Method,
        id: Option<&Id>,
        data: Option<&Value>,
        params: &Params,
    ) -> Result<Value> {
        let key = match (method, id) {
            (_, Some(id)) => Some(id.to_string()),
            (Method::Create, None) => data.and_then(|d| d.get(field)).and_then(|v| match v {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            }),
            _ => None,
        };
        let every =
            key.is_none() && matches!(method, Method::Find | Method::Patch | Method::Remove);
        if !every {
            let (body, options) = self.prepare(method, id, data, params)?;
            let call = self.call(method, options);
            return match &key {
                Some(key) => call.key(key).send(&body).await,
                None => call.send(&body).await,
            };
        }
        let ask = |query: Map<String, Value>| async move {
            let mut each = params.clone();
            each.query = query;
            let (body, options) = self.prepare(method, None, data, &each)?;
            let replies = self.call(method, options).broadcast(&body).await?;
            replies
                .into_iter()
                .map(|r| r.result)
                .collect::<Result<Vec<Value>>>()
        };
        if *method == Method::Find {
            return find_merged(&params.query, ask).await;
        }
        // patch/remove of many: every replica's changed records, in one list.
        let lists = ask(params.query.clone()).await?;
        let mut all = Vec::new();
        for list in lists {
            match list {
                Value::Array(items) => all.extend(items),
                one => all.push(one),
            }
        }
        Ok(Value::Array(all))
    }

    /// [`forward`](Self::forward), with the result as JSON text.
    async fn forward_raw(
        &self,
        method: &Method,
        id: Option<&Id>,
        data: Option<&Value>,
        params: &Params,
    ) -> Result<RawJson> {
        if let Some(field) = &self.partition {
            let partitioned = self.forward_partitioned(field, method, id, data, params);
            let value = Box::pin(partitioned).await?;
            return Ok(RawJson::from_value(&value));
        }
        let (body, options) = self.prepare(method, id, data, params)?;
        self.call(method, options).send_json(&body).await
    }

    /// A mesh call of `method` on the remote service. It does not wait for a provider: the
    /// proxy tracks the providers itself, and the table may lose the last one a moment before
    /// the proxy hears of it (a 503 at once, as after that moment).
    fn call<'a>(&'a self, method: &'a Method, options: CallOptions) -> CallBuilder<'a> {
        self.mesh
            .to(&self.name)
            .method(method.as_str())
            .options(options)
            .wait_for_provider(false)
    }

    /// The body and options of a call, or why it cannot be sent.
    fn prepare<'a>(
        &'a self,
        method: &Method,
        id: Option<&'a Id>,
        data: Option<&'a Value>,
        params: &'a Params,
    ) -> Result<(CallBodyRef<'a>, CallOptions)> {
        if !self.state.ready.load(Ordering::Acquire)
            || !self.state.available.load(Ordering::Acquire)
        {
            return Err(Error::unavailable(format!(
                "No provider of '{}' is available",
                self.local_path
            )));
        }
        let timeout = match params.extra.get("timeout") {
            None => self.timeout,
            Some(v) => match v.as_u64() {
                Some(ms) if ms > 0 => Duration::from_millis(ms),
                _ => {
                    return Err(Error::bad_request(
                        "params.extra.timeout must be a positive number of milliseconds",
                    ));
                }
            },
        };
        let body = CallBodyRef {
            id,
            data,
            params: WireParamsRef::new(params, &self.extras),
        };
        let options = CallOptions {
            timeout: Some(timeout),
            idempotent: self.descriptor.is_idempotent(method),
        };
        Ok((body, options))
    }
}

#[async_trait]
impl Service for Proxy {
    async fn find(&self, params: Params) -> Result<Value> {
        self.forward(&Method::Find, None, None, &params).await
    }

    async fn get(&self, id: Id, params: Params) -> Result<Value> {
        self.forward(&Method::Get, Some(&id), None, &params).await
    }

    async fn create(&self, data: Value, params: Params) -> Result<Value> {
        self.forward(&Method::Create, None, Some(&data), &params)
            .await
    }

    async fn update(&self, id: Id, data: Value, params: Params) -> Result<Value> {
        self.forward(&Method::Update, Some(&id), Some(&data), &params)
            .await
    }

    async fn patch(&self, id: Option<Id>, data: Value, params: Params) -> Result<Value> {
        self.forward(&Method::Patch, id.as_ref(), Some(&data), &params)
            .await
    }

    async fn remove(&self, id: Option<Id>, params: Params) -> Result<Value> {
        self.forward(&Method::Remove, id.as_ref(), None, &params)
            .await
    }

    async fn call(&self, method: &str, data: Value, params: Params) -> Result<Value> {
        self.forward(
            &Method::Custom(method.to_owned()),
            None,
            Some(&data),
            &params,
        )
        .await
    }

    fn methods(&self) -> Vec<Method> {
        self.descriptor.method_list()
    }

    fn events(&self) -> Vec<String> {
        self.descriptor.custom_events()
    }

    /// The schemas the provider published with its descriptor, for the gateway's API docs.
    fn schema(&self) -> Option<plume::docs::ServiceSchema> {
        let schema = self.descriptor.schema.as_ref()?;
        serde_json::from_value(schema.clone()).ok()
    }

    /// The remote options the provider sent (`remote_service_options`), or null.
    fn options(&self) -> Value {
        self.descriptor
            .remote_options
            .clone()
            .unwrap_or(Value::Null)
    }
}

/// The App's fast path for a proxy (mounted with `App::use_forwarding`).
impl Forward for Proxy {
    /// A proxy only serializes its arguments: it sends them as they are.
    fn forward_borrowed<'a>(
        &'a self,
        method: &'a Method,
        id: Option<&'a Id>,
        data: Option<&'a Value>,
        params: &'a Params,
    ) -> BoxFuture<'a, Result<Value>> {
        Box::pin(self.forward(method, id, data, params))
    }

    /// The provider's reply becomes JSON text without a `Value` on the way.
    fn forward_json<'a>(
        &'a self,
        method: &'a Method,
        id: Option<&'a Id>,
        data: Option<&'a Value>,
        params: &'a Params,
    ) -> BoxFuture<'a, Result<RawJson>> {
        Box::pin(self.forward_raw(method, id, data, params))
    }
}
