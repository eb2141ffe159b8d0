//! The mesh frame and payload decoders at the real limits, through the public codec: frames up
//! to and past the maximum frame size (16 MiB), fed in arbitrary chunks, and MessagePack
//! payloads nested past the decoder's depth limit. Every input decodes or fails with an error:
//! never a panic, a stack overflow or an allocation the input only claims.

use bytes::BytesMut;
use plume_transport::codec::{
    DEFAULT_MAX_FRAME, EventMsg, Frame, FrameError, HEADER_LEN, Kind, RequestMsg, ResponseMsg,
    decode_payload,
};
use proptest::prelude::*;
use serde_json::Value;

/// A frame header claiming `len` bytes after the length field.
fn header(len: usize, kind: u8) -> Vec<u8> {
    let mut out = u32::try_from(len)
        .unwrap_or(u32::MAX)
        .to_be_bytes()
        .to_vec();
    out.push(1);
    out.push(kind);
    out.extend_from_slice(&7u64.to_be_bytes());
    out
}

/// Every payload decoder on `bytes`.
fn decode_all(bytes: &[u8]) {
    let _ = decode_payload::<Value>(bytes);
    let _ = decode_payload::<RequestMsg>(bytes);
    let _ = decode_payload::<ResponseMsg>(bytes);
    let _ = decode_payload::<EventMsg>(bytes);
}

/// A payload body: a MessagePack array header that claims four billion items, zeros, or a
/// repeating byte.
fn body(len: usize, style: u8) -> Vec<u8> {
    match style % 3 {
        0 => {
            let mut b = vec![0xdd, 0xff, 0xff, 0xff, 0xff];
            b.resize(len.max(5), 0);
            b.truncate(len);
            b
        }
        1 => vec![0; len],
        _ => vec![0x91; len],
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    /// A frame of any size up to a few bytes past the maximum, delivered in two arbitrary
    /// chunks: a frame within the maximum decodes whole (and its payload decoders never panic),
    /// a longer one is refused from its header alone.
    #[test]
    fn frames_up_to_and_past_the_maximum_size(
        near_max in any::<bool>(),
        offset in 0usize..64,
        small in 0usize..4096,
        style in any::<u8>(),
        kind in 0u8..16,
        cut in any::<prop::sample::Index>(),
    ) {
        let max = DEFAULT_MAX_FRAME;
        // The length field counts the header after it too.
        let len = if near_max { max + 32 - offset } else { HEADER_LEN - 4 + small };
        let payload_len = len.saturating_sub(HEADER_LEN - 4);
        let mut wire = header(len, kind);
        if len <= max {
            wire.extend_from_slice(&body(payload_len, style));
        }
        let split = cut.index(wire.len() + 1);
        let mut buf = BytesMut::from(&wire[..split]);
        let mut outcome = Frame::decode(&mut buf, max);
        if matches!(outcome, Ok(None)) {
            buf.extend_from_slice(&wire[split..]);
            outcome = Frame::decode(&mut buf, max);
        }
        match outcome {
            Ok(Some(frame)) => {
                prop_assert!(len <= max);
                prop_assert_eq!(frame.payload.len(), payload_len);
                decode_all(&frame.payload);
                let _ = frame.parse::<RequestMsg>();
            }
            Err(FrameError::Oversized { .. }) => prop_assert!(len > max),
            Err(FrameError::Kind(_)) => prop_assert!(Kind::from_u8(kind).is_none()),
            other => prop_assert!(false, "len {}: {:?}", len, other),
        }
    }

    /// MessagePack nested up to several times the decoder's depth limit (1,024), as arrays or
    /// maps, bare or inside a request's body: decoded or refused, never a stack overflow.
    #[test]
    fn payloads_nested_past_the_depth_limit(depth in 0usize..4096, maps in any::<bool>(), in_request in any::<bool>()) {
        let mut nested = Vec::with_capacity(depth * 2 + 1);
        for _ in 0..depth {
            if maps {
                // fixmap of one entry with key "a"
                nested.extend_from_slice(&[0x81, 0xa1, b'a']);
            } else {
                nested.push(0x91);
            }
        }
        nested.push(0xc0);
        let bytes = if in_request {
            // {"name": "svc:x", "body": <nested>}
            let mut b = vec![0x82, 0xa4];
            b.extend_from_slice(b"name");
            b.push(0xa5);
            b.extend_from_slice(b"svc:x");
            b.push(0xa4);
            b.extend_from_slice(b"body");
            b.extend_from_slice(&nested);
            b
        } else {
            nested
        };
        decode_all(&bytes);
    }
}
