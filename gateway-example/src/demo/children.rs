//! The demo's child processes: how each is started (kept, to start it again), its stdout
//! forwarded line by line, its exit described, and the command that starts it by hand.
//!
//! Children are started with `--watchdog`: they stop when their standard input reaches EOF. The
//! demo holds the write ends, so when it stops it closes them, waits a bounded time and then
//! kills any child still running by its PID; and when the demo itself dies, even by SIGKILL, the
//! operating system closes the pipes and the children stop on their own.

use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::time::{Instant, timeout};

use crate::say;

/// How long a child may take to print its ready line.
const START_DEADLINE: Duration = Duration::from_secs(30);
/// How long a child may take to stop after its stdin closed, before it is killed.
const STOP_DEADLINE: Duration = Duration::from_secs(10);
/// Variables of the demo's own command line: not passed on in a printed command.
const DEMO_ONLY_VARS: [&str; 2] = ["PLUME_GATEWAY_PORT", "PLUME_TODOS_PORTS"];

/// One child of the demo: how to start it, and the running process if there is one.
pub(super) struct Proc {
    /// `gateway`, `todos-a`, `todos-b`.
    pub(super) name: &'static str,
    exe: PathBuf,
    args: Vec<String>,
    /// Set on the child on top of the demo's own environment.
    env: Vec<(&'static str, String)>,
    running: Option<Running>,
    /// When `--restart` starts it again after it died.
    pub(super) restart_at: Option<Instant>,
}

struct Running {
    child: Child,
    pid: u32,
    /// The write end of the child's stdin: closing it stops the child.
    stdin: Option<ChildStdin>,
    lines: Option<Lines<BufReader<ChildStdout>>>,
}

impl Proc {
    /// A child `exe args...` with `env` on top of the demo's environment; not started yet.
    pub(super) fn new(
        name: &'static str,
        exe: PathBuf,
        args: &[&str],
        env: Vec<(&'static str, String)>,
    ) -> Self {
        Self {
            name,
            exe,
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            env,
            running: None,
            restart_at: None,
        }
    }

    /// Its PID while it runs.
    pub(super) fn pid(&self) -> Option<u32> {
        self.running.as_ref().map(|r| r.pid)
    }

    /// Start it (it must not be running).
    pub(super) fn spawn(&mut self) -> anyhow::Result<()> {
        let name = self.name;
        if let Some(pid) = self.pid() {
            bail!("{name} (pid {pid}) is already running");
        }
        let mut command = Command::new(&self.exe);
        command
            .args(&self.args)
            .arg("--watchdog")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            // Should the demo's task be dropped without `stop_all` (a panic), the child is
            // killed too.
            .kill_on_drop(true);
        let mut child = command
            .spawn()
            .with_context(|| format!("cannot start {name}"))?;
        let pid = child.id().context("a child that just started has a pid")?;
        let stdin = child.stdin.take();
        let lines = child.stdout.take().map(|out| BufReader::new(out).lines());
        self.running = Some(Running {
            child,
            pid,
            stdin,
            lines,
        });
        Ok(())
    }

    /// Wait for the child's `... listening on <url>` line and say `started <name> (pid N) on
    /// <url>`; then forward its later output, prefixed with its name.
    pub(super) async fn wait_listening(&mut self) -> anyhow::Result<String> {
        let name = self.name;
        let running = self
            .running
            .as_mut()
            .with_context(|| format!("{name} is not running"))?;
        let mut lines = running
            .lines
            .take()
            .with_context(|| format!("{name} has no stdout"))?;
        let url = timeout(START_DEADLINE, async {
            loop {
                match lines.next_line().await? {
                    Some(line) => match line.split_once(" listening on ") {
                        Some((_, url)) => return anyhow::Ok(url.to_owned()),
                        None => say(&format!("[{name}] {line}")),
                    },
                    None => bail!("{name} exited before it was ready"),
                }
            }
        })
        .await
        .with_context(|| format!("{name} was not listening within {START_DEADLINE:?}"))??;
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                say(&format!("[{name}] {line}"));
            }
        });
        say(&format!("started {name} (pid {}) on {url}", running.pid));
        Ok(url)
    }

    /// It exited (`status` from [`next_exit`]): forget the process and say so, with the command
    /// that starts it again.
    pub(super) fn died(&mut self, status: &std::io::Result<ExitStatus>) {
        let pid = self.running.take().map(|r| r.pid).unwrap_or_default();
        let how = match status {
            Ok(status) => match (status.signal(), status.code()) {
                (Some(signal), _) => format!("signal {signal}"),
                (None, Some(code)) => format!("exit status {code}"),
                (None, None) => status.to_string(),
            },
            Err(err) => format!("cannot watch it ({err})"),
        };
        say(&format!(
            "{} (pid {pid}) died: {how}; restart it with: {}",
            self.name,
            self.command_line()
        ));
    }

    /// Kill it if it runs (SIGKILL by PID) and reap it; say nothing. For a child that failed to
    /// start.
    pub(super) async fn discard(&mut self) {
        if let Some(mut running) = self.running.take() {
            // `Child::kill` sends SIGKILL to this PID and reaps it.
            let _ = running.child.kill().await;
        }
    }

    /// The shell command that starts this child by hand in the demo's mesh: the demo's `PLUME_*`
    /// variables and the child's own, then the program and its arguments.
    pub(super) fn command_line(&self) -> String {
        let mut vars: Vec<(String, String)> = std::env::vars()
            .filter(|(k, _)| k.starts_with("PLUME_") && !DEMO_ONLY_VARS.contains(&k.as_str()))
            .filter(|(k, _)| !self.env.iter().any(|(own, _)| own == k))
            .collect();
        vars.extend(self.env.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
        vars.sort();
        let mut words: Vec<String> = vars
            .iter()
            .map(|(k, v)| format!("{k}={}", shell_quote(v)))
            .collect();
        words.push(shell_quote(&self.exe.to_string_lossy()));
        words.extend(self.args.iter().map(|a| shell_quote(a)));
        words.join(" ")
    }
}

/// Wait until one of the running children exits: its index in `procs` and its status. Pending
/// forever when none runs. Cancel-safe (`Child::wait` is).
pub(super) async fn next_exit(procs: &mut [Proc]) -> (usize, std::io::Result<ExitStatus>) {
    let waits: Vec<_> = procs
        .iter_mut()
        .enumerate()
        .filter_map(|(i, p)| {
            let running = p.running.as_mut()?;
            Some(Box::pin(async move { (i, running.child.wait().await) }))
        })
        .collect();
    if waits.is_empty() {
        return std::future::pending().await;
    }
    futures::future::select_all(waits).await.0
}

/// Close every running child's stdin, wait for each to exit (bounded), kill the stragglers by
/// PID.
pub(super) async fn stop_all(procs: &mut [Proc]) {
    for running in procs.iter_mut().filter_map(|p| p.running.as_mut()) {
        drop(running.stdin.take());
    }
    for proc in procs.iter_mut() {
        let Some(mut running) = proc.running.take() else {
            continue;
        };
        let (name, pid) = (proc.name, running.pid);
        match timeout(STOP_DEADLINE, running.child.wait()).await {
            Ok(Ok(status)) => say(&format!("{name} (pid {pid}) stopped: {status}")),
            Ok(Err(err)) => say(&format!("{name} (pid {pid}): {err}")),
            Err(_) => {
                let killed = running.child.kill().await;
                say(&format!(
                    "{name} (pid {pid}) did not stop within {STOP_DEADLINE:?}: killed ({killed:?})"
                ));
            }
        }
    }
}

/// `word` as one POSIX shell word: as is when it is made of safe characters only, else in
/// single quotes.
fn shell_quote(word: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "_-+=:,./@%".contains(c);
    if !word.is_empty() && word.chars().all(safe) {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_quoted_for_the_shell_only_when_needed() {
        assert_eq!(shell_quote("todos-a"), "todos-a");
        assert_eq!(
            shell_quote("nats://127.0.0.1:4222"),
            "nats://127.0.0.1:4222"
        );
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote("$HOME;rm"), "'$HOME;rm'");
    }

    #[test]
    fn the_printed_command_has_the_childs_variables_and_arguments() {
        let proc = Proc::new(
            "todos-a",
            PathBuf::from("/opt/plume demo/gateway-example"),
            &["todos", "--name", "todos-a", "--port", "3031"],
            vec![("PLUME_MESH_SECRET", "00ff".to_owned())],
        );
        let line = proc.command_line();
        assert!(line.contains("PLUME_MESH_SECRET=00ff "), "{line}");
        assert!(
            line.ends_with(" '/opt/plume demo/gateway-example' todos --name todos-a --port 3031"),
            "{line}"
        );
        assert!(!line.contains("--watchdog"), "{line}");
    }
}
