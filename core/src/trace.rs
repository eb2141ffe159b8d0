//! W3C trace context (`traceparent`) for a call: accepted on a REST request or started, kept for
//! the call's task while it runs (a thread-local set around each poll of its future: code that
//! carries it on, such as the mesh's calls, finds it with [`current`]; the log's event
//! formatter, [`log::TraceFormat`] with the `log` feature, writes its trace id in every log line
//! of the call), and answered in a `traceparent` response header. The `tracing` span of a hop
//! ([`hop_span`]) is a `trace`-level span that only a subscriber interested in it creates (an
//! OTLP exporter, `plume-otlp`): with none, a call allocates no span.
//!
//! ```
//! use plume::trace::TraceContext;
//!
//! let ctx = TraceContext::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
//! assert_eq!(ctx.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
//! let child = ctx.child(); // the span of this hop: same trace, a new span id
//! assert_eq!(child.trace_id(), ctx.trace_id());
//! assert_ne!(child.span_id(), ctx.span_id());
//! assert!(TraceContext::parse("00-00000000000000000000000000000000-00f067aa0ba902b7-01").is_none());
//! ```

use std::cell::Cell;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

/// The header name, `traceparent`.
pub const TRACEPARENT: &str = "traceparent";

/// A trace id, a span id and the trace flags of one hop of a call.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    trace_id: u128,
    span_id: u64,
    flags: u8,
    /// The span id of the hop this one is a [`child`](Self::child) of (0: none known).
    parent: u64,
}

impl fmt::Debug for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.traceparent())
    }
}

#[cfg(feature = "log")]
pub mod log;

/// What [`CURRENT`] holds: the hop's context and its name (`request`, `serve`, ...).
#[derive(Clone, Copy)]
struct Current {
    ctx: TraceContext,
    hop: &'static str,
}

thread_local! {
    /// The hop whose future (or synchronous scope) runs on this thread now: set around each
    /// poll of an [`InHop`] and restored after it, so it is a task's own, as a task-local is
    /// (a plain `Cell`, no lazy initialisation, no borrow flag: this runs at every poll).
    static CURRENT: Cell<Option<Current>> = const { Cell::new(None) };
}

/// Run `f` with `current` as this thread's hop, and put the one before back after it (also when
/// `f` panics).
fn with_current<R>(current: Current, f: impl FnOnce() -> R) -> R {
    with_set(&CURRENT, Some(current), f)
}

/// Run `f` with the thread-local `key` set to `value`, and put back what it held after it (also
/// when `f` panics).
fn with_set<T: Copy + 'static, R>(
    key: &'static std::thread::LocalKey<Cell<T>>,
    value: T,
    f: impl FnOnce() -> R,
) -> R {
    struct Restore<T: Copy + 'static>(&'static std::thread::LocalKey<Cell<T>>, T);
    impl<T: Copy + 'static> Drop for Restore<T> {
        fn drop(&mut self) {
            self.0.set(self.1);
        }
    }
    let _restore = Restore(key, key.replace(value));
    f()
}

thread_local! {
    /// A per-thread xorshift state for new ids, seeded once from the OS.
    static RNG: Cell<u64> = Cell::new(uuid::Uuid::new_v4().as_u64_pair().0 | 1);
}

/// A random non-zero u64 (xorshift64*; ids need to be unique, not secret).
fn random_u64() -> u64 {
    let [x] = random_u64s();
    x
}

/// `N` random non-zero u64s ([`random_u64`]), the thread's state read and written once.
fn random_u64s<const N: usize>() -> [u64; N] {
    RNG.with(|state| {
        let mut x = state.get();
        let out = std::array::from_fn(|_| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            x.wrapping_mul(0x2545_F491_4F6C_DD1D).max(1)
        });
        state.set(x);
        out
    })
}

impl TraceContext {
    /// A new trace (sampled).
    pub fn new_root() -> Self {
        let [hi, lo, span_id] = random_u64s();
        Self {
            trace_id: (u128::from(hi) << 64) | u128::from(lo),
            span_id,
            flags: 1,
            parent: 0,
        }
    }

    /// Parse a `traceparent` value (`00-<32 hex>-<16 hex>-<2 hex>`; a later version's value is
    /// read by its first four fields). `None` for anything else, or all-zero ids.
    ///
    /// Read by its fixed layout (the dashes at 2, 35 and 52, the ids eight hex digits at a
    /// time): this runs on every mesh call a provider serves and on every REST request that has
    /// the header.
    pub fn parse(value: &str) -> Option<Self> {
        Self::parse_bytes(value.as_bytes())
    }

    /// [`parse`](Self::parse) of a value's bytes, which need not be checked as UTF-8 first:
    /// the same as `std::str::from_utf8(value).ok().and_then(TraceContext::parse)`, where a
    /// value of the usual form (55 ASCII bytes) is never checked twice (a mesh provider reads
    /// the `traceparent` of each call from the request's bytes).
    pub fn parse_bytes(value: &[u8]) -> Option<Self> {
        // Trimmed only when it starts or ends with something else than visible ASCII (the
        // usual value does not: no scan for Unicode white space then).
        let visible = |c: Option<&u8>| c.is_some_and(|c| c.is_ascii_graphic());
        let b = if visible(value.first()) && visible(value.last()) {
            value
        } else {
            std::str::from_utf8(value).ok()?.trim().as_bytes()
        };
        let head = b.get(..TRACEPARENT_LEN)?;
        if head[2] != b'-' || head[35] != b'-' || head[52] != b'-' {
            return None;
        }
        // Version ff is invalid (its text only: the old reader let `FF` pass, so does this one).
        let version = hex_value(&head[..2])?;
        if &head[..2] == b"ff" {
            return None;
        }
        // After the flags: nothing, or (a later version) a dash and anything.
        match b.get(TRACEPARENT_LEN) {
            None => {}
            // Its head is ASCII (checked below); the rest must be UTF-8, as a `str` is.
            Some(b'-') if version != 0 => {
                std::str::from_utf8(&b[TRACEPARENT_LEN..]).ok()?;
            }
            Some(_) => return None,
        }
        let trace_hi = hex16_value(&head[3..19])?;
        let trace_lo = hex16_value(&head[19..35])?;
        let span_id = hex16_value(&head[36..52])?;
        let flags = hex_value(&head[53..55])?;
        let ctx = Self {
            trace_id: (u128::from(trace_hi) << 64) | u128::from(trace_lo),
            span_id,
            flags: u8::try_from(flags).ok()?,
            parent: 0,
        };
        (ctx.trace_id != 0 && ctx.span_id != 0).then_some(ctx)
    }

    /// The context of the next hop: the same trace and flags, a new span id.
    pub fn child(&self) -> Self {
        Self {
            span_id: random_u64(),
            parent: self.span_id,
            ..*self
        }
    }

    /// The trace id, 32 lowercase hex digits.
    pub fn trace_id(&self) -> String {
        format!("{:032x}", self.trace_id)
    }

    /// The span id, 16 lowercase hex digits.
    pub fn span_id(&self) -> String {
        format!("{:016x}", self.span_id)
    }

    /// The `traceparent` value.
    pub fn traceparent(&self) -> String {
        ascii(&self.traceparent_bytes()).to_owned()
    }

    /// The `traceparent` value's 55 ASCII bytes, written on the stack (for a header value made
    /// from them without a `String` in between).
    pub fn traceparent_bytes(&self) -> [u8; TRACEPARENT_LEN] {
        // Written with a table, not `format!`: this runs on every traced request and mesh call.
        let mut out = [0u8; TRACEPARENT_LEN];
        out[..3].copy_from_slice(b"00-");
        out[3..19].copy_from_slice(&hex16((self.trace_id >> 64) as u64));
        out[19..35].copy_from_slice(&hex16(self.trace_id as u64));
        out[35] = b'-';
        out[36..52].copy_from_slice(&hex16(self.span_id));
        out[52] = b'-';
        hex_into(&mut out[53..], &[self.flags]);
        out
    }

    /// The trace id's 16 bytes (big-endian, as in `traceparent`), for an exporter.
    pub fn trace_id_bytes(&self) -> [u8; 16] {
        self.trace_id.to_be_bytes()
    }

    /// The span id's 8 bytes (big-endian), for an exporter.
    pub fn span_id_bytes(&self) -> [u8; 8] {
        self.span_id.to_be_bytes()
    }

    /// The span id of the hop this context is a [`child`](Self::child) of, if known (a
    /// context [`parse`](Self::parse)d or [`new_root`](Self::new_root) has none).
    pub fn parent_span_id_bytes(&self) -> Option<[u8; 8]> {
        (self.parent != 0).then(|| self.parent.to_be_bytes())
    }

    /// Whether the trace is sampled (flag `01`): an exporter sends only sampled hops.
    pub fn sampled(&self) -> bool {
        self.flags & 1 == 1
    }

    /// The trace id as a `tracing` field value, formatted only when a subscriber records it.
    pub fn trace_id_field(&self) -> impl fmt::Display + use<> {
        TraceIdField(self.trace_id)
    }
}

struct TraceIdField(u128);

impl fmt::Display for TraceIdField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = [0u8; 32];
        hex_into(&mut out, &self.0.to_be_bytes());
        f.write_str(ascii(&out))
    }
}

/// The length of a version-00 `traceparent` value.
pub const TRACEPARENT_LEN: usize = 55;

/// Write `bytes` as lowercase hex into `out` (twice their length).
fn hex_into(out: &mut [u8], bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (pair, byte) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = DIGITS[usize::from(byte >> 4)];
        pair[1] = DIGITS[usize::from(byte & 0xf)];
    }
}

/// `x` as 16 lowercase hex digits, computed a word at a time (no table, no loop).
fn hex16(x: u64) -> [u8; 16] {
    /// Each nibble of a u32 spread into a byte of a u64, the most significant first.
    fn spread(x: u32) -> u64 {
        let x = u64::from(x);
        // Nibbles to bytes in two steps: 16-bit halves apart, then the bytes, then the nibbles.
        let x = ((x & 0xffff_0000) << 16) | (x & 0xffff);
        let x = ((x & 0x0000_ff00_0000_ff00) << 8) | (x & 0x0000_00ff_0000_00ff);
        let x = ((x & 0x00f0_00f0_00f0_00f0) << 4) | (x & 0x000f_000f_000f_000f);
        // The first digit is the high nibble: in big-endian byte order.
        x.swap_bytes()
    }
    /// Nibble values (one per byte) to their lowercase hex digits.
    fn digits(n: u64) -> u64 {
        // 6 added to each nibble carries into bit 4 exactly when it is 10 or more.
        let letters = ((n + 0x0606_0606_0606_0606) >> 4) & 0x0101_0101_0101_0101;
        n + 0x3030_3030_3030_3030 + letters * (b'a' - b'0' - 10) as u64
    }
    let hi = digits(spread((x >> 32) as u32));
    let lo = digits(spread(x as u32));
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&hi.to_le_bytes());
    out[8..].copy_from_slice(&lo.to_le_bytes());
    out
}

/// The value of 16 hex digits (either case), eight at a time in a word; `None` if `digits` is
/// not 16 bytes or any byte is not a hex digit ([`hex_value`] of them, with no loop).
fn hex16_value(digits: &[u8]) -> Option<u64> {
    const LOW: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    /// The bytes of `v` (each below 0x80) at least `lo` and at most `hi`: 0x80 in each such byte.
    fn in_range(v: u64, lo: u8, hi: u8) -> u64 {
        let at_least = v + LOW * u64::from(0x80 - lo);
        let above = v + LOW * u64::from(0x7f - hi);
        at_least & !above & HIGH
    }
    /// Eight hex digits (the first the most significant) to their value.
    fn eight(chunk: [u8; 8]) -> Option<u64> {
        let v = u64::from_le_bytes(chunk);
        if v & HIGH != 0 {
            return None;
        }
        let digit = in_range(v, b'0', b'9');
        let letter = in_range(v | (LOW * 0x20), b'a', b'f');
        if digit | letter != HIGH {
            return None;
        }
        // A digit's low nibble is its value; a letter's is its value less 9.
        let nibbles = (v & (LOW * 0x0f)) + (letter >> 7) * 9;
        // The first digit into the top nibble: bytes reversed, then packed pairwise.
        let x = nibbles.swap_bytes();
        let x = (x | (x >> 4)) & 0x00ff_00ff_00ff_00ff;
        let x = (x | (x >> 8)) & 0x0000_ffff_0000_ffff;
        Some((x | (x >> 16)) & 0xffff_ffff)
    }
    let (hi, lo) = digits.split_first_chunk::<8>()?;
    let lo: [u8; 8] = lo.try_into().ok()?;
    Some((eight(*hi)? << 32) | eight(lo)?)
}

/// The value of at most 16 hex digits (either case); `None` if any byte is not one.
fn hex_value(digits: &[u8]) -> Option<u64> {
    /// A byte's digit value, or 0xff for a byte that is no hex digit (a `static`: one table in
    /// memory, not one built per call).
    static VALUE: [u8; 256] = {
        let mut table = [0xffu8; 256];
        let mut i = 0;
        while i < 10 {
            table[b'0' as usize + i] = i as u8;
            i += 1;
        }
        let mut i = 0;
        while i < 6 {
            table[b'a' as usize + i] = 10 + i as u8;
            table[b'A' as usize + i] = 10 + i as u8;
            i += 1;
        }
        table
    };
    let mut value = 0u64;
    let mut bad = 0u8;
    for &d in digits {
        let v = VALUE[usize::from(d)];
        bad |= v;
        value = (value << 4) | u64::from(v & 0xf);
    }
    // A digit's value has its high bits clear; the marker 0xff has them set.
    (bad & 0xf0 == 0).then_some(value)
}

/// The ASCII text `hex_into` and the dashes made (always ASCII, so never the empty fallback).
fn ascii(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).unwrap_or_default()
}

/// Whether REST requests and socket.io calls run in a trace context (on by default).
static ENABLED: AtomicBool = AtomicBool::new(true);

/// Turn trace contexts on or off for the whole process. Off, a REST request neither reads nor
/// answers `traceparent` and runs in no `request` span, a socket.io call starts no trace, and
/// so mesh calls and events carry none (a mesh call that arrives with one is still served in
/// its trace). For measuring what tracing costs (`PLUME_OBSERVABILITY=off` of the demo).
pub fn set_enabled(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

/// Whether trace contexts are on ([`set_enabled`]).
#[inline]
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// The trace context of the call this task is running, if any.
pub fn current() -> Option<TraceContext> {
    CURRENT.get().map(|c| c.ctx)
}

/// The name of the hop this task is running (`request`, `serve`, `call`, `relay`, or `trace`
/// for [`scope`]) and its trace context, if any: what a log line of the call names
/// (`request{trace_id=…}`).
pub fn current_hop() -> Option<(&'static str, TraceContext)> {
    CURRENT.get().map(|c| (c.hop, c.ctx))
}

/// Run `f` with `ctx` as the [`current`] trace context (its log lines name the hop `trace`).
pub async fn scope<F: Future>(ctx: TraceContext, f: F) -> F::Output {
    hop_scope("trace", ctx, f).await
}

/// Run `f` as the hop `hop` (a name for log lines: `request`, `serve`, ...) of `ctx`'s trace:
/// `ctx` is the [`current`] trace context while it runs.
pub async fn hop_scope<F: Future>(hop: &'static str, ctx: TraceContext, f: F) -> F::Output {
    in_hop(hop, ctx, tracing::Span::none(), f).await
}

/// `f` as the hop `hop` of `ctx`'s trace ([`hop_scope`]), in `span` (the hop's span from
/// [`hop_span`], entered while `f` is polled unless it is disabled): one wrapper for both.
pub fn in_hop<F: Future>(
    hop: &'static str,
    ctx: TraceContext,
    span: tracing::Span,
    f: F,
) -> InHop<F> {
    InHop {
        current: Current { ctx, hop },
        span,
        fut: f,
    }
}

pin_project_lite::pin_project! {
    /// A future run as one hop of a trace ([`in_hop`]).
    pub struct InHop<F> {
        current: Current,
        span: tracing::Span,
        #[pin]
        fut: F,
    }
}

impl<F> fmt::Debug for InHop<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InHop")
            .field("hop", &self.current.hop)
            .field("trace", &self.current.ctx)
            .finish_non_exhaustive()
    }
}

impl<F: Future> Future for InHop<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        // A disabled span (no subscriber wants hop spans) is not entered at all.
        let _entered = (!this.span.is_disabled()).then(|| this.span.enter());
        let fut = this.fut;
        with_current(*this.current, || fut.poll(cx))
    }
}

/// Run the synchronous `f` with `ctx` as the [`current`] trace context (an event re-emitted in
/// the trace of the call that published it, say).
pub fn sync_scope<R>(ctx: TraceContext, f: impl FnOnce() -> R) -> R {
    sync_hop_scope("trace", ctx, f)
}

/// [`sync_scope`] as the hop `hop` ([`hop_scope`]).
pub fn sync_hop_scope<R>(hop: &'static str, ctx: TraceContext, f: impl FnOnce() -> R) -> R {
    with_current(Current { ctx, hop }, f)
}

thread_local! {
    /// The hop whose span [`hop_span`] is creating on this thread.
    static NEW_HOP: Cell<Option<TraceContext>> = const { Cell::new(None) };
}

/// Create the `tracing` span of one hop of a trace (a REST request, a socket.io call, a mesh
/// call or the provider's serving of it) with `make`. A `tracing` layer that exports spans
/// (`plume-otlp`'s) reads the hop's ids with [`new_span_hop`] when it is told of the new span,
/// so an exported span has Plume's trace id, span id and parent span id. Plume's hop spans are
/// `trace`-level spans with a `trace_id` field: a log filtered at `debug` or above does not
/// create them, so with no exporter this costs a thread-local write and no span.
pub fn hop_span<S>(ctx: TraceContext, make: impl FnOnce() -> S) -> S {
    // With no subscriber taking `trace`-level spans, `make` creates none: no hop to tell of.
    if !tracing::level_enabled!(tracing::Level::TRACE) {
        return make();
    }
    with_set(&NEW_HOP, Some(ctx), make)
}

/// For a `tracing` layer's `on_new_span`: the hop of the span being created, when
/// [`hop_span`] creates it (`None` for any other span).
pub fn new_span_hop() -> Option<TraceContext> {
    NEW_HOP.get()
}
