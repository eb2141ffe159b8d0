//! The demo's JSON client for its readiness check against its own gateway on loopback: hyper's
//! HTTP/1.1 client (`hyper-util`), JSON in and out.

use std::net::SocketAddr;

use anyhow::{Context, anyhow};
use axum::body::Bytes;
use axum::http::{Request, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

/// The largest response body the client reads.
const MAX_RESPONSE: usize = 4 << 20;

/// Send `method path` with an optional bearer token and JSON body; return the status and the
/// JSON body (`Null` when empty).
pub(crate) async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> anyhow::Result<(u16, Value)> {
    let mut req = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"))
        .header(header::ACCEPT, "application/json");
    if let Some(token) = token {
        req = req.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let body = match body {
        Some(v) => {
            req = req.header(header::CONTENT_TYPE, "application/json");
            Bytes::from(v.to_string())
        }
        None => Bytes::new(),
    };
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let response = client.request(req.body(Full::new(body))?).await?;
    let status = response.status().as_u16();
    let bytes = Limited::new(response.into_body(), MAX_RESPONSE)
        .collect()
        .await
        .map_err(|e| anyhow!("reading the response body: {e}"))?
        .to_bytes();
    let json = if bytes.iter().all(u8::is_ascii_whitespace) {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).context("response body is not JSON")?
    };
    Ok((status, json))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Router;
    use axum::body::Body;
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    use axum::routing::any;
    use serde_json::json;

    /// A real server on loopback: echoes method, bearer and body; a chunked reply; 204; text.
    async fn server() -> anyhow::Result<SocketAddr> {
        let app = Router::new()
            .route(
                "/echo",
                any(|req: Request<Body>| async move {
                    let (parts, body) = req.into_parts();
                    let auth = parts
                        .headers
                        .get(header::AUTHORIZATION)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                    let bytes = axum::body::to_bytes(body, 1 << 20)
                        .await
                        .unwrap_or_default();
                    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                    let out = json!({"method": parts.method.as_str(), "auth": auth, "body": body});
                    (
                        StatusCode::CREATED,
                        [(header::CONTENT_TYPE, "application/json")],
                        out.to_string(),
                    )
                }),
            )
            .route(
                "/chunked",
                any(|| async {
                    let pieces = ["{\"a\"", ": ", "2}"].map(Ok::<_, std::io::Error>);
                    Body::from_stream(futures::stream::iter(pieces))
                }),
            )
            .route("/empty", any(|| async { StatusCode::NO_CONTENT }))
            .route("/text", any(|| async { "not json".into_response() }))
            .route(
                "/huge",
                any(|| async { "x".repeat(MAX_RESPONSE + 1).into_response() }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(addr)
    }

    #[tokio::test]
    async fn json_in_and_out_against_a_real_server() -> anyhow::Result<()> {
        let addr = server().await?;
        let (status, body) =
            request(addr, "POST", "/echo", Some("t0k"), Some(&json!({"x": 1}))).await?;
        assert_eq!(status, 201);
        assert_eq!(
            body,
            json!({"method": "POST", "auth": "Bearer t0k", "body": {"x": 1}})
        );
        assert_eq!(
            request(addr, "GET", "/chunked", None, None).await?,
            (200, json!({"a": 2}))
        );
        assert_eq!(
            request(addr, "DELETE", "/empty", None, None).await?,
            (204, Value::Null)
        );
        assert!(request(addr, "GET", "/text", None, None).await.is_err());
        assert!(request(addr, "GET", "/huge", None, None).await.is_err());
        Ok(())
    }
}
