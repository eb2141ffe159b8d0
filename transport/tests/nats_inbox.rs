//! [`NatsInbox`]: requests over one reply subscription, against a real `nats-server` on a
//! loopback port. Replies reach their own callers, late and stray replies are dropped, and the
//! map of pending calls is bounded and emptied by timeouts and cancellations.

#![cfg(feature = "nats")]

use std::sync::Arc;
use std::time::Duration;

use async_nats::{Client, Message, Subject};
use bytes::Bytes;
use futures::StreamExt;
use futures::future::join_all;
use plume_transport::{InboxError, NatsInbox};
use tokio::sync::mpsc;
use tokio::time::{Instant, timeout};

#[path = "support/nats_server.rs"]
mod support;
use support::{WAIT, nats_server};
#[path = "support/inbox_calls.rs"]
mod calls;
use calls::{far, holder, next, reply_of};

/// Answer every request on `subject` once `batch` of them are in, in reverse order (so replies
/// come back in another order than the requests went out).
async fn reversing_echo(client: &Client, subject: &str, batch: usize) {
    let mut sub = client
        .subscribe(subject.to_owned())
        .await
        .expect("subscribe");
    client.flush().await.expect("flush");
    let client = client.clone();
    tokio::spawn(async move {
        let mut held: Vec<Message> = Vec::with_capacity(batch);
        while let Some(m) = sub.next().await {
            held.push(m);
            if held.len() == batch {
                for m in held.drain(..).rev() {
                    let reply = m.reply.clone().expect("a reply subject");
                    client.publish(reply, m.payload).await.expect("reply");
                }
            }
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_reach_their_own_callers_under_concurrency() {
    let (_server, client) = nats_server().await;
    reversing_echo(&client, "echo", 50).await;
    for inbox in [
        NatsInbox::new(client.clone(), 1024),
        NatsInbox::reusing_replies(client.clone(), 1024),
    ] {
        five_hundred_calls(Arc::new(inbox)).await;
    }
}

async fn five_hundred_calls(inbox: Arc<NatsInbox>) {
    let calls = (0..500u32).map(|i| {
        let inbox = Arc::clone(&inbox);
        tokio::spawn(async move {
            let body = Bytes::from(format!("call {i}"));
            let reply = inbox
                .request(Subject::from("echo"), None, body.clone(), far())
                .await
                .expect("a reply");
            assert_eq!(reply.payload, body, "call {i} got another call's reply");
        })
    });
    for r in timeout(WAIT, join_all(calls)).await.expect("in time") {
        r.expect("the call's checks pass");
    }
    assert_eq!(inbox.pending(), 0);
}

/// Start a request on `inbox` to "hold" in a task of its own; the held request with it.
async fn held_call(
    inbox: &Arc<NatsInbox>,
    hold: &mut mpsc::Receiver<Message>,
    deadline: Instant,
) -> (
    tokio::task::JoinHandle<Result<Message, InboxError>>,
    Subject,
) {
    let inbox = Arc::clone(inbox);
    let task = tokio::spawn(async move {
        inbox
            .request(Subject::from("hold"), None, Bytes::new(), deadline)
            .await
    });
    let held = next(hold).await;
    (task, held.reply.expect("a reply subject"))
}

/// A reusing inbox hands an answered call's subject to the next call, never a timed-out
/// call's: that call's late reply is dropped, not taken as the next call's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reusing_inbox_reuses_answered_subjects_only() {
    let (_server, client) = nats_server().await;
    let mut hold = holder(&client, "hold").await;
    let inbox = Arc::new(NatsInbox::reusing_replies(client.clone(), 16));

    let (first, s1) = held_call(&inbox, &mut hold, far()).await;
    client
        .publish(s1.clone(), "one".into())
        .await
        .expect("publish");
    assert_eq!(reply_of(first).await, Bytes::from("one"));

    let deadline = Instant::now() + Duration::from_millis(200);
    let (second, s2) = held_call(&inbox, &mut hold, deadline).await;
    assert_eq!(s2, s1, "an answered call's subject is handed out again");
    let late = timeout(WAIT, second).await.expect("in time").expect("task");
    assert!(matches!(late, Err(InboxError::TimedOut)), "{late:?}");

    let (third, s3) = held_call(&inbox, &mut hold, far()).await;
    assert_ne!(s3, s2, "a timed-out call's subject is not reused");
    client.publish(s2, "late".into()).await.expect("publish");
    client.publish(s3, "three".into()).await.expect("publish");
    assert_eq!(reply_of(third).await, Bytes::from("three"));
    assert_eq!(inbox.pending(), 0);
}

/// A call dropped after its reply took it out of the map, once its subject went to another
/// call, leaves that call waiting for its own reply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_dropped_after_its_reply_leaves_the_next_holder_of_its_subject_alone() {
    let (_server, client) = nats_server().await;
    let mut hold = holder(&client, "hold").await;
    let inbox = Arc::new(NatsInbox::reusing_replies(client.clone(), 16));

    let mut first = Box::pin(inbox.request(Subject::from("hold"), None, Bytes::new(), far()));
    // Polled until its request is out (it registered and published).
    let s1 = tokio::select! {
        r = &mut first => panic!("no reply was sent yet: {r:?}"),
        m = next(&mut hold) => m.reply.expect("a reply subject"),
    };
    client
        .publish(s1.clone(), "one".into())
        .await
        .expect("publish");
    // The reply takes the call out of the map (the call itself is not polled again).
    timeout(WAIT, async {
        while inbox.pending() != 0 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the reply comes");

    let (second, s2) = held_call(&inbox, &mut hold, far()).await;
    assert_eq!(s2, s1);
    drop(first);
    assert_eq!(inbox.pending(), 1, "the second call still waits");
    client.publish(s2, "two".into()).await.expect("publish");
    assert_eq!(reply_of(second).await, Bytes::from("two"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_reply_after_the_timeout_is_dropped() {
    let (_server, client) = nats_server().await;
    let mut slow = holder(&client, "slow").await;
    reversing_echo(&client, "echo", 1).await;
    let inbox = NatsInbox::new(client.clone(), 16);

    let deadline = Instant::now() + Duration::from_millis(200);
    let late = inbox
        .request(Subject::from("slow"), None, "first".into(), deadline)
        .await;
    assert!(matches!(late, Err(InboxError::TimedOut)), "{late:?}");
    assert_eq!(inbox.pending(), 0, "a timed-out call leaves the map");

    // The late reply comes, then a new call's own: the new call gets its own.
    let held = next(&mut slow).await;
    let reply_to = held.reply.expect("a reply subject");
    assert!(reply_to.starts_with(inbox.reply_prefix()), "{reply_to}");
    client
        .publish(reply_to, "late answer".into())
        .await
        .expect("publish");
    let reply = inbox
        .request(Subject::from("echo"), None, "second".into(), far())
        .await
        .expect("a reply");
    assert_eq!(reply.payload, Bytes::from("second"));
    assert_eq!(inbox.pending(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_to_unknown_or_garbled_subjects_are_ignored() {
    let (_server, client) = nats_server().await;
    let mut hold = holder(&client, "hold").await;
    let inbox = Arc::new(NatsInbox::new(client.clone(), 16));
    let waiting = {
        let inbox = Arc::clone(&inbox);
        tokio::spawn(async move {
            inbox
                .request(Subject::from("hold"), None, "q".into(), far())
                .await
        })
    };
    let held = next(&mut hold).await;
    let prefix = inbox.reply_prefix().to_owned();
    for stray in ["garbage", "99999999", "18446744073709551616", "-1", "0x1"] {
        client
            .publish(format!("{prefix}{stray}"), "stray".into())
            .await
            .expect("publish");
    }
    client
        .publish(held.reply.expect("a reply subject"), "right".into())
        .await
        .expect("publish");
    assert_eq!(reply_of(waiting).await, Bytes::from("right"));
    assert_eq!(inbox.pending(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_cancelled_calls_leave_nothing_behind() {
    const CALLS: usize = 10_000;
    let (_server, client) = nats_server().await;
    let mut hold = holder(&client, "hold").await;
    let inbox = Arc::new(NatsInbox::new(client.clone(), 16_384));
    let tasks: Vec<_> = (0..CALLS)
        .map(|_| {
            let inbox = Arc::clone(&inbox);
            tokio::spawn(async move {
                inbox
                    .request(Subject::from("hold"), None, Bytes::new(), far())
                    .await
            })
        })
        .collect();
    // Every call registers before it publishes: once the holder has them all, all wait.
    for _ in 0..CALLS {
        drop(next(&mut hold).await);
    }
    assert_eq!(inbox.pending(), CALLS);
    for t in &tasks {
        t.abort();
    }
    for t in tasks {
        let outcome = timeout(WAIT, t).await.expect("the task ends in time");
        assert!(outcome.is_err_and(|e| e.is_cancelled()));
    }
    assert_eq!(inbox.pending(), 0, "cancelled calls leave the map");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_inbox_refuses_at_once_and_takes_calls_again_when_one_ends() {
    let (_server, client) = nats_server().await;
    let mut hold = holder(&client, "hold").await;
    let inbox = Arc::new(NatsInbox::new(client.clone(), 4));
    let call = |body: Bytes| {
        let inbox = Arc::clone(&inbox);
        tokio::spawn(async move {
            inbox
                .request(Subject::from("hold"), None, body, far())
                .await
        })
    };
    let mut tasks: Vec<_> = (0..4u8).map(|i| Some(call(Bytes::from(vec![i])))).collect();
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(next(&mut hold).await);
    }
    let refused = inbox
        .request(Subject::from("hold"), None, Bytes::new(), far())
        .await;
    assert!(matches!(refused, Err(InboxError::Full(4))), "{refused:?}");
    assert_eq!(inbox.pending(), 4);

    // One answered (its payload names its task): room for one more.
    let first = held.remove(0);
    let which = usize::from(first.payload[0]);
    client
        .publish(first.reply.expect("a reply subject"), "done".into())
        .await
        .expect("publish");
    let task = tasks[which].take().expect("a task");
    assert_eq!(reply_of(task).await, Bytes::from("done"));
    assert_eq!(inbox.pending(), 3);
    let more = call(Bytes::new());
    drop(next(&mut hold).await);
    assert_eq!(inbox.pending(), 4);
    more.abort();
    for t in tasks.into_iter().flatten() {
        t.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subject_nobody_subscribes_to_has_no_responders() {
    let (_server, client) = nats_server().await;
    let inbox = NatsInbox::new(client, 4);
    let r = inbox
        .request(Subject::from("nobody.here"), None, Bytes::new(), far())
        .await;
    assert!(matches!(r, Err(InboxError::NoResponders)), "{r:?}");
    assert_eq!(inbox.pending(), 0);
}

/// `lose` ends the losable requests waiting on the subjects it names, at once, and no other:
/// not a request to another subject, not one that is not losable; their numbers are not reused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_subjects_end_their_losable_requests_only() {
    let (_server, client) = nats_server().await;
    let mut hold = holder(&client, "hold").await;
    let mut other = holder(&client, "other").await;
    let inbox = Arc::new(NatsInbox::reusing_replies(client.clone(), 16).batching(true));
    let call = |subject: &'static str, losable: bool| {
        let inbox = Arc::clone(&inbox);
        tokio::spawn(async move {
            inbox
                .request_losable(Subject::from(subject), None, Bytes::new(), far(), losable)
                .await
        })
    };
    let lost = call("hold", true);
    let kept = call("hold", false);
    let elsewhere = call("other", true);
    let (m1, m2, m3) = (
        next(&mut hold).await,
        next(&mut hold).await,
        next(&mut other).await,
    );
    assert_eq!(inbox.pending(), 3);
    inbox.lose(&["hold".to_owned()]);
    let r = timeout(WAIT, lost).await.expect("in time").expect("task");
    assert!(matches!(r, Err(InboxError::Lost)), "{r:?}");
    assert_eq!(inbox.pending(), 2, "the other two still wait");
    // The replies come: to the two that wait, and one to the lost request's subject, dropped.
    for m in [m1, m2, m3] {
        client
            .publish(m.reply.expect("a reply subject"), "answer".into())
            .await
            .expect("publish");
    }
    assert_eq!(reply_of(kept).await, Bytes::from("answer"));
    assert_eq!(reply_of(elsewhere).await, Bytes::from("answer"));
    assert_eq!(inbox.pending(), 0);
}
