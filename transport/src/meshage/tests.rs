//! meshage's HTTP API over in-process nodes, under paused time: routes, replies and errors.

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request as HttpRequest, StatusCode};
use serde_json::{Value, json};
use tower::ServiceExt;

use super::MeshageApi;
use crate::memory::Network;
use crate::{Mesh, Request};

async fn node(net: &Network, key: &str) -> Mesh {
    Mesh::builder()
        .environment("unit")
        .key(key)
        .memory(net)
        .start()
        .await
        .expect("an in-process node starts")
}

/// `POST path` with `body` through `api`: the status and the JSON answer.
async fn post(api: &MeshageApi, path: &str, body: &str) -> (StatusCode, Value) {
    let request = HttpRequest::post(path)
        .header("content-type", "application/json")
        .body(Body::from(body.to_owned()))
        .expect("a request");
    let response = api
        .clone()
        .router()
        .oneshot(request)
        .await
        .expect("infallible");
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .expect("a body");
    (status, serde_json::from_slice(&bytes).expect("JSON"))
}

/// Two nodes `a` and `b` providing `echo`, seen by each other; the API of `a`.
async fn pair(net: &Network) -> (MeshageApi, Mesh, Mesh) {
    let (a, b) = (node(net, "a").await, node(net, "b").await);
    for m in [&a, &b] {
        let key = m.key().to_owned();
        m.respond("echo", move |r: Request| {
            let key = key.clone();
            async move {
                match r.body.get("fail") {
                    Some(_) if key == "b" => Err(plume::Error::conflict("b refuses")),
                    _ => Ok(json!({ "echoed": r.body, "node": key })),
                }
            }
        });
    }
    let mut watch = a.watch();
    while a.providers("echo").len() != 2 {
        tokio::time::timeout(Duration::from_secs(5), watch.recv())
            .await
            .expect("b's provider in time");
    }
    let api = MeshageApi::new(a.clone())
        .stream("echo")
        .stream("declared")
        .timeout(Duration::from_secs(2));
    (api, a, b)
}

#[tokio::test(start_paused = true)]
async fn a_send_answers_the_owners_reply() {
    let net = Network::new();
    let (api, a, b) = pair(&net).await;
    for k in 0..20 {
        let key = format!("k{k}");
        let owner = a.owner("echo", &key).expect("an owner");
        let name = if owner == a.node_id() { "a" } else { "b" };
        let (status, reply) = post(&api, &format!("/api/echo/{key}"), r#"{"n": 1}"#).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(reply, json!({ "echoed": {"n": 1}, "node": name }));
    }
    // An empty body is the message null.
    let (status, reply) = post(&api, "/api/echo/k0", "").await;
    assert_eq!((status, &reply["echoed"]), (StatusCode::OK, &Value::Null));
    drop(b);
}

#[tokio::test(start_paused = true)]
async fn a_broadcast_answers_one_reply_per_provider_and_errors_as_feathers_objects() {
    let net = Network::new();
    let (api, _a, _b) = pair(&net).await;
    let (status, replies) = post(&api, "/api/broadcast/echo/any", r#""hi""#).await;
    assert_eq!(status, StatusCode::OK);
    let mut nodes: Vec<&str> = replies
        .as_array()
        .expect("an array")
        .iter()
        .map(|r| r["node"].as_str().expect("a node"))
        .collect();
    nodes.sort_unstable();
    assert_eq!(nodes, ["a", "b"]);
    let (status, replies) = post(&api, "/api/broadcast/echo/any", r#"{"fail": true}"#).await;
    assert_eq!(status, StatusCode::OK);
    let list = replies.as_array().expect("an array");
    assert_eq!(list.len(), 2);
    assert!(list.iter().any(|r| r["node"] == json!("a")));
    let err = list
        .iter()
        .find(|r| r.get("code").is_some())
        .expect("b's error");
    assert_eq!(
        (&err["name"], &err["code"], &err["message"]),
        (&json!("Conflict"), &json!(409), &json!("b refuses"))
    );
}

#[tokio::test(start_paused = true)]
async fn errors_are_feathers_errors() {
    let net = Network::new();
    let (api, a, _b) = pair(&net).await;
    let cases = [
        ("/api/nowhere/k", "{}", 404, "NotFound"),
        ("/api/broadcast/nowhere/k", "{}", 404, "NotFound"),
        ("/api/declared/k", "{}", 503, "Unavailable"),
        ("/api/broadcast/declared/k", "{}", 503, "Unavailable"),
        ("/api/echo/k", "{not json", 400, "BadRequest"),
        ("/api/broadcast/echo/k", "[1,", 400, "BadRequest"),
    ];
    for (path, body, code, name) in cases {
        let (status, err) = post(&api, path, body).await;
        assert_eq!(status.as_u16(), code, "{path}: {err}");
        assert_eq!((&err["name"], &err["code"]), (&json!(name), &json!(code)));
    }
    // A handler past the deadline: 408.
    a.respond("slow", |_r: Request| async move {
        tokio::time::sleep(Duration::from_secs(60)).await;
        Ok(Value::Null)
    });
    let started = tokio::time::Instant::now();
    let (status, err) = post(&api, "/api/slow/k", "{}").await;
    assert_eq!((status.as_u16(), &err["name"]), (408, &json!("Timeout")));
    assert_eq!(started.elapsed(), Duration::from_secs(2));
}
