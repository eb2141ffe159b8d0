//! Conversions used by the code `#[service]` generates (reached through `plume::__private`).
//!
//! The service side turns JSON into the method's typed arguments (a failure is a BadRequest that
//! names the field) and typed results back into JSON. The client side does the reverse.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::params::Id;

/// Deserialize `data` into `D`. A failure is a BadRequest whose message names the offending field
/// (`Invalid data at 'items[0].title': ...`).
pub fn from_data<D: DeserializeOwned>(value: Value) -> Result<D> {
    serde_path_to_error::deserialize(value).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        if path == "." {
            Error::bad_request(format!("Invalid data: {inner}"))
        } else {
            Error::bad_request(format!("Invalid data at '{path}': {inner}"))
        }
    })
}

/// Convert an id into the method's id type `T`.
///
/// The id's own JSON value is tried first. Ids that arrive in a URL are strings, so a string id
/// is then read as a JSON literal (`"5"` gives `5` for an `i64`), and an integer id as a string
/// (`5` gives `"5"` for a `String`). A failure is a BadRequest.
pub fn from_id<T: DeserializeOwned>(id: Id) -> Result<T> {
    let first = match serde_json::from_value::<T>(id.to_value()) {
        Ok(v) => return Ok(v),
        Err(err) => err,
    };
    let second = match &id {
        Id::Str(s) => serde_json::from_str::<Value>(s)
            .ok()
            .and_then(|literal| serde_json::from_value::<T>(literal).ok()),
        Id::Int(i) => serde_json::from_value::<T>(Value::String(i.to_string())).ok(),
    };
    second.ok_or_else(|| Error::bad_request(format!("Invalid id '{id}': {first}")))
}

/// Convert an optional id (`patch` and `remove`) into the method's id type `T`.
///
/// `T` is usually `Option<Id>` or `Option<i64>`; a missing id gives `None`. When `T` is not an
/// `Option` the id is required, and a missing one is a BadRequest naming `method`.
pub fn from_opt_id<T: DeserializeOwned>(id: Option<Id>, method: &str) -> Result<T> {
    match id {
        Some(id) => from_id(id),
        None => serde_json::from_value::<T>(Value::Null).map_err(|_| {
            Error::bad_request(format!("An id must be provided to the '{method}' method"))
        }),
    }
}

/// Serialize a method's result. A failure is a server error (logged, not sent).
pub fn to_value<R: Serialize>(result: R) -> Result<Value> {
    serde_json::to_value(result).map_err(Error::internal)
}

/// A method's result on its way to JSON ([`ResultJson::json`] picks how, by its type): a
/// `serde_json::Value` is handed over as it is, anything else is serialized ([`to_value`]).
/// Serializing a `Value` into a `Value` would copy every string and map of it (most services
/// answer a `Value`).
#[derive(Debug)]
pub struct Out<R>(pub Option<R>);

/// A result that is a `serde_json::Value` already: taken as it is. Picked over
/// [`SerializeJson`] for `Out<Value>` (method resolution tries the receiver `&mut Out<Value>`
/// before the auto-referenced `&mut &mut Out<R>`).
pub trait ResultJson {
    /// The result as JSON.
    fn json(&mut self) -> Result<Value>;
}

impl ResultJson for Out<Value> {
    fn json(&mut self) -> Result<Value> {
        Ok(self.0.take().unwrap_or(Value::Null))
    }
}

/// Any other result: serialized.
pub trait SerializeJson {
    /// The result as JSON.
    fn json(&mut self) -> Result<Value>;
}

impl<R: Serialize> SerializeJson for &mut Out<R> {
    fn json(&mut self) -> Result<Value> {
        match self.0.take() {
            Some(result) => to_value(result),
            None => Ok(Value::Null),
        }
    }
}

/// Serialize a client argument (`data`). A failure is a BadRequest.
pub fn to_data<D: Serialize>(data: D) -> Result<Value> {
    serde_json::to_value(data).map_err(|err| Error::bad_request(format!("Invalid data: {err}")))
}

/// Turn a client's typed id into an [`Id`]: it must serialize to an integer or a string.
pub fn to_id<T: Serialize>(id: T) -> Result<Id> {
    let value =
        serde_json::to_value(id).map_err(|err| Error::bad_request(format!("Invalid id: {err}")))?;
    Id::from_value(&value).ok_or_else(|| {
        Error::bad_request(format!(
            "Invalid id {value}: expected an integer or a string"
        ))
    })
}

/// Turn a client's typed optional id into an `Option<Id>`: `null` gives `None`.
pub fn to_opt_id<T: Serialize>(id: T) -> Result<Option<Id>> {
    let value =
        serde_json::to_value(id).map_err(|err| Error::bad_request(format!("Invalid id: {err}")))?;
    if value.is_null() {
        return Ok(None);
    }
    Id::from_value(&value).map(Some).ok_or_else(|| {
        Error::bad_request(format!(
            "Invalid id {value}: expected an integer or a string"
        ))
    })
}

/// Deserialize a result a client received into `R`. A mismatch is a GeneralError that names the
/// field.
pub fn from_result<R: DeserializeOwned>(value: Value) -> Result<R> {
    serde_path_to_error::deserialize(value).map_err(|err| {
        let path = err.path().to_string();
        Error::general_error(format!(
            "Unexpected result at '{path}': {}",
            err.into_inner()
        ))
    })
}

/// The MethodNotAllowed answer for a custom method the service does not define.
pub fn unknown_method(method: &str) -> Error {
    Error::method_not_allowed(format!("Method '{method}' not allowed"))
}

/// Requires `Default` for services registered with `#[service(path = "...")]`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` must implement `Default` to be registered with `#[service(path = \"...\")]`",
    label = "registered here",
    note = "derive or implement `Default`, or drop `path = ...` and mount the service with `App::use_service`"
)]
pub trait RegisterDefault: Sized {
    /// Build the service for the registry.
    fn make() -> Box<dyn crate::Service>;
}

impl<T: Default + crate::Service> RegisterDefault for T {
    fn make() -> Box<dyn crate::Service> {
        Box::new(T::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;
    use serde::Deserialize;
    use serde_json::json;

    #[derive(Debug, Deserialize, PartialEq)]
    struct Item {
        title: String,
        tags: Vec<String>,
    }

    #[test]
    fn data_errors_name_the_field() {
        let err = from_data::<Item>(json!({"title": 5, "tags": []})).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::BadRequest);
        assert!(err.message().contains("'title'"), "{}", err.message());
        let err = from_data::<Item>(json!({"title": "a", "tags": ["x", 1]})).unwrap_err();
        assert!(err.message().contains("'tags[1]'"), "{}", err.message());
        let err = from_data::<Item>(json!({"tags": []})).unwrap_err();
        assert!(err.message().contains("`title`"), "{}", err.message());
        let ok = from_data::<Item>(json!({"title": "a", "tags": ["b"]})).unwrap();
        assert_eq!(
            ok,
            Item {
                title: "a".into(),
                tags: vec!["b".into()]
            }
        );
    }

    #[test]
    fn ids_convert_across_representations() {
        assert_eq!(from_id::<i64>(Id::Str("5".into())).unwrap(), 5);
        assert_eq!(from_id::<i64>(Id::Int(5)).unwrap(), 5);
        assert_eq!(from_id::<String>(Id::Int(5)).unwrap(), "5");
        assert_eq!(
            from_id::<Id>(Id::Str("a".into())).unwrap(),
            Id::Str("a".into())
        );
        assert_eq!(
            from_id::<Option<u32>>(Id::Str("7".into())).unwrap(),
            Some(7)
        );
        let err = from_id::<i64>(Id::Str("abc".into())).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::BadRequest);
        assert_eq!(from_opt_id::<Option<i64>>(None, "patch").unwrap(), None);
        assert_eq!(
            from_opt_id::<Option<i64>>(Some(Id::Str("3".into())), "patch").unwrap(),
            Some(3)
        );
        let err = from_opt_id::<i64>(None, "remove").unwrap_err();
        assert!(err.message().contains("'remove'"));
    }

    #[test]
    fn client_side_conversions() {
        assert_eq!(to_id(5_i64).unwrap(), Id::Int(5));
        assert_eq!(to_id("x").unwrap(), Id::Str("x".into()));
        assert_eq!(to_id(true).unwrap_err().kind(), ErrorKind::BadRequest);
        assert_eq!(to_opt_id(None::<Id>).unwrap(), None);
        assert_eq!(to_opt_id(Some(4_u8)).unwrap(), Some(Id::Int(4)));
        let err = from_result::<Item>(json!({"title": [], "tags": []})).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::GeneralError);
        assert!(err.message().contains("'title'"));
        assert_eq!(unknown_method("x").kind(), ErrorKind::MethodNotAllowed);
    }

    #[test]
    // The borrow picks the impl (as in the code `#[service]` generates).
    #[allow(clippy::needless_borrow)]
    fn a_value_result_is_taken_as_it_is_and_others_serialized() {
        #[derive(Serialize)]
        struct Page {
            total: u32,
        }
        let v = serde_json::json!({"data": [{"id": 1}], "total": 1});
        assert_eq!((&mut Out(Some(v.clone()))).json().ok(), Some(v));
        assert_eq!(
            (&mut Out(Some(Page { total: 2 }))).json().ok(),
            Some(serde_json::json!({"total": 2}))
        );
        // A type that does not serialize to JSON (a map with non-string keys) is an error.
        let odd: std::collections::BTreeMap<(u8, u8), u8> = [((1, 2), 3)].into();
        assert!((&mut Out(Some(odd))).json().is_err());
    }
}
