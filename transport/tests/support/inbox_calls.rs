//! Helpers of the [`NatsInbox`](plume_transport::NatsInbox) tests: a deadline, a subscriber
//! that holds requests for the test to answer, and a call's reply. Included (`#[path]`) next to
//! `nats_server.rs`, as the module `support`.

use async_nats::{Client, Message};
use bytes::Bytes;
use futures::StreamExt;
use plume_transport::InboxError;
use tokio::sync::mpsc;
use tokio::time::{Instant, timeout};

use crate::support::WAIT;

/// A deadline no test reaches.
pub(crate) fn far() -> Instant {
    Instant::now() + WAIT
}

/// Take the requests on `subject` and hand them to the test, unanswered.
pub(crate) async fn holder(client: &Client, subject: &str) -> mpsc::Receiver<Message> {
    let mut sub = client
        .subscribe(subject.to_owned())
        .await
        .expect("subscribe");
    client.flush().await.expect("flush");
    // Room for every request a test holds (10,000 at most).
    let (tx, rx) = mpsc::channel(16_384);
    tokio::spawn(async move {
        while let Some(m) = sub.next().await {
            if tx.send(m).await.is_err() {
                return;
            }
        }
    });
    rx
}

/// The next request a [`holder`] took.
pub(crate) async fn next(rx: &mut mpsc::Receiver<Message>) -> Message {
    timeout(WAIT, rx.recv())
        .await
        .expect("a request in time")
        .expect("the holder runs")
}

/// The payload of the reply a call in a task of its own got.
pub(crate) async fn reply_of(task: tokio::task::JoinHandle<Result<Message, InboxError>>) -> Bytes {
    timeout(WAIT, task)
        .await
        .expect("in time")
        .expect("the task")
        .expect("a reply")
        .payload
}
