//! AMP frames (axon's framing) and amp-message arguments.
//!
//! A frame is one byte `(version 1 << 4) | argc` (argc ≤ 15), then per argument a big-endian
//! `u32` length and that many bytes. An argument is tagged: `s:` and a UTF-8 string, `j:` and
//! JSON text, or untagged raw bytes. AMP itself has no size limit; [`FrameDecoder`] has one,
//! so a peer cannot make this node allocate more than `max_frame` bytes for one frame, and a
//! bad header costs one byte of inspection.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde_json::Value;

/// The AMP protocol version axon writes.
pub const VERSION: u8 = 1;
/// At most this many arguments fit in a frame (four bits).
pub const MAX_ARGS: usize = 15;
/// The default frame size limit (16 MiB).
pub const DEFAULT_MAX_FRAME: usize = 16 * 1024 * 1024;

/// Why bytes are not an AMP frame or its arguments are not amp-message arguments.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AmpError {
    /// The header names another protocol version.
    #[error("AMP version {0} (only 1 is known)")]
    Version(u8),
    /// The frame (header and arguments) is longer than the limit.
    #[error("AMP frame of at least {len} bytes is over the {max}-byte limit")]
    TooLong {
        /// The length the frame claims so far.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// An `s:` argument is not UTF-8.
    #[error("an s: argument is not UTF-8")]
    NotUtf8,
    /// A `j:` argument is not JSON.
    #[error("a j: argument is not JSON: {0}")]
    Json(String),
    /// More than [`MAX_ARGS`] arguments to encode.
    #[error("{0} arguments (AMP carries at most 15)")]
    TooManyArgs(usize),
}

/// One amp-message argument.
#[derive(Debug, Clone, PartialEq)]
pub enum Arg {
    /// `s:` + UTF-8 text.
    Str(String),
    /// `j:` + JSON text.
    Json(Value),
    /// Untagged bytes (a Node `Buffer`).
    Raw(Bytes),
}

impl Arg {
    /// Decode one argument from its bytes (the tag decides).
    pub fn decode(bytes: Bytes) -> Result<Arg, AmpError> {
        match bytes.get(..2) {
            Some(b"s:") => String::from_utf8(bytes[2..].to_vec())
                .map(Arg::Str)
                .map_err(|_| AmpError::NotUtf8),
            Some(b"j:") => serde_json::from_slice(&bytes[2..])
                .map(Arg::Json)
                .map_err(|e| AmpError::Json(e.to_string())),
            _ => Ok(Arg::Raw(bytes)),
        }
    }

    /// The tagged bytes of this argument.
    pub fn encode(&self) -> Bytes {
        match self {
            Arg::Str(s) => {
                let mut b = BytesMut::with_capacity(2 + s.len());
                b.put_slice(b"s:");
                b.put_slice(s.as_bytes());
                b.freeze()
            }
            Arg::Json(v) => {
                let mut out = b"j:".to_vec();
                // invariant: writing a serde_json::Value into a Vec cannot fail.
                let _ = serde_json::to_writer(&mut out, v);
                Bytes::from(out)
            }
            Arg::Raw(b) => b.clone(),
        }
    }

    /// The string, for an `s:` argument.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Arg::Str(s) => Some(s),
            _ => None,
        }
    }
}

/// Encode a frame of already tagged argument bytes.
pub fn encode_frame(args: &[Bytes]) -> Result<Bytes, AmpError> {
    if args.len() > MAX_ARGS {
        return Err(AmpError::TooManyArgs(args.len()));
    }
    let len = 1 + args.iter().map(|a| 4 + a.len()).sum::<usize>();
    let mut out = BytesMut::with_capacity(len);
    // invariant: args.len() ≤ 15 was checked above, so it fits the low four bits.
    out.put_u8((VERSION << 4) | args.len() as u8);
    for arg in args {
        let n = u32::try_from(arg.len()).map_err(|_| AmpError::TooLong {
            len: arg.len(),
            max: u32::MAX as usize,
        })?;
        out.put_u32(n);
        out.put_slice(arg);
    }
    Ok(out.freeze())
}

/// Encode a frame of amp-message arguments.
pub fn encode_args(args: &[Arg]) -> Result<Bytes, AmpError> {
    let raw: Vec<Bytes> = args.iter().map(Arg::encode).collect();
    encode_frame(&raw)
}

/// Decode every argument of a frame.
pub fn decode_args(frame: Vec<Bytes>) -> Result<Vec<Arg>, AmpError> {
    frame.into_iter().map(Arg::decode).collect()
}

/// An incremental frame decoder over a byte stream, with a frame size limit.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: BytesMut,
    max_frame: usize,
}

impl FrameDecoder {
    /// A decoder that refuses frames over `max_frame` bytes.
    pub fn new(max_frame: usize) -> Self {
        Self {
            buf: BytesMut::new(),
            max_frame,
        }
    }

    /// The buffer to read socket bytes into.
    pub fn buffer(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// Append bytes read from the stream.
    pub fn extend(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete frame's raw arguments, `Ok(None)` when more bytes are needed, or an
    /// error (the stream is then unusable: close it). The cost of a check is bounded by the
    /// argument count (≤ 15), whatever the lengths claim.
    pub fn next_frame(&mut self) -> Result<Option<Vec<Bytes>>, AmpError> {
        let Some(&head) = self.buf.first() else {
            return Ok(None);
        };
        let version = head >> 4;
        if version != VERSION {
            return Err(AmpError::Version(version));
        }
        let argc = usize::from(head & 0x0f);
        let mut at = 1usize;
        let mut spans = Vec::with_capacity(argc);
        for _ in 0..argc {
            let Some(len_bytes) = self.buf.get(at..at + 4) else {
                return Ok(None);
            };
            let mut len_bytes = len_bytes;
            let len = len_bytes.get_u32() as usize;
            let end = at.saturating_add(4).saturating_add(len);
            if end > self.max_frame {
                return Err(AmpError::TooLong {
                    len: end,
                    max: self.max_frame,
                });
            }
            spans.push((at + 4, len));
            at = end;
            if self.buf.len() < at && spans.len() < argc {
                // The next length prefix is not here yet either.
                return Ok(None);
            }
        }
        if self.buf.len() < at {
            return Ok(None);
        }
        let frame = self.buf.split_to(at).freeze();
        Ok(Some(
            spans
                .into_iter()
                .map(|(start, len)| frame.slice(start..start + len))
                .collect(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn axon_request_bytes() {
        // cote's captured request: 0x12 | len | j:{...} | len | s:9858:0
        let frame = encode_args(&[
            Arg::Json(json!({"type": "add", "a": 1, "b": 2})),
            Arg::Str("9858:0".into()),
        ])
        .unwrap();
        assert_eq!(frame[0], 0x12);
        let body = br#"j:{"type":"add","a":1,"b":2}"#;
        assert_eq!(&frame[1..5], &(body.len() as u32).to_be_bytes());
        assert_eq!(&frame[5..5 + body.len()], body);
        let mut dec = FrameDecoder::new(DEFAULT_MAX_FRAME);
        dec.extend(&frame);
        let args = decode_args(dec.next_frame().unwrap().unwrap()).unwrap();
        assert_eq!(args[1], Arg::Str("9858:0".into()));
        assert_eq!(dec.next_frame().unwrap(), None);
    }

    #[test]
    fn bad_version_and_huge_length_are_refused_without_allocating() {
        let mut dec = FrameDecoder::new(1024);
        dec.extend(&[0x21, 0, 0, 0, 1, b'x']);
        assert_eq!(dec.next_frame(), Err(AmpError::Version(2)));
        let mut dec = FrameDecoder::new(1024);
        dec.extend(&[0x11, 0xff, 0xff, 0xff, 0xff]);
        assert!(matches!(dec.next_frame(), Err(AmpError::TooLong { .. })));
    }

    #[test]
    fn tags() {
        assert_eq!(
            Arg::decode(Bytes::from_static(b"j:{")),
            Err(AmpError::Json(
                "EOF while parsing an object at line 1 column 1".into()
            ))
        );
        assert_eq!(
            Arg::decode(Bytes::from_static(b"s:\xff")),
            Err(AmpError::NotUtf8)
        );
        assert_eq!(
            Arg::decode(Bytes::from_static(b"xy")),
            Ok(Arg::Raw(Bytes::from_static(b"xy")))
        );
        assert_eq!(
            encode_frame(&vec![Bytes::new(); 16]),
            Err(AmpError::TooManyArgs(16))
        );
    }
}
