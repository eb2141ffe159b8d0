//! A mesh act's reply as the caller reads it (`{result}` or `{error}`, see `crate::wire`):
//! straight from the reply's MessagePack, with no JSON map built for the reply itself.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use crate::envelope::outcome_of;
use crate::error::HemeraError;

/// A mesh reply as the caller reads it, straight from the reply's MessagePack (no map built):
/// `result` and `error` (other keys skipped), or what else the reply was.
#[derive(Debug)]
pub(crate) enum MeshOutcome {
    Object {
        result: Option<Value>,
        error: Option<Value>,
    },
    /// Not an object: what it was (for the error).
    Other(&'static str),
}

impl MeshOutcome {
    /// The act's outcome: the error when there is one, else the result.
    pub(crate) fn into_result(self) -> Result<Value, HemeraError> {
        match self {
            MeshOutcome::Object { result, error } => outcome_of(result, error),
            MeshOutcome::Other(kind) => Err(HemeraError::parse(format!(
                "the reply must be a JSON object, got {kind}"
            ))),
        }
    }
}

impl<'de> Deserialize<'de> for MeshOutcome {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(OutcomeVisitor)
    }
}

/// The key of a reply's entry.
enum OutcomeKey {
    Result,
    Error,
    Other,
}

impl<'de> Deserialize<'de> for OutcomeKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = OutcomeKey;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<OutcomeKey, E> {
                Ok(match v {
                    "result" => OutcomeKey::Result,
                    "error" => OutcomeKey::Error,
                    _ => OutcomeKey::Other,
                })
            }
        }
        d.deserialize_identifier(KeyVisitor)
    }
}

struct OutcomeVisitor;

impl OutcomeVisitor {
    fn other<E>(kind: &'static str) -> Result<MeshOutcome, E> {
        Ok(MeshOutcome::Other(kind))
    }
}

impl<'de> Visitor<'de> for OutcomeVisitor {
    type Value = MeshOutcome;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a reply")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<MeshOutcome, A::Error> {
        let (mut result, mut error) = (None, None);
        while let Some(key) = map.next_key::<OutcomeKey>()? {
            // The last of a repeated key wins, as in a JSON map.
            match key {
                OutcomeKey::Result => result = Some(map.next_value::<Value>()?),
                OutcomeKey::Error => error = Some(map.next_value::<Value>()?),
                OutcomeKey::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(MeshOutcome::Object { result, error })
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<MeshOutcome, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Self::other("array")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<MeshOutcome, E> {
        Self::other("boolean")
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<MeshOutcome, E> {
        Self::other("number")
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<MeshOutcome, E> {
        Self::other("number")
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<MeshOutcome, E> {
        Self::other("number")
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<MeshOutcome, E> {
        Self::other("string")
    }

    /// A version 2 reply (`crate::compact`), or else what a `bin` is in JSON (an array).
    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<MeshOutcome, E> {
        match crate::compact::read_reply(v) {
            Some(Ok((result, error))) => Ok(MeshOutcome::Object { result, error }),
            Some(Err(e)) => Err(E::custom(e)),
            None => Self::other("array"),
        }
    }

    fn visit_unit<E: de::Error>(self) -> Result<MeshOutcome, E> {
        Self::other("null")
    }

    fn visit_none<E: de::Error>(self) -> Result<MeshOutcome, E> {
        Self::other("null")
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<MeshOutcome, D::Error> {
        d.deserialize_any(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire;
    use plume_transport::Answer;
    use serde_json::json;

    /// A reply as the responder encodes it, read back as a value.
    /// (Also checks that its version 2 form reads as the same outcome.)
    fn mesh_reply(outcome: Result<Value, Value>) -> Value {
        if let Answer::Encoded(e) = wire::mesh_reply(&outcome, true).expect("encodes") {
            let v2: MeshOutcome = rmp_serde::from_slice(e.result_bytes()).expect("decodes");
            let want = outcome_of(outcome.clone().ok(), outcome.clone().err());
            assert_eq!(v2.into_result(), want);
        }
        match wire::mesh_reply(&outcome, false).expect("encodes") {
            Answer::Encoded(e) => rmp_serde::from_slice(e.result_bytes()).expect("decodes"),
            Answer::Value(v) => v,
        }
    }

    /// A reply as the caller reads it: from its MessagePack (a remote provider) and from its
    /// value (a provider on this node), the same outcome.
    fn outcome_of_reply(reply: &Value) -> Result<Value, HemeraError> {
        let packed = rmp_serde::to_vec_named(reply).expect("encodes");
        let from_bytes: MeshOutcome = rmp_serde::from_slice(&packed).expect("decodes");
        let from_value: MeshOutcome = serde_json::from_value(reply.clone()).expect("decodes");
        let (a, b) = (from_bytes.into_result(), from_value.into_result());
        assert_eq!(a, b, "{reply}");
        a
    }

    #[test]
    fn mesh_replies_carry_result_or_error() {
        assert_eq!(
            outcome_of_reply(&mesh_reply(Ok(json!([1])))),
            Ok(json!([1]))
        );
        assert_eq!(
            outcome_of_reply(&mesh_reply(Ok(json!({"result": 2})))),
            Ok(json!({"result": 2}))
        );
        let e = HemeraError::new("E", "m").with_code(2);
        let back = outcome_of_reply(&mesh_reply(Err(serde_json::to_value(&e).expect("encodes"))));
        assert_eq!(back, Err(e));
        // other keys are skipped; a null error is no error
        assert_eq!(
            outcome_of_reply(&json!({"x": {"y": [1]}, "result": 4, "error": null})),
            Ok(json!(4))
        );
        assert_eq!(outcome_of_reply(&json!({})), Ok(Value::Null));
        for (bad, kind) in [
            (json!(3), "number"),
            (json!("s"), "string"),
            (json!([1]), "array"),
            (Value::Null, "null"),
            (json!(true), "boolean"),
        ] {
            let e = outcome_of_reply(&bad).expect_err("not an object");
            assert_eq!(e.name, "HemeraParseError");
            assert!(e.message.ends_with(kind), "{}", e.message);
        }
    }
}
