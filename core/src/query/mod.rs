//! The Feathers common query syntax: parse, match, sort, select and coerce.
//!
//! A query is a JSON object such as
//! `{"done": false, "priority": {"$gte": 2}, "$sort": {"priority": -1}, "$limit": 10}`.
//! [`Query::parse`] validates it and splits it into a [`Filter`] and the `$limit`, `$skip`,
//! `$sort` and `$select` filters; [`matches()`] tests a record against a filter.
//!
//! * Equality: `{"field": value}`. A missing field counts as `null`. Numbers compare
//!   numerically (`1` equals `1.0`), objects with the same entries in any order are equal.
//! * Property operators: `$in`, `$nin` (arrays), `$lt`, `$lte`, `$gt`, `$gte` (type-strict: a
//!   number only compares with a number, a string with a string, a boolean with a boolean; a
//!   missing field never matches), `$ne`. Several operators on one field must all hold.
//! * `$or` and `$and`: a list of queries, at the top level and inside each other.
//! * Lists (`$in`, `$nin`, `$or`, `$and`, `$select`) may also be qs-style objects whose keys are
//!   array indices (`{"0": 1, "1": 3}`), which is what `qs` makes of long arrays.
//! * Any other `$` key is a `BadRequest`: `Invalid filter value $x` at the top level,
//!   `Invalid query parameter $x` inside a property or an `$or`/`$and` branch (the Feathers
//!   messages).
//!
//! REST queries arrive as strings; [`coerce`] turns them into the field types of a [`Schema`].

mod coerce;
mod compare;
mod limits;

use std::cmp::Ordering;

use serde_json::{Map, Value};

use crate::error::{Error, Result};

pub use coerce::{FieldType, Schema, coerce};
pub use compare::{compare_numbers, compare_optional, compare_values, lookup, values_equal};
pub use limits::{DEFAULT_MAX_DEPTH, DEFAULT_MAX_LIMIT, DEFAULT_MAX_LIST, QueryLimits};

/// A parsed and validated query.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Query {
    /// The records to keep.
    pub filter: Filter,
    /// `$limit`: `None` when absent, negative or not a number.
    pub limit: Option<usize>,
    /// `$skip` (0 when absent, negative or not a number).
    pub skip: usize,
    /// `$sort`: the first key is compared first.
    pub sort: Vec<SortKey>,
    /// `$select`: the fields to return (the id field is always added).
    pub select: Option<Vec<String>>,
}

/// One key of `$sort`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SortKey {
    /// The field (a dotted path is allowed).
    pub field: String,
    /// The direction.
    pub order: Order,
}

/// A sort direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// `1`: ascending.
    Asc,
    /// `-1`: descending.
    Desc,
}

/// A filter: a record matches when every clause holds (an empty filter matches everything).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    /// The clauses, all of which must hold.
    pub clauses: Vec<Clause>,
}

/// One condition of a [`Filter`].
#[derive(Debug, Clone, PartialEq)]
pub enum Clause {
    /// An operator on a field.
    Field {
        /// The field (a dotted path is allowed).
        field: String,
        /// The condition on its value.
        op: Op,
    },
    /// `$or`: at least one filter holds (an empty list matches nothing).
    Or(Vec<Filter>),
    /// `$and`: every filter holds (an empty list matches everything).
    And(Vec<Filter>),
}

/// A condition on one field's value.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// Equal to the value (a missing field equals `null`).
    Eq(Value),
    /// `$ne`: not equal.
    Ne(Value),
    /// `$in`: equal to one of the values.
    In(Vec<Value>),
    /// `$nin`: equal to none of the values.
    Nin(Vec<Value>),
    /// `$lt`
    Lt(Value),
    /// `$lte`
    Lte(Value),
    /// `$gt`
    Gt(Value),
    /// `$gte`
    Gte(Value),
}

/// The top-level keys that are not record fields.
const FILTERS: [&str; 6] = ["$limit", "$skip", "$sort", "$select", "$or", "$and"];

impl Query {
    /// Parse and validate a query object.
    ///
    /// `$limit` and `$skip` may be numbers or numeric strings (parsed like JavaScript's
    /// `parseInt`); `$sort` values `1`/`-1` (or any positive/negative number, or such a string);
    /// `$select` an array of names, a single name or a qs-style object `{"0": "a", "1": "b"}`.
    pub fn parse(query: &Map<String, Value>) -> Result<Query> {
        let mut parsed = Query::default();
        for (key, value) in query {
            match key.as_str() {
                "$limit" => {
                    parsed.limit = parse_int(value).and_then(|n| usize::try_from(n).ok());
                }
                "$skip" => {
                    parsed.skip = parse_int(value)
                        .and_then(|n| usize::try_from(n).ok())
                        .unwrap_or(0);
                }
                "$sort" => parsed.sort = parse_sort(value)?,
                "$select" => parsed.select = Some(parse_select(value)?),
                "$or" => parsed
                    .filter
                    .clauses
                    .push(Clause::Or(parse_branches("$or", value)?)),
                "$and" => parsed
                    .filter
                    .clauses
                    .push(Clause::And(parse_branches("$and", value)?)),
                other if other.starts_with('$') => {
                    return Err(Error::bad_request(format!("Invalid filter value {other}")));
                }
                field => parse_property(field, value, &mut parsed.filter.clauses)?,
            }
        }
        Ok(parsed)
    }

    /// True when the record passes the filter.
    pub fn matches(&self, record: &Value) -> bool {
        matches(record, &self.filter)
    }

    /// The `$sort` order of two records; equal when there is no `$sort`.
    pub fn compare(&self, a: &Value, b: &Value) -> Ordering {
        compare_by(&self.sort, a, b)
    }

    /// The record with `$select` applied (unchanged without `$select`).
    pub fn select(&self, record: &Value, id_field: &str) -> Value {
        match &self.select {
            Some(fields) => select_fields(record, fields, id_field),
            None => record.clone(),
        }
    }
}

impl Filter {
    /// Parse a query object that holds only conditions (no `$limit`, `$skip`, `$sort` or
    /// `$select`), such as one branch of `$or`.
    pub fn parse(query: &Map<String, Value>) -> Result<Filter> {
        let mut clauses = Vec::new();
        for (key, value) in query {
            match key.as_str() {
                "$or" => clauses.push(Clause::Or(parse_branches("$or", value)?)),
                "$and" => clauses.push(Clause::And(parse_branches("$and", value)?)),
                other if other.starts_with('$') => return Err(invalid_parameter(other)),
                field => parse_property(field, value, &mut clauses)?,
            }
        }
        Ok(Filter { clauses })
    }
}

/// True when `record` passes `filter`.
pub fn matches(record: &Value, filter: &Filter) -> bool {
    filter.clauses.iter().all(|clause| match clause {
        Clause::Field { field, op } => op_matches(lookup(record, field), op),
        Clause::Or(branches) => branches.iter().any(|f| matches(record, f)),
        Clause::And(branches) => branches.iter().all(|f| matches(record, f)),
    })
}

fn op_matches(value: Option<&Value>, op: &Op) -> bool {
    let as_null = value.unwrap_or(&Value::Null);
    let range = |bound: &Value, ok: fn(Ordering) -> bool| {
        value
            .and_then(|v| compare::strict_compare(v, bound))
            .is_some_and(ok)
    };
    match op {
        Op::Eq(x) => values_equal(as_null, x),
        Op::Ne(x) => !values_equal(as_null, x),
        Op::In(xs) => xs.iter().any(|x| values_equal(as_null, x)),
        Op::Nin(xs) => !xs.iter().any(|x| values_equal(as_null, x)),
        Op::Lt(x) => range(x, Ordering::is_lt),
        Op::Lte(x) => range(x, Ordering::is_le),
        Op::Gt(x) => range(x, Ordering::is_gt),
        Op::Gte(x) => range(x, Ordering::is_ge),
    }
}

/// Compare two records by several sort keys, the first compared first. A missing field sorts
/// before every value; see [`compare_values`] for the order of values.
pub fn compare_by(keys: &[SortKey], a: &Value, b: &Value) -> Ordering {
    for key in keys {
        let ord = compare_optional(lookup(a, &key.field), lookup(b, &key.field));
        let ord = match key.order {
            Order::Asc => ord,
            Order::Desc => ord.reverse(),
        };
        if ord != Ordering::Equal {
            return ord;
        }
    }
    Ordering::Equal
}

/// Keep only `fields` and `id_field` of a record (top-level keys, in the record's order).
/// A value that is not an object is returned unchanged.
pub fn select_fields(record: &Value, fields: &[String], id_field: &str) -> Value {
    match record {
        Value::Object(obj) => Value::Object(
            obj.iter()
                .filter(|(k, _)| k.as_str() == id_field || fields.iter().any(|f| f == *k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn invalid_parameter(key: &str) -> Error {
    Error::bad_request(format!("Invalid query parameter {key}"))
}

/// Parse a property: `{"field": value}` or `{"field": {"$op": value, ...}}`.
fn parse_property(field: &str, value: &Value, out: &mut Vec<Clause>) -> Result<()> {
    let ops = match value {
        Value::Object(obj) if obj.keys().any(|k| k.starts_with('$')) => obj,
        _ => {
            out.push(Clause::Field {
                field: field.to_owned(),
                op: Op::Eq(value.clone()),
            });
            return Ok(());
        }
    };
    for (name, operand) in ops {
        let op = match name.as_str() {
            "$in" => Op::In(operand_list(name, operand)?),
            "$nin" => Op::Nin(operand_list(name, operand)?),
            "$lt" => Op::Lt(operand.clone()),
            "$lte" => Op::Lte(operand.clone()),
            "$gt" => Op::Gt(operand.clone()),
            "$gte" => Op::Gte(operand.clone()),
            "$ne" => Op::Ne(operand.clone()),
            other => return Err(invalid_parameter(other)),
        };
        out.push(Clause::Field {
            field: field.to_owned(),
            op,
        });
    }
    Ok(())
}

/// The items of an array, or of a qs-style object whose keys are all array indices (`qs` turns
/// arrays of more than 20 items into such objects).
fn list_items(value: &Value) -> Option<Vec<&Value>> {
    match value {
        Value::Array(items) => Some(items.iter().collect()),
        Value::Object(obj) => coerce::indexed_values(obj),
        _ => None,
    }
}

fn expected_array(name: &str) -> Error {
    Error::bad_request(format!("Invalid query parameter {name}: expected an array"))
}

fn operand_list(name: &str, operand: &Value) -> Result<Vec<Value>> {
    let items = list_items(operand).ok_or_else(|| expected_array(name))?;
    Ok(items.into_iter().cloned().collect())
}

fn parse_branches(name: &str, value: &Value) -> Result<Vec<Filter>> {
    let items = list_items(value).ok_or_else(|| expected_array(name))?;
    items
        .into_iter()
        .map(|item| match item {
            Value::Object(obj) => Filter::parse(obj),
            _ => Err(Error::bad_request(format!(
                "Invalid query parameter {name}: expected an array of objects"
            ))),
        })
        .collect()
}

/// JavaScript `parseInt` on a number or a string: the leading integer, if any.
pub(crate) fn parse_int(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => n.as_i64().or_else(|| {
            let f = n.as_f64()?.trunc();
            // Values outside the i64 range saturate, which is what a limit needs.
            #[allow(clippy::cast_possible_truncation)]
            Some(f as i64)
        }),
        Value::String(s) => {
            let s = s.trim_start();
            let (sign, digits) = match s.strip_prefix('-') {
                Some(rest) => (-1, rest),
                None => (1, s.strip_prefix('+').unwrap_or(s)),
            };
            let end = digits
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(digits.len());
            let digits = &digits[..end];
            if digits.is_empty() {
                return None;
            }
            Some(digits.parse::<i64>().map_or(i64::MAX, |n| n) * sign)
        }
        _ => None,
    }
}

fn parse_sort(value: &Value) -> Result<Vec<SortKey>> {
    let Value::Object(keys) = value else {
        return Err(Error::bad_request(
            "Invalid query parameter $sort: expected an object",
        ));
    };
    keys.iter()
        .map(|(field, dir)| {
            let order = match parse_int(dir) {
                Some(n) if n > 0 => Order::Asc,
                Some(n) if n < 0 => Order::Desc,
                _ => {
                    return Err(Error::bad_request(format!(
                        "Invalid $sort value for '{field}': expected 1 or -1"
                    )));
                }
            };
            Ok(SortKey {
                field: field.clone(),
                order,
            })
        })
        .collect()
}

/// `$select` as a list: an array of strings, a single string, or a qs-style object whose keys are
/// array indices.
fn parse_select(value: &Value) -> Result<Vec<String>> {
    let bad =
        || Error::bad_request("Invalid query parameter $select: expected an array of field names");
    let items: Vec<&Value> = match value {
        Value::String(s) => return Ok(vec![s.clone()]),
        Value::Array(items) => items.iter().collect(),
        Value::Object(obj) => coerce::indexed_values(obj).ok_or_else(bad)?,
        _ => return Err(bad()),
    };
    items
        .into_iter()
        .map(|v| v.as_str().map(str::to_owned).ok_or_else(bad))
        .collect()
}

/// True for the top-level keys that are filters rather than fields.
pub fn is_filter_key(key: &str) -> bool {
    FILTERS.contains(&key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;
    use serde_json::json;

    fn q(v: Value) -> Result<Query> {
        match v {
            Value::Object(m) => Query::parse(&m),
            _ => Err(Error::bad_request("not an object")),
        }
    }

    #[test]
    fn parses_filters_leniently_like_adapter_commons() {
        let parsed =
            q(json!({"$limit": "5", "$skip": "2x", "$sort": {"b": "-1", "a": 1}})).expect("valid");
        assert_eq!(parsed.limit, Some(5));
        assert_eq!(parsed.skip, 2);
        assert_eq!(
            parsed.sort,
            vec![
                SortKey {
                    field: "b".into(),
                    order: Order::Desc
                },
                SortKey {
                    field: "a".into(),
                    order: Order::Asc
                }
            ]
        );
        assert_eq!(q(json!({"$limit": -1})).expect("valid").limit, None);
        assert_eq!(q(json!({"$limit": "x"})).expect("valid").limit, None);
        assert_eq!(q(json!({"$limit": 2.9})).expect("valid").limit, Some(2));
        assert_eq!(
            q(json!({"$select": {"0": "a", "1": "b"}}))
                .expect("valid")
                .select,
            Some(vec!["a".to_owned(), "b".to_owned()])
        );
        assert_eq!(
            q(json!({"$select": "a"})).expect("valid").select,
            Some(vec!["a".to_owned()])
        );
    }

    #[test]
    fn unknown_operators_name_the_key() {
        let err = q(json!({"$foo": 1})).expect_err("top level");
        assert_eq!(err.kind(), ErrorKind::BadRequest);
        assert_eq!(err.message(), "Invalid filter value $foo");
        let err = q(json!({"text": {"$regex": "q"}})).expect_err("property");
        assert_eq!(err.message(), "Invalid query parameter $regex");
        let err = q(json!({"$or": [{"$limit": 1}]})).expect_err("nested");
        assert_eq!(err.message(), "Invalid query parameter $limit");
        let err = q(json!({"a": {"$in": 1}})).expect_err("not an array");
        assert!(err.message().contains("$in"));
        let err = q(json!({"$sort": {"a": 0}})).expect_err("zero");
        assert!(err.message().contains("'a'"));
    }

    #[test]
    fn select_keeps_the_id() {
        let r = json!({"id": 1, "a": 2, "b": 3});
        assert_eq!(
            select_fields(&r, &["b".to_owned()], "id"),
            json!({"id": 1, "b": 3})
        );
        assert_eq!(select_fields(&r, &[], "_id"), json!({}));
    }
}
