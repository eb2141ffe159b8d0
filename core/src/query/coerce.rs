//! Coercion of REST query strings to field types.

use std::collections::BTreeMap;
use std::fmt;

use serde_json::{Map, Number, Value};

use crate::error::{Error, Result};

/// The type of a queryable field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FieldType {
    /// A whole number (`i64`).
    Integer,
    /// Any number.
    Number,
    /// `true` or `false`.
    Boolean,
    /// A string.
    String,
}

impl fmt::Display for FieldType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FieldType::Integer => "an integer",
            FieldType::Number => "a number",
            FieldType::Boolean => "a boolean",
            FieldType::String => "a string",
        })
    }
}

/// The field types a query is coerced to: field name → [`FieldType`].
///
/// ```
/// use plume::query::{FieldType, Schema};
///
/// let schema = Schema::new()
///     .field("id", FieldType::Integer)
///     .field("done", FieldType::Boolean);
/// assert_eq!(schema.get("done"), Some(FieldType::Boolean));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Schema {
    fields: BTreeMap<String, FieldType>,
}

impl Schema {
    /// An empty schema (coerces only `$limit`, `$skip`, `$sort` and `$select`).
    pub fn new() -> Self {
        Self::default()
    }

    /// Add a field.
    #[must_use]
    pub fn field(mut self, name: impl Into<String>, ty: FieldType) -> Self {
        self.fields.insert(name.into(), ty);
        self
    }

    /// The type of a field, if the schema knows it.
    pub fn get(&self, name: &str) -> Option<FieldType> {
        self.fields.get(name).copied()
    }

    /// The fields and their types, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, FieldType)> {
        self.fields.iter().map(|(k, v)| (k.as_str(), *v))
    }
}

impl<S: Into<String>> FromIterator<(S, FieldType)> for Schema {
    fn from_iter<I: IntoIterator<Item = (S, FieldType)>>(iter: I) -> Self {
        Self {
            fields: iter.into_iter().map(|(k, v)| (k.into(), v)).collect(),
        }
    }
}

/// Coerce a query whose values arrived as strings (REST) to the types of `schema`, in place.
///
/// * Field values are coerced wherever they appear: plain equality, the operands of `$lt`,
///   `$lte`, `$gt`, `$gte`, `$ne`, the items of `$in`/`$nin`, and inside the branches of
///   `$or`/`$and` at any depth. Fields the schema does not name are left alone.
/// * `$in`/`$nin` operands and `$or`/`$and` lists given as qs-style objects (`{"0": …, "1": …}`,
///   which `qs` produces past 20 items) become arrays; a single `$in`/`$nin` value becomes a
///   one-item array.
/// * `$limit` and `$skip` become integers, `$sort` values `1` or `-1` (any positive or negative
///   integer is accepted), `$select` a list of names (from an array, a single string or a
///   qs-style object).
/// * `null` stays `null`. Values that already have the right type stay as they are, so a JSON
///   query from socket.io passes unchanged.
/// * Booleans follow Ajv's `coerceTypes` (what a Feathers schema app uses): the strings
///   `"true"`/`"false"` and the numbers `1`/`0`. The strings `"1"`/`"0"` are **not** booleans.
/// * Integers accept an integral string or number (`"5"`, `5.0`); numbers any finite decimal
///   (`"2.5"`, `"1e3"`). Strings accept numbers and booleans (written out).
///
/// A value that cannot be coerced is a `BadRequest` naming the field, e.g.
/// `Invalid query value for 'priority': expected a number`. Unknown `$` operators are left for
/// [`Query::parse`](super::Query::parse) to reject.
pub fn coerce(query: &mut Map<String, Value>, schema: &Schema) -> Result<()> {
    coerce_query(query, schema, true)
}

fn coerce_query(query: &mut Map<String, Value>, schema: &Schema, top: bool) -> Result<()> {
    for (key, value) in query.iter_mut() {
        match key.as_str() {
            "$limit" | "$skip" if top => *value = coerce_count(key, value)?,
            "$sort" if top => coerce_sort(value)?,
            "$select" if top => *value = coerce_select(value)?,
            "$or" | "$and" => {
                let mut branches =
                    into_list(value).ok_or_else(|| bad(key, "an array of queries"))?;
                for branch in &mut branches {
                    let Value::Object(obj) = branch else {
                        return Err(bad(key, "an array of queries"));
                    };
                    coerce_query(obj, schema, false)?;
                }
                *value = Value::Array(branches);
            }
            k if k.starts_with('$') => {}
            field => {
                if let Some(ty) = schema.get(field) {
                    coerce_property(field, value, ty)?;
                }
            }
        }
    }
    Ok(())
}

fn bad(field: &str, expected: &str) -> Error {
    Error::bad_request(format!(
        "Invalid query value for '{field}': expected {expected}"
    ))
}

fn coerce_property(field: &str, value: &mut Value, ty: FieldType) -> Result<()> {
    match value {
        Value::Object(ops) if ops.keys().any(|k| k.starts_with('$')) => {
            for (op, operand) in ops.iter_mut() {
                match op.as_str() {
                    "$in" | "$nin" => {
                        let mut items = match into_list(operand) {
                            Some(items) => items,
                            None => vec![operand.take()],
                        };
                        for item in &mut items {
                            *item = coerce_scalar(field, item, ty)?;
                        }
                        *operand = Value::Array(items);
                    }
                    "$lt" | "$lte" | "$gt" | "$gte" | "$ne" => {
                        *operand = coerce_scalar(field, operand, ty)?;
                    }
                    _ => {}
                }
            }
            Ok(())
        }
        other => {
            *other = coerce_scalar(field, other, ty)?;
            Ok(())
        }
    }
}

/// The items of an array, or of a qs-style object whose keys are all array indices (in index
/// order); `None` for anything else.
fn into_list(value: &mut Value) -> Option<Vec<Value>> {
    match value {
        Value::Array(items) => Some(std::mem::take(items)),
        Value::Object(obj) => {
            let items = indexed_values(obj)?.into_iter().cloned().collect();
            Some(items)
        }
        _ => None,
    }
}

/// The values of a qs-style object whose keys are all array indices, in index order.
pub(super) fn indexed_values(obj: &Map<String, Value>) -> Option<Vec<&Value>> {
    let mut indexed = obj
        .iter()
        .map(|(k, v)| {
            let canonical = k.parse::<usize>().ok().filter(|i| i.to_string() == *k)?;
            Some((canonical, v))
        })
        .collect::<Option<Vec<_>>>()?;
    indexed.sort_by_key(|(i, _)| *i);
    Some(indexed.into_iter().map(|(_, v)| v).collect())
}

fn coerce_scalar(field: &str, value: &Value, ty: FieldType) -> Result<Value> {
    let fail = || bad(field, &ty.to_string());
    if value.is_null() {
        return Ok(Value::Null);
    }
    match ty {
        FieldType::Integer => match value {
            Value::Number(n) if n.is_i64() || n.is_u64() => Ok(value.clone()),
            Value::Number(n) => integral(n.as_f64()).ok_or_else(fail),
            Value::String(s) => match s.parse::<i64>() {
                Ok(i) => Ok(Value::from(i)),
                Err(_) => integral(parse_finite(s)).ok_or_else(fail),
            },
            _ => Err(fail()),
        },
        FieldType::Number => match value {
            Value::Number(_) => Ok(value.clone()),
            Value::String(s) => match s.parse::<i64>() {
                Ok(i) => Ok(Value::from(i)),
                Err(_) => parse_finite(s)
                    .and_then(Number::from_f64)
                    .map(Value::Number)
                    .ok_or_else(fail),
            },
            _ => Err(fail()),
        },
        FieldType::Boolean => match value {
            Value::Bool(_) => Ok(value.clone()),
            Value::String(s) if s == "true" => Ok(Value::Bool(true)),
            Value::String(s) if s == "false" => Ok(Value::Bool(false)),
            Value::Number(n) if n.as_f64() == Some(1.0) => Ok(Value::Bool(true)),
            Value::Number(n) if n.as_f64() == Some(0.0) => Ok(Value::Bool(false)),
            _ => Err(fail()),
        },
        FieldType::String => match value {
            Value::String(_) => Ok(value.clone()),
            Value::Number(n) => Ok(Value::String(n.to_string())),
            Value::Bool(b) => Ok(Value::String(b.to_string())),
            _ => Err(fail()),
        },
    }
}

/// A finite float from a decimal string (`"2.5"`, `"-1e3"`); not `"inf"` or `"NaN"`.
fn parse_finite(s: &str) -> Option<f64> {
    let looks_numeric = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '.' | '-' | '+' | 'e' | 'E'));
    if !looks_numeric {
        return None;
    }
    s.parse::<f64>().ok().filter(|f| f.is_finite())
}

/// An integral float as an integer value.
fn integral(f: Option<f64>) -> Option<Value> {
    let f = f?;
    if f.fract() != 0.0 || f.abs() > 9_007_199_254_740_992.0 {
        return None;
    }
    // The cast is exact: `f` is integral and within ±2^53.
    #[allow(clippy::cast_possible_truncation)]
    Some(Value::from(f as i64))
}

fn coerce_count(key: &str, value: &Value) -> Result<Value> {
    let fail = || bad(key, "an integer");
    match value {
        Value::Number(n) if n.is_i64() || n.is_u64() => Ok(value.clone()),
        Value::Number(n) => integral(n.as_f64()).ok_or_else(fail),
        Value::String(s) => s.trim().parse::<i64>().map(Value::from).map_err(|_| fail()),
        _ => Err(fail()),
    }
}

fn coerce_sort(value: &mut Value) -> Result<()> {
    let Value::Object(keys) = value else {
        return Err(bad("$sort", "an object of field: 1 | -1"));
    };
    for (field, dir) in keys.iter_mut() {
        let n = match &*dir {
            Value::Number(n) => n.as_f64(),
            Value::String(s) => s.trim().parse::<i64>().ok().map(|i| i as f64),
            _ => None,
        };
        *dir = match n {
            Some(n) if n > 0.0 => Value::from(1),
            Some(n) if n < 0.0 => Value::from(-1),
            _ => return Err(bad(&format!("$sort[{field}]"), "1 or -1")),
        };
    }
    Ok(())
}

fn coerce_select(value: &Value) -> Result<Value> {
    let fail = || bad("$select", "a list of field names");
    let names: Vec<&Value> = match value {
        Value::String(_) => vec![value],
        Value::Array(items) => items.iter().collect(),
        Value::Object(obj) => indexed_values(obj).ok_or_else(fail)?,
        _ => return Err(fail()),
    };
    if names.iter().all(|v| v.is_string()) {
        Ok(Value::Array(names.into_iter().cloned().collect()))
    } else {
        Err(fail())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn qs_index_objects_become_lists_in_index_order() {
        let obj = json!({"1": "b", "0": "a", "10": "c"});
        let Value::Object(obj) = obj else {
            unreachable!()
        };
        let values: Vec<_> = indexed_values(&obj).unwrap_or_default();
        assert_eq!(values, vec![&json!("a"), &json!("b"), &json!("c")]);
        let Value::Object(bad) = json!({"01": "x"}) else {
            unreachable!()
        };
        assert!(indexed_values(&bad).is_none());
    }

    #[test]
    fn scalars_follow_the_documented_rules() {
        let ok = |v: Value, ty| coerce_scalar("f", &v, ty).ok();
        assert_eq!(ok(json!("5"), FieldType::Integer), Some(json!(5)));
        assert_eq!(ok(json!("5.0"), FieldType::Integer), Some(json!(5)));
        assert_eq!(ok(json!("5.5"), FieldType::Integer), None);
        assert_eq!(ok(json!("2.5"), FieldType::Number), Some(json!(2.5)));
        assert_eq!(ok(json!("1e3"), FieldType::Number), Some(json!(1000.0)));
        assert_eq!(ok(json!("inf"), FieldType::Number), None);
        assert_eq!(ok(json!("NaN"), FieldType::Number), None);
        assert_eq!(ok(json!(""), FieldType::Number), None);
        assert_eq!(ok(json!("true"), FieldType::Boolean), Some(json!(true)));
        assert_eq!(ok(json!(0), FieldType::Boolean), Some(json!(false)));
        assert_eq!(ok(json!("1"), FieldType::Boolean), None);
        assert_eq!(ok(json!(3), FieldType::String), Some(json!("3")));
        assert_eq!(ok(json!(null), FieldType::Integer), Some(json!(null)));
        assert_eq!(ok(json!([1]), FieldType::Integer), None);
    }
}
