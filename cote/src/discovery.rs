//! cote's UDP hello discovery: one socket for all of this node's components.
//!
//! cote gives every component its own socket and heartbeat; here one socket (bound to the
//! discovery port with `SO_REUSEADDR`, as node-discover's, so Node components on the same host
//! still hear each other) sends a hello per local component every hello interval and keeps a
//! bounded table of the components it hears. Every check interval, components silent for
//! longer than the node timeout are removed.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::config::CoteConfig;
use crate::hello::{Advertisement, Hello, MAX_DATAGRAM};

/// A component heard on the network.
#[derive(Debug, Clone)]
pub struct Peer {
    /// Its instance id.
    pub iid: String,
    /// Its process uuid.
    pub pid: String,
    /// The datagram's source address (where its TCP port is).
    pub address: IpAddr,
    /// What it advertises.
    pub advertisement: Advertisement,
    last_seen: Instant,
    /// Its link dropped: its next hello announces it again.
    redial: bool,
}

/// A change of the peer table.
#[derive(Debug, Clone)]
pub enum PeerEvent {
    /// A component was heard for the first time.
    Added(Peer),
    /// A component fell silent (or was forgotten).
    Removed(Peer),
}

struct Inner {
    socket: UdpSocket,
    dest: SocketAddr,
    pid: String,
    host_name: String,
    locals: Mutex<Vec<(String, Advertisement)>>,
    peers: Mutex<HashMap<String, Peer>>,
    events: broadcast::Sender<PeerEvent>,
    max_peers: usize,
    dropped: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The discovery of one node: its components' hellos out, the table of what it hears.
#[derive(Clone)]
pub struct Discovery {
    inner: Arc<Inner>,
    tasks: Arc<Tasks>,
}

struct Tasks(Vec<JoinHandle<()>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

impl std::fmt::Debug for Discovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Discovery")
            .field("dest", &self.inner.dest)
            .field("peers", &lock(&self.inner.peers).len())
            .finish()
    }
}

impl Discovery {
    /// Bind the discovery socket and start the hello and check timers.
    pub async fn start(config: &CoteConfig) -> std::io::Result<Discovery> {
        config
            .validate()
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        let socket = socket2::Socket::new(
            socket2::Domain::IPV4,
            socket2::Type::DGRAM,
            Some(socket2::Protocol::UDP),
        )?;
        socket.set_reuse_address(true)?;
        socket.set_broadcast(true)?;
        socket.set_nonblocking(true)?;
        let bind = SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, config.port);
        socket.bind(&bind.into())?;
        let socket = UdpSocket::from_std(socket.into())?;
        let host_name = std::env::var("DISCOVERY_HOSTNAME")
            .ok()
            .or_else(|| {
                std::fs::read_to_string("/etc/hostname")
                    .ok()
                    .map(|s| s.trim().to_owned())
            })
            .unwrap_or_else(|| "localhost".into());
        let (events, _) = broadcast::channel(1024);
        let inner = Arc::new(Inner {
            socket,
            dest: SocketAddr::V4(SocketAddrV4::new(config.address, config.port)),
            pid: uuid::Uuid::new_v4().to_string(),
            host_name,
            locals: Mutex::new(Vec::new()),
            peers: Mutex::new(HashMap::new()),
            events,
            max_peers: config.max_peers,
            dropped: AtomicU64::new(0),
        });
        let hello = tokio::spawn(hello_loop(Arc::downgrade(&inner), config.hello_interval));
        let check = tokio::spawn(check_loop(
            Arc::downgrade(&inner),
            config.check_interval,
            config.node_timeout,
        ));
        let recv = tokio::spawn(recv_loop(Arc::downgrade(&inner)));
        Ok(Discovery {
            inner,
            tasks: Arc::new(Tasks(vec![hello, check, recv])),
        })
    }

    /// This process's uuid (`pid` of its hellos).
    pub fn process_uuid(&self) -> &str {
        &self.inner.pid
    }

    /// Advertise a component: its hello goes out now and every hello interval. Its iid.
    pub async fn advertise(&self, advertisement: Advertisement) -> String {
        let iid = uuid::Uuid::new_v4().to_string();
        lock(&self.inner.locals).push((iid.clone(), advertisement.clone()));
        send_hello(&self.inner, &iid, advertisement).await;
        iid
    }

    /// Stop advertising a component (peers notice after their node timeout: cote has no
    /// goodbye).
    pub fn withdraw(&self, iid: &str) {
        lock(&self.inner.locals).retain(|(i, _)| i != iid);
    }

    /// Changes of the peer table from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<PeerEvent> {
        self.inner.events.subscribe()
    }

    /// The components heard and not timed out.
    pub fn peers(&self) -> Vec<Peer> {
        lock(&self.inner.peers).values().cloned().collect()
    }

    /// A link to the component dropped: its next hello is reported as [`PeerEvent::Added`]
    /// again, so a client reconnects while the component lives (cote's never do). A component
    /// that died falls silent and is removed at its node timeout as usual.
    pub fn redial(&self, iid: &str) {
        if let Some(p) = lock(&self.inner.peers).get_mut(iid) {
            p.redial = true;
        }
    }

    /// Datagrams dropped so far (malformed, unknown, or over the table bound).
    pub fn dropped(&self) -> u64 {
        self.inner.dropped.load(Ordering::Relaxed)
    }

    /// Whether this handle is the last one (the timers stop when it drops).
    pub fn is_last(&self) -> bool {
        Arc::strong_count(&self.tasks) == 1
    }
}

async fn send_hello(inner: &Inner, iid: &str, advertisement: Advertisement) {
    let hello = Hello::new(&inner.pid, iid, &inner.host_name, advertisement);
    if let Err(e) = inner.socket.send_to(&hello.encode(), inner.dest).await {
        tracing::warn!(error = %e, dest = %inner.dest, "cote: cannot send a hello");
    }
}

async fn hello_loop(inner: std::sync::Weak<Inner>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        let locals = lock(&inner.locals).clone();
        for (iid, ad) in locals {
            send_hello(&inner, &iid, ad).await;
        }
    }
}

async fn check_loop(inner: std::sync::Weak<Inner>, every: Duration, timeout: Duration) {
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        let now = Instant::now();
        let gone: Vec<Peer> = {
            let mut peers = lock(&inner.peers);
            let ids: Vec<String> = peers
                .iter()
                .filter(|(_, p)| now.duration_since(p.last_seen) > timeout)
                .map(|(k, _)| k.clone())
                .collect();
            ids.iter().filter_map(|k| peers.remove(k)).collect()
        };
        for peer in gone {
            tracing::info!(iid = %peer.iid, name = %peer.advertisement.name, "cote: component timed out");
            let _ = inner.events.send(PeerEvent::Removed(peer));
        }
    }
}

async fn recv_loop(weak: std::sync::Weak<Inner>) {
    let mut buf = vec![0u8; MAX_DATAGRAM + 1];
    loop {
        let Some(inner) = weak.upgrade() else { return };
        let received = inner.socket.recv_from(&mut buf).await;
        let (n, from) = match received {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(error = %e, "cote: discovery receive error");
                continue;
            }
        };
        receive(&inner, &buf[..n], from.ip());
    }
}

fn drop_datagram(inner: &Inner, from: IpAddr, reason: &dyn std::fmt::Display) {
    let n = inner.dropped.fetch_add(1, Ordering::Relaxed);
    // Every drop is logged at debug; a flood shows at warn once per thousand.
    tracing::debug!(%from, %reason, "cote: hello dropped");
    if n.is_multiple_of(1000) {
        tracing::warn!(%from, %reason, dropped = n + 1, "cote: hellos dropped");
    }
}

fn receive(inner: &Inner, bytes: &[u8], from: IpAddr) {
    let hello = match Hello::decode(bytes) {
        Ok(h) => h,
        Err(e) => return drop_datagram(inner, from, &e),
    };
    if lock(&inner.locals).iter().any(|(i, _)| *i == hello.iid) {
        return;
    }
    let added = {
        let mut peers = lock(&inner.peers);
        if let Some(p) = peers.get_mut(&hello.iid) {
            p.last_seen = Instant::now();
            std::mem::take(&mut p.redial).then(|| p.clone())
        } else if peers.len() >= inner.max_peers {
            drop(peers);
            return drop_datagram(inner, from, &"the peer table is full");
        } else {
            let peer = Peer {
                iid: hello.iid.clone(),
                pid: hello.pid,
                address: from,
                advertisement: hello.data.advertisement,
                last_seen: Instant::now(),
                redial: false,
            };
            peers.insert(hello.iid, peer.clone());
            Some(peer)
        }
    };
    if let Some(peer) = added {
        tracing::debug!(iid = %peer.iid, name = %peer.advertisement.name, "cote: component added");
        let _ = inner.events.send(PeerEvent::Added(peer));
    }
}
