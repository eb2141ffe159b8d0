//! The forwarding fast path: a service that only reads its arguments (the distribution plugin's
//! proxies, which serialize them onto the mesh) is called with borrowed arguments, and may hand
//! its result over as JSON text the REST server sends without decoding it.
//!
//! This is not part of the [`Service`] trait every implementor sees: a service opts in by
//! implementing [`Forward`] and being mounted with [`App::use_forwarding`](crate::App::use_forwarding).
//! Both are hidden from the docs; they exist for `plume-transport`.

use futures::future::BoxFuture;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::params::{Id, Method, Params};
use crate::service::{Service, id_missing};

/// A service that forwards its calls (a proxy): the App calls it with borrowed arguments,
/// without copying the hook context's `data` and `params` (headers and user included) first.
///
/// The arguments are those the method named by `method` takes, as [`dispatch`](crate::dispatch)
/// passes them: `id` is present for `get` and `update` (the App answers a call without one),
/// may be present for `patch` and `remove`, and is `None` otherwise; `data` is present (`null`
/// when the call had none) for `create`, `update`, `patch` and custom methods, and `None`
/// otherwise.
#[doc(hidden)]
pub trait Forward: Service {
    /// Serve a call from borrowed arguments.
    fn forward_borrowed<'a>(
        &'a self,
        method: &'a Method,
        id: Option<&'a Id>,
        data: Option<&'a Value>,
        params: &'a Params,
    ) -> BoxFuture<'a, Result<Value>>;

    /// Like [`forward_borrowed`](Self::forward_borrowed), with the result already encoded as
    /// JSON text. When no hook of the call needs the result as a [`Value`] (no around or after
    /// hook, no event), the REST server sends these bytes as the response body without
    /// decoding them; otherwise the App calls [`forward_borrowed`](Self::forward_borrowed).
    fn forward_json<'a>(
        &'a self,
        method: &'a Method,
        id: Option<&'a Id>,
        data: Option<&'a Value>,
        params: &'a Params,
    ) -> BoxFuture<'a, Result<RawJson>>;
}

/// One JSON value, already encoded as text: the result of [`Forward::forward_json`].
///
/// ```
/// use plume::RawJson;
///
/// let raw = RawJson::from_encoded(r#"{"id":1}"#.into());
/// assert_eq!(raw.to_value()?, serde_json::json!({"id": 1}));
/// assert!(!raw.is_null());
/// # Ok::<(), plume::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct RawJson(bytes::Bytes);

impl RawJson {
    /// Wrap bytes that hold exactly one JSON value. They are not checked here: whoever makes a
    /// `RawJson` vouches for them, since the REST server sends them as they are
    /// ([`to_value`](Self::to_value) still fails cleanly on bad text).
    pub fn from_encoded(bytes: bytes::Bytes) -> Self {
        Self(bytes)
    }

    /// Encode a value.
    pub fn from_value(value: &Value) -> Self {
        Self(plume_json::to_vec(value).into())
    }

    /// The JSON text.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The JSON text, without a copy.
    pub fn into_bytes(self) -> bytes::Bytes {
        self.0
    }

    /// True for `null` (a REST response without a body).
    pub fn is_null(&self) -> bool {
        self.0.trim_ascii() == b"null"
    }

    /// Decode the value.
    pub fn to_value(&self) -> Result<Value> {
        serde_json::from_slice(&self.0)
            .map_err(|e| Error::general_error(format!("a result is not valid JSON: {e}")))
    }

    /// The text as a `RawValue`, checked as JSON but not decoded (the socket.io ack of a
    /// result that stays text). The same error as [`to_value`](Self::to_value).
    #[cfg(feature = "server")]
    pub(crate) fn as_raw_value(&self) -> Result<&serde_json::value::RawValue> {
        serde_json::from_slice(&self.0)
            .map_err(|e| Error::general_error(format!("a result is not valid JSON: {e}")))
    }
}

impl std::fmt::Debug for RawJson {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("RawJson")
            .field(&String::from_utf8_lossy(&self.0))
            .finish()
    }
}

/// `null`, the data of a call that needs data and came without any.
static NULL: Value = Value::Null;

/// The arguments `method` takes, from those of a call, as [`dispatch`] passes them (see
/// [`Forward::forward_borrowed`]).
pub(crate) fn method_args<'a>(
    method: &Method,
    id: Option<&'a Id>,
    data: Option<&'a Value>,
) -> Result<(Option<&'a Id>, Option<&'a Value>)> {
    let data = || Some(data.unwrap_or(&NULL));
    match method {
        Method::Find => Ok((None, None)),
        Method::Get => id
            .map(|id| (Some(id), None))
            .ok_or_else(|| id_missing(method)),
        Method::Update => id
            .map(|id| (Some(id), data()))
            .ok_or_else(|| id_missing(method)),
        Method::Remove => Ok((id, None)),
        Method::Patch => Ok((id, data())),
        Method::Create | Method::Custom(_) => Ok((None, data())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn method_args_are_what_dispatch_passes() {
        let id = Id::Int(1);
        let data = json!({"a": 1});
        let (some_id, some_data) = (Some(&id), Some(&data));
        let custom = Method::Custom("run".into());
        assert_eq!(
            method_args(&Method::Find, some_id, some_data).ok(),
            Some((None, None))
        );
        assert_eq!(
            method_args(&Method::Get, some_id, some_data).ok(),
            Some((some_id, None))
        );
        assert_eq!(
            method_args(&Method::Remove, None, some_data).ok(),
            Some((None, None))
        );
        assert_eq!(
            method_args(&Method::Patch, None, None).ok(),
            Some((None, Some(&NULL)))
        );
        assert_eq!(
            method_args(&Method::Update, some_id, some_data).ok(),
            Some((some_id, some_data))
        );
        assert_eq!(
            method_args(&Method::Create, some_id, None).ok(),
            Some((None, Some(&NULL)))
        );
        assert_eq!(
            method_args(&custom, some_id, some_data).ok(),
            Some((None, some_data))
        );
        for method in [Method::Get, Method::Update] {
            let e = method_args(&method, None, some_data)
                .err()
                .map(|e| e.message().to_owned());
            assert_eq!(
                e,
                Some(format!("An id must be provided to the '{method}' method"))
            );
        }
    }
}
