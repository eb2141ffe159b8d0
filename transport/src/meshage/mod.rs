//! meshage's HTTP API on a mesh node: partitioned sends and broadcasts over HTTP.
//!
//! | route | answer |
//! |---|---|
//! | `POST /api/{stream}/{partitionKey}` | the JSON reply of the owner of the key |
//! | `POST /api/broadcast/{stream}/{partitionKey}` | a JSON array with one reply per live provider (a provider that failed contributes its Feathers error object); the key is not used for routing |
//!
//! The request body is the message: any JSON value (an empty body is `null`). Errors are
//! Feathers error objects: an unknown stream (neither declared with [`MeshageApi::stream`] nor
//! provided anywhere in the mesh) is `404 NotFound`, a known stream without a live provider
//! `503 Unavailable`, a call past its deadline `408 Timeout`, a body that is not JSON
//! `400 BadRequest`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use plume_transport::Mesh;
//! use plume_transport::meshage::MeshageApi;
//! use serde_json::json;
//! let mesh = Mesh::builder().environment("echo").start().await?;
//! mesh.provide("echo", json!(null), |req: plume_transport::Request| async move {
//!     Ok(json!({ "echoed": req.body }))
//! });
//! let router = MeshageApi::new(mesh).stream("echo").router();
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! axum::serve(listener, router).await?;
//! # Ok(()) }
//! ```

#[cfg(test)]
mod tests;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use plume::Error;
use plume::server::error_response;
use serde_json::Value;

use crate::Mesh;

/// meshage's HTTP API over a [`Mesh`]: configure it, then take its [`router`](Self::router)
/// (merge it into an App's server with `app.add_routes`, or serve it alone).
#[derive(Debug, Clone)]
pub struct MeshageApi {
    mesh: Mesh,
    streams: HashSet<String>,
    timeout: Option<Duration>,
}

impl MeshageApi {
    /// The API over `mesh`, with the mesh's default call timeout.
    pub fn new(mesh: Mesh) -> Self {
        Self {
            mesh,
            streams: HashSet::new(),
            timeout: None,
        }
    }

    /// Declare `stream` known: while it has no live provider it answers `503 Unavailable`
    /// rather than `404 NotFound`.
    #[must_use]
    pub fn stream(mut self, stream: impl Into<String>) -> Self {
        self.streams.insert(stream.into());
        self
    }

    /// The deadline of each call (of a whole broadcast), past which it answers `408 Timeout`.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The axum router of the API.
    pub fn router(self) -> Router {
        Router::new()
            .route("/api/broadcast/{stream}/{key}", post(broadcast))
            .route("/api/{stream}/{key}", post(send))
            .with_state(Arc::new(self))
    }

    /// The message in `body`, once the stream is known.
    fn admit(&self, stream: &str, body: &[u8]) -> Result<Value, Error> {
        if !self.streams.contains(stream) && self.mesh.providers(stream).is_empty() {
            return Err(Error::not_found(format!("no stream '{stream}'")));
        }
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Value::Null);
        }
        serde_json::from_slice(body)
            .map_err(|e| Error::bad_request(format!("the message is not valid JSON: {e}")))
    }

    fn call<'a>(&'a self, stream: &'a str) -> crate::CallBuilder<'a> {
        let call = self.mesh.to(stream);
        match self.timeout {
            Some(t) => call.timeout(t),
            None => call,
        }
    }
}

type Api = State<Arc<MeshageApi>>;

async fn send(
    State(api): Api,
    Path((stream, key)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let result = match api.admit(&stream, &body) {
        Ok(message) => api.call(&stream).key(&key).send_json(&message).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(reply) => json(reply.into_bytes()),
        Err(e) => error_response(&e),
    }
}

async fn broadcast(
    State(api): Api,
    Path((stream, _key)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let result = match api.admit(&stream, &body) {
        Ok(message) => api.call(&stream).broadcast(&message).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(replies) => {
            let list: Vec<Value> = replies
                .into_iter()
                .map(|r| r.result.unwrap_or_else(|e| e.to_json()))
                .collect();
            // invariant: a list of serde_json::Values always serializes.
            json(serde_json::to_vec(&list).unwrap_or_default().into())
        }
        Err(e) => error_response(&e),
    }
}

/// A 200 response with JSON text.
fn json(body: Bytes) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}
