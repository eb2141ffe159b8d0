//! The load client of the sockets curve (`bench/curve_sockets.sh`, issue 22): N socket.io
//! clients on the gateway, one `create` on a replica, the time until the `todos created` event
//! reaches each socket.
//!
//! ```text
//! sockets --gateway 127.0.0.1:PG --replica 127.0.0.1:PA --sockets N [--events E]
//!         [--sources 127.0.0.1,127.0.0.2,...] [--gateway-pid PID] [--per-task 256]
//! ```
//!
//! 1. Logs in on the gateway over REST (the demo user) and waits until `GET /todos` through the
//!    gateway answers 200 (the replica's service is mounted).
//! 2. Reads the gateway's RSS (idle), opens N sockets (source addresses in turn, at most 256
//!    being set up at once), each `create`s on `authentication` with the JWT as the demo's page
//!    does, and reads the RSS again once all are in.
//! 3. Creates E + 1 todos on the replica directly, one at a time, each after the previous one
//!    has reached every socket (or after 10 s); the first warms up and is not counted.
//!    The delivery time of a socket is from right before the `POST` to the moment this client
//!    reads the event.
//!
//! Prints `key value` lines on stdout (times in ms, RSS in KiB); exits 1 when a socket failed
//! or an event did not reach every socket. The client multiplexes `--per-task` connections on
//! one tokio task (a `FuturesUnordered`), so 10,000 sockets are 40 tasks. Loopback only.

// A command-line tool whose output is its result.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod conn;
mod http;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::sync::{Notify, Semaphore, watch};

use conn::{Arrival, Shared, tracing_line};

/// How long one event may take to reach every socket.
const EVENT_DEADLINE: Duration = Duration::from_secs(10);
/// The most sockets being set up at once.
const SETTING_UP: usize = 256;

struct Args {
    gateway: SocketAddr,
    replica: String,
    sockets: usize,
    events: usize,
    sources: Vec<IpAddr>,
    gateway_pid: Option<u32>,
    per_task: usize,
    email: String,
    password: String,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        gateway: "127.0.0.1:3030".parse()?,
        replica: String::new(),
        sockets: 0,
        events: 5,
        sources: vec!["127.0.0.1".parse()?],
        gateway_pid: None,
        per_task: 256,
        email: "demo@plume.local".to_owned(),
        password: "plume-demo".to_owned(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--gateway" => args.gateway = value.parse().context("--gateway ADDR:PORT")?,
            "--replica" => args.replica = value,
            "--sockets" => args.sockets = value.parse()?,
            "--events" => args.events = value.parse()?,
            "--sources" => {
                args.sources = value
                    .split(',')
                    .map(|s| s.trim().parse())
                    .collect::<Result<_, _>>()
                    .context("--sources IP,IP,...")?;
            }
            "--gateway-pid" => args.gateway_pid = Some(value.parse()?),
            "--per-task" => args.per_task = value.parse::<usize>()?.max(1),
            "--email" => args.email = value,
            "--password" => args.password = value,
            other => bail!("unknown flag {other}"),
        }
    }
    if args.sockets == 0 || args.replica.is_empty() {
        bail!("usage: sockets --gateway ADDR --replica ADDR --sockets N [--events E] ...");
    }
    let loopback = |ip: &IpAddr| ip.is_loopback();
    let replica_ip: IpAddr = args
        .replica
        .rsplit_once(':')
        .and_then(|(ip, _)| ip.parse().ok())
        .context("--replica IP:PORT")?;
    if !loopback(&args.gateway.ip()) || !loopback(&replica_ip) || !args.sources.iter().all(loopback)
    {
        bail!("loopback addresses only");
    }
    Ok(args)
}

/// The resident set of a process, in KiB.
fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS")
}

/// Log in over REST and wait until the gateway serves `todos` (30 s at most).
async fn login(args: &Args) -> anyhow::Result<String> {
    let gateway = args.gateway.to_string();
    let body =
        serde_json::json!({"strategy": "local", "email": args.email, "password": args.password})
            .to_string();
    let req = http::Request::open(&gateway, "POST", "/authentication", Some(&body), None).await?;
    let (status, answer) = req.send().await?;
    let answer: serde_json::Value = serde_json::from_str(&answer)
        .with_context(|| format!("login answered {status}: {answer}"))?;
    let token = answer["accessToken"]
        .as_str()
        .with_context(|| format!("login answered {status} without a token: {answer}"))?
        .to_owned();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let req = http::Request::open(&gateway, "GET", "/todos", None, Some(&token)).await?;
        let (status, _) = req.send().await?;
        if status == 200 {
            return Ok(token);
        }
        if Instant::now() > deadline {
            bail!("GET /todos through the gateway still answers {status} after 30 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Wait until `done` holds, waking on progress, until `deadline`.
async fn wait_until(shared: &Shared, deadline: Instant, done: impl Fn() -> bool) -> bool {
    loop {
        if done() {
            return true;
        }
        let woken = tokio::time::timeout_at(deadline.into(), shared.progress.notified()).await;
        if woken.is_err() {
            return done();
        }
    }
}

/// The value at quantile `q` of sorted values.
fn quantile(sorted: &[u64], q: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

/// Milliseconds since the Unix epoch (makes this run's todos unique).
fn unix_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

fn ms(us: Option<u64>) -> String {
    us.map_or_else(
        || "none".to_owned(),
        |v| format!("{:.2}", v as f64 / 1000.0),
    )
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let token = login(&args).await?;
    let rss = |what: &str| -> Option<u64> {
        let pid = args.gateway_pid?;
        rss_kib(pid)
            .inspect_err(|e| tracing_line(&format!("no RSS {what}: {e:#}")))
            .ok()
    };
    let rss_idle = rss("idle");

    let shared = Arc::new(Shared {
        gateway: args.gateway,
        token,
        tag: format!("sockets-{}-{}", std::process::id(), unix_ms()),
        ready: AtomicUsize::new(0),
        failed: AtomicUsize::new(0),
        got: (0..=args.events).map(|_| AtomicUsize::new(0)).collect(),
        duplicates: AtomicUsize::new(0),
        sockets: args.sockets,
        progress: Notify::new(),
        base: Instant::now(),
        setting_up: Semaphore::new(SETTING_UP),
    });
    let (stop_tx, stop_rx) = watch::channel(false);

    // --- open the sockets, `per_task` to a task -------------------------------------------
    let started = Instant::now();
    let mut groups = Vec::new();
    let mut next = 0;
    while next < args.sockets {
        let end = (next + args.per_task).min(args.sockets);
        let mut conns = FuturesUnordered::new();
        for i in next..end {
            let source = args.sources[i % args.sources.len()];
            conns.push(conn::run(shared.clone(), source, stop_rx.clone()));
        }
        groups.push(tokio::spawn(async move {
            let mut all: Vec<Arrival> = Vec::new();
            while let Some(arrivals) = conns.next().await {
                all.extend(arrivals);
            }
            all
        }));
        next = end;
    }
    let setup_deadline = Instant::now() + Duration::from_secs(30 + args.sockets as u64 / 100);
    let n = args.sockets;
    let all_in = wait_until(&shared, setup_deadline, || {
        shared.ready.load(Ordering::Acquire) + shared.failed.load(Ordering::Acquire) >= n
    })
    .await;
    let setup = started.elapsed();
    let ready = shared.ready.load(Ordering::Acquire);
    tracing_line(&format!(
        "{ready} of {n} sockets ready in {:.1} s",
        setup.as_secs_f64()
    ));
    let rss_ready = rss("with the sockets");

    // --- the events -----------------------------------------------------------------------
    let mut sent_at = vec![0u64; args.events + 1];
    if all_in && ready == n {
        let replica = args.replica.as_str();
        for (k, sent) in sent_at.iter_mut().enumerate() {
            let body = serde_json::json!({"text": format!("{}-{k}", shared.tag)}).to_string();
            let req = http::Request::open(replica, "POST", "/todos", Some(&body), None).await?;
            *sent = shared.base.elapsed().as_micros() as u64;
            let (status, answer) = req.send().await?;
            if status != 201 && status != 200 {
                bail!("create on the replica answered {status}: {answer}");
            }
            let deadline = Instant::now() + EVENT_DEADLINE;
            let got = &shared.got[k];
            let complete = wait_until(&shared, deadline, || got.load(Ordering::Acquire) >= n).await;
            let reached = got.load(Ordering::Acquire);
            tracing_line(&format!(
                "event {k}: {reached} of {n} sockets{}",
                if complete { "" } else { " at the deadline" }
            ));
        }
    }
    let rss_after = rss("after the events");

    // --- stop and collect -----------------------------------------------------------------
    let _ = stop_tx.send(true);
    let mut arrivals = Vec::new();
    for group in groups {
        arrivals.extend(group.await.context("a client task panicked")?);
    }
    let mut delays: Vec<u64> = Vec::with_capacity(arrivals.len());
    let mut per_event_max = vec![0u64; args.events + 1];
    for (k, at) in arrivals {
        let k = k as usize;
        let delay = at.saturating_sub(sent_at[k]);
        per_event_max[k] = per_event_max[k].max(delay);
        if k > 0 {
            delays.push(delay);
        }
    }
    delays.sort_unstable();
    let mut last: Vec<u64> = per_event_max.iter().skip(1).copied().collect();
    last.sort_unstable();
    let missing: usize = shared
        .got
        .iter()
        .skip(1)
        .map(|g| n.saturating_sub(g.load(Ordering::Acquire)))
        .sum();
    let failed = shared.failed.load(Ordering::Acquire);

    println!("sockets {n}");
    println!("ready {ready}");
    println!("failed {failed}");
    println!("setup_s {:.2}", setup.as_secs_f64());
    println!("events {}", args.events);
    println!("missing {missing}");
    println!("duplicates {}", shared.duplicates.load(Ordering::Acquire));
    println!("p50_ms {}", ms(quantile(&delays, 0.5)));
    println!("p99_ms {}", ms(quantile(&delays, 0.99)));
    println!("max_ms {}", ms(delays.last().copied()));
    println!("all_reached_ms {}", ms(quantile(&last, 0.5)));
    for (key, value) in [
        ("rss_idle_kib", rss_idle),
        ("rss_sockets_kib", rss_ready),
        ("rss_after_kib", rss_after),
    ] {
        if let Some(v) = value {
            println!("{key} {v}");
        }
    }
    if ready < n || failed > 0 || missing > 0 || delays.is_empty() {
        bail!("{ready} of {n} sockets ready, {failed} failed, {missing} deliveries missing");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::quantile;

    #[test]
    fn quantiles_are_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(quantile(&v, 0.5), Some(50));
        assert_eq!(quantile(&v, 0.99), Some(99));
        assert_eq!(quantile(&v, 1.0), Some(100));
        assert_eq!(quantile(&[7], 0.99), Some(7));
        assert_eq!(quantile(&[], 0.5), None);
    }
}
