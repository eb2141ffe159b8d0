//! The log on stderr (`RUST_LOG`, `warn` by default) and, with the `otlp` feature (on by
//! default), the OpenTelemetry export of trace spans when an OTLP endpoint is configured
//! (`OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`; see the guide's
//! "Export to an OpenTelemetry collector"). With no endpoint the log is set up exactly as
//! without the feature.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::prelude::*;

/// What [`init`] started; [`Telemetry::finish`] sends the spans still queued.
pub(crate) struct Telemetry {
    #[cfg(feature = "otlp")]
    otlp: Option<plume_otlp::Otlp>,
}

fn env_filter() -> EnvFilter {
    EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"))
}

fn log_layer<S>() -> impl tracing_subscriber::Layer<S> + Send + Sync
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    // Each line of a call names its trace id from Plume's trace context: no span per call.
    tracing_subscriber::fmt::layer()
        .event_format(plume::trace::log::TraceFormat::new())
        .with_writer(std::io::stderr)
}

/// Set up the log, and the export of `service`'s spans when an endpoint is configured.
pub(crate) fn init(service: &str) -> anyhow::Result<Telemetry> {
    #[cfg(feature = "otlp")]
    {
        let otlp = plume_otlp::Otlp::builder()
            .service_name(service)
            .install()?;
        if let Some(otlp) = &otlp {
            // The log keeps its own filter; the export sees the hop spans only.
            tracing_subscriber::registry()
                .with(log_layer().with_filter(env_filter()))
                .with(otlp.layer().with_hop_filter())
                .init();
            tracing::info!(target: "plume::otlp", %service, "OTLP export on");
            return Ok(Telemetry {
                otlp: Some(otlp.clone()),
            });
        }
    }
    let _ = service;
    tracing_subscriber::registry()
        .with(env_filter())
        .with(log_layer())
        .init();
    Ok(Telemetry {
        #[cfg(feature = "otlp")]
        otlp: None,
    })
}

impl Telemetry {
    /// Send the spans still queued (bounded by the export timeout) and stop the export.
    pub(crate) async fn finish(self) {
        #[cfg(feature = "otlp")]
        if let Some(otlp) = self.otlp {
            match tokio::task::spawn_blocking(move || otlp.shutdown()).await {
                Ok(Ok(())) => {}
                Ok(Err(err)) => tracing::debug!(target: "plume::otlp", %err, "OTLP shutdown"),
                Err(err) => tracing::debug!(target: "plume::otlp", %err, "OTLP shutdown"),
            }
        }
    }
}
