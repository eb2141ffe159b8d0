//! The log's event formatter (feature `log`): every log line of a call names its trace id, read
//! from Plume's own trace context ([`current_hop`](super::current_hop)), not from a `tracing`
//! span. A REST request, a mesh call served and an event relayed are logged as
//! `request{trace_id=…}: `, `serve{trace_id=…}: ` and `relay{trace_id=…}: ` with no span
//! created for them, so a process whose log is filtered at `debug` or above pays nothing per
//! call for the trace id in its log.
//!
//! ```
//! use tracing_subscriber::prelude::*;
//!
//! tracing_subscriber::registry()
//!     .with(tracing_subscriber::EnvFilter::new("warn"))
//!     .with(tracing_subscriber::fmt::layer().event_format(plume::trace::log::TraceFormat::new()))
//!     .init();
//! ```

use std::fmt;

use tracing::{Event, Level, Metadata, Subscriber};
use tracing_log::NormalizeEvent;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// A `tracing_subscriber::fmt` event formatter: the line of `fmt`'s default (full) format, with
/// the current hop of Plume's trace context (`request{trace_id=…}:`) in front of the event's
/// spans. Use it with `tracing_subscriber::fmt::layer().event_format(TraceFormat::new())`.
///
/// A line is `<time> <LEVEL> [<hop>{trace_id=<32 hex>}:][<span>{<fields>}:...] <target>: <fields>`.
/// When a subscriber does create Plume's hop spans (an OTLP exporter's, or a log at `trace`), a
/// line in a hop leaves them out: the hop in front already names the trace.
#[derive(Debug, Clone, Copy)]
pub struct TraceFormat<T = SystemTime> {
    timer: T,
    time: bool,
}

impl Default for TraceFormat {
    fn default() -> Self {
        Self::new()
    }
}

impl TraceFormat {
    /// The format with `fmt`'s default timer (RFC 3339 time, UTC).
    pub fn new() -> Self {
        Self {
            timer: SystemTime,
            time: true,
        }
    }
}

impl<T> TraceFormat<T> {
    /// The same format with `timer` writing the time.
    pub fn with_timer<U: FormatTime>(self, timer: U) -> TraceFormat<U> {
        TraceFormat {
            timer,
            time: self.time,
        }
    }

    /// The same format without the time.
    pub fn without_time(self) -> TraceFormat<T> {
        TraceFormat {
            time: false,
            ..self
        }
    }
}

/// Whether `meta` is the span of a hop ([`hop_span`](super::hop_span): a `trace_id` field).
fn is_hop_span(meta: &Metadata<'_>) -> bool {
    meta.fields().field("trace_id").is_some()
}

/// The level, coloured as `fmt`'s default colours it when the writer takes ANSI escapes.
fn write_level(writer: &mut Writer<'_>, level: Level) -> fmt::Result {
    if !writer.has_ansi_escapes() {
        return write!(writer, "{level:>5} ");
    }
    let colour = match level {
        Level::TRACE => "35",
        Level::DEBUG => "34",
        Level::INFO => "32",
        Level::WARN => "33",
        Level::ERROR => "31",
    };
    write!(writer, "\x1b[{colour}m{level:>5}\x1b[0m ")
}

impl<S, N, T> FormatEvent<S, N> for TraceFormat<T>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    T: FormatTime,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        // A `log` crate record carries its own level and target.
        let normalized = event.normalized_metadata();
        let meta = normalized.as_ref().unwrap_or_else(|| event.metadata());
        if self.time {
            if self.timer.format_time(&mut writer).is_err() {
                writer.write_str("<unknown time>")?;
            }
            writer.write_char(' ')?;
        }
        write_level(&mut writer, *meta.level())?;
        let hop = super::current_hop();
        if let Some((name, trace)) = hop {
            write!(writer, "{name}{{trace_id={}}}:", trace.trace_id_field())?;
        }
        let mut any = hop.is_some();
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                if hop.is_some() && is_hop_span(span.metadata()) {
                    continue;
                }
                writer.write_str(span.name())?;
                any = true;
                let extensions = span.extensions();
                if let Some(fields) = extensions.get::<FormattedFields<N>>()
                    && !fields.is_empty()
                {
                    write!(writer, "{{{fields}}}")?;
                }
                writer.write_char(':')?;
            }
        }
        if any {
            writer.write_char(' ')?;
        }
        write!(writer, "{}: ", meta.target())?;
        ctx.format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}
