//! Trace context on events (issue 19, item 2): an event published while a call runs in a trace
//! reaches the subscribers of another node, over a real TCP link on loopback, with that trace
//! (the hop's own span id); one published outside a trace carries none.

use std::time::Duration;

use plume::trace::TraceContext;
use plume_transport::discovery::PeerEvent;
use plume_transport::{Mesh, Request};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(10);

/// Two nodes that know each other (static peers), the second subscribed to `topic` and the
/// first knowing it (it answers a call once it read the subscription).
async fn pair(topic: &str) -> (Mesh, Mesh, plume_transport::Subscription) {
    let env = format!("event-trace-{}", std::process::id());
    let mut meshes = Vec::new();
    let mut senders = Vec::new();
    for _ in 0..2 {
        let (tx, rx) = mpsc::channel(8);
        let mesh = Mesh::builder()
            .environment(env.clone())
            .key("test")
            .peers(rx)
            .start()
            .await
            .expect("mesh starts");
        meshes.push(mesh);
        senders.push(tx);
    }
    for (i, tx) in senders.iter().enumerate() {
        let other = &meshes[1 - i];
        tx.send(PeerEvent::Up(other.peer_info()))
            .await
            .expect("announce");
    }
    let (publisher, subscriber) = (meshes.remove(0), meshes.remove(0));
    publisher.respond("sync", |_req: Request| async move { Ok(Value::Null) });
    let sub = subscriber.subscribe(topic);
    // The publisher answers after it read every frame sent before the call: the subscription.
    timeout(WAIT, subscriber.to("sync").send(&json!(null)))
        .await
        .expect("in time")
        .expect("sync");
    (publisher, subscriber, sub)
}

#[tokio::test]
async fn an_event_published_in_a_traced_call_carries_its_trace() {
    let (publisher, subscriber, mut sub) = pair("ticks").await;
    let ctx =
        TraceContext::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").expect("ok");
    plume::trace::scope(ctx, async { publisher.publish("ticks", json!({"n": 1})) }).await;
    publisher.publish("ticks", json!({"n": 2}));

    let (from, data, trace) = timeout(WAIT, sub.recv_traced())
        .await
        .expect("in time")
        .expect("an event");
    assert_eq!((from, data), (publisher.node_id(), json!({"n": 1})));
    let trace = trace.expect("the event carries the trace");
    assert_eq!(trace.trace_id(), ctx.trace_id());
    assert_ne!(
        trace.span_id(),
        ctx.span_id(),
        "the event's hop has its own span"
    );

    let (_, data, trace) = timeout(WAIT, sub.recv_traced())
        .await
        .expect("in time")
        .expect("an event");
    assert_eq!(data, json!({"n": 2}));
    assert_eq!(trace, None, "published outside a trace");
    drop(sub);
    subscriber.shutdown().await;
    publisher.shutdown().await;
}
