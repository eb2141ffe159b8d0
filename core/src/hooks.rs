//! Hooks: around, before, after and error, app-level and per service.
//!
//! Order of one call: app around → service around → app before → service before → method →
//! service after → app after. When a before hook, the method or an after hook fails, the error
//! hooks run (service, then app); they may replace the error or recover by setting a result.
//!
//! A before hook that sets [`HookContext::result`] skips the method. Setting
//! [`HookContext::event`] to `None` stops the event the call would emit.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use serde_json::Value;

use crate::app::App;
use crate::error::{Error, Result};
use crate::params::{Id, IntoMethods, Method, Params};
use crate::sync;

/// A boxed, `Send` future.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Which kind of hook is running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookType {
    /// An around hook.
    Around,
    /// A before hook.
    Before,
    /// An after hook.
    After,
    /// An error hook.
    Error,
}

/// Everything a hook can see and change about one call.
#[derive(Clone)]
pub struct HookContext {
    /// The App the service lives in.
    pub app: App,
    /// The service path (normalized).
    pub path: String,
    /// The method called.
    pub method: Method,
    /// The kind of hook running now.
    pub hook_type: HookType,
    /// The id, for get, update, patch and remove.
    pub id: Option<Id>,
    /// The data, for create, update, patch and custom methods.
    pub data: Option<Value>,
    /// The params.
    pub params: Params,
    /// The result. A before hook that sets it skips the method.
    pub result: Option<Value>,
    /// What clients and peers receive instead of `result` when it is set, as Feathers'
    /// `context.dispatch`: the call's events carry it, and the `authenticate` hook keeps the
    /// user in this form. `auth::protect` (feature `auth`) sets it on internal calls (on
    /// external ones it strips `result` itself).
    pub dispatch: Option<Value>,
    /// The error, in error hooks. An error hook that clears it and sets `result` recovers.
    pub error: Option<Error>,
    /// The event this call emits on success (`created` for create, ...). Set it to `None` to
    /// stop the event.
    pub event: Option<String>,
}

impl fmt::Debug for HookContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HookContext")
            .field("path", &self.path)
            .field("method", &self.method)
            .field("hook_type", &self.hook_type)
            .field("id", &self.id)
            .field("data", &self.data)
            .field("params", &self.params)
            .field("result", &self.result)
            .field("dispatch", &self.dispatch)
            .field("error", &self.error)
            .field("event", &self.event)
            .finish_non_exhaustive()
    }
}

impl HookContext {
    /// A fresh context for a call.
    pub fn new(
        app: App,
        path: impl Into<String>,
        method: Method,
        id: Option<Id>,
        data: Option<Value>,
        params: Params,
    ) -> Self {
        let event = method.event().map(str::to_owned);
        Self {
            app,
            path: path.into(),
            method,
            hook_type: HookType::Before,
            id,
            data,
            params,
            result: None,
            dispatch: None,
            error: None,
            event,
        }
    }
}

/// A before, after or error hook.
///
/// Implement it on a type, or make one from a closure with [`hook`] (async) or [`hook_sync`].
#[async_trait]
pub trait Hook: Send + Sync + 'static {
    /// Run the hook. An `Err` fails the call (in an error hook, it replaces the error).
    async fn run(&self, ctx: &mut HookContext) -> Result<()>;
}

/// An around hook: it wraps the rest of the chain, which it runs with [`Next::run`].
#[async_trait]
pub trait AroundHook: Send + Sync + 'static {
    /// Run the hook; call `next.run(ctx).await` to run the rest of the chain.
    async fn run(&self, ctx: &mut HookContext, next: Next<'_>) -> Result<()>;
}

/// A hook made from an async closure by [`hook`].
pub struct FnHook<F>(F);

impl<F> fmt::Debug for FnHook<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FnHook")
    }
}

/// Make a hook from a closure returning a boxed future.
///
/// ```
/// use plume::hooks::{hook, HookContext};
///
/// let stamp = hook(|ctx: &mut HookContext| {
///     Box::pin(async move {
///         ctx.params.extra.insert("seen".into(), true.into());
///         Ok(())
///     })
/// });
/// # let _ = stamp;
/// ```
pub fn hook<F>(f: F) -> FnHook<F>
where
    F: for<'a> Fn(&'a mut HookContext) -> BoxFuture<'a, Result<()>> + Send + Sync + 'static,
{
    FnHook(f)
}

#[async_trait]
impl<F> Hook for FnHook<F>
where
    F: for<'a> Fn(&'a mut HookContext) -> BoxFuture<'a, Result<()>> + Send + Sync + 'static,
{
    async fn run(&self, ctx: &mut HookContext) -> Result<()> {
        (self.0)(ctx).await
    }
}

/// A hook made from a synchronous closure by [`hook_sync`].
pub struct SyncHook<F>(F);

impl<F> fmt::Debug for SyncHook<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SyncHook")
    }
}

/// Make a hook from a synchronous closure.
///
/// ```
/// use plume::hooks::hook_sync;
/// use plume::Error;
///
/// let no_empty = hook_sync(|ctx| match &ctx.data {
///     Some(serde_json::Value::Null) => Err(Error::bad_request("data is required")),
///     _ => Ok(()),
/// });
/// # let _ = no_empty;
/// ```
pub fn hook_sync<F>(f: F) -> SyncHook<F>
where
    F: Fn(&mut HookContext) -> Result<()> + Send + Sync + 'static,
{
    SyncHook(f)
}

#[async_trait]
impl<F> Hook for SyncHook<F>
where
    F: Fn(&mut HookContext) -> Result<()> + Send + Sync + 'static,
{
    async fn run(&self, ctx: &mut HookContext) -> Result<()> {
        (self.0)(ctx)
    }
}

/// An around hook made from a closure by [`around`].
pub struct FnAround<F>(F);

impl<F> fmt::Debug for FnAround<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FnAround")
    }
}

/// Make an around hook from a closure returning a boxed future.
///
/// ```
/// use plume::hooks::{around, HookContext, Next};
///
/// let timing = around(|ctx: &mut HookContext, next: Next<'_>| {
///     Box::pin(async move {
///         let start = std::time::Instant::now();
///         let outcome = next.run(ctx).await;
///         ctx.params.extra.insert("ms".into(), (start.elapsed().as_millis() as u64).into());
///         outcome
///     })
/// });
/// # let _ = timing;
/// ```
pub fn around<F>(f: F) -> FnAround<F>
where
    F: for<'a> Fn(&'a mut HookContext, Next<'a>) -> BoxFuture<'a, Result<()>>
        + Send
        + Sync
        + 'static,
{
    FnAround(f)
}

#[async_trait]
impl<F> AroundHook for FnAround<F>
where
    F: for<'a> Fn(&'a mut HookContext, Next<'a>) -> BoxFuture<'a, Result<()>>
        + Send
        + Sync
        + 'static,
{
    async fn run(&self, ctx: &mut HookContext, next: Next<'_>) -> Result<()> {
        (self.0)(ctx, next).await
    }
}

/// Which methods a registered hook applies to.
#[derive(Debug, Clone)]
enum MethodFilter {
    All,
    Only(Vec<Method>),
}

impl MethodFilter {
    fn applies(&self, method: &Method) -> bool {
        match self {
            MethodFilter::All => true,
            MethodFilter::Only(list) => list.contains(method),
        }
    }
}

#[derive(Default)]
struct HookSet {
    around: Vec<(MethodFilter, Arc<dyn AroundHook>)>,
    before: Vec<(MethodFilter, Arc<dyn Hook>)>,
    after: Vec<(MethodFilter, Arc<dyn Hook>)>,
    error: Vec<(MethodFilter, Arc<dyn Hook>)>,
}

/// The hooks of an App or of one service. Get it with [`App::hooks`] or
/// [`ServiceHandle::hooks`](crate::ServiceHandle::hooks).
///
/// Each `*_for` method takes the methods the hook applies to ([`IntoMethods`]); the others
/// apply to all. A service's registry knows the service's methods: naming a custom method the
/// service does not offer is an error at registration (a panic, as axum's `Router::route`
/// panics on a bad route), not a hook that silently never runs. The App's registry applies
/// to every service, so a custom method there is not checked.
#[derive(Clone, Default)]
pub struct HookRegistry {
    set: Arc<RwLock<HookSet>>,
    /// The methods of the service this registry belongs to (`None` for the App's).
    offered: Option<Arc<[Method]>>,
}

impl fmt::Debug for HookRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let set = sync::read(&self.set);
        f.debug_struct("HookRegistry")
            .field("around", &set.around.len())
            .field("before", &set.before.len())
            .field("after", &set.after.len())
            .field("error", &set.error.len())
            .finish()
    }
}

macro_rules! registrations {
    ($($field:ident, $all:ident, $some:ident, $trait:ident, $what:literal;)*) => {
        impl HookRegistry {
            $(
                #[doc = concat!("Add ", $what, " hook for every method.")]
                pub fn $all(&self, hook: impl $trait) -> &Self {
                    self.write().$field.push((MethodFilter::All, Arc::new(hook)));
                    self
                }

                #[doc = concat!("Add ", $what, " hook for these methods.")]
                ///
                /// # Panics
                ///
                /// On a service's registry, when `methods` names a custom method the service
                /// does not offer.
                pub fn $some(&self, methods: impl IntoMethods, hook: impl $trait) -> &Self {
                    let filter = MethodFilter::Only(self.checked(methods.into_methods()));
                    self.write().$field.push((filter, Arc::new(hook)));
                    self
                }
            )*
        }
    };
}

registrations! {
    around, around, around_for, AroundHook, "an around";
    before, before, before_for, Hook, "a before";
    after, after, after_for, Hook, "an after";
    error, error, error_for, Hook, "an error";
}

impl HookRegistry {
    /// The registry of a service offering `offered`.
    pub(crate) fn for_service(offered: &[Method]) -> Self {
        Self {
            set: Arc::default(),
            offered: Some(offered.into()),
        }
    }

    /// `methods`, once each custom one is known to be offered.
    fn checked(&self, methods: Vec<Method>) -> Vec<Method> {
        if let Some(offered) = &self.offered
            && let Some(unknown) = methods
                .iter()
                .find(|m| !m.is_standard() && !offered.contains(m))
        {
            let names: Vec<&str> = offered.iter().map(Method::as_str).collect();
            panic!(
                "a hook for the custom method '{unknown}', which this service does not offer \
                 (it offers {})",
                names.join(", ")
            );
        }
        methods
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HookSet> {
        sync::write(&self.set)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HookSet> {
        sync::read(&self.set)
    }

    /// True when no hook is registered.
    pub fn is_empty(&self) -> bool {
        let set = self.read();
        set.around.is_empty()
            && set.before.is_empty()
            && set.after.is_empty()
            && set.error.is_empty()
    }
}

/// The hooks that apply to one call, in run order.
pub(crate) struct Chain {
    around: Vec<Arc<dyn AroundHook>>,
    before: Vec<Arc<dyn Hook>>,
    after: Vec<Arc<dyn Hook>>,
    error: Vec<Arc<dyn Hook>>,
}

impl Chain {
    /// Collect the hooks of the app and of the service for `method`.
    pub(crate) fn collect(app: &HookRegistry, service: &HookRegistry, method: &Method) -> Self {
        fn pick<T: ?Sized>(
            list: &[(MethodFilter, Arc<T>)],
            method: &Method,
            out: &mut Vec<Arc<T>>,
        ) {
            out.extend(
                list.iter()
                    .filter(|(f, _)| f.applies(method))
                    .map(|(_, h)| h.clone()),
            );
        }
        let (app, svc) = (app.read(), service.read());
        let mut chain = Chain {
            around: vec![],
            before: vec![],
            after: vec![],
            error: vec![],
        };
        pick(&app.around, method, &mut chain.around);
        pick(&svc.around, method, &mut chain.around);
        pick(&app.before, method, &mut chain.before);
        pick(&svc.before, method, &mut chain.before);
        pick(&svc.after, method, &mut chain.after);
        pick(&app.after, method, &mut chain.after);
        pick(&svc.error, method, &mut chain.error);
        pick(&app.error, method, &mut chain.error);
        chain
    }

    /// True when the chain has no around and no after hook: nothing reads the result before
    /// the caller gets it.
    pub(crate) fn is_plain(&self) -> bool {
        self.around.is_empty() && self.after.is_empty()
    }

    /// True when error hooks would see the context of a failed call.
    pub(crate) fn has_error_hooks(&self) -> bool {
        !self.error.is_empty()
    }

    /// Run the before hooks (of a plain chain, whose caller then calls the method itself).
    pub(crate) async fn run_before(&self, ctx: &mut HookContext) -> Result<()> {
        ctx.hook_type = HookType::Before;
        for hook in &self.before {
            hook.run(ctx).await?;
        }
        Ok(())
    }

    /// Run the whole chain around `method`, which calls the service.
    pub(crate) async fn run(&self, ctx: &mut HookContext, method: &dyn Invoke) -> Result<()> {
        Next {
            chain: self,
            index: 0,
            invoke: method,
        }
        .run(ctx)
        .await
    }

    async fn run_inner(&self, ctx: &mut HookContext, invoke: &dyn Invoke) -> Result<()> {
        match self.run_regular(ctx, invoke).await {
            Ok(()) => Ok(()),
            Err(err) => self.run_error_hooks(ctx, err).await,
        }
    }

    async fn run_regular(&self, ctx: &mut HookContext, invoke: &dyn Invoke) -> Result<()> {
        self.run_before(ctx).await?;
        if ctx.result.is_none() {
            let result = invoke.invoke(ctx).await?;
            ctx.result = Some(result);
        }
        ctx.hook_type = HookType::After;
        for hook in &self.after {
            hook.run(ctx).await?;
        }
        Ok(())
    }

    /// Run the error hooks for `err`: `Ok` when one of them recovered with a result.
    pub(crate) async fn run_error_hooks(&self, ctx: &mut HookContext, err: Error) -> Result<()> {
        ctx.hook_type = HookType::Error;
        ctx.error = Some(err);
        ctx.result = None;
        for hook in &self.error {
            if let Err(replaced) = hook.run(ctx).await {
                ctx.error = Some(replaced);
            }
        }
        match ctx.error.take() {
            Some(err) => {
                ctx.error = Some(err.clone());
                Err(err)
            }
            None if ctx.result.is_some() => Ok(()),
            None => Err(Error::general_error(
                "an error hook cleared the error without a result",
            )),
        }
    }
}

/// The innermost step of a chain: the service method.
pub(crate) trait Invoke: Send + Sync {
    fn invoke<'a>(&'a self, ctx: &'a mut HookContext) -> BoxFuture<'a, Result<Value>>;
}

/// The rest of a hook chain, handed to an [`AroundHook`].
pub struct Next<'a> {
    chain: &'a Chain,
    index: usize,
    invoke: &'a dyn Invoke,
}

impl fmt::Debug for Next<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Next")
            .field("index", &self.index)
            .finish_non_exhaustive()
    }
}

impl<'a> Next<'a> {
    /// Run the rest of the chain: the next around hooks, then before hooks, the method and after
    /// hooks (with error hooks on failure).
    pub async fn run(self, ctx: &mut HookContext) -> Result<()> {
        match self.chain.around.get(self.index) {
            Some(hook) => {
                let next = Next {
                    chain: self.chain,
                    index: self.index + 1,
                    invoke: self.invoke,
                };
                ctx.hook_type = HookType::Around;
                let outcome = hook.run(ctx, next).await;
                ctx.hook_type = HookType::Around;
                outcome
            }
            None => self.chain.run_inner(ctx, self.invoke).await,
        }
    }
}

/// The authentication hooks, also reachable here as in Feathers' `hooks` helpers.
#[cfg(feature = "auth")]
pub use crate::auth::{authenticate, hash_password, protect};
