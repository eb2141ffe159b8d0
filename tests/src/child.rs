//! A test's child process: started with only the `PLUME_*` variables the test gives it, ready
//! when it prints its `READY ...` line, killed by PID when dropped.

use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::time::timeout;

/// Remove every `PLUME_*` variable of this process's environment from `cmd`'s, so that the
/// child sees only what the test gives it.
pub fn without_plume_env(cmd: &mut Command) -> &mut Command {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("PLUME_") {
            cmd.env_remove(key);
        }
    }
    cmd
}

/// Start `bin` with `args` and only the `PLUME_*` variables in `vars` (stdout piped, stdin
/// null, killed on drop), and wait (at most `wait`) for its first line on stdout, which it
/// returns with the child; the rest of its stdout is read and dropped in the background, so the
/// child never blocks on a full pipe.
///
/// # Panics
/// When the child cannot start, or exits or stays silent past `wait`: a test failure.
pub async fn spawn_first_line<K: AsRef<std::ffi::OsStr>, V: AsRef<std::ffi::OsStr>>(
    bin: &str,
    args: &[&str],
    vars: &[(K, V)],
    wait: Duration,
) -> (Child, String) {
    let mut cmd = Command::new(bin);
    cmd.args(args)
        .stdout(Stdio::piped())
        .stdin(Stdio::null())
        .kill_on_drop(true);
    without_plume_env(&mut cmd);
    for (k, v) in vars {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("{bin} starts: {e}"));
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = BufReader::new(stdout).lines();
    let line = timeout(wait, lines.next_line())
        .await
        .unwrap_or_else(|_| panic!("{bin}: no line within {wait:?}"))
        .expect("stdout readable")
        .unwrap_or_else(|| panic!("{bin} exited before its first line"));
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, line)
}

/// A child process that announces readiness with a `READY <words...>` line on stdout.
///
/// Its stdin stays open while the guard lives (children may treat end-of-input as "my parent is
/// gone"). Dropping the guard kills the child (SIGKILL, by PID).
#[derive(Debug)]
pub struct ChildNode {
    child: Child,
    /// Kept open until the guard is dropped.
    _stdin: Option<ChildStdin>,
    /// The rest of its stdout, line by line.
    pub lines: Lines<BufReader<ChildStdout>>,
    /// The words of its `READY` line after `READY`.
    pub ready: Vec<String>,
    wait: Duration,
}

impl ChildNode {
    /// Start `bin` with `args` and `vars`, and wait (at most `wait`) for its `READY` line. Every
    /// `PLUME_*` variable of the test's own environment is removed first, so the child sees only
    /// what the test gives it.
    ///
    /// # Panics
    /// When the child cannot start, exits first, or prints anything else first: a test failure.
    pub async fn start(bin: &str, args: &[&str], vars: &[(&str, &str)], wait: Duration) -> Self {
        let mut cmd = Command::new(bin);
        cmd.args(args)
            .stdout(Stdio::piped())
            .stdin(Stdio::piped())
            .kill_on_drop(true);
        without_plume_env(&mut cmd);
        for (key, value) in vars {
            cmd.env(key, value);
        }
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("{bin} starts: {e}"));
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let line = timeout(wait, lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("{bin} not READY within {wait:?}"))
            .expect("stdout readable")
            .unwrap_or_else(|| panic!("{bin} exited before READY"));
        let ready = line
            .strip_prefix("READY ")
            .unwrap_or_else(|| panic!("{bin}: unexpected first line {line:?}"))
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        Self {
            child,
            _stdin: stdin,
            lines,
            ready,
            wait,
        }
    }

    /// The first word of the `READY` line (a node id, a port, ...).
    pub fn id(&self) -> &str {
        self.ready.first().map(String::as_str).unwrap_or_default()
    }

    /// Its PID.
    pub fn pid(&self) -> u32 {
        self.child.id().expect("running")
    }

    /// Send a signal (`"-TERM"`, `"-KILL"`, ...) with `kill(1)`, by PID.
    pub fn signal(&self, sig: &str) {
        let status = std::process::Command::new("kill")
            .args([sig, &self.pid().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill {sig} {}", self.pid());
    }

    /// The next line of its stdout, waiting at most the start deadline.
    pub async fn next_line(&mut self) -> Option<String> {
        timeout(self.wait, self.lines.next_line())
            .await
            .expect("a line in time")
            .expect("stdout readable")
    }

    /// Wait for it to exit, at most the start deadline.
    pub async fn exit_status(&mut self) -> ExitStatus {
        timeout(self.wait, self.child.wait())
            .await
            .expect("exits in time")
            .expect("exit status")
    }

    /// SIGKILL, then reap.
    pub async fn kill(mut self) {
        self.signal("-KILL");
        let _ = self.exit_status().await;
    }

    /// SIGTERM, then expect a `STOPPED` line and a zero exit.
    pub async fn terminate(mut self) {
        self.signal("-TERM");
        assert_eq!(self.next_line().await.as_deref(), Some("STOPPED"));
        let status = self.exit_status().await;
        assert!(status.success(), "{status:?}");
    }
}
