//! The REST handler: one fallback that resolves every request against the live service table.

use std::convert::Infallible;
use std::panic::AssertUnwindSafe;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use percent_encoding::percent_decode_str;
use serde_json::{Map, Value};

use crate::app::App;
use crate::error::{Error, Result};
use crate::handle::Reply;
use crate::params::{Id, Method, Params, Provider};
use crate::server::RestService;
use crate::server::query::parse_query;
use crate::trace::{self, TRACEPARENT, TraceContext};
use tower::ServiceExt;
use tower::util::BoxCloneSyncService;

/// The header that names a custom method on `POST /<path>`.
pub const SERVICE_METHOD_HEADER: &str = "x-service-method";

#[derive(Clone)]
pub(crate) struct RestState {
    pub(crate) app: App,
    pub(crate) body_limit: usize,
    pub(crate) body_timeout: std::time::Duration,
}

/// The axum fallback: every request that no other route took. A service with REST layers
/// (see [`App::set_rest_layers`]) gets the request through them.
///
/// It answers with a boxed future made here, so that axum's own future around it, which axum
/// boxes and moves per request, holds a pointer instead of the whole request's state (see the
/// `future_sizes` test).
pub(crate) fn fallback(
    State(state): State<RestState>,
    req: Request,
) -> BoxFuture<'static, Response> {
    let Some(layers) = state.app.rest_layers_for_request(req.uri().path()) else {
        return respond(state, req);
    };
    let inner: RestService = BoxCloneSyncService::new(tower::service_fn(move |req: Request| {
        respond(state.clone(), req).map(Ok::<_, Infallible>)
    }));
    let service = layers
        .iter()
        .rev()
        .fold(inner, |svc, layer| layer.apply(svc));
    Box::pin(service.oneshot(req).map(|outcome| match outcome {
        Ok(response) => response,
        Err(never) => match never {},
    }))
}

/// `traceparent`, made once (a name from a `&str` is parsed at each use).
static TRACEPARENT_HEADER: HeaderName = HeaderName::from_static(TRACEPARENT);

/// Handle one request in its trace context: the request's `traceparent` (this hop is a child
/// span of it) or a new trace; it runs as the hop `request` of the trace (its log lines name the
/// trace id), in a `request` span only when a subscriber wants one (an OTLP exporter), and the
/// response says `traceparent` (unless trace contexts are off: [`trace::set_enabled`]).
fn respond(state: RestState, req: Request) -> BoxFuture<'static, Response> {
    if !trace::enabled() {
        return Box::pin(answer(state, req, None));
    }
    let ctx = req
        .headers()
        .get(&TRACEPARENT_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(TraceContext::parse)
        .map_or_else(TraceContext::new_root, |parent| parent.child());
    let span = trace::hop_span(
        ctx,
        || tracing::trace_span!("request", trace_id = %ctx.trace_id_field()),
    );
    Box::pin(trace::in_hop(
        "request",
        ctx,
        span,
        answer(state, req, Some(ctx)),
    ))
}

/// Handle one request, turning every failure (a panic included) into a Feathers error response,
/// which says `traceparent` when `trace` is given.
///
/// One async block holds the request and lends it to [`handle`]: an async function taking it
/// by value would keep a second copy of it in its state.
// Not an `async fn`: it would keep its arguments twice in its future (see above).
#[allow(clippy::manual_async_fn)]
fn answer(
    state: RestState,
    mut req: Request,
    trace: Option<TraceContext>,
) -> impl Future<Output = Response> + Send {
    async move {
        let outcome = AssertUnwindSafe(handle(&state, &mut req))
            .catch_unwind()
            .await
            .unwrap_or_else(|_| {
                Err(Error::internal(format!(
                    "{} {} panicked",
                    req.method(),
                    req.uri().path()
                )))
            });
        let mut response = match outcome {
            Ok(response) => response,
            Err(err) => {
                let (method, path) = (req.method(), req.uri().path());
                if err.code() >= 500 {
                    tracing::error!(target: "plume::rest", %method, %path, %err, "request failed");
                } else {
                    tracing::debug!(target: "plume::rest", %method, %path, %err, "request failed");
                }
                error_response(&err)
            }
        };
        if let Some(ctx) = trace
            && let Ok(value) = HeaderValue::from_bytes(&ctx.traceparent_bytes())
        {
            response
                .headers_mut()
                .insert(TRACEPARENT_HEADER.clone(), value);
        }
        response
    }
}

/// A JSON response with this status and body.
pub(crate) fn json_response(status: StatusCode, body: &Value) -> Response {
    // (serde_json's text, with strings scanned a word at a time: plume_json)
    json_bytes_response(status, plume_json::to_vec(body).into())
}

/// A response with this status and JSON text.
fn json_bytes_response(status: StatusCode, json: Bytes) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        json,
    )
        .into_response()
}

/// The Feathers error body with the status of its code.
pub fn error_response(err: &Error) -> Response {
    let status = StatusCode::from_u16(err.code()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json_response(status, &err.to_json())
}

fn decode(segment: &str) -> Result<String> {
    percent_decode_str(segment)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| Error::bad_request(format!("Invalid percent-encoding in '{segment}'")))
}

/// The HTTP methods a service answers at a path with or without an id (for `Allow`).
fn allowed(handle: &crate::ServiceHandle, with_id: bool) -> String {
    let mut verbs = Vec::new();
    let has = |m: Method| handle.exposes(&m);
    if has(if with_id { Method::Get } else { Method::Find }) {
        verbs.extend(["GET", "HEAD"]);
    }
    if has(Method::Create) || handle.methods().iter().any(|m| !m.is_standard()) {
        verbs.push("POST");
    }
    if with_id && has(Method::Update) {
        verbs.push("PUT");
    }
    if has(Method::Patch) {
        verbs.push("PATCH");
    }
    if has(Method::Remove) {
        verbs.push("DELETE");
    }
    verbs.push("OPTIONS");
    verbs.join(", ")
}

/// Answer one request. It takes the request's headers and body (the caller keeps its method
/// and URI for the log of a failure).
async fn handle(state: &RestState, req: &mut Request) -> Result<Response> {
    let path = req.uri().path();
    tracing::debug!(target: "plume::rest", method = %req.method(), %path, "request");
    let Some(lookup) = state.app.lookup(path) else {
        let err = Error::not_found(format!("Path {path} not found"));
        crate::metrics::unknown_path(Provider::Rest, &err);
        return Err(err);
    };
    let id = lookup
        .id
        .as_deref()
        .map(decode)
        .transpose()?
        .map(|s| Id::parse_segment(&s));
    let mut route = Map::new();
    for (k, v) in lookup.route {
        let v = match v {
            Value::String(s) => Value::String(decode(&s)?),
            other => other,
        };
        route.insert(k, v);
    }
    let handle = lookup.handle;

    let (method, id, has_body) = match *req.method() {
        http::Method::GET | http::Method::HEAD => match id {
            Some(id) => (Method::Get, Some(id), false),
            None => (Method::Find, None, false),
        },
        http::Method::POST => match req.headers().get(SERVICE_METHOD_HEADER) {
            Some(name) => {
                let name = name.to_str().unwrap_or("").trim();
                let method = Method::from_name(name);
                if method.is_standard() || !handle.exposes(&method) {
                    return Err(Error::method_not_allowed(format!(
                        "Method `{name}` is not supported by this endpoint."
                    )));
                }
                (method, None, true)
            }
            None => (Method::Create, None, true),
        },
        http::Method::PUT => (Method::Update, id, true),
        http::Method::PATCH => (Method::Patch, id, true),
        http::Method::DELETE => (Method::Remove, id, false),
        http::Method::OPTIONS => {
            let allow = allowed(&handle, id.is_some());
            return Ok((
                StatusCode::NO_CONTENT,
                [(
                    header::ALLOW,
                    HeaderValue::from_str(&allow).unwrap_or(HeaderValue::from_static("OPTIONS")),
                )],
            )
                .into_response());
        }
        ref other => {
            return Err(Error::method_not_allowed(format!(
                "Method {other} not allowed"
            )));
        }
    };
    if !handle.exposes(&method) {
        return Err(Error::method_not_allowed_on(method.as_str(), handle.path()));
    }
    let query = parse_query(req.uri().query().unwrap_or(""))?;
    let data = if has_body {
        let body = std::mem::take(req.body_mut());
        let read = read_json(req.headers(), body, state.body_limit);
        Some(
            tokio::time::timeout(state.body_timeout, read)
                .await
                .map_err(|_| {
                    Error::timeout(format!(
                        "Request body not received within {} ms",
                        state.body_timeout.as_millis()
                    ))
                })??,
        )
    } else {
        None
    };
    let params = Params {
        query,
        route,
        provider: Some(Provider::Rest),
        remote_addr: req
            .extensions()
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|c| c.0),
        headers: std::mem::take(req.headers_mut()),
        ..Params::default()
    };
    let is_create = method == Method::Create;
    let reply = handle.dispatch_reply(method, id, data, params).await?;
    let status = if is_create {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(match reply {
        Reply::Value(Value::Null) => StatusCode::NO_CONTENT.into_response(),
        Reply::Value(result) => json_response(status, &result),
        Reply::Json(raw) if raw.is_null() => StatusCode::NO_CONTENT.into_response(),
        Reply::Json(raw) => json_bytes_response(status, raw.into_bytes()),
    })
}

/// True for `application/json` and `application/<x>+json`, with any parameters.
fn is_json(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Read a JSON body of at most `limit` bytes. An empty body is `{}` (as Koa's body parser
/// gives). A body of another content type, malformed JSON or an oversized body is a
/// BadRequest.
async fn read_json(headers: &HeaderMap, body: Body, limit: usize) -> Result<Value> {
    let too_large = || {
        Error::bad_request(format!(
            "Request body too large (the limit is {limit} bytes)"
        ))
        .with_data(serde_json::json!({ "limit": limit }))
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let mut stream = body.into_data_stream();
    let mut buf: Vec<u8> = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk: Bytes = chunk
            .map_err(|e| Error::bad_request(format!("Could not read the request body: {e}")))?;
        if buf.len() + chunk.len() > limit {
            return Err(too_large());
        }
        buf.extend_from_slice(&chunk);
    }
    if buf.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Object(Map::new()));
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !is_json(content_type) {
        return Err(Error::bad_request(format!(
            "Unsupported Content-Type '{content_type}': the body must be application/json"
        )));
    }
    serde_json::from_slice(&buf).map_err(|e| Error::bad_request(format!("Invalid JSON body: {e}")))
}

#[cfg(test)]
mod tests {
    use super::is_json;

    #[test]
    fn json_content_types() {
        assert!(is_json("application/json"));
        assert!(is_json("application/json; charset=utf-8"));
        assert!(is_json("Application/JSON"));
        assert!(is_json("application/merge-patch+json"));
        assert!(!is_json("text/plain"));
        assert!(!is_json(""));
        assert!(!is_json("application/x-www-form-urlencoded"));
    }
}

/// The futures of a REST request stay small. An async function keeps its arguments and the
/// future of each call it awaits inside its own future, and the server moves that future (into
/// its box, through wrappers) on every request: when each layer took the request or the call's
/// arguments by value again, 40 % of the gateway's instructions per GET were `memcpy`
/// (docs/benchmarks.md, "The REST handler's future"). A layer that does so again grows these
/// futures past the bounds (measured with rustc 1.95, x86_64; a newer compiler may lay them out
/// a little differently).
#[cfg(test)]
mod future_sizes {
    use std::mem::size_of_val;

    use super::*;
    use crate::Service;

    struct Todos;

    #[async_trait::async_trait]
    impl Service for Todos {
        async fn find(&self, _params: Params) -> Result<Value> {
            Ok(Value::Array(Vec::new()))
        }
    }

    fn state() -> RestState {
        let app = App::new();
        app.use_service("todos", Todos);
        RestState {
            app,
            body_limit: 1024,
            body_timeout: std::time::Duration::from_secs(1),
        }
    }

    #[test]
    fn the_rest_request_future_stays_small() {
        let state = state();
        let request = || Request::new(Body::empty());
        // What `fallback` boxes (its trace wrapper adds a few words).
        let answering = answer(state.clone(), request(), None);
        assert!(
            size_of_val(&answering) <= 2_560,
            "the REST request's future is {} bytes",
            size_of_val(&answering)
        );
        let mut req = request();
        let handling = handle(&state, &mut req);
        assert!(
            size_of_val(&handling) <= 2_048,
            "the REST handler's future is {} bytes",
            size_of_val(&handling)
        );
    }

    #[test]
    fn a_service_call_future_holds_its_context_once() {
        let state = state();
        let Some(todos) = state.app.service("todos") else {
            panic!("todos is mounted");
        };
        let context = std::mem::size_of::<crate::HookContext>();
        let calls = [
            size_of_val(&todos.dispatch(Method::Find, None, None, Params::new())),
            size_of_val(&todos.dispatch_reply(Method::Find, None, None, Params::new())),
            size_of_val(&todos.dispatch_context(Method::Find, None, None, Params::new())),
            size_of_val(&todos.find(Params::new())),
            size_of_val(&todos.get(1, Params::new())),
        ];
        for size in calls {
            // The context, and less than another one for everything else.
            assert!(
                size < 2 * context && size <= 1_792,
                "a service call's future is {size} bytes (its context {context})"
            );
        }
    }

    /// The `authenticate` hook runs in every authenticated call: its future (which `async_trait`
    /// boxes per call) does not hold a service call for the entity, which the cache usually
    /// answers.
    #[cfg(feature = "auth")]
    #[test]
    fn the_authenticate_hook_future_stays_small() {
        use crate::hooks::Hook;
        let state = state();
        let Some(todos) = state.app.service("todos") else {
            panic!("todos is mounted");
        };
        let mut ctx = crate::HookContext::new(
            state.app.clone(),
            "todos",
            Method::Find,
            None,
            None,
            Params::new(),
        );
        let hook = crate::auth::authenticate(["jwt"]);
        let running = hook.run(&mut ctx);
        assert!(
            size_of_val(&*running) <= 1_024,
            "the authenticate hook's future is {} bytes",
            size_of_val(&*running)
        );
        drop(todos);
    }
}
