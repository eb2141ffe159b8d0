//! Hemera's NATS wire: subject = topic, queue group `queue.<topic>` (or `queue$`, or none for
//! `pubsub$`), JSON envelopes, replies to the request's reply subject.

use std::sync::{Arc, Weak};
use std::time::Duration;

use async_nats::{Client, RequestErrorKind, Subscriber};
use futures::StreamExt;
use serde_json::Value;

use plume_transport::{InboxError, NatsInbox};

use super::{LOG, Serving};
use crate::error::HemeraError;
use crate::hemera::{Hemera, Inner};
use crate::message::{MAX_REPLIES, Message, Replies};
use crate::registry::TopicOptions;
use crate::serve::Started;
use crate::served::{Echo, read_request};
use crate::wire::{HemeraRequest, decode_outcome};

pub(super) async fn serve(
    client: &Client,
    node: &Hemera,
    topic: &str,
    options: &TopicOptions,
) -> Result<Serving, HemeraError> {
    let subscribed = match options.group(topic) {
        Some(group) => client.queue_subscribe(topic.to_owned(), group).await,
        None => client.subscribe(topic.to_owned()).await,
    };
    let mut sub =
        subscribed.map_err(|e| HemeraError::hemera(format!("NATS subscribe to `{topic}`: {e}")))?;
    if let Some(n) = options.max_messages {
        sub.unsubscribe_after(n)
            .await
            .map_err(|e| HemeraError::hemera(format!("NATS unsubscribe_after: {e}")))?;
    }
    // The subscription is in place once the server has seen it.
    round_trip(client).await?;
    let task = tokio::spawn(receive(
        Arc::downgrade(&node.inner),
        client.clone(),
        topic.to_owned(),
        sub,
        options.max_messages,
    ));
    Ok(Serving {
        task: Some(task),
        endpoint: None,
    })
}

/// Wait until the server has processed everything this connection sent before (a flush only
/// writes it out): a request nobody answers comes back as "no responders" after them.
pub(super) async fn round_trip(client: &Client) -> Result<(), HemeraError> {
    let request = async_nats::Request::new().timeout(Some(Duration::from_secs(10)));
    match client.send_request(client.new_inbox(), request).await {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == RequestErrorKind::NoResponders => Ok(()),
        Err(e) => Err(HemeraError::hemera(format!("NATS round trip: {e}"))),
    }
}

/// Take the topic's messages, each served as it comes (matched, its handler called and polled
/// once here: most answer at once, and their reply is published from here) and, when its
/// handler waits, finished in a task of its own (at most
/// [`Options::concurrency`](crate::Options::concurrency) at once). As on the mesh, a handler
/// should not block before its first await: until then it holds up the topic.
async fn receive(
    node: Weak<Inner>,
    client: Client,
    topic: String,
    mut sub: Subscriber,
    max: Option<u64>,
) {
    // Shared with the tasks of waiting handlers (no copy per message).
    let topic: Arc<str> = Arc::from(topic);
    let mut count = 0u64;
    while let Some(msg) = sub.next().await {
        let Some(inner) = node.upgrade() else { break };
        let node = Hemera { inner };
        count += 1;
        if max.is_some_and(|m| count >= m) {
            // The last message of a `maxMessages$` topic: serve it, then drop the patterns.
            let answer = Answer::start(&node, &topic, msg);
            answer.finish(&node, &client, &topic).await;
            node.topics().remove(&*topic);
            break;
        }
        // At most `concurrency` messages served at once (taken without a wait when one is
        // free, as it mostly is).
        let permits = &node.inner.permits;
        let permit = match Arc::clone(permits).try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => match Arc::clone(permits).acquire_owned().await {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let answer = Answer::start(&node, &topic, msg);
        match answer.settle(&node, &topic).await {
            // Answered at once (most are): published from here, no task, no clones.
            Ok(done) => {
                done.send(&client, &topic).await;
                drop(permit);
            }
            Err(waiting) => {
                let (client, topic) = (client.clone(), Arc::clone(&topic));
                tokio::spawn(async move {
                    waiting.finish(&node, &client, &topic).await;
                    drop(permit);
                });
            }
        }
    }
}

/// One received message being served: what its reply echoes, where it goes, and the handler's
/// progress (or its outcome).
struct Answer {
    echo: Echo,
    reply: Option<async_nats::Subject>,
    started: Started,
}

/// A served message's outcome, to publish.
struct Done {
    echo: Echo,
    reply: Option<async_nats::Subject>,
    outcome: Result<Value, Value>,
}

impl Answer {
    /// Read `msg` and hand it to its handler (no await).
    fn start(node: &Hemera, topic: &str, msg: async_nats::Message) -> Answer {
        match read_request(&msg.payload) {
            Ok((incoming, echo)) => {
                let next = msg.reply.clone().map(|reply| ReplyNext {
                    reply,
                    echo: echo.clone(),
                });
                let started = node.start_one(topic, incoming, next);
                Answer {
                    echo,
                    reply: msg.reply,
                    started,
                }
            }
            Err(e) => {
                tracing::warn!(target: LOG, subject = %msg.subject, "undecodable request: {}", e.message);
                let error = serde_json::to_value(&e).unwrap_or(Value::Null);
                Answer {
                    echo: Echo::undecodable(),
                    reply: msg.reply,
                    started: Started::Done(Err(error)),
                }
            }
        }
    }

    /// Poll the handler once: its outcome when it answered at once, else the answer to finish.
    async fn settle(self, node: &Hemera, topic: &str) -> Result<Done, Answer> {
        let Answer {
            echo,
            reply,
            started,
        } = self;
        match started.settle(node.name(), topic).await {
            Ok(outcome) => Ok(Done {
                echo,
                reply,
                outcome,
            }),
            Err(started) => Err(Answer {
                echo,
                reply,
                started,
            }),
        }
    }

    /// Await the handler and publish its outcome.
    async fn finish(self, node: &Hemera, client: &Client, topic: &str) {
        let outcome = self.started.finish(node.name(), topic).await;
        Done {
            echo: self.echo,
            reply: self.reply,
            outcome,
        }
        .send(client, topic)
        .await;
    }
}

impl Done {
    /// Publish the response to the reply subject (a message without one logs its error).
    async fn send(self, client: &Client, topic: &str) {
        let Some(reply) = self.reply else {
            // A pubsub message: nobody to tell, so the error is logged (as Hemera does).
            if let Err(error) = &self.outcome {
                tracing::warn!(target: LOG, topic, %error, "message without a reply subject failed");
            }
            return;
        };
        match self.echo.response(&self.outcome) {
            Ok(body) => {
                if let Err(e) = client.publish(reply, body.into()).await {
                    tracing::warn!(target: LOG, topic, "reply not sent: {e}");
                }
            }
            Err(e) => tracing::warn!(target: LOG, topic, "{}", e.message),
        }
    }
}

/// Where a streaming handler's intermediate replies go: the request's reply subject, each a
/// full response envelope (the request's meta, trace and request echoed). Published on the
/// node's own connection (nothing is cloned per message for a handler that never streams).
#[derive(Debug, Clone)]
pub(crate) struct ReplyNext {
    reply: async_nats::Subject,
    echo: Echo,
}

/// Publish one intermediate reply.
pub(super) async fn reply_next(
    client: &Client,
    next: &ReplyNext,
    value: Value,
) -> Result<(), HemeraError> {
    let body = next.echo.response(&Ok(value))?;
    client
        .publish(next.reply.clone(), body.into())
        .await
        .map_err(|e| HemeraError::hemera(format!("NATS publish of a reply: {e}")))
}

/// An act and its reply, through the node's one reply subscription (no inbox made per act).
pub(super) async fn request(
    inbox: &NatsInbox,
    msg: &Message<'_>,
    app: &str,
) -> Result<Value, HemeraError> {
    let method = msg.method();
    let body = HemeraRequest::new(msg, &method).to_vec()?;
    let deadline = tokio::time::Instant::now() + msg.timeout;
    match inbox
        .request(msg.topic.into(), None, body.into(), deadline)
        .await
    {
        Ok(reply) => decode_outcome(&reply.payload),
        Err(e) => Err(match e {
            InboxError::TimedOut => HemeraError::timeout(&method, app),
            InboxError::NoResponders => no_responders(msg.topic, &method, app),
            e => HemeraError::hemera(format!("NATS request on `{}` failed: {e}", msg.topic)),
        }),
    }
}

/// Nobody subscribes to the topic: Hemera's caller would wait for its timeout; the NATS server
/// says so at once, and the caller gets a `PatternNotFound` that says why.
fn no_responders(topic: &str, method: &str, app: &str) -> HemeraError {
    HemeraError::pattern_not_found(method, app)
        .with("isServer", Value::Bool(false))
        .with(
            "message",
            Value::from(format!(
                "No action found for this pattern: nobody subscribes to topic `{topic}`"
            )),
        )
}

pub(super) async fn request_many(
    client: &Client,
    msg: &Message<'_>,
    replies: Replies,
    app: &str,
) -> Result<Vec<Result<Value, HemeraError>>, HemeraError> {
    let method = msg.method();
    let body = HemeraRequest::new(msg, &method).to_vec()?;
    let nats = |e: &dyn std::fmt::Display| HemeraError::hemera(format!("NATS: {e}"));
    let inbox = client.new_inbox();
    let mut sub = client
        .subscribe(inbox.clone())
        .await
        .map_err(|e| nats(&e))?;
    client
        .publish_with_reply(msg.topic.to_owned(), inbox, body.into())
        .await
        .map_err(|e| nats(&e))?;
    let deadline = tokio::time::Instant::now() + msg.timeout;
    let limit = match replies {
        Replies::Exactly(n) => n,
        Replies::Unbounded => MAX_REPLIES,
    };
    let mut out = Vec::new();
    while out.len() < limit {
        match tokio::time::timeout_at(deadline, sub.next()).await {
            Ok(Some(reply)) => out.push(decode_outcome(&reply.payload)),
            Ok(None) => break,
            Err(_) => {
                if matches!(replies, Replies::Exactly(_)) {
                    out.push(Err(HemeraError::timeout(&method, app)));
                }
                break;
            }
        }
    }
    Ok(out)
}

pub(super) async fn publish(client: &Client, msg: &Message<'_>) -> Result<(), HemeraError> {
    let method = msg.method();
    let body = HemeraRequest::new(msg, &method).to_vec()?;
    let topic = &msg.topic;
    client
        .publish(topic.to_string(), body.into())
        .await
        .map_err(|e| HemeraError::hemera(format!("NATS publish on `{topic}`: {e}")))?;
    client
        .flush()
        .await
        .map_err(|e| HemeraError::hemera(format!("NATS flush: {e}")))
}
