//! The login rate limit: `local` logins per client address, as a token bucket.
//!
//! Each address may try `burst` logins at once, then one more every `interval`. An attempt over
//! the limit is a TooManyRequests (429) before any password hashing happens. IPv6 addresses
//! count per /64 (one host usually owns a whole /64); IPv4-mapped IPv6 addresses count as
//! their IPv4 address.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::error::{Error, Result};
use crate::sync;

/// The default of [`AuthConfig::login_limit`](super::AuthConfig::login_limit): 20 attempts at
/// once, then one every 3 s, per client address.
pub const DEFAULT_LOGIN_LIMIT: LoginLimit = LoginLimit {
    burst: 20,
    interval: Duration::from_secs(3),
};

/// The most addresses tracked at once. When the table is full of addresses still inside
/// their window, a new address is refused (429) until room frees up: the table cannot grow
/// without bound, and a flood from many addresses cannot reset the others' counts.
pub(crate) const MAX_TRACKED: usize = 65_536;

/// A login rate limit: `burst` attempts at once, then one more every `interval`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginLimit {
    /// The attempts an address may make at once (at least 1).
    pub burst: u32,
    /// The time after which an address gets one more attempt.
    pub interval: Duration,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Attempts left at `at`.
    tokens: f64,
    at: Instant,
}

/// The buckets of the addresses seen lately.
#[derive(Debug, Default)]
pub(crate) struct LoginLimiter {
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

/// The key of an address: IPv4 as is, IPv6 by its /64.
fn key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

impl LoginLimiter {
    /// Take one attempt for `ip` at `now`, or fail with TooManyRequests.
    pub(crate) fn attempt(&self, limit: &LoginLimit, ip: IpAddr, now: Instant) -> Result<()> {
        let burst = f64::from(limit.burst.max(1));
        let interval = limit.interval.as_secs_f64();
        let refill = |b: &Bucket| {
            if interval <= 0.0 {
                return burst;
            }
            (b.tokens + now.saturating_duration_since(b.at).as_secs_f64() / interval).min(burst)
        };
        let mut buckets = sync::lock(&self.buckets);
        let key = key(ip);
        if !buckets.contains_key(&key) && buckets.len() >= MAX_TRACKED {
            // Forget the addresses whose bucket is full again: they are as if never seen.
            buckets.retain(|_, b| refill(b) < burst);
            if buckets.len() >= MAX_TRACKED {
                return Err(too_many(limit));
            }
        }
        let bucket = buckets.entry(key).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        let tokens = refill(bucket);
        if tokens < 1.0 {
            return Err(too_many(limit));
        }
        *bucket = Bucket {
            tokens: tokens - 1.0,
            at: now,
        };
        Ok(())
    }
}

fn too_many(limit: &LoginLimit) -> Error {
    let retry = limit.interval.as_secs().max(1);
    Error::too_many_requests(format!(
        "Too many login attempts from this address; try again in {retry} s"
    ))
    .with_data(serde_json::json!({ "retryAfter": retry }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_burst_then_one_per_interval_per_address() {
        let limiter = LoginLimiter::default();
        let limit = LoginLimit {
            burst: 3,
            interval: Duration::from_secs(10),
        };
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "::ffff:10.0.0.2".parse().unwrap();
        for _ in 0..3 {
            limiter.attempt(&limit, a, Instant::now()).unwrap();
        }
        let err = limiter.attempt(&limit, a, Instant::now()).unwrap_err();
        assert_eq!(err.code(), 429);
        assert_eq!(err.data(), Some(&serde_json::json!({"retryAfter": 10})));
        // Another address is not affected.
        limiter.attempt(&limit, b, Instant::now()).unwrap();
        tokio::time::advance(Duration::from_secs(10)).await;
        limiter.attempt(&limit, a, Instant::now()).unwrap();
        assert!(limiter.attempt(&limit, a, Instant::now()).is_err());
        // One /64 is one address.
        let v6 = |s: &str| s.parse::<IpAddr>().unwrap();
        for i in 0..3 {
            limiter
                .attempt(&limit, v6(&format!("2001:db8::{i}")), Instant::now())
                .unwrap();
        }
        assert!(
            limiter
                .attempt(&limit, v6("2001:db8::ffff"), Instant::now())
                .is_err()
        );
        limiter
            .attempt(&limit, v6("2001:db8:0:1::1"), Instant::now())
            .unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn the_table_is_bounded() {
        let limiter = LoginLimiter::default();
        let limit = LoginLimit {
            burst: 1,
            interval: Duration::from_secs(60),
        };
        for i in 0..MAX_TRACKED as u32 {
            let ip = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            limiter.attempt(&limit, ip, Instant::now()).unwrap();
        }
        let fresh = IpAddr::V4(std::net::Ipv4Addr::new(192, 168, 1, 1));
        assert_eq!(
            limiter
                .attempt(&limit, fresh, Instant::now())
                .unwrap_err()
                .code(),
            429
        );
        tokio::time::advance(Duration::from_secs(60)).await;
        limiter.attempt(&limit, fresh, Instant::now()).unwrap();
        assert!(limiter.buckets.lock().unwrap().len() <= MAX_TRACKED);
    }
}
