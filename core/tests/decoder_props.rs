//! Property tests of the decoders of outside input that had none: REST request bodies (through
//! the real router) and socket.io call arguments (through a real socket.io connection over
//! polling). Inputs reach the limits: bodies up to past the body limit, JSON nested past
//! serde_json's depth limit, long lists and long strings. Every input gets an answer, and every
//! failure is a 4xx Feathers error: never a panic, a 500 or a missing acknowledgement.

#[path = "support/polling.rs"]
mod polling;

use axum::body::Body;
use http::{Request, header};
use plume::server::ServerOptions;
use plume::{App, MemoryService};
use polling::{Packet, PollingSocket};
use proptest::prelude::*;
use serde_json::{Value, json};
use tower::ServiceExt;

/// The body limit of the REST tests: small, so bodies past it are cheap to make.
const BODY_LIMIT: usize = 16 * 1024;

fn app() -> App {
    let app = App::new();
    app.use_service("things", MemoryService::<Value>::new());
    app.set_server_options(ServerOptions {
        body_limit: BODY_LIMIT,
        ..ServerOptions::default()
    });
    app
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// A JSON value: scalars, short lists and objects, a few levels deep.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,16}".prop_map(Value::from),
        prop::sample::select(vec!["$in", "$or", "$limit", "id", "__proto__"]).prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z$_]{1,6}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// `depth` nested arrays (or objects) around a value.
fn nested(depth: usize, objects: bool) -> String {
    let (open, close) = if objects {
        ("{\"a\":", "}")
    } else {
        ("[", "]")
    };
    format!("{}1{}", open.repeat(depth), close.repeat(depth))
}

/// A REST body: JSON of any shape, nested past serde_json's limit of 128, a long list, a long
/// string (past the body limit sometimes), or arbitrary bytes.
fn rest_body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => any_json().prop_map(|v| v.to_string().into_bytes()),
        2 => (1usize..2048, any::<bool>()).prop_map(|(d, o)| nested(d, o).into_bytes()),
        1 => (0usize..4000).prop_map(|n| serde_json::to_vec(&vec![0; n]).unwrap_or_default()),
        1 => (0usize..2 * BODY_LIMIT)
            .prop_map(|n| json!({"text": "x".repeat(n)}).to_string().into_bytes()),
        2 => prop::collection::vec(any::<u8>(), 0..1024),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn rest_bodies_always_get_a_201_or_a_feathers_4xx(
        body in rest_body(),
        method in prop::sample::select(vec!["POST", "PATCH", "PUT"]),
        content_type in prop::sample::select(vec!["application/json", "text/plain", "application/merge-patch+json"]),
    ) {
        let (status, answer) = runtime().block_on(async {
            let uri = if method == "POST" { "/things" } else { "/things/1" };
            let req = Request::builder()
                .method(method)
                .uri(uri)
                .header(header::CONTENT_TYPE, content_type)
                .body(Body::from(body.clone()))
                .expect("request");
            let res = app().into_router().oneshot(req).await.expect("infallible");
            let status = res.status().as_u16();
            let bytes = axum::body::to_bytes(res.into_body(), 1 << 20).await.expect("body");
            (status, serde_json::from_slice::<Value>(&bytes).unwrap_or(Value::Null))
        });
        prop_assert!(status < 500, "{status}: {answer}");
        if status >= 400 {
            prop_assert_eq!(answer["code"].as_u64(), Some(u64::from(status)), "{}", answer);
            prop_assert!(answer["name"].is_string(), "{}", answer);
        }
        if status == 201 {
            prop_assert!(answer["id"].is_number(), "{}", answer);
        }
    }
}

/// Socket.io call arguments: any values, lists long enough to pass the query limits, JSON
/// nested close to serde_json's limit (the socket.io packet decoder's), and long strings.
fn socket_args() -> impl Strategy<Value = Vec<Value>> {
    let arg = prop_oneof![
        4 => any_json(),
        1 => (1usize..100).prop_map(|d| serde_json::from_str(&nested(d, d % 2 == 0)).unwrap_or(Value::Null)),
        1 => (0usize..3000).prop_map(|n| json!({"id": {"$in": vec![1; n]}})),
        1 => (0usize..200_000).prop_map(|n| Value::String("y".repeat(n))),
    ];
    let path = prop_oneof![Just(json!("things")), Just(json!("nope")), any_json(),];
    (path, prop::collection::vec(arg, 0..5)).prop_map(|(path, mut rest)| {
        rest.insert(0, path);
        rest
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn socketio_calls_always_get_an_acknowledgement_with_a_result_or_a_feathers_4xx(
        calls in prop::collection::vec(
            (prop::sample::select(vec!["find", "get", "create", "update", "patch", "remove", "custom"]), socket_args()),
            1..4,
        ),
    ) {
        let acks = runtime().block_on(async {
            let app = app();
            let (mut socket, _) = PollingSocket::open(&app, None).await;
            let mut acks = Vec::new();
            for (event, args) in &calls {
                let (ack, before) = socket.call(event, args).await;
                assert!(before.iter().all(|p| !matches!(p, Packet::ConnectError(_))), "{before:?}");
                acks.push(ack);
            }
            acks
        });
        for ack in acks {
            match ack.as_slice() {
                [Value::Null, _] => {}
                [error] => {
                    let code = error["code"].as_u64().unwrap_or(0);
                    prop_assert!((400..500).contains(&code), "{}", error);
                    prop_assert!(error["name"].is_string(), "{}", error);
                }
                other => prop_assert!(false, "not an acknowledgement: {:?}", other),
            }
        }
    }
}
