//! Discovery configuration and its environment variables.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

/// The multicast group of the default `loopback` backend (administratively
/// scoped, RFC 2365).
pub const DEFAULT_GROUP: Ipv4Addr = Ipv4Addr::new(239, 255, 80, 76);
/// The UDP port of the default `loopback` backend, and the default port of
/// the `multicast` backend.
pub const DEFAULT_PORT: u16 = 7391;
/// The default heartbeat interval (before jitter).
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(1);
/// The default time after which a silent peer is dead.
pub const DEFAULT_NODE_TIMEOUT: Duration = Duration::from_secs(3);
/// The default UDP address of the `seeds` backend.
pub const DEFAULT_SEEDS_LISTEN: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0));

/// How beacons travel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiscoveryMode {
    /// UDP multicast on the loopback interface, group [`DEFAULT_GROUP`],
    /// TTL 0: every process of this host, and nothing else.
    Loopback {
        /// The UDP port (default [`DEFAULT_PORT`]).
        port: u16,
    },
    /// UDP multicast on a named interface, TTL 1 (one LAN).
    Multicast {
        /// The group (239.0.0.0/8 is recommended; 224.0.0.0/24 is refused).
        group: Ipv4Addr,
        /// The UDP port.
        port: u16,
        /// The address of the interface to send and join on.
        iface: Ipv4Addr,
    },
    /// Unicast gossip: beacons go to the seeds and to every known peer, and
    /// peers pass on the addresses of their peers.
    Seeds {
        /// The local UDP address to bind (and to be reached on).
        listen: SocketAddr,
        /// The addresses to beacon to from the start.
        seeds: Vec<SocketAddr>,
    },
    /// A NATS server carries discovery, the service tables, requests (a queue group per
    /// endpoint) and events; the mesh runs on NATS instead of peer links (`docs/protocol.md`,
    /// "NATS backend").
    Nats {
        /// The server URL, e.g. `nats://127.0.0.1:4222` (several, comma-separated, for a cluster).
        url: String,
    },
    /// A Redis registry of TTL keys plus pub/sub join/leave notifications; the nodes still
    /// talk over peer links. If Redis goes away, the node keeps its last-known peers and
    /// registers again when it returns.
    Redis {
        /// The server URL, e.g. `redis://127.0.0.1:6379`.
        url: String,
    },
}

/// The default `PLUME_NATS_URL`.
pub const DEFAULT_NATS_URL: &str = "nats://127.0.0.1:4222";
/// The default `PLUME_REDIS_URL`.
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";

/// Configuration of the discovery agent.
#[derive(Clone)]
pub struct DiscoveryConfig {
    /// The backend.
    pub mode: DiscoveryMode,
    /// The heartbeat interval; each one is jittered into [0.8, 1.2) of it.
    pub heartbeat: Duration,
    /// A peer silent this long is dead.
    pub node_timeout: Duration,
    /// The mesh secret: when set, beacons are HMAC-SHA256 signed and
    /// unsigned or wrongly signed ones are ignored.
    pub secret: Option<Arc<[u8]>>,
}

impl std::fmt::Debug for DiscoveryConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiscoveryConfig")
            .field("mode", &self.mode)
            .field("heartbeat", &self.heartbeat)
            .field("node_timeout", &self.node_timeout)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        Self {
            mode: DiscoveryMode::Loopback { port: DEFAULT_PORT },
            heartbeat: DEFAULT_HEARTBEAT,
            node_timeout: DEFAULT_NODE_TIMEOUT,
            secret: None,
        }
    }
}

/// An invalid discovery configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A variable has a value that does not parse or is out of range.
    #[error("{var}: invalid value {value:?}: {reason}")]
    Invalid {
        /// The variable (or field) name.
        var: &'static str,
        /// The value as given.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A variable the chosen mode needs is not set.
    #[error("{var} must be set when {because}")]
    Missing {
        /// The variable name.
        var: &'static str,
        /// Why it is needed.
        because: &'static str,
    },
    /// A variable is set that the chosen mode does not use.
    #[error("{var} is set but has no effect with PLUME_DISCOVERY={mode}")]
    Unused {
        /// The variable name.
        var: &'static str,
        /// The chosen mode.
        mode: &'static str,
    },
    /// The fields are inconsistent with each other.
    #[error("{0}")]
    Inconsistent(String),
    /// The chosen mode needs a Cargo feature of `plume-transport` that this build leaves out.
    #[error(
        "PLUME_DISCOVERY={mode} needs the `{feature}` feature of plume-transport, which this build leaves out"
    )]
    FeatureDisabled {
        /// The chosen mode.
        mode: &'static str,
        /// The feature it needs.
        feature: &'static str,
    },
}

const VARS: [&str; 11] = [
    "PLUME_DISCOVERY",
    "PLUME_NATS_URL",
    "PLUME_REDIS_URL",
    "PLUME_DISCOVERY_PORT",
    "PLUME_MULTICAST_ADDR",
    "PLUME_MULTICAST_IFACE",
    "PLUME_SEEDS",
    "PLUME_DISCOVERY_LISTEN",
    "PLUME_MESH_SECRET",
    "PLUME_HEARTBEAT_MS",
    "PLUME_NODE_TIMEOUT_MS",
];

fn invalid(var: &'static str, value: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        var,
        value: value.to_owned(),
        reason: reason.into(),
    }
}

impl DiscoveryConfig {
    /// Reads the configuration from the process environment (see
    /// `docs/configuration.md`, "Discovery"). Unset variables take their
    /// defaults; any invalid value is an error naming its variable.
    pub fn from_env() -> Result<Self, ConfigError> {
        for var in VARS {
            if let Some(v) = std::env::var_os(var)
                && v.to_str().is_none()
            {
                return Err(invalid(var, &v.to_string_lossy(), "not valid UTF-8"));
            }
        }
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Like [`from_env`](Self::from_env), reading variables through `get`.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let val = |k: &'static str| get(k);
        for k in VARS {
            if let Some(v) = val(k)
                && v.trim().is_empty()
            {
                return Err(invalid(k, &v, "empty"));
            }
        }
        let iface = val("PLUME_MULTICAST_IFACE");
        let group = val("PLUME_MULTICAST_ADDR");
        let seeds = val("PLUME_SEEDS");
        let nats_url = val("PLUME_NATS_URL");
        let redis_url = val("PLUME_REDIS_URL");
        let mode = match val("PLUME_DISCOVERY") {
            Some(m) => match m.as_str() {
                "loopback" => "loopback",
                "multicast" => "multicast",
                "seeds" => "seeds",
                "nats" => "nats",
                "redis" => "redis",
                _ => {
                    return Err(invalid(
                        "PLUME_DISCOVERY",
                        &m,
                        "expected loopback, multicast, seeds, nats or redis",
                    ));
                }
            },
            // Naming an interface or a group opts into multicast, listing seeds into seeds,
            // a server URL into that server's backend.
            None => {
                let chosen: Vec<&'static str> = [
                    (iface.is_some() || group.is_some(), "multicast"),
                    (seeds.is_some(), "seeds"),
                    (nats_url.is_some(), "nats"),
                    (redis_url.is_some(), "redis"),
                ]
                .into_iter()
                .filter_map(|(set, m)| set.then_some(m))
                .collect();
                match chosen.as_slice() {
                    [] => "loopback",
                    [one] => one,
                    _ => {
                        return Err(ConfigError::Inconsistent(format!(
                            "variables of several discovery backends are set ({}); set PLUME_DISCOVERY to choose",
                            chosen.join(", ")
                        )));
                    }
                }
            }
        };
        let unused = |var: &'static str| -> Result<(), ConfigError> {
            if val(var).is_some() {
                Err(ConfigError::Unused { var, mode })
            } else {
                Ok(())
            }
        };
        let mode = match mode {
            "loopback" => {
                for v in [
                    "PLUME_MULTICAST_ADDR",
                    "PLUME_MULTICAST_IFACE",
                    "PLUME_SEEDS",
                    "PLUME_DISCOVERY_LISTEN",
                    "PLUME_NATS_URL",
                    "PLUME_REDIS_URL",
                ] {
                    unused(v)?;
                }
                let port = match val("PLUME_DISCOVERY_PORT") {
                    None => DEFAULT_PORT,
                    Some(p) => parse_port("PLUME_DISCOVERY_PORT", &p)?,
                };
                DiscoveryMode::Loopback { port }
            }
            "multicast" => {
                for v in [
                    "PLUME_SEEDS",
                    "PLUME_DISCOVERY_LISTEN",
                    "PLUME_DISCOVERY_PORT",
                    "PLUME_NATS_URL",
                    "PLUME_REDIS_URL",
                ] {
                    unused(v)?;
                }
                let Some(iface_s) = iface else {
                    return Err(ConfigError::Missing {
                        var: "PLUME_MULTICAST_IFACE",
                        because: "multicast discovery is chosen (it never picks an interface by itself)",
                    });
                };
                let iface: Ipv4Addr = iface_s.trim().parse().map_err(|_| {
                    invalid(
                        "PLUME_MULTICAST_IFACE",
                        &iface_s,
                        "expected an IPv4 address",
                    )
                })?;
                let (group, port) = match group {
                    None => (DEFAULT_GROUP, DEFAULT_PORT),
                    Some(g) => {
                        let a: SocketAddrV4 = g.trim().parse().map_err(|_| {
                            invalid(
                                "PLUME_MULTICAST_ADDR",
                                &g,
                                "expected an IPv4 group:port, e.g. 239.255.80.76:7391",
                            )
                        })?;
                        (*a.ip(), a.port())
                    }
                };
                check_group(group)
                    .map_err(|r| invalid("PLUME_MULTICAST_ADDR", &format!("{group}:{port}"), r))?;
                if port == 0 {
                    return Err(invalid(
                        "PLUME_MULTICAST_ADDR",
                        &format!("{group}:{port}"),
                        "port 0",
                    ));
                }
                DiscoveryMode::Multicast { group, port, iface }
            }
            "nats" | "redis" => {
                for v in [
                    "PLUME_MULTICAST_ADDR",
                    "PLUME_MULTICAST_IFACE",
                    "PLUME_DISCOVERY_PORT",
                    "PLUME_SEEDS",
                    "PLUME_DISCOVERY_LISTEN",
                    if mode == "nats" {
                        "PLUME_REDIS_URL"
                    } else {
                        "PLUME_NATS_URL"
                    },
                ] {
                    unused(v)?;
                }
                if mode == "nats" {
                    let url = nats_url.unwrap_or_else(|| DEFAULT_NATS_URL.to_owned());
                    check_url("PLUME_NATS_URL", &url, &["nats", "tls", "ws", "wss"])?;
                    DiscoveryMode::Nats { url }
                } else {
                    let url = redis_url.unwrap_or_else(|| DEFAULT_REDIS_URL.to_owned());
                    check_url("PLUME_REDIS_URL", &url, &["redis", "rediss"])?;
                    DiscoveryMode::Redis { url }
                }
            }
            _ => {
                for v in [
                    "PLUME_MULTICAST_ADDR",
                    "PLUME_MULTICAST_IFACE",
                    "PLUME_DISCOVERY_PORT",
                    "PLUME_NATS_URL",
                    "PLUME_REDIS_URL",
                ] {
                    unused(v)?;
                }
                let listen = match val("PLUME_DISCOVERY_LISTEN") {
                    None => DEFAULT_SEEDS_LISTEN,
                    Some(l) => l
                        .trim()
                        .parse()
                        .map_err(|_| invalid("PLUME_DISCOVERY_LISTEN", &l, "expected ip:port"))?,
                };
                let seeds = match seeds {
                    None => Vec::new(),
                    Some(s) => parse_seeds(&s, listen)?,
                };
                DiscoveryMode::Seeds { listen, seeds }
            }
        };
        let heartbeat = parse_ms(
            "PLUME_HEARTBEAT_MS",
            val("PLUME_HEARTBEAT_MS"),
            DEFAULT_HEARTBEAT,
        )?;
        let node_timeout = parse_ms(
            "PLUME_NODE_TIMEOUT_MS",
            val("PLUME_NODE_TIMEOUT_MS"),
            DEFAULT_NODE_TIMEOUT,
        )?;
        let secret = val("PLUME_MESH_SECRET").map(|s| Arc::<[u8]>::from(s.into_bytes()));
        let config = Self {
            mode,
            heartbeat,
            node_timeout,
            secret,
        };
        config.validate()?;
        Ok(config)
    }

    /// Checks the fields against each other (also done by `Discovery::start`).
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.heartbeat.is_zero() {
            return Err(invalid("heartbeat", "0", "must be positive"));
        }
        if self.node_timeout <= self.heartbeat.mul_f64(super::state::JITTER_MAX) {
            return Err(ConfigError::Inconsistent(format!(
                "PLUME_NODE_TIMEOUT_MS ({} ms) must exceed 1.2 × PLUME_HEARTBEAT_MS ({} ms), or live peers would flap",
                self.node_timeout.as_millis(),
                self.heartbeat.as_millis()
            )));
        }
        if self.secret.as_ref().is_some_and(|s| s.is_empty()) {
            return Err(invalid("PLUME_MESH_SECRET", "", "empty"));
        }
        match &self.mode {
            DiscoveryMode::Loopback { port } if *port == 0 => {
                Err(invalid("PLUME_DISCOVERY_PORT", "0", "port 0"))
            }
            DiscoveryMode::Multicast { group, .. } => check_group(*group)
                .map_err(|r| invalid("PLUME_MULTICAST_ADDR", &group.to_string(), r)),
            #[cfg(not(feature = "nats"))]
            DiscoveryMode::Nats { .. } => Err(ConfigError::FeatureDisabled {
                mode: "nats",
                feature: "nats",
            }),
            #[cfg(not(feature = "redis"))]
            DiscoveryMode::Redis { .. } => Err(ConfigError::FeatureDisabled {
                mode: "redis",
                feature: "redis",
            }),
            _ => Ok(()),
        }
    }
}

/// A URL must name one of `schemes` and a host.
fn check_url(var: &'static str, url: &str, schemes: &[&str]) -> Result<(), ConfigError> {
    for one in url.split(',') {
        let one = one.trim();
        let Some((scheme, rest)) = one.split_once("://") else {
            return Err(invalid(
                var,
                url,
                format!("expected {}://host:port", schemes[0]),
            ));
        };
        if !schemes.contains(&scheme) {
            return Err(invalid(
                var,
                url,
                format!("the scheme must be one of {}", schemes.join(", ")),
            ));
        }
        let host = rest.rsplit('@').next().unwrap_or(rest);
        if host.is_empty() || host.starts_with(':') || host.starts_with('/') {
            return Err(invalid(var, url, "no host"));
        }
    }
    Ok(())
}

fn check_group(group: Ipv4Addr) -> Result<(), &'static str> {
    if !group.is_multicast() {
        return Err("not a multicast group (expected 224.0.0.0/4; 239.0.0.0/8 recommended)");
    }
    if group.octets()[..3] == [224, 0, 0] {
        return Err("224.0.0.0/24 is reserved for local network control; use 239.0.0.0/8");
    }
    Ok(())
}

fn parse_port(var: &'static str, s: &str) -> Result<u16, ConfigError> {
    match s.trim().parse::<u16>() {
        Ok(0) | Err(_) => Err(invalid(var, s, "expected a port number 1-65535")),
        Ok(p) => Ok(p),
    }
}

fn parse_ms(
    var: &'static str,
    v: Option<String>,
    default: Duration,
) -> Result<Duration, ConfigError> {
    match v {
        None => Ok(default),
        Some(s) => match s.trim().parse::<u64>() {
            Ok(0) | Err(_) => Err(invalid(
                var,
                &s,
                "expected a positive number of milliseconds",
            )),
            Ok(ms) => Ok(Duration::from_millis(ms)),
        },
    }
}

fn parse_seeds(s: &str, listen: SocketAddr) -> Result<Vec<SocketAddr>, ConfigError> {
    let mut out = Vec::new();
    for item in s.split(',') {
        let item = item.trim();
        if item.is_empty() {
            return Err(invalid("PLUME_SEEDS", s, "empty entry"));
        }
        let addrs: Vec<SocketAddr> = match item.parse::<SocketAddr>() {
            Ok(a) => vec![a],
            Err(_) => {
                // host:port with a host name: resolve it now, loudly.
                let resolved = item.to_socket_addrs().map_err(|e| {
                    invalid("PLUME_SEEDS", item, format!("expected host:port ({e})"))
                })?;
                resolved
                    .filter(|a| a.is_ipv4() == listen.is_ipv4())
                    .collect()
            }
        };
        let Some(first) = addrs.first() else {
            return Err(invalid(
                "PLUME_SEEDS",
                item,
                "resolves to no address of the listen family",
            ));
        };
        if first.port() == 0 {
            return Err(invalid("PLUME_SEEDS", item, "port 0"));
        }
        for a in addrs {
            if !out.contains(&a) {
                out.push(a);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
