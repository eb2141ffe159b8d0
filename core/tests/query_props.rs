//! Property tests: query matching, sorting and paging against a simple reference, and coercion
//! and parsing never panicking.

use std::cmp::Ordering;

use plume::query::{FieldType, Query, QueryLimits, Schema, coerce};
use plume::{MemoryOptions, MemoryService, Params};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

const FIELDS: [&str; 3] = ["a", "b", "c"];
const OPS: [&str; 7] = ["$lt", "$lte", "$gt", "$gte", "$ne", "$in", "$nin"];

/// A small value domain, so random queries hit random records often.
fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        (-2i64..=2).prop_map(Value::from),
        prop::sample::select(vec![-1.5, 0.5, 2.5]).prop_map(Value::from),
        prop::sample::select(vec!["a", "b", "c"]).prop_map(Value::from),
        any::<bool>().prop_map(Value::from),
    ]
}

fn record() -> impl Strategy<Value = Map<String, Value>> {
    // Each field is absent or holds a scalar.
    prop::collection::vec(prop::option::of(scalar()), 3).prop_map(|values| {
        FIELDS
            .iter()
            .zip(values)
            .filter_map(|(f, v)| Some(((*f).to_owned(), v?)))
            .collect()
    })
}

fn operand(op: &'static str) -> BoxedStrategy<Value> {
    if op == "$in" || op == "$nin" {
        prop::collection::vec(scalar(), 0..4)
            .prop_map(Value::Array)
            .boxed()
    } else {
        scalar().boxed()
    }
}

fn condition() -> impl Strategy<Value = Value> {
    let op = || prop::sample::select(OPS.to_vec()).prop_flat_map(|op| (Just(op), operand(op)));
    prop_oneof![
        scalar(),
        op().prop_map(|(op, v)| json!({ op: v })),
        (op(), op()).prop_map(|((o1, v1), (o2, v2))| {
            let mut m = Map::new();
            m.insert(o1.to_owned(), v1);
            m.insert(o2.to_owned(), v2);
            Value::Object(m)
        }),
    ]
}

fn fields_query() -> impl Strategy<Value = Value> {
    prop::collection::btree_map(prop::sample::select(FIELDS.to_vec()), condition(), 0..3)
        .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()))
}

fn query() -> impl Strategy<Value = Value> {
    fields_query().prop_recursive(3, 16, 3, |inner| {
        (
            fields_query(),
            prop::sample::select(vec!["$or", "$and"]),
            prop::collection::vec(inner, 0..3),
        )
            .prop_map(|(mut base, key, branches)| {
                if let Value::Object(m) = &mut base {
                    m.insert(key.to_owned(), Value::Array(branches));
                }
                base
            })
    })
}

// ---- the reference, written directly over the JSON query ----

fn ref_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

fn ref_cmp(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64()?.partial_cmp(&y.as_f64()?),
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        (Value::Bool(x), Value::Bool(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

fn ref_op(actual: Option<&Value>, op: &str, operand: &Value) -> bool {
    let value = actual.cloned().unwrap_or(Value::Null);
    let list = || operand.as_array().cloned().unwrap_or_default();
    let ordered = |want: &[Ordering]| match actual {
        Some(v) => ref_cmp(v, operand).is_some_and(|o| want.contains(&o)),
        None => false,
    };
    match op {
        "$ne" => !ref_eq(&value, operand),
        "$in" => list().iter().any(|x| ref_eq(&value, x)),
        "$nin" => !list().iter().any(|x| ref_eq(&value, x)),
        "$lt" => ordered(&[Ordering::Less]),
        "$lte" => ordered(&[Ordering::Less, Ordering::Equal]),
        "$gt" => ordered(&[Ordering::Greater]),
        "$gte" => ordered(&[Ordering::Greater, Ordering::Equal]),
        other => panic!("the generator made an unknown operator {other}"),
    }
}

fn ref_match(record: &Map<String, Value>, query: &Value) -> bool {
    let Some(query) = query.as_object() else {
        return false;
    };
    query.iter().all(|(key, cond)| match key.as_str() {
        "$or" => cond
            .as_array()
            .is_some_and(|qs| qs.iter().any(|q| ref_match(record, q))),
        "$and" => cond
            .as_array()
            .is_some_and(|qs| qs.iter().all(|q| ref_match(record, q))),
        field => match cond {
            Value::Object(ops) => ops.iter().all(|(op, v)| ref_op(record.get(field), op, v)),
            plain => ref_eq(record.get(field).unwrap_or(&Value::Null), plain),
        },
    })
}

/// Sort key: absent < null < numbers < strings < booleans.
fn ref_sort_cmp(a: Option<&Value>, b: Option<&Value>) -> Ordering {
    fn rank(v: Option<&Value>) -> u8 {
        match v {
            None => 0,
            Some(Value::Null) => 1,
            Some(Value::Number(_)) => 2,
            Some(Value::String(_)) => 3,
            Some(Value::Bool(_)) => 4,
            Some(_) => 5,
        }
    }
    match (a, b) {
        (Some(x), Some(y)) if rank(a) == rank(b) => ref_cmp(x, y).unwrap_or(Ordering::Equal),
        _ => rank(a).cmp(&rank(b)),
    }
}

fn ids(result: &Value) -> Vec<i64> {
    let list = result.as_array().or_else(|| result["data"].as_array());
    list.map(|l| l.iter().filter_map(|r| r["id"].as_i64()).collect())
        .unwrap_or_default()
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a current-thread runtime")
        .block_on(f)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn find_equals_the_reference_filter(
        records in prop::collection::vec(record(), 0..12),
        q in query(),
    ) {
        let store: MemoryService = MemoryService::new()
            .with_records(records.iter().cloned().map(Value::Object))
            .expect("valid seed");
        let got = block_on(store.find(Params::new().with_query(q.clone())));
        let got = ids(&got.expect("generated queries are valid"));
        let expected: Vec<i64> = records
            .iter()
            .enumerate()
            .filter(|(_, r)| ref_match(r, &q))
            .map(|(i, _)| i64::try_from(i).unwrap_or(-1))
            .collect();
        prop_assert_eq!(got, expected, "query {}", q);
    }

    #[test]
    fn sort_skip_and_limit_equal_the_reference(
        records in prop::collection::vec(record(), 0..15),
        q in fields_query(),
        sort in prop::collection::vec((prop::sample::select(FIELDS.to_vec()), any::<bool>()), 0..3),
        skip in 0usize..12,
        limit in prop::option::of(0usize..12),
    ) {
        let (default, max) = (5, 8);
        let store: MemoryService = MemoryService::with_options(MemoryOptions::new().paginate(default, max))
            .with_records(records.iter().cloned().map(Value::Object))
            .expect("valid seed");
        let mut query = q.as_object().cloned().unwrap_or_default();
        let mut sort_obj = Map::new();
        for (field, asc) in &sort {
            // A repeated key keeps its first position, with the last direction.
            sort_obj.insert((*field).to_owned(), json!(if *asc { 1 } else { -1 }));
        }
        let sort_keys: Vec<(String, bool)> = sort_obj
            .iter()
            .map(|(k, v)| (k.clone(), v == &json!(1)))
            .collect();
        query.insert("$sort".into(), Value::Object(sort_obj));
        query.insert("$skip".into(), json!(skip));
        if let Some(limit) = limit {
            query.insert("$limit".into(), json!(limit));
        }
        let page = block_on(store.find(Params::new().with_query(Value::Object(query.clone()))))
            .expect("valid query");

        let mut hits: Vec<(i64, &Map<String, Value>)> = records
            .iter()
            .enumerate()
            .filter(|(_, r)| ref_match(r, &q))
            .map(|(i, r)| (i64::try_from(i).unwrap_or(-1), r))
            .collect();
        hits.sort_by(|(_, a), (_, b)| {
            sort_keys.iter().fold(Ordering::Equal, |acc, (field, asc)| {
                acc.then_with(|| {
                    let o = ref_sort_cmp(a.get(field), b.get(field));
                    if *asc { o } else { o.reverse() }
                })
            })
        });
        let take = limit.unwrap_or(default).min(max);
        let expected: Vec<i64> = hits.iter().skip(skip).take(take).map(|(i, _)| *i).collect();
        prop_assert_eq!(&page["total"], &json!(hits.len()));
        prop_assert_eq!(&page["limit"], &json!(take));
        prop_assert_eq!(&page["skip"], &json!(skip));
        prop_assert_eq!(ids(&page), expected, "query {:?}", query);
    }
}

// ---- coercion and parsing never panic ----

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "id", "done", "priority", "text", "tag", "$in", "$nin", "$lt", "$gte", "$ne", "$or",
            "$and", "$limit", "$skip", "$sort", "$select", "$regex", "0", "1", "25",
        ])
        .prop_map(str::to_owned),
        ".{0,6}",
    ]
}

/// Nested maps of strings, the shape `qs` produces.
fn string_map() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        prop::sample::select(vec![
            "", "1", "-1", "0", "true", "false", "2.5", "1e400", "x", "NaN"
        ])
        .prop_map(Value::from),
        ".{0,8}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 32, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(key(), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Arbitrary JSON.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,6}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 32, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(key(), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn schema() -> Schema {
    Schema::new()
        .field("id", FieldType::Integer)
        .field("priority", FieldType::Number)
        .field("done", FieldType::Boolean)
        .field("text", FieldType::String)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(600))]

    #[test]
    fn coercion_never_panics_and_is_idempotent(
        q in prop::collection::btree_map(key(), string_map(), 0..6),
    ) {
        let mut q: Map<String, Value> = q.into_iter().collect();
        if coerce(&mut q, &schema()).is_ok() {
            let once = q.clone();
            prop_assert!(coerce(&mut q, &schema()).is_ok(), "coercing twice fails: {:?}", once);
            prop_assert_eq!(&q, &once);
            // Whatever parses must also match and sort without panicking.
            if let Ok(parsed) = Query::parse(&q) {
                let record = json!({"id": 1, "done": true, "priority": 2, "text": "x"});
                let _ = parsed.matches(&record);
                let _ = parsed.compare(&record, &json!({}));
            }
        }
    }

    #[test]
    fn parsing_arbitrary_json_never_panics(
        q in prop::collection::btree_map(key(), any_json(), 0..6),
        record in any_json(),
    ) {
        let mut q: Map<String, Value> = q.into_iter().collect();
        if let Ok(parsed) = Query::parse(&q) {
            let _ = parsed.matches(&record);
            let _ = parsed.compare(&record, &record);
            let _ = parsed.select(&record, "id");
        }
        let _ = coerce(&mut q, &schema());
    }

    #[test]
    fn sorting_arbitrary_values_is_a_total_order(values in prop::collection::vec(any_json(), 0..20)) {
        // `sort_by` panics on some inconsistent orders; check the laws directly too.
        let mut sorted = values.clone();
        sorted.sort_by(plume::query::compare_values);
        for w in sorted.windows(2) {
            prop_assert_ne!(plume::query::compare_values(&w[0], &w[1]), Ordering::Greater);
        }
        for a in &values {
            for b in &values {
                let ab = plume::query::compare_values(a, b);
                prop_assert_eq!(ab, plume::query::compare_values(b, a).reverse());
            }
        }
    }
}

/// A query with `$or`/`$and` nested `depth` deep, a `$in` list of `items` values (the first
/// nested `value_depth` arrays deep) and a `$limit`.
fn deep_query(depth: usize, items: usize, value_depth: usize, limit: i64) -> Map<String, Value> {
    let mut value = json!(1);
    for _ in 0..value_depth {
        value = json!([value]);
    }
    let mut list = vec![json!(1); items];
    if let Some(first) = list.first_mut() {
        *first = value;
    }
    let mut q = json!({"a": {"$in": list}});
    for level in 0..depth {
        let op = if level % 2 == 0 { "$or" } else { "$and" };
        q = json!({ op: [q, {"b": {"$nin": [1, 2]}}] });
    }
    let mut map = match q {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    map.insert("$limit".into(), json!(limit));
    map
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Queries at and past the limits (nesting 8, lists of 1,000, `$limit` 10,000), with values
    /// nested deep: the limits check never panics and refuses exactly what is over; what it
    /// lets through parses and matches without panicking.
    #[test]
    fn queries_at_the_limits_are_checked_and_never_panic(
        depth in 0usize..40,
        items in 0usize..2500,
        value_depth in 0usize..100,
        limit in -5i64..20_000,
    ) {
        let q = deep_query(depth, items, value_depth, limit);
        let limits = QueryLimits::default();
        let over = depth > limits.max_depth || items > limits.max_list || limit > limits.max_limit as i64;
        match limits.check(&q) {
            Err(e) => {
                prop_assert!(over, "refused within the limits: {}", e);
                prop_assert_eq!(e.code(), 400);
            }
            Ok(()) => {
                prop_assert!(!over, "let through: depth {} items {} limit {}", depth, items, limit);
                let parsed = Query::parse(&q);
                prop_assert!(parsed.is_ok(), "{:?}", parsed);
                if let Ok(parsed) = parsed {
                    let record = json!({"a": 1, "b": 3});
                    let _ = parsed.matches(&record);
                }
            }
        }
    }
}
