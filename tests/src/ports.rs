//! Free loopback ports for servers that a test starts as child processes.
//!
//! A port the OS hands out for `bind(0)` comes from its ephemeral range, the same range it
//! draws the source port of every outgoing connection from. Between the test releasing such a
//! port and the child binding it, any connection on the machine can take it ("Address already
//! in use" at random). So the ports here come from below the ephemeral range, where the kernel
//! never allocates on its own, and each is reserved across concurrent test processes by a file
//! created with `O_EXCL` in a shared directory. A reservation lapses after [`HELD_FOR`], longer
//! than any test holds a server.
//!
//! This file is also included by `#[path]` from the test suites of crates that `plume-tests`
//! itself depends on (plume-sql, plume-transport), so it uses the standard library only; its
//! tests are in `ports_tests.rs`, so that they run once.

use std::collections::hash_map::RandomState;
use std::fs::OpenOptions;
use std::hash::{BuildHasher, Hasher};
use std::io::ErrorKind;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// How long a reservation keeps a port from other tests.
pub const HELD_FOR: Duration = Duration::from_secs(30 * 60);

/// The lowest port handed out (above the well-known and common development ports).
pub(crate) const LOWEST: u16 = 20_000;

/// A loopback TCP port that no one listens on, that the kernel will not hand to an outgoing
/// connection, and that no other test process got from this function within [`HELD_FOR`].
///
/// Panics (a test harness, not library code) when no port can be had.
pub fn free_port() -> u16 {
    let (low, high) = window();
    let dir = reservations();
    std::fs::create_dir_all(&dir).expect("the port reservation directory");
    let seed = RandomState::new();
    let candidates = (0u32..4_096).map(|attempt| {
        let mut h = seed.build_hasher();
        h.write_u32(attempt);
        low + (h.finish() % u64::from(high - low)) as u16
    });
    first_free(&dir, candidates).unwrap_or_else(|| {
        panic!(
            "no free port in {low}..{high} (reservations in {})",
            dir.display()
        )
    })
}

/// The first of `candidates` that this process can reserve and that no one listens on.
pub(crate) fn first_free(dir: &Path, mut candidates: impl Iterator<Item = u16>) -> Option<u16> {
    candidates.find(|&port| reserve(dir, port) && TcpListener::bind(("127.0.0.1", port)).is_ok())
}

/// The ports to draw from: [`LOWEST`] up to the start of the ephemeral range.
pub(crate) fn window() -> (u16, u16) {
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32_768);
    assert!(
        ephemeral_low > LOWEST + 1_000,
        "the ephemeral port range starts at {ephemeral_low}; tests need ports {LOWEST}.. below it"
    );
    (LOWEST, ephemeral_low)
}

fn reservations() -> PathBuf {
    std::env::temp_dir().join("plume-test-ports")
}

/// Take `port` for this process: create its file, or take over one older than [`HELD_FOR`].
pub(crate) fn reserve(dir: &Path, port: u16) -> bool {
    let file = dir.join(port.to_string());
    match OpenOptions::new().write(true).create_new(true).open(&file) {
        Ok(_) => true,
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {
            let stale = std::fs::metadata(&file)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| SystemTime::now().duration_since(t).ok())
                .is_some_and(|age| age > HELD_FOR);
            // Of two processes that find it stale, one removes it and one (maybe the same)
            // creates it anew: `create_new` lets only one of them have it.
            stale
                && std::fs::remove_file(&file).is_ok()
                && OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&file)
                    .is_ok()
        }
        Err(e) => panic!("reserve port {port} in {}: {e}", dir.display()),
    }
}
