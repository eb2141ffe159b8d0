//! Calls in batches over NATS: several calls to one endpoint in one message, and their answers
//! in one message (docs/protocol.md, "NATS backend", "Batches").
//!
//! Under load, the requests a gateway makes while others wait already leave together (one
//! `writev`, see [`super::inbox`]), but each is still a NATS message: nats-server parses,
//! routes and delivers each, the replica's client parses each, and each answer makes the trip
//! back the same way. A batch carries them as one message each way.
//!
//! - A batch of calls is published to `plume.{env}.svcb.{endpoint}`, the batch subject of the
//!   endpoint (a queue group, as `svc`), with the reply subject of its first call. Nodes of an
//!   earlier version do not subscribe to it: a batch reaches only a node that reads batches,
//!   and when none does, nats-server answers "no responders" and the caller sends each call
//!   again on its own (nothing ran).
//! - The answers ready at once (the handler's first poll) go back together in one message to
//!   the batch's reply subject. An answer that takes longer, or that is large, goes on its own
//!   as a plain answer to the call's own reply subject: the reply prefix of the batch and the
//!   call's tag, in decimal.
//!
//! Both forms start with `0xc1`, a byte MessagePack never uses, so a batch is never read as a
//! call or an answer, and then the format's version, `1`. All integers are little-endian.
//!
//! ```text
//! calls:   c1 01 | prefix length (u8) | prefix | count (u16) | count × (tag u64 | length u32 | call)
//! answers: c1 01 | count (u16) | count × (tag u64 | length u32 | answer)
//! ```

use std::fmt::Write as _;

use bytes::{BufMut, Bytes, BytesMut};

/// The first byte of a batch (never a MessagePack value's first byte).
const MAGIC: u8 = 0xc1;
/// The batch format's version.
const VERSION: u8 = 1;
/// An entry's fixed head: its tag and its length.
const ENTRY_HEAD: usize = 8 + 4;
/// Entries in one batch, at most.
pub(crate) const MAX_ENTRIES: usize = 512;
/// A call or answer of more bytes than this travels on its own (it gains nothing from a batch,
/// and one that fitted a NATS message alone must still fit one).
pub(crate) const ENTRY_MAX: usize = 16 * 1024;
/// A batch grows to about this many bytes, then leaves (well under NATS's `max_payload`,
/// 1 MiB by default; see [`limit`]).
const BYTES: usize = 64 * 1024;

/// Bytes a batch may hold on a server whose `max_payload` is `max_payload`: [`BYTES`], or half
/// the server's limit when that is less.
pub(crate) fn limit(max_payload: usize) -> usize {
    BYTES.min(max_payload / 2)
}

/// Why a batch does not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed batch: {0}")]
pub(crate) struct BatchError(&'static str);

/// Whether `payload` is a batch of answers (or of calls): it starts with the batch byte.
pub(crate) fn is_batch(payload: &[u8]) -> bool {
    payload.first() == Some(&MAGIC)
}

/// A batch being written: calls (with [`Writer::calls`]) or answers (with [`Writer::answers`]).
#[derive(Debug)]
pub(crate) struct Writer {
    buf: BytesMut,
    /// Where the count goes.
    count_at: usize,
    count: u16,
}

impl Writer {
    /// A batch of calls whose answers go to `prefix` and a call's tag.
    pub(crate) fn calls(prefix: &str, room: usize) -> Option<Writer> {
        let len = u8::try_from(prefix.len()).ok()?;
        let mut buf = BytesMut::with_capacity(2 + 1 + prefix.len() + 2 + room);
        buf.put_u8(MAGIC);
        buf.put_u8(VERSION);
        buf.put_u8(len);
        buf.put_slice(prefix.as_bytes());
        Some(Self::counted(buf))
    }

    /// A batch of answers.
    pub(crate) fn answers(room: usize) -> Writer {
        let mut buf = BytesMut::with_capacity(2 + 2 + room);
        buf.put_u8(MAGIC);
        buf.put_u8(VERSION);
        Self::counted(buf)
    }

    fn counted(mut buf: BytesMut) -> Writer {
        let count_at = buf.len();
        buf.put_u16_le(0);
        Writer {
            buf,
            count_at,
            count: 0,
        }
    }

    /// Add an entry; `false` (and nothing written) when the batch has [`MAX_ENTRIES`] already
    /// or `bytes` is longer than a `u32` counts.
    pub(crate) fn push(&mut self, tag: u64, bytes: &[u8]) -> bool {
        let Ok(len) = u32::try_from(bytes.len()) else {
            return false;
        };
        if usize::from(self.count) >= MAX_ENTRIES {
            return false;
        }
        self.buf.reserve(ENTRY_HEAD + bytes.len());
        self.buf.put_u64_le(tag);
        self.buf.put_u32_le(len);
        self.buf.put_slice(bytes);
        self.count += 1;
        true
    }

    /// Entries written.
    pub(crate) fn count(&self) -> usize {
        usize::from(self.count)
    }

    /// Bytes written.
    pub(crate) fn len(&self) -> usize {
        self.buf.len()
    }

    /// The batch's bytes.
    pub(crate) fn finish(mut self) -> Bytes {
        let count = self.count.to_le_bytes();
        self.buf[self.count_at..self.count_at + 2].copy_from_slice(&count);
        self.buf.freeze()
    }
}

/// A batch read whole: its reply prefix (calls only) and its entries, each a slice of the
/// message (no copy). Every length is checked before anything is handed out.
#[derive(Debug)]
pub(crate) struct Batch {
    /// The reply prefix of a batch of calls (empty in a batch of answers).
    pub(crate) prefix: String,
    pub(crate) entries: Vec<(u64, Bytes)>,
}

impl Batch {
    /// Read a batch of calls.
    pub(crate) fn calls(payload: &Bytes) -> Result<Batch, BatchError> {
        let rest = head(payload)?;
        let (&len, rest) = rest.split_first().ok_or(BatchError("no prefix length"))?;
        let len = usize::from(len);
        let prefix = rest
            .get(..len)
            .ok_or(BatchError("the prefix is cut short"))?;
        let prefix = std::str::from_utf8(prefix)
            .map_err(|_| BatchError("the prefix is not UTF-8"))?
            .to_owned();
        let at = payload.len() - rest.len() + len;
        Ok(Batch {
            prefix,
            entries: entries(payload, at)?,
        })
    }

    /// Read a batch of answers.
    pub(crate) fn answers(payload: &Bytes) -> Result<Batch, BatchError> {
        let rest = head(payload)?;
        let at = payload.len() - rest.len();
        Ok(Batch {
            prefix: String::new(),
            entries: entries(payload, at)?,
        })
    }
}

/// What follows the batch byte and the version.
fn head(payload: &[u8]) -> Result<&[u8], BatchError> {
    match payload {
        [MAGIC, VERSION, rest @ ..] => Ok(rest),
        [MAGIC, _, ..] => Err(BatchError("unknown version")),
        _ => Err(BatchError("not a batch")),
    }
}

/// The count and the entries from `at` on, to the end of `payload` exactly.
fn entries(payload: &Bytes, mut at: usize) -> Result<Vec<(u64, Bytes)>, BatchError> {
    let count = payload.get(at..at + 2).ok_or(BatchError("no count"))?;
    let count = usize::from(u16::from_le_bytes([count[0], count[1]]));
    if count > MAX_ENTRIES {
        return Err(BatchError("too many entries"));
    }
    at += 2;
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let h = payload
            .get(at..at + ENTRY_HEAD)
            .ok_or(BatchError("an entry is cut short"))?;
        let mut tag = [0u8; 8];
        tag.copy_from_slice(&h[..8]);
        let mut len = [0u8; 4];
        len.copy_from_slice(&h[8..]);
        let len = usize::try_from(u32::from_le_bytes(len))
            .map_err(|_| BatchError("an entry is too long"))?;
        at += ENTRY_HEAD;
        let end = at
            .checked_add(len)
            .filter(|&end| end <= payload.len())
            .ok_or(BatchError("an entry is cut short"))?;
        out.push((u64::from_le_bytes(tag), payload.slice(at..end)));
        at = end;
    }
    if at != payload.len() {
        return Err(BatchError("bytes after the last entry"));
    }
    Ok(out)
}

/// The reply subject of the call tagged `tag` in a batch whose reply prefix is `prefix`.
pub(crate) fn reply_subject(prefix: &str, tag: u64) -> String {
    let mut s = String::with_capacity(prefix.len() + 20);
    s.push_str(prefix);
    let _ = write!(s, "{tag}");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn calls(prefix: &str, entries: &[(u64, Vec<u8>)]) -> Bytes {
        let mut w = Writer::calls(prefix, 0).expect("short prefix");
        for (tag, bytes) in entries {
            assert!(w.push(*tag, bytes));
        }
        w.finish()
    }

    fn answers(entries: &[(u64, Vec<u8>)]) -> Bytes {
        let mut w = Writer::answers(0);
        for (tag, bytes) in entries {
            assert!(w.push(*tag, bytes));
        }
        w.finish()
    }

    fn owned(b: &Batch) -> Vec<(u64, Vec<u8>)> {
        b.entries.iter().map(|(t, e)| (*t, e.to_vec())).collect()
    }

    fn entry() -> impl Strategy<Value = (u64, Vec<u8>)> {
        (
            any::<u64>(),
            prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..64),
                proptest::collection::vec(any::<u8>(), 0..ENTRY_MAX),
            ],
        )
    }

    #[test]
    fn a_batch_reads_back_as_written_and_is_never_msgpack() {
        let e = vec![(0, b"\x81\xa1a\x01".to_vec()), (u64::MAX, Vec::new())];
        let c = calls("_INBOX.abc.", &e);
        assert!(is_batch(&c));
        let b = Batch::calls(&c).expect("calls");
        assert_eq!(b.prefix, "_INBOX.abc.");
        assert_eq!(owned(&b), e);
        let a = answers(&e);
        assert!(is_batch(&a));
        assert_eq!(owned(&Batch::answers(&a).expect("answers")), e);
        // 0xc1 is "never used" in MessagePack: no decoder takes a batch for a value.
        assert!(rmp_serde::from_slice::<serde_json::Value>(&a).is_err());
        assert!(!is_batch(b"\x81\xa2ok\xc0"));
        assert_eq!(reply_subject("_INBOX.abc.", 42), "_INBOX.abc.42");
    }

    #[test]
    fn a_batch_is_bounded_in_entries_and_prefix() {
        let mut w = Writer::answers(0);
        for i in 0..MAX_ENTRIES as u64 {
            assert!(w.push(i, b"x"));
        }
        assert!(!w.push(0, b"x"), "one entry past the bound");
        assert_eq!(w.count(), MAX_ENTRIES);
        let done = w.finish();
        assert_eq!(
            Batch::answers(&done).expect("full batch").entries.len(),
            MAX_ENTRIES
        );
        assert!(Writer::calls(&"p".repeat(256), 0).is_none());
        assert!(Writer::calls(&"p".repeat(255), 0).is_some());
        // A count past the bound is refused before anything is read.
        let mut big = BytesMut::from(&[MAGIC, VERSION][..]);
        big.put_u16_le(MAX_ENTRIES as u16 + 1);
        assert_eq!(
            Batch::answers(&big.freeze()).unwrap_err(),
            BatchError("too many entries")
        );
        assert_eq!(limit(1 << 20), 64 * 1024);
        assert_eq!(limit(64 * 1024), 32 * 1024);
    }

    #[test]
    fn malformed_batches_are_refused_with_their_reason() {
        let good = answers(&[(7, b"abc".to_vec())]);
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (Vec::new(), "not a batch"),
            (b"\x81".to_vec(), "not a batch"),
            (vec![MAGIC, 2, 0, 0], "unknown version"),
            (vec![MAGIC, VERSION, 1], "no count"),
            (good[..good.len() - 1].to_vec(), "an entry is cut short"),
            ([&good[..], b"!"].concat(), "bytes after the last entry"),
        ];
        for (bytes, why) in cases {
            assert_eq!(
                Batch::answers(&Bytes::from(bytes.clone())).unwrap_err(),
                BatchError(why),
                "{bytes:?}"
            );
        }
        let c = calls("ab", &[]);
        assert_eq!(
            Batch::calls(&c.slice(..3)).unwrap_err(),
            BatchError("the prefix is cut short")
        );
        let mut bad = c.to_vec();
        bad[3] = 0xff;
        assert_eq!(
            Batch::calls(&Bytes::from(bad)).unwrap_err(),
            BatchError("the prefix is not UTF-8")
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn any_batch_reads_back(
            prefix in "[_A-Za-z0-9.]{0,60}",
            e in proptest::collection::vec(entry(), 0..24),
        ) {
            let c = calls(&prefix, &e);
            let b = Batch::calls(&c).expect("calls");
            prop_assert_eq!(&b.prefix, &prefix);
            prop_assert_eq!(owned(&b), e.clone());
            prop_assert_eq!(owned(&Batch::answers(&answers(&e)).expect("answers")), e);
        }

        /// Cut, or with a byte changed, a batch is read or refused: never a panic, and never
        /// an entry past the message.
        #[test]
        fn a_damaged_batch_is_read_or_refused(
            e in proptest::collection::vec(entry(), 1..8),
            cut in any::<prop::sample::Index>(),
            at in any::<prop::sample::Index>(),
            byte in any::<u8>(),
        ) {
            let whole = calls("_INBOX.x.", &e);
            let short = whole.slice(..cut.index(whole.len()));
            prop_assert!(Batch::calls(&short).is_err());
            let mut changed = whole.to_vec();
            let i = at.index(changed.len());
            changed[i] = byte;
            let changed = Bytes::from(changed);
            if let Ok(b) = Batch::calls(&changed) {
                let total: usize = b.entries.iter().map(|(_, x)| x.len() + ENTRY_HEAD).sum();
                prop_assert_eq!(total + 3 + b.prefix.len() + 2, changed.len());
            }
            let _ = Batch::answers(&changed);
        }

        #[test]
        fn any_bytes_are_read_or_refused(
            headed in any::<bool>(),
            bytes in proptest::collection::vec(any::<u8>(), 0..4096),
        ) {
            let bytes = if headed { [&[MAGIC, VERSION][..], &bytes].concat() } else { bytes };
            let bytes = Bytes::from(bytes);
            let _ = Batch::calls(&bytes);
            let _ = Batch::answers(&bytes);
        }
    }
}
