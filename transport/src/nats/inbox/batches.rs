//! The inbox's side of calls in batches (`crate::nats::batch`): the publishing task puts the
//! queued requests to one endpoint in one message, the dispatching task hands the answers of a
//! batch to their requests, and a batch nobody serves is sent again call by call.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_nats::client::traits::Publisher as _;
use async_nats::message::OutboundMessage;
use async_nats::{Message, PublishError, PublishErrorKind, Subject};
use tokio::time::Instant;

use super::{InboxError, LOG, Outgoing, Shared, publish};
use crate::nats::batch::{self, Batch, Writer};
use crate::sync::lock;

/// Batches remembered until a call of theirs is answered, at most (past it the oldest is
/// forgotten: if nobody serves it, its first call learns so, and the others time out).
const SENT: usize = 256;
/// Endpoints remembered as served by no node that reads batches, at most.
const PLAIN: usize = 64;
/// How long an endpoint nobody served batches for gets its calls one by one before a batch is
/// tried again (a node of this version may have joined).
const PLAIN_FOR: Duration = Duration::from_secs(10);

/// The batches sent and not yet answered, and the endpoints served by no node that reads
/// batches.
#[derive(Default)]
pub(super) struct Sent {
    /// Each batch by the number of its first call (its reply subject), with its requests, to
    /// send them again if nobody serves the batch subject.
    batches: VecDeque<(u64, Vec<Outgoing>)>,
    /// Batch subjects with no responders, and since when.
    plain: Vec<(Subject, Instant)>,
}

impl Sent {
    /// Call `id` was answered: a batch it led found a responder, and is forgotten.
    pub(super) fn answered(&mut self, id: u64) {
        if self.batches.is_empty() {
            return;
        }
        if let Some(at) = self.batches.iter().position(|(head, _)| *head == id) {
            self.batches.remove(at);
        }
    }

    fn remember(&mut self, head: u64, outs: Vec<Outgoing>) {
        if self.batches.len() >= SENT {
            self.batches.pop_front();
        }
        self.batches.push_back((head, outs));
    }

    /// Whether calls to the endpoint of batch subject `subject` go one by one for now.
    fn plain(&mut self, subject: &Subject, now: Instant) -> bool {
        self.plain
            .retain(|(_, since)| now.duration_since(*since) < PLAIN_FOR);
        self.plain.iter().any(|(s, _)| s == subject)
    }

    fn unserved(&mut self, subject: Subject, now: Instant) {
        if self.plain.iter().any(|(s, _)| *s == subject) {
            return;
        }
        if self.plain.len() >= PLAIN {
            self.plain.remove(0);
        }
        self.plain.push((subject, now));
    }
}

/// The requests to one endpoint in the batch being gathered.
struct Group {
    subject: Subject,
    outs: Vec<Outgoing>,
    bytes: usize,
}

/// Publish the queued requests: woken when the queue stops being empty, it first lets the
/// other ready tasks of its worker run (their requests join the batch), then hands the whole
/// batch to the client's command channel, whose connection task is woken once for it. The
/// requests to one endpoint (with a batch subject) leave as one message.
pub(super) async fn publishing(shared: Arc<Shared>) {
    let mut queued = Vec::new();
    let mut groups: Vec<Group> = Vec::new();
    loop {
        shared.queued.notified().await;
        tokio::task::yield_now().await;
        // Swapped, not drained: both vectors keep their room for the next batches.
        std::mem::swap(&mut queued, &mut *lock(&shared.queue));
        let limit = batch::limit(shared.client.max_payload());
        for out in queued.drain(..) {
            let Some(subject) = out
                .batch
                .as_ref()
                .filter(|_| out.headers.is_none() && out.payload.len() <= batch::ENTRY_MAX)
            else {
                one(&shared, out).await;
                continue;
            };
            let size = out.payload.len() + 12;
            match groups.iter_mut().position(|g| g.subject == *subject) {
                Some(at) => {
                    let g = &mut groups[at];
                    if g.bytes + size > limit || g.outs.len() >= batch::MAX_ENTRIES {
                        let full = std::mem::take(&mut g.outs);
                        g.bytes = 0;
                        send(&shared, g.subject.clone(), full).await;
                    }
                    g.bytes += size;
                    g.outs.push(out);
                }
                None => groups.push(Group {
                    subject: subject.clone(),
                    outs: vec![out],
                    bytes: size,
                }),
            }
        }
        for g in groups.drain(..) {
            send(&shared, g.subject, g.outs).await;
        }
    }
}

/// Publish one request on its own; its caller learns why it was not sent.
async fn one(shared: &Shared, out: Outgoing) {
    let id = out.id;
    if let Err(e) = publish(&shared.client, out).await {
        failed(shared, id, e);
    }
}

/// Request `id` was not published: its caller learns why (the number is not reused).
fn failed(shared: &Shared, id: u64, e: PublishError) {
    let waiting = lock(&shared.pending).waiting.remove(&id);
    if let Some(w) = waiting {
        drop(w.tx.send(Err(InboxError::Publish(e))));
    }
}

/// Publish a group: one request on its own, several as one batch to their endpoint's batch
/// subject (unless nobody served that lately), the batch remembered until a call of it is
/// answered.
async fn send(shared: &Shared, subject: Subject, outs: Vec<Outgoing>) {
    let plain = outs.len() < 2
        || lock(&shared.pending)
            .batches
            .plain(&subject, Instant::now());
    let writer = if plain {
        None
    } else {
        Writer::calls(
            &shared.prefix,
            outs.iter().map(|o| o.payload.len() + 12).sum(),
        )
    };
    let Some(mut writer) = writer else {
        for out in outs {
            one(shared, out).await;
        }
        return;
    };
    for out in &outs {
        // The group holds at most as many entries as a batch takes, each at most ENTRY_MAX.
        let _ = writer.push(out.id, &out.payload);
    }
    let head = outs[0].id;
    let message = OutboundMessage {
        subject,
        reply: Some(outs[0].reply.clone()),
        payload: writer.finish(),
        headers: None,
    };
    // Remembered before it leaves: its answers may come before this task runs again.
    lock(&shared.pending).batches.remember(head, outs);
    shared.sent_batches.store(true, Ordering::Relaxed);
    if let Err(e) = shared.client.publish_message(message).await {
        let outs = take(shared, head);
        if e.kind() == PublishErrorKind::MaxPayloadExceeded {
            // The server's limit fell under the batch (a reconnection): one by one.
            for out in outs {
                one(shared, out).await;
            }
            return;
        }
        for out in outs {
            failed(
                shared,
                out.id,
                PublishError::with_source(e.kind(), e.to_string()),
            );
        }
    }
}

/// The requests of the batch led by `head`, forgotten.
fn take(shared: &Shared, head: u64) -> Vec<Outgoing> {
    let mut calls = lock(&shared.pending);
    let sent = &mut calls.batches.batches;
    match sent.iter().position(|(h, _)| *h == head) {
        Some(at) => sent.remove(at).map(|(_, outs)| outs).unwrap_or_default(),
        None => Vec::new(),
    }
}

/// Hand the answers of a batch to their requests (a batch that does not read is ignored: its
/// calls time out, as with a reply lost).
pub(super) fn answers(shared: &Shared, message: Message) {
    let batch = match Batch::answers(&message.payload) {
        Ok(batch) => batch,
        Err(e) => {
            tracing::debug!(target: LOG, error = %e, subject = %message.subject, "ignoring a batch of answers");
            return;
        }
    };
    let ready: Vec<_> = {
        let mut calls = lock(&shared.pending);
        batch
            .entries
            .into_iter()
            .filter_map(|(tag, payload)| Some((calls.answered(tag, shared.max)?, payload)))
            .collect()
    };
    for (tx, payload) in ready {
        let length = payload.len();
        drop(tx.send(Ok(Message {
            subject: message.subject.clone(),
            reply: None,
            payload,
            headers: None,
            status: None,
            description: None,
            length,
        })));
    }
}

/// Nobody serves the reply subject numbered `id`: when it led a batch, the endpoint has no
/// node that reads batches (nodes of an earlier version only, or none): the calls still
/// waiting are sent again one by one (none of them ran), and the endpoint's calls go one by one
/// for a while. `false` when `id` led no batch remembered.
pub(super) async fn unserved(shared: &Shared, id: u64) -> bool {
    let outs = take(shared, id);
    if outs.is_empty() {
        return false;
    }
    let waiting: Vec<Outgoing> = {
        let mut calls = lock(&shared.pending);
        if let Some(subject) = outs[0].batch.clone() {
            calls.batches.unserved(subject, Instant::now());
        }
        outs.into_iter()
            .filter(|o| calls.waiting.get(&o.id).is_some_and(|w| !w.tx.is_closed()))
            .collect()
    };
    tracing::debug!(target: LOG, calls = waiting.len(), "no node reads batches for this endpoint: calls sent one by one");
    for out in waiting {
        one(shared, out).await;
    }
    true
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use async_nats::Client;
    use bytes::Bytes;
    use futures::StreamExt;
    use futures::future::join_all;
    use tokio::time::timeout;

    use super::super::NatsInbox;
    use super::super::nats_server::{WAIT, nats_server};
    use crate::nats::batch::{Batch, Writer, reply_subject};
    use crate::sync::lock;

    /// Send `n` requests at once (one task: the first leaves at once, the others while it
    /// waits, so they go through the publishing task) to `subject`, batch subject `batch`;
    /// each payload is its index, and each reply must be its own payload with `suffix`.
    async fn round(inbox: &NatsInbox, subject: &str, batch: &str, n: usize, suffix: &str) {
        let calls = (0..n).map(|i| {
            inbox.request_batchable(
                subject.into(),
                Some(batch.into()),
                None,
                Bytes::from(i.to_string()),
                tokio::time::Instant::now() + WAIT,
                false,
            )
        });
        let got = timeout(WAIT, join_all(calls)).await.expect("in time");
        for (i, reply) in got.into_iter().enumerate() {
            let reply = reply.expect("a reply");
            assert_eq!(reply.payload, format!("{i}{suffix}").as_bytes(), "call {i}");
        }
    }

    /// Answer each call on `subject` (a queue group, one call a message, as a node of an
    /// earlier version) with its payload and "!".
    async fn one_by_one(client: &Client, subject: &str, served: &'static AtomicUsize) {
        let mut sub = client
            .queue_subscribe(subject.to_owned(), "q".into())
            .await
            .expect("subscribe");
        client.flush().await.expect("flush");
        let client = client.clone();
        tokio::spawn(async move {
            while let Some(m) = sub.next().await {
                served.fetch_add(1, Ordering::SeqCst);
                let payload = [&m.payload[..], b"!"].concat();
                let reply = m.reply.expect("a reply subject");
                client.publish(reply, payload.into()).await.expect("reply");
            }
        });
    }

    /// An inbox that never sent a batch (plume-pattern's, any caller of `request`) passes a
    /// reply that looks like a batch of answers on as it is.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn only_an_inbox_that_sent_batches_reads_batches_of_answers() {
        let (_server, client) = nats_server().await;
        let mut sub = client.subscribe("odd").await.expect("subscribe");
        client.flush().await.expect("flush");
        let responder = client.clone();
        tokio::spawn(async move {
            while let Some(m) = sub.next().await {
                let reply = m.reply.expect("a reply subject");
                let looks = Bytes::from_static(b"\xc1\x01\x00\x00");
                responder.publish(reply, looks).await.expect("reply");
            }
        });
        for inbox in [
            NatsInbox::new(client.clone(), 16),
            NatsInbox::reusing_replies(client.clone(), 16).batching(true),
        ] {
            let reply = inbox
                .request(
                    "odd".into(),
                    None,
                    Bytes::new(),
                    tokio::time::Instant::now() + WAIT,
                )
                .await
                .expect("a reply");
            assert_eq!(&reply.payload[..], b"\xc1\x01\x00\x00");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_batch_nobody_reads_is_sent_again_call_by_call() {
        static SERVED: AtomicUsize = AtomicUsize::new(0);
        let (_server, client) = nats_server().await;
        one_by_one(&client, "svc.old", &SERVED).await;
        let inbox = NatsInbox::reusing_replies(client.clone(), 1024).batching(true);
        round(&inbox, "svc.old", "svcb.old", 50, "!").await;
        assert_eq!(SERVED.load(Ordering::SeqCst), 50, "each call ran once");
        let plain = |inbox: &NatsInbox| {
            lock(&inbox.shared.pending)
                .batches
                .plain
                .iter()
                .any(|(s, _)| s.as_str() == "svcb.old")
        };
        assert!(plain(&inbox), "the batch was tried, and nobody read it");
        assert!(lock(&inbox.shared.pending).batches.batches.is_empty());

        // For a while, calls to that endpoint go one by one: a spy on the batch subject sees
        // none (and, as a responder that never answers, would hold any batch until the
        // deadline).
        let mut spy = client.subscribe("svcb.old").await.expect("subscribe");
        client.flush().await.expect("flush");
        round(&inbox, "svc.old", "svcb.old", 50, "!").await;
        assert_eq!(SERVED.load(Ordering::SeqCst), 100);
        assert!(
            timeout(std::time::Duration::from_millis(100), spy.next())
                .await
                .is_err(),
            "a batch was sent"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_answers_of_a_batch_reach_their_calls_together_or_alone() {
        static BATCHES: AtomicUsize = AtomicUsize::new(0);
        static IN_BATCHES: AtomicUsize = AtomicUsize::new(0);
        let (_server, client) = nats_server().await;
        static ALONE: AtomicUsize = AtomicUsize::new(0);
        // The first call leaves alone (nothing waits yet), the others in batches.
        one_by_one(&client, "svc.new", &ALONE).await;
        let mut sub = client
            .queue_subscribe("svcb.new".to_owned(), "q".into())
            .await
            .expect("subscribe");
        client.flush().await.expect("flush");
        let responder = client.clone();
        tokio::spawn(async move {
            while let Some(m) = sub.next().await {
                BATCHES.fetch_add(1, Ordering::SeqCst);
                let calls = Batch::calls(&m.payload).expect("a batch of calls");
                IN_BATCHES.fetch_add(calls.entries.len(), Ordering::SeqCst);
                let reply = m.reply.expect("a reply subject");
                // A batch of answers that does not read comes first: ignored.
                responder
                    .publish(reply.clone(), Bytes::from_static(b"\xc1\x01\x09"))
                    .await
                    .expect("publish");
                let mut answers = Writer::answers(0);
                for (tag, payload) in calls.entries {
                    let answer = [&payload[..], b"!"].concat();
                    if tag % 2 == 0 {
                        assert!(answers.push(tag, &answer));
                    } else {
                        let alone = reply_subject(&calls.prefix, tag);
                        responder
                            .publish(alone, answer.into())
                            .await
                            .expect("publish");
                    }
                }
                responder
                    .publish(reply, answers.finish())
                    .await
                    .expect("publish");
            }
        });
        let inbox = NatsInbox::reusing_replies(client.clone(), 1024).batching(true);
        round(&inbox, "svc.new", "svcb.new", 200, "!").await;
        assert!(BATCHES.load(Ordering::SeqCst) >= 1);
        // Every call ran once, alone or in a batch.
        assert_eq!(
            ALONE.load(Ordering::SeqCst) + IN_BATCHES.load(Ordering::SeqCst),
            200
        );
        assert_eq!(inbox.pending(), 0);
        // Every number came back free: the next round reuses them.
        assert!(lock(&inbox.shared.pending).free.len() >= 150);
        round(&inbox, "svc.new", "svcb.new", 200, "!").await;
    }
}
