//! Unit tests of a lone node: waiting, deadlines, draining, decoding.

use std::time::Duration;

use serde_json::Value;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::*;
use crate::discovery::PeerEvent;

async fn lone_node() -> (Mesh, mpsc::Sender<PeerEvent>) {
    let (tx, rx) = mpsc::channel(4);
    let mesh = Mesh::builder()
        .environment("unit")
        .peers(rx)
        .start()
        .await
        .expect("starts");
    (mesh, tx)
}

#[tokio::test(start_paused = true)]
async fn no_provider_waits_until_the_deadline_then_unavailable() {
    let (mesh, _peers) = lone_node().await;
    let started = Instant::now();
    let opts = CallOptions {
        timeout: Some(Duration::from_secs(3)),
        idempotent: false,
    };
    let err = mesh
        .to("nobody")
        .options(opts)
        .send(&Value::Null)
        .await
        .expect_err("no provider");
    assert_eq!(err.kind(), plume::ErrorKind::Unavailable);
    assert_eq!(started.elapsed(), Duration::from_secs(3));
}

#[tokio::test(start_paused = true)]
async fn a_call_told_not_to_wait_is_unavailable_at_once() {
    let (mesh, _peers) = lone_node().await;
    let started = Instant::now();
    let err = mesh
        .to("nobody")
        .timeout(Duration::from_secs(3))
        .wait_for_provider(false)
        .send(&Value::Null)
        .await
        .expect_err("no provider");
    assert_eq!(err.kind(), plume::ErrorKind::Unavailable);
    assert_eq!(started.elapsed(), Duration::ZERO);
    // With a provider it is an ordinary call.
    mesh.respond("nobody", |_r: Request| async move { Ok(Value::from(7)) });
    let got = mesh
        .to("nobody")
        .wait_for_provider(false)
        .send(&Value::Null)
        .await
        .expect("answered");
    assert_eq!(got, Value::from(7));
}

#[tokio::test(start_paused = true)]
async fn a_waiting_call_takes_a_provider_that_appears_before_the_deadline() {
    let (mesh, _peers) = lone_node().await;
    let opts = CallOptions {
        timeout: Some(Duration::from_secs(3)),
        idempotent: false,
    };
    let call = tokio::spawn({
        let mesh = mesh.clone();
        async move { mesh.to("later").options(opts).send(&Value::Null).await }
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    mesh.respond("later", |_r: Request| async move { Ok(Value::from(5)) });
    assert_eq!(
        call.await.expect("joined").expect("answered"),
        Value::from(5)
    );
}

#[tokio::test(start_paused = true)]
async fn a_local_handler_past_its_deadline_gives_timeout() {
    let (mesh, _peers) = lone_node().await;
    mesh.respond("slow", |_r: Request| async move {
        tokio::time::sleep(Duration::from_secs(60)).await;
        Ok(Value::Null)
    });
    let started = Instant::now();
    let opts = CallOptions {
        timeout: Some(Duration::from_secs(2)),
        idempotent: false,
    };
    let err = mesh
        .to("slow")
        .options(opts)
        .send(&Value::Null)
        .await
        .expect_err("late");
    assert_eq!(err.kind(), plume::ErrorKind::Timeout);
    assert_eq!(started.elapsed(), Duration::from_secs(2));
}

#[tokio::test(start_paused = true)]
async fn shutdown_refuses_new_calls_and_drains_in_flight_ones() {
    let (mesh, _peers) = lone_node().await;
    mesh.respond("job", |_r: Request| async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        Ok(Value::from("done"))
    });
    let call = tokio::spawn({
        let mesh = mesh.clone();
        async move { mesh.to("job").send(&Value::Null).await }
    });
    tokio::task::yield_now().await;
    let started = Instant::now();
    mesh.shutdown().await;
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        call.await.expect("joined").expect("finished"),
        Value::from("done")
    );
    let err = mesh
        .to("job")
        .send(&Value::Null)
        .await
        .expect_err("refused");
    assert_eq!(err.kind(), plume::ErrorKind::Unavailable);
}

/// A request payload with a body of raw MessagePack bytes.
fn request_payload(name: &str, body: &[u8]) -> bytes::Bytes {
    let mut payload = vec![0x84];
    let name = [
        &[0xa0 | u8::try_from(name.len()).expect("short name")][..],
        name.as_bytes(),
    ]
    .concat();
    for (key, value) in [
        ("name", &name[..]),
        ("method", &[0xc0][..]),
        ("body", body),
        ("timeout_ms", &[5][..]),
    ] {
        payload.push(0xa0 | u8::try_from(key.len()).expect("short key"));
        payload.extend_from_slice(key.as_bytes());
        payload.extend_from_slice(value);
    }
    bytes::Bytes::from(payload)
}

/// A plain handler's body is decoded with the head, a raw handler's is left to it; a body
/// that is MessagePack but not JSON (a binary string) still has a head, so the link reader
/// serves it (the link stays up), and the call answers BadRequest.
#[tokio::test]
async fn requests_decode_for_the_kind_of_their_handler() {
    let (mesh, _peers) = lone_node().await;
    mesh.respond("plain", |r: Request| async move { Ok(r.body) });
    mesh.provide_raw("raw", Value::Null, |r: RawRequest| async move {
        assert!(r.body.is_msgpack(), "{:?}", r.body);
        r.body.decode::<Value>()
    });
    let inner = &mesh.inner;
    let seven = [7u8];
    let binary = [0xc4, 2, 1, 2];
    for name in ["plain", "raw"] {
        let (req, handler) = inner
            .decode_request(request_payload(name, &seven))
            .expect("a request");
        assert_eq!(
            (req.name.as_str(), req.method.as_deref(), req.timeout_ms),
            (name, None, 5)
        );
        assert_eq!(!req.body.is_msgpack(), name == "plain");
        let handler = handler.expect("provided");
        let call = |body| RawRequest {
            name: name.to_owned(),
            method: None,
            body,
            deadline: std::time::Instant::now(),
            from: NodeId(1),
        };
        assert_eq!(
            handler.call(call(req.body)).await,
            Ok(crate::Answer::Value(Value::from(7)))
        );

        let (req, _) = inner
            .decode_request(request_payload(name, &binary))
            .expect("the head decodes");
        assert!(req.body.is_msgpack());
        let err = handler.call(call(req.body)).await.expect_err("not JSON");
        assert_eq!(err.kind(), plume::ErrorKind::BadRequest);
    }
    let (req, handler) = inner
        .decode_request(request_payload("nobody", &seven))
        .expect("a request");
    assert_eq!(req.name, "nobody");
    assert!(handler.is_none());
    assert!(
        inner
            .decode_request(bytes::Bytes::from_static(b"\x84junk"))
            .is_err()
    );
}

/// A caller that takes its result as JSON text (`json: true`) gets a raw handler's value in
/// the JSON form: the provider's JSON, byte for byte serde_json's, which the caller passes on.
/// Without the hint, or from a plain handler, the answer stays MessagePack; an encoded answer
/// or an error is never turned into JSON. Either form reads as the same text.
#[tokio::test]
async fn a_json_caller_gets_the_json_form_of_a_value() {
    use crate::engine::Served;
    use crate::mesh::reply::ReplyForm;
    use plume::RawJson;
    let (mesh, _peers) = lone_node().await;
    let todo =
        serde_json::json!({"id": "a-1", "text": "say \"hi\"\n", "done": false, "n": [1, -2, 0.5]});
    let answer = todo.clone();
    mesh.provide_raw("raw", Value::Null, move |_: RawRequest| {
        let answer = answer.clone();
        async move { Ok(answer) }
    });
    mesh.respond("plain", |r: Request| async move { Ok(r.body) });
    mesh.provide_raw("encoded", Value::Null, |_: RawRequest| async move {
        crate::Encoded::new(&7).map(crate::Answer::Encoded)
    });
    mesh.provide_raw("failing", Value::Null, |_: RawRequest| async move {
        Err::<Value, _>(plume::Error::bad_request("no"))
    });
    let inner = &mesh.inner;
    let deadline = Instant::now() + Duration::from_secs(5);
    let serve = |name: &str, json: bool| {
        let payload = super::call::request_payload(name, None, &todo, deadline, None, json);
        match inner.serve_payload(payload, NodeId(1), &mut |_, _| Ok(())) {
            Ok(Served::Ready(result)) => result,
            _ => panic!("{name}: not answered at once"),
        }
    };
    let text = serde_json::to_vec(&todo).expect("encodes");

    let payload = crate::engine::response(serve("raw", true));
    let mut form = vec![0x81, 0xa4, b'j', b's', b'o', b'n', 0xdb];
    form.extend_from_slice(&u32::try_from(text.len()).expect("short").to_be_bytes());
    form.extend_from_slice(&text);
    assert_eq!(payload[..], form[..], "the JSON form");
    let raw = RawJson::from_payload(&payload).expect("reads");
    assert_eq!(raw.as_bytes(), &text[..]);

    for (name, json) in [("raw", false), ("plain", true), ("plain", false)] {
        let payload = crate::engine::response(serve(name, json));
        assert_eq!(payload[0], 0x82, "{name} {json}: MessagePack {{ok, err}}");
        let raw = RawJson::from_payload(&payload).expect("reads");
        assert_eq!(raw.as_bytes(), &text[..], "{name} {json}");
    }
    let payload = crate::engine::response(serve("encoded", true));
    assert_eq!(
        RawJson::from_payload(&payload).expect("reads").as_bytes(),
        b"7"
    );
    let payload = crate::engine::response(serve("failing", true));
    let e = RawJson::from_payload(&payload).expect_err("the provider's error");
    assert_eq!(
        (e.kind(), e.message()),
        (plume::ErrorKind::BadRequest, "no")
    );
}

/// A result whose JSON text is longer than `JSON_FORM_MAX` (or a quarter of the frame limit)
/// is answered as MessagePack: JSON can be the larger, and what fits an engine's limit as
/// MessagePack must still fit it. Up to the bound, the JSON form.
#[tokio::test]
async fn a_long_json_text_is_answered_as_msgpack() {
    use crate::engine::Served;
    use crate::mesh::reply::ReplyForm;
    use plume::RawJson;
    let (mesh, _peers) = lone_node().await;
    mesh.provide_raw("echo", Value::Null, |r: RawRequest| async move {
        r.body.decode::<Value>()
    });
    let inner = &mesh.inner;
    let deadline = Instant::now() + Duration::from_secs(5);
    let bound = super::serve::JSON_FORM_MAX;
    // A string of n bytes is n + 2 bytes of JSON text.
    for (n, json_form) in [(bound - 2, true), (bound - 1, false)] {
        let body = Value::String("x".repeat(n));
        let payload = super::call::request_payload("echo", None, &body, deadline, None, true);
        let Ok(Served::Ready(result)) = inner.serve_payload(payload, NodeId(1), &mut |_, _| Ok(()))
        else {
            panic!("not answered at once");
        };
        let payload = crate::engine::response(result);
        assert_eq!(
            payload[0] == 0x81,
            json_form,
            "{n}: the JSON form or MessagePack"
        );
        let raw = RawJson::from_payload(&payload).expect("reads");
        assert_eq!(
            raw.as_bytes(),
            &serde_json::to_vec(&body).expect("encodes")[..]
        );
    }
}

/// Wait (a bounded number of scheduler turns) until nothing holds the node any more.
async fn released(weak: std::sync::Weak<Inner>) -> bool {
    for _ in 0..1000 {
        if weak.strong_count() == 0 {
            return true;
        }
        tokio::task::yield_now().await;
    }
    false
}

#[tokio::test(start_paused = true)]
async fn a_stopped_node_is_released_by_its_engine() {
    // TCP engine.
    let (mesh, _peers) = lone_node().await;
    mesh.respond("x", |_r: Request| async move { Ok(Value::Null) });
    let weak = Arc::downgrade(&mesh.inner);
    mesh.shutdown().await;
    drop(mesh);
    assert!(released(weak).await, "the TCP engine keeps the node alive");

    // In-process engine, with a peer that stays.
    let net = crate::memory::Network::new();
    let other = Mesh::builder().memory(&net).start().await.expect("starts");
    let mesh = Mesh::builder().memory(&net).start().await.expect("starts");
    mesh.respond("x", |_r: Request| async move { Ok(Value::Null) });
    let weak = Arc::downgrade(&mesh.inner);
    mesh.shutdown().await;
    drop(mesh);
    assert!(
        released(weak).await,
        "the in-process engine keeps the node alive"
    );
    other.shutdown().await;
}

/// A provider whose link the test ends without telling the mesh (as a TCP link that closed
/// while its removal is not processed yet).
struct DeadLink {
    node: crate::discovery::NodeId,
    live: std::sync::atomic::AtomicBool,
}

impl crate::engine::Remote for DeadLink {
    fn node(&self) -> crate::discovery::NodeId {
        self.node
    }
    fn is_live(&self) -> bool {
        self.live.load(std::sync::atomic::Ordering::Acquire)
    }
    fn pending(&self) -> usize {
        0
    }
    fn call<'a>(
        &'a self,
        _call: crate::engine::Call<'a>,
    ) -> futures::future::BoxFuture<'a, Result<bytes::Bytes, crate::engine::CallError>> {
        Box::pin(async { Err(crate::engine::CallError::NotSent) })
    }
    fn ping(
        &self,
        _deadline: Instant,
    ) -> futures::future::BoxFuture<'_, Result<Duration, plume::Error>> {
        Box::pin(async { Err(plume::Error::unavailable("no link")) })
    }
}

#[tokio::test(start_paused = true)]
async fn a_call_fails_at_once_when_every_listed_provider_has_lost_its_link() {
    use crate::engine::Sink;
    let (mesh, _peers) = lone_node().await;
    let link = Arc::new(DeadLink {
        node: crate::discovery::NodeId::random(),
        live: std::sync::atomic::AtomicBool::new(true),
    });
    let via: Arc<dyn crate::engine::Remote> = link.clone();
    let entry = crate::protocol::Entry {
        name: "todos".into(),
        descriptor: Value::Null,
    };
    mesh.inner.provider_added(&via, "replica", vec![entry]);
    assert_eq!(mesh.providers("todos").len(), 1);
    // The link dies; its route is still in the table (the removal comes later).
    link.live.store(false, std::sync::atomic::Ordering::Release);
    let started = Instant::now();
    let opts = CallOptions {
        timeout: Some(Duration::from_secs(10)),
        idempotent: true,
    };
    let err = mesh
        .to("todos")
        .options(opts)
        .send(&Value::Null)
        .await
        .expect_err("no live provider");
    assert_eq!(err.kind(), plume::ErrorKind::Unavailable);
    assert_eq!(started.elapsed(), Duration::ZERO, "{err}");
}

/// Without the `nats` feature, a mesh on NATS does not start: the error names the feature.
#[cfg(not(feature = "nats"))]
#[tokio::test]
async fn nats_without_its_feature_is_an_error_naming_it() {
    let discovery = crate::discovery::DiscoveryConfig {
        mode: crate::discovery::DiscoveryMode::Nats {
            url: "nats://127.0.0.1:1".into(),
        },
        ..Default::default()
    };
    let err = Mesh::builder()
        .discovery(discovery)
        .start()
        .await
        .expect_err("no NATS engine in this build");
    let source = std::error::Error::source(&err).map(ToString::to_string);
    assert!(
        source
            .as_deref()
            .is_some_and(|s| s.contains("`nats` feature of plume-transport")),
        "{err}: {source:?}"
    );
}

#[tokio::test]
async fn a_watcher_that_falls_behind_resyncs_and_misses_nothing() {
    let (mesh, _peers) = lone_node().await;
    mesh.provide("early", Value::Null, |_req: Request| async {
        Ok(Value::Null)
    });
    let mut watch = mesh.watch();
    // More changes than the watcher's buffer holds, while it reads nothing.
    let count = WATCH_CAPACITY + 500;
    for i in 0..count {
        mesh.provide(&format!("e{i}"), Value::Null, |_req: Request| async {
            Ok(Value::Null)
        });
    }
    mesh.withdraw("early");
    for i in 0..10 {
        mesh.withdraw(&format!("e{i}"));
    }
    // What the events say the table holds must become what it holds.
    let want: std::collections::BTreeSet<String> = (10..count).map(|i| format!("e{i}")).collect();
    let mut have = std::collections::BTreeSet::new();
    while have != want {
        let ev = tokio::time::timeout(Duration::from_secs(5), watch.recv())
            .await
            .unwrap_or_else(|_| panic!("stuck with {} of {} endpoints", have.len(), want.len()))
            .expect("the node is alive");
        match ev {
            TableEvent::Added { name, .. } => {
                have.insert(name);
            }
            TableEvent::Removed { name, .. } => {
                have.remove(&name);
            }
        }
    }
    mesh.shutdown().await;
}

#[tokio::test]
async fn a_full_subscription_loses_the_newest_events_and_continues() {
    let (mesh, _peers) = lone_node().await;
    let mut sub = mesh.subscribe("t");
    let queue = 4096;
    for i in 0..queue + 10 {
        mesh.publish("t", Value::from(i));
    }
    for i in 0..queue {
        assert_eq!(sub.recv().await, Some(Value::from(i)));
    }
    // The ten that found the queue full are gone; the next one arrives.
    mesh.publish("t", Value::from(-1));
    assert_eq!(sub.recv().await, Some(Value::from(-1)));
    drop(sub);
    mesh.shutdown().await;
}
