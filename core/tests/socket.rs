//! socket.io: the Feathers socket protocol, driven by the official `socket.io-client` (Node).
//!
//! The Node client is installed with `npm ci` from `tests/socketio-client/package-lock.json` into
//! a directory under the system temp dir (reused while the lockfile is unchanged). Set
//! `PLUME_SKIP_NODE_TESTS=1` to skip the Node-driven test on a machine without Node.

#[path = "support/npm.rs"]
mod npm;
#[path = "support/prejsoned.rs"]
mod prejsoned;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use axum::body::Body;
use http::Request;
use plume::realtime::ConnectionAuthenticator;
use plume::{App, Error, Id, Method, Params, Result, Service, ServiceOptions, async_trait};
use serde_json::{Value, json};
use tower::ServiceExt;

use prejsoned::{PREJSONED, Prejsoned};

#[derive(Default)]
struct Todos {
    items: Mutex<Vec<Value>>,
}

impl Todos {
    fn insert(&self, mut data: Value) -> Value {
        let mut items = self.items.lock().unwrap_or_else(|e| e.into_inner());
        data["id"] = json!(items.len() + 1);
        items.push(data.clone());
        data
    }
}

#[async_trait]
impl Service for Todos {
    async fn find(&self, _params: Params) -> Result<Value> {
        Ok(Value::Array(
            self.items.lock().unwrap_or_else(|e| e.into_inner()).clone(),
        ))
    }
    async fn get(&self, id: Id, _params: Params) -> Result<Value> {
        let items = self.items.lock().unwrap_or_else(|e| e.into_inner());
        items
            .iter()
            .find(|t| id.matches_value(&t["id"]))
            .cloned()
            .ok_or_else(|| Error::no_record(&id))
    }
    async fn create(&self, data: Value, _params: Params) -> Result<Value> {
        Ok(match data {
            Value::Array(list) => Value::Array(list.into_iter().map(|d| self.insert(d)).collect()),
            one => self.insert(one),
        })
    }
    async fn call(&self, method: &str, data: Value, params: Params) -> Result<Value> {
        assert_eq!(method, "stats");
        Ok(json!({"data": data, "query": params.query}))
    }
    fn methods(&self) -> Vec<Method> {
        vec![
            Method::Find,
            Method::Get,
            Method::Create,
            Method::Custom("stats".into()),
        ]
    }
}

/// Answers with what the socket transport put into params.
struct WhoAmI;

#[async_trait]
impl Service for WhoAmI {
    async fn find(&self, params: Params) -> Result<Value> {
        Ok(json!({
            "provider": params.provider.map(|p| p.as_str()),
            "connection": params.connection.map(|c| c.0),
            "user": params.user,
            "authentication": params.authentication,
            "query": params.query,
            "hasHeaders": params.headers.contains_key("host"),
        }))
    }
    fn methods(&self) -> Vec<Method> {
        vec![Method::Find]
    }
}

/// A stand-in for the authentication service: password `secret` logs in as user 1.
struct FakeAuth;

#[async_trait]
impl Service for FakeAuth {
    async fn create(&self, data: Value, _params: Params) -> Result<Value> {
        if data["password"] == "secret" {
            Ok(json!({
                "accessToken": "tok-1",
                "authentication": {"strategy": "local", "payload": {"sub": "1"}},
                "user": {"id": 1, "email": "a@example.com"},
            }))
        } else {
            Err(Error::not_authenticated("Invalid login"))
        }
    }
    async fn remove(&self, _id: Option<Id>, params: Params) -> Result<Value> {
        let auth = params.authentication.ok_or_else(|| {
            Error::not_authenticated("Invalid authentication information (no `strategy` set)")
        })?;
        Ok(json!({"accessToken": auth["accessToken"], "authentication": auth, "user": params.user}))
    }
    fn methods(&self) -> Vec<Method> {
        vec![Method::Create, Method::Remove]
    }
}

struct HeaderAuth;

#[async_trait]
impl ConnectionAuthenticator for HeaderAuth {
    async fn authenticate_header(
        &self,
        _app: &App,
        header: &str,
    ) -> Result<Option<(Value, Value)>> {
        match header {
            "Bearer good" => Ok(Some((
                json!({"strategy": "jwt", "accessToken": "good"}),
                json!({"id": 2}),
            ))),
            h if h.starts_with("Basic ") => Ok(None),
            _ => Err(Error::not_authenticated("invalid token")),
        }
    }
}

fn app() -> App {
    app_with(std::sync::Arc::new(Prejsoned {
        json_calls: Default::default(),
    }))
}

fn app_with(pre: std::sync::Arc<Prejsoned>) -> App {
    let app = App::new();
    app.use_forwarding("pre", pre, ServiceOptions::default());
    app.use_service("todos", Todos::default());
    app.use_service("whoami", WhoAmI);
    app.use_service("authentication", FakeAuth);
    app.use_service_with(
        "limited",
        Todos::default(),
        ServiceOptions::new().methods([Method::Find]),
    );
    app.set_connection_authenticator(HeaderAuth);
    app
}

#[tokio::test]
async fn engine_io_v4_polling_handshake() {
    let router = app().into_router();
    let req = Request::builder()
        .uri("/socket.io/?EIO=4&transport=polling")
        .body(Body::empty())
        .expect("request");
    let res = router.oneshot(req).await.expect("infallible");
    assert_eq!(res.status(), 200);
    let body = axum::body::to_bytes(res.into_body(), 1 << 16)
        .await
        .expect("body");
    let text = String::from_utf8_lossy(&body);
    assert!(text.starts_with('0'), "{text}");
    let open: Value = serde_json::from_str(&text[1..]).expect("open packet");
    assert!(open["sid"].is_string());
    assert_eq!(open["upgrades"], json!(["websocket"]));
    assert!(open["pingInterval"].is_number() && open["pingTimeout"].is_number());
}

fn node_available() -> bool {
    std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Install the client's packages once per lockfile content; returns the directory.
fn install_client() -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/socketio-client");
    let script = std::fs::read(src.join("client.mjs")).expect("client script");
    let dir = npm::install_locked(&src, "socketio-client");
    std::fs::write(dir.join("client.mjs"), script).expect("client script");
    dir
}

async fn run_client(dir: &Path, url: &str) -> HashMap<String, Value> {
    let child = tokio::process::Command::new("node")
        .arg("client.mjs")
        .arg(url)
        .current_dir(dir)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node starts");
    let output = tokio::time::timeout(Duration::from_secs(90), child.wait_with_output())
        .await
        .expect("the client finishes in time")
        .expect("client output");
    let text = String::from_utf8_lossy(&output.stdout);
    let mut steps = HashMap::new();
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        if let Some(step) = v["step"].as_str() {
            steps.insert(step.to_owned(), v["value"].clone());
        }
    }
    assert!(
        !steps.contains_key("fatal"),
        "client failed: {}",
        steps["fatal"]
    );
    assert_eq!(
        steps.get("done"),
        Some(&json!(true)),
        "client output:\n{text}"
    );
    steps
}

fn assert_error(ack: &Value, name: &str, code: u16, message: &str) {
    let arr = ack.as_array().expect("ack args");
    assert_eq!(arr.len(), 1, "an error ack has exactly one argument: {ack}");
    let err = &arr[0];
    assert_eq!(err["name"], name, "{ack}");
    assert_eq!(err["code"], code, "{ack}");
    if !message.is_empty() {
        assert_eq!(err["message"], message, "{ack}");
    }
    let keys: Vec<&String> = err.as_object().expect("object").keys().collect();
    assert!(
        keys.iter().all(
            |k| ["name", "message", "code", "className", "data", "errors"].contains(&k.as_str())
        )
    );
}

fn ok(ack: &Value) -> &Value {
    let arr = ack.as_array().expect("ack args");
    assert_eq!(arr.len(), 2, "a success ack is [null, result]: {ack}");
    assert!(arr[0].is_null(), "{ack}");
    &arr[1]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feathers_socket_protocol_with_the_official_client() {
    if std::env::var_os("PLUME_SKIP_NODE_TESTS").is_some() {
        eprintln!("skipped: PLUME_SKIP_NODE_TESTS is set");
        return;
    }
    assert!(
        node_available(),
        "node is needed (or set PLUME_SKIP_NODE_TESTS=1)"
    );
    let dir = tokio::task::spawn_blocking(install_client)
        .await
        .expect("install");
    let pre = std::sync::Arc::new(Prejsoned {
        json_calls: Default::default(),
    });
    let app = app_with(pre.clone());
    let server = app.listen("127.0.0.1:0").await.expect("listen");
    let s = run_client(&dir, &format!("http://{}", server.local_addr())).await;

    // a result handed over as JSON text reaches the client as that value, on a websocket and
    // on polling, without being decoded on the way; text that is not JSON is a GeneralError
    let expected: Value = serde_json::from_str(PREJSONED).expect("valid");
    assert_eq!(ok(&s["pre_ws"]), &expected);
    assert_eq!(ok(&s["pre_polling"]), &expected);
    assert_error(
        &s["pre_bad"],
        "GeneralError",
        500,
        "a result is not valid JSON: expected value at line 1 column 9",
    );
    assert_eq!(pre.json_calls.load(std::sync::atomic::Ordering::SeqCst), 3);

    // transports
    assert_eq!(
        s["a_upgraded"],
        json!(true),
        "polling upgrades to websocket"
    );
    assert_eq!(s["transports"], json!({"b": "websocket", "c": "polling"}));

    // params of an anonymous call
    let ids = &s["ids"];
    let who = ok(&s["whoami_anon"]);
    assert_eq!(who["provider"], "socketio");
    assert_eq!(who["connection"], ids["a"]);
    assert_eq!(who["query"], json!({"q": 1, "deep": {"x": [1, 2]}}));
    assert_eq!(
        (who["user"].clone(), who["authentication"].clone()),
        (Value::Null, Value::Null)
    );
    assert_eq!(who["hasHeaders"], true);

    // wrong arguments: the contract's exact messages
    assert_error(
        &s["too_many"],
        "BadRequest",
        400,
        "Too many arguments for 'find' method",
    );
    assert_error(
        &s["too_many_get"],
        "BadRequest",
        400,
        "Too many arguments for 'get' method",
    );
    assert_error(&s["unknown"], "NotFound", 404, "Service 'nope' not found");
    assert_error(
        &s["not_allowed"],
        "MethodNotAllowed",
        405,
        "Method 'remove' not allowed on service 'limited'",
    );
    assert_error(
        &s["custom_not_exposed"],
        "MethodNotAllowed",
        405,
        "Method 'stats' not allowed on service 'limited'",
    );
    assert_error(&s["bad_id"], "BadRequest", 400, "");
    assert_error(&s["bad_query"], "BadRequest", 400, "");
    assert_error(&s["no_path"], "NotFound", 404, "");
    // an event without an ack still runs, and the connection is still fine
    assert_eq!(
        ok(&s["after_no_ack"]),
        &json!([{"text": "no ack", "id": 1}])
    );
    assert_error(
        &s["get_missing"],
        "NotFound",
        404,
        "No record found for id '999'",
    );
    assert_eq!(
        ok(&s["custom"]),
        &json!({"data": {"tag": "t"}, "query": {}})
    );
    assert_eq!(ok(&s["get_ok"]), &json!({"text": "no ack", "id": 1}));

    // login stores the authentication on the connection
    assert_error(&s["login_bad"], "NotAuthenticated", 401, "Invalid login");
    assert_eq!(ok(&s["login"])["accessToken"], "tok-1");
    let who = ok(&s["whoami_a"]);
    assert_eq!(who["user"], json!({"id": 1, "email": "a@example.com"}));
    assert_eq!(
        who["authentication"],
        json!({"strategy": "jwt", "accessToken": "tok-1"})
    );

    // handshake authentication
    let who = ok(&s["whoami_d"]);
    assert_eq!(
        (
            who["user"].clone(),
            who["authentication"]["accessToken"].clone()
        ),
        (json!({"id": 2}), json!("good"))
    );
    assert_eq!(s["refused"]["connected"], false);
    assert_eq!(
        s["refused"]["type"],
        Value::Null,
        "refused by the server, not a transport error"
    );
    assert!(
        s["refused"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("invalid token")),
        "{}",
        s["refused"]
    );
    assert_eq!(ok(&s["whoami_f"])["user"], Value::Null, "Basic is ignored");

    // events reach the authenticated connections only, one per record
    let created = ok(&s["create"]).clone();
    let multi = ok(&s["multi"]).as_array().expect("array").clone();
    let mut expected = vec![json!(["todos created", created])];
    expected.extend(multi.iter().map(|t| json!(["todos created", t])));
    let ev = &s["events1"];
    for who in ["a", "c", "d"] {
        assert_eq!(ev[who], Value::Array(expected.clone()), "events of {who}");
    }
    for who in ["b", "f"] {
        assert_eq!(ev[who], json!([]), "anonymous {who} gets no events");
    }

    // logout: no more events, still connected, no more user
    let logout = ok(&s["logout"]);
    assert_eq!(logout["accessToken"], "tok-1");
    assert_eq!(ok(&s["whoami_a2"])["user"], Value::Null);
    let ev = &s["events2"];
    assert_eq!(ev["a_connected"], true);
    assert_eq!(ev["a"], json!([]));
    assert_eq!(ev["c"].as_array().map(Vec::len), Some(1));

    // every connection is gone from the server and from every channel after the disconnects
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !(app.connections().is_empty() && app.channel_names().is_empty()) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "connections {:?}, channels {:?}",
            app.connections(),
            app.channel_names()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::timeout(Duration::from_secs(15), app.shutdown())
        .await
        .expect("shutdown in time");
}
