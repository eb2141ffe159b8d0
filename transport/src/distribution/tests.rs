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
            schema: Some(json!({"methods": [{"name": "get", "id": {"type": "integer"}}]})),
        };
        let v = serde_json::to_value(&d).expect("serializes");
        prop_assert_eq!(ServiceDescriptor::parse(&v), Some(d));
        let name = endpoint(&path);
        prop_assert_eq!(path_of(&name), Some(path.as_str()));
    }

    #[test]
    fn access_tokens_never_cross(token in "[A-Za-z0-9.]{1,40}", strategy in "[a-z]{1,8}") {
        let mut params = plume::Params::new();
        params.authentication = Some(json!({"strategy": strategy, "accessToken": token}).into());
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
        params.user = user.map(Into::into);
        params.authentication = authentication.map(Into::into);
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
        // Byte for byte what serde writes for the owned body, the first time (the user and the
        // authentication encoded and kept with them) and the next (their kept bytes spliced).
        let by_serde = rmp_serde::to_vec_named(&owned).expect("msgpack");
        let sent = crate::protocol::encode_payload(&borrowed);
        prop_assert_eq!(&sent[..], &by_serde[..]);
        prop_assert_eq!(&crate::protocol::encode_payload(&borrowed)[..], &by_serde[..]);
        let packed: Value = crate::protocol::decode_payload(&sent).expect("msgpack");
        prop_assert_eq!(&packed, &owned_json);
        let back: CallBody = serde_json::from_value(packed).expect("a call body");
        prop_assert_eq!(back.params.extra, owned.params.extra);
    }
}

/// A JSON body shaped like a call body, with now and then a field of the wrong type.
fn arb_call_json() -> impl Strategy<Value = Value> {
    let id = prop_oneof![
        any::<i64>().prop_map(|n| json!(n)),
        "[a-z0-9]{0,6}".prop_map(Value::String),
        Just(json!(u64::MAX)),
        Just(json!(1.5)),
        Just(json!(true)),
        Just(Value::Null),
    ];
    let provider = prop_oneof![
        Just(json!("rest")),
        Just(json!("socketio")),
        Just(json!("carrier pigeon")),
        Just(json!(3)),
        Just(Value::Null),
    ];
    let map = || {
        prop_oneof![
            3 => prop::collection::btree_map("[a-z$]{1,6}", arb_json(), 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            1 => arb_json(),
        ]
    };
    let params = (
        prop::option::of(map()),
        prop::option::of(map()),
        prop::option::of(provider),
        prop::option::of(arb_json()),
        prop::option::of(arb_json()),
        prop::option::of(map()),
    )
        .prop_map(|(query, route, provider, user, authentication, extra)| {
            let mut m = serde_json::Map::new();
            for (k, v) in [
                ("query", query),
                ("route", route),
                ("provider", provider),
                ("user", user),
                ("authentication", authentication),
                ("extra", extra),
            ] {
                if let Some(v) = v {
                    m.insert(k.to_owned(), v);
                }
            }
            Value::Object(m)
        });
    let shaped = (
        prop::option::of(id),
        prop::option::of(arb_json()),
        prop::option::of(prop_oneof![4 => params, 1 => arb_json()]),
    )
        .prop_map(|(id, data, params)| {
            let mut m = serde_json::Map::new();
            for (k, v) in [("id", id), ("data", data), ("params", params)] {
                if let Some(v) = v {
                    m.insert(k.to_owned(), v);
                }
            }
            Value::Object(m)
        });
    prop_oneof![9 => shaped, 1 => arb_json()]
}

fn request(body: &impl serde::Serialize) -> bytes::Bytes {
    crate::protocol::encode_payload(&crate::protocol::RequestMsg {
        name: "svc:todos".to_owned(),
        method: Some("find".to_owned()),
        body,
        timeout_ms: 10_000,
        traceparent: None,
    })
}

/// `body` with every null where the params carry a map (`query`, `route`, `extra`) made `{}`.
fn null_maps_as_empty(body: &Value) -> Value {
    let mut body = body.clone();
    let params = match &mut body {
        Value::Object(m) => m.get_mut("params"),
        Value::Array(a) => a.get_mut(2),
        _ => None,
    };
    let maps: Vec<&mut Value> = match params {
        Some(Value::Object(m)) => m
            .iter_mut()
            .filter(|(k, _)| ["query", "route", "extra"].contains(&k.as_str()))
            .map(|(_, v)| v)
            .collect(),
        Some(Value::Array(a)) => a
            .iter_mut()
            .enumerate()
            .filter(|(i, _)| [0, 1, 5].contains(i))
            .map(|(_, v)| v)
            .collect(),
        _ => Vec::new(),
    };
    for v in maps {
        if v.is_null() {
            *v = json!({});
        }
    }
    body
}

proptest! {
    /// A provider decodes a call body straight from the frame into a `CallBody`; it gets what
    /// the old path (frame to `RequestMsg<Value>`, then `serde_json::from_value`) got, and fails
    /// where it failed.
    #[test]
    fn call_bodies_decode_from_the_frame_as_through_a_value(body in arb_call_json()) {
        use crate::mesh::RawBody;
        let payload = request(&body);
        let old: Option<CallBody> = crate::protocol::decode_payload::<crate::protocol::RequestMsg>(&payload)
            .ok()
            .and_then(|m| serde_json::from_value(m.body).ok());
        let direct = RawBody::msgpack(payload).decode::<CallBody>();
        if let Err(e) = &direct {
            prop_assert_eq!(e.kind(), plume::ErrorKind::BadRequest);
        }
        if old.is_none() && direct.is_ok() {
            // The one difference: MessagePack nil where a params map is expected reads as an
            // empty map (a `Value` null does not).
            let lenient: Option<CallBody> = serde_json::from_value(null_maps_as_empty(&body)).ok();
            prop_assert_eq!(direct.ok(), lenient, "{}", body);
            return Ok(());
        }
        prop_assert_eq!(direct.ok(), old.clone());
        // A local call hands the body over as a value.
        prop_assert_eq!(RawBody::value(body).decode::<CallBody>().ok(), old.clone());
        if let Some(old) = old {
            // The frame of the typed body (what a proxy sends) decodes to the same.
            let typed = RawBody::msgpack(request(&old)).decode::<CallBody>();
            prop_assert_eq!(typed.ok(), Some(old));
        }
    }

    #[test]
    fn arbitrary_payloads_never_panic_the_call_body_decoder(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = crate::mesh::RawBody::msgpack(bytes::Bytes::from(bytes)).decode::<CallBody>();
    }
}

#[test]
fn descriptors_of_another_version_are_ignored() {
    let v = json!({"plume": 2, "path": "a", "key": "k", "methods": [], "events": []});
    assert_eq!(ServiceDescriptor::parse(&v), None);
    assert_eq!(ServiceDescriptor::parse(&Value::Null), None);
    assert_eq!(path_of("respond-style"), None);
}

/// A user changed after its encoding was kept (`make_mut`) is sent as it is now, and the clone
/// that still shares the old value is sent as it was.
#[test]
fn a_changed_user_is_encoded_again() {
    let mut params = plume::Params::new().with_user(json!({"id": 1, "role": "user"}));
    params.authentication =
        Some(json!({"strategy": "jwt", "accessToken": "t", "payload": {"sub": "1"}}).into());
    let sent = |params: &plume::Params| {
        let body = CallBodyRef {
            id: None,
            data: None,
            params: WireParamsRef::new(params, &[]),
        };
        let owned = CallBody {
            id: None,
            data: None,
            params: WireParams::from_params(params, &[]),
        };
        let by_serde = rmp_serde::to_vec_named(&owned).expect("msgpack");
        assert_eq!(&crate::protocol::encode_payload(&body)[..], &by_serde[..]);
        by_serde
    };
    let first = sent(&params);
    let before = params.clone();
    if let Some(user) = params.user.as_mut() {
        user.make_mut()["role"] = json!("admin");
    }
    if let Some(auth) = params.authentication.as_mut() {
        auth.make_mut()["strategy"] = json!("other");
    }
    assert_ne!(sent(&params), first);
    assert_eq!(sent(&before), first);
}
