//! The span exporter around the OTLP one: a collector that fails is logged once (a warning),
//! and again only when it works again; the spans of a failed export are dropped (the batch
//! processor's queue is bounded, so nothing grows while it fails).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SpanData, SpanExporter};

/// The log target of the export.
pub(crate) const LOG: &str = "plume::otlp";

/// An exporter that logs its first failure, not each one.
#[derive(Debug)]
pub(crate) struct LogOnce<E> {
    inner: E,
    endpoint: String,
    failing: AtomicBool,
    dropped: AtomicU64,
}

impl<E> LogOnce<E> {
    pub(crate) fn new(inner: E, endpoint: String) -> Self {
        Self {
            inner,
            endpoint,
            failing: AtomicBool::new(false),
            dropped: AtomicU64::new(0),
        }
    }
}

impl<E: SpanExporter> SpanExporter for LogOnce<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let spans = batch.len() as u64;
        let result = self.inner.export(batch).await;
        match &result {
            Err(err) => {
                let dropped = self.dropped.fetch_add(spans, Ordering::Relaxed) + spans;
                if self.failing.swap(true, Ordering::AcqRel) {
                    tracing::debug!(target: LOG, endpoint = %self.endpoint, %err, dropped, "OTLP export failed again");
                } else {
                    tracing::warn!(target: LOG, endpoint = %self.endpoint, %err, "OTLP export failed; spans are dropped until the collector answers (logged once)");
                }
            }
            Ok(()) => {
                if self.failing.swap(false, Ordering::AcqRel) {
                    tracing::info!(target: LOG, endpoint = %self.endpoint, "OTLP export works again");
                }
            }
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}
