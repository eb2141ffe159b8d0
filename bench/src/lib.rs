//! Tools of `bench/run.sh`: `floor` (a plain axum server answering what the demo's todos
//! service answers, the floor the gateway is compared with) and `probe` (a small HTTP/1.1 client
//! that waits for a response or records the outcome of every request under load).
//! The scale curves' nodes (`mesh-node`, `services-node`) share the two helpers below.

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

/// Now, in microseconds since the Unix epoch (0 if the clock is before it).
pub fn now_us() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or(0)
}

/// Print one line on stdout at once (the bench reads these lines; a closed stdout is ignored).
#[allow(clippy::print_stdout)]
pub fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
}
