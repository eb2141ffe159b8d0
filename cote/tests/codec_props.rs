//! Property tests of the codecs: AMP frames, hello datagrams, feathers-distributed errors.

use bytes::Bytes;
use plume::{Error, ErrorKind};
use plume_cote::amp::{self, AmpError, Arg, FrameDecoder};
use plume_cote::fd::{decode_event, encode_event, error_from_wire, error_to_wire};
use plume_cote::hello::{Advertisement, AxonType, Hello, HelloError};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        ".{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z]{1,6}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

fn arg() -> impl Strategy<Value = Arg> {
    prop_oneof![
        ".{0,20}".prop_map(Arg::Str),
        json_value().prop_map(Arg::Json),
        // Raw bytes that do not start with a tag (a tagged Buffer is misread by amp-message too).
        prop::collection::vec(any::<u8>(), 0..32)
            .prop_filter("untagged", |b| !(b.starts_with(b"s:")
                || b.starts_with(b"j:")))
            .prop_map(|b| Arg::Raw(Bytes::from(b))),
    ]
}

proptest! {
    #[test]
    fn amp_frames_round_trip_in_any_chunking(
        frames in prop::collection::vec(prop::collection::vec(arg(), 0..=15), 1..4),
        cut in 1usize..64,
    ) {
        let mut stream = Vec::new();
        for args in &frames {
            stream.extend_from_slice(&amp::encode_args(args).unwrap());
        }
        let mut dec = FrameDecoder::new(amp::DEFAULT_MAX_FRAME);
        let mut got = Vec::new();
        for chunk in stream.chunks(cut) {
            dec.extend(chunk);
            while let Some(frame) = dec.next_frame().unwrap() {
                got.push(amp::decode_args(frame).unwrap());
            }
        }
        prop_assert_eq!(got, frames);
    }

    #[test]
    fn amp_decoder_is_bounded_on_garbage(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        let max = 256;
        let mut dec = FrameDecoder::new(max);
        dec.extend(&bytes);
        loop {
            match dec.next_frame() {
                Ok(Some(frame)) => {
                    let total: usize = frame.iter().map(|a| a.len() + 4).sum::<usize>() + 1;
                    prop_assert!(total <= max);
                }
                Ok(None) => {
                    // What waits for more bytes is never more than one frame under the limit
                    // (plus the length prefix being read).
                    prop_assert!(dec.buffer().len() < max + 4);
                    break;
                }
                Err(AmpError::Version(_) | AmpError::TooLong { .. }) => break,
                Err(e) => prop_assert!(false, "unexpected {e:?}"),
            }
        }
    }

    #[test]
    fn amp_length_over_the_limit_is_refused_at_the_header(len in 257u32..=u32::MAX) {
        let mut dec = FrameDecoder::new(256);
        let mut b = vec![0x11];
        b.extend_from_slice(&len.to_be_bytes());
        dec.extend(&b);
        let refused = matches!(dec.next_frame(), Err(AmpError::TooLong { .. }));
        prop_assert!(refused);
    }

    #[test]
    fn hello_decoder_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        let _ = Hello::decode(&bytes);
    }

    #[test]
    fn hello_decoder_sorts_json_that_is_not_a_hello(value in json_value()) {
        let bytes = serde_json::to_vec(&value).unwrap();
        match Hello::decode(&bytes) {
            Ok(_) => prop_assert!(false, "{value} accepted"),
            Err(HelloError::Malformed(_) | HelloError::UnknownEvent(_) | HelloError::BadId(_)) => {}
            Err(e) => prop_assert!(false, "unexpected {e:?}"),
        }
    }

    #[test]
    fn hellos_round_trip(
        iid in "[0-9a-f-]{1,36}",
        pid in "[0-9a-f-]{1,36}",
        key in ".{0,20}",
        port in proptest::option::of(any::<u16>()),
        ns in proptest::option::of("[a-z]{1,8}"),
        ty in prop_oneof![Just(AxonType::Req), Just(AxonType::Rep),
                          Just(AxonType::PubEmitter), Just(AxonType::SubEmitter)],
    ) {
        let ad = Advertisement {
            kind: "service".into(),
            name: "n".into(),
            key,
            axon_type: Some(ty),
            port,
            namespace: ns,
            extra: Map::new(),
        };
        let hello = Hello::new(&pid, &iid, "host", ad);
        prop_assert_eq!(Hello::decode(&hello.encode()).unwrap(), hello);
    }

    #[test]
    fn errors_cross_both_ways(
        code in prop::sample::select(ErrorKind::ALL.iter().map(|k| k.code()).collect::<Vec<_>>()),
        message in ".{0,40}",
        data in proptest::option::of(json_value()),
    ) {
        let mut err = Error::new(ErrorKind::from_code(code), message.clone());
        if let Some(d) = data.clone().filter(|d| !d.is_null()) {
            err = err.with_data(d);
        }
        let back = error_from_wire(error_to_wire(&err));
        prop_assert_eq!(back.code(), code);
        prop_assert_eq!(back.message(), message.as_str());
        prop_assert_eq!(back.data(), err.data());
    }

    #[test]
    fn error_decoder_takes_any_json(value in json_value()) {
        let err = error_from_wire(value);
        prop_assert!(err.code() >= 400);
    }

    #[test]
    fn event_payloads_keep_object_data(data in prop::collection::btree_map("[a-z]{1,6}", json_value(), 0..5)) {
        let data = Value::Object(data.into_iter().collect());
        let payload = encode_event("todos", "k", json!({"method": "create"}), &data);
        let ev = decode_event(payload).unwrap();
        for (k, v) in data.as_object().unwrap() {
            if k != "context" {
                prop_assert_eq!(&ev.data[k], v);
            }
        }
    }
}
