//! The process gauges, read from `/proc/self` at each scrape (Linux; elsewhere they stay unset).

use metrics::{Unit, describe_gauge, gauge};

const RSS: &str = "process_resident_memory_bytes";
const CPU: &str = "process_cpu_seconds_total";
const FDS: &str = "process_open_fds";

/// Clock ticks per second of `/proc/<pid>/stat` (`USER_HZ`, 100 on every Linux ABI).
const USER_HZ: f64 = 100.0;

pub(super) fn describe() {
    describe_gauge!(RSS, Unit::Bytes, "Resident memory of the process");
    describe_gauge!(
        CPU,
        Unit::Seconds,
        "CPU time of the process, user and system"
    );
    describe_gauge!(FDS, "Open file descriptors of the process");
}

pub(super) fn record() {
    if let Some(rss) = rss_bytes() {
        gauge!(RSS).set(rss as f64);
    }
    if let Some(cpu) = cpu_seconds() {
        gauge!(CPU).set(cpu);
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        gauge!(FDS).set(fds.count() as f64);
    }
}

/// `VmRSS` of `/proc/self/status`, in bytes.
fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// `utime + stime` of `/proc/self/stat`, in seconds.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) may hold spaces: count fields after its closing parenthesis.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // After ')' come field 3 (state) …; utime and stime are fields 14 and 15.
    let utime: f64 = fields.nth(11)?.parse().ok()?;
    let stime: f64 = fields.next()?.parse().ok()?;
    Some((utime + stime) / USER_HZ)
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_this_process() {
        assert!(super::rss_bytes().is_some_and(|b| b > 1024 * 1024));
        assert!(super::cpu_seconds().is_some_and(|s| s >= 0.0));
    }
}
