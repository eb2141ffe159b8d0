//! `gateway-example mesh`: the mesh monitor in a terminal. It joins the mesh as a monitor node
//! (it provides nothing, so no call is ever routed to it; see `plume_transport::monitor`) and
//! redraws the nodes, their services, the links and the recent joins and losses after every
//! round (one a second); `--json` prints one snapshot once the picture has settled (or when
//! `--wait` has passed) and exits; `--json --follow` prints every snapshot, one JSON line per
//! round.

use std::fmt::Write as _;
use std::io::Write as _;
use std::time::Duration;

use anyhow::Context;
use plume_transport::MeshBuilder;
use plume_transport::monitor::{ChangeKind, MeshMonitor, MeshSnapshot, MonitorOptions};

/// The options of `gateway-example mesh`.
#[derive(Debug, clap::Args)]
pub(crate) struct MeshArgs {
    /// Print one snapshot as JSON and exit.
    #[arg(long)]
    json: bool,
    /// With --json: print every snapshot, one JSON line per round, until stopped.
    #[arg(long, requires = "json")]
    follow: bool,
    /// With --json: the longest wait for the picture to settle (`2s`, `500ms`).
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    wait: Duration,
    /// Time between rounds (`1s`, `250ms`).
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    interval: Duration,
}

/// `500ms`, `2s` or `1m` (a bare number is seconds).
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration such as 2s or 500ms"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n.saturating_mul(60))),
        _ => Err(format!("{s:?}: the unit is ms, s or m")),
    }
}

/// Run the monitor: the environment is `PLUME_ENV` (default `default`), discovery the
/// `PLUME_DISCOVERY…` variables (default: loopback).
pub(crate) async fn run(
    args: MeshArgs,
    stop: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let environment = std::env::var("PLUME_ENV")
        .ok()
        .filter(|e| !e.is_empty())
        .unwrap_or_else(|| "default".to_owned());
    let options = MonitorOptions {
        interval: if args.json && !args.follow {
            args.interval.min(Duration::from_millis(250))
        } else {
            args.interval
        },
        ..MonitorOptions::default()
    };
    let builder = MeshBuilder::from_env()?.environment(environment);
    let monitor = MeshMonitor::join(builder, options)
        .await
        .context("joining the mesh")?;
    if args.follow {
        follow(&monitor, stop).await?;
        monitor.shutdown().await;
        return Ok(());
    }
    if args.json {
        let snapshot = monitor.settle(args.wait).await;
        crate::say(&serde_json::to_string_pretty(&*snapshot)?);
        monitor.shutdown().await;
        return Ok(());
    }
    let mut updates = monitor.updates();
    tokio::pin!(stop);
    loop {
        let text = render(&updates.borrow_and_update());
        let mut out = std::io::stdout().lock();
        // Home, clear the screen, draw.
        let _ = write!(out, "\x1b[H\x1b[2J{text}").and_then(|()| out.flush());
        drop(out);
        tokio::select! {
            () = &mut stop => break,
            changed = updates.changed() => if changed.is_err() { break },
        }
    }
    monitor.shutdown().await;
    Ok(())
}

/// Print every new snapshot as one line of JSON until `stop`.
async fn follow(monitor: &MeshMonitor, stop: impl Future<Output = ()>) -> anyhow::Result<()> {
    let mut updates = monitor.updates();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => return Ok(()),
            changed = updates.changed() => if changed.is_err() { return Ok(()) },
        }
        let line = serde_json::to_string(&**updates.borrow_and_update())?;
        crate::say(&line);
    }
}

/// The terminal view of one snapshot.
pub(crate) fn render(s: &MeshSnapshot) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "\x1b[1mPlume mesh\x1b[0m · environment {} · {} node(s) · {} UTC",
        s.environment,
        s.nodes.len(),
        clock(s.taken_at_ms)
    );
    let _ = writeln!(
        t,
        "\n\x1b[1m{:<10} {:<14} {:<14} {:<22} {:>9} {:>9}  SERVICES\x1b[0m",
        "NODE", "NAME", "KEY", "ADDRESS", "UPTIME", "RTT"
    );
    for n in &s.nodes {
        let _ = writeln!(
            t,
            "{:<10} {:<14} {:<14} {:<22} {:>9} {:>9}  {}{}",
            short(&n.id),
            n.name,
            n.key,
            n.addr.as_deref().unwrap_or("-"),
            n.uptime_ms.map_or_else(|| "-".to_owned(), uptime),
            n.rtt_ms
                .map_or_else(|| "-".to_owned(), |r| format!("{r:.2}ms")),
            if n.services.is_empty() {
                "-".to_owned()
            } else {
                n.services.join(", ")
            },
            if n.answered { "" } else { "  (no answer)" }
        );
    }
    if s.nodes.is_empty() {
        let _ = writeln!(t, "(no node yet)");
    }
    let name_of = |id: &str| {
        s.nodes
            .iter()
            .find(|n| n.id == id)
            .map_or_else(|| short(id), |n| format!("{} ({})", n.name, short(id)))
    };
    let _ = writeln!(t, "\n\x1b[1mLINKS\x1b[0m");
    for l in &s.links {
        let _ = writeln!(
            t,
            "{} <-> {}  {}",
            name_of(&l.from),
            name_of(&l.to),
            l.rtt_ms
                .map_or_else(|| "no answer".to_owned(), |r| format!("{r:.2}ms"))
        );
    }
    if s.links.is_empty() {
        let _ = writeln!(t, "(none)");
    }
    let _ = writeln!(t, "\n\x1b[1mRECENT\x1b[0m");
    for e in s.events.iter().rev().take(10) {
        let kind = match e.kind {
            ChangeKind::Join => "\x1b[32mjoin\x1b[0m",
            ChangeKind::Loss => "\x1b[31mloss\x1b[0m",
        };
        let _ = writeln!(
            t,
            "{} {kind} {} {} ({})",
            clock(e.at_ms),
            short(&e.node),
            e.name,
            e.key
        );
    }
    t
}

fn short(id: &str) -> String {
    id.chars().take(8).collect()
}

/// `hh:mm:ss` of a Unix time in milliseconds.
fn clock(ms: u64) -> String {
    let s = (ms / 1000) % 86_400;
    format!("{:02}:{:02}:{:02}", s / 3600, (s / 60) % 60, s % 60)
}

fn uptime(ms: u64) -> String {
    let s = ms / 1000;
    if s < 60 {
        format!("{s}s")
    } else if s < 3600 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{}h{:02}m", s / 3600, (s / 60) % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use plume_transport::monitor::NodeView;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("2h").is_err());
        assert!(parse_duration("x").is_err());
    }

    #[test]
    fn the_view_shows_nodes_services_and_silence() {
        let snap = MeshSnapshot {
            environment: "default".into(),
            taken_at_ms: 3_723_000,
            nodes: vec![NodeView {
                id: "0123456789abcdef0123456789abcdef".into(),
                name: "todos-a".into(),
                key: "todos".into(),
                environment: "default".into(),
                addr: Some("127.0.0.1:4000".into()),
                uptime_ms: Some(125_000),
                first_seen_ms: 0,
                rtt_ms: Some(0.25),
                services: vec!["svc:todos".into()],
                answered: true,
            }],
            ..MeshSnapshot::default()
        };
        let text = render(&snap);
        assert!(text.contains("01:02:03 UTC"), "{text}");
        for part in [
            "01234567",
            "todos-a",
            "127.0.0.1:4000",
            "2m05s",
            "0.25ms",
            "svc:todos",
        ] {
            assert!(text.contains(part), "{part} missing: {text}");
        }
    }
}
