//! The calling node of a request, carried in the request's MessagePack map: how a NATS call
//! names its caller without a NATS header (so a call is a plain `PUB`/`MSG`, which neither the
//! NATS clients nor the server parse a header block for; docs/protocol.md, "NATS backend").
//!
//! The caller puts one entry first in the request's map: the key `"from"` (a fixstr) and the
//! node id as a 16-byte `bin 8`, big-endian, 23 bytes in all. A node of an earlier version reads
//! the map as before (an unknown key, skipped) and sees no caller; this version reads the caller
//! from the first entry in constant time (and the NATS engine from the `Plume-Node` header that
//! earlier versions send).

// Stamping and reading the entry are the NATS engine's (a TCP link knows its peer); skipping
// it is every decoder's.
#[cfg(any(feature = "nats", test))]
use bytes::{Bytes, BytesMut};

#[cfg(any(feature = "nats", test))]
use crate::discovery::NodeId;

/// The key of the entry, as MessagePack (fixstr of 4 bytes).
const KEY: &[u8; 5] = b"\xa4from";
/// The head of its value: `bin 8` of 16 bytes.
const VALUE_HEAD: &[u8; 2] = b"\xc4\x10";
/// The bytes the entry takes.
pub(crate) const ENTRY_LEN: usize = KEY.len() + VALUE_HEAD.len() + 16;

/// `payload` (an encoded request: a map) with the entry naming `node` put first. Gives the
/// payload back unchanged when it is not a map of fewer than 15 entries (a fixmap, as this
/// crate encodes every request): the caller then names itself another way.
#[cfg(any(feature = "nats", test))]
pub(crate) fn stamp(payload: Bytes, node: NodeId) -> Result<Bytes, Bytes> {
    let Some(&marker @ 0x80..=0x8e) = payload.first() else {
        return Err(payload);
    };
    let len = payload.len();
    // Unique when freshly encoded (the usual case): moved up in place, else copied.
    let mut out = payload.try_into_mut().unwrap_or_else(|shared| {
        let mut m = BytesMut::with_capacity(shared.len() + ENTRY_LEN);
        m.extend_from_slice(&shared);
        m
    });
    out.resize(len + ENTRY_LEN, 0);
    out.copy_within(1..len, 1 + ENTRY_LEN);
    out[0] = marker + 1;
    out[1..1 + KEY.len()].copy_from_slice(KEY);
    out[1 + KEY.len()..1 + KEY.len() + VALUE_HEAD.len()].copy_from_slice(VALUE_HEAD);
    out[1 + ENTRY_LEN - 16..1 + ENTRY_LEN].copy_from_slice(&node.0.to_be_bytes());
    Ok(out.freeze())
}

/// Where the first entry of the map `payload` starts (after its header), when it is a map.
#[cfg(any(feature = "nats", test))]
fn first_entry(payload: &[u8]) -> Option<usize> {
    match payload.first()? {
        0x81..=0x8f => Some(1),
        0xde => Some(3),
        0xdf => Some(5),
        _ => None,
    }
}

/// The node a request names in its first entry: `Ok(None)` when the payload is not a non-empty
/// map or its first key is not `from` (a caller of an earlier version, or a plain NATS client).
/// Err: a `from` that is not a 16-byte node id (the call is refused with the reason).
#[cfg(any(feature = "nats", test))]
pub(crate) fn read(payload: &[u8]) -> Result<Option<NodeId>, String> {
    let Some(at) = first_entry(payload) else {
        return Ok(None);
    };
    if payload.get(at..at + KEY.len()) != Some(KEY.as_slice()) {
        return Ok(None);
    }
    let value = &payload[at + KEY.len()..];
    match value.get(..VALUE_HEAD.len() + 16) {
        Some(v) if v.starts_with(VALUE_HEAD) => {
            let mut id = [0u8; 16];
            id.copy_from_slice(&v[VALUE_HEAD.len()..]);
            Ok(Some(NodeId(u128::from_be_bytes(id))))
        }
        _ => Err("the request's `from` is not a 16-byte node id".to_owned()),
    }
}

/// `rest`, the entries of a map, past a first entry that names the caller (in the form
/// [`stamp`] writes), so a reader that expects `name` first finds it.
pub(crate) fn skip_entry(rest: &[u8]) -> &[u8] {
    match rest.get(..KEY.len() + VALUE_HEAD.len()) {
        Some(head) if head.starts_with(KEY) && head.ends_with(VALUE_HEAD) => {
            rest.get(ENTRY_LEN..).unwrap_or(rest)
        }
        _ => rest,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;
    use crate::protocol::{
        RequestMsg, decode_payload, encode_payload, peek_request_name, read_request_head,
    };

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
            // Unique: moved up in place, same bytes.
            let fresh = request(json!({"id": 1, "query": {"a": [1, 2]}}), tp);
            assert_eq!(stamp(fresh, node).as_deref(), Ok(&stamped[..]));
            // What a node of an earlier version reads (serde, and the head walk): the same
            // request, the entry skipped.
            let a: RequestMsg = decode_payload(&plain).expect("plain");
            let b: RequestMsg = decode_payload(&stamped).expect("stamped");
            assert_eq!(a, b);
            let head = read_request_head(&stamped).expect("head");
            assert_eq!((head.name, head.method), ("svc:todos", Some("get")));
            // This version's quick look at the name sees past the entry.
            assert_eq!(peek_request_name(&stamped), Some("svc:todos"));
            assert_eq!(peek_request_name(&plain), Some("svc:todos"));
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
        assert!(
            read(b"\x81\xa4from\xa3abc")
                .unwrap_err()
                .contains("16-byte")
        );
        let mut short = b"\x81\xa4from\xc4\x08".to_vec();
        short.extend_from_slice(&id[..8]);
        assert!(read(&short).unwrap_err().contains("16-byte"));
        let mut cut = b"\x81\xa4from\xc4\x10".to_vec();
        cut.extend_from_slice(&id[..15]);
        assert!(read(&cut).unwrap_err().contains("16-byte"));
        // Not first, not a map, empty: no caller named.
        assert_eq!(read(b"\x82\xa1a\x01\xa4from\xc4\x10"), Ok(None));
        assert_eq!(read(b"\x92\x01\x02"), Ok(None));
        assert_eq!(read(b"\x80"), Ok(None));
        assert_eq!(read(b""), Ok(None));
    }

    proptest! {
        /// Garbled payloads (arbitrary bytes, and stamped requests damaged or cut anywhere) are
        /// read, or refused with a reason, never a panic; an intact stamp always reads back, and
        /// a damaged stamped request is still refused or read by the request decoders without a
        /// panic.
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
            let _ = skip_entry(&bytes);
            for head in [&b"\x85\xa4from"[..], b"\x85\xa4from\xc4\x10"] {
                let mut prefixed = head.to_vec();
                prefixed.extend_from_slice(&bytes);
                let _ = read(&prefixed);
                let _ = peek_request_name(&prefixed);
            }
            let stamped = stamp(request(json!({"id": n}), None), NodeId(id))
                .map_err(|_| TestCaseError::fail("not stamped"))?;
            prop_assert_eq!(read(&stamped), Ok(Some(NodeId(id))));
            let mut damaged = stamped.to_vec();
            let i = at.index(damaged.len());
            damaged[i] = byte;
            let end = 1 + cut.index(stamped.len() - 1);
            for b in [&damaged[..], &stamped[..end]] {
                let _ = read(b);
                let _ = peek_request_name(b);
                let _ = read_request_head(b);
                let _ = decode_payload::<RequestMsg>(b);
            }
            // Cut inside the entry: refused (or, cut before its key is whole, no caller).
            if end < 1 + ENTRY_LEN {
                let r = read(&stamped[..end]);
                prop_assert!(r.is_err() || (end < 1 + KEY.len() && r == Ok(None)), "cut at {}: {:?}", end, r);
            }
        }
    }
}
