//! Bytes encoded before, written into a payload as they are: a value sent with every call (the
//! authenticated user a gateway's cache shares between calls) is encoded once, kept with the
//! value ([`plume::SharedValue::memo`]), and copied into each request frame, instead of being
//! walked by serde every time.
//!
//! serde has no way to hand a serializer raw bytes, so the splice goes around it, on this
//! thread: [`encode_payload_in`](super::encode_payload_in) arms it while rmp-serde writes into
//! its buffer; a value's `Serialize` then leaves its bytes here ([`write`]) and serializes a
//! `nil`, and the buffer's writer (`Roomy`), seeing that one-byte `nil` while bytes wait,
//! writes the bytes in its place. Anywhere else (not [`armed`]: another serializer, another
//! buffer), the value serializes through serde. Either way the bytes are the same: the spliced
//! ones are rmp-serde's own encoding of the value (see the tests of their encoders).

use std::cell::Cell;

use bytes::Bytes;
use serde::Serializer;

/// MessagePack's `nil`, the placeholder a [`Spliced`] serializes.
const NIL: u8 = 0xc0;

thread_local! {
    /// True while `encode_payload_in` serializes into its `Roomy` buffer on this thread.
    static ARMED: Cell<bool> = const { Cell::new(false) };
    /// The bytes the next one-byte `nil` write of `Roomy` stands for.
    static PENDING: Cell<Option<Bytes>> = const { Cell::new(None) };
}

/// Arms splicing on this thread until dropped (restoring what was before).
pub(crate) struct Armed(bool);

/// Arm splicing: only around a serialization by rmp-serde into a `Roomy` buffer.
pub(crate) fn arm() -> Armed {
    Armed(ARMED.with(|a| a.replace(true)))
}

impl Drop for Armed {
    fn drop(&mut self) {
        ARMED.with(|a| a.set(self.0));
        // Left only by a serialization that failed between a splice and its write.
        PENDING.with(Cell::take);
    }
}

/// For `Roomy`: the bytes a one-byte `nil` write stands for, when a splice waits.
#[inline]
pub(crate) fn take_pending() -> Option<Bytes> {
    PENDING.with(Cell::take)
}

/// True while a payload is being encoded on this thread into a buffer that splices: then (only
/// then) a value may be written by [`write`].
#[inline]
pub(crate) fn armed() -> bool {
    ARMED.with(Cell::get)
}

/// Serialize `bytes`, the MessagePack rmp-serde writes for the value being serialized, as they
/// are. Only when [`armed`]: the serializer is then rmp-serde's, writing into the payload's
/// buffer.
pub(crate) fn write<S: Serializer>(serializer: S, bytes: &Bytes) -> Result<S::Ok, S::Error> {
    PENDING.with(|p| p.set(Some(bytes.clone())));
    let done = serializer.serialize_unit();
    // Taken by the write of the `nil`: the bytes are in the buffer instead.
    if PENDING.with(Cell::take).is_some() {
        // A serializer that did not write a one-byte `nil` to `Roomy` (none of ours).
        return Err(serde::ser::Error::custom(
            "a spliced value was not written by the payload's writer",
        ));
    }
    done
}

/// Whether `byte` written alone is a placeholder to replace.
#[inline]
pub(crate) fn is_placeholder(byte: u8) -> bool {
    byte == NIL
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::encode_payload;

    /// A value that splices `bytes` when armed, else serializes `value`.
    struct Kept<'a> {
        value: &'a serde_json::Value,
        bytes: &'a Bytes,
    }

    impl serde::Serialize for Kept<'_> {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            if armed() {
                return write(serializer, self.bytes);
            }
            self.value.serialize(serializer)
        }
    }

    #[test]
    fn kept_bytes_are_spliced_into_a_payload_and_nowhere_else() {
        let value = serde_json::json!({"id": 7, "tags": ["a", null]});
        let bytes = Bytes::from(rmp_serde::to_vec_named(&value).expect("encodes"));
        let kept = Kept {
            value: &value,
            bytes: &bytes,
        };
        // In a payload, next to other values (a `nil` of its own stays a `nil`).
        let msg = (&kept, (), &kept, 5);
        let expected = rmp_serde::to_vec_named(&(&value, (), &value, 5)).expect("encodes");
        assert_eq!(&encode_payload(&msg)[..], &expected[..]);
        // Not armed: through serde.
        assert!(!armed());
        assert_eq!(serde_json::to_string(&kept).ok(), Some(value.to_string()));
        // Armed, but another serializer: an error, not a wrong `null`.
        let _armed = arm();
        assert!(serde_json::to_string(&kept).is_err());
        assert!(take_pending().is_none());
    }
}
