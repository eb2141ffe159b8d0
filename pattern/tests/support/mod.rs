//! What the interop tests share: a real `nats-server` (tests/src/servers.rs), the pinned Node
//! Hemera packages (tests/hemera, installed with `npm ci` once per lockfile), and Node peer
//! processes whose stdout lines are read with a deadline.

#![allow(dead_code)]

#[allow(unreachable_pub, dead_code)]
#[path = "../../../tests/src/servers.rs"]
pub mod servers;

#[path = "../../../core/tests/support/npm.rs"]
mod npm;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

/// How long a Node peer may take to say something.
pub(crate) const LINE_WITHIN: Duration = Duration::from_secs(30);

/// The Node Hemera peers (tests/hemera) with their `node_modules`, installed once.
pub(crate) fn hemera_dir() -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/hemera");
    let dir = npm::install_locked(&src, "hemera");
    for script in ["server.js", "client.js"] {
        std::fs::copy(src.join(script), dir.join(script)).expect("copy the peer script");
    }
    dir
}

/// A Node peer process, killed (by PID) when dropped.
pub(crate) struct Peer {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Peer {
    /// `node SCRIPT ARGS…` in the installed package directory (node must be installed).
    pub(crate) fn spawn(script: &str, args: &[&str]) -> Peer {
        let dir = hemera_dir();
        let mut child = Command::new("node")
            .arg(dir.join(script))
            .args(args)
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("node runs (apt-get install nodejs; scripts/test.sh does it)");
        let stdout = child.stdout.take().expect("piped stdout");
        Peer {
            child,
            lines: BufReader::new(stdout).lines(),
        }
    }

    /// The next line on stdout (panics after [`LINE_WITHIN`] or at EOF).
    pub(crate) async fn line(&mut self) -> String {
        match tokio::time::timeout(LINE_WITHIN, self.lines.next_line()).await {
            Ok(Ok(Some(line))) => line,
            Ok(other) => panic!("the Node peer ended its output: {other:?}"),
            Err(_) => panic!("the Node peer said nothing for {LINE_WITHIN:?}"),
        }
    }

    /// Wait for the line `READY`.
    pub(crate) async fn ready(&mut self) {
        let line = self.line().await;
        assert_eq!(line, "READY", "the Node peer's first line");
    }

    /// The next line, parsed as JSON.
    pub(crate) async fn json(&mut self) -> Value {
        let line = self.line().await;
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
    }

    /// Wait for the process to exit (with a deadline) and return whether it succeeded.
    pub(crate) async fn exit_ok(&mut self) -> bool {
        match tokio::time::timeout(LINE_WITHIN, self.child.wait()).await {
            Ok(Ok(status)) => status.success(),
            _ => false,
        }
    }
}
