//! A string written as JSON, byte for byte as `serde_json` writes it, but scanned eight bytes
//! at a time: a big answer spends most of its writing time here, and a long run of plain text
//! (the common case) is copied in one piece.
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
/// such byte): below 0x20, `"` or `\\`. With `NON_ASCII`, also of every byte at or above 0x80.
/// Bits above the first hit may be set spuriously (a borrow runs on); only the lowest set bit is
/// exact, and the mask is zero exactly when no byte is one.
fn stops<const NON_ASCII: bool>(w: u64) -> u64 {
    let control = w.wrapping_sub(splat(0x20));
    let quote = w ^ splat(b'"');
    let backslash = w ^ splat(b'\\');
    let quote = quote.wrapping_sub(ONES) & !quote;
    let backslash = backslash.wrapping_sub(ONES) & !backslash;
    let found = control | quote | backslash;
    if NON_ASCII {
        // `(found & !w) | w`: a byte with its high bit set stops the run, escape or not.
        (found | w) & HIGHS
    } else {
        found & !w & HIGHS
    }
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
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    // Text already known to be UTF-8: only the bytes to escape (all ASCII) stop the scan.
    let _ = write_json::<false>(out, s.as_bytes());
}

/// [`write_str`] of bytes that should be UTF-8 (a reply's string, for the reply walk): the
/// check is the scan's, a word without high bits is ASCII and needs none. `None` when the
/// bytes are not UTF-8 (`out` then holds part of the string: the caller drops it).
pub fn write_utf8(out: &mut Vec<u8>, bytes: &[u8]) -> Option<()> {
    write_json::<true>(out, bytes)
}

/// The length of the UTF-8 character that starts `s` (whose first byte is at or above 0x80), as
/// `str::from_utf8` judges it: no overlong forms, no surrogates, nothing past U+10FFFF.
fn char_len(s: &[u8]) -> Option<usize> {
    let (len, lo, hi) = match *s.first()? {
        0xc2..=0xdf => (2, 0x80, 0xbf),
        0xe0 => (3, 0xa0, 0xbf),
        0xe1..=0xec | 0xee | 0xef => (3, 0x80, 0xbf),
        0xed => (3, 0x80, 0x9f),
        0xf0 => (4, 0x90, 0xbf),
        0xf1..=0xf3 => (4, 0x80, 0xbf),
        0xf4 => (4, 0x80, 0x8f),
        _ => return None,
    };
    let second = *s.get(1)?;
    if !(lo..=hi).contains(&second) {
        return None;
    }
    for k in 2..len {
        if *s.get(k)? & 0xc0 != 0x80 {
            return None;
        }
    }
    Some(len)
}

/// The end of the run of non-ASCII characters that starts at `at` (a byte at or above 0x80),
/// or `None` when one of them is not UTF-8.
fn skip_non_ascii(bytes: &[u8], mut at: usize) -> Option<usize> {
    while let Some(&b) = bytes.get(at) {
        if b < 0x80 {
            break;
        }
        at += char_len(&bytes[at..])?;
    }
    Some(at)
}

/// Whether any of the (at most 16) bytes of `bytes` stops the scan: two words that together
/// hold every byte (overlapping when there are fewer than 16; for fewer than 4, the first,
/// middle and last byte repeated), so no byte outside the string is tested.
fn short_stops<const NON_ASCII: bool>(bytes: &[u8]) -> bool {
    let n = bytes.len();
    let (a, b) = if n >= 8 {
        (load(&bytes[..8]), load(&bytes[n - 8..]))
    } else if n >= 4 {
        let word =
            |at: usize| <[u8; 4]>::try_from(&bytes[at..at + 4]).map_or(0, u32::from_le_bytes);
        let w = u64::from(word(0)) | (u64::from(word(n - 4)) << 32);
        (w, w)
    } else {
        let (f, m, l) = (bytes[0], bytes[n / 2], bytes[n - 1]);
        let w = u64::from_le_bytes([f, m, l, f, m, l, f, m]);
        (w, w)
    };
    stops::<NON_ASCII>(a) | stops::<NON_ASCII>(b) != 0
}

/// Write `bytes` as a JSON string; with `UTF8`, check on the way that they are UTF-8.
fn write_json<const UTF8: bool>(out: &mut Vec<u8>, bytes: &[u8]) -> Option<()> {
    // (room for what follows a big string too: `make_room`)
    crate::make_room(out, bytes.len() + 2);
    // Most strings of an answer are short keys and values with nothing to escape (and, for
    // `UTF8`, ASCII): tested in two words and copied whole, without the scan's loops.
    if (1..=16).contains(&bytes.len()) && !short_stops::<UTF8>(bytes) {
        out.push(b'"');
        out.extend_from_slice(bytes);
        out.push(b'"');
        return Some(());
    }
    out.push(b'"');
    // `bytes[start..i]` is plain and not written yet.
    let mut start = 0;
    let mut i = 0;
    loop {
        // Runs of plain text, 32 bytes at a time (one branch per four words).
        while let Some(block) = bytes.get(i..i + 32) {
            let hits = block
                .chunks_exact(8)
                .fold(0, |hits, word| hits | stops::<UTF8>(load(word)));
            if hits != 0 {
                break;
            }
            i += 32;
        }
        let Some(word) = bytes.get(i..i + 8) else {
            break;
        };
        let hits = stops::<UTF8>(load(word));
        if hits == 0 {
            i += 8;
            continue;
        }
        // The first byte to stop at: the lowest hit (little-endian, so the first in memory).
        let at = i + (hits.trailing_zeros() / 8) as usize;
        let b = bytes[at];
        if UTF8 && b >= 0x80 {
            // Written as they are: only checked.
            i = skip_non_ascii(bytes, at)?;
            continue;
        }
        out.extend_from_slice(&bytes[start..at]);
        escape(out, b);
        i = at + 1;
        start = i;
    }
    while let Some(&b) = bytes.get(i) {
        if UTF8 && b >= 0x80 {
            i = skip_non_ascii(bytes, i)?;
            continue;
        }
        if is_escaped(b) {
            out.extend_from_slice(&bytes[start..i]);
            escape(out, b);
            start = i + 1;
        }
        i += 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
    Some(())
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
        write_str(&mut out, s);
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

    /// The checked writer on `bytes`: `None` exactly when they are not UTF-8, else serde's text.
    fn checked(bytes: &[u8]) -> Result<(), TestCaseError> {
        let mut out = b"prefix".to_vec();
        let got = write_utf8(&mut out, bytes);
        match std::str::from_utf8(bytes) {
            Ok(s) => {
                prop_assert_eq!(got, Some(()));
                prop_assert_eq!(&out[..6], b"prefix");
                prop_assert_eq!(&out[6..], &serde(s)[..]);
            }
            Err(_) => prop_assert_eq!(got, None, "not UTF-8: {:?}", bytes),
        }
        Ok(())
    }

    /// Strings of 1 to 17 bytes (the short path's two words and the scan just past it) with
    /// one byte of every class at every position, among plain text: both writers give serde's
    /// text, and the checked one refuses exactly what is not UTF-8.
    #[test]
    fn short_strings_with_a_stop_at_every_position() {
        for len in 1..=17 {
            for at in 0..len {
                for b in [
                    0x00, 0x08, 0x1f, 0x20, b'"', b'\\', b'a', 0x7f, 0x80, 0xc3, 0xff,
                ] {
                    let mut bytes = vec![b'a'; len];
                    bytes[at] = b;
                    checked(&bytes).expect("the checked writer");
                    if let Ok(s) = std::str::from_utf8(&bytes) {
                        assert_eq!(ours(s), serde(s), "{s:?}");
                    }
                }
                // A two-byte character across the position (when it fits).
                if at + 1 < len {
                    let mut bytes = vec![b'a'; len];
                    bytes[at..at + 2].copy_from_slice("é".as_bytes());
                    checked(&bytes).expect("the checked writer");
                    let s = std::str::from_utf8(&bytes).expect("UTF-8");
                    assert_eq!(ours(s), serde(s), "{s:?}");
                }
            }
        }
    }

    /// Byte sequences that are not UTF-8, or are at their edges: stray continuations, leads
    /// without their continuations, overlong forms, surrogates, past U+10FFFF, and the first
    /// and last valid characters of each length.
    const EDGES: &[&[u8]] = &[
        b"\x80",
        b"\xbf",
        b"\xc0\x80",
        b"\xc1\xbf",
        b"\xc2",
        b"\xc2\x80",
        b"\xdf\xbf",
        b"\xdf\xc0",
        b"\xe0\x80\x80",
        b"\xe0\x9f\xbf",
        b"\xe0\xa0\x80",
        b"\xe0\xa0",
        b"\xed\x9f\xbf",
        b"\xed\xa0\x80",
        b"\xed\xbf\xbf",
        b"\xee\x80\x80",
        b"\xef\xbf\xbf",
        b"\xef\xbf\x7f",
        b"\xf0\x8f\xbf\xbf",
        b"\xf0\x90\x80\x80",
        b"\xf0\x90\x80",
        b"\xf4\x8f\xbf\xbf",
        b"\xf4\x90\x80\x80",
        b"\xf5\x80\x80\x80",
        b"\xff",
        b"\xfe",
        b"\xc3\xa9",
        b"\xe2\x82\xac",
        b"\xf0\x9f\x98\x80",
    ];

    #[test]
    fn the_checked_writer_at_every_position_of_a_block() {
        for edge in EDGES {
            for before in 0..41 {
                for after in [0, 1, 3, 7, 8, 9, 33] {
                    for fill in [b'a', b'"', 0x01] {
                        let mut bytes = vec![fill; before];
                        bytes.extend_from_slice(edge);
                        bytes.extend(std::iter::repeat_n(b'b', after));
                        checked(&bytes).expect("agrees with from_utf8 and serde");
                        // And followed by a multi-byte character or an escape.
                        bytes.extend_from_slice("é\n€".as_bytes());
                        checked(&bytes).expect("agrees with from_utf8 and serde");
                    }
                }
            }
        }
    }

    /// Mostly ASCII, with some of [`EDGES`] and some valid characters in it.
    fn tricky_bytes() -> impl Strategy<Value = Vec<u8>> {
        let piece = prop_oneof![
            6 => (0x20u8..0x7f).prop_map(|b| vec![b]),
            1 => (0u8..0x20).prop_map(|b| vec![b]),
            2 => prop::sample::select(EDGES).prop_map(<[u8]>::to_vec),
            2 => any::<char>().prop_map(|c| c.to_string().into_bytes()),
            1 => any::<u8>().prop_map(|b| vec![b]),
        ];
        prop::collection::vec(piece, 0..120).prop_map(|v| v.concat())
    }

    proptest! {
        #[test]
        fn the_checked_writer_is_from_utf8_then_serde(bytes in tricky_bytes()) {
            checked(&bytes)?;
        }

        #[test]
        fn the_checked_writer_on_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..80)) {
            checked(&bytes)?;
        }

        #[test]
        fn the_checked_writer_on_any_string(s in any::<String>()) {
            checked(s.as_bytes())?;
        }

        #[test]
        fn the_checked_writer_on_long_text(
            part in tricky_bytes(),
            run in 0usize..5_000,
            at in any::<prop::sample::Index>(),
        ) {
            let mut long = vec![b'p'; run];
            let at = at.index(run + 1);
            long.splice(at..at, part);
            checked(&long)?;
        }

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
