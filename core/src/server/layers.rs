//! Tower middleware around the REST routes of one service.
//!
//! REST dispatch is dynamic (one fallback resolves every path against the live service table), so
//! per-service middleware cannot be axum route layers. Instead the fallback looks the path up,
//! and when that service has layers it runs the request through them before handling it.

use std::collections::HashMap;
use std::convert::Infallible;
use std::fmt;
use std::sync::{Arc, RwLock};

use axum::extract::Request;
use axum::response::Response;
use tower::util::BoxCloneSyncService;
use tower::{Layer, Service};

use crate::app::{App, normalize_path};
use crate::sync;

/// The request handler a [`RestLayer`] wraps: a boxed tower service that never fails (errors are
/// Feathers error responses).
pub type RestService = BoxCloneSyncService<Request, Response, Infallible>;

/// A type-erased tower layer for the REST routes of one service.
///
/// Any layer whose service answers `Response` with `Infallible` errors fits, such as
/// `axum::middleware::from_fn(..)`, `tower_http` header layers, or your own; wrap fallible layers
/// (a timeout) in `axum::error_handling::HandleErrorLayer` first.
#[derive(Clone)]
pub struct RestLayer(Arc<dyn Fn(RestService) -> RestService + Send + Sync>);

impl fmt::Debug for RestLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RestLayer")
    }
}

impl RestLayer {
    /// Erase a tower layer.
    pub fn new<L>(layer: L) -> Self
    where
        L: Layer<RestService> + Send + Sync + 'static,
        L::Service: Service<Request, Response = Response, Error = Infallible>
            + Clone
            + Send
            + Sync
            + 'static,
        <L::Service as Service<Request>>::Future: Send + 'static,
    {
        Self(Arc::new(move |inner| {
            BoxCloneSyncService::new(layer.layer(inner))
        }))
    }

    pub(crate) fn apply(&self, inner: RestService) -> RestService {
        (self.0)(inner)
    }
}

/// Layers by service path.
#[derive(Default)]
pub(crate) struct RestLayers {
    by_path: RwLock<HashMap<String, Arc<[RestLayer]>>>,
}

impl App {
    /// Run the REST requests of the service at `path` through `layers` (the first is the
    /// outermost). Replaces the layers set before for that path; they are dropped when the
    /// service is unmounted.
    ///
    /// ```
    /// use plume::App;
    /// use plume::server::RestLayer;
    ///
    /// let app = App::new();
    /// let tag = axum::middleware::map_response(|mut res: axum::response::Response| async move {
    ///     res.headers_mut().insert("x-served-by", "plume".parse().unwrap());
    ///     res
    /// });
    /// app.set_rest_layers("todos", vec![RestLayer::new(tag)]);
    /// assert_eq!(app.rest_layers("todos").len(), 1);
    /// ```
    pub fn set_rest_layers(&self, path: &str, layers: Vec<RestLayer>) {
        let mut first = false;
        let table = self.extension_or_insert_with(|| {
            first = true;
            RestLayers::default()
        });
        if first {
            let weak = self.downgrade();
            self.on_service_removed(move |handle| {
                if let Some(app) = weak.upgrade()
                    && let Some(table) = app.extension::<RestLayers>()
                {
                    write(&table).remove(handle.path());
                }
            });
        }
        let path = normalize_path(path);
        if layers.is_empty() {
            write(&table).remove(&path);
        } else {
            write(&table).insert(path, layers.into());
        }
    }

    /// The REST layers of the service at `path`.
    pub fn rest_layers(&self, path: &str) -> Vec<RestLayer> {
        self.extension::<RestLayers>()
            .and_then(|t| read(&t).get(&normalize_path(path)).map(|l| l.to_vec()))
            .unwrap_or_default()
    }

    /// The layers for the service that a request path resolves to, if it has any.
    pub(crate) fn rest_layers_for_request(&self, path: &str) -> Option<Arc<[RestLayer]>> {
        let table = self.extension::<RestLayers>()?;
        if read(&table).is_empty() {
            return None;
        }
        let lookup = self.lookup(path)?;
        read(&table).get(lookup.handle.path()).cloned()
    }
}

fn read(t: &RestLayers) -> std::sync::RwLockReadGuard<'_, HashMap<String, Arc<[RestLayer]>>> {
    sync::read(&t.by_path)
}

fn write(t: &RestLayers) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Arc<[RestLayer]>>> {
    sync::write(&t.by_path)
}
