//! The beacon wire format (see `docs/protocol.md`, "Beacons").
//!
//! Every datagram is one message:
//!
//! ```text
//! offset size  field
//! 0      4     magic "PLMB"
//! 4      1     format version (1)
//! 5      1     kind: 1 = beacon, 2 = peer list
//! 6      1     flags: bit 0 = leaving, bit 1 = signed; other bits must be 0
//! 7      16    node id (u128, big endian)
//! 23     8     sequence number (u64, big endian; grows by one per message sent)
//! 31     1+n   environment (u8 length, UTF-8)
//! beacon:
//!        2     mesh protocol version (u16)
//!        8     service-table version (u64)
//!        1+n   key (u8 length, UTF-8)
//!        1+..  dial address (family 4 or 6, address bytes, u16 port)
//! peer list:
//!        1     count (at most MAX_LIST)
//!        ..    count addresses, as above
//! signed:
//!        32    HMAC-SHA256 over every byte before it
//! ```
//!
//! All integers are big endian. Decoding is strict: anything that does not
//! match exactly (unknown version, kind or flag, bad length, trailing bytes,
//! invalid UTF-8) is an error, and never a panic.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::NodeId;

/// The four bytes every Plume discovery datagram starts with.
pub(crate) const MAGIC: [u8; 4] = *b"PLMB";
/// The beacon format version this code writes and reads.
pub(crate) const FORMAT_VERSION: u8 = 1;
/// Length of the HMAC-SHA256 tag.
pub(crate) const TAG_LEN: usize = 32;
/// Most addresses in one peer list.
pub(crate) const MAX_LIST: usize = 64;
/// Largest possible datagram (header, two 255-byte strings, an IPv6
/// address and a tag, or a full peer list), used to size receive buffers.
pub(crate) const MAX_DATAGRAM: usize = 2048;

const KIND_BEACON: u8 = 1;
const KIND_PEERS: u8 = 2;
const FLAG_LEAVING: u8 = 0b01;
const FLAG_SIGNED: u8 = 0b10;

type HmacSha256 = Hmac<Sha256>;

/// A decoded discovery message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Message {
    /// The sender.
    pub(crate) node: NodeId,
    /// The sender's sequence number.
    pub(crate) seq: u64,
    /// The sender's environment.
    pub(crate) environment: String,
    /// What the message says.
    pub(crate) body: Body,
}

/// The kind-specific part of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Body {
    /// "I am here" (or, with `leaving`, "I am going").
    Beacon(Beacon),
    /// The discovery addresses of the sender's live peers (`seeds` mode).
    Peers(Vec<SocketAddr>),
}

/// The body of a beacon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Beacon {
    /// The sender's mesh protocol version.
    pub(crate) protocol: u16,
    /// The sender's service-table version.
    pub(crate) table_version: u64,
    /// The sender's key (replica group).
    pub(crate) key: String,
    /// The TCP address to dial the sender's mesh link on.
    pub(crate) addr: SocketAddr,
    /// The sender is shutting down.
    pub(crate) leaving: bool,
}

/// Why a datagram was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum DecodeError {
    /// Ran out of bytes.
    #[error("truncated datagram")]
    Truncated,
    /// Not a Plume datagram.
    #[error("bad magic")]
    BadMagic,
    /// A format version this code does not read.
    #[error("unsupported beacon format version {0}")]
    Version(u8),
    /// An unknown message kind.
    #[error("unknown message kind {0}")]
    Kind(u8),
    /// Flags this version does not define, or `leaving` on a peer list.
    #[error("invalid flags {0:#04x}")]
    Flags(u8),
    /// A string that is not UTF-8.
    #[error("invalid UTF-8")]
    Utf8,
    /// An address family other than 4 or 6.
    #[error("unknown address family {0}")]
    Family(u8),
    /// A peer list longer than allowed.
    #[error("peer list too long")]
    ListTooLong,
    /// Bytes after the end of the message.
    #[error("trailing bytes")]
    Trailing,
    /// We have a secret and the datagram is unsigned.
    #[error("unsigned datagram")]
    Unsigned,
    /// The datagram is signed and we have no secret to check it with.
    #[error("signed datagram and no secret configured")]
    UnexpectedSignature,
    /// The tag does not match.
    #[error("bad signature")]
    BadSignature,
}

/// Why a message could not be encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum EncodeError {
    /// The environment or key is longer than 255 bytes.
    #[error("string longer than 255 bytes")]
    StringTooLong,
    /// The peer list has more than `MAX_LIST` entries.
    #[error("peer list too long")]
    ListTooLong,
}

/// Encodes `msg`, signing it when `secret` is set.
pub(crate) fn encode(msg: &Message, secret: Option<&[u8]>) -> Result<Vec<u8>, EncodeError> {
    let mut out = Vec::with_capacity(128);
    out.extend_from_slice(&MAGIC);
    out.push(FORMAT_VERSION);
    let (kind, mut flags) = match &msg.body {
        Body::Beacon(b) => (KIND_BEACON, if b.leaving { FLAG_LEAVING } else { 0 }),
        Body::Peers(_) => (KIND_PEERS, 0),
    };
    if secret.is_some() {
        flags |= FLAG_SIGNED;
    }
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&msg.node.0.to_be_bytes());
    out.extend_from_slice(&msg.seq.to_be_bytes());
    put_str(&mut out, &msg.environment)?;
    match &msg.body {
        Body::Beacon(b) => {
            out.extend_from_slice(&b.protocol.to_be_bytes());
            out.extend_from_slice(&b.table_version.to_be_bytes());
            put_str(&mut out, &b.key)?;
            put_addr(&mut out, b.addr);
        }
        Body::Peers(list) => {
            if list.len() > MAX_LIST {
                return Err(EncodeError::ListTooLong);
            }
            // invariant: list.len() <= MAX_LIST (64) fits in a u8.
            out.push(list.len() as u8);
            for a in list {
                put_addr(&mut out, *a);
            }
        }
    }
    if let Some(secret) = secret {
        let tag = sign(secret, &out);
        out.extend_from_slice(&tag);
    }
    Ok(out)
}

/// Decodes and authenticates one datagram.
///
/// With a `secret`, only datagrams signed with it are accepted; without
/// one, signed datagrams are refused (they belong to a secured mesh).
pub(crate) fn decode(buf: &[u8], secret: Option<&[u8]>) -> Result<Message, DecodeError> {
    let mut r = Reader { buf, pos: 0 };
    if r.take(4)? != MAGIC {
        return Err(DecodeError::BadMagic);
    }
    let version = r.u8()?;
    if version != FORMAT_VERSION {
        return Err(DecodeError::Version(version));
    }
    let kind = r.u8()?;
    if kind != KIND_BEACON && kind != KIND_PEERS {
        return Err(DecodeError::Kind(kind));
    }
    let flags = r.u8()?;
    let allowed = if kind == KIND_BEACON {
        FLAG_LEAVING | FLAG_SIGNED
    } else {
        FLAG_SIGNED
    };
    if flags & !allowed != 0 {
        return Err(DecodeError::Flags(flags));
    }
    let signed = flags & FLAG_SIGNED != 0;
    // Check the signature before looking at anything else.
    let body_end = if signed {
        let Some(end) = buf.len().checked_sub(TAG_LEN) else {
            return Err(DecodeError::Truncated);
        };
        if end < r.pos {
            return Err(DecodeError::Truncated);
        }
        match secret {
            None => return Err(DecodeError::UnexpectedSignature),
            Some(secret) => verify(secret, &buf[..end], &buf[end..])?,
        }
        end
    } else {
        if secret.is_some() {
            return Err(DecodeError::Unsigned);
        }
        buf.len()
    };
    r.buf = &buf[..body_end];

    let node = NodeId(u128::from_be_bytes(r.array()?));
    let seq = u64::from_be_bytes(r.array()?);
    let environment = r.string()?;
    let body = if kind == KIND_BEACON {
        let protocol = u16::from_be_bytes(r.array()?);
        let table_version = u64::from_be_bytes(r.array()?);
        let key = r.string()?;
        let addr = r.addr()?;
        Body::Beacon(Beacon {
            protocol,
            table_version,
            key,
            addr,
            leaving: flags & FLAG_LEAVING != 0,
        })
    } else {
        let n = usize::from(r.u8()?);
        if n > MAX_LIST {
            return Err(DecodeError::ListTooLong);
        }
        let mut list = Vec::with_capacity(n);
        for _ in 0..n {
            list.push(r.addr()?);
        }
        Body::Peers(list)
    };
    if r.pos != r.buf.len() {
        return Err(DecodeError::Trailing);
    }
    Ok(Message {
        node,
        seq,
        environment,
        body,
    })
}

fn sign(secret: &[u8], data: &[u8]) -> [u8; TAG_LEN] {
    // invariant: HMAC takes keys of every length, so the else arm is unreachable.
    let Ok(mut mac) = HmacSha256::new_from_slice(secret) else {
        return [0; TAG_LEN];
    };
    mac.update(data);
    mac.finalize().into_bytes().into()
}

fn verify(secret: &[u8], data: &[u8], tag: &[u8]) -> Result<(), DecodeError> {
    let mut mac = HmacSha256::new_from_slice(secret).map_err(|_| DecodeError::BadSignature)?;
    mac.update(data);
    // Constant-time comparison.
    mac.verify_slice(tag).map_err(|_| DecodeError::BadSignature)
}

fn put_str(out: &mut Vec<u8>, s: &str) -> Result<(), EncodeError> {
    let len = u8::try_from(s.len()).map_err(|_| EncodeError::StringTooLong)?;
    out.push(len);
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

fn put_addr(out: &mut Vec<u8>, addr: SocketAddr) {
    match addr.ip() {
        IpAddr::V4(ip) => {
            out.push(4);
            out.extend_from_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            out.push(6);
            out.extend_from_slice(&ip.octets());
        }
    }
    out.extend_from_slice(&addr.port().to_be_bytes());
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.pos.checked_add(n).ok_or(DecodeError::Truncated)?;
        let s = self.buf.get(self.pos..end).ok_or(DecodeError::Truncated)?;
        self.pos = end;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let s = self.take(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    fn string(&mut self) -> Result<String, DecodeError> {
        let n = usize::from(self.u8()?);
        let s = self.take(n)?;
        String::from_utf8(s.to_vec()).map_err(|_| DecodeError::Utf8)
    }

    fn addr(&mut self) -> Result<SocketAddr, DecodeError> {
        let ip = match self.u8()? {
            4 => IpAddr::V4(Ipv4Addr::from(self.array::<4>()?)),
            6 => IpAddr::V6(Ipv6Addr::from(self.array::<16>()?)),
            f => return Err(DecodeError::Family(f)),
        };
        let port = u16::from_be_bytes(self.array()?);
        Ok(SocketAddr::new(ip, port))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_addr() -> impl Strategy<Value = SocketAddr> {
        prop_oneof![
            (any::<[u8; 4]>(), any::<u16>())
                .prop_map(|(ip, p)| SocketAddr::new(IpAddr::V4(Ipv4Addr::from(ip)), p)),
            (any::<[u8; 16]>(), any::<u16>())
                .prop_map(|(ip, p)| SocketAddr::new(IpAddr::V6(Ipv6Addr::from(ip)), p)),
        ]
    }

    fn arb_str() -> impl Strategy<Value = String> {
        // Up to 255 bytes once encoded (a char is at most 4 bytes).
        proptest::string::string_regex(".{0,63}").expect("valid regex")
    }

    fn arb_message() -> impl Strategy<Value = Message> {
        let beacon = (
            any::<u16>(),
            any::<u64>(),
            arb_str(),
            arb_addr(),
            any::<bool>(),
        )
            .prop_map(|(protocol, table_version, key, addr, leaving)| {
                Body::Beacon(Beacon {
                    protocol,
                    table_version,
                    key,
                    addr,
                    leaving,
                })
            });
        let peers = proptest::collection::vec(arb_addr(), 0..=MAX_LIST).prop_map(Body::Peers);
        (
            any::<u128>(),
            any::<u64>(),
            arb_str(),
            prop_oneof![beacon, peers],
        )
            .prop_map(|(node, seq, environment, body)| Message {
                node: NodeId(node),
                seq,
                environment,
                body,
            })
    }

    fn sample() -> Message {
        Message {
            node: NodeId(0x0123_4567_89ab_cdef_0011_2233_4455_6677),
            seq: 9,
            environment: "prod".into(),
            body: Body::Beacon(Beacon {
                protocol: 1,
                table_version: 42,
                key: "todos".into(),
                addr: "127.0.0.1:4000".parse().expect("addr"),
                leaving: false,
            }),
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..700)) {
            let _ = decode(&bytes, None);
            let _ = decode(&bytes, Some(b"secret"));
        }

        #[test]
        fn arbitrary_bytes_after_valid_header_never_panic(
            kind in 0u8..4, flags in any::<u8>(),
            rest in proptest::collection::vec(any::<u8>(), 0..600),
        ) {
            let mut buf = MAGIC.to_vec();
            buf.extend_from_slice(&[FORMAT_VERSION, kind, flags]);
            buf.extend_from_slice(&rest);
            let _ = decode(&buf, None);
            let _ = decode(&buf, Some(b"k"));
        }

        #[test]
        fn round_trip_unsigned(msg in arb_message()) {
            let bytes = encode(&msg, None).expect("encodable");
            prop_assert!(bytes.len() <= MAX_DATAGRAM);
            prop_assert_eq!(decode(&bytes, None), Ok(msg));
        }

        #[test]
        fn round_trip_signed(msg in arb_message(), secret in proptest::collection::vec(any::<u8>(), 1..80)) {
            let bytes = encode(&msg, Some(&secret)).expect("encodable");
            prop_assert!(bytes.len() <= MAX_DATAGRAM);
            prop_assert_eq!(decode(&bytes, Some(&secret)), Ok(msg.clone()));
            // Unsigned receivers refuse it, and so do receivers with another secret.
            prop_assert_eq!(decode(&bytes, None), Err(DecodeError::UnexpectedSignature));
            let mut other = secret.clone();
            other[0] ^= 1;
            prop_assert_eq!(decode(&bytes, Some(&other)), Err(DecodeError::BadSignature));
            // An unsigned copy is refused by a receiver with a secret.
            let plain = encode(&msg, None).expect("encodable");
            prop_assert_eq!(decode(&plain, Some(&secret)), Err(DecodeError::Unsigned));
        }

        #[test]
        fn any_flipped_bit_breaks_the_signature(msg in arb_message(), pos in any::<prop::sample::Index>(), bit in 0u8..8) {
            let mut bytes = encode(&msg, Some(b"mesh-secret")).expect("encodable");
            let i = pos.index(bytes.len());
            bytes[i] ^= 1 << bit;
            prop_assert!(decode(&bytes, Some(b"mesh-secret")).is_err());
        }

        #[test]
        fn truncation_is_an_error(msg in arb_message(), cut in any::<prop::sample::Index>()) {
            let bytes = encode(&msg, None).expect("encodable");
            let n = cut.index(bytes.len());
            prop_assert!(decode(&bytes[..n], None).is_err());
        }
    }

    #[test]
    fn layout_is_as_documented() {
        let bytes = encode(&sample(), None).expect("encodable");
        assert_eq!(&bytes[..4], b"PLMB");
        assert_eq!(bytes[4], 1, "format version");
        assert_eq!(bytes[5], 1, "kind beacon");
        assert_eq!(bytes[6], 0, "flags");
        assert_eq!(
            &bytes[7..23],
            &0x0123_4567_89ab_cdef_0011_2233_4455_6677u128.to_be_bytes()
        );
        assert_eq!(&bytes[23..31], &9u64.to_be_bytes());
        assert_eq!(&bytes[31..36], b"\x04prod");
        assert_eq!(&bytes[36..38], &1u16.to_be_bytes());
        assert_eq!(&bytes[38..46], &42u64.to_be_bytes());
        assert_eq!(&bytes[46..52], b"\x05todos");
        assert_eq!(&bytes[52..], &[4, 127, 0, 0, 1, 0x0f, 0xa0]);
        // 59 bytes unsigned, 91 signed: small.
        assert_eq!(bytes.len(), 59);
        assert_eq!(
            encode(&sample(), Some(b"s")).expect("encodable").len(),
            59 + TAG_LEN
        );
    }

    #[test]
    fn strict_decoding() {
        let good = encode(&sample(), None).expect("encodable");
        let mut v2 = good.clone();
        v2[4] = 2;
        assert_eq!(decode(&v2, None), Err(DecodeError::Version(2)));
        let mut bad_flags = good.clone();
        bad_flags[6] = 0x80;
        assert_eq!(decode(&bad_flags, None), Err(DecodeError::Flags(0x80)));
        let mut trailing = good.clone();
        trailing.push(0);
        assert_eq!(decode(&trailing, None), Err(DecodeError::Trailing));
        let mut magic = good;
        magic[0] = b'X';
        assert_eq!(decode(&magic, None), Err(DecodeError::BadMagic));
    }

    #[test]
    fn long_strings_are_refused() {
        let mut m = sample();
        m.environment = "e".repeat(256);
        assert_eq!(encode(&m, None), Err(EncodeError::StringTooLong));
    }
}
