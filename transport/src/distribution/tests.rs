//! Unit tests of the distribution plugin's wire types.

use proptest::prelude::*;
use serde_json::{Value, json};

use super::wire::{
    CallBody, CallBodyRef, EventEnvelope, ServiceDescriptor, WireParams, WireParamsRef, endpoint,
    path_of,
};

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
        let wire = serde_json::to_string(&WireParamsRef::new(&params, &[])).expect("json");
        prop_assert!(!wire.contains("accessToken"));
    }

    /// The proxy's borrowed body encodes (JSON and MessagePack) exactly as the owned one.
    #[test]
    fn the_borrowed_call_body_encodes_as_the_owned_one(
        query in arb_json(),
        route in arb_json(),
        user in prop::option::of(arb_json()),
        authentication in prop::option::of(arb_json()),
        extra in arb_json(),
        data in prop::option::of(arb_json()),
        id in prop::option::of(prop_oneof![
            any::<i64>().prop_map(plume::Id::Int),
            "[a-z0-9]{0,6}".prop_map(plume::Id::Str),
        ]),
        rest in any::<bool>(),
    ) {
        let as_map = |v: Value| match v {
            Value::Object(m) => m,
            _ => serde_json::Map::new(),
        };
        let mut params = plume::Params::new();
        params.query = as_map(query);
        params.route = as_map(route);
        params.user = user;
        params.authentication = authentication;
        params.extra = as_map(extra);
        params.provider = rest.then_some(plume::Provider::Rest);
        let extras = vec!["plume".to_owned(), "path".to_owned()];
        let owned = CallBody {
            id: id.clone(),
            data: data.clone(),
            params: WireParams::from_params(&params, &extras),
        };
        let borrowed = CallBodyRef {
            id: id.as_ref(),
            data: data.as_ref(),
            params: WireParamsRef::new(&params, &extras),
        };
        let owned_json = serde_json::to_value(&owned).expect("json");
        prop_assert_eq!(&serde_json::to_value(&borrowed).expect("json"), &owned_json);
        let packed: Value = crate::codec::decode_payload(&crate::codec::encode_payload(&borrowed))
            .expect("msgpack");
        prop_assert_eq!(&packed, &owned_json);
        let back: CallBody = serde_json::from_value(packed).expect("a call body");
        prop_assert_eq!(back.params.extra, owned.params.extra);
    }
}

#[test]
fn descriptors_of_another_version_are_ignored() {
    let v = json!({"plume": 2, "path": "a", "key": "k", "methods": [], "events": []});
    assert_eq!(ServiceDescriptor::parse(&v), None);
    assert_eq!(ServiceDescriptor::parse(&Value::Null), None);
    assert_eq!(path_of("respond-style"), None);
}
