//! Three "hosts" for multi-host tests: network namespaces created by the test, joined by veth
//! pairs to a bridge that lives in a fourth namespace of its own (never the root namespace).
//! Host `i` (1..=3) has 10.77.0.`i`/24 on its `v0`; the addresses exist only inside those
//! namespaces, and everything is deleted on drop, even when the test fails.
//!
//! The tests that use it need root and `ip netns`. Without them they FAIL, unless
//! `PLUME_SKIP_MULTIHOST_TESTS=1` is set: that one variable, and nothing else, turns them into
//! a skip ([`prerequisites`]).

#![allow(dead_code, unreachable_pub)]

use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

/// Host `i`'s address.
pub fn addr(i: u8) -> String {
    format!("10.77.0.{i}")
}

pub fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {args:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Whether these tests can run here; `Err` says why not.
fn can_run() -> Result<(), String> {
    let uid = Command::new("id")
        .arg("-u")
        .output()
        .map_err(|e| format!("id -u: {e}"))?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return Err("not root".into());
    }
    let probe = format!("plprobe{}", std::process::id());
    ip(&["netns", "add", &probe])?;
    ip(&["netns", "del", &probe])
}

/// The one variable that skips the multi-host tests (documented in docs/configuration.md).
const SKIP_VAR: &str = "PLUME_SKIP_MULTIHOST_TESTS";

/// Whether `PLUME_SKIP_MULTIHOST_TESTS` asks to skip (set and not `0` or empty).
fn skip_requested() -> bool {
    std::env::var(SKIP_VAR).is_ok_and(|v| !v.is_empty() && v != "0")
}

/// Returns false (skip) only when `PLUME_SKIP_MULTIHOST_TESTS` is set; otherwise a missing
/// prerequisite (not root, `ip netns` failing) fails the test.
pub fn prerequisites() -> bool {
    if skip_requested() {
        eprintln!("skipping multi-host test: {SKIP_VAR} is set");
        return false;
    }
    // Probed once per process (the tests run in parallel).
    static PROBE: OnceLock<Result<(), String>> = OnceLock::new();
    if let Err(why) = PROBE.get_or_init(can_run).clone() {
        panic!(
            "multi-host tests need root and `ip netns`, but cannot run: {why} \
             (set {SKIP_VAR}=1 to skip them explicitly)"
        );
    }
    true
}

/// Three host namespaces and a bridge namespace; deleted on drop.
pub struct Net {
    prefix: String,
    created: Vec<String>,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

impl Net {
    pub fn new() -> Net {
        // Unique per process and per test, so parallel runs never clash.
        let prefix = format!(
            "pl{}x{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let mut net = Net {
            prefix,
            created: Vec::new(),
        };
        if let Err(e) = net.build() {
            panic!("cannot build the test network: {e}");
        }
        net
    }

    pub fn ns(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    pub fn host(&self, i: u8) -> String {
        self.ns(&format!("h{i}"))
    }

    pub fn bridge(&self) -> String {
        self.ns("br")
    }

    fn build(&mut self) -> Result<(), String> {
        let br = self.bridge();
        for ns in [br.clone(), self.host(1), self.host(2), self.host(3)] {
            ip(&["netns", "add", &ns])?;
            self.created.push(ns.clone());
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        }
        ip(&[
            "-n",
            &br,
            "link",
            "add",
            "br0",
            "type",
            "bridge",
            "mcast_snooping",
            "0",
        ])?;
        ip(&["-n", &br, "link", "set", "br0", "up"])?;
        for i in 1..=3u8 {
            let h = self.host(i);
            let port = format!("p{i}");
            // Both ends are created straight inside the namespaces.
            ip(&[
                "-n", &h, "link", "add", "v0", "type", "veth", "peer", "name", &port, "netns", &br,
            ])?;
            ip(&["-n", &br, "link", "set", &port, "master", "br0"])?;
            ip(&["-n", &br, "link", "set", &port, "up"])?;
            ip(&[
                "-n",
                &h,
                "addr",
                "add",
                &format!("10.77.0.{i}/24"),
                "dev",
                "v0",
            ])?;
            ip(&["-n", &h, "link", "set", "v0", "up"])?;
            ip(&["-n", &h, "route", "add", "239.0.0.0/8", "dev", "v0"])?;
        }
        Ok(())
    }

    /// Takes host `i`'s port on the bridge down (`false`) or up (`true`).
    pub fn link(&self, i: u8, up: bool) {
        let state = if up { "up" } else { "down" };
        if let Err(e) = ip(&["-n", &self.bridge(), "link", "set", &format!("p{i}"), state]) {
            panic!("{e}");
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in self.created.iter().rev() {
            if let Err(e) = ip(&["netns", "del", ns]) {
                eprintln!("cleanup: {e}");
            }
        }
    }
}
