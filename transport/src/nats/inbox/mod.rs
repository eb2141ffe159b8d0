//! Requests on one NATS connection through one wildcard reply subscription of our own.
//!
//! async-nats's `send_request` names every request's reply subject with a fresh random token
//! (22 samples of a ChaCha RNG, formatted), hands the request to its connection task as a
//! command of its own, and keys its pending replies by that token in a SipHash map of owned
//! strings; a request that times out stays in that map until its reply comes, if ever. A
//! [`NatsInbox`] subscribes once to `<inbox>.*` (the client's own inbox prefix, so servers
//! that restrict `_INBOX` still allow it), names replies `<inbox>.<counter>` (decimal, no RNG),
//! publishes requests as plain messages with that reply subject, and keeps its pending calls in
//! a bounded map keyed by the counter. A call's entry leaves the map when its reply comes, when
//! it times out, and when its future is dropped, so the map never holds more than the calls in
//! flight, and never more than its bound (a call beyond it fails at once with
//! [`InboxError::Full`]). Deadlines are kept by one sweeper task, not a timer per request
//! ([`sweep`]).
//!
//! An inbox made with [`NatsInbox::reusing_replies`] (the mesh's calls, whose every request has
//! one responder) hands a number out again once its call got its reply: a request has at most
//! one reply, so nothing else comes to that subject. A number whose call timed out or was
//! dropped is never reused (its reply may still come). The reply subjects in use are then about
//! as many as the calls in flight, so nats-server finds each reply's route in its subject cache
//! instead of matching a new subject and caching it for every reply.
//!
//! An inbox with [`NatsInbox::batching`] on (the mesh's calls) publishes a request made while
//! other requests wait through a task of its own, which first lets the other ready tasks of its
//! worker run (and queue their requests) and then hands them all to the client at once: the
//! client's connection task is woken once per batch and writes the batch in one `writev`, as
//! the TCP link's writer does (`tcp/outbox.rs`). A request made while none waits is published
//! at once. The bytes on the wire are the same either way, but for the requests made with a
//! batch subject ([`NatsInbox::request_batchable`], the mesh's calls to an endpoint): those of
//! one batch that go to the same endpoint leave as one message, and their replies come back as
//! one ([`batches`], `super::batch`).
//!
//! Only this module reads a reply subject, and only its own: the shape is not part of the mesh
//! wire (a responder replies to whatever subject the request names).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_nats::client::traits::Publisher as _;
use async_nats::message::OutboundMessage;
use async_nats::{Client, HeaderMap, Message, StatusCode, Subject, Subscriber};
use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::{Notify, OnceCell, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::sync::lock;

mod batches;
/// A real `nats-server` for the tests (shared with the integration tests).
#[cfg(test)]
#[path = "../../../tests/support/nats_server.rs"]
#[allow(dead_code, unreachable_pub)]
mod nats_server;
mod sweep;

const LOG: &str = "plume::nats::inbox";

/// Why a request through a [`NatsInbox`] has no reply.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InboxError {
    /// As many requests as the inbox's bound are waiting for their replies already.
    #[error("too many NATS requests in flight (at most {0})")]
    Full(usize),
    /// The NATS server says nobody subscribes to the subject.
    #[error("no responders")]
    NoResponders,
    /// No reply before the deadline.
    #[error("no reply before the deadline")]
    TimedOut,
    /// The request was not published (too large, an invalid subject, the client closed).
    #[error("the request was not published: {0}")]
    Publish(#[source] async_nats::PublishError),
    /// The reply subscription could not be made or ended (the client closed).
    #[error("the reply subscription is gone: {0}")]
    Closed(String),
    /// A provider of the request's subject left while it waited ([`NatsInbox::lose`]): it may
    /// have been the one holding the request.
    #[error("a provider of the subject left while the request waited")]
    Lost,
}

/// What a waiting request gets: its reply, or why it has none (its batched publish failed, or
/// a provider of its subject left).
type Outcome = Result<Message, InboxError>;

/// A request waiting for its reply: where the reply goes, and (when replies are reused) its
/// reply subject, kept to name the next call given its number.
struct Waiting {
    tx: oneshot::Sender<Outcome>,
    reply: Option<Subject>,
    /// The request's subject, when the request is lost if a provider of it leaves.
    losable: Option<Subject>,
    /// When the sweeper ends it with [`InboxError::TimedOut`].
    deadline: Instant,
}

/// Keys are counters, unique per inbox: a fixed-seed foldhash (a multiply and a fold) is enough.
type Pending = HashMap<u64, Waiting, foldhash::fast::FixedState>;

/// A request queued for the publishing task.
struct Outgoing {
    id: u64,
    subject: Subject,
    reply: Subject,
    headers: Option<HeaderMap>,
    payload: Bytes,
    /// The batch subject of `subject`'s endpoint, when the request may leave in a batch.
    batch: Option<Subject>,
}

/// The calls waiting for their replies, and the numbers free to hand out again.
#[derive(Default)]
struct Calls {
    waiting: Pending,
    /// Numbers whose call got its reply, with their subjects (only when replies are reused; at
    /// most `max`): the subject is handed out again as it is, not formatted again.
    free: Vec<(u64, Subject)>,
    /// The batches sent lately (see [`batches`]).
    batches: batches::Sent,
    /// When the sweeper wakes next ([`sweep`]); `None`: it waits without a timer.
    due: Option<Instant>,
}

impl Calls {
    /// The sender of call `id`, taken out of the map by its reply; its number is free again
    /// (when replies are reused), and a batch it led has found a responder.
    fn answered(&mut self, id: u64, max: usize) -> Option<oneshot::Sender<Outcome>> {
        let w = self.waiting.remove(&id)?;
        if let Some(reply) = w.reply
            && self.free.len() < max
        {
            self.free.push((id, reply));
        }
        self.batches.answered(id);
        Some(w.tx)
    }
}

/// What the inbox and its dispatching task share.
struct Shared {
    client: Client,
    /// `<inbox prefix>.<unique token>.`: a reply subject is this and a counter.
    prefix: String,
    next: AtomicU64,
    pending: Mutex<Calls>,
    /// Hand out again the number of a call that got its reply.
    reuse: bool,
    /// Set when the subscription ended: no new request is taken.
    closed: Mutex<Option<String>>,
    max: usize,
    /// Publish a request made while others wait through the publishing task.
    batching: bool,
    /// Set once a batch of calls was published: replies may then be batches of answers.
    sent_batches: AtomicBool,
    /// Requests for the publishing task (each has its entry in `pending`, so at most `max`).
    queue: Mutex<Vec<Outgoing>>,
    /// Wakes the publishing task when the queue stops being empty.
    queued: Notify,
    /// Wakes the sweeper for a deadline earlier than the one it sleeps until.
    sweep: Notify,
}

/// Requests over one NATS client, their replies through one subscription (see the module
/// documentation). Cheap to share behind an `Arc`; dropping it ends its subscription.
pub struct NatsInbox {
    shared: Arc<Shared>,
    /// The dispatching task, the sweeper and (with [`NatsInbox::batching`]) the publishing
    /// task, started by the first request (aborted on drop).
    task: OnceCell<Tasks>,
}

/// An inbox's tasks (see [`NatsInbox`]'s `task`).
struct Tasks {
    dispatching: JoinHandle<()>,
    sweeping: JoinHandle<()>,
    publishing: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for NatsInbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsInbox")
            .field("prefix", &self.shared.prefix)
            .field("pending", &self.pending())
            .finish_non_exhaustive()
    }
}

impl Drop for NatsInbox {
    fn drop(&mut self) {
        if let Some(tasks) = self.task.get() {
            tasks.dispatching.abort();
            tasks.sweeping.abort();
            if let Some(publishing) = &tasks.publishing {
                publishing.abort();
            }
        }
    }
}

impl NatsInbox {
    /// An inbox on `client` holding at most `max` requests in flight (at least one); every
    /// request gets a reply subject of its own.
    pub fn new(client: Client, max: usize) -> NatsInbox {
        Self::make(client, max, false)
    }

    /// As [`NatsInbox::new`], for requests that each have one responder (a queue group or a
    /// single subscriber): the reply subject of a call that got its reply is handed out again
    /// (see the module documentation). Not for subjects several responders answer: a second
    /// reply could reach the next call given that subject.
    pub fn reusing_replies(client: Client, max: usize) -> NatsInbox {
        Self::make(client, max, true)
    }

    fn make(client: Client, max: usize, reuse: bool) -> NatsInbox {
        let mut prefix = client.new_inbox();
        prefix.push('.');
        NatsInbox {
            shared: Arc::new(Shared {
                client,
                prefix,
                next: AtomicU64::new(0),
                pending: Mutex::new(Calls::default()),
                reuse,
                closed: Mutex::new(None),
                max: max.max(1),
                batching: false,
                sent_batches: AtomicBool::new(false),
                queue: Mutex::new(Vec::new()),
                queued: Notify::new(),
                sweep: Notify::new(),
            }),
            task: OnceCell::new(),
        }
    }

    /// Publish the requests made while others wait in batches (see the module documentation);
    /// off by default. Set before the first request.
    #[must_use]
    pub fn batching(mut self, on: bool) -> NatsInbox {
        if let Some(shared) = Arc::get_mut(&mut self.shared) {
            shared.batching = on;
        }
        self
    }

    /// The requests waiting for their replies.
    pub fn pending(&self) -> usize {
        lock(&self.shared.pending).waiting.len()
    }

    /// The prefix of every reply subject this inbox hands out (`<inbox>.<token>.`).
    pub fn reply_prefix(&self) -> &str {
        &self.shared.prefix
    }

    /// Publish `payload` (with `headers`, when given) to `subject` and wait for its reply until
    /// `deadline`.
    pub async fn request(
        &self,
        subject: Subject,
        headers: Option<HeaderMap>,
        payload: Bytes,
        deadline: Instant,
    ) -> Result<Message, InboxError> {
        self.request_batchable(subject, None, headers, payload, deadline, false)
            .await
    }

    /// As [`NatsInbox::request`]; when `losable`, [`NatsInbox::lose`] on its subject ends the
    /// request with [`InboxError::Lost`] (kept in the request's entry: nothing to subscribe to
    /// or poll per request).
    pub async fn request_losable(
        &self,
        subject: Subject,
        headers: Option<HeaderMap>,
        payload: Bytes,
        deadline: Instant,
        losable: bool,
    ) -> Result<Message, InboxError> {
        self.request_batchable(subject, None, headers, payload, deadline, losable)
            .await
    }

    /// As [`NatsInbox::request_losable`]; with `batch`, the batch subject of the request's
    /// endpoint, a request made while others wait may leave in one message with the other
    /// requests to that endpoint, and get its reply in one message with theirs (see
    /// `super::batch`). When nobody serves `batch`, the requests of the batch are sent again
    /// each on its own.
    pub(crate) async fn request_batchable(
        &self,
        subject: Subject,
        batch: Option<Subject>,
        headers: Option<HeaderMap>,
        payload: Bytes,
        deadline: Instant,
        losable: bool,
    ) -> Result<Message, InboxError> {
        self.start().await?;
        let (mut out, mut entry, others) =
            self.register(subject, headers, payload, deadline, losable)?;
        out.batch = batch;
        if self.shared.batching && others {
            // Others wait: this one leaves with the next batch.
            let was_empty = {
                let mut queue = lock(&self.shared.queue);
                queue.push(out);
                queue.len() == 1
            };
            if was_empty {
                self.shared.queued.notify_one();
            }
        } else {
            publish(&self.shared.client, out)
                .await
                .map_err(InboxError::Publish)?;
        }
        // No timer of its own: the sweeper ends it at its deadline (`sweep`).
        let Ok(outcome) = (&mut entry.rx).await else {
            // The dispatching task ended (the subscription is gone) and dropped the sender.
            return Err(InboxError::Closed(self.closed_reason()));
        };
        // Taken out of the map by its reply, by the sweeper at its deadline, by the publishing
        // task that failed to send it, or by `lose`.
        entry.answered = true;
        let message = outcome?;
        if message.status == Some(StatusCode::NO_RESPONDERS) {
            return Err(InboxError::NoResponders);
        }
        Ok(message)
    }

    /// End the losable requests waiting on one of `subjects` with [`InboxError::Lost`] (their
    /// numbers are not reused: a reply may still come). For rare events (a provider leaving):
    /// it walks every waiting request.
    pub fn lose(&self, subjects: &[String]) {
        if subjects.is_empty() {
            return;
        }
        let mut calls = lock(&self.shared.pending);
        let lost: Vec<u64> = calls
            .waiting
            .iter()
            .filter(|(_, w)| {
                w.losable
                    .as_ref()
                    .is_some_and(|s| subjects.iter().any(|l| l.as_str() == s.as_str()))
            })
            .map(|(id, _)| *id)
            .collect();
        for id in lost {
            if let Some(w) = calls.waiting.remove(&id) {
                drop(w.tx.send(Err(InboxError::Lost)));
            }
        }
    }

    fn closed_reason(&self) -> String {
        lock(&self.shared.closed)
            .clone()
            .unwrap_or_else(|| "the NATS client closed".to_owned())
    }

    /// Subscribe and start the dispatching task (and the publishing task, when batching), once.
    async fn start(&self) -> Result<(), InboxError> {
        if self.task.initialized() {
            return Ok(());
        }
        self.task
            .get_or_try_init(|| async {
                let wildcard = format!("{}*", self.shared.prefix);
                let sub = self
                    .shared
                    .client
                    .subscribe(wildcard)
                    .await
                    .map_err(|e| InboxError::Closed(e.to_string()))?;
                let publishing = self
                    .shared
                    .batching
                    .then(|| tokio::spawn(batches::publishing(Arc::clone(&self.shared))));
                Ok::<_, InboxError>(Tasks {
                    dispatching: tokio::spawn(dispatch(Arc::clone(&self.shared), sub)),
                    sweeping: tokio::spawn(sweep::sweeping(Arc::clone(&self.shared))),
                    publishing,
                })
            })
            .await
            .map(|_| ())
    }

    /// The request with a reply subject nobody else waits on, its entry in the map, and whether
    /// other requests wait; or [`InboxError::Full`].
    fn register(
        &self,
        subject: Subject,
        headers: Option<HeaderMap>,
        payload: Bytes,
        deadline: Instant,
        losable: bool,
    ) -> Result<(Outgoing, Entry<'_>, bool), InboxError> {
        let (tx, rx) = oneshot::channel();
        let (id, reply, others, wake) = {
            let mut calls = lock(&self.shared.pending);
            if calls.waiting.len() >= self.shared.max {
                return Err(InboxError::Full(self.shared.max));
            }
            if let Some(reason) = lock(&self.shared.closed).as_ref() {
                return Err(InboxError::Closed(reason.clone()));
            }
            let (id, reply) = match calls.free.pop() {
                Some(free) => free,
                None => {
                    let id = self.shared.next.fetch_add(1, Ordering::Relaxed);
                    let reply = crate::nats::batch::reply_subject(&self.shared.prefix, id);
                    (id, Subject::from(reply))
                }
            };
            // Kept (a reference count, not a copy) to name the next call given this number.
            let kept = self.shared.reuse.then(|| reply.clone());
            let losable = losable.then(|| subject.clone());
            calls.waiting.insert(
                id,
                Waiting {
                    tx,
                    reply: kept,
                    losable,
                    deadline,
                },
            );
            let wake = calls.due_by(deadline);
            (id, reply, calls.waiting.len() > 1, wake)
        };
        if wake {
            self.shared.sweep.notify_one();
        }
        let entry = Entry {
            shared: &self.shared,
            id,
            rx,
            answered: false,
        };
        let out = Outgoing {
            id,
            subject,
            reply,
            headers,
            payload,
            batch: None,
        };
        Ok((out, entry, others))
    }
}

/// Publish one request (a plain message with a reply subject; with its headers when given).
/// As one [`OutboundMessage`]: its subjects are moved to the client's connection task, not
/// copied (`publish_with_reply` clones both, and checks the reply subject this inbox made).
async fn publish(client: &Client, out: Outgoing) -> Result<(), async_nats::PublishError> {
    client
        .publish_message(OutboundMessage {
            subject: out.subject,
            reply: Some(out.reply),
            payload: out.payload,
            headers: out.headers,
        })
        .await
}

/// A request's place in the map: removed on drop unless its reply took it out.
struct Entry<'a> {
    shared: &'a Shared,
    id: u64,
    rx: oneshot::Receiver<Outcome>,
    answered: bool,
}

impl Drop for Entry<'_> {
    fn drop(&mut self) {
        if self.answered {
            return;
        }
        // Closed first, and only a closed sender is taken out: when the reply took this entry
        // out and its number went to another call meanwhile, the map holds that call's sender,
        // open, which stays. The number is not reused: its reply may still come.
        self.rx.close();
        let mut calls = lock(&self.shared.pending);
        if calls
            .waiting
            .get(&self.id)
            .is_some_and(|w| w.tx.is_closed())
        {
            calls.waiting.remove(&self.id);
        }
    }
}

/// The counter of a reply subject of this inbox, if it is one.
fn counter(prefix: &str, subject: &str) -> Option<u64> {
    let digits = subject.strip_prefix(prefix)?;
    if digits.is_empty() || digits.len() > 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Hand each reply to its request; ignore replies nobody waits for (late, or not ours).
async fn dispatch(shared: Arc<Shared>, mut sub: Subscriber) {
    while let Some(message) = sub.next().await {
        // Only an inbox that has sent a batch gets batches of answers: another passes every
        // reply on as it is.
        if shared.sent_batches.load(Ordering::Relaxed)
            && crate::nats::batch::is_batch(&message.payload)
        {
            batches::answers(&shared, message);
            continue;
        }
        let Some(id) = counter(&shared.prefix, &message.subject) else {
            tracing::debug!(target: LOG, subject = %message.subject, "ignoring a reply to a subject this inbox never handed out");
            continue;
        };
        if message.status == Some(StatusCode::NO_RESPONDERS) && batches::unserved(&shared, id).await
        {
            continue;
        }
        // Its one reply came: the number (and its subject) may name the next call's reply.
        let waiting = lock(&shared.pending).answered(id, shared.max);
        match waiting {
            // A request dropped between its receiver and this send: nothing to do.
            Some(tx) => drop(tx.send(Ok(message))),
            None => {
                tracing::debug!(target: LOG, id, "ignoring a reply nobody waits for (late, or sent twice)");
            }
        }
    }
    // The subscription ended: fail what waits, refuse what comes.
    *lock(&shared.closed) = Some("the reply subscription ended".to_owned());
    lock(&shared.pending).waiting.clear();
}

#[cfg(test)]
mod tests {
    use super::counter;

    #[test]
    fn only_decimal_counters_after_the_prefix_are_read() {
        let p = "_INBOX.abc.";
        assert_eq!(counter(p, "_INBOX.abc.0"), Some(0));
        assert_eq!(
            counter(p, "_INBOX.abc.18446744073709551615"),
            Some(u64::MAX)
        );
        assert_eq!(counter(p, "_INBOX.abc.18446744073709551616"), None);
        assert_eq!(counter(p, "_INBOX.abc."), None);
        assert_eq!(counter(p, "_INBOX.abc.+1"), None);
        assert_eq!(counter(p, "_INBOX.abc.1.2"), None);
        assert_eq!(counter(p, "_INBOX.abd.1"), None);
        assert_eq!(counter(p, "_INBOX.abc.12x"), None);
    }
}
