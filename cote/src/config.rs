//! The backend's settings: cote's timers and environment variables, the discovery address,
//! feathers-distributed's key.

use std::net::Ipv4Addr;
use std::time::Duration;

/// cote's UDP discovery port.
pub const DEFAULT_PORT: u16 = 12345;
/// The loopback broadcast address: every cote component on this host hears it.
pub const LOOPBACK_BROADCAST: Ipv4Addr = Ipv4Addr::new(127, 255, 255, 255);

/// A setting that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// An environment variable does not parse.
    #[error("{name}={value:?}: {reason}")]
    Env {
        /// The variable.
        name: &'static str,
        /// Its value.
        value: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// cote refuses these timers too (its constructor throws).
    #[error("node timeout ({node:?}) must be at least the check interval ({check:?})")]
    Timers {
        /// The node timeout.
        node: Duration,
        /// The check interval.
        check: Duration,
    },
    /// A LAN address without [`CoteConfig::allow_lan`]: cote has no authentication.
    #[error(
        "discovery address {0} is not loopback: cote has no authentication, so a LAN address \
         needs an explicit opt-in (PLUME_COTE_ALLOW_LAN=1 or CoteConfig::allow_lan)"
    )]
    NotLoopback(Ipv4Addr),
}

/// How a Plume node joins a cote / feathers-distributed fleet.
#[derive(Debug, Clone, PartialEq)]
pub struct CoteConfig {
    /// feathers-distributed's distribution `key` (`PLUME_KEY`, default `default`).
    pub key: String,
    /// cote's environment (`COTE_ENV`), folded into every advertised key.
    pub environment: String,
    /// Where hellos go: a broadcast (or unicast) IPv4 address (`PLUME_COTE_ADDRESS`, default
    /// 127.255.255.255).
    pub address: Ipv4Addr,
    /// The UDP discovery port (12345, as cote).
    pub port: u16,
    /// A non-loopback address is allowed (`PLUME_COTE_ALLOW_LAN=1`).
    pub allow_lan: bool,
    /// Hello interval (`COTE_HELLO_INTERVAL`, 2000 ms).
    pub hello_interval: Duration,
    /// Check interval (`COTE_CHECK_INTERVAL`, 4000 ms).
    pub check_interval: Duration,
    /// A peer silent this long is gone (`COTE_NODE_TIMEOUT`, 5000 ms).
    pub node_timeout: Duration,
    /// The timeout of a call to a Node app (`COTE_REQUEST_TIMEOUT`, 20000 ms as
    /// feathers-distributed's `timeout`).
    pub request_timeout: Duration,
    /// Mount the services other apps publish (a gateway). Replicas usually do not
    /// (feathers-distributed's `remoteServices: () => false`). `PLUME_COTE_CONSUME=1`.
    pub consume: bool,
    /// Publish this App's services (`PLUME_COTE_PROVIDE=0` turns it off).
    pub provide: bool,
    /// At most this many discovered components are kept (a hello flood cannot grow more).
    pub max_peers: usize,
    /// The AMP frame size limit.
    pub max_frame: usize,
    /// Calls waiting for a responder to connect, at most.
    pub max_waiting: usize,
}

impl Default for CoteConfig {
    fn default() -> Self {
        Self {
            key: "default".into(),
            environment: String::new(),
            address: LOOPBACK_BROADCAST,
            port: DEFAULT_PORT,
            allow_lan: false,
            hello_interval: Duration::from_millis(2000),
            check_interval: Duration::from_millis(4000),
            node_timeout: Duration::from_millis(5000),
            request_timeout: Duration::from_millis(20_000),
            consume: false,
            provide: true,
            max_peers: 1024,
            max_frame: crate::amp::DEFAULT_MAX_FRAME,
            max_waiting: 10_000,
        }
    }
}

impl CoteConfig {
    /// Whether `PLUME_DISCOVERY=cote` is set.
    pub fn selected() -> bool {
        std::env::var("PLUME_DISCOVERY").is_ok_and(|v| v.trim().eq_ignore_ascii_case("cote"))
    }

    /// The settings from the environment (see the fields), checked.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// The settings from `lookup` (an environment), checked.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let mut c = Self::default();
        let ms = |name: &'static str, into: &mut Duration| -> Result<(), ConfigError> {
            if let Some(v) = lookup(name) {
                let n: u64 = v.trim().parse().map_err(|_| ConfigError::Env {
                    name,
                    value: v.clone(),
                    reason: "not a whole number of milliseconds",
                })?;
                if n == 0 {
                    return Err(ConfigError::Env {
                        name,
                        value: v,
                        reason: "must be positive",
                    });
                }
                *into = Duration::from_millis(n);
            }
            Ok(())
        };
        ms("COTE_HELLO_INTERVAL", &mut c.hello_interval)?;
        ms("COTE_CHECK_INTERVAL", &mut c.check_interval)?;
        ms("COTE_NODE_TIMEOUT", &mut c.node_timeout)?;
        ms("COTE_REQUEST_TIMEOUT", &mut c.request_timeout)?;
        if let Some(k) = lookup("PLUME_KEY").filter(|k| !k.is_empty()) {
            c.key = k;
        }
        if let Some(e) = lookup("COTE_ENV") {
            c.environment = e;
        }
        if let Some(a) = lookup("PLUME_COTE_ADDRESS") {
            c.address = a.trim().parse().map_err(|_| ConfigError::Env {
                name: "PLUME_COTE_ADDRESS",
                value: a.clone(),
                reason: "not an IPv4 address",
            })?;
        }
        let flag = |name: &'static str, into: &mut bool| -> Result<(), ConfigError> {
            if let Some(v) = lookup(name) {
                *into = match v.trim() {
                    "1" | "true" => true,
                    "0" | "false" | "" => false,
                    _ => {
                        return Err(ConfigError::Env {
                            name,
                            value: v,
                            reason: "use 1/true or 0/false",
                        });
                    }
                };
            }
            Ok(())
        };
        flag("PLUME_COTE_ALLOW_LAN", &mut c.allow_lan)?;
        flag("PLUME_COTE_CONSUME", &mut c.consume)?;
        flag("PLUME_COTE_PROVIDE", &mut c.provide)?;
        c.validate()?;
        Ok(c)
    }

    /// Check the settings: cote's timer rule, and a loopback address unless opted in.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.node_timeout < self.check_interval {
            return Err(ConfigError::Timers {
                node: self.node_timeout,
                check: self.check_interval,
            });
        }
        if !self.address.is_loopback() && !self.allow_lan {
            return Err(ConfigError::NotLoopback(self.address));
        }
        Ok(())
    }

    /// The cote key advertised for a user key.
    pub fn cote_key(&self, key: &str) -> String {
        crate::hello::cote_key(&self.environment, key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn cote_variables() {
        let c = CoteConfig::from_lookup(env(&[
            ("COTE_HELLO_INTERVAL", "500"),
            ("COTE_CHECK_INTERVAL", "1000"),
            ("COTE_NODE_TIMEOUT", "1500"),
            ("PLUME_KEY", "todos"),
            ("COTE_ENV", "prod"),
        ]))
        .unwrap();
        assert_eq!(c.hello_interval, Duration::from_millis(500));
        assert_eq!(c.cote_key(&c.key), "prod:$$todos");
        assert_eq!(
            CoteConfig::default().node_timeout,
            Duration::from_millis(5000)
        );
    }

    #[test]
    fn refusals() {
        assert!(matches!(
            CoteConfig::from_lookup(env(&[("COTE_NODE_TIMEOUT", "10")])),
            Err(ConfigError::Timers { .. })
        ));
        assert!(matches!(
            CoteConfig::from_lookup(env(&[("COTE_HELLO_INTERVAL", "x")])),
            Err(ConfigError::Env { .. })
        ));
        assert_eq!(
            CoteConfig::from_lookup(env(&[("PLUME_COTE_ADDRESS", "192.168.1.255")])),
            Err(ConfigError::NotLoopback(Ipv4Addr::new(192, 168, 1, 255)))
        );
        let lan = CoteConfig::from_lookup(env(&[
            ("PLUME_COTE_ADDRESS", "192.168.1.255"),
            ("PLUME_COTE_ALLOW_LAN", "1"),
        ]))
        .unwrap();
        assert!(lan.allow_lan);
    }
}
