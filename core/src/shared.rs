//! [`SharedValue`]: a JSON value shared by reference count and copied only when changed, the
//! type of `params.user` and `params.authentication`.

use std::fmt;
use std::ops::Deref;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

/// A JSON value behind a reference count: cloning one is an increment, not a deep copy, and
/// [`make_mut`](Self::make_mut) copies it only when another holder shares it (copy-on-write).
///
/// `params.user` and `params.authentication` are `Option<SharedValue>`: the authentication
/// cache hands every call the same user and authentication, and the calls share them. Reading
/// is a `&Value` (the type derefs to `Value`); setting takes any `Value` (`From<Value>`).
///
/// ```
/// use plume::{Params, SharedValue};
/// use serde_json::json;
///
/// let mut params = Params::new();
/// params.user = Some(json!({"id": 1, "role": "admin"}).into());
/// // Read it as a `&Value`.
/// let user = params.user.as_deref();
/// assert_eq!(user.and_then(|u| u.get("role")), Some(&json!("admin")));
///
/// // A clone shares the value; changing one copies it first.
/// let before = params.user.clone();
/// if let Some(user) = params.user.as_mut() {
///     user.make_mut()["role"] = json!("guest");
/// }
/// assert_eq!(before.as_deref(), Some(&json!({"id": 1, "role": "admin"})));
/// assert_eq!(params.user.as_deref(), Some(&json!({"id": 1, "role": "guest"})));
/// ```
#[derive(Clone)]
pub struct SharedValue(Arc<Inner>);

struct Inner {
    /// The value (`null` while `lazy` holds it unread).
    value: Value,
    /// A value made from JSON text ([`SharedValue::from_json_text`]), read on first use.
    lazy: Option<Lazy>,
    /// One encoding of `value`, kept by a transport (see [`SharedValue::memo`]); dropped by
    /// [`SharedValue::make_mut`].
    memo: OnceLock<Memo>,
}

/// JSON text and the value read from it, once.
struct Lazy {
    text: Box<str>,
    value: OnceLock<Value>,
}

impl Inner {
    fn value(&self) -> &Value {
        match &self.lazy {
            Some(lazy) => lazy.value.get_or_init(|| read(&lazy.text)),
            None => &self.value,
        }
    }

    /// The value, read from its text first if it is lazy and unread.
    fn into_value(self) -> Value {
        match self.lazy {
            Some(lazy) => lazy.value.into_inner().unwrap_or_else(|| read(&lazy.text)),
            None => self.value,
        }
    }
}

/// The value of JSON text Plume wrote. Text that does not read back (nested deeper than
/// serde_json's recursion limit) reads as `null`, with a warning.
fn read(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|err| {
        tracing::warn!(target: "plume::shared", %err, "a value's JSON text did not read back");
        Value::Null
    })
}

impl Clone for Inner {
    /// A copy of the value, without the memo (the copy is about to change).
    fn clone(&self) -> Self {
        Self {
            value: self.value().clone(),
            lazy: None,
            memo: OnceLock::new(),
        }
    }
}

/// The encoding kept with a value: which one, and its bytes (`None` when the encoder declined,
/// e.g. for a value too large to keep twice).
struct Memo {
    kind: u8,
    bytes: Option<Bytes>,
}

impl SharedValue {
    /// Share `value`.
    pub fn new(value: Value) -> Self {
        Self(Arc::new(Inner {
            value,
            lazy: None,
            memo: OnceLock::new(),
        }))
    }

    /// The value of `text` (JSON that Plume wrote), read when it is first used: a value that
    /// a call may never look at (a connection's login, which the `authenticate` hook replaces)
    /// costs a copy of its text, not a parse.
    #[cfg(feature = "server")]
    pub(crate) fn from_json_text(text: Box<str>) -> Self {
        Self(Arc::new(Inner {
            value: Value::Null,
            lazy: Some(Lazy {
                text,
                value: OnceLock::new(),
            }),
            memo: OnceLock::new(),
        }))
    }

    /// The value, to change: copied first when another holder shares it (the others keep the
    /// value as it was).
    pub fn make_mut(&mut self) -> &mut Value {
        let inner = Arc::make_mut(&mut self.0);
        // Unique already: what was kept of the old value no longer describes it.
        inner.memo.take();
        if let Some(lazy) = inner.lazy.take() {
            inner.value = lazy.value.into_inner().unwrap_or_else(|| read(&lazy.text));
        }
        &mut inner.value
    }

    /// The value itself: moved out when no one else holds it, copied otherwise.
    pub fn into_value(self) -> Value {
        match Arc::try_unwrap(self.0) {
            Ok(inner) => inner.into_value(),
            Err(shared) => shared.value().clone(),
        }
    }

    /// True when both share one value (not a comparison of values: that is `==`).
    pub fn ptr_eq(a: &Self, b: &Self) -> bool {
        Arc::ptr_eq(&a.0, &b.0)
    }

    /// For transports: the bytes of one encoding of this value, made by `encode` the first time
    /// they are asked for and kept with the value until [`make_mut`](Self::make_mut), so a
    /// value sent with every call (a cached user) is encoded once. `kind` names the encoding
    /// (the caller's own numbering); one is kept: asked for another kind, the answer is `None`
    /// (encode it yourself). So is the answer when `encode` declined (`None`), which is kept too.
    #[doc(hidden)]
    pub fn memo(&self, kind: u8, encode: impl FnOnce(&Value) -> Option<Bytes>) -> Option<&Bytes> {
        let memo = self.0.memo.get_or_init(|| Memo {
            kind,
            bytes: encode(self.0.value()),
        });
        if memo.kind == kind {
            memo.bytes.as_ref()
        } else {
            None
        }
    }
}

impl Deref for SharedValue {
    type Target = Value;

    fn deref(&self) -> &Value {
        self.0.value()
    }
}

impl AsRef<Value> for SharedValue {
    fn as_ref(&self) -> &Value {
        self.0.value()
    }
}

impl From<Value> for SharedValue {
    fn from(value: Value) -> Self {
        Self::new(value)
    }
}

impl From<SharedValue> for Value {
    fn from(shared: SharedValue) -> Self {
        shared.into_value()
    }
}

impl Default for SharedValue {
    /// `null`.
    fn default() -> Self {
        Self::new(Value::Null)
    }
}

impl PartialEq for SharedValue {
    fn eq(&self, other: &Self) -> bool {
        Self::ptr_eq(self, other) || self.0.value() == other.0.value()
    }
}

impl Eq for SharedValue {}

impl PartialEq<Value> for SharedValue {
    fn eq(&self, other: &Value) -> bool {
        self.0.value() == other
    }
}

impl PartialEq<SharedValue> for Value {
    fn eq(&self, other: &SharedValue) -> bool {
        self == other.0.value()
    }
}

impl fmt::Debug for SharedValue {
    /// As the value.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.0.value(), f)
    }
}

impl fmt::Display for SharedValue {
    /// The value's JSON text.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self.0.value(), f)
    }
}

impl Serialize for SharedValue {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.value().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for SharedValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Value::deserialize(deserializer).map(Self::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn clones_share_and_a_change_copies() {
        let a = SharedValue::from(json!({"id": 1}));
        let mut b = a.clone();
        assert!(SharedValue::ptr_eq(&a, &b));
        b.make_mut()["id"] = json!(2);
        assert!(!SharedValue::ptr_eq(&a, &b));
        assert_eq!(*a, json!({"id": 1}));
        assert_eq!(b, json!({"id": 2}));
        // Alone, a change is made in place.
        let before = Arc::as_ptr(&b.0);
        b.make_mut()["id"] = json!(3);
        assert_eq!(Arc::as_ptr(&b.0), before);
        assert_eq!(b.clone().into_value(), json!({"id": 3}));
        assert_eq!(b.into_value(), json!({"id": 3}));
    }

    #[test]
    fn the_memo_is_kept_per_kind_and_dropped_by_a_change() {
        let mut v = SharedValue::from(json!([1]));
        let mut calls = 0;
        let mut encode = |kind: u8, v: &SharedValue| {
            v.memo(kind, |value| {
                calls += 1;
                Some(Bytes::from(value.to_string()))
            })
            .cloned()
        };
        assert_eq!(encode(1, &v), Some(Bytes::from("[1]")));
        assert_eq!(encode(1, &v.clone()), Some(Bytes::from("[1]")));
        // One kind is kept: another is not made.
        assert_eq!(encode(2, &v), None);
        v.make_mut()[0] = json!(2);
        assert_eq!(encode(2, &v), Some(Bytes::from("[2]")));
        assert_eq!(calls, 2);
        // A declined encoding is remembered.
        let w = SharedValue::from(json!(null));
        assert_eq!(w.memo(1, |_| None), None);
        assert_eq!(w.memo(1, |_| Some(Bytes::new())), None);
    }

    #[test]
    fn it_serializes_and_compares_as_its_value() {
        let v = SharedValue::from(json!({"a": [1, "x"]}));
        assert_eq!(
            serde_json::to_string(&v).ok(),
            Some(r#"{"a":[1,"x"]}"#.into())
        );
        assert_eq!(format!("{v:?}"), format!("{:?}", json!({"a": [1, "x"]})));
        assert_eq!(v.to_string(), r#"{"a":[1,"x"]}"#);
        let back: SharedValue = serde_json::from_str(r#"{"a":[1,"x"]}"#).unwrap_or_default();
        assert_eq!(back, v);
        assert_eq!(json!({"a": [1, "x"]}), v);
        assert_eq!(SharedValue::default(), json!(null));
    }

    #[cfg(feature = "server")]
    fn lazy(v: &Value) -> SharedValue {
        SharedValue::from_json_text(v.to_string().into())
    }

    #[cfg(feature = "server")]
    fn is_read(v: &SharedValue) -> bool {
        v.0.lazy.as_ref().is_none_or(|l| l.value.get().is_some())
    }

    #[cfg(feature = "server")]
    #[test]
    fn a_value_from_json_text_is_read_when_first_used_and_behaves_as_its_value() {
        let value = json!({"id": 7, "name": "é\"x", "tags": [1, null, {"k": true}]});
        // Not read until asked.
        let v = lazy(&value);
        let shared = v.clone();
        assert!(!is_read(&v));
        assert_eq!(*v, value);
        assert!(is_read(&shared), "one read, for every holder");
        // Every way of looking at it sees the value.
        for v in [lazy(&value), lazy(&value)] {
            assert_eq!(v.to_string(), value.to_string());
        }
        assert_eq!(lazy(&value), SharedValue::from(value.clone()));
        assert_eq!(lazy(&value), value);
        assert_eq!(value, lazy(&value));
        assert_eq!(format!("{:?}", lazy(&value)), format!("{value:?}"));
        assert_eq!(
            serde_json::to_string(&lazy(&value)).ok(),
            serde_json::to_string(&value).ok()
        );
        assert_eq!(lazy(&value).into_value(), value);
        assert_eq!(lazy(&value).clone().into_value(), value);
        let memo = lazy(&value)
            .memo(1, |v| Some(Bytes::from(v.to_string())))
            .cloned();
        assert_eq!(memo, Some(Bytes::from(value.to_string())));
        // A change: read first (shared or alone, read or not), then changed.
        let mut alone = lazy(&value);
        alone.make_mut()["id"] = json!(8);
        assert_eq!(alone["id"], 8);
        assert_eq!(alone["name"], value["name"]);
        let a = lazy(&value);
        let mut b = a.clone();
        b.make_mut()["id"] = json!(9);
        assert_eq!((a["id"].clone(), b["id"].clone()), (json!(7), json!(9)));
        // Text nested past serde_json's recursion limit reads as null.
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        assert_eq!(*SharedValue::from_json_text(deep.into()), Value::Null);
    }
}
