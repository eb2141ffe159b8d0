//! How a NATS call names its caller (docs/protocol.md, "The caller of a request"), on a real
//! `nats-server`, from a plain NATS client writing each form by hand: this version's `from`
//! entry, an earlier version's `Plume-Node` header, neither, and a `from` that is not a node id.

mod common;

use std::time::Duration;

use common::{Backend, unique_env, within};
use plume_tests::servers::{Kind, Server};
use plume_transport::protocol::{RequestMsg, ResponseMsg, decode_payload, encode_payload};
use plume_transport::{Mesh, NodeId, Request};
use serde_json::{Value, json};

async fn nats_mesh(server: &Server, env: &str, key: &str) -> Mesh {
    Mesh::builder()
        .environment(env)
        .key(key)
        .discovery(Backend::new("nats", "PLUME_NATS_URL", &server.url()).config())
        .secret(None::<&str>)
        .start()
        .await
        .expect("mesh on NATS")
}

/// The request a Plume node sends for `whoami` (a map, `name` first).
fn request() -> Vec<u8> {
    encode_payload(&RequestMsg {
        name: "whoami".to_owned(),
        method: None,
        body: json!({"n": 1}),
        timeout_ms: 5_000,
        traceparent: None,
    })
    .to_vec()
}

/// `request()` with `entry` put first in its map (one more entry).
fn with_first_entry(entry: &[u8]) -> Vec<u8> {
    let plain = request();
    let mut out = vec![plain[0] + 1];
    out.extend_from_slice(entry);
    out.extend_from_slice(&plain[1..]);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_providers_read_the_caller_from_the_payload_or_an_older_callers_header() {
    let server = Server::start(Kind::Nats);
    let env = unique_env("nats-caller");
    let a = nats_mesh(&server, &env, "a").await;
    a.respond("whoami", |r: Request| async move {
        Ok(json!(r.from.to_string()))
    });
    // A second node sees the endpoint once its queue group is subscribed (subscribe, then
    // announce).
    let b = nats_mesh(&server, &env, "b").await;
    within("whoami announced", async {
        while b.providers("whoami").is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let client = async_nats::connect(server.url())
        .await
        .expect("plain NATS client");
    let subject = format!("plume.{env}.svc.whoami");
    let ask = |payload: Vec<u8>, header: Option<String>| {
        let (client, subject) = (client.clone(), subject.clone());
        async move {
            let mut req = async_nats::Request::new()
                .payload(payload.into())
                .timeout(Some(Duration::from_secs(10)));
            if let Some(node) = header {
                let mut h = async_nats::HeaderMap::new();
                h.insert("Plume-Node", node.as_str());
                req = req.headers(h);
            }
            let reply = client.send_request(subject, req).await.expect("answered");
            decode_payload::<ResponseMsg>(&reply.payload).expect("a response")
        }
    };
    let caller = NodeId(0x00c0_ffee_0000_0000_0000_0000_1234_5678);

    // This version: the `from` entry.
    let mut entry = b"\xa4from\xc4\x10".to_vec();
    entry.extend_from_slice(&caller.0.to_be_bytes());
    let r = ask(with_first_entry(&entry), None).await;
    assert_eq!(r.ok, Some(json!(caller.to_string())), "{r:?}");

    // An earlier version: the header, the plain request.
    let r = ask(request(), Some(caller.to_string())).await;
    assert_eq!(r.ok, Some(json!(caller.to_string())), "{r:?}");

    // Neither (a plain NATS client): node 0, as before.
    let r = ask(request(), None).await;
    assert_eq!(r.ok, Some(json!(NodeId(0).to_string())), "{r:?}");

    // A `from` that is not a 16-byte node id: refused with the reason, the node unharmed.
    for bad in [&b"\xa4from\xa3abc"[..], b"\xa4from\xc4\x02\x01\x02"] {
        let r = ask(with_first_entry(bad), None).await;
        let err: Value = r.err.expect("refused");
        assert_eq!(err["name"], "BadRequest", "{err}");
        assert!(
            err["message"]
                .as_str()
                .is_some_and(|m| m.contains("16-byte node id")),
            "{err}"
        );
    }

    // And a Plume caller names itself through the mesh.
    let v = b
        .to("whoami")
        .send(&json!({"n": 2}))
        .await
        .expect("mesh call");
    assert_eq!(v, json!(b.node_id().to_string()));
    a.shutdown().await;
    b.shutdown().await;
}
