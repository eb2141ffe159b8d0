//! JSON text, written byte for byte as `serde_json` writes it, but faster where answers spend
//! their time: a string is scanned eight bytes at a time (32 on long plain text) for the bytes
//! to escape and copied in runs, where `serde_json` looks every byte up in a table.
//!
//! Plume writes its REST answers with [`to_vec`], the mesh's providers write the JSON form of a
//! reply with [`write_value`], and the gateway's transcoder writes a reply's strings with
//! [`write_utf8`] (which also checks that they are UTF-8).
//!
//! ```
//! let v = serde_json::json!({"id": 1, "text": "a \"quoted\" line\n", "done": false});
//! assert_eq!(plume_json::to_vec(&v), serde_json::to_vec(&v).unwrap());
//! ```

#[cfg(any(test, feature = "proptest"))]
pub mod arbitrary;
mod string;
mod value;

pub use string::{write_str, write_utf8};
pub use value::write_value;

use serde_json::Value;

/// `value` as compact JSON text: exactly the bytes of `serde_json::to_vec(value)`.
pub fn to_vec(value: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    // (no limit: the text always fits)
    let _ = write_value(&mut out, value, usize::MAX);
    out
}

/// Make room in `buf` for a write of `len` bytes: when it does not fit, grow by an eighth more
/// than it needs (and at least double, as `Vec` does). A big string written into a small buffer
/// then leaves room for what follows it (the fields after a big one, a response's `err`), where
/// growing by exactly what it needs would grow once more after it: a second allocation of the
/// whole size, a copy of it all, and the page faults of fresh memory.
pub fn make_room(buf: &mut Vec<u8>, len: usize) {
    if buf.capacity() - buf.len() < len {
        buf.reserve(len + len / 8 + 64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_big_string_is_written_without_growing_the_buffer_again_after_it() {
        let v = serde_json::json!({"text": "x".repeat(1 << 20), "done": false});
        let out = to_vec(&v);
        assert_eq!(out, serde_json::to_vec(&v).expect("encodes"));
        // One growth for the string, with room for what follows: not a second doubling.
        assert!(
            out.capacity() < out.len() + out.len() / 4,
            "capacity {} for {} bytes",
            out.capacity(),
            out.len()
        );
    }
}
