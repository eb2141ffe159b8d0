//! A service whose results arrive as JSON text (as the distribution plugin's proxy of a remote
//! service hands them over, `Forward::forward_json`). Included with `#[path]` by the REST and
//! socket.io tests.

#![allow(dead_code)]

use plume::{App, Error, Id, Method, Params, Result, Service, ServiceOptions, async_trait};
use serde_json::Value;

/// A service whose results arrive as JSON text (as a proxy's do). The text has spaces, which a
/// re-encoding would drop, so a test can tell whether it was passed through. `get 0` is `null`,
/// `get 404` NotFound, and `get 2` on the JSON path text that is not JSON.
pub(crate) struct Prejsoned {
    /// Counts the calls that took the JSON path.
    pub(crate) json_calls: std::sync::atomic::AtomicUsize,
}

pub(crate) const PREJSONED: &str = r#"{"b": 2, "a": [1, "x"]}"#;

/// What `get 2` hands over as JSON text.
pub(crate) const NOT_JSON: &str = r#"{"not": json"#;

impl Prejsoned {
    fn value(method: &Method, id: Option<&Id>) -> Result<Value> {
        match (method, id) {
            (Method::Get, Some(Id::Int(404))) => Err(Error::not_found("no 404")),
            (Method::Get, Some(Id::Int(0))) => Ok(Value::Null),
            (Method::Get, Some(Id::Int(2))) => {
                Err(Error::internal("no value: text that is not JSON"))
            }
            _ => Ok(serde_json::from_str(PREJSONED).expect("valid")),
        }
    }
}

#[async_trait]
impl Service for Prejsoned {
    async fn find(&self, _params: Params) -> Result<Value> {
        Self::value(&Method::Find, None)
    }
    async fn get(&self, id: Id, _params: Params) -> Result<Value> {
        Self::value(&Method::Get, Some(&id))
    }
    async fn create(&self, _data: Value, _params: Params) -> Result<Value> {
        Self::value(&Method::Create, None)
    }
    fn methods(&self) -> Vec<Method> {
        vec![Method::Find, Method::Get, Method::Create]
    }
}

/// Mounted with `App::use_forwarding`, as the distribution plugin mounts its proxies.
impl plume::Forward for Prejsoned {
    fn forward_borrowed<'a>(
        &'a self,
        method: &'a Method,
        id: Option<&'a Id>,
        _data: Option<&'a Value>,
        _params: &'a Params,
    ) -> futures::future::BoxFuture<'a, Result<Value>> {
        Box::pin(async move { Self::value(method, id) })
    }
    fn forward_json<'a>(
        &'a self,
        method: &'a Method,
        id: Option<&'a Id>,
        _data: Option<&'a Value>,
        _params: &'a Params,
    ) -> futures::future::BoxFuture<'a, Result<plume::RawJson>> {
        self.json_calls
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if let (Method::Get, Some(Id::Int(2))) = (method, id) {
            return Box::pin(async { Ok(plume::RawJson::from_encoded(NOT_JSON.into())) });
        }
        Box::pin(async move {
            Self::value(method, id).map(|v| match v {
                Value::Null => plume::RawJson::from_encoded("null".into()),
                _ => plume::RawJson::from_encoded(PREJSONED.into()),
            })
        })
    }
}

pub(crate) fn prejsoned_app() -> (App, std::sync::Arc<Prejsoned>) {
    let app = App::new();
    let service = std::sync::Arc::new(Prejsoned {
        json_calls: Default::default(),
    });
    app.use_forwarding("pre", service.clone(), ServiceOptions::default());
    (app, service)
}
