//! A typed payload decoded from its walked properties ([`crate::walk::read_props`]): keys and
//! strings already checked and borrowed, numbers already read, so a typed handler's decode does
//! not parse the MessagePack a second time.
//!
//! It accepts no more than serde's decoder of the payload's JSON map does (the reference of
//! [`Payload::decode`](crate::payload::Payload::decode)): whatever it refuses goes the usual way,
//! so a payload is still accepted exactly when its JSON map is (property test below).

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, Visitor};
use serde::forward_to_deserialize_any;
use serde_json::Error;

use crate::payload::{Prim, Props};

/// The most properties decoded this way (the duplicate-key check is quadratic).
const MAX_PROPS: usize = 16;

/// `T` from `props`, or `None` when this way does not apply (a repeated key, many keys) or
/// `T` refuses (the caller then decodes the usual way, for the same answer and serde's error).
pub(crate) fn decode<'de, T: de::Deserialize<'de>>(props: &Props<'de>) -> Option<T> {
    let entries = props.entries();
    if entries.len() > MAX_PROPS {
        return None;
    }
    // A JSON map keeps the last of a repeated key: leave those to it.
    for (i, (k, _)) in entries.iter().enumerate() {
        if entries[..i].iter().any(|(other, _)| other == k) {
            return None;
        }
    }
    T::deserialize(View(entries)).ok()
}

/// `deserialize_newtype_struct` as a JSON value has it (the newtype's content is the value
/// itself), and every other method not written out (the ones named, and the usual ones) to
/// `deserialize_any`.
macro_rules! newtype_then_any {
    ($($rest:ident)*) => {
        fn deserialize_newtype_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            visitor: V,
        ) -> Result<V::Value, Error> {
            visitor.visit_newtype_struct(self)
        }

        forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
            unit unit_struct seq tuple tuple_struct map struct ignored_any $($rest)*
        }
    };
}

/// The payload as a map.
struct View<'a, 'de>(&'a [(Cow<'de, [u8]>, Prim<'de>)]);

impl<'de> Deserializer<'de> for View<'_, 'de> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_map(Entries {
            rest: self.0.iter(),
            value: None,
        })
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_some(self)
    }

    newtype_then_any!(enum identifier);
}

/// The entries of the map, one at a time.
struct Entries<'a, 'de> {
    rest: std::slice::Iter<'a, (Cow<'de, [u8]>, Prim<'de>)>,
    value: Option<&'a Prim<'de>>,
}

impl<'de> MapAccess<'de> for Entries<'_, 'de> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        let Some((k, v)) = self.rest.next() else {
            return Ok(None);
        };
        self.value = Some(v);
        seed.deserialize(Text(k)).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        match self.value.take() {
            Some(v) => seed.deserialize(Value(v)),
            None => Err(de::Error::custom("a value without its key")),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.rest.len())
    }
}

/// A string, a key or a string value: the bytes of valid UTF-8 (the walk checked them).
struct Text<'a, 'de>(&'a Cow<'de, [u8]>);

impl<'de> Text<'_, 'de> {
    fn str(&self) -> Result<&str, Error> {
        std::str::from_utf8(self.0).map_err(de::Error::custom)
    }
}

impl<'de> Deserializer<'de> for Text<'_, 'de> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0 {
            Cow::Borrowed(b) => {
                visitor.visit_borrowed_str(std::str::from_utf8(b).map_err(de::Error::custom)?)
            }
            Cow::Owned(_) => visitor.visit_str(self.str()?),
        }
    }

    /// A struct's field names are matched as bytes: no UTF-8 check again.
    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0 {
            Cow::Borrowed(b) => visitor.visit_borrowed_bytes(b),
            Cow::Owned(b) => visitor.visit_bytes(b),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_some(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        // A unit variant named by the string (what a JSON string is to an enum).
        de::IntoDeserializer::<Error>::into_deserializer(self.str()?)
            .deserialize_enum(name, variants, visitor)
    }

    newtype_then_any!();
}

/// A primitive value.
struct Value<'a, 'de>(&'a Prim<'de>);

impl<'de> Deserializer<'de> for Value<'_, 'de> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0 {
            Prim::Null => visitor.visit_unit(),
            Prim::Bool(b) => visitor.visit_bool(*b),
            Prim::Number(n) => n.deserialize_any(visitor),
            Prim::Str(s) => Text(s).deserialize_any(visitor),
            // Not made by the walk (it leaves nested values to serde).
            Prim::Compound => Err(de::Error::custom(Unwalked)),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0 {
            Prim::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        match self.0 {
            Prim::Str(s) => Text(s).deserialize_enum(name, variants, visitor),
            _ => self.deserialize_any(visitor),
        }
    }

    newtype_then_any!(identifier);
}

/// The error of a value the walk does not make.
struct Unwalked;

impl fmt::Display for Unwalked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a nested value")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::walk::read_props;
    use proptest::prelude::*;
    use serde::Deserialize;
    use serde_json::{Map, json};
    use std::collections::{BTreeMap, HashMap};

    #[derive(Debug, Deserialize, PartialEq)]
    struct Add {
        a: f64,
        b: f64,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(rename_all = "lowercase")]
    enum Op {
        Sum,
        Diff,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    struct Id(String);

    #[derive(Debug, Deserialize, PartialEq)]
    struct Mixed {
        topic: String,
        #[serde(default)]
        op: Option<Op>,
        #[serde(default)]
        n: Option<u8>,
        #[serde(default)]
        id: Option<Id>,
        #[serde(default)]
        flag: bool,
        #[serde(default)]
        c: Option<char>,
        #[serde(default)]
        i: i32,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Strict {
        topic: String,
        a: Option<f64>,
    }

    fn leaf() -> impl Strategy<Value = serde_json::Value> {
        prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            any::<u64>().prop_map(|n| json!(n)),
            any::<f64>().prop_map(|f| json!(f)),
            (-300i64..300).prop_map(|n| json!(n)),
            prop_oneof![Just("sum"), Just("diff"), Just("x"), Just("é"), Just("")]
                .prop_map(|s| json!(s)),
            ".{0,6}".prop_map(serde_json::Value::String),
        ]
    }

    fn key() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("topic".to_owned()),
            Just("a".to_owned()),
            Just("b".to_owned()),
            Just("op".to_owned()),
            Just("n".to_owned()),
            Just("id".to_owned()),
            Just("flag".to_owned()),
            Just("c".to_owned()),
            Just("i".to_owned()),
            ".{0,4}",
        ]
    }

    /// The view's answer agrees with serde's decoder of the JSON map: never accepted where
    /// the map is refused, and the same value where it is accepted.
    fn agrees<T>(bytes: &[u8], map: &Map<String, serde_json::Value>) -> Result<(), TestCaseError>
    where
        T: de::DeserializeOwned + PartialEq + fmt::Debug,
    {
        let Some(props) = read_props(bytes) else {
            return Ok(());
        };
        if let Some(viewed) = decode::<T>(&props) {
            let by_map = serde_json::from_value::<T>(serde_json::Value::Object(map.clone()));
            prop_assert_eq!(Some(viewed), by_map.ok(), "{:?}", map);
        }
        Ok(())
    }

    proptest! {
        /// Whatever the payload and the type, what the view decodes is what serde decodes from
        /// the JSON map (the view may leave a payload to the usual way, never accept more).
        #[test]
        fn the_view_agrees_with_the_json_map(
            entries in proptest::collection::vec((key(), leaf()), 0..10),
        ) {
            let map: Map<String, serde_json::Value> = entries.iter().cloned().collect();
            // the bytes as a caller writes them (repeated keys kept, as a wire may have them)
            let mut bytes = Vec::new();
            bytes.push(0x80 | entries.len() as u8);
            for (k, v) in &entries {
                rmp_serde::encode::write_named(&mut bytes, k).expect("encodes");
                rmp_serde::encode::write_named(&mut bytes, v).expect("encodes");
            }
            agrees::<Add>(&bytes, &map)?;
            agrees::<Mixed>(&bytes, &map)?;
            agrees::<Strict>(&bytes, &map)?;
            agrees::<HashMap<String, serde_json::Value>>(&bytes, &map)?;
            agrees::<BTreeMap<String, f64>>(&bytes, &map)?;
            agrees::<serde_json::Value>(&bytes, &map)?;
            agrees::<()>(&bytes, &map)?;
            agrees::<Option<Add>>(&bytes, &map)?;
        }
    }

    #[test]
    fn typed_payloads_decode_from_the_view() {
        let v = json!({"topic": "math", "op": "diff", "n": 7, "id": "x1", "flag": true,
                       "c": "é", "i": -3});
        let bytes = rmp_serde::to_vec_named(&v).expect("encodes");
        let props = read_props(&bytes).expect("walked");
        assert_eq!(
            decode::<Mixed>(&props),
            Some(Mixed {
                topic: "math".into(),
                op: Some(Op::Diff),
                n: Some(7),
                id: Some(Id("x1".into())),
                flag: true,
                c: Some('é'),
                i: -3,
            })
        );
        // refused: the usual way then says why
        let bad = rmp_serde::to_vec_named(&json!({"a": "1", "b": 2})).expect("encodes");
        assert_eq!(decode::<Add>(&read_props(&bad).expect("walked")), None);
        // a repeated key is left to the JSON map
        let twice = [0x82, 0xa1, b'a', 1, 0xa1, b'a', 2];
        assert_eq!(
            decode::<BTreeMap<String, f64>>(&read_props(&twice).expect("walked")),
            None
        );
    }
}
