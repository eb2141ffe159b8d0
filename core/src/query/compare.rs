//! A total order over JSON values, numeric equality and field lookup.

use std::cmp::Ordering;

use serde_json::{Map, Number, Value};

/// The rank of a value's type in the sort order: `null` < numbers < strings < booleans < arrays <
/// objects (the NeDB order the Feathers memory adapter uses, without dates).
fn rank(value: &Value) -> u8 {
    match value {
        Value::Null => 0,
        Value::Number(_) => 1,
        Value::String(_) => 2,
        Value::Bool(_) => 3,
        Value::Array(_) => 4,
        Value::Object(_) => 5,
    }
}

/// A JSON number, exact: every integer JSON can hold fits an `i128`.
#[derive(Clone, Copy)]
enum Num {
    Int(i128),
    Float(f64),
}

fn num(n: &Number) -> Num {
    if let Some(i) = n.as_i64() {
        Num::Int(i.into())
    } else if let Some(u) = n.as_u64() {
        Num::Int(u.into())
    } else {
        // invariant: a serde_json number is an i64, a u64 or a finite f64.
        Num::Float(n.as_f64().unwrap_or(0.0))
    }
}

/// 2^127 as a float: the first float above every `i128`.
const TWO_127: f64 = 170_141_183_460_469_231_731_687_303_715_884_105_728.0;

/// Compare an integer with a finite float exactly.
fn cmp_int_float(i: i128, f: f64) -> Ordering {
    if f >= TWO_127 {
        return Ordering::Less;
    }
    if f < -TWO_127 {
        return Ordering::Greater;
    }
    let whole = f.trunc();
    // The cast is exact: `whole` is integral and inside the i128 range.
    #[allow(clippy::cast_possible_truncation)]
    let whole_int = whole as i128;
    match i.cmp(&whole_int) {
        Ordering::Equal => {
            let frac = f - whole;
            if frac > 0.0 {
                Ordering::Less
            } else if frac < 0.0 {
                Ordering::Greater
            } else {
                Ordering::Equal
            }
        }
        other => other,
    }
}

/// Compare two JSON numbers numerically and exactly (`1` equals `1.0`; `2^53 + 1` is above
/// `2^53` whether either is written as a float or not).
pub fn compare_numbers(a: &Number, b: &Number) -> Ordering {
    match (num(a), num(b)) {
        (Num::Int(x), Num::Int(y)) => x.cmp(&y),
        (Num::Float(x), Num::Float(y)) => x.partial_cmp(&y).unwrap_or(Ordering::Equal),
        (Num::Int(x), Num::Float(y)) => cmp_int_float(x, y),
        (Num::Float(x), Num::Int(y)) => cmp_int_float(y, x).reverse(),
    }
}

/// A total order over JSON values.
///
/// Values of different types compare by type: `null` < numbers < strings < booleans < arrays <
/// objects. Numbers compare numerically, strings by code point, `false < true`, arrays element
/// by element and then by length, objects by their entries sorted by key (key first, then value)
/// and then by size. Objects with the same entries in another order are equal.
pub fn compare_values(a: &Value, b: &Value) -> Ordering {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => compare_numbers(x, y),
        (Value::String(x), Value::String(y)) => x.cmp(y),
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        (Value::Array(x), Value::Array(y)) => {
            for (l, r) in x.iter().zip(y) {
                let ord = compare_values(l, r);
                if ord != Ordering::Equal {
                    return ord;
                }
            }
            x.len().cmp(&y.len())
        }
        (Value::Object(x), Value::Object(y)) => compare_objects(x, y),
        _ => rank(a).cmp(&rank(b)),
    }
}

fn compare_objects(x: &Map<String, Value>, y: &Map<String, Value>) -> Ordering {
    let mut xs: Vec<_> = x.iter().collect();
    let mut ys: Vec<_> = y.iter().collect();
    xs.sort_by(|l, r| l.0.cmp(r.0));
    ys.sort_by(|l, r| l.0.cmp(r.0));
    for ((kx, vx), (ky, vy)) in xs.iter().zip(&ys) {
        let ord = kx.cmp(ky).then_with(|| compare_values(vx, vy));
        if ord != Ordering::Equal {
            return ord;
        }
    }
    xs.len().cmp(&ys.len())
}

/// Compare two values that may be absent: an absent value sorts before every present one.
pub fn compare_optional(a: Option<&Value>, b: Option<&Value>) -> Ordering {
    match (a, b) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        (Some(x), Some(y)) => compare_values(x, y),
    }
}

/// JSON equality with numbers compared numerically (`1 == 1.0`) and object keys in any order.
pub fn values_equal(a: &Value, b: &Value) -> bool {
    compare_values(a, b) == Ordering::Equal
}

/// The order of two values of the same comparable type (numbers, strings or booleans), or
/// `None`: the range operators (`$lt`, …) are type-strict, as in the Feathers memory adapter.
pub(crate) fn strict_compare(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::Number(_), Value::Number(_))
        | (Value::String(_), Value::String(_))
        | (Value::Bool(_), Value::Bool(_)) => Some(compare_values(a, b)),
        _ => None,
    }
}

/// The value of `field` in `record`: the top-level key of that name when there is one, otherwise
/// a dotted path through nested objects (`"address.city"`).
pub fn lookup<'a>(record: &'a Value, field: &str) -> Option<&'a Value> {
    let obj = record.as_object()?;
    if let Some(v) = obj.get(field) {
        return Some(v);
    }
    if !field.contains('.') {
        return None;
    }
    let mut current = record;
    for part in field.split('.') {
        current = current.as_object()?.get(part)?;
    }
    Some(current)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn numbers_compare_exactly_across_representations() {
        let big = 9_007_199_254_740_992_i64; // 2^53
        assert_eq!(compare_values(&json!(1), &json!(1.0)), Ordering::Equal);
        assert_eq!(
            compare_values(&json!(big + 1), &json!(big as f64)),
            Ordering::Greater
        );
        assert_eq!(compare_values(&json!(-1), &json!(u64::MAX)), Ordering::Less);
        assert_eq!(compare_values(&json!(2), &json!(2.5)), Ordering::Less);
        assert_eq!(compare_values(&json!(-2), &json!(-2.5)), Ordering::Greater);
        assert_eq!(compare_values(&json!(10), &json!(9)), Ordering::Greater);
        assert_eq!(
            compare_values(&json!(1e300), &json!(i64::MAX)),
            Ordering::Greater
        );
    }

    #[test]
    fn types_have_a_fixed_order() {
        let ordered = [
            json!(null),
            json!(-5),
            json!(3.5),
            json!(""),
            json!("a"),
            json!(false),
            json!(true),
            json!([]),
            json!([1]),
            json!({}),
            json!({"a": 1}),
        ];
        for (i, a) in ordered.iter().enumerate() {
            for (j, b) in ordered.iter().enumerate() {
                assert_eq!(compare_values(a, b), i.cmp(&j), "{a} vs {b}");
            }
        }
        assert!(values_equal(
            &json!({"a": 1, "b": 2}),
            &json!({"b": 2.0, "a": 1})
        ));
    }

    #[test]
    fn lookup_prefers_the_literal_key_then_a_dotted_path() {
        let r = json!({"a.b": 1, "a": {"b": 2, "c": {"d": 3}}});
        assert_eq!(lookup(&r, "a.b"), Some(&json!(1)));
        assert_eq!(lookup(&r, "a.c.d"), Some(&json!(3)));
        assert_eq!(lookup(&r, "a.x"), None);
        assert_eq!(lookup(&json!(5), "a"), None);
    }

    #[test]
    fn range_comparisons_are_type_strict() {
        assert_eq!(strict_compare(&json!(1), &json!("2")), None);
        assert_eq!(
            strict_compare(&json!("b"), &json!("a")),
            Some(Ordering::Greater)
        );
        assert_eq!(strict_compare(&json!(null), &json!(null)), None);
    }
}
