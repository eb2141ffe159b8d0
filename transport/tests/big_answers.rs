//! Big answers over a real loopback link (issue 22, the 1 MiB point of the payload curve): a
//! provider's answer of a mebibyte and more, plain text and text full of escapes, crosses the
//! link (by reference into the write on a plain link, sealed on an encrypted one) among small
//! answers, and arrives as exactly the JSON text `serde_json` writes for it, and as the value.

use std::time::Duration;

use futures::future::join_all;
use plume_transport::discovery::PeerEvent;
use plume_transport::{Mesh, Request};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::time::{Instant, timeout};

/// Generous: sealing megabytes in a debug build, on a loaded machine, is slow.
const WAIT: Duration = Duration::from_secs(180);

/// The answer to body `n`: small for even `n`, about a mebibyte or more for odd ones.
fn answer(n: u64) -> Value {
    if n.is_multiple_of(2) {
        return json!({"n": n, "small": true});
    }
    let plain = "x".repeat(1_048_000 + n as usize);
    let escapes: String = (0..300_000u64)
        .map(|i| ['a', '"', '\\', '\n', '\u{1}', 'é', '\u{1f}', '😀', '\u{7f}'][(i % 9) as usize])
        .collect();
    json!({"id": format!("todo-{n}"), "text": plain, "notes": [escapes, n], "done": false})
}

async fn pair(name: &str, secret: Option<&str>) -> (Mesh, Mesh, [mpsc::Sender<PeerEvent>; 2]) {
    let env = format!("big-{name}-{}", std::process::id());
    let (ta, ra) = mpsc::channel(8);
    let (tb, rb) = mpsc::channel(8);
    let start = |rx| {
        Mesh::builder()
            .environment(&env)
            .key("k")
            .secret(secret)
            .timeout(WAIT)
            .peers(rx)
            .start()
    };
    let a = start(ra).await.expect("a starts");
    let b = start(rb).await.expect("b starts");
    ta.send(PeerEvent::Up(b.peer_info()))
        .await
        .expect("announce");
    tb.send(PeerEvent::Up(a.peer_info()))
        .await
        .expect("announce");
    (a, b, [ta, tb])
}

/// Wait (bounded) until `mesh` sees a provider of `name`, driven by table events.
async fn wait_provider(mesh: &Mesh, name: &str) {
    let mut watch = mesh.watch();
    let deadline = Instant::now() + WAIT;
    while mesh.providers(name).is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        match timeout(left, watch.recv()).await {
            Ok(Some(_)) => {}
            _ => panic!("no provider of {name} in time"),
        }
    }
}

/// `calls` calls at once, half of them with big answers.
async fn big_answers_cross(name: &str, secret: Option<&str>, calls: u64) {
    let (a, b, _peers) = pair(name, secret).await;
    a.respond("big", |req: Request| async move {
        Ok(answer(req.body.as_u64().unwrap_or(0)))
    });
    wait_provider(&b, "big").await;
    // Calls at once, big and small: their answers share the link.
    let calls = (0..calls).map(|n| {
        let b = &b;
        async move {
            let raw = b.to("big").send_json(&json!(n)).await.expect("answers");
            (n, raw)
        }
    });
    for (n, raw) in timeout(WAIT, join_all(calls)).await.expect("in time") {
        let expected = serde_json::to_vec(&answer(n)).expect("encodes");
        assert!(
            raw.as_bytes() == expected.as_slice(),
            "answer {n}: {} bytes, expected {}",
            raw.as_bytes().len(),
            expected.len()
        );
    }
    let value = b.to("big").send(&json!(3)).await.expect("answers");
    assert_eq!(value, answer(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_answers_cross_a_plain_link_as_their_json() {
    big_answers_cross("plain", None, 8).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_answers_cross_an_encrypted_link_as_their_json() {
    big_answers_cross("sealed", Some("00ff00ff00ff00ff"), 4).await;
}
