//! Property tests of the NATS decoders: hellos (JSON) and table deltas (MessagePack), from
//! arbitrary bytes, damaged messages and inputs at the size and depth limits.

use proptest::prelude::*;
use serde_json::{Value, json};

use super::{Delta, Hello};
use crate::protocol::tests::arb_json;
use crate::protocol::{Entry, MAX_PAYLOAD_DEPTH, TableDelta, decode_payload, encode_payload};

fn arb_hello() -> impl Strategy<Value = Hello> {
    (
        "[0-9a-f]{0,32}",
        ".{0,40}",
        any::<u64>(),
        any::<u16>(),
        any::<bool>(),
    )
        .prop_map(|(node, key, version, protocol, leaving)| Hello {
            node,
            key,
            version,
            protocol,
            leaving,
        })
}

fn arb_delta() -> impl Strategy<Value = Delta> {
    (
        "[0-9a-f]{32}",
        "[a-z]{0,8}",
        any::<u64>(),
        prop::collection::vec(("[a-z:/]{1,16}", arb_json()), 0..6),
        prop::collection::vec("[a-z:/]{1,16}", 0..6),
    )
        .prop_map(|(node, key, version, added, removed)| Delta {
            node,
            key,
            delta: TableDelta {
                version,
                added: added
                    .into_iter()
                    .map(|(name, descriptor)| Entry { name, descriptor })
                    .collect(),
                removed,
            },
        })
}

/// `depth` nested arrays around a number.
fn nested(depth: usize) -> Value {
    (0..depth).fold(json!(1), |v, _| Value::Array(vec![v]))
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic_the_hello_and_delta_decoders(bytes in prop::collection::vec(any::<u8>(), 0..4096)) {
        let _ = serde_json::from_slice::<Hello>(&bytes);
        let _ = decode_payload::<Delta>(&bytes);
    }

    #[test]
    fn hellos_round_trip(h in arb_hello()) {
        let bytes = serde_json::to_vec(&h).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let back: Hello = serde_json::from_slice(&bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(serde_json::to_value(&back).ok(), serde_json::to_value(&h).ok());
    }

    #[test]
    fn deltas_round_trip(d in arb_delta()) {
        let back: Delta = decode_payload(&encode_payload(&d)).map_err(TestCaseError::fail)?;
        prop_assert_eq!(serde_json::to_value(&back).ok(), serde_json::to_value(&d).ok());
    }

    #[test]
    fn damaged_hellos_and_deltas_never_panic(h in arb_hello(), d in arb_delta(), at in any::<prop::sample::Index>(), byte in any::<u8>(), cut in any::<prop::sample::Index>()) {
        let mut hello = serde_json::to_vec(&h).unwrap_or_default();
        let mut delta = encode_payload(&d).to_vec();
        for bytes in [&mut hello, &mut delta] {
            if bytes.is_empty() {
                continue;
            }
            let i = at.index(bytes.len());
            bytes[i] = byte;
            let end = cut.index(bytes.len());
            for b in [&bytes[..], &bytes[..end]] {
                let _ = serde_json::from_slice::<Hello>(b);
                let _ = decode_payload::<Delta>(b);
            }
        }
    }

    /// At the limits: descriptors nested up to and past the payload depth limit, and deltas of
    /// hundreds of entries (a large service table), decode or fail cleanly.
    #[test]
    fn deltas_at_the_depth_and_size_limits(depth in (MAX_PAYLOAD_DEPTH - 16)..(MAX_PAYLOAD_DEPTH + 64), entries in 200usize..800) {
        let deep = Delta {
            node: "0".repeat(32),
            key: "k".into(),
            delta: TableDelta {
                version: 1,
                added: vec![Entry { name: "deep".into(), descriptor: nested(depth) }],
                removed: Vec::new(),
            },
        };
        let decoded = decode_payload::<Delta>(&encode_payload(&deep));
        // The descriptor sits a few levels down (delta, added, entry): well below the limit it
        // decodes, at or past it it fails (without a panic or a stack overflow).
        if depth + 8 < MAX_PAYLOAD_DEPTH {
            prop_assert!(decoded.is_ok(), "depth {}", depth);
        }
        if depth >= MAX_PAYLOAD_DEPTH {
            prop_assert!(decoded.is_err(), "depth {}", depth);
        }
        let wide = Delta {
            node: "0".repeat(32),
            key: "k".into(),
            delta: TableDelta {
                version: 2,
                added: (0..entries)
                    .map(|i| Entry { name: format!("svc:{i}"), descriptor: json!({"methods": ["find", "get"], "i": i}) })
                    .collect(),
                removed: (0..entries).map(|i| format!("old:{i}")).collect(),
            },
        };
        let bytes = encode_payload(&wide);
        let back: Delta = decode_payload(&bytes).map_err(TestCaseError::fail)?;
        prop_assert_eq!(back.delta.added.len(), entries);
        // Damaged anywhere in a large message: no panic.
        let mut damaged = bytes.to_vec();
        let mid = damaged.len() / 2;
        damaged[mid] = 0xc1;
        let _ = decode_payload::<Delta>(&damaged);
    }
}
