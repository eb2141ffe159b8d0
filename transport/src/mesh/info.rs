//! The node-info endpoint every node answers ([`NODE_INFO`]): what the mesh monitor
//! ([`crate::monitor`]) asks each node. It is built in: not in the node's table, never
//! announced, so no node lists it as a provider and no call is ever routed to it by name; it is
//! reached only by a call addressed to the node itself (`mesh.to(NODE_INFO).on(node)`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use futures::future::join_all;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::time::Instant;

use super::handler::{EndpointHandler, Request};
use super::{Inner, Mesh};
use crate::engine::Sink;
use crate::protocol::PROTOCOL_VERSION;
use crate::sync::lock;
use plume::Error;

/// The name of the built-in node-info endpoint (`docs/protocol.md`, "Node info").
pub const NODE_INFO: &str = "$plume/node-info";

/// Most links a node measures and reports in one answer.
pub const MAX_REPORTED_LINKS: usize = 256;
/// How long a node waits for the pings of its links in one answer, at most.
const LINK_PING_WAIT: Duration = Duration::from_millis(500);
/// Longest node name kept ([`Mesh::set_name`]).
const MAX_NAME: usize = 255;
/// Answers within this time of the last measurement reuse its round trips: a peer that asks
/// often cannot make this node ping all its links each time.
const LINKS_FRESH: Duration = Duration::from_millis(250);

/// A node's answer to [`NODE_INFO`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Its id (32 hex digits).
    pub node: String,
    /// Its name ([`Mesh::set_name`]; by default the program's name and process id).
    pub name: String,
    /// Its key.
    pub key: String,
    /// Its environment.
    pub environment: String,
    /// The address its mesh listener is bound to.
    pub addr: String,
    /// How long the node has been up, in milliseconds.
    pub uptime_ms: u64,
    /// The mesh protocol version it speaks.
    pub protocol: u16,
    /// True for a monitor node, which provides nothing and is not shown as a node.
    #[serde(default)]
    pub monitor: bool,
    /// The endpoints it provides, sorted.
    pub services: Vec<String>,
    /// Its links (none on NATS), each with the round trip of a ping over it.
    pub links: Vec<LinkInfo>,
}

/// One link of a node, as its [`NodeInfo`] reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinkInfo {
    /// The node at the other end.
    pub node: String,
    /// The round trip of a ping over the link, in milliseconds (`None`: no answer in time).
    pub rtt_ms: Option<f64>,
}

/// What a node knows of itself for [`NODE_INFO`] (a field of the mesh's `Inner`).
pub(crate) struct Facts {
    started: Instant,
    name: Mutex<String>,
    monitor: AtomicBool,
    handler: OnceLock<EndpointHandler>,
    /// The last measured links, and when.
    links: tokio::sync::Mutex<Option<(Instant, Vec<LinkInfo>)>>,
}

impl std::fmt::Debug for Facts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Facts")
            .field("started", &self.started)
            .field("name", &self.name)
            .field("monitor", &self.monitor)
            .finish_non_exhaustive()
    }
}

impl Default for Facts {
    fn default() -> Self {
        let program = std::env::args()
            .next()
            .and_then(|p| {
                std::path::Path::new(&p)
                    .file_name()
                    .map(|f| f.to_string_lossy().into_owned())
            })
            .unwrap_or_else(|| "plume".to_owned());
        Self {
            started: Instant::now(),
            name: Mutex::new(format!("{program}[{}]", std::process::id())),
            monitor: AtomicBool::new(false),
            handler: OnceLock::new(),
            links: tokio::sync::Mutex::new(None),
        }
    }
}

/// Install the node-info handler of `inner` (once, when the node starts).
pub(super) fn install(inner: &Arc<Inner>) {
    let weak: Weak<Inner> = Arc::downgrade(inner);
    let handler = move |req: Request| {
        let weak = weak.clone();
        async move {
            let Some(inner) = weak.upgrade() else {
                return Err(Error::unavailable("the mesh node has stopped"));
            };
            let deadline = Instant::from_std(req.deadline).min(Instant::now() + LINK_PING_WAIT);
            let info = inner.node_info(deadline).await;
            serde_json::to_value(info).map_err(Error::internal)
        }
    };
    let _ = inner
        .facts
        .handler
        .set(EndpointHandler::Plain(Arc::new(handler)));
}

impl Inner {
    /// The built-in handler of `name`, if it names one.
    pub(super) fn builtin_handler(&self, name: &str) -> Option<EndpointHandler> {
        if name == NODE_INFO {
            self.facts.handler.get().cloned()
        } else {
            None
        }
    }

    /// This node's [`NodeInfo`], its links pinged until `deadline` (or as measured within
    /// [`LINKS_FRESH`]).
    async fn node_info(&self, deadline: Instant) -> NodeInfo {
        // One measurement at a time; those who wait for it share it.
        let mut last = self.facts.links.lock().await;
        let links = match &*last {
            Some((at, links)) if at.elapsed() < LINKS_FRESH => links.clone(),
            _ => {
                let links = self.measure_links(deadline).await;
                *last = Some((Instant::now(), links.clone()));
                links
            }
        };
        drop(last);
        NodeInfo {
            node: self.node.to_string(),
            name: lock(&self.facts.name).clone(),
            key: self.key.clone(),
            environment: self.environment.clone(),
            addr: self.local_addr.to_string(),
            uptime_ms: u64::try_from(self.facts.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            protocol: PROTOCOL_VERSION,
            monitor: self.facts.monitor.load(Ordering::Acquire),
            services: self.endpoint_names(),
            links,
        }
    }

    /// Ping every link (at most [`MAX_REPORTED_LINKS`]) until `deadline`.
    async fn measure_links(&self, deadline: Instant) -> Vec<LinkInfo> {
        let mut peers = self.engine.peers();
        peers.sort();
        peers.truncate(MAX_REPORTED_LINKS);
        let pings = peers.into_iter().map(|peer| {
            let remote = self.engine.direct(peer);
            async move {
                let rtt = match remote {
                    Some(r) => r.ping(deadline).await.ok(),
                    None => None,
                };
                LinkInfo {
                    node: peer.to_string(),
                    rtt_ms: rtt.map(|d| d.as_secs_f64() * 1000.0),
                }
            }
        });
        join_all(pings).await
    }
}

impl Mesh {
    /// Name this node for the mesh monitor (at most 255 bytes; longer names are cut). The
    /// default is the program's name and process id, `todos[4242]`.
    pub fn set_name(&self, name: &str) {
        let mut end = name.len().min(MAX_NAME);
        while !name.is_char_boundary(end) {
            end -= 1;
        }
        *lock(&self.inner.facts.name) = name[..end].to_owned();
    }

    /// Every other node this node knows of: its links, or on NATS the nodes it hears.
    pub(crate) fn known_nodes(&self) -> Vec<crate::discovery::NodeId> {
        self.inner.engine.known_nodes()
    }

    /// Mark this node as a monitor (it then reports `monitor: true` in its node info).
    pub(crate) fn mark_monitor(&self) {
        self.inner.facts.monitor.store(true, Ordering::Release);
    }

    /// This node's own [`NodeInfo`], its links pinged within `wait`.
    pub async fn node_info(&self, wait: Duration) -> NodeInfo {
        self.inner.node_info(Instant::now() + wait).await
    }

    /// Ask `node` for its [`NodeInfo`] (this node included), within `timeout`. A node that does
    /// not know the endpoint (an older build) answers `NotFound`.
    pub async fn node_info_of(
        &self,
        node: crate::discovery::NodeId,
        timeout: Duration,
    ) -> Result<NodeInfo, Error> {
        let answer = self
            .to(NODE_INFO)
            .on(node)
            .timeout(timeout)
            .send(&Value::Null)
            .await?;
        serde_json::from_value(answer)
            .map_err(|e| Error::bad_request(format!("a malformed node info from {node}: {e}")))
    }
}
