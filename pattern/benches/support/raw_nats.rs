//! The floor of the NATS benches and counts: a plain async-nats request to a subscriber that
//! echoes it, no Hemera envelope and no pattern node. Shared by `benches/pattern.rs` and
//! `examples/nats_count.rs`.

use std::time::{Duration, Instant};

use futures::StreamExt;

/// A plain responder on its own connection (echoes each request), and a caller connection
/// that has seen it answer within `wait`.
pub(crate) async fn raw_nats_pair(url: &str, wait: Duration) -> async_nats::Client {
    let responder = async_nats::connect(url).await.expect("NATS");
    let mut sub = responder.subscribe("raw.echo").await.expect("subscribe");
    responder.flush().await.expect("flush");
    tokio::spawn(async move {
        while let Some(m) = sub.next().await {
            if let Some(reply) = m.reply {
                let _ = responder.publish(reply, m.payload).await;
            }
        }
    });
    let caller = async_nats::connect(url).await.expect("NATS");
    // The subscription is in place once a request finds it.
    let deadline = Instant::now() + wait;
    while caller.request("raw.echo", "".into()).await.is_err() {
        assert!(
            Instant::now() < deadline,
            "the raw responder never answered"
        );
    }
    caller
}
