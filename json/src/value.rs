//! A [`Value`] written as compact JSON text, byte for byte as `serde_json::to_writer` writes it,
//! with strings through the scan of [`string`] (eight bytes at a time, instead of serde_json's
//! table lookup per byte).

use serde_json::Value;

use crate::string;

/// Append `value` to `out` as JSON: exactly the bytes of `serde_json::to_writer(out, value)`,
/// as long as `out` stays within `limit` bytes. `false` as soon as it would pass them (`out`
/// then holds part of the text: the caller drops it); a string that would is not written at
/// all, so a big one costs nothing past the bound.
pub fn write_value(out: &mut Vec<u8>, value: &Value, limit: usize) -> bool {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        // (serde_json's own digits: itoa and ryu, as `to_writer` writes them; writing into a
        // `Vec` cannot fail)
        Value::Number(n) => {
            let _ = serde_json::to_writer(&mut *out, n);
        }
        Value::String(s) => return write_bounded_str(out, s, limit),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                if !write_value(out, item, limit) {
                    return false;
                }
            }
            out.push(b']');
        }
        Value::Object(map) => {
            out.push(b'{');
            for (i, (k, v)) in map.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                if !write_bounded_str(out, k, limit) {
                    return false;
                }
                out.push(b':');
                if !write_value(out, v, limit) {
                    return false;
                }
            }
            out.push(b'}');
        }
    }
    out.len() <= limit
}

/// A string, unless its text (at least its bytes and two quotes) would pass `limit`.
fn write_bounded_str(out: &mut Vec<u8>, s: &str, limit: usize) -> bool {
    if out.len().saturating_add(s.len()).saturating_add(2) > limit {
        return false;
    }
    string::write_str(out, s);
    out.len() <= limit
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arbitrary::value;
    use proptest::prelude::*;
    use serde_json::json;

    fn ours(v: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        assert!(write_value(&mut out, v, usize::MAX));
        out
    }

    #[test]
    fn every_kind_of_value_as_serde_json_writes_it() {
        let v = json!({
            "null": null, "t": true, "f": false, "u": u64::MAX, "i": i64::MIN, "f64": -1.5e-300,
            "small": 0.1, "big": 1e300, "s": "a \"quoted\" \\ line\n\u{1}\u{7f} ünï 😀",
            "empty": {}, "none": [], "nested": [[1, {"k": [null]}], "x"], "": "",
        });
        assert_eq!(ours(&v), serde_json::to_vec(&v).expect("encodes"));
    }

    #[test]
    fn a_mebibyte_string_among_fields() {
        let v = json!({"id": "a", "text": "x".repeat(1 << 20), "done": false});
        assert_eq!(ours(&v), serde_json::to_vec(&v).expect("encodes"));
    }

    #[test]
    fn a_text_past_the_limit_stops_the_writer() {
        let v = json!({"id": "a", "text": "x".repeat(1 << 20), "n": [1, 2, 3]});
        let whole = serde_json::to_vec(&v).expect("encodes");
        let mut out = Vec::new();
        assert!(write_value(&mut out, &v, whole.len()));
        assert_eq!(out, whole);
        let mut out = Vec::new();
        assert!(
            !write_value(&mut out, &v, whole.len() - 1),
            "one byte short"
        );
        let mut out = Vec::new();
        assert!(!write_value(&mut out, &v, 1 << 20));
        // The big string was not written: the writer stopped before it.
        assert!(out.len() < 64, "{} bytes written", out.len());
    }

    proptest! {
        #[test]
        fn byte_for_byte_serde_json(v in value()) {
            prop_assert_eq!(ours(&v), serde_json::to_vec(&v).expect("encodes"));
        }

        /// Within any limit, the writer gives serde_json's text when it fits, and says so
        /// exactly then.
        #[test]
        fn the_limit_is_exact(v in value(), cut in any::<prop::sample::Index>()) {
            let whole = serde_json::to_vec(&v).expect("encodes");
            let limit = cut.index(whole.len() + 1);
            let mut out = Vec::new();
            let fits = write_value(&mut out, &v, limit);
            prop_assert_eq!(fits, whole.len() <= limit);
            if fits {
                prop_assert_eq!(out, whole);
            }
        }
    }
}
