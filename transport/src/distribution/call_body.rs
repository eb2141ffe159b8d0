//! A call's body ([`CallBody`]) read by walking its MessagePack bytes, the way a replica reads
//! every call: the id, the data and the params straight into their values, without serde's
//! deserializer and visitors in between.
//!
//! Only the form the proxies write is read: a map with string keys, each key once, every key one
//! of `CallBody`'s and `WireParams`'s, `id` nil, an integer that fits an `i64` or a string,
//! `provider` nil, `"rest"` or `"socketio"`, the maps maps, and values as
//! [`read_value`](crate::protocol::value::read_value) reads them (the user and the
//! authentication through the thread's cache of them, [`decoded`](super::decoded), shared with
//! the calls of the same login). Anything else answers `None`,
//! and the caller decodes the body with serde as before (which accepts or refuses it with its
//! own error): both paths accept and refuse the same bodies, and read them the same.

use plume::{Id, Provider, SharedValue};
use serde_json::{Map, Value};

use super::decoded;
use super::wire::{CallBody, WireParams};
use crate::protocol::Reader;
use crate::protocol::value::{read_map, read_value};

/// Read a call body (see the module); `None`: decode it with serde.
pub(crate) fn read_call_body(bytes: &[u8]) -> Option<CallBody> {
    let mut r = Reader::new(bytes, 0);
    let entries = r.map_len()?;
    let mut body = CallBody::default();
    let mut seen = [false; 3];
    for _ in 0..entries {
        let field = match r.str_bytes()? {
            b"id" => 0,
            b"data" => 1,
            b"params" => 2,
            // An unknown key (serde skips it) or not a string: serde's to read.
            _ => return None,
        };
        // A repeated key: serde refuses it.
        if std::mem::replace(&mut seen[field], true) {
            return None;
        }
        match field {
            0 => body.id = read_id(&mut r)?,
            1 => body.data = read_opt_value(&mut r, 1)?,
            _ => body.params = read_params(&mut r, bytes)?,
        }
    }
    Some(body)
}

/// `params` (a map at depth 1) at the cursor in `bytes`.
fn read_params(r: &mut Reader<'_>, bytes: &[u8]) -> Option<WireParams> {
    let entries = r.map_len()?;
    let mut params = WireParams::default();
    let mut seen = [false; 6];
    for _ in 0..entries {
        let field = match r.str_bytes()? {
            b"query" => 0,
            b"route" => 1,
            b"provider" => 2,
            b"user" => 3,
            b"authentication" => 4,
            b"extra" => 5,
            _ => return None,
        };
        if std::mem::replace(&mut seen[field], true) {
            return None;
        }
        match field {
            0 => params.query = read_object(r)?,
            1 => params.route = read_object(r)?,
            2 => params.provider = read_provider(r)?,
            3 => params.user = read_shared(r, bytes)?,
            4 => params.authentication = read_shared(r, bytes)?,
            _ => params.extra = read_object(r)?,
        }
    }
    Some(params)
}

/// A map of params (at depth 2: its values at 3).
fn read_object(r: &mut Reader<'_>) -> Option<Map<String, Value>> {
    read_map(r, 2)
}

/// nil (`None`) or a value at `depth`.
fn read_opt_value(r: &mut Reader<'_>, depth: usize) -> Option<Option<Value>> {
    if r.nil() {
        return Some(None);
    }
    read_value(r, depth).map(Some)
}

/// nil (`None`), or a value at depth 2 (a param), shared with the calls that sent the same
/// bytes. Read as [`read_opt_value`] reads it: the value's bytes are found by skipping it, and
/// those alone are walked.
fn read_shared(r: &mut Reader<'_>, bytes: &[u8]) -> Option<Option<SharedValue>> {
    if r.nil() {
        return Some(None);
    }
    let start = r.at();
    r.skip()?;
    let encoded = bytes.get(start..r.at())?;
    decoded::shared(encoded, |encoded| {
        let mut own = Reader::new(encoded, 0);
        let value = read_value(&mut own, 2)?;
        (own.left() == 0).then_some(value)
    })
    .map(Some)
}

/// nil, or an id: an integer that fits an `i64`, or a string.
fn read_id(r: &mut Reader<'_>) -> Option<Option<Id>> {
    Some(match read_opt_value(r, 1)? {
        None => None,
        Some(Value::String(s)) => Some(Id::Str(s)),
        Some(Value::Number(n)) => Some(Id::Int(n.as_i64()?)),
        Some(_) => return None,
    })
}

/// nil, `"rest"` or `"socketio"`.
fn read_provider(r: &mut Reader<'_>) -> Option<Option<Provider>> {
    if r.nil() {
        return Some(None);
    }
    match r.str_bytes()? {
        b"rest" => Some(Some(Provider::Rest)),
        b"socketio" => Some(Some(Provider::Socketio)),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
