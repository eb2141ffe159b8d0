//! Key presses in the demo's terminal: the lines typed on its standard input, read on a plain
//! thread, when standard input is a pipe (a FIFO, or a socket pair as Node and others make) or a
//! terminal of which the demo is in the foreground.
//! Anything else (no stdin, `/dev/null`, a file) turns them off; end of input just ends them.
//! The demo never stops, or waits, because of its standard input.

use std::io::{BufRead, IsTerminal, Read};
use std::os::fd::AsFd;
use std::os::unix::fs::FileTypeExt;

use tokio::sync::mpsc;

/// At most this many typed lines wait for the demo (a flood of input blocks the reader thread,
/// nothing else).
const QUEUE: usize = 8;
/// The longest line read at once, in bytes (commands are one letter).
const MAX_LINE: u64 = 64;

/// The lines typed, or `None` when key presses are off.
pub(super) fn start() -> Option<mpsc::Receiver<String>> {
    let stdin = std::io::stdin();
    let terminal = stdin.is_terminal();
    let pipe = stdin
        .as_fd()
        .try_clone_to_owned()
        .ok()
        .map(std::fs::File::from)
        .and_then(|f| f.metadata().ok())
        .is_some_and(|m| m.file_type().is_fifo() || m.file_type().is_socket());
    if !(pipe || terminal && in_foreground()) {
        return None;
    }
    let (tx, rx) = mpsc::channel(QUEUE);
    let spawned = std::thread::Builder::new()
        .name("demo-keys".into())
        .spawn(move || read_lines(terminal, &tx));
    // A plain thread: it does not hold up the runtime's shutdown while it waits in `read`.
    spawned.is_ok().then_some(rx)
}

/// The next typed line; `None` (and key presses off) once input ended. Pending forever when
/// key presses are off, so it can sit in a `select!`.
pub(super) async fn next(keys: &mut Option<mpsc::Receiver<String>>) -> Option<String> {
    let Some(rx) = keys.as_mut() else {
        return std::future::pending().await;
    };
    let line = rx.recv().await;
    if line.is_none() {
        *keys = None;
    }
    line
}

fn read_lines(terminal: bool, tx: &mpsc::Sender<String>) {
    let mut stdin = std::io::stdin().lock();
    let mut line = Vec::new();
    loop {
        // A background job that reads its terminal is stopped (SIGTTIN): read only in the
        // foreground.
        if terminal && !in_foreground() {
            crate::say("the demo runs in the background: key presses are off");
            return;
        }
        line.clear();
        // A longer line arrives in pieces, each one an unknown command.
        match stdin.by_ref().take(MAX_LINE).read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                let typed = String::from_utf8_lossy(&line).trim().to_owned();
                if tx.blocking_send(typed).is_err() {
                    return;
                }
            }
        }
    }
}

/// Whether this process is in the foreground process group of its terminal (Linux: from
/// `/proc/self/stat`; elsewhere assumed).
fn in_foreground() -> bool {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return true;
    };
    foreground_in_stat(&stat).unwrap_or(true)
}

/// `pgrp == tpgid` in a `/proc/<pid>/stat` line (fields 5 and 8; the command name, field 2,
/// may hold spaces and parentheses, so fields are counted after its last `)`).
fn foreground_in_stat(stat: &str) -> Option<bool> {
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let pgrp: i64 = fields.get(2)?.parse().ok()?;
    let tpgid: i64 = fields.get(5)?.parse().ok()?;
    Some(pgrp == tpgid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_foreground_group_is_read_from_proc_stat() {
        let fg = "4242 (gateway-ex (x)) S 1 4242 4242 34816 4242 4194560 0 0";
        assert_eq!(foreground_in_stat(fg), Some(true));
        let bg = "4242 (gateway-example) S 1 4242 4242 34816 5000 4194560 0 0";
        assert_eq!(foreground_in_stat(bg), Some(false));
        assert_eq!(foreground_in_stat("4242 (x) S 1"), None);
        assert_eq!(foreground_in_stat("garbage"), None);
        // This process's own line parses.
        let own = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
        assert!(foreground_in_stat(&own).is_some(), "{own}");
    }
}
