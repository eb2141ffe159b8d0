//! The `tracing` layer: the spans Plume makes for the hops of a trace (made with
//! [`plume::trace::hop_span`]: a REST request, a socket.io call, a mesh call, the provider's
//! serving of it) become OpenTelemetry spans with Plume's trace id, span id and parent span id,
//! handed to the batch processor when they close. Every other span is left alone.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_sdk::trace::{
    BatchSpanProcessor, SpanData, SpanEvents, SpanLinks, SpanProcessor,
};
use plume::trace::TraceContext;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::{Metadata, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

/// The `tracing` layer of an [`Otlp`](crate::Otlp) export ([`Otlp::layer`](crate::Otlp::layer)).
/// Add it with [`OtlpLayer::with_hop_filter`] (or a filter of your own that lets its spans in).
#[derive(Clone)]
pub struct OtlpLayer {
    pub(crate) processor: Arc<BatchSpanProcessor>,
    pub(crate) scope: InstrumentationScope,
}

impl fmt::Debug for OtlpLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OtlpLayer").finish_non_exhaustive()
    }
}

/// Whether `meta` is one of the spans Plume makes for a hop (a span with a `trace_id`
/// field): what the layer needs to see; everything else it ignores.
pub fn is_hop_span(meta: &Metadata<'_>) -> bool {
    meta.is_span() && meta.fields().field("trace_id").is_some()
}

impl OtlpLayer {
    /// The layer with a per-layer filter that lets only hop spans in ([`is_hop_span`]): the
    /// other layers (the log's, say) keep their own filters, and the `trace`-level `call` span
    /// of a mesh call reaches this layer without enabling `trace` logs.
    pub fn with_hop_filter<S>(self) -> impl Layer<S> + Send + Sync + 'static
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        self.with_filter(tracing_subscriber::filter::filter_fn(is_hop_span))
    }
}

/// A hop span while it is open.
struct Open {
    hop: TraceContext,
    name: Cow<'static, str>,
    kind: SpanKind,
    start: SystemTime,
    attributes: Vec<KeyValue>,
}

/// The fields of a hop span: `otel.kind` and `otel.name` as in OpenTelemetry's conventions,
/// the others (but `trace_id`) as `plume.<field>` attributes.
#[derive(Default)]
struct Fields {
    kind: Option<SpanKind>,
    name: Option<String>,
    attributes: Vec<KeyValue>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "trace_id" => {}
            "otel.kind" => {
                self.kind = Some(match value {
                    "client" => SpanKind::Client,
                    "producer" => SpanKind::Producer,
                    "consumer" => SpanKind::Consumer,
                    "internal" => SpanKind::Internal,
                    _ => SpanKind::Server,
                });
            }
            "otel.name" => self.name = Some(value.to_owned()),
            name => self
                .attributes
                .push(KeyValue::new(format!("plume.{name}"), value.to_owned())),
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() != "trace_id" {
            self.record_str(field, &format!("{value:?}"));
        }
    }
}

impl<S> Layer<S> for OtlpLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        // Only the spans plume::trace::hop_span makes, of sampled traces.
        let Some(hop) = plume::trace::new_span_hop().filter(TraceContext::sampled) else {
            return;
        };
        let Some(span) = ctx.span(id) else {
            return;
        };
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        let meta = attrs.metadata();
        fields
            .attributes
            .push(KeyValue::new("plume.target", meta.target()));
        span.extensions_mut().insert(Open {
            hop,
            name: fields.name.map_or(Cow::Borrowed(meta.name()), Cow::Owned),
            // A hop that is not a client's call is this node serving one (REST, socket.io, mesh).
            kind: fields.kind.unwrap_or(SpanKind::Server),
            start: SystemTime::now(),
            attributes: fields.attributes,
        });
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else {
            return;
        };
        let Some(open) = span.extensions_mut().remove::<Open>() else {
            return;
        };
        let parent = open.hop.parent_span_id_bytes();
        self.processor.on_end(SpanData {
            span_context: SpanContext::new(
                TraceId::from_bytes(open.hop.trace_id_bytes()),
                SpanId::from_bytes(open.hop.span_id_bytes()),
                TraceFlags::SAMPLED,
                false,
                TraceState::default(),
            ),
            parent_span_id: parent.map_or(SpanId::INVALID, SpanId::from_bytes),
            // The parent of a serving hop is the caller's, on another node.
            parent_span_is_remote: parent.is_some() && open.kind == SpanKind::Server,
            span_kind: open.kind,
            name: open.name,
            start_time: open.start,
            end_time: SystemTime::now(),
            attributes: open.attributes,
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: Status::Unset,
            instrumentation_scope: self.scope.clone(),
        });
    }
}
