//! JSON-schema rules in patterns, laid out as hemera-ajv's (Hemera's JSON-schema validator):
//!
//! - `properties: {a: {…}, b: {…}}`: each payload property named there must fit its schema
//!   (the rule is `{"type": "object", "properties": …}`; a property not sent is not checked);
//! - `schema: {request: {…}}`: a whole JSON schema for the payload (`required`, `additionalProperties`,
//!   … as you write them).
//!
//! Object values never take part in matching (see [`crate::pattern`]), so these keys only add the
//! rule. The rule is compiled once, at `add`; a schema that is not valid JSON schema is an error
//! there. A payload that breaks it is answered with a `PayloadValidationError` naming the field,
//! and the handler is not called.

use jsonschema::error::ValidationErrorKind;
use jsonschema::paths::LocationSegment;
use jsonschema::{ValidationError, Validator};
use serde_json::{Map, Value, json};

use crate::error::HemeraError;
use crate::pattern::kind_of;

/// The compiled rule of an added pattern.
pub(crate) struct Schema {
    validator: Validator,
}

impl std::fmt::Debug for Schema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Schema").finish_non_exhaustive()
    }
}

impl Schema {
    /// The rule of an added pattern (its `properties` or `schema` object), if it has one.
    pub(crate) fn of(source: &Map<String, Value>) -> Result<Option<Schema>, HemeraError> {
        let properties = source.get("properties").filter(|v| v.is_object());
        let whole = source.get("schema").filter(|v| v.is_object());
        let rule = match (properties, whole) {
            (None, None) => return Ok(None),
            (Some(_), Some(_)) => {
                return Err(HemeraError::hemera(
                    "a pattern has either `properties` or `schema` as its JSON-schema rule, not both",
                ));
            }
            (Some(properties), None) => json!({"type": "object", "properties": properties}),
            (None, Some(Value::Object(schema))) => {
                if let Some(key) = schema.keys().find(|k| *k != "request") {
                    return Err(HemeraError::hemera(format!(
                        "`schema.{key}` is not supported: a pattern's `schema` holds `request`, \
                         the JSON schema of the payload"
                    )));
                }
                match schema.get("request") {
                    Some(rule @ (Value::Object(_) | Value::Bool(_))) => rule.clone(),
                    Some(other) => {
                        return Err(HemeraError::hemera(format!(
                            "`schema.request` must be a JSON schema (an object), got {}",
                            kind_of(other)
                        )));
                    }
                    None => return Ok(None),
                }
            }
            (None, Some(_)) => return Ok(None),
        };
        let validator = jsonschema::validator_for(&rule).map_err(|e| {
            HemeraError::hemera(format!(
                "the pattern's JSON-schema rule is not valid JSON schema: {e} (at {})",
                pointer_or_root(e.instance_path().as_str())
            ))
        })?;
        Ok(Some(Schema { validator }))
    }

    /// Check `payload` (the message without its `$` keys): the first breach as a
    /// `PayloadValidationError` with `field` (the property, `a` or `items[2].id`), `instancePath`
    /// (its JSON pointer) and `keyword` (the schema keyword it breaks).
    pub(crate) fn check(&self, payload: &Value) -> Result<(), HemeraError> {
        self.validator.validate(payload).map_err(|e| breach(&e))
    }
}

fn breach(e: &ValidationError<'_>) -> HemeraError {
    let mut field = String::new();
    let mut pointer = e.instance_path().as_str().to_owned();
    for segment in e.instance_path().iter() {
        match segment {
            LocationSegment::Property(p) => {
                if !field.is_empty() {
                    field.push('.');
                }
                field.push_str(&p);
            }
            LocationSegment::Index(i) => field.push_str(&format!("[{i}]")),
        }
    }
    // A missing property is named itself, not its parent object.
    if let ValidationErrorKind::Required { property } = e.kind() {
        let name = property
            .as_str()
            .map_or_else(|| property.to_string(), str::to_owned);
        if !field.is_empty() {
            field.push('.');
        }
        field.push_str(&name);
        pointer.push('/');
        pointer.push_str(&name.replace('~', "~0").replace('/', "~1"));
    }
    HemeraError::payload_validation(&field, e.to_string())
        .with("instancePath", Value::from(pointer))
        .with("keyword", Value::from(e.kind().keyword()))
}

fn pointer_or_root(pointer: &str) -> &str {
    if pointer.is_empty() {
        "the root"
    } else {
        pointer
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema(pattern: Value) -> Result<Option<Schema>, HemeraError> {
        Schema::of(pattern.as_object().expect("object"))
    }

    fn rule(pattern: Value) -> Schema {
        schema(pattern).expect("valid").expect("has a rule")
    }

    #[test]
    fn patterns_without_a_rule_have_none() {
        for p in [
            json!({"topic": "t"}),
            json!({"topic": "t", "properties": "a primitive is matched, not a rule"}),
            json!({"topic": "t", "other": {"type": "number"}}),
            json!({"topic": "t", "schema": {}}),
        ] {
            assert!(schema(p.clone()).expect("valid").is_none(), "{p}");
        }
    }

    #[test]
    fn properties_rules_name_the_field() {
        let s = rule(json!({"topic": "math", "properties": {
            "a": {"type": "number"},
            "items": {"type": "array", "items": {"type": "object", "properties": {"id": {"type": "integer"}}}}
        }}));
        assert_eq!(s.check(&json!({"topic": "math", "a": 1})), Ok(()));
        assert_eq!(
            s.check(&json!({"topic": "math"})),
            Ok(()),
            "absent: not checked"
        );
        let e = s.check(&json!({"a": "x"})).expect_err("a is a string");
        assert_eq!(e.name, "PayloadValidationError");
        assert_eq!(e.props["field"], json!("a"));
        assert_eq!(e.props["instancePath"], json!("/a"));
        assert_eq!(e.props["keyword"], json!("type"));
        assert!(
            e.message.contains("`a`") && e.message.contains("number"),
            "{}",
            e.message
        );
        let e = s
            .check(&json!({"items": [{"id": 1}, {"id": 2}, {"id": "3"}]}))
            .expect_err("items[2].id");
        assert_eq!(e.props["field"], json!("items[2].id"));
        assert_eq!(e.props["instancePath"], json!("/items/2/id"));
    }

    #[test]
    fn whole_schemas_check_required_and_more() {
        let s = rule(json!({"topic": "t", "schema": {"request": {
            "type": "object", "required": ["a", "b"],
            "properties": {"a": {"type": "number", "minimum": 0}, "b": {"type": "string"}}
        }}}));
        assert_eq!(s.check(&json!({"a": 1, "b": "x"})), Ok(()));
        let e = s.check(&json!({"a": 1})).expect_err("b missing");
        assert_eq!(e.props["field"], json!("b"));
        assert_eq!(e.props["instancePath"], json!("/b"));
        assert_eq!(e.props["keyword"], json!("required"));
        let e = s.check(&json!({"a": -1, "b": "x"})).expect_err("a < 0");
        assert_eq!(
            e.message,
            "invalid payload at `a`: -1 is less than the minimum of 0"
        );
        assert_eq!(e.props["keyword"], json!("minimum"));
        assert_eq!(e.props["field"], json!("a"));
    }

    #[test]
    fn bad_rules_are_refused_at_add() {
        for (p, needle) in [
            (
                json!({"topic": "t", "properties": {"a": {"type": "numbr"}}}),
                "not valid JSON schema",
            ),
            (
                json!({"topic": "t", "schema": {"request": {"minimum": "zero"}}}),
                "not valid JSON schema",
            ),
            (
                json!({"topic": "t", "schema": {"request": 3}}),
                "must be a JSON schema",
            ),
            (
                json!({"topic": "t", "schema": {"response": {"type": "number"}}}),
                "`schema.response` is not supported",
            ),
            (
                json!({"topic": "t", "properties": {}, "schema": {"request": {}}}),
                "not both",
            ),
        ] {
            let e = schema(p.clone()).expect_err("bad rule");
            assert_eq!(e.name, "HemeraError", "{p}");
            assert!(e.message.contains(needle), "{p}: {}", e.message);
        }
    }
}
