use super::*;
use crate::distribution::wire::{CallBodyRef, WireParamsRef};
use crate::protocol::head::tests::value;
use crate::protocol::{decode_payload, encode_payload};
use plume::Params;
use proptest::prelude::*;
use serde_json::json;

fn object() -> impl Strategy<Value = Map<String, Value>> {
    proptest::collection::btree_map("[a-z$]{0,8}", value(), 0..6)
        .prop_map(|m| m.into_iter().collect())
}

fn id() -> impl Strategy<Value = Option<Id>> {
    proptest::option::of(prop_oneof![
        any::<i64>().prop_map(Id::Int),
        ".{0,20}".prop_map(Id::Str),
    ])
}

fn provider() -> impl Strategy<Value = Option<Provider>> {
    proptest::option::of(prop_oneof![Just(Provider::Rest), Just(Provider::Socketio)])
}

prop_compose! {
    fn call_body()(
        id in id(),
        data in proptest::option::of(value()),
        query in object(),
        route in object(),
        provider in provider(),
        user in proptest::option::of(value()),
        authentication in proptest::option::of(value()),
        extra in object(),
    ) -> CallBody {
        CallBody {
            id,
            data,
            params: WireParams { query, route, provider, user, authentication, extra },
        }
    }
}

/// What a gateway's proxy sends for a `find` with a JWT: the user entity and the
/// authentication result without its token.
fn gateway_find() -> Params {
    let mut params = Params::new()
        .with_provider(Provider::Rest)
        .with_query(json!({"$limit": 10, "done": false}))
        .with_user(json!({"id": 1, "email": "demo@plume.local", "password": "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA"}));
    params.authentication = Some(json!({
        "strategy": "jwt", "accessToken": "a.b.c",
        "payload": {"iat": 1_764_820_000, "exp": 1_764_906_400, "aud": "https://yourdomain.com",
                    "sub": "1", "jti": "9f0c3a52-0c5e-4d8c-bb8f-1f3a9e1c2d4b"},
    }));
    params
}

proptest! {
    /// Whatever the body, the walk reads what serde reads.
    #[test]
    fn walked_call_bodies_agree_with_serde(body in call_body()) {
        let bytes = encode_payload(&body);
        let by_serde: CallBody = decode_payload(&bytes).expect("serde reads its own");
        prop_assert_eq!(read_call_body(&bytes), Some(by_serde));
    }

    /// Garbled bodies: whatever the walk accepts, serde accepts as the same body.
    #[test]
    fn the_walk_accepts_no_body_serde_refuses(
        body in call_body(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut bytes = encode_payload(&body).to_vec();
        for (at, byte) in flips {
            let i = at.index(bytes.len());
            bytes[i] = byte;
        }
        let garbled = &bytes[..cut.index(bytes.len() + 1)];
        if let Some(walked) = read_call_body(garbled) {
            prop_assert_eq!(decode_payload::<CallBody>(garbled), Ok(walked));
        }
    }
}

#[test]
fn what_a_gateway_sends_is_walked() {
    let params = gateway_find();
    let extras = vec![];
    let sent = encode_payload(&CallBodyRef {
        id: None,
        data: None,
        params: WireParamsRef::new(&params, &extras),
    });
    let walked = read_call_body(&sent).expect("the usual form");
    assert_eq!(
        Some(&walked),
        decode_payload::<CallBody>(&sent).ok().as_ref()
    );
    assert_eq!(walked.params.provider, Some(Provider::Rest));
    assert_eq!(walked.params.query, params.query);
    assert_eq!(walked.params.user, params.user);
    let auth = walked.params.authentication.expect("sent");
    assert_eq!(auth["strategy"], "jwt");
    assert!(auth.get("accessToken").is_none());
}

#[test]
fn what_the_walk_leaves_to_serde() {
    // An unknown key (serde skips it), a repeated key (serde refuses it), a float id (refused),
    // an unknown provider (refused), a nil map (serde reads it), the compact form (an array).
    let unknown = encode_payload(&json!({"id": 1, "later": [1, 2]}));
    assert_eq!(read_call_body(&unknown), None);
    assert_eq!(
        decode_payload::<CallBody>(&unknown).map(|b| b.id),
        Ok(Some(Id::Int(1)))
    );
    let repeated = [0x82, 0xa2, b'i', b'd', 0x01, 0xa2, b'i', b'd', 0x02];
    assert_eq!(read_call_body(&repeated), None);
    assert!(decode_payload::<CallBody>(&repeated).is_err());
    for refused in [
        json!({"id": 1.5}),
        json!({"params": {"provider": "carrier-pigeon"}}),
    ] {
        let bytes = encode_payload(&refused);
        assert_eq!(read_call_body(&bytes), None, "{refused}");
        assert!(decode_payload::<CallBody>(&bytes).is_err(), "{refused}");
    }
    // A nil map (rmp-serde reads it as empty): serde's.
    let nil_query = encode_payload(&json!({"params": {"query": null}}));
    assert_eq!(read_call_body(&nil_query), None);
    assert!(decode_payload::<CallBody>(&nil_query).is_ok());
    let compact = rmp_serde::to_vec(&CallBody::default()).expect("encodes");
    assert_eq!(read_call_body(&compact), None);
}
