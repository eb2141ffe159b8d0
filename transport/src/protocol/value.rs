//! A `serde_json::Value` to and from MessagePack without serde's machinery in between: what a
//! replica does per call (the call's params in, the result out), walked and written directly.
//!
//! - [`write_value`] writes exactly the bytes `rmp_serde::encode::write_named` writes for the
//!   value (the same `rmp` functions, in the same order), so a peer cannot tell them apart.
//! - [`read_value`] reads the values serde would read into the same `Value`, in the form this
//!   crate (and every rmp-serde peer) writes: nil, booleans, integers, floats (a non-finite one is
//!   `null`, as serde_json makes it), UTF-8 strings, arrays, and maps with string keys (a repeated
//!   key keeps its first place and its last value, as `Map::insert` does). Anything else (`bin`,
//!   `ext`, other keys, invalid UTF-8, nesting deeper than [`MAX_WALK_DEPTH`], truncated input)
//!   answers `None`, and the caller decodes with serde as before: serde then accepts or refuses
//!   it with its own error, so both paths accept and refuse the same bytes.

use serde_json::{Map, Number, Value};

use super::Reader;

/// The deepest nesting [`read_value`] walks (below serde's `MAX_PAYLOAD_DEPTH`, so anything
/// deeper is serde's to accept or refuse).
pub(crate) const MAX_WALK_DEPTH: usize = 64;

/// Append `value` as MessagePack to `buf`, byte for byte as `rmp_serde::encode::write_named`.
pub(crate) fn write_value(buf: &mut Vec<u8>, value: &Value) -> Result<(), String> {
    use rmp::encode;
    let e = |e: rmp::encode::ValueWriteError<std::io::Error>| e.to_string();
    match value {
        Value::Null => encode::write_nil(buf).map_err(|e| e.to_string())?,
        Value::Bool(b) => encode::write_bool(buf, *b).map_err(|e| e.to_string())?,
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                encode::write_uint(buf, u).map_err(e)?;
            } else if let Some(i) = n.as_i64() {
                encode::write_sint(buf, i).map_err(e)?;
            } else if let Some(f) = n.as_f64() {
                encode::write_f64(buf, f).map_err(e)?;
            } else {
                return Err(format!("a number that is none of u64, i64, f64: {n}"));
            }
        }
        Value::String(s) => {
            // (the marker and length take 5 bytes at most)
            super::make_room(buf, s.len() + 5);
            encode::write_str(buf, s).map_err(e)?;
        }
        Value::Array(items) => {
            encode::write_array_len(buf, len32(items.len())?).map_err(e)?;
            for item in items {
                write_value(buf, item)?;
            }
        }
        Value::Object(map) => {
            encode::write_map_len(buf, len32(map.len())?).map_err(e)?;
            for (k, v) in map {
                encode::write_str(buf, k).map_err(e)?;
                write_value(buf, v)?;
            }
        }
    }
    Ok(())
}

fn len32(len: usize) -> Result<u32, String> {
    u32::try_from(len).map_err(|_| format!("{len} items do not fit a MessagePack length"))
}

/// Read one value at the cursor (see the module); `None`: leave it to serde.
pub(crate) fn read_value(r: &mut Reader<'_>, depth: usize) -> Option<Value> {
    let marker = r.peek()?;
    Some(match marker {
        0xc0 => {
            r.byte()?;
            Value::Null
        }
        0xc2 | 0xc3 => Value::Bool(r.byte()? == 0xc3),
        0x00..=0x7f | 0xcc..=0xcf => Value::Number(r.uint()?.into()),
        0xe0..=0xff => {
            r.byte()?;
            // A negative fixint: the byte is the value in two's complement.
            Value::Number(i64::from(i8::from_ne_bytes([marker])).into())
        }
        0xd0..=0xd3 => {
            r.byte()?;
            let n = match marker {
                0xd0 => i64::from(i8::from_be_bytes([r.byte()?])),
                0xd1 => signed(r.be(2)?, 16),
                0xd2 => signed(r.be(4)?, 32),
                _ => signed(r.be(8)?, 64),
            };
            Value::Number(n.into())
        }
        0xca => {
            r.byte()?;
            let bits = u32::try_from(r.be(4)?).ok()?;
            float(f64::from(f32::from_bits(bits)))
        }
        0xcb => {
            r.byte()?;
            float(f64::from_bits(r.be(8)?))
        }
        0xa0..=0xbf | 0xd9..=0xdb => Value::String(r.str()?.to_owned()),
        0x90..=0x9f | 0xdc | 0xdd => {
            if depth >= MAX_WALK_DEPTH {
                return None;
            }
            let len = array_len(r)?;
            // Every item takes a byte at least: a length the bytes cannot hold reserves nothing.
            let mut items = Vec::with_capacity(capacity(len, 1, r));
            for _ in 0..len {
                items.push(read_value(r, depth + 1)?);
            }
            Value::Array(items)
        }
        0x80..=0x8f | 0xde | 0xdf => {
            if depth >= MAX_WALK_DEPTH {
                return None;
            }
            Value::Object(read_map(r, depth)?)
        }
        // bin, ext, the unused marker: serde's to judge.
        _ => return None,
    })
}

/// A map with string keys at the cursor (its values at `depth + 1`).
pub(crate) fn read_map(r: &mut Reader<'_>, depth: usize) -> Option<Map<String, Value>> {
    let len = r.map_len()?;
    let mut map = Map::with_capacity(capacity(len, 2, r));
    for _ in 0..len {
        let key = r.str()?.to_owned();
        let value = read_value(r, depth + 1)?;
        map.insert(key, value);
    }
    Some(map)
}

/// What serde_json makes of a float: a number, or `null` when it is not finite.
fn float(f: f64) -> Value {
    Number::from_f64(f).map_or(Value::Null, Value::Number)
}

/// The `bits`-bit two's complement integer in the low bits of `v`.
fn signed(v: u64, bits: u32) -> i64 {
    let shift = 64 - bits;
    // (shifting left then arithmetically right extends the sign bit)
    ((v << shift) as i64) >> shift
}

fn array_len(r: &mut Reader<'_>) -> Option<u64> {
    match r.byte()? {
        m @ 0x90..=0x9f => Some(u64::from(m & 0x0f)),
        0xdc => r.be(2),
        0xdd => r.be(4),
        _ => None,
    }
}

/// How many items to reserve for `len` items of `min` bytes at least at the cursor: no more than
/// the bytes left could hold, so a forged length reserves nothing large.
fn capacity(len: u64, min: usize, r: &Reader<'_>) -> usize {
    usize::try_from(len)
        .unwrap_or(usize::MAX)
        .min(r.left() / min)
}

#[cfg(test)]
mod tests;
