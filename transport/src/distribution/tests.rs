//! Unit tests of the distribution plugin's wire types.

use proptest::prelude::*;
use serde_json::{Value, json};

use super::wire::{CallBody, EventEnvelope, ServiceDescriptor, WireParams, endpoint, path_of};

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        "[a-z$]{0,8}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("plume".to_owned()),
                    Just("path".to_owned()),
                    Just("methods".to_owned()),
                    Just("events".to_owned()),
                    Just("params".to_owned()),
                    "[a-z]{1,6}"
                ],
                inner,
                0..5
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #[test]
    fn decoding_arbitrary_json_never_panics(v in arb_json()) {
        let _ = ServiceDescriptor::parse(&v);
        let _ = serde_json::from_value::<CallBody>(v.clone());
        let _ = serde_json::from_value::<EventEnvelope>(v);
    }

    #[test]
    fn descriptors_round_trip(
        path in "[a-z]{1,8}(/[a-z:]{1,6}){0,2}",
        key in "[a-z]{1,8}",
        methods in prop::collection::vec("[a-z]{1,8}", 0..5),
        events in prop::collection::vec("[a-z]{1,8}", 0..5),
    ) {
        let d = ServiceDescriptor {
            plume: 1,
            path: path.clone(),
            key,
            methods,
            idempotent: Vec::new(),
            events,
            remote_options: Some(json!({"startId": 6})),
        };
        let v = serde_json::to_value(&d).expect("serializes");
        prop_assert_eq!(ServiceDescriptor::parse(&v), Some(d));
        let name = endpoint(&path);
        prop_assert_eq!(path_of(&name), Some(path.as_str()));
    }

    #[test]
    fn access_tokens_never_cross(token in "[A-Za-z0-9.]{1,40}", strategy in "[a-z]{1,8}") {
        let mut params = plume::Params::new();
        params.authentication = Some(json!({"strategy": strategy, "accessToken": token}));
        let wire = serde_json::to_string(&WireParams::from_params(&params, &[])).expect("json");
        prop_assert!(!wire.contains("accessToken"));
    }
}

#[test]
fn descriptors_of_another_version_are_ignored() {
    let v = json!({"plume": 2, "path": "a", "key": "k", "methods": [], "events": []});
    assert_eq!(ServiceDescriptor::parse(&v), None);
    assert_eq!(ServiceDescriptor::parse(&Value::Null), None);
    assert_eq!(path_of("respond-style"), None);
}
