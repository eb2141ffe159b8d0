//! OpenTelemetry export of Plume's traces over OTLP/HTTP (protobuf).
//!
//! Plume keeps its own W3C trace context ([`plume::trace`]): a REST request or a socket.io call
//! is a hop of a trace, a mesh call is the next hop, and the provider serving it the one after.
//! This crate's `tracing` layer sends each hop as an OpenTelemetry span with Plume's ids (trace
//! id, span id, parent span id), so a collector shows one trace across a gateway and its
//! replicas: the gateway's `request` span, its mesh `call` span, and the replica's `serve` span.
//!
//! Nothing is exported, and no thread or connection is started, unless an endpoint is set: by
//! [`OtlpBuilder::endpoint`] or the standard variables `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`
//! (the URL as given) or `OTEL_EXPORTER_OTLP_ENDPOINT` (`/v1/traces` appended); there is no
//! default `localhost:4318`. `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none` turn it off.
//! `OTEL_SERVICE_NAME` names the service (else [`OtlpBuilder::service_name`]), and the batch
//! processor's `OTEL_BSP_*` variables apply (`OTEL_BSP_MAX_QUEUE_SIZE`, 2048 spans by default,
//! caps the queue: when it is full, spans are dropped; a collector that does not answer is
//! logged once and never blocks a call).
//!
//! ```no_run
//! use tracing_subscriber::prelude::*;
//!
//! # async fn run() -> Result<(), plume_otlp::Error> {
//! let otlp = plume_otlp::Otlp::builder().service_name("my-gateway").install()?;
//! tracing_subscriber::registry()
//!     .with(tracing_subscriber::fmt::layer())
//!     .with(otlp.as_ref().map(|o| o.layer().with_hop_filter()))
//!     .init();
//! // ... run the app ...
//! if let Some(otlp) = otlp {
//!     tokio::task::spawn_blocking(move || otlp.shutdown()).await.ok(); // send what is queued
//! }
//! # Ok(()) }
//! ```

mod client;
mod config;
mod exporter;
mod layer;

use std::sync::Arc;
use std::time::Duration;

use opentelemetry::InstrumentationScope;
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, SpanExporter as _, SpanProcessor,
};

pub use config::endpoint_from_env;
pub use layer::{OtlpLayer, is_hop_span};

/// Why the export could not be set up (an endpoint that is no `http://` URL, say).
#[derive(Debug, thiserror::Error)]
#[error("OTLP export: {0}")]
pub struct Error(String);

/// How an [`Otlp`] export is set up; the standard variables fill in what is not set here.
#[derive(Debug, Default, Clone)]
pub struct OtlpBuilder {
    endpoint: Option<String>,
    service_name: Option<String>,
    max_queue_size: Option<usize>,
    timeout: Option<Duration>,
}

impl OtlpBuilder {
    /// The collector's traces URL (`http://host:4318/v1/traces`), instead of the variables.
    pub fn endpoint(mut self, url: impl Into<String>) -> Self {
        self.endpoint = Some(url.into());
        self
    }

    /// The service name when `OTEL_SERVICE_NAME` is not set.
    pub fn service_name(mut self, name: impl Into<String>) -> Self {
        self.service_name = Some(name.into());
        self
    }

    /// The most spans queued for export (else `OTEL_BSP_MAX_QUEUE_SIZE`, else 2048); more are
    /// dropped.
    pub fn max_queue_size(mut self, spans: usize) -> Self {
        self.max_queue_size = Some(spans.max(1));
        self
    }

    /// How long one export may take (else `OTEL_EXPORTER_OTLP_TRACES_TIMEOUT` or
    /// `OTEL_EXPORTER_OTLP_TIMEOUT` in milliseconds, else 10 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Start the export (its batch thread) when an endpoint is configured: `Ok(None)` when none
    /// is (nothing is started then). Call it within a tokio runtime: the requests run on it.
    pub fn install(self) -> Result<Option<Otlp>, Error> {
        let Some(endpoint) = self.endpoint.or_else(endpoint_from_env) else {
            return Ok(None);
        };
        if !endpoint.starts_with("http://") {
            return Err(Error(format!(
                "the endpoint must be an http:// URL (this build has no TLS client; send to a \
                 local collector): {endpoint}"
            )));
        }
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| Error("install needs a tokio runtime".into()))?;
        let timeout = self.timeout.unwrap_or_else(config::timeout_from_env);
        let mut exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(endpoint.clone())
            .with_timeout(timeout)
            .with_http_client(client::HyperClient::new(runtime, timeout))
            .build()
            .map_err(|e| Error(e.to_string()))?;
        let mut resource = Resource::builder();
        if config::service_name_from_env().is_none()
            && let Some(name) = self.service_name
        {
            resource = resource.with_service_name(name);
        }
        exporter.set_resource(&resource.build());
        let mut batch = BatchConfigBuilder::default();
        if let Some(spans) = self.max_queue_size {
            batch = batch.with_max_queue_size(spans);
        }
        let processor =
            BatchSpanProcessor::builder(exporter::LogOnce::new(exporter, endpoint.clone()))
                .with_batch_config(batch.build())
                .build();
        tracing::info!(target: exporter::LOG, %endpoint, "exporting trace spans over OTLP/HTTP");
        Ok(Some(Otlp {
            processor: Arc::new(processor),
            scope: InstrumentationScope::builder("plume")
                .with_version(env!("CARGO_PKG_VERSION"))
                .build(),
        }))
    }
}

/// A running export: its [`layer`](Self::layer) feeds it; [`shutdown`](Self::shutdown) sends
/// what is queued and stops it.
#[derive(Clone)]
pub struct Otlp {
    processor: Arc<BatchSpanProcessor>,
    scope: InstrumentationScope,
}

impl std::fmt::Debug for Otlp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Otlp").finish_non_exhaustive()
    }
}

impl Otlp {
    /// A builder; [`OtlpBuilder::install`].
    pub fn builder() -> OtlpBuilder {
        OtlpBuilder::default()
    }

    /// The `tracing` layer that exports hop spans (add it with
    /// [`OtlpLayer::with_hop_filter`]).
    pub fn layer(&self) -> OtlpLayer {
        OtlpLayer {
            processor: self.processor.clone(),
            scope: self.scope.clone(),
        }
    }

    /// Export what is queued now, waiting (bounded by the export timeout) for the answer.
    /// Blocking: call it outside the runtime's worker threads (`spawn_blocking`).
    pub fn force_flush(&self) -> Result<(), Error> {
        self.processor
            .force_flush()
            .map_err(|e| Error(e.to_string()))
    }

    /// Export what is queued and stop the batch thread. Blocking, as
    /// [`force_flush`](Self::force_flush).
    pub fn shutdown(&self) -> Result<(), Error> {
        self.processor.shutdown().map_err(|e| Error(e.to_string()))
    }
}
