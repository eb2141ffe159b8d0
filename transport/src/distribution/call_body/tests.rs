use super::*;
use crate::distribution::wire::{CallBodyRef, WireParamsRef};
use crate::protocol::{decode_payload, encode_payload};
use plume::Params;
use plume_json::arbitrary::value;
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
            params: WireParams {
                query,
                route,
                provider,
                user: user.map(Into::into),
                authentication: authentication.map(Into::into),
                extra,
            },
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
    params.authentication = Some(
        json!({
            "strategy": "jwt", "accessToken": "a.b.c",
            "payload": {"iat": 1_764_820_000, "exp": 1_764_906_400, "aud": "https://yourdomain.com",
                        "sub": "1", "jti": "9f0c3a52-0c5e-4d8c-bb8f-1f3a9e1c2d4b"},
        })
        .into(),
    );
    params
}

proptest! {
    /// Whatever the body, the walk reads what serde reads.
    #[test]
    fn walked_call_bodies_agree_with_serde(body in call_body()) {
        let bytes = encode_payload(&body);
        let by_serde: CallBody = decode_payload(&bytes).expect("serde reads its own");
        prop_assert_eq!(read_call_body(&bytes), Some(by_serde.clone()));
        // Read again: the user and the authentication from the thread's cache, the same.
        prop_assert_eq!(read_call_body(&bytes), Some(by_serde));
    }

    /// The cache of decoded users answers, for any bytes, what the walk reads from them: the
    /// same bytes give the same value (shared), other bytes their own, refused bytes nothing
    /// (and are not kept).
    #[test]
    fn the_cache_answers_what_the_walk_reads(
        values in proptest::collection::vec(value(), 1..8),
        garbage in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..24), 0..8),
    ) {
        let walk = |b: &[u8]| {
            let mut r = Reader::new(b, 0);
            let v = read_value(&mut r, 2)?;
            (r.left() == 0).then_some(v)
        };
        let encoded = values.iter().map(|v| encode_payload(v).to_vec());
        for bytes in encoded.chain(garbage) {
            let first = decoded::shared(&bytes, walk);
            let second = decoded::shared(&bytes, walk);
            let plain = walk(&bytes);
            prop_assert_eq!(first.as_deref(), plain.as_ref());
            prop_assert_eq!(second.as_deref(), plain.as_ref());
            if let (Some(a), Some(b)) = (&first, &second)
                && bytes.len() <= decoded::MAX_BYTES
            {
                prop_assert!(SharedValue::ptr_eq(a, b));
            }
        }
        prop_assert!(decoded::len() <= decoded::MAX_ENTRIES);
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
    // The next call of the same login shares the values decoded for the first.
    let again = read_call_body(&sent).expect("the usual form");
    let shared = |a: &Option<SharedValue>, b: &Option<SharedValue>| match (a, b) {
        (Some(a), Some(b)) => SharedValue::ptr_eq(a, b),
        _ => false,
    };
    assert!(shared(&again.params.user, &walked.params.user));
    assert!(shared(
        &again.params.authentication,
        &walked.params.authentication
    ));
    let auth = walked.params.authentication.expect("sent");
    assert_eq!(auth["strategy"], "jwt");
    assert!(auth.get("accessToken").is_none());
}

#[test]
fn the_cache_of_decoded_values_stays_bounded() {
    for n in 0..(decoded::MAX_ENTRIES + 10) {
        let bytes = encode_payload(&json!({ "id": n }));
        let got = decoded::shared(&bytes, |b| {
            let mut r = Reader::new(b, 0);
            read_value(&mut r, 2)
        });
        assert_eq!(got.as_deref(), Some(&json!({ "id": n })));
        assert!(decoded::len() <= decoded::MAX_ENTRIES);
    }
    // A value too large to keep is decoded, not kept.
    let before = decoded::len();
    let big = encode_payload(&json!({ "name": "x".repeat(decoded::MAX_BYTES) }));
    let read = |b: &[u8]| read_value(&mut Reader::new(b, 0), 2);
    assert!(decoded::shared(&big, read).is_some());
    assert_eq!(decoded::len(), before);
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
