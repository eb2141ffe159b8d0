//! proptest strategies for JSON values, for the property tests of every crate that encodes or
//! decodes them (feature `proptest`).

use proptest::prelude::*;
use serde_json::{Value, json};

/// Strings drawn from the bytes that matter to a JSON writer (every escape class and its
/// neighbours, DEL, multi-byte characters), from anything, and long ones (past MessagePack's
/// one-byte length).
pub fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[\\x00-\\x22\\x5b-\\x5d\\x7f aé€😀]{0,40}",
        ".{0,40}",
        "[a-z\"]{250,300}",
    ]
}

/// Integers at the edges of MessagePack's widths.
fn edge_int() -> impl Strategy<Value = i64> {
    prop::sample::select(vec![
        0i64,
        -32,
        -33,
        127,
        128,
        -128,
        -129,
        255,
        256,
        65_535,
        65_536,
        -32_768,
        -32_769,
        i64::from(i32::MIN) - 1,
        i64::from(u32::MAX) + 1,
    ])
}

/// A value that is not an array or an object.
pub fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        edge_int().prop_map(|n| json!(n)),
        text().prop_map(Value::String),
    ]
}

/// Any JSON value, nested up to 4 deep, up to 20 items in an array or object.
pub fn value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(4, 64, 20, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..20).prop_map(Value::Array),
            prop::collection::btree_map(text(), inner, 0..20)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}
