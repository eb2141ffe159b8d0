//! Record helpers both adapters (memory and `plume-sql`) use.

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::{Error, Result};

/// JavaScript truthiness of an id value in created data: `null`, `false`, `0` and `""` mean "no
/// id" (the adapter makes one), as in the Feathers adapters.
///
/// ```
/// use plume::memory::is_truthy;
/// use serde_json::json;
///
/// assert!(!is_truthy(&json!(0)) && !is_truthy(&json!("")) && !is_truthy(&json!(null)));
/// assert!(is_truthy(&json!(5)) && is_truthy(&json!("a")));
/// ```
pub fn is_truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64() != Some(0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(_) | Value::Object(_) => true,
    }
}

/// `record` as a `T`, or a `BadRequest` naming the path of the first field that does not fit
/// (what a typed adapter answers for a stored record of the wrong shape).
///
/// ```
/// use plume::memory::from_record;
/// use serde_json::json;
///
/// #[derive(Debug, serde::Deserialize)]
/// struct Todo { text: String }
///
/// assert_eq!(from_record::<Todo>(json!({ "text": "a" })).unwrap().text, "a");
/// let err = from_record::<Todo>(json!({ "text": 1 })).unwrap_err();
/// assert!(err.to_string().contains("'text'"));
/// ```
pub fn from_record<T: DeserializeOwned>(record: Value) -> Result<T> {
    serde_path_to_error::deserialize(&record).map_err(|err| {
        Error::bad_request(format!(
            "Invalid record at '{}': {}",
            err.path(),
            err.inner()
        ))
    })
}
