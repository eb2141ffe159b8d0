//! `TraceContext::parse` reads a `traceparent` by its fixed layout (dashes at 2, 35 and 52, hex
//! digits by a table). It accepts and refuses exactly what the reader it replaced did (kept here
//! as `split_parse`: split at the dashes, check each field, parse with `from_str_radix`), for
//! real values of every version and for garbled ones.

use plume::trace::TraceContext;
use proptest::prelude::*;

/// The reader `parse` replaced: (trace id, span id, flags), or `None`.
fn split_parse(value: &str) -> Option<(u128, u64, u8)> {
    let mut parts = value.trim().split('-');
    let version = parts.next()?;
    let (trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit());
    if !hex(version, 2) || version == "ff" || !hex(trace, 32) || !hex(span, 16) || !hex(flags, 2) {
        return None;
    }
    if version == "00" && parts.next().is_some() {
        return None;
    }
    let ids = (
        u128::from_str_radix(trace, 16).ok()?,
        u64::from_str_radix(span, 16).ok()?,
        u8::from_str_radix(flags, 16).ok()?,
    );
    (ids.0 != 0 && ids.1 != 0).then_some(ids)
}

/// What `parse` read, in the same terms.
fn fixed_parse(value: &str) -> Option<(u128, u64, u8)> {
    let ctx = TraceContext::parse(value)?;
    let flags = u8::from_str_radix(&ctx.traceparent()[53..], 16).ok()?;
    Some((
        u128::from_be_bytes(ctx.trace_id_bytes()),
        u64::from_be_bytes(ctx.span_id_bytes()),
        flags,
    ))
}

/// A `traceparent` as senders write it: any version, ids (zero now and then), flags, lower or
/// upper case, a later version's extra field, surrounding whitespace.
fn traceparent() -> impl Strategy<Value = String> {
    (
        prop_oneof![Just(0u8), Just(1u8), Just(0xffu8), any::<u8>()],
        prop_oneof![Just(0u128), 1u128.., Just(u128::MAX)],
        prop_oneof![Just(0u64), 1u64.., Just(u64::MAX)],
        any::<u8>(),
        any::<bool>(),
        proptest::option::of("[-0-9a-z]{0,12}"),
        prop_oneof![Just(""), Just(" "), Just("\t"), Just("\u{a0}")],
    )
        .prop_map(|(v, trace, span, flags, upper, extra, pad)| {
            let mut text = format!("{v:02x}-{trace:032x}-{span:016x}-{flags:02x}");
            if upper {
                text = text.to_uppercase();
            }
            if let Some(extra) = extra {
                text = format!("{text}-{extra}");
            }
            format!("{pad}{text}{pad}")
        })
}

/// `text`'s bytes with the byte at `at` changed to `byte` (`how` 0), dropped (1) or `byte`
/// inserted there (2, or 0 and 1 at the end).
fn garble(text: String, at: prop::sample::Index, byte: u8, how: u8) -> Vec<u8> {
    let mut bytes = text.into_bytes();
    let i = at.index(bytes.len() + 1);
    match how {
        0 if i < bytes.len() => bytes[i] = byte,
        1 if i < bytes.len() => {
            bytes.remove(i);
        }
        _ => bytes.insert(i, byte),
    }
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    #[test]
    fn agrees_with_the_split_reader_on_real_values(text in traceparent()) {
        prop_assert_eq!(fixed_parse(&text), split_parse(&text), "{:?}", text);
    }

    /// One byte changed, dropped or added anywhere in a real value: the same answer as the
    /// split reader (so refused whenever the layout or a digit breaks).
    #[test]
    fn agrees_on_garbled_values(
        text in traceparent(),
        at in any::<prop::sample::Index>(),
        byte in prop_oneof![Just(b'-'), Just(b'g'), Just(b' '), Just(b'0'), Just(b'F'), any::<u8>()],
        how in 0..3u8,
    ) {
        let bytes = garble(text, at, byte, how);
        let garbled = String::from_utf8_lossy(&bytes).into_owned();
        prop_assert_eq!(fixed_parse(&garbled), split_parse(&garbled), "{:?}", garbled);
    }

    #[test]
    fn agrees_on_any_text_of_the_alphabet(text in "[-0-9a-fA-FxX ]{0,70}") {
        prop_assert_eq!(fixed_parse(&text), split_parse(&text), "{:?}", text);
    }

    /// `parse_bytes` (a value read from a request's bytes, not checked as UTF-8 first) is
    /// `from_utf8` then `parse`: on real values garbled by any byte (non-UTF-8 ones included),
    /// of every version, with white space or not.
    #[test]
    fn bytes_parse_as_their_text(
        text in traceparent(),
        at in any::<prop::sample::Index>(),
        byte in prop_oneof![Just(0xa0u8), Just(0xc2), Just(0xff), Just(b' '), any::<u8>()],
        how in 0..4u8,
    ) {
        // `how` 3: the value as it is.
        let bytes = if how < 3 { garble(text, at, byte, how) } else { text.into_bytes() };
        let text = std::str::from_utf8(&bytes).ok().and_then(TraceContext::parse);
        prop_assert_eq!(TraceContext::parse_bytes(&bytes), text, "{:?}", bytes);
    }
}

#[test]
fn refuses_broken_values() {
    let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    assert!(TraceContext::parse(good).is_some());
    for bad in [
        "",
        "00",
        &good[..54],
        &format!("{good}-x"), // version 00: four fields
        &format!("{good}0"),  // flags of three digits
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", // version ff
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01", // trace id 0
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", // span id 0
        "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01", // not hex
        "00-4bf92f3577b34da6a3ce929d0e0e4736+00f067aa0ba902b7-01", // no dash
        "00-4bf92f3577b34da6a3ce929d0e0e47-3600f067aa0ba902b7-01", // dash misplaced
        "0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0é",
    ] {
        assert_eq!(TraceContext::parse(bad), None, "{bad:?}");
        assert_eq!(split_parse(bad), None, "{bad:?}");
    }
    // A later version may add fields after the flags.
    assert!(TraceContext::parse(&format!("01{}-what-ever", &good[2..])).is_some());
}
