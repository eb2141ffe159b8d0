//! The `redis` backend: a registry of TTL keys plus pub/sub notifications.
//!
//! Each node keeps one key, `plume:{env}:node:{id}`, whose value describes it (JSON) and whose
//! TTL is the node timeout; it is refreshed on every heartbeat. Joins, table changes and leaves
//! are also announced on the channel `plume:{env}:events`, so peers learn of them at once. On
//! each heartbeat the agent also scans the registry, which repairs any missed notification: a
//! key that expired is a dead node.
//!
//! With a mesh secret, values and notifications are signed ([`signed`](super::signed)); unsigned
//! or wrongly signed ones are ignored, so a client that can write to Redis cannot point a node
//! at another address.
//!
//! If Redis goes away the agent keeps its last-known peers (they still have their links),
//! logs once, retries on every heartbeat, and registers again when Redis returns. It never
//! panics and never ends the process.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::StreamExt;
use redis::AsyncCommands;
use redis::aio::MultiplexedConnection;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until, timeout};
use tokio_util::sync::CancellationToken;

use super::agent::Command;
use super::signed;
use super::state::jittered;
use super::{LocalNode, NodeId, PROTOCOL_VERSION, PeerEvent, PeerInfo, Shared};

/// Notifications buffered between the pub/sub task and the agent.
const NOTIFY_CHANNEL: usize = 1024;
/// Most registry keys read per scan.
const MAX_NODES: usize = 10_000;
/// The labels of signed values: a registry record cannot pass for a notification.
const RECORD: &str = "redis-record";
const NOTICE: &str = "redis-notice";

/// A registry value and a notification body.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    node: String,
    key: String,
    addr: SocketAddr,
    table_version: u64,
    protocol: u16,
}

/// A pub/sub notification.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Notice {
    /// `up`, `update` or `leave`.
    op: String,
    #[serde(flatten)]
    record: Record,
}

impl Record {
    fn info(&self) -> Option<PeerInfo> {
        Some(PeerInfo {
            node: self.node.parse().ok()?,
            key: self.key.clone(),
            addr: self.addr,
            table_version: self.table_version,
            protocol: self.protocol,
        })
    }
}

/// The redis agent.
pub(crate) struct RedisAgent {
    client: redis::Client,
    conn: Option<MultiplexedConnection>,
    local: LocalNode,
    heartbeat: Duration,
    node_timeout: Duration,
    secret: Option<Arc<[u8]>>,
    shared: Arc<Shared>,
    peers: HashMap<NodeId, PeerInfo>,
    pending: super::pending::Pending,
    /// Since when Redis has been unreachable (None while it answers).
    outage: Option<Instant>,
    /// Until then, peers missing from the registry are kept: after an outage, they may not
    /// have registered again yet.
    grace_until: Instant,
    node_key: String,
    channel: String,
    pattern: String,
}

impl std::fmt::Debug for RedisAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisAgent")
            .field("node", &self.local.node)
            .finish_non_exhaustive()
    }
}

impl RedisAgent {
    pub(crate) fn new(
        url: &str,
        local: LocalNode,
        (heartbeat, node_timeout): (Duration, Duration),
        secret: Option<Arc<[u8]>>,
        shared: Arc<Shared>,
    ) -> std::io::Result<Self> {
        let client = redis::Client::open(url).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("PLUME_REDIS_URL: {e}"),
            )
        })?;
        let env = &local.environment;
        Ok(Self {
            client,
            conn: None,
            node_key: format!("plume:{env}:node:{}", local.node),
            channel: format!("plume:{env}:events"),
            pattern: format!("plume:{env}:node:*"),
            local,
            heartbeat,
            node_timeout,
            secret,
            shared,
            peers: HashMap::new(),
            pending: super::pending::Pending::default(),
            outage: None,
            grace_until: Instant::now(),
        })
    }

    fn record(&self) -> Record {
        Record {
            node: self.local.node.to_string(),
            key: self.local.key.clone(),
            addr: self.local.addr,
            table_version: self.shared.table_version.load(Ordering::Acquire),
            protocol: PROTOCOL_VERSION,
        }
    }

    /// `value` signed when there is a secret.
    fn seal(&self, value: &impl Serialize, label: &str) -> String {
        let text = serde_json::to_string(value).unwrap_or_default();
        signed::seal(text, self.secret.as_deref(), label, &self.local.environment)
    }

    pub(crate) async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        events: mpsc::Sender<PeerEvent>,
    ) {
        let stop = CancellationToken::new();
        let (notify_tx, mut notify_rx) = mpsc::channel(NOTIFY_CHANNEL);
        tokio::spawn(subscriber(
            self.client.clone(),
            self.channel.clone(),
            self.heartbeat,
            notify_tx,
            (
                stop.clone(),
                self.secret.clone(),
                self.local.environment.clone(),
            ),
        ));
        let _stop = stop.drop_guard();
        let shared = self.shared.clone();
        let mut events = Some(events);
        self.beat("up").await;
        let mut next_beat = Instant::now() + jittered(self.heartbeat, rand::random());
        loop {
            let mut receiver_gone = false;
            tokio::select! {
                command = commands.recv() => {
                    self.leave().await;
                    if let Some(Command::Leave(ack)) = command {
                        let _ = ack.send(());
                    }
                    return;
                }
                () = sleep_until(next_beat) => {
                    self.beat("").await;
                    next_beat = Instant::now() + jittered(self.heartbeat, rand::random());
                }
                () = shared.table_changed.notified() => self.beat("update").await,
                Some(notice) = notify_rx.recv() => self.on_notice(notice),
                permit = async {
                    match &events {
                        Some(tx) => tx.reserve().await,
                        None => std::future::pending().await,
                    }
                }, if !self.pending.is_empty() => match permit {
                    Ok(permit) => {
                        if let Some(event) = self.pending.pop_front() {
                            permit.send(event);
                        }
                    }
                    Err(_) => receiver_gone = true,
                },
            }
            if receiver_gone {
                events = None;
            }
            if events.is_none() {
                self.pending.clear();
            }
        }
    }

    fn emit(&mut self, event: PeerEvent) {
        if self.pending.push(event) {
            tracing::warn!(node = %self.local.node, "discovery receiver too slow; oldest news dropped (never a Down)");
        }
        let peers: Vec<PeerInfo> = self.peers.values().cloned().collect();
        *crate::sync::lock(&self.shared.peers) = peers;
    }

    fn upsert(&mut self, info: PeerInfo) {
        if info.node == self.local.node {
            return;
        }
        match self.peers.get(&info.node) {
            Some(old) if *old == info => {}
            Some(_) => {
                self.peers.insert(info.node, info.clone());
                self.emit(PeerEvent::Updated(info));
            }
            None => {
                self.peers.insert(info.node, info.clone());
                self.emit(PeerEvent::Up(info));
            }
        }
    }

    fn remove(&mut self, node: NodeId) {
        if self.peers.remove(&node).is_some() {
            self.emit(PeerEvent::Down { node });
        }
    }

    fn on_notice(&mut self, notice: Notice) {
        let Some(info) = notice.record.info() else {
            tracing::debug!("ignoring a malformed redis notification");
            return;
        };
        match notice.op.as_str() {
            "leave" => self.remove(info.node),
            "up" | "update" => self.upsert(info),
            _ => {}
        }
    }

    async fn connection(&mut self) -> Option<MultiplexedConnection> {
        if let Some(c) = &self.conn {
            return Some(c.clone());
        }
        match timeout(
            self.heartbeat,
            self.client.get_multiplexed_async_connection(),
        )
        .await
        {
            Ok(Ok(c)) => {
                self.conn = Some(c.clone());
                Some(c)
            }
            Ok(Err(e)) => {
                self.failed(&e.to_string());
                None
            }
            Err(_) => {
                self.failed("connect timed out");
                None
            }
        }
    }

    fn failed(&mut self, reason: &str) {
        self.conn = None;
        if self.outage.is_none() {
            self.outage = Some(Instant::now());
            tracing::warn!(node = %self.local.node, %reason, peers = self.peers.len(), "redis unreachable; keeping the last-known peers and retrying");
        }
    }

    /// Register (SET with TTL), announce `op` when not empty, and reconcile with the registry.
    async fn beat(&mut self, op: &str) {
        let Some(mut conn) = self.connection().await else {
            return;
        };
        let record = self.record();
        let op = if self.outage.is_some() { "up" } else { op };
        let result = timeout(self.heartbeat, async {
            let value = self.seal(&record, RECORD);
            let ttl = u64::try_from(self.node_timeout.as_millis()).unwrap_or(u64::MAX);
            let _: () = redis::cmd("SET")
                .arg(&self.node_key)
                .arg(&value)
                .arg("PX")
                .arg(ttl)
                .query_async(&mut conn)
                .await?;
            if !op.is_empty() {
                let notice = Notice {
                    op: op.to_owned(),
                    record: record.clone(),
                };
                let body = self.seal(&notice, NOTICE);
                let _: i64 = conn.publish(&self.channel, body).await?;
            }
            // Bytes, not strings: one value (or key) that is not UTF-8 must not fail the scan.
            let mut keys: Vec<Vec<u8>> = Vec::new();
            let mut cursor: u64 = 0;
            loop {
                let (next, batch): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&self.pattern)
                    .arg("COUNT")
                    .arg(1000)
                    .query_async(&mut conn)
                    .await?;
                keys.extend(batch);
                if next == 0 || keys.len() >= MAX_NODES {
                    break;
                }
                cursor = next;
            }
            let values: Vec<Option<Vec<u8>>> = if keys.is_empty() {
                Vec::new()
            } else {
                conn.mget(&keys).await?
            };
            Ok::<_, redis::RedisError>(values)
        })
        .await;
        match result {
            Ok(Ok(values)) => {
                if let Some(since) = self.outage.take() {
                    tracing::info!(node = %self.local.node, down_for_ms = since.elapsed().as_millis() as u64, "redis is back; registered again");
                    self.grace_until = Instant::now() + self.node_timeout;
                }
                self.reconcile(values);
            }
            Ok(Err(e)) => self.failed(&e.to_string()),
            Err(_) => self.failed("redis timed out"),
        }
    }

    fn reconcile(&mut self, values: Vec<Option<Vec<u8>>>) {
        let mut seen = Vec::new();
        for v in values.into_iter().flatten() {
            let (secret, env) = (self.secret.as_deref(), &self.local.environment);
            let Some(text) = signed::open(&v, secret, RECORD, env) else {
                tracing::debug!(node = %self.local.node, "ignoring an unsigned or badly signed registry record");
                continue;
            };
            let Ok(record) = serde_json::from_str::<Record>(&text) else {
                continue;
            };
            if let Some(info) = record.info() {
                seen.push(info.node);
                self.upsert(info);
            }
        }
        if Instant::now() < self.grace_until {
            return;
        }
        let gone: Vec<NodeId> = self
            .peers
            .keys()
            .filter(|n| !seen.contains(n))
            .copied()
            .collect();
        for node in gone {
            self.remove(node);
        }
    }

    async fn leave(&mut self) {
        let Some(mut conn) = self.connection().await else {
            return;
        };
        let notice = Notice {
            op: "leave".to_owned(),
            record: self.record(),
        };
        let body = self.seal(&notice, NOTICE);
        let done = timeout(self.heartbeat, async {
            let _: i64 = conn.del(&self.node_key).await?;
            let _: i64 = conn.publish(&self.channel, body).await?;
            Ok::<_, redis::RedisError>(())
        })
        .await;
        if !matches!(done, Ok(Ok(()))) {
            tracing::debug!(node = %self.local.node, "could not deregister from redis; the key expires by itself");
        }
    }
}

/// Forwards the notifications of `channel`, reconnecting every heartbeat while Redis is away.
async fn subscriber(
    client: redis::Client,
    channel: String,
    heartbeat: Duration,
    tx: mpsc::Sender<Notice>,
    (stop, secret, environment): (CancellationToken, Option<Arc<[u8]>>, String),
) {
    loop {
        let connected = async {
            let mut pubsub = timeout(heartbeat, client.get_async_pubsub())
                .await
                .map_err(|_| "timed out".to_owned())?
                .map_err(|e| e.to_string())?;
            pubsub
                .subscribe(&channel)
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, String>(pubsub)
        };
        let pubsub = tokio::select! {
            () = stop.cancelled() => return,
            c = connected => c,
        };
        match pubsub {
            Ok(pubsub) => {
                let mut stream = pubsub.into_on_message();
                loop {
                    let msg = tokio::select! {
                        () = stop.cancelled() => return,
                        m = stream.next() => m,
                    };
                    let Some(msg) = msg else { break };
                    let Ok(body) = msg.get_payload::<Vec<u8>>() else {
                        continue;
                    };
                    let Some(body) = signed::open(&body, secret.as_deref(), NOTICE, &environment)
                    else {
                        tracing::debug!("ignoring an unsigned or badly signed redis notification");
                        continue;
                    };
                    match serde_json::from_str::<Notice>(&body) {
                        Ok(n) => {
                            if tx.send(n).await.is_err() {
                                return;
                            }
                        }
                        Err(e) => {
                            tracing::debug!(error = %e, "ignoring a malformed redis notification")
                        }
                    }
                }
                tracing::debug!("redis subscription ended; reconnecting");
            }
            Err(e) => tracing::debug!(error = %e, "redis subscription failed; retrying"),
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(heartbeat) => {}
        }
    }
}
