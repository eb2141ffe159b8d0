//! [`NatsInbox::batching`]: requests made while others wait leave through the inbox's
//! publishing task, in batches. Against a real `nats-server` on a loopback port: the batched
//! path delivers what the plain path delivers (property test: same messages at the responder,
//! same replies to the same callers), and a batched publish that fails reaches its own caller.

#![cfg(feature = "nats")]

use std::sync::Arc;

use async_nats::{Client, HeaderMap, Message, Subject};
use bytes::Bytes;
use futures::StreamExt;
use futures::future::join_all;
use plume_transport::{InboxError, NatsInbox};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use tokio::time::timeout;

#[path = "support/nats_server.rs"]
mod support;
use support::{WAIT, nats_server};
#[path = "support/inbox_calls.rs"]
mod calls;
use calls::{far, holder, next, reply_of};

/// What the responder saw of a request: its subject, payload and `X-Case` header, and whether
/// its reply subject was one of the inbox's.
fn seen(m: &Message, prefix: &str) -> Bytes {
    let header = m
        .headers
        .as_ref()
        .and_then(|h| h.get("X-Case"))
        .map_or_else(String::new, |v| v.as_str().to_owned());
    let ours = m.reply.as_ref().is_some_and(|r| r.starts_with(prefix));
    let mut out = format!("{}|{header}|{ours}|", m.subject).into_bytes();
    out.extend_from_slice(&m.payload);
    Bytes::from(out)
}

/// Answer every request on `subject` with what it saw of it (see [`seen`]).
async fn describing_echo(client: &Client, subject: &str, prefix: String) {
    let mut sub = client
        .subscribe(subject.to_owned())
        .await
        .expect("subscribe");
    client.flush().await.expect("flush");
    let client = client.clone();
    tokio::spawn(async move {
        while let Some(m) = sub.next().await {
            let reply = m.reply.clone().expect("a reply subject");
            client
                .publish(reply, seen(&m, &prefix))
                .await
                .expect("reply");
        }
    });
}

/// Send `calls` (payload, header or not) at once through `inbox` (polled together in one task,
/// so the first leaves at once and the others while it waits): every reply, in call order.
async fn send_all(inbox: &NatsInbox, calls: &[(Vec<u8>, bool)]) -> Vec<Bytes> {
    let requests = calls.iter().enumerate().map(|(i, (payload, header))| {
        let headers = header.then(|| {
            let mut h = HeaderMap::new();
            h.insert("X-Case", i.to_string().as_str());
            h
        });
        inbox.request(
            Subject::from("describe"),
            headers,
            Bytes::from(payload.clone()),
            far(),
        )
    });
    timeout(WAIT, join_all(requests))
        .await
        .expect("in time")
        .into_iter()
        .map(|r| r.expect("a reply").payload)
        .collect()
}

/// The batched path against the plain one: for any set of concurrent calls, the responder sees
/// the same messages (subject, headers, payload, a reply subject of the inbox's) and each caller
/// gets its own reply, with replies reused or not.
#[test]
fn batched_requests_deliver_what_plain_requests_deliver() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let (_server, client) = rt.block_on(nats_server());
    let inboxes = rt.block_on(async {
        let make = |reuse: bool, batching: bool| {
            let inbox = if reuse {
                NatsInbox::reusing_replies(client.clone(), 1024)
            } else {
                NatsInbox::new(client.clone(), 1024)
            };
            inbox.batching(batching)
        };
        let inboxes = [
            make(false, false),
            make(false, true),
            make(true, false),
            make(true, true),
        ];
        // One responder per inbox prefix would do; one for all is enough (every prefix starts
        // with the client's inbox prefix).
        let common = client.new_inbox();
        let prefix = common.rsplit_once('.').map_or(common.as_str(), |(p, _)| p);
        describing_echo(&client, "describe", prefix.to_owned()).await;
        inboxes
    });
    let mut runner = TestRunner::new(Config {
        cases: 48,
        ..Config::default()
    });
    let calls = prop::collection::vec(
        (prop::collection::vec(any::<u8>(), 0..2048), any::<bool>()),
        1..40,
    );
    runner
        .run(&calls, |calls| {
            let replies: Vec<Vec<Bytes>> = rt.block_on(async {
                let mut all = Vec::new();
                for inbox in &inboxes {
                    all.push(send_all(inbox, &calls).await);
                }
                all
            });
            for (i, (payload, header)) in calls.iter().enumerate() {
                let header = if *header {
                    i.to_string()
                } else {
                    String::new()
                };
                let mut want = format!("describe|{header}|true|").into_bytes();
                want.extend_from_slice(payload);
                for (k, r) in replies.iter().enumerate() {
                    prop_assert_eq!(&r[i][..], &want[..], "inbox {} call {}", k, i);
                }
            }
            for inbox in &inboxes {
                prop_assert_eq!(inbox.pending(), 0);
            }
            Ok(())
        })
        .expect("the batched path delivers what the plain path does");
}

/// A batched request the client refuses (over the server's maximum payload) fails with the
/// client's reason, at once, and leaves the map; the call it waited behind is unaffected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batched_publish_that_fails_reaches_its_own_caller() {
    let (_server, client) = nats_server().await;
    let mut held = holder(&client, "hold").await;
    let inbox = Arc::new(NatsInbox::reusing_replies(client.clone(), 16).batching(true));
    let first = {
        let inbox = Arc::clone(&inbox);
        tokio::spawn(async move {
            inbox
                .request(Subject::from("hold"), None, Bytes::from("first"), far())
                .await
        })
    };
    let m = next(&mut held).await;
    // One call waits: the next one is batched, and too large for the server.
    let big = Bytes::from(vec![0u8; client.server_info().max_payload + 1]);
    let refused = timeout(WAIT, inbox.request(Subject::from("hold"), None, big, far()))
        .await
        .expect("refused in time");
    assert!(
        matches!(&refused, Err(InboxError::Publish(e)) if e.kind() == async_nats::PublishErrorKind::MaxPayloadExceeded),
        "{refused:?}"
    );
    assert_eq!(inbox.pending(), 1, "only the first call waits");
    client
        .publish(m.reply.expect("a reply subject"), "one".into())
        .await
        .expect("publish");
    assert_eq!(reply_of(first).await, Bytes::from("one"));
    assert_eq!(inbox.pending(), 0);
}
