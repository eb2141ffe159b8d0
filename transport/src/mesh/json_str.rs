//! A string written as JSON, byte for byte as `serde_json` writes it, but scanned eight bytes
//! at a time: the transcoder of a reply ([`super::reply`]) spends most of a big answer's time
//! here, and a long run of plain text (the common case) is copied in one piece.
//!
//! What `serde_json` escapes: `"` and `\`, and every byte below 0x20 (`\b`, `\t`, `\n`, `\f`
//! and `\r` by their short forms, the others as `\u00XX` with lowercase hex digits). Nothing
//! else: DEL and non-ASCII are written as they are.

/// Eight copies of `b`.
const fn splat(b: u8) -> u64 {
    u64::from_ne_bytes([b; 8])
}

const ONES: u64 = splat(0x01);
const HIGHS: u64 = splat(0x80);

/// The high bit of every byte of `w` that `serde_json` escapes (and of no byte below the first
/// such byte): below 0x20, `"` or `\`. Bits above the first hit may be set spuriously (a borrow
/// runs on); only the lowest set bit is exact, and the mask is zero exactly when no byte is one.
fn escapes(w: u64) -> u64 {
    let control = w.wrapping_sub(splat(0x20));
    let quote = w ^ splat(b'"');
    let backslash = w ^ splat(b'\\');
    let quote = quote.wrapping_sub(ONES) & !quote;
    let backslash = backslash.wrapping_sub(ONES) & !backslash;
    (control | quote | backslash) & !w & HIGHS
}

/// Eight bytes as a little-endian word (the callers pass exactly eight).
fn load(word: &[u8]) -> u64 {
    <[u8; 8]>::try_from(word).map_or(0, u64::from_le_bytes)
}

/// Whether `serde_json` escapes byte `b`.
fn is_escaped(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\'
}

/// Append `s` to `out` as a JSON string, quotes included: exactly the bytes of
/// `serde_json::to_writer(out, s)`.
pub(crate) fn write_json_str(out: &mut Vec<u8>, s: &str) {
    write_json_bytes(out, s.as_bytes());
}

/// [`write_json_str`] of text already known to be UTF-8 (ASCII, for the reply walk): the bytes
/// are only scanned for the ones to escape, which are all ASCII.
pub(crate) fn write_json_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    // `bytes[start..i]` is plain and not written yet.
    let mut start = 0;
    let mut i = 0;
    loop {
        // Runs of plain text, 32 bytes at a time (one branch per four words).
        while let Some(block) = bytes.get(i..i + 32) {
            let hits = block
                .chunks_exact(8)
                .fold(0, |hits, word| hits | escapes(load(word)));
            if hits != 0 {
                break;
            }
            i += 32;
        }
        let Some(word) = bytes.get(i..i + 8) else {
            break;
        };
        let hits = escapes(load(word));
        if hits == 0 {
            i += 8;
            continue;
        }
        // The first byte to escape: the lowest hit (little-endian, so the first in memory).
        let at = i + (hits.trailing_zeros() / 8) as usize;
        out.extend_from_slice(&bytes[start..at]);
        escape(out, bytes[at]);
        i = at + 1;
        start = i;
    }
    for (k, &b) in bytes.iter().enumerate().skip(i) {
        if is_escaped(b) {
            out.extend_from_slice(&bytes[start..k]);
            escape(out, b);
            start = k + 1;
        }
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// Write the escape of `b`, one of the bytes [`is_escaped`] names.
fn escape(out: &mut Vec<u8>, b: u8) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    match b {
        b'"' => out.extend_from_slice(b"\\\""),
        b'\\' => out.extend_from_slice(b"\\\\"),
        0x08 => out.extend_from_slice(b"\\b"),
        b'\t' => out.extend_from_slice(b"\\t"),
        b'\n' => out.extend_from_slice(b"\\n"),
        0x0c => out.extend_from_slice(b"\\f"),
        b'\r' => out.extend_from_slice(b"\\r"),
        _ => out.extend_from_slice(&[
            b'\\',
            b'u',
            b'0',
            b'0',
            HEX[usize::from(b >> 4)],
            HEX[usize::from(b & 0xf)],
        ]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn serde(s: &str) -> Vec<u8> {
        serde_json::to_vec(s).expect("a string encodes")
    }

    fn ours(s: &str) -> Vec<u8> {
        let mut out = b"prefix".to_vec();
        write_json_str(&mut out, s);
        assert_eq!(&out[..6], b"prefix", "what was there stays");
        out.split_off(6)
    }

    #[test]
    fn every_byte_alone_and_in_every_position_of_a_word() {
        for b in 0u8..0x80 {
            let c = char::from(b);
            for before in 0..17 {
                for after in [0, 1, 7, 8, 9] {
                    let s = format!("{}{c}{}", "a".repeat(before), "é".repeat(after));
                    assert_eq!(ours(&s), serde(&s), "{s:?}");
                }
            }
        }
    }

    #[test]
    fn non_ascii_and_del_are_written_as_they_are() {
        for s in [
            "\u{7f}",
            "é\u{7f}ü€😀",
            "\u{80}\u{7ff}\u{800}\u{ffff}\u{10000}",
        ] {
            let s = s.repeat(5);
            assert_eq!(ours(&s), serde(&s));
        }
    }

    #[test]
    fn a_mebibyte_of_plain_text_and_of_escapes() {
        let plain = "x".repeat(1_048_000);
        assert_eq!(ours(&plain), serde(&plain));
        let mixed: String = (0..1_100_000u32)
            .map(|i| {
                ['a', '"', '\\', '\n', '\u{1}', 'é', '\u{1f}', ' ', '\u{7f}'][(i % 9) as usize]
            })
            .collect();
        assert_eq!(ours(&mixed), serde(&mixed));
    }

    /// Strings drawn mostly from the bytes that matter: every escape class, the bytes next to
    /// them (0x1f/0x20, 0x21/0x23, 0x5b/0x5d), DEL, multi-byte characters, and plain text.
    fn tricky() -> impl Strategy<Value = String> {
        let ch = prop_oneof![
            4 => Just('a'),
            1 => (0u8..0x20).prop_map(char::from),
            1 => prop::sample::select(vec!['"', '\\', ' ', '!', '#', '[', ']', '\u{7f}', 'é', '€', '😀']),
            1 => any::<char>(),
        ];
        prop::collection::vec(ch, 0..200).prop_map(|v| v.into_iter().collect())
    }

    proptest! {
        #[test]
        fn byte_for_byte_serde_json(s in tricky()) {
            prop_assert_eq!(ours(&s), serde(&s));
        }

        #[test]
        fn byte_for_byte_serde_json_on_any_string(s in any::<String>()) {
            prop_assert_eq!(ours(&s), serde(&s));
        }

        #[test]
        fn byte_for_byte_serde_json_on_long_strings(
            s in tricky(),
            run in 0usize..70_000,
            at in any::<prop::sample::Index>(),
        ) {
            // A long plain run with the tricky part somewhere in it.
            let mut long = "p".repeat(run);
            long.insert_str(at.index(run + 1), &s);
            prop_assert_eq!(ours(&long), serde(&long));
        }
    }
}
