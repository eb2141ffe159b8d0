//! `ServiceHandle`: calls one service through the full hook chain.

use std::fmt;
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::app::App;
use crate::error::{Error, ErrorKind, Result};
use crate::events::{ListenerId, Listeners, ServiceEvent};
use crate::forward::{Forward, RawJson, method_args};
use crate::hooks::{BoxFuture, Chain, HookContext, HookRegistry, HookType, Invoke};
use crate::metrics::CallMetrics;
use crate::params::{Id, IntoNullableId, Method, Params};
use crate::service::{Service, ServiceOptions, dispatch};

/// The standard events every service emits.
pub const STANDARD_EVENTS: [&str; 4] = ["created", "updated", "patched", "removed"];

/// One mounted service and what belongs to it.
pub(crate) struct ServiceEntry {
    path: String,
    segments: Vec<String>,
    service: Arc<dyn Service>,
    /// The same service as a forwarding one, when it was mounted with
    /// [`App::use_forwarding`](crate::App::use_forwarding).
    forward: Option<Arc<dyn Forward>>,
    options: ServiceOptions,
    offered: Vec<Method>,
    events: Vec<String>,
    hooks: HookRegistry,
    listeners: Listeners,
    /// Its calls' metrics (feature `metrics`, once enabled).
    metrics: CallMetrics,
}

impl ServiceEntry {
    pub(crate) fn new(
        path: String,
        service: Arc<dyn Service>,
        forward: Option<Arc<dyn Forward>>,
        options: ServiceOptions,
    ) -> Self {
        let offered = service.methods();
        let mut events: Vec<String> = STANDARD_EVENTS.iter().map(|e| (*e).to_owned()).collect();
        for e in service
            .events()
            .into_iter()
            .chain(options.events.iter().cloned())
        {
            if !events.contains(&e) {
                events.push(e);
            }
        }
        let hooks = HookRegistry::for_service(&offered);
        Self {
            segments: path
                .split('/')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
            path,
            service,
            forward,
            options,
            offered,
            events,
            hooks,
            listeners: Listeners::default(),
            metrics: CallMetrics::default(),
        }
    }

    pub(crate) fn path(&self) -> &str {
        &self.path
    }

    pub(crate) fn segments(&self) -> &[String] {
        &self.segments
    }

    fn exposes(&self, method: &Method) -> bool {
        self.offered.contains(method)
            && self
                .options
                .methods
                .as_ref()
                .is_none_or(|list| list.contains(method))
    }
}

/// A handle on one mounted service: calls go through the full hook chain and emit events.
///
/// It works the same for a local service and for a remote proxy. Clone it freely.
#[derive(Clone)]
pub struct ServiceHandle {
    app: App,
    entry: Arc<ServiceEntry>,
}

impl fmt::Debug for ServiceHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceHandle")
            .field("path", &self.entry.path)
            .field("methods", &self.entry.offered)
            .finish_non_exhaustive()
    }
}

struct ServiceInvoke<'s> {
    service: &'s dyn Service,
    forward: Option<&'s dyn Forward>,
    path: &'s str,
    /// Nothing reads the context's arguments after the method: a service that needs owned
    /// ones gets them moved out of the context instead of copied.
    take: bool,
}

impl Invoke for ServiceInvoke<'_> {
    fn invoke<'a>(&'a self, ctx: &'a mut HookContext) -> BoxFuture<'a, Result<Value>> {
        Box::pin(async move {
            let outcome = match method_args(&ctx.method, ctx.id.as_ref(), ctx.data.as_ref()) {
                Err(e) => Err(e),
                // (`if let`: in edition 2024 its temporaries, which borrow `ctx`, are gone
                // before the `else` branches.)
                Ok((id, data)) => {
                    if let Some(forward) = self.forward {
                        forward
                            .forward_borrowed(&ctx.method, id, data, &ctx.params)
                            .await
                    } else if self.take {
                        let params = std::mem::take(&mut ctx.params);
                        let (id, data) = (ctx.id.take(), ctx.data.take());
                        dispatch(self.service, &ctx.method, id, data, params).await
                    } else {
                        dispatch(
                            self.service,
                            &ctx.method,
                            ctx.id.clone(),
                            ctx.data.clone(),
                            ctx.params.clone(),
                        )
                        .await
                    }
                }
            };
            outcome.map_err(|err| on_path(err, &ctx.method, self.path))
        })
    }
}

/// The trait's default bodies do not know the path: say it in their error.
fn on_path(err: Error, method: &Method, path: &str) -> Error {
    if err.kind() == ErrorKind::MethodNotAllowed
        && err.message() == format!("Method '{method}' not allowed")
    {
        Error::method_not_allowed_on(method.as_str(), path)
    } else {
        err
    }
}

/// What a call gives the REST server: a value, or JSON text it sends as is.
#[derive(Debug)]
pub(crate) enum Reply {
    Value(Value),
    Json(RawJson),
}

impl ServiceHandle {
    pub(crate) fn new(app: App, entry: Arc<ServiceEntry>) -> Self {
        Self { app, entry }
    }

    /// The service path.
    pub fn path(&self) -> &str {
        &self.entry.path
    }

    /// The App the service is mounted in.
    pub fn app(&self) -> &App {
        &self.app
    }

    /// The service itself.
    pub fn service(&self) -> &Arc<dyn Service> {
        &self.entry.service
    }

    /// The options it was mounted with.
    pub fn options(&self) -> &ServiceOptions {
        &self.entry.options
    }

    /// The methods the service offers.
    pub fn methods(&self) -> &[Method] {
        &self.entry.offered
    }

    /// True when clients (REST, socket.io, remote peers) may call `method`.
    pub fn exposes(&self, method: &Method) -> bool {
        self.entry.exposes(method)
    }

    /// The events the service emits: the standard four and its custom ones.
    pub fn events(&self) -> &[String] {
        &self.entry.events
    }

    /// The service's own hooks.
    pub fn hooks(&self) -> &HookRegistry {
        &self.entry.hooks
    }

    /// Call `method` through the full hook chain. When `params.provider` is set (a call from a
    /// client), only exposed methods may be called.
    ///
    /// The arguments move into the call's [`HookContext`] when the call is made (nothing else
    /// happens before the future is first polled), and the future holds that context once: it
    /// stays small, so the servers move it cheaply (see the `future_sizes` test).
    ///
    /// This future is not cancel-safe in the sense that a dropped call may have run partially.
    pub fn dispatch(
        &self,
        method: Method,
        id: Option<Id>,
        data: Option<Value>,
        params: Params,
    ) -> impl Future<Output = Result<Value>> + Send + '_ {
        let mut ctx = self.context(method, id, data, params);
        async move {
            match self.measured(&mut ctx, false).await? {
                Reply::Value(value) => Ok(value),
                Reply::Json(raw) => raw.to_value(),
            }
        }
    }

    /// [`dispatch`](Self::dispatch) for the REST server: a result the service hands over as
    /// JSON text (see [`Forward::forward_json`]) stays text when no hook needs it decoded.
    #[cfg(feature = "server")]
    pub(crate) fn dispatch_reply(
        &self,
        method: Method,
        id: Option<Id>,
        data: Option<Value>,
        params: Params,
    ) -> impl Future<Output = Result<Reply>> + Send + '_ {
        let mut ctx = self.context(method, id, data, params);
        async move { self.measured(&mut ctx, true).await }
    }

    /// Like [`dispatch`](Self::dispatch), but returns the whole hook context of a successful
    /// call (the result is in `result`).
    pub fn dispatch_context(
        &self,
        method: Method,
        id: Option<Id>,
        data: Option<Value>,
        params: Params,
    ) -> impl Future<Output = Result<HookContext>> + Send + '_ {
        let mut ctx = self.context(method, id, data, params);
        async move {
            let entry = &self.entry;
            let guard = entry
                .metrics
                .start(&entry.path, &entry.offered, &ctx.method, &ctx.params);
            let outcome = self.run_context(&mut ctx).await;
            if let Some(guard) = guard {
                guard.finish(outcome.as_ref().err());
            }
            outcome.map(|()| ctx)
        }
    }

    /// The context of a call to this service: the arguments move into it once, and the call's
    /// future holds it and lends it to the steps below (async functions taking it by value
    /// would each keep a copy of it in their state).
    fn context(
        &self,
        method: Method,
        id: Option<Id>,
        data: Option<Value>,
        params: Params,
    ) -> HookContext {
        HookContext::new(
            self.app.clone(),
            self.entry.path.clone(),
            method,
            id,
            data,
            params,
        )
    }

    /// Run the call of `ctx` measured (feature `metrics`): its outcome, latency and time in
    /// flight.
    async fn measured(&self, ctx: &mut HookContext, want_json: bool) -> Result<Reply> {
        let entry = &self.entry;
        let guard = entry
            .metrics
            .start(&entry.path, &entry.offered, &ctx.method, &ctx.params);
        let outcome = self.run(ctx, want_json).await;
        if let Some(guard) = guard {
            guard.finish(outcome.as_ref().err());
        }
        outcome
    }

    fn invoker(&self, take: bool) -> ServiceInvoke<'_> {
        ServiceInvoke {
            service: self.entry.service.as_ref(),
            forward: self.entry.forward.as_deref(),
            path: &self.entry.path,
            take,
        }
    }

    /// Check that the call of `ctx` is allowed, and collect its hooks.
    fn prepare(&self, ctx: &mut HookContext) -> Result<Chain> {
        let entry = &self.entry;
        let params = &ctx.params;
        let external = params.provider.is_some() || params.from_remote;
        let allowed = if external {
            entry.exposes(&ctx.method)
        } else {
            entry.offered.contains(&ctx.method)
        };
        if !allowed {
            return Err(Error::method_not_allowed_on(
                ctx.method.as_str(),
                &entry.path,
            ));
        }
        if external && !params.query.is_empty() {
            self.app.query_limits().check(&params.query)?;
        }
        let chain = Chain::collect(self.app.hooks(), &entry.hooks, &ctx.method);
        if entry.options.remote {
            // A proxy's events come from its provider, through the relay.
            ctx.event = None;
        }
        Ok(chain)
    }

    /// A successful call: a missing result is null, and the call's event goes out.
    fn finish(&self, ctx: &mut HookContext) {
        if ctx.result.is_none() {
            ctx.result = Some(Value::Null);
        }
        self.emit_call_events(ctx);
    }

    /// The call of [`dispatch_context`](Self::dispatch_context): the whole chain, the result
    /// left in `ctx`.
    async fn run_context(&self, ctx: &mut HookContext) -> Result<()> {
        let chain = self.prepare(ctx)?;
        chain.run(ctx, &self.invoker(false)).await?;
        self.finish(ctx);
        Ok(())
    }

    async fn run(&self, ctx: &mut HookContext, want_json: bool) -> Result<Reply> {
        let chain = self.prepare(ctx)?;
        if !chain.is_plain() {
            chain.run(ctx, &self.invoker(false)).await?;
        } else {
            let outcome = match self.run_plain(&chain, ctx, want_json).await {
                Err(err) => chain.run_error_hooks(ctx, err).await.map(|()| None),
                ok => ok,
            };
            if let Some(raw) = outcome? {
                return Ok(Reply::Json(raw));
            }
        }
        self.finish(ctx);
        Ok(Reply::Value(ctx.result.take().unwrap_or(Value::Null)))
    }

    /// A chain without around and after hooks: nothing reads the result or the arguments once
    /// the method returns, unless an error hook or the call's event does. So the method gets
    /// them without copies when it can, and a result that arrives as JSON text is handed over
    /// as it is (`Some`) when `want_json` and no event needs it.
    async fn run_plain(
        &self,
        chain: &Chain,
        ctx: &mut HookContext,
        want_json: bool,
    ) -> Result<Option<RawJson>> {
        chain.run_before(ctx).await?;
        ctx.hook_type = HookType::After;
        if ctx.result.is_some() {
            return Ok(None);
        }
        if want_json
            && ctx.event.is_none()
            && let Some(forward) = self.entry.forward.as_deref()
        {
            let (id, data) = method_args(&ctx.method, ctx.id.as_ref(), ctx.data.as_ref())?;
            return forward
                .forward_json(&ctx.method, id, data, &ctx.params)
                .await
                .map(Some)
                .map_err(|e| on_path(e, &ctx.method, &self.entry.path));
        }
        let take = !chain.has_error_hooks() && ctx.event.is_none();
        let result = self.invoker(take).invoke(ctx).await?;
        ctx.result = Some(result);
        Ok(None)
    }

    fn emit_call_events(&self, ctx: &HookContext) {
        let Some(event) = ctx.event.clone() else {
            return;
        };
        if ctx.method.event().is_none() && !self.entry.events.contains(&event) {
            return;
        }
        let context = Arc::new(ctx.clone());
        // Events go to clients and peers: they carry what those may see.
        let records: Vec<Value> = match ctx.dispatch.as_ref().or(ctx.result.as_ref()) {
            Some(Value::Array(items)) => items.clone(),
            Some(other) => vec![other.clone()],
            None => return,
        };
        for data in records {
            let ev = ServiceEvent {
                path: self.entry.path.clone(),
                event: event.clone(),
                data,
                context: Some(context.clone()),
            };
            self.entry.listeners.emit(&ev);
            self.app.emit_app_event(&ev);
        }
    }

    /// `find(params)`.
    pub fn find(&self, params: Params) -> impl Future<Output = Result<Value>> + Send + '_ {
        self.dispatch(Method::Find, None, None, params)
    }

    /// `get(id, params)`. The id is anything that converts [`Into<Id>`](Id): `5`, `"abc"`, an
    /// [`Id`] or `&Id`; `update` takes the same, and `patch` and `remove` also take `None`.
    pub fn get(
        &self,
        id: impl Into<Id>,
        params: Params,
    ) -> impl Future<Output = Result<Value>> + Send + '_ {
        self.dispatch(Method::Get, Some(id.into()), None, params)
    }

    /// `create(data, params)`.
    pub fn create(
        &self,
        data: Value,
        params: Params,
    ) -> impl Future<Output = Result<Value>> + Send + '_ {
        self.dispatch(Method::Create, None, Some(data), params)
    }

    /// `update(id, data, params)`.
    pub fn update(
        &self,
        id: impl Into<Id>,
        data: Value,
        params: Params,
    ) -> impl Future<Output = Result<Value>> + Send + '_ {
        self.dispatch(Method::Update, Some(id.into()), Some(data), params)
    }

    /// `patch(id, data, params)`. The id is any id, as for [`get`](Self::get), or `None`
    /// (Feathers' `null`) to patch every record matching the query ([`IntoNullableId`]).
    pub fn patch(
        &self,
        id: impl IntoNullableId,
        data: Value,
        params: Params,
    ) -> impl Future<Output = Result<Value>> + Send + '_ {
        self.dispatch(Method::Patch, id.into_nullable_id(), Some(data), params)
    }

    /// `remove(id, params)`. The id is any id, as for [`get`](Self::get), or `None`
    /// (Feathers' `null`) to remove every record matching the query ([`IntoNullableId`]).
    pub fn remove(
        &self,
        id: impl IntoNullableId,
        params: Params,
    ) -> impl Future<Output = Result<Value>> + Send + '_ {
        self.dispatch(Method::Remove, id.into_nullable_id(), None, params)
    }

    /// A custom method.
    pub fn call(
        &self,
        method: &str,
        data: Value,
        params: Params,
    ) -> impl Future<Output = Result<Value>> + Send + '_ {
        self.dispatch(Method::from_name(method), None, Some(data), params)
    }

    /// Call `method` with typed data and a typed result.
    pub async fn call_typed<D: Serialize, R: DeserializeOwned>(
        &self,
        method: Method,
        id: Option<Id>,
        data: Option<&D>,
        params: Params,
    ) -> Result<R> {
        let data = data
            .map(serde_json::to_value)
            .transpose()
            .map_err(Error::internal)?;
        let value = self.dispatch(method, id, data, params).await?;
        serde_json::from_value(value)
            .map_err(|e| Error::general_error(format!("unexpected result shape: {e}")))
    }

    /// `find` with a typed result (e.g. `Vec<Todo>` or a page type).
    pub async fn find_as<R: DeserializeOwned>(&self, params: Params) -> Result<R> {
        self.call_typed::<(), R>(Method::Find, None, None, params)
            .await
    }

    /// `get` with a typed result.
    pub async fn get_as<R: DeserializeOwned>(
        &self,
        id: impl Into<Id>,
        params: Params,
    ) -> Result<R> {
        self.call_typed::<(), R>(Method::Get, Some(id.into()), None, params)
            .await
    }

    /// `create` with typed data and result.
    pub async fn create_as<D: Serialize, R: DeserializeOwned>(
        &self,
        data: &D,
        params: Params,
    ) -> Result<R> {
        self.call_typed(Method::Create, None, Some(data), params)
            .await
    }

    /// Listen to one event of this service.
    pub fn on(&self, event: &str, f: impl Fn(&ServiceEvent) + Send + Sync + 'static) -> ListenerId {
        self.entry.listeners.add(Some(event.to_owned()), f)
    }

    /// Remove a listener added with [`on`](Self::on).
    pub fn off(&self, id: ListenerId) -> bool {
        self.entry.listeners.remove(id)
    }

    /// Emit an event (custom or standard) with this data, to this service's listeners and the
    /// app-wide stream.
    pub fn emit(&self, event: &str, data: Value) {
        self.emit_with_context(event, data, None);
    }

    /// Emit an event with a hook context (the distribution plugin uses this to re-emit remote
    /// events with their context).
    pub fn emit_with_context(&self, event: &str, data: Value, context: Option<Arc<HookContext>>) {
        let ev = ServiceEvent {
            path: self.entry.path.clone(),
            event: event.to_owned(),
            data,
            context,
        };
        self.entry.listeners.emit(&ev);
        self.app.emit_app_event(&ev);
    }
}
