//! The error of an act: Hemera's wire error object (`name`, `message`, and any other properties
//! such as `code`, `data` or `hops`), as the caller receives it.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Hemera's name for "no added pattern matches the message".
pub const PATTERN_NOT_FOUND: &str = "PatternNotFound";
/// Hemera's name for "no reply within `timeout$`" (created on the caller only).
pub const TIMEOUT_ERROR: &str = "TimeoutError";
/// The payload does not fit the handler's type (the field is named in `field` and `message`).
pub const PAYLOAD_VALIDATION_ERROR: &str = "PayloadValidationError";
/// An envelope that does not parse (not JSON, or a required part missing).
pub const PARSE_ERROR: &str = "HemeraParseError";
/// Hemera's generic error: bad arguments to `add`/`act`, transport failures.
pub const HEMERA_ERROR: &str = "HemeraError";

/// An error as it travels in a Hemera response envelope, and as [`act`](crate::Hemera::act)
/// returns it: a `name`, a `message`, and every other property the sender set (`code`, `data`,
/// `hops`, custom fields), kept as they came.
///
/// ```
/// use plume_pattern::HemeraError;
/// use serde_json::json;
///
/// let e = HemeraError::new("BusinessError", "bad").with_code("E_BAD").with_data(json!({"id": 1}));
/// assert_eq!(e.name, "BusinessError");
/// assert_eq!(e.code(), Some(&json!("E_BAD")));
/// assert_eq!(serde_json::to_value(&e).unwrap()["data"], json!({"id": 1}));
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[error("{name}: {message}")]
pub struct HemeraError {
    /// The error's name (`PatternNotFound`, `TimeoutError`, or the handler's own).
    pub name: String,
    /// What went wrong.
    #[serde(default)]
    pub message: String,
    /// Every other property (`code`, `data`, `hops`, `pattern`, `isServer`, …).
    #[serde(flatten)]
    pub props: Map<String, Value>,
}

impl HemeraError {
    /// An error with this name and message and no other property.
    pub fn new(name: impl Into<String>, message: impl Into<String>) -> Self {
        HemeraError {
            name: name.into(),
            message: message.into(),
            props: Map::new(),
        }
    }

    /// A [`HEMERA_ERROR`]: a bad argument or a transport failure.
    pub fn hemera(message: impl Into<String>) -> Self {
        HemeraError::new(HEMERA_ERROR, message)
    }

    /// A [`PARSE_ERROR`]: an envelope that does not parse.
    pub fn parse(message: impl Into<String>) -> Self {
        HemeraError::new(PARSE_ERROR, message)
    }

    /// A [`PAYLOAD_VALIDATION_ERROR`] about `field` (a dotted path; empty for the whole payload).
    pub fn payload_validation(field: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        let message = if field.is_empty() || field == "." {
            format!("invalid payload: {message}")
        } else {
            format!("invalid payload at `{field}`: {message}")
        };
        HemeraError::new(PAYLOAD_VALIDATION_ERROR, message).with("field", Value::from(field))
    }

    /// Hemera's `PatternNotFound` for the message whose method string is `pattern`.
    pub fn pattern_not_found(pattern: &str, app: &str) -> Self {
        HemeraError::new(PATTERN_NOT_FOUND, "No action found for this pattern")
            .with("app", Value::from(app))
            .with("isServer", Value::Bool(true))
            .with("pattern", Value::from(pattern))
    }

    /// Hemera's client-side `TimeoutError` for the message whose method string is `pattern`.
    pub fn timeout(pattern: &str, app: &str) -> Self {
        HemeraError::new(TIMEOUT_ERROR, "Client timeout")
            .with("app", Value::from(app))
            .with("isServer", Value::Bool(false))
            .with("pattern", Value::from(pattern))
    }

    /// Set property `key` (`name` and `message` are fields, not properties).
    pub fn with(mut self, key: &str, value: Value) -> Self {
        match key {
            "name" => {
                self.name = value
                    .as_str()
                    .map_or_else(|| value.to_string(), str::to_owned)
            }
            "message" => {
                self.message = value
                    .as_str()
                    .map_or_else(|| value.to_string(), str::to_owned)
            }
            _ => {
                self.props.insert(key.to_owned(), value);
            }
        }
        self
    }

    /// Set `code`.
    pub fn with_code(self, code: impl Into<Value>) -> Self {
        self.with("code", code.into())
    }

    /// Set `data`.
    pub fn with_data(self, data: Value) -> Self {
        self.with("data", data)
    }

    /// `code`, when the sender set one.
    pub fn code(&self) -> Option<&Value> {
        self.props.get("code")
    }

    /// `data`, when the sender set it.
    pub fn data(&self) -> Option<&Value> {
        self.props.get("data")
    }

    /// Whether this is the error named `name`.
    pub fn is(&self, name: &str) -> bool {
        self.name == name
    }

    /// Read an error object from the wire: anything with a string `name` is taken as it is;
    /// anything else becomes a `HemeraError` that quotes it (a peer's malformed error never
    /// turns into a success).
    pub(crate) fn from_wire(value: Value) -> Self {
        match serde_json::from_value::<HemeraError>(value.clone()) {
            Ok(e) => e,
            Err(_) => {
                HemeraError::hemera(format!("a peer replied with a malformed error: {value}"))
            }
        }
    }
}

impl From<plume::Error> for HemeraError {
    /// A Plume error (for example from a mesh call) keeps its class name, message and data.
    fn from(e: plume::Error) -> Self {
        let mut out = HemeraError::new(e.kind().name(), e.message()).with_code(e.code());
        if let Some(data) = e.data() {
            out = out.with_data(data.clone());
        }
        out
    }
}
