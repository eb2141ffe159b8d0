use super::*;
use proptest::prelude::*;
use serde_json::json;

fn arb_kind() -> impl Strategy<Value = Kind> {
    (0usize..Kind::ALL.len()).prop_map(|i| Kind::ALL[i])
}

/// Arbitrary JSON values, a few levels deep (also used by the NATS decoder properties).
pub(crate) fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        "[a-z0-9 ]{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z]{1,6}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256), max in 0usize..512) {
        let mut buf = BytesMut::from(&bytes[..]);
        while let Ok(Some(frame)) = Frame::decode(&mut buf, max) {
            let _ = frame.parse::<Hello>();
            let _ = frame.parse::<RequestMsg>();
            let _ = frame.parse::<ResponseMsg>();
            let _ = frame.parse::<TableSnapshot>();
            let _ = frame.parse::<TableDelta>();
            let _ = frame.parse::<EventMsg>();
        }
    }

    #[test]
    fn arbitrary_payloads_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = decode_payload::<Hello>(&bytes);
        let _ = decode_payload::<RequestMsg>(&bytes);
        let _ = decode_payload::<ResponseMsg>(&bytes);
        let _ = decode_payload::<TableSnapshot>(&bytes);
        let _ = decode_payload::<Value>(&bytes);
    }

    #[test]
    fn arbitrary_payloads_never_panic_the_head_and_body_decoders(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = decode_payload::<RequestMsg<IgnoredAny>>(&bytes);
        let _ = decode_request_body::<Value>(&bytes);
        let _ = peek_request_name(&bytes);
        let _ = decode_request_body::<IgnoredAny>(&bytes);
    }

    #[test]
    fn damaged_requests_never_panic_the_head_and_body_decoders(body in arb_json(), at in any::<prop::sample::Index>(), byte in any::<u8>(), cut in any::<prop::sample::Index>()) {
        let msg = RequestMsg { name: "svc:todos".to_owned(), method: Some("find".to_owned()), body, timeout_ms: 9, traceparent: None };
        let mut bytes = encode_payload(&msg).to_vec();
        let i = at.index(bytes.len());
        bytes[i] = byte;
        for payload in [&bytes[..], &bytes[..cut.index(bytes.len())]] {
            let head = decode_payload::<RequestMsg<IgnoredAny>>(payload);
            let _ = decode_request_body::<Value>(payload);
            // A peeked name is the name, whenever the head decodes.
            if let (Some(name), Ok(head)) = (peek_request_name(payload), head) {
                prop_assert_eq!(name, head.name);
            }
        }
    }

    /// The head and the body, decoded apart, are the message decoded whole, from both the
    /// map encoding (what nodes send) and the array one.
    #[test]
    fn head_and_body_decode_as_the_whole_request(name in "[a-z./:]{0,16}", method in proptest::option::of("[a-z$]{1,8}"), body in arb_json(), timeout_ms in any::<u64>()) {
        let msg = RequestMsg { name, method, body, timeout_ms, traceparent: None };
        let compact = rmp_serde::to_vec(&msg).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let named = encode_payload(&msg);
        prop_assert_eq!(peek_request_name(&named), Some(msg.name.as_str()));
        prop_assert_eq!(peek_request_name(&compact), None);
        for payload in [encode_payload(&msg), Bytes::from(compact)] {
            let head = decode_payload::<RequestMsg<IgnoredAny>>(&payload).map_err(TestCaseError::fail)?;
            prop_assert_eq!(&head.name, &msg.name);
            prop_assert_eq!(&head.method, &msg.method);
            prop_assert_eq!(head.timeout_ms, msg.timeout_ms);
            prop_assert_eq!(decode_request_body::<Value>(&payload), Ok(msg.body.clone()));
        }
    }

    #[test]
    fn frames_round_trip(frames in prop::collection::vec((arb_kind(), any::<u64>(), prop::collection::vec(any::<u8>(), 0..64)), 1..8)) {
        let mut buf = BytesMut::new();
        let frames: Vec<Frame> = frames.into_iter().map(|(kind, id, p)| Frame { kind, id, payload: Bytes::from(p) }).collect();
        for f in &frames { f.encode_into(&mut buf); }
        // Feed the stream one byte at a time to exercise partial reads.
        let wire = buf.freeze();
        let mut rx = BytesMut::new();
        let mut out = Vec::new();
        for b in wire.iter() {
            rx.put_u8(*b);
            while let Some(f) = Frame::decode(&mut rx, DEFAULT_MAX_FRAME).map_err(|e| TestCaseError::fail(e.to_string()))? {
                out.push(f);
            }
        }
        prop_assert_eq!(out, frames);
        prop_assert!(rx.is_empty());
    }

    #[test]
    fn payloads_round_trip(name in "[a-z./]{0,16}", method in proptest::option::of("[a-z]{1,8}"), body in arb_json(), timeout_ms in any::<u64>()) {
        let msg = RequestMsg { name, method, body, timeout_ms, traceparent: None };
        let frame = Frame::with(Kind::Request, 9, &msg);
        prop_assert_eq!(frame.parse::<RequestMsg>().map_err(|e| TestCaseError::fail(e.to_string()))?, msg);
    }

    #[test]
    fn table_payloads_round_trip(names in prop::collection::vec("[a-z]{1,8}", 0..5), body in arb_json(), version in any::<u64>()) {
        let entries: Vec<Entry> = names.iter().map(|n| Entry { name: n.clone(), descriptor: body.clone() }).collect();
        let snap = TableSnapshot { version, entries: entries.clone(), topics: names.clone() };
        prop_assert_eq!(decode_payload::<TableSnapshot>(&encode_payload(&snap)), Ok(snap));
        let delta = TableDelta { version, added: entries, removed: names };
        prop_assert_eq!(decode_payload::<TableDelta>(&encode_payload(&delta)), Ok(delta));
    }
}

#[test]
fn oversized_short_bad_version_and_bad_kind_are_refused() {
    let big = Frame {
        kind: Kind::Event,
        id: 1,
        payload: Bytes::from(vec![0u8; 100]),
    };
    let mut buf = BytesMut::new();
    big.encode_into(&mut buf);
    assert!(matches!(
        Frame::decode(&mut buf.clone(), 50),
        Err(FrameError::Oversized { .. })
    ));
    assert_eq!(Frame::decode(&mut buf, 200).ok().flatten(), Some(big));

    let mut short = BytesMut::from(&[0u8, 0, 0, 3, 1, 1][..]);
    assert_eq!(Frame::decode(&mut short, 100), Err(FrameError::TooShort(3)));
    let mut version = BytesMut::from(&[0u8, 0, 0, 10, 9][..]);
    assert_eq!(
        Frame::decode(&mut version, 100),
        Err(FrameError::Version(9))
    );
    let mut kind = BytesMut::from(&[0u8, 0, 0, 10, 1, 200][..]);
    assert_eq!(Frame::decode(&mut kind, 100), Err(FrameError::Kind(200)));
}

#[test]
fn names_of_every_string_width_are_peeked() {
    for len in [0, 1, 31, 32, 255, 256, 65_535, 65_536] {
        let name = "n".repeat(len);
        let msg = RequestMsg {
            name: name.clone(),
            method: None,
            body: Value::Null,
            timeout_ms: 1,
            traceparent: None,
        };
        let payload = encode_payload(&msg);
        assert_eq!(peek_request_name(&payload), Some(name.as_str()), "{len}");
        // Map marker, the key `name`, the string header, the name: that much is enough.
        let header = match len {
            0..32 => 1,
            32..256 => 2,
            256..65_536 => 3,
            _ => 5,
        };
        let end = 1 + 5 + header + len;
        assert_eq!(peek_request_name(&payload[..end]), Some(name.as_str()));
        assert_eq!(peek_request_name(&payload[..end - 1]), None, "{len} cut");
    }
    assert_eq!(peek_request_name(&[0x80]), None);
    assert_eq!(
        peek_request_name(&[0x81, 0xa4, b'n', b'a', b'm', b'x', 0xa1, b'x']),
        None
    );
}

#[test]
fn a_request_without_a_body_has_no_head() {
    #[derive(Serialize)]
    struct NoBody {
        name: &'static str,
        method: Option<&'static str>,
        timeout_ms: u64,
    }
    let payload = encode_payload(&NoBody {
        name: "x",
        method: None,
        timeout_ms: 5,
    });
    assert!(decode_payload::<RequestMsg<IgnoredAny>>(&payload).is_err());
    assert!(decode_payload::<RequestMsg>(&payload).is_err());
    assert!(decode_request_body::<Value>(&payload).is_err());
}

#[test]
fn errors_keep_their_class_in_a_response() {
    let err = plume::Error::conflict("taken").with_data(json!({"id": 3}));
    let msg = ResponseMsg {
        ok: None,
        err: Some(err.to_json()),
    };
    let back: ResponseMsg = decode_payload(&encode_payload(&msg)).expect("decodes");
    assert_eq!(plume::Error::from_json(back.err.expect("err")), err);
}

/// A request as nodes before the `traceparent` field read and wrote it.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct RequestBeforeTrace {
    name: String,
    method: Option<String>,
    body: Value,
    timeout_ms: u64,
}

/// The optional `traceparent` of a request: an older node reads a request that has it (and
/// ignores it), a request of an older node reads as one without it, and a request without a
/// trace is encoded byte for byte as before.
#[test]
fn the_traceparent_field_is_optional_both_ways() {
    let traced = RequestMsg {
        name: "svc:todos".to_owned(),
        method: Some("find".to_owned()),
        body: json!({"a": 1}),
        timeout_ms: 500,
        traceparent: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_owned()),
    };
    let old: RequestBeforeTrace = decode_payload(&encode_payload(&traced)).expect("old reads new");
    assert_eq!(
        (old.name.as_str(), old.timeout_ms, &old.body),
        ("svc:todos", 500, &json!({"a": 1}))
    );
    let body: Value = decode_request_body(&encode_payload(&traced)).expect("the body alone");
    assert_eq!(body, json!({"a": 1}));

    let from_old = encode_payload(&old);
    let new: RequestMsg = decode_payload(&from_old).expect("new reads old");
    assert_eq!(new.traceparent, None);
    assert_eq!(new.name, "svc:todos");
    let untraced = RequestMsg {
        traceparent: None,
        ..new
    };
    assert_eq!(
        encode_payload(&untraced),
        from_old,
        "no trace: the old bytes"
    );
}

/// An event as nodes before the `traceparent` field read and wrote it.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct EventBeforeTrace {
    topic: String,
    data: Value,
}

/// The optional `traceparent` of an event, as of a request: each side reads the other's, and an
/// event without a trace is the old bytes.
#[test]
fn the_traceparent_of_an_event_is_optional_both_ways() {
    let traced = EventMsg {
        topic: "todos created".to_owned(),
        data: json!({"id": 1}),
        traceparent: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_owned()),
    };
    let old: EventBeforeTrace = decode_payload(&encode_payload(&traced)).expect("old reads new");
    assert_eq!(
        old,
        EventBeforeTrace {
            topic: "todos created".to_owned(),
            data: json!({"id": 1})
        }
    );
    let from_old = encode_payload(&old);
    let new: EventMsg = decode_payload(&from_old).expect("new reads old");
    assert_eq!(new.traceparent, None);
    assert_eq!(encode_payload(&new), from_old, "no trace: the old bytes");
}

proptest! {
    /// The payload writer (`Roomy`: markers pushed, a big write given room after it) writes the
    /// bytes rmp_serde writes into a plain `Vec`.
    #[test]
    fn encoded_payloads_are_rmp_serdes(v in arb_json()) {
        let plain = rmp_serde::to_vec_named(&v).expect("encodes");
        prop_assert_eq!(&encode_payload(&v)[..], &plain[..]);
    }

    /// A caller's borrowed request (`RequestOut`, its `traceparent` written on the stack) is
    /// the same bytes as the `RequestMsg` of the same fields.
    #[test]
    fn a_borrowed_request_encodes_as_the_owned_one(
        name in "[a-z:]{0,20}",
        method in proptest::option::of("[a-z]{0,10}"),
        body in arb_json(),
        timeout_ms in any::<u64>(),
        trace in proptest::option::of((1u64.., 1u64.., any::<u64>(), any::<bool>())),
    ) {
        let ctx = trace.and_then(|(hi, lo, span, sampled)| {
            let text = format!("00-{hi:016x}{lo:016x}-{:016x}-0{}", span.max(1), u8::from(sampled));
            plume::trace::TraceContext::parse(&text)
        });
        let owned = RequestMsg {
            name: name.clone(),
            method: method.clone(),
            body: &body,
            timeout_ms,
            traceparent: ctx.map(|c| c.traceparent()),
        };
        let borrowed = RequestOut {
            name: &name,
            method: method.as_deref(),
            body: &body,
            timeout_ms,
            traceparent: ctx.as_ref().map(TraceparentText::new),
            json: false,
        };
        prop_assert_eq!(encode_payload(&borrowed), encode_payload(&owned));
    }
}
