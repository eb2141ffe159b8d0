//! A private PostgreSQL server for one test: `initdb` in a temporary directory, a free loopback
//! port, its unix socket in that directory, stopped by PID when dropped (also when the test
//! panics). A missing PostgreSQL installation fails the test.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, Result, bail};

/// How long the server may take to start or stop.
const DEADLINE: Duration = Duration::from_secs(60);

/// A running (or stopped) private PostgreSQL server.
pub(crate) struct PgServer {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    child: Option<Child>,
    /// Uid/gid to run as: PostgreSQL refuses to run as root.
    user: Option<(u32, u32)>,
}

/// The directory holding `initdb`, `postgres` and `pg_ctl`: on PATH, or Debian's
/// `/usr/lib/postgresql/<version>/bin`.
fn bin_dir() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            if dir.join("initdb").is_file() && dir.join("postgres").is_file() {
                return Ok(dir);
            }
        }
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|entries| {
            entries
                .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
                .filter(|bin| bin.join("initdb").is_file())
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found.pop().context(
        "PostgreSQL is not installed (no initdb on PATH or in /usr/lib/postgresql/*/bin); \
         scripts/test.sh installs it",
    )
}

fn id_of(flag: &str) -> Result<u32> {
    let out = Command::new("id").args([flag, "postgres"]).output()?;
    if !out.status.success() {
        bail!("running as root needs the 'postgres' user to run PostgreSQL");
    }
    Ok(String::from_utf8(out.stdout)?.trim().parse()?)
}

/// Ports below the ephemeral range, reserved across test processes (shared with plume-tests).
#[path = "../../../tests/src/ports.rs"]
#[allow(unreachable_pub)]
mod ports;

impl PgServer {
    /// `initdb` and start a server.
    pub(crate) fn start() -> Result<PgServer> {
        let bin = bin_dir()?;
        let is_root = Command::new("id").arg("-u").output()?.stdout.trim_ascii() == b"0";
        let user = if is_root {
            Some((id_of("-u")?, id_of("-g")?))
        } else {
            None
        };
        let dir = tempfile::Builder::new().prefix("plume-pg-").tempdir()?;
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))?;
        }
        let mut server = PgServer {
            dir,
            bin,
            port: ports::free_port(),
            child: None,
            user,
        };
        let data = server.data_dir();
        let out = server
            .command("initdb")
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "plume",
                "--auth=trust",
                "--locale=C",
                "-E",
                "UTF8",
                "--no-sync",
            ])
            .output()
            .context("running initdb")?;
        if !out.status.success() {
            bail!("initdb failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        server.resume()?;
        Ok(server)
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.bin.join(program));
        if let Some((uid, gid)) = self.user {
            use std::os::unix::process::CommandExt;
            cmd.uid(uid).gid(gid);
        }
        cmd.current_dir(self.dir.path());
        cmd
    }

    /// The URL of the `postgres` database.
    pub(crate) fn url(&self) -> String {
        format!("postgres://plume@127.0.0.1:{}/postgres", self.port)
    }

    /// Start the server (again), on the same port and data; returns once it accepts
    /// connections (its log says so).
    pub(crate) fn resume(&mut self) -> Result<()> {
        if self.child.is_some() {
            bail!("the server is running");
        }
        let socket_dir = self.dir.path();
        let mut child = self
            .command("postgres")
            .arg("-D")
            .arg(self.data_dir())
            .args([
                "-p",
                &self.port.to_string(),
                "-c",
                "listen_addresses=127.0.0.1",
            ])
            .arg("-k")
            .arg(socket_dir)
            .args(["-c", "fsync=off", "-c", "max_connections=40"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting postgres")?;
        let stderr = child.stderr.take().context("no stderr")?;
        self.child = Some(child);
        wait_ready(stderr)
    }

    /// Stop the server (fast shutdown by PID) and wait until it has exited.
    pub(crate) fn stop(&mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        signal(child.id(), "-INT");
        let (tx, rx) = mpsc::channel();
        let waiter = std::thread::spawn(move || {
            let status = child.wait();
            let _ = tx.send(());
            (child, status)
        });
        if rx.recv_timeout(DEADLINE).is_err() {
            bail!("postgres did not stop within {DEADLINE:?}");
        }
        let (_, status) = waiter
            .join()
            .map_err(|_| anyhow::anyhow!("waiter panicked"))?;
        status?;
        Ok(())
    }

    /// The directory of the data (for tests that look at files).
    #[allow(dead_code)]
    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .args([sig, &pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Read the server log until it says it accepts connections (or exits, or the deadline passes).
fn wait_ready(stderr: std::process::ChildStderr) -> Result<()> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut log = Vec::new();
        let mut ready = false;
        for line in BufReader::new(stderr).lines().map_while(|l| l.ok()) {
            if !ready && line.contains("ready to accept connections") {
                ready = true;
                let _ = tx.send(Ok(()));
            }
            if !ready {
                log.push(line);
            }
        }
        if !ready {
            let _ = tx.send(Err(log.join("\n")));
        }
    });
    match rx.recv_timeout(DEADLINE) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(log)) => bail!("postgres exited before it was ready:\n{log}"),
        Err(_) => bail!("postgres was not ready within {DEADLINE:?}"),
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Immediate shutdown: the postmaster ends its backends too.
            signal(child.id(), "-QUIT");
            let _ = child.wait();
        }
    }
}
