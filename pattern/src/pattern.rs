//! Patterns and matching: which added pattern a message reaches.
//!
//! A pattern is the set of a JSON object's properties whose values are primitives (string,
//! number, boolean, null), plus any regex properties added with [`Pattern::regex`]. Keys that end
//! in `$` are options, never matched; object and array values are payload, never matched (as in
//! Hemera, where they are the schema).
//!
//! A message matches a pattern when **every property of the pattern is present in the message
//! with an equal value**: strict JSON equality (`"1"` does not match `1`; `1` matches `1.0`, both
//! being the JS number 1), or, for a regex property, a string value the regex matches. Extra
//! message properties are ignored.
//!
//! Among several matches the **most specific** wins, decided in this order (Hemera's bloomrun
//! `depth` indexing, made deterministic):
//! 1. more properties wins;
//! 2. on a tie, more equality (non-regex) properties wins;
//! 3. on a tie, the pattern added first wins.
//!
//! Unlike Hemera's default (`insertion` indexing), the winner never depends on unrelated patterns.

use std::cmp::Ordering;
use std::fmt;

use regex::Regex;
use serde_json::{Map, Value};

use crate::error::HemeraError;
use crate::payload::Props;

/// One property of a pattern.
#[derive(Debug, Clone)]
enum Matcher {
    Equal(Value),
    Regex(Regex),
}

impl PartialEq for Matcher {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Matcher::Equal(a), Matcher::Equal(b)) => json_eq(a, b),
            (Matcher::Regex(a), Matcher::Regex(b)) => a.as_str() == b.as_str(),
            _ => false,
        }
    }
}

/// An added pattern: its matched properties, sorted by key.
#[derive(Debug, Clone, PartialEq)]
pub struct Pattern {
    props: Vec<(String, Matcher)>,
    /// The pattern object as given (options and payload keys included).
    source: Map<String, Value>,
}

impl Pattern {
    /// The pattern of `value`, which must be an object with at least one matched property and a
    /// string `topic` (the NATS subject; the mesh endpoint).
    pub fn new(value: &Value) -> Result<Pattern, HemeraError> {
        let Some(object) = value.as_object() else {
            return Err(HemeraError::hemera(format!(
                "a pattern must be a JSON object, got {}",
                kind_of(value)
            )));
        };
        let mut props: Vec<(String, Matcher)> = object
            .iter()
            .filter(|(k, v)| !k.ends_with('$') && is_primitive(v))
            .map(|(k, v)| (k.clone(), Matcher::Equal(v.clone())))
            .collect();
        props.sort_by(|a, b| a.0.cmp(&b.0));
        let pattern = Pattern {
            props,
            source: object.clone(),
        };
        if pattern.props.is_empty() {
            return Err(HemeraError::hemera(
                "a pattern needs at least one property with a primitive value",
            ));
        }
        pattern.topic()?;
        Ok(pattern)
    }

    /// Add a regex property: the message's `key` must be a string the regex matches.
    pub fn regex(mut self, key: &str, regex: Regex) -> Result<Pattern, HemeraError> {
        if key == "topic" {
            return Err(HemeraError::hemera(
                "`topic` cannot be a regex: it is the subject the pattern is served on",
            ));
        }
        self.props.retain(|(k, _)| k != key);
        self.props.push((key.to_owned(), Matcher::Regex(regex)));
        self.props.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(self)
    }

    /// The topic (the value of the string property `topic`).
    pub fn topic(&self) -> Result<&str, HemeraError> {
        match self.source.get("topic") {
            Some(Value::String(t)) if !t.is_empty() && !t.contains(char::is_whitespace) => Ok(t),
            Some(Value::String(_)) => Err(HemeraError::hemera(
                "a pattern's `topic` must be a non-empty string without spaces",
            )),
            _ => Err(HemeraError::hemera(
                "a pattern needs a string `topic`: it is the subject the pattern is served on",
            )),
        }
    }

    /// The pattern object as given.
    pub fn source(&self) -> &Map<String, Value> {
        &self.source
    }

    /// Whether `message` has every property of this pattern, with an equal value.
    pub fn matches(&self, message: &Map<String, Value>) -> bool {
        self.props
            .iter()
            .all(|(key, m)| match (m, message.get(key)) {
                (Matcher::Equal(want), Some(got)) => json_eq(want, got),
                (Matcher::Regex(re), Some(Value::String(got))) => re.is_match(got),
                _ => false,
            })
    }

    /// [`matches`](Self::matches) against a served payload's properties (borrowed from its
    /// bytes, see `crate::payload`).
    pub(crate) fn matches_props(&self, message: &Props<'_>) -> bool {
        self.props
            .iter()
            .all(|(key, m)| match (m, message.get(key)) {
                (Matcher::Equal(want), Some(got)) => got.equals(want),
                (Matcher::Regex(re), Some(got)) => got.as_str().is_some_and(|s| re.is_match(s)),
                _ => false,
            })
    }

    /// Whether both have the same matched properties (what `remove` compares).
    pub(crate) fn same_props(&self, other: &Pattern) -> bool {
        self.props == other.props
    }

    fn regex_count(&self) -> usize {
        self.props
            .iter()
            .filter(|(_, m)| matches!(m, Matcher::Regex(_)))
            .count()
    }

    /// Order of preference between two patterns that both match (`Less` = `self` wins), before
    /// insertion order.
    pub(crate) fn specificity_cmp(&self, other: &Pattern) -> Ordering {
        other
            .props
            .len()
            .cmp(&self.props.len())
            .then_with(|| self.regex_count().cmp(&other.regex_count()))
    }
}

impl fmt::Display for Pattern {
    /// Hemera's method string: `key:value` of each matched property, sorted, joined by `,`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts: Vec<String> = self
            .props
            .iter()
            .map(|(k, m)| match m {
                Matcher::Equal(v) => format!("{k}:{}", js_string(v)),
                Matcher::Regex(r) => format!("{k}:/{}/", r.as_str()),
            })
            .collect();
        parts.sort();
        f.write_str(&parts.join(","))
    }
}

/// Hemera's method string of a message: `key:value` of each primitive, non-`$` property, sorted
/// lexicographically and joined by `,` (`Util.pattern`).
///
/// Written into one string: sorting the `key:value` strings is sorting by `key:` (the keys are
/// distinct, so two of them differ within `key:`), unless a key holds a `:` itself.
pub fn method_of(message: &Map<String, Value>) -> String {
    let mut props: Vec<(&str, &Value)> = message
        .iter()
        .filter(|(k, v)| !k.ends_with('$') && is_primitive(v))
        .map(|(k, v)| (k.as_str(), v))
        .collect();
    if props.iter().any(|(k, _)| k.contains(':')) {
        let mut parts: Vec<String> = props
            .iter()
            .map(|(k, v)| format!("{k}:{}", js_string(v)))
            .collect();
        parts.sort();
        return parts.join(",");
    }
    fn with_colon(k: &str) -> impl Iterator<Item = u8> + '_ {
        k.bytes().chain(std::iter::once(b':'))
    }
    props.sort_unstable_by(|a, b| with_colon(a.0).cmp(with_colon(b.0)));
    let mut out = String::with_capacity(props.len() * 12);
    for (i, (k, v)) in props.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(k);
        out.push(':');
        write_js(&mut out, v);
    }
    out
}

/// A value as JavaScript's `String(v)` renders it (for primitives).
fn js_string(v: &Value) -> String {
    let mut out = String::new();
    write_js(&mut out, v);
    out
}

/// [`js_string`] appended to `out`.
fn write_js(out: &mut String, v: &Value) {
    use std::fmt::Write;
    // Writing to a String does not fail.
    let _ = match v {
        Value::String(s) => {
            out.push_str(s);
            Ok(())
        }
        Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => {
                if i < 0 {
                    out.push('-');
                }
                push_digits(out, i.unsigned_abs());
                Ok(())
            }
            (_, Some(u), _) => {
                push_digits(out, u);
                Ok(())
            }
            (_, _, Some(f)) if f.fract() == 0.0 && f.abs() < 1e15 => write!(out, "{f:.0}"),
            _ => write!(out, "{n}"),
        },
        other => write!(out, "{other}"),
    };
}

/// The decimal digits of `n` (what `{n}` writes, without the formatting machinery).
fn push_digits(out: &mut String, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    while let Some(slot) = at.checked_sub(1).and_then(|i| digits.get_mut(i)) {
        *slot = b'0' + (n % 10) as u8;
        at -= 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend(digits.iter().skip(at).map(|&d| char::from(d)));
}

fn is_primitive(v: &Value) -> bool {
    !matches!(v, Value::Object(_) | Value::Array(_))
}

/// Strict equality as JavaScript's `===` on JSON values: numbers compare by value.
fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x == y || x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

/// "an array", "a string", …: for error messages.
pub(crate) fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payload::Payload;
    use proptest::prelude::*;
    use serde_json::json;

    /// The method string of a message of `props`, and the sorted `key:value` strings joined.
    fn method_and_sorted(props: &std::collections::BTreeMap<String, String>) -> (String, String) {
        let message: Map<String, Value> =
            props.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
        let mut parts: Vec<String> = props.iter().map(|(k, v)| format!("{k}:{v}")).collect();
        parts.sort();
        (method_of(&message), parts.join(","))
    }

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn every_property_must_be_equal() {
        let p = Pattern::new(&json!({"topic": "math", "cmd": "add", "a$": 1, "s": {"x": 1}}))
            .expect("pattern");
        assert!(p.matches(&obj(json!({"topic": "math", "cmd": "add", "a": 1}))));
        assert!(!p.matches(&obj(json!({"topic": "math", "cmd": "sub"}))));
        assert!(!p.matches(&obj(json!({"topic": "math"}))));
        // strict: no coercion between a string and a number; 1 and 1.0 are one JS number
        let n = Pattern::new(&json!({"topic": "t", "v": 1})).expect("pattern");
        assert!(!n.matches(&obj(json!({"topic": "t", "v": "1"}))));
        assert!(n.matches(&obj(json!({"topic": "t", "v": 1.0}))));
        assert_eq!(p.to_string(), "cmd:add,topic:math");
    }

    #[test]
    fn regex_properties_match_strings() {
        let p = Pattern::new(&json!({"topic": "math"}))
            .and_then(|p| p.regex("cmd", Regex::new("^a").expect("re")))
            .expect("pattern");
        assert!(p.matches(&obj(json!({"topic": "math", "cmd": "add"}))));
        assert!(!p.matches(&obj(json!({"topic": "math", "cmd": "sub"}))));
        assert!(!p.matches(&obj(json!({"topic": "math", "cmd": 1}))));
        assert!(
            p.clone()
                .regex("topic", Regex::new(".").expect("re"))
                .is_err()
        );
    }

    #[test]
    fn bad_patterns_are_clear_errors() {
        for bad in [
            json!([1]),
            json!({}),
            json!({"a": {"b": 1}}),
            json!({"cmd": "x"}),
        ] {
            let e = Pattern::new(&bad).expect_err("bad pattern");
            assert_eq!(e.name, "HemeraError", "{bad}");
        }
        let e = Pattern::new(&json!({"topic": "a b"})).expect_err("space");
        assert!(e.message.contains("without spaces"));
    }

    #[test]
    fn method_string_is_sorted_primitives() {
        let m = obj(
            json!({"topic": "math", "cmd": "add", "b": 2, "a": 1.5, "n": {"x": 1},
                           "timeout$": 5, "f": 2.0, "t": true}),
        );
        assert_eq!(method_of(&m), "a:1.5,b:2,cmd:add,f:2,t:true,topic:math");
    }

    proptest! {
        /// Integers are written as `{}` writes them.
        #[test]
        fn integers_are_written_as_formatted(i in any::<i64>(), u in any::<u64>()) {
            let (mut a, mut b) = (String::new(), String::new());
            write_js(&mut a, &json!(i));
            write_js(&mut b, &json!(u));
            prop_assert_eq!((a, b), (i.to_string(), u.to_string()));
        }

        /// The method string is the sorted `key:value` strings joined by `,` (keys that are
        /// prefixes of others included).
        #[test]
        fn method_string_sorts_key_value_strings(
            props in proptest::collection::btree_map("[a-c:]{1,3}", "[0-9;z]{0,2}", 0..8)) {
            let (made, sorted) = method_and_sorted(&props);
            prop_assert_eq!(made, sorted);
        }

        /// Keys without a `:` (sorted as `key:`): bytes just below and above
        /// `:`, and keys that are prefixes of others.
        #[test]
        fn method_string_sorts_keys_without_colons(
            props in proptest::collection::btree_map("[a-b9;]{1,3}", "[0-9;z]{0,2}", 0..8)) {
            let (made, sorted) = method_and_sorted(&props);
            prop_assert_eq!(made, sorted);
        }

        /// Matching a served payload in place (its properties read from MessagePack or JSON
        /// bytes) decides as matching its JSON map does, for equality and regex properties.
        #[test]
        fn matching_in_place_agrees_with_matching_the_map(
            message in proptest::collection::btree_map(
                "[a-c]", prop_oneof![
                    Just(Value::Null), any::<bool>().prop_map(Value::Bool),
                    (-2i64..3).prop_map(|n| json!(n)), (-2i64..3).prop_map(|n| json!(n as f64)),
                    "[ab]{0,2}".prop_map(Value::String), Just(json!([1])), Just(json!({"a": 1})),
                ], 0..4),
            props in proptest::collection::btree_map(
                "[a-c]", prop_oneof![
                    Just(Value::Null), any::<bool>().prop_map(Value::Bool),
                    (-2i64..3).prop_map(|n| json!(n)), "[ab]{0,2}".prop_map(Value::String),
                ], 0..3),
            regex in proptest::option::of(("[a-c]", prop_oneof![Just("^a"), Just("b$"), Just("^$")])),
        ) {
            let mut source: Map<String, Value> = props.into_iter().collect();
            source.insert("topic".into(), json!("t"));
            let mut pattern = Pattern::new(&Value::Object(source)).expect("pattern");
            if let Some((key, re)) = regex {
                pattern = pattern.regex(&key, Regex::new(re).expect("re")).expect("regex");
            }
            let mut map: Map<String, Value> = message.into_iter().collect();
            map.insert("topic".into(), json!("t"));
            let want = pattern.matches(&map);
            let value = Value::Object(map.clone());
            for payload in [
                Payload::from_map(map.clone()),
                Payload::msgpack(rmp_serde::to_vec(&value).expect("encodes").into()),
                Payload::json(serde_json::to_vec(&value).expect("encodes").into()),
            ] {
                prop_assert_eq!(pattern.matches_props(&payload.props().expect("a map")), want);
            }
        }

        /// A pattern made of a subset of a message's properties always matches it, and changing
        /// one of the pattern's values in the message makes it not match.
        #[test]
        fn subsets_match(keys in proptest::collection::btree_map("[a-z]{1,4}", 0i64..5, 1..6),
                         drop in 0usize..6) {
            let mut message = Map::new();
            message.insert("topic".into(), json!("t"));
            for (k, v) in &keys { message.insert(k.clone(), json!(v)); }
            let mut pattern = message.clone();
            if let Some(k) = keys.keys().nth(drop % keys.len()).cloned() {
                pattern.remove(&k);
            }
            let p = Pattern::new(&Value::Object(pattern.clone())).expect("pattern");
            prop_assert!(p.matches(&message));
            if let Some((k, v)) = pattern.iter().find(|(k, _)| *k != "topic") {
                let mut changed = message.clone();
                changed.insert(k.clone(), json!(v.as_i64().unwrap_or(0) + 100));
                prop_assert!(!p.matches(&changed));
            }
        }
    }
}
