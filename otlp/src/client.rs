//! The HTTP client of the export: hyper (plain `http://`, HTTP/1.1) on the application's tokio
//! runtime, with a timeout per request and a cap on the response body. The SDK's batch
//! processor exports from a thread of its own; each request runs as a task on the runtime and
//! the batch thread waits for its answer.

use std::time::Duration;

use async_trait::async_trait;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use tokio::runtime::Handle;

/// The most of a collector's answer that is read (it is a small protobuf message).
const MAX_RESPONSE: usize = 64 * 1024;

/// An OTLP/HTTP client on a tokio runtime.
#[derive(Debug, Clone)]
pub(crate) struct HyperClient {
    client: Client<HttpConnector, Full<Bytes>>,
    runtime: Handle,
    timeout: Duration,
}

impl HyperClient {
    pub(crate) fn new(runtime: Handle, timeout: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(timeout));
        connector.set_nodelay(true);
        Self {
            client: Client::builder(TokioExecutor::new()).build(connector),
            runtime,
            timeout,
        }
    }
}

#[async_trait]
impl HttpClient for HyperClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let (parts, body) = request.into_parts();
        let request = Request::from_parts(parts, Full::new(body));
        let client = self.client.clone();
        let send = async move {
            let response = client.request(request).await?;
            let (parts, body) = response.into_parts();
            let bytes = Limited::new(body, MAX_RESPONSE).collect().await?.to_bytes();
            Ok::<_, HttpError>(Response::from_parts(parts, bytes))
        };
        let timeout = self.timeout;
        let task = self.runtime.spawn(async move {
            tokio::time::timeout(timeout, send)
                .await
                .map_err(|_| HttpError::from(format!("no answer within {timeout:?}")))?
        });
        task.await?
    }
}
