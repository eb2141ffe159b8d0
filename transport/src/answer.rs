//! What a served call answers: a value, or its result encoded once by the handler
//! ([`Encoded`]), whose bytes are the response payload itself (no value built, no second
//! encoding), and the future that answers it on this node.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::future::BoxFuture;
use serde::Serialize;
use serde_json::Value;

use plume::Error;

/// What a [`RawHandler`](crate::RawHandler) answers: a value, or a result it encoded itself.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// A value, encoded into the response by the mesh.
    Value(Value),
    /// A result already encoded ([`Encoded::new`]).
    Encoded(Encoded),
}

impl From<Value> for Answer {
    fn from(v: Value) -> Self {
        Answer::Value(v)
    }
}

impl From<Encoded> for Answer {
    fn from(e: Encoded) -> Self {
        Answer::Encoded(e)
    }
}

/// The bytes of a response before and after its result: `{"ok": <result>, "err": nil}` as
/// MessagePack, exactly as an encoded [`ResponseMsg`](crate::protocol::ResponseMsg) of a
/// result has them.
const PREFIX: &[u8] = &[0x82, 0xa2, b'o', b'k'];
const SUFFIX: &[u8] = &[0xa3, b'e', b'r', b'r', 0xc0];

/// The bytes of a response in the JSON form before its text: a map of one entry, the key
/// `json` ([`JSON_REPLY_KEY`](crate::protocol::JSON_REPLY_KEY)) and a `str32` header whose
/// length (the last four bytes, zero here) is written once the text is.
const JSON_PREFIX: [u8; 11] = [0x81, 0xa4, b'j', b's', b'o', b'n', 0xdb, 0, 0, 0, 0];

/// A call's result encoded by its handler (MessagePack, structs as maps, as the mesh encodes a
/// value), written into the response frame as it is: a handler that answers a typed result
/// builds no `serde_json::Value` for it, and the mesh does not encode it again.
#[derive(Debug, Clone, PartialEq)]
pub struct Encoded(Bytes);

impl Encoded {
    /// `result` encoded. Fails (GeneralError) when it does not encode to MessagePack.
    pub fn new<T: Serialize + ?Sized>(result: &T) -> Result<Encoded, Error> {
        let mut buf = Vec::with_capacity(64);
        buf.extend_from_slice(PREFIX);
        rmp_serde::encode::write_named(&mut crate::protocol::Roomy(&mut buf), result)
            .map_err(|e| Error::general_error(format!("the result does not encode: {e}")))?;
        buf.extend_from_slice(SUFFIX);
        Ok(Encoded(Bytes::from(buf)))
    }

    /// A value result encoded by [`write_value`](crate::protocol::value::write_value) (the
    /// bytes `new` writes for it, without serde's serializer in between): what the mesh answers
    /// for a handler's value.
    pub(crate) fn of_value(result: &Value) -> Result<Encoded, String> {
        let mut buf = Vec::with_capacity(256);
        buf.extend_from_slice(PREFIX);
        crate::protocol::value::write_value(&mut buf, result)?;
        buf.extend_from_slice(SUFFIX);
        Ok(Encoded(Bytes::from(buf)))
    }

    /// A value result in the JSON form of a response (`{"json": <its JSON text>}`), for a
    /// caller that takes its result as JSON text; `None` when the text is longer than
    /// `max_text` bytes. Made only for the wire (`in_json_form`), never handed to a
    /// [`ReplyForm`](crate::mesh) or to [`result_bytes`](Self::result_bytes).
    fn json_of_value(result: &Value, max_text: usize) -> Option<Encoded> {
        let mut buf = Vec::with_capacity(256);
        buf.extend_from_slice(&JSON_PREFIX);
        let limit = JSON_PREFIX.len().saturating_add(max_text);
        if !plume_json::write_value(&mut buf, result, limit) {
            return None;
        }
        let len = u32::try_from(buf.len() - JSON_PREFIX.len()).ok()?;
        buf.get_mut(JSON_PREFIX.len() - 4..JSON_PREFIX.len())?
            .copy_from_slice(&len.to_be_bytes());
        Some(Encoded(Bytes::from(buf)))
    }

    /// The result's own MessagePack bytes.
    pub fn result_bytes(&self) -> &[u8] {
        self.0
            .get(PREFIX.len()..self.0.len().saturating_sub(SUFFIX.len()))
            .unwrap_or_default()
    }

    /// The whole response payload.
    pub(crate) fn into_response(self) -> Bytes {
        self.0
    }
}

/// The answer to a caller that takes its result as JSON text (its request's `json` hint): a
/// value in the JSON form of a response when its text is at most `max_text` bytes; a longer
/// one, an answer its handler encoded, or an error, as it is (the caller reads the MessagePack
/// form as well). The bound keeps the JSON form under the engines' limits: JSON can be the
/// larger (numbers as digits, escaped control bytes), and a result whose MessagePack fits a
/// limit must still fit it.
pub(crate) fn in_json_form(
    result: Result<Answer, Error>,
    max_text: usize,
) -> Result<Answer, Error> {
    match result {
        Ok(Answer::Value(v)) => Ok(match Encoded::json_of_value(&v, max_text) {
            Some(e) => Answer::Encoded(e),
            None => Answer::Value(v),
        }),
        other => other,
    }
}

/// The future of a call served on this node: a plain handler's (a value) or a raw one's (an
/// [`Answer`]), without a box around the box.
pub(crate) enum Answering {
    Plain(BoxFuture<'static, Result<Value, Error>>),
    Raw(BoxFuture<'static, Result<Answer, Error>>),
}

impl Future for Answering {
    type Output = Result<Answer, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            Answering::Plain(f) => f.as_mut().poll(cx).map(|r| r.map(Answer::Value)),
            Answering::Raw(f) => f.as_mut().poll(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::response;
    use crate::protocol::{ResponseMsg, decode_payload};
    use plume_json::arbitrary::value;
    use proptest::prelude::*;
    use serde_json::json;

    proptest! {
        /// Whatever the result, the response of its encoded form is byte for byte the one the
        /// mesh writes for the value, and its result bytes decode to the value.
        #[test]
        fn encoded_answers_are_the_value_responses(v in value()) {
            let encoded = Encoded::new(&v).expect("encodes");
            let back: Value = decode_payload(encoded.result_bytes()).expect("decodes");
            prop_assert_eq!(&back, &v);
            let by_value = response(Ok(Answer::Value(v.clone())));
            prop_assert_eq!(response(Ok(Answer::Encoded(encoded))), by_value.clone());
            let msg: ResponseMsg = decode_payload(&by_value).expect("decodes");
            // (a null result is `nil`: read back as no result, which callers take as null)
            prop_assert_eq!(msg.ok.unwrap_or(Value::Null), v);
        }
    }

    #[test]
    fn typed_results_encode_as_their_json() {
        #[derive(Serialize)]
        struct Sum {
            total: f64,
            parts: Vec<u8>,
        }
        let encoded = Encoded::new(&Sum {
            total: 3.0,
            parts: vec![1, 2],
        })
        .expect("encodes");
        let back: Value = decode_payload(encoded.result_bytes()).expect("decodes");
        assert_eq!(back, json!({"total": 3.0, "parts": [1, 2]}));
    }
}
