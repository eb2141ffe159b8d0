//! NATS subjects: every Plume subject starts with `plume.{env}`, the environment as one escaped
//! token, so environments never see each other.

/// Escape `s` into one NATS subject token: `[A-Za-z0-9_-]` stay, every other byte is `~XX`.
pub(crate) fn token(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    push_token(&mut out, s);
    out
}

/// Append [`token`]`(s)` to `out`.
pub(super) fn push_token(out: &mut String, s: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let safe = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'-';
    if s.is_empty() {
        out.push('~');
        return;
    }
    // Runs of safe bytes copied whole (an endpoint's subject is built per call): a run starts
    // after an escaped byte and holds only ASCII, so its ends are char boundaries.
    let mut run = 0;
    for (i, b) in s.bytes().enumerate() {
        if !safe(b) {
            out.push_str(s.get(run..i).unwrap_or_default());
            out.push('~');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 15)]));
            run = i + 1;
        }
    }
    out.push_str(s.get(run..).unwrap_or_default());
}

/// The NATS service name of a key: `[A-Za-z0-9_-]`, others become `_` (`plume` when empty).
pub(super) fn service_name(key: &str) -> String {
    if key.is_empty() {
        return "plume".to_owned();
    }
    key.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_single_safe_subject_tokens() {
        for s in ["", "todos", "api/v1.todos", "a b*c>d~", "ünï"] {
            let t = token(s);
            assert!(!t.is_empty());
            assert!(
                t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'~'),
                "{t}"
            );
        }
        assert_eq!(token("todos"), "todos");
        assert_eq!(token("api/todos"), "api~2Ftodos");
        assert_eq!(token("svc:todos"), "svc~3Atodos");
        assert_eq!(token("ü:x"), "~C3~BC~3Ax");
        assert_eq!(token(":"), "~3A");
        assert_ne!(token("a.b"), token("a~2Eb"));
    }

    #[test]
    fn service_names_are_nats_safe() {
        assert_eq!(service_name(""), "plume");
        assert_eq!(service_name("my app.v2"), "my_app_v2");
    }
}
