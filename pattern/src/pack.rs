//! A mesh act's payload written as MessagePack by hand: the bytes `rmp_serde` writes for the
//! same map (property test below), without serde's machinery per value.

use serde_json::{Map, Number, Value};

/// `entries` (the payload's, `$` keys left out by the caller) as a MessagePack map.
pub(crate) fn write_map<'a>(
    out: &mut Vec<u8>,
    len: usize,
    entries: impl Iterator<Item = (&'a String, &'a Value)>,
) {
    map_len(out, len);
    for (k, v) in entries {
        string(out, k);
        value(out, v);
    }
}

/// `v` as MessagePack.
pub(crate) fn value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Null => out.push(0xc0),
        Value::Bool(b) => out.push(if *b { 0xc3 } else { 0xc2 }),
        Value::Number(n) => number(out, n),
        Value::String(s) => string(out, s),
        Value::Array(a) => {
            let len = a.len();
            if len < 16 {
                out.push(0x90 | len as u8);
            } else if let Ok(len) = u16::try_from(len) {
                out.push(0xdc);
                out.extend_from_slice(&len.to_be_bytes());
            } else {
                out.push(0xdd);
                out.extend_from_slice(&(len as u32).to_be_bytes());
            }
            for v in a {
                value(out, v);
            }
        }
        Value::Object(m) => object(out, m),
    }
}

fn object(out: &mut Vec<u8>, m: &Map<String, Value>) {
    write_map(out, m.len(), m.iter());
}

fn map_len(out: &mut Vec<u8>, len: usize) {
    if len < 16 {
        out.push(0x80 | len as u8);
    } else if let Ok(len) = u16::try_from(len) {
        out.push(0xde);
        out.extend_from_slice(&len.to_be_bytes());
    } else {
        out.push(0xdf);
        out.extend_from_slice(&(len as u32).to_be_bytes());
    }
}

fn string(out: &mut Vec<u8>, s: &str) {
    str_bytes(out, s.as_bytes());
}

/// A string given as its (UTF-8) bytes.
pub(crate) fn str_bytes(out: &mut Vec<u8>, s: &[u8]) {
    let len = s.len();
    if len < 32 {
        out.push(0xa0 | len as u8);
    } else if let Ok(len) = u8::try_from(len) {
        out.extend_from_slice(&[0xd9, len]);
    } else if let Ok(len) = u16::try_from(len) {
        out.push(0xda);
        out.extend_from_slice(&len.to_be_bytes());
    } else {
        out.push(0xdb);
        out.extend_from_slice(&(len as u32).to_be_bytes());
    }
    out.extend_from_slice(s);
}

/// As `rmp`'s `write_uint`/`write_sint`/`write_f64`: the smallest form of an integer.
fn number(out: &mut Vec<u8>, n: &Number) {
    if let Some(u) = n.as_u64() {
        if u < 128 {
            out.push(u as u8);
        } else if let Ok(u) = u8::try_from(u) {
            out.extend_from_slice(&[0xcc, u]);
        } else if let Ok(u) = u16::try_from(u) {
            out.push(0xcd);
            out.extend_from_slice(&u.to_be_bytes());
        } else if let Ok(u) = u32::try_from(u) {
            out.push(0xce);
            out.extend_from_slice(&u.to_be_bytes());
        } else {
            out.push(0xcf);
            out.extend_from_slice(&u.to_be_bytes());
        }
    } else if let Some(i) = n.as_i64() {
        // (negative: a non-negative one is a `u64` above)
        if i >= -32 {
            out.push(i as i8 as u8);
        } else if let Ok(i) = i8::try_from(i) {
            out.extend_from_slice(&[0xd0, i as u8]);
        } else if let Ok(i) = i16::try_from(i) {
            out.push(0xd1);
            out.extend_from_slice(&i.to_be_bytes());
        } else if let Ok(i) = i32::try_from(i) {
            out.push(0xd2);
            out.extend_from_slice(&i.to_be_bytes());
        } else {
            out.push(0xd3);
            out.extend_from_slice(&i.to_be_bytes());
        }
    } else {
        out.push(0xcb);
        out.extend_from_slice(&n.as_f64().unwrap_or(f64::NAN).to_bits().to_be_bytes());
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    pub(crate) use plume_json::arbitrary::value;

    proptest! {
        /// Whatever the payload, its bytes are `rmp_serde`'s.
        #[test]
        fn written_maps_are_rmp_serdes(
            m in proptest::collection::btree_map(".{0,8}", value(), 0..20),
        ) {
            let m: Map<String, Value> = m.into_iter().collect();
            let mut out = Vec::new();
            write_map(&mut out, m.len(), m.iter());
            prop_assert_eq!(out, rmp_serde::to_vec(&m).expect("encodes"));
        }
    }

    #[test]
    fn long_strings_and_lists_use_the_wide_forms() {
        let m: Map<String, Value> = [
            ("s".to_owned(), json!("x".repeat(70_000))),
            ("a".to_owned(), json!(vec![1; 70_000])),
            (
                "m".to_owned(),
                json!(
                    (0..20)
                        .map(|i| (i.to_string(), json!(i)))
                        .collect::<Map<_, _>>()
                ),
            ),
        ]
        .into_iter()
        .collect();
        let mut out = Vec::new();
        write_map(&mut out, m.len(), m.iter());
        assert_eq!(out, rmp_serde::to_vec(&m).expect("encodes"));
    }
}
