//! Feathers errors: one type, every class, the exact wire shape.

use std::fmt;

use serde::de::{self, Deserializer};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A `Result` whose error is a Feathers [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

macro_rules! kinds {
    ($( $(#[$doc:meta])* $variant:ident = $code:literal, $name:literal, $class:literal, $ctor:ident; )*) => {
        /// The class of a Feathers error, with its HTTP status code.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum ErrorKind {
            $( $(#[$doc])* $variant, )*
        }

        impl ErrorKind {
            /// Every class, in code order.
            pub const ALL: &'static [ErrorKind] = &[$(ErrorKind::$variant),*];

            /// The HTTP status code, e.g. `404`.
            pub const fn code(self) -> u16 {
                match self { $(ErrorKind::$variant => $code,)* }
            }

            /// The Feathers `name`, e.g. `"NotFound"`.
            pub const fn name(self) -> &'static str {
                match self { $(ErrorKind::$variant => $name,)* }
            }

            /// The Feathers `className`, e.g. `"not-found"`.
            pub const fn class_name(self) -> &'static str {
                match self { $(ErrorKind::$variant => $class,)* }
            }

            /// The class with this Feathers `name`.
            pub fn from_name(name: &str) -> Option<Self> {
                match name { $($name => Some(ErrorKind::$variant),)* _ => None }
            }

            /// The class with this Feathers `className`.
            pub fn from_class_name(class: &str) -> Option<Self> {
                match class { $($class => Some(ErrorKind::$variant),)* _ => None }
            }

            /// The class for an HTTP status code; other 4xx codes map to BadRequest and other
            /// codes to GeneralError.
            pub fn from_code(code: u16) -> Self {
                match code {
                    $($code => ErrorKind::$variant,)*
                    400..=499 => ErrorKind::BadRequest,
                    _ => ErrorKind::GeneralError,
                }
            }
        }

        impl Error {
            $(
                #[doc = concat!("A `", $name, "` (", stringify!($code), ") error with this message.")]
                pub fn $ctor(message: impl Into<String>) -> Self {
                    Self::new(ErrorKind::$variant, message)
                }
            )*
        }
    };
}

kinds! {
    /// 400: the request is malformed or invalid.
    BadRequest = 400, "BadRequest", "bad-request", bad_request;
    /// 401: no or invalid credentials.
    NotAuthenticated = 401, "NotAuthenticated", "not-authenticated", not_authenticated;
    /// 402: payment required.
    PaymentError = 402, "PaymentError", "payment-error", payment_error;
    /// 403: authenticated but not allowed.
    Forbidden = 403, "Forbidden", "forbidden", forbidden;
    /// 404: no such record, service or route.
    NotFound = 404, "NotFound", "not-found", not_found;
    /// 405: the service does not offer this method.
    MethodNotAllowed = 405, "MethodNotAllowed", "method-not-allowed", method_not_allowed;
    /// 406: not acceptable.
    NotAcceptable = 406, "NotAcceptable", "not-acceptable", not_acceptable;
    /// 408: the provider did not answer in time.
    Timeout = 408, "Timeout", "timeout", timeout;
    /// 409: conflict with the current state.
    Conflict = 409, "Conflict", "conflict", conflict;
    /// 410: gone.
    Gone = 410, "Gone", "gone", gone;
    /// 411: length required.
    LengthRequired = 411, "LengthRequired", "length-required", length_required;
    /// 422: well-formed but unprocessable.
    Unprocessable = 422, "Unprocessable", "unprocessable", unprocessable;
    /// 429: too many requests.
    TooManyRequests = 429, "TooManyRequests", "too-many-requests", too_many_requests;
    /// 500: an internal failure.
    GeneralError = 500, "GeneralError", "general-error", general_error;
    /// 501: not implemented.
    NotImplemented = 501, "NotImplemented", "not-implemented", not_implemented;
    /// 502: a bad answer from an upstream.
    BadGateway = 502, "BadGateway", "bad-gateway", bad_gateway;
    /// 503: no provider can take the call now.
    Unavailable = 503, "Unavailable", "unavailable", unavailable;
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A Feathers error: a class, a message, and optional `data` and `errors`.
///
/// It serializes to exactly `{name, message, code, className, data?, errors?}` and parses back to
/// the same class, so it keeps its class across REST, socket.io and the mesh.
///
/// ```
/// use plume::{Error, ErrorKind};
///
/// let err = Error::not_found("No record found for id '7'");
/// let json = serde_json::to_value(&err).unwrap();
/// assert_eq!(json["className"], "not-found");
/// assert_eq!(json["code"], 404);
/// let back: Error = serde_json::from_value(json).unwrap();
/// assert_eq!(back.kind(), ErrorKind::NotFound);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    // Boxed: errors travel in every `Result`, so the type stays small.
    data: Option<Box<Value>>,
    errors: Option<Box<Value>>,
}

impl Error {
    /// An error of this class with this message.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            data: None,
            errors: None,
        }
    }

    /// Attach `data`.
    #[must_use]
    pub fn with_data(mut self, data: Value) -> Self {
        self.data = Some(Box::new(data));
        self
    }

    /// Attach `errors` (for example per-field validation errors).
    #[must_use]
    pub fn with_errors(mut self, errors: Value) -> Self {
        self.errors = Some(Box::new(errors));
        self
    }

    /// A 500 error whose cause is logged here and not sent to the client.
    pub fn internal(cause: impl fmt::Display) -> Self {
        tracing::error!(target: "plume::error", %cause, "internal error");
        Self::general_error("Internal error")
    }

    /// The standard MethodNotAllowed for a method a service does not offer.
    pub fn method_not_allowed_on(method: &str, path: &str) -> Self {
        Self::method_not_allowed(format!("Method '{method}' not allowed on service '{path}'"))
    }

    /// The standard NotFound for a missing record.
    pub fn no_record(id: impl fmt::Display) -> Self {
        Self::not_found(format!("No record found for id '{id}'"))
    }

    /// The class.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The HTTP status code.
    pub fn code(&self) -> u16 {
        self.kind.code()
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The `data` member, if any.
    pub fn data(&self) -> Option<&Value> {
        self.data.as_deref()
    }

    /// The `errors` member, if any.
    pub fn errors(&self) -> Option<&Value> {
        self.errors.as_deref()
    }

    /// The Feathers JSON shape of this error.
    pub fn to_json(&self) -> Value {
        // invariant: serializing this type only builds a map of strings, numbers and JSON values.
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// Parse a Feathers error body. Anything that is not one becomes a GeneralError that keeps
    /// the original value in `data`, so nothing arrives as `{}`.
    pub fn from_json(value: Value) -> Self {
        match serde_json::from_value::<Error>(value.clone()) {
            Ok(err) => err,
            Err(_) => Self::general_error("Malformed error").with_data(value),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.name(), self.message)
    }
}

impl std::error::Error for Error {}

impl From<serde_json::Error> for Error {
    fn from(err: serde_json::Error) -> Self {
        Self::bad_request(err.to_string())
    }
}

impl Serialize for Error {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let len = 4 + usize::from(self.data.is_some()) + usize::from(self.errors.is_some());
        let mut map = serializer.serialize_map(Some(len))?;
        map.serialize_entry("name", self.kind.name())?;
        map.serialize_entry("message", &self.message)?;
        map.serialize_entry("code", &self.kind.code())?;
        map.serialize_entry("className", self.kind.class_name())?;
        if let Some(data) = &self.data {
            map.serialize_entry("data", data)?;
        }
        if let Some(errors) = &self.errors {
            map.serialize_entry("errors", errors)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Error {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Wire {
            name: Option<String>,
            #[serde(default)]
            message: Option<String>,
            code: Option<u16>,
            class_name: Option<String>,
            data: Option<Value>,
            errors: Option<Value>,
        }
        let wire = Wire::deserialize(deserializer)?;
        let kind = wire
            .class_name
            .as_deref()
            .and_then(ErrorKind::from_class_name)
            .or_else(|| wire.name.as_deref().and_then(ErrorKind::from_name))
            .or_else(|| wire.code.map(ErrorKind::from_code))
            .ok_or_else(|| de::Error::custom("not a Feathers error: no name, className or code"))?;
        Ok(Self {
            kind,
            message: wire.message.unwrap_or_default(),
            data: wire.data.filter(|d| !d.is_null()).map(Box::new),
            errors: wire.errors.filter(|e| !e.is_null()).map(Box::new),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_class_has_the_exact_shape_and_round_trips() {
        let expected = [
            (400, "BadRequest", "bad-request"),
            (401, "NotAuthenticated", "not-authenticated"),
            (402, "PaymentError", "payment-error"),
            (403, "Forbidden", "forbidden"),
            (404, "NotFound", "not-found"),
            (405, "MethodNotAllowed", "method-not-allowed"),
            (406, "NotAcceptable", "not-acceptable"),
            (408, "Timeout", "timeout"),
            (409, "Conflict", "conflict"),
            (410, "Gone", "gone"),
            (411, "LengthRequired", "length-required"),
            (422, "Unprocessable", "unprocessable"),
            (429, "TooManyRequests", "too-many-requests"),
            (500, "GeneralError", "general-error"),
            (501, "NotImplemented", "not-implemented"),
            (502, "BadGateway", "bad-gateway"),
            (503, "Unavailable", "unavailable"),
        ];
        assert_eq!(ErrorKind::ALL.len(), expected.len());
        for (kind, (code, name, class)) in ErrorKind::ALL.iter().zip(expected) {
            let err = Error::new(*kind, "boom");
            let json = err.to_json();
            let obj = json.as_object().expect("an object");
            assert_eq!(obj.len(), 4, "{name}: only name, message, code, className");
            assert_eq!(obj["name"], name);
            assert_eq!(obj["message"], "boom");
            assert_eq!(obj["code"], code);
            assert_eq!(obj["className"], class);
            assert_eq!(Error::from_json(json), err);

            let full = err
                .clone()
                .with_data(json!({"a": 1}))
                .with_errors(json!([{"f": "x"}]));
            let json = full.to_json();
            assert_eq!(json.as_object().map(|o| o.len()), Some(6));
            assert_eq!(json["data"], json!({"a": 1}));
            assert_eq!(json["errors"], json!([{"f": "x"}]));
            assert_eq!(Error::from_json(json), full);
            assert_eq!(ErrorKind::from_code(code), *kind);
        }
    }

    #[test]
    fn parses_by_name_or_code_and_never_loses_a_foreign_error() {
        let e = Error::from_json(json!({"name": "Conflict", "message": "m"}));
        assert_eq!(e.kind(), ErrorKind::Conflict);
        let e = Error::from_json(json!({"code": 418, "message": "teapot"}));
        assert_eq!(e.kind(), ErrorKind::BadRequest);
        let e = Error::from_json(json!({}));
        assert_eq!(e.kind(), ErrorKind::GeneralError);
        assert_eq!(e.data(), Some(&json!({})));
    }

    #[test]
    fn display_names_the_class() {
        assert_eq!(Error::timeout("late").to_string(), "Timeout: late");
        assert_eq!(
            Error::method_not_allowed_on("update", "users").message(),
            "Method 'update' not allowed on service 'users'"
        );
    }
}
