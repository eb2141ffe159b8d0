//! Reading the token of an `Authorization` header. A REST request with a bearer token runs this
//! on every call, so the usual header (ASCII, `Bearer <token>`) is read by bytes: splitting a
//! 200-byte JWT with `split_whitespace` decoded and classified it char by char (some 4,600
//! instructions per request on the gateway); the byte reader gives the same words.

/// The token of an `Authorization` header: its only word, or its second word when the first is
/// `Bearer` or `JWT` (any case); `None` for an empty header or another scheme.
pub(crate) fn authorization_token(header: &str) -> Option<&str> {
    // ASCII when its largest byte is: a `max` over the bytes vectorizes (`is_ascii` did not).
    if header.bytes().fold(0, u8::max) < 0x80 {
        ascii_token(header)
    } else {
        words_token(header)
    }
}

/// The header's text when every byte is what `HeaderValue::to_str` accepts (tab and visible
/// ASCII), as `to_str` gives it; checked without a branch per byte.
pub(crate) fn visible_ascii(value: &http::HeaderValue) -> Option<&str> {
    let bytes = value.as_bytes();
    let visible = bytes.iter().fold(true, |ok, &b| {
        ok & ((b == b'\t') | (b' '..=b'~').contains(&b))
    });
    if visible {
        std::str::from_utf8(bytes).ok()
    } else {
        None
    }
}

/// The reading of any text: the words as `split_whitespace` finds them.
fn words_token(header: &str) -> Option<&str> {
    let mut words = header.split_whitespace();
    let first = words.next()?;
    match words.next() {
        None => Some(first),
        Some(token) => scheme_allows(first).then_some(token),
    }
}

/// `char::is_whitespace` for an ASCII byte: space, and tab through carriage return.
fn space(b: u8) -> bool {
    (b == b' ') | (b.wrapping_sub(b'\t') <= b'\r' - b'\t')
}

/// The reading of an ASCII header, which gives what [`words_token`] gives.
fn ascii_token(header: &str) -> Option<&str> {
    let bytes = header.as_bytes();
    let start = bytes.iter().position(|&b| !space(b))?;
    let Some(first_len) = bytes[start..].iter().position(|&b| space(b)) else {
        return Some(&header[start..]);
    };
    let first_end = start + first_len;
    let Some(gap) = bytes[first_end..].iter().position(|&b| !space(b)) else {
        return Some(&header[start..first_end]);
    };
    if !scheme_allows(&header[start..first_end]) {
        return None;
    }
    let rest = &header[first_end + gap..];
    // The token is usually the rest of the header: no byte of it is a space or a control
    // (its smallest byte is above the space; a `min` that the compiler vectorizes says so),
    // before a byte-by-byte search for its end.
    if rest.bytes().fold(u8::MAX, u8::min) > b' ' {
        return Some(rest);
    }
    let len = rest.bytes().position(space).unwrap_or(rest.len());
    Some(&rest[..len])
}

fn scheme_allows(scheme: &str) -> bool {
    scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("jwt")
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// The reading before the byte reader, kept as the reference.
    fn reference(header: &str) -> Option<&str> {
        let header = header.trim();
        if header.is_empty() {
            return None;
        }
        let mut words = header.split_whitespace();
        let first = words.next()?;
        match words.next() {
            None => Some(first),
            Some(token) => (first.eq_ignore_ascii_case("bearer")
                || first.eq_ignore_ascii_case("jwt"))
            .then_some(token),
        }
    }

    #[test]
    fn the_usual_headers() {
        let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl";
        assert_eq!(authorization_token(&format!("Bearer {jwt}")), Some(jwt));
        assert_eq!(authorization_token(&format!("bearer\t {jwt} ")), Some(jwt));
        assert_eq!(authorization_token(&format!("JWT {jwt}")), Some(jwt));
        assert_eq!(authorization_token(&format!("  {jwt}  ")), Some(jwt));
        assert_eq!(authorization_token("Bearer a b"), Some("a"));
        assert_eq!(authorization_token("Bearer"), Some("Bearer"));
        assert_eq!(authorization_token("Basic dXNlcjpwdw=="), None);
        assert_eq!(authorization_token(" \t\r\n\x0b\x0c "), None);
        assert_eq!(authorization_token(""), None);
        // Unicode spaces split words on the other path, as split_whitespace does.
        assert_eq!(authorization_token("Bearer\u{a0}tok"), Some("tok"));
        assert_eq!(authorization_token("Bearer tok\u{2003}x"), Some("tok"));
        assert_eq!(authorization_token("Basic\u{85}tok"), None);
    }

    #[test]
    fn visible_ascii_is_to_str() {
        for bytes in [
            &b"Bearer abc.def"[..],
            b"a\tb",
            b"",
            b"caf\xc3\xa9",
            b"\xff",
            b"x\x7f",
        ] {
            if let Ok(v) = http::HeaderValue::from_bytes(bytes) {
                assert_eq!(visible_ascii(&v), v.to_str().ok(), "{bytes:?}");
            }
        }
    }

    proptest! {
        #[test]
        fn the_byte_reader_reads_as_split_whitespace(
            header in "[ \t\r\n\x0b\x0cBbEeAaRrJjWwTt.x\u{a0}\u{85}\u{2003}é-]{0,40}"
        ) {
            prop_assert_eq!(authorization_token(&header), reference(&header));
        }

        #[test]
        fn any_text_reads_as_before(header in ".{0,60}") {
            prop_assert_eq!(authorization_token(&header), reference(&header));
        }

        #[test]
        fn visible_ascii_agrees_with_to_str(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
            if let Ok(v) = http::HeaderValue::from_bytes(&bytes) {
                prop_assert_eq!(visible_ascii(&v), v.to_str().ok());
            }
        }
    }
}
