//! Encrypted links: the Noise protocol (`Noise_NNpsk0_25519_ChaChaPoly_BLAKE2s`, with `snow`)
//! keyed by the mesh secret (`docs/protocol.md`, "Encrypted links").
//!
//! Every message on such a link is a *record*: `u16 length (big-endian) | ciphertext`, the
//! ciphertext at most 65,535 bytes with its 16-byte tag. The two handshake messages carry the
//! dialer's and then the acceptor's `hello` frame as their payloads; after them, each record
//! carries a run of ordinary frames (a whole outbox batch, cut at [`MAX_PLAIN`]), so one AEAD
//! seals many small frames. Each direction numbers its records from 0 (the Noise nonce): a record
//! that was modified, replayed, reordered, dropped or injected does not open, and the link closes.

use std::sync::Arc;

use bytes::{Buf, BufMut, BytesMut};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use snow::{HandshakeState, StatelessTransportState};

/// The Noise protocol name.
const PATTERN: &str = "Noise_NNpsk0_25519_ChaChaPoly_BLAKE2s";
/// Mixed into the handshake hash: both sides must agree on it.
const PROLOGUE: &[u8] = b"plume-mesh-noise-v2";
/// The largest Noise message.
pub(super) const MAX_RECORD: usize = 65_535;
/// AEAD tag bytes per record.
const TAG: usize = 16;
/// The most plaintext one record carries.
pub(super) const MAX_PLAIN: usize = MAX_RECORD - TAG;

/// Why a record did not seal or open.
#[derive(Debug, thiserror::Error)]
#[error("noise: {0}")]
pub(crate) struct CryptoError(#[source] snow::Error);

/// The 32-byte pre-shared key of the links of one environment: HMAC-SHA256 keyed by the mesh
/// secret, over a label and the environment (a secret shared by two environments still keeps
/// their links apart).
fn psk(secret: &[u8], environment: &str) -> [u8; 32] {
    // invariant: HMAC accepts keys of any length.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(b"plume-mesh-psk-v1\0");
    mac.update(environment.as_bytes());
    mac.finalize().into_bytes().into()
}

/// A fresh handshake state: the dialer initiates.
pub(super) fn handshake_state(
    secret: &[u8],
    environment: &str,
    initiator: bool,
) -> Result<HandshakeState, CryptoError> {
    let params = PATTERN
        .parse()
        .unwrap_or_else(|_| unreachable!("PATTERN is a valid Noise name"));
    let key = psk(secret, environment);
    let builder = snow::Builder::new(params)
        .prologue(PROLOGUE)
        .map_err(CryptoError)?
        .psk(0, &key)
        .map_err(CryptoError)?;
    if initiator {
        builder.build_initiator()
    } else {
        builder.build_responder()
    }
    .map_err(CryptoError)
}

/// Append `msg` as one record to `dst`.
pub(super) fn put_record(dst: &mut BytesMut, msg: &[u8]) {
    // invariant: Noise messages are at most MAX_RECORD (u16::MAX) bytes.
    dst.put_u16(u16::try_from(msg.len()).unwrap_or(u16::MAX));
    dst.put_slice(msg);
}

/// Take one whole record from the front of `src`, if there is one.
pub(super) fn take_record(src: &mut BytesMut) -> Option<BytesMut> {
    if src.len() < 2 {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([src[0], src[1]]));
    if src.len() < 2 + len {
        src.reserve(2 + len - src.len());
        return None;
    }
    src.advance(2);
    Some(src.split_to(len))
}

/// The sending half of an encrypted link.
#[derive(Debug)]
pub(crate) struct Sealer {
    state: Arc<StatelessTransportState>,
    nonce: u64,
}

impl Sealer {
    /// Seal all of `plain` into records appended to `dst`, leaving `plain` empty.
    pub(crate) fn seal(
        &mut self,
        plain: &mut BytesMut,
        dst: &mut BytesMut,
    ) -> Result<(), CryptoError> {
        while !plain.is_empty() {
            let n = plain.len().min(MAX_PLAIN);
            let at = dst.len();
            dst.resize(at + 2 + n + TAG, 0);
            let len = self
                .state
                .write_message(self.nonce, &plain[..n], &mut dst[at + 2..])
                .map_err(CryptoError)?;
            self.nonce += 1;
            // invariant: len is n + TAG <= MAX_RECORD.
            let prefix = u16::try_from(len).unwrap_or(u16::MAX).to_be_bytes();
            dst[at..at + 2].copy_from_slice(&prefix);
            dst.truncate(at + 2 + len);
            plain.advance(n);
        }
        Ok(())
    }
}

/// The receiving half of an encrypted link.
#[derive(Debug)]
pub(crate) struct Opener {
    state: Arc<StatelessTransportState>,
    nonce: u64,
    scratch: Vec<u8>,
}

impl Opener {
    /// Open every whole record at the front of `raw`, appending the plaintext to `plain`.
    pub(crate) fn open(
        &mut self,
        raw: &mut BytesMut,
        plain: &mut BytesMut,
    ) -> Result<(), CryptoError> {
        while let Some(record) = take_record(raw) {
            self.scratch.resize(record.len(), 0);
            let n = self
                .state
                .read_message(self.nonce, &record, &mut self.scratch)
                .map_err(CryptoError)?;
            self.nonce += 1;
            plain.extend_from_slice(&self.scratch[..n]);
        }
        Ok(())
    }
}

/// Both halves of a link whose handshake finished.
pub(super) fn split(state: HandshakeState) -> Result<(Sealer, Opener), CryptoError> {
    let state = Arc::new(state.into_stateless_transport_mode().map_err(CryptoError)?);
    Ok((
        Sealer {
            state: state.clone(),
            nonce: 0,
        },
        Opener {
            state,
            nonce: 0,
            scratch: Vec::new(),
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(a: &[u8], b: &[u8]) -> Result<((Sealer, Opener), (Sealer, Opener)), CryptoError> {
        let mut i = handshake_state(a, "env", true)?;
        let mut r = handshake_state(b, "env", false)?;
        let mut m1 = vec![0; MAX_RECORD];
        let mut p = vec![0; MAX_RECORD];
        let n = i.write_message(b"hi", &mut m1).map_err(CryptoError)?;
        r.read_message(&m1[..n], &mut p).map_err(CryptoError)?;
        let n = r.write_message(b"yo", &mut m1).map_err(CryptoError)?;
        i.read_message(&m1[..n], &mut p).map_err(CryptoError)?;
        Ok((split(i)?, split(r)?))
    }

    #[test]
    fn records_round_trip_and_large_batches_are_cut() {
        let ((mut seal, _), (_, mut open)) = pair(b"s", b"s").expect("handshake");
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let mut plain = BytesMut::from(&data[..]);
        let mut wire = BytesMut::new();
        seal.seal(&mut plain, &mut wire).expect("seal");
        assert!(plain.is_empty());
        assert_eq!(wire.len(), data.len() + 4 * (2 + TAG), "four records");
        let mut out = BytesMut::new();
        // Delivered a byte at a time: records open only when whole.
        let mut raw = BytesMut::new();
        for b in wire.iter() {
            raw.put_u8(*b);
            open.open(&mut raw, &mut out).expect("open");
        }
        assert_eq!(&out[..], &data[..]);
    }

    #[test]
    fn a_flipped_replayed_or_foreign_record_does_not_open() {
        let ((mut seal, _), (_, mut open)) = pair(b"s", b"s").expect("handshake");
        let mut wire = BytesMut::new();
        seal.seal(&mut BytesMut::from(&b"one"[..]), &mut wire)
            .expect("seal");
        let first = wire.clone();
        let mut out = BytesMut::new();
        open.open(&mut wire, &mut out).expect("first opens");
        // Replayed.
        assert!(open.open(&mut first.clone(), &mut out).is_err());
        // Flipped.
        let ((mut seal, _), (_, mut open)) = pair(b"s", b"s").expect("handshake");
        let mut wire = BytesMut::new();
        seal.seal(&mut BytesMut::from(&b"two"[..]), &mut wire)
            .expect("seal");
        wire[4] ^= 1;
        assert!(open.open(&mut wire, &mut out).is_err());
        assert_eq!(&out[..], b"one");
    }

    #[test]
    fn another_secret_fails_the_handshake() {
        assert!(pair(b"one", b"two").is_err());
    }
}
