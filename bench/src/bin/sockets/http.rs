//! A minimal HTTP/1.1 exchange on loopback (`Connection: close`, the answer read to its end):
//! the sockets curve needs one login and one `create` per event, nothing more.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The longest one exchange may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// One request, written on a connection opened beforehand (so that the caller's clock can
/// start right before the request itself).
pub(crate) struct Request {
    stream: TcpStream,
    bytes: Vec<u8>,
}

impl Request {
    /// Connect to `addr` and prepare `METHOD path` with an optional JSON body and bearer token.
    pub(crate) async fn open(
        addr: &str,
        method: &str,
        path: &str,
        body: Option<&str>,
        token: Option<&str>,
    ) -> anyhow::Result<Self> {
        let stream = tokio::time::timeout(TIMEOUT, TcpStream::connect(addr))
            .await
            .context("connect timed out")?
            .with_context(|| format!("connect to {addr}"))?;
        stream.set_nodelay(true)?;
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: application/json\r\nConnection: close\r\n"
        );
        if let Some(token) = token {
            head.push_str(&format!("Authorization: Bearer {token}\r\n"));
        }
        if let Some(body) = body {
            head.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                body.len()
            ));
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(body.unwrap_or("").as_bytes());
        Ok(Self { stream, bytes })
    }

    /// Send the request; answer the status and the body.
    pub(crate) async fn send(mut self) -> anyhow::Result<(u16, String)> {
        let deadline = Instant::now() + TIMEOUT;
        let exchange = async {
            self.stream.write_all(&self.bytes).await?;
            let mut raw = Vec::new();
            self.stream.read_to_end(&mut raw).await?;
            Ok::<_, std::io::Error>(raw)
        };
        let raw = tokio::time::timeout_at(deadline.into(), exchange)
            .await
            .context("HTTP exchange timed out")??;
        parse(&raw)
    }
}

/// The status and body of a whole HTTP/1.1 answer (Content-Length or chunked).
fn parse(raw: &[u8]) -> anyhow::Result<(u16, String)> {
    let Some(head_end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        bail!("no HTTP head in {} bytes", raw.len());
    };
    let head = String::from_utf8_lossy(&raw[..head_end]).to_ascii_lowercase();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no HTTP status")?;
    let mut body = &raw[head_end + 4..];
    let chunked = head
        .lines()
        .any(|l| l.starts_with("transfer-encoding:") && l.contains("chunked"));
    if !chunked {
        return Ok((status, String::from_utf8_lossy(body).into_owned()));
    }
    let mut out = Vec::new();
    loop {
        let Some(eol) = body.windows(2).position(|w| w == b"\r\n") else {
            bail!("truncated chunked body");
        };
        let size_text = String::from_utf8_lossy(&body[..eol]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .context("bad chunk size")?;
        body = &body[eol + 2..];
        if size == 0 {
            break;
        }
        if body.len() < size {
            bail!("truncated chunk");
        }
        out.extend_from_slice(&body[..size]);
        body = body.get(size + 2..).unwrap_or_default();
    }
    Ok((status, String::from_utf8_lossy(&out).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn content_length_and_chunked_answers() {
        let plain = b"HTTP/1.1 201 Created\r\ncontent-length: 9\r\n\r\n{\"id\":1}\n";
        assert_eq!(parse(plain).unwrap(), (201, "{\"id\":1}\n".to_owned()));
        let chunked =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{\"a\"\r\n3\r\n:1}\r\n0\r\n\r\n";
        assert_eq!(parse(chunked).unwrap(), (200, "{\"a\":1}".to_owned()));
        assert!(parse(b"HTTP/1.1 200 OK\r\n").is_err());
    }
}
