//! Sockets for the three backends, behind a small datagram trait so the
//! agent also runs on an in-memory network in tests.

use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;

use super::config::{DEFAULT_GROUP, DiscoveryMode};

/// Sends and receives datagrams.
pub(crate) trait Transport: Send + Sync + 'static {
    /// Sends one datagram to `to` (a group or a unicast address).
    fn send_to(&self, buf: &[u8], to: SocketAddr) -> impl Future<Output = io::Result<()>> + Send;
    /// Receives one datagram. Must be cancel safe.
    fn recv(
        &mut self,
        buf: &mut [u8],
    ) -> impl Future<Output = io::Result<(usize, SocketAddr)>> + Send;
}

/// Where beacons go.
#[derive(Debug, Clone)]
pub(crate) enum Fanout {
    /// To a multicast group (`loopback` and `multicast`).
    Group(SocketAddr),
    /// To the seeds and the known peers (`seeds`).
    Gossip {
        /// The configured seeds.
        seeds: Vec<SocketAddr>,
    },
}

/// The UDP sockets of one agent.
#[derive(Debug)]
pub(crate) struct Udp {
    /// Sends everything; receives unicast answers (and, in `seeds`
    /// mode, everything).
    send: UdpSocket,
    /// Receives the group's datagrams (multicast modes only).
    group: Option<UdpSocket>,
}

/// What `open` built.
#[derive(Debug)]
pub(crate) struct Opened {
    pub(crate) udp: Udp,
    pub(crate) fanout: Fanout,
    /// Only loopback addresses may be sent to or heard from.
    pub(crate) loopback_only: bool,
    /// The unicast address of the agent.
    pub(crate) local_addr: SocketAddr,
}

/// Opens the sockets of `mode`. Must run inside a tokio runtime.
pub(crate) fn open(mode: &DiscoveryMode) -> io::Result<Opened> {
    match mode {
        DiscoveryMode::Loopback { port } => {
            // TTL 0 and the loopback interface: nothing leaves this host.
            multicast(DEFAULT_GROUP, *port, Ipv4Addr::LOCALHOST, 0, true)
        }
        DiscoveryMode::Multicast { group, port, iface } => {
            // TTL 1: the datagrams stay on the named interface's link.
            multicast(*group, *port, *iface, 1, false)
        }
        DiscoveryMode::Seeds { listen, seeds } => {
            let std = std::net::UdpSocket::bind(listen)?;
            std.set_nonblocking(true)?;
            let send = UdpSocket::from_std(std)?;
            let local_addr = send.local_addr()?;
            Ok(Opened {
                udp: Udp { send, group: None },
                fanout: Fanout::Gossip {
                    seeds: seeds.clone(),
                },
                loopback_only: false,
                local_addr,
            })
        }
        DiscoveryMode::Nats { .. } | DiscoveryMode::Redis { .. } => Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "the nats and redis backends use no discovery sockets",
        )),
    }
}

fn multicast(
    group: Ipv4Addr,
    port: u16,
    iface: Ipv4Addr,
    ttl: u32,
    loopback_only: bool,
) -> io::Result<Opened> {
    // The group socket: shared by every agent on this host (SO_REUSEADDR and
    // SO_REUSEPORT; multicast datagrams reach every one), bound to the group
    // address so that unicast datagrams to the port never land in it.
    let recv = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    recv.set_reuse_address(true)?;
    recv.set_reuse_port(true)?;
    recv.bind(&SocketAddr::V4(SocketAddrV4::new(group, port)).into())?;
    recv.join_multicast_v4(&group, &iface)?;
    recv.set_nonblocking(true)?;

    // The send socket: this agent's own, on the interface; peers answer a
    // newcomer by unicast to it.
    let send = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    send.bind(&SocketAddr::V4(SocketAddrV4::new(iface, 0)).into())?;
    send.set_multicast_if_v4(&iface)?;
    send.set_multicast_ttl_v4(ttl)?;
    // Other processes on this host are peers too.
    send.set_multicast_loop_v4(true)?;
    send.set_nonblocking(true)?;

    let send = UdpSocket::from_std(send.into())?;
    let local_addr = send.local_addr()?;
    Ok(Opened {
        udp: Udp {
            send,
            group: Some(UdpSocket::from_std(recv.into())?),
        },
        fanout: Fanout::Group(SocketAddr::V4(SocketAddrV4::new(group, port))),
        loopback_only,
        local_addr,
    })
}

impl Transport for Udp {
    async fn send_to(&self, buf: &[u8], to: SocketAddr) -> io::Result<()> {
        self.send.send_to(buf, to).await.map(|_| ())
    }

    async fn recv(&mut self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        let Some(group) = &self.group else {
            return self.send.recv_from(buf).await;
        };
        loop {
            // Readiness first, then a non-blocking read: cancel safe, and one
            // buffer serves both sockets.
            let sock = tokio::select! {
                r = group.readable() => { r?; group }
                r = self.send.readable() => { r?; &self.send }
            };
            match sock.try_recv_from(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                r => return r,
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod mem {
    //! An in-memory datagram network for tests under paused time.

    use std::collections::{HashMap, HashSet};
    use std::sync::{Arc, Mutex};

    use tokio::sync::mpsc;

    use super::*;

    type Datagram = (Vec<u8>, SocketAddr);

    /// The network: members, one multicast group, and a set of cut-off
    /// members (their datagrams are lost both ways).
    #[derive(Debug, Default, Clone)]
    pub(crate) struct Hub {
        inner: Arc<Mutex<HubInner>>,
    }

    #[derive(Debug, Default)]
    struct HubInner {
        members: HashMap<SocketAddr, mpsc::Sender<Datagram>>,
        cut: HashSet<SocketAddr>,
    }

    /// The group address of the hub.
    pub(crate) const GROUP: SocketAddr =
        SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(239, 0, 0, 1), 1));

    impl Hub {
        /// Joins the network at `addr` (member of the group).
        pub(crate) fn join(&self, addr: SocketAddr) -> Mem {
            let (tx, rx) = mpsc::channel(1024);
            self.lock().members.insert(addr, tx);
            Mem {
                hub: self.clone(),
                addr,
                rx,
            }
        }

        /// Cuts `addr` off the network (`true`) or puts it back.
        pub(crate) fn cut(&self, addr: SocketAddr, cut: bool) {
            let mut g = self.lock();
            if cut {
                g.cut.insert(addr);
            } else {
                g.cut.remove(&addr);
            }
        }

        fn lock(&self) -> std::sync::MutexGuard<'_, HubInner> {
            crate::sync::lock(&self.inner)
        }
    }

    /// One member's socket.
    #[derive(Debug)]
    pub(crate) struct Mem {
        hub: Hub,
        addr: SocketAddr,
        rx: mpsc::Receiver<Datagram>,
    }

    impl Transport for Mem {
        async fn send_to(&self, buf: &[u8], to: SocketAddr) -> io::Result<()> {
            let g = self.hub.lock();
            if g.cut.contains(&self.addr) {
                return Ok(());
            }
            for (addr, tx) in &g.members {
                if (to == GROUP || to == *addr) && !g.cut.contains(addr) {
                    // Like UDP: a full queue loses the datagram.
                    let _ = tx.try_send((buf.to_vec(), self.addr));
                }
            }
            Ok(())
        }

        async fn recv(&mut self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
            let Some((data, from)) = self.rx.recv().await else {
                return std::future::pending().await;
            };
            let n = data.len().min(buf.len());
            buf[..n].copy_from_slice(&data[..n]);
            Ok((n, from))
        }
    }
}
