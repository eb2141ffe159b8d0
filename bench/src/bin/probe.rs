//! A small HTTP/1.1 client for `bench/run.sh` (keep-alive, Content-Length and chunked bodies).
//!
//! * `probe until URL NEEDLE TIMEOUT_MS [SINCE_US]`: GET `URL` back to back until a 200 whose
//!   body contains `NEEDLE`; prints the milliseconds since `SINCE_US` (Unix time in µs, default
//!   now). Exits 1 at the deadline.
//! * `probe load URL CONNS DURATION_MS MAX_REQUESTS OUT`: GET `URL` on `CONNS` connections for
//!   `DURATION_MS` (at most `MAX_REQUESTS` in all) and write one line per request to `OUT`:
//!   `start_us end_us status` (Unix time in µs; status 0 = connection error, 1 = timeout
//!   after 10 s).
//!
//! * `probe echo PORT`: a raw TCP echo server (length-prefixed messages), for the floor below.
//! * `probe pingpong ADDR COUNT`: COUNT round trips of a 100-byte length-prefixed message with
//!   the echo server; prints the median in µs (the raw TCP round trip of this machine).
//!
//! `PROBE_TOKEN` in the environment adds `Authorization: Bearer <token>`; `PROBE_INTERVAL_MS`
//! makes `until` wait that long between two requests (default: back to back). Loopback only.

// A command-line tool whose output is its result.
#![allow(clippy::print_stdout)]

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

fn now_us() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or(0)
}

struct Target {
    addr: String,
    request: Vec<u8>,
}

impl Target {
    fn parse(url: &str) -> anyhow::Result<Self> {
        let rest = url.strip_prefix("http://").context("URL must be http://")?;
        let (addr, path) = match rest.split_once('/') {
            Some((a, p)) => (a.to_owned(), format!("/{p}")),
            None => (rest.to_owned(), "/".to_owned()),
        };
        if !(addr.starts_with("127.") || addr.starts_with("localhost") || addr.starts_with("[::1]"))
        {
            bail!("loopback addresses only, got {addr}");
        }
        let auth = match std::env::var("PROBE_TOKEN") {
            Ok(t) if !t.is_empty() => format!("Authorization: Bearer {t}\r\n"),
            _ => String::new(),
        };
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: application/json\r\n{auth}\r\n"
        )
        .into_bytes();
        Ok(Self { addr, request })
    }
}

/// One keep-alive connection.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    async fn fill(&mut self) -> std::io::Result<()> {
        let mut chunk = [0u8; 16 * 1024];
        let n = self.stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }

    /// Bytes up to and including the next CRLF from `from`, filling as needed.
    async fn line_end(&mut self, from: usize) -> std::io::Result<usize> {
        loop {
            if let Some(i) = self.buf[from..].windows(2).position(|w| w == b"\r\n") {
                return Ok(from + i + 2);
            }
            self.fill().await?;
        }
    }

    async fn need(&mut self, len: usize) -> std::io::Result<()> {
        while self.buf.len() < len {
            self.fill().await?;
        }
        Ok(())
    }

    /// Send one request; answer (status, body, keep the connection).
    async fn exchange(&mut self, request: &[u8]) -> std::io::Result<(u16, Vec<u8>, bool)> {
        let bad =
            |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
        self.stream.write_all(request).await?;
        let head_end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            self.fill().await?;
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).to_ascii_lowercase();
        let status: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad("no status"))?;
        let header = |name: &str| {
            head.lines()
                .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_owned()))
        };
        let keep = header("connection:").is_none_or(|v| v != "close");
        let mut body = Vec::new();
        if header("transfer-encoding:").is_some_and(|v| v.contains("chunked")) {
            let mut pos = head_end;
            loop {
                let end = self.line_end(pos).await?;
                let size_text = String::from_utf8_lossy(&self.buf[pos..end - 2]).to_string();
                let size =
                    usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                        .map_err(|_| bad("bad chunk size"))?;
                pos = end;
                if size == 0 {
                    pos = self.line_end(pos).await?;
                    break;
                }
                self.need(pos + size + 2).await?;
                body.extend_from_slice(&self.buf[pos..pos + size]);
                pos += size + 2;
            }
            self.buf.drain(..pos);
        } else {
            let len: usize = header("content-length:")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            self.need(head_end + len).await?;
            body.extend_from_slice(&self.buf[head_end..head_end + len]);
            self.buf.drain(..head_end + len);
        }
        Ok((status, body, keep))
    }
}

/// One request on `conn` (connecting first when needed). Status 0: connection error, 1: timeout.
async fn request(target: &Target, conn: &mut Option<Conn>) -> (u16, Vec<u8>) {
    let attempt = async {
        let mut c = match conn.take() {
            Some(c) => c,
            None => {
                let stream = TcpStream::connect(&target.addr).await?;
                stream.set_nodelay(true)?;
                Conn {
                    stream,
                    buf: Vec::with_capacity(4096),
                }
            }
        };
        let (status, body, keep) = c.exchange(&target.request).await?;
        if keep {
            *conn = Some(c);
        }
        Ok::<_, std::io::Error>((status, body))
    };
    match tokio::time::timeout(REQUEST_TIMEOUT, attempt).await {
        Ok(Ok(answer)) => answer,
        Ok(Err(_)) => (0, Vec::new()),
        Err(_) => (1, Vec::new()),
    }
}

async fn until(args: &[String]) -> anyhow::Result<()> {
    let [url, needle, timeout_ms, rest @ ..] = args else {
        bail!("usage: probe until URL NEEDLE TIMEOUT_MS [SINCE_US]");
    };
    let target = Target::parse(url)?;
    let since: u128 = match rest.first() {
        Some(s) => s.parse()?,
        None => now_us(),
    };
    let deadline = Instant::now() + Duration::from_millis(timeout_ms.parse()?);
    let needle = needle.as_bytes();
    let interval = match std::env::var("PROBE_INTERVAL_MS") {
        Ok(ms) if !ms.is_empty() => Duration::from_millis(ms.parse()?),
        _ => Duration::ZERO,
    };
    let mut conn = None;
    while Instant::now() < deadline {
        let (status, body) = request(&target, &mut conn).await;
        if status == 200 && body.windows(needle.len()).any(|w| w == needle) {
            let ms = now_us().saturating_sub(since) as f64 / 1000.0;
            println!("{ms:.1}");
            return Ok(());
        }
        if status < 100 {
            // Nothing listening yet: do not spin.
            tokio::time::sleep(Duration::from_millis(1).max(interval)).await;
        } else if !interval.is_zero() {
            tokio::time::sleep(interval).await;
        }
    }
    bail!("no 200 containing the needle before the deadline")
}

async fn load(args: &[String]) -> anyhow::Result<()> {
    let [url, conns, duration_ms, max, out] = args else {
        bail!("usage: probe load URL CONNS DURATION_MS MAX_REQUESTS OUT");
    };
    let target = Arc::new(Target::parse(url)?);
    let conns: usize = conns.parse()?;
    let max: usize = max.parse()?;
    let deadline = Instant::now() + Duration::from_millis(duration_ms.parse()?);
    let issued = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let (target, issued) = (target.clone(), issued.clone());
        tasks.push(tokio::spawn(async move {
            let mut conn = None;
            let mut log = Vec::new();
            while Instant::now() < deadline && issued.fetch_add(1, Ordering::Relaxed) < max {
                let start = now_us();
                let (status, _) = request(&target, &mut conn).await;
                log.push((start, now_us(), status));
                if status < 100 {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
            log
        }));
    }
    let mut lines = Vec::new();
    for t in tasks {
        lines.extend(t.await?);
    }
    lines.sort_unstable();
    let mut file = std::io::BufWriter::new(std::fs::File::create(out)?);
    for (start, end, status) in &lines {
        writeln!(file, "{start} {end} {status}")?;
    }
    file.flush()?;
    println!("{}", lines.len());
    Ok(())
}

const MSG: usize = 100;

async fn echo(args: &[String]) -> anyhow::Result<()> {
    let [port] = args else {
        bail!("usage: probe echo PORT");
    };
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port.parse::<u16>()?)).await?;
    loop {
        let (mut stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        tokio::spawn(async move {
            let mut msg = [0u8; 4 + MSG];
            while stream.read_exact(&mut msg).await.is_ok() {
                if stream.write_all(&msg).await.is_err() {
                    break;
                }
            }
        });
    }
}

async fn pingpong(args: &[String]) -> anyhow::Result<()> {
    let [addr, count] = args else {
        bail!("usage: probe pingpong ADDR COUNT");
    };
    let count: usize = count.parse()?;
    let mut stream = TcpStream::connect(addr.as_str()).await?;
    stream.set_nodelay(true)?;
    let mut msg = [7u8; 4 + MSG];
    msg[..4].copy_from_slice(&(MSG as u32).to_be_bytes());
    let mut back = [0u8; 4 + MSG];
    let mut times = Vec::with_capacity(count);
    let deadline = Instant::now() + Duration::from_secs(30);
    for _ in 0..count {
        if Instant::now() > deadline {
            break;
        }
        let start = Instant::now();
        stream.write_all(&msg).await?;
        stream.read_exact(&mut back).await?;
        times.push(start.elapsed().as_nanos());
    }
    times.sort_unstable();
    let Some(median) = times.get(times.len() / 2) else {
        bail!("no round trip");
    };
    println!("{:.1}", *median as f64 / 1000.0);
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("until") => until(&args[1..]).await,
        Some("load") => load(&args[1..]).await,
        Some("echo") => echo(&args[1..]).await,
        Some("pingpong") => pingpong(&args[1..]).await,
        _ => bail!("usage: probe until ... | probe load ..."),
    }
}
