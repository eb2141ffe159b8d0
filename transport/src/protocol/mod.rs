//! Peer-link frames and their payloads.
//!
//! A frame is `u32 length (big-endian) | u8 version | u8 kind | u64 request id (big-endian) |
//! payload`, where `length` counts every byte after itself. Payloads are MessagePack maps (see
//! `docs/protocol.md` for the benchmark that chose MessagePack over JSON).

use std::fmt;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::de::{DeserializeOwned, IgnoredAny};
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub(crate) mod caller;
pub(crate) mod head;
pub(crate) mod splice;
pub(crate) mod value;
pub(crate) use head::read_request_head;
pub use head::{Reader, skip_values};

/// The frame format version this crate speaks.
pub const FRAME_VERSION: u8 = 1;
/// The handshake protocol version carried in `hello`.
pub const PROTOCOL_VERSION: u16 = 1;
/// Bytes before the payload: length, version, kind, request id.
pub const HEADER_LEN: usize = 4 + 1 + 1 + 8;
/// The default maximum frame length (16 MiB).
pub const DEFAULT_MAX_FRAME: usize = 16 * 1024 * 1024;

/// What a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Kind {
    /// First frame of each side: [`Hello`].
    Hello = 1,
    /// No longer sent: the HMAC challenge of earlier versions (links with a mesh secret are now
    /// encrypted, `docs/protocol.md`). [`Auth`].
    Auth = 2,
    /// The sender's full service table and topic subscriptions: [`TableSnapshot`].
    TableSnapshot = 3,
    /// Services added or removed since the snapshot: [`TableDelta`].
    TableDelta = 4,
    /// Start receiving a topic: [`Topic`].
    Subscribe = 5,
    /// Stop receiving a topic: [`Topic`].
    Unsubscribe = 6,
    /// A call: [`RequestMsg`]; the request id names it.
    Request = 7,
    /// The answer to a call: [`ResponseMsg`].
    Response = 8,
    /// The caller gave up on a call; empty payload.
    Cancel = 9,
    /// A published event: [`EventMsg`].
    Event = 10,
    /// Liveness probe; empty payload.
    Ping = 11,
    /// Answer to a ping, same request id; empty payload.
    Pong = 12,
    /// The sender is draining: [`Goaway`].
    Goaway = 13,
}

impl Kind {
    /// Every kind.
    pub const ALL: [Kind; 13] = [
        Kind::Hello,
        Kind::Auth,
        Kind::TableSnapshot,
        Kind::TableDelta,
        Kind::Subscribe,
        Kind::Unsubscribe,
        Kind::Request,
        Kind::Response,
        Kind::Cancel,
        Kind::Event,
        Kind::Ping,
        Kind::Pong,
        Kind::Goaway,
    ];

    /// The kind with this wire byte.
    pub fn from_u8(b: u8) -> Option<Kind> {
        Kind::ALL.iter().copied().find(|k| *k as u8 == b)
    }
}

/// One frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// What it carries.
    pub kind: Kind,
    /// The request id (0 when the kind has none).
    pub id: u64,
    /// The encoded payload.
    pub payload: Bytes,
}

/// Why bytes are not a frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The length is above the maximum.
    #[error("frame of {len} bytes exceeds the maximum of {max}")]
    Oversized {
        /// Announced length.
        len: usize,
        /// The maximum.
        max: usize,
    },
    /// The length cannot hold the header.
    #[error("frame length {0} is shorter than the header")]
    TooShort(usize),
    /// Unknown frame version.
    #[error("unsupported frame version {0}")]
    Version(u8),
    /// Unknown kind byte.
    #[error("unknown frame kind {0}")]
    Kind(u8),
    /// The payload does not decode.
    #[error("malformed {kind:?} payload: {reason}")]
    Payload {
        /// The frame kind.
        kind: Kind,
        /// What went wrong.
        reason: String,
    },
}

impl Frame {
    /// A frame with an empty payload.
    pub fn empty(kind: Kind, id: u64) -> Frame {
        Frame {
            kind,
            id,
            payload: Bytes::new(),
        }
    }

    /// A frame whose payload is `msg`, encoded.
    pub fn with<T: Serialize>(kind: Kind, id: u64, msg: &T) -> Frame {
        Frame {
            kind,
            id,
            payload: encode_payload(msg),
        }
    }

    /// Append the wire bytes of this frame to `dst`.
    pub fn encode_into(&self, dst: &mut BytesMut) {
        dst.reserve(HEADER_LEN + self.payload.len());
        self.encode_header_into(dst);
        dst.put_slice(&self.payload);
    }

    /// Append the header of this frame (the [`HEADER_LEN`] bytes before its payload) to `dst`.
    pub(crate) fn encode_header_into(&self, dst: &mut BytesMut) {
        // invariant: payloads are bounded by the frame maximum (far below u32::MAX) by the sender;
        // saturate rather than wrap for anything larger so the peer refuses it as oversized.
        let len = u32::try_from(HEADER_LEN - 4 + self.payload.len()).unwrap_or(u32::MAX);
        dst.put_u32(len);
        dst.put_u8(FRAME_VERSION);
        dst.put_u8(self.kind as u8);
        dst.put_u64(self.id);
    }

    /// The wire bytes of this frame.
    pub fn to_bytes(&self) -> Bytes {
        let mut b = BytesMut::new();
        self.encode_into(&mut b);
        b.freeze()
    }

    /// Take one complete frame from the front of `src`, if there is one. Errors mean the stream
    /// is unusable and the link must close.
    pub fn decode(src: &mut BytesMut, max: usize) -> Result<Option<Frame>, FrameError> {
        if src.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([src[0], src[1], src[2], src[3]]) as usize;
        if len > max {
            return Err(FrameError::Oversized { len, max });
        }
        if len < HEADER_LEN - 4 {
            return Err(FrameError::TooShort(len));
        }
        if src.len() < 5 {
            return Ok(None);
        }
        if src[4] != FRAME_VERSION {
            return Err(FrameError::Version(src[4]));
        }
        if src.len() < 6 {
            return Ok(None);
        }
        let kind = Kind::from_u8(src[5]).ok_or(FrameError::Kind(src[5]))?;
        if src.len() < 4 + len {
            src.reserve(4 + len - src.len());
            return Ok(None);
        }
        src.advance(6);
        let id = src.get_u64();
        let payload = src.split_to(len - (HEADER_LEN - 4)).freeze();
        Ok(Some(Frame { kind, id, payload }))
    }

    /// Decode the payload as `T`.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, FrameError> {
        decode_payload(&self.payload).map_err(|reason| FrameError::Payload {
            kind: self.kind,
            reason,
        })
    }
}

/// Encode a payload (MessagePack, maps with field names).
pub fn encode_payload<T: Serialize + ?Sized>(msg: &T) -> Bytes {
    // Most payloads are small: one allocation of this size avoids the reallocations of growing
    // from empty.
    encode_payload_in(msg, 256)
}

/// [`encode_payload`] into a buffer of `capacity` bytes to start with (a payload known to be
/// larger than most: a traced request's `traceparent` would grow the usual one once more).
/// Values encoded before ([`splice::Spliced`]) are copied in as they are.
pub(crate) fn encode_payload_in<T: Serialize + ?Sized>(msg: &T, capacity: usize) -> Bytes {
    let mut buf = Vec::with_capacity(capacity);
    let armed = splice::arm();
    let written = rmp_serde::encode::write_named(&mut Roomy(&mut buf), msg);
    drop(armed);
    match written {
        Ok(()) => Bytes::from(buf),
        Err(e) => {
            // invariant: our payload types and serde_json::Value always serialize to MessagePack;
            // if that ever fails, send an empty payload, which the peer rejects with a reason.
            tracing::error!(target: "plume::mesh", error = %e, "payload failed to encode");
            Bytes::new()
        }
    }
}

/// Room for a write, grown by an eighth more than it needs ([`plume_json::make_room`]).
pub(crate) use plume_json::make_room;

/// A `Vec` writer that makes room for each write as [`make_room`] does.
pub(crate) struct Roomy<'a>(pub(crate) &'a mut Vec<u8>);

impl std::io::Write for Roomy<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.write_all(bytes)?;
        Ok(bytes.len())
    }

    fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let buf = &mut *self.0;
        // A MessagePack marker (most writes): pushed, not copied by a `memcpy` call.
        if let [byte] = bytes {
            // A `nil` may stand for bytes encoded before (`splice`).
            if splice::is_placeholder(*byte)
                && let Some(spliced) = splice::take_pending()
            {
                return self.write_all(&spliced);
            }
            buf.push(*byte);
            return Ok(());
        }
        make_room(buf, bytes.len());
        buf.extend_from_slice(bytes);
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The deepest nesting a payload may have. Deeper input is refused before it can exhaust the
/// stack (each level costs a few KiB of it in a debug build, where rmp-serde's own limit of
/// 1,024 overflowed a 2 MiB thread); 128 is serde_json's limit, so every value a client can
/// send over REST or socket.io fits.
pub const MAX_PAYLOAD_DEPTH: usize = 128;

/// Decode a payload.
pub fn decode_payload<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    let mut de = rmp_serde::Deserializer::from_read_ref(bytes);
    de.set_max_depth(MAX_PAYLOAD_DEPTH);
    T::deserialize(&mut de).map_err(|e| e.to_string())
}

/// Decode a payload with a seed (a decoder that carries state of its own).
pub(crate) fn decode_payload_seed<'de, S: serde::de::DeserializeSeed<'de>>(
    seed: S,
    bytes: &'de [u8],
) -> Result<S::Value, String> {
    let mut de = rmp_serde::Deserializer::from_read_ref(bytes);
    de.set_max_depth(MAX_PAYLOAD_DEPTH);
    seed.deserialize(&mut de).map_err(|e| e.to_string())
}

/// `hello`: who the sender is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Handshake protocol version.
    pub protocol: u16,
    /// Node id as 32 hex digits.
    pub node: String,
    /// Environment; must equal the receiver's.
    pub environment: String,
    /// Replica-group key.
    pub key: String,
    /// Whether the sender has a mesh secret; must equal the receiver's.
    pub auth: bool,
    /// 32 random bytes without a secret (kept for the wire format; unused), empty with one.
    pub nonce: Vec<u8>,
}

/// `auth`: the sender's proof that it knows the mesh secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Auth {
    /// HMAC-SHA256, see `docs/protocol.md`.
    pub mac: Vec<u8>,
}

/// One provided endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// Endpoint name.
    pub name: String,
    /// Its JSON descriptor.
    pub descriptor: Value,
}

/// `table snapshot`: everything the sender provides and every topic it subscribes to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableSnapshot {
    /// Service-table version.
    pub version: u64,
    /// Provided endpoints.
    pub entries: Vec<Entry>,
    /// Subscribed topics.
    pub topics: Vec<String>,
}

/// `table delta`: endpoints added (or re-described) and removed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableDelta {
    /// Service-table version after the change.
    pub version: u64,
    /// Added or changed endpoints.
    pub added: Vec<Entry>,
    /// Removed endpoint names.
    pub removed: Vec<String>,
}

/// `subscribe` / `unsubscribe`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Topic {
    /// The topic.
    pub topic: String,
}

/// `request`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestMsg<B = Value> {
    /// Endpoint name.
    pub name: String,
    /// Optional method.
    pub method: Option<String>,
    /// Call body.
    pub body: B,
    /// Milliseconds left before the caller's deadline.
    pub timeout_ms: u64,
    /// The caller's W3C trace context (`traceparent`), when its call has one. Optional: a node
    /// of an earlier version neither sends nor reads it (see docs/protocol.md, "Calls").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

/// A [`RequestMsg`] as a caller encodes it, borrowing its name, method and body, with the
/// `traceparent` written on the stack ([`TraceparentText`]): the same bytes as the
/// `RequestMsg` with these fields (same field names, order and attributes), with no `String`
/// made for any of them.
#[derive(Serialize)]
pub(crate) struct RequestOut<'a, B: ?Sized> {
    pub(crate) name: &'a str,
    pub(crate) method: Option<&'a str>,
    pub(crate) body: &'a B,
    pub(crate) timeout_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) traceparent: Option<TraceparentText>,
    /// The caller takes the result as JSON text (`true`; absent otherwise): a provider may
    /// then answer in the JSON form ([`JSON_REPLY_KEY`]). A hint, not in [`RequestMsg`]: a node
    /// of an earlier version skips the key and answers MessagePack, which the caller reads as
    /// before (see docs/protocol.md, "Calls").
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub(crate) json: bool,
}

/// The key of a response in the JSON form: `{"json": <the result as JSON text, a str>}`, the
/// answer to a request with `json: true` whose handler answered a value.
pub(crate) const JSON_REPLY_KEY: &[u8] = b"json";

/// A `traceparent` value's text on the stack, serialized as the string it is.
#[derive(Clone, Copy)]
pub(crate) struct TraceparentText([u8; plume::trace::TRACEPARENT_LEN]);

impl TraceparentText {
    pub(crate) fn new(ctx: &plume::trace::TraceContext) -> Self {
        Self(ctx.traceparent_bytes())
    }
}

impl Serialize for TraceparentText {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // Always ASCII (hex digits and dashes): never the empty fallback.
        serializer.serialize_str(std::str::from_utf8(&self.0).unwrap_or_default())
    }
}

/// The body of an encoded [`RequestMsg`] alone: the other fields are skipped, not built (and may
/// be absent: the reader decoded the head, `RequestMsg<IgnoredAny>`, first). Same field names
/// and order as `RequestMsg`, so both its map and its array encodings read.
#[derive(Deserialize)]
struct BodyOf<B> {
    #[serde(rename = "name", default)]
    _name: IgnoredAny,
    #[serde(rename = "method", default)]
    _method: IgnoredAny,
    body: B,
    #[serde(rename = "timeout_ms", default)]
    _timeout_ms: IgnoredAny,
    #[serde(rename = "traceparent", default)]
    _traceparent: IgnoredAny,
}

/// Decode the body of an encoded [`RequestMsg`] payload straight into `B` (a handler's own type),
/// with no `serde_json::Value` on the way.
pub(crate) fn decode_request_body<B: DeserializeOwned>(payload: &[u8]) -> Result<B, String> {
    decode_payload::<BodyOf<B>>(payload).map(|m| m.body)
}

/// The endpoint name of an encoded [`RequestMsg`], read without decoding anything else, when the
/// payload starts as this crate encodes one: a map whose first entry is `name` (after the
/// caller's entry, [`caller::stamp`], when there is one). `None` otherwise (the caller then
/// decodes the head).
pub(crate) fn peek_request_name(payload: &[u8]) -> Option<&str> {
    let (&marker, rest) = payload.split_first()?;
    let rest = match marker {
        0x81..=0x8f => rest,
        0xde => rest.get(2..)?,
        0xdf => rest.get(4..)?,
        _ => return None,
    };
    let rest = caller::skip_entry(rest);
    let (key, rest) = msgpack_str(rest)?;
    if key != "name" {
        return None;
    }
    msgpack_str(rest).map(|(name, _)| name)
}

/// A MessagePack string at the front of `b`, and what follows it.
fn msgpack_str(b: &[u8]) -> Option<(&str, &[u8])> {
    let (&marker, rest) = b.split_first()?;
    let (len, rest) = match marker {
        0xa0..=0xbf => (usize::from(marker & 0x1f), rest),
        0xd9 => (usize::from(*rest.first()?), rest.get(1..)?),
        0xda => (
            usize::from(u16::from_be_bytes(rest.get(..2)?.try_into().ok()?)),
            rest.get(2..)?,
        ),
        0xdb => (
            usize::try_from(u32::from_be_bytes(rest.get(..4)?.try_into().ok()?)).ok()?,
            rest.get(4..)?,
        ),
        _ => return None,
    };
    let s = std::str::from_utf8(rest.get(..len)?).ok()?;
    Some((s, rest.get(len..)?))
}

/// `response`: exactly one of `ok` and `err` is meaningful; `err` is a Feathers error object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResponseMsg {
    /// The result, when the call succeeded.
    pub ok: Option<Value>,
    /// The Feathers error, when it failed.
    pub err: Option<Value>,
}

/// `event`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventMsg<D = Value> {
    /// Topic.
    pub topic: String,
    /// Data.
    pub data: D,
    /// The W3C trace context (`traceparent`) of the call that published the event, when it ran
    /// in one. Optional, like [`RequestMsg::traceparent`]: a node of an earlier version neither
    /// sends nor reads it (see docs/protocol.md, "Events").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

/// `goaway`: the sender drains. `ack` is set on the answer to a goaway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Goaway {
    /// Why.
    pub reason: String,
    /// True when this acknowledges the other side's goaway.
    pub ack: bool,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

#[cfg(test)]
pub(crate) mod tests;
