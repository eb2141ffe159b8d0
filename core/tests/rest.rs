//! REST: the Feathers mapping, dynamic dispatch, query strings and bad input.

#[path = "support/http.rs"]
mod http_client;
#[path = "support/prejsoned.rs"]
mod prejsoned;

use std::sync::Mutex;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use http::{Request, StatusCode, header};
use plume::{
    App, Error, Id, Method, Params, Result, ServerOptions, Service, ServiceOptions, async_trait,
};
use serde_json::{Value, json};
use tower::ServiceExt;

use prejsoned::{PREJSONED, Prejsoned, prejsoned_app};

/// A small in-memory todo store (the memory adapter is not used here on purpose).
#[derive(Default)]
struct Todos {
    items: Mutex<Vec<Value>>,
    next: Mutex<i64>,
}

impl Todos {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Value>> {
        self.items.lock().unwrap_or_else(|e| e.into_inner())
    }
    fn matches(item: &Value, query: &serde_json::Map<String, Value>) -> bool {
        query
            .iter()
            .filter(|(k, _)| !k.starts_with('$'))
            .all(|(k, v)| {
                item.get(k)
                    .map(|x| x.to_string().trim_matches('"').to_owned())
                    == Some(v.to_string().trim_matches('"').to_owned())
            })
    }
}

#[async_trait]
impl Service for Todos {
    async fn find(&self, params: Params) -> Result<Value> {
        let items = self.lock();
        Ok(Value::Array(
            items
                .iter()
                .filter(|i| Self::matches(i, &params.query))
                .cloned()
                .collect(),
        ))
    }
    async fn get(&self, id: Id, _params: Params) -> Result<Value> {
        self.lock()
            .iter()
            .find(|i| id.matches_value(&i["id"]))
            .cloned()
            .ok_or_else(|| Error::no_record(&id))
    }
    async fn create(&self, data: Value, _params: Params) -> Result<Value> {
        let mut data = data;
        let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
        *next += 1;
        data["id"] = json!(*next);
        self.lock().push(data.clone());
        Ok(data)
    }
    async fn update(&self, id: Id, data: Value, _params: Params) -> Result<Value> {
        let mut items = self.lock();
        let item = items
            .iter_mut()
            .find(|i| id.matches_value(&i["id"]))
            .ok_or_else(|| Error::no_record(&id))?;
        let mut data = data;
        data["id"] = item["id"].clone();
        *item = data.clone();
        Ok(data)
    }
    async fn patch(&self, id: Option<Id>, data: Value, params: Params) -> Result<Value> {
        let mut items = self.lock();
        let mut out = Vec::new();
        for item in items.iter_mut() {
            let hit = match &id {
                Some(id) => id.matches_value(&item["id"]),
                None => Self::matches(item, &params.query),
            };
            if hit {
                if let (Some(obj), Some(patch)) = (item.as_object_mut(), data.as_object()) {
                    for (k, v) in patch {
                        obj.insert(k.clone(), v.clone());
                    }
                }
                out.push(item.clone());
            }
        }
        match id {
            Some(id) => out.pop().ok_or_else(|| Error::no_record(&id)),
            None => Ok(Value::Array(out)),
        }
    }
    async fn remove(&self, id: Option<Id>, params: Params) -> Result<Value> {
        let mut items = self.lock();
        let (gone, keep): (Vec<Value>, Vec<Value>) = items.drain(..).partition(|item| match &id {
            Some(id) => id.matches_value(&item["id"]),
            None => Self::matches(item, &params.query),
        });
        *items = keep;
        match id {
            Some(id) => gone.into_iter().next().ok_or_else(|| Error::no_record(&id)),
            None => Ok(Value::Array(gone)),
        }
    }
    async fn call(&self, method: &str, data: Value, _params: Params) -> Result<Value> {
        match method {
            "stats" => Ok(json!({"count": self.lock().len(), "echo": data})),
            other => Err(Error::method_not_allowed(format!(
                "Method '{other}' not allowed"
            ))),
        }
    }
    fn methods(&self) -> Vec<Method> {
        let mut m = Method::STANDARD.to_vec();
        m.push(Method::Custom("stats".into()));
        m
    }
}

/// Echoes what the transport gave it.
struct Echo;

fn echo(method: &str, id: Option<Id>, data: Option<Value>, params: &Params) -> Value {
    json!({
        "method": method,
        "id": id,
        "data": data,
        "query": params.query,
        "route": params.route,
        "provider": params.provider.map(|p| p.as_str()),
        "marker": params.headers.get("x-marker").and_then(|v| v.to_str().ok()),
    })
}

#[async_trait]
impl Service for Echo {
    async fn find(&self, params: Params) -> Result<Value> {
        Ok(echo("find", None, None, &params))
    }
    async fn get(&self, id: Id, params: Params) -> Result<Value> {
        Ok(echo("get", Some(id), None, &params))
    }
    async fn create(&self, data: Value, params: Params) -> Result<Value> {
        Ok(echo("create", None, Some(data), &params))
    }
    async fn patch(&self, id: Option<Id>, data: Value, params: Params) -> Result<Value> {
        Ok(echo("patch", id, Some(data), &params))
    }
    async fn remove(&self, id: Option<Id>, params: Params) -> Result<Value> {
        Ok(echo("remove", id, None, &params))
    }
    fn methods(&self) -> Vec<Method> {
        vec![
            Method::Find,
            Method::Get,
            Method::Create,
            Method::Patch,
            Method::Remove,
        ]
    }
}

/// Fails in the ways a service can.
struct Faulty;

#[async_trait]
impl Service for Faulty {
    async fn find(&self, _params: Params) -> Result<Value> {
        Err(Error::internal("database password is hunter2"))
    }
    async fn get(&self, _id: Id, _params: Params) -> Result<Value> {
        panic!("boom in get");
    }
    async fn remove(&self, _id: Option<Id>, _params: Params) -> Result<Value> {
        Ok(Value::Null)
    }
}

fn app() -> App {
    let app = App::new();
    app.use_service("todos", Todos::default());
    app.use_service("echo", Echo);
    app.use_service("users/:userId/messages", Echo);
    app.use_service("faulty", Faulty);
    app
}

struct Reply {
    status: StatusCode,
    content_type: Option<String>,
    allow: Option<String>,
    body: Value,
    raw: Vec<u8>,
}

async fn send(
    router: &Router,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Reply {
    let mut req = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    if body.is_some()
        && !headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
    {
        req = req.header(header::CONTENT_TYPE, "application/json");
    }
    let req = req
        .body(Body::from(body.unwrap_or("").to_owned()))
        .expect("request");
    let res = router.clone().oneshot(req).await.expect("infallible");
    let status = res.status();
    let content_type = res
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap_or("").to_owned());
    let allow = res
        .headers()
        .get(header::ALLOW)
        .map(|v| v.to_str().unwrap_or("").to_owned());
    let raw = axum::body::to_bytes(res.into_body(), usize::MAX)
        .await
        .expect("body")
        .to_vec();
    let body = if raw.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&raw).expect("JSON body")
    };
    Reply {
        status,
        content_type,
        allow,
        body,
        raw,
    }
}

fn assert_json(reply: &Reply) {
    assert_eq!(reply.content_type.as_deref(), Some("application/json"));
}

fn assert_error(reply: &Reply, code: u16, name: &str) {
    assert_eq!(reply.status.as_u16(), code, "status; body {}", reply.body);
    assert_json(reply);
    assert_eq!(reply.body["code"], code);
    assert_eq!(reply.body["name"], name);
    let keys: Vec<&String> = reply.body.as_object().expect("object").keys().collect();
    assert!(
        keys.iter().all(
            |k| ["name", "message", "code", "className", "data", "errors"].contains(&k.as_str())
        ),
        "{keys:?}"
    );
}

#[tokio::test]
async fn crud_mapping_statuses_and_content_type() {
    let router = app().into_router();
    let r = send(
        &router,
        "POST",
        "/todos",
        &[],
        Some(r#"{"text":"a","done":false}"#),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_json(&r);
    assert_eq!(r.body, json!({"text": "a", "done": false, "id": 1}));

    let r = send(&router, "GET", "/todos/1", &[], None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_json(&r);
    assert_eq!(r.body["text"], "a");

    let r = send(&router, "PATCH", "/todos/1", &[], Some(r#"{"done":true}"#)).await;
    assert_eq!(
        (r.status, r.body["done"].clone()),
        (StatusCode::OK, json!(true))
    );
    assert_json(&r);

    let r = send(&router, "PUT", "/todos/1", &[], Some(r#"{"text":"b"}"#)).await;
    assert_eq!(
        (r.status, r.body.clone()),
        (StatusCode::OK, json!({"text": "b", "id": 1}))
    );

    let r = send(&router, "GET", "/todos", &[], None).await;
    assert_eq!(
        (r.status, r.body.clone()),
        (StatusCode::OK, json!([{"text": "b", "id": 1}]))
    );
    assert_json(&r);

    let r = send(&router, "DELETE", "/todos/1", &[], None).await;
    assert_eq!(
        (r.status, r.body.clone()),
        (StatusCode::OK, json!({"text": "b", "id": 1}))
    );

    let r = send(&router, "GET", "/todos/1", &[], None).await;
    assert_error(&r, 404, "NotFound");
    assert_eq!(r.body["message"], "No record found for id '1'");
}

/// An answer's body is serde_json's text byte for byte (the REST server writes it with
/// `plume_json`): escapes of every class, non-ASCII, numbers, and a string of about a megabyte.
#[tokio::test]
async fn answers_are_serde_json_text_byte_for_byte() {
    let router = app().into_router();
    let tricky: String = (0u8..0x80).map(char::from).chain("é€😀".chars()).collect();
    for text in [tricky.repeat(3), "x".repeat(1_000_000)] {
        let data = json!({"text": text, "n": [-1.5, u64::MAX, i64::MIN, 0.25], "t": true});
        let sent = serde_json::to_string(&data).expect("encodes");
        let r = send(&router, "POST", "/todos", &[], Some(&sent)).await;
        assert_eq!(r.status, StatusCode::CREATED);
        let id = r.body["id"].clone();
        let r = send(&router, "GET", &format!("/todos/{id}"), &[], None).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.body["text"], data["text"]);
        assert_eq!(r.raw, serde_json::to_vec(&r.body).expect("encodes"));
    }
}

#[tokio::test]
async fn multi_patch_and_remove_without_id() {
    let router = app().into_router();
    for tag in ["x", "x", "y"] {
        let r = send(
            &router,
            "POST",
            "/todos",
            &[],
            Some(&format!(r#"{{"tag":"{tag}"}}"#)),
        )
        .await;
        assert_eq!(r.status, StatusCode::CREATED);
    }
    let r = send(
        &router,
        "PATCH",
        "/todos?tag=x",
        &[],
        Some(r#"{"done":true}"#),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body.as_array().map(Vec::len), Some(2));
    assert!(
        r.body
            .as_array()
            .expect("array")
            .iter()
            .all(|t| t["done"] == json!(true))
    );

    let r = send(&router, "DELETE", "/todos?tag=x", &[], None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body.as_array().map(Vec::len), Some(2));
    let r = send(&router, "GET", "/todos", &[], None).await;
    assert_eq!(r.body, json!([{"tag": "y", "id": 3}]));
}

#[tokio::test]
async fn params_query_route_and_id() {
    let router = app().into_router();
    let r = send(
        &router,
        "GET",
        "/echo?%24sort%5Bname%5D=1&id[$in][]=1&id[$in][]=2&$or[0][done]=true&$limit=5",
        &[("x-marker", "m1")],
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.body,
        json!({
            "method": "find", "id": null, "data": null,
            "query": {"$sort": {"name": "1"}, "id": {"$in": ["1", "2"]}, "$or": [{"done": "true"}], "$limit": "5"},
            "route": {}, "provider": "rest", "marker": "m1",
        })
    );

    let r = send(&router, "GET", "/echo/a%20b%2Fc", &[], None).await;
    assert_eq!(r.body["id"], json!("a b/c"));
    let r = send(&router, "GET", "/echo/42", &[], None).await;
    assert_eq!(r.body["id"], json!(42));
    let r = send(&router, "GET", "/echo/042", &[], None).await;
    assert_eq!(r.body["id"], json!("042"));

    let r = send(&router, "GET", "/users/5/messages/7?x=1", &[], None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["route"], json!({"userId": "5"}));
    assert_eq!(r.body["id"], json!(7));
    assert_eq!(r.body["query"], json!({"x": "1"}));
    let r = send(&router, "POST", "/users/a%40b/messages", &[], Some("{}")).await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(r.body["route"], json!({"userId": "a@b"}));

    // id-less patch and remove reach the service with id null
    let r = send(&router, "PATCH", "/echo?a=1", &[], Some(r#"{"b":2}"#)).await;
    assert_eq!(
        (
            r.body["method"].clone(),
            r.body["id"].clone(),
            r.body["data"].clone()
        ),
        (json!("patch"), Value::Null, json!({"b": 2}))
    );
    let r = send(&router, "DELETE", "/echo", &[], None).await;
    assert_eq!(
        (r.body["method"].clone(), r.body["id"].clone()),
        (json!("remove"), Value::Null)
    );
    // an empty body is {}
    let r = send(&router, "POST", "/echo", &[], Some("")).await;
    assert_eq!(r.body["data"], json!({}));
}

#[tokio::test]
async fn custom_methods_through_the_header() {
    let router = app().into_router();
    let r = send(
        &router,
        "POST",
        "/todos",
        &[("X-Service-Method", "stats")],
        Some(r#"{"tag":"t"}"#),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_json(&r);
    assert_eq!(r.body, json!({"count": 0, "echo": {"tag": "t"}}));
    for name in ["find", "create", "nope"] {
        let r = send(
            &router,
            "POST",
            "/todos",
            &[("X-Service-Method", name)],
            Some("{}"),
        )
        .await;
        assert_error(&r, 405, "MethodNotAllowed");
    }
    // echo has no custom methods
    let r = send(
        &router,
        "POST",
        "/echo",
        &[("X-Service-Method", "stats")],
        Some("{}"),
    )
    .await;
    assert_error(&r, 405, "MethodNotAllowed");
}

#[tokio::test]
async fn bad_input_gets_feathers_errors() {
    let router = app().into_router();
    // malformed JSON
    let r = send(&router, "POST", "/todos", &[], Some(r#"{"text": "#)).await;
    assert_error(&r, 400, "BadRequest");
    // wrong content type
    let r = send(
        &router,
        "POST",
        "/todos",
        &[("content-type", "text/plain")],
        Some(r#"{"a":1}"#),
    )
    .await;
    assert_error(&r, 400, "BadRequest");
    assert!(
        r.body["message"]
            .as_str()
            .unwrap_or("")
            .contains("Content-Type")
    );
    // invalid query string
    let r = send(&router, "GET", "/todos?a[b=1", &[], None).await;
    assert_error(&r, 400, "BadRequest");
    let r = send(&router, "GET", "/todos?a=%ff", &[], None).await;
    assert_error(&r, 400, "BadRequest");
    // invalid percent-encoding in the id
    let r = send(&router, "GET", "/todos/%ff", &[], None).await;
    assert_error(&r, 400, "BadRequest");
    // unknown path
    let r = send(&router, "GET", "/nothing/here/at/all", &[], None).await;
    assert_error(&r, 404, "NotFound");
    let r = send(&router, "GET", "/", &[], None).await;
    assert_error(&r, 404, "NotFound");
    // methods the service lacks
    let r = send(&router, "PUT", "/echo/1", &[], Some("{}")).await;
    assert_error(&r, 405, "MethodNotAllowed");
    assert_eq!(
        r.body["message"],
        "Method 'update' not allowed on service 'echo'"
    );
    let r = send(&router, "POST", "/faulty", &[], Some("{}")).await;
    assert_error(&r, 405, "MethodNotAllowed");
    // a verb Feathers does not map
    let r = send(&router, "TRACE", "/todos", &[], None).await;
    assert_error(&r, 405, "MethodNotAllowed");
    // PUT without an id
    let r = send(&router, "PUT", "/todos", &[], Some("{}")).await;
    assert_error(&r, 400, "BadRequest");
}

#[tokio::test]
async fn body_limit_is_a_feathers_error() {
    let app = app();
    app.set_server_options(ServerOptions {
        body_limit: 64,
        ..ServerOptions::default()
    });
    let router = app.into_router();
    let big = format!(r#"{{"text":"{}"}}"#, "x".repeat(100));
    let r = send(&router, "POST", "/todos", &[], Some(&big)).await;
    assert_error(&r, 400, "BadRequest");
    assert_eq!(r.body["data"], json!({"limit": 64}));
    // the same body, streamed without a Content-Length
    let chunks: Vec<std::result::Result<String, std::io::Error>> =
        vec![Ok(big[..50].to_owned()), Ok(big[50..].to_owned())];
    let req = Request::builder()
        .method("POST")
        .uri("/todos")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(futures::stream::iter(chunks)))
        .expect("request");
    let res = router.clone().oneshot(req).await.expect("infallible");
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    // a small body still passes
    let r = send(&router, "POST", "/todos", &[], Some(r#"{"text":"ok"}"#)).await;
    assert_eq!(r.status, StatusCode::CREATED);
}

#[tokio::test]
async fn server_errors_hide_details_and_panics_are_500() {
    let router = app().into_router();
    let r = send(&router, "GET", "/faulty", &[], None).await;
    assert_error(&r, 500, "GeneralError");
    assert_eq!(r.body["message"], "Internal error");
    assert!(!String::from_utf8_lossy(&r.raw).contains("hunter2"));
    let r = send(&router, "GET", "/faulty/1", &[], None).await;
    assert_error(&r, 500, "GeneralError");
    // and the router still works afterwards
    let r = send(&router, "GET", "/todos", &[], None).await;
    assert_eq!(r.status, StatusCode::OK);
    // a null result is 204 without a body
    let r = send(&router, "DELETE", "/faulty/1", &[], None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert!(r.raw.is_empty());
}

#[tokio::test]
async fn head_and_options() {
    let router = app().into_router();
    let r = send(&router, "HEAD", "/todos", &[], None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.raw.is_empty());
    let r = send(&router, "OPTIONS", "/echo/1", &[], None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(
        r.allow.as_deref(),
        Some("GET, HEAD, POST, PATCH, DELETE, OPTIONS")
    );
    let r = send(&router, "OPTIONS", "/todos/1", &[], None).await;
    assert_eq!(
        r.allow.as_deref(),
        Some("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS")
    );
}

#[tokio::test]
async fn cors_layer_is_optional() {
    let app = app();
    let r = send(
        &app.into_router(),
        "GET",
        "/todos",
        &[("origin", "http://example.test")],
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let req = Request::builder()
        .uri("/todos")
        .header("origin", "http://example.test")
        .body(Body::empty())
        .expect("req");
    let res = app.into_router().oneshot(req).await.expect("infallible");
    assert!(res.headers().get("access-control-allow-origin").is_none());

    app.set_server_options(ServerOptions {
        cors: Some(tower_http::cors::CorsLayer::permissive()),
        ..ServerOptions::default()
    });
    let req = Request::builder()
        .uri("/todos")
        .header("origin", "http://example.test")
        .body(Body::empty())
        .expect("req");
    let res = app.into_router().oneshot(req).await.expect("infallible");
    assert_eq!(
        res.headers()
            .get("access-control-allow-origin")
            .map(|v| v.as_bytes()),
        Some(&b"*"[..])
    );
}

#[tokio::test]
async fn extra_routes_come_before_the_fallback() {
    let app = app();
    app.add_routes(|r| r.route("/health", axum::routing::get(|| async { "up" })));
    let router = app.into_router();
    let req = Request::builder()
        .uri("/health")
        .body(Body::empty())
        .expect("req");
    let res = router.clone().oneshot(req).await.expect("infallible");
    assert_eq!(res.status(), StatusCode::OK);
    // merging a router of your own works too
    let merged =
        router.merge(Router::new().route("/mine", axum::routing::get(|| async { "mine" })));
    let r = send(&merged, "GET", "/todos", &[], None).await;
    assert_eq!(r.status, StatusCode::OK);
    let req = Request::builder()
        .uri("/mine")
        .body(Body::empty())
        .expect("req");
    assert_eq!(
        merged.oneshot(req).await.expect("infallible").status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn per_service_layers_wrap_only_their_service_and_go_with_it() {
    use axum::middleware::{Next, from_fn};
    use plume::server::RestLayer;

    let app = app();
    let router = app.into_router();
    // A layer that tags responses, and one that refuses requests without a header: the first
    // registered is the outermost.
    let tag = from_fn(|req: axum::extract::Request, next: Next| async move {
        let mut res = next.run(req).await;
        res.headers_mut()
            .insert("x-layer", "todos".parse().expect("header value"));
        res
    });
    let gate = from_fn(|req: axum::extract::Request, next: Next| async move {
        if req.headers().contains_key("x-pass") {
            next.run(req).await
        } else {
            plume::server::error_response(&plume::Error::forbidden("no pass"))
        }
    });
    app.set_rest_layers("/todos/", vec![RestLayer::new(tag), RestLayer::new(gate)]);

    let refused = send(&router, "GET", "/todos", &[], None).await;
    assert_error(&refused, 403, "Forbidden");
    let allowed = send(&router, "GET", "/todos/1", &[("x-pass", "1")], None).await;
    assert_ne!(allowed.status.as_u16(), 403);
    let req = Request::builder()
        .uri("/todos")
        .header("x-pass", "1")
        .body(Body::empty())
        .expect("req");
    let res = router.clone().oneshot(req).await.expect("infallible");
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        res.headers().get("x-layer").map(|v| v.as_bytes()),
        Some(&b"todos"[..])
    );

    // Other services are untouched.
    let other = send(&router, "GET", "/echo", &[], None).await;
    assert_eq!(other.status, StatusCode::OK);

    // The layers go with the service: a new service at the same path has none.
    app.unuse("todos");
    assert!(app.rest_layers("todos").is_empty());
    app.use_service("todos", Todos::default());
    let fresh = send(&router, "GET", "/todos", &[], None).await;
    assert_eq!(fresh.status, StatusCode::OK);
}

/// One request over a real TCP connection (hyper's client), answered within 10 s.
async fn http(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> http_client::Response {
    let local = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
    tokio::time::timeout(
        Duration::from_secs(10),
        http_client::send_from(local, addr, method, path, body),
    )
    .await
    .expect("response in time")
}

#[tokio::test]
async fn real_server_routes_a_late_service_and_shuts_down() {
    let app = App::new();
    let server = app.listen("127.0.0.1:0").await.expect("listen");
    let addr = server.local_addr();
    assert!(addr.ip().is_loopback() && addr.port() != 0);

    let r = http(addr, "GET", "/late", None).await;
    assert_eq!(r.status, 404);
    let content_type = r.headers.get(header::CONTENT_TYPE);
    assert!(
        content_type.is_some_and(|v| v.as_bytes().starts_with(b"application/json")),
        "{content_type:?}"
    );
    assert_eq!(r.json()["className"], "not-found");

    app.use_service_with("late", Todos::default(), ServiceOptions::new());
    let r = http(addr, "POST", "/late", Some(r#"{"a":1}"#)).await;
    assert_eq!((r.status, r.json()), (201, json!({"a": 1, "id": 1})));
    let r = http(addr, "GET", "/late/1", None).await;
    assert_eq!((r.status, r.json()), (200, json!({"a": 1, "id": 1})));

    app.unuse("late");
    assert_eq!(http(addr, "GET", "/late/1", None).await.status, 404);

    tokio::time::timeout(Duration::from_secs(15), app.shutdown())
        .await
        .expect("shutdown in time");
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "the listener is closed"
    );
}

#[tokio::test]
async fn json_text_results_pass_through_when_no_hook_reads_them() {
    let (app, service) = prejsoned_app();
    let calls = || service.json_calls.load(std::sync::atomic::Ordering::SeqCst);
    // A before hook does not need the result: the text goes out as it came.
    app.service("pre")
        .expect("mounted")
        .hooks()
        .before(plume::hooks::hook_sync(|ctx| {
            ctx.params.extra.insert("seen".into(), true.into());
            Ok(())
        }));
    let router = app.clone().into_router();
    let r = send(&router, "GET", "/pre", &[], None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_json(&r);
    assert_eq!(r.raw, PREJSONED.as_bytes());
    assert_eq!(calls(), 1);

    // null is 204; an error is the Feathers error.
    let r = send(&router, "GET", "/pre/0", &[], None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert!(r.raw.is_empty());
    let r = send(&router, "GET", "/pre/404", &[], None).await;
    assert_error(&r, 404, "NotFound");
    assert_eq!(calls(), 3);

    // A create emits `created` with the value: it takes the ordinary path.
    let created = std::sync::Arc::new(Mutex::new(Vec::new()));
    let seen = created.clone();
    app.service("pre")
        .expect("mounted")
        .on("created", move |ev| {
            seen.lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(ev.data.clone());
        });
    let r = send(&router, "POST", "/pre", &[], Some("{}")).await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(r.raw, br#"{"b":2,"a":[1,"x"]}"#);
    assert_eq!(
        *created.lock().unwrap_or_else(|e| e.into_inner()),
        [json!({"b": 2, "a": [1, "x"]})]
    );
    assert_eq!(calls(), 3);

    // A call from code gets a value.
    let value = app
        .service("pre")
        .expect("mounted")
        .find(Params::new())
        .await
        .expect("find");
    assert_eq!(value, json!({"b": 2, "a": [1, "x"]}));
}

#[tokio::test]
async fn hooks_that_read_the_result_get_it_decoded() {
    // An after hook.
    let (app, service) = prejsoned_app();
    app.service("pre")
        .expect("mounted")
        .hooks()
        .after(plume::hooks::hook_sync(|ctx| {
            if let Some(Value::Object(m)) = ctx.result.as_mut() {
                m.insert("after".into(), true.into());
            }
            Ok(())
        }));
    let r = send(&app.clone().into_router(), "GET", "/pre", &[], None).await;
    assert_eq!(r.body, json!({"b": 2, "a": [1, "x"], "after": true}));

    // An around hook, on the app.
    let (app2, service2) = prejsoned_app();
    app2.hooks().around(plume::hooks::around(|ctx, next| {
        Box::pin(async move {
            next.run(ctx).await?;
            ctx.result = Some(json!({"wrapped": ctx.result.take()}));
            Ok(())
        })
    }));
    let r = send(&app2.into_router(), "GET", "/pre", &[], None).await;
    assert_eq!(r.body, json!({"wrapped": {"b": 2, "a": [1, "x"]}}));

    // A before hook that answers skips the service.
    let (app3, service3) = prejsoned_app();
    app3.service("pre")
        .expect("mounted")
        .hooks()
        .before(plume::hooks::hook_sync(|ctx| {
            ctx.result = Some(json!("cached"));
            Ok(())
        }));
    let r = send(&app3.into_router(), "GET", "/pre", &[], None).await;
    assert_eq!(r.body, json!("cached"));

    let calls = |s: &Prejsoned| s.json_calls.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(
        (calls(&service), calls(&service2), calls(&service3)),
        (0, 0, 0)
    );
}

#[tokio::test]
async fn error_hooks_see_the_params_and_can_recover_a_json_call() {
    let (app, _service) = prejsoned_app();
    app.service("pre")
        .expect("mounted")
        .hooks()
        .error(plume::hooks::hook_sync(|ctx| {
            let asked = ctx.params.query.get("fallback").cloned();
            if let Some(fallback) = asked {
                ctx.error = None;
                ctx.result = Some(json!({ "fallback": fallback }));
            }
            Ok(())
        }));
    let router = app.into_router();
    let r = send(&router, "GET", "/pre/404?fallback=yes", &[], None).await;
    assert_eq!(
        (r.status, r.body),
        (StatusCode::OK, json!({"fallback": "yes"}))
    );
    let r = send(&router, "GET", "/pre/404", &[], None).await;
    assert_error(&r, 404, "NotFound");
}

#[tokio::test]
async fn error_hooks_see_the_params_of_an_ordinary_service() {
    // Todos fails `get` of a missing id; the error hook reads the query, which the App must
    // not have moved into the failed call.
    let app = app();
    app.service("todos")
        .expect("mounted")
        .hooks()
        .error(plume::hooks::hook_sync(|ctx| {
            if ctx.params.query.get("soft").is_some() {
                ctx.error = None;
                ctx.result = Some(json!({"soft": ctx.id.as_ref().map(|i| i.to_string())}));
            }
            Ok(())
        }));
    let r = send(&app.into_router(), "GET", "/todos/77?soft=1", &[], None).await;
    assert_eq!((r.status, r.body), (StatusCode::OK, json!({"soft": "77"})));
}
