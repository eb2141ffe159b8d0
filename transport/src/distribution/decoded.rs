//! A provider's cache of the users and authentications its calls carry, decoded: the callers of
//! one login send the same bytes with every call, so the value is decoded once and shared
//! ([`SharedValue`]) by the calls that carry it, instead of decoded into new maps and strings
//! (and dropped) per call.
//!
//! Per thread (no lock; a tokio worker keeps its own), keyed by the encoded bytes (foldhash with
//! a random seed: the bytes come from peers), bounded: at most [`MAX_ENTRIES`] values of at most
//! [`MAX_BYTES`] encoded bytes each; when full it starts over. Correct under any input: a value
//! is only ever found under the bytes it was decoded from, and decoding is a function of the
//! bytes (same bytes, same value; `tests::the_cache_answers_what_the_walk_reads`).

use std::cell::RefCell;
use std::collections::HashMap;

use plume::SharedValue;
use serde_json::Value;

/// The most values a thread keeps.
pub(crate) const MAX_ENTRIES: usize = 256;

/// The largest encoding kept (a larger value is decoded per call).
pub(crate) const MAX_BYTES: usize = 2048;

type Map = HashMap<Box<[u8]>, SharedValue, foldhash::fast::RandomState>;

thread_local! {
    static DECODED: RefCell<Map> = RefCell::new(Map::default());
}

/// The value `bytes` encode, shared: from this thread's cache, or `decode`d (and kept). `None`
/// when `decode` refuses the bytes (nothing is kept).
pub(crate) fn shared(
    bytes: &[u8],
    decode: impl FnOnce(&[u8]) -> Option<Value>,
) -> Option<SharedValue> {
    if bytes.len() > MAX_BYTES {
        return decode(bytes).map(SharedValue::from);
    }
    DECODED.with(|cache| {
        if let Some(value) = cache.borrow().get(bytes) {
            return Some(value.clone());
        }
        let value = SharedValue::from(decode(bytes)?);
        let mut cache = cache.borrow_mut();
        if cache.len() >= MAX_ENTRIES {
            cache.clear();
        }
        cache.insert(bytes.into(), value.clone());
        Some(value)
    })
}

#[cfg(test)]
pub(crate) fn len() -> usize {
    DECODED.with(|cache| cache.borrow().len())
}
