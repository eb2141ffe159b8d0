//! The calling node of a NATS call, carried in the call's MessagePack payload instead of a NATS
//! header (so a call is a plain `PUB`/`MSG`, which neither the NATS clients nor the server parse
//! a header block for; docs/protocol.md, "NATS backend").
//!
//! The caller appends one entry to the request's map: the key `"from"` (a fixstr) and the node
//! id as a 16-byte `bin 8`, big-endian. A node of an earlier version reads the map as before (an
//! unknown key, skipped) and sees no caller; this version reads the caller from the entry, or
//! from the `Plume-Node` header that earlier versions send.

use bytes::{BufMut, Bytes, BytesMut};

use crate::discovery::NodeId;
use crate::protocol::skip_values;

/// The key of the entry, as MessagePack (fixstr of 4 bytes).
const KEY: &[u8; 5] = b"\xa4from";
/// The head of its value: `bin 8` of 16 bytes.
const VALUE_HEAD: &[u8; 2] = b"\xc4\x10";
/// The bytes the entry adds.
const ENTRY_LEN: usize = KEY.len() + VALUE_HEAD.len() + 16;

/// `payload` (an encoded request: a map) with the entry naming `node` appended. Gives the
/// payload back unchanged when it is not a map of fewer than 15 entries (a fixmap, as this
/// crate encodes every request): the caller then names itself in a header as before.
pub(super) fn stamp(payload: Bytes, node: NodeId) -> Result<Bytes, Bytes> {
    match payload.first() {
        Some(&marker @ 0x80..=0x8e) => {
            // Unique when freshly encoded (the usual case): extended in place.
            let mut out = payload.try_into_mut().unwrap_or_else(|shared| {
                let mut m = BytesMut::with_capacity(shared.len() + ENTRY_LEN);
                m.extend_from_slice(&shared);
                m
            });
            out[0] = marker + 1;
            out.reserve(ENTRY_LEN);
            out.put_slice(KEY);
            out.put_slice(VALUE_HEAD);
            out.put_u128(node.0);
            Ok(out.freeze())
        }
        _ => Err(payload),
    }
}

/// The node a call names in its payload: `Ok(None)` when the payload is not a map or has no
/// `from` entry (a caller of an earlier version, or a plain NATS client). Err: a map that does
/// not walk to its end, or a `from` that is not a 16-byte node id, or two of them (the call is
/// refused with the reason).
pub(super) fn read(payload: &[u8]) -> Result<Option<NodeId>, String> {
    let be = |at: usize, n: usize| -> Option<u64> {
        let bytes = payload.get(at..at.checked_add(n)?)?;
        Some(bytes.iter().fold(0u64, |v, &x| (v << 8) | u64::from(x)))
    };
    let truncated = || "the call is truncated or not MessagePack".to_owned();
    let (entries, mut at) = match payload.first() {
        Some(&m @ 0x80..=0x8f) => (u64::from(m & 0x0f), 1),
        Some(0xde) => (be(1, 2).ok_or_else(truncated)?, 3),
        Some(0xdf) => (be(1, 4).ok_or_else(truncated)?, 5),
        _ => return Ok(None),
    };
    let mut from = None;
    // Every entry takes at least two bytes, so a count larger than the payload fails the walk.
    for _ in 0..entries {
        if payload.get(at..at + KEY.len()) == Some(KEY.as_slice()) {
            let value = at + KEY.len();
            if payload.get(value..value + VALUE_HEAD.len()) != Some(VALUE_HEAD.as_slice()) {
                return Err("the call's `from` is not a 16-byte node id".to_owned());
            }
            let id = payload
                .get(value + VALUE_HEAD.len()..value + VALUE_HEAD.len() + 16)
                .and_then(|b| <[u8; 16]>::try_from(b).ok())
                .ok_or_else(truncated)?;
            if from.replace(NodeId(u128::from_be_bytes(id))).is_some() {
                return Err("the call names its caller twice".to_owned());
            }
            at += ENTRY_LEN;
        } else {
            at = skip_values(payload, at, 2).ok_or_else(truncated)?;
        }
    }
    Ok(from)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;
    use crate::protocol::{RequestMsg, decode_payload, encode_payload, read_request_head};

    fn request(body: serde_json::Value, traceparent: Option<String>) -> Bytes {
        encode_payload(&RequestMsg {
            name: "svc:todos".to_owned(),
            method: Some("get".to_owned()),
            body,
            timeout_ms: 5000,
            traceparent,
        })
    }

    #[test]
    fn a_stamped_request_names_its_caller_and_still_decodes_as_before() {
        let node = NodeId(0x0123_4567_89ab_cdef_0011_2233_4455_6677);
        for tp in [
            None,
            Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
        ] {
            let plain = request(json!({"id": 1, "query": {"a": [1, 2]}}), tp.clone());
            let shared = plain.clone(); // not unique: copied
            let stamped = stamp(shared, node).expect("a request is a fixmap");
            assert_eq!(stamped.len(), plain.len() + ENTRY_LEN);
            assert_eq!(read(&stamped), Ok(Some(node)));
            assert_eq!(read(&plain), Ok(None));
            // Unique: extended in place, same bytes.
            let fresh = request(json!({"id": 1, "query": {"a": [1, 2]}}), tp);
            assert_eq!(stamp(fresh, node).as_deref(), Ok(&stamped[..]));
            // What a node of an earlier version reads: the same request, the entry skipped.
            let a: RequestMsg = decode_payload(&plain).expect("plain");
            let b: RequestMsg = decode_payload(&stamped).expect("stamped");
            assert_eq!(a, b);
            let head = read_request_head(&stamped).expect("head");
            assert_eq!((head.name, head.method), ("svc:todos", Some("get")));
        }
    }

    #[test]
    fn payloads_that_are_not_fixmaps_are_given_back() {
        for p in [&b""[..], b"\x90", b"\xde\x00\x00", b"\x8f"] {
            let p = Bytes::copy_from_slice(p);
            assert_eq!(stamp(p.clone(), NodeId(1)), Err(p));
        }
    }

    #[test]
    fn a_bad_from_is_refused_with_a_reason() {
        let id = [7u8; 16];
        let mut wrong_type = b"\x81\xa4from\xa3abc".to_vec();
        assert!(read(&wrong_type).unwrap_err().contains("16-byte node id"));
        wrong_type = b"\x81\xa4from\xc4\x08".to_vec();
        wrong_type.extend_from_slice(&id[..8]);
        assert!(read(&wrong_type).unwrap_err().contains("16-byte node id"));
        let mut cut = b"\x81\xa4from\xc4\x10".to_vec();
        cut.extend_from_slice(&id[..15]);
        assert!(read(&cut).unwrap_err().contains("truncated"));
        let mut twice = b"\x82".to_vec();
        for _ in 0..2 {
            twice.extend_from_slice(b"\xa4from\xc4\x10");
            twice.extend_from_slice(&id);
        }
        assert!(read(&twice).unwrap_err().contains("twice"));
        assert!(read(b"\x83\xa1a\x01").unwrap_err().contains("truncated"));
        assert!(
            read(b"\xdf\xff\xff\xff\xff")
                .unwrap_err()
                .contains("truncated")
        );
        assert_eq!(read(b"\x92\x01\x02"), Ok(None));
    }

    proptest! {
        /// Garbled payloads (arbitrary bytes, and stamped requests damaged or cut anywhere) are
        /// read or refused with a reason, never a panic; an intact stamp always reads back.
        #[test]
        fn garbled_payloads_are_refused_never_a_panic(
            bytes in prop::collection::vec(any::<u8>(), 0..512),
            id in any::<u128>(),
            n in any::<i64>(),
            at in any::<prop::sample::Index>(),
            byte in any::<u8>(),
            cut in any::<prop::sample::Index>(),
        ) {
            let _ = read(&bytes);
            let mut prefixed = vec![0x85];
            prefixed.extend_from_slice(&bytes);
            let _ = read(&prefixed);
            let stamped = stamp(request(json!({"id": n}), None), NodeId(id))
                .map_err(|_| TestCaseError::fail("not stamped"))?;
            prop_assert_eq!(read(&stamped), Ok(Some(NodeId(id))));
            let mut damaged = stamped.to_vec();
            let i = at.index(damaged.len());
            damaged[i] = byte;
            let _ = read(&damaged);
            let end = 1 + cut.index(stamped.len() - 1);
            let cut_off = read(&stamped[..end]);
            prop_assert!(cut_off.is_err(), "cut at {} of {}: {:?}", end, stamped.len(), cut_off);
        }
    }
}
