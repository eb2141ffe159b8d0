use super::*;
use crate::protocol::decode_payload;
use plume_json::arbitrary::value;
use proptest::prelude::*;
use serde_json::json;

fn serde_bytes(v: &Value) -> Vec<u8> {
    rmp_serde::to_vec_named(v).expect("a value encodes")
}

fn written(v: &Value) -> Vec<u8> {
    let mut buf = Vec::new();
    write_value(&mut buf, v).expect("a value writes");
    buf
}

fn walked(b: &[u8]) -> Option<Value> {
    read_value(&mut Reader::new(b, 0), 0)
}

/// A page of `n` todos as the demo's replicas answer it (the real size of a `find`).
fn page(n: usize) -> Value {
    let data: Vec<Value> = (0..n)
        .map(|i| {
            json!({"id": format!("todos-a-{i:08x}"), "text": format!("todo number {i} — ünïcode"),
                   "done": i % 2 == 0, "replica": "todos-a", "rank": -(i as i64), "score": i as f64 / 3.0})
        })
        .collect();
    json!({"total": n, "limit": 50, "skip": 0, "data": data, "replica": "todos-a"})
}

proptest! {
    /// The direct writer writes serde's bytes, and the walk reads them back into the value serde
    /// reads.
    #[test]
    fn written_and_walked_values_agree_with_serde(v in value()) {
        let bytes = serde_bytes(&v);
        prop_assert_eq!(written(&v), bytes.clone());
        let by_serde: Value = decode_payload(&bytes).expect("serde reads its own");
        prop_assert_eq!(walked(&bytes), Some(by_serde));
    }

    /// Garbled bytes: whatever the walk accepts, serde accepts as the same value (what the walk
    /// leaves, serde accepts or refuses with its own error).
    #[test]
    fn the_walk_accepts_nothing_serde_refuses(
        v in value(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut bytes = serde_bytes(&v);
        for (at, byte) in flips {
            let i = at.index(bytes.len());
            bytes[i] = byte;
        }
        let end = cut.index(bytes.len() + 1);
        let garbled = &bytes[..end];
        let by_serde = decode_payload::<Value>(garbled);
        if let Some(w) = walked(garbled) {
            prop_assert_eq!(by_serde, Ok(w));
        }
    }

    /// Random bytes, the same.
    #[test]
    fn random_bytes_are_walked_only_when_serde_reads_them(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        if let Some(w) = walked(&bytes) {
            prop_assert_eq!(decode_payload::<Value>(&bytes), Ok(w));
        }
    }
}

#[test]
fn a_page_of_fifty_todos_is_written_and_walked_as_serde_does() {
    let v = page(50);
    let bytes = serde_bytes(&v);
    assert_eq!(written(&v), bytes);
    assert_eq!(walked(&bytes), Some(v));
}

#[test]
fn lengths_past_the_small_forms_are_written_as_serde_does() {
    // str8/16/32, array16, map16 and every integer width.
    let long = |n: usize| "x".repeat(n);
    let v = json!({
        "s31": long(31), "s32": long(32), "s255": long(255), "s256": long(256), "s70k": long(70_000),
        "a16": (0..16).collect::<Vec<i32>>(), "a70k": vec![0u8; 70_000],
        "m16": (0..16).map(|i| (format!("k{i}"), json!(i))).collect::<Map<String, Value>>(),
        "ints": [0, 127, 128, 255, 256, 65_535, 65_536, u32::MAX, u64::from(u32::MAX) + 1, u64::MAX,
                 -1, -32, -33, -128, -129, -32_768, -32_769, i32::MIN, i64::from(i32::MIN) - 1, i64::MIN],
        "floats": [0.5, -1.25, 1e300],
    });
    let bytes = serde_bytes(&v);
    assert_eq!(written(&v), bytes);
    assert_eq!(walked(&bytes), Some(v));
}

#[test]
fn floats_and_repeated_keys_read_as_serde_reads_them() {
    // An f32, an f64 NaN (serde_json's `null`), and a map with key "a" twice.
    let mut b = vec![0x83, 0xa1, b'a', 0xca];
    b.extend_from_slice(&1.5f32.to_bits().to_be_bytes());
    b.extend_from_slice(&[0xa1, b'b', 0xcb]);
    b.extend_from_slice(&f64::NAN.to_bits().to_be_bytes());
    b.extend_from_slice(&[0xa1, b'a', 0x07]);
    let by_serde: Value = decode_payload(&b).expect("serde reads it");
    assert_eq!(by_serde, json!({"a": 7, "b": null}));
    assert_eq!(walked(&b), Some(by_serde));
}

#[test]
fn what_the_walk_leaves_to_serde() {
    // bin, ext, an integer key, invalid UTF-8, the unused marker, a truncated string.
    for b in [
        &[0xc4, 0x01, 0x00][..],
        &[0xd4, 0x01, 0x00],
        &[0x81, 0x01, 0x02],
        &[0xa2, 0xff, 0xfe],
        &[0xc1],
        &[0xa5, b'a'],
    ] {
        assert_eq!(walked(b), None, "{b:?}");
        assert!(decode_payload::<Value>(b).is_err(), "{b:?}");
    }
    // Nesting deeper than the walk goes: serde reads it.
    let mut deep = vec![0x91; MAX_WALK_DEPTH + 1];
    deep.push(0xc0);
    assert_eq!(walked(&deep), None);
    assert!(decode_payload::<Value>(&deep).is_ok());
}

#[test]
fn a_forged_length_reserves_nothing_large() {
    // A map32 and an array32 claiming 4 billion items, with three bytes behind them.
    for b in [
        &[0xdf, 0xff, 0xff, 0xff, 0xff, 0xa1, b'a', 0xc0][..],
        &[0xdd, 0xff, 0xff, 0xff, 0xff, 0xc0, 0xc0, 0xc0],
    ] {
        assert_eq!(walked(b), None);
    }
}

#[test]
fn a_big_string_is_written_without_growing_the_buffer_again_after_it() {
    // A 1 MiB todo as a replica answers it: small fields, the big text, small fields after it.
    let text = "x".repeat(1 << 20);
    let todo = json!({"a": 1, "text": text, "z": false});
    let mut buf = Vec::with_capacity(256);
    write_value(&mut buf, &todo).expect("writes");
    assert_eq!(buf, serde_bytes(&todo));
    // Growing by exactly what the text needed would double the buffer for the field after it
    // (a second 1 MiB allocation and copy): the room made for the text holds what follows.
    assert!(
        buf.capacity() < buf.len() + buf.len() / 4,
        "capacity {} for {} bytes",
        buf.capacity(),
        buf.len()
    );
}
