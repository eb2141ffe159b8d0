//! A peer speaks only for itself (issue 14, item 5): a raw peer on a real loopback link to a
//! consumer of the distribution plugin sends what a real provider would send about itself,
//! about another node and a service it does not provide; the consumer believes only the first.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use plume::{App, MemoryService, Params};
use plume_transport::discovery::NodeId;
use plume_transport::distribution::{Distribution, DistributionHandle};
use plume_transport::protocol::{
    EventMsg, Frame, Goaway, Hello, Kind, PROTOCOL_VERSION, TableDelta, TableSnapshot,
};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};

const WAIT: Duration = Duration::from_secs(10);

fn env(name: &str) -> String {
    format!("claims-{name}-{}-{}", std::process::id(), NodeId::random())
}

async fn within<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    match timeout(WAIT, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out waiting for {what}"),
    }
}

/// A provider of `todos` and a consumer of it, in environment `e`.
async fn provider_and_consumer(
    e: &str,
    grace: Duration,
) -> (App, DistributionHandle, App, DistributionHandle) {
    let provider = App::new();
    provider.use_service("todos", MemoryService::<Value>::new());
    let p = Distribution::new()
        .environment(e)
        .key("p")
        .remote_services(false)
        .start(&provider)
        .await
        .expect("provider");
    let consumer = App::new();
    let c = Distribution::new()
        .environment(e)
        .key("c")
        .grace_period(grace)
        .start(&consumer)
        .await
        .expect("consumer");
    within("todos mounted", c.remote_ready("todos")).await;
    (provider, p, consumer, c)
}

/// A raw peer linked to `node`: hellos and snapshots exchanged (ours provides nothing).
struct RawPeer {
    conn: TcpStream,
    buf: BytesMut,
    next_ping: u64,
}

impl RawPeer {
    async fn link(node: &DistributionHandle, e: &str) -> Self {
        let mut conn = TcpStream::connect(node.mesh().local_addr())
            .await
            .expect("dial");
        let hello = Hello {
            protocol: PROTOCOL_VERSION,
            node: NodeId::random().to_string(),
            environment: e.to_owned(),
            key: "raw".into(),
            auth: false,
            nonce: vec![0; 32],
        };
        conn.write_all(&Frame::with(Kind::Hello, 0, &hello).to_bytes())
            .await
            .expect("hello");
        let mut peer = Self {
            conn,
            buf: BytesMut::new(),
            next_ping: 1,
        };
        assert_eq!(peer.next_frame().await.kind, Kind::Hello);
        assert_eq!(peer.next_frame().await.kind, Kind::TableSnapshot);
        let ours = TableSnapshot {
            version: 1,
            entries: Vec::new(),
            topics: Vec::new(),
        };
        peer.send(Frame::with(Kind::TableSnapshot, 0, &ours)).await;
        peer
    }

    async fn next_frame(&mut self) -> Frame {
        loop {
            if let Some(f) = Frame::decode(&mut self.buf, 1 << 24).expect("frames") {
                return f;
            }
            let n = within("a frame", self.conn.read_buf(&mut self.buf))
                .await
                .expect("read");
            assert!(n > 0, "the node closed the link");
        }
    }

    async fn send(&mut self, frame: Frame) {
        self.conn.write_all(&frame.to_bytes()).await.expect("write");
    }

    async fn publish(&mut self, topic: &str, data: Value) {
        self.send(Frame::with(
            Kind::Event,
            0,
            &EventMsg {
                topic: topic.to_owned(),
                data,
                traceparent: None,
            },
        ))
        .await;
    }

    /// Ping and wait for the pong: the node's reader has handled every frame sent before.
    async fn sync(&mut self) {
        let id = self.next_ping;
        self.next_ping += 1;
        self.send(Frame::empty(Kind::Ping, id)).await;
        loop {
            let f = self.next_frame().await;
            if f.kind == Kind::Pong && f.id == id {
                return;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_of_a_service_come_only_from_its_providers() {
    let e = env("events");
    let (provider, _p, consumer, c) = provider_and_consumer(&e, Duration::from_secs(30)).await;
    let seen: Arc<Mutex<Vec<Value>>> = Arc::default();
    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    let log = seen.clone();
    consumer.on_event(move |ev| {
        if ev.path == "todos" && ev.event == "created" {
            lock(&log).push(ev.data.clone());
            let _ = tx.try_send(());
        }
    });
    let mut raw = RawPeer::link(&c, &e).await;
    // The raw peer provides nothing, yet publishes on the topic of `todos created`.
    let forged =
        json!({ "key": "p", "path": "todos", "event": "created", "data": { "forged": true } });
    raw.publish("evt:created@todos", forged).await;
    raw.sync().await;
    // The real provider's event, on the same topic after the forged one.
    provider
        .service("todos")
        .expect("todos")
        .create(json!({ "text": "real" }), Params::new())
        .await
        .expect("create");
    within("the real event", rx.recv()).await;
    let seen = lock(&seen).clone();
    assert_eq!(seen.len(), 1, "events seen: {seen:?}");
    assert_eq!(seen[0]["text"], "real");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_cannot_withdraw_another_nodes_service() {
    let e = env("withdrawn");
    let (provider, p, consumer, c) = provider_and_consumer(&e, Duration::from_secs(3600)).await;
    let provider_node = p.mesh().node_id();
    // The provider's node is lost: the proxy answers 503 for its grace period (an hour).
    provider.shutdown().await;
    within("the grace period", async {
        loop {
            let proxy = consumer
                .service("todos")
                .expect("mounted during the grace period");
            if proxy.find(Params::new()).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    // Another node announces that the provider withdrew `todos`, which would end the grace
    // period at once.
    let mut raw = RawPeer::link(&c, &e).await;
    let notice = json!({ "node": provider_node.to_string(), "path": "todos" });
    raw.publish("plume.distribution.withdrawn", notice).await;
    raw.sync().await;
    // The consumer handles the notice in its table task: unbelieved, it takes a few
    // milliseconds; watch for a second.
    let until = Instant::now() + Duration::from_secs(1);
    while Instant::now() < until {
        assert!(
            consumer.service("todos").is_some() && c.remote_paths() == ["todos"],
            "a forged withdrawal notice removed the proxy"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Closed first: the raw peer would not acknowledge the consumer's goaway.
    drop(raw);
    consumer.shutdown().await;
}

/// On the mesh itself a peer's table changes and goaway touch only the routes of its own link
/// (by construction: the table removes what goes through the link they came on). A guard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_cannot_remove_another_nodes_routes() {
    let e = env("routes");
    let (_provider, p, consumer, c) = provider_and_consumer(&e, Duration::from_secs(30)).await;
    let mut raw = RawPeer::link(&c, &e).await;
    let delta = TableDelta {
        version: 2,
        added: Vec::new(),
        removed: vec!["svc:todos".into()],
    };
    raw.send(Frame::with(Kind::TableDelta, 0, &delta)).await;
    let goaway = Goaway {
        reason: "forged".into(),
        ack: false,
    };
    raw.send(Frame::with(Kind::Goaway, 0, &goaway)).await;
    raw.sync().await;
    let providers: Vec<NodeId> = c
        .mesh()
        .providers("svc:todos")
        .iter()
        .map(|i| i.node)
        .collect();
    assert_eq!(providers, [p.mesh().node_id()]);
    let proxy = consumer.service("todos").expect("mounted");
    proxy
        .find(Params::new())
        .await
        .expect("the proxy still answers");
    drop(raw);
    consumer.shutdown().await;
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
