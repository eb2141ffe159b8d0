//! Protected fields (the password hash, and whatever the entity service's `protect` hook names)
//! never leave the server: not in `params.user`, not in a service result that returns it, not in
//! the events of internal calls sent to sockets.

#[path = "support/polling.rs"]
mod polling;
#[path = "support/users.rs"]
mod users;

use axum::body::Body;
use http::{Request, StatusCode, header};
use plume::auth::{AuthConfig, authenticate};
use plume::{App, Method, Params, Result, Service, SharedValue, async_trait};
use polling::{Packet, PollingSocket};
use serde_json::{Value, json};
use tower::ServiceExt;
use users::{EMAIL, PASSWORD, login, users_app};

/// Answers with the `params.user` it was called with.
struct WhoAmI;

#[async_trait]
impl Service for WhoAmI {
    async fn find(&self, params: Params) -> Result<Value> {
        Ok(params
            .user
            .map(SharedValue::into_value)
            .unwrap_or(Value::Null))
    }
    fn methods(&self) -> Vec<Method> {
        vec![Method::Find]
    }
}

async fn app() -> App {
    let config = AuthConfig::new("protected-fields-secret");
    let app = users_app(config, &["resetToken"], json!({"resetToken": "r-123"})).await;
    app.use_service("whoami", WhoAmI)
        .hooks()
        .before(authenticate(["jwt"]));
    app
}

/// No key named `password` or `resetToken`, and no argon2 hash, anywhere in `value`.
fn assert_clean(what: &str, value: &Value) {
    let text = value.to_string();
    assert!(
        !text.contains("password") && !text.contains("resetToken") && !text.contains("$argon2"),
        "{what} leaks a protected field: {text}"
    );
}

async fn send(app: &App, method: &str, uri: &str, auth: Option<&str>, body: Value) -> Value {
    let mut req = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::CONTENT_TYPE, "application/json");
    if let Some(auth) = auth {
        req = req.header(header::AUTHORIZATION, format!("Bearer {auth}"));
    }
    let req = req.body(Body::from(body.to_string())).expect("request");
    let res = app.into_router().oneshot(req).await.expect("answer");
    assert!(res.status().is_success() || res.status() == StatusCode::CREATED);
    let bytes = axum::body::to_bytes(res.into_body(), 1 << 20)
        .await
        .expect("body");
    serde_json::from_slice(&bytes).expect("json")
}

#[tokio::test]
async fn a_service_returning_params_user_returns_no_protected_field() {
    let app = app().await;
    let login = send(
        &app,
        "POST",
        "/authentication",
        None,
        login(EMAIL, PASSWORD),
    )
    .await;
    assert_eq!(login["user"], json!({"id": 1, "email": "a@example.com"}));
    let token = login["accessToken"].as_str().expect("token").to_owned();
    // The user the authenticate hook put into params (fresh, then from the entity cache).
    for _ in 0..2 {
        let me = send(&app, "GET", "/whoami", Some(&token), Value::Null).await;
        assert_eq!(me["email"], "a@example.com", "{me}");
        assert_clean("params.user over REST", &me);
    }
    // The jwt strategy's login result too.
    let again = send(
        &app,
        "POST",
        "/authentication",
        None,
        json!({"strategy": "jwt", "accessToken": token}),
    )
    .await;
    assert_eq!(again["user"]["email"], "a@example.com");
    assert_clean("the jwt login result", &again);
}

#[tokio::test]
async fn events_of_internal_calls_reach_sockets_without_protected_fields() {
    let app = app().await;
    let (mut socket, connected) = PollingSocket::open(&app, None).await;
    assert!(
        matches!(connected, Packet::Other(ref p) if p.starts_with("40")),
        "{connected:?}"
    );
    let ack = socket.login(EMAIL, PASSWORD).await;
    assert_eq!(ack[0], Value::Null, "login: {ack:?}");
    assert_clean("the socket login result", &ack[1]);
    // An internal patch (no provider): the stored record keeps its hash ...
    let users = app.service("users").expect("users");
    let patched = users
        .patch(Some(1.into()), json!({"name": "Ann"}), Params::new())
        .await
        .expect("internal patch");
    assert!(
        patched["password"]
            .as_str()
            .is_some_and(|h| h.starts_with("$argon2"))
    );
    // ... but its event, delivered to the logged-in socket, does not. The acknowledgement of a
    // later call comes after every event sent before it on this connection.
    let (ack, before) = socket.call("find", &[json!("whoami"), json!({})]).await;
    assert_clean("params.user over socket.io", &ack[1]);
    assert_eq!(ack[1]["email"], "a@example.com");
    let events: Vec<&Vec<Value>> = before
        .iter()
        .filter_map(|p| match p {
            Packet::Event(name, args) if name == "users patched" => Some(args),
            _ => None,
        })
        .collect();
    assert_eq!(events.len(), 1, "one users patched event: {before:?}");
    assert_eq!(events[0][0]["name"], "Ann");
    assert_clean("the users patched event", &events[0][0]);
}
