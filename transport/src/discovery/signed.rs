//! Signed discovery records: the Redis registry values and notifications, and NATS
//! announcements (in a header, [`tag`]), carry an HMAC-SHA256 keyed by the mesh secret when one is set
//! (`docs/protocol.md`, "Signed records").
//!
//! A signed value is the JSON object `{"signed": "<the record's JSON text>", "mac": [32 bytes]}`:
//! the MAC covers a label, the environment and the exact text, so nothing is re-encoded before
//! it is checked. With a secret, only values signed with it are read; without one, only unsigned
//! values are (a signed value belongs to a secured mesh this node could not join anyway).

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

#[derive(Serialize, Deserialize)]
struct Signed<'a> {
    #[serde(borrow)]
    signed: std::borrow::Cow<'a, str>,
    mac: Vec<u8>,
}

fn mac(secret: &[u8], label: &str, environment: &str, text: &[u8]) -> HmacSha256 {
    // invariant: HMAC takes keys of any length.
    let mut mac = <HmacSha256 as Mac>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(b"plume-signed-v1\0");
    mac.update(label.as_bytes());
    mac.update(b"\0");
    mac.update(environment.as_bytes());
    mac.update(b"\0");
    mac.update(text);
    mac
}

/// `text` as it goes out: as it is without a secret, wrapped and signed with one. `label` names
/// what kind of value it is (a registry record cannot pass for a notification).
pub(crate) fn seal(text: String, secret: Option<&[u8]>, label: &str, environment: &str) -> String {
    let Some(secret) = secret else {
        return text;
    };
    let tag = mac(secret, label, environment, text.as_bytes())
        .finalize()
        .into_bytes();
    serde_json::to_string(&Signed {
        signed: text.into(),
        mac: tag.to_vec(),
    })
    .unwrap_or_default()
}

/// The record text inside `value`, when it may be read: signed with `secret` when there is
/// one, unsigned when there is none. `None` means the value is to be ignored.
pub(crate) fn open(
    value: &[u8],
    secret: Option<&[u8]>,
    label: &str,
    environment: &str,
) -> Option<String> {
    let signed = serde_json::from_slice::<Signed<'_>>(value).ok();
    match (secret, signed) {
        (None, None) => Some(String::from_utf8_lossy(value).into_owned()),
        (None, Some(_)) | (Some(_), None) => None,
        (Some(secret), Some(s)) => mac(secret, label, environment, s.signed.as_bytes())
            .verify_slice(&s.mac)
            .ok()
            .map(|()| s.signed.into_owned()),
    }
}

/// The MAC of `data` as hex, for a message header (NATS announcements).
pub(crate) fn tag(secret: &[u8], label: &str, environment: &str, data: &[u8]) -> String {
    mac(secret, label, environment, data)
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Whether `hex` is the MAC of `data` (checked in constant time).
pub(crate) fn check(secret: &[u8], label: &str, environment: &str, data: &[u8], hex: &str) -> bool {
    if hex.len() != 64 || !hex.is_ascii() {
        return false;
    }
    let bytes: Option<Vec<u8>> = (0..32)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok())
        .collect();
    bytes.is_some_and(|b| {
        mac(secret, label, environment, data)
            .verify_slice(&b)
            .is_ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const REC: &str = r#"{"node":"01","addr":"127.0.0.1:1"}"#;

    #[test]
    fn signed_values_open_only_with_the_same_secret_label_and_environment() {
        let s = seal(REC.into(), Some(b"k"), "record", "env");
        assert_ne!(s, REC);
        assert_eq!(
            open(s.as_bytes(), Some(b"k"), "record", "env").as_deref(),
            Some(REC)
        );
        assert_eq!(open(s.as_bytes(), Some(b"other"), "record", "env"), None);
        assert_eq!(open(s.as_bytes(), Some(b"k"), "notice", "env"), None);
        assert_eq!(open(s.as_bytes(), Some(b"k"), "record", "prod"), None);
        assert_eq!(
            open(s.as_bytes(), None, "record", "env"),
            None,
            "signed without a secret"
        );
        let forged = s.replace("127.0.0.1:1", "10.0.0.66:1");
        assert_eq!(open(forged.as_bytes(), Some(b"k"), "record", "env"), None);
    }

    #[test]
    fn header_tags_check_only_with_the_same_secret_label_environment_and_data() {
        let t = tag(b"k", "hello", "env", b"data");
        assert_eq!(t.len(), 64);
        assert!(check(b"k", "hello", "env", b"data", &t));
        assert!(!check(b"k2", "hello", "env", b"data", &t));
        assert!(!check(b"k", "delta", "env", b"data", &t));
        assert!(!check(b"k", "hello", "env2", b"data", &t));
        assert!(!check(b"k", "hello", "env", b"date", &t));
        assert!(!check(b"k", "hello", "env", b"data", &t[..62]));
        assert!(!check(b"k", "hello", "env", b"data", "zz"));
        assert!(!check(b"k", "hello", "env", b"data", &"é".repeat(32)));
    }

    #[test]
    fn unsigned_values_are_read_only_without_a_secret() {
        assert_eq!(seal(REC.into(), None, "record", "env"), REC);
        assert_eq!(
            open(REC.as_bytes(), None, "record", "env").as_deref(),
            Some(REC)
        );
        assert_eq!(open(REC.as_bytes(), Some(b"k"), "record", "env"), None);
    }
}
